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

    pub(crate) fn encode(
        self,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<Vec<u8>, ArrowError> {
        let mut out = Vec::new();
        match self {
            Self::Json => {
                let mut w = arrow::json::ArrayWriter::new(&mut out);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
                drop(w);
                if out.is_empty() {
                    out.extend_from_slice(b"[]");
                }
            }
            Self::Jsonl => {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            Self::Csv => {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .with_timestamp_format("%Y-%m-%dT%H:%M:%S%.f".to_owned())
                    .build(&mut out);
                if batches.is_empty() {
                    // The header alone, so a client sees the columns of an empty result.
                    w.write(&RecordBatch::new_empty(schema.clone()))?;
                }
                for b in batches {
                    w.write(b)?;
                }
            }
            Self::Pretty => {
                let table = if batches.is_empty() {
                    arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(
                        schema.clone(),
                    )])?
                } else {
                    arrow::util::pretty::pretty_format_batches(batches)?
                };
                out = format!("{table}\n").into_bytes();
            }
            Self::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build();
                let mut w =
                    parquet::arrow::ArrowWriter::try_new(&mut out, schema.clone(), Some(props))
                        .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                for b in batches {
                    w.write(b)
                        .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                }
                w.close()
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
            }
        }
        Ok(out)
    }
}
