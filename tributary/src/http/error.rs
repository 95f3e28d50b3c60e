//! Every error that reaches a client, mapped to a status and a body in one place.
//!
//! The matches are exhaustive on purpose: a new error variant needs a decision here. 5xx
//! bodies say what failed without internals; the full error chain goes to the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ingester::{DeleteError, RejectedLine, WriteError};
use querier::QueryError;
use serde_json::json;

use super::body::BodyError;

/// The phrase influxdb3-python looks for before it shows per-line details.
pub(crate) const PARTIAL_WRITE: &str = "partial write of line protocol occurred";

/// Which API's error shape a response uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `{"error": ...}` (InfluxDB 3 and 1).
    V3,
    /// `{"code": ..., "message": ...}` (InfluxDB 2).
    V2,
}

/// An error on its way to the client.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) rejected: Vec<RejectedLine>,
    /// All rejected lines; `rejected` holds the first of them.
    pub(crate) rejected_total: usize,
    pub(crate) dialect: Dialect,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            rejected: Vec::new(),
            rejected_total: 0,
            dialect: Dialect::V3,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// Lines that were rejected: `400` with the partial-write body.
    pub(crate) fn rejected_lines(rejected: Vec<RejectedLine>, rejected_total: usize) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: PARTIAL_WRITE.to_owned(),
            rejected,
            rejected_total,
            dialect: Dialect::V3,
        }
    }

    /// A 5xx: the client gets `public`, the log gets the whole chain of `e`.
    fn internal(status: StatusCode, public: &str, e: &dyn std::error::Error) -> Self {
        tracing::error!(error = %wal::error_chain(e), "{public}");
        Self::new(status, format!("{public}; see the server log"))
    }
}

fn v2_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid",
        401 => "unauthorized",
        404 => "not found",
        409 => "conflict",
        413 => "request too large",
        422 => "unprocessable entity",
        503 => "unavailable",
        _ => "internal error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match (self.dialect, self.rejected.is_empty()) {
            (Dialect::V3, true) => json!({ "error": self.message }),
            (Dialect::V3, false) if self.rejected_total > self.rejected.len() => json!({
                "error": self.message,
                "data": self.rejected,
                "more_rejected_lines": self.rejected_total - self.rejected.len(),
            }),
            (Dialect::V3, false) => json!({ "error": self.message, "data": self.rejected }),
            (Dialect::V2, true) => json!({ "code": v2_code(self.status), "message": self.message }),
            (Dialect::V2, false) => {
                let first = &self.rejected[0];
                let more = match self.rejected_total.saturating_sub(1) {
                    0 => String::new(),
                    n => format!(" (and {n} more rejected lines)"),
                };
                json!({
                    "code": v2_code(self.status),
                    "message": format!(
                        "failed to parse line protocol: line {}: {}{more}; no lines were written",
                        first.line_number, first.error_message
                    ),
                    "line": first.line_number,
                })
            }
        };
        (self.status, Json(body)).into_response()
    }
}

/// A `{"error": message}` response.
pub(crate) fn json_error(status: StatusCode, message: String) -> Response {
    ApiError::new(status, message).into_response()
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        let status = match &e {
            BodyError::TooLarge { .. } | BodyError::DecompressedTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            BodyError::BadGzip(_) | BodyError::UnsupportedEncoding(_) | BodyError::Read(_) => {
                StatusCode::BAD_REQUEST
            }
        };
        Self::new(status, e.to_string())
    }
}

impl From<catalog::Error> for ApiError {
    fn from(e: catalog::Error) -> Self {
        use catalog::Error as E;
        let status = match &e {
            E::InvalidDatabaseName { .. } | E::TypeConflict { .. } => StatusCode::BAD_REQUEST,
            E::DatabaseExists { .. } => StatusCode::CONFLICT,
            E::DatabaseNotFound { .. } | E::TableNotFound { .. } => StatusCode::NOT_FOUND,
            E::TooManyDatabases { .. } | E::TooManyTables { .. } | E::TooManyColumns { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            E::Open { .. }
            | E::Store(_)
            | E::UnknownColumnType(_)
            | E::CorruptRow(_)
            | E::Task(_)
            | E::FilesChanged { .. }
            | E::DeletedMeanwhile => {
                return Self::internal(StatusCode::INTERNAL_SERVER_ERROR, "catalog error", &e);
            }
        };
        Self::new(status, e.to_string())
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::BufferFull { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            WriteError::Catalog(e) => e.into(),
            WriteError::Wal(_) | WriteError::Arrow(_) | WriteError::Task(_) => {
                Self::internal(StatusCode::INTERNAL_SERVER_ERROR, "the write failed", &e)
            }
        }
    }
}

impl From<DeleteError> for ApiError {
    fn from(e: DeleteError) -> Self {
        match e {
            DeleteError::Catalog(e) => e.into(),
            DeleteError::NotATag { .. } => Self::bad_request(e.to_string()),
            DeleteError::Buffer(_) => {
                Self::internal(StatusCode::INTERNAL_SERVER_ERROR, "the delete failed", &e)
            }
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match &e {
            QueryError::DatabaseNotFound { .. } => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            QueryError::Invalid(_) => Self::bad_request(e.to_string()),
            QueryError::ResourcesExhausted { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            QueryError::Internal(_) => {
                Self::internal(StatusCode::INTERNAL_SERVER_ERROR, "the query failed", &e)
            }
        }
    }
}
