//! Query results as bytes: JSON, JSON lines, CSV, a pretty table, or Parquet.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use axum::http::HeaderValue;

use crate::http::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    Json,
    Jsonl,
    Csv,
    Pretty,
    Parquet,
}

impl OutputFormat {
    /// The `format` parameter if given, else the `Accept` header, else JSON.
    pub(crate) fn choose(
        param: Option<&str>,
        accept: Option<&HeaderValue>,
    ) -> Result<Self, ApiError> {
        if let Some(name) = param.filter(|p| !p.is_empty()) {
            return Self::from_name(name).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown format `{name}`: use json, jsonl, csv, pretty or parquet"
                ))
            });
        }
        let accept = accept.and_then(|v| v.to_str().ok()).unwrap_or("");
        for media in accept.split(',') {
            let media = media.split(';').next().unwrap_or("").trim();
            let format = match media {
                "application/json" => Self::Json,
                "application/jsonl" | "application/x-ndjson" | "application/jsonlines" => {
                    Self::Jsonl
                }
                "text/csv" => Self::Csv,
                "text/plain" => Self::Pretty,
                "application/vnd.apache.parquet" | "application/parquet" => Self::Parquet,
                _ => continue,
            };
            return Ok(format);
        }
        Ok(Self::Json)
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "json" => Self::Json,
            "jsonl" => Self::Jsonl,
            "csv" => Self::Csv,
            "pretty" => Self::Pretty,
            "parquet" => Self::Parquet,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
            Self::Pretty => "pretty",
            Self::Parquet => "parquet",
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Jsonl => "application/jsonl",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Pretty => "text/plain; charset=utf-8",
            Self::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// Encodes a whole result at once (small results such as the database list).
    pub(crate) fn encode(
        self,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<Vec<u8>, ArrowError> {
        let mut out = Vec::new();
        let mut encoder = self.encoder(schema)?;
        for b in batches {
            encoder.write(b, &mut out)?;
        }
        encoder.finish(&mut out)?;
        Ok(out)
    }

    /// An encoder that turns batches into bytes one at a time, so a large result streams.
    pub(crate) fn encoder(self, schema: &SchemaRef) -> Result<Encoder, ArrowError> {
        let state = match self {
            Self::Json => EncoderState::Json {
                rows_written: false,
            },
            Self::Jsonl => EncoderState::Jsonl,
            Self::Csv => EncoderState::Csv {
                header_written: false,
            },
            // A table's column widths depend on every row: pretty output is for people and
            // is built whole.
            Self::Pretty => EncoderState::Pretty {
                batches: Vec::new(),
            },
            Self::Parquet => {
                let mut props = parquet::file::properties::WriterProperties::builder()
                    // Snappy, pyarrow's default: results are read once, soon, often locally;
                    // zstd cost ~20 ms of CPU per 5 MB of result for little gain on the wire.
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    // Row groups are what the writer buffers before bytes can leave.
                    .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS))
                    // A result is read whole, once: statistics and dictionaries of floats and
                    // times cost half the encoding CPU (profiled) and save nothing. Columns
                    // that are dictionaries (tags) stay dictionary-encoded.
                    .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
                    .set_dictionary_enabled(false);
                for field in schema.fields() {
                    if matches!(
                        field.data_type(),
                        arrow::datatypes::DataType::Dictionary(..)
                    ) {
                        props = props.set_column_dictionary_enabled(
                            parquet::schema::types::ColumnPath::from(field.name().as_str()),
                            true,
                        );
                    }
                }
                let props = props.build();
                let writer =
                    parquet::arrow::ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))
                        .map_err(parquet_error)?;
                EncoderState::Parquet(Box::new(writer))
            }
        };
        Ok(Encoder {
            schema: schema.clone(),
            state,
        })
    }
}

/// Rows per Parquet row group in query results.
const PARQUET_ROW_GROUP_ROWS: usize = 64 * 1024;

fn parquet_error(e: parquet::errors::ParquetError) -> ArrowError {
    ArrowError::ExternalError(Box::new(e))
}

/// Streams one result in one format: `write` each batch, then `finish`; each call appends
/// the bytes that are ready to `out`.
pub(crate) struct Encoder {
    schema: SchemaRef,
    state: EncoderState,
}

enum EncoderState {
    Json { rows_written: bool },
    Jsonl,
    Csv { header_written: bool },
    Pretty { batches: Vec<RecordBatch> },
    Parquet(Box<parquet::arrow::ArrowWriter<Vec<u8>>>),
}

fn csv_writer(out: &mut Vec<u8>, header: bool) -> arrow::csv::Writer<&mut Vec<u8>> {
    arrow::csv::WriterBuilder::new()
        .with_header(header)
        .with_timestamp_format("%Y-%m-%dT%H:%M:%S%.f".to_owned())
        .build(out)
}

impl Encoder {
    pub(crate) fn write(
        &mut self,
        batch: &RecordBatch,
        out: &mut Vec<u8>,
    ) -> Result<(), ArrowError> {
        match &mut self.state {
            EncoderState::Json { rows_written } => {
                // JSON lines have no raw newlines inside (strings are escaped), so each line
                // is one object of the array.
                let mut lines = Vec::new();
                let mut w = arrow::json::LineDelimitedWriter::new(&mut lines);
                w.write(batch)?;
                w.finish()?;
                for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    out.push(if *rows_written { b',' } else { b'[' });
                    out.extend_from_slice(line);
                    *rows_written = true;
                }
            }
            EncoderState::Jsonl => {
                let mut w = arrow::json::LineDelimitedWriter::new(out);
                w.write(batch)?;
                w.finish()?;
            }
            EncoderState::Csv { header_written } => {
                csv_writer(out, !*header_written).write(batch)?;
                *header_written = true;
            }
            EncoderState::Pretty { batches } => batches.push(batch.clone()),
            EncoderState::Parquet(w) => {
                w.write(batch).map_err(parquet_error)?;
                // Row groups the writer has flushed can leave now.
                out.append(w.inner_mut());
            }
        }
        Ok(())
    }

    pub(crate) fn finish(self, out: &mut Vec<u8>) -> Result<(), ArrowError> {
        match self.state {
            EncoderState::Json { rows_written } => {
                out.extend_from_slice(if rows_written { b"]" } else { b"[]" });
            }
            EncoderState::Jsonl => {}
            EncoderState::Csv { header_written } => {
                if !header_written {
                    // The header alone, so a client sees the columns of an empty result.
                    csv_writer(out, true).write(&RecordBatch::new_empty(self.schema))?;
                }
            }
            EncoderState::Pretty { mut batches } => {
                if batches.is_empty() {
                    batches.push(RecordBatch::new_empty(self.schema));
                }
                let table = arrow::util::pretty::pretty_format_batches(&batches)?;
                out.extend_from_slice(format!("{table}\n").as_bytes());
            }
            EncoderState::Parquet(mut w) => {
                w.finish().map_err(parquet_error)?;
                out.append(w.inner_mut());
            }
        }
        Ok(())
    }
}
