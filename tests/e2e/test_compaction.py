"""Compaction: the partitions' many small level-0 files are merged into few level-1 files
(today's partitions) or level-2 files (days that are over)
without changing any query result, and objects nothing refers to are deleted.

Specifies that
- every `--compaction-interval` the compactor merges every file of a partition (table, UTC
  day) that holds at least `--compaction-l0-threshold` level-0 files, or, for a day before
  today, more files than `--compaction-target-file-size` needs (a past day with 2+ files is
  merged at the first interval); a partition of today below the threshold, and a past day
  with a single file, are left alone;
- the merged files are level 1 (today) or 2 (a past day), listed in `system.parquet_files` with their size, row count
  and time range, hold each key once with its newest fields (the last non-null value of each
  field in write order, as the buffer resolves them), keep the persisted layout (sorted by
  tags then time, with `sorting_columns`), and a partition larger than the target is cut by
  time into files whose ranges do not overlap;
- query results (rows, counts, aggregates, field filters) are the same before, during and
  after a compaction, and after a restart; a query running while the compactor swaps the
  files sees every row exactly once;
- writes and overwrites keep resolving to the newest fields while the partition they land in
  is persisted and compacted over and over;
- the objects a compaction replaced are deleted from the object store once
  `--gc-grace-period` has passed, and so are `<db>/<table>/<YYYY-MM-DD>/<id>.parquet` objects
  the catalog never recorded (a crashed upload) or no longer records (a deleted database),
  once older than the grace period; recorded files, other file names and files at other
  depths are never deleted;
- a compaction that fails (here: too little `--compaction-mem-limit`) changes nothing, is
  counted and logged, and is retried with a growing back-off (1 s doubling); once it can
  succeed it does;
- a crash (the `TRIBUTARY_FAILPOINT` abort) after the merged files are uploaded, or right
  after the catalog swap, loses and duplicates nothing: the next start answers as before,
  finishes the work and collects what the crash left behind; so does a SIGKILL while writes
  and compactions interleave;
- `/metrics` counts compactions, files, rows and bytes in and out, and deleted objects;
- bad `--compaction-*` / `--gc-grace-period` values stop start-up naming the flag, and the
  `TRIBUTARY_COMPACTION_*` / `TRIBUTARY_GC_GRACE_PERIOD` variables set them.

Every test has its own data directory. Level-0 files are made one per write by a short
`--persist-interval`, waiting for each in `system.parquet_files`; every wait polls with a
deadline, none sleeps for an interval.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import pytest
import requests

from conftest import Server, expect_status, files_under, poll_until, query
from persistence_contract import (
    MINUTE,
    S,
    Model,
    Point,
    assert_matches_model,
    describe_difference,
    normalise,
    parquet_files,
    read_parquet_object,
    row_key_fn,
    set_flag,
    sql_time,
    utc_day,
    utc_ns,
    write_points,
)

#: `--persist-interval` of every test: each write becomes a level-0 file soon after.
PERSIST_FAST = "100ms"
#: `--compaction-interval` while level-0 files are being made: nothing is compacted.
COMPACT_NEVER = "1h"
#: `--compaction-interval` and `--gc-grace-period` once the files are there.
COMPACT_SOON = "1s"
GRACE_SOON = "1s"
#: Upper bound for one write to show up as a new file in `system.parquet_files`.
PERSIST_TIMEOUT_S = 15.0
#: Upper bound for a due compaction (1 s interval) to be listed, and for garbage collection
#: (1 s grace period) to delete what it replaced.
COMPACT_TIMEOUT_S = 15.0
#: Upper bound for a failpoint to abort the process once a compaction is due.
ABORT_TIMEOUT_S = 15.0
POLL_S = 0.05

#: A day long gone: a partition of it with two or more files is compacted at the first interval.
PAST_DAY = "2016-06-01"
PAST_BASE_NS = utc_ns(f"{PAST_DAY}T08:00:00")


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def compacted_level(partition: str) -> int:
    """The level a compaction writes: 1 while the partition's day is today, 2 once it is over."""
    return 2 if partition < today() else 1


def today_base_ns() -> int:
    """A time of today (UTC), a few minutes ago, on a whole second: rows stamped from there on
    fall into today's partitions (unless the test runs across midnight)."""
    now_s = int(time.time())
    midnight_s = now_s - now_s % 86400
    return max(midnight_s, now_s - 600) * S


# -- helpers -----------------------------------------------------------------------------------


def partitions(files: Iterable[dict]) -> Counter:
    """Files per (table, partition)."""
    return Counter((f["table_name"], f["partition"]) for f in files)


def files_of(files: Iterable[dict], table: str, partition: str) -> list[dict]:
    return [f for f in files if f["table_name"] == table and f["partition"] == partition]


def build_level0_files(server: Server, db: str, batches: list[list[Point]], model: Model) -> list[dict]:
    """Writes each batch in one request to `db` (a database not created yet) and waits until
    every partition it touches has one more file, so each batch becomes one level-0 file per
    partition. Returns the listing."""
    for i, batch in enumerate(batches):
        before = partitions(parquet_files(server, db)) if i else Counter()  # the first write creates `db`
        touched = {(p.table, utc_day(p.time_ns)) for p in batch}
        write_points(server, db, batch, rows_per_request=len(batch))
        model.apply(batch)

        def persisted():
            now = partitions(parquet_files(server, db))
            return all(now[k] == before[k] + 1 for k in touched)

        poll_until(persisted, PERSIST_TIMEOUT_S, f"batch {i} to be persisted as one file in each of {sorted(touched)}", POLL_S)
    files = parquet_files(server, db)
    assert all(f["level"] == 0 for f in files), f"something was compacted while the interval is {COMPACT_NEVER}: {files}"
    return files


def objects_dir(server: Server) -> Path:
    return server.data_dir / "objects"


def objects_on_disk(server: Server) -> set[str]:
    """Every file under `<data-dir>/objects/`, as a path relative to it."""
    root = objects_dir(server)
    if not root.is_dir():
        return set()
    return {p.relative_to(root).as_posix() for p in files_under(root)}


def metrics(server: Server) -> dict[str, float]:
    """The Prometheus samples of `/metrics` (unlabelled ones by name)."""
    resp = expect_status(requests.get(f"{server.url}/metrics", timeout=10), 200)
    out = {}
    for line in resp.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def compaction_metrics(server: Server) -> dict[str, float]:
    m = metrics(server)
    names = ["runs_total", "errors_total", "files_in_total", "files_out_total", "rows_in_total", "rows_out_total",
             "bytes_in_total", "bytes_out_total", "backlog", "objects_deleted_total"]
    missing = [n for n in names if f"tributary_compaction_{n}" not in m]
    assert not missing, f"/metrics has no tributary_compaction_{missing}: {sorted(k for k in m if 'compaction' in k)}"
    return {n: m[f"tributary_compaction_{n}"] for n in names}


def wait_until_compacted(server: Server, db: str, targets: Iterable[tuple[str, str]], timeout_s: float = COMPACT_TIMEOUT_S) -> list[dict]:
    """Polls until every (table, partition) in `targets` is listed with compacted files only
    (level 1 for today, 2 for a past day)."""
    targets = set(targets)

    def done():
        files = parquet_files(server, db)
        return files if all(
            (fs := files_of(files, t, p)) and all(f["level"] == compacted_level(p) for f in fs) for t, p in targets
        ) else None

    return poll_until(done, timeout_s, f"{sorted(targets)} of {db} to be compacted", POLL_S)


def wait_until_disk_matches_listing(server: Server, db: str, timeout_s: float = COMPACT_TIMEOUT_S) -> list[dict]:
    """Polls until the object store holds exactly the Parquet files the catalog lists:
    garbage collection deleted everything replaced or never recorded."""

    def done():
        files = parquet_files(server, db)
        return files if objects_on_disk(server) == {f["path"] for f in files} else None

    try:
        return poll_until(done, timeout_s, "garbage collection to leave only the listed objects", POLL_S)
    except AssertionError as e:
        listed = {f["path"] for f in parquet_files(server, db)}
        disk = objects_on_disk(server)
        raise AssertionError(f"{e}\nunlisted on disk: {sorted(disk - listed)}\nlisted, not on disk: {sorted(listed - disk)}")


def check_level1_files(server: Server, db: str, files: list[dict], model: Model, table: str) -> None:
    """The listed compacted files of `table` (level 1 today, 2 for a past day) exist at their
    size, keep the persisted layout, do not overlap in time, stay in their partition, and
    together hold exactly the model's rows."""
    files = sorted((f for f in files if f["table_name"] == table), key=lambda f: f["min_time"])
    assert files and all(f["level"] == compacted_level(f["partition"]) for f in files), files
    rows = []
    for f in files:
        path = objects_dir(server) / f["path"]
        assert path.is_file(), f"{f['path']} is listed but not in the object store"
        assert path.stat().st_size == f["size_bytes"], f
        assert f["path"].startswith(f"{db}/{table}/{f['partition']}/") and f["path"].endswith(".parquet"), f
        assert utc_day(f["min_time"]) == utc_day(f["max_time"]) == f["partition"], f"a file never spans partitions: {f}"
        rows += read_parquet_object(path.read_bytes(), f, model.tag_names(table))
    for a, b in zip(files, files[1:]):
        if a["partition"] == b["partition"]:
            assert a["max_time"] < b["min_time"], f"compacted files overlap in time: {a} and {b}"
    got = sorted(rows, key=row_key_fn(model.tag_names(table)))
    want = model.rows(table)
    assert got == want, f"the compacted files of {table}: " + describe_difference(got, want, model.tag_names(table))


# -- data --------------------------------------------------------------------------------------


def cpu_tags(host: str) -> dict[str, str]:
    # Host c has no region: a null tag in its key.
    return {"host": host, **({"region": {"a": "eu", "b": "us"}[host]} if host != "c" else {})}


def cpu_point(host: str, minute: int, **fields: Any) -> Point:
    return Point("cpu", cpu_tags(host), fields, PAST_BASE_NS + minute * MINUTE)


def cpu_batches(n: int) -> list[list[Point]]:
    """`cpu` rows of a past day: three new rows per batch, and keys written again by later
    batches naming some fields only. Values are multiples of 1/4, so sums are exact whatever
    order they are added in."""
    batches = []
    for i in range(n):
        batch = []
        for k, host in enumerate("abc"):
            fields: dict[str, Any] = {"usage": 10.0 * i + k, "idle": k + 0.25 * i, "cnt": 3 * i + k}
            if (i + k) % 4 == 0:
                fields["status"] = "hot"  # a sparse string field
            batch.append(cpu_point(host, i, **fields))
        if i > 0:
            batch.append(cpu_point("a", 0, usage=1000.0 + i))  # every batch: a newer usage, idle kept
        if i >= 3 and i % 3 == 0:
            batch.append(cpu_point("b", i - 3, idle=500.0 + i))  # a newer idle, three batches on
        if i >= 2 and i % 4 == 2:
            batch.append(cpu_point("c", i - 2, note="late", ok=True))  # fields the key never had
        if i >= n // 2:
            # A tag first seen half-way: host a with a zone is another series than host a without.
            batch.append(Point("cpu", {**cpu_tags("a"), "zone": "z1"}, {"usage": 0.25 * i, "cnt": i}, PAST_BASE_NS + i * MINUTE))
        batches.append(batch)
    return batches


def mem_batches(n: int, base_ns: int) -> list[list[Point]]:
    """`mem` rows of today: two hosts, and key (a, base) rewritten by every batch."""
    batches = []
    for i in range(n):
        batch = [Point("mem", {"host": h}, {"used": 100 * i + k, "pct": 0.5 * i + k}, base_ns + i * S) for k, h in enumerate("ab")]
        if i > 0:
            batch.append(Point("mem", {"host": "a"}, {"pct": 200.0 + i}, base_ns))
        batches.append(batch)
    return batches


def cpu_results(server: Server, db: str) -> dict[str, Any]:
    """Raw answers of queries over `cpu`, compared as they are across compaction and restarts."""
    return {
        "rows": query(server, db, "SELECT * FROM cpu ORDER BY host, zone, time"),
        "count": query(server, db, "SELECT count(*) AS n FROM cpu"),
        "per host": query(
            server, db,
            "SELECT host, zone, count(*) AS n, sum(usage) AS usage, min(usage) AS lo, max(usage) AS hi, sum(idle) AS idle, "
            "sum(cnt) AS cnt, count(status) AS hot, count(note) AS notes, count(region) AS regions "
            "FROM cpu GROUP BY host, zone ORDER BY host, zone",
        ),
        "field filter": query(server, db, "SELECT host, zone, time, usage FROM cpu WHERE usage >= 240 ORDER BY host, zone, time"),
        "time range": query(
            server, db,
            f"SELECT count(*) AS n, sum(usage) AS usage FROM cpu WHERE time >= {sql_time(PAST_BASE_NS + 5 * MINUTE)} "
            f"AND time < {sql_time(PAST_BASE_NS + 15 * MINUTE)}",
        ),
        "latest": query(server, db, "SELECT host, zone, usage, time FROM cpu ORDER BY time DESC, host, zone LIMIT 3"),
    }


def all_results(server: Server, db: str) -> dict[str, Any]:
    return {
        "cpu": cpu_results(server, db),
        "mem rows": query(server, db, "SELECT * FROM mem ORDER BY host, time"),
        "mem per host": query(server, db, "SELECT host, count(*) AS n, sum(used) AS used, sum(pct) AS pct FROM mem GROUP BY host ORDER BY host"),
    }


def assert_newest_fields_win(server: Server, db: str, batches: int) -> None:
    """The keys written again resolve to their newest fields, field by field."""
    t0 = sql_time(PAST_BASE_NS)
    rows = normalise(query(server, db, f"SELECT * FROM cpu WHERE host = 'a' AND time = {t0}"))
    assert rows == [{"host": "a", "region": "eu", "usage": 1000.0 + batches - 1, "idle": 0.0, "cnt": 0, "status": "hot", "time": PAST_BASE_NS}], (
        "key (a, minute 0): the usage of the last batch, the other fields of the first"
    )
    # No older version of that key shows through a filter on the overwritten field.
    assert query(server, db, f"SELECT usage FROM cpu WHERE host = 'a' AND time = {t0} AND usage < 1000") == []
    t3 = PAST_BASE_NS + 3 * MINUTE
    rows = normalise(query(server, db, f"SELECT * FROM cpu WHERE host = 'b' AND time = {sql_time(t3)}"))
    assert rows == [{"host": "b", "region": "us", "usage": 31.0, "idle": 506.0, "cnt": 10, "status": "hot", "time": t3}], (
        "key (b, minute 3): the idle of batch 6, the other fields of batch 3"
    )
    t4 = PAST_BASE_NS + 4 * MINUTE
    rows = normalise(query(server, db, f"SELECT * FROM cpu WHERE host = 'c' AND time = {sql_time(t4)}"))
    assert rows == [{"host": "c", "usage": 42.0, "idle": 3.0, "cnt": 14, "note": "late", "ok": True, "time": t4}], (
        "key (c, minute 4): fields added by batch 6 to those of batch 4"
    )


# -- tests -------------------------------------------------------------------------------------

BATCHES = 25


def test_many_small_files_are_compacted_without_changing_any_result(start_server, db):
    server = start_server("--persist-interval", PERSIST_FAST, "--compaction-interval", COMPACT_NEVER)
    model = Model()
    base = today_base_ns()
    cpu, mem = cpu_batches(BATCHES), mem_batches(BATCHES, base)
    batches = [cpu[i] + mem[i] for i in range(BATCHES)]
    # Partitions that must stay as they are: today below the level-0 threshold (3 < 10), and a
    # past day with a single file (nothing to merge).
    for i in range(3):
        batches[i].append(Point("disk", {"dev": "sda"}, {"free": 10 * i}, base + i * S))
    batches[0].append(Point("net", {"dev": "eth0"}, {"rx": 1}, PAST_BASE_NS))
    before_files = build_level0_files(server, db, batches, model)
    day = today()
    assert partitions(before_files) == {("cpu", PAST_DAY): BATCHES, ("mem", day): BATCHES, ("disk", day): 3, ("net", PAST_DAY): 1}
    assert_matches_model(server, db, model, "in level-0 files")
    assert_newest_fields_win(server, db, BATCHES)
    before = all_results(server, db)

    assert server.terminate() == 0, server.log_tail()
    set_flag(server, "--compaction-interval", COMPACT_SOON)
    set_flag(server, "--gc-grace-period", GRACE_SOON)
    server.start()
    assert all_results(server, db) == before, "results changed across the restart"

    files = wait_until_compacted(server, db, [("cpu", PAST_DAY), ("mem", day)])
    assert partitions(files) == {("cpu", PAST_DAY): 1, ("mem", day): 1, ("disk", day): 3, ("net", PAST_DAY): 1}, files
    untouched = [f for f in before_files if f["table_name"] in ("disk", "net")]
    assert [f for f in files if f["table_name"] in ("disk", "net")] == untouched, "partitions not due were compacted"
    assert all_results(server, db) == before, "results changed when the files were compacted"
    assert_matches_model(server, db, model, "compacted")
    assert_newest_fields_win(server, db, BATCHES)
    for table in ("cpu", "mem"):
        check_level1_files(server, db, files, model, table)

    # The replaced level-0 objects are deleted after the grace period; the new ones stay.
    replaced = {f["path"] for f in before_files if f["table_name"] in ("cpu", "mem")}
    files = wait_until_disk_matches_listing(server, db)
    assert not replaced & objects_on_disk(server)
    assert partitions(files) == {("cpu", PAST_DAY): 1, ("mem", day): 1, ("disk", day): 3, ("net", PAST_DAY): 1}, (
        "a partition compacted once stays compacted"
    )
    assert all_results(server, db) == before

    inputs = [f for f in before_files if f["table_name"] in ("cpu", "mem")]
    outputs = [f for f in files if f["level"] >= 1]
    assert compaction_metrics(server) == {
        "runs_total": 2,
        "errors_total": 0,
        "files_in_total": 2 * BATCHES,
        "files_out_total": 2,
        "rows_in_total": sum(f["row_count"] for f in inputs),
        "rows_out_total": model.count("cpu") + model.count("mem"),
        "bytes_in_total": sum(f["size_bytes"] for f in inputs),
        "bytes_out_total": sum(f["size_bytes"] for f in outputs),
        "backlog": 0,
        "objects_deleted_total": 2 * BATCHES,
    }
    assert sum(f["row_count"] for f in inputs) > model.count("cpu") + model.count("mem"), "the inputs held duplicate keys"
    # Files and bytes per level, as of the compactor's last look for work.
    by_level = {level: [f for f in files if f["level"] == level] for level in (0, 1, 2)}
    poll_until(
        lambda: all(
            metrics(server).get(f'tributary_compaction_files{{level="{level}"}}') == len(fs)
            and metrics(server).get(f'tributary_compaction_file_bytes{{level="{level}"}}') == sum(f["size_bytes"] for f in fs)
            for level, fs in by_level.items()
        ),
        10,
        "files per level in /metrics",
    )

    # And once more from the compacted files alone.
    assert server.terminate() == 0, server.log_tail()
    server.start()
    assert all_results(server, db) == before, "results changed across a restart after compaction"
    assert parquet_files(server, db) == files


def test_a_partition_larger_than_the_target_size_is_cut_by_time_into_files_that_do_not_overlap(start_server, db):
    server = start_server("--persist-interval", PERSIST_FAST, "--compaction-interval", COMPACT_NEVER)
    model = Model()
    batches = cpu_batches(12)
    # Wider batches: more bytes than the 4 KiB target, several times over.
    for i, batch in enumerate(batches):
        batch += [cpu_point("c", 100 + 40 * i + j, usage=float(j), idle=0.5, cnt=j) for j in range(40)]
    # The first and the last nanosecond of the day.
    first_ns, last_ns = utc_ns(f"{PAST_DAY}T00:00:00"), utc_ns(f"{PAST_DAY}T23:59:59") + S - 1
    batches[0].append(Point("cpu", cpu_tags("b"), {"usage": 1.0}, first_ns))
    batches[-1].append(Point("cpu", cpu_tags("b"), {"usage": 2.0}, last_ns))
    inputs = build_level0_files(server, db, batches, model)
    before = cpu_results(server, db)
    input_bytes = sum(f["size_bytes"] for f in inputs)
    assert input_bytes > 4 * 4096, inputs

    assert server.terminate() == 0, server.log_tail()
    server.extra_args += ["--compaction-target-file-size", "4KiB", "--gc-grace-period", GRACE_SOON]
    set_flag(server, "--compaction-interval", COMPACT_SOON)
    server.start()
    files = wait_until_compacted(server, db, [("cpu", PAST_DAY)])
    assert 2 <= len(files) <= -(-input_bytes // 4096), f"{input_bytes} bytes for a 4 KiB target: {files}"
    check_level1_files(server, db, files, model, "cpu")
    assert cpu_results(server, db) == before
    assert_newest_fields_win(server, db, 12)
    assert (min(f["min_time"] for f in files), max(f["max_time"] for f in files)) == (first_ns, last_ns)

    # Once its files are as few as the target allows, a past day is not compacted again.
    compacted = wait_until_disk_matches_listing(server, db)
    assert compacted == files
    assert compaction_metrics(server)["runs_total"] == 1

    # A late write to that day is merged in at the next interval, level-2 files and all, and
    # its fields win over the compacted ones.
    late = [cpu_point("a", 0, idle=900.0), Point("cpu", cpu_tags("b"), {"usage": 3.0}, last_ns)]
    write_points(server, db, late)
    model.apply(late)
    replaced = {f["path"] for f in files}

    def recompacted():
        now = parquet_files(server, db)
        return now if all(f["level"] == 2 and f["path"] not in replaced for f in now) else None

    files = poll_until(recompacted, COMPACT_TIMEOUT_S, "the late write to be compacted with the level-2 files", POLL_S)
    check_level1_files(server, db, files, model, "cpu")
    assert_matches_model(server, db, model, "after a late write was compacted")
    assert normalise(query(server, db, f"SELECT usage, idle FROM cpu WHERE host = 'a' AND zone IS NULL AND time = {sql_time(PAST_BASE_NS)}")) == [
        {"usage": 1011.0, "idle": 900.0}
    ]
    assert normalise(query(server, db, "SELECT usage, time FROM cpu ORDER BY time DESC LIMIT 1")) == [{"usage": 3.0, "time": last_ns}]


def test_queries_during_compaction_see_every_row_exactly_once(start_server, db):
    server = start_server("--persist-interval", PERSIST_FAST, "--compaction-interval", COMPACT_NEVER)
    model = Model()
    # Four past days: four partitions, compacted one after the other, four swaps.
    days, hosts, steps, batches = 4, 10, 50, 16
    batch_list = []
    for b in range(batches):
        batch = [Point("m", {"host": f"h{h:02d}"}, {"v": float(b * 1000 + h), "i": b}, PAST_BASE_NS + d * 86400 * S + (b * steps + t) * S)
                 for d in range(days) for h in range(hosts) for t in range(steps)]
        if b > 0:
            # The previous batch once more: a tenth resent as is, a tenth with a newer v.
            prev = batch_list[-1][: days * hosts * steps]
            batch += prev[::10]
            batch += [Point(p.table, p.tags, {"v": p.fields["v"] + 0.5}, p.time_ns) for p in prev[5::10]]
        batch_list.append(batch)
    inputs = build_level0_files(server, db, batch_list, model)
    rows = model.rows("m")
    expected = {
        "total": [{"n": len(rows), "v": sum(r["v"] for r in rows), "hosts": hosts, "i": sum(r["i"] for r in rows)}],
        "newer": [{"n": sum(1 for r in rows if r["v"] % 1 == 0.5)}],
    }
    assert expected["newer"][0]["n"] == (batches - 1) * days * hosts * steps // 10
    assert len(partitions(inputs)) == days
    assert sum(f["row_count"] for f in inputs) > len(rows), "the files hold duplicate keys"
    sqls = {
        "total": "SELECT count(*) AS n, sum(v) AS v, count(DISTINCT host) AS hosts, sum(i) AS i FROM m",
        "newer": "SELECT count(*) AS n FROM m WHERE v - floor(v) = 0.5",
    }
    for name, sql in sqls.items():
        assert query(server, db, sql) == expected[name], name

    assert server.terminate() == 0, server.log_tail()
    set_flag(server, "--compaction-interval", COMPACT_SOON)
    set_flag(server, "--gc-grace-period", GRACE_SOON)
    server.start()

    stop = threading.Event()
    seen: list[tuple[float, str, Any]] = []  # (start time, query, answer)
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                for name, sql in sqls.items():
                    started = time.monotonic()
                    seen.append((started, name, query(server, db, sql)))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    readers = [threading.Thread(target=loop, daemon=True) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        # While the readers run: the level-0 files are replaced by a level-1 file, and the
        # replaced objects deleted once the grace period is over.
        last_level0 = time.monotonic()

        def compacted():
            nonlocal last_level0
            files = parquet_files(server, db)
            if any(f["level"] == 0 for f in files):
                last_level0 = time.monotonic()
                return None
            return files

        poll_until(lambda: errors or compacted(), COMPACT_TIMEOUT_S, "the partitions to be compacted", POLL_S)
        first_level1 = time.monotonic()
        wait_until_disk_matches_listing(server, db)
        poll_until(lambda: errors or sum(1 for s in seen if s[0] > first_level1) >= 24, 30, "queries after the swap", POLL_S)
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=60)
    assert not errors, f"a query failed during compaction: {errors[0]!r}"
    wrong = [(name, got) for _, name, got in seen if got != expected[name]]
    assert not wrong, f"{len(wrong)} of {len(seen)} answers differ from {expected}, e.g. {wrong[:3]}"
    during = [s for s in seen if s[0] <= last_level0]
    assert len(during) >= 8 and len(seen) >= 48, (
        f"{len(seen)} queries, {len(during)} of them started while level-0 files were listed"
    )
    assert [f["level"] for f in parquet_files(server, db)] == [2] * days


def test_writes_during_compaction_resolve_to_the_newest_fields(start_server, db):
    """The same keys are written again and again while their partition is persisted and
    compacted every second (threshold 2): each query sees every key once, newest fields."""
    server = start_server(
        "--persist-interval", PERSIST_FAST, "--compaction-interval", COMPACT_SOON,
        "--compaction-l0-threshold", "2", "--gc-grace-period", GRACE_SOON,
    )
    model = Model()
    base = today_base_ns()
    keys = 30
    deadline = time.monotonic() + 30
    i = 0
    while compaction_metrics(server)["runs_total"] < 3:
        assert time.monotonic() < deadline, f"fewer than 3 compactions after {i} batches\n{server.log_tail()}"
        # All keys get a newer v; every other batch also a newer w; every third one new keys.
        batch = [Point("k", {"key": f"k{k:02d}"}, {"v": float(i)}, base + k * S) for k in range(keys)]
        if i % 2 == 0:
            batch += [Point("k", {"key": f"k{k:02d}"}, {"w": i}, base + k * S) for k in range(0, keys, 3)]
        if i % 3 == 0:
            batch.append(Point("k", {"key": "new"}, {"v": float(i), "w": i}, base + (keys + i) * S))
        before = {f["path"] for f in parquet_files(server, db)} if i else set()
        write_points(server, db, batch)
        model.apply(batch)
        # Paced by the server: the next batch once this one is persisted (the listing changes).
        poll_until(lambda: {f["path"] for f in parquet_files(server, db)} != before, PERSIST_TIMEOUT_S, f"batch {i} to be persisted", POLL_S)
        assert_matches_model(server, db, model, f"after batch {i}")
        i += 1
    assert compaction_metrics(server)["errors_total"] == 0
    # A crash: the rows not yet persisted come back from the write-ahead log, and still lose
    # to nothing older in the compacted files.
    server.kill()
    server.start()
    assert_matches_model(server, db, model, "after a SIGKILL restart")
    assert server.terminate() == 0, server.log_tail()
    server.start()
    assert_matches_model(server, db, model, "after a SIGTERM restart")
    files = parquet_files(server, db)
    assert any(f["level"] >= 1 for f in files), files


@pytest.mark.parametrize("failpoint", ["compaction-after-upload", "compaction-after-catalog"])
def test_a_crash_in_the_middle_of_a_compaction_loses_and_duplicates_nothing(start_server, db, failpoint):
    server = start_server("--persist-interval", PERSIST_FAST, "--compaction-interval", COMPACT_NEVER)
    model = Model()
    level0 = build_level0_files(server, db, cpu_batches(12), model)
    level0_paths = {f["path"] for f in level0}
    before = cpu_results(server, db)
    assert server.terminate() == 0, server.log_tail()

    # The first compaction is due a second after the start; the process aborts in its middle.
    server.env["TRIBUTARY_FAILPOINT"] = failpoint
    set_flag(server, "--compaction-interval", COMPACT_SOON)
    set_flag(server, "--gc-grace-period", GRACE_SOON)
    server.start()
    code = server.expect_exit(ABORT_TIMEOUT_S)
    assert code == -signal.SIGABRT, f"expected an abort at {failpoint}, exit status {code}\n{server.log_tail()}"

    # Restarted without compacting, the state the crash left behind answers as before.
    del server.env["TRIBUTARY_FAILPOINT"]
    set_flag(server, "--compaction-interval", COMPACT_NEVER)
    server.start()
    assert cpu_results(server, db) == before, f"results changed by a crash at {failpoint}"
    assert_matches_model(server, db, model, f"after a crash at {failpoint}")
    files = parquet_files(server, db)
    leftovers = objects_on_disk(server) - {f["path"] for f in files}
    if failpoint == "compaction-after-upload":
        assert files == level0, "the catalog swap never happened: the level-0 files are still listed"
        assert len(leftovers) == 1, f"one merged object uploaded, not recorded: {leftovers}"
        (orphan,) = leftovers
        assert orphan.startswith(f"{db}/cpu/{PAST_DAY}/") and orphan.endswith(".parquet"), orphan
    else:
        assert [f["level"] for f in files] == [2], f"the swap was committed: {files}"
        assert leftovers == level0_paths, "the replaced objects are still in the object store"
        check_level1_files(server, db, files, model, "cpu")
    assert server.terminate() == 0, server.log_tail()

    # With the compactor back, the partition ends up compacted and the leftovers deleted.
    set_flag(server, "--compaction-interval", COMPACT_SOON)
    server.start()
    files = wait_until_compacted(server, db, [("cpu", PAST_DAY)])
    files = wait_until_disk_matches_listing(server, db)
    assert [f["level"] for f in files] == [2], files
    check_level1_files(server, db, files, model, "cpu")
    assert cpu_results(server, db) == before, f"results changed after recovering from a crash at {failpoint}"
    assert_newest_fields_win(server, db, 12)
    m = compaction_metrics(server)
    redone = failpoint == "compaction-after-upload"
    assert (m["runs_total"], m["errors_total"], m["objects_deleted_total"]) == (
        (1, 0, len(level0) + 1) if redone else (0, 0, len(level0))
    ), m


def wide_batches(n: int) -> list[list[Point]]:
    """10,000 rows with a string field per batch: more than 1 MiB decoded for one merge."""
    return [
        [Point("w", {"host": f"h{h:02d}"}, {"v": float(i), "s": f"{'x' * 40}{j}"}, PAST_BASE_NS + (i * 500 + j) * S)
         for j in range(500) for h in range(20)]
        for i in range(n)
    ]


def this_start_log(server: Server) -> str:
    """The log of the server's current process only."""
    return server.log_text().rsplit("===== start #", 1)[-1]


def log_events(text: str) -> list[str]:
    """Log events, each from its timestamp to the next one (a message may span lines)."""
    return re.split(r"\n(?=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", text)


def compaction_failures(server: Server) -> list[str]:
    return [event for event in log_events(this_start_log(server)) if "compaction failed" in event]


def test_a_failing_compaction_changes_nothing_and_succeeds_once_possible(start_server, db):
    server = start_server("--persist-interval", PERSIST_FAST, "--compaction-interval", COMPACT_NEVER)
    model = Model()
    level0 = build_level0_files(server, db, wide_batches(3), model)
    sql = "SELECT count(*) AS n, sum(v) AS v, count(DISTINCT s) AS s FROM w"
    before = query(server, db, sql)
    assert server.terminate() == 0, server.log_tail()

    # Too little memory to merge the files: every try fails, and is counted and logged.
    server.extra_args += ["--compaction-mem-limit", "1MiB", "--gc-grace-period", GRACE_SOON]
    set_flag(server, "--compaction-interval", COMPACT_SOON)
    server.start()
    poll_until(lambda: compaction_metrics(server)["errors_total"] >= 2, COMPACT_TIMEOUT_S, "two failed compactions", POLL_S)
    failures = compaction_failures(server)
    assert failures and all(db in line and "w" in line and PAST_DAY in line for line in failures), failures
    assert parquet_files(server, db) == level0, "a failed compaction changed the files"
    assert objects_on_disk(server) == {f["path"] for f in level0}, "a failed compaction left objects behind"
    assert query(server, db, sql) == before
    assert compaction_metrics(server)["runs_total"] == 0
    assert server.terminate() == 0, server.log_tail()

    # With the default memory limit the same files are merged.
    set_flag(server, "--compaction-mem-limit", "256MiB")
    server.start()
    wait_until_compacted(server, db, [("w", PAST_DAY)])
    files = wait_until_disk_matches_listing(server, db)
    check_level1_files(server, db, files, model, "w")
    assert query(server, db, sql) == before


def duration_s(text: str) -> float:
    """`1s`, `2.5s`, `500ms`, `1m` (Rust's `Duration` debug format) in seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ns|µs|us|ms|s|m)", text)
    assert m, f"not a duration: {text!r}"
    return float(m[1]) * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m[2]]


def test_a_partition_that_keeps_failing_is_retried_with_a_growing_back_off(start_server, db):
    """After each failure the partition waits longer before the next try (1 s, doubling, up
    to 5 min), so a partition that cannot be merged does not cost a merge every interval."""
    server = start_server("--persist-interval", PERSIST_FAST, "--compaction-interval", COMPACT_NEVER)
    build_level0_files(server, db, wide_batches(2), Model())
    assert server.terminate() == 0, server.log_tail()
    server.extra_args += ["--compaction-mem-limit", "1MiB"]
    set_flag(server, "--compaction-interval", COMPACT_SOON)
    server.start()
    def three_failures():
        failures = compaction_failures(server)
        return failures if len(failures) >= 3 else None

    failures = poll_until(three_failures, 20, "three failed compactions", POLL_S)
    retries = []
    for line in failures[:3]:
        m = re.search(r"retry_in=(\S+)", line)
        assert m, f"a failure names no retry_in: {line}"
        retries.append(duration_s(m[1]))
    assert retries[0] >= 1 and retries[1] > retries[0] and retries[2] > retries[1], (
        f"back-off of three consecutive failures: {retries} s (expected growing, e.g. [1, 2, 4])"
    )


def backdate(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_unrecorded_objects_are_deleted_after_the_grace_period_and_nothing_else(start_server, db):
    # Default grace period (1 h): objects dated two hours back are past it, new ones are not.
    server = start_server("--persist-interval", PERSIST_FAST, "--compaction-interval", COMPACT_SOON)
    model = Model()
    base = today_base_ns()
    day = today()
    files = build_level0_files(server, db, [[Point("cpu", {"host": "a"}, {"usage": 1.0}, base)]], model)
    (recorded,) = files
    before = query(server, db, "SELECT * FROM cpu")

    root = objects_dir(server)
    real = root / recorded["path"]
    content = real.read_bytes()  # a valid Parquet file of the table: never to be read twice
    old = {  # ours, unrecorded, older than the grace period: deleted
        f"{db}/cpu/{day}/crashed-upload.parquet",
        f"{db}/cpu/{PAST_DAY}/crashed-upload.parquet",
        f"gone_db/cpu/{PAST_DAY}/crashed-upload.parquet",
    }
    young = {f"{db}/cpu/{day}/just-uploaded.parquet"}  # within the grace period: kept
    foreign = {  # not `<db>/<table>/<YYYY-MM-DD>/<file>.parquet`: never touched
        f"{db}/cpu/{day}/notes.txt",
        f"{db}/cpu/{day}/crashed-upload.parquet.tmp",
        f"{db}/cpu/misplaced.parquet",
        f"{db}/cpu/{day}/sub/deep.parquet",
        "top.parquet",
    }
    for key in old | young | foreign:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        if key not in young:
            backdate(path, 2 * 3600)
    backdate(real, 2 * 3600)  # a recorded file is kept however old it is

    poll_until(lambda: not old & objects_on_disk(server), COMPACT_TIMEOUT_S, f"{sorted(old)} to be deleted", POLL_S)
    assert objects_on_disk(server) == {recorded["path"]} | young | foreign
    assert real.read_bytes() == content
    assert parquet_files(server, db) == files
    assert query(server, db, "SELECT * FROM cpu") == before, "an unrecorded object was read"
    m = compaction_metrics(server)
    assert (m["objects_deleted_total"], m["runs_total"], m["errors_total"]) == (len(old), 0, 0), m

    # A grace period of a second: the young object is old enough now.
    assert server.terminate() == 0, server.log_tail()
    set_flag(server, "--gc-grace-period", GRACE_SOON)
    server.start()
    poll_until(lambda: not young & objects_on_disk(server), COMPACT_TIMEOUT_S, f"{sorted(young)} to be deleted", POLL_S)
    assert objects_on_disk(server) == {recorded["path"]} | foreign
    assert compaction_metrics(server)["objects_deleted_total"] == len(young)
    assert query(server, db, "SELECT * FROM cpu") == before


def test_the_objects_of_a_deleted_database_are_deleted_after_the_grace_period(start_server, db):
    server = start_server("--persist-interval", PERSIST_FAST, "--compaction-interval", COMPACT_SOON, "--gc-grace-period", GRACE_SOON)
    other = f"{db}_kept"
    base = today_base_ns()
    old = build_level0_files(server, db, [[Point("cpu", {"host": "a"}, {"usage": 1.0}, base)]], Model())
    kept = build_level0_files(server, other, [[Point("cpu", {"host": "a"}, {"usage": 2.0}, base)]], Model())
    resp = requests.delete(f"{server.url}/api/v3/configure/database", params={"db": db}, timeout=30)
    assert 200 <= resp.status_code < 300, resp.text

    # The name starts an empty database again; its objects share the old ones' directory.
    new = build_level0_files(server, db, [[Point("cpu", {"host": "b"}, {"usage": 3.0}, base)]], Model())
    for f in new + kept:
        backdate(objects_dir(server) / f["path"], 2 * 3600)  # recorded: kept however old
    old_paths = {f["path"] for f in old}
    poll_until(lambda: not old_paths & objects_on_disk(server), COMPACT_TIMEOUT_S,
               f"the objects of the deleted database ({sorted(old_paths)}) to be deleted", POLL_S)
    assert objects_on_disk(server) == {f["path"] for f in new + kept}
    assert normalise(query(server, db, "SELECT host, usage FROM cpu")) == [{"host": "b", "usage": 3.0}]
    assert normalise(query(server, other, "SELECT host, usage FROM cpu")) == [{"host": "a", "usage": 2.0}]


@pytest.mark.parametrize(
    "args,env,named",
    [
        (["--compaction-l0-threshold", "1"], None, "--compaction-l0-threshold"),
        (["--compaction-l0-threshold", "many"], None, "--compaction-l0-threshold"),
        (["--compaction-interval", "0s"], None, "--compaction-interval"),
        (["--compaction-interval", "soon"], None, "--compaction-interval"),
        (["--compaction-target-file-size", "100"], None, "--compaction-target-file-size"),
        (["--compaction-mem-limit", "lots"], None, "--compaction-mem-limit"),
        (["--gc-grace-period", "forever"], None, "--gc-grace-period"),
        ([], {"TRIBUTARY_COMPACTION_L0_THRESHOLD": "1"}, "TRIBUTARY_COMPACTION_L0_THRESHOLD"),
        ([], {"TRIBUTARY_COMPACTION_INTERVAL": "0s"}, "TRIBUTARY_COMPACTION_INTERVAL"),
    ],
    ids=["l0-threshold-1", "l0-threshold-word", "interval-0s", "interval-word", "target-size-tiny",
         "mem-limit-word", "grace-word", "env-l0-threshold-1", "env-interval-0s"],
)
def test_bad_compaction_configuration_stops_start_up_naming_the_flag(start_server, args, env, named):
    server = start_server(*args, env=env, wait=False)
    assert server.expect_exit() != 0
    log = server.log_text()
    assert "panicked" not in log, log
    if named.startswith("--"):
        variable = "TRIBUTARY_" + named.removeprefix("--").replace("-", "_").upper()
        assert named in log or variable in log, server.log_tail()
    else:
        assert named in log, server.log_tail()


def test_compaction_settings_come_from_the_environment(start_server, db):
    server = start_server(env={
        "TRIBUTARY_PERSIST_INTERVAL": PERSIST_FAST,
        "TRIBUTARY_COMPACTION_INTERVAL": COMPACT_NEVER,
    })
    model = Model()
    base = today_base_ns()
    day = today()
    # A past day with two files, and today with two (below a threshold of 3).
    build_level0_files(server, db, [
        [Point("cpu", {"host": "a"}, {"usage": float(i)}, PAST_BASE_NS + i * S), Point("mem", {"host": "a"}, {"used": i}, base + i * S)]
        for i in range(2)
    ], model)
    assert server.terminate() == 0, server.log_tail()

    server.env.update({
        "TRIBUTARY_COMPACTION_INTERVAL": COMPACT_SOON,
        "TRIBUTARY_COMPACTION_L0_THRESHOLD": "3",
        "TRIBUTARY_GC_GRACE_PERIOD": GRACE_SOON,
    })
    server.start()
    # Compacted within seconds (the default interval is 10 s) ...
    files = wait_until_compacted(server, db, [("cpu", PAST_DAY)], timeout_s=8)
    # ... in the same pass as today's partition was found below the threshold of 3.
    assert [f["level"] for f in files_of(files, "mem", day)] == [0, 0], files
    # A third file reaches it (the default is 10).
    third = [Point("mem", {"host": "a"}, {"used": 2}, base + 2 * S)]
    write_points(server, db, third)
    model.apply(third)
    wait_until_compacted(server, db, [("mem", day)], timeout_s=8)
    # Replaced objects deleted within seconds (the default grace period is an hour).
    wait_until_disk_matches_listing(server, db, timeout_s=8)
    assert_matches_model(server, db, model, "compacted with settings from the environment")


def test_compactions_and_their_failures_are_listed_in_system_compaction_events(start_server, db):
    server = start_server("--persist-interval", PERSIST_FAST, "--compaction-interval", COMPACT_NEVER)
    build_level0_files(server, db, wide_batches(2), Model())
    assert query(server, db, "SELECT * FROM system.compaction_events") == []

    # A merge that cannot fit its memory limit fails, and the event says why.
    assert server.terminate() == 0, server.log_tail()
    server.extra_args += ["--compaction-mem-limit", "1MiB"]
    set_flag(server, "--compaction-interval", COMPACT_SOON)
    server.start()
    failed = poll_until(
        lambda: query(server, db, "SELECT * FROM system.compaction_events WHERE error IS NOT NULL"),
        COMPACT_TIMEOUT_S,
        "a failed compaction listed",
        POLL_S,
    )
    assert failed[0]["table_name"] == "w" and failed[0]["files_out"] == 0, failed
    assert "--compaction-mem-limit" in failed[0]["error"] or "Resources exhausted" in failed[0]["error"], failed

    # With room to work it succeeds, and the event counts what it read and wrote.
    assert server.terminate() == 0, server.log_tail()
    server.extra_args = [a for a in server.extra_args if a not in ("--compaction-mem-limit", "1MiB")]
    server.start()
    files = wait_until_compacted(server, db, [("w", PAST_DAY)])
    events = query(
        server, db,
        "SELECT table_name, partition, files_in, files_out, rows_in, rows_out, bytes_in, bytes_out, "
        "duration_ms, error FROM system.compaction_events WHERE error IS NULL",
    )
    assert len(events) == 1, events
    (event,) = events
    assert (event["table_name"], event["partition"]) == ("w", PAST_DAY)
    assert (event["files_in"], event["files_out"]) == (2, len(files))
    assert event["rows_in"] == event["rows_out"] == sum(f["row_count"] for f in files) == 20_000
    assert event["bytes_out"] == sum(f["size_bytes"] for f in files)
    assert event.get("error") is None
