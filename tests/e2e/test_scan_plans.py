"""How a scan over persisted files is planned, as `EXPLAIN` shows it.

A table's rows are deduplicated (`DeduplicateExec`) only where they can overlap: files are
deduplicated when written, so files and buffered rows whose time ranges overlap nothing else
are read as they are, and only a group of sources with overlapping ranges is merged and
deduplicated (`querier/src/table.rs`). Files are chosen by the time range the catalog records
for them. Specifies, for a partition (table, UTC day) persisted as two files an hour apart
(compaction held off so they stay two):
- with nothing overlapping, the plan has no dedup and scans both files; buffered rows later
  than both files add no dedup either;
- a buffered write of a key one file holds brings a dedup over that file and the buffer alone
  (the other file is still read as it is), and the query answers the newer value, once;
- a `WHERE time` range inside one file's range scans that file alone, a range over both
  scans both, and a range between them scans none; the rows returned are those of the range.
"""

from __future__ import annotations

import re

import pytest

from conftest import count_rows, expect_status, query, ts_ns, write_lp
from persistence_contract import (
    PERSIST_NEVER,
    PERSIST_SOON,
    S,
    parquet_files,
    set_flag,
    sql_time,
    utc_ns,
    wait_for_persisted,
)

#: `--compaction-interval` longer than any test runs: the files stay as persisted.
COMPACT_NEVER = "1h"
DAY = "2024-03-09"
HOSTS = ("a", "b")
STEP_S = 60
#: Each batch is one hour of rows for every host, two hours apart, so the files do not overlap.
HOUR_A = utc_ns(f"{DAY}T10:00:00")
HOUR_B = utc_ns(f"{DAY}T12:00:00")
HOUR_C = utc_ns(f"{DAY}T14:00:00")
ROWS_PER_HOUR = len(HOSTS) * 3600 // STEP_S
DEDUP = "DeduplicateExec"


def usage(host: str, t_ns: int) -> int:
    """A value of its own for every key."""
    return HOSTS.index(host) * 1_000_000 + (t_ns - HOUR_A) // S


def write_hour(server, db: str, start_ns: int) -> None:
    lines = [
        f"cpu,host={h} usage={usage(h, t)}i {t}"
        for h in HOSTS
        for t in range(start_ns, start_ns + 3600 * S, STEP_S * S)
    ]
    expect_status(write_lp(server, db, "\n".join(lines), precision="nanosecond"), 204)


def physical_plan(server, db: str, sql: str) -> str:
    rows = query(server, db, f"EXPLAIN {sql}")
    plan = "\n".join(r["plan"] for r in rows if r["plan_type"] == "physical_plan")
    assert plan, rows
    return plan


_PARQUET_RE = re.compile(r"[^\s\[\],]+\.parquet")


def scanned(plan: str) -> set[str]:
    """Paths of the Parquet files a plan reads (a byte range after a path is left off)."""
    return set(_PARQUET_RE.findall(plan))


def subtree(plan: str, operator: str) -> str:
    """The lines of the first `operator` in `plan` and of everything below it (indented more)."""
    lines = plan.splitlines()
    start = next((i for i, line in enumerate(lines) if operator in line), None)
    assert start is not None, f"no {operator} in\n{plan}"
    depth = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and len(lines[end]) - len(lines[end].lstrip()) > depth:
        end += 1
    return "\n".join(lines[start:end])


@pytest.fixture
def two_files(start_server, db):
    """A server whose `cpu` is two files of one day: hour A (10:00) and hour B (12:00).
    Returns the server and the two files' paths (A's, then B's)."""
    server = start_server("--persist-interval", PERSIST_SOON, "--compaction-interval", COMPACT_NEVER)
    write_hour(server, db, HOUR_A)
    wait_for_persisted(server, db, {"cpu": ROWS_PER_HOUR})
    write_hour(server, db, HOUR_B)
    files = wait_for_persisted(server, db, {"cpu": 2 * ROWS_PER_HOUR})
    files.sort(key=lambda f: f["min_time"])
    assert [(f["partition"], f["min_time"] // (3600 * S), f["row_count"]) for f in files] == [
        (DAY, HOUR_A // (3600 * S), ROWS_PER_HOUR),
        (DAY, HOUR_B // (3600 * S), ROWS_PER_HOUR),
    ], files
    assert files[0]["max_time"] < files[1]["min_time"], files
    return server, [f["path"] for f in files]


SELECT_ALL = "SELECT host, usage, time FROM cpu"


def test_files_whose_time_ranges_do_not_overlap_are_read_without_dedup(two_files, db):
    server, (file_a, file_b) = two_files
    plan = physical_plan(server, db, SELECT_ALL)
    assert DEDUP not in plan, plan
    assert scanned(plan) == {file_a, file_b}, plan
    assert count_rows(server, db, "cpu") == 2 * ROWS_PER_HOUR


def test_a_buffered_rewrite_of_a_persisted_key_is_deduplicated_with_that_file_alone(two_files, db):
    server, (file_a, file_b) = two_files
    # Keep what is written from now on in the buffer.
    assert server.terminate() == 0, server.log_tail()
    set_flag(server, "--persist-interval", PERSIST_NEVER)
    server.start()

    # Buffered rows later than both files overlap nothing.
    write_hour(server, db, HOUR_C)
    plan = physical_plan(server, db, SELECT_ALL)
    assert DEDUP not in plan, plan
    assert scanned(plan) == {file_a, file_b}, plan
    assert count_rows(server, db, "cpu") == 3 * ROWS_PER_HOUR

    # A newer value for a key of file B: the buffer (12:01 to 14:59) overlaps B, not A.
    key_time = HOUR_B + STEP_S * S
    old = usage("a", key_time)
    expect_status(write_lp(server, db, f"cpu,host=a usage=-1i {key_time}", precision="nanosecond"), 204)
    assert {f["path"] for f in parquet_files(server, db)} == {file_a, file_b}, "the rewrite is still buffered"
    plan = physical_plan(server, db, SELECT_ALL)
    dedup = subtree(plan, DEDUP)
    assert scanned(dedup) == {file_b}, plan
    assert scanned(plan) == {file_a, file_b}, plan
    assert plan.count(DEDUP) == 1, plan

    rows = query(server, db, f"SELECT usage FROM cpu WHERE host = 'a' AND time = {sql_time(key_time)}")
    assert rows == [{"usage": -1}]
    assert query(server, db, f"SELECT count(*) AS n FROM cpu WHERE usage = {old}") == [{"n": 0}]
    assert count_rows(server, db, "cpu") == 3 * ROWS_PER_HOUR


def at(ns: int, minutes: int) -> int:
    return ns + minutes * 60 * S


# (window name, lower bound, upper bound (exclusive), which of the files it scans)
WINDOWS = [
    ("hour A", HOUR_A, at(HOUR_A, 60), "A"),
    ("inside hour A", at(HOUR_A, 15), at(HOUR_A, 45), "A"),
    ("hour B and after", HOUR_B, at(HOUR_B, 600), "B"),
    ("across both", at(HOUR_A, 30), at(HOUR_B, 30), "AB"),
    ("between them", at(HOUR_A, 60), HOUR_B, ""),
]


@pytest.mark.parametrize(("lo", "hi", "which"), [w[1:] for w in WINDOWS], ids=[w[0] for w in WINDOWS])
def test_a_time_filter_scans_only_the_files_its_range_covers(two_files, db, lo, hi, which):
    server, (file_a, file_b) = two_files
    expected = {path for name, path in zip("AB", (file_a, file_b)) if name in which}
    where = f"time >= {sql_time(lo)} AND time < {sql_time(hi)}"
    plan = physical_plan(server, db, f"{SELECT_ALL} WHERE {where}")
    assert scanned(plan) == expected, plan

    rows = query(server, db, f"{SELECT_ALL} WHERE {where}")
    want = sorted(
        (h, t, usage(h, t))
        for start in (HOUR_A, HOUR_B)
        for h in HOSTS
        for t in range(start, start + 3600 * S, STEP_S * S)
        if lo <= t < hi
    )
    assert sorted((r["host"], ts_ns(r["time"]), r["usage"]) for r in rows) == want
