"""The persistence contract every object store backend meets, and the helpers to check it.

`PersistenceContract` is a test suite without a backend: `test_persistence.py` runs it against
the local file system (`--object-store file`, the default) and `test_s3.py` against a real
S3-compatible server on loopback (`--object-store s3`). A subclass provides one fixture,
`launch(*args, env=None) -> Deployment`, that starts a server on that backend and returns it
with a view of its object store (list keys, read bytes), so the same checks read the objects
the server wrote whatever holds them.

Specifies that
- rows in the buffer are persisted once their partition (table, UTC day) is older than
  `--persist-interval`, as Parquet objects at `<db>/<table>/<YYYY-MM-DD>/<file-id>.parquet`,
  each listed in `system.parquet_files` with its table, partition, size, row count, time range
  and level 0;
- every object is valid Parquet that pyarrow reads back: sorted by (every tag column, in the
  table's sort order, then time) without duplicate keys, with that order recorded as
  `sorting_columns` in every row group (the table's sort order puts the tags with the most
  distinct values in its first write first; the same order in every file of the table), zstd-compressed, with statistics and a page index on every column, tags
  dictionary-encoded and typed `dictionary<int32, string>`, `time` `timestamp[ns]`; the
  files of a database hold exactly the rows written to it;
- queries see buffer and Parquet as one table: results are the same before and after a
  persist, and after a restart (SIGTERM or SIGKILL), and a restart after everything was
  persisted writes no new file;
- rows written after a persist are unioned with the persisted ones without duplicates, a
  resent batch included, in the buffer and once persisted;
- a key (tag set + time) written before and after a persist resolves to the newer fields,
  field by field (a later write that omits a field keeps the older value), also when both
  versions are persisted in different files and after a restart; filters on fields see
  only the resolved row, never a stale version;
- time-filtered queries, aggregates and `ORDER BY time DESC LIMIT 1` over ranges that span
  Parquet and buffer (and UTC midnight) answer as if all rows were in one place;
- graceful shutdown (SIGTERM) persists every buffered row before exiting 0; the next start
  replays none of them again.

Every wait polls a condition with a deadline; persistence is observed through
`system.parquet_files`, never by sleeping for the interval.
"""

from __future__ import annotations

import calendar
import io
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import Server, expect_status, poll_until, query, ts_ns, write_lp

S = 1_000_000_000
MINUTE = 60 * S
HOUR = 3600 * S
#: `--persist-interval` of tests that wait for persistence: short, so they wait little.
PERSIST_SOON = "500ms"
#: `--persist-interval` of tests that keep rows in the buffer: longer than any test runs.
PERSIST_NEVER = "1h"
#: Upper bound for rows to show up in `system.parquet_files` after they became due.
PERSIST_TIMEOUT_S = 30.0
#: How often the tests look at `system.parquet_files` while waiting.
PERSIST_POLL_S = 0.1


def utc_ns(text: str) -> int:
    """`2024-03-09T21:00:00` (UTC) as nanoseconds since the epoch."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")) * S


def utc_day(ns: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ns // S))


def sql_time(ns: int) -> str:
    """A SQL timestamp literal for `time` comparisons."""
    frac = ns % S
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // S))
    return f"'{base}.{frac:09d}Z'" if frac else f"'{base}Z'"


#: The TSBS-like data set starts three hours before UTC midnight, so six hours span two
#: partitions (days) of each table.
DAY1 = "2024-03-09"
DAY2 = "2024-03-10"
DAY3 = "2024-03-11"
START_NS = utc_ns(f"{DAY1}T21:00:00")
MIDNIGHT_NS = utc_ns(f"{DAY2}T00:00:00")


# -- data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One line of line protocol: a row of `table` keyed by (tags, time)."""

    table: str
    tags: dict[str, str]
    fields: dict[str, Any]
    time_ns: int

    @property
    def key(self) -> tuple:
        return (self.table, tuple(sorted(self.tags.items())), self.time_ns)

    def line(self) -> str:
        tags = "".join(f",{k}={v}" for k, v in sorted(self.tags.items()))
        fields = ",".join(f"{k}={_lp_value(v)}" for k, v in self.fields.items())
        return f"{self.table}{tags} {fields} {self.time_ns}\n"


def _lp_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(v)


CPU_FIELDS = (
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
)
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
OSES = ("Ubuntu16.04LTS", "Ubuntu15.10", "CentOS7")


def cpu_tags(host: int) -> dict[str, str]:
    region = REGIONS[host % len(REGIONS)]
    return {
        "hostname": f"host_{host}",
        "region": region,
        "datacenter": f"{region}{'abc'[host % 3]}",
        "rack": str(host * 7 % 10),
        "os": OSES[host % len(OSES)],
        "arch": ("x64", "x86")[host % 2],
    }


def mem_tags(host: int) -> dict[str, str]:
    # Sparse tag: odd hosts have no `service`, so their key has a null tag.
    tags = {"hostname": f"host_{host}", "region": REGIONS[host % len(REGIONS)]}
    if host % 2 == 0:
        tags["service"] = f"svc_{host % 4}"
    return tags


def tsbs(
    hosts: int = 4,
    start_ns: int = START_NS,
    hours: float = 6,
    cpu_step_s: int = 60,
    mem_step_s: int = 120,
    seed: int = 0,
) -> list[Point]:
    """TSBS-like `cpu` (six tags, ten float fields) and `mem` (a sparse tag, int, float and
    sparse int and string fields) rows, in time order as agents would send them."""
    rng = random.Random(seed)
    end_ns = start_ns + int(hours * HOUR)
    points = []
    for h in range(hosts):
        tags = cpu_tags(h)
        usage = {f: rng.uniform(0, 100) for f in CPU_FIELDS}
        for t in range(start_ns, end_ns, cpu_step_s * S):
            for f in CPU_FIELDS:
                usage[f] = min(100.0, max(0.0, usage[f] + rng.uniform(-5, 5)))
            points.append(Point("cpu", tags, {f: round(v, 2) for f, v in usage.items()}, t))
        tags = mem_tags(h)
        total = 8 << 30
        for i, t in enumerate(range(start_ns, end_ns, mem_step_s * S)):
            used = rng.randrange(total // 10, total)
            fields: dict[str, Any] = {
                "used": used,
                "free": total - used,
                "used_percent": round(100 * used / total, 3),
            }
            if i % 3 == 0:
                fields["swap_used"] = rng.randrange(0, 1 << 30)
            if fields["used_percent"] > 80:
                fields["status"] = "high"
            points.append(Point("mem", tags, fields, t))
    points.sort(key=lambda p: (p.time_ns, p.table, p.tags["hostname"]))
    return points


def overwrite(points: Iterable[Point], fields: Callable[[Point], dict[str, Any]]) -> list[Point]:
    """Later writes of the same keys, naming only the fields `fields(point)` returns."""
    return [Point(p.table, p.tags, fields(p), p.time_ns) for p in points]


def write_points(server: Server, db: str, points: list[Point], rows_per_request: int = 2000) -> None:
    """Writes the points in requests of `rows_per_request` lines; each must be acknowledged."""
    for i in range(0, len(points), rows_per_request):
        body = "".join(p.line() for p in points[i : i + rows_per_request])
        expect_status(write_lp(server, db, body, precision="nanosecond"), 204)


def rows_per_table(points: Iterable[Point]) -> Counter:
    """Distinct keys per table."""
    return Counter(key[0] for key in {p.key for p in points})


# -- the expected state ----------------------------------------------------------------------


class Model:
    """What the database must hold after a sequence of writes: one row per key, each field
    the value of the latest write that named it."""

    def __init__(self) -> None:
        self._rows: dict[tuple, tuple[dict, dict, int]] = {}
        self._tags: dict[str, set[str]] = {}

    def apply(self, points: Iterable[Point]) -> "Model":
        for p in points:
            self._tags.setdefault(p.table, set()).update(p.tags)
            row = self._rows.get(p.key)
            if row is None:
                self._rows[p.key] = (dict(p.tags), dict(p.fields), p.time_ns)
            else:
                row[1].update(p.fields)
        return self

    def tables(self) -> list[str]:
        return sorted(self._tags)

    def tag_names(self, table: str) -> list[str]:
        return sorted(self._tags[table])

    def rows(self, table: str, where: Callable[[dict], bool] = lambda r: True) -> list[dict]:
        """Rows as a query returns them (null fields and tags left out), in key order."""
        out = [
            {**tags, **fields, "time": t}
            for (tbl, _, _), (tags, fields, t) in self._rows.items()
            if tbl == table
        ]
        out = [r for r in out if where(r)]
        out.sort(key=row_key_fn(self.tag_names(table)))
        return out

    def count(self, table: str) -> int:
        return sum(1 for key in self._rows if key[0] == table)

    def counts(self) -> dict[str, int]:
        return {t: self.count(t) for t in self.tables()}


def row_key_fn(tag_names: list[str], nulls_first: bool = True) -> Callable[[dict], tuple]:
    """Sort key of a row: the tags in the given order (a missing tag sorts first), then time."""
    null = 0 if nulls_first else 2

    def key(row: dict) -> tuple:
        return tuple((null, "") if row.get(t) is None else (1, row[t]) for t in tag_names) + (row["time"],)

    return key


def normalise(rows: list[dict]) -> list[dict]:
    """Query rows with `time` in nanoseconds and null values left out (JSON may omit them)."""
    return [{k: (ts_ns(v) if k == "time" else v) for k, v in r.items() if v is not None} for r in rows]


def select_all(server: Server, db: str, table: str) -> list[dict]:
    """Every row of `table`, exactly as `SELECT *` ordered by key answers it (raw JSON)."""
    return query(server, db, f'SELECT * FROM "{table}" ORDER BY time, "hostname"')


def snapshot(server: Server, db: str, model: Model) -> dict[str, list[dict]]:
    """Raw query results of every table: compared across persists and restarts as they are."""
    return {t: select_all(server, db, t) for t in model.tables()}


def describe_difference(got: list[dict], want: list[dict], tag_names: list[str]) -> str:
    key = row_key_fn(tag_names)
    got_keys = Counter(key(r) for r in got)
    want_keys = {key(r) for r in want}
    dups = [k for k, n in got_keys.items() if n > 1]
    missing = sorted(want_keys - set(got_keys))
    extra = sorted(set(got_keys) - want_keys)
    lines = [f"{len(got)} rows, expected {len(want)}"]
    if dups:
        lines.append(f"{len(dups)} keys appear more than once, e.g. {dups[:3]}")
    if missing:
        lines.append(f"{len(missing)} keys missing, e.g. {missing[:3]}")
    if extra:
        lines.append(f"{len(extra)} unexpected keys, e.g. {extra[:3]}")
    by_key = {key(r): r for r in want}
    wrong = [(r, by_key[key(r)]) for r in got if key(r) in by_key and r != by_key[key(r)]]
    if wrong:
        lines.append(f"{len(wrong)} rows with other values, e.g. got {wrong[0][0]}, expected {wrong[0][1]}")
    return "; ".join(lines)


def assert_matches_model(server: Server, db: str, model: Model, when: str = "") -> None:
    """Every table holds exactly the model's rows: none lost, none twice, newest fields."""
    for table in model.tables():
        got = normalise(query(server, db, f'SELECT * FROM "{table}"'))
        got.sort(key=row_key_fn(model.tag_names(table)))
        want = model.rows(table)
        if got != want:
            raise AssertionError(
                f"{table} {when}: " + describe_difference(got, want, model.tag_names(table))
            )


# -- system.parquet_files ----------------------------------------------------------------------


def parquet_files(server: Server, db: str) -> list[dict]:
    """`system.parquet_files` of `db`, with times in nanoseconds, ordered by path."""
    rows = query(
        server,
        db,
        "SELECT table_name, partition, path, size_bytes, row_count, min_time, max_time, level "
        "FROM system.parquet_files ORDER BY path",
    )
    return [{**r, "min_time": ts_ns(r["min_time"]), "max_time": ts_ns(r["max_time"])} for r in rows]


def persisted_rows(files: list[dict]) -> Counter:
    """Rows in the listed files, per table (a key persisted twice counts twice)."""
    out = Counter()
    for f in files:
        out[f["table_name"]] += f["row_count"]
    return out


def wait_for_persisted(
    server: Server,
    db: str,
    at_least: dict[str, int],
    where: Callable[[dict], bool] = lambda f: True,
    timeout_s: float = PERSIST_TIMEOUT_S,
) -> list[dict]:
    """Polls `system.parquet_files` until the files matching `where` hold at least
    `at_least[table]` rows for each table; returns the whole listing."""

    def done():
        files = parquet_files(server, db)
        have = persisted_rows([f for f in files if where(f)])
        return files if all(have[t] >= n for t, n in at_least.items()) else None

    return poll_until(done, timeout_s, f"system.parquet_files of {db} to hold {dict(at_least)} rows", PERSIST_POLL_S)


# -- the object store as a test sees it ---------------------------------------------------------


class ObjectStoreView(Protocol):
    """Read access to where a server puts its objects, independent of the server."""

    def list(self, prefix: str) -> dict[str, int]:
        """Keys under `prefix` with their sizes in bytes."""

    def read(self, key: str) -> bytes: ...


@dataclass
class FileObjects:
    """`--object-store file`: objects are files under `<data-dir>/objects/`."""

    root: Path

    def list(self, prefix: str) -> dict[str, int]:
        if not self.root.is_dir():
            return {}
        out = {}
        for p in self.root.rglob("*"):
            if p.is_file():
                key = p.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    out[key] = p.stat().st_size
        return out

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


@dataclass
class Deployment:
    """A server on some backend, and that backend's objects as the test can see them."""

    server: Server
    objects: ObjectStoreView


PARQUET_KEY_RE = r"{db}/(?P<table>[^/]+)/(?P<day>\d{{4}}-\d\d-\d\d)/(?P<id>[^/]+)\.parquet"


def check_listing(deployment: Deployment, db: str, files: list[dict], tables: Iterable[str],
                  orphans_allowed: bool = False) -> None:
    """The catalog's files have the documented paths and metadata and exist, at their size,
    in the object store; and (unless a crash may have left uploaded-but-unrecorded objects)
    every Parquet object of `db` is listed."""
    tables = set(tables)
    key_re = re.compile(PARQUET_KEY_RE.format(db=re.escape(db)))
    objects = deployment.objects.list(f"{db}/")
    assert files, f"system.parquet_files of {db} is empty"
    assert len({f["path"] for f in files}) == len(files), f"a path is listed twice: {files}"
    for f in files:
        m = key_re.fullmatch(f["path"])
        assert m, f"path {f['path']!r} is not <db>/<table>/<YYYY-MM-DD>/<file-id>.parquet"
        assert m["table"] == f["table_name"] and f["table_name"] in tables, f
        assert m["day"] == f["partition"], f
        assert f["level"] == 0, f"a persisted file starts at level 0: {f}"
        assert f["row_count"] > 0, f
        assert f["min_time"] <= f["max_time"], f
        assert utc_day(f["min_time"]) == utc_day(f["max_time"]) == f["partition"], (
            f"a file never spans partitions (UTC days): {f}"
        )
        assert f["path"] in objects, f"{f['path']} is listed in system.parquet_files but not in the object store"
        assert objects[f["path"]] == f["size_bytes"], f"size_bytes {f['size_bytes']} != object size {objects[f['path']]}"
    if not orphans_allowed:
        stray = sorted(k for k in objects if k.endswith(".parquet") and k not in {f["path"] for f in files})
        assert not stray, f"Parquet objects not listed in system.parquet_files: {stray}"


def read_parquet_object(data: bytes, listed: dict, tag_names: Iterable[str]) -> list[dict]:
    """Checks one persisted object's layout against its `system.parquet_files` row and
    returns its rows (tags and fields by name, nulls left out, `time` in nanoseconds)."""
    path = listed["path"]
    assert data[:4] == b"PAR1" and data[-4:] == b"PAR1", f"{path} is not a Parquet file"
    pf = pq.ParquetFile(io.BytesIO(data))
    md = pf.metadata
    schema = pf.schema_arrow
    assert md.num_rows == listed["row_count"], f"{path}: {md.num_rows} rows, system.parquet_files says {listed['row_count']}"

    known_tags = set(tag_names)
    dict_columns = sorted(f.name for f in schema if pa.types.is_dictionary(f.type))
    assert set(dict_columns) <= known_tags, f"{path}: non-tag columns are dictionary-typed: {schema}"
    file_tags = sorted(n for n in schema.names if n in known_tags)
    for name in file_tags:
        assert schema.field(name).type == pa.dictionary(pa.int32(), pa.string()), f"{path}: tag {name} is {schema.field(name).type}"
    assert schema.field("time").type == pa.timestamp("ns"), f"{path}: time is {schema.field('time').type}"

    table = pf.read()
    table = table.set_column(schema.get_field_index("time"), "time", table.column("time").cast(pa.int64()))
    rows = normalise_parquet_rows(table.to_pylist())
    times = [r["time"] for r in rows]
    assert min(times) == listed["min_time"] and max(times) == listed["max_time"], (
        f"{path}: time range {min(times)}..{max(times)}, listed {listed['min_time']}..{listed['max_time']}"
    )
    assert {utc_day(t) for t in times} == {listed["partition"]}, f"{path}: rows outside partition {listed['partition']}"

    leaf_names = [md.schema.column(i).name for i in range(md.num_columns)]
    sort_names = [leaf_names[c.column_index] for c in md.row_group(0).sorting_columns or []]
    assert sorted(sort_names[:-1]) == file_tags and sort_names[-1:] == ["time"], (
        f"{path}: sorted by {sort_names}, expected every tag of the file ({file_tags}) then time"
    )
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        sorting = rg.sorting_columns
        assert sorting, f"{path}: row group {g} has no sorting_columns"
        assert [leaf_names[c.column_index] for c in sorting] == sort_names, (
            f"{path}: row group {g} sorted by {[leaf_names[c.column_index] for c in sorting]}, expected {sort_names}"
        )
        assert not any(c.descending for c in sorting), f"{path}: descending sort columns {sorting}"
        for c in range(rg.num_columns):
            col = rg.column(c)
            name = col.path_in_schema
            assert col.compression == "ZSTD", f"{path}: column {name} is {col.compression}, not ZSTD"
            assert col.is_stats_set and col.statistics is not None, f"{path}: column {name} has no statistics"
            if col.statistics.null_count < col.num_values:
                assert col.statistics.has_min_max, f"{path}: column {name} statistics have no min/max"
            assert col.has_column_index and col.has_offset_index, f"{path}: column {name} has no page index"
            if name in known_tags:
                assert col.has_dictionary_page and any("DICTIONARY" in e for e in col.encodings), (
                    f"{path}: tag {name} is not dictionary-encoded: {col.encodings}"
                )
    nulls_first = md.row_group(0).sorting_columns[0].nulls_first
    keys = [row_key_fn(sort_names[:-1], nulls_first)(r) for r in rows]
    for i in range(1, len(keys)):
        assert keys[i - 1] < keys[i], (
            f"{path}: rows {i - 1} and {i} are {'duplicates' if keys[i - 1] == keys[i] else 'out of order'}: "
            f"{keys[i - 1]} then {keys[i]}"
        )
    return rows


def normalise_parquet_rows(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if v is not None} for r in rows]


def check_objects(deployment: Deployment, db: str, files: list[dict], model: Model,
                  exact_union: bool = True) -> dict[str, list[dict]]:
    """Reads every listed object and checks its layout; with `exact_union` (every key was
    written once) the files of each table together hold exactly the model's rows."""
    by_table: dict[str, list[dict]] = {}
    for f in files:
        rows = read_parquet_object(deployment.objects.read(f["path"]), f, model.tag_names(f["table_name"]))
        by_table.setdefault(f["table_name"], []).extend(rows)
    if exact_union:
        for table in model.tables():
            got = sorted(by_table.get(table, []), key=row_key_fn(model.tag_names(table)))
            want = model.rows(table)
            assert got == want, f"the Parquet files of {table}: " + describe_difference(got, want, model.tag_names(table))
    return by_table


def set_flag(server: Server, flag: str, value: str) -> None:
    """Changes (or adds) `flag value` in the arguments of the server's next start."""
    args = server.extra_args
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]


# -- the contract ------------------------------------------------------------------------------


def time_queries(lo: int, hi: int) -> dict[str, str]:
    """Queries over `lo <= time < hi` whose answers the model predicts."""
    where = f"time >= {sql_time(lo)} AND time < {sql_time(hi)}"
    return {
        "rows": f"SELECT * FROM cpu WHERE {where}",
        "per_host": (
            "SELECT hostname, count(*) AS n, min(usage_user) AS lo, max(usage_user) AS hi, "
            f"sum(usage_idle) AS idle FROM cpu WHERE {where} GROUP BY hostname ORDER BY hostname"
        ),
        "mem_sparse": (
            "SELECT count(*) AS n, count(swap_used) AS swaps, count(status) AS high, count(service) AS with_service "
            f"FROM mem WHERE {where}"
        ),
    }


def expected_time_queries(model: Model, lo: int, hi: int) -> dict[str, Any]:
    rows = model.rows("cpu", lambda r: lo <= r["time"] < hi)
    per_host = []
    for host in sorted({r["hostname"] for r in rows}):
        mine = [r for r in rows if r["hostname"] == host]
        per_host.append({
            "hostname": host,
            "n": len(mine),
            "lo": min(r["usage_user"] for r in mine),
            "hi": max(r["usage_user"] for r in mine),
            "idle": pytest.approx(math.fsum(r["usage_idle"] for r in mine), rel=1e-9),
        })
    mem = model.rows("mem", lambda r: lo <= r["time"] < hi)
    return {
        "rows": rows,
        "per_host": per_host,
        "mem_sparse": [{
            "n": len(mem),
            "swaps": sum("swap_used" in r for r in mem),
            "high": sum("status" in r for r in mem),
            "with_service": sum("service" in r for r in mem),
        }],
    }


def assert_time_queries(server: Server, db: str, model: Model, lo: int, hi: int, when: str) -> None:
    expected = expected_time_queries(model, lo, hi)
    for name, sql in time_queries(lo, hi).items():
        got = query(server, db, sql)
        if name == "rows":
            got = sorted(normalise(got), key=row_key_fn(model.tag_names("cpu")))
            assert got == expected[name], f"{when}, {sql}: " + describe_difference(got, expected[name], model.tag_names("cpu"))
        else:
            assert got == expected[name], f"{when}, {sql}"


class PersistenceContract:
    """Tests every object store backend passes; subclasses provide the `launch` fixture."""

    @pytest.fixture
    def launch(self) -> Callable[..., Deployment]:
        raise NotImplementedError("a backend's test class provides `launch`")

    def test_buffered_rows_become_sorted_parquet_objects_listed_in_system_parquet_files(self, launch, db):
        d = launch("--persist-interval", PERSIST_SOON)
        points = tsbs()
        model = Model().apply(points)
        write_points(d.server, db, points)
        before = snapshot(d.server, db, model)
        assert_matches_model(d.server, db, model, "as written")

        files = wait_for_persisted(d.server, db, model.counts())
        assert persisted_rows(files) == Counter(model.counts()), f"each row is persisted once: {files}"
        assert {(f["table_name"], f["partition"]) for f in files} == {
            (t, day) for t in ("cpu", "mem") for day in (DAY1, DAY2)
        }, "one or more files per partition: (table, UTC day)"
        check_listing(d, db, files, model.tables())
        check_objects(d, db, files, model)

        assert snapshot(d.server, db, model) == before, "query results changed when the rows were persisted"

    def test_restart_changes_no_result_and_writes_no_new_file(self, launch, db):
        d = launch("--persist-interval", PERSIST_SOON)
        points = tsbs(hosts=3, hours=4, seed=1)
        model = Model().apply(points)
        write_points(d.server, db, points)
        files = wait_for_persisted(d.server, db, model.counts())
        before = snapshot(d.server, db, model)

        # SIGKILL: the WAL still holds the persisted entries; replay must not bring them back
        # as new rows. Then SIGTERM: graceful shutdown would persist anything replayed.
        d.server.kill()
        d.server.restart()
        assert snapshot(d.server, db, model) == before, "results changed across a SIGKILL restart"
        assert d.server.terminate() == 0, d.server.log_tail()
        d.server.restart()
        assert snapshot(d.server, db, model) == before, "results changed across a SIGTERM restart"
        assert parquet_files(d.server, db) == files, "a restart with nothing new to persist changed the files"
        assert_matches_model(d.server, db, model, "after restarts")

    def test_writes_after_persistence_are_unioned_without_duplicates(self, launch, db):
        d = launch("--persist-interval", PERSIST_SOON)
        first = tsbs(hosts=3, hours=3, seed=2)
        model = Model().apply(first)
        write_points(d.server, db, first)
        wait_for_persisted(d.server, db, model.counts())

        # The next three hours, and a client's retry of a tenth of what was persisted.
        later = tsbs(hosts=3, start_ns=START_NS + 3 * HOUR, hours=3, seed=3)
        resent = first[::10]
        second = later + resent
        model.apply(second)
        write_points(d.server, db, second)
        assert_matches_model(d.server, db, model, "with the second batch in the buffer")

        expected_files = Counter(rows_per_table(first)) + Counter(rows_per_table(second))
        files = wait_for_persisted(d.server, db, expected_files)
        assert_matches_model(d.server, db, model, "with both batches persisted")
        check_listing(d, db, files, model.tables())
        check_objects(d, db, files, model, exact_union=False)
        d.server.restart()
        assert_matches_model(d.server, db, model, "after a restart")

    def test_same_key_before_and_after_persist_resolves_to_newer_fields(self, launch, db):
        d = launch("--persist-interval", PERSIST_SOON)
        t = utc_ns(f"{DAY1}T12:00:00")

        def write(body: str) -> None:
            expect_status(write_lp(d.server, db, body, precision="nanosecond"), 204)

        write(f'm,host=a,dc=x f1=1,f2=2,s="old" {t}\nm,host=b,dc=x f1=5 {t}\n')
        wait_for_persisted(d.server, db, {"m": 2})

        write(f"m,host=a,dc=x f1=10 {t}\n")  # overwrites f1, keeps f2 and s
        write(f"m,host=a,dc=x f3=3i {t}\n")  # a new field on the same key
        a = {"host": "a", "dc": "x", "f1": 10.0, "f2": 2.0, "s": "old", "f3": 3, "time": t}
        b = {"host": "b", "dc": "x", "f1": 5.0, "time": t}
        superseded = {"f1": [1.0], "f2": []}  # older values of a's fields

        def check(when: str) -> None:
            rows = normalise(query(d.server, db, "SELECT * FROM m ORDER BY host"))
            assert rows == [a, b], when
            # A filter on a field sees only the resolved row, never an older version.
            assert query(d.server, db, "SELECT host FROM m WHERE f1 < 5") == [], when
            for name, values in superseded.items():
                for value in values:
                    assert query(d.server, db, f"SELECT host FROM m WHERE {name} = {value}") == [], f"{when}: {name} = {value}"
            assert query(d.server, db, f"SELECT host FROM m WHERE f2 = {a['f2']}") == [{"host": "a"}], when
            assert query(d.server, db, "SELECT count(*) AS n FROM m") == [{"n": 2}], when
            assert query(d.server, db, f"SELECT host, f1 FROM m WHERE time >= {sql_time(t)} ORDER BY host") == [
                {"host": "a", "f1": a["f1"]},
                {"host": "b", "f1": 5.0},
            ], when

        check("newer version in the buffer, older in Parquet")
        wait_for_persisted(d.server, db, {"m": 3})  # the merged newer row in a second file
        check("both versions persisted in different files")

        write(f"m,host=a,dc=x f2=20 {t}\n")
        superseded["f2"].append(a["f2"])
        a["f2"] = 20.0
        check("a third version in the buffer")
        d.server.kill()
        d.server.restart()
        check("after a SIGKILL restart (third version replayed from the WAL)")
        assert d.server.terminate() == 0
        d.server.restart()
        check("after a SIGTERM restart (third version persisted on shutdown)")

    def test_time_filtered_queries_span_buffer_and_parquet(self, launch, db):
        d = launch("--persist-interval", PERSIST_SOON)
        points = tsbs(hosts=4, hours=6, seed=4)
        boundary = utc_ns(f"{DAY2}T01:00:00")
        persisted = [p for p in points if p.time_ns < boundary]
        model = Model().apply(persisted)
        write_points(d.server, db, persisted)
        files = wait_for_persisted(d.server, db, model.counts())

        # Keep the rest in the buffer: a persist interval no test outlives.
        assert d.server.terminate() == 0
        set_flag(d.server, "--persist-interval", PERSIST_NEVER)
        d.server.start()
        # Newer usage_user for persisted keys around midnight: marked by being >= 1000.
        around_midnight = [p for p in persisted if p.table == "cpu" and p.time_ns >= MIDNIGHT_NS - HOUR and p.time_ns % (15 * MINUTE) == 0]
        overwrites = overwrite(around_midnight, lambda p: {"usage_user": 1000.0 + p.fields["usage_user"]})
        buffered = [p for p in points if p.time_ns >= boundary] + overwrites
        model.apply(buffered)
        write_points(d.server, db, buffered)
        assert parquet_files(d.server, db) == files, "nothing is persisted before the interval"

        ranges = {
            "Parquet only": (START_NS + 30 * MINUTE, START_NS + 2 * HOUR),
            "buffer only": (boundary + 30 * MINUTE, boundary + 2 * HOUR),
            "across midnight and into the buffer": (MIDNIGHT_NS - 90 * MINUTE, boundary + 30 * MINUTE),
            "overwritten keys": (MIDNIGHT_NS - HOUR, boundary),
            "one instant": (boundary, boundary + 1),
            "everything": (START_NS, START_NS + 6 * HOUR),
        }
        n_over = len(overwrites)
        assert n_over > 0

        def check(when: str) -> None:
            assert_matches_model(d.server, db, model, when)
            for name, (lo, hi) in ranges.items():
                assert_time_queries(d.server, db, model, lo, hi, f"{when}, {name}")
            hours = Counter(r["time"] // HOUR * HOUR for r in model.rows("cpu"))
            got = query(d.server, db, "SELECT date_bin(INTERVAL '1 hour', time) AS hour, count(*) AS n FROM cpu GROUP BY hour ORDER BY hour")
            assert [(ts_ns(r["hour"]), r["n"]) for r in got] == sorted(hours.items()), when
            for host in ("host_0", "host_3"):
                mine = model.rows("cpu", lambda r: r["hostname"] == host)
                last = query(d.server, db, f"SELECT usage_user, time FROM cpu WHERE hostname = '{host}' ORDER BY time DESC LIMIT 1")
                assert normalise(last) == [{"usage_user": mine[-1]["usage_user"], "time": mine[-1]["time"]}], when
                first = query(d.server, db, f"SELECT usage_user, time FROM cpu WHERE hostname = '{host}' ORDER BY time ASC LIMIT 1")
                assert normalise(first) == [{"usage_user": mine[0]["usage_user"], "time": mine[0]["time"]}], when
            # Field filters apply to the newest version of each key only.
            assert query(d.server, db, "SELECT count(*) AS n FROM cpu WHERE usage_user >= 1000") == [{"n": n_over}], when
            rest = model.count("cpu") - n_over
            assert query(d.server, db, "SELECT count(*) AS n FROM cpu WHERE usage_user < 1000") == [{"n": rest}], when

        check("Parquet up to 01:00, buffer after")
        assert d.server.terminate() == 0  # persists the buffer
        d.server.start()
        check("all persisted")

    def test_graceful_shutdown_persists_every_buffered_row(self, launch, db):
        d = launch("--persist-interval", PERSIST_NEVER)
        points = tsbs(hosts=3, hours=6, seed=5)
        model = Model().apply(points)
        write_points(d.server, db, points)
        assert parquet_files(d.server, db) == [], "nothing is due before the interval"
        before = snapshot(d.server, db, model)

        assert d.server.terminate() == 0, d.server.log_tail()
        # With the server down, the objects are there, holding every row.
        stored = d.objects.list(f"{db}/")
        assert stored and all(re.fullmatch(PARQUET_KEY_RE.format(db=re.escape(db)), k) for k in stored), stored
        rows = Counter()
        for key in stored:
            rows[key.split("/")[1]] += pq.ParquetFile(io.BytesIO(d.objects.read(key))).metadata.num_rows
        assert rows == Counter(model.counts()), f"objects after shutdown: {stored}"

        d.server.start()
        files = parquet_files(d.server, db)
        assert persisted_rows(files) == Counter(model.counts()), files
        check_listing(d, db, files, model.tables())
        check_objects(d, db, files, model)
        assert snapshot(d.server, db, model) == before
        # The WAL replays none of the persisted rows: a second shutdown has nothing to persist.
        assert d.server.terminate() == 0
        d.server.start()
        assert parquet_files(d.server, db) == files
        assert snapshot(d.server, db, model) == before
