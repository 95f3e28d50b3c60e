"""Time filters answer the same from the buffer, from Parquet files and from both.

Parquet files end data pages where a series starts and on hour boundaries, and the querier
reads pages inside a time filter's range without evaluating the filter, evaluates it on pages
that straddle a bound, and skips the rest (`querier/src/time_pages.rs`). Specifies that, for
windows on page boundaries and off them, with `>`, `>=`, `<`, `<=`, `=`, `BETWEEN` and the
literal on either side, with and without a tag filter, and with `time` selected or not:
- the rows returned are exactly those a row-by-row filter keeps (checked against the data
  the test wrote), while the rows are buffered, once they are persisted, and when a persisted
  file and newer buffered rows for the same keys are read together;
- in a file of several row groups, whether a window's pages lie in the first row group, the
  last, or both (the scan reads only the bytes of the row groups holding selected pages),
  and a filter on the first sort tag narrows those bytes to the row groups that can hold
  its values (seen in `EXPLAIN`).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest

from conftest import query, ts_ns, write_lp
from persistence_contract import PERSIST_NEVER, PERSIST_SOON, parquet_files, wait_for_persisted

HOSTS = ["host_0", "host_1", "host_2", "host_3"]
STEP_S = 10
HOURS = 8
T0 = int(datetime(2016, 1, 1, tzinfo=timezone.utc).timestamp())  # seconds


def usage(host: int, second: int) -> int:
    return (host * 7919 + second // STEP_S * 31) % 1000


ROWS = [(h, T0 + i * STEP_S) for h in range(len(HOSTS)) for i in range(HOURS * 3600 // STEP_S)]


def iso(second: int) -> str:
    return datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def at(hours: float) -> int:
    return T0 + round(hours * 3600)


# (SQL condition on time, which seconds it keeps)
WINDOWS = [
    # host_0's pages hold 00:00-03:00, 03:00-06:00, ...: whole pages.
    (f"time >= '{iso(at(3))}' AND time < '{iso(at(6))}'", lambda s: at(3) <= s < at(6)),
    (f"time >= '{iso(at(2))}' AND time < '{iso(at(5))}'", lambda s: at(2) <= s < at(5)),
    (f"time >= '{iso(at(1.5) + 5)}' AND time <= '{iso(at(4.2))}'", lambda s: at(1.5) + 5 <= s <= at(4.2)),
    (f"time > '{iso(at(3))}' AND time < '{iso(at(3) + 60)}'", lambda s: at(3) < s < at(3) + 60),
    (f"'{iso(at(6))}' <= time", lambda s: s >= at(6)),
    (f"time <= '{iso(at(0.5))}'", lambda s: s <= at(0.5)),
    (f"time = '{iso(at(7) + 30)}'", lambda s: s == at(7) + 30),
    (f"time BETWEEN '{iso(at(3))}' AND '{iso(at(6))}'", lambda s: at(3) <= s <= at(6)),
    (f"time >= '{iso(at(9))}'", lambda s: False),
]
WINDOW_IDS = ["pages", "hours", "off-page", "open-bounds", "literal-first", "up-to", "equal", "between", "after-all"]


def write_rows(server, db, rows, value=usage) -> None:
    lines = [f"cpu,hostname={HOSTS[h]} usage_user={value(h, s)}i {s * 1_000_000_000}" for h, s in rows]
    for start in range(0, len(lines), 5_000):
        write_lp(server, db, "\n".join(lines[start : start + 5_000])).raise_for_status()


def expected(keep, value=usage, host: int | None = None) -> tuple[int, int]:
    rows = [(h, s) for h, s in ROWS if keep(s) and (host is None or h == host)]
    return len(rows), sum(value(h, s) for h, s in rows)


def answers(server, db, condition: str, host: int | None = None) -> tuple[int, int]:
    tag = f" AND hostname = '{HOSTS[host]}'" if host is not None else ""
    [row] = query(server, db, f"SELECT count(*) AS n, sum(usage_user) AS total FROM cpu WHERE {condition}{tag}")
    return row["n"], row.get("total") or 0


def selected_times(server, db, condition: str) -> list[str]:
    rows = query(server, db, f"SELECT time FROM cpu WHERE {condition} AND hostname = 'host_2' ORDER BY time")
    return [r["time"] for r in rows]


@pytest.fixture
def loaded(start_server, db):
    server = start_server("--persist-interval", PERSIST_SOON)
    write_rows(server, db, ROWS)
    return server


@pytest.mark.parametrize(("condition", "keep"), WINDOWS, ids=WINDOW_IDS)
def test_time_filters_keep_the_same_rows_from_buffer_and_from_files(loaded, db, condition, keep):
    server = loaded
    buffered = (answers(server, db, condition), answers(server, db, condition, host=1), selected_times(server, db, condition))
    wait_for_persisted(server, db, {"cpu": len(ROWS)})
    persisted = (answers(server, db, condition), answers(server, db, condition, host=1), selected_times(server, db, condition))
    assert persisted[0] == expected(keep)
    assert persisted[1] == expected(keep, host=1)
    assert len(persisted[2]) == expected(keep, host=2)[0]
    assert persisted == buffered
    # No column of the table asked for: `time` is read for the filter alone.
    [row] = query(server, db, f"SELECT count(*) AS n FROM cpu WHERE {condition}")
    assert row["n"] == expected(keep)[0]


def test_time_filters_over_a_file_and_newer_buffered_rows_for_the_same_keys(loaded, db):
    server = loaded
    wait_for_persisted(server, db, {"cpu": len(ROWS)})
    # New values for host_1 from 02:00 to 04:00: read from the buffer and the file together.
    rewritten = [(h, s) for h, s in ROWS if h == 1 and at(2) <= s < at(4)]

    def newer(h: int, s: int) -> int:
        return usage(h, s) + (1000 if h == 1 and at(2) <= s < at(4) else 0)

    write_rows(server, db, rewritten, value=newer)
    for condition, keep in WINDOWS:
        assert answers(server, db, condition) == expected(keep, value=newer), condition
        assert answers(server, db, condition, host=1) == expected(keep, value=newer, host=1), condition


def test_time_filters_read_the_row_groups_that_hold_their_pages(start_server, db):
    # Twelve hosts of 8 h, then `host_late` from 08:00 to 10:00: one file of two row groups
    # (a row group ends at the first page boundary past 32,768 rows), the second holding
    # host_11's last page and all of host_late.
    hosts = [f"host_{i:02d}" for i in range(12)] + ["host_late"]
    rows = [(h, s) for h in range(12) for s in range(T0, at(8), STEP_S)]
    rows += [(12, s) for s in range(at(8), at(10), STEP_S)]

    server = start_server("--persist-interval", PERSIST_NEVER)
    lines = [f"cpu,hostname={hosts[h]} usage_user={usage(h, s)}i {s * 1_000_000_000}" for h, s in rows]
    for start in range(0, len(lines), 5_000):
        write_lp(server, db, "\n".join(lines[start : start + 5_000])).raise_for_status()
    server.terminate()  # graceful: the buffer goes to one file
    server.start()
    [listed] = parquet_files(server, db)
    metadata = pq.ParquetFile(server.data_dir / "objects" / listed["path"]).metadata
    assert metadata.num_row_groups == 2
    hostname = metadata.schema.names.index("hostname")
    assert metadata.row_group(1).column(hostname).statistics.max == "host_late"
    assert metadata.row_group(0).column(hostname).statistics.max == "host_11"

    windows = {
        "first row group only": (f"time < '{iso(at(1))}'", lambda s: s < at(1)),
        "last row group only": (f"time >= '{iso(at(8.5))}'", lambda s: s >= at(8.5)),
        "both": (f"time >= '{iso(at(6))}' AND time < '{iso(at(9))}'", lambda s: at(6) <= s < at(9)),
        "both, off pages": (f"time > '{iso(at(5.5))}' AND time <= '{iso(at(8.2))}'", lambda s: at(5.5) < s <= at(8.2)),
    }
    for name, (condition, keep) in windows.items():
        kept = [(h, s) for h, s in rows if keep(s)]
        [row] = query(server, db, f"SELECT count(*) AS n, sum(usage_user) AS total FROM cpu WHERE {condition}")
        assert (row["n"], row.get("total") or 0) == (len(kept), sum(usage(h, s) for h, s in kept)), name
        late = [s for h, s in kept if h == 12]
        times = query(server, db, f"SELECT time FROM cpu WHERE {condition} AND hostname = 'host_late' ORDER BY time")
        assert [ts_ns(t["time"]) for t in times] == [s * 1_000_000_000 for s in late], name

    # A window in both row groups, for a host whose rows are in one of them: the scan covers
    # the bytes of that row group alone (it would open the file in two partitions otherwise).
    second_starts = min(chunk_start(metadata.row_group(1).column(c)) for c in range(metadata.num_columns))
    condition = windows["both"][0]
    for host, in_first in [("host_03", True), ("host_late", False)]:
        sql = f"SELECT max(usage_user) FROM cpu WHERE {condition} AND hostname = '{host}'"
        plan = "\n".join(row["plan"] for row in query(server, db, f"EXPLAIN {sql}"))
        ranges = [(int(a), int(b)) for a, b in re.findall(r"\.parquet:(\d+)\.\.(\d+)", plan)]
        assert ranges, plan
        if in_first:
            assert all(end <= second_starts for _, end in ranges), plan
        else:
            assert all(start >= second_starts for start, _ in ranges), plan
        analyzed = "\n".join(row["plan"] for row in query(server, db, f"EXPLAIN ANALYZE {sql}"))
        assert "output_rows=" in analyzed, analyzed


def chunk_start(chunk) -> int:
    """The file offset a column chunk starts at (its dictionary page, if it has one)."""
    if chunk.has_dictionary_page:
        return min(chunk.dictionary_page_offset, chunk.data_page_offset)
    return chunk.data_page_offset
