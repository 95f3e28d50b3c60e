"""Limits refuse work with a message naming the flag that raises them, and the server stays up.

Specifies that
- `--buffer-mem-limit`: while persistence keeps up, a small buffer takes a burst many times
  its size without refusing a write; once it is full and persistence cannot make room (here
  the object store refuses uploads), writes get `503` with a message naming the flag, the
  server keeps answering, and everything acknowledged before stays queryable;
- `--max-databases`, `--max-tables-per-database`, `--max-columns-per-table`: a write or a
  create that would pass them is a `4xx` (`400` or `422`) naming the flag; nothing of the
  refused line is created, and what exists still takes writes. Columns count the tags,
  the fields and `time`;
- the default catalog limits allow at least 100 databases, 10,000 tables per database and
  1,000 columns per table;
- `--query-mem-limit`: a query whose operators need more memory than the pool fails with
  an error that says the resources (memory) are exhausted, a query that can spill may
  instead succeed, and the server stays up and answers small queries.
"""

from __future__ import annotations

import requests

from conftest import (
    assert_healthy,
    count_rows,
    error_message,
    expect_status,
    query,
    query_raw,
    unique_name,
    write_lp,
)


def assert_limit_error(resp, flag: str) -> None:
    assert resp.status_code in (400, 422), f"expected 400 or 422, got {resp.status_code}: {resp.text[:2000]}"
    error_message(resp)
    assert flag in resp.text, f"the error does not name {flag}: {resp.text[:2000]}"


def user_tables(server, db) -> list[str]:
    rows = query(
        server,
        db,
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema NOT IN ('information_schema', 'system') ORDER BY table_name",
    )
    return [r["table_name"] for r in rows]


def columns_of(server, db, table) -> list[str]:
    rows = query(server, db, f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'")
    return sorted(r["column_name"] for r in rows)


# -- buffer --------------------------------------------------------------------------------


def burst(batch: int, lines: int = 1000) -> str:
    """~90 KB of line protocol: `lines` rows of ten series, unique by batch."""
    return "".join(
        f'buf,host=h{i % 10} v={i}i,s="{batch:06d}-{i:06d}-padding-padding-padding-padding" {batch * lines + i}\n'
        for i in range(lines)
    )


def test_a_small_buffer_takes_a_burst_many_times_its_size_while_persistence_keeps_up(start_server, db):
    server = start_server("--buffer-mem-limit", "2MiB")
    # ~9 MB of line protocol, back to back: the buffer fills several times over.
    for batch in range(100):
        expect_status(write_lp(server, db, burst(batch), precision="nanosecond"), 204)
    assert count_rows(server, db, "buf") == 100 * 1000


def test_full_buffer_answers_503_naming_the_flag_and_keeps_acked_data(start_server, db):
    server = start_server("--buffer-mem-limit", "1MiB")
    # A file where the database's directory of objects would go: every upload fails, so
    # persistence cannot make room.
    objects = server.data_dir / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    (objects / db).write_text("not a directory: uploads under it fail\n")
    lines_per_batch = 1000
    acked_lines = 0
    refused = None
    # 400 batches of ~90 KB is ~36 MB of line protocol: far past a 1 MiB buffer.
    for batch in range(400):
        resp = write_lp(server, db, burst(batch, lines_per_batch), precision="nanosecond")
        if resp.status_code == 204:
            acked_lines += lines_per_batch
            continue
        refused = resp
        break
    assert refused is not None, "no write was refused after ~36 MB into a 1 MiB buffer"
    expect_status(refused, 503)
    assert "--buffer-mem-limit" in error_message(refused)
    assert acked_lines > 0, "the first write was already refused"

    # Still full: refused again, with the same advice, and nothing of it is kept. (This comes
    # before any query: a query deduplicates the buffer into one tighter batch, which may free
    # enough memory to take writes again.)
    again = write_lp(server, db, "buf,host=x v=1i 1", precision="nanosecond")
    expect_status(again, 503)
    assert "--buffer-mem-limit" in error_message(again)
    assert_healthy(server)
    assert count_rows(server, db, "buf") == acked_lines


# -- catalog limits ------------------------------------------------------------------------


def test_table_limit_refuses_the_next_table_naming_the_flag(start_server, db):
    server = start_server("--max-tables-per-database", "3")
    for table in ("t1", "t2", "t3"):
        expect_status(write_lp(server, db, f"{table},k=a f=1 1"), 204)
    assert_limit_error(write_lp(server, db, "t4,k=a f=1 1"), "--max-tables-per-database")
    # Existing tables still take writes; a batch mixing both keeps the good line (v3 default).
    expect_status(write_lp(server, db, "t1,k=b f=2 2"), 204)
    assert_limit_error(write_lp(server, db, "t2,k=b f=2 2\nt5,k=a f=1 1\n"), "--max-tables-per-database")
    assert user_tables(server, db) == ["t1", "t2", "t3"]
    assert count_rows(server, db, "t1") == 2
    assert count_rows(server, db, "t2") == 2


def test_table_limit_is_per_database(start_server, db):
    server = start_server("--max-tables-per-database", "3")
    other = unique_name("db", "other")
    for table in ("t1", "t2", "t3"):
        expect_status(write_lp(server, db, f"{table} f=1 1"), 204)
        expect_status(write_lp(server, other, f"{table} f=1 1"), 204)
    assert user_tables(server, other) == ["t1", "t2", "t3"]


def test_column_limit_refuses_the_next_column_naming_the_flag(start_server, db):
    server = start_server("--max-columns-per-table", "5")
    # Columns: t, time, then one new field per write: 3, 4, 5 columns.
    for i, field in enumerate(("f1", "f2", "f3")):
        expect_status(write_lp(server, db, f"m,t=a {field}=1 {i}"), 204)
    assert_limit_error(write_lp(server, db, "m,t=a f4=1 10"), "--max-columns-per-table")
    assert_limit_error(write_lp(server, db, "m,t=a,u=x f1=1 11"), "--max-columns-per-table")  # a new tag counts too
    expect_status(write_lp(server, db, "m,t=b f1=2,f2=2,f3=2 12"), 204)
    assert columns_of(server, db, "m") == ["f1", "f2", "f3", "t", "time"]
    assert count_rows(server, db, "m") == 4


def test_new_table_with_too_many_columns_in_one_line_is_refused(start_server, db):
    server = start_server("--max-columns-per-table", "5")
    expect_status(write_lp(server, db, "ok f=1 1"), 204)
    assert_limit_error(write_lp(server, db, "wide,t=a a=1,b=2,c=3,d=4 1"), "--max-columns-per-table")
    assert "wide" not in user_tables(server, db)


def test_database_limit_refuses_the_next_database_naming_the_flag(start_server):
    server = start_server("--max-databases", "2")
    names = [unique_name("db", f"n{i}") for i in range(3)]
    expect_status(write_lp(server, names[0], "m f=1 1"), 204)
    resp = requests.post(f"{server.url}/api/v3/configure/database", json={"db": names[1]}, timeout=30)
    assert 200 <= resp.status_code < 300, resp.text
    assert_limit_error(write_lp(server, names[2], "m f=1 1"), "--max-databases")
    resp = requests.post(f"{server.url}/api/v3/configure/database", json={"db": names[2]}, timeout=30)
    assert_limit_error(resp, "--max-databases")
    expect_status(query_raw(server, names[2], "SELECT 1"), 404)
    expect_status(write_lp(server, names[0], "m f=2 2"), 204)


def test_default_limits_allow_100_databases(server):
    for i in range(100):
        expect_status(write_lp(server, f"many_db_{i}", "m f=1 1"), 204)


def test_default_limits_allow_10000_tables_per_database(server, db):
    body = "".join(f"t{i:05d} f=1 1\n" for i in range(10_000))
    expect_status(write_lp(server, db, body, timeout=300), 204)
    assert len(user_tables(server, db)) == 10_000


def test_default_limits_allow_1000_columns_per_table(server, db):
    fields = ",".join(f"f{i:03d}={i}" for i in range(998))
    expect_status(write_lp(server, db, f"wide,t=a {fields} 1"), 204)  # 998 fields + t + time
    assert len(columns_of(server, db, "wide")) == 1000


# -- query memory --------------------------------------------------------------------------

MEMORY_WORDS = ("memory", "resources exhausted")


def _says_memory(resp) -> bool:
    return any(word in resp.text.lower() for word in MEMORY_WORDS)


def _load_rows(server, db, n_rows=50_000, per_batch=5_000):
    for start in range(0, n_rows, per_batch):
        body = "".join(
            f'big,host=h{i % 1000} v={i}i,s="row-{i:08d}-{"x" * 48}" {i}\n' for i in range(start, start + per_batch)
        )
        expect_status(write_lp(server, db, body, precision="nanosecond"), 204)
    assert count_rows(server, db, "big") == n_rows


def test_query_over_the_memory_limit_fails_cleanly_and_the_server_stays_up(start_server, db):
    server = start_server("--query-mem-limit", "1MiB")
    _load_rows(server, db)

    # A hash join's build side cannot spill: 50k rows of ~70 bytes are far over 1 MiB.
    resp = query_raw(server, db, "SELECT count(*) AS n FROM big a JOIN big b ON a.s = b.s")
    assert resp.status_code >= 400, f"a 1 MiB pool ran a ~4 MB hash join: {resp.text[:500]}"
    assert _says_memory(resp), resp.text[:2000]
    error_message(resp)

    assert_healthy(server)
    assert query(server, db, "SELECT count(*) AS n FROM big") == [{"n": 50_000}]
    assert query(server, db, "SELECT v FROM big WHERE v = 42") == [{"v": 42}]


def test_big_sort_and_aggregation_either_spill_or_fail_with_a_memory_error(start_server, db):
    server = start_server("--query-mem-limit", "1MiB")
    _load_rows(server, db)
    for sql, expected_rows in (
        ("SELECT s FROM big ORDER BY s DESC", 50_000),
        ("SELECT s, count(*) AS n FROM big GROUP BY s", 50_000),
        ("SELECT host, array_agg(s) AS all_s FROM big GROUP BY host", 1_000),
    ):
        resp = query_raw(server, db, sql)
        if resp.status_code == 200:
            assert len(resp.json()) == expected_rows, sql
        else:
            assert resp.status_code >= 400 and _says_memory(resp), f"{sql}: {resp.status_code} {resp.text[:2000]}"
        assert_healthy(server)
    assert count_rows(server, db, "big") == 50_000


def test_default_query_memory_runs_the_same_join(server, db):
    _load_rows(server, db, n_rows=20_000)
    assert query(server, db, "SELECT count(*) AS n FROM big a JOIN big b ON a.s = b.s") == [{"n": 20_000}]
