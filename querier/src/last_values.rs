//! `last_cache('table')`: the latest row of every series (tag set) of a table, as InfluxDB 3's
//! last-value cache answers it, without configuring a cache first.
//!
//! Files and buffer partitions are sorted by (tags, time), so a series' latest row in a source
//! is the last row of its run. A file is decoded twice: its tag and time columns to find where
//! runs end, then every column of just those rows (a row selection), so the fields of all
//! other rows are never decoded. The candidates of all sources are merged as a query would:
//! newer sources win field by field for the same key, then the latest time per series wins.
//!
//! A file's candidates are kept ([`LastRowsCache`]): files are immutable, so a repeated query
//! decodes only the buffer.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, new_null_array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use bytes::Bytes;
use catalog::{DatabaseSchema, ParquetFile, TIME_COLUMN, TableSchema};
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReaderBuilder, RowSelection};

use crate::table::{TableSources, read_buffer};
use dedup::{CHUNK_ORDER, dedup_sorted_batch, key_changes};

/// Rows cached at most, over all files: beyond it, entries of files no longer recorded go
/// first, then everything.
const LAST_ROWS_CACHED: usize = 1_000_000;

/// The last row of every series of each Parquet file read so far. Files never change once
/// written, so an entry stays right until the file is compacted away (and forgotten) or a
/// range delete applies to it (a different key).
#[derive(Debug, Default)]
pub(crate) struct LastRowsCache {
    entries: parking_lot::Mutex<LastRowsEntries>,
}

#[derive(Debug, Default)]
struct LastRowsEntries {
    /// (object path, ids of the range deletes applied) -> last rows of each series.
    rows: std::collections::HashMap<(String, Vec<i64>), RecordBatch>,
    total_rows: usize,
}

impl LastRowsCache {
    fn get(&self, key: &(String, Vec<i64>)) -> Option<RecordBatch> {
        self.entries.lock().rows.get(key).cloned()
    }

    fn insert(
        &self,
        key: (String, Vec<i64>),
        rows: RecordBatch,
        is_recorded: impl Fn(&str) -> bool,
    ) {
        let mut entries = self.entries.lock();
        if entries.total_rows + rows.num_rows() > LAST_ROWS_CACHED {
            entries.rows.retain(|(path, _), _| is_recorded(path));
            entries.total_rows = entries.rows.values().map(RecordBatch::num_rows).sum();
            if entries.total_rows + rows.num_rows() > LAST_ROWS_CACHED {
                entries.rows.clear();
                entries.total_rows = 0;
            }
        }
        entries.total_rows += rows.num_rows();
        if let Some(old) = entries.rows.insert(key, rows) {
            entries.total_rows -= old.num_rows();
        }
    }
}

/// The `last_cache` table function of a session's database.
#[derive(Debug)]
pub(crate) struct LastCacheFunction {
    database: Arc<DatabaseSchema>,
    sources: TableSources,
}

impl LastCacheFunction {
    pub(crate) fn new(database: Arc<DatabaseSchema>, sources: TableSources) -> Self {
        Self { database, sources }
    }
}

impl TableFunctionImpl for LastCacheFunction {
    fn call(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        // A second argument (InfluxDB 3's cache name) is accepted and ignored: every table
        // has its last values.
        let name = match args.first() {
            Some(Expr::Literal(ScalarValue::Utf8(Some(name)), _)) => name.clone(),
            _ => {
                return Err(DataFusionError::Plan(
                    "last_cache takes a table name: SELECT * FROM last_cache('cpu')".into(),
                ));
            }
        };
        let table = self.database.table(&name).ok_or_else(|| {
            DataFusionError::Plan(format!(
                "last_cache: table `{name}` not found in database `{}`",
                self.database.name
            ))
        })?;
        Ok(Arc::new(LastValues {
            database: Arc::clone(&self.database.name),
            schema: table.arrow_schema(),
            table: Arc::clone(table),
            sources: self.sources.clone(),
            retention_cutoff_ns: self
                .database
                .retention_cutoff_ns(table, crate::table::now_ns()),
        }))
    }
}

/// The latest row per series of one table.
struct LastValues {
    database: Arc<str>,
    table: Arc<TableSchema>,
    schema: SchemaRef,
    sources: TableSources,
    /// Series whose latest row is older than this are past the retention period: left out.
    retention_cutoff_ns: Option<i64>,
}

impl fmt::Debug for LastValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastValues")
            .field("table", &self.table.name)
            .finish()
    }
}

#[async_trait]
impl TableProvider for LastValues {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self.last_rows(state).await?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}

impl LastValues {
    /// The schema with the chunk order column last.
    fn ordered_schema(&self) -> SchemaRef {
        let mut fields: Vec<Arc<Field>> = self.schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(CHUNK_ORDER, DataType::Int64, false)));
        Arc::new(Schema::new(fields))
    }

    async fn last_rows(&self, state: &dyn Session) -> Result<RecordBatch> {
        let ordered = self.ordered_schema();
        let tags = self.table.sorted_tags();
        // The buffer first, then the catalog, as in a table scan.
        let buffered = read_buffer(
            &self.sources.buffer,
            &self.database,
            &self.table.name,
            &self.schema,
            (i64::MIN, i64::MAX),
        )
        .await?;
        let snapshot = self.sources.catalog.snapshot();
        let store = state.runtime_env().object_store(&self.sources.store_url)?;

        let mut candidates = Vec::new();
        for p in buffered {
            let rows = take_run_ends(&concat_batches(&self.schema, &p.batches)?, &tags)?;
            candidates.push(with_order(&rows, &ordered, p.max_sequence)?);
        }
        let tombstones = snapshot.table_tombstones(self.table.id);
        let files = snapshot.table_files(self.table.id);
        for f in files {
            let pending: Vec<&catalog::Tombstone> = tombstones
                .iter()
                .filter(|t| t.is_pending_for(&f.file))
                .collect();
            let key = (
                f.file.path.clone(),
                pending.iter().map(|t| t.id.0).collect::<Vec<_>>(),
            );
            let rows = match self.sources.last_rows.get(&key) {
                // Conformed again: the table may have gained columns since.
                Some(rows) => conform(&rows, &self.schema)?,
                None => {
                    let deletes: Vec<&catalog::NewTombstone> =
                        pending.iter().map(|t| &t.delete).collect();
                    let surviving = dedup::surviving_rows(&deletes, &self.schema, None)?;
                    let rows = self.file_last_rows(&store, f, &tags, surviving).await?;
                    self.sources.last_rows.insert(key, rows.clone(), |path| {
                        files.iter().any(|f| f.file.path == path)
                    });
                    rows
                }
            };
            candidates.push(with_order(&rows, &ordered, f.file.max_sequence)?);
        }
        let all = concat_batches(&ordered, &candidates)?;
        if all.num_rows() == 0 {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        // Sort by (tags, time, order), merge equal keys (newer fields win), then keep the
        // latest time of each series.
        let mut key: Vec<&str> = tags.clone();
        key.push(TIME_COLUMN);
        let sort: Vec<SortColumn> = key
            .iter()
            .chain([&CHUNK_ORDER])
            .map(|name| SortColumn {
                values: Arc::clone(all.column_by_name(name).expect("column of the schema")),
                options: None,
            })
            .collect();
        let sorted = take_record_batch(&all, &lexsort_to_indices(&sort, None)?)?;
        let key_indices = key
            .iter()
            .map(|n| ordered.index_of(n))
            .collect::<Result<Vec<_>, _>>()?;
        let merged = dedup_sorted_batch(&sorted, key_indices)?;
        let mut latest = take_run_ends(&merged, &tags)?;
        if let Some(cutoff) = self.retention_cutoff_ns {
            let time = latest
                .column_by_name(TIME_COLUMN)
                .expect("column of the schema")
                .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
                .reinterpret_cast::<arrow::datatypes::Int64Type>();
            let retained =
                arrow::compute::kernels::cmp::gt_eq(&time, &Int64Array::new_scalar(cutoff))?;
            latest = arrow::compute::filter_record_batch(&latest, &retained)?;
        }
        let columns = (0..self.schema.fields().len())
            .map(|i| Arc::clone(latest.column(i)))
            .collect();
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// The last row of every series in one file, conformed to the table schema; only rows
    /// that `surviving` (range deletes) keeps, if given.
    async fn file_last_rows(
        &self,
        store: &Arc<dyn ObjectStore>,
        file: &ParquetFile,
        tags: &[&str],
        surviving: Option<Arc<dyn PhysicalExpr>>,
    ) -> Result<RecordBatch> {
        let external = |e: Box<dyn std::error::Error + Send + Sync>| DataFusionError::External(e);
        let path = Path::parse(&file.file.path).map_err(|e| external(Box::new(e)))?;
        // Whole files are what the object cache keeps, so this is usually a memory read.
        let bytes = store
            .get(&path)
            .await
            .map_err(|e| external(Box::new(e)))?
            .bytes()
            .await
            .map_err(|e| external(Box::new(e)))?;
        let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
        let schema = Arc::clone(&self.schema);
        tokio::task::spawn_blocking(move || {
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            match surviving {
                Some(surviving) => last_surviving_rows_of_file(bytes, &tags, &schema, &surviving),
                None => last_rows_of_file(bytes, &tags, &schema),
            }
        })
        .await
        .map_err(|e| external(Box::new(e)))?
    }
}

/// Decodes the tag and time columns of a sorted file to find where series end, then every
/// column of just those rows.
fn last_rows_of_file(bytes: Bytes, tags: &[&str], schema: &SchemaRef) -> Result<RecordBatch> {
    let external = |e: parquet::errors::ParquetError| DataFusionError::External(Box::new(e));
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).map_err(external)?;
    let file_schema = Arc::clone(builder.schema());
    let total_rows = builder.metadata().file_metadata().num_rows() as usize;
    let key_columns: Vec<usize> = tags
        .iter()
        .chain([&TIME_COLUMN])
        .filter_map(|n| file_schema.index_of(n).ok())
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), key_columns);
    let reader = builder
        .with_projection(mask)
        // Within one row group: a batch spanning two would make the reader rebuild the tag
        // dictionaries value by value.
        .with_batch_size(8 * 1024)
        .build()
        .map_err(external)?;
    // Series ends, batch by batch: a series ends where the next row's tags differ, also across
    // batch boundaries (the previous batch's last row against this one's first).
    let mut ends = Vec::new();
    let mut offset = 0;
    let mut previous_last: Option<RecordBatch> = None;
    for keys in reader {
        let keys = keys?;
        if keys.num_rows() == 0 {
            continue;
        }
        let file_tags: Vec<&str> = tags
            .iter()
            .copied()
            .filter(|n| keys.schema().index_of(n).is_ok())
            .collect();
        if let Some(last) = previous_last.take() {
            let pair = concat_batches(&keys.schema(), [&last, &keys.slice(0, 1)])?;
            if !run_ends(&pair, &file_tags)?.starts_with(&[1]) {
                ends.push(offset - 1);
            }
        }
        let within = run_ends(&keys, &file_tags)?;
        ends.extend(within[..within.len() - 1].iter().map(|e| offset + e));
        offset += keys.num_rows();
        previous_last = Some(keys.slice(keys.num_rows() - 1, 1));
    }
    if offset > 0 {
        ends.push(offset - 1);
    }
    let selection =
        RowSelection::from_consecutive_ranges(ends.iter().map(|&e| e..e + 1), total_rows);
    let rows = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(external)?
        .with_row_selection(selection)
        .build()
        .map_err(external)?
        .collect::<Result<Vec<_>, _>>()?;
    let rows = concat_batches(&file_schema, &rows)?;
    conform(&rows, schema)
}

/// [`last_rows_of_file`] of a file some of whose rows are deleted: every row is decoded and
/// filtered first, since a series' last row may be one of them.
fn last_surviving_rows_of_file(
    bytes: Bytes,
    tags: &[&str],
    schema: &SchemaRef,
    surviving: &Arc<dyn PhysicalExpr>,
) -> Result<RecordBatch> {
    let external = |e: parquet::errors::ParquetError| DataFusionError::External(Box::new(e));
    let batches = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(external)?
        .build()
        .map_err(external)?
        .map(|b| {
            let b = conform(&b?, schema)?;
            let keep = surviving.evaluate(&b)?.into_array(b.num_rows())?;
            Ok(arrow::compute::filter_record_batch(&b, keep.as_boolean())?)
        })
        .collect::<Result<Vec<_>>>()?;
    take_run_ends(&concat_batches(schema, &batches)?, tags)
}

/// Row indices of the last row of each run of equal `tags` (the batch is sorted by them).
fn run_ends(batch: &RecordBatch, tags: &[&str]) -> Result<Vec<usize>> {
    let n = batch.num_rows();
    if n == 0 {
        return Ok(vec![]);
    }
    let columns: Vec<&ArrayRef> = tags
        .iter()
        .map(|t| batch.column_by_name(t).expect("tag column"))
        .collect();
    let mut ends: Vec<usize> = key_changes(&columns, n)?
        .into_iter()
        .map(|start| start - 1)
        .collect();
    ends.push(n - 1);
    Ok(ends)
}

fn take_run_ends(batch: &RecordBatch, tags: &[&str]) -> Result<RecordBatch> {
    let ends: arrow::array::UInt32Array = run_ends(batch, tags)?
        .into_iter()
        .map(|i| i as u32)
        .collect();
    Ok(take_record_batch(batch, &ends)?)
}

/// `batch` (of the table schema) with a constant chunk order column.
fn with_order(batch: &RecordBatch, ordered: &SchemaRef, order: u64) -> Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(Int64Array::from_value(
        order as i64,
        batch.num_rows(),
    )));
    Ok(RecordBatch::try_new(Arc::clone(ordered), columns)?)
}

/// `batch` with the columns of `schema`, in its order; missing columns are null.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(Arc::clone(c)),
            Some(c) => Ok(arrow::compute::cast(c, f.data_type())?),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}
