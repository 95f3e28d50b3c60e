//! Range deletes on buffered rows: which rows a [`NewTombstone`] matches.
//!
//! A delete removes its rows from the buffer at once and is recorded as a tombstone; replay
//! applies the tombstone again to the WAL entries it covers, so deleted rows do not come back
//! after a restart. Persisted files are filtered by the querier and rewritten by the compactor.

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, Scalar, StringArray};
use arrow::compute::kernels::cmp::{eq, gt_eq, lt_eq};
use arrow::compute::{and, cast, filter_record_batch, not, prep_null_mask_filter};
use arrow::datatypes::{DataType, TimestampNanosecondType};
use arrow::error::ArrowError;
use catalog::{NewTombstone, TIME_COLUMN};

/// Rows of `batch` the delete matches: time in its range and every tag equal to its value.
/// A row without one of the tags (null, or the batch lacks the column) does not match.
pub(crate) fn deleted_rows(
    batch: &RecordBatch,
    delete: &NewTombstone,
) -> Result<BooleanArray, ArrowError> {
    let time = batch
        .column_by_name(TIME_COLUMN)
        .ok_or_else(|| ArrowError::SchemaError("a batch without a time column".into()))?
        .as_primitive::<TimestampNanosecondType>()
        .reinterpret_cast::<arrow::datatypes::Int64Type>();
    let lo = arrow::array::Int64Array::new_scalar(delete.min_time_ns);
    let hi = arrow::array::Int64Array::new_scalar(delete.max_time_ns);
    let mut matched = and(&gt_eq(&time, &lo)?, &lt_eq(&time, &hi)?)?;
    for (tag, value) in &delete.tags {
        let Some(column) = batch.column_by_name(tag) else {
            return Ok(BooleanArray::from(vec![false; batch.num_rows()]));
        };
        let strings = cast(column, &DataType::Utf8)?;
        let value = Scalar::new(StringArray::from(vec![value.as_ref()]));
        matched = and(&matched, &eq(&strings, &value)?)?;
    }
    Ok(if matched.null_count() > 0 {
        prep_null_mask_filter(&matched)
    } else {
        matched
    })
}

/// `batch` without the rows any of `deletes` matches; `None` when nothing is left.
pub(crate) fn without_deleted<'a>(
    batch: RecordBatch,
    deletes: impl IntoIterator<Item = &'a NewTombstone>,
) -> Result<Option<RecordBatch>, ArrowError> {
    let mut batch = batch;
    for delete in deletes {
        let deleted = deleted_rows(&batch, delete)?;
        if deleted.true_count() == 0 {
            continue;
        }
        batch = filter_record_batch(&batch, &not(&deleted)?)?;
    }
    Ok((batch.num_rows() > 0).then_some(batch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, TimestampNanosecondArray};
    use arrow::datatypes::Int32Type;
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let host: DictionaryArray<Int32Type> = vec![Some("a"), Some("b"), None, Some("a")]
            .into_iter()
            .collect();
        let time = TimestampNanosecondArray::from(vec![1, 2, 3, 40]);
        RecordBatch::try_from_iter([
            ("host", Arc::new(host) as Arc<dyn Array>),
            ("time", Arc::new(time) as Arc<dyn Array>),
        ])
        .unwrap()
    }

    fn delete(tags: &[(&str, &str)]) -> NewTombstone {
        NewTombstone {
            min_time_ns: 0,
            max_time_ns: 10,
            tags: tags
                .iter()
                .map(|(t, v)| ((*t).into(), (*v).into()))
                .collect(),
            wal_cutoff: 1,
        }
    }

    #[test]
    fn a_delete_matches_rows_in_its_time_range_with_every_tag_equal() {
        let matched = deleted_rows(&batch(), &delete(&[("host", "a")])).unwrap();
        assert_eq!(matched, BooleanArray::from(vec![true, false, false, false]));
        let everything = deleted_rows(&batch(), &delete(&[])).unwrap();
        assert_eq!(
            everything,
            BooleanArray::from(vec![true, true, true, false])
        );
    }

    #[test]
    fn a_tag_the_rows_lack_matches_nothing() {
        let kept = without_deleted(batch(), [&delete(&[("region", "eu")])]).unwrap();
        assert_eq!(kept.unwrap().num_rows(), 4);
        let kept = without_deleted(batch(), [&delete(&[]), &delete(&[("host", "a")])]).unwrap();
        assert_eq!(kept.unwrap().num_rows(), 1);
    }
}
