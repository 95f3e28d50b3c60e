//! Flight SQL and Flight as a Rust client sees them: arrow-flight's `FlightSqlServiceClient`
//! (and the plain `FlightServiceClient` where the status code matters) against a real
//! `tributary serve`, on the port that also serves HTTP.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int32Type, Schema, SchemaRef, TimeUnit};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo, CommandStatementUpdate,
    ProstMessageExt, SqlInfo,
};
use arrow_flight::{FlightDescriptor, FlightInfo, Ticket};
use futures::TryStreamExt;
use prost::Message as _;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::server::Server;

const DB: &str = "flightdb";

const LINES: &str = "\
cpu,host=a,region=us usage=1.5,count=3i 1000
cpu,host=b,region=eu usage=2.5,count=4i 2000
mem,host=a free=10i 1000";

async fn server_with_data() -> Server {
    let server = Server::start();
    server.write_lp(DB, LINES).await;
    server
}

async fn channel(server: &Server) -> Channel {
    Channel::from_shared(format!("http://{}", server.addr))
        .expect("URI")
        .connect()
        .await
        .expect("gRPC connects to the HTTP port")
}

async fn sql_client(server: &Server) -> FlightSqlServiceClient<Channel> {
    let mut client = FlightSqlServiceClient::new(channel(server).await);
    client.set_header("database", DB);
    client
}

/// Every batch of every endpoint of `info`.
async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("endpoint has a ticket");
        let stream = client.do_get(ticket).await.expect("DoGet");
        batches.extend(stream.try_collect::<Vec<_>>().await.expect("batches"));
    }
    batches
}

fn one_batch(batches: Vec<RecordBatch>) -> RecordBatch {
    let schema = batches.first().expect("a batch").schema();
    arrow::compute::concat_batches(&schema, &batches).expect("concat")
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
    let array = batch.column_by_name(column).expect("column");
    let array = arrow::compute::cast(array, &DataType::Utf8).expect("cast");
    let array = array.as_string::<i32>();
    (0..array.len())
        .map(|i| {
            if array.is_null(i) {
                "NULL".to_owned()
            } else {
                array.value(i).to_owned()
            }
        })
        .collect()
}

/// Runs `request` on a plain Flight client with `headers` as metadata; the status on error.
async fn flight_get_info(
    server: &Server,
    headers: &[(&'static str, &str)],
    sql: &str,
) -> Result<FlightInfo, tonic::Status> {
    let mut client = FlightServiceClient::new(channel(server).await);
    let command = arrow_flight::sql::CommandStatementQuery {
        query: sql.to_owned(),
        transaction_id: None,
    };
    let mut request = Request::new(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()));
    for (k, v) in headers {
        request.metadata_mut().insert(*k, v.parse().unwrap());
    }
    client
        .get_flight_info(request)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn statement_results_carry_tags_as_strings_and_the_other_types_of_the_data_model() {
    let server = server_with_data().await;
    let mut client = sql_client(&server).await;
    let info = client
        .execute(
            "SELECT host, region, usage, count, time FROM cpu ORDER BY time".into(),
            None,
        )
        .await
        .expect("GetFlightInfo");
    let schema = info
        .clone()
        .try_decode_schema()
        .expect("FlightInfo carries the schema");
    let batch = one_batch(fetch(&mut client, info).await);
    assert_eq!(
        batch.schema().fields(),
        schema.fields(),
        "DoGet matches GetFlightInfo"
    );
    // Flight SQL clients such as Grafana's do not all read dictionaries.
    assert_eq!(
        batch.schema().field_with_name("host").unwrap().data_type(),
        &DataType::Utf8
    );
    assert_eq!(
        batch.schema().field_with_name("time").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Nanosecond, None)
    );
    assert_eq!(strings(&batch, "host"), ["a", "b"]);
    assert_eq!(strings(&batch, "usage"), ["1.5", "2.5"]);
    let count = batch.column_by_name("count").unwrap();
    assert_eq!(
        count
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values(),
        &[3, 4]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_database_header_selects_the_database() {
    let server = server_with_data().await;
    for header in ["database", "bucket", "bucket-name", "iox-namespace-name"] {
        let mut client = FlightSqlServiceClient::new(channel(&server).await);
        client.set_header(header, DB);
        let info = client
            .execute("SELECT count(*) AS n FROM cpu".into(), None)
            .await
            .unwrap_or_else(|e| panic!("`{header}` header: {e}"));
        let batch = one_batch(fetch(&mut client, info).await);
        assert_eq!(strings(&batch, "n"), ["2"], "`{header}` header");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_conflicting_database_is_an_invalid_argument_naming_the_header() {
    let server = server_with_data().await;
    let none = flight_get_info(&server, &[], "SELECT 1").await.unwrap_err();
    assert_eq!(none.code(), Code::InvalidArgument);
    assert!(none.message().contains("`database`"), "{}", none.message());

    let conflict = flight_get_info(
        &server,
        &[("database", DB), ("bucket", "other")],
        "SELECT 1",
    )
    .await
    .unwrap_err();
    assert_eq!(conflict.code(), Code::InvalidArgument);
    assert!(
        conflict.message().contains("`database`"),
        "{}",
        conflict.message()
    );

    // The same database under two names is no conflict.
    flight_get_info(&server, &[("database", DB), ("bucket", DB)], "SELECT 1")
        .await
        .expect("agreeing headers");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_map_to_grpc_codes() {
    let server = server_with_data().await;
    let unknown = flight_get_info(&server, &[("database", "nope")], "SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{}", unknown.message());
    assert!(unknown.message().contains("nope"));

    let bad_sql = flight_get_info(&server, &[("database", DB)], "SELECT nothing FROM cpu")
        .await
        .unwrap_err();
    assert_eq!(
        bad_sql.code(),
        Code::InvalidArgument,
        "{}",
        bad_sql.message()
    );
    assert!(
        bad_sql.message().contains("nothing"),
        "{}",
        bad_sql.message()
    );

    let mut client = FlightServiceClient::new(channel(&server).await);
    let update = CommandStatementUpdate {
        query: "DELETE FROM cpu".into(),
        transaction_id: None,
    };
    let descriptor = FlightDescriptor::new_cmd(update.as_any().encode_to_vec());
    let data = arrow_flight::FlightData {
        flight_descriptor: Some(descriptor),
        ..Default::default()
    };
    let mut request = Request::new(futures::stream::iter([data]));
    request
        .metadata_mut()
        .insert("database", DB.parse().unwrap());
    let status = client.do_put(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(
        status.message().contains("write_lp"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prepared_statements_bind_parameters_by_position_and_by_name() {
    let server = server_with_data().await;
    let mut client = sql_client(&server).await;
    for sql in [
        "SELECT usage FROM cpu WHERE host = $1 AND count > $2",
        "SELECT usage FROM cpu WHERE host = ? AND count > ?",
    ] {
        let mut prepared = client.prepare(sql.into(), None).await.expect("prepare");
        assert_eq!(
            prepared.dataset_schema().unwrap().field(0).name(),
            "usage",
            "{sql}"
        );
        assert_eq!(
            prepared.parameter_schema().unwrap().fields().len(),
            2,
            "{sql}"
        );
        let params = RecordBatch::try_from_iter([
            ("0", Arc::new(StringArray::from(vec!["b"])) as _),
            ("1", Arc::new(Int64Array::from(vec![1])) as _),
        ])
        .unwrap();
        prepared.set_parameters(params).unwrap();
        let info = prepared.execute().await.expect("execute with parameters");
        let batch = one_batch(fetch(&mut client, info).await);
        assert_eq!(strings(&batch, "usage"), ["2.5"], "{sql}");
        prepared.close().await.expect("close");
    }

    let mut named = client
        .prepare("SELECT usage FROM cpu WHERE host = $host".into(), None)
        .await
        .expect("prepare");
    let params =
        RecordBatch::try_from_iter([("host", Arc::new(StringArray::from(vec!["a"])) as _)])
            .unwrap();
    named.set_parameters(params).unwrap();
    let info = named.execute().await.expect("execute");
    assert_eq!(
        strings(&one_batch(fetch(&mut client, info).await), "usage"),
        ["1.5"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_commands_list_what_sql_can_name() {
    let server = server_with_data().await;
    let mut client = sql_client(&server).await;

    let info = client.get_catalogs().await.expect("GetCatalogs");
    let catalogs = one_batch(fetch(&mut client, info).await);
    assert_eq!(strings(&catalogs, "catalog_name"), ["public"]);

    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("public".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .expect("GetDbSchemas");
    let schemas = strings(&one_batch(fetch(&mut client, info).await), "db_schema_name");
    for expected in ["information_schema", "iox", "system"] {
        assert!(
            schemas.iter().any(|s| s == expected),
            "{expected} in {schemas:?}"
        );
    }

    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("iox".into()),
            table_name_filter_pattern: Some("%".into()),
            table_types: vec!["BASE TABLE".into()],
            include_schema: true,
        })
        .await
        .expect("GetTables");
    let tables = one_batch(fetch(&mut client, info).await);
    assert_eq!(strings(&tables, "table_name"), ["cpu", "mem"]);
    assert_eq!(strings(&tables, "table_type"), ["BASE TABLE", "BASE TABLE"]);
    let schema_bytes = tables
        .column_by_name("table_schema")
        .unwrap()
        .as_binary::<i32>();
    let cpu_schema = Schema::try_from(arrow_flight::IpcMessage(bytes::Bytes::copy_from_slice(
        schema_bytes.value(0),
    )))
    .expect("the table schema is an IPC schema message");
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    assert_eq!(
        cpu_schema.field_with_name("host").unwrap().data_type(),
        &dictionary
    );
    assert_eq!(
        cpu_schema.field_with_name("usage").unwrap().data_type(),
        &DataType::Float64
    );
    assert_eq!(
        cpu_schema.field_with_name("count").unwrap().data_type(),
        &DataType::Int64
    );

    let info = client
        .get_tables(CommandGetTables {
            catalog: Some("public".into()),
            db_schema_filter_pattern: None,
            table_name_filter_pattern: Some("c_u".into()),
            table_types: vec![],
            include_schema: false,
        })
        .await
        .expect("GetTables by name pattern");
    let tables = one_batch(fetch(&mut client, info).await);
    assert_eq!(strings(&tables, "table_name"), ["cpu"]);
    assert!(tables.column_by_name("table_schema").is_none());

    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("information_schema".into()),
            table_name_filter_pattern: Some("columns".into()),
            table_types: vec![],
            include_schema: false,
        })
        .await
        .expect("GetTables of information_schema");
    let tables = one_batch(fetch(&mut client, info).await);
    assert_eq!(strings(&tables, "table_type"), ["VIEW"]);

    let info = client.get_table_types().await.expect("GetTableTypes");
    let types = strings(&one_batch(fetch(&mut client, info).await), "table_type");
    assert_eq!(types, ["BASE TABLE", "VIEW"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_info_and_type_info_describe_a_read_only_sql_server() {
    let server = server_with_data().await;
    let mut client = sql_client(&server).await;
    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
            SqlInfo::SqlIdentifierQuoteChar,
        ])
        .await
        .expect("GetSqlInfo");
    let batch = one_batch(fetch(&mut client, info).await);
    assert_eq!(batch.num_rows(), 3);
    let names = batch
        .column(0)
        .as_primitive::<arrow::datatypes::UInt32Type>();
    let values = batch.column(1).as_union();
    for row in 0..batch.num_rows() {
        let value = values.value(row);
        match names.value(row) {
            n if n == SqlInfo::FlightSqlServerName as u32 => {
                assert_eq!(value.as_string::<i32>().value(0), "Tributary")
            }
            n if n == SqlInfo::FlightSqlServerReadOnly as u32 => {
                assert!(value.as_boolean().value(0))
            }
            n if n == SqlInfo::SqlIdentifierQuoteChar as u32 => {
                assert_eq!(value.as_string::<i32>().value(0), "\"")
            }
            other => panic!("unasked info {other}"),
        }
    }

    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .expect("GetXdbcTypeInfo");
    let types = strings(&one_batch(fetch(&mut client, info).await), "type_name");
    for expected in ["BIGINT", "BOOLEAN", "DOUBLE", "TIMESTAMP", "VARCHAR"] {
        assert!(
            types.iter().any(|t| t == expected),
            "{expected} in {types:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn key_commands_answer_with_no_rows() {
    let server = server_with_data().await;
    let mut client = sql_client(&server).await;
    let infos = [
        client
            .get_primary_keys(CommandGetPrimaryKeys {
                catalog: None,
                db_schema: None,
                table: "cpu".into(),
            })
            .await,
        client
            .get_exported_keys(CommandGetExportedKeys {
                catalog: None,
                db_schema: None,
                table: "cpu".into(),
            })
            .await,
        client
            .get_imported_keys(CommandGetImportedKeys {
                catalog: None,
                db_schema: None,
                table: "cpu".into(),
            })
            .await,
        client
            .get_cross_reference(CommandGetCrossReference {
                pk_catalog: None,
                pk_db_schema: None,
                pk_table: "cpu".into(),
                fk_catalog: None,
                fk_db_schema: Some("iox".into()),
                fk_table: "mem".into(),
            })
            .await,
    ];
    for info in infos {
        let info = info.expect("key command");
        let schema = info.clone().try_decode_schema().unwrap();
        assert!(schema.fields().len() >= 6, "{schema:?}");
        let rows: usize = fetch(&mut client, info)
            .await
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn handshake_answers_basic_credentials_with_a_bearer_token() {
    let server = server_with_data().await;
    let mut client = sql_client(&server).await;
    client
        .handshake("user", "my-token")
        .await
        .expect("handshake");
    assert_eq!(client.token().map(String::as_str), Some("my-token"));
    // Later calls carry the bearer token and still work.
    let info = client
        .execute("SELECT 1 AS one".into(), None)
        .await
        .expect("execute");
    assert_eq!(
        strings(&one_batch(fetch(&mut client, info).await), "one"),
        ["1"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn do_get_with_a_json_ticket_runs_sql_in_one_call() {
    let server = server_with_data().await;
    let client = FlightServiceClient::new(channel(&server).await);
    let run = |ticket: serde_json::Value| {
        let mut client = client.clone();
        async move {
            let request = Ticket::new(ticket.to_string());
            let stream = client.do_get(request).await?.into_inner();
            let mut stream =
                FlightRecordBatchStream::new_from_flight_data(stream.map_err(Into::into));
            let mut batches = Vec::new();
            while let Some(batch) = stream.try_next().await.map_err(|e| match e {
                arrow_flight::error::FlightError::Tonic(status) => *status,
                other => tonic::Status::unknown(other.to_string()),
            })? {
                batches.push(batch);
            }
            Ok::<_, tonic::Status>((stream.schema().cloned(), batches))
        }
    };
    let (_, batches) = run(serde_json::json!({
        "database": DB,
        "sql_query": "SELECT host, usage FROM cpu WHERE host = $host",
        "query_type": "sql",
        "params": {"host": "b"},
    }))
    .await
    .expect("JSON ticket");
    assert_eq!(strings(&one_batch(batches), "usage"), ["2.5"]);

    for alias in ["namespace_name", "bucket"] {
        let (_, batches) = run(serde_json::json!({
            alias: DB, "sql_query": "SELECT count(*) AS n FROM mem", "query_type": "sql",
        }))
        .await
        .unwrap_or_else(|e| panic!("{alias}: {e}"));
        assert_eq!(strings(&one_batch(batches), "n"), ["1"], "{alias}");
    }

    let influxql = run(serde_json::json!({
        "database": DB, "sql_query": "SELECT * FROM cpu", "query_type": "influxql",
    }))
    .await
    .unwrap_err();
    assert_eq!(influxql.code(), Code::Unimplemented);

    let unknown = run(serde_json::json!({
        "database": "nope", "sql_query": "SELECT 1", "query_type": "sql",
    }))
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // No rows still sends the schema first.
    let (schema, empty): (Option<SchemaRef>, _) = run(serde_json::json!({
        "database": DB, "sql_query": "SELECT host FROM cpu WHERE false", "query_type": "sql",
    }))
    .await
    .expect("empty result");
    let rows: usize = empty.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 0);
    let schema = schema.expect("the schema comes first, also without rows");
    assert_eq!(schema.field(0).name(), "host");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_ticket_results_keep_tags_as_dictionaries_with_each_value_once() {
    let server = Server::start();
    // Two writes whose buffered chunks each have their own `region` dictionary.
    server
        .write_lp(
            DB,
            "cpu,host=a,region=eu u=1 1\ncpu,host=b,region=us u=2 1\ncpu,host=a,region=eu u=3 2",
        )
        .await;
    server.write_lp(DB, "cpu,host=c,region=us u=4 3").await;
    let mut client = FlightServiceClient::new(channel(&server).await);
    let ticket = serde_json::json!({
        "database": DB, "sql_query": "SELECT host, region FROM cpu", "query_type": "sql",
    });
    let stream = client
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .unwrap()
        .into_inner();
    let batches: Vec<RecordBatch> =
        FlightRecordBatchStream::new_from_flight_data(stream.map_err(Into::into))
            .try_collect()
            .await
            .unwrap();
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    for batch in &batches {
        let region = batch.column_by_name("region").unwrap();
        assert_eq!(region.data_type(), &dictionary);
        let values: Vec<&str> = region
            .as_dictionary::<Int32Type>()
            .values()
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        let unique: std::collections::BTreeSet<_> = values.iter().collect();
        assert_eq!(unique.len(), values.len(), "{values:?}");
    }
    let mut regions = strings(&one_batch(batches), "region");
    regions.sort();
    assert_eq!(regions, ["eu", "eu", "us", "us"]);
}
