"""The three HTTP write endpoints, as InfluxDB 1, 2 and 3 clients use them.

Specifies, for `POST /api/v3/write_lp`, `POST /api/v2/write` and `POST /write`:
- `204` on success, and the rows are queryable as soon as the write is acknowledged
  (`no_sync=true` included);
- every `precision` value scales the timestamp as its name says; `auto` (the v3 default)
  guesses the unit by magnitude; a line without a timestamp gets the server's time;
- rejected lines: `400` with `{"error": "partial write of line protocol occurred",
  "data": [{"original_line", "line_number", "error_message"}]}` on v3, the good lines kept
  unless `accept_partial=false`; on the v1 and v2 paths nothing of such a batch is kept, and
  v2 errors have the InfluxDB 2 shape `{"code", "message"}`;
- `Content-Encoding: gzip` bodies, multi-member gzip included;
- `--max-http-request-size` answered with `413` naming the flag, compressed or not, and a
  gzip bomb is a `413`, never a `5xx`;
- `Authorization: Token`/`Bearer` headers are accepted (and ignored in this version);
- a missing database, a bad precision, a field type conflict and a duplicate field are
  `400`s whose messages say what is wrong.
"""

from __future__ import annotations

import gzip
import re
import time
import zlib

import pytest

from conftest import (
    WRITERS,
    count_rows,
    error_message,
    expect_status,
    gzip_members,
    json_body,
    query,
    ts_ns,
    write_lp,
    write_v1,
    write_v2,
)

NS_PER_S = 1_000_000_000
PARTIAL_WRITE = "partial write of line protocol occurred"


def assert_partial_write_body(resp, expected_lines: dict[int, str]) -> list[dict]:
    """A v3 partial-write answer listing exactly the lines of `expected_lines` (number -> text)."""
    expect_status(resp, 400)
    body = json_body(resp)
    assert body.get("error") == PARTIAL_WRITE, body
    data = body.get("data")
    assert isinstance(data, list), body
    by_line = {}
    for entry in data:
        assert set(entry) >= {"original_line", "line_number", "error_message"}, entry
        assert isinstance(entry["line_number"], int), entry
        assert isinstance(entry["error_message"], str) and entry["error_message"].strip(), entry
        by_line[entry["line_number"]] = entry
    assert sorted(by_line) == sorted(expected_lines), body
    for number, text in expected_lines.items():
        assert by_line[number]["original_line"].strip() == text, by_line[number]
    return data


# -- success and visibility ----------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["v3", "v2", "v1"])
def test_write_returns_204_and_rows_are_queryable_at_once(server, db, endpoint):
    body = "cpu,host=a,region=eu usage=1.5 1000000000\ncpu,host=b,region=us usage=2.5 2000000000\n"
    precision = {"v3": "nanosecond", "v2": "ns", "v1": "ns"}[endpoint]
    resp = WRITERS[endpoint](server, db, body, precision=precision)
    expect_status(resp, 204)
    assert resp.content == b""

    rows = query(server, db, "SELECT host, region, usage, time FROM cpu ORDER BY time")
    assert [(r["host"], r["region"], r["usage"], ts_ns(r["time"])) for r in rows] == [
        ("a", "eu", 1.5, 1 * NS_PER_S),
        ("b", "us", 2.5, 2 * NS_PER_S),
    ]


def test_no_sync_write_is_queryable_once_acknowledged(server, db):
    resp = write_lp(server, db, "m,t=a f=1 1\nm,t=b f=2 2\n", precision="second", no_sync=True)
    expect_status(resp, 204)
    assert count_rows(server, db, "m") == 2


def test_every_field_type_and_escape_round_trips(server, db):
    body = (
        'cpu,host=a usage=1.5,count=-3i,ucount=4u,ok=true,off=F,msg="hi there" 1\n'
        # Escaped measurement, tag key/value, field key and a string with an escaped quote
        # and backslash.
        'my\\ table,tag\\,key=va\\ lue\\=x field\\=x="quote\\"d \\\\ back",n=1 2\n'
    )
    expect_status(write_lp(server, db, body, precision="second"), 204)

    [row] = query(server, db, "SELECT host, usage, count, ucount, ok, off, msg FROM cpu")
    assert row == {"host": "a", "usage": 1.5, "count": -3, "ucount": 4, "ok": True, "off": False, "msg": "hi there"}

    [row] = query(server, db, 'SELECT "tag,key" AS k, "field=x" AS f, n FROM "my table"')
    assert row == {"k": "va lue=x", "f": 'quote"d \\ back', "n": 1.0}


def test_crlf_comments_and_blank_lines_are_accepted(server, db):
    body = "# a comment\r\n\r\nm,t=a f=1 1\r\n   \r\nm,t=b f=2 2\r\n"
    expect_status(write_lp(server, db, body, precision="second"), 204)
    rows = query(server, db, "SELECT t, f FROM m ORDER BY t")
    assert rows == [{"t": "a", "f": 1.0}, {"t": "b", "f": 2.0}]


# -- precision -----------------------------------------------------------------------------

PRECISIONS = [
    # endpoint, precision parameter (None: left out), nanoseconds per unit of timestamp `1`
    ("v3", "nanosecond", 1),
    ("v3", "microsecond", 1_000),
    ("v3", "millisecond", 1_000_000),
    ("v3", "second", NS_PER_S),
    # auto reads a small number as seconds (InfluxDB 3's guess by magnitude); it is the default.
    ("v3", "auto", NS_PER_S),
    ("v3", None, NS_PER_S),
    ("v2", "ns", 1),
    ("v2", "us", 1_000),
    ("v2", "ms", 1_000_000),
    ("v2", "s", NS_PER_S),
    ("v2", None, 1),
    ("v1", "n", 1),
    ("v1", "ns", 1),
    ("v1", "u", 1_000),
    ("v1", "us", 1_000),
    ("v1", "ms", 1_000_000),
    ("v1", "s", NS_PER_S),
    ("v1", "m", 60 * NS_PER_S),
    ("v1", "h", 3600 * NS_PER_S),
    ("v1", None, 1),
]


@pytest.mark.parametrize("endpoint,precision,ns_per_unit", PRECISIONS)
def test_precision_scales_the_timestamp(server, db, endpoint, precision, ns_per_unit):
    expect_status(WRITERS[endpoint](server, db, "m,t=a f=1 1\nm,t=b f=2 7\n", precision=precision), 204)
    rows = query(server, db, "SELECT t, time FROM m ORDER BY t")
    assert [(r["t"], ts_ns(r["time"])) for r in rows] == [("a", 1 * ns_per_unit), ("b", 7 * ns_per_unit)]


def test_precision_second_writes_one_second_after_the_epoch(server, db):
    expect_status(write_lp(server, db, "m,t=a f=1 1", precision="second"), 204)
    [row] = query(server, db, "SELECT time FROM m")
    assert row["time"].rstrip("Z").startswith("1970-01-01T00:00:01")
    assert ts_ns(row["time"]) == NS_PER_S


def test_auto_precision_guesses_the_unit_by_magnitude(server, db):
    t_s = 1_700_000_000  # 2023-11-14T22:13:20Z
    body = (
        f"m,unit=s f=1 {t_s}\n"
        f"m,unit=ms f=1 {t_s * 1_000}\n"
        f"m,unit=us f=1 {t_s * 1_000_000}\n"
        f"m,unit=ns f=1 {t_s * 1_000_000_000}\n"
    )
    expect_status(write_lp(server, db, body, precision="auto"), 204)
    rows = query(server, db, "SELECT unit, time FROM m ORDER BY unit")
    assert {r["unit"]: ts_ns(r["time"]) for r in rows} == {u: t_s * NS_PER_S for u in ("ms", "ns", "s", "us")}


@pytest.mark.parametrize("endpoint", ["v3", "v2", "v1"])
def test_line_without_timestamp_gets_server_time(server, db, endpoint):
    before = time.time_ns()
    expect_status(WRITERS[endpoint](server, db, "m,t=a f=1\n"), 204)
    after = time.time_ns()
    [row] = query(server, db, "SELECT time FROM m")
    slack = 60 * NS_PER_S  # generous: only "now", not any particular clock, is specified
    assert before - slack <= ts_ns(row["time"]) <= after + slack, (before, row, after)


@pytest.mark.parametrize(
    "endpoint,precision",
    [("v3", "fortnight"), ("v3", "ns1"), ("v2", "second"), ("v2", "h"), ("v1", "x"), ("v1", "nanosecond")],
)
def test_unknown_precision_is_rejected_with_400(server, db, endpoint, precision):
    resp = WRITERS[endpoint](server, db, "m,t=a f=1 1\n", precision=precision)
    expect_status(resp, 400)
    assert "precision" in error_message(resp).lower()


# -- missing database ----------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["v3", "v2", "v1"])
def test_missing_database_is_rejected_with_400(server, endpoint):
    resp = WRITERS[endpoint](server, None, "m,t=a f=1 1\n")
    expect_status(resp, 400)
    message = error_message(resp).lower()
    assert {"v3": "db", "v2": "bucket", "v1": "db"}[endpoint] in message, message


@pytest.mark.parametrize("endpoint", ["v3", "v1"])
def test_empty_database_name_is_rejected_with_400(server, endpoint):
    resp = WRITERS[endpoint](server, "", "m,t=a f=1 1\n")
    expect_status(resp, 400)
    error_message(resp)


# -- partial writes ------------------------------------------------------------------------

GOOD_BAD_GOOD = "m,t=good1 f=1 1\nm,t=bad f= 2\nm,t=good2 f=3 3\n"


def test_v3_partial_write_keeps_good_lines_by_default(server, db):
    resp = write_lp(server, db, GOOD_BAD_GOOD, precision="second")
    assert_partial_write_body(resp, {2: "m,t=bad f= 2"})
    rows = query(server, db, "SELECT t, f FROM m ORDER BY t")
    assert rows == [{"t": "good1", "f": 1.0}, {"t": "good2", "f": 3.0}]


def test_v3_partial_write_with_accept_partial_true_keeps_good_lines(server, db):
    resp = write_lp(server, db, GOOD_BAD_GOOD, precision="second", accept_partial=True)
    assert_partial_write_body(resp, {2: "m,t=bad f= 2"})
    assert count_rows(server, db, "m") == 2


def test_v3_accept_partial_false_keeps_nothing_of_a_batch_with_a_bad_line(server, db):
    # An earlier write creates the table, so "nothing kept" is a zero count, not a 404.
    expect_status(write_lp(server, db, "m,t=before f=0 0", precision="second"), 204)
    resp = write_lp(server, db, GOOD_BAD_GOOD, precision="second", accept_partial=False)
    assert_partial_write_body(resp, {2: "m,t=bad f= 2"})
    assert query(server, db, "SELECT t FROM m") == [{"t": "before"}]


def test_v3_partial_write_lists_every_rejected_line(server, db):
    body = "m,t=a f=1 1\nm,t=b f=\nm,t=c f=3 3\nm,t=d\nm,t=e f=5 5\n"
    resp = write_lp(server, db, body, precision="second")
    assert_partial_write_body(resp, {2: "m,t=b f=", 4: "m,t=d"})
    assert count_rows(server, db, "m") == 3


def test_line_numbers_count_every_physical_line(server, db):
    # Comments and blank lines count: a user finds line 4 of the file they sent.
    body = "# header comment\n\nm,t=a f=1 1\nm,t=b f=oops 2\n"
    resp = write_lp(server, db, body, precision="second")
    assert_partial_write_body(resp, {4: "m,t=b f=oops 2"})


def test_v2_write_with_a_bad_line_keeps_nothing_and_answers_v2_error(server, db):
    expect_status(write_v2(server, db, "m,t=before f=0 0", precision="s"), 204)
    resp = write_v2(server, db, GOOD_BAD_GOOD, precision="s")
    expect_status(resp, 400)
    body = json_body(resp)
    assert body.get("code") == "invalid", body
    assert isinstance(body.get("message"), str) and body["message"].strip(), body
    assert query(server, db, "SELECT t FROM m") == [{"t": "before"}]


def test_v1_write_with_a_bad_line_keeps_nothing(server, db):
    expect_status(write_v1(server, db, "m,t=before f=0 0", precision="s"), 204)
    resp = write_v1(server, db, GOOD_BAD_GOOD, precision="s")
    expect_status(resp, 400)
    error_message(resp)
    assert query(server, db, "SELECT t FROM m") == [{"t": "before"}]


@pytest.mark.parametrize("endpoint", ["v2", "v1"])
def test_v1_and_v2_error_bodies_name_the_bad_line(server, db, endpoint):
    resp = WRITERS[endpoint](server, db, "m,t=a f=1 1\nm,t=b f=tru 2\n")
    expect_status(resp, 400)
    error_message(resp)
    # Named in the message or in a per-line `data` entry, as on v3.
    body = resp.text.replace(" ", "")
    assert "line2" in body or '"line_number":2' in body or "m,t=bf=tru2" in body, resp.text


@pytest.mark.parametrize("org", [None, "", "any-org"])
def test_v2_org_is_accepted_and_ignored(server, db, org):
    expect_status(write_v2(server, db, "m,t=a f=1 1\n", org=org, precision="s"), 204)
    assert count_rows(server, db, "m") == 1


def test_v2_missing_bucket_uses_v2_error_shape(server):
    resp = write_v2(server, None, "m f=1 1")
    expect_status(resp, 400)
    body = json_body(resp)
    assert body.get("code") == "invalid", body
    assert "bucket" in body.get("message", ""), body


# -- type conflicts and duplicates ---------------------------------------------------------

# How an error message may name each column type: Arrow's name, InfluxDB's or Rust's.
TYPE_WORDS = {
    "float": r"\b(float|float64|f64|double)\b",
    "int": r"\b(int|integer|int64|i64)\b",
    "uint": r"\b(uint|uinteger|uint64|u64|unsigned)\b",
    "bool": r"\b(bool|boolean)\b",
    "string": r"\b(string|utf8|str)\b",
}

# (existing value, its type, conflicting value, its type)
CONFLICTS = [
    ("1", "float", '"s"', "string"),
    ("1i", "int", "1.5", "float"),
    ("true", "bool", "3i", "int"),
    ('"s"', "string", "1u", "uint"),
]


def _names_type(message: str, type_name: str) -> bool:
    return re.search(TYPE_WORDS[type_name], message.lower()) is not None


@pytest.mark.parametrize("existing,existing_type,new,new_type", CONFLICTS)
def test_type_conflict_names_column_existing_and_new_type(server, db, existing, existing_type, new, new_type):
    expect_status(write_lp(server, db, f"m,t=a temp_c={existing} 1", precision="second"), 204)
    resp = write_lp(server, db, f"m,t=b other=1 2\nm,t=c temp_c={new} 3\n", precision="second")
    [entry] = assert_partial_write_body(resp, {2: f"m,t=c temp_c={new} 3"})
    message = entry["error_message"]
    assert "temp_c" in message, message
    assert _names_type(message, existing_type), message
    assert _names_type(message, new_type), message
    # The column keeps its type; the good line of the batch was kept.
    assert count_rows(server, db, "m") == 2


def test_type_conflict_inside_one_batch_rejects_the_later_line(server, db):
    resp = write_lp(server, db, 'm,t=a temp_c=1 1\nm,t=b temp_c="hot" 2\n', precision="second")
    [entry] = assert_partial_write_body(resp, {2: 'm,t=b temp_c="hot" 2'})
    assert "temp_c" in entry["error_message"]
    assert query(server, db, "SELECT t, temp_c FROM m") == [{"t": "a", "temp_c": 1.0}]


def test_tag_and_field_with_the_same_name_conflict(server, db):
    expect_status(write_lp(server, db, "m,host=a f=1 1", precision="second"), 204)
    resp = write_lp(server, db, "m host=1 2", precision="second")
    expect_status(resp, 400)
    assert "host" in resp.text


def test_duplicate_field_is_rejected_with_its_line_number(server, db):
    resp = write_lp(server, db, "m,t=a f=1 1\nm,t=b f=1,f=2 2\n", precision="second")
    [entry] = assert_partial_write_body(resp, {2: "m,t=b f=1,f=2 2"})
    assert "f" in entry["error_message"]
    assert "duplicate" in entry["error_message"].lower()


# -- compression ---------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["v3", "v2", "v1"])
def test_gzip_body_is_accepted(server, db, endpoint):
    body = gzip.compress(b"m,t=a f=1 1000000000\nm,t=b f=2 2000000000\n")
    resp = WRITERS[endpoint](server, db, body, headers={"Content-Encoding": "gzip"})
    expect_status(resp, 204)
    assert count_rows(server, db, "m") == 2


def test_multi_member_gzip_body_is_read_to_the_end(server, db):
    body = gzip_members(b"m,t=a f=1 1\n", b"m,t=b f=2 2\n", b"m,t=c f=3 3\n")
    resp = write_lp(server, db, body, precision="second", headers={"Content-Encoding": "gzip"})
    expect_status(resp, 204)
    assert [r["t"] for r in query(server, db, "SELECT t FROM m ORDER BY t")] == ["a", "b", "c"]


def test_corrupt_gzip_body_is_a_400(server, db):
    good = gzip.compress(b"m,t=a f=1 1\n" * 100)
    for body in (b"definitely not gzip", good[: len(good) // 2], good[:-4] + b"\0\0\0\0"):
        resp = write_lp(server, db, body, headers={"Content-Encoding": "gzip"})
        assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
        error_message(resp)


# -- request size --------------------------------------------------------------------------

LIMIT_FLAG = "--max-http-request-size"


def _lines(n_bytes: int) -> bytes:
    line = b"m,t=a f=1 1\n"
    return line * (n_bytes // len(line) + 1)


def test_body_within_the_request_size_limit_is_accepted(start_server, db):
    server = start_server(LIMIT_FLAG, "1KiB")
    body = _lines(900)[:900]
    body = body[: body.rfind(b"\n") + 1]
    expect_status(write_lp(server, db, body, precision="second"), 204)


@pytest.mark.parametrize("endpoint", ["v3", "v2", "v1"])
def test_body_over_the_request_size_limit_is_413_naming_the_flag(start_server, db, endpoint):
    server = start_server(LIMIT_FLAG, "1KiB")
    resp = WRITERS[endpoint](server, db, _lines(4096))
    expect_status(resp, 413)
    assert LIMIT_FLAG in error_message(resp)
    # Nothing of it was written.
    expect_status(write_lp(server, db, "other f=1 1"), 204)
    tables = [r["table_name"] for r in query(server, db, "SELECT table_name FROM information_schema.tables")]
    assert "other" in tables and "m" not in tables, tables


def test_chunked_body_over_the_limit_is_413(start_server, db):
    # No Content-Length: the server has to count while it reads.
    server = start_server(LIMIT_FLAG, "1KiB")
    chunks = (b"m,t=a f=1 1\n" * 50 for _ in range(8))
    resp = write_lp(server, db, chunks)
    expect_status(resp, 413)
    assert LIMIT_FLAG in error_message(resp)


def test_gzip_body_decompressing_past_the_limit_is_413(start_server, db):
    server = start_server(LIMIT_FLAG, "4KiB")
    body = gzip.compress(_lines(64 * 1024))  # ~1 KiB compressed, 64 KiB of valid lines
    assert len(body) < 4096
    resp = write_lp(server, db, body, headers={"Content-Encoding": "gzip"})
    expect_status(resp, 413)
    assert LIMIT_FLAG in error_message(resp)


def test_gzip_bomb_is_413_not_5xx(start_server, db):
    server = start_server(LIMIT_FLAG, "1MiB")
    # 256 MiB of zeros in ~256 KiB of gzip, built in pieces so the test itself stays small.
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    parts = [compressor.compress(chunk) for _ in range(256)]
    parts.append(compressor.flush())
    body = b"".join(parts)
    assert len(body) < (1 << 20)
    resp = write_lp(server, db, body, headers={"Content-Encoding": "gzip"})
    expect_status(resp, 413)
    error_message(resp)
    expect_status(write_lp(server, db, "m f=1 1"), 204)


# -- auth headers --------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["v3", "v2", "v1"])
@pytest.mark.parametrize("authorization", ["Token x", "Bearer x", "Token ", "Basic cm9vdDpyb290"])
def test_authorization_headers_are_accepted(server, db, endpoint, authorization):
    resp = WRITERS[endpoint](server, db, "m,t=a f=1 1\n", headers={"Authorization": authorization})
    expect_status(resp, 204)
    assert count_rows(server, db, "m") == 1
