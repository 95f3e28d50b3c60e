//! Row groups a filter on the first sort tag can match, found while planning.
//!
//! Files are sorted by series, the table's first sort tag first (`hostname` for TSBS), so a
//! row group holds a few values of that tag and its statistics bound them closely. DataFusion
//! prunes row groups by the same statistics, but only when a partition opens the file: a scan
//! of one host's hour was given the whole file, divided between two partitions that each
//! opened it and evaluated the statistics of half of its row groups. Restricting a time
//! split's rows to the row groups that can hold the values (`hostname = 'host_42'`,
//! `hostname IN (...)`) first narrows the file's byte range to those row groups. (DataFusion
//! still halves a range of 1 MiB or more between two partitions; a half that holds no row
//! group's middle opens the file and reads nothing.)

use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;

/// The values a row's tag must have to pass the filters: a tag compared for equality with
/// strings, or listed against them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TagValues {
    tag: String,
    /// Sorted, without duplicates.
    values: Vec<String>,
}

impl TagValues {
    /// The values of `tag` that `filters` (a conjunction) keep, if a filter names them; the
    /// fewest where several do.
    pub(crate) fn of_filters(filters: &[Expr], tag: &str) -> Option<Self> {
        let values = filters
            .iter()
            .filter_map(|f| values_of(f, tag))
            .min_by_key(Vec::len)?;
        Some(Self {
            tag: tag.to_owned(),
            values,
        })
    }

    /// The rows of the row groups of a file whose statistics of the tag may hold one of the
    /// values (all of a file's rows where none exclude them); `None` when no row group may.
    /// Row groups without statistics for the tag are kept.
    pub(crate) fn row_groups(&self, metadata: &ParquetMetaData) -> Result<Option<RowSelection>> {
        let schema = metadata.file_metadata().schema_descr();
        let Some(column) = schema
            .columns()
            .iter()
            .position(|c| c.path().string() == self.tag)
        else {
            // A file written before the tag existed: the tag is null in all its rows.
            return Ok(None);
        };
        let mut groups = Vec::with_capacity(metadata.num_row_groups());
        let mut any = false;
        for row_group in metadata.row_groups() {
            let rows = usize::try_from(row_group.num_rows()).map_err(|_| {
                DataFusionError::External(
                    format!("a row group's row count is {}", row_group.num_rows()).into(),
                )
            })?;
            let may_match = match row_group.column(column).statistics() {
                Some(Statistics::ByteArray(s)) => match (s.min_opt(), s.max_opt()) {
                    // Bounds cut short are still bounds: a minimum is cut to a prefix, and a
                    // maximum is cut and then its last byte raised.
                    (Some(min), Some(max)) => self
                        .values
                        .iter()
                        .any(|v| min.data() <= v.as_bytes() && v.as_bytes() <= max.data()),
                    // No bounds: every value is null, or the bounds were not written.
                    _ => s.null_count_opt() != Some(row_group.num_rows() as u64),
                },
                _ => true,
            };
            any |= may_match;
            groups.push(if may_match {
                RowSelector::select(rows)
            } else {
                RowSelector::skip(rows)
            });
        }
        Ok(any.then(|| RowSelection::from(groups)))
    }
}

/// `rows` of a file that are also in `row_groups` ([`TagValues::row_groups`]); `None` when
/// none are.
pub(crate) fn restrict(rows: RowSelection, row_groups: &RowSelection) -> Option<RowSelection> {
    let restricted = rows.intersection(row_groups);
    restricted.selects_any().then_some(restricted)
}

/// The values `filter` keeps `tag` to, if it is `tag = 'v'` (either side) or
/// `tag IN ('v', ...)`.
fn values_of(filter: &Expr, tag: &str) -> Option<Vec<String>> {
    let is_tag = |e: &Expr| matches!(e, Expr::Column(c) if c.name == tag);
    let mut values = match filter {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            let value = match (left.as_ref(), right.as_ref()) {
                (column, Expr::Literal(v, _)) if is_tag(column) => v,
                (Expr::Literal(v, _), column) if is_tag(column) => v,
                _ => return None,
            };
            vec![string(value)?]
        }
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) if is_tag(expr) => list
            .iter()
            .map(|e| match e {
                Expr::Literal(v, _) => string(v),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    values.sort_unstable();
    values.dedup();
    Some(values)
}

/// A string literal's value, also when DataFusion typed it as the tag's dictionary.
fn string(value: &ScalarValue) -> Option<String> {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
        ScalarValue::Dictionary(_, inner) => string(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    use arrow::compute::cast;
    use arrow::datatypes::{DataType, Field, Schema};
    use bytes::Bytes;
    use datafusion::logical_expr::{col, lit};
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::ParquetMetaDataReader;
    use parquet::file::properties::{EnabledStatistics, WriterProperties};

    use super::*;

    /// A file of `groups`, one row group each, with a dictionary `host` column.
    fn file(groups: &[&[&str]], statistics: bool) -> ParquetMetaData {
        let tag = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![Field::new("host", tag.clone(), true)]));
        let enabled = if statistics {
            EnabledStatistics::Chunk
        } else {
            EnabledStatistics::None
        };
        let properties = WriterProperties::builder()
            .set_statistics_enabled(enabled)
            .build();
        let mut out = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut out, Arc::clone(&schema), Some(properties)).unwrap();
        for hosts in groups {
            let column: ArrayRef = cast(&StringArray::from(hosts.to_vec()), &tag).unwrap();
            let batch = RecordBatch::try_new(Arc::clone(&schema), vec![column]).unwrap();
            writer.write(&batch).unwrap();
            writer.flush().unwrap();
        }
        writer.close().unwrap();
        ParquetMetaDataReader::new()
            .parse_and_finish(&Bytes::from(out))
            .unwrap()
    }

    fn host(filter: Expr) -> TagValues {
        TagValues::of_filters(&[filter], "host").expect("a filter on host")
    }

    fn selected(selection: Option<RowSelection>) -> Option<Vec<(bool, usize)>> {
        selection.map(|s| {
            let selectors: Vec<RowSelector> = s.into();
            selectors
                .into_iter()
                .filter(|s| s.row_count > 0)
                .map(|s| (!s.skip, s.row_count))
                .collect()
        })
    }

    #[test]
    fn only_row_groups_whose_bounds_hold_a_value_are_kept() {
        let metadata = file(&[&["a", "a", "b"], &["c", "d"], &["e", "f", "g"]], true);
        let keep = |f: Expr| selected(host(f).row_groups(&metadata).unwrap());
        assert_eq!(
            keep(col("host").eq(lit("c"))),
            Some(vec![(false, 3), (true, 2), (false, 3)])
        );
        assert_eq!(
            keep(col("host").in_list(vec![lit("a"), lit("f")], false)),
            Some(vec![(true, 3), (false, 2), (true, 3)])
        );
        // Inside a row group's bounds though not in it: kept, DataFusion filters the rows.
        assert_eq!(
            keep(lit("ab").eq(col("host"))),
            Some(vec![(true, 3), (false, 5)])
        );
        assert_eq!(keep(col("host").eq(lit("z"))), None);
    }

    #[test]
    fn the_rows_already_left_out_stay_out() {
        let metadata = file(&[&["a", "a", "b"], &["c", "d"]], true);
        let rows = RowSelection::from(vec![RowSelector::skip(1), RowSelector::select(4)]);
        let groups = host(col("host").eq(lit("a")))
            .row_groups(&metadata)
            .unwrap()
            .unwrap();
        let restricted = restrict(rows, &groups);
        assert_eq!(
            selected(restricted),
            Some(vec![(false, 1), (true, 2), (false, 2)])
        );
        let rows = RowSelection::from(vec![RowSelector::skip(3), RowSelector::select(2)]);
        assert_eq!(restrict(rows, &groups), None);
    }

    #[test]
    fn row_groups_without_statistics_are_kept() {
        let metadata = file(&[&["a"], &["c"]], false);
        let groups = host(col("host").eq(lit("z")))
            .row_groups(&metadata)
            .unwrap();
        assert_eq!(selected(groups), Some(vec![(true, 2)]));
    }

    #[test]
    fn row_groups_of_nulls_and_files_without_the_tag_hold_no_value() {
        let metadata = file(&[&["a"]], true);
        let other = TagValues::of_filters(&[col("rack").eq(lit("a"))], "rack").unwrap();
        assert_eq!(other.row_groups(&metadata).unwrap(), None);

        let tag = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![Field::new("host", tag.clone(), true)]));
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, Arc::clone(&schema), None).unwrap();
        let nulls = arrow::array::new_null_array(&tag, 3);
        writer
            .write(&RecordBatch::try_new(schema, vec![nulls]).unwrap())
            .unwrap();
        writer.close().unwrap();
        let metadata = ParquetMetaDataReader::new()
            .parse_and_finish(&Bytes::from(out))
            .unwrap();
        assert_eq!(
            host(col("host").eq(lit("a")))
                .row_groups(&metadata)
                .unwrap(),
            None
        );
    }

    #[test]
    fn values_longer_than_the_statistics_keep_their_row_groups() {
        let long = |c: char| c.to_string().repeat(100);
        let (a, b, c) = (long('a'), long('b'), long('c'));
        let metadata = file(&[&[a.as_str(), b.as_str()], &[c.as_str()]], true);
        let keep = |v: &str| selected(host(col("host").eq(lit(v))).row_groups(&metadata).unwrap());
        assert_eq!(keep(&b), Some(vec![(true, 2), (false, 1)]));
        assert_eq!(keep(&c), Some(vec![(false, 2), (true, 1)]));
    }

    #[test]
    fn only_equalities_and_lists_of_strings_name_values() {
        let of = |f: Expr| TagValues::of_filters(&[f], "host");
        assert_eq!(of(col("host").not_eq(lit("a"))), None);
        assert_eq!(of(col("host").in_list(vec![lit("a")], true)), None);
        assert_eq!(of(col("rack").eq(lit("a"))), None);
        assert_eq!(of(col("host").eq(lit(1))), None);
        let dictionary =
            ScalarValue::Dictionary(Box::new(DataType::Int32), Box::new(ScalarValue::from("b")));
        assert_eq!(
            of(col("host").eq(lit(dictionary))),
            Some(host(col("host").eq(lit("b"))))
        );
        let both = TagValues::of_filters(
            &[
                col("host").in_list(vec![lit("a"), lit("b")], false),
                col("host").eq(lit("b")),
            ],
            "host",
        );
        assert_eq!(both, Some(host(col("host").eq(lit("b")))));
    }
}
