//! The HTTP API of DESIGN.md's external interface, on one router.
//!
//! Each endpoint family has its module; `error` maps every crate's errors to statuses and
//! bodies in one place.

mod body;
mod configure;
mod delete;
mod error;
mod query;
mod write;

pub(crate) use error::ApiError;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use catalog::Catalog;
use ingester::Ingester;
use prometheus_client::registry::Registry;
use querier::Querier;

/// Version reported in `X-Influxdb-Version`: the InfluxDB API generation we speak, then ours.
const INFLUXDB_VERSION: &str = concat!("3.0.0-tributary-", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone)]
pub(crate) struct AppState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    catalog: Arc<dyn Catalog>,
    ingester: Ingester,
    querier: Querier,
    registry: Arc<Registry>,
    max_request_bytes: usize,
}

impl AppState {
    pub(crate) fn new(
        catalog: Arc<dyn Catalog>,
        ingester: Ingester,
        querier: Querier,
        registry: Arc<Registry>,
        max_request_bytes: usize,
    ) -> Self {
        Self {
            inner: Arc::new(StateInner {
                catalog,
                ingester,
                querier,
                registry,
                max_request_bytes,
            }),
        }
    }
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v3/write_lp", axum::routing::post(write::write_v3))
        .route("/api/v2/write", axum::routing::post(write::write_v2))
        .route("/write", axum::routing::post(write::write_v1))
        .route(
            "/api/v3/query_sql",
            get(query::query_get).post(query::query_post),
        )
        .route(
            "/api/v3/configure/database",
            get(configure::list_databases)
                .post(configure::create_database)
                .put(configure::update_database)
                .delete(configure::delete_database),
        )
        .route(
            "/api/v3/configure/table",
            axum::routing::delete(delete::delete_table)
                .post(configure::create_table)
                .put(configure::update_table),
        )
        .route("/api/v3/delete", axum::routing::post(delete::delete_v3))
        .route("/api/v2/delete", axum::routing::post(delete::delete_v2))
        .route("/health", get(health))
        .route("/ping", get(ping).head(ping))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        // The body limit is ours (`body::read_body`), with a message that names the flag.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

async fn health() -> &'static str {
    "OK"
}

/// `204` with the version headers, as InfluxDB 1 answers (its Python client insists on 204).
async fn ping() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        "X-Influxdb-Version",
        HeaderValue::from_static(INFLUXDB_VERSION),
    );
    response
        .headers_mut()
        .insert("X-Influxdb-Build", HeaderValue::from_static("Tributary"));
    response
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.inner.registry) {
        tracing::error!(error = %e, "cannot encode metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error::json_error(
        StatusCode::NOT_FOUND,
        format!("no endpoint at {}", uri.path()),
    )
}
