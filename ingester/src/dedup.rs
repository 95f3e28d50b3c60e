//! Deduplication of rows that share a primary key (tag set, time).
//!
//! Rows are given in write order (earlier rows were written earlier). For each key the result
//! holds one row whose every field is the value of the latest write that named that field: a
//! later write overwrites the fields it names and leaves the others as they were, as InfluxDB
//! does. The output is sorted by (tags in name order, time).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};
use arrow_select::dictionary::garbage_collect_any_dictionary;

use parquet_file::key_column_indices;

/// Deduplicates `chunks` (all of `schema`, rows in write order: chunk by chunk, row by row)
/// into one batch sorted by primary key. The chunks are read in place, not concatenated first,
/// so the peak is the input, the sort keys and the output.
///
/// With `head_is_deduplicated`, `chunks[0]` is an earlier output of this function: sorted and
/// without duplicates. Then only the other chunks are sorted and merged into it, so a
/// partition that gets a few new chunks between queries is not sorted whole again.
#[cfg(test)]
pub(crate) fn dedup_sorted(
    schema: &SchemaRef,
    chunks: &[RecordBatch],
    head_is_deduplicated: bool,
) -> Result<RecordBatch, ArrowError> {
    let head_batches = usize::from(head_is_deduplicated);
    let blocks = dedup_sorted_blocks(schema, chunks, head_batches, usize::MAX, &[])?;
    arrow::compute::concat_batches(schema, &blocks)
}

/// [`dedup_sorted`] whose head may be several batches (the first `head_batches` chunks,
/// together sorted and without duplicates), returning the result in batches of at most
/// `block_rows` rows, each its own allocation: a query's memory accounting then charges each
/// batch for its own rows, not for the whole partition as it would for slices of one batch.
///
/// Rows are sorted by the tags in `sort_key` order (see [`catalog::sorted_tags`]), then time.
pub(crate) fn dedup_sorted_blocks(
    schema: &SchemaRef,
    chunks: &[RecordBatch],
    head_batches: usize,
    block_rows: usize,
    sort_key: &[Arc<str>],
) -> Result<Vec<RecordBatch>, ArrowError> {
    let total: usize = chunks.iter().map(|c| c.num_rows()).sum();
    if total == 0 {
        return Ok(vec![]);
    }
    let head_is_deduplicated = head_batches > 0;
    let key_columns = key_column_indices(schema, sort_key);
    let sort_fields = key_columns
        .iter()
        .map(|&i| SortField::new(schema.field(i).data_type().clone()))
        .collect();
    let converter = RowConverter::new(sort_fields)?;
    let mut keys = converter.empty_rows(total, total * 16);
    // `starts[c]` is the global index of chunk c's first row.
    let mut starts = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        starts.push(keys.num_rows());
        let key_arrays: Vec<ArrayRef> = key_columns
            .iter()
            .map(|&i| chunk.column(i).clone())
            .collect();
        converter.append(&mut keys, &key_arrays)?;
    }
    let locate = |global: u32| {
        let chunk = starts.partition_point(|&s| s <= global as usize) - 1;
        (chunk, global as usize - starts[chunk])
    };

    // Ties broken by global index: equal keys stay in write order, so the last of a run is
    // the latest write.
    let by_key_then_write_order = |a: &u32, b: &u32| {
        keys.row(*a as usize)
            .cmp(&keys.row(*b as usize))
            .then(a.cmp(b))
    };
    let order: Vec<u32> = if head_is_deduplicated && chunks.len() > head_batches {
        let head_rows: u32 = chunks[..head_batches]
            .iter()
            .map(|c| c.num_rows() as u32)
            .sum();
        let mut tail: Vec<u32> = (head_rows..total as u32).collect();
        tail.sort_unstable_by(by_key_then_write_order);
        // Merge: on equal keys the head's row goes first, as it was written earlier.
        let mut order = Vec::with_capacity(total);
        let (mut h, mut t) = (0u32, 0usize);
        while h < head_rows && t < tail.len() {
            if keys.row(h as usize) <= keys.row(tail[t] as usize) {
                order.push(h);
                h += 1;
            } else {
                order.push(tail[t]);
                t += 1;
            }
        }
        order.extend(h..head_rows);
        order.extend_from_slice(&tail[t..]);
        order
    } else {
        let mut order: Vec<u32> = (0..total as u32).collect();
        order.sort_unstable_by(by_key_then_write_order);
        order
    };

    // Runs of equal keys, as [start, end) into `order`.
    let mut runs: Vec<(usize, usize)> = Vec::with_capacity(total);
    let mut start = 0;
    for i in 1..=total {
        if i == total || keys.row(order[i] as usize) != keys.row(order[start] as usize) {
            runs.push((start, i));
            start = i;
        }
    }
    drop(keys);
    let has_duplicates = runs.len() != total;

    let last_of_run: Vec<(usize, usize)> = runs
        .iter()
        .map(|&(_, end)| locate(order[end - 1]))
        .collect();
    let block_rows = block_rows.max(1);
    let blocks = runs.len().div_ceil(block_rows);
    let mut block_columns: Vec<Vec<ArrayRef>> =
        vec![Vec::with_capacity(schema.fields().len()); blocks];
    for i in 0..schema.fields().len() {
        let arrays: Vec<&dyn Array> = chunks.iter().map(|c| c.column(i).as_ref()).collect();
        let has_nulls = arrays.iter().any(|a| a.null_count() > 0);
        let indices: Vec<(usize, usize)> =
            if key_columns.contains(&i) || !has_duplicates || !has_nulls {
                last_of_run.clone()
            } else {
                // The latest non-null value of this field within each run, else the latest row.
                runs.iter()
                    .map(|&(s, e)| {
                        order[s..e]
                            .iter()
                            .rev()
                            .map(|&g| locate(g))
                            .find(|&(c, r)| arrays[c].is_valid(r))
                            .unwrap_or_else(|| locate(order[e - 1]))
                    })
                    .collect()
            };
        let is_dictionary = matches!(schema.field(i).data_type(), DataType::Dictionary(..));
        for (b, block) in indices.chunks(block_rows).enumerate() {
            let column = interleave(&arrays, block)?;
            // Interleaving may concatenate every input dictionary instead of merging them;
            // one copy per block would multiply the partition's memory.
            let column = match column.as_any_dictionary_opt() {
                Some(d) if is_dictionary && blocks > 1 => garbage_collect_any_dictionary(d)?,
                _ => column,
            };
            block_columns[b].push(column);
        }
    }
    block_columns
        .into_iter()
        .map(|columns| RecordBatch::try_new(schema.clone(), columns))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow::array::{Array, Float64Array, StringDictionaryBuilder, TimestampNanosecondArray};
    use arrow::datatypes::{Field, Int32Type, Schema, TimeUnit};
    use std::sync::Arc;

    /// A batch of (host tag, time, f, g) rows.
    pub(crate) fn batch(rows: &[(&str, i64, Option<f64>, Option<f64>)]) -> RecordBatch {
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

    fn floats(batch: &RecordBatch, column: usize) -> &Float64Array {
        batch
            .column(column)
            .as_any()
            .downcast_ref::<Float64Array>()
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
        let out = dedup_sorted(&input.schema(), std::slice::from_ref(&input), false).unwrap();
        assert_eq!(out.num_rows(), 1);
        let f = floats(&out, 0);
        let g = floats(&out, 1);
        assert_eq!((f.value(0), g.value(0)), (3.0, 2.0));
    }

    #[test]
    fn distinct_keys_are_all_kept_sorted_by_tags_then_time() {
        let input = batch(&[
            ("b", 1, Some(1.0), None),
            ("a", 2, Some(2.0), None),
            ("a", 1, Some(3.0), None),
        ]);
        let out = dedup_sorted(&input.schema(), std::slice::from_ref(&input), false).unwrap();
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
        let out = dedup_sorted(&input.schema(), std::slice::from_ref(&input), false).unwrap();
        assert_eq!(out.num_rows(), 2);
        let f = floats(&out, 0);
        let g = floats(&out, 1);
        assert_eq!((f.value(0), g.value(0)), (3.0, 2.0));
        assert_eq!(f.value(1), 9.0);
        assert!(g.is_null(1));
    }

    #[test]
    fn later_chunks_win_over_earlier_ones_field_by_field() {
        let first = batch(&[("a", 1, Some(1.0), Some(1.0)), ("b", 1, Some(5.0), None)]);
        let second = batch(&[("a", 1, None, Some(2.0))]);
        let third = batch(&[("a", 1, Some(3.0), None), ("a", 2, Some(4.0), None)]);
        let out = dedup_sorted(&first.schema(), &[first.clone(), second, third], false).unwrap();
        let f = floats(&out, 0);
        let g = floats(&out, 1);
        assert_eq!(out.num_rows(), 3);
        assert_eq!(
            (f.value(0), g.value(0)),
            (3.0, 2.0),
            "a@1: f from the third, g from the second"
        );
        assert_eq!(f.value(1), 4.0, "a@2");
        assert_eq!(f.value(2), 5.0, "b@1");
    }

    #[test]
    fn merging_new_chunks_into_a_deduplicated_head_equals_deduplicating_everything() {
        // Deterministic pseudo-random chunks with many repeated keys and sparse fields.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let hosts = ["a", "b", "c", "d"];
        let chunks: Vec<RecordBatch> = (0..12)
            .map(|_| {
                let rows: Vec<(&str, i64, Option<f64>, Option<f64>)> = (0..50)
                    .map(|_| {
                        let f = (next(3) > 0).then(|| next(100) as f64);
                        let g = (next(3) == 0).then(|| next(100) as f64);
                        (hosts[next(4) as usize], next(20) as i64, f, g)
                    })
                    .collect();
                batch(&rows)
            })
            .collect();
        let schema = chunks[0].schema();
        let all_at_once = dedup_sorted(&schema, &chunks, false).unwrap();
        for split in 1..chunks.len() {
            let head = dedup_sorted(&schema, &chunks[..split], false).unwrap();
            let mut incremental = vec![head];
            incremental.extend_from_slice(&chunks[split..]);
            let merged = dedup_sorted(&schema, &incremental, true).unwrap();
            assert_eq!(rows(&merged), rows(&all_at_once), "split at {split}");
        }
    }

    #[test]
    fn blocks_and_a_head_of_several_batches_give_the_same_rows() {
        let first = batch(&[("a", 1, Some(1.0), None), ("b", 1, Some(2.0), None)]);
        let second = batch(&[("c", 1, Some(3.0), None), ("d", 1, Some(4.0), None)]);
        let newer = batch(&[("b", 1, None, Some(5.0)), ("e", 1, Some(6.0), None)]);
        let schema = first.schema();
        // The head: two sorted, deduplicated batches.
        let blocks = dedup_sorted_blocks(
            &schema,
            &[first.clone(), second.clone(), newer.clone()],
            2,
            2,
            &[],
        )
        .unwrap();
        assert_eq!(
            blocks.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        let whole = dedup_sorted(&schema, &[first, second, newer], false).unwrap();
        let joined = arrow::compute::concat_batches(&schema, &blocks).unwrap();
        assert_eq!(rows(&joined), rows(&whole));
    }
}
