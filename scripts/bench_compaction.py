#!/usr/bin/env python3
"""Compaction benchmark (issue 6): the TSBS 100-host x 24 h data set written in 100 small
persists, then compacted; the five TSBS queries before and after, against the same data
persisted as a single file, measured in one run.

Run through scripts/bench-compaction.sh, which finds the binary and prepares .venv. Steps:

1. Reference: a server loads the data set with `tributary bench write` (the day persists as
   one file), restarts, and the five queries run over HTTP (`format=parquet`): the
   single-file layout. Its rows are exported (`SELECT * FROM cpu`) as line protocol, cut by
   time into 100 slices.
2. Many files: a second server (`--persist-interval 100ms`, compaction off) gets the slices
   one by one, each waited for until it is a file of its own: 100 level-0 files. Restarted
   (compaction still off), the five queries run again.
3. Compaction: the second server restarts with `--compaction-interval 1s`; once
   `system.compaction_events` shows the partition merged, throughput comes from the events
   (rows in / duration, bytes in / duration: the compactor's own time on its one thread) and
   the server's peak RSS (VmHWM) is read before and after. The queries run a third time in
   that process, and a fourth after a restart: the single-file reference ran on a fresh
   server, so the restarted run is the like-for-like comparison of layouts.
4. Optionally (`--long-ingest SECONDS`) a third server with the default compaction settings
   takes a continuous stream of small writes of current timestamps with `--persist-interval
   1s`; the level-0 file count is sampled every few seconds and must stay bounded.

Targets: after compaction every query within 10 % of the single-file layout; compaction at
>= 1 M rows/s on one core.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_query as bq  # noqa: E402

SLICES = 100
COMPACTION_OFF = ["--compaction-interval", "1h", "--retention-check-interval", "1h"]


def export_line_protocol(client: bq.Http, slices: int) -> list[bytes]:
    """The server's `cpu` rows as line protocol, cut by time into `slices` bodies."""
    status, body, _ = client.get(bq.query_path("SELECT * FROM cpu ORDER BY time", "parquet"))
    if status != 200:
        raise RuntimeError(f"export failed: HTTP {status}: {body[:500]!r}")
    table = pq.read_table(pa.BufferReader(body))
    tags = [f.name for f in table.schema if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type)]
    fields = [f.name for f in table.schema if f.name not in tags and f.name != "time"]
    columns = {name: table.column(name).to_pylist() for name in tags + fields}
    times = table.column("time").cast(pa.int64()).to_pylist()
    lines = []
    for i, t in enumerate(times):
        tagset = ",".join(f"{k}={columns[k][i]}" for k in tags if columns[k][i] is not None)
        fieldset = ",".join(f"{k}={float(columns[k][i])!r}" for k in fields if columns[k][i] is not None)
        lines.append(f"cpu,{tagset} {fieldset} {t}")
    per = -(-len(lines) // slices)
    return ["\n".join(lines[i : i + per]).encode() for i in range(0, len(lines), per)]


def post(client: bq.Http, path: str, body: bytes) -> None:
    conn = bq.http.client.HTTPConnection(client.host, client.port, timeout=600)
    try:
        conn.request("POST", path, body=body)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 204:
            raise RuntimeError(f"POST {path}: HTTP {resp.status}: {data[:500]!r}")
    finally:
        conn.close()


def write_in_persists(server: bq.Server, bodies: list[bytes]) -> float:
    """Writes each body and waits until it is persisted as a file of its own."""
    t = time.monotonic()
    for i, body in enumerate(bodies):
        post(server.client, f"/api/v3/write_lp?db={bq.DB}&precision=nanosecond", body)
        deadline = time.monotonic() + 60
        while len(bq.parquet_files(server.client)) < i + 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"slice {i} was not persisted within 60 s")
            time.sleep(0.02)
    return time.monotonic() - t


def run_queries(client: bq.Http, queries: list[bq.Query], runs: int) -> dict[str, dict]:
    """The fastest formulation of each query over HTTP parquet: median and min in ms."""
    out = {}
    for q in queries:
        best: bq.Measured | None = None
        best_variant = None
        for variant, sql in q.tributary.items():
            m = bq.run_tributary(client, sql, "parquet", 1, runs)
            if m.error:
                continue
            if best is None or m.median() < best.median():
                best, best_variant = m, variant
        if best is None:
            out[q.name] = {"error": "every formulation failed"}
            continue
        out[q.name] = {
            "variant": best_variant,
            "median_ms": best.median(),
            "min_ms": best.min(),
            "rows": best.rows,
            "result": best.result,
        }
    return out


def level_counts(client: bq.Http) -> dict[int, int]:
    counts: dict[int, int] = {}
    for f in bq.parquet_files(client):
        counts[int(f["level"])] = counts.get(int(f["level"]), 0) + 1
    return counts


def wait_compacted(server: bq.Server, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = level_counts(server.client)
        if counts.get(0, 0) == 0 and sum(counts.values()) > 0:
            return bq.sql_json(server.client, "SELECT * FROM system.compaction_events")
        time.sleep(0.2)
    raise RuntimeError(f"not compacted within {timeout} s: files per level {level_counts(server.client)}")


def long_ingest(binary: str, work: str, seconds: float) -> dict:
    """Small writes of current timestamps with compaction on: level-0 files over time."""
    data_dir = os.path.join(work, "long")
    os.makedirs(data_dir)
    server = bq.Server(binary, data_dir, os.path.join(work, "long.log"), ["--persist-interval", "1s"])
    samples = []
    try:
        t0 = time.monotonic()
        next_sample = t0
        step = 0
        while time.monotonic() - t0 < seconds:
            now = time.time_ns()
            body = "\n".join(
                f"cpu,hostname=host_{h} usage_user={(step * 7 + h) % 100}.5 {now + h}" for h in range(100)
            ).encode()
            post(server.client, f"/api/v3/write_lp?db={bq.DB}&precision=nanosecond", body)
            step += 1
            time.sleep(0.05)
            if time.monotonic() >= next_sample:
                counts = level_counts(server.client)
                samples.append({"t_s": round(time.monotonic() - t0, 1), "files_per_level": counts})
                bq.log(f"  long ingest {time.monotonic() - t0:5.0f} s: files per level {counts}")
                next_sample += 5
        level0 = [s["files_per_level"].get(0, 0) for s in samples]
        return {
            "seconds": seconds,
            "writes": step,
            "rows": step * 100,
            "max_level0_files": max(level0, default=0),
            "last_files_per_level": samples[-1]["files_per_level"] if samples else {},
            "samples": samples,
            "peak_rss_mib": server.peak_rss_mib(),
        }
    finally:
        bq.stop_quietly(server)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True, help="the tributary binary (release build)")
    ap.add_argument("--runs", type=int, default=5, help="measured runs per query (default 5)")
    ap.add_argument("--slices", type=int, default=SLICES, help="persists the data set is cut into (default 100)")
    ap.add_argument("--long-ingest", type=float, default=0, help="seconds of continuous ingest with compaction on (default 0: skip)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument(
        "--copy-uncompacted",
        metavar="DIR",
        help="copy the data directory with the 100 level-0 files to DIR before compacting (to profile a compaction)",
    )
    ap.add_argument("--json-out", help="write the results as JSON to this file")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="tributary-bench-compaction-")
    results: dict = {"binary": args.binary, "slices": args.slices, "loadavg_at_start": os.getloadavg()}
    server = None
    try:
        # 1. The single-file reference.
        ref_dir = os.path.join(work, "single")
        os.makedirs(ref_dir)
        server = bq.Server(args.binary, ref_dir, os.path.join(work, "single.log"), COMPACTION_OFF)
        bq.load(args.binary, server, 4)
        ok, _, _ = bq.wait_persisted(server, 300)
        server.stop()
        server = bq.Server(args.binary, ref_dir, os.path.join(work, "single.log"), COMPACTION_OFF)
        files = bq.parquet_files(server.client)
        results["single_file_layout_files"] = len(files)
        columns = [r["column_name"] for r in bq.sql_json(
            server.client,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'cpu' ORDER BY ordinal_position",
        )]
        queries = bq.build_queries(columns)
        bq.log(f"==> single-file layout ({len(files)} file): queries")
        single = run_queries(server.client, queries, args.runs)
        bodies = export_line_protocol(server.client, args.slices)
        server.stop()
        server = None

        # 2. The same rows in many small persists.
        many_dir = os.path.join(work, "many")
        os.makedirs(many_dir)
        flags = ["--persist-interval", "100ms", *COMPACTION_OFF]
        server = bq.Server(args.binary, many_dir, os.path.join(work, "many.log"), flags)
        bq.log(f"==> writing {len(bodies)} slices, each persisted on its own")
        results["write_in_persists_s"] = write_in_persists(server, bodies)
        server.stop()
        server = bq.Server(args.binary, many_dir, os.path.join(work, "many.log"), flags)
        results["files_before"] = level_counts(server.client)
        bq.log(f"==> {results['files_before']} files per level: queries")
        before = run_queries(server.client, queries, args.runs)
        server.stop()
        if args.copy_uncompacted:
            shutil.copytree(many_dir, args.copy_uncompacted)

        # 3. Compaction.
        server = bq.Server(
            args.binary, many_dir, os.path.join(work, "many.log"), ["--compaction-interval", "1s"]
        )
        rss_start = server.rss_mib()
        t = time.monotonic()
        events = wait_compacted(server, 600)
        wall = time.monotonic() - t
        cpu = compactor_cpu_seconds(server.pid)
        ok_events = [e for e in events if not e.get("error")]
        rows_in = sum(int(e["rows_in"]) for e in ok_events)
        bytes_in = sum(int(e["bytes_in"]) for e in ok_events)
        busy_ms = sum(int(e["duration_ms"]) for e in ok_events)
        results["compaction"] = {
            "events": len(events),
            "failed_events": len(events) - len(ok_events),
            "files_in": sum(int(e["files_in"]) for e in ok_events),
            "files_out": sum(int(e["files_out"]) for e in ok_events),
            "rows_in": rows_in,
            "rows_out": sum(int(e["rows_out"]) for e in ok_events),
            "bytes_in": bytes_in,
            "bytes_out": sum(int(e["bytes_out"]) for e in ok_events),
            "compactor_seconds": busy_ms / 1e3,
            "wall_seconds_until_done": wall,
            "rows_per_s": rows_in / (busy_ms / 1e3) if busy_ms else None,
            "mb_per_s": bytes_in / 1e6 / (busy_ms / 1e3) if busy_ms else None,
            "compactor_cpu_seconds": cpu,
            "rows_per_cpu_s": rows_in / cpu if cpu else None,
            "rss_at_start_mib": rss_start,
            "peak_rss_mib": server.peak_rss_mib(),
        }
        results["files_after"] = level_counts(server.client)
        bq.log(f"==> compacted to {results['files_after']} files per level: queries")
        after_in_process = run_queries(server.client, queries, args.runs)
        server.stop()
        # The single-file reference was measured on a fresh server: so is the compacted layout.
        server = bq.Server(args.binary, many_dir, os.path.join(work, "many.log"), COMPACTION_OFF)
        bq.log("==> compacted, restarted: queries")
        after = run_queries(server.client, queries, args.runs)
        server.stop()
        server = None

        results["queries"] = {}
        for q in queries:
            s, b, a = single[q.name], before[q.name], after[q.name]
            entry = {"single_file": s, "before": b, "after": a, "after_in_process": after_in_process[q.name]}
            if "median_ms" in s and "median_ms" in a:
                entry["after_over_single"] = a["median_ms"] / s["median_ms"]
                same = bq.compare(s["result"], a["result"])
                entry["same_rows"] = same is None
                if same:
                    entry["difference"] = same
            results["queries"][q.name] = entry

        if args.long_ingest > 0:
            bq.log(f"==> {args.long_ingest:.0f} s of continuous ingest with compaction on")
            results["long_ingest"] = long_ingest(args.binary, work, args.long_ingest)
    finally:
        bq.stop_quietly(server)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            bq.log(f"kept {work}")

    print_report(results)
    if args.json_out:
        def strip(o):
            if isinstance(o, dict):
                return {k: strip(v) for k, v in o.items() if k != "result"}
            return o
        with open(args.json_out, "w") as f:
            json.dump(strip(results), f, indent=2, default=str)
    bad = [n for n, e in results["queries"].items() if not e.get("same_rows", False)]
    return 1 if bad else 0


def compactor_cpu_seconds(pid: int) -> float | None:
    """CPU time of the server's `compactor` thread (schedstat: nanoseconds on a CPU)."""
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            with open(f"{task}/comm") as f:
                if f.read().strip() != "compactor":
                    continue
            with open(f"{task}/schedstat") as f:
                return int(f.read().split()[0]) / 1e9
        except OSError:
            continue
    return None


def print_report(r: dict) -> None:
    c = r["compaction"]
    print()
    print(f"Written in {r['slices']} persists ({r['write_in_persists_s']:.1f} s); files per level "
          f"before {r['files_before']}, after {r['files_after']}; single-file reference: "
          f"{r['single_file_layout_files']} file(s)")
    print(f"Compaction: {c['files_in']} files -> {c['files_out']}, {c['rows_in']:,} rows -> "
          f"{c['rows_out']:,}, {c['bytes_in'] / 1e6:.1f} MB -> {c['bytes_out'] / 1e6:.1f} MB in "
          f"{c['compactor_seconds']:.2f} s of compactor time ({c['events']} events, "
          f"{c['failed_events']} failed)")
    rate = c["rows_per_s"] or 0
    print(f"  {rate / 1e6:.2f} M rows/s, {c['mb_per_s'] or 0:.1f} MB/s (target >= 1 M rows/s: "
          f"{'met' if rate >= 1e6 else 'missed'}); server RSS {c['rss_at_start_mib']:.0f} MiB at start, "
          f"peak {c['peak_rss_mib']:.0f} MiB")
    if c.get("compactor_cpu_seconds"):
        print(f"  CPU of the compactor thread since start: {c['compactor_cpu_seconds']:.2f} s, "
              f"{c['rows_per_cpu_s'] / 1e6:.2f} M rows per CPU-second (the rest of the compactor "
              f"time waits for the object store)")
    print()
    print("Median ms over HTTP format=parquet. `compacted` is a fresh server on the compacted data (as the")
    print("single-file reference is); `same process` is the server that just compacted, before a restart.")
    print(f"{'query':<22} {'single file':>12} {'100 files':>10} {'compacted':>10} {'ratio':>6}  within 10%  "
          f"{'same process':>12}  same rows")
    for name, e in r["queries"].items():
        s, b, a, p = e["single_file"], e["before"], e["after"], e["after_in_process"]
        fmt = lambda m: f"{m['median_ms']:.1f}" if "median_ms" in m else "error"  # noqa: E731
        ratio = e.get("after_over_single")
        ok = "yes" if ratio is not None and ratio <= 1.10 else "no"
        print(f"{name:<22} {fmt(s):>12} {fmt(b):>10} {fmt(a):>10} {ratio or 0:>6.2f}  {ok:>10}  {fmt(p):>12}  "
              f"{e.get('same_rows')}")
    if "long_ingest" in r:
        li = r["long_ingest"]
        print()
        print(f"Long ingest: {li['seconds']:.0f} s, {li['rows']:,} rows in {li['writes']} writes; "
              f"at most {li['max_level0_files']} level-0 files; at the end {li['last_files_per_level']}; "
              f"peak RSS {li['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
