//! What a ticket or prepared-statement handle carries, and the JSON ticket of the influxdb3
//! clients.
//!
//! Handles are self-contained so that any querier can answer any call and a client that goes
//! away leaves nothing behind: the database, the SQL and, once a client has bound them, the
//! parameter row as an Arrow IPC stream. Layout: `TRB1`, then the database and the SQL each as
//! a little-endian `u32` length and UTF-8 bytes, then the IPC stream (absent when unbound).

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::{BufMut, Bytes, BytesMut};
use datafusion::scalar::ScalarValue;
use serde::Deserialize;
use tonic::Status;

use crate::QueryParams;

const MAGIC: &[u8; 4] = b"TRB1";

/// A statement with the database it runs against and, once bound, its parameters.
#[derive(Debug, Clone)]
pub(super) struct StatementHandle {
    pub(super) database: String,
    pub(super) sql: String,
    params: Option<RecordBatch>,
}

impl StatementHandle {
    pub(super) fn new(database: String, sql: String) -> Self {
        Self {
            database,
            sql,
            params: None,
        }
    }

    /// The same statement with `params` (one row; a column per placeholder) bound.
    pub(super) fn with_params(self, params: RecordBatch) -> Result<Self, Status> {
        if params.num_rows() != 1 {
            return Err(Status::invalid_argument(format!(
                "bind exactly one row of parameters to a prepared statement (got {}); run it once per row",
                params.num_rows()
            )));
        }
        Ok(Self {
            params: Some(params),
            ..self
        })
    }

    pub(super) fn encode(&self) -> Result<Bytes, Status> {
        let mut out = BytesMut::with_capacity(12 + self.database.len() + self.sql.len());
        out.put_slice(MAGIC);
        for part in [&self.database, &self.sql] {
            let len = u32::try_from(part.len())
                .map_err(|_| Status::invalid_argument("the statement is longer than 4 GiB"))?;
            out.put_u32_le(len);
            out.put_slice(part.as_bytes());
        }
        if let Some(params) = &self.params {
            let ipc = || {
                let mut writer = StreamWriter::try_new(Vec::new(), &params.schema())?;
                writer.write(params)?;
                writer.into_inner()
            };
            let ipc = ipc()
                .map_err(|e| Status::internal(format!("cannot encode the parameters: {e}")))?;
            out.put_slice(&ipc);
        }
        Ok(out.freeze())
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, Status> {
        let invalid = || {
            Status::invalid_argument(
                "the statement handle or ticket was not issued by this server; prepare or plan the statement again",
            )
        };
        let mut rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(invalid)?;
        let mut text = || -> Result<String, Status> {
            let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(invalid)?;
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return Err(invalid());
            }
            let (s, tail) = tail.split_at(len);
            rest = tail;
            String::from_utf8(s.to_vec()).map_err(|_| invalid())
        };
        let database = text()?;
        let sql = text()?;
        let params = if rest.is_empty() {
            None
        } else {
            let mut reader = StreamReader::try_new(rest, None).map_err(|_| invalid())?;
            Some(reader.next().ok_or_else(invalid)?.map_err(|_| invalid())?)
        };
        Ok(Self {
            database,
            sql,
            params,
        })
    }

    /// The bound parameters in the querier's form: by column name for `$name` placeholders,
    /// by column order for `$1` or `?`.
    pub(super) fn params(&self) -> Result<QueryParams, Status> {
        let Some(batch) = &self.params else {
            return Ok(QueryParams::None);
        };
        let columns = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(field, column)| {
                let value = ScalarValue::try_from_array(column, 0).map_err(|e| {
                    Status::invalid_argument(format!(
                        "parameter `{}` cannot be used: {e}",
                        field.name()
                    ))
                })?;
                Ok((field.name().clone(), value))
            })
            .collect::<Result<_, Status>>()?;
        Ok(QueryParams::Columns(columns))
    }
}

/// The ticket the influxdb3 Python, Go and Java clients send to `DoGet` without asking for
/// flight info first: `{"database", "sql_query", "query_type", "params"}`.
#[derive(Debug, Deserialize)]
pub(super) struct JsonTicket {
    #[serde(alias = "namespace_name", alias = "bucket")]
    pub(super) database: String,
    pub(super) sql_query: String,
    #[serde(default = "sql")]
    query_type: String,
    #[serde(default)]
    params: Option<serde_json::Map<String, serde_json::Value>>,
}

fn sql() -> String {
    "sql".to_owned()
}

impl JsonTicket {
    /// `Some` when `ticket` is JSON (as opposed to a Flight SQL command).
    pub(super) fn parse(ticket: &[u8]) -> Result<Option<Self>, Status> {
        if ticket.trim_ascii_start().first() != Some(&b'{') {
            return Ok(None);
        }
        let parsed: Self = serde_json::from_slice(ticket).map_err(|e| {
            Status::invalid_argument(format!(
                "the ticket is not valid JSON like {{\"database\": \"mydb\", \"sql_query\": \"SELECT 1\", \"query_type\": \"sql\"}}: {e}"
            ))
        })?;
        match parsed.query_type.as_str() {
            "sql" => Ok(Some(parsed)),
            "influxql" => Err(Status::unimplemented(
                "InfluxQL is not supported; send the query as SQL with \"query_type\": \"sql\"",
            )),
            other => Err(Status::invalid_argument(format!(
                "unknown query_type `{other}`; use \"sql\""
            ))),
        }
    }

    pub(super) fn params(&mut self) -> Result<QueryParams, Status> {
        let map = self.params.take().unwrap_or_default();
        QueryParams::from_json(map).map_err(Status::invalid_argument)
    }
}
