//! Database and table administration: `GET|POST|PUT|DELETE /api/v3/configure/database` and
//! `POST|PUT /api/v3/configure/table` (`DELETE` is in `delete`). `POST` creates (with an
//! optional `retention_period`), `PUT` changes the retention period.

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

    fn retention_period_ns(&self) -> Result<Option<i64>, ApiError> {
        retention_period_ns(self.retention_period.as_deref())
    }
}

/// A retention period like `30d` in nanoseconds; `None` when none is given.
fn retention_period_ns(text: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(text) = text else {
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

/// `POST|PUT /api/v3/configure/table`, as InfluxDB 3 takes it: tags in the order rows are
/// sorted by, typed fields, and an optional retention period of the table's own.
#[derive(Debug, Deserialize)]
struct ConfigureTable {
    db: String,
    table: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    fields: Vec<FieldSpec>,
    #[serde(default)]
    retention_period: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FieldSpec {
    name: String,
    #[serde(rename = "type")]
    field_type: String,
}

impl ConfigureTable {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be JSON like {{\"db\": \"mydb\", \"table\": \"cpu\", \"tags\": [\"host\"], \"fields\": [{{\"name\": \"usage\", \"type\": \"float64\"}}], \"retention_period\": \"7d\"}}: {e}"
            ))
        })
    }
}

/// A field type by InfluxDB 3's name (`float64`, ...) or the line protocol one (`float`, ...).
fn field_type(name: &str, field: &str) -> Result<catalog::ColumnType, ApiError> {
    use catalog::ColumnType as T;
    Ok(match name.to_ascii_lowercase().as_str() {
        "float64" | "float" | "double" => T::Float,
        "int64" | "integer" | "int" => T::Integer,
        "uint64" | "uinteger" | "uint" => T::UInteger,
        "utf8" | "string" => T::String,
        "bool" | "boolean" => T::Boolean,
        _ => {
            return Err(ApiError::bad_request(format!(
                "field `{field}` has unknown type `{name}`; use float64, int64, uint64, utf8 or bool"
            )));
        }
    })
}

pub(crate) async fn create_table(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let body = read_body(&headers, body, state.inner.max_request_bytes).await?;
        let request = ConfigureTable::parse(&body)?;
        let retention = retention_period_ns(request.retention_period.as_deref())?;
        let snapshot = state.inner.catalog.snapshot();
        let db =
            snapshot
                .database(&request.db)
                .ok_or_else(|| catalog::Error::DatabaseNotFound {
                    name: request.db.clone(),
                })?;
        if request.table.is_empty() {
            return Err(ApiError::bad_request("the table name is empty"));
        }
        if db.table(&request.table).is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "table `{}` already exists in database `{}`",
                    request.table, request.db
                ),
            ));
        }
        let mut columns = std::collections::BTreeMap::new();
        let specs = request
            .tags
            .iter()
            .map(|t| Ok::<_, ApiError>((t.as_str(), catalog::ColumnType::Tag)))
            .chain(
                request
                    .fields
                    .iter()
                    .map(|f| Ok((f.name.as_str(), field_type(&f.field_type, &f.name)?))),
            );
        for spec in specs {
            let (name, column_type) = spec?;
            if name.is_empty() || name == catalog::TIME_COLUMN {
                return Err(ApiError::bad_request(format!(
                    "`{name}` cannot name a tag or field: `time` is every table's timestamp"
                )));
            }
            if columns.insert(name.to_owned(), column_type).is_some() {
                return Err(ApiError::bad_request(format!(
                    "column `{name}` is named twice"
                )));
            }
        }
        let mut changes = catalog::SchemaChanges::new(&request.db);
        changes.tables.insert(request.table.clone(), columns);
        changes
            .sort_keys
            .insert(request.table.clone(), request.tags.clone());
        if let Some(retention) = retention {
            changes
                .retention_periods
                .insert(request.table.clone(), retention);
        }
        state.inner.catalog.apply(changes).await?;
        tracing::info!(db = %request.db, table = %request.table, ?retention, "created table");
        Ok::<_, ApiError>(StatusCode::OK.into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `PUT`: changes a table's own retention period (`null` or absent: its database's).
pub(crate) async fn update_table(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let body = read_body(&headers, body, state.inner.max_request_bytes).await?;
        let request = ConfigureTable::parse(&body)?;
        let retention = retention_period_ns(request.retention_period.as_deref())?;
        state
            .inner
            .catalog
            .set_table_retention_period(&request.db, &request.table, retention)
            .await?;
        tracing::info!(db = %request.db, table = %request.table, ?retention, "updated table");
        Ok::<_, ApiError>(StatusCode::OK.into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
