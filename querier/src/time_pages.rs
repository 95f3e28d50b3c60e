//! Time filters answered from a file's page index instead of row by row.
//!
//! Files end data pages where a series starts and on hour boundaries (`parquet_file`'s
//! layout), so a filter on whole hours splits a file's pages into those entirely inside the
//! range and those entirely outside it. DataFusion would still evaluate the filter on every
//! row of the pages it keeps, and cache and filter the `time` column to do so: a fifth of the
//! CPU of a query over 12 hours of all hosts. Here a file's pages are sorted by the `time`
//! column's page index into three sets; the scan reads the pages inside the range with no time
//! filter at all, evaluates it only on the pages that straddle a bound, and skips the rest.

use std::ops::Range;

use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use parquet::basic::{LogicalType, TimeUnit};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::page_index::column_index::ColumnIndexMetaData;

use catalog::TIME_COLUMN;

/// An inclusive range of `time`, in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeRange {
    pub(crate) min: i64,
    pub(crate) max: i64,
}

impl TimeRange {
    /// The range `filter` keeps, if `filter` is a comparison of the `time` column with a
    /// nanosecond timestamp (`time >= '2016-01-01T06:00:00Z'` once DataFusion has simplified
    /// it) and so holds for a row exactly when its time is in the range.
    pub(crate) fn of_filter(filter: &Expr) -> Option<Self> {
        let (op, value) = time_comparison(filter)?;
        // Other units would compare through a cast: leave those to DataFusion.
        let ScalarValue::TimestampNanosecond(Some(ns), _) = value else {
            return None;
        };
        let ns = *ns;
        let (min, max) = match op {
            Operator::Eq => (ns, ns),
            Operator::GtEq => (ns, i64::MAX),
            Operator::Gt => (ns.checked_add(1)?, i64::MAX),
            Operator::LtEq => (i64::MIN, ns),
            Operator::Lt => (i64::MIN, ns.checked_sub(1)?),
            _ => return None,
        };
        Some(Self { min, max })
    }

    /// The range every filter of `filters` that [`Self::of_filter`] reads keeps, if any does.
    pub(crate) fn of_filters(filters: &[Expr]) -> Option<Self> {
        filters
            .iter()
            .filter_map(Self::of_filter)
            .reduce(|a, b| Self {
                min: a.min.max(b.min),
                max: a.max.min(b.max),
            })
    }
}

/// `expr` as `time <op> literal`, if it compares the `time` column with a literal (on either
/// side: `'2016-01-01' <= time` is `time >= '2016-01-01'`).
pub(crate) fn time_comparison(expr: &Expr) -> Option<(Operator, &ScalarValue)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
        return None;
    };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) if c.name == TIME_COLUMN => Some((*op, v)),
        (Expr::Literal(v, _), Expr::Column(c)) if c.name == TIME_COLUMN => Some((op.swap()?, v)),
        _ => None,
    }
}

/// A file's rows in `range`, page by page.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct PageSplit {
    /// The pages whose times all lie in the range: no filter needed.
    pub(crate) inside: Option<RowSelection>,
    /// The pages with times both in and out of the range: these need the filter.
    pub(crate) straddling: Option<RowSelection>,
}

/// Sorts the pages of a file by how their times fall against `range`, from the page index of
/// its `time` column. `None` when the file has no page index for `time` (or stores it in
/// another unit): then every row needs the filter.
pub(crate) fn split_pages(metadata: &ParquetMetaData, range: TimeRange) -> Option<PageSplit> {
    let schema = metadata.file_metadata().schema_descr();
    let time = schema
        .columns()
        .iter()
        .position(|c| c.path().string() == TIME_COLUMN)?;
    let nanos = matches!(
        schema.column(time).logical_type_ref(),
        Some(LogicalType::Timestamp(t)) if t.unit == TimeUnit::NANOS
    );
    if !nanos {
        return None;
    }
    let (column_index, offset_index) = (metadata.column_index()?, metadata.offset_index()?);
    let mut inside = Vec::new();
    let mut straddling = Vec::new();
    for (row_group, (columns, offsets)) in metadata
        .row_groups()
        .iter()
        .zip(column_index.iter().zip(offset_index))
    {
        let ColumnIndexMetaData::INT64(index) = columns.get(time)? else {
            return None;
        };
        let pages = offsets.get(time)?.page_locations();
        let rows = row_group.num_rows();
        for (page, location) in pages.iter().enumerate() {
            let end = pages
                .get(page + 1)
                .map_or(rows, |next| next.first_row_index);
            let count = usize::try_from(end - location.first_row_index).ok()?;
            let place = match (index.min_value(page), index.max_value(page)) {
                (Some(&min), Some(&max)) if max < range.min || min > range.max => Place::Outside,
                // A null time cannot match: only a page without nulls is wholly inside.
                (Some(&min), Some(&max))
                    if min >= range.min
                        && max <= range.max
                        && index.null_count(page) == Some(0) =>
                {
                    Place::Inside
                }
                // A page of null times, or without statistics, is read with the filter.
                _ => Place::Straddling,
            };
            inside.push(selector(count, place == Place::Inside));
            straddling.push(selector(count, place == Place::Straddling));
        }
    }
    let selecting = |selectors: Vec<RowSelector>| {
        let selection = RowSelection::from(selectors);
        selection.selects_any().then_some(selection)
    };
    Some(PageSplit {
        inside: selecting(inside),
        straddling: selecting(straddling),
    })
}

/// The bytes from the first to the last row group of `metadata` that hold rows of `selection`.
///
/// Given as a scan's file range, DataFusion opens only those row groups (it keeps a row group
/// whose first page starts in the range) and divides the scan among partitions by these bytes,
/// not the whole file's. (It still halves a range of 1 MiB or more, so a query that needs one
/// row group of a 58 MB file opens the file in two partitions, one of which reads nothing.)
pub(crate) fn row_group_bytes(
    metadata: &ParquetMetaData,
    selection: &RowSelection,
) -> Option<Range<u64>> {
    let mut selected = Vec::new();
    let mut row = 0;
    for selector in selection.iter() {
        if !selector.skip {
            selected.push(row..row + selector.row_count);
        }
        row += selector.row_count;
    }
    let mut bytes: Option<Range<u64>> = None;
    let mut next = selected.iter().peekable();
    let mut first_row = 0;
    for row_group in metadata.row_groups() {
        let rows = first_row..first_row + usize::try_from(row_group.num_rows()).ok()?;
        first_row = rows.end;
        // Selected rows that end before this row group are behind us.
        while next.next_if(|r| r.end <= rows.start).is_some() {}
        let holds_selected_rows = next.peek().is_some_and(|r| r.start < rows.end);
        if !holds_selected_rows {
            continue;
        }
        let chunks = row_group.columns().iter().map(|c| {
            let (start, length) = c.byte_range();
            start..start + length
        });
        let start = chunks.clone().map(|c| c.start).min()?;
        let end = chunks.map(|c| c.end).max()?;
        bytes = Some(match bytes {
            None => start..end,
            Some(b) => b.start.min(start)..b.end.max(end),
        });
    }
    bytes
}

#[derive(PartialEq)]
enum Place {
    Inside,
    Outside,
    Straddling,
}

fn selector(rows: usize, select: bool) -> RowSelector {
    if select {
        RowSelector::select(rows)
    } else {
        RowSelector::skip(rows)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{RecordBatch, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit as ArrowTimeUnit};
    use bytes::Bytes;
    use datafusion::logical_expr::{col, lit};
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
    use parquet::file::properties::{EnabledStatistics, WriterProperties};

    use super::*;

    fn ts(ns: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(Some(ns), None))
    }

    #[test]
    fn comparisons_of_time_with_a_timestamp_keep_an_inclusive_range() {
        let range = |e: Expr| TimeRange::of_filter(&e).map(|r| (r.min, r.max));
        let time = || col(TIME_COLUMN);
        assert_eq!(range(time().gt_eq(ts(10))), Some((10, i64::MAX)));
        assert_eq!(range(time().gt(ts(10))), Some((11, i64::MAX)));
        assert_eq!(range(time().lt(ts(10))), Some((i64::MIN, 9)));
        assert_eq!(range(time().lt_eq(ts(10))), Some((i64::MIN, 10)));
        assert_eq!(range(time().eq(ts(10))), Some((10, 10)));
        assert_eq!(range(ts(10).gt(time())), Some((i64::MIN, 9)));
        // What the range cannot say exactly stays with DataFusion.
        assert_eq!(range(time().not_eq(ts(10))), None);
        assert_eq!(range(col("host").gt_eq(ts(10))), None);
        assert_eq!(
            range(time().gt_eq(lit(ScalarValue::TimestampMillisecond(Some(1), None)))),
            None
        );
        assert_eq!(range(time().gt_eq(ts(1)).and(time().lt(ts(5)))), None);
        let filters = [
            time().gt_eq(ts(10)),
            col("host").eq(lit("a")),
            time().lt(ts(20)),
        ];
        assert_eq!(
            TimeRange::of_filters(&filters),
            Some(TimeRange { min: 10, max: 19 })
        );
    }

    /// Two row groups of two 100-row pages; page `p` holds times `100p ..= 100p + 99`.
    fn four_pages() -> ParquetMetaData {
        let schema = Arc::new(Schema::new(vec![Field::new(
            TIME_COLUMN,
            DataType::Timestamp(ArrowTimeUnit::Nanosecond, None),
            false,
        )]));
        let properties = WriterProperties::builder()
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_write_batch_size(100)
            .set_data_page_row_count_limit(100)
            .set_max_row_group_row_count(Some(200))
            .build();
        let mut writer =
            ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties)).unwrap();
        let times = TimestampNanosecondArray::from_iter_values(0..400);
        writer
            .write(&RecordBatch::try_new(schema, vec![Arc::new(times)]).unwrap())
            .unwrap();
        let bytes = Bytes::from(writer.into_inner().unwrap());
        ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(&bytes)
            .unwrap()
    }

    fn rows(selectors: &[(bool, usize)]) -> Option<RowSelection> {
        Some(RowSelection::from(
            selectors
                .iter()
                .map(|&(select, n)| selector(n, select))
                .collect::<Vec<_>>(),
        ))
    }

    #[test]
    fn pages_inside_the_range_are_read_without_a_filter_and_straddling_pages_with_one() {
        let metadata = four_pages();
        // Page 0 is outside, 1 and 3 straddle a bound, 2 is inside.
        let split = split_pages(&metadata, TimeRange { min: 150, max: 349 }).unwrap();
        assert_eq!(
            split,
            PageSplit {
                inside: rows(&[(false, 200), (true, 100), (false, 100)]),
                straddling: rows(&[(false, 100), (true, 100), (false, 100), (true, 100)]),
            }
        );
        // Bounds on page boundaries: every page is inside or outside.
        let split = split_pages(&metadata, TimeRange { min: 100, max: 299 }).unwrap();
        assert_eq!(
            split,
            PageSplit {
                inside: rows(&[(false, 100), (true, 200), (false, 100)]),
                straddling: None,
            }
        );
        let split = split_pages(
            &metadata,
            TimeRange {
                min: 400,
                max: i64::MAX,
            },
        )
        .unwrap();
        assert_eq!(split, PageSplit::default());
    }

    #[test]
    fn a_selection_spans_the_bytes_of_the_row_groups_holding_its_rows() {
        let metadata = four_pages();
        let bytes_of = |row_group: usize| {
            let chunk = metadata.row_group(row_group).column(0).byte_range();
            chunk.0..chunk.0 + chunk.1
        };
        let (first, second) = (bytes_of(0), bytes_of(1));
        assert!(first.end <= second.start);
        let span =
            |selectors: &[(bool, usize)]| row_group_bytes(&metadata, &rows(selectors).unwrap());
        // Rows of the second row group only, then of the first only (a selection may stop
        // short of the last row).
        assert_eq!(span(&[(false, 250), (true, 10)]), Some(second.clone()));
        assert_eq!(span(&[(false, 199), (true, 1)]), Some(first.clone()));
        // The last row of the first and the first of the second: both.
        assert_eq!(
            span(&[(false, 199), (true, 2), (false, 199)]),
            Some(first.start..second.end)
        );
        assert_eq!(span(&[(false, 400)]), None);
    }
}
