//! A partition's rows as one Parquet file, laid out for scans and size.
//!
//! The input is a deduplicated partition sorted by the table's sort key (its tags in order,
//! then time), as the ingester's buffer and the compactor's merge produce it. The file
//! records that order (`sorting_columns`),
//! keeps tags dictionary-encoded, stores floats with BYTE_STREAM_SPLIT (with zstd this is what
//! brings the TSBS data set near VictoriaMetrics' size, see LIMITS), times as deltas, and
//! writes page-level statistics and the page index so queries can skip pages by tag and time.
//! The Arrow schema is embedded, so tags read back as `Dictionary(Int32, Utf8)`.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, TimestampNanosecondType};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::Result;
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use catalog::TIME_COLUMN;

/// Rows per row group: the unit a tag's bloom filter can skip (a few series of a TSBS day),
/// and many per file, so both cores scan one file. A row group ends at the first page boundary
/// past this many rows.
const ROW_GROUP_ROWS: usize = 32 * 1024;
/// Distinct values a tag's bloom filter is sized for, per row group.
const TAG_BLOOM_NDV: u64 = 1_000;
/// A data page holds at most this many rows.
const PAGE_MAX_ROWS: usize = 4 * 1024;
/// Past this many rows a data page ends where a new series starts or an hour begins (see
/// [`PageBoundaries`]).
const PAGE_MIN_ROWS: usize = 1024;
const HOUR_NS: i64 = 3_600 * 1_000_000_000;

/// Writer settings for a partition file with this schema.
fn properties(schema: &SchemaRef, sort_key: &[Arc<str>]) -> Result<WriterProperties> {
    let sorting: Vec<SortingColumn> = key_column_indices(schema, sort_key)
        .into_iter()
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: true,
        })
        .collect();
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        // `PartitionWriter` ends row groups at page boundaries; this is only a backstop.
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS + PAGE_MAX_ROWS))
        .set_data_page_row_count_limit(PAGE_MAX_ROWS)
        .set_sorting_columns(Some(sorting));
    for field in schema.fields() {
        let column = ColumnPath::from(field.name().as_str());
        builder = match field.data_type() {
            // BYTE_STREAM_SPLIT only applies where the dictionary is off.
            DataType::Float64 => builder
                .set_column_dictionary_enabled(column.clone(), false)
                .set_column_encoding(column, Encoding::BYTE_STREAM_SPLIT),
            DataType::Timestamp(..) => builder
                .set_column_dictionary_enabled(column.clone(), false)
                .set_column_encoding(column, Encoding::DELTA_BINARY_PACKED),
            // Rows are sorted by tags in name order, so the min/max of a tag after the first
            // spans unrelated values wherever a row group crosses a series boundary; a bloom
            // filter still says whether `host = 'x'` can be in the row group.
            DataType::Dictionary(..) => builder
                .set_column_bloom_filter_enabled(column.clone(), true)
                .set_column_bloom_filter_max_ndv(column, TAG_BLOOM_NDV),
            _ => builder,
        };
    }
    Ok(builder.build())
}

/// Encodes a sorted, deduplicated partition as a Parquet file. CPU work: call it off the
/// async runtime.
pub fn encode_partition(batches: &[RecordBatch], sort_key: &[Arc<str>]) -> Result<Vec<u8>> {
    let Some(first) = batches.first() else {
        return Err(parquet::errors::ParquetError::General(
            "a partition file needs at least one batch".into(),
        ));
    };
    let mut writer = PartitionWriter::try_new(first.schema(), sort_key)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()
}

/// Writes a partition file batch by batch, as rows arrive sorted (the compactor's merge):
/// memory holds the row group being written and the encoded bytes.
pub struct PartitionWriter {
    writer: ArrowWriter<Vec<u8>>,
    /// The index of `time` in the schema.
    time: Option<usize>,
    pages: PageBoundaries,
}

impl PartitionWriter {
    pub fn try_new(schema: SchemaRef, sort_key: &[Arc<str>]) -> Result<Self> {
        let properties = properties(&schema, sort_key)?;
        let time = schema.index_of(TIME_COLUMN).ok();
        let writer = ArrowWriter::try_new(Vec::with_capacity(1 << 20), schema, Some(properties))?;
        Ok(Self {
            writer,
            time,
            pages: PageBoundaries::default(),
        })
    }

    /// Appends rows, which must continue the sort order of those before.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some(time) = self.time else {
            return self.writer.write(batch);
        };
        let Some(times) = batch
            .column(time)
            .as_primitive_opt::<TimestampNanosecondType>()
        else {
            return self.writer.write(batch);
        };
        let mut start = 0;
        for end in self.pages.starts(times.values()) {
            self.writer.write(&batch.slice(start, end - start))?;
            self.end_page()?;
            start = end;
        }
        self.writer
            .write(&batch.slice(start, batch.num_rows() - start))
    }

    /// Ends the data page of every column here, and the row group once it is full.
    fn end_page(&mut self) -> Result<()> {
        self.writer.end_data_page()?;
        if self.writer.in_progress_rows() >= ROW_GROUP_ROWS {
            self.writer.flush()?;
        }
        Ok(())
    }

    /// Bytes held: the encoded file so far and the row group being written.
    pub fn memory_size(&self) -> usize {
        self.writer.inner().len() + self.writer.memory_size()
    }

    /// The file's bytes.
    pub fn finish(self) -> Result<Vec<u8>> {
        // `into_inner` flushes the last row group and writes the footer once.
        self.writer.into_inner()
    }
}

/// Where data pages end, chosen from the rows' times as they arrive.
///
/// Queries skip pages by the min/max of `time` in the page index, so a page that spans the
/// end of one series and the start of the next (times from the first's last hour back to the
/// second's first) can be skipped by no time filter. Rows come sorted by series, then time: a
/// time that does not increase starts a new series. Once a page holds [`PAGE_MIN_ROWS`], it
/// ends where a series starts or an hour begins, so time filters on whole hours (dashboards,
/// `date_bin` windows) select whole pages; it ends at [`PAGE_MAX_ROWS`] regardless. A TSBS
/// host (a row every 10 s) gets pages of three hours, 1,080 rows.
#[derive(Debug, Default)]
struct PageBoundaries {
    /// Rows in the open page.
    rows: usize,
    /// The time of the last row.
    last: Option<i64>,
}

impl PageBoundaries {
    /// Offsets in `times`, the next rows of the file, where a new page starts.
    fn starts(&mut self, times: &[i64]) -> Vec<usize> {
        let mut starts = Vec::new();
        for (i, &time) in times.iter().enumerate() {
            if let Some(last) = self.last {
                let new_page = self.rows >= PAGE_MAX_ROWS
                    || (self.rows >= PAGE_MIN_ROWS
                        && (time <= last || time.div_euclid(HOUR_NS) != last.div_euclid(HOUR_NS)));
                if new_page {
                    starts.push(i);
                    self.rows = 0;
                }
            }
            self.rows += 1;
            self.last = Some(time);
        }
        starts
    }
}

/// Indices of the sort key's columns in `schema`: its tags in the table's sort order (tags
/// without a place in `sort_key` after, by name), then `time`.
pub fn key_column_indices(schema: &SchemaRef, sort_key: &[Arc<str>]) -> Vec<usize> {
    let tags = schema
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Dictionary(_, _)))
        .map(|f| f.name().as_str());
    let mut key: Vec<usize> = catalog::sorted_tags(tags, sort_key)
        .into_iter()
        .map(|t| schema.index_of(t).expect("a field of this schema"))
        .collect();
    if let Ok(time) = schema.index_of(TIME_COLUMN) {
        key.push(time);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Float64Array, StringDictionaryBuilder, TimestampNanosecondArray};
    use arrow::datatypes::{Field, Int32Type, Schema, TimeUnit};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};

    /// A partition's schema: `fields` (nullable `Float64`), the tag `host`, then `time`.
    fn schema(fields: &[&str]) -> SchemaRef {
        let tag = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let time = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let fields = fields
            .iter()
            .map(|name| Field::new(*name, DataType::Float64, true))
            .chain([
                Field::new("host", tag, true),
                Field::new("time", time, false),
            ]);
        Arc::new(Schema::new(fields.collect::<Vec<_>>()))
    }

    /// 20,000 rows of 50 hosts, sorted by (host, time), one sparse field.
    fn partition() -> RecordBatch {
        let schema = schema(&["f", "g"]);
        let mut rows: Vec<(String, i64, f64, Option<f64>)> = (0..20_000)
            .map(|i| {
                let g = (i % 3 == 0).then_some(1.0);
                (
                    format!("host_{:02}", i % 50),
                    (i / 50) as i64 * 10,
                    i as f64 * 0.5,
                    g,
                )
            })
            .collect();
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut host = StringDictionaryBuilder::<Int32Type>::new();
        rows.iter().for_each(|r| host.append_value(&r.0));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(rows.iter().map(|r| Some(r.2)).collect::<Float64Array>()),
            Arc::new(rows.iter().map(|r| r.3).collect::<Float64Array>()),
            Arc::new(host.finish()),
            Arc::new(TimestampNanosecondArray::from_iter_values(
                rows.iter().map(|r| r.1),
            )),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn partition_files_record_their_sort_order_and_carry_a_page_index() {
        let sorted = partition();
        let bytes = Bytes::from(encode_partition(std::slice::from_ref(&sorted), &[]).unwrap());
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(&bytes)
            .unwrap();
        assert_eq!(metadata.file_metadata().num_rows(), 20_000);
        let host = sorted.schema().index_of("host").unwrap() as i32;
        let time = sorted.schema().index_of("time").unwrap() as i32;
        let order: Vec<i32> = metadata
            .row_group(0)
            .sorting_columns()
            .unwrap()
            .iter()
            .map(|c| c.column_idx)
            .collect();
        assert_eq!(order, [host, time]);
        assert!(metadata.column_index().is_some() && metadata.offset_index().is_some());
        let f = sorted.schema().index_of("f").unwrap();
        let encodings = metadata
            .row_group(0)
            .column(f)
            .encodings()
            .collect::<Vec<_>>();
        assert!(
            encodings.contains(&Encoding::BYTE_STREAM_SPLIT),
            "{encodings:?}"
        );
    }

    #[test]
    fn partition_files_read_back_with_the_data_model_types_and_rows() {
        let sorted = partition();
        // Written in pieces, as the compactor writes a merge.
        let mut writer = PartitionWriter::try_new(sorted.schema(), &[]).unwrap();
        for start in (0..sorted.num_rows()).step_by(7_000) {
            let len = 7_000.min(sorted.num_rows() - start);
            writer.write(&sorted.slice(start, len)).unwrap();
        }
        let bytes = Bytes::from(writer.finish().unwrap());
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.collect::<std::result::Result<_, _>>().unwrap();
        assert_eq!(batches[0].schema(), sorted.schema());
        let back = arrow::compute::concat_batches(&sorted.schema(), &batches).unwrap();
        assert_eq!(back, sorted);
    }

    /// Float64 values with awkward bit patterns: NaN payloads, signed zeros, infinities,
    /// subnormals and pseudo-random bits.
    fn awkward_floats(n: usize) -> Vec<f64> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|i| match i % 7 {
                0 => f64::from_bits(0x7FF8_0000_0000_0000 | i as u64),
                1 => -0.0,
                2 => f64::NEG_INFINITY,
                3 => f64::from_bits(i as u64 + 1),
                _ => {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    f64::from_bits(x)
                }
            })
            .collect()
    }

    /// The vendored parquet splits and joins 8-byte values with SSE2 (vendor/README.md): the
    /// stored bytes must be the format's byte streams, checked here against a plain transpose
    /// of an uncompressed single-page column.
    #[test]
    fn float_columns_are_stored_as_the_formats_byte_streams() {
        for n in [1, 15, 16, 17, 1000, 1037] {
            let values = awkward_floats(n);
            let schema = Arc::new(Schema::new(vec![Field::new("f", DataType::Float64, false)]));
            let properties = WriterProperties::builder()
                .set_dictionary_enabled(false)
                .set_encoding(Encoding::BYTE_STREAM_SPLIT)
                .set_compression(Compression::UNCOMPRESSED)
                .set_statistics_enabled(EnabledStatistics::None)
                .build();
            let column: ArrayRef = Arc::new(Float64Array::from(values.clone()));
            let batch = RecordBatch::try_new(schema.clone(), vec![column]).unwrap();
            let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(properties)).unwrap();
            writer.write(&batch).unwrap();
            let file = Bytes::from(writer.into_inner().unwrap());
            let metadata = ParquetMetaDataReader::new()
                .parse_and_finish(&file)
                .unwrap();
            let (start, len) = metadata.row_group(0).column(0).byte_range();
            // One page, no levels (a required column): its values end the column chunk.
            let chunk = file.slice(start as usize..(start + len) as usize);
            let stored = &chunk[chunk.len() - 8 * n..];
            let mut expected = vec![0u8; 8 * n];
            for (i, v) in values.iter().enumerate() {
                for (j, byte) in v.to_le_bytes().into_iter().enumerate() {
                    expected[j * n + i] = byte;
                }
            }
            assert_eq!(stored, &expected[..], "{n} values");
        }
    }

    /// Float fields read back bit for bit, whole or from any row on, in batches of any size
    /// (the decoder starts mid-page and mid-block).
    #[test]
    fn float_fields_read_back_bit_for_bit_from_any_row() {
        use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
        let sorted = partition();
        let rows = sorted.num_rows();
        let f = sorted.schema().index_of("f").unwrap();
        let g = sorted.schema().index_of("g").unwrap();
        let awkward: ArrayRef = Arc::new(Float64Array::from(awkward_floats(rows)));
        let sparse = sorted
            .column(g)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        let sparse_awkward: ArrayRef = Arc::new(
            sparse
                .iter()
                .zip(awkward_floats(rows))
                .map(|(v, a)| v.map(|_| a))
                .collect::<Float64Array>(),
        );
        let mut columns = sorted.columns().to_vec();
        columns[f] = awkward;
        columns[g] = sparse_awkward;
        let batch = RecordBatch::try_new(sorted.schema(), columns).unwrap();
        let bytes = Bytes::from(encode_partition(std::slice::from_ref(&batch), &[]).unwrap());
        let bits = |a: &ArrayRef| -> Vec<Option<u64>> {
            let a = a.as_any().downcast_ref::<Float64Array>().unwrap();
            a.iter().map(|v| v.map(f64::to_bits)).collect()
        };
        let selectors = vec![
            RowSelector::skip(5),
            RowSelector::select(19),
            RowSelector::skip(1_000),
            RowSelector::select(2_077),
            RowSelector::skip(3),
            RowSelector::select(rows - 5 - 19 - 1_000 - 2_077 - 3),
        ];
        let kept: Vec<bool> = selectors
            .iter()
            .flat_map(|s| std::iter::repeat_n(!s.skip, s.row_count))
            .collect();
        // Batches of 7 decode in the scalar tail only; batches of 1,000 after `skip(5)` run the
        // 16-value SSE2 blocks from odd offsets and across page boundaries.
        for (batch_size, selection) in [
            (8_192, None),
            (7, Some(selectors.clone())),
            (1_000, Some(selectors.clone())),
        ] {
            let mut builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                .unwrap()
                .with_batch_size(batch_size);
            let selected = selection.is_some();
            if let Some(selection) = selection {
                builder = builder.with_row_selection(RowSelection::from(selection));
            }
            let batches: Vec<RecordBatch> = builder
                .build()
                .unwrap()
                .collect::<std::result::Result<_, _>>()
                .unwrap();
            let back = arrow::compute::concat_batches(&batch.schema(), &batches).unwrap();
            let indices = arrow::array::UInt32Array::from_iter_values(
                (0..rows)
                    .filter(|&i| !selected || kept[i])
                    .map(|i| i as u32),
            );
            let expected = arrow::compute::take_record_batch(&batch, &indices).unwrap();
            for column in [f, g] {
                assert_eq!(bits(back.column(column)), bits(expected.column(column)));
            }
        }
    }

    const SECOND: i64 = 1_000_000_000;

    /// Series sorted as a partition is, with one field: `(host, first time, step, rows)`,
    /// one row every `step` ns.
    fn series(hosts: &[(&str, i64, i64, i64)]) -> RecordBatch {
        let schema = schema(&["f"]);
        let mut host = StringDictionaryBuilder::<Int32Type>::new();
        let mut times = Vec::new();
        for &(name, first, step, rows) in hosts {
            for i in 0..rows {
                host.append_value(name);
                times.push(first + i * step);
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from_iter_values(
                (0..times.len()).map(|i| i as f64),
            )),
            Arc::new(host.finish()),
            Arc::new(TimestampNanosecondArray::from_iter_values(times)),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// Writes `rows` through a `PartitionWriter` in batches of 777 rows and returns, per row
    /// group, its row count and the first row of each data page (the same in every column).
    fn page_starts(rows: &RecordBatch) -> Vec<(i64, Vec<i64>)> {
        let mut writer = PartitionWriter::try_new(rows.schema(), &[]).unwrap();
        for start in (0..rows.num_rows()).step_by(777) {
            writer
                .write(&rows.slice(start, 777.min(rows.num_rows() - start)))
                .unwrap();
        }
        let bytes = Bytes::from(writer.finish().unwrap());
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(&bytes)
            .unwrap();
        let offsets = metadata.offset_index().unwrap();
        metadata
            .row_groups()
            .iter()
            .zip(offsets)
            .map(|(row_group, columns)| {
                let starts: Vec<Vec<i64>> = columns
                    .iter()
                    .map(|c| {
                        c.page_locations()
                            .iter()
                            .map(|p| p.first_row_index)
                            .collect()
                    })
                    .collect();
                assert!(starts.iter().all(|s| *s == starts[0]), "{starts:?}");
                (row_group.num_rows(), starts[0].clone())
            })
            .collect()
    }

    #[test]
    fn data_pages_start_where_a_series_starts_or_an_hour_begins() {
        const DAY: i64 = 8_640; // a row every 10 s
        let ten_s = 10 * SECOND;
        let rows = series(&[
            ("a", 0, ten_s, DAY),
            // 23:30 to midnight: starts a page inside a's last hour, and is too short for a
            // page of its own.
            ("b", 23 * 3_600 * SECOND + 1_800 * SECOND, ten_s, 180),
            ("c", 0, ten_s, DAY),
            ("d", 0, ten_s, DAY),
            ("e", 0, ten_s, DAY),
        ]);
        // a: eight pages of three hours (1,080 rows). b's page goes on into c until c's 03:00,
        // then c has pages of three hours; d and e start pages of their own. The first row
        // group ends at the first page boundary past 32,768 rows: e's 21:00.
        let a: Vec<i64> = (0..8).map(|i| i * 1_080).collect();
        let c: Vec<i64> = (0..7).map(|i| 9_900 + i * 1_080).collect();
        let d: Vec<i64> = (0..8).map(|i| 17_460 + i * 1_080).collect();
        let e: Vec<i64> = (0..7).map(|i| 26_100 + i * 1_080).collect();
        let first: Vec<i64> = [a, vec![8_640], c, d, e].concat();
        assert_eq!(page_starts(&rows), vec![(33_660, first), (1_080, vec![0])]);
    }

    #[test]
    fn data_pages_hold_at_most_their_row_limit() {
        // Two rows a second for three hours: 7,200 rows an hour.
        let rows = series(&[("a", 0, SECOND / 2, 21_600)]);
        let starts = page_starts(&rows);
        assert_eq!(
            starts,
            vec![(21_600, vec![0, 4_096, 7_200, 11_296, 14_400, 18_496])]
        );
    }

    /// Writes `host` with dictionary, bloom filter and page statistics on, as a tag is written.
    fn encode_host_column(batches: &[ArrayRef]) -> Bytes {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "host",
            batches[0].data_type().clone(),
            true,
        )]));
        let properties = WriterProperties::builder()
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_data_page_row_count_limit(PAGE_MAX_ROWS)
            .set_bloom_filter_enabled(true)
            .build();
        let mut writer =
            ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties)).unwrap();
        for column in batches {
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::clone(column)]).unwrap();
            writer.write(&batch).unwrap();
        }
        Bytes::from(writer.into_inner().unwrap())
    }

    /// The parts of a one-column file that do not depend on the Arrow input type: every row
    /// group's column chunk (dictionary page and data pages), its statistics and its bloom filter.
    fn column_chunks(file: &Bytes) -> Vec<(Bytes, String, Bytes)> {
        let metadata = ParquetMetaDataReader::new().parse_and_finish(file).unwrap();
        metadata
            .row_groups()
            .iter()
            .map(|row_group| {
                let column = row_group.column(0);
                let (start, len) = column.byte_range();
                let bloom_start = column.bloom_filter_offset().unwrap() as usize;
                let bloom_len = column.bloom_filter_length().unwrap() as usize;
                (
                    file.slice(start as usize..(start + len) as usize),
                    format!("{:?}", column.statistics()),
                    file.slice(bloom_start..bloom_start + bloom_len),
                )
            })
            .collect()
    }

    /// The vendored parquet writer encodes a dictionary array value by value rather than row by
    /// row (vendor/README.md); the file must come out exactly as for the same plain strings.
    #[test]
    fn tag_columns_encode_exactly_as_the_same_plain_strings() {
        let hosts: Vec<Option<String>> = (0..50_000)
            .map(|i| (i % 97 != 5).then(|| format!("host_{:03}", (i / 700) % 90)))
            .collect();
        let mut dictionary = StringDictionaryBuilder::<Int32Type>::new();
        // Values the rows never use, so the dictionary has unused entries.
        dictionary.append_value("unused_b");
        dictionary.append_value("unused_a");
        hosts
            .iter()
            .for_each(|h| dictionary.append_option(h.as_deref()));
        let dictionary: ArrayRef = Arc::new(dictionary.finish().slice(2, hosts.len()));
        let plain: ArrayRef = Arc::new(
            hosts
                .iter()
                .map(|h| h.as_deref())
                .collect::<arrow::array::StringArray>(),
        );

        // Batches of many rows (the per-value path), and of 3 rows over a 90-value dictionary
        // (the row-by-row path), across page and row-group boundaries.
        let cuts = [(0, 20_000), (20_000, 3), (20_003, 3), (20_006, 29_994)];
        let pieces = |array: &ArrayRef| -> Vec<ArrayRef> {
            cuts.iter()
                .map(|&(start, len)| array.slice(start, len))
                .collect()
        };
        let from_dictionary = column_chunks(&encode_host_column(&pieces(&dictionary)));
        let from_plain = column_chunks(&encode_host_column(&pieces(&plain)));
        assert!(!from_plain.is_empty());
        assert_eq!(from_dictionary, from_plain);
    }
}
