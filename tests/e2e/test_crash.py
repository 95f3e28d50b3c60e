"""Durability: an acknowledged write survives a crash, and shutdown is clean.

Specifies that
- while writers send batches (fsync-acknowledged writes, the default), SIGKILL at any
  moment, repeated over several kill/restart rounds, loses no acknowledged row and
  duplicates none: after the last restart every acknowledged batch is present exactly
  once, and a batch whose write failed is either absent or present whole (one batch is
  one WAL entry), never twice;
- SIGTERM and SIGINT make the server finish, exit with code 0, and keep every write it
  acknowledged before (`no_sync` writes included), ready for the next start;
- a restart with no writes in between changes nothing.

Kills are triggered by a count of acknowledged batches, never by a timer.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field

import pytest
import requests

from conftest import count_rows, expect_status, query, write_lp

ROWS_PER_BATCH = 200
ROUNDS = 6
WRITERS = 4
ACK_TIMEOUT_S = 120


@dataclass
class Ledger:
    """What the writers know: which batches were acknowledged and which failed."""

    acked: set[tuple[int, int]] = field(default_factory=set)  # (writer, batch)
    failed: set[tuple[int, int]] = field(default_factory=set)
    errors: list[BaseException] = field(default_factory=list)  # a writer saw something wrong
    cond: threading.Condition = field(default_factory=threading.Condition)

    def record(self, key, ok: bool) -> None:
        with self.cond:
            (self.acked if ok else self.failed).add(key)
            self.cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self.cond:
            self.errors.append(error)
            self.cond.notify_all()

    def wait_for_acks(self, target: int, timeout_s: float) -> None:
        with self.cond:
            done = self.cond.wait_for(lambda: len(self.acked) >= target or self.errors, timeout=timeout_s)
            assert not self.errors, f"a writer failed: {self.errors!r}"
            assert done, f"only {len(self.acked)} of {target} batches acknowledged after {timeout_s}s"


def batch_body(writer: int, batch: int) -> str:
    # Unique primary key per row: (writer, batch) tags and a time unique within the batch.
    base = batch * ROWS_PER_BATCH
    return "".join(f"crash,writer=w{writer},batch=b{batch} v={i}i {base + i}\n" for i in range(ROWS_PER_BATCH))


class Writers:
    """Background threads that write batches to whichever process `server` currently runs."""

    def __init__(self, server, db: str, ledger: Ledger, count: int = WRITERS):
        self.server = server
        self.db = db
        self.ledger = ledger
        self.up = threading.Event()  # cleared while the server is down
        self.up.set()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(count)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.up.set()
        for t in self.threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in self.threads), "a writer thread hung"

    def _run(self, writer: int) -> None:
        batch = 0
        try:
            while not self.stop.is_set():
                self.up.wait(timeout=60)
                if self.stop.is_set():
                    break
                url = self.server.url
                key = (writer, batch)
                try:
                    resp = requests.post(
                        f"{url}/api/v3/write_lp",
                        params={"db": self.db, "precision": "nanosecond"},
                        data=batch_body(writer, batch),
                        timeout=60,
                    )
                    ok = resp.status_code == 204
                    # 503: busy or shutting down, a refusal the client may retry. Anything
                    # else is a bug, as every batch is valid.
                    if not ok and resp.status_code != 503:
                        raise AssertionError(f"batch {key} answered {resp.status_code}: {resp.text[:500]}")
                except requests.RequestException:
                    ok = False  # killed while in flight, or down: its fate is unknown
                self.ledger.record(key, ok)
                batch += 1
        except BaseException as e:  # surfaced by the test
            self.ledger.fail(e)


def check_batches(server, db: str, ledger: Ledger) -> None:
    rows = query(
        server,
        db,
        "SELECT writer, batch, count(*) AS n, count(DISTINCT time) AS times, sum(v) AS total FROM crash GROUP BY writer, batch",
    )
    present = {}
    for r in rows:
        key = (int(r["writer"][1:]), int(r["batch"][1:]))
        assert key not in present, f"batch {key} appears twice in a GROUP BY: {rows}"
        present[key] = r
    whole = {"n": ROWS_PER_BATCH, "times": ROWS_PER_BATCH, "total": ROWS_PER_BATCH * (ROWS_PER_BATCH - 1) // 2}

    missing = sorted(ledger.acked - set(present))
    assert not missing, f"{len(missing)} acknowledged batches lost, e.g. {missing[:10]}"
    for key, r in present.items():
        assert key in ledger.acked or key in ledger.failed, f"batch {key} was never sent"
        assert {k: int(r[k]) for k in whole} == whole, f"batch {key} is not present exactly once, whole: {r}"
    total = count_rows(server, db, "crash")
    assert total == ROWS_PER_BATCH * len(present), (total, len(present))


def test_sigkill_loop_loses_no_acknowledged_write(server, db):
    ledger = Ledger()
    with Writers(server, db, ledger) as writers:
        for round_ in range(ROUNDS):
            # Kill once a few more batches are acknowledged; the writers are mid-request then.
            ledger.wait_for_acks(len(ledger.acked) + 3 + 2 * round_, ACK_TIMEOUT_S)
            writers.up.clear()
            server.kill()
            server.restart()
            writers.up.set()
        ledger.wait_for_acks(len(ledger.acked) + WRITERS, ACK_TIMEOUT_S)
    assert not ledger.errors, ledger.errors
    assert server.starts == ROUNDS + 1

    # The acknowledged batches survive one more crash with nothing in flight.
    server.kill()
    server.restart()
    assert len(ledger.acked) >= ROUNDS * 3
    check_batches(server, db, ledger)


def test_sigkill_right_after_a_no_sync_write_is_survived_by_earlier_sync_writes(server, db):
    expect_status(write_lp(server, db, "m,t=sync f=1 1", precision="second"), 204)
    expect_status(write_lp(server, db, "m,t=nosync f=2 2", precision="second", no_sync=True), 204)
    server.kill()
    server.restart()
    # The sync write is durable; the no_sync one may or may not be, but never twice.
    rows = query(server, db, "SELECT t, count(*) AS n FROM m GROUP BY t ORDER BY t")
    by_tag = {r["t"]: r["n"] for r in rows}
    assert by_tag.get("sync") == 1, rows
    assert by_tag.get("nosync", 1) == 1, rows


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_shutdown_exits_zero_and_keeps_data(server, db, sig):
    expect_status(write_lp(server, db, "m,t=a f=1 1\nm,t=b f=2 2\n", precision="second"), 204)
    expect_status(write_lp(server, db, "m,t=c f=3 3\n", precision="second", no_sync=True), 204)
    assert server.terminate(sig) == 0, server.log_tail()
    server.restart()
    assert query(server, db, "SELECT t, f FROM m ORDER BY t") == [
        {"t": "a", "f": 1.0},
        {"t": "b", "f": 2.0},
        {"t": "c", "f": 3.0},
    ]


def test_sigterm_during_writes_keeps_every_acknowledged_batch(server, db):
    ledger = Ledger()
    with Writers(server, db, ledger) as writers:
        ledger.wait_for_acks(10, ACK_TIMEOUT_S)
        writers.up.clear()  # the writers pause after their current request
        code = server.terminate(signal.SIGTERM)
    assert not ledger.errors, ledger.errors
    assert code == 0, server.log_tail()
    server.restart()
    check_batches(server, db, ledger)


def test_restart_without_writes_changes_nothing(server, db):
    body = "".join(f"m,t=t{i % 7} f={i} {i}\n" for i in range(1000))
    expect_status(write_lp(server, db, body, precision="second"), 204)
    before = query(server, db, "SELECT t, count(*) AS n, sum(f) AS s FROM m GROUP BY t ORDER BY t")
    for _ in range(3):
        assert server.terminate() == 0
        server.restart()
        assert query(server, db, "SELECT t, count(*) AS n, sum(f) AS s FROM m GROUP BY t ORDER BY t") == before
    server.kill()
    server.restart()
    assert query(server, db, "SELECT t, count(*) AS n, sum(f) AS s FROM m GROUP BY t ORDER BY t") == before


def test_server_starts_on_the_data_dir_of_a_killed_server_with_a_new_port(server, db):
    expect_status(write_lp(server, db, "m f=1 1"), 204)
    server.kill()
    server.restart()
    # Any free port; the address file names the new one.
    assert (server.data_dir / "http-addr").read_text().strip() == server.url.removeprefix("http://")
    assert count_rows(server, db, "m") == 1
