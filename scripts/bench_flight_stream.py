#!/usr/bin/env python3
"""Flight streaming benchmark: how fast one `SELECT * FROM cpu` over ~10 M persisted rows
streams to a local Arrow Flight client, and how much memory the server needs for it.

Run through scripts/bench-flight-stream.sh, which finds the binary and prepares .venv. Steps:

1. Start a release server on a fresh data directory (`--persist-interval 10s --object-store
   file`, as scripts/bench_query.py does; `--buffer-mem-limit 4GiB` while loading only, as
   the load outruns persistence), load `--hosts` x `--hours` of the TSBS cpu data set with
   `tributary bench write` (default 1,000 hosts x 28 h = 10,080,000 rows), wait
   until `SELECT count(*) FROM cpu` (HTTP) counts every row and `system.parquet_files`
   covers them all, then stop the server with SIGTERM and start it again (`--no-restart`
   keeps the loading server), so the stream reads Parquet only and the server's VmHWM
   covers the streams alone. `--data-dir DIR` reuses a directory that is already loaded.
2. Wait until the machine's 1-minute load average is at most `--max-load` (default 1.5:
   the load phase itself raises it), then stream `SELECT * FROM cpu` with a plain Flight
   DoGet (the JSON ticket influxdb3-python sends) on one FlightClient, `--runs` times
   (default 3). The client reads batch by batch and keeps nothing: it counts rows and sums
   `RecordBatch.nbytes` (the Arrow bytes, dictionaries included). Throughput = Arrow bytes
   / client wall time from DoGet to the last batch (1 MB = 1e6 bytes). A thread samples
   the server's VmRSS every 50 ms during each stream; VmHWM is read after the runs (it
   includes the load phase when the server was not restarted).
3. For reference, the same query over HTTP `format=parquet` (the client reads the body in
   1 MiB pieces and keeps only its tail, to count rows from the Parquet footer): response
   bytes, seconds, MB/s of Parquet, rows/s. `--no-http` skips it.
4. Print the table against the issue's targets (>= 200 MB/s with the server's RSS under
   500 MiB) and optionally write everything as JSON (`--json-out`).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_query import (  # noqa: E402 - after the path is set
    QueryFailed,
    Server,
    flight_client,
    flight_ticket,
    load,
    log,
    parquet_files,
    proc_status_kib,
    query_path,
    sql_json,
    stop_quietly,
    tail,
    wait_persisted,
)

ROWS_PER_HOST_HOUR = 360  # one row per host every 10 s
SQL = "SELECT * FROM cpu"
TARGET_MB_S = 200.0
TARGET_RSS_MIB = 500.0


class RssSampler:
    """Samples a process's VmRSS every `interval` seconds in a thread while in `with`."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid = pid
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        v = proc_status_kib(self.pid, "VmRSS")
        if v is not None:
            self.samples.append(v)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "RssSampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def summary(self) -> dict:
        s = self.samples
        return {
            "rss_start_mib": s[0] if s else None,
            "rss_peak_mib": max(s) if s else None,
            "rss_end_mib": s[-1] if s else None,
            "rss_samples": len(s),
        }


def stream_flight(client, sql: str, db: str, pid: int) -> dict:
    """One DoGet, read batch by batch; nothing is kept but counts."""
    ticket = flight_ticket(sql, db)
    rows = arrow_bytes = batches = 0
    first_batch_s = None
    schema = None
    with RssSampler(pid) as rss:
        t = time.perf_counter()
        reader = client.do_get(ticket)
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            batch = chunk.data
            if batch is None:
                continue
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - t
                schema = batch.schema
            rows += batch.num_rows
            arrow_bytes += batch.nbytes
            batches += 1
            del batch, chunk
        seconds = time.perf_counter() - t
    return {
        "rows": rows,
        "arrow_bytes": arrow_bytes,
        "batches": batches,
        "seconds": seconds,
        "first_batch_s": first_batch_s,
        "mb_per_s": arrow_bytes / 1e6 / seconds,
        "rows_per_s": rows / seconds,
        "schema": str(schema) if schema is not None else None,
        **rss.summary(),
    }


def parquet_rows_from_tail(pieces: collections.deque) -> int | None:
    """Row count from a Parquet file's footer, given the last pieces of the file."""
    tail_bytes = b"".join(pieces)
    if len(tail_bytes) < 12 or tail_bytes[-4:] != b"PAR1":
        return None
    n = int.from_bytes(tail_bytes[-8:-4], "little")
    if n + 8 > len(tail_bytes):
        return None
    try:
        meta = pq.read_metadata(pa.BufferReader(b"PAR1" + tail_bytes[-(n + 8):]))
    except (pa.ArrowException, OSError):
        return None
    return meta.num_rows


def stream_http_parquet(addr: str, sql: str, pid: int, keep_tail: int = 16 << 20) -> dict:
    """One GET format=parquet on a new connection, the body read in 1 MiB pieces; only the
    last `keep_tail` bytes are kept (for the footer's row count)."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    pieces: collections.deque = collections.deque()
    kept = 0
    n = 0
    first_byte_s = None
    try:
        with RssSampler(pid) as rss:
            t = time.perf_counter()
            conn.request("GET", query_path(sql, "parquet"))
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {resp.read(2000).decode(errors='replace')}")
            while True:
                piece = resp.read(1 << 20)
                if not piece:
                    break
                if first_byte_s is None:
                    first_byte_s = time.perf_counter() - t
                n += len(piece)
                pieces.append(piece)
                kept += len(piece)
                while len(pieces) > 1 and kept - len(pieces[0]) >= keep_tail:
                    kept -= len(pieces.popleft())
            seconds = time.perf_counter() - t
    finally:
        conn.close()
    return {
        "rows": parquet_rows_from_tail(pieces),
        "response_bytes": n,
        "seconds": seconds,
        "first_byte_s": first_byte_s,
        "mb_per_s": n / 1e6 / seconds,
        **rss.summary(),
    }


def wait_quiet(max_load: float, timeout: float) -> tuple[bool, tuple[float, float, float]]:
    """Wait until the 1-minute load average is at most `max_load` (or `timeout` passes)."""
    t = time.monotonic()
    last = 0.0
    while True:
        la = os.getloadavg()
        if la[0] <= max_load:
            return True, la
        waited = time.monotonic() - t
        if waited > timeout:
            log(f"warning: load average still {la[0]:.2f} after {waited:.0f} s; measuring anyway")
            return False, la
        if waited - last >= 15 or last == 0.0:
            log(f"  waiting for load average {la[0]:.2f} <= {max_load} ({waited:.0f} s)")
            last = waited or 0.001
        time.sleep(5)


def wait_count(server: Server, expected: int, timeout: float) -> tuple[int | None, float, str | None]:
    """Poll `SELECT count(*) FROM cpu` until it reaches `expected`. A failing count is retried
    (over a large write buffer it can need more than the query memory pool); returns the
    last count, seconds waited and the first error."""
    t = time.monotonic()
    n = None
    first_error = None
    while True:
        try:
            n = int(sql_json(server.client, "SELECT count(*) AS n FROM cpu")[0]["n"])
        except QueryFailed as e:
            if first_error is None:
                first_error = str(e)
                log(f"  SELECT count(*) FROM cpu failed (retrying): {first_error[:300]}")
        waited = time.monotonic() - t
        if (n is not None and n >= expected) or waited > timeout:
            return n, waited, first_error
        time.sleep(2)


def fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True, help="the tributary binary (release build)")
    ap.add_argument(
        "--data-dir",
        help="server data directory; one that is already loaded is reused (no load), "
        "an empty or missing one is loaded and kept",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary work/data directory")
    ap.add_argument("--hosts", type=int, default=1000, help="bench write --hosts (default 1000)")
    ap.add_argument("--hours", type=int, default=28, help="bench write --hours (default 28: 10,080,000 rows)")
    ap.add_argument("--connections", type=int, default=4, help="bench write connections (default 4)")
    ap.add_argument("--runs", type=int, default=3, help="streams per protocol (default 3)")
    ap.add_argument("--persist-interval", default="10s", help="server --persist-interval (default 10s)")
    ap.add_argument("--persist-timeout", type=float, default=600, help="seconds to wait for persistence (default 600)")
    ap.add_argument("--no-restart", action="store_true", help="stream from the server that loaded the data")
    ap.add_argument("--no-http", action="store_true", help="skip the HTTP format=parquet reference streams")
    ap.add_argument("--max-load", type=float, default=1.5, help="wait for this 1-minute load average before measuring (default 1.5)")
    ap.add_argument("--quiet-timeout", type=float, default=600, help="longest wait for --max-load, seconds (default 600)")
    ap.add_argument("--json-out", help="write the results as JSON to this file")
    ap.add_argument("--server-arg", action="append", default=[], help="extra `serve` flag (repeatable)")
    ap.add_argument(
        "--load-buffer-mem-limit",
        default="4GiB",
        help="`serve --buffer-mem-limit` of the loading server only (default 4GiB: bench write "
        "outruns persistence and the default 1GiB answers 503); '' keeps the server's default",
    )
    ap.add_argument("--db", default="bench", help="database (bench write's default: bench)")
    args = ap.parse_args()

    expected = args.hosts * args.hours * ROWS_PER_HOST_HOUR
    work = tempfile.mkdtemp(prefix="tributary-bench-flight-stream-")
    data_dir = args.data_dir or os.path.join(work, "data")
    reuse = os.path.exists(os.path.join(data_dir, "catalog.sqlite"))
    os.makedirs(data_dir, exist_ok=True)
    server_flags = ["--persist-interval", args.persist_interval, "--object-store", "file", *args.server_arg]
    results: dict = {
        "binary": args.binary,
        "data_dir": data_dir,
        "server_flags": server_flags,
        "sql": SQL,
        "data_set": {"hosts": args.hosts, "hours": args.hours, "rows": expected},
        "runs": args.runs,
        "pyarrow_version": pa.__version__,
        "loadavg_at_start": os.getloadavg(),
    }
    failures: list[str] = []
    server: Server | None = None
    fclient = None
    if args.db != "bench":
        log("note: --db only names the database queried; bench write loads its default (bench)")
    try:
        # -- load -------------------------------------------------------------------------
        if reuse:
            log(f"reusing the loaded data directory {data_dir}")
        else:
            log(f"loading {expected} rows ({args.hosts} hosts x {args.hours} h) into {data_dir}")
            load_flags = server_flags + (
                ["--buffer-mem-limit", args.load_buffer_mem_limit] if args.load_buffer_mem_limit else []
            )
            results["load_server_flags"] = load_flags
            server = Server(args.binary, data_dir, os.path.join(work, "server-load.log"), load_flags)
            ld = load(args.binary, server, args.connections, args.hosts, args.hours)
            ld.pop("output", None)
            # One count right after the load (it reads the write buffer), then persistence,
            # then the count again until it is right.
            try:
                ld["count_after_load"] = int(sql_json(server.client, "SELECT count(*) AS n FROM cpu")[0]["n"])
            except QueryFailed as e:
                ld["count_after_load_error"] = str(e)
                log(f"SELECT count(*) FROM cpu right after the load failed: {str(e)[:400]}")
            ok, pwait, files = wait_persisted(server, args.persist_timeout, expected)
            n, waited, err = wait_count(server, expected, 120)
            ld["count_after_persist"] = n
            if err:
                ld["count_after_persist_first_error"] = err
            if n != expected:
                failures.append(f"after the load SELECT count(*) FROM cpu = {n}, expected {expected}")
            ld.update(
                {
                    "persisted_all_rows": ok,
                    "persist_wait_s": pwait,
                    "parquet_files": len(files),
                    "server_vmhwm_mib": server.peak_rss_mib(),
                    "server_rss_mib_after": server.rss_mib(),
                }
            )
            log(
                f"persisted: {'all' if ok else 'NOT all'} {expected} rows in {len(files)} files, "
                f"{pwait:.1f} s after the load; server VmHWM {ld['server_vmhwm_mib'] or 0:.0f} MiB"
            )
            if not ok:
                failures.append(f"not all rows persisted within {args.persist_timeout} s")
            results["load"] = ld
            if not args.no_restart:
                took = server.stop()
                ld["sigterm_stop_s"] = took
                log(f"server stopped by SIGTERM in {took:.1f} s")
                server = None
        if server is None:
            server = Server(args.binary, data_dir, os.path.join(work, "server-stream.log"), server_flags)
        results["restarted"] = not args.no_restart or reuse
        count = int(sql_json(server.client, "SELECT count(*) AS n FROM cpu")[0]["n"])
        files = parquet_files(server.client)
        results["stored"] = {
            "count": count,
            "parquet_files": len(files),
            "parquet_rows": sum(int(f["row_count"]) for f in files),
            "parquet_bytes": sum(int(f["size_bytes"]) for f in files),
        }
        if count != expected:
            failures.append(f"SELECT count(*) FROM cpu = {count}, expected {expected}")
        log(
            f"stored: {count} rows, {len(files)} Parquet files, "
            f"{results['stored']['parquet_bytes'] / 1e6:.1f} MB"
        )
        server.client.close()  # the streams use their own connections
        results["server_rss_mib_before_streams"] = server.rss_mib()
        results["server_vmhwm_mib_before_streams"] = server.peak_rss_mib()

        # -- Flight -----------------------------------------------------------------------
        fclient = flight_client(server.addr)
        runs = []
        for i in range(args.runs):
            quiet, la = wait_quiet(args.max_load, args.quiet_timeout)
            try:
                r = stream_flight(fclient, SQL, args.db, server.pid)
            except (flight.FlightError, pa.ArrowException, OSError) as e:
                failures.append(f"Flight run {i + 1}: {type(e).__name__}: {e}"[:1000])
                log(f"Flight run {i + 1} failed: {e}")
                runs.append({"error": f"{type(e).__name__}: {e}", "loadavg_before": la})
                continue
            r["loadavg_before"] = la
            r["quiet"] = quiet
            r["server_vmhwm_mib_after"] = server.peak_rss_mib()
            runs.append(r)
            if r["rows"] != expected:
                failures.append(f"Flight run {i + 1} streamed {r['rows']} rows, expected {expected}")
            log(
                f"flight run {i + 1}: {r['rows']} rows, {r['arrow_bytes'] / 1e6:.1f} MB Arrow in "
                f"{r['batches']} batches, {r['seconds']:.2f} s = {r['mb_per_s']:.1f} MB/s "
                f"(first batch {fmt(r['first_batch_s'], '.3f')} s); server RSS peak {fmt(r['rss_peak_mib'], '.0f')} MiB "
                f"(start {fmt(r['rss_start_mib'], '.0f')}, end {fmt(r['rss_end_mib'], '.0f')}); load {la[0]:.2f}"
            )
        results["flight"] = {"runs": runs}
        results["server_vmhwm_mib_after_flight"] = server.peak_rss_mib()
        fclient.close()
        fclient = None

        # -- HTTP format=parquet, for reference -------------------------------------------
        if not args.no_http:
            hruns = []
            for i in range(args.runs):
                quiet, la = wait_quiet(args.max_load, args.quiet_timeout)
                try:
                    r = stream_http_parquet(server.addr, SQL, server.pid)
                except (RuntimeError, OSError, http.client.HTTPException) as e:
                    failures.append(f"HTTP parquet run {i + 1}: {e}"[:1000])
                    log(f"HTTP parquet run {i + 1} failed: {e}")
                    hruns.append({"error": str(e), "loadavg_before": la})
                    continue
                r["loadavg_before"] = la
                r["quiet"] = quiet
                r["rows_per_s"] = r["rows"] / r["seconds"] if r["rows"] else None
                hruns.append(r)
                if r["rows"] != expected:
                    failures.append(f"HTTP parquet run {i + 1}: footer counts {r['rows']} rows, expected {expected}")
                log(
                    f"http parquet run {i + 1}: {r['rows']} rows, {r['response_bytes'] / 1e6:.1f} MB Parquet in "
                    f"{r['seconds']:.2f} s = {r['mb_per_s']:.1f} MB/s (first byte {fmt(r['first_byte_s'], '.3f')} s); "
                    f"server RSS peak {fmt(r['rss_peak_mib'], '.0f')} MiB; load {la[0]:.2f}"
                )
            results["http_parquet"] = {"runs": hruns}
        results["server_vmhwm_mib_at_end"] = server.peak_rss_mib()
        results["server_rss_mib_at_end"] = server.rss_mib()
    except BaseException:
        if fclient is not None:
            fclient.close()
        stop_quietly(server)
        server = None
        for name in ("server-load.log", "server-stream.log"):
            path = os.path.join(work, name)
            if os.path.exists(path) and os.path.getsize(path):
                log(f"--- {path} (last lines):\n{tail(path)}")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        stop_quietly(server)
    results["loadavg_at_end"] = os.getloadavg()
    results["failures"] = failures
    summarize(results)
    print_report(results)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2, default=str)
        log(f"wrote {args.json_out}")
    if args.keep:
        log(f"kept: work directory {work}, data directory {data_dir}")
    else:
        shutil.rmtree(work, ignore_errors=True)
        if args.data_dir:
            log(f"data directory kept: {data_dir}")
    return 1 if failures else 0


def summarize(r: dict) -> None:
    for key in ("flight", "http_parquet"):
        block = r.get(key)
        if not block:
            continue
        ok = [x for x in block["runs"] if "error" not in x]
        if not ok:
            continue
        block["median_mb_per_s"] = statistics.median(x["mb_per_s"] for x in ok)
        block["best_mb_per_s"] = max(x["mb_per_s"] for x in ok)
        block["median_seconds"] = statistics.median(x["seconds"] for x in ok)
        block["rss_peak_mib"] = max(x["rss_peak_mib"] or 0 for x in ok)
    f = r.get("flight", {})
    if "median_mb_per_s" in f:
        f["target_mb_per_s_met"] = f["median_mb_per_s"] >= TARGET_MB_S
        f["target_rss_met"] = f["rss_peak_mib"] < TARGET_RSS_MIB


def print_report(r: dict) -> None:
    print()
    ds = r["data_set"]
    ld = r.get("load")
    if ld:
        print(
            f"load: {ds['rows']} rows ({ds['hosts']} hosts x {ds['hours']} h), {ld.get('lines_per_s', '?')} lines/s; "
            f"all rows in Parquet {ld['persist_wait_s']:.1f} s after the load ({ld['parquet_files']} files); "
            f"server VmHWM during load+persist {ld['server_vmhwm_mib'] or 0:.0f} MiB"
        )
        if ld.get("count_after_load_error"):
            print(f"  NOTE: SELECT count(*) FROM cpu right after the load (rows in the write buffer) failed: {ld['count_after_load_error'][:300]}")
    st = r.get("stored", {})
    if st:
        print(
            f"stored: count(*) {st['count']}, {st['parquet_files']} Parquet files, {st['parquet_rows']} rows, "
            f"{st['parquet_bytes'] / 1e6:.1f} MB; server {'restarted after persistence' if r.get('restarted') else 'NOT restarted (VmHWM includes the load)'}; "
            f"flags {' '.join(r['server_flags'] if r.get('restarted') else r.get('load_server_flags', r['server_flags']))}"
        )
    print(
        f"server RSS before the streams {fmt(r.get('server_rss_mib_before_streams'), '.0f')} MiB "
        f"(VmHWM {fmt(r.get('server_vmhwm_mib_before_streams'), '.0f')} MiB)"
    )
    print()
    print(f"{r['sql']}: client wall time from the request to the last batch/byte; server VmRSS sampled every 50 ms during each run")
    hdr = ["protocol", "run", "rows", "MB", "seconds", "MB/s", "Mrows/s", "first batch s", "RSS start", "RSS peak", "RSS end", "load"]
    table = []
    errors = []
    for key, label, bytes_key in (("flight", "Flight DoGet (Arrow)", "arrow_bytes"), ("http_parquet", "HTTP parquet", "response_bytes")):
        block = r.get(key)
        if not block:
            continue
        for i, x in enumerate(block["runs"], 1):
            if "error" in x:
                table.append([label, str(i), "ERROR"] + ["-"] * (len(hdr) - 4) + [f"{x['loadavg_before'][0]:.2f}"])
                errors.append(f"{label} run {i}: {x['error'][:300]}")
                continue
            table.append(
                [
                    label,
                    str(i),
                    str(x["rows"]),
                    f"{x[bytes_key] / 1e6:.1f}",
                    f"{x['seconds']:.2f}",
                    f"{x['mb_per_s']:.1f}",
                    fmt(x["rows"] / x["seconds"] / 1e6 if x["rows"] else None, ".2f"),
                    fmt(x.get("first_batch_s", x.get("first_byte_s")), ".3f"),
                    fmt(x["rss_start_mib"], ".0f"),
                    fmt(x["rss_peak_mib"], ".0f"),
                    fmt(x["rss_end_mib"], ".0f"),
                    f"{x['loadavg_before'][0]:.2f}",
                ]
            )
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(hdr)]
    print("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(hdr, widths))))
    for row in table:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    for e in errors:
        print(f"  {e}")
    print("  (MB = 1e6 bytes: Arrow bytes (RecordBatch.nbytes) for Flight, Parquet response bytes for HTTP; RSS in MiB)")
    f = r.get("flight", {})
    if "median_mb_per_s" in f:
        print(
            f"Flight: median {f['median_mb_per_s']:.1f} MB/s (best {f['best_mb_per_s']:.1f}), target >= {TARGET_MB_S:.0f} MB/s: "
            f"{'met' if f['target_mb_per_s_met'] else 'MISSED'}; server RSS peak during the streams {f['rss_peak_mib']:.0f} MiB, "
            f"target < {TARGET_RSS_MIB:.0f} MiB: {'met' if f['target_rss_met'] else 'MISSED'}"
        )
    h = r.get("http_parquet", {})
    if "median_mb_per_s" in h:
        print(
            f"HTTP parquet (reference): median {h['median_mb_per_s']:.1f} MB/s of Parquet, {h['median_seconds']:.2f} s; "
            f"server RSS peak {h['rss_peak_mib']:.0f} MiB"
        )
    print(
        f"server VmHWM: {fmt(r.get('server_vmhwm_mib_after_flight'), '.0f')} MiB after the Flight runs, "
        f"{fmt(r.get('server_vmhwm_mib_at_end'), '.0f')} MiB at the end"
        + ("" if r.get("restarted") else " (includes the load phase: the server was not restarted)")
        + f"; RSS at the end {fmt(r.get('server_rss_mib_at_end'), '.0f')} MiB"
    )
    la, lb = r["loadavg_at_start"], r["loadavg_at_end"]
    print(
        f"machine load average (1/5/15 min): {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f} at start, "
        f"{lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f} at end ({os.cpu_count()} cores)"
    )
    if r["failures"]:
        print("\nFAILURES:")
        for x in r["failures"]:
            print(f"  {x}")


if __name__ == "__main__":
    sys.exit(main())
