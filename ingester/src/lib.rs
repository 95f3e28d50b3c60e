//! The ingester: line protocol in, durable and queryable rows out.
//!
//! ```text
//! body --parse+validate (blocking pool)--> per-table Arrow batches
//!      --catalog.apply(new tables/columns)--> committed schema
//!      --wal.append (group commit, fsync)----> sequence number   <- the write is acknowledged
//!      --apply in sequence order-------------> Buffer (per db/table/UTC day) --> queries
//! start: wal replay ------------------------> Buffer (rows already in recorded files skipped)
//! persist (see `persist`): Buffer partition --> Parquet on object storage + catalog record
//!                                               --> rows dropped, WAL segments deleted
//! ```
//!
//! Invariants:
//! - A write is acknowledged only after its entry is durable in the WAL (unless `no_sync`) and
//!   applied to the buffer, so it is queryable the moment the client hears back.
//! - Entries are applied to the buffer in sequence-number order, so the buffer's write order is
//!   the WAL's and "last write wins" means the same before and after a restart.
//! - A write, once it reached the WAL, runs to the end even if the client goes away.

mod background;
mod buffer;
mod dedup;
mod delete;
mod persist;
mod schema;
mod write;

pub use buffer::PartitionRows;
pub use parquet_file::ObjectStorage;
pub use persist::{DEFAULT_PERSIST_INTERVAL, PersistError};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use catalog::Catalog;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use wal::{EncodedEntry, SequenceNumber, TableBatch, Wal, WalConfig, WalEntry};

use buffer::Buffer;

/// Default for `--buffer-mem-limit`.
pub const DEFAULT_BUFFER_MEM_LIMIT_BYTES: usize = 1024 * 1024 * 1024;

/// How long a write waits for persistence to make room in a full buffer before it gets
/// `BufferFull`: long enough for a persist job under way to finish, short enough to answer
/// well inside the usual client timeouts (5 s for Telegraf, 10 s for the InfluxDB clients).
pub const DEFAULT_FULL_BUFFER_WAIT: Duration = Duration::from_secs(3);

/// Most writes that wait for room at once; more are refused at once. Each holds its body.
const MAX_WAITING_WRITES: usize = 64;

/// How often a waiting write looks at the buffer's size again, besides being woken when a
/// persist job ends (the buffer also shrinks when rows are deduplicated or dropped).
const FULL_BUFFER_RECHECK: Duration = Duration::from_millis(100);

/// How the ingester is set up.
#[derive(Debug, Clone)]
pub struct IngesterConfig {
    /// Directory of the WAL segments; default `wal` (the binary puts it under `--data-dir`).
    pub wal_dir: PathBuf,
    /// Bytes of Arrow data the buffer may hold before writes get `BufferFull`; default 1 GiB.
    /// Over half of it, partitions are persisted before they age, largest first.
    pub buffer_mem_limit_bytes: usize,
    /// A partition is persisted once its oldest buffered rows are this old; default 10 s.
    pub persist_interval: Duration,
    /// How long a write that finds the buffer full waits for room; default 3 s.
    pub full_buffer_wait: Duration,
}

impl Default for IngesterConfig {
    fn default() -> Self {
        Self {
            wal_dir: PathBuf::from("wal"),
            buffer_mem_limit_bytes: DEFAULT_BUFFER_MEM_LIMIT_BYTES,
            persist_interval: DEFAULT_PERSIST_INTERVAL,
            full_buffer_wait: DEFAULT_FULL_BUFFER_WAIT,
        }
    }
}

/// Unit of the timestamps in a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Guess by magnitude, as InfluxDB 3 does.
    Auto,
    Nanosecond,
    Microsecond,
    Millisecond,
    Second,
    Minute,
    Hour,
}

impl Precision {
    /// `ts` in nanoseconds, or None on overflow.
    pub fn to_nanos(self, ts: i64) -> Option<i64> {
        let factor: i64 = match self {
            Self::Auto => return Self::guess(ts).to_nanos(ts),
            Self::Nanosecond => 1,
            Self::Microsecond => 1_000,
            Self::Millisecond => 1_000_000,
            Self::Second => 1_000_000_000,
            Self::Minute => 60_000_000_000,
            Self::Hour => 3_600_000_000_000,
        };
        ts.checked_mul(factor)
    }

    /// InfluxDB 3's guess: how many "seconds' worth" of nanoseconds the value has tells the unit.
    fn guess(ts: i64) -> Self {
        let val = ts.unsigned_abs() / 1_000_000_000;
        if val < 5 {
            Self::Second
        } else if val < 5_000 {
            Self::Millisecond
        } else if val < 5_000_000 {
            Self::Microsecond
        } else {
            Self::Nanosecond
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Nanosecond => "nanosecond",
            Self::Microsecond => "microsecond",
            Self::Millisecond => "millisecond",
            Self::Second => "second",
            Self::Minute => "minute",
            Self::Hour => "hour",
        }
    }
}

/// One write request.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub database: String,
    /// Line protocol, already decompressed.
    pub body: bytes::Bytes,
    pub precision: Precision,
    /// Keep the good lines when some are rejected (v3 default); otherwise keep none.
    pub accept_partial: bool,
    /// Acknowledge once written to the OS, without waiting for fsync.
    pub no_sync: bool,
}

/// A line that was not written, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RejectedLine {
    pub line_number: usize,
    pub original_line: String,
    pub error_message: String,
}

/// What a write did.
#[derive(Debug, Clone, Default)]
pub struct WriteOutcome {
    pub lines_written: usize,
    /// The first rejected lines, in detail; non-empty means the client gets a partial-write error.
    pub rejected: Vec<RejectedLine>,
    /// All rejected lines, also those beyond the detailed ones.
    pub lines_rejected: usize,
}

/// Errors of a whole write request.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(
        "the write buffer holds {size_bytes} bytes, over its limit of {limit_bytes}, and persisting to Parquet did not free enough of it in time; retry later or raise --buffer-mem-limit (TRIBUTARY_BUFFER_MEM_LIMIT)"
    )]
    BufferFull {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error(transparent)]
    Catalog(catalog::Error),
    #[error("cannot append to the write-ahead log")]
    Wal(#[source] wal::Error),
    #[error("cannot build Arrow batches for the write")]
    Arrow(#[source] ArrowError),
    #[error("write task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Errors of start-up.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot open the write-ahead log in {dir}")]
    Wal {
        dir: PathBuf,
        #[source]
        source: Box<wal::Error>,
    },
    #[error("cannot start the persist thread")]
    PersistThread(#[source] std::io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct RejectLabels {
    reason: write::RejectReason,
}

#[derive(Debug, Default)]
struct Metrics {
    write_requests: Counter,
    lines_written: Counter,
    lines_rejected: Family<RejectLabels, Counter>,
    bytes_received: Counter,
    buffer_bytes: Gauge,
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("tributary_ingester");
        r.register(
            "write_requests",
            "Write requests received",
            self.write_requests.clone(),
        );
        r.register(
            "lines_written",
            "Lines of line protocol written",
            self.lines_written.clone(),
        );
        r.register(
            "lines_rejected",
            "Lines of line protocol rejected",
            self.lines_rejected.clone(),
        );
        r.register(
            "bytes_received",
            "Bytes of line protocol received (decompressed)",
            self.bytes_received.clone(),
        );
        r.register(
            "buffer_bytes",
            "Bytes of Arrow data in the write buffer",
            self.buffer_bytes.clone(),
        );
    }
}

/// The sort key of a table in `snapshot` (empty, i.e. tags by name, if it is unknown).
fn table_sort_key(
    snapshot: &catalog::CatalogSnapshot,
    database: &str,
    table: &str,
) -> Arc<[Arc<str>]> {
    snapshot
        .database(database)
        .and_then(|db| db.table(table))
        .map(|t| Arc::clone(&t.sort_key))
        .unwrap_or_else(|| Arc::from(Vec::new()))
}

/// Applies WAL entries to the buffer in sequence order, whatever order their writers finish in.
#[derive(Debug)]
struct ApplyQueue {
    next: u64,
    pending: BTreeMap<u64, Vec<TableBatch>>,
}

#[derive(Debug)]
struct Inner {
    config: IngesterConfig,
    catalog: Arc<dyn Catalog>,
    wal: Wal,
    buffer: Buffer,
    apply_queue: Mutex<ApplyQueue>,
    /// Highest sequence number applied to the buffer, with all below it.
    applied: watch::Sender<u64>,
    metrics: Metrics,
    storage: ObjectStorage,
    persister: Mutex<Option<persist::PersisterHandle>>,
    persist_metrics: persist::PersistMetrics,
    /// Runs persist jobs' CPU work at a lower priority than writes.
    persist_thread: background::BackgroundThread,
    /// Wakes the persister when a write takes the buffer past the pressure mark, so it need
    /// not wait for its next tick.
    persist_wake: tokio::sync::Notify,
    /// Wakes writes waiting for room when a persist job has dropped rows from the buffer.
    buffer_freed: tokio::sync::Notify,
    /// Writes waiting for room now.
    waiting_writes: std::sync::atomic::AtomicUsize,
}

/// A write counted among those waiting for room while this lives.
struct WaitingWrite<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> WaitingWrite<'a> {
    /// Counts a write in, unless [`MAX_WAITING_WRITES`] already wait.
    fn enter(count: &'a std::sync::atomic::AtomicUsize) -> Option<Self> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WAITING_WRITES).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count))
    }
}

impl Drop for WaitingWrite<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Why a range delete failed.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    Catalog(#[from] catalog::Error),
    #[error(
        "`{column}` is not a tag of table `{table}`{}; a delete predicate compares tags only",
        found.map(|t| format!(" (it is {t})")).unwrap_or_default()
    )]
    NotATag {
        table: String,
        column: String,
        found: Option<catalog::ColumnType>,
    },
    #[error("cannot filter the buffered rows")]
    Buffer(#[from] ArrowError),
}

/// Handle to the ingester; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingester {
    inner: Arc<Inner>,
}

impl Ingester {
    /// Opens the WAL, replays into the buffer what is not persisted yet and returns the
    /// running ingester. Call [`Ingester::start_persister`] to persist in the background.
    pub fn new(
        config: IngesterConfig,
        catalog: Arc<dyn Catalog>,
        storage: ObjectStorage,
        registry: &mut Registry,
    ) -> Result<Self, InitError> {
        let buffer = Buffer::default();
        let mut replayed = 0u64;
        let snapshot = catalog.snapshot();
        let wal_config = WalConfig {
            dir: config.wal_dir.clone(),
            sequence_floor: snapshot.highest_sequence(),
            ..WalConfig::default()
        };
        // (database, table) -> its sort key and, per partition day, the sequence its recorded
        // files reach.
        type Replayed = (Arc<[Arc<str>]>, BTreeMap<i64, u64>);
        let mut tables: HashMap<(String, String), Replayed> = HashMap::new();
        let wal = Wal::open(wal_config, registry, |seq, entry| {
            replayed += 1;
            for t in entry.tables {
                if snapshot.is_deleted_data(&t.database, &t.table, seq.0) {
                    continue;
                }
                // Range deletes made after this entry was written remove its rows again.
                let deletes = snapshot
                    .database(&t.database)
                    .and_then(|db| db.table(&t.table))
                    .map(|table| snapshot.table_tombstones(table.id))
                    .unwrap_or_default()
                    .iter()
                    .map(|t| &t.delete)
                    .filter(|d| seq.0 <= d.wal_cutoff);
                let batch = match delete::without_deleted(t.batch, deletes) {
                    Ok(Some(batch)) => batch,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!(sequence = seq.0, db = %t.database, table = %t.table, error = %e, "skipping a WAL entry the range deletes cannot be applied to");
                        continue;
                    }
                };
                let (sort_key, through) = tables
                    .entry((t.database.clone(), t.table.clone()))
                    .or_insert_with(|| {
                        let through = snapshot
                            .database(&t.database)
                            .and_then(|db| db.table(&t.table))
                            .map(|table| snapshot.persisted_through(table.id))
                            .unwrap_or_default();
                        (table_sort_key(&snapshot, &t.database, &t.table), through)
                    });
                let is_persisted = |day: i64| through.get(&day).is_some_and(|&s| seq.0 <= s);
                // An entry the buffer cannot take passed its CRC, so it is not a torn write;
                // losing it is better than never starting again.
                if let Err(e) = buffer.apply_unpersisted(
                    seq.0,
                    &t.database,
                    &t.table,
                    sort_key,
                    batch,
                    is_persisted,
                ) {
                    tracing::error!(sequence = seq.0, db = %t.database, table = %t.table, error = %e, "skipping a WAL entry the buffer cannot take");
                }
            }
            Ok(())
        })
        .map_err(|source| InitError::Wal {
            dir: config.wal_dir.clone(),
            source: Box::new(source),
        })?;
        let last = wal.last_sequence_number().map_or(0, |s| s.0);
        tracing::info!(
            entries = replayed,
            last_sequence = last,
            buffer_bytes = buffer.size_bytes(),
            "replayed the write-ahead log"
        );
        let metrics = Metrics::default();
        metrics.register(registry);
        metrics.buffer_bytes.set(buffer.size_bytes() as i64);
        let persist_metrics = persist::PersistMetrics::default();
        persist_metrics.register(registry);
        let persist_thread =
            background::BackgroundThread::start("persist").map_err(InitError::PersistThread)?;
        let (applied, _) = watch::channel(last);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                catalog,
                wal,
                buffer,
                apply_queue: Mutex::new(ApplyQueue {
                    next: last + 1,
                    pending: BTreeMap::new(),
                }),
                applied,
                metrics,
                storage,
                persister: Mutex::new(None),
                persist_metrics,
                persist_thread,
                persist_wake: tokio::sync::Notify::new(),
                buffer_freed: tokio::sync::Notify::new(),
                waiting_writes: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    /// Writes a body. The future may be dropped: the write goes on to the end in its own task.
    pub async fn write(&self, request: WriteRequest) -> Result<WriteOutcome, WriteError> {
        let this = self.clone();
        tokio::spawn(async move { this.write_inner(request).await })
            .await
            .map_err(WriteError::Task)?
    }

    async fn write_inner(&self, request: WriteRequest) -> Result<WriteOutcome, WriteError> {
        let inner = &self.inner;
        inner.metrics.write_requests.inc();
        inner
            .metrics
            .bytes_received
            .inc_by(request.body.len() as u64);
        self.wait_for_buffer_room().await?;
        let default_time_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);

        // A concurrent writer may commit a column with another type between our snapshot and
        // our commit; then build again against the newer snapshot, which rejects those lines.
        let mut attempts = 0;
        let (built, encoded) = loop {
            attempts += 1;
            let snapshot = inner.catalog.snapshot();
            let limits = inner.catalog.limits();
            let request = request.clone();
            let (built, encoded) = tokio::task::spawn_blocking(move || {
                let db = snapshot.database(&request.database).map(Arc::as_ref);
                let built = write::build_write(
                    &request.database,
                    db,
                    limits,
                    &request.body,
                    request.precision,
                    default_time_ns,
                )?;
                if built.tables.is_empty()
                    || (!built.rejected.is_empty() && !request.accept_partial)
                {
                    return Ok::<_, ArrowError>((built, None));
                }
                let entry = WalEntry {
                    tables: built
                        .tables
                        .iter()
                        .map(|(table, batch)| TableBatch {
                            database: request.database.clone(),
                            table: table.clone(),
                            batch: batch.clone(),
                        })
                        .collect(),
                };
                let encoded = EncodedEntry::encode(&entry)
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                Ok((built, Some((entry, encoded))))
            })
            .await
            .map_err(WriteError::Task)?
            .map_err(WriteError::Arrow)?;
            if encoded.is_none() || built.changes.is_empty() {
                break (built, encoded);
            }
            match inner.catalog.apply(built.changes.clone()).await {
                Ok(_) => break (built, encoded),
                // Another writer got there first; the next build rejects just the lines that
                // no longer fit.
                Err(
                    catalog::Error::TypeConflict { .. }
                    | catalog::Error::TooManyTables { .. }
                    | catalog::Error::TooManyColumns { .. },
                ) if attempts < 3 => continue,
                Err(e) => return Err(WriteError::Catalog(e)),
            }
        };

        self.count_rejections(&request, &built);
        let Some((entry, encoded)) = encoded else {
            // Nothing to write: no valid line, or some invalid and partial writes refused.
            return Ok(WriteOutcome {
                lines_written: 0,
                lines_rejected: built.rejected.total,
                rejected: built.rejected.details,
            });
        };
        let sequence = inner
            .wal
            .append(encoded, !request.no_sync)
            .await
            .map_err(WriteError::Wal)?;
        self.apply_in_order(sequence, entry.tables)
            .map_err(WriteError::Arrow)?;
        if inner.buffer.size_bytes() > persist::pressure_bytes(&inner.config) {
            inner.persist_wake.notify_one();
        }
        let mut applied = inner.applied.subscribe();
        applied
            .wait_for(|&a| a >= sequence.0)
            .await
            .expect("the sender lives as long as the ingester");
        inner
            .metrics
            .lines_written
            .inc_by(built.lines_written as u64);
        Ok(WriteOutcome {
            lines_written: built.lines_written,
            lines_rejected: built.rejected.total,
            rejected: built.rejected.details,
        })
    }

    /// Returns once the buffer is within `--buffer-mem-limit`. While it is over, a write waits
    /// up to `full_buffer_wait` for persist jobs to drop rows from it, and is refused only if
    /// they cannot make room in that time (or no persister runs, or too many writes wait).
    async fn wait_for_buffer_room(&self) -> Result<(), WriteError> {
        let inner = &self.inner;
        let limit_bytes = inner.config.buffer_mem_limit_bytes;
        let deadline = tokio::time::Instant::now() + inner.config.full_buffer_wait;
        let mut waiting: Option<WaitingWrite<'_>> = None;
        loop {
            // Registered before the size is read, so a job finishing in between still wakes us.
            let freed = inner.buffer_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let size_bytes = inner.buffer.size_bytes();
            if size_bytes <= limit_bytes {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if waiting.is_none() {
                waiting = WaitingWrite::enter(&inner.waiting_writes);
            }
            if waiting.is_none() || inner.persister.lock().is_none() || now >= deadline {
                return Err(WriteError::BufferFull {
                    size_bytes,
                    limit_bytes,
                });
            }
            inner.persist_wake.notify_one();
            // Timing out is fine: the size is read once more before giving up.
            let _ = tokio::time::timeout_at(deadline.min(now + FULL_BUFFER_RECHECK), freed).await;
        }
    }

    fn count_rejections(&self, request: &WriteRequest, built: &write::BuiltWrite) {
        if built.rejected.is_empty() {
            return;
        }
        for (reason, count) in write::RejectReason::ALL
            .into_iter()
            .zip(built.rejected.by_reason)
        {
            if count > 0 {
                self.inner
                    .metrics
                    .lines_rejected
                    .get_or_create(&RejectLabels { reason })
                    .inc_by(count as u64);
            }
        }
        // Bounded: one bad client must not flood the log.
        for r in built.rejected.details.iter().take(5) {
            tracing::warn!(db = %request.database, line = r.line_number, error = %r.error_message, "rejected line");
        }
        if built.rejected.total > 5 {
            tracing::warn!(db = %request.database, more = built.rejected.total - 5, "more lines rejected in this write");
        }
    }

    /// Applies the entry with `sequence` once every earlier one is applied, and any later
    /// ones that were waiting for it. Entries of a database deleted meanwhile are dropped.
    fn apply_in_order(
        &self,
        sequence: SequenceNumber,
        tables: Vec<TableBatch>,
    ) -> Result<(), ArrowError> {
        let inner = &self.inner;
        let mut queue = inner.apply_queue.lock();
        queue.pending.insert(sequence.0, tables);
        let snapshot = inner.catalog.snapshot();
        let mut result = Ok(());
        let before = queue.next;
        while let Some(tables) = {
            let next = queue.next;
            queue.pending.remove(&next)
        } {
            let applying = queue.next;
            // Advance first: whatever happens to this entry, later writers must not wait on it.
            queue.next += 1;
            for t in tables {
                if snapshot.is_deleted_data(&t.database, &t.table, applying) {
                    continue;
                }
                let sort_key = table_sort_key(&snapshot, &t.database, &t.table);
                if let Err(e) =
                    inner
                        .buffer
                        .apply(applying, &t.database, &t.table, &sort_key, t.batch)
                {
                    tracing::error!(sequence = applying, db = %t.database, table = %t.table, error = %e, "cannot apply a WAL entry to the buffer");
                    if applying == sequence.0 {
                        result = Err(e);
                    }
                }
            }
        }
        if queue.next != before {
            // One wake-up per batch of applied entries, not one per entry.
            inner.applied.send_replace(queue.next - 1);
        }
        inner
            .metrics
            .buffer_bytes
            .set(inner.buffer.size_bytes() as i64);
        result
    }

    /// Deduplicated buffered rows of a table in partitions that may overlap
    /// `[min_time_ns, max_time_ns]`, one sorted batch per partition, conformed to `schema`.
    pub fn read_table(
        &self,
        database: &str,
        table: &str,
        schema: &SchemaRef,
        min_time_ns: i64,
        max_time_ns: i64,
    ) -> Result<Vec<PartitionRows>, ArrowError> {
        let out = self
            .inner
            .buffer
            .read(database, table, schema, min_time_ns, max_time_ns);
        self.inner
            .metrics
            .buffer_bytes
            .set(self.inner.buffer.size_bytes() as i64);
        out
    }

    /// Deletes a database: in the catalog, with the WAL position that replay must skip up to,
    /// and from the buffer.
    pub async fn delete_database(&self, database: &str) -> Result<(), catalog::Error> {
        let cutoff = self.inner.wal.last_sequence_number().map_or(0, |s| s.0);
        self.inner.catalog.delete_database(database, cutoff).await?;
        self.inner.buffer.drop_database(database);
        self.inner
            .metrics
            .buffer_bytes
            .set(self.inner.buffer.size_bytes() as i64);
        Ok(())
    }

    /// Deletes a table: in the catalog, with the WAL position that replay must skip up to,
    /// and from the buffer. Its name is free for a new table at once.
    pub async fn delete_table(&self, database: &str, table: &str) -> Result<(), catalog::Error> {
        let cutoff = self.inner.wal.last_sequence_number().map_or(0, |s| s.0);
        self.inner
            .catalog
            .delete_table(database, table, cutoff)
            .await?;
        self.inner.buffer.drop_table(database, table);
        self.inner
            .metrics
            .buffer_bytes
            .set(self.inner.buffer.size_bytes() as i64);
        Ok(())
    }

    /// Deletes the rows of a table with time in `[min_time_ns, max_time_ns]` whose tags equal
    /// every `(tag, value)` of `tags`, written before this call; returns how many buffered
    /// rows went. Later writes in the range are kept.
    ///
    /// One step for writers, under the apply lock: the cutoff is the last applied entry, the
    /// tombstone is committed, and the buffer is filtered, so every buffered row at or below
    /// the cutoff is filtered and none above it. The tombstone hides the rows of files written
    /// before the cutoff from queries (files persisted meanwhile hold only entries at or below
    /// it), replay filters the WAL entries up to it, and no file of later entries can exist
    /// before it is committed, so a compaction that did not see it is refused. Writers wait
    /// for the catalog commit (milliseconds). Runs on a multi-threaded runtime.
    pub async fn delete_rows(
        &self,
        database: &str,
        table: &str,
        min_time_ns: i64,
        max_time_ns: i64,
        tags: Vec<(Arc<str>, Arc<str>)>,
    ) -> Result<usize, DeleteError> {
        let snapshot = self.inner.catalog.snapshot();
        let schema = snapshot
            .database(database)
            .ok_or_else(|| catalog::Error::DatabaseNotFound {
                name: database.to_owned(),
            })?
            .table(table)
            .ok_or_else(|| catalog::Error::TableNotFound {
                database: database.to_owned(),
                table: table.to_owned(),
            })?;
        for (tag, _) in &tags {
            match schema.column_type(tag) {
                Some(catalog::ColumnType::Tag) => {}
                other => {
                    return Err(DeleteError::NotATag {
                        table: table.to_owned(),
                        column: tag.to_string(),
                        found: other,
                    });
                }
            }
        }
        let removed = tokio::task::block_in_place(|| {
            let queue = self.inner.apply_queue.lock();
            let delete = catalog::NewTombstone {
                min_time_ns,
                max_time_ns,
                tags,
                wal_cutoff: queue.next - 1,
            };
            let tombstone = tokio::runtime::Handle::current()
                .block_on(self.inner.catalog.add_tombstone(database, table, delete))?;
            let removed = self
                .inner
                .buffer
                .delete_rows(database, table, &tombstone.delete)?;
            drop(queue);
            Ok::<_, DeleteError>(removed)
        })?;
        self.inner
            .metrics
            .buffer_bytes
            .set(self.inner.buffer.size_bytes() as i64);
        Ok(removed)
    }

    /// Persists every buffered row (failures are logged: those rows stay in the WAL), then
    /// finishes queued WAL writes, fsyncs and closes the WAL. Call it once writes have stopped;
    /// later writes fail.
    pub async fn shutdown(&self) -> Result<(), wal::Error> {
        if let Err(e) = self.persist_everything().await {
            tracing::warn!(error = %wal::error_chain(&e), "some rows were not persisted at shutdown; they will be replayed from the write-ahead log");
        }
        let wal = self.inner.wal.clone();
        tokio::task::spawn_blocking(move || wal.close())
            .await
            .map_err(|_| wal::Error::WriterStopped)?
    }

    /// Closes the WAL without persisting, as a crash would leave it (tests of replay).
    #[cfg(test)]
    fn close_without_persisting(&self) {
        self.inner.wal.close().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::util::pretty::pretty_format_batches;
    use catalog::{CatalogLimits, SqliteCatalog};

    struct Fixture {
        dir: tempfile::TempDir,
        catalog: Arc<dyn Catalog>,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let catalog = Arc::new(
                SqliteCatalog::open(&dir.path().join("catalog.sqlite"), CatalogLimits::default())
                    .unwrap(),
            );
            Self { dir, catalog }
        }

        fn ingester(&self, buffer_mem_limit_bytes: usize) -> Ingester {
            let config = IngesterConfig {
                wal_dir: self.dir.path().join("wal"),
                buffer_mem_limit_bytes,
                ..IngesterConfig::default()
            };
            let storage = ObjectStorage::local(self.dir.path().join("objects")).unwrap();
            Ingester::new(
                config,
                Arc::clone(&self.catalog),
                storage,
                &mut Registry::default(),
            )
            .unwrap()
        }

        fn rows(&self, ingester: &Ingester, table: &str) -> String {
            let snapshot = self.catalog.snapshot();
            let schema = snapshot
                .database("db")
                .unwrap()
                .table(table)
                .unwrap()
                .arrow_schema();
            let batches: Vec<arrow::array::RecordBatch> = ingester
                .read_table("db", table, &schema, i64::MIN, i64::MAX)
                .unwrap()
                .into_iter()
                .flat_map(|p| p.batches)
                .collect();
            pretty_format_batches(&batches).unwrap().to_string()
        }
    }

    fn request(body: &str) -> WriteRequest {
        WriteRequest {
            database: "db".into(),
            body: bytes::Bytes::from(body.to_owned()),
            precision: Precision::Nanosecond,
            accept_partial: true,
            no_sync: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_write_is_readable_at_once_and_after_restart() {
        let f = Fixture::new();
        let ingester = f.ingester(1 << 30);
        ingester
            .write(request("m,t=a f=1,g=2 100\nm,t=b f=5 100"))
            .await
            .unwrap();
        ingester.write(request("m,t=a f=3 100")).await.unwrap();
        let expected = f.rows(&ingester, "m");
        assert_eq!(
            expected,
            "+-----+-----+---+-------------------------------+\n\
             | f   | g   | t | time                          |\n\
             +-----+-----+---+-------------------------------+\n\
             | 3.0 | 2.0 | a | 1970-01-01T00:00:00.000000100 |\n\
             | 5.0 |     | b | 1970-01-01T00:00:00.000000100 |\n\
             +-----+-----+---+-------------------------------+"
        );
        ingester.close_without_persisting();
        drop(ingester);
        let reopened = f.ingester(1 << 30);
        assert_eq!(f.rows(&reopened, "m"), expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_delete_hides_matching_rows_at_once_and_after_restart_but_not_later_writes() {
        let f = Fixture::new();
        let ingester = f.ingester(1 << 30);
        ingester
            .write(request(
                "m,t=a f=1 100
m,t=b f=2 100
m,t=a f=3 500
m f=4 100",
            ))
            .await
            .unwrap();
        let removed = ingester
            .delete_rows("db", "m", 0, 200, vec![("t".into(), "a".into())])
            .await
            .unwrap();
        assert_eq!(removed, 1);
        // Written after the delete, inside its range: kept.
        ingester.write(request("m,t=a f=9 150")).await.unwrap();
        let expected = f.rows(&ingester, "m");
        assert_eq!(
            expected,
            "+-----+---+-------------------------------+\n\
             | f   | t | time                          |\n\
             +-----+---+-------------------------------+\n\
             | 4.0 |   | 1970-01-01T00:00:00.000000100 |\n\
             | 9.0 | a | 1970-01-01T00:00:00.000000150 |\n\
             | 3.0 | a | 1970-01-01T00:00:00.000000500 |\n\
             | 2.0 | b | 1970-01-01T00:00:00.000000100 |\n\
             +-----+---+-------------------------------+"
        );
        ingester.close_without_persisting();
        drop(ingester);
        let reopened = f.ingester(1 << 30);
        assert_eq!(
            f.rows(&reopened, "m"),
            expected,
            "replay applies the delete"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delete_names_a_column_that_is_not_a_tag() {
        let f = Fixture::new();
        let ingester = f.ingester(1 << 30);
        ingester.write(request("m,t=a f=1 100")).await.unwrap();
        let e = ingester
            .delete_rows("db", "m", 0, 200, vec![("f".into(), "1".into())])
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`f` is not a tag of table `m` (it is a float field); a delete predicate compares tags only"
        );
        let e = ingester
            .delete_rows("db", "nope", 0, 200, vec![])
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                DeleteError::Catalog(catalog::Error::TableNotFound { .. })
            ),
            "{e}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_table_does_not_come_back_after_restart_and_its_name_is_reusable() {
        let f = Fixture::new();
        let ingester = f.ingester(1 << 30);
        ingester
            .write(request(
                "m,t=a f=1 100
n g=1 1",
            ))
            .await
            .unwrap();
        ingester.delete_table("db", "m").await.unwrap();
        // A new table of that name may even change column types.
        ingester.write(request("m,t=b f=\"x\" 200")).await.unwrap();
        let expected = f.rows(&ingester, "m");
        assert!(expected.contains("| x | b |"), "{expected}");
        assert!(!expected.contains("| a "), "{expected}");
        ingester.close_without_persisting();
        drop(ingester);
        let reopened = f.ingester(1 << 30);
        assert_eq!(f.rows(&reopened, "m"), expected);
        assert!(f.rows(&reopened, "n").contains("1.0"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partial_writes_are_refused_whole_when_not_accepted() {
        let f = Fixture::new();
        let ingester = f.ingester(1 << 30);
        let mut req = request("m f=1 1\nm f=\"x\" 2");
        req.accept_partial = false;
        let outcome = ingester.write(req).await.unwrap();
        assert_eq!(outcome.lines_written, 0);
        assert_eq!(outcome.rejected.len(), 1);
        assert!(
            f.catalog.snapshot().database("db").is_none(),
            "nothing was committed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_past_the_buffer_limit_are_refused_with_the_flag_name() {
        let f = Fixture::new();
        let ingester = f.ingester(1024 * 1024);
        let line: String = (0..2000).map(|i| format!("m,t=t{i} f={i} {i}\n")).collect();
        let mut refused = None;
        for _ in 0..200 {
            match ingester.write(request(&line)).await {
                Ok(_) => {}
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let e = refused.expect("the buffer limit is reached");
        assert!(matches!(e, WriteError::BufferFull { .. }));
        assert!(e.to_string().contains("--buffer-mem-limit"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_buffer_that_persistence_cannot_drain_refuses_writes_after_waiting() {
        let f = Fixture::new();
        // A file where the database's objects would go: every upload fails.
        std::fs::create_dir_all(f.dir.path().join("objects")).unwrap();
        std::fs::write(f.dir.path().join("objects/db"), "not a directory").unwrap();
        let ingester = f.ingester(1024 * 1024);
        ingester.start_persister();
        let mut refused = None;
        for round in 0..200 {
            // New keys each time: deduplicating the buffer frees nothing.
            let lines: String = (0..2000)
                .map(|i| format!("m,t=t{i} f={i} {}\n", round * 2000 + i))
                .collect();
            let started = std::time::Instant::now();
            if let Err(e) = ingester.write(request(&lines)).await {
                refused = Some((e, started.elapsed()));
                break;
            }
        }
        let (e, waited) = refused.expect("the buffer limit is reached");
        assert!(matches!(e, WriteError::BufferFull { .. }), "{e}");
        assert!(e.to_string().contains("--buffer-mem-limit"), "{e}");
        assert!(
            waited >= DEFAULT_FULL_BUFFER_WAIT,
            "refused after {waited:?}, without waiting for persistence"
        );
        ingester.close_without_persisting();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_to_one_key_resolve_in_wal_order_after_restart() {
        let f = Fixture::new();
        let ingester = f.ingester(1 << 30);
        let mut tasks = Vec::new();
        for i in 0..32 {
            let ingester = ingester.clone();
            tasks.push(tokio::spawn(async move {
                ingester
                    .write(request(&format!("m,t=a f={i} 1\nm,t=k{i} f={i} 1")))
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let before = f.rows(&ingester, "m");
        assert_eq!(
            before.lines().count(),
            33 + 4,
            "one row for `a`, one per k{{i}}, plus borders"
        );
        ingester.close_without_persisting();
        drop(ingester);
        assert_eq!(f.rows(&f.ingester(1 << 30), "m"), before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persisted_rows_leave_the_buffer_and_are_not_replayed() {
        let f = Fixture::new();
        let ingester = f.ingester(1 << 30);
        ingester
            .write(request("m,t=a f=1 100\nm,t=b f=2 86400000000100"))
            .await
            .unwrap();
        ingester.shutdown().await.unwrap();
        drop(ingester);

        let snapshot = f.catalog.snapshot();
        let table = snapshot.database("db").unwrap().table("m").unwrap().id;
        let files = snapshot.table_files(table);
        assert_eq!(files.len(), 2, "one file per day: {files:?}");
        assert_eq!(files.iter().map(|f| f.file.row_count).sum::<u64>(), 2);
        for file in files {
            let path = f.dir.path().join("objects").join(&file.file.path);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                file.file.size_bytes
            );
        }

        let reopened = f.ingester(1 << 30);
        assert_eq!(
            f.rows(&reopened, "m"),
            "++\n++",
            "nothing replayed into the buffer"
        );
        // New entries are numbered above the persisted ones, so a later replay keeps them.
        reopened.write(request("m,t=a f=3 100")).await.unwrap();
        reopened.close_without_persisting();
        drop(reopened);
        let again = f.ingester(1 << 30);
        assert!(
            f.rows(&again, "m").contains("| 3.0 | a |"),
            "{}",
            f.rows(&again, "m")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistence_keeps_a_small_buffer_writable_and_every_row_lands_once() {
        let f = Fixture::new();
        let config = IngesterConfig {
            wal_dir: f.dir.path().join("wal"),
            buffer_mem_limit_bytes: 2 * 1024 * 1024,
            // Only memory pressure triggers persistence here.
            persist_interval: Duration::from_secs(3600),
            // However slow this machine: a refusal here means persistence stopped, not that
            // it was slow.
            full_buffer_wait: Duration::from_secs(120),
        };
        let storage = ObjectStorage::local(f.dir.path().join("objects")).unwrap();
        let ingester = Ingester::new(
            config,
            Arc::clone(&f.catalog),
            storage,
            &mut Registry::default(),
        )
        .unwrap();
        ingester.start_persister();
        // Each write fills a new partition, and 40 of them are far more than the buffer holds.
        // A write that finds it full waits for the persister instead of being refused.
        for day in 0..40i64 {
            let body: String = (0..5_000)
                .map(|i| format!("m,t=t{} f={i} {}\n", i % 50, day * 86_400_000_000_000 + i))
                .collect();
            if let Err(e) = ingester.write(request(&body)).await {
                panic!("write of day {day} refused although persistence keeps up: {e}");
            }
        }
        ingester.shutdown().await.unwrap();
        let snapshot = f.catalog.snapshot();
        let table = snapshot.database("db").unwrap().table("m").unwrap().id;
        let rows: u64 = snapshot
            .table_files(table)
            .iter()
            .map(|f| f.file.row_count)
            .sum();
        assert_eq!(rows, 40 * 5_000);
        assert!(
            snapshot.table_files(table).len() >= 40,
            "one file per day at least"
        );
    }
}
