//! In-memory data model: what a snapshot of the catalog holds.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Name of the timestamp column every table has.
pub const TIME_COLUMN: &str = "time";

/// The type of a column. It never changes once committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ColumnType {
    Tag,
    Float,
    Integer,
    UInteger,
    String,
    Boolean,
    Time,
}

impl ColumnType {
    /// The name stored in the catalog backend.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tag => "tag",
            Self::Float => "float",
            Self::Integer => "integer",
            Self::UInteger => "uinteger",
            Self::String => "string",
            Self::Boolean => "boolean",
            Self::Time => "time",
        }
    }

    /// Parses [`ColumnType::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tag" => Self::Tag,
            "float" => Self::Float,
            "integer" => Self::Integer,
            "uinteger" => Self::UInteger,
            "string" => Self::String,
            "boolean" => Self::Boolean,
            "time" => Self::Time,
            _ => return None,
        })
    }

    /// The Arrow type of this column everywhere: buffer, WAL, Parquet, query results.
    pub fn arrow_type(self) -> DataType {
        match self {
            Self::Tag => DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            Self::Float => DataType::Float64,
            Self::Integer => DataType::Int64,
            Self::UInteger => DataType::UInt64,
            Self::String => DataType::Utf8,
            Self::Boolean => DataType::Boolean,
            Self::Time => DataType::Timestamp(TimeUnit::Nanosecond, None),
        }
    }

    /// The Arrow field of a column of this type; only `time` is non-nullable.
    pub fn arrow_field(self, name: &str) -> Field {
        Field::new(name, self.arrow_type(), self != Self::Time)
    }

    pub fn is_field(self) -> bool {
        !matches!(self, Self::Tag | Self::Time)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tag => "a tag",
            Self::Float => "a float field",
            Self::Integer => "an integer field",
            Self::UInteger => "an unsigned integer field",
            Self::String => "a string field",
            Self::Boolean => "a boolean field",
            Self::Time => "the time column",
        })
    }
}

/// Identifier of a database row; never reused, also after a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatabaseId(pub i64);

/// Identifier of a table row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId(pub i64);

/// Identifier of a Parquet file row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParquetFileId(pub i64);

/// A persisted Parquet file to record: one partition (table, UTC day) of one table, rows from
/// a range of write-ahead log entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewParquetFile {
    pub table_id: TableId,
    /// UTC day number of the partition (days since 1970-01-01).
    pub partition_day: i64,
    /// Object path, `<db>/<table>/<YYYY-MM-DD>/<file-id>.parquet`.
    pub path: String,
    pub size_bytes: u64,
    pub row_count: u64,
    pub min_time_ns: i64,
    pub max_time_ns: i64,
    /// 0 for files persisted from the buffer; higher for compacted files.
    pub level: u8,
    /// The WAL sequence numbers whose rows the file holds.
    pub min_sequence: u64,
    pub max_sequence: u64,
    /// The newest [`Tombstone`] of the table already applied to the rows (by a compaction):
    /// it and older ones need not be applied again. 0: none.
    pub tombstones_applied: i64,
}

/// The `YYYY-MM-DD` name of a partition day (days since 1970-01-01, UTC), as in object paths.
pub fn partition_date(day: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A recorded Parquet file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetFile {
    pub id: ParquetFileId,
    pub file: NewParquetFile,
}

/// Identifier of a range delete; increasing in the order deletes were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TombstoneId(pub i64);

/// A range delete to record: rows of a table with time in `[min_time_ns, max_time_ns]` whose
/// tags equal every `(tag, value)` of `tags`, written by WAL entries up to `wal_cutoff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTombstone {
    pub min_time_ns: i64,
    /// Inclusive.
    pub max_time_ns: i64,
    /// A conjunction of `tag = value` terms; empty deletes every row of the time range.
    pub tags: Vec<(Arc<str>, Arc<str>)>,
    /// The highest WAL sequence number applied when the delete was made: rows of later writes
    /// are not deleted, even in its time range.
    pub wal_cutoff: u64,
}

/// A recorded range delete: hides its rows from queries at once; compactions remove them
/// from files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub id: TombstoneId,
    pub table_id: TableId,
    pub delete: NewTombstone,
}

impl Tombstone {
    /// Whether rows of `file` may be deleted by this tombstone and it is not applied yet:
    /// the file holds rows written before the delete, in its time range.
    pub fn is_pending_for(&self, file: &NewParquetFile) -> bool {
        file.max_sequence <= self.delete.wal_cutoff
            && file.tombstones_applied < self.id.0
            && file.min_time_ns <= self.delete.max_time_ns
            && file.max_time_ns >= self.delete.min_time_ns
    }
}

/// A table and its columns.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    pub id: TableId,
    pub name: Arc<str>,
    /// Columns by name, `time` included.
    pub columns: BTreeMap<Arc<str>, ColumnType>,
    /// Tags in the order rows are sorted by (before `time`), chosen when the table was created;
    /// tags added later sort after these, by name. Empty: all tags by name.
    pub sort_key: Arc<[Arc<str>]>,
    /// The table's own retention period, in place of its database's; `None`: the database's.
    pub retention_period_ns: Option<i64>,
}

impl TableSchema {
    /// The table's tags in sort order (see [`sorted_tags`]).
    pub fn sorted_tags(&self) -> Vec<&str> {
        sorted_tags(
            self.columns
                .iter()
                .filter(|(_, t)| **t == ColumnType::Tag)
                .map(|(n, _)| n.as_ref()),
            &self.sort_key,
        )
    }

    pub fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.columns.get(name).copied()
    }

    /// The table's Arrow schema: every column, in name order.
    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|(name, t)| t.arrow_field(name))
                .collect::<Vec<_>>(),
        ))
    }
}

/// `tags` in sort order: those named in `sort_key` first, in its order, then the others by
/// name. A file or buffer chunk that lacks some tags is still sorted by this order (a missing
/// tag is null in every row), so the order holds across files written before a tag appeared.
pub fn sorted_tags<'a>(
    tags: impl IntoIterator<Item = &'a str>,
    sort_key: &[Arc<str>],
) -> Vec<&'a str> {
    let mut tags: Vec<&str> = tags.into_iter().collect();
    tags.sort_by_key(|t| {
        (
            sort_key
                .iter()
                .position(|k| k.as_ref() == *t)
                .unwrap_or(usize::MAX),
            *t,
        )
    });
    tags
}

/// One compaction as `system.compaction_events` lists it: what it read and wrote, or why it
/// failed.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionEvent {
    /// When it ended, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    pub table_id: TableId,
    pub partition_day: i64,
    pub files_in: u64,
    pub files_out: u64,
    pub rows_in: u64,
    pub rows_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: u64,
    /// Set when the compaction failed (and changed nothing).
    pub error: Option<String>,
}

/// A live database and its tables.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSchema {
    pub id: DatabaseId,
    pub name: Arc<str>,
    pub tables: BTreeMap<Arc<str>, Arc<TableSchema>>,
    /// Rows older than this (by their time, against the clock) are not queried and their
    /// partitions are dropped; `None` keeps everything.
    pub retention_period_ns: Option<i64>,
}

impl DatabaseSchema {
    pub fn table(&self, name: &str) -> Option<&Arc<TableSchema>> {
        self.tables.get(name)
    }

    /// The oldest time of `table` still retained at `now_ns`, if the table or else the
    /// database has a retention period (the table's own period wins).
    pub fn retention_cutoff_ns(&self, table: &TableSchema, now_ns: i64) -> Option<i64> {
        table
            .retention_period_ns
            .or(self.retention_period_ns)
            .map(|period| now_ns.saturating_sub(period))
    }
}

/// Everything committed, as of one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogSnapshot {
    pub databases: BTreeMap<Arc<str>, Arc<DatabaseSchema>>,
    /// Deleted database names -> the highest WAL sequence number of their deleted data.
    pub deleted_wal_cutoffs: BTreeMap<Arc<str>, u64>,
    /// Deleted tables (database name, table name) -> the same for one table.
    pub deleted_table_cutoffs: BTreeMap<(Arc<str>, Arc<str>), u64>,
    /// Range deletes of live tables, oldest first.
    pub tombstones: BTreeMap<TableId, Arc<[Tombstone]>>,
    /// Recorded Parquet files of live tables, per table oldest data (lowest sequence) first.
    pub parquet_files: BTreeMap<TableId, Arc<[ParquetFile]>>,
}

impl CatalogSnapshot {
    pub fn database(&self, name: &str) -> Option<&Arc<DatabaseSchema>> {
        self.databases.get(name)
    }

    /// The recorded files of a table, oldest data (lowest sequence numbers) first.
    pub fn table_files(&self, table: TableId) -> &[ParquetFile] {
        self.parquet_files.get(&table).map_or(&[], |f| f)
    }

    /// The highest WAL sequence number the catalog refers to (persisted files, deleted
    /// databases). The WAL must number new entries above it, even if its own segments were
    /// lost or truncated, or replay would mistake new entries for persisted or deleted ones.
    pub fn highest_sequence(&self) -> u64 {
        let files = self
            .parquet_files
            .values()
            .flat_map(|f| f.iter())
            .map(|f| f.file.max_sequence);
        files
            .chain(self.deleted_wal_cutoffs.values().copied())
            .chain(self.deleted_table_cutoffs.values().copied())
            .chain(
                self.tombstones
                    .values()
                    .flat_map(|t| t.iter())
                    .map(|t| t.delete.wal_cutoff),
            )
            .max()
            .unwrap_or(0)
    }

    /// The range deletes of a table, oldest first.
    pub fn table_tombstones(&self, table: TableId) -> &[Tombstone] {
        self.tombstones.get(&table).map_or(&[], |t| t)
    }

    /// The id of the newest range delete of a table; 0 when it has none.
    pub fn newest_tombstone(&self, table: TableId) -> i64 {
        self.table_tombstones(table)
            .iter()
            .map(|t| t.id.0)
            .max()
            .unwrap_or(0)
    }

    /// Per partition day of `table`, the highest WAL sequence number whose rows of that
    /// partition are all in recorded files: replay skips those rows.
    pub fn persisted_through(&self, table: TableId) -> BTreeMap<i64, u64> {
        let mut out = BTreeMap::new();
        for f in self.table_files(table) {
            let e = out.entry(f.file.partition_day).or_insert(0);
            *e = (*e).max(f.file.max_sequence);
        }
        out
    }

    /// Whether a WAL entry's rows of `table` in `database` with `sequence` belong to a
    /// deleted database or table.
    pub fn is_deleted_data(&self, database: &str, table: &str, sequence: u64) -> bool {
        let deleted_database = self
            .deleted_wal_cutoffs
            .get(database)
            .is_some_and(|&cutoff| sequence <= cutoff);
        deleted_database
            || self
                .deleted_table_cutoffs
                .get(&(Arc::from(database), Arc::from(table)))
                .is_some_and(|&cutoff| sequence <= cutoff)
    }
}

/// Tables and columns a write needs that the snapshot it saw did not have.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchemaChanges {
    pub database: String,
    /// Table name -> columns it needs (name -> type). `time` is added to new tables implicitly.
    pub tables: BTreeMap<String, BTreeMap<String, ColumnType>>,
    /// For tables this creates: the tag order rows are sorted by ([`TableSchema::sort_key`]).
    pub sort_keys: BTreeMap<String, Vec<String>>,
    /// For tables this creates: their own retention period ([`TableSchema::retention_period_ns`]).
    pub retention_periods: BTreeMap<String, i64>,
}

impl SchemaChanges {
    pub fn new(database: impl Into<String>) -> Self {
        Self {
            database: database.into(),
            tables: BTreeMap::new(),
            sort_keys: BTreeMap::new(),
            retention_periods: BTreeMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

/// Checks a database name as InfluxDB 3 does: 1 to 64 ASCII letters, digits, `_` or `-`,
/// starting with a letter or digit.
pub fn validate_database_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > 64 {
        return Err("the name is longer than 64 characters");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("the name must start with a letter or a digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("only ASCII letters, digits, `_` and `-` are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_sort_by_the_key_then_by_name() {
        let key: Vec<Arc<str>> = vec!["host".into(), "dc".into()];
        assert_eq!(
            sorted_tags(["arch", "dc", "host", "zone", "az"], &key),
            ["host", "dc", "arch", "az", "zone"]
        );
        assert_eq!(sorted_tags(["b", "a"], &[]), ["a", "b"]);
    }

    #[test]
    fn partition_dates_are_utc_calendar_days() {
        assert_eq!(partition_date(0), "1970-01-01");
        assert_eq!(partition_date(-1), "1969-12-31");
        assert_eq!(partition_date(16_801), "2016-01-01");
        assert_eq!(partition_date(11_016), "2000-02-29");
        assert_eq!(partition_date(20_513), "2026-03-01");
    }
}
