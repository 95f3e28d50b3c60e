//! Arrow Flight and Flight SQL: the gRPC face of the querier, for Grafana, ADBC and JDBC
//! (Flight SQL) and the influxdb3 Python, Go and Java clients (a plain Flight `DoGet` with a
//! JSON ticket).
//!
//! ```text
//! GetFlightInfo(CommandStatementQuery)      -> schema + ticket (database, SQL)
//! CreatePreparedStatement / DoPut(params)   -> handle (database, SQL, parameter row)
//! GetFlightInfo(CommandPreparedStatement)   -> schema + ticket (database, SQL, parameters)
//! DoGet(ticket)                             -> schema, then record batches as they are made
//! DoGet({"database", "sql_query", ...})     -> the same, in one call
//! ```
//!
//! Nothing is kept between calls: tickets and handles carry the statement ([`handle`]), so any
//! querier answers any call and a client that vanishes leaves nothing to clean up. The
//! database comes from request metadata: `database`, or the names older clients send
//! (`bucket`, `bucket-name`, `iox-namespace-name`). There is no authentication yet: an
//! `authorization` header is accepted and ignored, and `Handshake` answers any credentials
//! with a bearer token so that clients that log in first carry on.
//!
//! Tags travel as the data model's `Dictionary(Int32, Utf8)` to the influxdb3 clients and as
//! plain `Utf8` over Flight SQL, whose generic clients (Grafana's among them) do not all read
//! dictionaries; see [`Tags`].

mod handle;
mod metadata;
mod sql_info;

use std::pin::Pin;
use std::sync::Arc;

use std::collections::HashSet;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
pub use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionCancelQueryRequest, ActionCancelQueryResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, ActionCreatePreparedSubstraitPlanRequest,
    ActionEndSavepointRequest, ActionEndTransactionRequest, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementIngest, CommandStatementQuery, CommandStatementSubstraitPlan,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, IpcMessage, PollInfo, PutResult, SchemaAsIpc,
    SchemaResult, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::{Querier, QueryError, QueryParams};
use handle::{JsonTicket, StatementHandle};

/// Request metadata that names the database, in order of preference: InfluxDB 3's name, then
/// the names InfluxDB Cloud and IOx clients send.
const DATABASE_HEADERS: [&str; 4] = ["database", "bucket", "bucket-name", "iox-namespace-name"];

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Flight service of a querier, ready to be served by tonic.
pub fn service(querier: Querier) -> FlightServiceServer<QueryFlightService> {
    FlightServiceServer::new(QueryFlightService {
        sql: FlightSql {
            querier,
            sql_info: Arc::new(sql_info::sql_info()),
            type_info: Arc::new(sql_info::type_info()),
        },
    })
}

/// Arrow Flight: Flight SQL, plus `DoGet` with the influxdb3 clients' JSON ticket.
#[derive(Debug, Clone)]
pub struct QueryFlightService {
    sql: FlightSql,
}

#[derive(Clone)]
struct FlightSql {
    querier: Querier,
    sql_info: Arc<SqlInfoData>,
    type_info: Arc<XdbcTypeInfoData>,
}

impl std::fmt::Debug for FlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSql")
            .field("querier", &self.querier)
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl FlightService for QueryFlightService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.sql.handshake(request).await
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented(
            "ListFlights is not supported: send SQL with Flight SQL or a JSON ticket to DoGet",
        ))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.sql.get_flight_info(request).await
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "PollFlightInfo is not supported: use GetFlightInfo, which answers at once",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        // The schema GetFlightInfo would give.
        let info = self.sql.get_flight_info(request).await?.into_inner();
        Ok(Response::new(SchemaResult {
            schema: info.schema,
        }))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        match JsonTicket::parse(&request.get_ref().ticket)? {
            Some(mut ticket) => {
                let params = ticket.params()?;
                self.sql
                    .run(
                        &ticket.database,
                        &ticket.sql_query,
                        params,
                        Tags::Dictionary,
                    )
                    .await
            }
            None => self.sql.do_get(request).await,
        }
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.sql.do_put(request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.sql.do_action(request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.sql.list_actions(request).await
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented(
            "DoExchange is not supported: query with DoGet",
        ))
    }
}

impl FlightSql {
    /// Runs a statement and streams its result: the schema first (also for no rows), then
    /// the batches as DataFusion makes them, split to stay under gRPC's message size.
    async fn run(
        &self,
        database: &str,
        sql: &str,
        params: QueryParams,
        tags: Tags,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let result = self
            .querier
            .query(database, sql, params)
            .await
            .map_err(query_status)?;
        let querier = self.querier.clone();
        let batches = coalesced(result.stream, FLIGHT_BATCH_ROWS).map(move |batch| match batch {
            Ok(batch) => unique_dictionary_values(batch).map_err(FlightError::Arrow),
            Err(e) => Err(FlightError::Tonic(Box::new(query_status(
                querier.stream_error(e),
            )))),
        });
        let dictionaries = match tags {
            Tags::Dictionary => DictionaryHandling::Resend,
            Tags::Strings => DictionaryHandling::Hydrate,
        };
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(result.schema)
            .with_dictionary_handling(dictionaries)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(flight)))
    }

    /// A `FlightInfo` whose one endpoint's ticket runs `statement` here.
    async fn statement_info(
        &self,
        statement: StatementHandle,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let described = self
            .querier
            .describe(&statement.database, &statement.sql, statement.params()?)
            .await
            .map_err(query_status)?;
        let ticket = TicketStatementQuery {
            statement_handle: statement.encode()?,
        };
        info(
            &Tags::Strings.schema(&described.schema),
            ticket.as_any(),
            descriptor,
        )
    }

    /// A statement's handle as a ticket or prepared statement names it, run against the
    /// database of the request's metadata if it names one.
    fn statement(&self, handle: &[u8], metadata: &MetadataMap) -> Result<StatementHandle, Status> {
        let mut statement = StatementHandle::decode(handle)?;
        if let Some(database) = database_header(metadata)? {
            statement.database = database;
        }
        Ok(statement)
    }

    fn session(
        &self,
        metadata: &MetadataMap,
    ) -> Result<datafusion::prelude::SessionContext, Status> {
        let database = database(metadata)?;
        self.querier.session(&database).map_err(query_status)
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        let token = bearer_token(request.metadata());
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<BoxStream<HandshakeResponse>> =
            Response::new(Box::pin(futures::stream::iter([Ok(response)])));
        let bearer = format!("Bearer {token}").parse().map_err(|_| {
            Status::invalid_argument("the credentials hold characters a header cannot")
        })?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    // --- statements -------------------------------------------------------------------------

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let statement = StatementHandle::new(database(request.metadata())?, query.query);
        self.statement_info(statement, request.into_inner()).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let statement = self.statement(&query.prepared_statement_handle, request.metadata())?;
        self.statement_info(statement, request.into_inner()).await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let statement = self.statement(&ticket.statement_handle, request.metadata())?;
        self.run(
            &statement.database,
            &statement.sql,
            statement.params()?,
            Tags::Strings,
        )
        .await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let statement = self.statement(&query.prepared_statement_handle, request.metadata())?;
        self.run(
            &statement.database,
            &statement.sql,
            statement.params()?,
            Tags::Strings,
        )
        .await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        if query.transaction_id.is_some() {
            return Err(Status::unimplemented("transactions are not supported"));
        }
        let statement = StatementHandle::new(database(request.metadata())?, query.query);
        let described = self
            .querier
            .describe(&statement.database, &statement.sql, QueryParams::None)
            .await
            .map_err(query_status)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: statement.encode()?,
            dataset_schema: schema_ipc(&Tags::Strings.schema(&described.schema))?,
            parameter_schema: schema_ipc(&described.parameters)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let statement = self.statement(&query.prepared_statement_handle, request.metadata())?;
        let flight = request.into_inner().map_err(FlightError::from);
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(flight)
                .try_collect()
                .await
                .map_err(|e| {
                    Status::invalid_argument(format!("cannot read the parameters: {e}"))
                })?;
        let statement = match batches.as_slice() {
            [] => statement,
            [batch] => statement.with_params(batch.clone())?,
            _ => {
                let schema = batches[0].schema();
                let batch = arrow::compute::concat_batches(&schema, &batches).map_err(|e| {
                    Status::invalid_argument(format!("cannot read the parameters: {e}"))
                })?;
                statement.with_params(batch)?
            }
        };
        // Check the parameters now, so a bad one fails the bind rather than the query.
        self.querier
            .describe(&statement.database, &statement.sql, statement.params()?)
            .await
            .map_err(query_status)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(statement.encode()?),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Ok(()) // handles hold everything: there is nothing to release
    }

    // --- catalog metadata --------------------------------------------------------------------

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info(
            &metadata::catalogs_schema(),
            query.as_any(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        _query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        // Listing catalogs needs no database; with one, it lists what its session sees.
        let session = match database_header(request.metadata())? {
            Some(database) => Some(self.querier.session(&database).map_err(query_status)?),
            None => None,
        };
        batch_response(metadata::catalogs(session.as_ref()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::db_schemas_schema(query.clone());
        info(&schema, query.as_any(), request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let session = self.session(request.metadata())?;
        batch_response(metadata::db_schemas(&session, query))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::tables_schema(query.clone());
        info(&schema, query.as_any(), request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let session = self.session(request.metadata())?;
        batch_response(metadata::tables(&session, query).await)
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info(
            &metadata::table_types_schema(),
            query.as_any(),
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        batch_response(metadata::table_types())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info(
            &self.sql_info.schema(),
            query.as_any(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        batch_response(query.into_builder(&self.sql_info).build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info(
            &self.type_info.schema(),
            query.as_any(),
            request.into_inner(),
        )
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        batch_response(query.into_builder(&self.type_info).build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info(
            &metadata::PRIMARY_KEYS,
            query.as_any(),
            request.into_inner(),
        )
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        batch_response(Ok(RecordBatch::new_empty(Arc::clone(
            &metadata::PRIMARY_KEYS,
        ))))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info(
            &metadata::FOREIGN_KEYS,
            query.as_any(),
            request.into_inner(),
        )
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        batch_response(Ok(RecordBatch::new_empty(Arc::clone(
            &metadata::FOREIGN_KEYS,
        ))))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info(
            &metadata::FOREIGN_KEYS,
            query.as_any(),
            request.into_inner(),
        )
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        batch_response(Ok(RecordBatch::new_empty(Arc::clone(
            &metadata::FOREIGN_KEYS,
        ))))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info(
            &metadata::FOREIGN_KEYS,
            query.as_any(),
            request.into_inner(),
        )
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        batch_response(Ok(RecordBatch::new_empty(Arc::clone(
            &metadata::FOREIGN_KEYS,
        ))))
    }

    // --- what a read-only SQL server does not do ----------------------------------------------

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(substrait_unsupported())
    }

    async fn do_put_statement_update(
        &self,
        _query: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn do_put_statement_ingest(
        &self,
        _query: CommandStatementIngest,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn do_put_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(substrait_unsupported())
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        _query: ActionCreatePreparedSubstraitPlanRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        Err(substrait_unsupported())
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        _request: Request<Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        Err(transactions_unsupported())
    }

    async fn do_action_end_transaction(
        &self,
        _query: ActionEndTransactionRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Err(transactions_unsupported())
    }

    async fn do_action_begin_savepoint(
        &self,
        _query: ActionBeginSavepointRequest,
        _request: Request<Action>,
    ) -> Result<ActionBeginSavepointResult, Status> {
        Err(transactions_unsupported())
    }

    async fn do_action_end_savepoint(
        &self,
        _query: ActionEndSavepointRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Err(transactions_unsupported())
    }

    async fn do_action_cancel_query(
        &self,
        _query: ActionCancelQueryRequest,
        _request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        Err(Status::unimplemented(
            "CancelQuery is not supported: cancel the DoGet call instead, which stops the query",
        ))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Rows per record batch sent: selective queries produce many small batches, and each costs a
/// message and, with dictionaries, the dictionaries again.
const FLIGHT_BATCH_ROWS: usize = 8192;

/// `stream` with small batches joined up to `rows` rows (larger ones pass as they are). A
/// batch waits only until enough rows arrive or the stream ends.
fn coalesced(
    stream: datafusion::execution::SendableRecordBatchStream,
    rows: usize,
) -> impl Stream<Item = datafusion::error::Result<RecordBatch>> + Send + 'static {
    let coalescer = arrow_select::coalesce::BatchCoalescer::new(stream.schema(), rows);
    futures::stream::unfold(
        (stream, coalescer, false),
        |(mut stream, mut coalescer, mut ended)| async move {
            loop {
                if let Some(batch) = coalescer.next_completed_batch() {
                    return Some((Ok(batch), (stream, coalescer, ended)));
                }
                if ended {
                    return None;
                }
                let pushed = match stream.next().await {
                    Some(Ok(batch)) => coalescer.push_batch(batch),
                    Some(Err(e)) => return Some((Err(e), (stream, coalescer, true))),
                    None => {
                        ended = true;
                        coalescer.finish_buffered_batch()
                    }
                };
                if let Err(e) = pushed {
                    return Some((Err(e.into()), (stream, coalescer, true)));
                }
            }
        },
    )
}

/// How tag columns travel.
#[derive(Debug, Clone, Copy)]
enum Tags {
    /// As the data model's `Dictionary(Int32, Utf8)`: for the influxdb3 clients' JSON tickets,
    /// which pyarrow reads (pandas gets categoricals).
    Dictionary,
    /// As plain `Utf8`: for Flight SQL statements, as InfluxDB 3 sends them. Flight SQL's
    /// clients are generic SQL tools and not all of them read dictionaries: Grafana's InfluxDB
    /// SQL data source leaves dictionary columns empty.
    Strings,
}

impl Tags {
    /// The schema a result of `schema` travels with.
    fn schema(self, schema: &Schema) -> Schema {
        match self {
            Self::Dictionary => schema.clone(),
            Self::Strings => {
                let fields: Vec<Field> = schema
                    .fields()
                    .iter()
                    .map(|f| match f.data_type() {
                        DataType::Dictionary(_, values) => {
                            f.as_ref().clone().with_data_type(values.as_ref().clone())
                        }
                        _ => f.as_ref().clone(),
                    })
                    .collect();
                Schema::new_with_metadata(fields, schema.metadata().clone())
            }
        }
    }
}

/// `batch` with every string dictionary whose values repeat rebuilt with each value once.
/// Concatenating buffered chunks can repeat a value, which Arrow allows but pandas refuses to
/// turn into a categorical.
fn unique_dictionary_values(batch: RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut rebuilt: Option<Vec<ArrayRef>> = None;
    for (i, column) in batch.columns().iter().enumerate() {
        let Some(values) = column
            .as_dictionary_opt::<Int32Type>()
            .and_then(|d| d.values().as_string_opt::<i32>())
        else {
            continue;
        };
        let mut seen = HashSet::with_capacity(values.len());
        if values.iter().all(|v| seen.insert(v)) {
            continue;
        }
        // Casting to a dictionary builds it value by value, each once.
        let plain = arrow::compute::cast(column, values.data_type())?;
        let column = arrow::compute::cast(&plain, column.data_type())?;
        rebuilt.get_or_insert_with(|| batch.columns().to_vec())[i] = column;
    }
    match rebuilt {
        None => Ok(batch),
        Some(columns) => RecordBatch::try_new(batch.schema(), columns),
    }
}

/// The database named by the request's metadata; an error that says which header to set when
/// none is, or when two name different databases.
fn database(metadata: &MetadataMap) -> Result<String, Status> {
    database_header(metadata)?.ok_or_else(|| {
        Status::invalid_argument(
            "no database given: set the `database` gRPC header (call metadata) to the database to query",
        )
    })
}

fn database_header(metadata: &MetadataMap) -> Result<Option<String>, Status> {
    let mut found: Option<(&str, &str)> = None;
    for header in DATABASE_HEADERS {
        let Some(value) = metadata.get(header) else {
            continue;
        };
        let value = value.to_str().map_err(|_| {
            Status::invalid_argument(format!("the `{header}` header must be UTF-8 text"))
        })?;
        if value.is_empty() {
            continue;
        }
        match found {
            None => found = Some((header, value)),
            Some((first, chosen)) if chosen != value => {
                return Err(Status::invalid_argument(format!(
                    "the `{first}` header names database `{chosen}` but `{header}` names `{value}`; set only `database`"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(found.map(|(_, value)| value.to_owned()))
}

/// The token a handshake hands back: the password of basic credentials (InfluxDB 3 clients
/// send their token as the password), a bearer token as it came, or a fixed one.
fn bearer_token(metadata: &MetadataMap) -> String {
    use base64::Engine as _;
    let header = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Some(token) = header.strip_prefix("Bearer ") {
        return token.trim().to_owned();
    }
    header
        .strip_prefix("Basic ")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(_, password)| password.to_owned())
        })
        .filter(|password| !password.is_empty())
        .unwrap_or_else(|| "tributary".to_owned())
}

/// The gRPC status of a query error: who can fix it decides the code.
fn query_status(e: QueryError) -> Status {
    match &e {
        QueryError::DatabaseNotFound { .. } => Status::not_found(e.to_string()),
        QueryError::Invalid(_) => Status::invalid_argument(e.to_string()),
        QueryError::ResourcesExhausted { .. } => Status::resource_exhausted(e.to_string()),
        QueryError::Internal(source) => {
            let message = format!("the query failed: {source}");
            tracing::error!(error = %message, "Flight query failed");
            Status::internal(message)
        }
    }
}

fn info(
    schema: &Schema,
    command: arrow_flight::sql::Any,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(command.encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode the result schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// One batch as a `DoGet` answer.
fn batch_response(
    batch: Result<RecordBatch, FlightError>,
) -> Result<Response<BoxStream<FlightData>>, Status> {
    let batch = batch.map_err(Status::from)?;
    let schema: SchemaRef = batch.schema();
    let flight = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter([Ok(batch)]))
        .map_err(Status::from);
    Ok(Response::new(Box::pin(flight)))
}

fn schema_ipc(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e| Status::internal(format!("cannot encode a schema: {e}")))?;
    Ok(bytes)
}

fn read_only() -> Status {
    Status::unimplemented(
        "Tributary's Flight SQL is read-only: write line protocol to /api/v3/write_lp",
    )
}

fn substrait_unsupported() -> Status {
    Status::unimplemented("Substrait plans are not supported: send SQL")
}

fn transactions_unsupported() -> Status {
    Status::unimplemented(
        "transactions are not supported: every statement reads a consistent snapshot on its own",
    )
}
