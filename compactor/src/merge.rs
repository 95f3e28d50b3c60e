//! Running a compaction: the partition's files, merged in key order and deduplicated, written
//! as level-1 (today) or level-2 (a day that is over) files cut by time.
//!
//! ```text
//! per output time slice:
//!   Parquet scan (one sorted stream per file, + __chunk_order = the file's highest sequence)
//!     -> FilterExec (time in the slice, rows not range-deleted), only for files that
//!        reach outside the slice or have range-deleted rows      order kept
//!     -> SeriesMerge (tags, time, __chunk_order; drops __chunk_order)
//!     -> Deduplicator (last non-null field per key wins), only where files overlap in time
//!     -> Parquet writer -> object store
//! ```
//!
//! Everything streams: memory holds a batch per input file, the merge's cursors and the
//! writer's current row group, never a partition. The query memory pool of the compactor's own
//! runtime (`--compaction-mem-limit`) holds the merge's input batches and the output file, which
//! is built in memory before its upload.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampNanosecondType};
use catalog::{NewParquetFile, TIME_COLUMN};
use datafusion::common::ScalarValue;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema as ScanSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, col, lit};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use dedup::{CHUNK_ORDER, Deduplicator, partitioned_file, sort_ordering, surviving_rows};
use object_store::path::Path;
use parquet_file::{ObjectStorage, PartitionWriter};

use crate::CompactionError;
use crate::plan::{CompactionPlan, time_slices};
use crate::series_merge::{SeriesMerge, SortKey};

/// Writes the merged partition of `plan` as files (uploaded, not yet recorded) and describes
/// them. On error, objects already uploaded are returned for removal in the error's place.
pub(crate) async fn write_merged(
    plan: &CompactionPlan,
    storage: &ObjectStorage,
    store_url: &ObjectStoreUrl,
    task: Arc<TaskContext>,
) -> Result<Vec<NewParquetFile>, (CompactionError, Vec<Path>)> {
    let min_time = plan.inputs.iter().map(|f| f.file.min_time_ns).min();
    let max_time = plan.inputs.iter().map(|f| f.file.max_time_ns).max();
    let (Some(min_time), Some(max_time)) = (min_time, max_time) else {
        return Ok(Vec::new());
    };
    let mut written: Vec<NewParquetFile> = Vec::new();
    for (lo, hi) in time_slices(min_time, max_time, plan.outputs) {
        match write_slice(plan, storage, store_url, Arc::clone(&task), (lo, hi)).await {
            Ok(Some(file)) => written.push(file),
            Ok(None) => {}
            Err(e) => {
                let uploaded = written
                    .iter()
                    .map(|f| Path::from(f.path.as_str()))
                    .collect();
                return Err((e, uploaded));
            }
        }
    }
    Ok(written)
}

/// One output file: the rows of `slice` (inclusive), or `None` when it has none.
async fn write_slice(
    plan: &CompactionPlan,
    storage: &ObjectStorage,
    store_url: &ObjectStoreUrl,
    task: Arc<TaskContext>,
    slice: (i64, i64),
) -> Result<Option<NewParquetFile>, CompactionError> {
    let inputs = sorted_inputs(plan, store_url, slice).map_err(CompactionError::Plan)?;
    let schema = plan.table.arrow_schema();
    let mut merged = merged_rows(inputs, &schema, Arc::clone(&task))
        .await
        .map_err(CompactionError::Plan)?;
    // The output is built in memory before its upload: it counts against the limit too.
    let output_memory = MemoryConsumer::new("the compaction output (raise --compaction-mem-limit)")
        .register(task.memory_pool());
    let sort_key = Arc::clone(&plan.table.sort_key);
    let mut writer = PartitionWriter::try_new(Arc::clone(&schema), &sort_key)
        .map_err(CompactionError::Parquet)?;
    let (mut rows, mut min_time, mut max_time) = (0u64, i64::MAX, i64::MIN);
    while let Some(batch) = merged.next().await.map_err(CompactionError::Plan)? {
        if batch.num_rows() == 0 {
            continue;
        }
        let (lo, hi) = time_range(&batch)?;
        min_time = min_time.min(lo);
        max_time = max_time.max(hi);
        rows += batch.num_rows() as u64;
        // Encoding is CPU work; it runs on the compactor's own thread (see `Compactor`).
        writer.write(&batch).map_err(CompactionError::Parquet)?;
        output_memory
            .try_resize(writer.memory_size())
            .map_err(CompactionError::Plan)?;
    }
    if rows == 0 {
        return Ok(None);
    }
    let bytes = writer.finish().map_err(CompactionError::Parquet)?;
    let path = parquet_file::object_path(&plan.database.name, &plan.table.name, plan.day);
    let size_bytes = bytes.len() as u64;
    storage
        .put_durable(&path, bytes)
        .await
        .map_err(CompactionError::Storage)?;
    Ok(Some(NewParquetFile {
        table_id: plan.table.id,
        partition_day: plan.day,
        path: path.to_string(),
        size_bytes,
        row_count: rows,
        min_time_ns: min_time,
        max_time_ns: max_time,
        level: plan.output_level,
        min_sequence: plan
            .inputs
            .iter()
            .map(|f| f.file.min_sequence)
            .min()
            .unwrap_or(0),
        max_sequence: plan
            .inputs
            .iter()
            .map(|f| f.file.max_sequence)
            .max()
            .unwrap_or(0),
        tombstones_applied: plan.tombstones_applied,
    }))
}

fn time_range(batch: &RecordBatch) -> Result<(i64, i64), CompactionError> {
    let time = batch
        .column_by_name(TIME_COLUMN)
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        .ok_or_else(|| {
            CompactionError::Plan(DataFusionError::Internal(
                "merged rows have no time column".into(),
            ))
        })?;
    let lo = arrow::compute::min(time).unwrap_or(i64::MAX);
    let hi = arrow::compute::max(time).unwrap_or(i64::MIN);
    debug_assert_eq!(time.null_count(), 0);
    Ok((lo, hi))
}

/// The partition's rows in `slice`, merged in key order and deduplicated where files overlap,
/// in the table's schema.
struct MergedRows {
    merge: SeriesMerge,
    /// `None` when no two input files overlap in time: every file holds one row per key, so
    /// rows of different files cannot share a key.
    dedup: Option<Deduplicator>,
}

impl MergedRows {
    async fn next(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let Some(batch) = self.merge.next_batch().await? else {
                return match &mut self.dedup {
                    Some(dedup) => dedup.finish(),
                    None => Ok(None),
                };
            };
            // Rows pass as they are until the merge meets a key twice (files that share only
            // the instant at their edges, like consecutive persists, rarely do).
            match &mut self.dedup {
                Some(dedup) if self.merge.repeated_key() => {
                    if let Some(batch) = dedup.push(batch)? {
                        return Ok(Some(batch));
                    }
                }
                _ => return Ok(Some(batch)),
            }
        }
    }
}

async fn merged_rows(
    inputs: SortedInputs,
    schema: &SchemaRef,
    task: Arc<TaskContext>,
) -> Result<MergedRows> {
    let key = inputs.key;
    let mut key_columns = key.tags.clone();
    key_columns.push(key.time);
    let streams = (0..inputs.plan.output_partitioning().partition_count())
        .map(|partition| inputs.plan.execute(partition, Arc::clone(&task)))
        .collect::<Result<Vec<_>>>()?;
    let reservation = MemoryConsumer::new("the compaction merge (raise --compaction-mem-limit)")
        .register(task.memory_pool());
    let merge = SeriesMerge::try_new(
        streams,
        &inputs.plan.schema(),
        key,
        Arc::clone(schema),
        task.session_config().batch_size(),
        reservation,
    )
    .await?;
    let dedup = inputs
        .overlap
        .then(|| Deduplicator::new(Arc::clone(schema), key_columns));
    Ok(MergedRows { merge, dedup })
}

/// The partition's files that hold rows in a slice: one partition of `plan` per file, each
/// sorted by (tags, time), with [`CHUNK_ORDER`] appended to the table's columns.
struct SortedInputs {
    plan: Arc<dyn ExecutionPlan>,
    /// Where the columns the files are sorted by are in `plan`'s schema.
    key: SortKey,
    /// Whether two of the files overlap in time (and so may hold the same key).
    overlap: bool,
}

fn sorted_inputs(
    plan: &CompactionPlan,
    store_url: &ObjectStoreUrl,
    (lo, hi): (i64, i64),
) -> Result<SortedInputs> {
    let schema: SchemaRef = plan.table.arrow_schema();
    let order_field = Arc::new(Field::new(CHUNK_ORDER, DataType::Int64, false));
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::clone(&order_field));
    let full_schema = Arc::new(Schema::new(fields));

    let tags = plan.table.sorted_tags();
    let names = tags.iter().copied().chain([TIME_COLUMN, CHUNK_ORDER]);
    let ordering = sort_ordering(names, &full_schema)?;
    let key = SortKey {
        tags: tags
            .iter()
            .map(|t| full_schema.index_of(t))
            .collect::<Result<_, _>>()?,
        time: full_schema.index_of(TIME_COLUMN)?,
        chunk_order: full_schema.index_of(CHUNK_ORDER)?,
    };

    let time = col(TIME_COLUMN, &full_schema)?;
    let timestamp = |ns: i64| lit(ScalarValue::TimestampNanosecond(Some(ns), None));
    let in_slice: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
        Arc::new(BinaryExpr::new(
            Arc::clone(&time),
            Operator::GtEq,
            timestamp(lo),
        )),
        Operator::And,
        Arc::new(BinaryExpr::new(time, Operator::LtEq, timestamp(hi))),
    ));

    // Range deletes drop their rows of files written before them, before the dedup: a deleted
    // row must not lend its fields to a newer row of the same key.
    let deletes: Vec<&catalog::NewTombstone> = plan.deletes.iter().map(|t| &t.delete).collect();
    let surviving = surviving_rows(&deletes, &full_schema, Some(CHUNK_ORDER))?;

    // Files are scanned in up to four groups, by whether they reach outside the slice and
    // whether a range delete applies to them: a filter copies every row it passes, so only
    // files that need one get it (profiled: 15 % of a compaction's CPU when all had it).
    let mut by_filter: std::collections::BTreeMap<(bool, bool), Vec<FileGroup>> =
        Default::default();
    for f in &plan.inputs {
        let (min, max) = (f.file.min_time_ns, f.file.max_time_ns);
        if max < lo || min > hi {
            continue;
        }
        let straddles = min < lo || max > hi;
        let deleted = plan.deletes.iter().any(|t| t.is_pending_for(&f.file));
        let file = partitioned_file(&f.file.path, f.file.size_bytes)?
            .with_partition_values(vec![ScalarValue::Int64(Some(f.file.max_sequence as i64))]);
        // One group per file: each is sorted, and a group keeps its order only if it is one
        // file.
        by_filter
            .entry((straddles, deleted && surviving.is_some()))
            .or_default()
            .push(FileGroup::new(vec![file]));
    }
    if by_filter.is_empty() {
        return Ok(SortedInputs {
            plan: Arc::new(EmptyExec::new(full_schema)),
            key,
            overlap: false,
        });
    }
    let mut scans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    for ((straddles, deleted), groups) in by_filter {
        let scan_schema = ScanSchema::builder(Arc::clone(&schema))
            .with_table_partition_cols(vec![Arc::clone(&order_field)])
            .build();
        let mut source = ParquetSource::new(scan_schema);
        if straddles {
            // Prunes row groups and pages by statistics; the filter below makes it exact.
            source = source.with_predicate(Arc::clone(&in_slice));
        }
        let config = FileScanConfigBuilder::new(store_url.clone(), Arc::new(source))
            .with_file_groups(groups)
            .with_output_ordering(vec![ordering.clone()])
            .build();
        let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        let keep = match (straddles, deleted) {
            (false, false) => None,
            (true, false) => Some(Arc::clone(&in_slice)),
            (false, true) => surviving.clone(),
            (true, true) => surviving.clone().map(|s| {
                Arc::new(BinaryExpr::new(Arc::clone(&in_slice), Operator::And, s))
                    as Arc<dyn PhysicalExpr>
            }),
        };
        scans.push(match keep {
            Some(keep) => Arc::new(FilterExec::try_new(keep, scan)?),
            None => scan,
        });
    }
    let plan_inputs = if scans.len() == 1 {
        scans.pop().expect("one scan")
    } else {
        UnionExec::try_new(scans)?
    };
    Ok(SortedInputs {
        plan: plan_inputs,
        key,
        overlap: files_overlap(&plan.inputs),
    })
}

/// Whether any two of `files` share an instant.
fn files_overlap(files: &[catalog::ParquetFile]) -> bool {
    let mut ranges: Vec<(i64, i64)> = files
        .iter()
        .map(|f| (f.file.min_time_ns, f.file.max_time_ns))
        .collect();
    ranges.sort_unstable();
    ranges.windows(2).any(|w| w[1].0 <= w[0].1)
}
