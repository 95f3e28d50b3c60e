"""Real InfluxDB client libraries write to Tributary unchanged.

Specifies that data written by
- `influxdb3-python` (`influxdb_client_3.InfluxDBClient3`) with its default settings
  (which write through `/api/v2/write`) and with `write_use_v2_api=False` (through
  `/api/v3/write_lp`): line-protocol strings, `Point`s, dicts, pandas and polars frames;
  its structured partial-write error carries the per-line details;
- `influxdb-client` (the InfluxDB 2 client, v2 write API, synchronous) at every precision;
  its errors carry the server's message;
- `influxdb` (the InfluxDB 1 client): `write_points` with JSON points and with
  `protocol='line'`, at several precisions;
arrives, with the right values and times, in SQL over `/api/v3/query_sql`.

Queries use HTTP only: reading over Flight (`InfluxDBClient3.query`) is tests/e2e/test_flight.py.
"""

from __future__ import annotations

import datetime as dt

import pytest

from conftest import query, ts_ns

T0_S = 1_700_000_000  # 2023-11-14T22:13:20Z
T0_DT = dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.timezone.utc)
S = 1_000_000_000


def rows_by_host(server, db, table="cpu", columns="host, usage, time"):
    return {r["host"]: r for r in query(server, db, f"SELECT {columns} FROM {table} ORDER BY host")}


# -- influxdb3-python ----------------------------------------------------------------------


@pytest.fixture
def client3(server, db):
    from influxdb_client_3 import InfluxDBClient3

    clients = []

    def make(**kwargs):
        client = InfluxDBClient3(host=server.url, token="x", database=db, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.mark.parametrize("settings", [{}, {"write_use_v2_api": False}], ids=["default", "v3_write_lp"])
def test_influxdb3_python_writes_line_protocol_strings(server, db, client3, settings):
    client = client3(**settings)
    client.write(record=f"cpu,host=a usage=1.5 {T0_S * S}")
    client.write(record=[f"cpu,host=b usage=2.5 {(T0_S + 1) * S}", f"cpu,host=c usage=3.5 {(T0_S + 2) * S}"])
    rows = rows_by_host(server, db)
    assert {h: (r["usage"], ts_ns(r["time"])) for h, r in rows.items()} == {
        "a": (1.5, T0_S * S),
        "b": (2.5, (T0_S + 1) * S),
        "c": (3.5, (T0_S + 2) * S),
    }


@pytest.mark.parametrize("settings", [{}, {"write_use_v2_api": False}], ids=["default", "v3_write_lp"])
def test_influxdb3_python_writes_points_with_every_field_type(server, db, client3, settings):
    from influxdb_client_3 import Point

    client = client3(**settings)
    point = (
        Point("cpu")
        .tag("host", "a")
        .field("usage", 1.25)
        .field("count", 7)
        .field("ok", True)
        .field("msg", 'say "hi"')
        .time(T0_S * S + 123)
    )
    client.write(record=point)
    client.write(record=Point("cpu").tag("host", "b").field("usage", 2.0))  # no time: server time
    rows = rows_by_host(server, db, columns="host, usage, count, ok, msg, time")
    a = rows["a"]
    assert (a["usage"], a["count"], a["ok"], a["msg"], ts_ns(a["time"])) == (1.25, 7, True, 'say "hi"', T0_S * S + 123)
    assert rows["b"]["usage"] == 2.0
    assert abs(ts_ns(rows["b"]["time"]) - dt.datetime.now(dt.timezone.utc).timestamp() * S) < 300 * S


def test_influxdb3_python_writes_dicts(server, db, client3):
    client = client3()
    client.write(record={"measurement": "cpu", "tags": {"host": "a"}, "fields": {"usage": 4.5}, "time": T0_S * S})
    assert rows_by_host(server, db)["a"]["usage"] == 4.5


@pytest.mark.parametrize("settings", [{}, {"write_use_v2_api": False}], ids=["default", "v3_write_lp"])
@pytest.mark.parametrize("precision", ["ns", "us", "ms", "s"])
def test_influxdb3_python_write_precision(server, db, client3, settings, precision):
    from influxdb_client_3 import Point, WritePrecision

    wp = {"ns": WritePrecision.NS, "us": WritePrecision.US, "ms": WritePrecision.MS, "s": WritePrecision.S}[precision]
    client = client3(**settings)
    client.write(record=Point("cpu").tag("host", "a").field("usage", 1.0).time(T0_DT, write_precision=wp), write_precision=wp)
    assert ts_ns(rows_by_host(server, db)["a"]["time"]) == T0_S * S


def test_influxdb3_python_writes_a_pandas_frame(server, db, client3):
    import pandas as pd

    frame = pd.DataFrame(
        {
            "time": pd.to_datetime([T0_S, T0_S + 1], unit="s", utc=True),
            "host": ["a", "b"],
            "usage": [1.5, 2.5],
        }
    )
    client3().write_dataframe(frame, measurement="cpu", timestamp_column="time", tags=["host"])
    rows = rows_by_host(server, db)
    assert {h: (r["usage"], ts_ns(r["time"])) for h, r in rows.items()} == {"a": (1.5, T0_S * S), "b": (2.5, (T0_S + 1) * S)}


def test_influxdb3_python_writes_a_polars_frame(server, db, client3):
    import polars as pl

    frame = pl.DataFrame(
        {
            "time": [T0_DT.replace(tzinfo=None), (T0_DT + dt.timedelta(seconds=1)).replace(tzinfo=None)],
            "host": ["a", "b"],
            "usage": [1.5, 2.5],
        }
    )
    client3().write_dataframe(frame, measurement="cpu", timestamp_column="time", tags=["host"])
    rows = rows_by_host(server, db)
    assert {h: (r["usage"], ts_ns(r["time"])) for h, r in rows.items()} == {"a": (1.5, T0_S * S), "b": (2.5, (T0_S + 1) * S)}


def test_influxdb3_python_sees_per_line_details_of_a_partial_write(server, db, client3):
    from influxdb_client_3.exceptions import InfluxDBPartialWriteError

    client = client3(write_use_v2_api=False)
    with pytest.raises(InfluxDBPartialWriteError) as caught:
        client.write(record=[f"cpu,host=a usage=1 {T0_S * S}", f"cpu,host=b usage= {T0_S * S}"])
    [line_error] = caught.value.line_errors
    assert line_error.line_number == 2
    assert line_error.original_line.strip() == f"cpu,host=b usage= {T0_S * S}"
    assert line_error.error_message
    # The default accept_partial=true kept the good line.
    assert list(rows_by_host(server, db)) == ["a"]


def test_influxdb3_python_default_write_error_is_raised(server, db, client3):
    from influxdb_client_3.exceptions import InfluxDBError

    with pytest.raises(InfluxDBError) as caught:
        client3().write(record=f"cpu,host=b usage= {T0_S * S}")
    assert caught.value.status == 400


# -- influxdb-client (v2) ------------------------------------------------------------------


@pytest.fixture
def client2(server):
    from influxdb_client import InfluxDBClient

    client = InfluxDBClient(url=server.url, token="x", org="o", timeout=30_000)
    yield client
    client.close()


@pytest.mark.parametrize("precision", ["ns", "us", "ms", "s"])
def test_influxdb_client_v2_writes_points_at_every_precision(server, db, client2, precision):
    from influxdb_client import Point, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS

    wp = {"ns": WritePrecision.NS, "us": WritePrecision.US, "ms": WritePrecision.MS, "s": WritePrecision.S}[precision]
    write_api = client2.write_api(write_options=SYNCHRONOUS)
    write_api.write(
        bucket=db,
        record=Point("cpu").tag("host", "a").field("usage", 1.5).field("count", 3).time(T0_DT + dt.timedelta(seconds=1), wp),
        write_precision=wp,
    )
    write_api.write(bucket=db, record=f"cpu,host=b usage=2.5 {T0_S * {'ns': S, 'us': 10**6, 'ms': 10**3, 's': 1}[precision]}", write_precision=wp)
    rows = rows_by_host(server, db, columns="host, usage, count, time")
    assert (rows["a"]["usage"], rows["a"]["count"], ts_ns(rows["a"]["time"])) == (1.5, 3, (T0_S + 1) * S)
    assert (rows["b"]["usage"], ts_ns(rows["b"]["time"])) == (2.5, T0_S * S)


def test_influxdb_client_v2_writes_dicts_and_line_lists(server, db, client2):
    from influxdb_client.client.write_api import SYNCHRONOUS

    write_api = client2.write_api(write_options=SYNCHRONOUS)
    write_api.write(bucket=db, org="o", record={"measurement": "cpu", "tags": {"host": "a"}, "fields": {"usage": 1.0}, "time": T0_S * S})
    write_api.write(bucket=db, org="o", record=[f"cpu,host=b usage=2 {T0_S * S}", f"cpu,host=c usage=3 {T0_S * S}"])
    assert {h: r["usage"] for h, r in rows_by_host(server, db).items()} == {"a": 1.0, "b": 2.0, "c": 3.0}


def test_influxdb_client_v2_error_carries_the_server_message(server, db, client2):
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.rest import ApiException

    write_api = client2.write_api(write_options=SYNCHRONOUS)
    with pytest.raises(ApiException) as caught:
        write_api.write(bucket=db, record=[f"cpu,host=a usage=1 {T0_S * S}", "cpu,host=b usage="])
    assert caught.value.status == 400
    message = caught.value.message
    assert isinstance(message, str) and message.strip(), message  # decoded from {"code", "message"}


def test_influxdb_client_v2_ping_succeeds(server, client2):
    assert client2.ping() is True


# -- influxdb (v1) -------------------------------------------------------------------------


@pytest.fixture
def client1(server, db):
    from urllib.parse import urlparse

    from influxdb import InfluxDBClient

    url = urlparse(server.url)
    client = InfluxDBClient(host=url.hostname, port=url.port, database=db, timeout=30)
    yield client
    client.close()


def test_influxdb_v1_client_writes_json_points(server, db, client1):
    points = [
        {"measurement": "cpu", "tags": {"host": "a"}, "fields": {"usage": 1.5, "count": 2, "msg": "x"}, "time": "2023-11-14T22:13:20Z"},
        {"measurement": "cpu", "tags": {"host": "b"}, "fields": {"usage": 2.5, "count": 3, "msg": "y"}, "time": T0_DT + dt.timedelta(seconds=1)},
    ]
    assert client1.write_points(points) is True
    rows = rows_by_host(server, db, columns="host, usage, count, msg, time")
    assert (rows["a"]["usage"], rows["a"]["count"], rows["a"]["msg"], ts_ns(rows["a"]["time"])) == (1.5, 2, "x", T0_S * S)
    assert (rows["b"]["usage"], ts_ns(rows["b"]["time"])) == (2.5, (T0_S + 1) * S)


@pytest.mark.parametrize(
    "precision,units_per_s",
    [("n", S), ("u", 10**6), ("ms", 10**3), ("s", 1), ("m", 1 / 60), ("h", 1 / 3600)],
)
def test_influxdb_v1_client_writes_points_at_every_precision(server, db, client1, precision, units_per_s):
    t_s = 1_699_999_200  # 2023-11-14T22:00:00Z: a whole hour, so minutes and hours are exact
    points = [{"measurement": "cpu", "tags": {"host": "a"}, "fields": {"usage": 1.0}, "time": round(t_s * units_per_s)}]
    assert client1.write_points(points, time_precision=precision) is True
    assert ts_ns(rows_by_host(server, db)["a"]["time"]) == t_s * S


@pytest.mark.parametrize("precision,factor", [(None, S), ("s", 1), ("ms", 10**3)])
def test_influxdb_v1_client_writes_line_protocol(server, db, client1, precision, factor):
    lines = [f"cpu,host=a usage=1.5 {T0_S * factor}", f"cpu,host=b usage=2.5 {(T0_S + 1) * factor}"]
    assert client1.write_points(lines, time_precision=precision, protocol="line") is True
    rows = rows_by_host(server, db)
    assert {h: (r["usage"], ts_ns(r["time"])) for h, r in rows.items()} == {"a": (1.5, T0_S * S), "b": (2.5, (T0_S + 1) * S)}


def test_influxdb_v1_client_write_error_is_a_client_error(server, db, client1):
    from influxdb.exceptions import InfluxDBClientError

    with pytest.raises(InfluxDBClientError) as caught:
        client1.write_points(["cpu,host=a usage="], protocol="line")
    assert caught.value.code == 400
