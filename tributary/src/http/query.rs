//! SQL over HTTP: `GET|POST /api/v3/query_sql`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use querier::ParamValue;
use serde::Deserialize;

use super::AppState;
use super::body::read_body;
use super::error::ApiError;
use super::write::Params;
use crate::format::OutputFormat;

#[derive(Debug, Deserialize)]
struct QueryBody {
    db: Option<String>,
    q: Option<String>,
    format: Option<String>,
    params: Option<serde_json::Map<String, serde_json::Value>>,
}

pub(crate) async fn query_get(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let params = Params::parse(query.as_deref())?;
        let db = params.required("db")?.to_owned();
        let q = params.required("q")?.to_owned();
        let format = OutputFormat::choose(params.get("format"), headers.get(ACCEPT))?;
        let sql_params = match params.get("params") {
            None | Some("") => HashMap::new(),
            Some(json) => {
                let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)
                    .map_err(|e| {
                        ApiError::bad_request(format!("`params` must be a JSON object: {e}"))
                    })?;
                param_values(map)?
            }
        };
        run(&state, &db, &q, format, sql_params).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn query_post(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let params = Params::parse(query.as_deref())?;
        let body = read_body(&headers, body, state.inner.max_request_bytes).await?;
        let parsed: QueryBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be JSON like {{\"db\": \"mydb\", \"q\": \"SELECT 1\", \"format\": \"json\"}}: {e}"
            ))
        })?;
        let db = parsed.db.or_else(|| params.get("db").map(str::to_owned));
        let db = db.filter(|d| !d.is_empty()).ok_or_else(|| ApiError::bad_request("missing `db`"))?;
        let q = parsed.q.or_else(|| params.get("q").map(str::to_owned));
        let q = q.filter(|q| !q.is_empty()).ok_or_else(|| ApiError::bad_request("missing `q`"))?;
        let format_name = parsed.format.as_deref().or(params.get("format"));
        let format = OutputFormat::choose(format_name, headers.get(ACCEPT))?;
        let sql_params = param_values(parsed.params.unwrap_or_default())?;
        run(&state, &db, &q, format, sql_params).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

fn param_values(
    map: serde_json::Map<String, serde_json::Value>,
) -> Result<HashMap<String, ParamValue>, ApiError> {
    use serde_json::Value;
    map.into_iter()
        .map(|(name, value)| {
            let v = match value {
                Value::Null => ParamValue::Null,
                Value::Bool(b) => ParamValue::Bool(b),
                Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => ParamValue::Int(i),
                    (None, Some(u), _) => ParamValue::UInt(u),
                    (None, None, Some(f)) => ParamValue::Float(f),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "parameter `{name}` is not a number SQL can use"
                        )));
                    }
                },
                Value::String(s) => ParamValue::String(s),
                Value::Array(_) | Value::Object(_) => {
                    return Err(ApiError::bad_request(format!(
                        "parameter `{name}` must be a string, number, boolean or null"
                    )));
                }
            };
            Ok((name, v))
        })
        .collect()
}

async fn run(
    state: &AppState,
    db: &str,
    q: &str,
    format: OutputFormat,
    params: HashMap<String, ParamValue>,
) -> Result<Response, ApiError> {
    let querier = &state.inner.querier;
    let started = std::time::Instant::now();
    let result = querier.query(db, q, params).await?;
    let schema = result.schema;
    let batches: Vec<_> = result
        .stream
        .try_collect()
        .await
        .map_err(|e| querier.stream_error(e))?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    tracing::debug!(
        db,
        rows,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "query"
    );
    let body = tokio::task::spawn_blocking(move || format.encode(&schema, &batches))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding task failed: {e}"),
            )
        })?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the result as {}: {e}", format.name()),
            )
        })?;
    let mut response = body.into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(response)
}
