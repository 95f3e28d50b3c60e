//! Deletes: `DELETE /api/v3/configure/table?db=&table=` drops a table; `POST /api/v3/delete`
//! (and InfluxDB 2's `POST /api/v2/delete?bucket=`) deletes the rows of a time range whose
//! tags match a predicate.
//!
//! A range delete hides its rows from queries as soon as it is answered, and compactions
//! remove them from the files. Rows written after it, in its range, stay.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::body::read_body;
use super::error::{ApiError, Dialect};
use super::write::Params;

/// `tag = value` terms of a predicate, all of which a deleted row matches.
type Terms = Vec<(Arc<str>, Arc<str>)>;

/// The key that names the table in an InfluxDB 2 predicate.
const MEASUREMENT_KEY: &str = "_measurement";

pub(crate) async fn delete_table(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        let params = Params::parse(query.as_deref())?;
        let db = params.required("db")?;
        let table = params.required("table")?;
        state.inner.ingester.delete_table(db, table).await?;
        tracing::info!(db, table, "deleted table");
        Ok::<_, ApiError>(StatusCode::OK.into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The body of a range delete. `start` and `stop` are RFC 3339 times or integer nanoseconds
/// since the epoch, both inclusive; absent means unbounded.
#[derive(Debug, Deserialize)]
struct DeleteRequest {
    #[serde(default)]
    db: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    start: Option<serde_json::Value>,
    #[serde(default)]
    stop: Option<serde_json::Value>,
    #[serde(default)]
    predicate: Option<String>,
}

pub(crate) async fn delete_v3(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let request = parse_request(&state, &headers, body).await?;
        let db = match request.db.as_deref() {
            Some(db) if !db.is_empty() => db.to_owned(),
            _ => {
                return Err(ApiError::bad_request(
                    "the body must name the database: \"db\"",
                ));
            }
        };
        delete_rows(&state, &db, request, TableScope::Named).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// InfluxDB 2's delete API (influxdb-client's `DeleteApi`): the database is the `bucket`
/// parameter, the table `_measurement` in the predicate; without one, every table of the
/// bucket.
pub(crate) async fn delete_v2(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let params = Params::parse(query.as_deref())?;
        let db = params
            .get("bucket")
            .or_else(|| params.get("bucketID"))
            .filter(|b| !b.is_empty())
            .ok_or_else(|| ApiError::bad_request("missing query parameter `bucket`"))?
            .to_owned();
        let request = parse_request(&state, &headers, body).await?;
        delete_rows(&state, &db, request, TableScope::AllWithoutMeasurement).await
    }
    .await;
    result.unwrap_or_else(|e| e.dialect(Dialect::V2).into_response())
}

async fn parse_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<DeleteRequest, ApiError> {
    let bytes = read_body(headers, body, state.inner.max_request_bytes).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be JSON like {{\"db\": \"mydb\", \"table\": \"cpu\", \"start\": \
             \"2026-01-01T00:00:00Z\", \"stop\": \"2026-01-02T00:00:00Z\", \"predicate\": \
             \"host = 'a'\"}}: {e}"
        ))
    })
}

/// Which tables a delete without a table name applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableScope {
    /// None: the table must be named (`table` or `_measurement`); a typo must not wipe a
    /// database.
    Named,
    /// Every table with the predicate's tags, as InfluxDB 2 does.
    AllWithoutMeasurement,
}

async fn delete_rows(
    state: &AppState,
    db: &str,
    request: DeleteRequest,
    scope: TableScope,
) -> Result<Response, ApiError> {
    let min_time_ns = parse_time(request.start.as_ref(), "start")?.unwrap_or(i64::MIN);
    let max_time_ns = parse_time(request.stop.as_ref(), "stop")?.unwrap_or(i64::MAX);
    if min_time_ns > max_time_ns {
        return Err(ApiError::bad_request(
            "`start` is after `stop`: nothing to delete",
        ));
    }
    let mut terms = parse_predicate(request.predicate.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid `predicate`: {e}")))?;
    let measurement = take_measurement(&mut terms)?;
    let table = match (request.table.filter(|t| !t.is_empty()), measurement) {
        (Some(t), Some(m)) if t != m => {
            return Err(ApiError::bad_request(format!(
                "the body names table `{t}` but the predicate `{MEASUREMENT_KEY}` `{m}`"
            )));
        }
        (Some(t), _) | (None, Some(t)) => Some(t),
        (None, None) if scope == TableScope::Named => {
            return Err(ApiError::bad_request(
                "the body must name the table: \"table\" (or `_measurement = 'name'` in the predicate)",
            ));
        }
        (None, None) => None,
    };
    let snapshot = state.inner.catalog.snapshot();
    let database = snapshot
        .database(db)
        .ok_or_else(|| catalog::Error::DatabaseNotFound {
            name: db.to_owned(),
        })?;
    let tables: Vec<Arc<str>> = match table {
        Some(t) => vec![Arc::from(t)],
        // Every table whose tags include the predicate's: in the others nothing can match.
        None => database
            .tables
            .values()
            .filter(|t| {
                terms
                    .iter()
                    .all(|(tag, _)| t.column_type(tag) == Some(catalog::ColumnType::Tag))
            })
            .map(|t| Arc::clone(&t.name))
            .collect(),
    };
    let mut removed = 0;
    for table in &tables {
        removed += state
            .inner
            .ingester
            .delete_rows(db, table, min_time_ns, max_time_ns, terms.clone())
            .await?;
    }
    tracing::info!(db, ?tables, min_time_ns, max_time_ns, predicate = ?terms, buffered_rows = removed, "deleted rows");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Removes `_measurement = 'x'` from the terms and returns `x`.
fn take_measurement(terms: &mut Terms) -> Result<Option<String>, ApiError> {
    let mut found: Option<String> = None;
    let mut error = None;
    terms.retain(|(key, value)| {
        if key.as_ref() != MEASUREMENT_KEY {
            return true;
        }
        match &found {
            Some(f) if f != value.as_ref() => {
                error = Some(ApiError::bad_request(format!(
                    "the predicate names two tables with `{MEASUREMENT_KEY}`: `{f}` and `{value}`"
                )));
            }
            _ => found = Some(value.to_string()),
        }
        false
    });
    match error {
        Some(e) => Err(e),
        None => Ok(found),
    }
}

/// A time as RFC 3339 (`2026-01-01T00:00:00Z`, offsets allowed) or integer nanoseconds.
fn parse_time(value: Option<&serde_json::Value>, name: &str) -> Result<Option<i64>, ApiError> {
    let invalid = || {
        ApiError::bad_request(format!(
            "`{name}` must be an RFC 3339 time like \"2026-01-01T00:00:00Z\" or integer nanoseconds since the epoch"
        ))
    };
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_i64().map(Some).ok_or_else(invalid),
        Some(serde_json::Value::String(s)) => {
            if let Ok(ns) = s.trim().parse::<i64>() {
                return Ok(Some(ns));
            }
            let time = chrono::DateTime::parse_from_rfc3339(s.trim()).map_err(|_| invalid())?;
            // Bounds beyond the years 1677..2262 that nanoseconds cover (InfluxDB 2 users send
            // `0001-01-01T00:00:00Z`) mean "from the beginning" or "to the end".
            Ok(Some(time.timestamp_nanos_opt().unwrap_or(
                if time.timestamp() < 0 {
                    i64::MIN
                } else {
                    i64::MAX
                },
            )))
        }
        Some(_) => Err(invalid()),
    }
}

/// Parses `tag = 'value' AND tag2 = "value2"`: `tag = value` terms joined by `AND` (any
/// case). Values are quoted with `'` or `"` (a backslash escapes the quote), or bare words;
/// keys may be double-quoted. An empty predicate has no terms.
pub(crate) fn parse_predicate(text: &str) -> Result<Terms, String> {
    let mut terms = Vec::new();
    let mut rest = text.trim_start();
    if rest.is_empty() {
        return Ok(terms);
    }
    loop {
        let (key, after) = word(rest, "a tag name")?;
        rest = after.trim_start();
        rest = rest.strip_prefix('=').ok_or_else(|| {
            format!(
                "expected `=` after `{key}` at `{}`; only `tag = 'value'` terms joined by AND are supported",
                excerpt(rest)
            )
        })?;
        let (value, after) = word(rest.trim_start(), "a value")?;
        terms.push((Arc::from(key), Arc::from(value)));
        rest = after.trim_start();
        if rest.is_empty() {
            return Ok(terms);
        }
        let and = rest.get(..3).filter(|w| w.eq_ignore_ascii_case("and"));
        let after_and = rest.get(3..).unwrap_or("");
        if and.is_none() || !after_and.starts_with(char::is_whitespace) {
            return Err(format!(
                "expected AND at `{}`; only `tag = 'value'` terms joined by AND are supported",
                excerpt(rest)
            ));
        }
        rest = after_and.trim_start();
    }
}

/// A quoted string or a bare word at the start of `text`, and what follows it.
fn word<'a>(text: &'a str, what: &str) -> Result<(String, &'a str), String> {
    let mut chars = text.char_indices();
    match chars.next() {
        None => Err(format!("expected {what} at the end")),
        Some((_, quote @ ('\'' | '"'))) => {
            let mut value = String::new();
            let mut escaped = false;
            for (i, c) in chars {
                match c {
                    _ if escaped => {
                        value.push(c);
                        escaped = false;
                    }
                    '\\' => escaped = true,
                    c if c == quote => return Ok((value, &text[i + 1..])),
                    c => value.push(c),
                }
            }
            Err(format!("unterminated quote in `{}`", excerpt(text)))
        }
        Some(_) => {
            let end = text
                .find(|c: char| c.is_whitespace() || c == '=')
                .unwrap_or(text.len());
            let word = &text[..end];
            if word.is_empty() || word.contains(['(', ')', '<', '>', '!']) {
                return Err(format!(
                    "expected {what} at `{}`; only `tag = 'value'` terms joined by AND are supported",
                    excerpt(text)
                ));
            }
            Ok((word.to_owned(), &text[end..]))
        }
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(30).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(text: &str) -> Vec<(String, String)> {
        parse_predicate(text)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn predicates_are_tag_equalities_joined_by_and() {
        assert!(terms("").is_empty());
        assert!(terms("   ").is_empty());
        assert_eq!(terms("host = 'a'"), [pair("host", "a")]);
        assert_eq!(
            terms(r#"_measurement="cpu" and host="server 1" AND "dc"='it\'s'"#),
            [
                pair("_measurement", "cpu"),
                pair("host", "server 1"),
                pair("dc", "it's")
            ]
        );
        assert_eq!(terms("region=us-west"), [pair("region", "us-west")]);
    }

    #[test]
    fn other_predicates_are_refused_with_the_supported_form() {
        for bad in [
            "host = 'a' OR host = 'b'",
            "host != 'a'",
            "usage > 5",
            "host = 'a' AND",
            "host = 'a",
            "(host = 'a')",
            "host = 'a' ANDdc = 'b'",
        ] {
            let e = parse_predicate(bad).unwrap_err();
            assert!(
                e.contains("only `tag = 'value'` terms joined by AND")
                    || e.contains("unterminated")
                    || e.contains("at the end"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn times_are_rfc3339_or_nanoseconds() {
        let t = |v: serde_json::Value| parse_time(Some(&v), "start").map_err(|e| e.message);
        assert_eq!(t(serde_json::json!(5)).unwrap(), Some(5));
        assert_eq!(t(serde_json::json!("7")).unwrap(), Some(7));
        assert_eq!(
            t(serde_json::json!("1970-01-01T00:00:01.5Z")).unwrap(),
            Some(1_500_000_000)
        );
        assert_eq!(
            t(serde_json::json!("1970-01-01T01:00:00+01:00")).unwrap(),
            Some(0)
        );
        assert!(
            t(serde_json::json!("yesterday"))
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert_eq!(parse_time(None, "stop").unwrap(), None);
    }
}
