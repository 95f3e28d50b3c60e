//! Deduplication of rows that share a primary key (tag set, time).
//!
//! Rows are given in write order (earlier rows were written earlier). For each key the result
//! holds one row whose every field is the value of the latest write that named that field: a
//! later write overwrites the fields it names and leaves the others as they were, as InfluxDB
//! does. The output is sorted by (tags in name order, time).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};

use crate::schema::TIME_COLUMN;

/// Deduplicates `batch` (rows in write order) and sorts it by primary key.
pub(crate) fn dedup_sorted(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let rows = batch.num_rows();
    if rows <= 1 {
        return Ok(batch.clone());
    }
    let key_columns = key_column_indices(&schema);
    let sort_fields = key_columns
        .iter()
        .map(|&i| SortField::new(schema.field(i).data_type().clone()))
        .collect();
    let converter = RowConverter::new(sort_fields)?;
    let key_arrays: Vec<ArrayRef> = key_columns
        .iter()
        .map(|&i| Arc::clone(batch.column(i)))
        .collect();
    let keys = converter.convert_columns(&key_arrays)?;

    let mut order: Vec<u32> = (0..rows as u32).collect();
    // Stable sort: equal keys keep write order, so the last of a run is the latest write.
    order.sort_by(|&a, &b| keys.row(a as usize).cmp(&keys.row(b as usize)));

    // Runs of equal keys, as [start, end) into `order`.
    let mut runs: Vec<(usize, usize)> = Vec::with_capacity(rows);
    let mut start = 0;
    for i in 1..=rows {
        if i == rows || keys.row(order[i] as usize) != keys.row(order[start] as usize) {
            runs.push((start, i));
            start = i;
        }
    }
    let has_duplicates = runs.len() != rows;

    let key_set: Vec<bool> = (0..schema.fields().len())
        .map(|i| key_columns.contains(&i))
        .collect();
    let last_of_run: UInt32Array = runs.iter().map(|&(_, end)| order[end - 1]).collect();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (i, column) in batch.columns().iter().enumerate() {
        let indices = if key_set[i] || !has_duplicates || column.null_count() == 0 {
            last_of_run.clone()
        } else {
            // The latest non-null value of this field within each run, else the latest row.
            runs.iter()
                .map(|&(s, e)| {
                    order[s..e]
                        .iter()
                        .rev()
                        .find(|&&r| column.is_valid(r as usize))
                        .copied()
                        .unwrap_or(order[e - 1])
                })
                .collect()
        };
        columns.push(take(column.as_ref(), &indices, None)?);
    }
    RecordBatch::try_new(schema, columns)
}

/// Tag columns in name order, then `time`: the primary key and sort order.
pub(crate) fn key_column_indices(schema: &SchemaRef) -> Vec<usize> {
    let mut tags: Vec<(&str, usize)> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f.data_type(), DataType::Dictionary(_, _)))
        .map(|(i, f)| (f.name().as_str(), i))
        .collect();
    tags.sort();
    let mut key: Vec<usize> = tags.into_iter().map(|(_, i)| i).collect();
    if let Ok(time) = schema.index_of(TIME_COLUMN) {
        key.push(time);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Float64Array, StringDictionaryBuilder, TimestampNanosecondArray};
    use arrow::datatypes::{Field, Int32Type, Schema, TimeUnit};

    fn batch(rows: &[(&str, i64, Option<f64>, Option<f64>)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("f", DataType::Float64, true),
            Field::new("g", DataType::Float64, true),
            Field::new(
                "host",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
        ]));
        let mut host = StringDictionaryBuilder::<Int32Type>::new();
        for r in rows {
            host.append_value(r.0);
        }
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(rows.iter().map(|r| r.2).collect::<Float64Array>()),
                Arc::new(rows.iter().map(|r| r.3).collect::<Float64Array>()),
                Arc::new(host.finish()),
                Arc::new(
                    rows.iter()
                        .map(|r| Some(r.1))
                        .collect::<TimestampNanosecondArray>(),
                ),
            ],
        )
        .unwrap()
    }

    fn rows(b: &RecordBatch) -> Vec<String> {
        arrow::util::pretty::pretty_format_batches(std::slice::from_ref(b))
            .unwrap()
            .to_string()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn later_write_overwrites_named_fields_and_keeps_the_others() {
        let input = batch(&[
            ("a", 100, Some(1.0), Some(2.0)),
            ("a", 100, Some(3.0), None),
        ]);
        let out = dedup_sorted(&input).unwrap();
        assert_eq!(out.num_rows(), 1);
        let f = out
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        let g = out
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!((f.value(0), g.value(0)), (3.0, 2.0));
    }

    #[test]
    fn distinct_keys_are_all_kept_sorted_by_tags_then_time() {
        let input = batch(&[
            ("b", 1, Some(1.0), None),
            ("a", 2, Some(2.0), None),
            ("a", 1, Some(3.0), None),
        ]);
        let out = dedup_sorted(&input).unwrap();
        assert_eq!(
            rows(&out)[3..6],
            [
                "| 3.0 |   | a    | 1970-01-01T00:00:00.000000001 |",
                "| 2.0 |   | a    | 1970-01-01T00:00:00.000000002 |",
                "| 1.0 |   | b    | 1970-01-01T00:00:00.000000001 |",
            ]
        );
    }

    #[test]
    fn three_writes_to_one_key_resolve_field_by_field() {
        let input = batch(&[
            ("a", 5, Some(1.0), Some(1.0)),
            ("a", 5, None, Some(2.0)),
            ("a", 5, Some(3.0), None),
            ("b", 5, Some(9.0), None),
        ]);
        let out = dedup_sorted(&input).unwrap();
        assert_eq!(out.num_rows(), 2);
        let f = out
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        let g = out
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!((f.value(0), g.value(0)), (3.0, 2.0));
        assert_eq!(f.value(1), 9.0);
        assert!(g.is_null(1));
    }
}
