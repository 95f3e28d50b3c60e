//! The compactor: merges a partition's Parquet files into few level-1 files (today) or
//! level-2 files (a day that is over), and deletes objects nothing refers to any more.
//!
//! ```text
//! every --retention-check-interval:
//!   partitions wholly older than their table's retention period -> dropped from the catalog
//! every --compaction-interval:
//!   plan (catalog snapshot) -> today's partitions with many level-0 files, past days with
//!                              files below level 2, files with range-deleted rows
//!   per partition: merge + dedup (- deleted rows) -> level-1/2 files cut by time (uploaded)
//!                  catalog.replace_parquet_files(inputs -> outputs)   one transaction; fails
//!                                                                     if an input went away
//!   garbage collection: objects replaced or dropped more than --gc-grace-period ago, and
//!                       objects the catalog never recorded (crashed uploads), are deleted
//! ```
//!
//! It runs on a thread of its own with a single-threaded runtime, so merging and encoding
//! never take a worker of the server's runtime from writes and queries: the compactor uses at
//! most one core, and the operating system shares it fairly with ingest. A failed compaction
//! leaves the catalog as it was (its uploads are removed or collected later), is logged and
//! counted, and its partition waits with a back-off (1 s doubling to 5 min) before the next try.

mod gc;
mod merge;
mod plan;
mod series_merge;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use catalog::{Catalog, TableId};
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::ObjectStoreExt;
use parquet_file::ObjectStorage;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// Default for `--compaction-interval`.
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(10);
/// Default for `--compaction-l0-threshold`.
pub const DEFAULT_L0_THRESHOLD: usize = 10;
/// Default for `--compaction-target-file-size`.
pub const DEFAULT_TARGET_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// Default for `--compaction-mem-limit`.
pub const DEFAULT_MEM_LIMIT_BYTES: usize = 256 * 1024 * 1024;
/// Default for `--retention-check-interval`.
pub const DEFAULT_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Default for `--gc-grace-period`.
pub const DEFAULT_GC_GRACE_PERIOD: Duration = Duration::from_secs(3600);

/// Rows per batch the merge reads from each input and writes. The merge holds one batch per
/// input (100 inputs of 4,096 rows of the TSBS table: ~65 MB).
const MERGE_BATCH_ROWS: usize = 4096;
/// Memory budgeted per input file of a merge; `--compaction-mem-limit` divided by it caps how
/// many files one compaction takes.
const MEMORY_PER_INPUT_BYTES: usize = 2 * 1024 * 1024;

/// The URL the object store is registered under in the compactor's DataFusion runtime.
const OBJECT_STORE_URL: &str = "tributary://objects";

/// How the compactor is set up.
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    /// How often to look for work.
    pub interval: Duration,
    /// Level-0 files that make a partition of the current day worth compacting.
    pub l0_threshold: usize,
    /// Largest output file; a partition larger than this is cut into several by time.
    pub target_file_bytes: u64,
    /// Memory the merge operators may hold.
    pub mem_limit_bytes: usize,
    /// How long a replaced or unrecorded object stays before it is deleted: longer than any
    /// query runs, so none loses a file it is reading.
    pub gc_grace_period: Duration,
    /// How often partitions past their database's retention period are dropped.
    pub retention_check_interval: Duration,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_COMPACTION_INTERVAL,
            l0_threshold: DEFAULT_L0_THRESHOLD,
            target_file_bytes: DEFAULT_TARGET_FILE_BYTES,
            mem_limit_bytes: DEFAULT_MEM_LIMIT_BYTES,
            gc_grace_period: DEFAULT_GC_GRACE_PERIOD,
            retention_check_interval: DEFAULT_RETENTION_CHECK_INTERVAL,
        }
    }
}

/// Why a compaction or a garbage collection pass failed.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    #[error("cannot merge the partition's files")]
    Plan(#[source] DataFusionError),
    #[error("cannot encode the merged file")]
    Parquet(#[source] parquet::errors::ParquetError),
    #[error("cannot upload the merged file")]
    Storage(#[source] parquet_file::StorageError),
    #[error("cannot update the catalog")]
    Catalog(#[source] catalog::Error),
    #[error("cannot delete {path} from the object store")]
    Delete {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot list the object store")]
    List(#[source] object_store::Error),
}

/// What one compaction did, for logs and metrics.
#[derive(Debug, Clone)]
pub struct CompactionReport {
    pub table_id: TableId,
    pub partition_day: i64,
    pub files_in: usize,
    pub files_out: usize,
    pub rows_in: u64,
    pub rows_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
}

#[derive(Debug, Default, Clone)]
struct Metrics {
    compactions: Counter,
    errors: Counter,
    files_in: Counter,
    files_out: Counter,
    rows_in: Counter,
    rows_out: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    backlog: Gauge,
    /// Recorded files (and their bytes) per level, as of the last look for work.
    files: Family<LevelLabels, Gauge>,
    file_bytes: Family<LevelLabels, Gauge>,
    objects_deleted: Counter,
    retention_files_dropped: Counter,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct LevelLabels {
    level: u8,
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("tributary_compaction");
        r.register("runs", "Partitions compacted", self.compactions.clone());
        r.register(
            "errors",
            "Compactions or garbage collection passes that failed",
            self.errors.clone(),
        );
        r.register(
            "files_in",
            "Files merged away by compaction",
            self.files_in.clone(),
        );
        r.register(
            "files_out",
            "Files written by compaction",
            self.files_out.clone(),
        );
        r.register("rows_in", "Rows read by compaction", self.rows_in.clone());
        r.register(
            "rows_out",
            "Rows written by compaction",
            self.rows_out.clone(),
        );
        r.register(
            "bytes_in",
            "Bytes of Parquet read by compaction",
            self.bytes_in.clone(),
        );
        r.register(
            "bytes_out",
            "Bytes of Parquet rewritten by compaction",
            self.bytes_out.clone(),
        );
        r.register(
            "backlog",
            "Partitions waiting to be compacted",
            self.backlog.clone(),
        );
        r.register(
            "files",
            "Recorded Parquet files per level (0: persisted, 1: compacted today, 2: compacted after their day)",
            self.files.clone(),
        );
        r.register(
            "file_bytes",
            "Bytes of recorded Parquet files per level",
            self.file_bytes.clone(),
        );
        r.register(
            "objects_deleted",
            "Objects deleted by garbage collection",
            self.objects_deleted.clone(),
        );
        r.register(
            "retention_files_dropped",
            "Files dropped because their partition is past its database's retention period",
            self.retention_files_dropped.clone(),
        );
    }
}

/// Merges files and collects garbage in the background.
#[derive(Debug, Clone)]
pub struct Compactor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: CompactorConfig,
    catalog: Arc<dyn Catalog>,
    storage: ObjectStorage,
    store_url: ObjectStoreUrl,
    runtime: Arc<RuntimeEnv>,
    metrics: Metrics,
}

/// The background compactor; dropping it (or [`CompactorHandle::stop`]) stops it.
#[derive(Debug)]
pub struct CompactorHandle {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CompactorHandle {
    /// Stops after the compaction in progress, if any, and waits for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for CompactorHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Compactor {
    /// A compactor of the catalog's partitions, reading and writing through `storage`.
    pub fn new(
        config: CompactorConfig,
        catalog: Arc<dyn Catalog>,
        storage: ObjectStorage,
        registry: &mut Registry,
    ) -> Result<Self, CompactionError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.mem_limit_bytes, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(CompactionError::Plan)?;
        let store_url = ObjectStoreUrl::parse(OBJECT_STORE_URL).map_err(CompactionError::Plan)?;
        // Inputs are read once and replaced: past the read cache, which keeps what queries
        // read. Outputs go through it (queries will read them), deletes too (dropping the
        // entries of replaced files).
        runtime.register_object_store(store_url.as_ref(), storage.uncached_store());
        let metrics = Metrics::default();
        metrics.register(registry);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                catalog,
                storage,
                store_url,
                runtime,
                metrics,
            }),
        })
    }

    /// Starts the background loop on a thread of its own.
    pub fn start(&self) -> std::io::Result<CompactorHandle> {
        let (stop, mut stopped) = watch::channel(false);
        let this = self.clone();
        let thread = std::thread::Builder::new()
            .name("compactor".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the compactor's runtime");
                        return;
                    }
                };
                runtime.block_on(async move { this.run(&mut stopped).await });
            })?;
        Ok(CompactorHandle {
            stop,
            thread: Some(thread),
        })
    }

    async fn run(&self, stopped: &mut watch::Receiver<bool>) {
        let mut retry_after: HashMap<(TableId, i64), (Instant, Duration)> = HashMap::new();
        let config = &self.inner.config;
        let tick = config.interval.min(config.retention_check_interval);
        let mut next_compaction = Instant::now() + config.interval;
        let mut next_retention = Instant::now() + config.retention_check_interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stopped.changed() => return,
            }
            let now = Instant::now();
            if now >= next_retention {
                next_retention = now + config.retention_check_interval;
                if let Err(e) = self.enforce_retention().await {
                    self.inner.metrics.errors.inc();
                    tracing::warn!(error = %wal::error_chain(&e), "retention check failed; it runs again next time");
                }
            }
            if now >= next_compaction {
                next_compaction = now + config.interval;
                self.compact_due(&mut retry_after, stopped).await;
            }
            if let Err(e) = self.collect_garbage().await {
                self.inner.metrics.errors.inc();
                tracing::warn!(error = %wal::error_chain(&e), "garbage collection failed; it runs again next time");
            }
            if *stopped.borrow() {
                return;
            }
        }
    }

    /// One pass over the partitions due for compaction.
    async fn compact_due(
        &self,
        retry_after: &mut HashMap<(TableId, i64), (Instant, Duration)>,
        stopped: &watch::Receiver<bool>,
    ) {
        let now = Instant::now();
        // A partition's last delay is kept past its retry time, so the next failure doubles
        // it; it is forgotten once the partition has gone quiet for a while.
        retry_after.retain(|_, (at, backoff)| now < *at + *backoff * 4);
        let plans = self.plans();
        for plan in plans {
            if *stopped.borrow() {
                return;
            }
            let key = (plan.table.id, plan.day);
            if retry_after.get(&key).is_some_and(|(at, _)| *at > now) {
                continue;
            }
            match self.compact(&plan).await {
                Ok(report) => {
                    retry_after.remove(&key);
                    tracing::info!(
                    db = %plan.database.name,
                    table = %plan.table.name,
                    partition = %catalog::partition_date(plan.day),
                    files_in = report.files_in,
                    files_out = report.files_out,
                    rows_in = report.rows_in,
                    rows_out = report.rows_out,
                    bytes_in = report.bytes_in,
                    bytes_out = report.bytes_out,
                    ms = report.duration.as_millis() as u64,
                    "compacted"
                    )
                }
                Err(e) => {
                    let backoff = retry_after
                        .get(&key)
                        .map_or(Duration::from_secs(1), |(_, b)| {
                            (*b * 2).min(Duration::from_secs(300))
                        });
                    tracing::warn!(
                        db = %plan.database.name,
                        table = %plan.table.name,
                        partition = %catalog::partition_date(plan.day),
                        error = %wal::error_chain(&e),
                        retry_in = ?backoff,
                        "compaction failed; the files stay as they are"
                    );
                    retry_after.insert(key, (Instant::now() + backoff, backoff));
                }
            }
        }
    }

    fn plans(&self) -> Vec<plan::CompactionPlan> {
        let today = now_ns().div_euclid(DAY_NS);
        let snapshot = self.inner.catalog.snapshot();
        let mut per_level: std::collections::BTreeMap<u8, (i64, i64)> =
            [(0, (0, 0)), (1, (0, 0)), (2, (0, 0))].into();
        for f in snapshot.parquet_files.values().flat_map(|f| f.iter()) {
            let e = per_level.entry(f.file.level).or_default();
            e.0 += 1;
            e.1 += f.file.size_bytes as i64;
        }
        for (level, (files, bytes)) in per_level {
            let labels = LevelLabels { level };
            self.inner.metrics.files.get_or_create(&labels).set(files);
            self.inner
                .metrics
                .file_bytes
                .get_or_create(&labels)
                .set(bytes);
        }
        let plans = plan::plan(
            &snapshot,
            plan::PlanRules {
                l0_threshold: self.inner.config.l0_threshold,
                target_file_bytes: self.inner.config.target_file_bytes,
                today,
                max_inputs: (self.inner.config.mem_limit_bytes / MEMORY_PER_INPUT_BYTES).max(2),
            },
        );
        self.inner.metrics.backlog.set(plans.len() as i64);
        plans
    }

    /// Drops the partitions (table, UTC day) that lie wholly before their table's (or else
    /// database's) retention period; their objects are deleted after the grace period. Returns how many files were
    /// dropped. Queries already leave such rows out, so this only frees storage.
    pub async fn enforce_retention(&self) -> Result<usize, CompactionError> {
        let now_ns = now_ns();
        let snapshot = self.inner.catalog.snapshot();
        let mut expired = Vec::new();
        for database in snapshot.databases.values() {
            for table in database.tables.values() {
                let Some(cutoff) = database.retention_cutoff_ns(table, now_ns) else {
                    continue;
                };
                expired.extend(
                    snapshot
                        .table_files(table.id)
                        .iter()
                        .filter(|f| (f.file.partition_day + 1).saturating_mul(DAY_NS) <= cutoff)
                        .map(|f| f.id),
                );
            }
        }
        if expired.is_empty() {
            return Ok(0);
        }
        let dropped = expired.len();
        self.inner
            .catalog
            .replace_parquet_files(expired, Vec::new())
            .await
            .map_err(CompactionError::Catalog)?;
        tracing::info!(
            files = dropped,
            "dropped partitions past their retention period"
        );
        self.inner
            .metrics
            .retention_files_dropped
            .inc_by(dropped as u64);
        Ok(dropped)
    }

    /// Compacts every partition that needs it now, once; for tests and tools.
    pub async fn compact_all(&self) -> Result<Vec<CompactionReport>, CompactionError> {
        let mut reports = Vec::new();
        for plan in self.plans() {
            reports.push(self.compact(&plan).await?);
        }
        Ok(reports)
    }

    /// Compacts one partition and records the outcome for `system.compaction_events`.
    async fn compact(
        &self,
        plan: &plan::CompactionPlan,
    ) -> Result<CompactionReport, CompactionError> {
        let started = Instant::now();
        let result = self.try_compact(plan).await;
        let (files_out, rows_out, bytes_out, error) = match &result {
            Ok(r) => (r.files_out as u64, r.rows_out, r.bytes_out, None),
            Err(e) => (0, 0, 0, Some(wal::error_chain(e))),
        };
        let event = catalog::CompactionEvent {
            time_ns: now_ns(),
            table_id: plan.table.id,
            partition_day: plan.day,
            files_in: plan.inputs.len() as u64,
            files_out,
            rows_in: plan.input_rows(),
            rows_out,
            bytes_in: plan.input_bytes(),
            bytes_out,
            duration_ms: started.elapsed().as_millis() as u64,
            error,
        };
        if let Err(e) = self.inner.catalog.record_compaction_event(event).await {
            tracing::warn!(error = %wal::error_chain(&e), "cannot record a compaction event");
        }
        result
    }

    async fn try_compact(
        &self,
        plan: &plan::CompactionPlan,
    ) -> Result<CompactionReport, CompactionError> {
        let started = Instant::now();
        let inner = &self.inner;
        let result =
            merge::write_merged(plan, &inner.storage, &inner.store_url, inner.task_ctx()).await;
        let outputs = match result {
            Ok(outputs) => outputs,
            Err((e, uploaded)) => {
                inner.metrics.errors.inc();
                self.remove_uploads(uploaded).await;
                return Err(e);
            }
        };
        failpoint("compaction-after-upload");
        let removed = plan.inputs.iter().map(|f| f.id).collect();
        let uploaded: Vec<object_store::path::Path> = outputs
            .iter()
            .map(|f| object_store::path::Path::from(f.path.as_str()))
            .collect();
        let recorded = match inner.catalog.replace_parquet_files(removed, outputs).await {
            Ok(recorded) => recorded,
            Err(e) => {
                inner.metrics.errors.inc();
                self.remove_uploads(uploaded).await;
                return Err(CompactionError::Catalog(e));
            }
        };
        failpoint("compaction-after-catalog");
        let report = CompactionReport {
            table_id: plan.table.id,
            partition_day: plan.day,
            files_in: plan.inputs.len(),
            files_out: recorded.len(),
            rows_in: plan.input_rows(),
            rows_out: recorded.iter().map(|f| f.file.row_count).sum(),
            bytes_in: plan.input_bytes(),
            bytes_out: recorded.iter().map(|f| f.file.size_bytes).sum(),
            duration: started.elapsed(),
        };
        let m = &inner.metrics;
        m.compactions.inc();
        m.files_in.inc_by(report.files_in as u64);
        m.files_out.inc_by(report.files_out as u64);
        m.rows_in.inc_by(report.rows_in);
        m.rows_out.inc_by(report.rows_out);
        m.bytes_in.inc_by(report.bytes_in);
        m.bytes_out.inc_by(report.bytes_out);
        Ok(report)
    }

    /// Objects of a compaction that did not make it into the catalog. A failure here only
    /// leaves them for garbage collection.
    async fn remove_uploads(&self, paths: Vec<object_store::path::Path>) {
        let store = self.inner.storage.store();
        for path in paths {
            if let Err(e) = store.delete(&path).await {
                tracing::debug!(%path, error = %e, "cannot remove an unrecorded upload; garbage collection will");
            }
        }
    }

    /// Deletes objects replaced or dropped more than the grace period ago, and objects the
    /// catalog never recorded that are older than it. Returns how many were deleted.
    pub async fn collect_garbage(&self) -> Result<usize, CompactionError> {
        let inner = &self.inner;
        let deleted = gc::collect(
            inner.catalog.as_ref(),
            &inner.storage.store(),
            inner.config.gc_grace_period,
        )
        .await?;
        inner.metrics.objects_deleted.inc_by(deleted as u64);
        Ok(deleted)
    }
}

impl Inner {
    fn task_ctx(&self) -> Arc<datafusion::execution::TaskContext> {
        // One partition at a time, on one core.
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(MERGE_BATCH_ROWS);
        SessionContext::new_with_config_rt(config, Arc::clone(&self.runtime)).task_ctx()
    }
}

/// Nanoseconds in a UTC day (a partition).
const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// Nanoseconds since the Unix epoch, by the clock.
fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Aborts the process (no cleanup, like a crash) when `TRIBUTARY_FAILPOINT` names this step:
/// the end-to-end tests kill a compaction between its upload and its catalog swap, and after.
fn failpoint(name: &str) {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("TRIBUTARY_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("failpoint {name} reached: aborting");
        std::process::abort();
    }
}
