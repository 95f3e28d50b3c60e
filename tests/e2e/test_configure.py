"""Database management and the operational endpoints.

Specifies:
- `GET /api/v3/configure/database?format=json` lists databases as a JSON array of
  objects `{"iox::database": name}` (as InfluxDB 3 answers), databases created by a write
  included;
- `POST /api/v3/configure/database` with `{"db": name}` creates one (then listed, and
  queryable); creating it again is a `409`; an invalid name is a `400`;
- `DELETE /api/v3/configure/database?db=` deletes one: later queries are `404`s, it is no
  longer listed, also after a restart; deleting an unknown database is a `404`;
- `GET /health` is `200`; `GET /ping` is `2xx` with an `X-Influxdb-Version` header;
- `GET /metrics` is Prometheus text with `tributary_` metrics: WAL fsync count and latency
  histogram, and counters of written and rejected lines that go up with writes.
"""

from __future__ import annotations

import re

import pytest
import requests

from conftest import (
    error_message,
    expect_status,
    json_body,
    query,
    query_raw,
    unique_name,
    write_lp,
)

DB_KEY = "iox::database"


def list_databases(server) -> list[str]:
    resp = expect_status(requests.get(f"{server.url}/api/v3/configure/database", params={"format": "json"}, timeout=30), 200)
    body = json_body(resp)
    assert isinstance(body, list), body
    assert all(isinstance(entry, dict) and isinstance(entry.get(DB_KEY), str) for entry in body), body
    return [entry[DB_KEY] for entry in body]


def create_database(server, name) -> requests.Response:
    return requests.post(f"{server.url}/api/v3/configure/database", json={"db": name}, timeout=30)


def delete_database(server, name) -> requests.Response:
    return requests.delete(f"{server.url}/api/v3/configure/database", params={"db": name}, timeout=30)


def assert_2xx(resp):
    assert 200 <= resp.status_code < 300, f"{resp.request.method} {resp.url}: {resp.status_code} {resp.text[:1000]}"


# -- databases -----------------------------------------------------------------------------


def test_databases_created_by_writes_are_listed(server):
    names = [unique_name("db", "listed") for _ in range(3)]
    for name in names:
        expect_status(write_lp(server, name, "m f=1 1"), 204)
    listed = list_databases(server)
    assert set(names) <= set(listed), listed
    assert len(listed) == len(set(listed)), f"a database is listed twice: {listed}"


def test_fresh_server_lists_no_user_databases(server):
    # Internal databases, if any, start with `_` (as InfluxDB 3's `_internal`).
    assert [name for name in list_databases(server) if not name.startswith("_")] == []


def test_create_database_then_it_is_listed_and_queryable(server, db):
    assert_2xx(create_database(server, db))
    assert db in list_databases(server)
    # An empty database answers queries (no tables yet) instead of 404.
    tables = query(server, db, "SELECT table_name FROM information_schema.tables WHERE table_schema NOT IN ('information_schema', 'system')")
    assert tables == []
    expect_status(write_lp(server, db, "m f=1 1"), 204)
    assert query(server, db, "SELECT count(*) AS n FROM m") == [{"n": 1}]


def test_creating_a_database_twice_is_a_409(server, db):
    assert_2xx(create_database(server, db))
    resp = create_database(server, db)
    expect_status(resp, 409)
    assert db in error_message(resp)


def test_creating_a_database_that_a_write_created_is_a_409(server, db):
    expect_status(write_lp(server, db, "m f=1 1"), 204)
    expect_status(create_database(server, db), 409)


@pytest.mark.parametrize("name", ["bad name!", "", "a/../b", "x" * 1000, "semi;colon", "quote\"d"])
def test_invalid_database_name_is_a_400(server, name):
    resp = create_database(server, name)
    expect_status(resp, 400)
    error_message(resp)
    assert name not in list_databases(server)


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"database": "x"}', b'{"db": 5}'])
def test_malformed_create_request_is_a_400(server, body):
    resp = requests.post(
        f"{server.url}/api/v3/configure/database", data=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    expect_status(resp, 400)
    error_message(resp)


def test_valid_names_with_digits_dashes_and_underscores_are_accepted(server):
    for name in ("db1", "my-db", "my_db", "A1_b-2"):
        assert_2xx(create_database(server, name))
    assert {"db1", "my-db", "my_db", "A1_b-2"} <= set(list_databases(server))


def test_deleted_database_is_gone(server, db):
    expect_status(write_lp(server, db, "m f=1 1"), 204)
    assert_2xx(delete_database(server, db))
    assert db not in list_databases(server)
    resp = query_raw(server, db, "SELECT * FROM m")
    expect_status(resp, 404)
    error_message(resp)


def test_deleted_database_stays_deleted_after_restart(server, db):
    other = unique_name("db", "kept")
    expect_status(write_lp(server, db, "m f=1 1"), 204)
    expect_status(write_lp(server, other, "m f=2 2"), 204)
    assert_2xx(delete_database(server, db))
    server.kill()
    server.restart()
    assert db not in list_databases(server)
    expect_status(query_raw(server, db, "SELECT * FROM m"), 404)
    assert query(server, other, "SELECT f FROM m") == [{"f": 2.0}]


def test_writing_to_a_deleted_name_starts_an_empty_database(server, db):
    expect_status(write_lp(server, db, "m,t=old f=1 1"), 204)
    assert_2xx(delete_database(server, db))
    expect_status(write_lp(server, db, "m,t=new f=2 2"), 204)
    assert query(server, db, "SELECT t FROM m") == [{"t": "new"}]


def test_deleting_an_unknown_database_is_a_404(server):
    resp = delete_database(server, "never_created")
    expect_status(resp, 404)
    assert "never_created" in error_message(resp)


def test_delete_without_db_is_a_400(server):
    resp = requests.delete(f"{server.url}/api/v3/configure/database", timeout=30)
    expect_status(resp, 400)
    error_message(resp)


# -- health, ping ----------------------------------------------------------------------------


def test_health_is_200(server):
    expect_status(requests.get(f"{server.url}/health", timeout=10), 200)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_ping_is_2xx_with_influxdb_version_header(server, method):
    resp = requests.request(method, f"{server.url}/ping", timeout=10)
    assert 200 <= resp.status_code < 300, resp.status_code
    assert resp.headers.get("X-Influxdb-Version", "").strip(), dict(resp.headers)


def test_unknown_path_is_a_404(server):
    expect_status(requests.get(f"{server.url}/api/v3/no_such_endpoint", timeout=10), 404)


# -- metrics -------------------------------------------------------------------------------

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metric_series(server) -> dict[str, float]:
    """Every sample of `/metrics`: `name{labels}` -> value."""
    resp = expect_status(requests.get(f"{server.url}/metrics", timeout=10), 200)
    series: dict[str, float] = {}
    for line in resp.text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        series[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return series


def metrics(server) -> dict[str, float]:
    """Every metric of `/metrics`, summed over its label sets: name -> value."""
    totals: dict[str, float] = {}
    for key, value in metric_series(server).items():
        name = key.split("{", 1)[0]
        totals[name] = totals.get(name, 0.0) + value
    return totals


def test_metrics_is_prometheus_text_with_tributary_metrics(server):
    resp = expect_status(requests.get(f"{server.url}/metrics", timeout=10), 200)
    assert resp.headers.get("Content-Type", "").startswith(("text/plain", "application/openmetrics-text")), resp.headers
    names = metrics(server)
    assert any(n.startswith("tributary_") for n in names), sorted(names)
    assert "tributary_wal_fsyncs_total" in names, sorted(names)
    assert "tributary_wal_fsync_duration_seconds_bucket" in names, sorted(names)
    assert "tributary_wal_fsync_duration_seconds_count" in names, sorted(names)
    assert "tributary_wal_fsync_duration_seconds_sum" in names, sorted(names)


def test_metrics_labels_never_hold_tag_values(server, db):
    expect_status(write_lp(server, db, "m,host=secret_tag_value_1234 f=1 1"), 204)
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    assert "secret_tag_value_1234" not in text


def test_sync_write_increases_wal_fsyncs(server, db):
    before = metrics(server)
    expect_status(write_lp(server, db, "m f=1 1"), 204)
    after = metrics(server)
    assert after["tributary_wal_fsyncs_total"] > before.get("tributary_wal_fsyncs_total", 0)
    assert after["tributary_wal_fsync_duration_seconds_count"] > before.get("tributary_wal_fsync_duration_seconds_count", 0)


def _line_counters(server, rejected: bool) -> dict[str, float]:
    """`tributary_ingester_*lines*` series; rejected ones say "reject" in their name or labels."""
    return {
        key: value
        for key, value in metric_series(server).items()
        if key.startswith("tributary_ingester_")
        and "lines" in key.split("{", 1)[0]
        and not key.split("{", 1)[0].endswith(("_bucket", "_sum", "_count", "_created"))
        and (("reject" in key) == rejected)
    }


def _grown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after if after[key] > before.get(key, 0.0)}


def test_written_lines_counter_goes_up(server, db):
    before = _line_counters(server, rejected=False)
    expect_status(write_lp(server, db, "m,t=a f=1 1\nm,t=b f=2 2\nm,t=c f=3 3\n"), 204)
    after = _line_counters(server, rejected=False)
    assert after, "no tributary_ingester_*lines* metric"
    assert any(delta >= 3 for delta in _grown(before, after).values()), (before, after)


def test_rejected_lines_counter_goes_up(server, db):
    before = _line_counters(server, rejected=True)
    expect_status(write_lp(server, db, "m,t=a f=1 1\nm,t=b f= 2\nm,t=c f 3\n"), 400)
    after = _line_counters(server, rejected=True)
    assert after, "no tributary_ingester_*lines* metric that says reject in its name or labels"
    assert any(delta >= 2 for delta in _grown(before, after).values()), (before, after)
