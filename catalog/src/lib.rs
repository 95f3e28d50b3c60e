//! The data model (databases, tables, typed columns) and the store that makes it durable.
//!
//! ```text
//! ingester --apply(SchemaChanges)--> Catalog --(one transaction)--> SQLite (WAL mode)
//!     ^                                 |
//!     '------ snapshot() <--------------'  (in-memory copy, swapped after each commit)
//! ```
//!
//! Invariants:
//! - A change is visible in [`Catalog::snapshot`] only after its transaction committed, so a
//!   write that saw its columns in a snapshot may be acknowledged.
//! - A column's type never changes: [`Catalog::apply`] rejects a conflicting type with
//!   [`Error::TypeConflict`], also when two writers race to create the same column.
//! - Limits (databases, tables per database, columns per table) are checked inside the same
//!   critical section as the commit, so concurrent writers cannot overshoot them.

mod model;
mod sqlite;

use std::sync::Arc;

pub use model::{
    CatalogSnapshot, ColumnType, CompactionEvent, DatabaseId, DatabaseSchema, NewParquetFile,
    NewTombstone, ParquetFile, ParquetFileId, SchemaChanges, TIME_COLUMN, TableId, TableSchema,
    Tombstone, TombstoneId, partition_date, sorted_tags, validate_database_name,
};
pub use sqlite::SqliteCatalog;

/// Default for `--max-databases`.
pub const DEFAULT_MAX_DATABASES: usize = 100;
/// Default for `--max-tables-per-database`.
pub const DEFAULT_MAX_TABLES_PER_DATABASE: usize = 10_000;
/// Default for `--max-columns-per-table` (the `time` column included).
pub const DEFAULT_MAX_COLUMNS_PER_TABLE: usize = 1_000;

/// Limits on the size of the data model, enforced when changes are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogLimits {
    /// Live databases; default [`DEFAULT_MAX_DATABASES`].
    pub max_databases: usize,
    /// Tables in one database; default [`DEFAULT_MAX_TABLES_PER_DATABASE`].
    pub max_tables_per_database: usize,
    /// Columns in one table, `time` included; default [`DEFAULT_MAX_COLUMNS_PER_TABLE`].
    pub max_columns_per_table: usize,
}

impl Default for CatalogLimits {
    fn default() -> Self {
        Self {
            max_databases: DEFAULT_MAX_DATABASES,
            max_tables_per_database: DEFAULT_MAX_TABLES_PER_DATABASE,
            max_columns_per_table: DEFAULT_MAX_COLUMNS_PER_TABLE,
        }
    }
}

/// Errors of the catalog. Messages name the limit flag or the conflicting column.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid database name `{name}`: {reason}")]
    InvalidDatabaseName { name: String, reason: &'static str },
    #[error("database `{name}` already exists")]
    DatabaseExists { name: String },
    #[error("database `{name}` not found")]
    DatabaseNotFound { name: String },
    #[error("table `{table}` not found in database `{database}`")]
    TableNotFound { database: String, table: String },
    #[error("database limit of {limit} reached; raise --max-databases (TRIBUTARY_MAX_DATABASES)")]
    TooManyDatabases { limit: usize },
    #[error(
        "database `{database}` has reached the limit of {limit} tables; raise --max-tables-per-database (TRIBUTARY_MAX_TABLES_PER_DATABASE)"
    )]
    TooManyTables { database: String, limit: usize },
    #[error(
        "table `{table}` in database `{database}` would exceed the limit of {limit} columns; raise --max-columns-per-table (TRIBUTARY_MAX_COLUMNS_PER_TABLE)"
    )]
    TooManyColumns {
        database: String,
        table: String,
        limit: usize,
    },
    #[error("column `{column}` of table `{table}` is {existing}, this write sends {sent}")]
    TypeConflict {
        table: String,
        column: String,
        existing: ColumnType,
        sent: ColumnType,
    },
    #[error("catalog store `{path}` cannot be opened")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{missing} of the files to replace are no longer recorded (another compaction or a delete changed them); plan again"
    )]
    FilesChanged { missing: usize },
    #[error("a delete of rows of the table was recorded while the files were merged; plan again")]
    DeletedMeanwhile,
    #[error("catalog store query failed")]
    Store(#[from] rusqlite::Error),
    #[error("catalog row is corrupt: {0}")]
    CorruptRow(String),
    #[error("catalog row has unknown column type `{0}`")]
    UnknownColumnType(String),
    #[error("catalog task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// How many compaction events the catalog keeps.
pub const COMPACTION_EVENTS_KEPT: usize = 10_000;

/// Result of catalog operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The metadata store. Reads come from an in-memory snapshot; writes commit to the backend first.
#[async_trait::async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// The current committed state; cheap (an `Arc` clone).
    fn snapshot(&self) -> Arc<CatalogSnapshot>;

    /// The limits [`Catalog::apply`] enforces, so writers can reject single lines early.
    fn limits(&self) -> CatalogLimits;

    /// Creates a database that keeps rows for `retention_period_ns` (`None`: forever); fails
    /// if a live database has that name.
    async fn create_database(
        &self,
        name: &str,
        retention_period_ns: Option<i64>,
    ) -> Result<Arc<DatabaseSchema>>;

    /// Commits new databases, tables and columns (those that already exist with the same type are
    /// ignored), checking types and limits, and returns the snapshot that includes them.
    async fn apply(&self, changes: SchemaChanges) -> Result<Arc<CatalogSnapshot>>;

    /// Marks a database deleted; its name may be used again. `wal_cutoff` is the highest
    /// write-ahead log sequence number handed out when it was deleted: replay skips that
    /// database's entries up to it, so a deleted database never comes back after a restart.
    async fn delete_database(&self, name: &str, wal_cutoff: u64) -> Result<()>;

    /// Deletes a table: forgets its files (listing their objects as dropped now, see
    /// [`Catalog::deleted_objects`]) and range deletes, and frees its name. Replay skips its
    /// entries up to `wal_cutoff`, as for [`Catalog::delete_database`].
    async fn delete_table(&self, database: &str, table: &str, wal_cutoff: u64) -> Result<()>;

    /// Records a range delete of rows of a table; queries stop returning them at once.
    async fn add_tombstone(
        &self,
        database: &str,
        table: &str,
        delete: NewTombstone,
    ) -> Result<Tombstone>;

    /// Forgets the range deletes nothing needs any more: no recorded file holds rows of them
    /// (see [`Tombstone::is_pending_for`]) and every WAL entry they cover is gone, since
    /// their cutoff is below `wal_retained_from` (the first sequence number a replay could
    /// read). Returns how many went.
    async fn retire_tombstones(&self, wal_retained_from: u64) -> Result<usize>;

    /// Records persisted Parquet files, all or none (one transaction), and returns them as
    /// recorded; they are in the next [`Catalog::snapshot`] (see
    /// [`CatalogSnapshot::table_files`]). A path recorded twice is an error: a file is never
    /// recorded over another.
    async fn add_parquet_files(&self, files: Vec<NewParquetFile>) -> Result<Vec<ParquetFile>>;

    /// Sets how long a database keeps rows (`None`: forever); queries stop returning older
    /// rows at once, and their partitions are dropped by the retention check.
    async fn set_retention_period(
        &self,
        name: &str,
        retention_period_ns: Option<i64>,
    ) -> Result<Arc<DatabaseSchema>>;

    /// Sets how long a table keeps rows, in place of its database's period (`None`: as its
    /// database).
    async fn set_table_retention_period(
        &self,
        database: &str,
        table: &str,
        retention_period_ns: Option<i64>,
    ) -> Result<Arc<TableSchema>>;

    /// Swaps files in one transaction: forgets `removed`, records `added`, and lists the
    /// removed files' objects as dropped now (see [`Catalog::deleted_objects`]). Fails with
    /// [`Error::FilesChanged`], changing nothing, when any of `removed` is no longer recorded,
    /// and with [`Error::DeletedMeanwhile`] when the table has a range delete newer than the
    /// `tombstones_applied` of `added` (the merge did not apply it).
    async fn replace_parquet_files(
        &self,
        removed: Vec<ParquetFileId>,
        added: Vec<NewParquetFile>,
    ) -> Result<Vec<ParquetFile>>;

    /// Paths of objects no file refers to any more, dropped at or before `until_unix_ms`
    /// (milliseconds since the Unix epoch): garbage to delete.
    async fn deleted_objects(&self, until_unix_ms: i64) -> Result<Vec<String>>;

    /// Forgets dropped objects once they are deleted from the object store.
    async fn forget_deleted_objects(&self, paths: Vec<String>) -> Result<()>;

    /// Records a compaction's outcome; the newest [`COMPACTION_EVENTS_KEPT`] are kept.
    async fn record_compaction_event(&self, event: CompactionEvent) -> Result<()>;

    /// The newest compaction events, newest first.
    async fn compaction_events(&self) -> Result<Vec<CompactionEvent>>;
}
