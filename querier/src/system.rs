//! The `system` schema: tables about the server itself.
//!
//! `system.queries` lists the most recent queries (running ones included) with their
//! duration, row count and outcome, newest last, as InfluxDB 3 does. `system.parquet_files`
//! lists the persisted files of the session's database, as of the session's catalog snapshot.
//! `system.compaction_events` lists the newest compactions of the database's tables (inputs,
//! outputs, rows, bytes, duration, error), newest first.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use catalog::{Catalog, CatalogSnapshot, CompactionEvent, DatabaseSchema, partition_date};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use parking_lot::Mutex;

/// How many finished and running queries `system.queries` remembers.
pub(crate) const QUERY_LOG_CAPACITY: usize = 1_000;

/// One query as `system.queries` shows it.
#[derive(Debug, Clone)]
struct QueryRecord {
    id: u64,
    issue_time_ns: i64,
    database: String,
    query_text: String,
    started: Instant,
    duration_ms: Option<f64>,
    rows: u64,
    /// None while running; then whether it succeeded.
    success: Option<bool>,
    error: Option<String>,
    cancelled: bool,
}

/// Recent queries, bounded; shared by every session of a querier.
#[derive(Debug, Default)]
pub(crate) struct QueryLog {
    next_id: AtomicU64,
    records: Mutex<VecDeque<QueryRecord>>,
}

impl QueryLog {
    /// Records a query as running and returns its id.
    pub(crate) fn start(&self, database: &str, query_text: &str) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let issue_time_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let mut records = self.records.lock();
        if records.len() == QUERY_LOG_CAPACITY {
            records.pop_front();
        }
        records.push_back(QueryRecord {
            id,
            issue_time_ns,
            database: database.to_owned(),
            query_text: query_text.to_owned(),
            started: Instant::now(),
            duration_ms: None,
            rows: 0,
            success: None,
            error: None,
            cancelled: false,
        });
        id
    }

    /// Records how a query ended: `error` None for success; `cancelled` when the client left.
    pub(crate) fn finish(&self, id: u64, rows: u64, error: Option<String>, cancelled: bool) {
        let mut records = self.records.lock();
        if let Some(r) = records.iter_mut().rev().find(|r| r.id == id) {
            r.duration_ms = Some(r.started.elapsed().as_secs_f64() * 1e3);
            r.rows = rows;
            r.success = Some(error.is_none() && !cancelled);
            r.error = error;
            r.cancelled = cancelled;
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::UInt64, false),
            Field::new(
                "issue_time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
            Field::new("database", DataType::Utf8, false),
            Field::new("query_type", DataType::Utf8, false),
            Field::new("query_text", DataType::Utf8, false),
            Field::new("duration_ms", DataType::Float64, true),
            Field::new("rows", DataType::UInt64, false),
            Field::new("running", DataType::Boolean, false),
            Field::new("success", DataType::Boolean, true),
            Field::new("cancelled", DataType::Boolean, false),
            Field::new("error", DataType::Utf8, true),
        ]))
    }

    fn batch(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let records: Vec<QueryRecord> = self.records.lock().iter().cloned().collect();
        let now = Instant::now();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(records.iter().map(|r| r.id).collect::<UInt64Array>()),
            Arc::new(
                records
                    .iter()
                    .map(|r| Some(r.issue_time_ns))
                    .collect::<TimestampNanosecondArray>(),
            ),
            Arc::new(
                records
                    .iter()
                    .map(|r| Some(r.database.as_str()))
                    .collect::<StringArray>(),
            ),
            Arc::new(records.iter().map(|_| Some("sql")).collect::<StringArray>()),
            Arc::new(
                records
                    .iter()
                    .map(|r| Some(r.query_text.as_str()))
                    .collect::<StringArray>(),
            ),
            Arc::new(
                records
                    .iter()
                    .map(|r| {
                        Some(
                            r.duration_ms
                                .unwrap_or_else(|| (now - r.started).as_secs_f64() * 1e3),
                        )
                    })
                    .collect::<Float64Array>(),
            ),
            Arc::new(records.iter().map(|r| r.rows).collect::<UInt64Array>()),
            Arc::new(
                records
                    .iter()
                    .map(|r| Some(r.success.is_none()))
                    .collect::<BooleanArray>(),
            ),
            Arc::new(records.iter().map(|r| r.success).collect::<BooleanArray>()),
            Arc::new(
                records
                    .iter()
                    .map(|r| Some(r.cancelled))
                    .collect::<BooleanArray>(),
            ),
            Arc::new(
                records
                    .iter()
                    .map(|r| r.error.as_deref())
                    .collect::<StringArray>(),
            ),
        ];
        RecordBatch::try_new(Self::schema(), columns)
    }
}

/// `system.parquet_files`: one row per recorded file of the database's tables.
fn parquet_files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("partition", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("size_bytes", DataType::Int64, false),
        Field::new("row_count", DataType::Int64, false),
        Field::new(
            "min_time",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        ),
        Field::new(
            "max_time",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        ),
        Field::new("level", DataType::Int64, false),
    ]))
}

fn parquet_files_batch(
    snapshot: &CatalogSnapshot,
    database: &DatabaseSchema,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let files: Vec<(&str, &catalog::NewParquetFile)> = database
        .tables
        .values()
        .flat_map(|t| {
            snapshot
                .table_files(t.id)
                .iter()
                .map(move |f| (t.name.as_ref(), &f.file))
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(files.iter().map(|(t, _)| Some(*t)).collect::<StringArray>()),
        Arc::new(
            files
                .iter()
                .map(|(_, f)| Some(partition_date(f.partition_day)))
                .collect::<StringArray>(),
        ),
        Arc::new(
            files
                .iter()
                .map(|(_, f)| Some(f.path.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(
            files
                .iter()
                .map(|(_, f)| f.size_bytes as i64)
                .collect::<Int64Array>(),
        ),
        Arc::new(
            files
                .iter()
                .map(|(_, f)| f.row_count as i64)
                .collect::<Int64Array>(),
        ),
        Arc::new(
            files
                .iter()
                .map(|(_, f)| Some(f.min_time_ns))
                .collect::<TimestampNanosecondArray>(),
        ),
        Arc::new(
            files
                .iter()
                .map(|(_, f)| Some(f.max_time_ns))
                .collect::<TimestampNanosecondArray>(),
        ),
        Arc::new(
            files
                .iter()
                .map(|(_, f)| i64::from(f.level))
                .collect::<Int64Array>(),
        ),
    ];
    RecordBatch::try_new(parquet_files_schema(), columns)
}

/// `system.compaction_events`: the newest compactions of the database's tables.
fn compaction_events_schema() -> SchemaRef {
    let count = |name: &str| Field::new(name, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        ),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("partition", DataType::Utf8, false),
        count("files_in"),
        count("files_out"),
        count("rows_in"),
        count("rows_out"),
        count("bytes_in"),
        count("bytes_out"),
        count("duration_ms"),
        Field::new("error", DataType::Utf8, true),
    ]))
}

fn compaction_events_batch(
    events: &[CompactionEvent],
    database: &DatabaseSchema,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let names: std::collections::HashMap<catalog::TableId, &str> = database
        .tables
        .values()
        .map(|t| (t.id, t.name.as_ref()))
        .collect();
    let rows: Vec<(&CompactionEvent, &str)> = events
        .iter()
        .filter_map(|e| names.get(&e.table_id).map(|n| (e, *n)))
        .collect();
    let count = |f: fn(&CompactionEvent) -> u64| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|(e, _)| f(e) as i64)
                .collect::<Int64Array>(),
        )
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            rows.iter()
                .map(|(e, _)| Some(e.time_ns))
                .collect::<TimestampNanosecondArray>(),
        ),
        Arc::new(rows.iter().map(|(_, n)| Some(*n)).collect::<StringArray>()),
        Arc::new(
            rows.iter()
                .map(|(e, _)| Some(partition_date(e.partition_day)))
                .collect::<StringArray>(),
        ),
        count(|e| e.files_in),
        count(|e| e.files_out),
        count(|e| e.rows_in),
        count(|e| e.rows_out),
        count(|e| e.bytes_in),
        count(|e| e.bytes_out),
        count(|e| e.duration_ms),
        Arc::new(
            rows.iter()
                .map(|(e, _)| e.error.as_deref())
                .collect::<StringArray>(),
        ),
    ];
    RecordBatch::try_new(compaction_events_schema(), columns)
}

/// The `system` schema of a session.
#[derive(Debug)]
pub(crate) struct SystemSchemaProvider {
    queries: Arc<QueryLog>,
    catalog: Arc<dyn Catalog>,
    snapshot: Arc<CatalogSnapshot>,
    database: Arc<DatabaseSchema>,
}

impl SystemSchemaProvider {
    pub(crate) fn new(
        queries: Arc<QueryLog>,
        catalog: Arc<dyn Catalog>,
        snapshot: Arc<CatalogSnapshot>,
        database: Arc<DatabaseSchema>,
    ) -> Self {
        Self {
            queries,
            catalog,
            snapshot,
            database,
        }
    }
}

const QUERIES: &str = "queries";
const PARQUET_FILES: &str = "parquet_files";
const COMPACTION_EVENTS: &str = "compaction_events";

#[async_trait]
impl SchemaProvider for SystemSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        vec![
            COMPACTION_EVENTS.to_owned(),
            PARQUET_FILES.to_owned(),
            QUERIES.to_owned(),
        ]
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let (schema, batch) = match name {
            QUERIES => (QueryLog::schema(), self.queries.batch()?),
            PARQUET_FILES => (
                parquet_files_schema(),
                parquet_files_batch(&self.snapshot, &self.database)?,
            ),
            COMPACTION_EVENTS => {
                let events = self
                    .catalog
                    .compaction_events()
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                (
                    compaction_events_schema(),
                    compaction_events_batch(&events, &self.database)?,
                )
            }
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(MemTable::try_new(
            schema,
            vec![vec![batch]],
        )?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        matches!(name, QUERIES | PARQUET_FILES | COMPACTION_EVENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    #[test]
    fn the_log_keeps_the_newest_queries_and_their_outcome() {
        let log = QueryLog::default();
        for i in 0..QUERY_LOG_CAPACITY + 5 {
            let id = log.start("db", &format!("SELECT {i}"));
            log.finish(id, 1, None, false);
        }
        let failed = log.start("db", "SELECT nope");
        log.finish(failed, 0, Some("no column nope".into()), false);
        let running = log.start("db", "SELECT slow");
        let batch = log.batch().unwrap();
        assert_eq!(batch.num_rows(), QUERY_LOG_CAPACITY);
        let text = batch
            .column(4)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(text.value(QUERY_LOG_CAPACITY - 1), "SELECT slow");
        let success = batch
            .column(8)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .unwrap();
        assert!(!success.value(QUERY_LOG_CAPACITY - 2));
        assert!(
            success.is_null(QUERY_LOG_CAPACITY - 1),
            "query {running} is still running"
        );
    }
}
