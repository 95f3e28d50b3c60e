"""Deletes: dropping a table, and deleting the rows of a time range whose tags match.

Specifies that
- `DELETE /api/v3/configure/table?db=&table=` drops a table (200): queries on it then fail
  with a table-not-found error (4xx); it is gone from `information_schema.tables` and `SHOW
  TABLES`; the other tables of the database (and tables of that name in other databases) are
  untouched; its name is free at once for a new table, whose columns may have other types;
  its files leave `system.parquet_files` at once and their objects the object store after
  `--gc-grace-period`; it stays dropped after a restart, SIGTERM or SIGKILL, whether its rows
  were buffered or persisted, and whether the name was dropped once or twice. Without `db` or
  `table` -> 400; an unknown database or table -> 404 with a JSON `{"error"}` naming it;
- `POST /api/v3/delete` with `{"db", "table", "start", "stop", "predicate"}` (204) deletes the
  rows written before it whose time is in [start, stop] (RFC 3339 with any offset, or integer
  nanoseconds; both inclusive; absent: unbounded) and whose tags equal every `tag = 'value'`
  term of the predicate (terms joined by AND in any case; values in single or double quotes,
  or bare words; empty or absent: every row of the range). `_measurement = "cpu"` in the
  predicate may name the table instead of `table`.
  - matching rows are hidden at once, whether they are buffered, persisted, or some of each
    (a key persisted and overwritten in the buffer included); rows with other tag values,
    without the tag, of other tables, or outside the range (start - 1 ns, stop + 1 ns) stay;
    rows written after the delete, in its range, are visible;
  - `last_cache('table')` never returns a deleted row: a series whose latest row was deleted
    shows its latest surviving row, a series with none left is absent;
  - a key deleted and then written again with some of its fields has only the new fields:
    the deleted row lends none of its fields to the new one (the dedup that merges the last
    non-null field per key never sees it);
  - results are the same after a SIGKILL before persistence (WAL replay applies the delete
    again) and after a graceful restart; the compactor (`--compaction-interval`) rewrites the
    partitions whose files hold deleted rows, even a single file, into level-2 files (a past
    day's level) that
    hold only the surviving rows (listed in `system.compaction_events`), and the replaced
    objects are deleted after `--gc-grace-period`, with query results unchanged;
  - a predicate with OR, `!=`, `>`, parentheses or an unterminated quote, a term on a field
    (the message says it is not a tag), start after stop, a bad time, or no `db` -> 400 with a
    JSON error naming the problem; an unknown database or table -> 404 naming it; a `table`
    that the predicate's `_measurement` contradicts -> 400;
- `POST /api/v2/delete?org=&bucket=<db>` with `{"start", "stop", "predicate"}` (204), as the
  influxdb-client library's `DeleteApi` sends it, deletes the same way: `_measurement` names
  the table, and without it the delete applies to every table of the bucket that has the
  predicate's tags; an unknown bucket -> 404.

Every test has its own data directory. Rows are written with nanosecond precision on a past
day (2024-05-01); `--compaction-interval 1h` keeps the compactor away except in the
compaction test. Persistence is observed in `system.parquet_files`, garbage collection on
disk, each by polling with a deadline; no test sleeps for an interval.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from typing import Any, Iterable

import pytest
import requests

from conftest import (
    HTTP_TIMEOUT_S,
    Server,
    error_message,
    expect_status,
    files_under,
    json_body,
    poll_until,
    query,
    query_raw,
    write_lp,
)
from persistence_contract import (
    S,
    Point,
    normalise,
    parquet_files,
    persisted_rows,
    set_flag,
    utc_ns,
    wait_for_persisted,
)

DAY = "2024-05-01"
T0 = utc_ns(f"{DAY}T12:00:00")
#: The range of the main range-delete tests.
START = T0 + 10 * S
STOP = T0 + 20 * S

#: Rows stay in the buffer: nothing is persisted or compacted while the test runs.
BUFFER_ONLY = ("--persist-interval", "1h", "--compaction-interval", "1h")
#: Rows are persisted soon after they are written; nothing is compacted.
PERSIST_FAST = ("--persist-interval", "100ms", "--compaction-interval", "1h")
#: Upper bound for a compaction (1 s interval) to be listed and for garbage collection (1 s
#: grace period) to delete what it replaced.
COMPACT_TIMEOUT_S = 20.0
POLL_S = 0.05


# -- requests ----------------------------------------------------------------------------------


def drop_table(server: Server, db: str | None, table: str | None) -> requests.Response:
    """`DELETE /api/v3/configure/table?db=&table=`; `None` leaves a parameter out."""
    params = {k: v for k, v in {"db": db, "table": table}.items() if v is not None}
    return requests.delete(f"{server.url}/api/v3/configure/table", params=params, timeout=HTTP_TIMEOUT_S)


def delete_rows(server: Server, body: dict) -> requests.Response:
    """`POST /api/v3/delete` with the JSON `body`."""
    return requests.post(f"{server.url}/api/v3/delete", json=body, timeout=HTTP_TIMEOUT_S)


def rfc3339(ns: int) -> str:
    """`2024-05-01T12:00:10.000000001Z`: an RFC 3339 time with every nanosecond digit."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // S)) + f".{ns % S:09d}Z"


# -- data --------------------------------------------------------------------------------------


def _escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def line(p: Point) -> str:
    """The line protocol of `p` (tag values escaped; `Point.line` does not)."""
    tags = "".join(f",{k}={_escape_tag(v)}" for k, v in sorted(p.tags.items()))
    fields = ",".join(f"{k}={_lp_field(v)}" for k, v in p.fields.items())
    return f"{p.table}{tags} {fields} {p.time_ns}"


def _lp_field(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return repr(v)
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cpu(host: str | None, t: int, region: str | None = "eu", **fields: Any) -> Point:
    """A `cpu` row; `host=None` (or `region=None`) leaves the tag out: a null tag in its key."""
    tags = {k: v for k, v in {"host": host, "region": region}.items() if v is not None}
    return Point("cpu", tags, fields or {"usage": float(t % (1000 * S)) / S}, t)


def write(server: Server, db: str, points: Iterable[Point], expected: "Expected | None" = None) -> None:
    """Writes the points in one request (204 expected) and records them in `expected`."""
    points = list(points)
    expect_status(write_lp(server, db, "\n".join(line(p) for p in points), precision="nanosecond"), 204)
    if expected is not None:
        expected.write(points)


def row_order(row: dict) -> tuple:
    return row["time"], repr(sorted(row.items()))


class Expected:
    """What a database must answer: one row per key (table, tags, time) with the newest
    non-null value of each field written since the key was last deleted."""

    def __init__(self) -> None:
        self._rows: dict[tuple, dict] = {}

    def write(self, points: Iterable[Point]) -> None:
        for p in points:
            self._rows.setdefault(p.key, {**p.tags, "time": p.time_ns}).update(p.fields)

    def delete(self, tables: Iterable[str], lo: int, hi: int, tags: dict[str, str]) -> None:
        tables = set(tables)
        self._rows = {
            key: row
            for key, row in self._rows.items()
            if not (key[0] in tables and lo <= row["time"] <= hi and all(row.get(t) == v for t, v in tags.items()))
        }

    def rows(self, table: str) -> list[dict]:
        return sorted((dict(r) for k, r in self._rows.items() if k[0] == table), key=row_order)

    def latest(self, table: str) -> list[dict]:
        """What `last_cache(table)` answers: the latest row of every series."""
        series: dict[tuple, dict] = {}
        for (tbl, tags, t), row in self._rows.items():
            if tbl == table and (tags not in series or t > series[tags]["time"]):
                series[tags] = row
        return sorted((dict(r) for r in series.values()), key=row_order)

    def discard(self, table: str, matches) -> None:
        """Deletes the rows of `table` for which `matches(row)` holds."""
        self._rows = {k: r for k, r in self._rows.items() if not (k[0] == table and matches(r))}

    def count(self, table: str) -> int:
        return sum(1 for k in self._rows if k[0] == table)


def table_rows(server: Server, db: str, table: str) -> list[dict]:
    """Every row of `table` (time in ns, nulls left out), in a stable order."""
    return sorted(normalise(query(server, db, f'SELECT * FROM "{table}"')), key=row_order)


def last_cache_rows(server: Server, db: str, table: str) -> list[dict]:
    return sorted(normalise(query(server, db, f"SELECT * FROM last_cache('{table}')")), key=row_order)


def diff(got: list[dict], want: list[dict]) -> str:
    missing = [r for r in want if r not in got]
    extra = [r for r in got if r not in want]
    return f"{len(got)} rows, expected {len(want)}; missing {missing[:5]}; unexpected {extra[:5]}"


def assert_answers(server: Server, db: str, expected: Expected, tables: Iterable[str], when: str) -> None:
    """Every table answers exactly the expected rows, also to a count and a tag filter."""
    for table in tables:
        got = table_rows(server, db, table)
        want = expected.rows(table)
        assert got == want, f"{table} {when}: {diff(got, want)}"
        n = query(server, db, f'SELECT count(*) AS n FROM "{table}"')[0]["n"]
        assert n == len(want), f"count(*) of {table} {when}: {n}, expected {len(want)}"
        if any("host" in r for r in want):
            a = normalise(query(server, db, f"SELECT * FROM \"{table}\" WHERE host = 'a' ORDER BY time"))
            want_a = [r for r in want if r.get("host") == "a"]
            assert sorted(a, key=row_order) == want_a, f"{table} WHERE host = 'a' {when}: {diff(a, want_a)}"


# -- the object store --------------------------------------------------------------------------


def objects_on_disk(server: Server) -> set[str]:
    """Every Parquet object under `<data-dir>/objects/`, as a path relative to it."""
    root = server.data_dir / "objects"
    return {p.relative_to(root).as_posix() for p in files_under(root, ".parquet")}


def user_tables(server: Server, db: str) -> list[str]:
    rows = query(
        server, db,
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema NOT IN ('system', 'information_schema') ORDER BY table_name",
    )
    return [r["table_name"] for r in rows]


def shown_tables(server: Server, db: str) -> list[str]:
    rows = query(server, db, "SHOW TABLES")
    return sorted(r["table_name"] for r in rows if r["table_schema"] not in ("system", "information_schema"))


def column_types(server: Server, db: str, table: str) -> dict[str, str]:
    rows = query(
        server, db,
        "SELECT column_name, data_type FROM information_schema.columns "
        f"WHERE table_name = '{table}' AND table_schema NOT IN ('system', 'information_schema')",
    )
    return {r["column_name"]: r["data_type"] for r in rows}


def assert_table_not_found(server: Server, db: str, table: str) -> None:
    for sql in [f'SELECT * FROM "{table}"', f"SELECT count(*) FROM \"{table}\"", f"SELECT * FROM last_cache('{table}')"]:
        resp = query_raw(server, db, sql)
        assert 400 <= resp.status_code < 500, f"{sql} after the drop: HTTP {resp.status_code}: {resp.text[:500]}"
        message = error_message(resp)
        assert table in message and "not found" in message.lower(), f"{sql}: {message}"


# -- dropping a table ---------------------------------------------------------------------------


def test_a_dropped_table_is_gone_and_every_other_table_is_untouched(start_server, db):
    server = start_server(*BUFFER_ONLY)
    other_db = f"{db}_other"
    expected, other = Expected(), Expected()
    write(server, db, [cpu("a", T0), cpu("b", T0 + S), Point("mem", {"host": "a"}, {"used": 1}, T0)], expected)
    write(server, other_db, [cpu("a", T0)], other)
    assert user_tables(server, db) == ["cpu", "mem"]

    expect_status(drop_table(server, db, "cpu"), 200)
    assert_table_not_found(server, db, "cpu")
    assert user_tables(server, db) == ["mem"]
    assert shown_tables(server, db) == ["mem"]
    assert table_rows(server, db, "mem") == expected.rows("mem")
    # A table of the same name in another database is another table.
    assert table_rows(server, other_db, "cpu") == other.rows("cpu")
    assert user_tables(server, other_db) == ["cpu"]


def test_a_dropped_tables_name_is_reusable_at_once_with_other_column_types(start_server, db):
    server = start_server(*BUFFER_ONLY)
    write(server, db, [cpu("a", T0, x=1.5, y=2.5), cpu("a", T0 + S, x=2.5, y=3.5)])
    assert column_types(server, db, "cpu")["x"] == "Float64"
    expect_status(drop_table(server, db, "cpu"), 200)

    # `x` was a float field: the new table may make it a string; `y` is no column of it.
    expected = Expected()
    write(server, db, [cpu("b", T0, x="text")], expected)
    assert table_rows(server, db, "cpu") == expected.rows("cpu")
    types = column_types(server, db, "cpu")
    assert set(types) == {"host", "region", "time", "x"}, types
    assert types["x"] == "Utf8", types
    assert user_tables(server, db) == ["cpu"]


def test_the_objects_of_a_dropped_table_are_deleted_after_the_grace_period(start_server, db):
    server = start_server("--persist-interval", "100ms", "--compaction-interval", "1s", "--gc-grace-period", "1s")
    expected = Expected()
    # One file per table (one partition each, one file: nothing for the compactor to merge).
    write(server, db, [cpu("a", T0), cpu("b", T0 + S), Point("mem", {"host": "a"}, {"used": 1}, T0)], expected)
    files = wait_for_persisted(server, db, {"cpu": 2, "mem": 1})
    cpu_paths = {f["path"] for f in files if f["table_name"] == "cpu"}
    mem_paths = {f["path"] for f in files if f["table_name"] == "mem"}
    assert cpu_paths and mem_paths and cpu_paths | mem_paths <= objects_on_disk(server)

    expect_status(drop_table(server, db, "cpu"), 200)
    assert {f["path"] for f in parquet_files(server, db)} == mem_paths, "the dropped table's files are still listed"
    poll_until(lambda: not cpu_paths & objects_on_disk(server), COMPACT_TIMEOUT_S,
               f"the dropped table's objects {sorted(cpu_paths)} to be deleted", POLL_S)
    assert mem_paths <= objects_on_disk(server)
    assert table_rows(server, db, "mem") == expected.rows("mem")

    # A new table of that name persists into the same directory; its objects stay.
    new = Expected()
    write(server, db, [cpu("c", T0, usage="s")], new)
    files = wait_for_persisted(server, db, {"cpu": 1})
    assert table_rows(server, db, "cpu") == new.rows("cpu")
    new_paths = {f["path"] for f in files if f["table_name"] == "cpu"}
    assert len(new_paths) == 1 and not new_paths & cpu_paths
    assert objects_on_disk(server) == new_paths | mem_paths


@pytest.mark.parametrize("stop", ["sigkill", "sigterm"])
@pytest.mark.parametrize("persisted", [False, True], ids=["buffered", "persisted"])
def test_a_dropped_table_stays_dropped_after_a_restart(start_server, db, persisted, stop):
    server = start_server(*(PERSIST_FAST if persisted else BUFFER_ONLY))
    expected = Expected()
    write(server, db, [cpu("a", T0, x=1.5), cpu("a", T0 + S, x=2.5)])
    write(server, db, [Point("mem", {"host": "a"}, {"used": 1}, T0)], expected)
    if persisted:
        wait_for_persisted(server, db, {"cpu": 2, "mem": 1})
    expect_status(drop_table(server, db, "cpu"), 200)
    # The name is reused, with `x` a string now, before the restart.
    write(server, db, [cpu("b", T0 + S, x="text")], expected)

    def check(when: str) -> None:
        assert user_tables(server, db) == ["cpu", "mem"], when
        assert column_types(server, db, "cpu")["x"] == "Utf8", when
        for table in ("cpu", "mem"):
            got = table_rows(server, db, table)
            assert got == expected.rows(table), f"{table} {when}: {diff(got, expected.rows(table))}"
        # No file of the dropped table is listed (the new one's hold at most its own rows).
        cpu_files = [f for f in parquet_files(server, db) if f["table_name"] == "cpu"]
        assert sum(f["row_count"] for f in cpu_files) <= expected.count("cpu"), f"{when}: {cpu_files}"
        assert all(f["min_time"] > T0 for f in cpu_files), f"{when}: a file of the dropped table is listed: {cpu_files}"

    check("before the restart")
    if stop == "sigkill":
        server.kill()
    else:
        assert server.terminate() == 0, server.log_tail()
    server.start()
    check(f"after a {stop} and restart")
    # The new table keeps taking writes, which survive a crash: replay does not take them for
    # rows of the dropped table.
    write(server, db, [cpu("c", T0 + 2 * S, x="more")], expected)
    check(f"after a write following the {stop}")
    server.kill()
    server.start()
    check(f"after a write following the {stop}, and a SIGKILL")


def test_a_name_dropped_twice_keeps_only_its_newest_table_after_a_crash(start_server, db):
    server = start_server(*BUFFER_ONLY)
    write(server, db, [cpu("a", T0, x=1.5)])
    expect_status(drop_table(server, db, "cpu"), 200)
    write(server, db, [cpu("b", T0, x="second")])
    expect_status(drop_table(server, db, "cpu"), 200)
    expected = Expected()
    write(server, db, [cpu("c", T0, x=3)], expected)
    assert table_rows(server, db, "cpu") == expected.rows("cpu")
    server.kill()
    server.start()
    got = table_rows(server, db, "cpu")
    assert got == expected.rows("cpu"), f"after a SIGKILL and restart: {diff(got, expected.rows('cpu'))}"
    assert column_types(server, db, "cpu")["x"] == "Int64"


def test_dropping_a_table_needs_db_and_table_and_names_what_is_unknown(start_server, db):
    server = start_server(*BUFFER_ONLY)
    write(server, db, [cpu("a", T0)])
    for params, named in [((None, "cpu"), "db"), ((db, None), "table"), ((None, None), "db")]:
        resp = expect_status(drop_table(server, *params), 400)
        assert named in error_message(resp), resp.text
    resp = expect_status(drop_table(server, "no_such_db", "cpu"), 404)
    assert "no_such_db" in json_body(resp)["error"], resp.text
    resp = expect_status(drop_table(server, db, "no_such_table"), 404)
    assert "no_such_table" in json_body(resp)["error"], resp.text
    # Nothing was dropped by the refused requests; a second drop finds nothing.
    assert user_tables(server, db) == ["cpu"]
    expect_status(drop_table(server, db, "cpu"), 200)
    resp = expect_status(drop_table(server, db, "cpu"), 404)
    assert "cpu" in json_body(resp)["error"], resp.text


# -- range deletes: where the rows are ----------------------------------------------------------

#: Rows around the range [START, STOP] that `host = 'a'` on `cpu` deletes: the ones at
#: START, START + 5 s and STOP of host a (both regions).
AROUND_THE_RANGE = [
    cpu("a", START - 1),
    cpu("a", START),
    cpu("a", START + 5 * S),
    cpu("a", STOP),
    cpu("a", STOP + 1),
    cpu("a", START + 5 * S, region="us"),
    cpu("b", START),
    cpu("b", START + 5 * S),
    cpu("b", STOP),
    cpu(None, START + 5 * S),  # no host: a null tag never matches
    Point("mem", {"host": "a"}, {"used": 1}, START + 5 * S),  # another table
]
#: Where the rows are when the delete comes: (batches persisted one file each, then rows
#: left in the buffer).
PLACES = {
    "buffer": ([], AROUND_THE_RANGE),
    "files": ([AROUND_THE_RANGE], []),
    # Half of them in each place, and a persisted key overwritten in the buffer: both versions
    # must go.
    "buffer-and-files": (
        [AROUND_THE_RANGE[0::2]],
        AROUND_THE_RANGE[1::2] + [cpu("a", START + 5 * S, usage=99.0)],
    ),
    # Half of them in each of two files, the second overwriting a key of the first.
    "two-files": (
        [AROUND_THE_RANGE[0::2], AROUND_THE_RANGE[1::2] + [cpu("a", START + 5 * S, usage=99.0)]],
        [],
    ),
}


def distinct_rows_per_table(points: Iterable[Point]) -> Counter:
    return Counter(p.table for p in {p.key: p for p in points}.values())


def place_rows(start_server, db: str, files: list[list[Point]], buffered: list[Point], expected: Expected) -> Server:
    """A server with each batch of `files` persisted as one file per table, and `buffered`
    rows in its buffer only (its persist interval then is an hour)."""
    server = start_server(*(PERSIST_FAST if files else BUFFER_ONLY))
    persisted = Counter()
    for batch in files:
        write(server, db, batch, expected)
        persisted += distinct_rows_per_table(batch)
        wait_for_persisted(server, db, persisted)
    if files and buffered:
        assert server.terminate() == 0, server.log_tail()
        set_flag(server, "--persist-interval", "1h")
        server.start()
    if buffered:
        write(server, db, buffered, expected)
    listed = parquet_files(server, db)
    assert persisted_rows(listed) == persisted, f"the rows are not where the test wants them: {listed}"
    return server


@pytest.mark.parametrize("place", PLACES)
def test_a_range_delete_hides_matching_rows_at_once_and_after_restarts(start_server, db, place):
    expected = Expected()
    server = place_rows(start_server, db, *PLACES[place], expected)
    tables = ["cpu", "mem"]
    assert_answers(server, db, expected, tables, "before the delete")

    resp = delete_rows(server, {
        "db": db, "table": "cpu", "start": rfc3339(START), "stop": rfc3339(STOP), "predicate": "host = 'a'",
    })
    expect_status(resp, 204)
    expected.delete(["cpu"], START, STOP, {"host": "a"})
    assert_answers(server, db, expected, tables, f"right after the delete ({place})")

    # Rows written after the delete, in its range, are visible: a deleted key written again
    # (every field) and a new one.
    write(server, db, [cpu("a", START + 5 * S, usage=100.0), cpu("a", START + 7 * S, usage=101.0)], expected)
    assert_answers(server, db, expected, tables, f"after writes into the deleted range ({place})")

    server.kill()  # the WAL replays what was not persisted, the delete applied again
    server.start()
    assert_answers(server, db, expected, tables, f"after a SIGKILL and restart ({place})")
    assert server.terminate() == 0, server.log_tail()  # persists the buffer, truncates the WAL
    server.start()
    assert_answers(server, db, expected, tables, f"after a graceful restart ({place})")

    # Writes after the restarts, in the range, are visible too, and survive a crash: the WAL
    # numbers them above the delete's cutoff.
    write(server, db, [cpu("a", START + 8 * S, usage=102.0), cpu("a", START, usage=103.0)], expected)
    assert_answers(server, db, expected, tables, f"after writes following the restarts ({place})")
    server.kill()
    server.start()
    assert_answers(server, db, expected, tables, f"after writes following the restarts and a SIGKILL ({place})")


# -- range deletes: the request ------------------------------------------------------------------

#: host a has a row every second from T0 to T0 + 9 s, and one a nanosecond either side of
#: [T0 + 3 s, T0 + 6 s], the range most of the forms name.
TIMES = sorted([T0 + i * S for i in range(10)] + [T0 + 3 * S - 1, T0 + 6 * S + 1])
LO, HI = T0 + 3 * S, T0 + 6 * S
MIN_NS, MAX_NS = -(2**63), 2**63 - 1


@pytest.mark.parametrize(
    "start,stop,lo,hi",
    [
        ("2024-05-01T12:00:03Z", "2024-05-01T12:00:06Z", LO, HI),
        (rfc3339(LO), rfc3339(HI), LO, HI),
        ("2024-05-01T14:00:03+02:00", "2024-05-01T07:00:06-05:00", LO, HI),
        ("2024-05-01T12:00:02.999999999Z", "2024-05-01T12:00:06.000000001Z", LO - 1, HI + 1),
        (LO, HI, LO, HI),
        (LO - 1, LO - 1, LO - 1, LO - 1),
        (None, rfc3339(HI), MIN_NS, HI),
        (LO, None, LO, MAX_NS),
        (None, None, MIN_NS, MAX_NS),
        # Beyond the years nanoseconds cover: the beginning and the end of time.
        ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", MIN_NS, MAX_NS),
    ],
    ids=["rfc3339-z", "rfc3339-nanos", "rfc3339-offsets", "rfc3339-edges", "integer-ns", "one-nanosecond",
         "no-start", "no-stop", "unbounded", "beyond-nanosecond-years"],
)
def test_start_and_stop_are_inclusive_rfc3339_or_nanoseconds_and_optional(start_server, db, start, stop, lo, hi):
    server = start_server(*BUFFER_ONLY)
    expected = Expected()
    write(server, db, [cpu("a", t) for t in TIMES] + [cpu("b", T0 + 4 * S)], expected)
    body = {"db": db, "table": "cpu", "predicate": "host = 'a'"}
    body.update({k: v for k, v in {"start": start, "stop": stop}.items() if v is not None})
    expect_status(delete_rows(server, body), 204)
    expected.delete(["cpu"], lo, hi, {"host": "a"})
    assert_answers(server, db, expected, ["cpu"], f"after deleting {body}")


#: Series of `cpu` at T0 (deleted or not by each predicate), and rows a predicate never reaches:
#: host a a second later (outside the range [T0, T0]) and `mem` (another table).
SERIES = [("a", "eu"), ("a", "us"), ("b", "eu"), (None, "eu"), ("web 1", "eu"), ("a", None)]


@pytest.mark.parametrize(
    "body,deleted",
    [
        ({"table": "cpu", "predicate": "host = 'a'"}, [("a", "eu"), ("a", "us"), ("a", None)]),
        ({"table": "cpu", "predicate": "host='a' AND region='eu'"}, [("a", "eu")]),
        ({"table": "cpu", "predicate": 'host = "a" and region = "eu"'}, [("a", "eu")]),
        ({"table": "cpu", "predicate": "host = a AnD region = eu"}, [("a", "eu")]),
        ({"table": "cpu", "predicate": "host = 'web 1'"}, [("web 1", "eu")]),
        ({"table": "cpu", "predicate": "region = 'eu'"}, [("a", "eu"), ("b", "eu"), (None, "eu"), ("web 1", "eu")]),
        ({"table": "cpu", "predicate": "host = 'nobody'"}, []),
        ({"table": "cpu", "predicate": "host = 'A'"}, []),
        ({"table": "cpu", "predicate": ""}, SERIES),
        ({"table": "cpu"}, SERIES),
        ({"predicate": '_measurement="cpu" AND host="a"'}, [("a", "eu"), ("a", "us"), ("a", None)]),
        ({"predicate": "_measurement = cpu"}, SERIES),
        ({"table": "cpu", "predicate": "_measurement = 'cpu' AND host = 'b'"}, [("b", "eu")]),
    ],
    ids=["one-tag", "and", "lowercase-and-double-quotes", "bare-words-mixed-case-and", "quoted-space",
         "other-tag", "no-match", "values-are-case-sensitive", "empty", "absent", "measurement-names-the-table", "measurement-only",
         "measurement-agrees-with-table"],
)
def test_a_predicate_is_tag_equalities_joined_by_and(start_server, db, body, deleted):
    server = start_server(*BUFFER_ONLY)
    expected = Expected()
    rows = [cpu(h, T0, region=r) for h, r in SERIES]
    rows += [cpu("a", T0 + S), Point("mem", {"host": "a", "region": "eu"}, {"used": 1}, T0)]
    write(server, db, rows, expected)
    expect_status(delete_rows(server, {"db": db, "start": T0, "stop": T0, **body}), 204)
    expected.discard("cpu", lambda r: r["time"] == T0 and (r.get("host"), r.get("region")) in deleted)
    assert_answers(server, db, expected, ["cpu", "mem"], f"after deleting {body}")


@pytest.mark.parametrize(
    "change,status,named",
    [
        ({"predicate": "host = 'a' OR host = 'b'"}, 400, ["predicate"]),
        ({"predicate": "host != 'a'"}, 400, ["predicate"]),
        ({"predicate": "usage > 5"}, 400, ["predicate"]),
        ({"predicate": "(host = 'a')"}, 400, ["predicate"]),
        ({"predicate": "host = 'a"}, 400, ["predicate", "unterminated"]),
        ({"predicate": "host = 'a' AND"}, 400, ["predicate"]),
        ({"predicate": "usage = '1'"}, 400, ["usage", "not a tag"]),
        ({"start": T0 + 9 * S, "stop": T0}, 400, ["start", "stop"]),
        ({"start": "yesterday"}, 400, ["start"]),
        ({"stop": "2024-13-01T00:00:00Z"}, 400, ["stop"]),
        ({"start": 1.5}, 400, ["start"]),
        ({"db": None}, 400, ["db"]),
        ({"db": "no_such_db"}, 404, ["no_such_db"]),
        ({"table": "no_such_table"}, 404, ["no_such_table"]),
        ({"predicate": "_measurement = 'no_such_table'", "table": None}, 404, ["no_such_table"]),
        ({"predicate": "_measurement = 'mem' AND host = 'a'"}, 400, ["cpu", "mem"]),
        # No table named: refused rather than applied to every table (a typo must not wipe a
        # database); InfluxDB 2's /api/v2/delete is the one that applies to every table.
        ({"table": None}, 400, ["table"]),
        ({"table": ""}, 400, ["table"]),
    ],
    ids=["or", "not-equal", "greater-than", "parentheses", "unterminated-quote", "dangling-and",
         "field-term", "start-after-stop", "bad-start", "bad-stop", "fractional-start", "no-db",
         "unknown-db", "unknown-table", "unknown-measurement", "measurement-contradicts-table",
         "no-table", "empty-table"],
)
def test_a_bad_range_delete_is_refused_naming_the_problem_and_deletes_nothing(start_server, db, change, status, named):
    server = start_server(*BUFFER_ONLY)
    expected = Expected()
    write(server, db, [cpu("a", T0 + i * S) for i in range(10)] + [Point("mem", {"host": "a"}, {"used": 1}, T0)], expected)
    body = {"db": db, "table": "cpu", "start": rfc3339(T0), "stop": rfc3339(T0 + 9 * S), "predicate": "host = 'a'"}
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    resp = expect_status(delete_rows(server, body), status)
    message = error_message(resp)
    assert "error" in json_body(resp), resp.text
    missing = [word for word in named if word.lower() not in message.lower()]
    assert not missing, f"the message of {body} names no {missing}: {message}"
    assert_answers(server, db, expected, ["cpu", "mem"], f"after the refused {body}")


# -- range deletes: last values, overwrites, compaction -----------------------------------------

SERIES_ROWS = [
    cpu("a", T0, usage=1.0), cpu("a", T0 + S, usage=2.0), cpu("a", T0 + 2 * S, usage=3.0),
    cpu("b", T0, usage=10.0), cpu("b", T0 + S, usage=11.0),
    cpu("c", T0 + 2 * S, usage=20.0),
]


SERIES_PLACES = {
    "buffer": ([], SERIES_ROWS),
    "files": ([SERIES_ROWS], []),
    # The latest rows in the buffer, the ones before them in a file.
    "buffer-and-files": ([[p for p in SERIES_ROWS if p.time_ns < T0 + 2 * S]],
                         [p for p in SERIES_ROWS if p.time_ns == T0 + 2 * S]),
    # The latest rows in a file of their own.
    "two-files": ([[p for p in SERIES_ROWS if p.time_ns < T0 + 2 * S],
                   [p for p in SERIES_ROWS if p.time_ns == T0 + 2 * S]], []),
}


@pytest.mark.parametrize("place", SERIES_PLACES)
def test_last_cache_never_returns_a_deleted_row(start_server, db, place):
    expected = Expected()
    server = place_rows(start_server, db, *SERIES_PLACES[place], expected)
    assert last_cache_rows(server, db, "cpu") == expected.latest("cpu")

    # a loses its latest row (its previous one shows); b loses every row (it is gone).
    for start, stop, host in [(T0 + 2 * S, T0 + 2 * S, "a"), (T0, T0 + S, "b")]:
        body = {"db": db, "table": "cpu", "start": start, "stop": stop, "predicate": f"host = '{host}'"}
        expect_status(delete_rows(server, body), 204)
        expected.delete(["cpu"], start, stop, {"host": host})
    want = expected.latest("cpu")
    assert [(r["host"], r["usage"]) for r in want] == [("a", 2.0), ("c", 20.0)]
    got = last_cache_rows(server, db, "cpu")
    assert got == want, f"last_cache('cpu') after the deletes ({place}): {diff(got, want)}"
    server.kill()
    server.start()
    got = last_cache_rows(server, db, "cpu")
    assert got == want, f"last_cache('cpu') after a SIGKILL and restart ({place}): {diff(got, want)}"


@pytest.mark.parametrize("old_in", ["buffer", "file"])
def test_a_deleted_key_written_again_has_only_its_new_fields(start_server, db, old_in):
    old = [cpu("a", T0, x=1.0, y=2.0), cpu("b", T0, x=1.0, y=2.0)]
    expected = Expected()
    server = place_rows(start_server, db, [old] if old_in == "file" else [], old if old_in == "buffer" else [], expected)
    expect_status(delete_rows(server, {"db": db, "table": "cpu", "start": T0, "stop": T0, "predicate": "host = 'a'"}), 204)
    expected.delete(["cpu"], T0, T0, {"host": "a"})
    write(server, db, [cpu("a", T0, x=5.0)], expected)
    want = expected.rows("cpu")
    assert want == [{"host": "a", "region": "eu", "time": T0, "x": 5.0},
                    {"host": "b", "region": "eu", "time": T0, "x": 1.0, "y": 2.0}]

    def check(when: str) -> None:
        got = table_rows(server, db, "cpu")
        assert got == want, f"the rewritten key {when} (old row in the {old_in}): {diff(got, want)}"
        with_y = normalise(query(server, db, "SELECT host, y FROM cpu WHERE y IS NOT NULL"))
        assert with_y == [{"host": "b", "y": 2.0}], f"rows with a y {when}: {with_y}"
        got = last_cache_rows(server, db, "cpu")
        assert got == want, f"last_cache('cpu') {when} (old row in the {old_in}): {diff(got, want)}"

    check("at once")
    server.kill()
    server.start()
    check("after a SIGKILL and restart")
    assert server.terminate() == 0, server.log_tail()  # persists the new row beside the old
    server.start()
    check("after a graceful restart")


def test_the_compactor_rewrites_files_with_deleted_rows_and_results_do_not_change(start_server, db):
    server = start_server("--persist-interval", "100ms", "--compaction-interval", "1s", "--gc-grace-period", "1s")
    expected = Expected()
    # One request: one level-0 file in a past day, which the compactor alone leaves as it is.
    write(server, db, [cpu(h, T0 + i * S, x=float(i), y=float(10 + i)) for h in ("a", "b") for i in range(5)]
          + [cpu(None, T0 + 2 * S, x=0.0)], expected)
    level0 = wait_for_persisted(server, db, {"cpu": 11})
    assert [f["level"] for f in level0] == [0], level0

    def compacted_events() -> list[dict]:
        return query(server, db, "SELECT * FROM system.compaction_events WHERE error IS NULL")

    def wait_for_rewrite(replaced: list[dict]) -> list[dict]:
        """Polls until the partition is held by level-2 files (its day is over) other than `replaced` with exactly
        the surviving rows, and the replaced objects are gone from disk."""
        replaced_paths = {f["path"] for f in replaced}

        def done():
            files = parquet_files(server, db)
            paths = {f["path"] for f in files}
            return files if (
                files and all(f["level"] == 2 for f in files) and not paths & replaced_paths
                and sum(f["row_count"] for f in files) == expected.count("cpu")
            ) else None

        files = poll_until(done, COMPACT_TIMEOUT_S, "the partition to be rewritten without the deleted rows", POLL_S)
        poll_until(lambda: objects_on_disk(server) == {f["path"] for f in parquet_files(server, db)},
                   COMPACT_TIMEOUT_S, "the replaced objects to be deleted", POLL_S)
        return files

    # 1. A delete, and a deleted key written again with one field (a second level-0 file).
    expect_status(delete_rows(server, {
        "db": db, "table": "cpu", "start": T0 + S, "stop": T0 + 3 * S, "predicate": "host = 'a'"}), 204)
    expected.delete(["cpu"], T0 + S, T0 + 3 * S, {"host": "a"})
    assert_answers(server, db, expected, ["cpu"], "right after the first delete")
    write(server, db, [cpu("a", T0 + 2 * S, x=50.0)], expected)
    assert_answers(server, db, expected, ["cpu"], "after rewriting a deleted key")
    files = wait_for_rewrite(level0)
    assert len(files) == 1, files
    assert compacted_events(), "no compaction listed in system.compaction_events"
    assert_answers(server, db, expected, ["cpu"], "after the compaction")

    # 2. A delete alone gets a partition of a single file rewritten.
    events = len(compacted_events())
    expect_status(delete_rows(server, {
        "db": db, "table": "cpu", "start": T0, "stop": T0, "predicate": "host = 'b'"}), 204)
    expected.delete(["cpu"], T0, T0, {"host": "b"})
    assert_answers(server, db, expected, ["cpu"], "right after the second delete")
    wait_for_rewrite(files)
    assert len(compacted_events()) == events + 1, compacted_events()
    assert_answers(server, db, expected, ["cpu"], "after the second compaction")

    server.kill()
    server.start()
    assert_answers(server, db, expected, ["cpu"], "after the compactions and a restart")


# -- InfluxDB 2's delete API ---------------------------------------------------------------------


def test_influxdb_client_delete_api_deletes_by_measurement_and_from_every_table_with_the_tags(start_server, db):
    from influxdb_client import InfluxDBClient
    from influxdb_client.rest import ApiException

    server = start_server(*BUFFER_ONLY)
    expected = Expected()
    rows = []
    for i in range(5):
        t = T0 + i * S
        rows += [cpu("a", t), cpu("b", t), Point("mem", {"host": "a"}, {"used": i}, t),
                 Point("mem", {"host": "b"}, {"used": i}, t), Point("disk", {"device": "sda"}, {"used": i}, t)]
    write(server, db, rows, expected)
    tables = ["cpu", "disk", "mem"]

    def utc(ns: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ns // S, tz=dt.timezone.utc)

    with InfluxDBClient(url=server.url, token="x", org="x", timeout=30_000) as client:
        api = client.delete_api()
        # `_measurement` names the table: host a of mem stays.
        api.delete(utc(T0 + S), utc(T0 + 3 * S), '_measurement="cpu" AND host="a"', bucket=db, org="x")
        expected.delete(["cpu"], T0 + S, T0 + 3 * S, {"host": "a"})
        assert_answers(server, db, expected, tables, "after deleting cpu host a")

        # Without it, every table with a host tag: cpu and mem, not disk.
        api.delete(rfc3339(T0 + 2 * S), rfc3339(T0 + 4 * S), 'host="b"', bucket=db, org="x")
        expected.delete(["cpu", "mem"], T0 + 2 * S, T0 + 4 * S, {"host": "b"})
        assert_answers(server, db, expected, tables, "after deleting host b from every table")

        # An empty predicate: every row of the range in every table.
        api.delete(utc(T0), utc(T0), "", bucket=db, org="x")
        expected.delete(tables, T0, T0, {})
        assert_answers(server, db, expected, tables, "after deleting everything at T0")

        with pytest.raises(ApiException) as e:
            api.delete(utc(T0), utc(T0 + S), 'host="a"', bucket="no_such_bucket", org="x")
        assert e.value.status == 404, e.value
        assert "no_such_bucket" in (e.value.body or ""), e.value.body
        with pytest.raises(ApiException) as e:
            api.delete(utc(T0), utc(T0 + S), 'host="a" OR host="b"', bucket=db, org="x")
        assert e.value.status == 400, e.value
    assert_answers(server, db, expected, tables, "after the refused deletes")


def test_v2_delete_answers_204_and_needs_a_bucket(start_server, db):
    server = start_server(*BUFFER_ONLY)
    expected = Expected()
    write(server, db, [cpu("a", T0), cpu("b", T0)], expected)
    url = f"{server.url}/api/v2/delete"
    body = {"start": rfc3339(T0), "stop": rfc3339(T0), "predicate": '_measurement="cpu" AND host="a"'}
    resp = requests.post(url, params={"org": "x", "bucket": db}, json=body, timeout=HTTP_TIMEOUT_S)
    expect_status(resp, 204)
    assert resp.content == b""
    expected.delete(["cpu"], T0, T0, {"host": "a"})
    assert_answers(server, db, expected, ["cpu"], "after the v2 delete")
    resp = expect_status(requests.post(url, params={"org": "x"}, json=body, timeout=HTTP_TIMEOUT_S), 400)
    assert "bucket" in error_message(resp), resp.text
