"""Crashes in the middle of a persist job lose nothing and duplicate nothing.

A test-only failpoint, `TRIBUTARY_FAILPOINT=<step>`, makes the server abort (SIGABRT, no
cleanup) when a persist job reaches that step:

    persist-before-upload     Parquet encoded, nothing uploaded
    persist-after-upload      object uploaded, not recorded in the catalog
    persist-after-catalog     file recorded in the catalog, rows still in the buffer
    persist-after-buffer-drop rows dropped from the buffer, WAL not truncated
    persist-after-wal-truncate WAL truncated behind the persisted rows

For each step the test persists a first batch (by graceful shutdown), starts with the
failpoint, writes a second batch that both adds rows and overwrites fields of persisted keys,
and waits for the server to abort by itself once the batch is due (a short `--persist-interval`).
Restarted without the failpoint, every acknowledged row is there exactly once with its newest
fields; objects uploaded but never recorded in the catalog are ignored. At
`persist-after-upload` such an object is there: a complete Parquet file that the crashed job
uploaded, under the data dir's `objects/` but not in `system.parquet_files`, and it stays
unlisted and unread. A third batch written after the crash persists and reads back correctly
too, also across one more restart.
"""

from __future__ import annotations

import signal

import pyarrow.parquet as pq
import pytest

from persistence_contract import (
    DAY3,
    HOUR,
    PERSIST_SOON,
    START_NS,
    Deployment,
    FileObjects,
    Model,
    assert_matches_model,
    check_listing,
    check_objects,
    overwrite,
    parquet_files,
    tsbs,
    utc_day,
    utc_ns,
    wait_for_persisted,
    write_points,
)

FAILPOINTS = [
    "persist-before-upload",
    "persist-after-upload",
    "persist-after-catalog",
    "persist-after-buffer-drop",
    "persist-after-wal-truncate",
]
#: Upper bound for the failpoint to fire once the second batch is due.
ABORT_TIMEOUT_S = 30.0


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_crash_at_a_persist_step_loses_and_duplicates_nothing(start_server, db, failpoint):
    # No compaction: the objects listed must be the persisted files, not merges of them.
    server = start_server("--persist-interval", PERSIST_SOON, "--compaction-interval", "1h")
    objects = FileObjects(server.data_dir / "objects")
    model = Model()

    first = tsbs(hosts=3, hours=4, seed=30)
    write_points(server, db, first)
    model.apply(first)
    assert server.terminate() == 0, server.log_tail()  # persists `first`
    before_crash = set(objects.list(f"{db}/"))

    server.env["TRIBUTARY_FAILPOINT"] = failpoint
    server.start()
    # New rows in both existing partitions, and newer usage_user for every fifth cpu key of
    # `first` (its other fields stay as persisted).
    second = tsbs(hosts=3, start_ns=START_NS + 4 * HOUR, hours=2, seed=31)
    second += overwrite([p for p in first[::5] if p.table == "cpu"], lambda p: {"usage_user": 500.0 + p.fields["usage_user"]})
    write_points(server, db, second)  # acknowledged before the batch is due
    model.apply(second)
    code = server.expect_exit(ABORT_TIMEOUT_S)
    assert code == -signal.SIGABRT, f"expected an abort at {failpoint}, exit status {code}\n{server.log_tail()}"
    # Taken with the server down: what the crashed process left in the object store.
    at_crash = set(objects.list(f"{db}/"))

    del server.env["TRIBUTARY_FAILPOINT"]
    server.start()
    assert_matches_model(server, db, model, f"after a crash at {failpoint}")
    deployment = Deployment(server, objects)
    # An object uploaded but never recorded is not listed, and not read.
    check_listing(deployment, db, parquet_files(server, db), model.tables(), orphans_allowed=True)
    orphans = at_crash - {f["path"] for f in parquet_files(server, db)}
    if failpoint == "persist-after-upload":
        # The crashed job's upload is there, complete, and the catalog does not know it.
        assert orphans, f"no unrecorded object after a crash at {failpoint}: {sorted(at_crash)}"
        assert orphans <= at_crash - before_crash, f"a file recorded before the crash left the catalog: {sorted(orphans)}"
        for key in orphans:
            assert pq.ParquetFile(objects.root / key).metadata.num_rows > 0, key

    # Life goes on: a new day, and newer usage_system for keys of the second batch.
    third = tsbs(hosts=2, start_ns=utc_ns(f"{DAY3}T00:00:00"), hours=1, seed=32)
    third += overwrite([p for p in second[::7] if p.table == "cpu"], lambda p: {"usage_system": 700.0})
    write_points(server, db, third)
    model.apply(third)
    day3 = {t: len(model.rows(t, lambda r: utc_day(r["time"]) == DAY3)) for t in model.tables()}
    files = wait_for_persisted(server, db, day3, where=lambda f: f["partition"] == DAY3)
    assert_matches_model(server, db, model, f"after the next persist following a crash at {failpoint}")
    check_listing(deployment, db, files, model.tables(), orphans_allowed=True)
    check_objects(deployment, db, files, model, exact_union=False)
    assert not orphans & {f["path"] for f in files}, f"an orphan of the crash was listed: {sorted(orphans)}"

    assert server.terminate() == 0, server.log_tail()
    server.start()
    assert_matches_model(server, db, model, f"after a final restart (crash at {failpoint})")
