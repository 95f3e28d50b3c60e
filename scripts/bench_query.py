#!/usr/bin/env python3
"""Query benchmark: the five TSBS cpu-only queries over Tributary's persisted Parquet, with
DuckDB over one Parquet copy of the same data measured side by side in the same run.

Run through scripts/bench-query.sh, which finds the binary and prepares .venv. Steps:

1. Start a release server on a data directory (`--persist-interval 10s --object-store file`),
   load the 100-host x 24 h data set with `tributary bench write`, wait until
   `system.parquet_files` holds all 864,000 rows, then stop the server with SIGTERM (which
   persists anything still buffered) and start it again, so the queries read Parquet only.
   `--data-dir DIR` reuses a directory that is already loaded.

   The persist interval decides the file layout the queries read. With the default 10 s the
   load (1-3 s) ends before the first persist and the day becomes one file. A short interval
   (`--persist-interval 1s`) cuts the load into several files whose time ranges can overlap
   (four connections write out of order), and overlapping files are deduplicated at query
   time: a different, slower workload, and one that changes from run to run.
   Then, unless `--ingest-rounds 0`, load the same data set into fresh servers, interleaved:
   with persistence running through the load (`--persist-interval 200ms`) and without
   (`1h`), and report both rates (the issue: ingest must not drop while persistence runs).
2. Report disk bytes (catalog's sum of `size_bytes` and the bytes under `objects/`) and bytes
   per value against the issue's peers.
3. Export `SELECT * FROM cpu` from the server as Parquet and let DuckDB rewrite it sorted by
   (hostname, time) into one file in DuckDB's default layout (snappy, 122,880-row row
   groups): the DuckDB reference reads exactly the server's data.
4. Each query: 1 warm-up then N runs (default 5), median and min of client wall time, over
   HTTP (`format=parquet`, and `format=json` for reference) against Tributary, and in-process
   against DuckDB. Both engines' results are compared row by row (floats to a relative
   1e-9), so the two sides cannot silently do different work. The fastest correct
   Tributary formulation is also run over Arrow Flight (served on the HTTP port): a plain
   DoGet with the JSON ticket the influxdb3 clients send, on one open FlightClient, client
   wall time to the last batch (`read_all()`), its rows compared with DuckDB's too
   (`--no-flight` skips it). The issue's Flight target: no slower than HTTP format=parquet.
5. Print the table with the issue's peer numbers and the target (best of the four), the
   server's peak RSS, and optionally write everything as JSON (`--json-out`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

try:
    import pyarrow.flight as flight
except ImportError:  # a pyarrow built without Flight: only --no-flight runs
    flight = None
import pyarrow.compute as pc
import pyarrow.parquet as pq

DB = "bench"  # `tributary bench write`'s default database
TABLE = "cpu"
HOSTS = 100
HOURS = 24
ROWS = HOSTS * HOURS * 360  # one row per host every 10 s
FIELDS = [
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
]
VALUES = ROWS * len(FIELDS)

# The data set starts at TSBS's default 2016-01-01T00:00:00Z (bench.rs START_NS). Query windows
# are fixed offsets from it, so every run asks the same questions.
START_HOUR = "2016-01-01T{:02d}:00:00"


def ts(hour: int) -> str:
    return START_HOUR.format(hour)


# Issue 4, "Performance": warm median of 5 on this machine, ms.
# (InfluxDB 1.6, VictoriaMetrics, DuckDB over one Parquet file, DataFusion over one Parquet file)
PEERS = {
    "single-groupby-1-1-1": (0.5, 0.6, 3.1, 6.9),
    "cpu-max-all-8": (16.4, 6.0, 20.2, 81.2),
    "double-groupby-1": (48.6, 6.4, 9.4, 11.1),
    "lastpoint": (39.6, 51.9, 23.6, 104.3),
    "high-cpu-all": (487.0, 168.0, 23.2, 30.3),
}
PEER_NAMES = ("InfluxDB 1.6", "VictoriaMetrics", "DuckDB (issue)", "DataFusion (issue)")
# Disk for this data set (issue 4): VictoriaMetrics 57.6 MB, InfluxDB 102 MB, target <= 60 MB.
DISK_PEERS_MB = {"VictoriaMetrics": 57.6, "InfluxDB": 102.0}
DISK_TARGET_MB = 60.0


# ------------------------------------------------------------------------------------------
# The queries. Each has one Tributary (DataFusion) text and one DuckDB text per formulation;
# `lastpoint` has several formulations on each side and the fastest one counts.


@dataclass
class Query:
    name: str
    description: str
    tributary: dict[str, str]  # variant -> SQL for Tributary (DataFusion dialect)
    duckdb: dict[str, str]  # variant -> SQL for DuckDB over the `cpu` view
    expected_rows: int | None = None  # known from the data set's shape; None = data-dependent


def build_queries(columns: list[str]) -> list[Query]:
    """The five TSBS queries. `columns` is the table's column order as the server returns it
    for `SELECT *` (tags, time, fields), so every lastpoint formulation returns the same shape."""
    col_list = ", ".join(f'"{c}"' for c in columns)
    c_col_list = ", ".join(f'c."{c}"' for c in columns)
    one_host = "host_42"
    eight_hosts = [f"host_{i}" for i in range(3, 96, 12)]  # host_3, host_15, ..., host_87
    assert len(eight_hosts) == 8
    in_list = ", ".join(f"'{h}'" for h in eight_hosts)

    def window(lo: int, hi: int, dialect: str) -> str:
        if dialect == "duckdb":
            return f"time >= TIMESTAMP '{ts(lo)}' AND time < TIMESTAMP '{ts(hi)}'"
        return f"time >= '{ts(lo)}Z' AND time < '{ts(hi)}Z'"

    max_all = ", ".join(f"max({f}) AS max_{f}" for f in FIELDS)
    queries = [
        Query(
            "single-groupby-1-1-1",
            f"max usage_user per minute, {one_host}, {ts(7)}..{ts(8)}",
            {
                "date_bin": f"SELECT date_bin(INTERVAL '1 minute', time) AS minute, "
                f"max(usage_user) AS max_usage_user FROM cpu "
                f"WHERE hostname = '{one_host}' AND {window(7, 8, 'df')} "
                f"GROUP BY minute ORDER BY minute",
            },
            {
                "time_bucket": f"SELECT time_bucket(INTERVAL '1 minute', time) AS minute, "
                f"max(usage_user) AS max_usage_user FROM cpu "
                f"WHERE hostname = '{one_host}' AND {window(7, 8, 'duckdb')} "
                f"GROUP BY minute ORDER BY minute",
            },
            expected_rows=60,
        ),
        Query(
            "cpu-max-all-8",
            f"max of the 10 fields per hour, 8 hosts (host_3, host_15 .. host_87), {ts(4)}..{ts(12)}",
            {
                "date_bin": f"SELECT date_bin(INTERVAL '1 hour', time) AS hour, {max_all} FROM cpu "
                f"WHERE hostname IN ({in_list}) AND {window(4, 12, 'df')} "
                f"GROUP BY hour ORDER BY hour",
            },
            {
                "time_bucket": f"SELECT time_bucket(INTERVAL '1 hour', time) AS hour, {max_all} FROM cpu "
                f"WHERE hostname IN ({in_list}) AND {window(4, 12, 'duckdb')} "
                f"GROUP BY hour ORDER BY hour",
            },
            expected_rows=8,
        ),
        Query(
            "double-groupby-1",
            f"mean usage_user per host per hour, all hosts, {ts(6)}..{ts(18)}",
            {
                "date_bin": f"SELECT hostname, date_bin(INTERVAL '1 hour', time) AS hour, "
                f"avg(usage_user) AS mean_usage_user FROM cpu WHERE {window(6, 18, 'df')} "
                f"GROUP BY hostname, hour ORDER BY hostname, hour",
            },
            {
                "time_bucket": f"SELECT hostname, time_bucket(INTERVAL '1 hour', time) AS hour, "
                f"avg(usage_user) AS mean_usage_user FROM cpu WHERE {window(6, 18, 'duckdb')} "
                f"GROUP BY hostname, hour ORDER BY hostname, hour",
            },
            expected_rows=HOSTS * 12,
        ),
        Query(
            "lastpoint",
            "last row of every host",
            {
                "distinct_on": "SELECT DISTINCT ON (hostname) * FROM cpu ORDER BY hostname, time DESC",
                "row_number": f"SELECT {col_list} FROM (SELECT *, row_number() OVER "
                f"(PARTITION BY hostname ORDER BY time DESC) AS rn FROM cpu) WHERE rn = 1",
                "join_max_time": f"SELECT {c_col_list} FROM cpu c JOIN "
                f"(SELECT hostname, max(time) AS time FROM cpu GROUP BY hostname) l "
                f"ON c.hostname = l.hostname AND c.time = l.time",
                # The same join with the 100-row aggregate on the left: DataFusion builds its
                # hash table from the left input, so this keeps the 864k rows on the probe side.
                "join_max_time_small_build": f"SELECT {c_col_list} FROM "
                f"(SELECT hostname, max(time) AS time FROM cpu GROUP BY hostname) l JOIN cpu c "
                f"ON c.hostname = l.hostname AND c.time = l.time",
                # Tributary's last-value path (InfluxDB 3's last_cache): the latest row of
                # every series from the files' sort order. Errors on builds without it.
                "last_cache": f"SELECT {col_list} FROM last_cache('cpu')",
                "in_max_time": "SELECT * FROM cpu WHERE (hostname, time) IN "
                "(SELECT hostname, max(time) FROM cpu GROUP BY hostname)",
                "last_value": "SELECT "
                + ", ".join(
                    '"hostname"'
                    if c == "hostname"
                    else "max(time) AS time"
                    if c == "time"
                    else f'last_value("{c}" ORDER BY time) AS "{c}"'
                    for c in columns
                )
                + " FROM cpu GROUP BY hostname",
            },
            {
                "distinct_on": "SELECT DISTINCT ON (hostname) * FROM cpu ORDER BY hostname, time DESC",
                "qualify": "SELECT * FROM cpu QUALIFY row_number() OVER "
                "(PARTITION BY hostname ORDER BY time DESC) = 1",
                "join_max_time": f"SELECT {c_col_list} FROM cpu c JOIN "
                f"(SELECT hostname, max(time) AS time FROM cpu GROUP BY hostname) l "
                f"ON c.hostname = l.hostname AND c.time = l.time",
                "arg_max": "SELECT "
                + ", ".join(
                    '"hostname"'
                    if c == "hostname"
                    else "max(time) AS time"
                    if c == "time"
                    else f'arg_max("{c}", time) AS "{c}"'
                    for c in columns
                )
                + " FROM cpu GROUP BY hostname",
            },
            expected_rows=HOSTS,
        ),
        Query(
            "high-cpu-all",
            f"rows with usage_user > 90, all hosts, {ts(6)}..{ts(18)}",
            {"filter": f"SELECT * FROM cpu WHERE usage_user > 90 AND {window(6, 18, 'df')}"},
            {"filter": f"SELECT * FROM cpu WHERE usage_user > 90 AND {window(6, 18, 'duckdb')}"},
        ),
    ]
    return queries


# ------------------------------------------------------------------------------------------
# The server


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Server:
    """One `tributary serve` process on a data directory, bound to a free port."""

    def __init__(self, binary: str, data_dir: str, log_path: str, extra: list[str]):
        addr_file = os.path.join(data_dir, "http-addr")
        if os.path.exists(addr_file):
            os.remove(addr_file)  # a stale address from an earlier run
        self.log_path = log_path
        self.log_file = open(log_path, "ab")
        cmd = [
            binary,
            "serve",
            "--data-dir",
            data_dir,
            "--http-bind",
            "127.0.0.1:0",
            "--log-filter",
            "warn",
            *extra,
        ]
        log(f"$ {' '.join(cmd)}")
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.proc.returncode} at start; log: {log_path}\n"
                    + tail(log_path)
                )
            if os.path.exists(addr_file) and os.path.getsize(addr_file) > 0:
                with open(addr_file) as f:
                    self.addr = f.read().strip()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not bind within 120 s; log: {log_path}")
            time.sleep(0.05)
        self.client = Http(self.addr)
        while True:  # the address is written once bound; wait until it answers too
            try:
                status, _, _ = self.client.get("/health")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer /health; log: {log_path}")
            time.sleep(0.05)

    def peak_rss_mib(self) -> float | None:
        return proc_status_kib(self.pid, "VmHWM")

    def rss_mib(self) -> float | None:
        return proc_status_kib(self.pid, "VmRSS")

    def stop(self, timeout: float = 300) -> float:
        """SIGTERM (graceful: persists what is buffered) and wait; returns seconds taken."""
        self.client.close()
        t = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"the server did not stop within {timeout} s of SIGTERM")
        self.log_file.close()
        if self.proc.returncode not in (0, -signal.SIGTERM):
            log(f"warning: the server exited with {self.proc.returncode}; log: {self.log_path}")
        return time.monotonic() - t

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def stop_quietly(server: Server | None) -> None:
    if server is None:
        return
    try:
        server.stop()
    except Exception as e:  # noqa: BLE001 - report and go on cleaning up
        log(f"stopping the server: {e}")
        server.kill()


def proc_status_kib(pid: int, key: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def tail(path: str, n: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


class Http:
    """A keep-alive HTTP/1.1 connection (http.client: far less client overhead than requests,
    which matters for sub-millisecond queries)."""

    def __init__(self, addr: str):
        host, port = addr.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> tuple[int, bytes, str]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
            try:
                self.conn.request("GET", path)
                resp = self.conn.getresponse()
                body = resp.read()
                return resp.status, body, resp.getheader("content-type", "")
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def query_path(sql: str, fmt: str) -> str:
    return "/api/v3/query_sql?" + urllib.parse.urlencode({"db": DB, "q": sql, "format": fmt})


def sql_json(client: Http, sql: str) -> list[dict]:
    status, body, _ = client.get(query_path(sql, "json"))
    if status != 200:
        raise QueryFailed(f"HTTP {status}: {body[:2000].decode(errors='replace')}")
    return json.loads(body)


class QueryFailed(Exception):
    pass


# ------------------------------------------------------------------------------------------
# Load and persistence


def parquet_files(client: Http) -> list[dict]:
    rows = sql_json(client, "SELECT * FROM system.parquet_files")
    return [r for r in rows if r.get("table_name") == TABLE]


def load(binary: str, server: Server, connections: int, hosts: int = HOSTS, hours: int = HOURS) -> dict:
    cmd = [
        binary,
        "bench",
        "write",
        "--url",
        f"http://{server.addr}",
        "--db",
        DB,
        "--hosts",
        str(hosts),
        "--hours",
        str(hours),
        "--connections",
        str(connections),
        "--server-pid",
        str(server.pid),
    ]
    log(f"$ {' '.join(cmd)}")
    t = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench write failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    log(out.stderr.strip())
    print(out.stdout.rstrip())
    report: dict = {"seconds": time.monotonic() - t, "output": out.stdout}
    m = re.search(r"lines/s:\s+(\d+)", out.stdout)
    if m:
        report["lines_per_s"] = int(m.group(1))
    return report


def ingest_while_persisting(binary: str, work: str, connections: int, rounds: int) -> dict:
    """Load the data set into fresh servers, interleaved: with persistence running through
    the load (`--persist-interval 200ms`: every partition is persisted again and again) and
    without (`1h`: nothing persists until shutdown). Reports each side's lines/s and how many
    files the persisting side wrote before its load ended."""
    sides = {"persisting": "200ms", "not_persisting": "1h"}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(rounds):
        for name, interval in sides.items():
            data_dir = os.path.join(work, f"ingest-{name}-{r}")
            server = Server(
                binary, data_dir, os.path.join(work, f"server-ingest-{name}.log"),
                ["--persist-interval", interval, "--object-store", "file"],
            )
            try:
                report = load(binary, server, connections)
                report["files_at_load_end"] = len(parquet_files(server.client))
                report["server_peak_rss_mib"] = server.peak_rss_mib()
                runs[name].append(report)
            finally:
                server.kill()
                shutil.rmtree(data_dir, ignore_errors=True)
    summary: dict = {"rounds": rounds, "runs": runs}
    for name in sides:
        rates = [x["lines_per_s"] for x in runs[name] if "lines_per_s" in x]
        summary[f"{name}_lines_per_s"] = statistics.median(rates) if rates else None
    p, n = summary["persisting_lines_per_s"], summary["not_persisting_lines_per_s"]
    summary["ratio"] = p / n if p and n else None
    return summary


def wait_persisted(server: Server, timeout: float, expected: int = ROWS) -> tuple[bool, float, list[dict]]:
    """Poll system.parquet_files until its row counts for `cpu` add up to `expected` rows."""
    t = time.monotonic()
    last_report = 0.0
    files: list[dict] = []
    while True:
        files = parquet_files(server.client)
        rows = sum(int(f["row_count"]) for f in files)
        waited = time.monotonic() - t
        if rows >= expected:
            if rows > expected:
                log(f"note: system.parquet_files counts {rows} rows for {expected} written")
            return True, waited, files
        if waited > timeout:
            return False, waited, files
        if waited - last_report >= 5:
            log(f"  persisted {rows}/{expected} rows in {len(files)} files after {waited:.0f} s")
            last_report = waited
        time.sleep(0.25)


def disk_usage(data_dir: str) -> dict:
    objects = os.path.join(data_dir, "objects")
    apparent = allocated = count = 0
    for root, _, names in os.walk(objects):
        for n in names:
            st = os.stat(os.path.join(root, n))
            apparent += st.st_size
            allocated += st.st_blocks * 512
            count += 1

    def size_of(path: str) -> int:
        total = 0
        if os.path.isfile(path):
            return os.path.getsize(path)
        for root, _, names in os.walk(path):
            total += sum(os.path.getsize(os.path.join(root, n)) for n in names)
        return total

    return {
        "objects_files": count,
        "objects_bytes": apparent,
        "objects_allocated_bytes": allocated,
        "wal_bytes": size_of(os.path.join(data_dir, "wal")),
        "catalog_bytes": sum(
            size_of(os.path.join(data_dir, n))
            for n in os.listdir(data_dir)
            if n.startswith("catalog.sqlite")
        ),
    }


# ------------------------------------------------------------------------------------------
# Measurement and comparison


def median_min(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), min(samples)


@dataclass
class Measured:
    samples_ms: list[float] = field(default_factory=list)
    rows: int | None = None
    result: pa.Table | None = None
    error: str | None = None
    bytes: int | None = None

    def median(self) -> float | None:
        return statistics.median(self.samples_ms) if self.samples_ms else None

    def min(self) -> float | None:
        return min(self.samples_ms) if self.samples_ms else None

    def summary(self) -> dict:
        return {
            "median_ms": self.median(),
            "min_ms": self.min(),
            "samples_ms": self.samples_ms,
            "rows": self.rows,
            "response_bytes": self.bytes,
            "error": self.error,
        }


def run_tributary(
    client: Http, sql: str, fmt: str, warmup: int, runs: int, new_connection: bool = False
) -> Measured:
    """Client wall time from sending the request to the last byte of the body. By default
    over one keep-alive connection; `new_connection` opens one per request (connect time
    included), which shows what a server without TCP_NODELAY costs keep-alive clients."""
    m = Measured()
    path = query_path(sql, fmt)
    body = b""
    try:
        for i in range(warmup + runs):
            t = time.perf_counter()
            if new_connection:
                client.close()
            status, body, _ = client.get(path)
            elapsed = (time.perf_counter() - t) * 1e3
            if status != 200:
                raise QueryFailed(f"HTTP {status}: {body[:2000].decode(errors='replace')}")
            if i >= warmup:
                m.samples_ms.append(elapsed)
    except (QueryFailed, OSError, http.client.HTTPException) as e:
        m.error = str(e)
        m.samples_ms = []
        return m
    m.bytes = len(body)
    if fmt == "parquet":
        m.result = pq.read_table(pa.BufferReader(body))
        m.rows = m.result.num_rows
    elif fmt == "json":
        m.rows = len(json.loads(body))
    return m


def flight_client(addr: str):
    """A Flight client on the server's HTTP address (gRPC is served on the same port); the
    channel stays open between calls, like the keep-alive HTTP connection."""
    if flight is None:
        raise RuntimeError("this pyarrow has no pyarrow.flight (use --no-flight)")
    return flight.FlightClient(f"grpc://{addr}")


def flight_ticket(sql: str, db: str = DB):
    """The JSON ticket influxdb3-python sends for a plain DoGet (no GetFlightInfo first)."""
    return flight.Ticket(json.dumps({"database": db, "sql_query": sql, "query_type": "sql"}).encode())


def run_flight(client, sql: str, warmup: int, runs: int) -> Measured:
    """Client wall time from DoGet to the last record batch (`read_all()`), on one open
    FlightClient. `bytes` is the result's Arrow size (Table.nbytes), not bytes on the wire."""
    m = Measured()
    ticket = flight_ticket(sql)
    table = None
    try:
        for i in range(warmup + runs):
            t = time.perf_counter()
            table = client.do_get(ticket).read_all()
            elapsed = (time.perf_counter() - t) * 1e3
            if i >= warmup:
                m.samples_ms.append(elapsed)
    except (flight.FlightError, pa.ArrowException, OSError) as e:
        m.error = f"{type(e).__name__}: {e}"
        m.samples_ms = []
        return m
    m.result = table
    m.rows = table.num_rows
    m.bytes = table.nbytes
    return m


def duck_arrow(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    rel = con.sql(sql)
    if hasattr(rel, "to_arrow_table"):
        return rel.to_arrow_table()
    return rel.arrow()


def run_duckdb(con: duckdb.DuckDBPyConnection, sql: str, warmup: int, runs: int) -> Measured:
    m = Measured()
    table = None
    try:
        for i in range(warmup + runs):
            t = time.perf_counter()
            table = duck_arrow(con, sql)
            elapsed = (time.perf_counter() - t) * 1e3
            if i >= warmup:
                m.samples_ms.append(elapsed)
    except duckdb.Error as e:
        m.error = str(e)
        m.samples_ms = []
        return m
    m.result = table
    m.rows = table.num_rows
    return m


def normalize(table: pa.Table) -> tuple[list[str], list[tuple]]:
    """Rows as tuples of comparable Python values: dictionaries decoded, timestamps as
    integer nanoseconds, floats kept; sorted by every non-float column, then the floats."""
    cols = []
    kinds = []
    for col in table.columns:
        t = col.type
        if pa.types.is_dictionary(t):
            col = col.cast(t.value_type)
            t = t.value_type
        if pa.types.is_timestamp(t):
            col = col.cast(pa.timestamp("ns")).cast(pa.int64())
            kinds.append("key")
        elif pa.types.is_floating(t):
            kinds.append("float")
        else:
            if pa.types.is_large_string(t) or pa.types.is_string_view(t):
                col = col.cast(pa.string())
            kinds.append("key")
        cols.append(col.to_pylist())
    rows = list(zip(*cols)) if cols else []
    key_idx = [i for i, k in enumerate(kinds) if k == "key"]
    rows.sort(key=lambda r: (tuple(r[i] for i in key_idx), tuple(str(v) for v in r)))
    return kinds, rows


def compare(a: pa.Table, b: pa.Table, rel_tol: float = 1e-9) -> str | None:
    """None if the two results hold the same rows (floats to rel_tol), else what differs."""
    if a.num_columns != b.num_columns:
        return f"{a.num_columns} columns vs {b.num_columns} ({a.column_names} vs {b.column_names})"
    if a.num_rows != b.num_rows:
        return f"{a.num_rows} rows vs {b.num_rows}"
    ka, ra = normalize(a)
    kb, rb = normalize(b)
    if ka != kb:
        return f"column kinds differ: {ka} vs {kb}"
    for n, (x, y) in enumerate(zip(ra, rb)):
        for i, (u, v) in enumerate(zip(x, y)):
            if ka[i] == "float" and u is not None and v is not None:
                if not math.isclose(u, v, rel_tol=rel_tol, abs_tol=1e-12):
                    return f"row {n} column {a.column_names[i]}: {u!r} vs {v!r}"
            elif u != v:
                return f"row {n} column {a.column_names[i]}: {u!r} vs {v!r}"
    return None


def explain_analyze(client: Http, sql: str) -> str:
    try:
        rows = sql_json(client, "EXPLAIN ANALYZE " + sql)
    except (QueryFailed, OSError) as e:
        return f"(EXPLAIN ANALYZE failed: {e})"
    return "\n".join(f"{r.get('plan_type', '')}:\n{r.get('plan', '')}" for r in rows)


# ------------------------------------------------------------------------------------------


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True, help="the tributary binary (release build)")
    ap.add_argument(
        "--data-dir",
        help="server data directory; one that is already loaded is reused (no load), "
        "an empty or missing one is loaded and kept",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary work/data directory")
    ap.add_argument("--runs", type=int, default=5, help="measured runs per query (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up runs per query (default 1)")
    ap.add_argument("--json-out", help="write the results as JSON to this file")
    ap.add_argument("--connections", type=int, default=4, help="bench write connections (default 4)")
    ap.add_argument(
        "--persist-interval",
        default="10s",
        help="server --persist-interval while loading (default 10s: the day persists as one file; "
        "1s gives several, possibly overlapping files)",
    )
    ap.add_argument(
        "--persist-timeout",
        type=float,
        default=300,
        help="seconds to wait for system.parquet_files to cover the data set before "
        "restarting the server anyway (SIGTERM persists the rest); default 300",
    )
    ap.add_argument(
        "--no-restart",
        action="store_true",
        help="query the server that loaded the data instead of restarting it after persistence",
    )
    ap.add_argument(
        "--no-persist",
        action="store_true",
        help="development only: for a build without persistence; queries read the buffer",
    )
    ap.add_argument(
        "--ingest-rounds",
        type=int,
        default=2,
        help="rounds of the ingest-while-persisting comparison (each loads the data set twice "
        "into fresh servers: persisting every 200 ms and not persisting); 0 skips it; default 2",
    )
    ap.add_argument("--no-json-format", action="store_true", help="skip the format=json runs")
    ap.add_argument("--no-flight", action="store_true", help="skip the Arrow Flight (DoGet) runs")
    ap.add_argument(
        "--explain",
        choices=("none", "missed", "all"),
        default="missed",
        help="print EXPLAIN ANALYZE for queries that missed the target (default), all, or none",
    )
    ap.add_argument("--server-arg", action="append", default=[], help="extra `serve` flag (repeatable)")
    args = ap.parse_args()

    if not args.no_persist:
        help_text = subprocess.run([args.binary, "serve", "--help"], capture_output=True, text=True).stdout
        if "--persist-interval" not in help_text:
            log(f"{args.binary} has no `serve --persist-interval`: a build without persistence (see --no-persist)")
            return 2
    work = tempfile.mkdtemp(prefix="tributary-bench-query-")
    data_dir = args.data_dir or os.path.join(work, "data")
    reuse = os.path.exists(os.path.join(data_dir, "catalog.sqlite"))
    os.makedirs(data_dir, exist_ok=True)
    results: dict = {
        "binary": args.binary,
        "data_dir": data_dir,
        "runs": args.runs,
        "warmup": args.warmup,
        "duckdb_version": duckdb.__version__,
        "data_set": {"hosts": HOSTS, "hours": HOURS, "rows": ROWS, "values": VALUES},
        # Other work on this 2-core machine skews every number: recorded so a reader can tell.
        "loadavg_at_start": os.getloadavg(),
    }
    persist_flags = [] if args.no_persist else ["--persist-interval", args.persist_interval, "--object-store", "file"]
    server_flags = persist_flags + args.server_arg
    server: Server | None = None
    fclient = None
    failures: list[str] = []
    try:
        # -- load -----------------------------------------------------------------------------
        if reuse:
            log(f"reusing the loaded data directory {data_dir}")
        else:
            log(f"loading {ROWS} rows into {data_dir}")
            server = Server(args.binary, data_dir, os.path.join(work, "server-load.log"), server_flags)
            results["load"] = load(args.binary, server, args.connections)
            if not args.no_persist:
                ok, waited, files = wait_persisted(server, args.persist_timeout)
                results["load"]["persisted_all_rows"] = ok
                results["load"]["persist_wait_s"] = waited
                results["load"]["files_when_persisted"] = len(files)
                log(
                    f"persisted: {'all' if ok else 'NOT all'} {ROWS} rows in {len(files)} files, "
                    f"{waited:.1f} s after the load ended"
                )
            results["load"]["server_peak_rss_mib"] = server.peak_rss_mib()
            if not args.no_restart:
                took = server.stop()
                results["load"]["sigterm_stop_s"] = took
                log(f"server stopped by SIGTERM in {took:.1f} s")
                server = None
        if args.ingest_rounds > 0 and not args.no_persist:
            log(f"ingest with and without persistence running, {args.ingest_rounds} rounds")
            results["ingest_while_persisting"] = ingest_while_persisting(
                args.binary, work, args.connections, args.ingest_rounds
            )
        if server is None:
            server = Server(args.binary, data_dir, os.path.join(work, "server-query.log"), server_flags)
        client = server.client

        # -- what is stored -------------------------------------------------------------------
        count = sql_json(client, "SELECT count(*) AS n FROM cpu")[0]["n"]
        if count != ROWS:
            failures.append(f"SELECT count(*) FROM cpu = {count}, expected {ROWS}")
        disk = disk_usage(data_dir)
        if not args.no_persist:
            files = parquet_files(client)
            file_rows = sum(int(f["row_count"]) for f in files)
            file_bytes = sum(int(f["size_bytes"]) for f in files)
            disk.update(
                {
                    "parquet_files": len(files),
                    "parquet_rows": file_rows,
                    "parquet_size_bytes": file_bytes,
                    "parquet_levels": sorted({int(f["level"]) for f in files}),
                    "partitions": sorted({str(f["partition"]) for f in files}),
                    "bytes_per_value": file_bytes / VALUES,
                    "target_met": file_bytes / 1e6 <= DISK_TARGET_MB,
                }
            )
            if file_rows != ROWS:
                failures.append(f"system.parquet_files counts {file_rows} rows, expected {ROWS}")
        results["disk"] = disk
        results["server_rss_mib_at_start"] = server.rss_mib()

        # -- the DuckDB copy: the server's own rows, sorted, in one file -----------------------
        # DuckDB's default COPY layout (snappy, 122,880-row row groups). It reproduces the
        # issue's DuckDB numbers on this machine; zstd makes DuckDB 1.5-2.5x slower here.
        t = time.perf_counter()
        status, body, _ = client.get(query_path("SELECT * FROM cpu", "parquet"))
        if status != 200:
            raise RuntimeError(f"exporting cpu failed: HTTP {status}: {body[:2000]!r}")
        export_s = time.perf_counter() - t
        export_path = os.path.join(work, "export.parquet")
        with open(export_path, "wb") as f:
            f.write(body)
        del body
        copy_path = os.path.join(work, "cpu.parquet")
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{export_path}') ORDER BY hostname, time) "
            f"TO '{copy_path}' (FORMAT parquet)"
        )
        os.remove(export_path)
        con.execute(f"CREATE VIEW cpu AS SELECT * FROM read_parquet('{copy_path}')")
        copy_rows = con.execute("SELECT count(*) FROM cpu").fetchone()[0]
        if copy_rows != ROWS:
            failures.append(f"the DuckDB copy has {copy_rows} rows, expected {ROWS}")
        columns = [r[0] for r in con.execute("DESCRIBE cpu").fetchall()]
        meta = pq.ParquetFile(copy_path).metadata
        results["duckdb_copy"] = {
            "export_seconds": export_s,
            "bytes": os.path.getsize(copy_path),
            "row_groups": meta.num_row_groups,
            "rows": copy_rows,
        }
        log(
            f"exported {copy_rows} rows in {export_s:.2f} s; DuckDB copy {copy_path}: "
            f"{os.path.getsize(copy_path) / 1e6:.1f} MB, {meta.num_row_groups} row groups"
        )

        # -- the floor: an HTTP round trip that does no work ----------------------------------
        floor = run_tributary(client, "SELECT 1", "parquet", args.warmup, args.runs)
        results["http_floor_select_1"] = floor.summary()
        floor_new = run_tributary(client, "SELECT 1", "parquet", args.warmup, args.runs, new_connection=True)
        results["http_floor_select_1_new_connection"] = floor_new.summary()
        if not args.no_flight:
            fclient = flight_client(server.addr)
            ff = run_flight(fclient, "SELECT 1", args.warmup, args.runs)
            results["flight_floor_select_1"] = ff.summary()
            if ff.error:
                failures.append(f"Flight DoGet SELECT 1 failed (no Flight runs): {ff.error[:500]}")
                log(f"Flight floor failed, skipping the Flight runs: {ff.error[:500]}")
                fclient.close()
                fclient = None
            else:
                log(f"Flight floor (SELECT 1): {fmt_ms(ff.median())} ms (min {fmt_ms(ff.min())})")

        # -- the queries ----------------------------------------------------------------------
        queries = build_queries(columns)
        results["queries"] = {}
        for q in queries:
            log(f"{q.name}: {q.description}")
            entry: dict = {
                "description": q.description,
                "tributary": {},
                "tributary_new_connection": {},
                "tributary_json": {},
                "duckdb": {},
            }
            trib: dict[str, Measured] = {}
            for variant, sql in q.tributary.items():
                m = run_tributary(client, sql, "parquet", args.warmup, args.runs)
                trib[variant] = m
                entry["tributary"][variant] = {"sql": sql, **m.summary(), "server_vmhwm_mib_after": server.peak_rss_mib()}
                log(
                    f"  tributary {variant:>14}: "
                    + (f"{fmt_ms(m.median())} ms, {m.rows} rows" if not m.error else f"ERROR {m.error[:300]}")
                    + f" (server VmHWM {server.peak_rss_mib() or 0:.0f} MiB)"
                )
            duck: dict[str, Measured] = {}
            for variant, sql in q.duckdb.items():
                m = run_duckdb(con, sql, args.warmup, args.runs)
                duck[variant] = m
                entry["duckdb"][variant] = {"sql": sql, **m.summary()}
                log(f"  duckdb    {variant:>14}: " + (f"{fmt_ms(m.median())} ms, {m.rows} rows" if not m.error else f"ERROR {m.error[:300]}"))

            ok_duck = {k: v for k, v in duck.items() if v.error is None}
            ok_trib = {k: v for k, v in trib.items() if v.error is None}
            best_duck = min(ok_duck, key=lambda k: ok_duck[k].median()) if ok_duck else None
            reference = None
            if ok_duck:
                reference_name = next(iter(ok_duck))
                reference = ok_duck[reference_name].result
                for k, v in ok_duck.items():
                    diff = compare(v.result, reference)
                    if diff:
                        failures.append(f"{q.name}: DuckDB {k} differs from DuckDB {reference_name}: {diff}")
            checks = {}
            for k, v in ok_trib.items():
                diff = compare(v.result, reference) if reference is not None else "no DuckDB result"
                checks[k] = diff or "same rows"
                if diff:
                    failures.append(f"{q.name}: Tributary {k} differs from DuckDB: {diff}")
                    log(f"  CHECK FAILED tributary {k}: {diff}")
            if q.expected_rows is not None and reference is not None and reference.num_rows != q.expected_rows:
                failures.append(f"{q.name}: DuckDB returned {reference.num_rows} rows, expected {q.expected_rows}")
            entry["check"] = checks
            # The fastest correct Tributary formulation counts.
            correct = {k: v for k, v in ok_trib.items() if checks.get(k) == "same rows"}
            best_trib = min(correct, key=lambda k: correct[k].median()) if correct else None
            entry["tributary_best_variant"] = best_trib
            entry["duckdb_best_variant"] = best_duck
            # The same formulation over Arrow Flight (JSON-ticket DoGet), checked like HTTP.
            flight_med = flight_min = None
            flight_ok = False
            if fclient is not None and best_trib:
                mf = run_flight(fclient, q.tributary[best_trib], args.warmup, args.runs)
                if mf.error:
                    fcheck = f"error: {mf.error}"
                    failures.append(f"{q.name}: Flight DoGet failed: {mf.error[:500]}")
                else:
                    fdiff = compare(mf.result, reference) if reference is not None else "no DuckDB result"
                    fcheck = fdiff or "same rows"
                    flight_ok = fdiff is None
                    if fdiff:
                        failures.append(f"{q.name}: Tributary over Flight differs from DuckDB: {fdiff}")
                    flight_med, flight_min = mf.median(), mf.min()
                fsum = mf.summary()
                fsum["arrow_bytes"] = fsum.pop("response_bytes")
                entry["tributary_flight"] = {"variant": best_trib, **fsum, "check": fcheck}
                log(
                    f"  flight    {best_trib:>14}: "
                    + (f"{fmt_ms(flight_med)} ms, {mf.rows} rows ({fcheck})" if not mf.error else f"ERROR {mf.error[:300]}")
                )
            new_med = None
            if best_trib:
                mn = run_tributary(client, q.tributary[best_trib], "parquet", args.warmup, args.runs, new_connection=True)
                entry["tributary_new_connection"] = mn.summary()
                new_med = mn.median()
            if best_trib and not args.no_json_format:
                mj = run_tributary(client, q.tributary[best_trib], "json", args.warmup, args.runs)
                entry["tributary_json"] = mj.summary()
                if mj.error is None and mj.rows != trib[best_trib].rows:
                    failures.append(f"{q.name}: format=json returned {mj.rows} rows, parquet {trib[best_trib].rows}")
            peers = PEERS[q.name]
            target = min(peers)
            med = trib[best_trib].median() if best_trib else None
            entry.update(
                {
                    "rows": trib[best_trib].rows if best_trib else None,
                    "tributary_median_ms": med,
                    "tributary_min_ms": trib[best_trib].min() if best_trib else None,
                    "duckdb_median_ms": duck[best_duck].median() if best_duck else None,
                    "duckdb_min_ms": duck[best_duck].min() if best_duck else None,
                    "peers_ms": dict(zip(PEER_NAMES, peers)),
                    "target_ms": target,
                    "target_met": med is not None and med <= target,
                    "tributary_new_connection_median_ms": new_med,
                    "target_met_new_connection": new_med is not None and new_med <= target,
                    "in_run_duckdb_beaten": med is not None and best_duck is not None and med <= duck[best_duck].median(),
                    "tributary_flight_median_ms": flight_med,
                    "tributary_flight_min_ms": flight_min,
                    # The Flight target: no slower than HTTP format=parquet (medians;
                    # a Flight result that differs from DuckDB does not count).
                    "flight_le_http_parquet": (
                        flight_ok and med is not None and flight_med is not None and flight_med <= med
                    )
                    if fclient is not None
                    else None,
                }
            )
            if args.explain == "all" or (args.explain == "missed" and not entry["target_met"]):
                sql = q.tributary[best_trib] if best_trib else next(iter(q.tributary.values()))
                entry["explain_analyze"] = explain_analyze(client, sql)
            results["queries"][q.name] = entry
        results["server_peak_rss_mib"] = server.peak_rss_mib()
        results["server_rss_mib_at_end"] = server.rss_mib()
    except BaseException:
        stop_quietly(server)
        server = None
        for name in ("server-load.log", "server-query.log"):
            path = os.path.join(work, name)
            if os.path.exists(path) and os.path.getsize(path):
                log(f"--- {path} (last lines):\n{tail(path)}")
        if args.keep:
            log(f"kept: work directory {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        if fclient is not None:
            fclient.close()
        stop_quietly(server)
    results["failures"] = failures
    results["loadavg_at_end"] = os.getloadavg()

    print_report(results, args)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2, default=str)
        log(f"wrote {args.json_out}")
    if args.keep:
        log(f"kept: work directory {work} (DuckDB copy, server logs), data directory {data_dir}")
    else:
        shutil.rmtree(work, ignore_errors=True)  # holds the data directory unless --data-dir
        if args.data_dir:
            log(f"data directory kept: {data_dir}")
    return 1 if failures else 0


def print_report(r: dict, args: argparse.Namespace) -> None:
    print()
    load = r.get("load")
    if load:
        line = f"load: {load.get('lines_per_s', '?')} lines/s, server peak RSS during load+persist {load.get('server_peak_rss_mib') or 0:.0f} MiB"
        if "persist_wait_s" in load:
            line += f"; all rows in Parquet {load['persist_wait_s']:.1f} s after the load" if load["persisted_all_rows"] else "; NOT all rows persisted before the timeout"
        if "sigterm_stop_s" in load:
            line += f"; SIGTERM stop {load['sigterm_stop_s']:.1f} s"
        print(line)
    ing = r.get("ingest_while_persisting")
    if ing and ing.get("ratio") is not None:
        files = [x.get("files_at_load_end", 0) for x in ing["runs"]["persisting"]]
        print(
            f"ingest while persisting (--persist-interval 200ms, {files} files written during the loads): "
            f"{ing['persisting_lines_per_s'] / 1e6:.2f} M lines/s vs {ing['not_persisting_lines_per_s'] / 1e6:.2f} M "
            f"without persistence (1h), median of {ing['rounds']} interleaved rounds: {ing['ratio']:.2f}x"
        )
    d = r.get("disk", {})
    if "parquet_size_bytes" in d:
        b = d["parquet_size_bytes"]
        print(
            f"disk: {d['parquet_files']} Parquet files (levels {d['parquet_levels']}, partitions {d['partitions']}), "
            f"{d['parquet_rows']} rows, size_bytes sum {b / 1e6:.1f} MB = {d['bytes_per_value']:.2f} bytes/value "
            f"({VALUES / 1e6:.2f} M values); objects/ {d['objects_bytes'] / 1e6:.1f} MB in {d['objects_files']} files "
            f"({d['objects_allocated_bytes'] / 1e6:.1f} MB allocated); WAL {d['wal_bytes'] / 1e6:.1f} MB, catalog {d['catalog_bytes'] / 1e6:.2f} MB"
        )
        print(
            f"      vs VictoriaMetrics {DISK_PEERS_MB['VictoriaMetrics']} MB ({DISK_PEERS_MB['VictoriaMetrics'] * 1e6 / VALUES:.2f} B/value), "
            f"InfluxDB {DISK_PEERS_MB['InfluxDB']} MB ({DISK_PEERS_MB['InfluxDB'] * 1e6 / VALUES:.2f} B/value); "
            f"target <= {DISK_TARGET_MB} MB: {'met' if d['target_met'] else 'MISSED'}"
        )
    elif d:
        print(f"disk: objects/ {d['objects_bytes'] / 1e6:.1f} MB in {d['objects_files']} files; WAL {d['wal_bytes'] / 1e6:.1f} MB (no persistence)")
    c = r.get("duckdb_copy")
    if c:
        print(f"DuckDB reference: DuckDB {r['duckdb_version']} in-process over one Parquet copy ({c['bytes'] / 1e6:.1f} MB, DuckDB's default COPY layout: snappy, {c['row_groups']} row groups, sorted by hostname, time)")
    fl = r.get("http_floor_select_1")
    if fl and fl.get("median_ms") is not None:
        print(f"HTTP floor (SELECT 1, format=parquet): keep-alive median {fmt_ms(fl['median_ms'])} ms (min {fmt_ms(fl['min_ms'])})", end="")
        fn = r.get("http_floor_select_1_new_connection") or {}
        print(f", new connection per request median {fmt_ms(fn.get('median_ms'))} ms (min {fmt_ms(fn.get('min_ms'))})")
        if fl["median_ms"] > 20 and fn.get("median_ms") is not None and fn["median_ms"] < fl["median_ms"] / 4:
            print(
                "  WARNING: keep-alive responses wait ~40 ms: the server does not set TCP_NODELAY, so the last "
                "small write of each response waits for the client's delayed ACK (Nagle)"
            )
    ffl = r.get("flight_floor_select_1")
    if ffl:
        if ffl.get("median_ms") is not None:
            print(f"Flight floor (SELECT 1, JSON-ticket DoGet, one open FlightClient): median {fmt_ms(ffl['median_ms'])} ms (min {fmt_ms(ffl['min_ms'])})")
        else:
            print(f"Flight floor (SELECT 1): ERROR {(ffl.get('error') or '')[:300]}")
    qs = r.get("queries", {})
    if qs:
        print()
        print(
            f"warm: {r['warmup']} warm-up then {r['runs']} runs; median (min) ms of client wall time; Tributary over HTTP "
            f"format=parquet on one keep-alive connection (\"new conn\": a new connection per request, connect included; "
            f"\"json\": format=json, keep-alive; \"Flight\": the same SQL as a JSON-ticket DoGet on one open "
            f"FlightClient, to the last batch)"
        )
        with_flight = any(e.get("flight_le_http_parquet") is not None for e in qs.values())
        flight_hdr = ["Flight", "Flight<=parquet"] if with_flight else []
        hdr = ["query", "rows", "Tributary", *flight_hdr, "Tributary new conn", "Tributary json", "DuckDB (this run)", "InfluxDB 1.6", "VictoriaM.", "DuckDB (issue)", "DataFusion (issue)", "target", "met", "met (new conn)"]
        table = []
        for name, e in qs.items():
            peers = e["peers_ms"]
            j = e.get("tributary_json") or {}
            trib = f"{fmt_ms(e['tributary_median_ms'])} ({fmt_ms(e['tributary_min_ms'])})" if e["tributary_median_ms"] is not None else "FAILED"
            flight_cols = []
            if with_flight:
                fm = e.get("tributary_flight_median_ms")
                fcheck = (e.get("tributary_flight") or {}).get("check", "not run")
                if fm is None:
                    flight_cols = ["FAILED" if e.get("tributary_flight") else "-", "-"]
                else:
                    ratio = f" x{fm / e['tributary_median_ms']:.2f}" if e["tributary_median_ms"] else ""
                    flight_cols = [
                        f"{fmt_ms(fm)} ({fmt_ms(e['tributary_flight_min_ms'])})" + ("" if fcheck == "same rows" else " WRONG"),
                        ("yes" if e["flight_le_http_parquet"] else "NO") + ratio,
                    ]
            table.append(
                [
                    name + (f" [{e['tributary_best_variant']}]" if len(e["tributary"]) > 1 and e["tributary_best_variant"] else ""),
                    str(e["rows"] if e["rows"] is not None else "-"),
                    trib,
                    *flight_cols,
                    fmt_ms(e.get("tributary_new_connection_median_ms")),
                    fmt_ms(j.get("median_ms")),
                    f"{fmt_ms(e['duckdb_median_ms'])} ({fmt_ms(e['duckdb_min_ms'])})",
                    *[fmt_ms(v) for v in peers.values()],
                    fmt_ms(e["target_ms"]),
                    "met" if e["target_met"] else "MISSED",
                    "met" if e.get("target_met_new_connection") else "MISSED",
                ]
            )
        widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(hdr)]
        print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(hdr, widths))))
        for row in table:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        met = sum(1 for e in qs.values() if e["target_met"])
        met_new = sum(1 for e in qs.values() if e.get("target_met_new_connection"))
        beat = sum(1 for e in qs.values() if e["in_run_duckdb_beaten"])
        print(
            f"target (best of the issue's four) met for {met}/{len(qs)} queries ({met_new}/{len(qs)} with a new connection "
            f"per request); in-run DuckDB matched or beaten for {beat}/{len(qs)}"
        )
        if with_flight:
            fle = sum(1 for e in qs.values() if e.get("flight_le_http_parquet"))
            print(
                f"Flight no slower than HTTP format=parquet (median, correct rows) for {fle}/{len(qs)} queries "
                f"(the issue's target: all five); \"xR\" is Flight median / HTTP parquet median"
            )
        variants = [(n, e) for n, e in qs.items() if len(e["tributary"]) > 1 or len(e["duckdb"]) > 1]
        for name, e in variants:
            print(f"{name} formulations (median ms):")
            for side in ("tributary", "duckdb"):
                parts = []
                for k, v in e[side].items():
                    parts.append(f"{k} {fmt_ms(v['median_ms'])}" if v["error"] is None else f"{k} error: {v['error'].splitlines()[0][:160]}")
                chk = e.get("check", {}) if side == "tributary" else {}
                bad = [k for k, v in chk.items() if v != "same rows"]
                print(f"  {side}: " + "; ".join(parts) + (f" (results differ: {bad})" if bad else ""))
    la, lb = r.get("loadavg_at_start"), r.get("loadavg_at_end")
    if la and lb:
        print(f"machine load average (1/5/15 min): {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f} at start, {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f} at end ({os.cpu_count()} cores)")
        if la[0] > 0.5:
            print("  WARNING: the machine was busy in the minute before the start (other work, or an earlier run): numbers may be skewed")
    if r.get("server_peak_rss_mib") is not None:
        print(
            f"server peak RSS (VmHWM) of the query server: {r['server_peak_rss_mib']:.0f} MiB "
            f"(RSS at start {r.get('server_rss_mib_at_start') or 0:.0f} MiB, at end {r.get('server_rss_mib_at_end') or 0:.0f} MiB)"
        )
    for name, e in qs.items():
        if e.get("explain_analyze"):
            print(f"\nEXPLAIN ANALYZE {name} ({e['tributary_best_variant'] or 'first formulation'}):")
            print(e["explain_analyze"])
    if r["failures"]:
        print("\nFAILURES:")
        for f in r["failures"]:
            print(f"  {f}")


if __name__ == "__main__":
    sys.exit(main())
