"""Persistence of the write buffer to Parquet, on the local file system and in memory.

Runs the persistence contract (`persistence_contract.py`: objects, listing, sort order,
query results across persists and restarts, dedup, graceful shutdown) against the default
object store, `file`, whose objects are files at
`<data-dir>/objects/<db>/<table>/<YYYY-MM-DD>/<file-id>.parquet`.

Also specifies that
- `file` is the default: without `--object-store` the objects land under `<data-dir>/objects`;
- WAL segments whose entries are all persisted are deleted, so the WAL does not grow with
  everything ever written (the open segment stays);
- `--object-store memory` (here set by `TRIBUTARY_OBJECT_STORE`, with
  `TRIBUTARY_PERSIST_INTERVAL`) persists and answers queries within one process life and
  writes no object to the data directory; after a restart it starts empty (no catalog entry
  naming a lost file, no replayed rows) and takes writes again; `--catalog` with it is refused
  at start-up, naming both flags;
- query results do not depend on `--parquet-cache-size`, even one far smaller than a file;
- a bad `--object-store`, `--persist-interval` or `--parquet-cache-size`, or `s3` without
  `--bucket`, stops start-up with a message naming the flag.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from conftest import count_rows, expect_status, poll_until, query, query_raw, write_lp
from persistence_contract import (
    DAY1,
    DAY2,
    PARQUET_KEY_RE,
    PERSIST_SOON,
    Deployment,
    FileObjects,
    Model,
    PersistenceContract,
    assert_matches_model,
    check_listing,
    check_objects,
    persisted_rows,
    tsbs,
    wait_for_persisted,
    write_points,
)


class TestFileObjectStore(PersistenceContract):
    """The contract on the default object store (no `--object-store` flag: `file`)."""

    @pytest.fixture
    def launch(self, start_server):
        def launch(*args: str, env: dict[str, str] | None = None) -> Deployment:
            server = start_server(*args, env=env)
            return Deployment(server, FileObjects(server.data_dir / "objects"))

        return launch


def test_explicit_file_object_store_keeps_objects_under_the_data_dir(start_server, db):
    server = start_server("--object-store", "file", "--persist-interval", PERSIST_SOON)
    points = tsbs(hosts=2, hours=6, seed=10)
    model = Model().apply(points)
    write_points(server, db, points)
    files = wait_for_persisted(server, db, model.counts())
    objects = server.data_dir / "objects"
    for f in files:
        on_disk = objects / f["path"]
        assert on_disk.is_file(), f"{on_disk} missing"
        assert on_disk.relative_to(objects).parts[:3] == (db, f["table_name"], f["partition"])
    assert {f["partition"] for f in files} == {DAY1, DAY2}
    check_listing(Deployment(server, FileObjects(objects)), db, files, model.tables())


def wal_bytes(server) -> int:
    return sum(p.stat().st_size for p in (server.data_dir / "wal").glob("*") if p.is_file())


def test_fully_persisted_wal_segments_are_deleted(start_server, db):
    server = start_server("--persist-interval", PERSIST_SOON)
    # About 72 MB of string fields: more than one WAL segment (64 MiB by default), so at
    # least one closed segment exists whose entries all get persisted.
    payload = "x" * 8000
    requests_, lines = 9, 1000
    peak = 0
    for r in range(requests_):
        body = "".join(f'blob,host=h{i % 4} seq={r * lines + i}i,payload="{i:08d}{payload}" {r * lines + i}\n' for i in range(lines))
        expect_status(write_lp(server, db, body, precision="second"), 204)
        peak = max(peak, wal_bytes(server))
    assert peak > 70_000_000, f"the WAL holds {peak} bytes after writing ~72 MB"

    wait_for_persisted(server, db, {"blob": requests_ * lines})
    poll_until(lambda: wal_bytes(server) < peak // 2, 30, f"the WAL ({peak} bytes at its peak) to shrink after persistence", 0.1)
    assert count_rows(server, db, "blob") == requests_ * lines
    assert query(server, db, "SELECT count(DISTINCT seq) AS n, min(length(payload)) AS lo, max(length(payload)) AS hi FROM blob") == [
        {"n": requests_ * lines, "lo": 8008, "hi": 8008}
    ]
    # The deleted segments are not needed after a restart either.
    server.kill()
    server.restart()
    assert count_rows(server, db, "blob") == requests_ * lines


def test_memory_object_store_persists_and_answers_queries_within_one_process(start_server, db):
    server = start_server(env={"TRIBUTARY_OBJECT_STORE": "memory", "TRIBUTARY_PERSIST_INTERVAL": PERSIST_SOON})
    points = tsbs(hosts=2, hours=6, seed=11)
    model = Model().apply(points)
    write_points(server, db, points)
    files = wait_for_persisted(server, db, model.counts())
    assert persisted_rows(files) == Counter(model.counts())
    key_re = re.compile(PARQUET_KEY_RE.format(db=re.escape(db)))
    assert all(key_re.fullmatch(f["path"]) for f in files), files
    assert_matches_model(server, db, model, "persisted to memory")
    objects = server.data_dir / "objects"
    assert not objects.exists() or not any(p.is_file() for p in objects.rglob("*")), "memory store wrote files"


def test_memory_object_store_starts_empty_after_a_restart_and_takes_writes_again(start_server, db):
    server = start_server(env={"TRIBUTARY_OBJECT_STORE": "memory", "TRIBUTARY_PERSIST_INTERVAL": PERSIST_SOON})
    points = tsbs(hosts=1, hours=2, seed=13)
    model = Model().apply(points)
    write_points(server, db, points)
    wait_for_persisted(server, db, model.counts())
    # Rows still buffered too: in the write-ahead log only, which must not come back either.
    expect_status(write_lp(server, db, "late,k=a f=1 1"), 204)
    server.kill()
    # Only what the server put there is deleted.
    mine = server.data_dir / "memory" / "notes.txt"
    mine.write_text("not tributary's\n")
    server.restart()
    assert mine.read_text() == "not tributary's\n"
    # The catalog that named the lost files went with them.
    expect_status(query_raw(server, db, "SELECT count(*) FROM cpu"), 404)
    again = Model().apply(points)
    write_points(server, db, points)
    wait_for_persisted(server, db, again.counts())
    assert_matches_model(server, db, again, "persisted to memory after a restart")


def test_memory_object_store_refuses_a_catalog_that_would_outlive_it(start_server, tmp_path):
    server = start_server(
        "--object-store", "memory", "--catalog", f"sqlite:{tmp_path / 'catalog.sqlite'}", wait=False
    )
    assert server.expect_exit() != 0
    log = server.log_text()
    assert "--catalog" in log and "--object-store memory" in log, server.log_tail()


def test_query_results_do_not_depend_on_the_parquet_cache_size(start_server, db):
    server = start_server("--persist-interval", PERSIST_SOON, "--parquet-cache-size", "1KiB")
    points = tsbs(hosts=3, hours=6, seed=12)
    model = Model().apply(points)
    write_points(server, db, points)
    files = wait_for_persisted(server, db, model.counts())
    assert all(f["size_bytes"] > 1024 for f in files), "the cache is smaller than any file"
    check_objects(Deployment(server, FileObjects(server.data_dir / "objects")), db, files, model)
    for attempt in ("cold", "warm", "warm again"):
        assert_matches_model(server, db, model, f"{attempt} cache")


@pytest.mark.parametrize(
    "args,named",
    [
        (["--object-store", "banana"], "--object-store"),
        (["--persist-interval", "soon"], "--persist-interval"),
        (["--parquet-cache-size", "lots"], "--parquet-cache-size"),
        (["--object-store", "s3"], "--bucket"),
    ],
    ids=["object-store", "persist-interval", "parquet-cache-size", "s3-without-bucket"],
)
def test_bad_persistence_configuration_stops_start_up_naming_the_flag(start_server, args, named):
    server = start_server(*args, wait=False)
    assert server.expect_exit() != 0
    log = server.log_text()
    variable = "TRIBUTARY_" + named.removeprefix("--").replace("-", "_").upper()
    assert named in log or variable in log, server.log_tail()
