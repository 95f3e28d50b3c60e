"""Arrow Flight and Flight SQL, on the HTTP port, with the clients people use.

Specifies, against the real binary (data written over HTTP, read over gRPC):
- influxdb3-python (`InfluxDBClient3.query`, a Flight `DoGet` with a JSON ticket) returns
  the rows as an Arrow table, a pandas frame or a polars frame, binds `query_parameters`
  to `$name` placeholders, and reads another database with `database=`;
- the ADBC Flight SQL driver: `cursor.execute` (prepared statements) and plain statements
  (`CommandStatementQuery`), `fetchall`/`fetch_arrow_table`/`fetch_df`, parameters as `$1` and `?`
  (re-bound on the same prepared statement), catalog metadata (`adbc_get_objects`,
  `adbc_get_table_schema`, `adbc_get_table_types`, `adbc_get_info`), the database from
  the metadata `database` or its older names, bearer tokens and basic-auth `Handshake`;
- plain `pyarrow.flight`: the JSON ticket (`database` or its aliases `namespace_name` and
  `bucket`, optional `params`), and its errors as the gRPC codes pyarrow maps to exceptions:
  INVALID_ARGUMENT (`ArrowInvalid`), NOT_FOUND (`ArrowKeyError`), UNIMPLEMENTED
  (`ArrowNotImplementedError`) for InfluxQL;
- Grafana: the statements its InfluxDB data source (SQL mode) and the FlightSQL plugin send
  for the health check, schema browsing and time-series panels, run the way they run them;
- one port: a large Flight stream does not hold up HTTP, nor a large HTTP response Flight;
  the HTTP API answers over HTTP/2 with prior knowledge; gRPC is told apart by content type.

Result types. String fields are `string` (not `string_view`), `time` `timestamp[ns]`
without a time zone, on every path. Tags depend on the path:
- a plain Flight `DoGet` with a JSON ticket (influxdb3-python, pyarrow.flight): tags stay
  `dictionary<int32, string>` (dictionaries sent, not hydrated), each value once in a
  dictionary, so pandas reads them as categoricals (duplicates used to fail with
  "Categorical categories must be unique") and polars as `Categorical`;
- Flight SQL (`CommandStatementQuery`, prepared statements: ADBC, Grafana, JDBC): tags are
  `string`, in the data and in the FlightInfo and prepared-statement dataset schemas, because
  Grafana's Arrow reader (grafana pkg/tsdb/influxdb/fsql/arrow.go) has no dictionary case and
  shows dictionary columns empty. Catalog metadata (`GetTables` with `include_schema`,
  `information_schema.columns`) describes the table, not a result: tags are dictionaries there.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import requests
from pyarrow import flight

from conftest import count_rows, expect_status, query, write_lp

T0 = 1_700_000_000 * 1_000_000_000  # 2023-11-14T22:13:20Z
S = 1_000_000_000
T0_NAIVE = dt.datetime(2023, 11, 14, 22, 13, 20)  # `time` has no time zone: naive datetimes

CPU_LINES = (
    f'cpu,host=a,region=eu usage=1.5,count=1i,ok=true,msg="one" {T0}\n'
    f'cpu,host=b,region=us usage=2.5,count=2i,ok=false,msg="two" {T0 + S}\n'
    f'cpu,host=a,region=eu usage=3.5,count=3i,ok=true,msg="three" {T0 + 2 * S}\n'
)
MEM_LINES = f"mem,host=a free=10i {T0}\n"
CPU_COLUMNS = {"host", "region", "usage", "count", "ok", "msg", "time"}

#: Upper bound of every gRPC call a test makes: a hang fails the test instead of blocking it.
RPC_TIMEOUT_S = 60.0


#: Tags in the table's schema and in JSON-ticket results (influxdb3-python, pyarrow.flight).
DICTIONARY = pa.dictionary(pa.int32(), pa.string())
#: Tags in Flight SQL results (ADBC, Grafana, JDBC): Grafana cannot read dictionary columns.
FLIGHT_SQL_TAG = pa.string()


def assert_data_model_types(schema: pa.Schema, *, tags: pa.DataType) -> None:
    """The types of the `cpu` columns in `schema` (those it has): the data model's, with tags
    typed `tags` (`DICTIONARY` or `FLIGHT_SQL_TAG`, by path)."""
    expected = {
        "host": tags,
        "region": tags,
        "msg": pa.string(),  # not string_view / large_string
        "time": pa.timestamp("ns"),  # no time zone
        "usage": pa.float64(),
        "count": pa.int64(),
        "ok": pa.bool_(),
    }
    for name in schema.names:
        if name in expected:
            assert schema.field(name).type == expected[name], f"{name}: {schema.field(name).type}\n{schema}"


def assert_dictionaries_hold_each_value_once(table: pa.Table) -> None:
    """Every dictionary of every dictionary column of `table` (each chunk has its own) lists
    each value once: pandas refuses categoricals with repeated categories."""
    for name in table.column_names:
        column = table.column(name)
        if not pa.types.is_dictionary(column.type):
            continue
        for chunk in column.chunks:
            values = chunk.dictionary.to_pylist()
            assert len(values) == len(set(values)), f"{name}: dictionary {values}"


def grpc_addr(server) -> str:
    """`127.0.0.1:PORT`: the HTTP address, which serves gRPC too."""
    return server.url.removeprefix("http://")


@pytest.fixture
def cpu(server, db):
    """The server with three `cpu` rows and one `mem` row in `db`."""
    expect_status(write_lp(server, db, CPU_LINES + MEM_LINES, precision="nanosecond"), 204)
    return server


#: Two writes that share the tag value `region=us` (the data of docs/python.md). Each write
#: is buffered with its own dictionaries, so a result over both held `us` twice in one
#: dictionary before the server rebuilt them, and pandas failed with "Categorical categories
#: must be unique".
TWO_WRITES = (
    "cpu,host=a,region=eu usage=41.5 1700000000\n"
    "cpu,host=b,region=us usage=12.0 1700000000\n"
    "cpu,host=a,region=eu usage=43.1 1700000010",
    "cpu,host=c,region=us usage=7.25 1700000020",
)


@pytest.fixture
def two_writes(server, db):
    """The server with `TWO_WRITES` in `db`, written one request each."""
    for body in TWO_WRITES:
        expect_status(write_lp(server, db, body, precision="second"), 204)
    return server


# -- influxdb3-python ----------------------------------------------------------------------


@pytest.fixture
def client3(cpu, db):
    from influxdb_client_3 import InfluxDBClient3

    client = InfluxDBClient3(host=cpu.url, database=db, token="x")
    yield client
    client.close()


def test_influxdb3_python_query_returns_an_arrow_table(client3):
    table = client3.query("SELECT host, region, usage, count, ok, msg, time FROM cpu ORDER BY time")
    assert isinstance(table, pa.Table)
    assert_data_model_types(table.schema, tags=DICTIONARY)
    assert table.to_pylist() == [
        {"host": "a", "region": "eu", "usage": 1.5, "count": 1, "ok": True, "msg": "one", "time": T0_NAIVE},
        {"host": "b", "region": "us", "usage": 2.5, "count": 2, "ok": False, "msg": "two", "time": T0_NAIVE + dt.timedelta(seconds=1)},
        {"host": "a", "region": "eu", "usage": 3.5, "count": 3, "ok": True, "msg": "three", "time": T0_NAIVE + dt.timedelta(seconds=2)},
    ]
    assert table.column("time").cast(pa.int64()).to_pylist() == [T0, T0 + S, T0 + 2 * S]


def test_influxdb3_python_query_into_pandas(client3):
    import pandas as pd

    frame = client3.query("SELECT host, usage, msg, time FROM cpu ORDER BY time", mode="pandas")
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["host"]) == ["a", "b", "a"]
    assert isinstance(frame["host"].dtype, pd.CategoricalDtype)  # a dictionary column
    assert list(frame["usage"]) == [1.5, 2.5, 3.5]
    assert list(frame["msg"]) == ["one", "two", "three"]
    assert frame["time"].dtype == "datetime64[ns]"
    assert list(frame["time"]) == [pd.Timestamp(T0, unit="ns"), pd.Timestamp(T0 + S, unit="ns"), pd.Timestamp(T0 + 2 * S, unit="ns")]


def test_influxdb3_python_pandas_categoricals_after_two_writes_sharing_a_tag_value(two_writes, db):
    # Regression: `SELECT *` over two writes that both have `region=us` into pandas.
    import pandas as pd
    from influxdb_client_3 import InfluxDBClient3

    with InfluxDBClient3(host=two_writes.url, database=db, token="x") as client:
        table = client.query("SELECT * FROM cpu")
        assert table.schema.field("region").type == DICTIONARY
        assert_dictionaries_hold_each_value_once(table)
        frame = client.query("SELECT * FROM cpu", mode="pandas")
    assert isinstance(frame["region"].dtype, pd.CategoricalDtype)
    assert sorted(frame["region"].cat.categories) == ["eu", "us"]
    assert isinstance(frame["host"].dtype, pd.CategoricalDtype)
    assert sorted(frame["host"].cat.categories) == ["a", "b", "c"]
    rows = sorted(zip(frame["host"].astype(str), frame["region"].astype(str), frame["usage"]))
    assert rows == [("a", "eu", 41.5), ("a", "eu", 43.1), ("b", "us", 12.0), ("c", "us", 7.25)]


def test_influxdb3_python_query_into_polars(client3):
    import polars as pl

    frame = client3.query("SELECT host, avg(usage) AS usage, max(time) AS time FROM cpu GROUP BY host ORDER BY host", mode="polars")
    assert isinstance(frame, pl.DataFrame)
    assert frame["host"].dtype == pl.Categorical
    assert frame.schema["time"] == pl.Datetime("ns")
    assert frame.select("host", "usage").rows() == [("a", 2.5), ("b", 2.5)]
    assert frame["time"].cast(pl.Int64).to_list() == [T0 + 2 * S, T0 + S]


def test_influxdb3_python_binds_named_query_parameters(client3):
    table = client3.query(
        "SELECT usage FROM cpu WHERE host = $host AND usage > $min ORDER BY time",
        query_parameters={"host": "a", "min": 2.0},
    )
    assert table.column("usage").to_pylist() == [3.5]
    table = client3.query("SELECT host FROM cpu WHERE count >= $n AND ok = $ok ORDER BY time", query_parameters={"n": 2, "ok": True})
    assert table.column("host").to_pylist() == ["a"]


def test_influxdb3_python_reads_batch_by_batch(client3):
    reader = client3.query("SELECT * FROM cpu", mode="chunk")
    rows = 0
    for chunk in reader:
        assert_data_model_types(chunk.data.schema, tags=DICTIONARY)
        rows += chunk.data.num_rows
    assert rows == 3


def test_influxdb3_python_reads_another_database_with_database_argument(cpu, db, client3):
    other = f"{db}_other"
    expect_status(write_lp(cpu, other, f"cpu,host=z usage=9.5 {T0}", precision="nanosecond"), 204)
    table = client3.query("SELECT host, usage FROM cpu", database=other)
    assert table.to_pylist() == [{"host": "z", "usage": 9.5}]


def test_influxdb3_python_query_errors_carry_the_server_message(client3, db):
    from influxdb_client_3.exceptions import InfluxDB3ClientQueryError

    with pytest.raises(InfluxDB3ClientQueryError) as caught:
        client3.query("SELECT no_such_column FROM cpu")
    assert "no_such_column" in str(caught.value)
    with pytest.raises(InfluxDB3ClientQueryError) as caught:
        client3.query("SELECT 1", database=f"{db}_missing")
    assert f"{db}_missing" in str(caught.value)


# -- ADBC (Flight SQL) ---------------------------------------------------------------------


def adbc_connect(server, headers: dict[str, str] | None = None, **db_kwargs):
    """An ADBC Flight SQL DB-API connection to `server` sending `headers` as call metadata."""
    import adbc_driver_flightsql
    import adbc_driver_flightsql.dbapi as flightsql

    options = adbc_driver_flightsql.DatabaseOptions
    kwargs = {
        options.TIMEOUT_QUERY.value: str(RPC_TIMEOUT_S),
        options.TIMEOUT_FETCH.value: str(RPC_TIMEOUT_S),
        **{options.RPC_CALL_HEADER_PREFIX.value + name: value for name, value in (headers or {}).items()},
        **db_kwargs,
    }
    # autocommit=True: there are no transactions, every statement stands alone.
    return flightsql.connect(f"grpc://{grpc_addr(server)}", db_kwargs=kwargs, autocommit=True)


@pytest.fixture
def adbc(cpu, db):
    """Factory: `adbc(headers=None, **db_kwargs)`; the default sends `database: <db>`."""
    conns = []

    def make(headers: dict[str, str] | None = None, **db_kwargs):
        conn = adbc_connect(cpu, {"database": db} if headers is None else headers, **db_kwargs)
        conns.append(conn)
        return conn

    yield make
    for conn in conns:
        conn.close()


def plain_statement(conn, sql: str) -> pa.Table:
    """Run `sql` without preparing it, as arrow-go's `flightsql.Client.Execute` does (Grafana):
    `GetFlightInfo(CommandStatementQuery)`, exactly one endpoint, `DoGet` of its ticket. The
    FlightInfo's schema must be the schema of the data."""
    from adbc_driver_manager import AdbcStatement

    with AdbcStatement(conn.adbc_connection) as stmt:
        stmt.set_sql_query(sql)
        partitions, info_schema, _rows = stmt.execute_partitions()
        assert len(partitions) == 1, f"Grafana reads exactly one endpoint, the server gave {len(partitions)}"
        table = pa.RecordBatchReader.from_stream(conn.adbc_connection.read_partition(partitions[0])).read_all()
    assert info_schema is not None, "GetFlightInfo answered no schema"
    info_schema = pa.schema(info_schema)
    assert info_schema.equals(table.schema, check_metadata=False), f"FlightInfo:\n{info_schema}\ndata:\n{table.schema}"
    return table


def test_adbc_execute_and_fetchall(adbc):
    with adbc().cursor() as cur:
        cur.execute("SELECT host, usage, count, ok, msg, time FROM cpu ORDER BY time")
        assert cur.fetchall() == [
            ("a", 1.5, 1, True, "one", T0_NAIVE),
            ("b", 2.5, 2, False, "two", T0_NAIVE + dt.timedelta(seconds=1)),
            ("a", 3.5, 3, True, "three", T0_NAIVE + dt.timedelta(seconds=2)),
        ]
        assert [d[0] for d in cur.description] == ["host", "usage", "count", "ok", "msg", "time"]


def test_adbc_fetch_arrow_table_has_string_tags(adbc):
    # Flight SQL results carry tags as `string`, not dictionaries: Grafana's Arrow reader
    # (fsql/arrow.go) has no dictionary case. Other types are the data model's.
    with adbc().cursor() as cur:
        cur.execute("SELECT * FROM cpu ORDER BY time")
        table = cur.fetch_arrow_table()
    assert set(table.column_names) == CPU_COLUMNS
    assert_data_model_types(table.schema, tags=FLIGHT_SQL_TAG)
    assert table.column("host").to_pylist() == ["a", "b", "a"]
    assert table.column("time").cast(pa.int64()).to_pylist() == [T0, T0 + S, T0 + 2 * S]


def test_adbc_prepared_statement_dataset_schema_has_string_tags(adbc):
    # The driver answers this from the prepared statement's dataset schema (no data read).
    with adbc().cursor() as cur:
        schema = cur.adbc_execute_schema("SELECT * FROM cpu")
        assert set(schema.names) == CPU_COLUMNS
        assert_data_model_types(schema, tags=FLIGHT_SQL_TAG)
        # With parameters too: binding does not change the result's types.
        schema = cur.adbc_execute_schema("SELECT host, region, usage FROM cpu WHERE host = $1", ("a",))
        assert schema.names == ["host", "region", "usage"]
        assert_data_model_types(schema, tags=FLIGHT_SQL_TAG)


def test_adbc_plain_statement_without_prepare_has_string_tags(adbc):
    # `plain_statement` checks that the FlightInfo schema is the data's (string tags too).
    table = plain_statement(adbc(), "SELECT host, region, usage FROM cpu ORDER BY time")
    assert_data_model_types(table.schema, tags=FLIGHT_SQL_TAG)
    assert table.to_pylist() == [
        {"host": "a", "region": "eu", "usage": 1.5},
        {"host": "b", "region": "us", "usage": 2.5},
        {"host": "a", "region": "eu", "usage": 3.5},
    ]


def test_adbc_fetch_df_after_two_writes_sharing_a_tag_value(two_writes, db):
    # `SELECT *` into pandas over ADBC: tags are plain strings, not categoricals.
    import pandas as pd

    with adbc_connect(two_writes, {"database": db}) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM cpu")
        frame = cur.fetch_df()
    assert set(frame.columns) == {"host", "region", "usage", "time"}
    for tag in ("host", "region"):
        assert not isinstance(frame[tag].dtype, pd.CategoricalDtype), frame.dtypes
        assert pd.api.types.is_string_dtype(frame[tag].dtype), frame.dtypes
    rows = sorted(zip(frame["host"], frame["region"], frame["usage"]))
    assert rows == [("a", "eu", 41.5), ("a", "eu", 43.1), ("b", "us", 12.0), ("c", "us", 7.25)]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT usage, time FROM cpu WHERE host = $1 AND usage > $2 ORDER BY time",
        "SELECT usage, time FROM cpu WHERE host = ? AND usage > ? ORDER BY time",
    ],
    ids=["dollar", "qmark"],
)
def test_adbc_binds_positional_parameters(adbc, sql):
    with adbc().cursor() as cur:
        cur.execute(sql, ("a", 2.0))
        assert cur.fetchall() == [(3.5, T0_NAIVE + dt.timedelta(seconds=2))]
        # The same SQL again: the driver keeps its prepared statement and binds new values.
        cur.execute(sql, ("b", 0.0))
        assert cur.fetchall() == [(2.5, T0_NAIVE + dt.timedelta(seconds=1))]
        cur.execute(sql, ("a", 0.0))
        table = cur.fetch_arrow_table()
    assert table.column("usage").to_pylist() == [1.5, 3.5]
    assert table.schema.field("time").type == pa.timestamp("ns")


def test_adbc_parameter_of_each_type(adbc):
    with adbc().cursor() as cur:
        cur.execute("SELECT host FROM cpu WHERE count >= ? AND ok = ? AND msg <> ? ORDER BY time", (2, True, "one"))
        assert cur.fetchall() == [("a",)]


def test_adbc_get_info_names_the_server(adbc):
    info = adbc().adbc_get_info()
    assert info["vendor_name"] == "Tributary", info
    assert info.get("vendor_version"), info


def test_adbc_get_table_types(adbc):
    assert {"BASE TABLE", "VIEW"} <= set(adbc().adbc_get_table_types())


def schemas_of(objects: list[dict]) -> dict[tuple[str, str], dict[str, dict]]:
    """`{(catalog, schema): {table_name: table}}` from `adbc_get_objects(...).to_pylist()`."""
    out = {}
    for catalog in objects:
        for schema in catalog["catalog_db_schemas"] or []:
            tables = {t["table_name"]: t for t in schema["db_schema_tables"] or []}
            out[(catalog["catalog_name"], schema["db_schema_name"])] = tables
    return out


def test_adbc_get_objects_lists_catalog_schemas_and_tables(adbc):
    conn = adbc()
    catalogs = conn.adbc_get_objects(depth="catalogs").read_all().to_pylist()
    assert [c["catalog_name"] for c in catalogs] == ["public"]

    schemas = schemas_of(conn.adbc_get_objects(depth="tables").read_all().to_pylist())
    assert {("public", "iox"), ("public", "information_schema"), ("public", "system")} <= set(schemas), schemas.keys()
    iox = schemas[("public", "iox")]
    assert set(iox) == {"cpu", "mem"}
    assert {t["table_type"] for t in iox.values()} == {"BASE TABLE"}
    assert {"tables", "columns"} <= set(schemas[("public", "information_schema")])
    assert {t["table_type"] for t in schemas[("public", "information_schema")].values()} == {"VIEW"}
    assert {t["table_type"] for t in schemas[("public", "system")].values()} == {"VIEW"}


def test_adbc_get_objects_with_columns(adbc):
    objects = adbc().adbc_get_objects(depth="all", db_schema_filter="iox", table_name_filter="cpu").read_all().to_pylist()
    [cpu_table] = schemas_of(objects)[("public", "iox")].values()
    columns = cpu_table["table_columns"]
    assert {c["column_name"] for c in columns} == CPU_COLUMNS
    assert sorted(c["ordinal_position"] for c in columns) == list(range(1, len(CPU_COLUMNS) + 1))


def test_adbc_get_objects_filters_by_table_type(adbc):
    # The FlightSQL Grafana plugin lists tables with GetTables(table_types=["BASE TABLE"]).
    objects = adbc().adbc_get_objects(depth="tables", table_types_filter=["BASE TABLE"]).read_all().to_pylist()
    tables = {(schema, name) for (_, schema), found in schemas_of(objects).items() for name in found}
    assert tables == {("iox", "cpu"), ("iox", "mem")}


def test_adbc_get_table_schema(adbc):
    # The FlightSQL Grafana plugin reads columns with GetTables(name, include_schema=true).
    # It describes the table, not a result: tags are dictionaries, as stored.
    schema = adbc().adbc_get_table_schema("cpu", catalog_filter="public", db_schema_filter="iox")
    assert set(schema.names) == CPU_COLUMNS
    assert_data_model_types(schema, tags=DICTIONARY)


@pytest.mark.parametrize("header", ["database", "bucket", "bucket-name", "iox-namespace-name"])
def test_adbc_database_from_any_metadata_name(adbc, db, header):
    with adbc({header: db}).cursor() as cur:
        cur.execute("SELECT count(*) FROM cpu")
        assert cur.fetchone() == (3,)


def test_adbc_same_database_under_two_names_is_not_a_conflict(adbc, db):
    with adbc({"database": db, "bucket-name": db}).cursor() as cur:
        cur.execute("SELECT count(*) FROM cpu")
        assert cur.fetchone() == (3,)


def adbc_error(conn, sql: str):
    """The error `cursor.execute(sql)` raises (prepare or execute, whichever fails)."""
    import adbc_driver_flightsql.dbapi as flightsql

    with conn.cursor() as cur:
        with pytest.raises(flightsql.Error) as caught:
            cur.execute(sql)
            cur.fetchall()
    return caught.value


@pytest.mark.parametrize(
    "headers",
    [{}, {"database": "one", "bucket": "other"}],
    ids=["none", "conflicting"],
)
def test_adbc_without_one_database_is_invalid_argument_naming_the_header(adbc, headers):
    from adbc_driver_manager import AdbcStatusCode, ProgrammingError

    error = adbc_error(adbc(headers), "SELECT 1")
    assert isinstance(error, ProgrammingError), repr(error)
    assert error.status_code == AdbcStatusCode.INVALID_ARGUMENT, repr(error)
    assert "database" in str(error), str(error)


def test_adbc_unknown_database_is_not_found(adbc, db):
    from adbc_driver_manager import AdbcStatusCode

    error = adbc_error(adbc({"database": f"{db}_missing"}), "SELECT 1")
    assert error.status_code == AdbcStatusCode.NOT_FOUND, repr(error)
    assert f"{db}_missing" in str(error)


def test_adbc_sql_error_is_invalid_argument(adbc):
    from adbc_driver_manager import AdbcStatusCode

    error = adbc_error(adbc(), "SELECT no_such_column FROM cpu")
    assert error.status_code == AdbcStatusCode.INVALID_ARGUMENT, repr(error)
    assert "no_such_column" in str(error)


def test_adbc_bearer_token_is_accepted(adbc):
    import adbc_driver_flightsql

    conn = adbc(**{adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: "Bearer x"})
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM cpu")
        assert cur.fetchone() == (3,)


def test_adbc_basic_auth_logs_in_with_handshake(adbc):
    # With a username and password the driver calls Handshake first and sends the
    # `authorization` header it answers with on every later call.
    with adbc(username="user", password="secret").cursor() as cur:
        cur.execute("SELECT count(*) FROM cpu")
        assert cur.fetchone() == (3,)


# -- pyarrow.flight ------------------------------------------------------------------------


@pytest.fixture
def flight_client(cpu):
    client = flight.FlightClient(f"grpc://{grpc_addr(cpu)}")
    yield client
    client.close()


def ticket(**fields) -> flight.Ticket:
    return flight.Ticket(json.dumps(fields).encode())


def do_get(client: flight.FlightClient, tkt: flight.Ticket, headers=()) -> pa.Table:
    options = flight.FlightCallOptions(timeout=RPC_TIMEOUT_S, headers=list(headers))
    return client.do_get(tkt, options).read_all()


def test_flight_json_ticket_query_keeps_dictionary_tags(flight_client, db):
    # A JSON ticket is not Flight SQL: tags stay dictionaries (pandas categoricals).
    reader = flight_client.do_get(
        ticket(database=db, sql_query="SELECT * FROM cpu ORDER BY time", query_type="sql"),
        flight.FlightCallOptions(timeout=RPC_TIMEOUT_S),
    )
    assert_data_model_types(reader.schema, tags=DICTIONARY)  # the schema comes first
    table = reader.read_all()
    assert set(table.column_names) == CPU_COLUMNS
    assert_data_model_types(table.schema, tags=DICTIONARY)
    assert_dictionaries_hold_each_value_once(table)
    assert table.select(["host", "usage", "msg"]).to_pylist() == [
        {"host": "a", "usage": 1.5, "msg": "one"},
        {"host": "b", "usage": 2.5, "msg": "two"},
        {"host": "a", "usage": 3.5, "msg": "three"},
    ]


def test_flight_empty_result_still_has_the_schema(flight_client, db):
    table = do_get(flight_client, ticket(database=db, sql_query="SELECT host, msg, time FROM cpu WHERE host = 'zzz'", query_type="sql"))
    assert table.num_rows == 0
    assert table.column_names == ["host", "msg", "time"]
    assert_data_model_types(table.schema, tags=DICTIONARY)


def test_flight_json_ticket_dictionaries_hold_each_value_once_after_two_writes(two_writes, db):
    client = flight.FlightClient(f"grpc://{grpc_addr(two_writes)}")
    try:
        table = do_get(client, ticket(database=db, sql_query="SELECT * FROM cpu", query_type="sql"))
    finally:
        client.close()
    assert table.schema.field("host").type == table.schema.field("region").type == DICTIONARY
    assert_dictionaries_hold_each_value_once(table)
    assert sorted(table.column("region").to_pylist()) == ["eu", "eu", "us", "us"]
    frame = table.to_pandas()
    assert sorted(frame["region"].cat.categories) == ["eu", "us"]


def test_flight_json_ticket_params(flight_client, db):
    table = do_get(
        flight_client,
        ticket(
            database=db,
            sql_query="SELECT usage FROM cpu WHERE host = $host AND count >= $n AND ok = $ok AND usage > $min ORDER BY time",
            query_type="sql",
            params={"host": "a", "n": 1, "ok": True, "min": 2.0},
        ),
    )
    assert table.column("usage").to_pylist() == [3.5]


@pytest.mark.parametrize("alias", ["namespace_name", "bucket"])
def test_flight_json_ticket_database_aliases(flight_client, db, alias):
    table = do_get(flight_client, ticket(**{alias: db}, sql_query="SELECT count(*) AS n FROM cpu", query_type="sql"))
    assert table.column("n").to_pylist() == [3]


def test_flight_authorization_header_is_accepted(flight_client, db):
    table = do_get(
        flight_client,
        ticket(database=db, sql_query="SELECT count(*) AS n FROM cpu", query_type="sql"),
        headers=[(b"authorization", b"Bearer x")],
    )
    assert table.column("n").to_pylist() == [3]


def test_flight_handshake_with_basic_auth_answers_a_bearer_token(flight_client, db):
    header = flight_client.authenticate_basic_token("user", "secret", flight.FlightCallOptions(timeout=RPC_TIMEOUT_S))
    assert header == (b"authorization", b"Bearer secret")
    table = do_get(flight_client, ticket(database=db, sql_query="SELECT count(*) AS n FROM cpu", query_type="sql"), headers=[header])
    assert table.column("n").to_pylist() == [3]


def test_flight_ticket_without_database_is_invalid_argument(flight_client):
    with pytest.raises(pa.ArrowInvalid, match="database"):
        do_get(flight_client, ticket(sql_query="SELECT 1", query_type="sql"))


def test_flight_ticket_that_is_not_valid_json_is_invalid_argument(flight_client):
    with pytest.raises(pa.ArrowInvalid):
        do_get(flight_client, flight.Ticket(b'{"database": "x", "sql_query": '))


def test_flight_unknown_database_is_not_found(flight_client, db):
    with pytest.raises(pa.ArrowKeyError) as caught:  # pyarrow's mapping of NOT_FOUND
        do_get(flight_client, ticket(database=f"{db}_missing", sql_query="SELECT 1", query_type="sql"))
    assert "not found" in str(caught.value) and f"{db}_missing" in str(caught.value)


def test_flight_sql_error_is_invalid_argument(flight_client, db):
    with pytest.raises(pa.ArrowInvalid, match="no_such_column"):
        do_get(flight_client, ticket(database=db, sql_query="SELECT no_such_column FROM cpu", query_type="sql"))


def test_flight_influxql_is_unimplemented(flight_client, db):
    with pytest.raises(pa.ArrowNotImplementedError):
        do_get(flight_client, ticket(database=db, sql_query="SELECT * FROM cpu", query_type="influxql"))


# -- Grafana -------------------------------------------------------------------------------
#
# What Grafana sends, read from grafana/grafana (pkg/tsdb/influxdb/fsql, healthcheck.go,
# public/app/plugins/datasource/influxdb/fsql/flightsqlMetaQuery.ts and the SQL editor, whose
# dataset is fixed to `iox`) and influxdata/grafana-flightsql-datasource (pkg/flightsql):
# both run SQL with arrow-go's flightsql.Client.Execute (GetFlightInfo with a
# CommandStatementQuery, which must answer exactly one endpoint, then DoGet of its ticket),
# with `authorization: Bearer <token>` and the configured metadata (`database`, or
# `bucket-name` in older plugin setups) on every call. ADBC's Flight SQL driver is built on
# the same arrow-go client; `plain_statement` makes the same calls.
#
# - health check (both): `select 1`;
# - schema browsing (InfluxDB data source, SQL mode): the statements below;
# - schema browsing (FlightSQL plugin): GetTables(table_types=["BASE TABLE"]) and
#   GetTables(table_name_filter_pattern=<table>, include_schema=true), i.e.
#   test_adbc_get_objects_filters_by_table_type and test_adbc_get_table_schema above;
# - macros: `$__timeFilter(time)` -> `time >= '<from>' AND time <= '<to>'` (RFC 3339, UTC),
#   `$__timeFrom`/`$__timeTo` -> `cast('<RFC 3339>' as timestamp)` (InfluxDB data source),
#   `$__dateBin(time)` -> `date_bin(interval '<n> second', time, timestamp '1970-01-01T00:00:00Z')`,
#   `$__interval` -> `interval '<n> second'`.

GRAFANA_SHOW_DATABASES = (
    "SELECT DISTINCT TABLE_SCHEMA from information_schema.TABLES where TABLE_TYPE != 'SYSTEM VIEW' ORDER BY TABLE_SCHEMA"
)
GRAFANA_TABLES = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'iox' ORDER BY table_name"
GRAFANA_COLUMNS = (
    "SELECT column_name, data_type FROM information_schema.columns "
    "WHERE table_schema = 'iox' AND table_name = 'cpu' ORDER BY column_name"
)


@pytest.fixture
def grafana(cpu, db):
    """Grafana's connection: the database and a bearer token as call metadata."""
    conn = adbc_connect(cpu, {"database": db, "authorization": "Bearer grafana-token"})
    yield conn
    conn.close()


@pytest.mark.parametrize("header", ["database", "bucket-name"])
def test_grafana_health_check(cpu, db, header):
    conn = adbc_connect(cpu, {header: db, "authorization": "Bearer grafana-token"})
    try:
        table = plain_statement(conn, "select 1")
    finally:
        conn.close()
    assert table.num_rows == 1 and table.num_columns == 1
    assert table.column(0).to_pylist() == [1]


def test_grafana_lists_schemas(grafana):
    schemas = plain_statement(grafana, GRAFANA_SHOW_DATABASES).column(0).to_pylist()
    assert "iox" in schemas
    assert schemas == sorted(set(schemas))


def test_grafana_lists_tables(grafana):
    assert plain_statement(grafana, GRAFANA_TABLES).column("table_name").to_pylist() == ["cpu", "mem"]


def test_grafana_lists_columns_with_types(grafana):
    table = plain_statement(grafana, GRAFANA_COLUMNS)
    names = table.column("column_name").to_pylist()
    assert names == sorted(CPU_COLUMNS)
    types = dict(zip(names, table.column("data_type").to_pylist()))
    # The names Grafana's query builder maps to number and boolean (fsql/fields.ts).
    assert (types["usage"], types["count"], types["ok"]) == ("Float64", "Int64", "Boolean"), types
    assert types["msg"] == "Utf8", types
    # Grafana's builder shows `time` as a datetime only for `Timestamp(Nanosecond, None)`,
    # which is how older Arrow printed the type. Newer Arrow prints `Timestamp(ns)`, and the
    # builder then shows it as text. Queries are not affected, so this only checks the kind.
    assert types["time"].startswith("Timestamp("), types
    # The table's storage type; query results over Flight SQL carry tags as Utf8.
    assert "Dictionary(Int32, Utf8)" in types["host"], types


@pytest.fixture
def grafana_series(cpu, db):
    """`load` every 20 s from T0 (22:13:20Z): hosts a and b, usage 1..6 and 10..60."""
    lines = [f"load,host=a usage={i + 1}.0 {T0 + 20 * i * S}" for i in range(6)]
    lines += [f"load,host=b usage={(i + 1) * 10}.0 {T0 + 20 * i * S}" for i in range(6)]
    expect_status(write_lp(cpu, db, "\n".join(lines), precision="nanosecond"), 204)
    return cpu


def test_grafana_time_series_with_date_bin_and_time_filter(grafana_series, grafana):
    # A panel from 22:13:00Z to 22:14:40Z with a 1-minute interval:
    #   SELECT $__dateBin(time) AS time, avg(usage) AS usage FROM load
    #   WHERE $__timeFilter(time) AND host = 'a' GROUP BY 1 ORDER BY 1
    sql = (
        "SELECT date_bin(interval '60 second', time, timestamp '1970-01-01T00:00:00Z') AS time, avg(usage) AS usage "
        "FROM load WHERE time >= '2023-11-14T22:13:00Z' AND time <= '2023-11-14T22:14:40Z' AND host = 'a' "
        "GROUP BY 1 ORDER BY 1"
    )
    table = plain_statement(grafana, sql)
    assert table.schema.field("time").type == pa.timestamp("ns")
    # 22:13:20 and 22:13:40 in the first minute; 22:14:00, :20 and :40 (the bound is
    # inclusive) in the second; 22:15:00 is after the range.
    assert table.to_pylist() == [
        {"time": dt.datetime(2023, 11, 14, 22, 13), "usage": 1.5},
        {"time": dt.datetime(2023, 11, 14, 22, 14), "usage": 4.0},
    ]


def test_grafana_time_series_grouped_by_tag(grafana_series, grafana):
    # `$__dateBinAlias(time)` and a tag column, as a multi-series panel groups them.
    sql = (
        "SELECT date_bin(interval '60 second', time, timestamp '1970-01-01T00:00:00Z') as time_binned, host, max(usage) AS usage "
        "FROM load WHERE time >= '2023-11-14T22:13:00Z' AND time <= '2023-11-14T22:15:00Z' "
        "GROUP BY time_binned, host ORDER BY time_binned, host"
    )
    table = plain_statement(grafana, sql)
    # A plain string: Grafana's fsql/arrow.go has no dictionary case and would show the
    # tag empty (so the series would have no `host` label).
    assert table.schema.field("host").type == FLIGHT_SQL_TAG
    assert [(r["time_binned"].minute, r["host"], r["usage"]) for r in table.to_pylist()] == [
        (13, "a", 2.0), (13, "b", 20.0), (14, "a", 5.0), (14, "b", 50.0), (15, "a", 6.0), (15, "b", 60.0)
    ]


def test_grafana_query_builder_statement(grafana_series, grafana):
    # The InfluxDB data source's SQL builder: quoted identifiers and $__timeFrom/$__timeTo.
    sql = (
        'SELECT "host", "usage", "time" FROM "load" '
        "WHERE \"time\" >= cast('2023-11-14T22:13:20Z' as timestamp) AND \"time\" <= cast('2023-11-14T22:13:40Z' as timestamp) "
        "AND \"host\" = 'b' ORDER BY \"time\""
    )
    table = plain_statement(grafana, sql)
    assert table.column("usage").to_pylist() == [10.0, 20.0]
    assert table.column("time").cast(pa.int64()).to_pylist() == [T0, T0 + 20 * S]


# -- one port for HTTP and gRPC ------------------------------------------------------------

BIG_ROWS = 200_000
BIG_SQL = "SELECT host, v, s, time FROM big"


@pytest.fixture
def big(cpu, db):
    """`big`: 200,000 rows (v = 0..199999, a 20-character string each), written in four parts."""
    part = BIG_ROWS // 4
    for start in range(0, BIG_ROWS, part):
        body = "".join(f'big,host=h{i % 100} v={i}i,s="{"x" * 20}" {T0 + i}\n' for i in range(start, start + part))
        expect_status(write_lp(cpu, db, body, precision="nanosecond"), 204)
    return cpu


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "60", *args], capture_output=True, text=True, timeout=90)


def test_http_keeps_answering_while_a_large_flight_result_streams(big, db):
    client = flight.FlightClient(f"grpc://{grpc_addr(big)}")
    try:
        reader = client.do_get(ticket(database=db, sql_query=BIG_SQL, query_type="sql"), flight.FlightCallOptions(timeout=RPC_TIMEOUT_S))
        rows = v_sum = 0
        # Read the stream a batch at a time and, between batches (the stream open and not
        # drained), write and query over HTTP.
        for step in range(3):
            batch = reader.read_chunk().data
            rows += batch.num_rows
            v_sum += pc.sum(batch.column("v")).as_py()
            assert rows < BIG_ROWS, "the stream should still be open"
            expect_status(write_lp(big, db, f"cpu,host=z{step} usage=9.5 {T0 + 10 * S}", precision="nanosecond"), 204)
            assert count_rows(big, db, "cpu") == 4 + step
            assert requests.get(f"{big.url}/health", timeout=10).status_code == 200
        rest = reader.read_all()
    finally:
        client.close()
    assert_data_model_types(rest.schema, tags=DICTIONARY)
    rows += rest.num_rows
    v_sum += pc.sum(rest.column("v")).as_py()
    assert (rows, v_sum) == (BIG_ROWS, BIG_ROWS * (BIG_ROWS - 1) // 2)


def test_flight_keeps_answering_while_a_large_http_response_streams(big, db):
    resp = requests.get(
        f"{big.url}/api/v3/query_sql",
        params={"db": db, "q": BIG_SQL, "format": "jsonl"},
        headers={"Accept-Encoding": "identity"},
        stream=True,
        timeout=60,
    )
    client = flight.FlightClient(f"grpc://{grpc_addr(big)}")
    try:
        expect_status(resp, 200)
        chunks = resp.iter_content(chunk_size=64 * 1024)
        body = next(chunks)  # part of the response: the rest is still to be read
        assert body
        table = do_get(client, ticket(database=db, sql_query="SELECT count(*) AS n FROM big", query_type="sql"))
        assert table.column("n").to_pylist() == [BIG_ROWS]
        with adbc_connect(big, {"database": db}) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM cpu")
            assert cur.fetchone() == (3,)
        body += b"".join(chunks)
    finally:
        client.close()
        resp.close()
    assert len([line for line in body.splitlines() if line.strip()]) == BIG_ROWS


def test_http_and_flight_clients_at_the_same_time(big, db):
    def flight_big():
        client = flight.FlightClient(f"grpc://{grpc_addr(big)}")
        try:
            return do_get(client, ticket(database=db, sql_query=BIG_SQL, query_type="sql")).num_rows
        finally:
            client.close()

    def http_small(i):
        expect_status(write_lp(big, db, f"other,host=h{i} v={i}i {T0}", precision="nanosecond"), 204)
        return query(big, db, f"SELECT v FROM other WHERE host = 'h{i}'")

    def flight_small(i):
        client = flight.FlightClient(f"grpc://{grpc_addr(big)}")
        try:
            return do_get(client, ticket(database=db, sql_query="SELECT count(*) AS n FROM cpu WHERE usage > $u", query_type="sql", params={"u": float(i % 3)})).column("n").to_pylist()
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        bigs = [pool.submit(flight_big) for _ in range(2)]
        https = [pool.submit(http_small, i) for i in range(20)]
        smalls = [pool.submit(flight_small, i) for i in range(20)]
        assert [f.result(timeout=120) for f in https] == [[{"v": i}] for i in range(20)]
        assert [f.result(timeout=120) for f in smalls] == [[{0: 3, 1: 3, 2: 2}[i % 3]] for i in range(20)]
        assert [f.result(timeout=120) for f in bigs] == [BIG_ROWS, BIG_ROWS]


def test_http_api_over_http2_prior_knowledge(cpu, db):
    base = cpu.url
    done = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", f"{base}/health")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "2 200", done.stdout

    done = curl(
        "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
        "-H", "Content-Type: text/plain; charset=utf-8", "--data-binary", f"cpu,host=h2 usage=7.5 {T0 + 5 * S}",
        f"{base}/api/v3/write_lp?db={db}&precision=nanosecond",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "2 204", done.stdout

    done = curl("--http2-prior-knowledge", "-G", "--data-urlencode", f"db={db}", "--data-urlencode", "q=SELECT host, usage FROM cpu WHERE host = 'h2'", f"{base}/api/v3/query_sql")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"host": "h2", "usage": 7.5}]

    # HTTP/1.1 on the same port still works.
    done = curl("--http1.1", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", f"{base}/health")
    assert done.stdout == "1.1 200", (done.stdout, done.stderr)


def test_grpc_is_told_apart_by_content_type(cpu):
    # The same path over HTTP/2: an HTTP request gets the HTTP API's answer, a gRPC one (by
    # its content type) a gRPC answer (no such gRPC method: UNIMPLEMENTED, status 12).
    http = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code} %{content_type}", f"{cpu.url}/health")
    assert http.stdout.startswith("200 "), http.stdout
    grpc = curl(
        "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null", "-X", "POST",
        "-H", "content-type: application/grpc", "-H", "te: trailers", "--data-binary", "",
        f"{cpu.url}/health",
    )
    assert grpc.returncode == 0, grpc.stderr
    headers = {line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip() for line in grpc.stdout.splitlines() if ":" in line}
    assert headers.get("content-type", "").startswith("application/grpc"), grpc.stdout
    assert headers.get("grpc-status") == "12", grpc.stdout
