//! The querier: DataFusion SQL over a database's tables.
//!
//! ```text
//! query(db, sql) --> SessionContext (catalog "public", schema "iox", information_schema)
//!                      '-- Table per table --> BufferReader (the ingester's buffer)
//!                                          '-> Parquet files (catalog + object store)
//!                --> stream of RecordBatches, memory bounded by the query pool
//! ```
//!
//! Every query gets a fresh session over the catalog snapshot of that moment, so tables and
//! columns created by writes are visible to the next query without any registration step.
//! The optimized plan of a statement is kept and used again for the same SQL while the tables
//! it reads are unchanged (`plan_cache`); the physical plan, and so the buffer and files a
//! scan reads, is made for every query. All sessions share one memory pool of
//! `--query-mem-limit` bytes with spilling disabled: a query that needs more fails with
//! [`QueryError::ResourcesExhausted`] instead of taking the server down.

mod date_bin;
pub mod flight;
mod last_values;
mod page_index;
mod placeholders;
mod plan_cache;
mod run_aggregate;
mod sort_tag;
mod system;
mod table;
mod time_pages;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use catalog::{Catalog, CatalogSnapshot, DatabaseSchema};
use datafusion::catalog::{MemoryCatalogProvider, MemoryCatalogProviderList};
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;

use object_store::ObjectStore;
use table::{DatabaseSchemaProvider, TableSources};

/// Name of the SQL catalog every database appears as (as in InfluxDB 3).
pub const SQL_CATALOG: &str = "public";
/// Name of the SQL schema that holds a database's tables (as in InfluxDB 3).
pub const SQL_SCHEMA: &str = "iox";
/// Name of the SQL schema of tables about the server (`system.queries`).
pub const SYSTEM_SCHEMA: &str = "system";
/// Default for `--query-mem-limit`.
pub const DEFAULT_QUERY_MEM_LIMIT_BYTES: usize = 1024 * 1024 * 1024;
/// Default for [`QuerierConfig::parquet_cache_bytes`].
pub const DEFAULT_PARQUET_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// The URL the object store of persisted files is registered under in DataFusion.
const OBJECT_STORE_URL: &str = "tributary://objects";

/// A buffered partition's rows as the querier reads them.
#[derive(Debug, Clone)]
pub struct BufferedPartition {
    /// UTC day number (days since 1970-01-01).
    pub day: i64,
    /// Highest WAL sequence number whose rows are included; orders the rows against the
    /// partition's files (higher is newer).
    pub max_sequence: u64,
    /// Sorted by (tags in name order, time) across the batches, one row per key, of the
    /// table's schema. Each batch should be its own allocation (not a slice of a larger one):
    /// DataFusion charges a batch's whole buffers against the query memory pool.
    pub batches: Vec<RecordBatch>,
}

/// Reads the unpersisted rows of a table. In-process this is the ingester's buffer; in
/// distributed mode it will be a remote ingester.
pub trait BufferReader: Send + Sync + std::fmt::Debug {
    /// Deduplicated rows of `table` whose partitions may overlap `[min_time_ns, max_time_ns]`,
    /// one batch per partition, conformed to `schema`.
    fn read_table(
        &self,
        database: &str,
        table: &str,
        schema: &SchemaRef,
        min_time_ns: i64,
        max_time_ns: i64,
    ) -> Result<Vec<BufferedPartition>, ArrowError>;
}

/// How the querier is set up.
#[derive(Debug, Clone)]
pub struct QuerierConfig {
    /// Bytes all running queries may hold in operators (sorts, joins, aggregates); default 1 GiB.
    pub query_mem_limit_bytes: usize,
    /// Bytes of decoded Parquet metadata (footers, page indexes) kept between queries;
    /// default 64 MiB.
    pub parquet_cache_bytes: usize,
}

impl Default for QuerierConfig {
    fn default() -> Self {
        Self {
            query_mem_limit_bytes: DEFAULT_QUERY_MEM_LIMIT_BYTES,
            parquet_cache_bytes: DEFAULT_PARQUET_CACHE_BYTES,
        }
    }
}

/// Errors of a query, by who can fix them.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("database `{name}` not found")]
    DatabaseNotFound { name: String },
    /// The statement is wrong: syntax, unknown table or column, type error.
    #[error(transparent)]
    Invalid(DataFusionError),
    #[error(
        "the query needs more memory than the {limit_bytes}-byte query pool allows; narrow it (time range, columns, LIMIT) or raise --query-mem-limit (TRIBUTARY_QUERY_MEM_LIMIT): {source}"
    )]
    ResourcesExhausted {
        limit_bytes: usize,
        #[source]
        source: DataFusionError,
    },
    #[error("query failed")]
    Internal(#[source] DataFusionError),
}

impl QueryError {
    fn classify(e: DataFusionError, limit_bytes: usize) -> Self {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(_) => Self::ResourcesExhausted {
                limit_bytes,
                source: e,
            },
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Execution(_)
            | DataFusionError::ArrowError(..) => Self::Invalid(e),
            _ => Self::Internal(e),
        }
    }
}

/// A running query: its schema and its batches.
pub struct QueryResult {
    pub schema: SchemaRef,
    pub stream: SendableRecordBatchStream,
}

/// Values for a statement's placeholders (`$name`, `$1`, or `?`, which is read as `$1`, `$2`,
/// ... in order).
#[derive(Debug, Clone, Default)]
pub enum QueryParams {
    #[default]
    None,
    /// `$name` placeholders, keyed without the `$`.
    Named(HashMap<String, ScalarValue>),
    /// `$1`, `$2`, ... in order.
    Positional(Vec<ScalarValue>),
    /// Columns of a bound parameter row, as Flight SQL clients send them: by name where the
    /// statement's placeholders have names, by position where they are numbers.
    Columns(Vec<(String, ScalarValue)>),
}

impl QueryParams {
    /// Parameters from a JSON object `{"name": value}`, as the HTTP API and the influxdb3
    /// clients send them. Values are strings, numbers, booleans or null.
    pub fn from_json(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        use serde_json::Value;
        if map.is_empty() {
            return Ok(Self::None);
        }
        let named = map
            .into_iter()
            .map(|(name, value)| {
                let v = match value {
                    Value::Null => ScalarValue::Null,
                    Value::Bool(b) => ScalarValue::Boolean(Some(b)),
                    Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                        (Some(i), _, _) => ScalarValue::Int64(Some(i)),
                        (None, Some(u), _) => ScalarValue::UInt64(Some(u)),
                        (None, None, Some(f)) => ScalarValue::Float64(Some(f)),
                        _ => return Err(format!("parameter `{name}` is not a number SQL can use")),
                    },
                    Value::String(s) => ScalarValue::Utf8(Some(s)),
                    Value::Array(_) | Value::Object(_) => {
                        return Err(format!(
                            "parameter `{name}` must be a string, number, boolean or null"
                        ));
                    }
                };
                Ok((name, v))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self::Named(named))
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::None => true,
            Self::Named(map) => map.is_empty(),
            Self::Positional(values) => values.is_empty(),
            Self::Columns(columns) => columns.is_empty(),
        }
    }

    /// DataFusion's form, for a plan whose placeholders are `names` (with the `$`).
    fn into_param_values(self, names: &std::collections::HashSet<String>) -> ParamValues {
        let by_position = |values: Vec<ScalarValue>| {
            ParamValues::List(values.into_iter().map(Into::into).collect())
        };
        let by_name = |pairs: Vec<(String, ScalarValue)>| {
            ParamValues::Map(pairs.into_iter().map(|(k, v)| (k, v.into())).collect())
        };
        match self {
            Self::None => ParamValues::List(Vec::new()),
            Self::Named(map) => by_name(map.into_iter().collect()),
            Self::Positional(values) => by_position(values),
            Self::Columns(columns) => {
                let numbered = names.iter().all(|n| {
                    n.strip_prefix('$')
                        .is_some_and(|d| d.parse::<u32>().is_ok())
                });
                if numbered {
                    by_position(columns.into_iter().map(|(_, v)| v).collect())
                } else {
                    by_name(columns)
                }
            }
        }
    }
}

/// What a statement returns and which parameters it takes, without running it.
#[derive(Debug, Clone)]
pub struct StatementDescription {
    /// The schema of its result.
    pub schema: SchemaRef,
    /// One field per placeholder still unbound (`$1` or `$name`), ordered by position then
    /// name, typed where the statement tells the type (`Null` where it does not).
    pub parameters: SchemaRef,
}

/// Runs SQL against databases of the catalog.
#[derive(Debug, Clone)]
pub struct Querier {
    catalog: Arc<dyn Catalog>,
    buffer: Arc<dyn BufferReader>,
    store_url: ObjectStoreUrl,
    config: QuerierConfig,
    queries: Arc<system::QueryLog>,
    last_rows: Arc<last_values::LastRowsCache>,
    plans: Arc<plan_cache::PlanCache>,
    /// Configuration, functions and optimizer rules every query's session starts from:
    /// cloning it is cheaper than registering DataFusion's default functions again (3.4 % of
    /// single-groupby's CPU).
    session_template: Arc<SessionState>,
}

impl Querier {
    /// A querier over the catalog's tables: rows from `buffer`, Parquet files from `store`.
    pub fn new(
        config: QuerierConfig,
        catalog: Arc<dyn Catalog>,
        buffer: Arc<dyn BufferReader>,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.query_mem_limit_bytes, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .with_metadata_cache_limit(config.parquet_cache_bytes)
            .build_arc()
            .map_err(QueryError::Internal)?;
        let store_url = ObjectStoreUrl::parse(OBJECT_STORE_URL).map_err(QueryError::Internal)?;
        runtime.register_object_store(store_url.as_ref(), store);
        let mut session_template = SessionStateBuilder::new()
            .with_config(session_config())
            .with_runtime_env(Arc::clone(&runtime))
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(run_aggregate::RunPartialAggregation))
            .build();
        date_bin::register(&mut session_template).map_err(QueryError::Internal)?;
        let session_template = Arc::new(session_template);
        Ok(Self {
            catalog,
            buffer,
            store_url,
            config,
            queries: Arc::default(),
            last_rows: Arc::default(),
            plans: Arc::default(),
            session_template,
        })
    }

    /// Registers the querier's metrics (`tributary_query_plans_*`).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.plans.register(registry);
    }

    /// A session whose default schema holds the tables of `database`.
    pub fn session(&self, database: &str) -> Result<SessionContext, QueryError> {
        let snapshot = self.catalog.snapshot();
        let db = database_of(&snapshot, database)?;
        self.session_over(&snapshot, db)
    }

    /// A session over `db` of `snapshot`.
    fn session_over(
        &self,
        snapshot: &Arc<CatalogSnapshot>,
        db: &Arc<DatabaseSchema>,
    ) -> Result<SessionContext, QueryError> {
        let mut state = SessionState::clone(&self.session_template);
        // The template's catalog list is shared by every clone: each session gets its own.
        state.register_catalog_list(Arc::new(MemoryCatalogProviderList::new()));
        let ctx = SessionContext::new_with_state(state);
        let sql_catalog = MemoryCatalogProvider::new();
        let sources = TableSources {
            buffer: Arc::clone(&self.buffer),
            catalog: Arc::clone(&self.catalog),
            store_url: self.store_url.clone(),
            last_rows: Arc::clone(&self.last_rows),
        };
        ctx.register_udtf(
            "last_cache",
            Arc::new(last_values::LastCacheFunction::new(
                Arc::clone(db),
                sources.clone(),
            )),
        );
        let schema = DatabaseSchemaProvider::new(Arc::clone(db), sources);
        datafusion::catalog::CatalogProvider::register_schema(
            &sql_catalog,
            SQL_SCHEMA,
            Arc::new(schema),
        )
        .map_err(QueryError::Internal)?;
        datafusion::catalog::CatalogProvider::register_schema(
            &sql_catalog,
            SYSTEM_SCHEMA,
            Arc::new(system::SystemSchemaProvider::new(
                Arc::clone(&self.queries),
                Arc::clone(&self.catalog),
                Arc::clone(snapshot),
                Arc::clone(db),
            )),
        )
        .map_err(QueryError::Internal)?;
        ctx.register_catalog(SQL_CATALOG, Arc::new(sql_catalog));
        Ok(ctx)
    }

    /// Plans and starts `sql` against `database`, with `$name` parameters bound from `params`.
    pub async fn query(
        &self,
        database: &str,
        sql: &str,
        params: QueryParams,
    ) -> Result<QueryResult, QueryError> {
        let id = self.queries.start(database, sql);
        match self.plan_and_start(database, sql, params).await {
            Ok(QueryResult { schema, stream }) => {
                let stream = LoggedStream {
                    inner: stream,
                    log: Arc::clone(&self.queries),
                    id,
                    rows: 0,
                    finished: false,
                };
                Ok(QueryResult {
                    schema,
                    stream: Box::pin(stream),
                })
            }
            Err(e) => {
                self.queries.finish(id, 0, Some(e.to_string()), false);
                Err(e)
            }
        }
    }

    /// Plans `sql` against `database` (binding `params` if any) without running it.
    pub async fn describe(
        &self,
        database: &str,
        sql: &str,
        params: QueryParams,
    ) -> Result<StatementDescription, QueryError> {
        let snapshot = self.catalog.snapshot();
        let db = database_of(&snapshot, database)?;
        // Flight SQL clients describe a statement before they run it, every time.
        let kept = params.is_empty().then(|| self.plans.look_up(db, sql));
        if let Some(kept) = kept.flatten() {
            return Ok(StatementDescription {
                schema: kept.schema,
                // A kept plan has no placeholders.
                parameters: Arc::new(Schema::empty()),
            });
        }
        let ctx = self.session_over(&snapshot, db)?;
        let df = self.plan_in(&ctx, sql, params).await?;
        let limit = self.config.query_mem_limit_bytes;
        let mut parameters: Vec<(String, Option<DataType>)> = df
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| QueryError::classify(e, limit))?
            .into_iter()
            .collect();
        parameters.sort_by_cached_key(|(name, _)| {
            let position = name.strip_prefix('$').and_then(|d| d.parse::<u32>().ok());
            (position.unwrap_or(u32::MAX), name.clone())
        });
        let fields: Vec<Field> = parameters
            .into_iter()
            .map(|(name, t)| Field::new(name, t.unwrap_or(DataType::Null), true))
            .collect();
        Ok(StatementDescription {
            schema: Arc::clone(df.schema().inner()),
            parameters: Arc::new(Schema::new(fields)),
        })
    }

    async fn plan_and_start(
        &self,
        database: &str,
        sql: &str,
        params: QueryParams,
    ) -> Result<QueryResult, QueryError> {
        let limit = self.config.query_mem_limit_bytes;
        let snapshot = self.catalog.snapshot();
        let db = database_of(&snapshot, database)?;
        let ctx = self.session_over(&snapshot, db)?;
        // Statements with parameters are planned each time: the values are part of the plan.
        let keep = params.is_empty();
        let kept = keep.then(|| self.plans.get(db, sql)).flatten();
        let (state, plan) = match kept {
            Some(plan) => (ctx.state(), plan),
            None => {
                self.plans.count_planned();
                let (state, plan) = self.plan_in(&ctx, sql, params).await?.into_parts();
                let tables = keep.then(|| plan_cache::kept_tables(&plan)).flatten();
                let plan = plan_cache::Plan {
                    schema: Arc::clone(plan.schema().inner()),
                    plan: state
                        .optimize(&plan)
                        .map_err(|e| QueryError::classify(e, limit))?,
                };
                if let Some(tables) = tables {
                    self.plans.insert(db, sql, tables, plan.clone());
                }
                (state, plan)
            }
        };
        let plan_cache::Plan {
            plan: optimized,
            schema,
        } = plan;
        let physical = state
            .query_planner()
            .create_physical_plan(&optimized, &state)
            .await
            .map_err(|e| self.stream_error(e))?;
        let stream = datafusion::physical_plan::execute_stream(
            physical,
            Arc::new(TaskContext::from(&state)),
        )
        .map_err(|e| self.stream_error(e))?;
        Ok(QueryResult { schema, stream })
    }

    /// `sql` planned (not optimized) in `ctx`, with `params` bound.
    async fn plan_in(
        &self,
        ctx: &SessionContext,
        sql: &str,
        params: QueryParams,
    ) -> Result<DataFrame, QueryError> {
        let limit = self.config.query_mem_limit_bytes;
        // Read-only: no DDL (`CREATE EXTERNAL TABLE`), no DML (`COPY ... TO` writes files),
        // no `SET`.
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let sql = placeholders::number_question_marks(sql);
        let mut df = ctx
            .sql_with_options(&sql, options)
            .await
            .map_err(|e| QueryError::classify(e, limit))?;
        if !params.is_empty() {
            let names = df
                .logical_plan()
                .get_parameter_names()
                .map_err(|e| QueryError::classify(e, limit))?;
            df = df
                .with_param_values(params.into_param_values(&names))
                .map_err(|e| QueryError::classify(e, limit))?;
        }
        Ok(df)
    }

    /// Maps an error raised while the result streams.
    pub fn stream_error(&self, e: DataFusionError) -> QueryError {
        QueryError::classify(e, self.config.query_mem_limit_bytes)
    }
}

/// `name` in `snapshot`, or the error that says it does not exist.
fn database_of<'a>(
    snapshot: &'a CatalogSnapshot,
    name: &str,
) -> Result<&'a Arc<DatabaseSchema>, QueryError> {
    snapshot
        .database(name)
        .ok_or_else(|| QueryError::DatabaseNotFound {
            name: name.to_owned(),
        })
}

/// The configuration of every query's session.
fn session_config() -> SessionConfig {
    SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(SQL_CATALOG, SQL_SCHEMA)
        .with_create_default_catalog_and_schema(false)
        // Keep `Utf8`: older Arrow clients (Grafana's among them) cannot read `Utf8View`.
        .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false)
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        )
        // Evaluate filters while decoding Parquet (cheapest first) so the other columns
        // are decoded only for matching rows. Below a dedup only key (tag, time) filters
        // are given to the scan, so no older version of a row can slip through.
        .set_bool("datafusion.execution.parquet.pushdown_filters", true)
        .set_bool("datafusion.execution.parquet.reorder_filters", true)
}

/// A result stream that records in `system.queries` how its query ended: rows sent, success,
/// error, or cancelled when dropped before the end (the client went away).
struct LoggedStream {
    inner: SendableRecordBatchStream,
    log: Arc<system::QueryLog>,
    id: u64,
    rows: u64,
    finished: bool,
}

impl futures::Stream for LoggedStream {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(batch))) => self.rows += batch.num_rows() as u64,
            std::task::Poll::Ready(Some(Err(e))) if !self.finished => {
                self.finished = true;
                self.log
                    .finish(self.id, self.rows, Some(e.to_string()), false);
            }
            std::task::Poll::Ready(None) if !self.finished => {
                self.finished = true;
                self.log.finish(self.id, self.rows, None, false);
            }
            _ => {}
        }
        polled
    }
}

impl datafusion::execution::RecordBatchStream for LoggedStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

impl Drop for LoggedStream {
    fn drop(&mut self) {
        if !self.finished {
            self.log.finish(self.id, self.rows, None, true);
        }
    }
}
