//! The [`Wal`] handle: open (replay, then start the writer thread), append, truncate, close.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};
use prometheus_client::registry::Registry;
use tokio::sync::{Semaphore, oneshot};

use crate::entry::{EncodedEntry, WalEntry};
use crate::metrics::WalMetrics;
use crate::replay;
use crate::segment::{self, HEADER_LEN, SegmentFile};
use crate::writer::{OpenSegment, Request, Shared, Writer};
use crate::{Error, ReplayError, Result, SequenceNumber};

/// Default for [`WalConfig::segment_size_bytes`]: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 64 * 1024 * 1024;
/// Default for [`WalConfig::queue_capacity`].
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Default for [`WalConfig::dir`].
pub const DEFAULT_DIR: &str = "wal";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Directory holding the segments; created if missing. Default `wal`.
    pub dir: PathBuf,
    /// The writer rotates to a new segment once the open one passes this many bytes (checked
    /// after each batch, so a segment can exceed it by one batch). Default 64 MiB.
    pub segment_size_bytes: u64,
    /// Appends queued or being written at once; further appends wait. 0 counts as 1.
    /// Default 1024 entries.
    pub queue_capacity: usize,
    /// New entries are numbered above this even if the segments say less: the caller's
    /// records (persisted files, deleted databases) may refer to sequence numbers whose
    /// segments were truncated or lost (entries appended without sync). Default 0.
    pub sequence_floor: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_DIR),
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            sequence_floor: 0,
        }
    }
}

/// The write-ahead log. Cheap to clone; all clones share one writer thread.
#[derive(Debug, Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    /// `None` once closed. Dropping the last sender lets the writer drain and exit.
    sender: RwLock<Option<SyncSender<Request>>>,
    /// One permit per queue slot, so appends wait asynchronously instead of blocking a
    /// runtime thread on the channel.
    permits: Arc<Semaphore>,
    writer: Mutex<Option<JoinHandle<Result<()>>>>,
}

impl Wal {
    /// Opens (creating the dir), replays every entry in sequence order through `on_entry`,
    /// truncating a torn/corrupt tail of the last segment with a warning (never failing
    /// start-up for that), failing with an error that names the segment for corruption in
    /// any earlier segment, then starts the writer thread. New appends continue after the
    /// highest replayed sequence number.
    ///
    /// This does blocking I/O: call it before serving, or from `spawn_blocking`.
    pub fn open(
        config: WalConfig,
        registry: &mut Registry,
        mut on_entry: impl FnMut(SequenceNumber, WalEntry) -> Result<(), ReplayError>,
    ) -> Result<Self> {
        let WalConfig {
            dir,
            segment_size_bytes,
            queue_capacity,
            sequence_floor,
        } = config;
        create_dir(&dir)?;
        let metrics = WalMetrics::register(registry);

        let replayed = replay::replay(&dir, &mut on_entry)?;
        let mut segments = replayed.segments;
        // The last segment's name is a floor even when it holds no entries, e.g. after
        // truncate_through removed every older segment.
        let next_seq = SequenceNumber(
            replayed
                .last_seq
                .map_or(1, |s| s.0 + 1)
                .max(segments.last().map_or(1, |s| s.first.0))
                .max(sequence_floor + 1),
        );

        // A last segment whose entries are all at or below the floor (typically: all
        // persisted) is left closed, so truncate_through can delete it.
        let all_below_floor = replayed.last_seq.is_some_and(|l| l.0 <= sequence_floor);
        let reuse_last = segments.last().filter(|_| {
            !all_below_floor
                && (!replayed.last_segment_has_entries
                    || replayed.last_segment_len <= segment_size_bytes)
        });
        let segment = match reuse_last {
            Some(last) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&last.path)
                    .map_err(|source| Error::OpenSegment {
                        path: last.path.clone(),
                        source,
                    })?;
                // What replay read may still sit only in the page cache (written without sync
                // before a process crash); make it durable before numbering after it.
                file.sync_data().map_err(|source| Error::Fsync {
                    path: last.path.clone(),
                    source: Arc::new(source),
                })?;
                OpenSegment {
                    file,
                    path: last.path.clone(),
                    len_bytes: replayed.last_segment_len,
                    unsynced: false,
                }
            }
            None => {
                let (file, path) = segment::create(&dir, next_seq)?;
                segments.push(SegmentFile {
                    first: next_seq,
                    path: path.clone(),
                });
                OpenSegment {
                    file,
                    path,
                    len_bytes: HEADER_LEN,
                    unsynced: true,
                }
            }
        };
        metrics.set_segments(segments.len());

        let shared = Arc::new(Shared {
            dir,
            segments: Mutex::new(segments),
            last_seq: AtomicU64::new(next_seq.0 - 1),
            poisoned: AtomicBool::new(false),
            metrics,
            #[cfg(test)]
            fail_next_sync: AtomicBool::new(false),
        });
        let capacity = queue_capacity.clamp(1, Semaphore::MAX_PERMITS);
        let (sender, requests) = sync_channel(capacity);
        let writer = Writer {
            shared: Arc::clone(&shared),
            segment,
            next_seq,
            segment_size_bytes,
        };
        let handle = std::thread::Builder::new()
            .name("tributary-wal-writer".to_owned())
            .spawn(move || writer.run(requests))
            .map_err(|source| Error::SpawnWriter { source })?;

        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                sender: RwLock::new(Some(sender)),
                permits: Arc::new(Semaphore::new(capacity)),
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Appends; resolves once the entry is durable (fsynced) if `sync`, or once written to
    /// the OS (no fsync awaited) if not. Returns the entry's sequence number.
    ///
    /// Waits while the queue is full. Dropping the future after the entry was queued does
    /// not take it back: it is still written.
    pub async fn append(&self, entry: EncodedEntry, sync: bool) -> Result<SequenceNumber> {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed)?;
        if self.inner.shared.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request {
            entry,
            sync,
            reply,
            _permit: permit,
        })?;
        answer.await.map_err(|_| Error::WriterStopped)?
    }

    fn send(&self, request: Request) -> Result<()> {
        let sender = self.inner.sender.read();
        let sender = sender.as_ref().ok_or(Error::Closed)?;
        // Never blocks: the permit in `request` reserves a slot.
        sender.send(request).map_err(|_| Error::WriterStopped)
    }

    /// Deletes segments all of whose entries are <= `up_to`. Never deletes the open segment.
    ///
    /// A segment holds the entries from its name up to the next segment's name, so it is
    /// covered once the next segment starts at or below `up_to + 1`. Does blocking I/O.
    pub fn truncate_through(&self, up_to: SequenceNumber) -> Result<()> {
        let shared = &self.inner.shared;
        let mut segments = shared.segments.lock();
        let covered = segments
            .windows(2)
            .take_while(|pair| pair[1].first.0 <= up_to.0.saturating_add(1))
            .count();
        let mut deleted = 0;
        let mut result = Ok(());
        for seg in &segments[..covered] {
            match fs::remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    result = Err(Error::DeleteSegment {
                        path: seg.path.clone(),
                        source,
                    });
                    break;
                }
            }
            deleted += 1;
        }
        segments.drain(..deleted);
        shared.metrics.set_segments(segments.len());
        drop(segments);
        if deleted > 0 {
            tracing::debug!(up_to = up_to.0, deleted, "deleted persisted WAL segments");
            // Not needed for correctness (a segment that comes back after a crash only
            // replays persisted entries again), but keeps the directory honest.
            segment::sync_dir(&shared.dir)?;
        }
        result
    }

    /// The lowest sequence number a replay could still read: entries below it are gone from
    /// disk (their segments deleted and the deletion synced).
    pub fn first_retained_sequence(&self) -> SequenceNumber {
        let segments = self.inner.shared.segments.lock();
        segments.first().map_or_else(
            || SequenceNumber(self.inner.shared.last_seq.load(Ordering::Acquire) + 1),
            |seg| seg.first,
        )
    }

    /// Stops accepting, writes and fsyncs everything queued, stops the writer thread.
    /// Idempotent. Blocks until the writer is done.
    ///
    /// Fails with [`Error::Poisoned`] if an earlier write or fsync failed, since entries
    /// appended without `sync` may then not be durable.
    pub fn close(&self) -> Result<()> {
        self.inner.permits.close();
        drop(self.inner.sender.write().take());
        // Held while joining, so a concurrent close returns only once the log is closed.
        let mut writer = self.inner.writer.lock();
        match writer.take() {
            Some(handle) => handle.join().map_err(|_| Error::WriterStopped)?,
            None => Ok(()),
        }
    }

    /// The highest sequence number handed out (or found on open), if any.
    pub fn last_sequence_number(&self) -> Option<SequenceNumber> {
        match self.inner.shared.last_seq.load(Ordering::Acquire) {
            0 => None,
            n => Some(SequenceNumber(n)),
        }
    }
}

/// Creates the WAL directory, and makes its name durable if it is new.
fn create_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    segment::sync_dir(parent)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::sync::Arc;

    use proptest::prelude::*;
    use tracing::field::{Field, Visit};
    use tracing::{Event, Level, Metadata, span};

    use super::*;
    use crate::entry::tests::{cpu_batch, sample_entry};
    use crate::segment::{MAGIC, file_name};
    use crate::{Corruption, TableBatch};

    type Replay = Vec<(SequenceNumber, WalEntry)>;

    fn config(dir: &Path) -> WalConfig {
        WalConfig {
            dir: dir.to_owned(),
            ..WalConfig::default()
        }
    }

    fn open(config: WalConfig) -> Result<(Wal, Replay, Registry)> {
        let mut registry = Registry::default();
        let mut replayed = Vec::new();
        let wal = Wal::open(config, &mut registry, |seq, entry| {
            replayed.push((seq, entry));
            Ok(())
        })?;
        Ok((wal, replayed, registry))
    }

    /// Opens, collects the replay, closes.
    fn replay_all(config: WalConfig) -> Result<Replay> {
        let (wal, replayed, _) = open(config)?;
        wal.close()?;
        Ok(replayed)
    }

    fn encode(seed: i64) -> EncodedEntry {
        EncodedEntry::encode(&sample_entry(seed)).unwrap()
    }

    /// A one-table, one-row, one-column entry: small, so the torn-write test can try every
    /// offset of it.
    fn small_entry(seed: i64) -> WalEntry {
        let batch = cpu_batch(seed, 1);
        WalEntry {
            tables: vec![TableBatch {
                database: "db".to_owned(),
                table: "cpu".to_owned(),
                batch: batch.project(&[batch.num_columns() - 1]).unwrap(),
            }],
        }
    }

    fn segment_paths(dir: &Path) -> Vec<PathBuf> {
        let mut paths: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        paths
    }

    /// Reads a metric from the registry's text exposition.
    fn metric(registry: &Registry, name: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
            .parse()
            .unwrap()
    }

    /// Records the fields of every WARN event on the thread it is installed on.
    #[derive(Default, Clone)]
    struct WarnCapture(Arc<Mutex<Vec<String>>>);

    impl WarnCapture {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.0.lock())
        }
    }

    struct FieldText(String);

    impl Visit for FieldText {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, "{}={:?} ", field.name(), value);
        }
    }

    impl tracing::Subscriber for WarnCapture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, event: &Event<'_>) {
            if *event.metadata().level() == Level::WARN {
                let mut text = FieldText(String::new());
                event.record(&mut text);
                self.0.lock().push(text.0);
            }
        }
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }

    #[tokio::test]
    async fn reopen_replays_every_entry_in_order_with_identical_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, replayed, _) = open(config(dir.path())).unwrap();
        assert!(replayed.is_empty());
        assert_eq!(wal.last_sequence_number(), None);
        for seed in 0..5 {
            let seq = wal.append(encode(seed), seed % 2 == 0).await.unwrap();
            assert_eq!(seq, SequenceNumber(seed as u64 + 1));
        }
        wal.close().unwrap();

        let replayed = replay_all(config(dir.path())).unwrap();
        let expected: Replay = (0..5)
            .map(|seed| (SequenceNumber(seed as u64 + 1), sample_entry(seed)))
            .collect();
        assert_eq!(replayed, expected);
    }

    #[tokio::test]
    async fn sequence_numbers_continue_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open(config(dir.path())).unwrap();
        for seed in 0..3 {
            wal.append(encode(seed), true).await.unwrap();
        }
        wal.close().unwrap();

        let (wal, replayed, _) = open(config(dir.path())).unwrap();
        assert_eq!(replayed.len(), 3);
        assert_eq!(wal.last_sequence_number(), Some(SequenceNumber(3)));
        assert_eq!(
            wal.append(encode(3), true).await.unwrap(),
            SequenceNumber(4)
        );
        assert_eq!(wal.last_sequence_number(), Some(SequenceNumber(4)));
        wal.close().unwrap();

        let seqs: Vec<_> = replay_all(config(dir.path()))
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq.0)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn new_entries_are_numbered_above_the_sequence_floor() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open(config(dir.path())).unwrap();
        wal.append(encode(0), true).await.unwrap();
        wal.close().unwrap();

        // The caller has records up to 10 (say, a persisted file whose entries were never
        // synced and are gone): numbering continues above them, and replay accepts the gap.
        let floored = WalConfig {
            sequence_floor: 10,
            ..config(dir.path())
        };
        let (wal, _, _) = open(floored.clone()).unwrap();
        assert_eq!(
            wal.append(encode(1), true).await.unwrap(),
            SequenceNumber(11)
        );
        wal.close().unwrap();
        let seqs: Vec<_> = replay_all(floored.clone())
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq.0)
            .collect();
        assert_eq!(seqs, [1, 11]);

        // The first segment held only entries below the floor: it was closed, so it can go.
        let (wal, _, _) = open(floored.clone()).unwrap();
        wal.truncate_through(SequenceNumber(10)).unwrap();
        wal.close().unwrap();
        let seqs: Vec<_> = replay_all(floored)
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq.0)
            .collect();
        assert_eq!(seqs, [11]);
    }
    /// Damages the last entry of the last segment in every way a crash or a bad sector can:
    /// cut at each byte offset from its start to its end, or one byte flipped at each offset.
    #[tokio::test]
    async fn torn_or_damaged_last_entry_is_cut_off_with_a_warning_and_the_log_continues() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open(config(dir.path())).unwrap();
        for seed in 0..2 {
            wal.append(EncodedEntry::encode(&small_entry(seed)).unwrap(), true)
                .await
                .unwrap();
        }
        wal.close().unwrap();
        let [path] = segment_paths(dir.path()).try_into().unwrap();
        let intact_len = fs::metadata(&path).unwrap().len();

        let (wal, _, _) = open(config(dir.path())).unwrap();
        wal.append(EncodedEntry::encode(&small_entry(2)).unwrap(), true)
            .await
            .unwrap();
        wal.close().unwrap();
        let original = fs::read(&path).unwrap();
        let entry_start = intact_len as usize;
        assert!(original.len() > entry_start + 16);

        let earlier: Replay = (0..2)
            .map(|seed| (SequenceNumber(seed as u64 + 1), small_entry(seed)))
            .collect();
        let warnings = WarnCapture::default();

        for cut in entry_start..original.len() {
            fs::write(&path, &original[..cut]).unwrap();
            let (wal, replayed, _) = tracing::subscriber::with_default(warnings.clone(), || {
                open(config(dir.path())).unwrap()
            });
            assert_eq!(replayed, earlier, "cut at {cut}");
            let logged = warnings.take();
            if cut == entry_start {
                assert!(logged.is_empty(), "cut at {cut}: {logged:?}");
            } else {
                let [warning] = logged.try_into().unwrap();
                assert!(
                    warning.contains(&format!("offset={entry_start} "))
                        && warning.contains(&format!("dropped_bytes={} ", cut - entry_start))
                        && warning.contains(&path.display().to_string()),
                    "cut at {cut}: {warning}"
                );
            }
            assert_eq!(fs::metadata(&path).unwrap().len(), intact_len);

            let seq = wal
                .append(EncodedEntry::encode(&small_entry(9)).unwrap(), false)
                .await
                .unwrap();
            assert_eq!(seq, SequenceNumber(3));
            wal.close().unwrap();
            let mut replayed = replay_all(config(dir.path())).unwrap();
            assert_eq!(replayed.pop(), Some((SequenceNumber(3), small_entry(9))));
            assert_eq!(replayed, earlier, "cut at {cut}");
            assert_eq!(segment_paths(dir.path()), std::slice::from_ref(&path));
        }

        for flip in entry_start..original.len() {
            let mut damaged = original.clone();
            damaged[flip] ^= 0x20;
            fs::write(&path, &damaged).unwrap();
            let (wal, replayed, _) = tracing::subscriber::with_default(warnings.clone(), || {
                open(config(dir.path())).unwrap()
            });
            wal.close().unwrap();
            assert_eq!(replayed, earlier, "flip at {flip}");
            assert_eq!(warnings.take().len(), 1, "flip at {flip}");
            assert_eq!(fs::metadata(&path).unwrap().len(), intact_len);
        }
    }

    #[tokio::test]
    async fn empty_or_torn_header_of_last_segment_is_rewritten() {
        let damaged_headers: [&[u8]; 4] = [b"", b"TRB", b"TRBWAL0", &[0; 8]];
        for header in damaged_headers {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(file_name(SequenceNumber(1)));
            fs::write(&path, header).unwrap();

            let (wal, replayed, _) = open(config(dir.path())).unwrap();
            assert!(replayed.is_empty());
            assert_eq!(fs::read(&path).unwrap(), MAGIC);
            assert_eq!(
                wal.append(encode(0), true).await.unwrap(),
                SequenceNumber(1)
            );
            wal.close().unwrap();
            assert_eq!(replay_all(config(dir.path())).unwrap().len(), 1);
        }
    }

    #[test]
    fn segment_of_another_format_version_fails_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(SequenceNumber(1)));
        fs::write(&path, b"TRBWAL02").unwrap();
        let err = open(config(dir.path())).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { path: p, offset: 0, .. } if *p == path),
            "{err}"
        );
    }

    #[tokio::test]
    async fn corruption_in_an_earlier_segment_fails_open_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = WalConfig {
            segment_size_bytes: 1, // every batch rotates
            ..config(dir.path())
        };
        let (wal, _, _) = open(config.clone()).unwrap();
        for seed in 0..3 {
            wal.append(encode(seed), true).await.unwrap();
        }
        wal.close().unwrap();
        let paths = segment_paths(dir.path());
        assert_eq!(paths.len(), 4);

        let second = &paths[1];
        let original = fs::read(second).unwrap();
        let mut damaged = original.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 1;
        fs::write(second, &damaged).unwrap();
        let err = open(config.clone()).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { path, offset: 8, source: Corruption::Checksum { .. } } if path == second),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&second.display().to_string()),
            "{err}"
        );

        // A torn tail is only expected in the last segment.
        fs::write(second, &original[..original.len() - 1]).unwrap();
        let err = open(config).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { path, offset: 8, source: Corruption::LengthPastEnd { .. } } if path == second),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn rotation_spans_segments_and_truncate_through_deletes_only_covered_segments() {
        let dir = tempfile::tempdir().unwrap();
        let entry_len = encode(0).len_bytes() as u64;
        // Three entries pass this, two do not.
        let config = WalConfig {
            segment_size_bytes: HEADER_LEN + 2 * entry_len + entry_len / 2,
            ..config(dir.path())
        };
        let (wal, _, _) = open(config.clone()).unwrap();
        for seed in 0..9 {
            wal.append(encode(seed), true).await.unwrap();
        }
        // The writer rotates after answering; closing waits for it.
        wal.close().unwrap();
        let (wal, replayed, registry) = open(config.clone()).unwrap();
        assert_eq!(replayed.len(), 9);
        let names = |dir: &Path| -> Vec<String> {
            segment_paths(dir)
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            names(dir.path()),
            [1, 4, 7, 10].map(|s| file_name(SequenceNumber(s)))
        );
        assert_eq!(metric(&registry, "tributary_wal_segments"), 4.0);

        wal.truncate_through(SequenceNumber(5)).unwrap();
        assert_eq!(
            names(dir.path()),
            [4, 7, 10].map(|s| file_name(SequenceNumber(s)))
        );
        wal.truncate_through(SequenceNumber(6)).unwrap();
        assert_eq!(
            names(dir.path()),
            [7, 10].map(|s| file_name(SequenceNumber(s)))
        );
        assert_eq!(metric(&registry, "tributary_wal_segments"), 2.0);
        wal.close().unwrap();

        let replayed = replay_all(config.clone()).unwrap();
        let seqs: Vec<_> = replayed.iter().map(|(seq, _)| seq.0).collect();
        assert_eq!(seqs, [7, 8, 9]);
        assert_eq!(replayed[0].1, sample_entry(6));

        // Everything persisted: only the open (empty) segment stays, and its name keeps the
        // sequence going after a restart.
        let (wal, _, _) = open(config.clone()).unwrap();
        wal.truncate_through(SequenceNumber(u64::MAX)).unwrap();
        assert_eq!(names(dir.path()), [file_name(SequenceNumber(10))]);
        wal.close().unwrap();
        let (wal, replayed, _) = open(config).unwrap();
        assert!(replayed.is_empty());
        assert_eq!(wal.last_sequence_number(), Some(SequenceNumber(9)));
        assert_eq!(
            wal.append(encode(0), true).await.unwrap(),
            SequenceNumber(10)
        );
        wal.close().unwrap();
    }

    #[test]
    fn concurrent_appends_share_fsyncs() {
        const TASKS: u64 = 64;
        const APPENDS_PER_TASK: u64 = 50;
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, registry) = open(config(dir.path())).unwrap();
        let entry = EncodedEntry::encode(&small_entry(1)).unwrap();

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .unwrap();
        let mut seqs: Vec<u64> = runtime.block_on(async {
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let wal = wal.clone();
                    let entry = entry.clone();
                    tokio::spawn(async move {
                        let mut seqs = Vec::new();
                        for _ in 0..APPENDS_PER_TASK {
                            seqs.push(wal.append(entry.clone(), true).await.unwrap().0);
                        }
                        seqs
                    })
                })
                .collect();
            let mut seqs = Vec::new();
            for task in tasks {
                seqs.extend(task.await.unwrap());
            }
            seqs
        });
        seqs.sort_unstable();
        let total = TASKS * APPENDS_PER_TASK;
        assert_eq!(seqs, (1..=total).collect::<Vec<_>>());

        let appends = metric(&registry, "tributary_wal_appends_total");
        let fsyncs = metric(&registry, "tributary_wal_fsyncs_total");
        assert_eq!(appends, total as f64);
        assert!(fsyncs < appends, "{fsyncs} fsyncs for {appends} appends");
        assert_eq!(
            metric(&registry, "tributary_wal_fsync_duration_seconds_count"),
            fsyncs
        );
        wal.close().unwrap();

        assert_eq!(replay_all(config(dir.path())).unwrap().len() as u64, total);
    }

    #[tokio::test]
    async fn lone_writer_gets_one_fsync_per_synced_append_and_none_without_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, registry) = open(config(dir.path())).unwrap();
        for seed in 0..3 {
            wal.append(encode(seed), false).await.unwrap();
        }
        assert_eq!(metric(&registry, "tributary_wal_fsyncs_total"), 0.0);
        for seed in 3..8 {
            wal.append(encode(seed), true).await.unwrap();
        }
        assert_eq!(metric(&registry, "tributary_wal_fsyncs_total"), 5.0);
        assert_eq!(metric(&registry, "tributary_wal_appends_total"), 8.0);
        assert_eq!(
            metric(&registry, "tributary_wal_bytes_written_total"),
            (0..8).map(|s| encode(s).len_bytes()).sum::<usize>() as f64
        );
        wal.close().unwrap();
    }

    #[tokio::test]
    async fn close_flushes_and_later_appends_fail_with_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, registry) = open(config(dir.path())).unwrap();
        let other_handle = wal.clone();
        for seed in 0..3 {
            wal.append(encode(seed), false).await.unwrap();
        }
        wal.close().unwrap();
        assert_eq!(metric(&registry, "tributary_wal_fsyncs_total"), 1.0);
        other_handle.close().unwrap();

        let err = other_handle.append(encode(3), true).await.unwrap_err();
        assert!(matches!(err, Error::Closed), "{err}");
        assert_eq!(
            err.to_string(),
            "the write-ahead log is closed; the server is shutting down"
        );
        assert_eq!(replay_all(config(dir.path())).unwrap().len(), 3);
    }

    #[tokio::test]
    async fn failed_fsync_fails_the_batch_and_poisons_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open(config(dir.path())).unwrap();
        wal.append(encode(0), true).await.unwrap();
        wal.inner
            .shared
            .fail_next_sync
            .store(true, Ordering::Release);

        let err = wal.append(encode(1), true).await.unwrap_err();
        assert!(matches!(err, Error::Fsync { .. }), "{err}");
        let err = wal.append(encode(2), true).await.unwrap_err();
        assert!(matches!(err, Error::Poisoned), "{err}");
        assert!(err.to_string().contains("restart the server"), "{err}");
        assert!(matches!(wal.close(), Err(Error::Poisoned)));
    }

    #[test]
    fn replay_callback_error_fails_open() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (wal, _, _) = open(config(dir.path())).unwrap();
        runtime.block_on(wal.append(encode(0), true)).unwrap();
        wal.close().unwrap();

        let err = Wal::open(config(dir.path()), &mut Registry::default(), |_, _| {
            Err("buffer is full".into())
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Replay {
                    seq: SequenceNumber(1),
                    ..
                }
            ),
            "{err}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_bytes_as_last_segment_never_panic_on_open(
            with_magic in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut contents = if with_magic { MAGIC.to_vec() } else { Vec::new() };
            contents.extend_from_slice(&bytes);
            fs::write(dir.path().join(file_name(SequenceNumber(1))), &contents).unwrap();
            if let Ok((wal, _, _)) = open(config(dir.path())) {
                wal.close().unwrap();
            }
        }

        #[test]
        fn random_bytes_as_earlier_segment_never_panic_on_open(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut contents = MAGIC.to_vec();
            contents.extend_from_slice(&bytes);
            fs::write(dir.path().join(file_name(SequenceNumber(1))), &contents).unwrap();
            fs::write(dir.path().join(file_name(SequenceNumber(1000))), MAGIC).unwrap();
            if let Ok((wal, _, _)) = open(config(dir.path())) {
                wal.close().unwrap();
            }
        }
    }
}
