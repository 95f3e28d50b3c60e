//! Database administration: `GET|POST|PUT|DELETE /api/v3/configure/database`. `POST`
//! creates (with an optional `retention_period`), `PUT` changes the retention period.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::body::read_body;
use super::error::ApiError;
use super::write::Params;
use crate::format::OutputFormat;

/// Column name InfluxDB 3 uses for the database list.
const DATABASE_COLUMN: &str = "iox::database";

pub(crate) async fn list_databases(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let params = Params::parse(query.as_deref())?;
        let format = OutputFormat::choose(params.get("format"), headers.get(ACCEPT))?;
        let snapshot = state.inner.catalog.snapshot();
        let names: StringArray = snapshot
            .databases
            .keys()
            .map(|k| Some(k.as_ref()))
            .collect();
        let schema = Arc::new(Schema::new(vec![Field::new(
            DATABASE_COLUMN,
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(names)])
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let body = format
            .encode(&schema, &[batch])
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let mut response = body.into_response();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        Ok::<_, ApiError>(response)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Deserialize)]
struct ConfigureDatabase {
    db: String,
    /// How long rows are kept, e.g. `30d`, `12h`; absent or null keeps everything.
    #[serde(default)]
    retention_period: Option<String>,
}

impl ConfigureDatabase {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be JSON like {{\"db\": \"mydb\", \"retention_period\": \"30d\"}}: {e}"
            ))
        })
    }

    /// The retention period in nanoseconds, if one is given.
    fn retention_period_ns(&self) -> Result<Option<i64>, ApiError> {
        let Some(text) = self.retention_period.as_deref() else {
            return Ok(None);
        };
        let period = humantime::parse_duration(text.trim()).map_err(|e| {
            ApiError::bad_request(format!(
                "retention_period `{text}` is not a duration like `30d` or `12h`: {e}"
            ))
        })?;
        let ns = i64::try_from(period.as_nanos()).ok().filter(|ns| *ns > 0);
        ns.map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "retention_period `{text}` must be longer than 0 and shorter than 292 years"
            ))
        })
    }
}

pub(crate) async fn create_database(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let body = read_body(&headers, body, state.inner.max_request_bytes).await?;
        let request = ConfigureDatabase::parse(&body)?;
        let retention = request.retention_period_ns()?;
        state
            .inner
            .catalog
            .create_database(&request.db, retention)
            .await?;
        tracing::info!(db = %request.db, ?retention, "created database");
        Ok::<_, ApiError>(StatusCode::OK.into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `PUT`: changes a database's retention period (`null` or absent: keep everything).
pub(crate) async fn update_database(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let body = read_body(&headers, body, state.inner.max_request_bytes).await?;
        let request = ConfigureDatabase::parse(&body)?;
        let retention = request.retention_period_ns()?;
        state
            .inner
            .catalog
            .set_retention_period(&request.db, retention)
            .await?;
        tracing::info!(db = %request.db, ?retention, "updated database");
        Ok::<_, ApiError>(StatusCode::OK.into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn delete_database(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        let params = Params::parse(query.as_deref())?;
        let db = params.required("db")?;
        state.inner.ingester.delete_database(db).await?;
        tracing::info!(db, "deleted database");
        Ok::<_, ApiError>(StatusCode::OK.into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
