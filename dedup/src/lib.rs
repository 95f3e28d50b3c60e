//! Deduplication across sources that may hold the same rows, as a DataFusion operator: Parquet
//! files of one partition whose time ranges overlap, or a file and the buffer (the querier),
//! and all the files of a partition being merged (the compactor).
//!
//! [`DeduplicateExec`] reads one stream sorted by (primary key, [`CHUNK_ORDER`]) and keeps one
//! row per key whose every field is the last non-null value in chunk order: the same rule the
//! ingester applies inside the buffer (a later write overwrites the fields it names). It
//! streams: each batch waits only for the next one, which may continue its last key.
//!
//! Filters on fields must not be evaluated below it (an older version of a row could survive
//! where the newer one was filtered out); it keeps the default `gather_filters_for_pushdown`,
//! which lets no parent filter through.

mod deletes;

pub use deletes::surviving_rows;

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::kernels::boolean::or;
use arrow::compute::kernels::cmp::distinct;
use arrow::compute::{concat_batches, take};
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, OrderingRequirements, PhysicalExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions, apply_expression_roots,
};
use futures::StreamExt;

/// Name of the column that orders sources of one partition: higher is newer (the highest WAL
/// sequence number the source holds).
pub const CHUNK_ORDER: &str = "__chunk_order";

/// Keeps one row per primary key from an input sorted by (key columns, [`CHUNK_ORDER`]).
#[derive(Debug)]
pub struct DeduplicateExec {
    input: Arc<dyn ExecutionPlan>,
    /// Key columns then [`CHUNK_ORDER`], ascending.
    ordering: LexOrdering,
    /// Indices of the key columns in the input schema.
    key_columns: Vec<usize>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl DeduplicateExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        ordering: LexOrdering,
        key_columns: Vec<usize>,
    ) -> Self {
        let eq = EquivalenceProperties::new_with_orderings(
            input.schema(),
            [ordering.iter().cloned().collect::<Vec<_>>()],
        );
        let properties = PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            input,
            ordering,
            key_columns,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for DeduplicateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeduplicateExec: [{}]", self.ordering)
    }
}

impl ExecutionPlan for DeduplicateExec {
    fn name(&self) -> &str {
        "DeduplicateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(self.ordering.iter().map(|s| &s.expr), f)
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![Some(self.ordering.clone().into())]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(
            children.swap_remove(0),
            self.ordering.clone(),
            self.key_columns.clone(),
        )))
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(
            children.swap_remove(0),
            self.ordering.clone(),
            self.key_columns.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let deduplicator = Deduplicator::new(self.schema(), self.key_columns.clone());
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let state = Some((input, deduplicator, metrics));
        let stream = futures::stream::unfold(state, |state| async move {
            let (mut input, mut deduplicator, metrics) = state?;
            loop {
                let result = match input.next().await {
                    Some(Ok(batch)) => {
                        let _timer = metrics.elapsed_compute().timer();
                        match deduplicator.push(batch) {
                            Ok(Some(out)) => Ok(out),
                            Ok(None) => continue,
                            Err(e) => return Some((Err(e), None)),
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), None)),
                    None => {
                        let _timer = metrics.elapsed_compute().timer();
                        let last = deduplicator.finish().transpose()?;
                        if let Ok(batch) = &last {
                            metrics.record_output(batch.num_rows());
                        }
                        return Some((last, None));
                    }
                };
                if let Ok(batch) = &result {
                    metrics.record_output(batch.num_rows());
                }
                return Some((result, Some((input, deduplicator, metrics))));
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }
}

/// Deduplicates one batch sorted by (key columns, [`CHUNK_ORDER`]).
pub fn dedup_sorted_batch(batch: &RecordBatch, key_columns: Vec<usize>) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut deduplicator = Deduplicator::new(Arc::clone(&schema), key_columns);
    let mut out = Vec::with_capacity(2);
    out.extend(deduplicator.push(batch.clone())?);
    out.extend(deduplicator.finish()?);
    Ok(concat_batches(&schema, &out)?)
}

/// Indices `i` (from 1) where row `i` differs from row `i - 1` in any of `keys` (all of
/// `rows` rows); nulls compare equal to nulls.
pub fn key_changes(keys: &[&ArrayRef], rows: usize) -> Result<Vec<usize>> {
    if rows < 2 {
        return Ok(vec![]);
    }
    let mut changed: Option<BooleanArray> = None;
    for key in keys {
        let differs = match tag_changes(key, rows) {
            Some(changes) => changes,
            None => distinct(&key.slice(0, rows - 1), &key.slice(1, rows - 1))?,
        };
        changed = Some(match changed {
            Some(c) => or(&c, &differs)?,
            None => differs,
        });
    }
    Ok(changed.map_or_else(Vec::new, |c| {
        c.values().set_indices().map(|i| i + 1).collect()
    }))
}

/// For a dictionary of strings (a tag), whether each row's value differs from the next
/// row's (nulls alike). Equal indices mean equal values, so strings are compared only where
/// the index changes: rarely, in sorted rows. The values are compared then, not the indices,
/// since a dictionary may list a value twice (concatenated or interleaved batches).
fn tag_changes(key: &ArrayRef, rows: usize) -> Option<BooleanArray> {
    let dict = key.as_dictionary_opt::<arrow::datatypes::Int32Type>()?;
    let values = dict.values().as_string_opt::<i32>()?;
    let keys = dict.keys();
    let value = |row: usize| -> Option<&str> {
        if keys.is_null(row) {
            return None;
        }
        let k = keys.value(row) as usize;
        (!values.is_null(k)).then(|| values.value(k))
    };
    let raw = keys.values();
    let changes = arrow::buffer::BooleanBuffer::collect_bool(rows - 1, |i| {
        let same_index = raw[i] == raw[i + 1] && keys.is_valid(i) == keys.is_valid(i + 1);
        !same_index && value(i) != value(i + 1)
    });
    Some(BooleanArray::new(changes, None))
}

/// The state of one deduplicating stream (sorted by key columns, then [`CHUNK_ORDER`]).
///
/// Each batch is deduplicated on its own, then held back until the next one shows whether its
/// last key goes on there: only then are rows copied, so input without duplicates passes
/// through as slices of itself (a carried row joined to every next batch copied them all).
pub struct Deduplicator {
    schema: SchemaRef,
    key_columns: Vec<usize>,
    held: Option<RecordBatch>,
}

impl Deduplicator {
    pub fn new(schema: SchemaRef, key_columns: Vec<usize>) -> Self {
        Self {
            schema,
            key_columns,
            held: None,
        }
    }

    /// Takes the next input batch; returns the merged rows of every key that is complete.
    pub fn push(&mut self, batch: RecordBatch) -> Result<Option<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let starts = self.run_starts(&batch)?;
        let mut batch = self.merge_runs(&batch, &starts, batch.num_rows())?;
        let Some(held) = self.held.take() else {
            self.held = Some(batch);
            return Ok(None);
        };
        let last = held.num_rows() - 1;
        let pair = concat_batches(&self.schema, [&held.slice(last, 1), &batch.slice(0, 1)])?;
        let out = if self.run_starts(&pair)?.len() == 1 {
            // The held batch's last key goes on here: its two rows become one, older first.
            let merged = self.merge_runs(&pair, &[0], 2)?;
            let rest = batch.slice(1, batch.num_rows() - 1);
            batch = concat_batches(&self.schema, [&merged, &rest])?;
            (last > 0).then(|| held.slice(0, last))
        } else {
            Some(held)
        };
        self.held = Some(batch);
        Ok(out)
    }

    /// The rows still held (end of input).
    pub fn finish(&mut self) -> Result<Option<RecordBatch>> {
        Ok(self.held.take())
    }

    /// Row indices where a new key starts.
    fn run_starts(&self, batch: &RecordBatch) -> Result<Vec<usize>> {
        let keys: Vec<&ArrayRef> = self.key_columns.iter().map(|&i| batch.column(i)).collect();
        let mut starts = vec![0];
        starts.extend(key_changes(&keys, batch.num_rows())?);
        Ok(starts)
    }

    /// One row per run `starts[k]..starts[k + 1]` (the last run ends at `end`): key columns
    /// from the run's last row, every other column from its last non-null value.
    fn merge_runs(&self, batch: &RecordBatch, starts: &[usize], end: usize) -> Result<RecordBatch> {
        if starts.len() == end {
            // Every run is a single row: nothing to merge.
            return Ok(batch.slice(0, end));
        }
        let run_end = |k: usize| starts.get(k + 1).copied().unwrap_or(end);
        let last_rows: UInt32Array = (0..starts.len()).map(|k| run_end(k) as u32 - 1).collect();
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (i, column) in batch.columns().iter().enumerate() {
            if self.key_columns.contains(&i) || column.null_count() == 0 {
                columns.push(take(column, &last_rows, None)?);
                continue;
            }
            let indices: UInt32Array = (0..starts.len())
                .map(|k| {
                    let (start, stop) = (starts[k], run_end(k));
                    (start..stop)
                        .rev()
                        .find(|&r| column.is_valid(r))
                        .unwrap_or(stop - 1) as u32
                })
                .collect();
            columns.push(take(column, &indices, None)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// The ascending ordering by the columns `names` of `schema`: a partition's sort key, then
/// [`CHUNK_ORDER`] where sources are merged.
pub fn sort_ordering<'a>(
    names: impl IntoIterator<Item = &'a str>,
    schema: &arrow::datatypes::Schema,
) -> Result<LexOrdering> {
    let exprs = names
        .into_iter()
        .map(|name| {
            Ok(datafusion::physical_expr::PhysicalSortExpr::new(
                datafusion::physical_expr::expressions::col(name, schema)?,
                arrow::compute::SortOptions::default(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    LexOrdering::new(exprs)
        .ok_or_else(|| datafusion::error::DataFusionError::Internal("empty sort key".into()))
}

/// A recorded Parquet file (its object path and size) as DataFusion scans it.
pub fn partitioned_file(
    path: &str,
    size_bytes: u64,
) -> Result<datafusion::datasource::listing::PartitionedFile> {
    // The recorded path is already encoded: parse it rather than encode it again.
    let location = object_store::path::Path::parse(path)
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    let mut file = datafusion::datasource::listing::PartitionedFile::new(String::new(), size_bytes);
    file.object_meta.location = location;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("host", DataType::Utf8, true),
            Field::new("time", DataType::Int64, false),
            Field::new("f", DataType::Float64, true),
            Field::new("g", DataType::Float64, true),
            Field::new(CHUNK_ORDER, DataType::Int64, false),
        ]))
    }

    type Row = (&'static str, i64, Option<f64>, Option<f64>, i64);

    fn batch(rows: &[Row]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(rows.iter().map(|r| Some(r.0)).collect::<StringArray>()),
                Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
                Arc::new(rows.iter().map(|r| r.2).collect::<Float64Array>()),
                Arc::new(rows.iter().map(|r| r.3).collect::<Float64Array>()),
                Arc::new(rows.iter().map(|r| r.4).collect::<Int64Array>()),
            ],
        )
        .unwrap()
    }

    fn run(batches: Vec<RecordBatch>) -> String {
        let mut d = Deduplicator::new(schema(), vec![0, 1]);
        let mut out = Vec::new();
        for b in batches {
            out.extend(d.push(b).unwrap());
        }
        out.extend(d.finish().unwrap());
        pretty_format_batches(&out).unwrap().to_string()
    }

    #[test]
    fn key_changes_compare_tag_values_not_dictionary_indices() {
        use arrow::array::{DictionaryArray, Int32Array, StringArray};
        // Indices 0 and 2 both hold "a", as after concatenating two batches' dictionaries.
        let values = Arc::new(StringArray::from(vec![
            Some("a"),
            Some("b"),
            Some("a"),
            None,
        ]));
        let keys = Int32Array::from(vec![Some(0), Some(2), Some(1), Some(3), None, Some(0)]);
        let tag: ArrayRef = Arc::new(DictionaryArray::new(keys, values));
        // a a | b | null null | a
        assert_eq!(key_changes(&[&tag], 6).unwrap(), [2, 3, 5]);
        let time: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![1, 2, 2, 2, 2, 2]));
        assert_eq!(key_changes(&[&tag, &time], 6).unwrap(), [1, 2, 3, 5]);
    }

    #[test]
    fn newer_sources_overwrite_the_fields_they_name() {
        let out = run(vec![batch(&[
            ("a", 1, Some(1.0), Some(10.0), 1),
            ("a", 1, Some(2.0), None, 2),
            ("a", 2, Some(3.0), None, 1),
            ("b", 1, None, Some(20.0), 1),
            ("b", 1, None, None, 3),
        ])]);
        assert_eq!(
            out,
            "+------+------+-----+------+---------------+\n\
             | host | time | f   | g    | __chunk_order |\n\
             +------+------+-----+------+---------------+\n\
             | a    | 1    | 2.0 | 10.0 | 2             |\n\
             | a    | 2    | 3.0 |      | 1             |\n\
             | b    | 1    |     | 20.0 | 3             |\n\
             +------+------+-----+------+---------------+"
        );
    }

    #[test]
    fn batches_without_duplicates_pass_through_uncopied() {
        let first = batch(&[("a", 1, Some(1.0), None, 1), ("b", 1, Some(2.0), None, 2)]);
        let second = batch(&[("c", 1, Some(3.0), None, 1)]);
        let mut d = Deduplicator::new(schema(), vec![0, 1]);
        assert!(
            d.push(first.clone()).unwrap().is_none(),
            "held until the next batch"
        );
        let out = d.push(second.clone()).unwrap().unwrap();
        let values = |b: &RecordBatch| b.column(2).to_data().buffers()[0].as_ptr();
        assert_eq!(values(&out), values(&first));
        assert_eq!(values(&d.finish().unwrap().unwrap()), values(&second));
    }

    #[test]
    fn a_key_split_across_batches_is_merged_once() {
        let whole = run(vec![batch(&[
            ("a", 1, Some(1.0), Some(10.0), 1),
            ("a", 1, None, Some(11.0), 2),
            ("a", 1, Some(3.0), None, 3),
            ("b", 5, Some(4.0), None, 1),
        ])]);
        let split = run(vec![
            batch(&[("a", 1, Some(1.0), Some(10.0), 1)]),
            batch(&[("a", 1, None, Some(11.0), 2)]),
            batch(&[]),
            batch(&[("a", 1, Some(3.0), None, 3), ("b", 5, Some(4.0), None, 1)]),
        ]);
        assert_eq!(whole, split);
        assert!(
            whole.contains("| a    | 1    | 3.0 | 11.0 | 3             |"),
            "{whole}"
        );
        assert_eq!(whole.lines().count(), 6, "two rows and borders");
    }
}
