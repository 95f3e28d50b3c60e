//! Persistence: buffered partitions become sorted Parquet files on object storage.
//!
//! ```text
//! PersistJob(db, table, day):
//!   buffer.begin_persist ---> deduplicated head chunk (sorted by tags, time)   [blocking pool]
//!   encode_partition -------> Parquet bytes        [persist thread at nice 10; blocking pool
//!                                                    once the buffer is a quarter full]
//!   object store put -------> <db>/<table>/<YYYY-MM-DD>/<uuid>.parquet (fsynced when local)
//!   catalog.add_parquet_files  (path, times, rows, size, WAL sequence range: one transaction)
//!   buffer.finish_persist --> the head chunk is dropped
//!   wal.truncate_through ---> segments whose entries are all persisted are deleted
//! ```
//!
//! A crash between any two steps loses nothing: until the catalog records the file, the rows
//! are in the WAL and replay brings them back (an uploaded but unrecorded object is ignored);
//! after it, replay skips the partition's rows up to the file's highest sequence number
//! ([`catalog::CatalogSnapshot::persisted_through`]). Queries read the buffer before the
//! catalog, so between the record and the drop they see the rows twice and deduplicate them.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::compute::{max, min};
use arrow::datatypes::TimestampNanosecondType;
use arrow::error::ArrowError;
use catalog::{NewParquetFile, TIME_COLUMN, partition_date};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::Ingester;
use crate::buffer::PartitionKey;
use parquet_file::{StorageError, encode_partition};

/// Default for `--persist-interval`.
pub const DEFAULT_PERSIST_INTERVAL: Duration = Duration::from_secs(10);

/// Why a persist job failed; its rows stay buffered and a later job retries.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot prepare the partition's rows")]
    Arrow(#[source] ArrowError),
    #[error("cannot encode the Parquet file")]
    Parquet(#[source] parquet::errors::ParquetError),
    #[error("cannot store the Parquet file")]
    Storage(#[source] StorageError),
    #[error("cannot record the file in the catalog")]
    Catalog(#[source] catalog::Error),
    #[error("cannot delete persisted write-ahead log segments")]
    Wal(#[source] wal::Error),
    #[error("persist task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Background(#[from] crate::background::BackgroundJobFailed),
}

/// Steps of a persist job where a test can make the process abort (`TRIBUTARY_FAILPOINT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failpoint {
    BeforeUpload,
    AfterUpload,
    AfterCatalog,
    AfterBufferDrop,
    AfterWalTruncate,
}

impl Failpoint {
    fn name(self) -> &'static str {
        match self {
            Self::BeforeUpload => "persist-before-upload",
            Self::AfterUpload => "persist-after-upload",
            Self::AfterCatalog => "persist-after-catalog",
            Self::AfterBufferDrop => "persist-after-buffer-drop",
            Self::AfterWalTruncate => "persist-after-wal-truncate",
        }
    }

    /// Aborts the process (no cleanup, like a crash) if `TRIBUTARY_FAILPOINT` names this step.
    fn check(self) {
        static ARMED: OnceLock<Option<String>> = OnceLock::new();
        let armed = ARMED.get_or_init(|| std::env::var("TRIBUTARY_FAILPOINT").ok());
        if armed.as_deref() == Some(self.name()) {
            eprintln!("failpoint {} reached: aborting", self.name());
            std::process::abort();
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct PersistMetrics {
    files: Counter,
    rows: Counter,
    bytes: Counter,
    errors: Counter,
}

impl PersistMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("tributary_persist");
        r.register("files", "Parquet files persisted", self.files.clone());
        r.register("rows", "Rows persisted to Parquet", self.rows.clone());
        r.register("bytes", "Bytes of Parquet persisted", self.bytes.clone());
        r.register(
            "errors",
            "Persist jobs that failed (their rows stay buffered and are retried)",
            self.errors.clone(),
        );
    }
}

/// Stops the background persister and waits for its current job.
#[derive(Debug)]
pub(crate) struct PersisterHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl PersisterHandle {
    pub(crate) async fn stop(self) {
        self.stop.send_replace(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the persister task failed");
        }
    }
}

/// Share of `--buffer-mem-limit` above which partitions are persisted before they age, largest
/// first, so that writes are refused only if persistence cannot keep up.
const PRESSURE_SHARE: f64 = 0.5;

/// Buffer bytes above which partitions are persisted before they age.
pub(crate) fn pressure_bytes(config: &crate::IngesterConfig) -> usize {
    (config.buffer_mem_limit_bytes as f64 * PRESSURE_SHARE) as usize
}

impl Ingester {
    /// Starts persisting partitions in the background: those whose oldest rows are older than
    /// the persist interval, and the largest ones while the buffer is over half its limit.
    pub fn start_persister(&self) {
        let mut slot = self.inner.persister.lock();
        if slot.is_some() {
            return;
        }
        let (stop, stopped) = watch::channel(false);
        let this = self.clone();
        let task = tokio::spawn(async move { this.run_persister(stopped).await });
        *slot = Some(PersisterHandle { stop, task });
    }

    async fn run_persister(self, mut stopped: watch::Receiver<bool>) {
        let interval = self.inner.config.persist_interval;
        let tick = (interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let pressure_bytes = pressure_bytes(&self.inner.config);
        // Partitions whose last job failed wait before the next try, so a broken object store
        // is not hammered.
        let mut retry_after: HashMap<PartitionKey, (Instant, Duration)> = HashMap::new();
        // Segments replayed at start-up may hold only persisted entries.
        if let Err(e) = self.truncate_wal().await {
            tracing::warn!(error = %wal::error_chain(&e), "cannot delete persisted write-ahead log segments");
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.inner.persist_wake.notified() => {}
                _ = stopped.changed() => return,
            }
            let under_pressure = self.inner.buffer.size_bytes() > pressure_bytes;
            let now = Instant::now();
            // A partition's last delay is kept past its retry time, so the next failure doubles
            // it; it is forgotten once the partition has gone quiet for a while.
            retry_after.retain(|_, (at, backoff)| now < *at + *backoff * 4);
            for key in self
                .inner
                .buffer
                .persist_candidates(interval, under_pressure)
            {
                if *stopped.borrow() {
                    return;
                }
                if retry_after.get(&key).is_some_and(|(at, _)| *at > now) {
                    continue;
                }
                match self.persist_partition(&key).await {
                    Ok(_) => {
                        retry_after.remove(&key);
                    }
                    Err(e) => {
                        let backoff = retry_after
                            .get(&key)
                            .map_or(Duration::from_secs(1), |(_, b)| {
                                (*b * 2).min(Duration::from_secs(60))
                            });
                        tracing::warn!(db = %key.database, table = %key.table, partition = %partition_date(key.day), error = %wal::error_chain(&e), retry_in = ?backoff, "persist failed; the rows stay buffered");
                        retry_after.insert(key, (Instant::now() + backoff, backoff));
                    }
                }
            }
        }
    }

    /// Stops the background persister and persists every buffered partition (shutdown).
    pub(crate) async fn persist_everything(&self) -> Result<(), PersistError> {
        let persister = self.inner.persister.lock().take();
        if let Some(p) = persister {
            p.stop().await;
        }
        let mut result = Ok(());
        for key in self.inner.buffer.all_partitions() {
            if let Err(e) = self.persist_partition(&key).await {
                tracing::error!(db = %key.database, table = %key.table, partition = %partition_date(key.day), error = %wal::error_chain(&e), "cannot persist at shutdown; the rows stay in the write-ahead log");
                result = Err(e);
            }
        }
        result
    }

    /// Runs a persist job's encoding: on the low-priority persist thread, or at the writes'
    /// priority once the buffer is a quarter full (well before writes may wait for room: the
    /// job keeps the priority it starts with).
    async fn run_cpu_work<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PersistError> {
        if self.inner.buffer.size_bytes() > self.inner.config.buffer_mem_limit_bytes / 4 {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(PersistError::Task)
        } else {
            Ok(self.inner.persist_thread.run(work).await?)
        }
    }

    /// Runs one persist job. Returns whether a file was written (false: nothing to persist,
    /// a job for the partition is already running, or its database was deleted).
    pub(crate) async fn persist_partition(&self, key: &PartitionKey) -> Result<bool, PersistError> {
        let inner = &self.inner;
        let started = Instant::now();
        let rows = {
            let this = self.clone();
            let key = key.clone();
            // At the writes' priority: queries of the partition wait for its dedup.
            tokio::task::spawn_blocking(move || this.inner.buffer.begin_persist(&key))
                .await
                .map_err(PersistError::Task)?
                .map_err(PersistError::Arrow)?
        };
        let Some(rows) = rows else {
            return Ok(false);
        };
        let result = self.write_and_record(key, rows).await;
        match result {
            Ok(Some((file, through))) => {
                inner.buffer.finish_persist(key, through);
                inner.buffer_freed.notify_waiters();
                inner
                    .metrics
                    .buffer_bytes
                    .set(inner.buffer.size_bytes() as i64);
                Failpoint::AfterBufferDrop.check();
                tracing::info!(
                    db = %key.database,
                    table = %key.table,
                    partition = %partition_date(key.day),
                    path = %file.path,
                    rows = file.row_count,
                    bytes = file.size_bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "persisted"
                );
                self.truncate_wal().await?;
                Failpoint::AfterWalTruncate.check();
                Ok(true)
            }
            Ok(None) => {
                inner.buffer.abort_persist(key);
                Ok(false)
            }
            Err(e) => {
                inner.buffer.abort_persist(key);
                inner.persist_metrics.errors.inc();
                Err(e)
            }
        }
    }

    /// Encodes, uploads and records the rows; `None` if the table's database is gone.
    async fn write_and_record(
        &self,
        key: &PartitionKey,
        rows: crate::buffer::PersistRows,
    ) -> Result<Option<(NewParquetFile, u64)>, PersistError> {
        let inner = &self.inner;
        let snapshot = inner.catalog.snapshot();
        let Some(table) = snapshot
            .database(&key.database)
            .and_then(|db| db.table(&key.table))
        else {
            return Ok(None);
        };
        let table_id = table.id;
        let row_count: u64 = rows.batches.iter().map(|b| b.num_rows() as u64).sum();
        let (min_sequence, max_sequence) = (rows.min_sequence, rows.max_sequence);
        let (bytes, min_time_ns, max_time_ns) = self
            .run_cpu_work(move || {
                let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
                for batch in &rows.batches {
                    let time = batch
                        .column_by_name(TIME_COLUMN)
                        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
                        .ok_or_else(|| {
                            PersistError::Arrow(ArrowError::SchemaError("no time column".into()))
                        })?;
                    debug_assert_eq!(time.null_count(), 0);
                    min_time = min_time.min(min(time).unwrap_or(i64::MAX));
                    max_time = max_time.max(max(time).unwrap_or(i64::MIN));
                }
                let bytes = encode_partition(&rows.batches, &rows.sort_key)
                    .map_err(PersistError::Parquet)?;
                Ok::<_, PersistError>((bytes, min_time, max_time))
            })
            .await??;

        let path = parquet_file::object_path(&key.database, &key.table, key.day);
        let size_bytes = bytes.len() as u64;
        Failpoint::BeforeUpload.check();
        inner
            .storage
            .put_durable(&path, bytes)
            .await
            .map_err(PersistError::Storage)?;
        Failpoint::AfterUpload.check();

        let file = NewParquetFile {
            table_id,
            partition_day: key.day,
            path: path.to_string(),
            size_bytes,
            row_count,
            min_time_ns,
            max_time_ns,
            level: 0,
            min_sequence,
            max_sequence,
            tombstones_applied: 0,
        };
        inner
            .catalog
            .add_parquet_files(vec![file.clone()])
            .await
            .map_err(PersistError::Catalog)?;
        Failpoint::AfterCatalog.check();
        inner.persist_metrics.files.inc();
        inner.persist_metrics.rows.inc_by(row_count);
        inner.persist_metrics.bytes.inc_by(size_bytes);
        Ok(Some((file, max_sequence)))
    }

    /// Deletes WAL segments whose entries are all persisted (or belong to deleted databases).
    async fn truncate_wal(&self) -> Result<(), PersistError> {
        let inner = &self.inner;
        // Read the applied watermark first: every entry up to it is in the buffer or in a
        // recorded file, and the buffer's oldest entry read after it bounds what is unpersisted.
        let applied = *inner.applied.borrow();
        let bound = match inner.buffer.oldest_unpersisted_sequence() {
            Some(oldest) => applied.min(oldest.saturating_sub(1)),
            None => applied,
        };
        if bound == 0 {
            return Ok(());
        }
        let wal = inner.wal.clone();
        let retained_from = tokio::task::spawn_blocking(move || -> Result<u64, wal::Error> {
            wal.truncate_through(wal::SequenceNumber(bound))?;
            Ok(wal.first_retained_sequence().0)
        })
        .await
        .map_err(PersistError::Task)?
        .map_err(PersistError::Wal)?;
        // Range deletes whose WAL entries are all gone and whose rows no file holds are done.
        match inner.catalog.retire_tombstones(retained_from).await {
            Ok(0) => {}
            Ok(retired) => tracing::debug!(retired, "retired range deletes"),
            Err(e) => {
                tracing::warn!(error = %wal::error_chain(&e), "cannot retire range deletes; will try again")
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use catalog::{Catalog, CatalogLimits, SqliteCatalog};
    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };
    use parquet_file::ObjectStorage;

    use super::*;
    use crate::{IngesterConfig, Precision, WriteRequest};

    /// An object store whose uploads fail while `down` is set.
    #[derive(Debug, Default)]
    struct FlakyStore {
        inner: InMemory,
        down: AtomicBool,
    }

    impl std::fmt::Display for FlakyStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("FlakyStore")
        }
    }

    #[async_trait]
    impl ObjectStore for FlakyStore {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            if self.down.load(Ordering::SeqCst) {
                return Err(object_store::Error::Generic {
                    store: "FlakyStore",
                    source: "the store is down".into(),
                });
            }
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_upload_keeps_the_rows_buffered_and_a_retry_persists_them_once() {
        let dir = tempfile::tempdir().unwrap();
        let catalog: Arc<dyn Catalog> = Arc::new(
            SqliteCatalog::open(&dir.path().join("catalog.sqlite"), CatalogLimits::default())
                .unwrap(),
        );
        let store = Arc::new(FlakyStore::default());
        store.down.store(true, Ordering::SeqCst);
        let config = IngesterConfig {
            wal_dir: dir.path().join("wal"),
            ..IngesterConfig::default()
        };
        let ingester = Ingester::new(
            config,
            Arc::clone(&catalog),
            ObjectStorage::remote(Arc::clone(&store) as Arc<dyn ObjectStore>),
            &mut Registry::default(),
        )
        .unwrap();
        ingester
            .write(WriteRequest {
                database: "db".into(),
                body: bytes::Bytes::from_static(b"m,t=a f=1 1\nm,t=b f=2 2"),
                precision: Precision::Nanosecond,
                accept_partial: true,
                no_sync: false,
            })
            .await
            .unwrap();
        let key = ingester.inner.buffer.all_partitions().pop().unwrap();

        let err = ingester.persist_partition(&key).await.unwrap_err();
        assert!(
            matches!(err, PersistError::Storage(StorageError::Upload { .. })),
            "{err}"
        );
        let table = catalog
            .snapshot()
            .database("db")
            .unwrap()
            .table("m")
            .unwrap()
            .id;
        assert!(catalog.snapshot().table_files(table).is_empty());
        assert_eq!(
            ingester.inner.buffer.all_partitions(),
            vec![key.clone()],
            "the rows stay buffered and the partition can be persisted again"
        );

        store.down.store(false, Ordering::SeqCst);
        assert!(ingester.persist_partition(&key).await.unwrap());
        let snapshot = catalog.snapshot();
        let files = snapshot.table_files(table);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].file.row_count, 2);
        assert!(ingester.inner.buffer.all_partitions().is_empty());
        assert_eq!(ingester.inner.buffer.size_bytes(), 0);
    }
}
