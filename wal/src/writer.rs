//! The writer thread: group commit of queued appends into the open segment, and rotation.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::entry::EncodedEntry;
use crate::metrics::WalMetrics;
use crate::segment::{self, FRAME_HEADER_LEN, HEADER_LEN, SegmentFile};
use crate::{Error, Result, SequenceNumber, error_chain};

/// State shared by the [`crate::Wal`] handles and the writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    /// Oldest first; the last one is the open segment.
    pub(crate) segments: Mutex<Vec<SegmentFile>>,
    /// The highest sequence number handed out, 0 for none.
    pub(crate) last_seq: AtomicU64,
    /// Set for good after a failed write or fsync.
    pub(crate) poisoned: AtomicBool,
    pub(crate) metrics: WalMetrics,
    /// Failpoint: the next segment fsync fails.
    #[cfg(test)]
    pub(crate) fail_next_sync: AtomicBool,
}

impl Shared {
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }
}

/// One queued append.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) entry: EncodedEntry,
    pub(crate) sync: bool,
    pub(crate) reply: oneshot::Sender<Result<SequenceNumber>>,
    /// Held until the append is answered, so queued plus in-flight appends never exceed the
    /// queue capacity and the channel never blocks a sender.
    pub(crate) _permit: OwnedSemaphorePermit,
}

/// The segment the writer appends to.
#[derive(Debug)]
pub(crate) struct OpenSegment {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) len_bytes: u64,
    /// Whether bytes were written since the last fsync.
    pub(crate) unsynced: bool,
}

#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) segment: OpenSegment,
    pub(crate) next_seq: SequenceNumber,
    pub(crate) segment_size_bytes: u64,
}

/// Why a batch failed; shared by all of its appends.
enum Failure {
    Write(Arc<io::Error>),
    Fsync(Arc<io::Error>),
}

impl Failure {
    fn to_error(&self, path: &Path, first_seq: SequenceNumber, last_seq: SequenceNumber) -> Error {
        match self {
            Self::Write(source) => Error::Write {
                path: path.to_owned(),
                first_seq,
                last_seq,
                source: Arc::clone(source),
            },
            Self::Fsync(source) => Error::Fsync {
                path: path.to_owned(),
                source: Arc::clone(source),
            },
        }
    }
}

impl Writer {
    /// Commits batches until every sender is gone, then makes everything written durable.
    pub(crate) fn run(mut self, requests: Receiver<Request>) -> Result<()> {
        let mut batch = Vec::new();
        while let Ok(first) = requests.recv() {
            batch.push(first);
            // Whatever queued up while the previous batch was written and synced joins this
            // one; the semaphore bounds it by the queue capacity.
            batch.extend(requests.try_iter());
            self.commit(&mut batch);
        }
        self.shutdown()
    }

    /// Writes, syncs if asked and answers one batch; rotates the segment if it is full.
    fn commit(&mut self, batch: &mut Vec<Request>) {
        if self.shared.is_poisoned() {
            for request in batch.drain(..) {
                let _ = request.reply.send(Err(Error::Poisoned));
            }
            return;
        }

        let first_seq = self.next_seq;
        let count = batch.len() as u64;
        if let Err(failure) = self.write_batch(batch) {
            self.poison();
            let last_seq = SequenceNumber(first_seq.0 + count - 1);
            let error = failure.to_error(&self.segment.path, first_seq, last_seq);
            tracing::error!(
                error = %error_chain(&error),
                "write-ahead log failed; refusing further writes"
            );
            for request in batch.drain(..) {
                let _ = request.reply.send(Err(failure.to_error(
                    &self.segment.path,
                    first_seq,
                    last_seq,
                )));
            }
            return;
        }

        self.shared
            .last_seq
            .store(self.next_seq.0 - 1, Ordering::Release);
        for (i, request) in batch.drain(..).enumerate() {
            // A caller that stopped waiting still got its entry logged; nothing to undo.
            let _ = request
                .reply
                .send(Ok(SequenceNumber(first_seq.0 + i as u64)));
        }

        if self.segment.len_bytes > self.segment_size_bytes
            && let Err(error) = self.rotate()
        {
            self.poison();
            tracing::error!(
                error = %error_chain(&error),
                "cannot rotate the WAL segment; refusing further writes"
            );
        }
    }

    fn write_batch(&mut self, batch: &[Request]) -> Result<(), Failure> {
        let first_seq = self.next_seq.0;
        let headers: Vec<[u8; FRAME_HEADER_LEN]> = batch
            .iter()
            .zip(first_seq..)
            .map(|(request, seq)| segment::frame_header(SequenceNumber(seq), &request.entry))
            .collect();
        let mut slices = Vec::with_capacity(2 * batch.len());
        let mut bytes = 0;
        for (header, request) in headers.iter().zip(batch) {
            slices.push(IoSlice::new(header));
            slices.push(IoSlice::new(request.entry.payload()));
            bytes += request.entry.len_bytes() as u64;
        }
        let written = write_all_vectored(&mut self.segment.file, &mut slices);
        // Even a failed write may have appended some bytes.
        self.segment.unsynced = true;
        written.map_err(|e| Failure::Write(Arc::new(e)))?;
        self.segment.len_bytes += bytes;
        self.next_seq = SequenceNumber(first_seq + batch.len() as u64);

        if batch.iter().any(|r| r.sync) {
            self.sync_segment().map_err(Failure::Fsync)?;
        }
        let metrics = &self.shared.metrics;
        metrics.appends.inc_by(batch.len() as u64);
        metrics.bytes_written.inc_by(bytes);
        Ok(())
    }

    fn sync_segment(&mut self) -> Result<(), Arc<io::Error>> {
        #[cfg(test)]
        if self.shared.fail_next_sync.swap(false, Ordering::AcqRel) {
            return Err(Arc::new(io::Error::other("injected fsync failure")));
        }
        let start = Instant::now();
        self.segment.file.sync_data().map_err(Arc::new)?;
        let metrics = &self.shared.metrics;
        metrics.fsyncs.inc();
        metrics
            .fsync_duration_seconds
            .observe(start.elapsed().as_secs_f64());
        self.segment.unsynced = false;
        Ok(())
    }

    /// Seals the full segment (fsync) and opens the next, named after the next sequence
    /// number.
    fn rotate(&mut self) -> Result<()> {
        if self.segment.unsynced {
            self.sync_segment().map_err(|source| Error::Fsync {
                path: self.segment.path.clone(),
                source,
            })?;
        }
        let (file, path) = segment::create(&self.shared.dir, self.next_seq)?;
        {
            let mut segments = self.shared.segments.lock();
            segments.push(SegmentFile {
                first: self.next_seq,
                path: path.clone(),
            });
            self.shared.metrics.set_segments(segments.len());
        }
        self.segment = OpenSegment {
            file,
            path,
            len_bytes: HEADER_LEN,
            unsynced: true,
        };
        Ok(())
    }

    fn poison(&self) {
        self.shared.poisoned.store(true, Ordering::Release);
    }

    /// Makes everything written durable before the thread exits.
    fn shutdown(mut self) -> Result<()> {
        if self.shared.is_poisoned() {
            return Err(Error::Poisoned);
        }
        if self.segment.unsynced {
            self.sync_segment().map_err(|source| {
                self.poison();
                Error::Fsync {
                    path: self.segment.path.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }
}

/// `Write::write_all_vectored` is unstable; this is the same loop. std caps each call at
/// `IOV_MAX` slices, so large batches take several calls.
fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
