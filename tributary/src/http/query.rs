//! SQL over HTTP: `GET|POST /api/v3/query_sql`.

use arrow::array::RecordBatch;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use querier::QueryParams;
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
    /// Read as any value, so that a non-object gets an error naming `params`.
    params: Option<serde_json::Value>,
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
            None | Some("") => QueryParams::None,
            Some(json) => {
                let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
                    ApiError::bad_request(format!("`params` must be a JSON object: {e}"))
                })?;
                params_of(Some(value))?
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
        let sql_params = params_of(parsed.params)?;
        run(&state, &db, &q, format, sql_params).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The `params` of a request: a JSON object of names and values (absent or `null`: none).
fn params_of(value: Option<serde_json::Value>) -> Result<QueryParams, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(QueryParams::None),
        Some(serde_json::Value::Object(map)) => param_values(map),
        Some(other) => Err(ApiError::bad_request(format!(
            "`params` must be a JSON object of names and values, like {{\"host\": \"a\"}}, not {}",
            json_kind(&other)
        ))),
    }
}

/// What a JSON value is, for error messages.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn param_values(map: serde_json::Map<String, serde_json::Value>) -> Result<QueryParams, ApiError> {
    QueryParams::from_json(map).map_err(ApiError::bad_request)
}

async fn run(
    state: &AppState,
    db: &str,
    q: &str,
    format: OutputFormat,
    params: QueryParams,
) -> Result<Response, ApiError> {
    let querier = state.inner.querier.clone();
    let result = querier.query(db, q, params).await?;
    let mut stream = result.stream;
    // Wait for the first batch before answering: most failures (memory, bad casts) happen
    // before any row comes out, and then the client still gets a status and a message.
    let first = stream
        .next()
        .await
        .transpose()
        .map_err(|e| querier.stream_error(e))?;
    let encoding_error = |e: arrow::error::ArrowError| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode as {}: {e}", format.name()),
        )
    };
    // A small result is most often one batch: if the stream ends after it, it is encoded
    // here and sent whole, with its length, sparing the hand-offs between the encoding
    // thread, the channels and the response. (An ended stream is not polled again.)
    let mut leading: Vec<RecordBatch> = Vec::new();
    let ended = match first {
        None => true,
        Some(batch) if batch.get_array_memory_size() > INLINE_RESULT_BYTES => {
            leading.push(batch);
            false
        }
        Some(batch) => {
            leading.push(batch);
            let next = stream
                .next()
                .await
                .transpose()
                .map_err(|e| querier.stream_error(e))?;
            let ended = next.is_none();
            leading.extend(next);
            ended
        }
    };
    let body = if ended {
        Body::from(
            format
                .encode(&result.schema, &leading)
                .map_err(encoding_error)?,
        )
    } else {
        let encoder = format.encoder(&result.schema).map_err(encoding_error)?;
        Body::from_stream(stream_body(
            encoder,
            leading,
            stream,
            querier,
            db.to_owned(),
        ))
    };
    let mut response = body.into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(response)
}

/// Bytes of encoded output that are sent as one chunk of the response body.
const BODY_CHUNK_BYTES: usize = 256 * 1024;
/// Largest batch (Arrow memory) a result may be to be encoded on the request's task.
const INLINE_RESULT_BYTES: usize = 256 * 1024;

/// Encodes batches on the blocking pool as DataFusion produces them and hands the bytes to
/// the response in chunks; bounded channels on both sides keep a large result from piling up
/// in memory. An error after the first batch can only cut the body short, so it is logged.
fn stream_body(
    mut encoder: crate::format::Encoder,
    leading: Vec<RecordBatch>,
    mut stream: datafusion::execution::SendableRecordBatchStream,
    querier: querier::Querier,
    db: String,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    let (batch_tx, mut batch_rx) = tokio::sync::mpsc::channel::<RecordBatch>(2);
    let (bytes_tx, bytes_rx) =
        tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let started = std::time::Instant::now();
    let error_tx = bytes_tx.clone();
    let producer_db = db.clone();
    tokio::spawn(async move {
        let db = producer_db;
        for batch in leading {
            if batch_tx.send(batch).await.is_err() {
                return;
            }
        }
        while let Some(next) = stream.next().await {
            match next {
                Ok(batch) => {
                    if batch_tx.send(batch).await.is_err() {
                        return; // the client went away
                    }
                }
                Err(e) => {
                    let e = querier.stream_error(e);
                    tracing::warn!(%db, error = %e, "query failed while streaming its result");
                    let _ = error_tx
                        .send(Err(std::io::Error::other(e.to_string())))
                        .await;
                    return;
                }
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(BODY_CHUNK_BYTES);
        let mut rows = 0;
        let send = |out: &mut Vec<u8>| {
            bytes_tx
                .blocking_send(Ok(bytes::Bytes::from(std::mem::take(out))))
                .is_ok()
        };
        while let Some(batch) = batch_rx.blocking_recv() {
            rows += batch.num_rows();
            if let Err(e) = encoder.write(&batch, &mut out) {
                let _ = bytes_tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
            if out.len() >= BODY_CHUNK_BYTES && !send(&mut out) {
                return;
            }
        }
        match encoder.finish(&mut out) {
            Ok(()) => {
                send(&mut out);
            }
            Err(e) => {
                let _ = bytes_tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
        tracing::debug!(%db, rows, elapsed_ms = started.elapsed().as_millis() as u64, "query streamed");
    });
    futures::stream::unfold(bytes_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
