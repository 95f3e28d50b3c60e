//! Line protocol writes: `/api/v3/write_lp`, `/api/v2/write` and `/write`.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ingester::{Precision, WriteRequest};

use super::AppState;
use super::body::read_body;
use super::error::{ApiError, Dialect};

/// Query parameters, as given.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        serde_urlencoded::from_str(raw.unwrap_or(""))
            .map(Self)
            .map_err(|e| ApiError::bad_request(format!("cannot parse the query string: {e}")))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::bad_request(format!(
                "missing query parameter `{name}`"
            ))),
        }
    }

    fn flag(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(ApiError::bad_request(format!(
                "query parameter `{name}` must be true or false, got `{v}`"
            ))),
        }
    }
}

fn precision(
    value: Option<&str>,
    accepted: &[(&str, Precision)],
    default: Precision,
) -> Result<Precision, ApiError> {
    let Some(value) = value else {
        return Ok(default);
    };
    accepted
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, p)| *p)
        .ok_or_else(|| {
            let names: Vec<&str> = accepted.iter().map(|(n, _)| *n).collect();
            ApiError::bad_request(format!(
                "invalid precision `{value}`: use one of {}",
                names.join(", ")
            ))
        })
}

const V3_PRECISIONS: &[(&str, Precision)] = &[
    ("auto", Precision::Auto),
    ("nanosecond", Precision::Nanosecond),
    ("microsecond", Precision::Microsecond),
    ("millisecond", Precision::Millisecond),
    ("second", Precision::Second),
    ("ns", Precision::Nanosecond),
    ("us", Precision::Microsecond),
    ("ms", Precision::Millisecond),
    ("s", Precision::Second),
];

const V2_PRECISIONS: &[(&str, Precision)] = &[
    ("ns", Precision::Nanosecond),
    ("us", Precision::Microsecond),
    ("ms", Precision::Millisecond),
    ("s", Precision::Second),
];

const V1_PRECISIONS: &[(&str, Precision)] = &[
    ("n", Precision::Nanosecond),
    ("ns", Precision::Nanosecond),
    ("u", Precision::Microsecond),
    ("us", Precision::Microsecond),
    ("ms", Precision::Millisecond),
    ("s", Precision::Second),
    ("m", Precision::Minute),
    ("h", Precision::Hour),
];

pub(crate) async fn write_v3(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let params = Params::parse(query.as_deref())?;
        let database = params.required("db")?.to_owned();
        let precision = precision(params.get("precision"), V3_PRECISIONS, Precision::Auto)?;
        let accept_partial = params.flag("accept_partial", true)?;
        let no_sync = params.flag("no_sync", false)?;
        write(
            &state,
            &headers,
            body,
            database,
            precision,
            accept_partial,
            no_sync,
        )
        .await
    }
    .await;
    respond(result, Dialect::V3)
}

pub(crate) async fn write_v2(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let params = Params::parse(query.as_deref())?;
        let database = params.required("bucket")?.to_owned();
        let precision = precision(
            params.get("precision"),
            V2_PRECISIONS,
            Precision::Nanosecond,
        )?;
        write(&state, &headers, body, database, precision, false, false).await
    }
    .await;
    respond(result, Dialect::V2)
}

pub(crate) async fn write_v1(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let params = Params::parse(query.as_deref())?;
        let database = params.required("db")?.to_owned();
        let precision = precision(
            params.get("precision"),
            V1_PRECISIONS,
            Precision::Nanosecond,
        )?;
        write(&state, &headers, body, database, precision, false, false).await
    }
    .await;
    respond(result, Dialect::V3)
}

async fn write(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    database: String,
    precision: Precision,
    accept_partial: bool,
    no_sync: bool,
) -> Result<(), ApiError> {
    catalog::validate_database_name(&database).map_err(|reason| {
        ApiError::bad_request(format!("invalid database name `{database}`: {reason}"))
    })?;
    let body = read_body(headers, body, state.inner.max_request_bytes).await?;
    let outcome = state
        .inner
        .ingester
        .write(WriteRequest {
            database,
            body,
            precision,
            accept_partial,
            no_sync,
        })
        .await?;
    if outcome.rejected.is_empty() {
        Ok(())
    } else {
        Err(ApiError::rejected_lines(
            outcome.rejected,
            outcome.lines_rejected,
        ))
    }
}

fn respond(result: Result<(), ApiError>, dialect: Dialect) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.dialect(dialect).into_response(),
    }
}
