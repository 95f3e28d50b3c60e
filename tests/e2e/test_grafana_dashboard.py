"""The provisioned Grafana dashboard (deploy/grafana/dashboards/tsbs-cpu.json) against a server.

Grafana is not run here. Its InfluxDB data source in SQL mode is emulated as its source
(grafana/grafana pkg/tsdb/influxdb/fsql) behaves: template variables are interpolated first,
then the backend macros are expanded (`$__timeFilter(time)` -> `time >= '<from>' AND time <=
'<to>'`, `$__dateBin(time)` -> `date_bin(interval '<n> second', time, timestamp
'1970-01-01T00:00:00Z')`), and the SQL is run with Flight SQL (`GetFlightInfo` of the
statement, then `DoGet`) with the database in the `database` metadata. Every query must
return rows, in column types Grafana's Arrow-to-frame conversion (fsql/arrow.go) reads, and
time series sorted by time. arrow.go has no case for dictionary columns (it would show them
empty); Flight SQL results carry tags as plain strings, so the dashboard's SQL names tag
columns as they are, without casts.
"""

from __future__ import annotations

import json
import subprocess

import pyarrow as pa
import pytest
import yaml

from conftest import REPO_ROOT, binary_path

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "tsbs-cpu.json"
DATASOURCES = REPO_ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "tributary.yaml"
#: The TSBS day starts here; one hour of it is loaded.
TIME_FROM, TIME_TO = "2016-01-01T00:00:00Z", "2016-01-01T01:00:00Z"
#: What Grafana would pick as the interval for a panel of ~1000 points over one hour.
INTERVAL_S = 10

#: Arrow types Grafana's fsql/arrow.go (`newField`, `copyData`) turns into frame fields; any
#: other type (dictionary, large_string, string_view, ...) comes out empty.
_READABLE = {
    pa.string(), pa.bool_(), pa.float32(), pa.float64(),
    pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(),
}


def grafana_reads_type(t: pa.DataType) -> bool:
    # Timestamps of any unit are read as nanoseconds (`ToTime(arrow.Nanosecond)`).
    return t in _READABLE or (pa.types.is_timestamp(t) and t.unit == "ns") or pa.types.is_duration(t)


@pytest.fixture
def tsbs_server(server):
    subprocess.run(
        [str(binary_path()), "bench", "write", "--url", server.url, "--db", "tsbs",
         "--hours", "1", "--hosts", "10", "--connections", "1"],
        check=True, capture_output=True, timeout=300,
    )
    return server


@pytest.fixture
def flight_sql(tsbs_server):
    import adbc_driver_flightsql.dbapi as flightsql

    conn = flightsql.connect(
        "grpc://" + tsbs_server.url.removeprefix("http://"),
        db_kwargs={"adbc.flight.sql.rpc.call_header.database": "tsbs"},
        autocommit=True,
    )
    yield conn
    conn.close()


def run(conn, sql: str) -> pa.Table:
    """`sql` as Grafana runs it (arrow-go `flightsql.Client.Execute`): GetFlightInfo of a
    CommandStatementQuery (not prepared), one endpoint, DoGet of its ticket."""
    from adbc_driver_manager import AdbcStatement

    with AdbcStatement(conn.adbc_connection) as stmt:
        stmt.set_sql_query(sql)
        partitions, info_schema, _rows = stmt.execute_partitions()
        assert len(partitions) == 1, f"Grafana reads exactly one endpoint, the server gave {len(partitions)}"
        table = pa.RecordBatchReader.from_stream(conn.adbc_connection.read_partition(partitions[0])).read_all()
    assert info_schema is not None and pa.schema(info_schema).equals(table.schema, check_metadata=False), (
        f"the FlightInfo schema is not the data's:\n{info_schema and pa.schema(info_schema)}\n{table.schema}"
    )
    return table


def expand(sql: str, variables: dict[str, list[str]]) -> str:
    """Grafana's interpolation (`singlequote`, `raw` formats), then the fsql macros."""
    for name, values in variables.items():
        sql = sql.replace(f"${{{name}:singlequote}}", ",".join(f"'{v}'" for v in values))
        sql = sql.replace(f"${{{name}:raw}}", ",".join(values))
    sql = sql.replace("$__timeFilter(time)", f"time >= '{TIME_FROM}' AND time <= '{TIME_TO}'")
    sql = sql.replace(
        "$__dateBin(time)", f"date_bin(interval '{INTERVAL_S} second', time, timestamp '1970-01-01T00:00:00Z')"
    )
    assert "$" not in sql, f"unexpanded macro or variable left in:\n{sql}"
    return sql


def assert_grafana_reads(table: pa.Table, what: str) -> None:
    assert table.num_rows > 0, f"{what}: no rows"
    dictionaries = [f"{f.name}: {f.type}" for f in table.schema if pa.types.is_dictionary(f.type)]
    assert not dictionaries, f"{what}: dictionary columns in a Flight SQL result (Grafana shows them empty): {dictionaries}"
    unreadable = [f"{f.name}: {f.type}" for f in table.schema if not grafana_reads_type(f.type)]
    assert not unreadable, f"{what}: columns Grafana's SQL mode cannot read: {unreadable}"


def test_dashboard_uses_the_provisioned_data_source():
    uids = {d["uid"]: d for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text())
    refs = [p["datasource"] for p in dashboard["panels"]]
    refs += [t["datasource"] for p in dashboard["panels"] for t in p["targets"]]
    refs += [v["datasource"] for v in dashboard["templating"]["list"] if "datasource" in v]
    for ref in refs:
        assert ref["uid"] in uids, f"dashboard refers to data source {ref['uid']!r}, not provisioned"
        source = uids[ref["uid"]]
        assert source["type"] == ref["type"] == "influxdb"
        assert source["jsonData"]["version"] == "SQL" and source["jsonData"]["dbName"] == "tsbs"


def test_dashboard_queries_run_as_grafana_sends_them(flight_sql):
    dashboard = json.loads(DASHBOARD.read_text())
    variables: dict[str, list[str]] = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            table = run(flight_sql, var["query"]["query"])
            assert_grafana_reads(table, f"variable {var['name']}")
            # Grafana takes the first string column's values.
            variables[var["name"]] = [str(v) for v in table.column(0).to_pylist()]
        elif var["type"] == "custom":
            variables[var["name"]] = [var["current"]["value"]]
    assert len(variables["hostname"]) == 10

    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            what = f"panel {panel['title']!r}"
            table = run(flight_sql, expand(target["rawSql"], variables))
            assert_grafana_reads(table, what)
            if target["format"] == "time_series":
                # Grafana turns long frames wide only when they are sorted by `time`.
                times = table.column("time").to_pylist()
                assert times == sorted(times), f"{what}: not sorted by time"
                assert len(set(table.column("hostname").to_pylist())) == 10
