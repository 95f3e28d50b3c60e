"""Retention periods, as a user of InfluxDB 3 sets them.

- `POST /api/v3/configure/database` with `{"db", "retention_period": "30d"}` creates a
  database that keeps rows for that long; `PUT` with the same body changes the period
  (`null` keeps everything again).
- Queries never return rows older than the period, from the buffer or from files, at once.
- Partitions (table, UTC day) wholly older than the period are dropped from the catalog every
  `--retention-check-interval`, and their objects are deleted after `--gc-grace-period`.
"""

from __future__ import annotations

import time
from pathlib import Path

import requests

from conftest import (
    files_under,
    HTTP_TIMEOUT_S,
    count_rows,
    expect_status,
    poll_until,
    query,
    write_lp,
)

OLD_NS = 1_451_606_400_000_000_000  # 2016-01-01T00:00:00Z


def now_ns() -> int:
    return time.time_ns()


def configure(server, method: str, body: dict) -> requests.Response:
    return requests.request(
        method, f"{server.url}/api/v3/configure/database", json=body, timeout=HTTP_TIMEOUT_S
    )


def write_old_and_new(server, db: str) -> None:
    now = now_ns()
    lines = "\n".join(
        [f"cpu,host=old usage={i} {OLD_NS + i}" for i in range(5)]
        + [f"cpu,host=new usage={i} {now - i * 1_000_000}" for i in range(3)]
    )
    expect_status(write_lp(server, db, lines, precision="nanosecond"), 204)


def hosts(server, db: str) -> list[str]:
    rows = query(server, db, "SELECT DISTINCT host FROM cpu ORDER BY host")
    return [r["host"] for r in rows]


def parquet_objects(server) -> list[Path]:
    return files_under(server.data_dir / "objects", ".parquet")


def test_a_database_created_with_a_retention_period_never_returns_older_rows(start_server, db):
    server = start_server()
    expect_status(configure(server, "POST", {"db": db, "retention_period": "30d"}), 200)
    write_old_and_new(server, db)
    assert hosts(server, db) == ["new"]
    assert count_rows(server, db, "cpu") == 3
    # Filters, aggregates and ORDER BY see the same rows.
    rows = query(server, db, "SELECT count(*) AS n, min(time) AS t FROM cpu WHERE usage >= 0")
    assert rows[0]["n"] == 3


def test_retention_can_be_set_changed_and_removed_and_applies_at_once(start_server, db):
    server = start_server()
    write_old_and_new(server, db)
    assert hosts(server, db) == ["new", "old"]
    expect_status(configure(server, "PUT", {"db": db, "retention_period": "30d"}), 200)
    assert hosts(server, db) == ["new"]
    expect_status(configure(server, "PUT", {"db": db, "retention_period": None}), 200)
    assert hosts(server, db) == ["new", "old"]


def test_persisted_rows_past_retention_are_hidden_and_their_partitions_dropped(start_server, db):
    server = start_server(
        "--persist-interval", "100ms",
        "--retention-check-interval", "1s",
        "--gc-grace-period", "1s",
        "--compaction-interval", "1h",
    )
    write_old_and_new(server, db)
    poll_until(
        lambda: len(query(server, db, "SELECT * FROM system.parquet_files")) == 2,
        20,
        "both partitions persisted",
    )
    old_day = [p for p in parquet_objects(server) if "2016-01-01" in str(p)]
    assert len(old_day) == 1
    assert hosts(server, db) == ["new", "old"]

    expect_status(configure(server, "PUT", {"db": db, "retention_period": "30d"}), 200)
    assert hosts(server, db) == ["new"]  # at once, from files too
    poll_until(
        lambda: [f["partition"] for f in query(server, db, "SELECT * FROM system.parquet_files")]
        == [f["partition"] for f in query(server, db, "SELECT * FROM system.parquet_files WHERE partition <> '2016-01-01'")]
        and len(query(server, db, "SELECT * FROM system.parquet_files")) == 1,
        20,
        "the 2016 partition dropped from the catalog",
    )
    poll_until(lambda: not old_day[0].exists(), 20, "the dropped partition's object deleted")
    assert hosts(server, db) == ["new"]
    assert count_rows(server, db, "cpu") == 3
    assert any("2016-01-01" not in str(p) for p in parquet_objects(server))


def test_bad_retention_periods_are_rejected_with_the_field_named(start_server, db):
    server = start_server()
    for bad in ["thirty days", "0s", "-1d"]:
        resp = configure(server, "POST", {"db": db, "retention_period": bad})
        assert resp.status_code == 400, resp.text
        assert "retention_period" in resp.json()["error"]
    resp = configure(server, "PUT", {"db": "no-such-db", "retention_period": "1d"})
    assert resp.status_code == 404, resp.text


def configure_table(server, method: str, body: dict) -> requests.Response:
    return requests.request(
        method, f"{server.url}/api/v3/configure/table", json=body, timeout=HTTP_TIMEOUT_S
    )


def test_a_table_created_with_its_own_retention_period_keeps_rows_that_long(start_server, db):
    server = start_server()
    expect_status(configure(server, "POST", {"db": db}), 200)
    body = {
        "db": db,
        "table": "cpu",
        "tags": ["host"],
        "fields": [{"name": "usage", "type": "float64"}],
        "retention_period": "30d",
    }
    expect_status(configure_table(server, "POST", body), 200)
    # The declared types hold: an integer for `usage` is rejected.
    resp = write_lp(server, db, f"cpu,host=x usage=1i {now_ns()}", precision="nanosecond")
    assert resp.status_code == 400, resp.text
    write_old_and_new(server, db)
    assert hosts(server, db) == ["new"]
    # Another table of the database keeps everything (the database has no period).
    expect_status(
        write_lp(server, db, f"mem,host=old used=1 {OLD_NS}", precision="nanosecond"), 204
    )
    assert query(server, db, "SELECT host FROM mem") == [{"host": "old"}]

    # The table's own period wins over the database's, and can be removed again.
    expect_status(configure(server, "PUT", {"db": db, "retention_period": "1h"}), 200)
    assert query(server, db, "SELECT host FROM mem") == []
    expect_status(configure_table(server, "PUT", {"db": db, "table": "cpu", "retention_period": "36500d"}), 200)
    assert hosts(server, db) == ["new", "old"]
    expect_status(configure_table(server, "PUT", {"db": db, "table": "cpu", "retention_period": None}), 200)
    assert hosts(server, db) == ["new"]  # the database's hour again
    assert [r["host"] for r in query(server, db, "SELECT host FROM last_cache('cpu') ORDER BY host")] == ["new"]


def test_creating_a_table_checks_its_definition(start_server, db):
    server = start_server()
    expect_status(configure(server, "POST", {"db": db}), 200)
    ok = {"db": db, "table": "cpu", "tags": ["host"], "fields": [{"name": "u", "type": "float64"}]}
    expect_status(configure_table(server, "POST", ok), 200)
    assert configure_table(server, "POST", ok).status_code == 409
    bad_type = dict(ok, table="t2", fields=[{"name": "u", "type": "decimal"}])
    resp = configure_table(server, "POST", bad_type)
    assert resp.status_code == 400 and "decimal" in resp.json()["error"], resp.text
    twice = dict(ok, table="t3", tags=["u"])
    assert configure_table(server, "POST", twice).status_code == 400
    assert configure_table(server, "POST", dict(ok, db="no-such-db")).status_code == 404
    resp = configure_table(server, "PUT", {"db": db, "table": "nope", "retention_period": "1d"})
    assert resp.status_code == 404 and "nope" in resp.json()["error"], resp.text
