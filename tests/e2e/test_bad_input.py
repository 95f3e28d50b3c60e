"""Bad input never hurts the server.

Specifies that every malformed write (each kind of line-protocol error the parser knows,
random bytes, invalid UTF-8, huge lines, broken gzip, a bad precision, a missing
database) is answered with a `4xx` and a JSON error message, never a `5xx`, a panic or a
hang; that the server still answers `/health` afterwards and still takes good writes;
and that a rejected line is logged at warn level with its line number.

Every request has a timeout, so a hang fails the test instead of blocking the run.
"""

from __future__ import annotations

import gzip
import random

import pytest

from conftest import (
    WRITERS,
    assert_client_error,
    assert_healthy,
    count_rows,
    expect_status,
    poll_until,
    query,
    write_lp,
)

# One entry per kind of line-protocol error: id -> the bad line.
MALFORMED_LINES = {
    "measurement_only": "m",
    "no_fields": "m,t=a 1",
    "no_fields_trailing_space": "m,t=a ",
    "empty_field_value": "m f= 1",
    "empty_field_key": "m =1 1",
    "field_without_equals": "m f 1",
    "bare_word_field_value": "m f=abc 1",
    "bad_float": "m f=1.2.3 1",
    "bad_float_exponent": "m f=1e 1",
    "bad_integer": "m f=12x3i 1",
    "integer_overflow": "m f=9223372036854775808i 1",
    "negative_unsigned": "m f=-1u 1",
    "unsigned_overflow": "m f=18446744073709551616u 1",
    "bad_boolean": "m f=tru 1",
    "unterminated_string": 'm f="abc 1',
    "unterminated_string_at_end": 'm f="',
    "bad_timestamp": "m f=1 12ab",
    "float_timestamp": "m f=1 1.5",
    "timestamp_overflow": "m f=1 99999999999999999999999",
    "trailing_garbage": "m f=1 1 extra",
    "empty_tag_value": "m,t= f=1 1",
    "empty_tag_key": "m,=a f=1 1",
    "tag_without_value": "m,t f=1 1",
    "duplicate_tag": "m,t=a,t=b f=1 1",
    "duplicate_field": "m f=1,f=2 1",
    "missing_measurement": ",t=a f=1 1",
    "trailing_comma_in_tags": "m,t=a, f=1 1",
    "trailing_comma_in_fields": "m f=1, 1",
    "unescaped_space_in_tag_value": "m,t=a b f=1 1",
    "lone_backslash_at_end": "m f=1 1\\",
}


@pytest.mark.parametrize("endpoint", ["v3", "v2", "v1"])
@pytest.mark.parametrize("line", list(MALFORMED_LINES.values()), ids=list(MALFORMED_LINES))
def test_malformed_line_is_a_4xx_with_a_message(server, db, endpoint, line):
    resp = WRITERS[endpoint](server, db, line + "\n")
    assert_client_error(resp)
    assert_healthy(server)
    # The server still takes good writes.
    expect_status(WRITERS[endpoint](server, db, "ok f=1 1\n"), 204)


@pytest.mark.parametrize("line", list(MALFORMED_LINES.values()), ids=list(MALFORMED_LINES))
def test_malformed_line_after_a_good_one_is_reported_as_line_2(server, db, line):
    resp = write_lp(server, db, "good,t=a f=1 1\n" + line + "\n", precision="second")
    expect_status(resp, 400)
    numbers = [entry["line_number"] for entry in resp.json()["data"]]
    assert numbers == [2], resp.text
    assert count_rows(server, db, "good") == 1


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("endpoint", ["v3", "v1"])
def test_random_bytes_are_a_4xx(server, db, endpoint, seed):
    rng = random.Random(seed)
    body = bytes(rng.getrandbits(8) for _ in range(rng.choice([100, 10_000, 200_000])))
    resp = WRITERS[endpoint](server, db, body)
    assert_client_error(resp)
    assert_healthy(server)


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_claiming_gzip_are_a_4xx(server, db, seed):
    rng = random.Random(1000 + seed)
    body = b"\x1f\x8b" + bytes(rng.getrandbits(8) for _ in range(5000))
    resp = write_lp(server, db, body, headers={"Content-Encoding": "gzip"})
    assert_client_error(resp)
    assert_healthy(server)


def test_random_line_protocol_like_mutations_never_5xx(server, db):
    # Lines built from line-protocol punctuation: every answer is 204 or a 4xx with a message.
    rng = random.Random(42)
    alphabet = "m,t=a f=1i\"\\ u.e-T\n"
    for _ in range(200):
        body = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
        resp = write_lp(server, db, body)
        if resp.status_code != 204:
            assert_client_error(resp)
    assert_healthy(server)


INVALID_UTF8 = {
    "in_measurement": b"m\xff f=1 1\n",
    "in_tag_value": b"m,t=\xfe\xff f=1 1\n",
    "in_tag_key": b"m,\xc3\x28=a f=1 1\n",
    "in_field_key": b"m \xe2\x28\xa1=1 1\n",
    "in_string_field": b'm f="\xc3\x28" 1\n',
    "overlong_encoding": b'm f="\xc0\xaf" 1\n',
    "surrogate": b'm f="\xed\xa0\x80" 1\n',
}


@pytest.mark.parametrize("endpoint", ["v3", "v2", "v1"])
@pytest.mark.parametrize("body", list(INVALID_UTF8.values()), ids=list(INVALID_UTF8))
def test_invalid_utf8_is_a_4xx(server, db, endpoint, body):
    resp = WRITERS[endpoint](server, db, body)
    assert_client_error(resp)
    assert_healthy(server)


def test_invalid_utf8_line_is_rejected_and_the_good_lines_are_kept(server, db):
    resp = write_lp(server, db, b"m,t=a f=1 1\nm,t=\xff f=2 2\nm,t=c f=3 3\n", precision="second")
    expect_status(resp, 400)
    assert [e["line_number"] for e in resp.json()["data"]] == [2]
    assert count_rows(server, db, "m") == 2


def test_huge_valid_line_within_the_request_limit_is_stored_whole(server, db):
    value = "x" * (2 * 1024 * 1024)
    expect_status(write_lp(server, db, f'm,t=a s="{value}" 1\n', precision="second"), 204)
    assert query(server, db, "SELECT length(s) AS n FROM m") == [{"n": len(value)}]


@pytest.mark.parametrize(
    "line",
    [
        'm,t=a s="' + "x" * (2 * 1024 * 1024) + " 1",  # unterminated 2 MB string
        "m" * (2 * 1024 * 1024),  # 2 MB measurement, no fields
        "m,t=a " + ",".join(f"f{i}=" for i in range(100_000)),  # 100k fields without values
    ],
    ids=["unterminated_2mb_string", "2mb_measurement_no_fields", "100k_empty_fields"],
)
def test_huge_malformed_line_is_a_4xx(server, db, line):
    resp = write_lp(server, db, line)
    assert_client_error(resp)
    # A huge line is not echoed back whole.
    assert len(resp.content) < 64 * 1024, len(resp.content)
    assert_healthy(server)


def test_many_tiny_bad_lines_are_all_reported_without_5xx(server, db):
    body = "".join(f"m,t={i} f=bad{i}\n" for i in range(50_000))
    resp = write_lp(server, db, body)
    assert_client_error(resp)
    # The first lines in detail, the rest counted: the error stays small.
    details = resp.json()
    assert len(details["data"]) == 100
    assert details["data"][0]["line_number"] == 1
    assert details["more_rejected_lines"] == 50_000 - 100
    assert len(resp.content) < 64 * 1024
    assert_healthy(server)


@pytest.mark.parametrize("body", [b"", b"\n", b"   \n\n", b"# only a comment\n"], ids=["empty", "newline", "blank", "comment"])
def test_body_without_lines_is_not_a_server_error(server, db, body):
    resp = write_lp(server, db, body)
    assert resp.status_code < 500, (resp.status_code, resp.text)
    if resp.status_code != 204:
        assert_client_error(resp)
    assert_healthy(server)


@pytest.mark.parametrize("endpoint", ["v3", "v2", "v1"])
def test_wrong_precision_is_a_4xx(server, db, endpoint):
    resp = WRITERS[endpoint](server, db, "m f=1 1\n", precision="lightyears")
    assert_client_error(resp)
    assert_healthy(server)


@pytest.mark.parametrize("endpoint", ["v3", "v2", "v1"])
def test_missing_db_is_a_4xx(server, endpoint):
    resp = WRITERS[endpoint](server, None, "m f=1 1\n")
    assert_client_error(resp)
    assert_healthy(server)


@pytest.mark.parametrize("value", ["maybe", "1x", ""])
@pytest.mark.parametrize("param", ["accept_partial", "no_sync"])
def test_bad_boolean_parameter_is_a_4xx(server, db, param, value):
    resp = write_lp(server, db, "m f=1 1\n", **{param: value})
    assert_client_error(resp)


@pytest.mark.parametrize("name", ["bad name!", "a/b/../c", "x" * 1000, "db\u00e9\u0000"])
def test_invalid_database_name_in_a_write_is_a_4xx(server, name):
    resp = write_lp(server, name, "m f=1 1\n")
    assert_client_error(resp)
    assert_healthy(server)


def test_unsupported_content_encoding_is_a_4xx(server, db):
    resp = write_lp(server, db, b"m f=1 1\n", headers={"Content-Encoding": "br"})
    assert_client_error(resp)


def test_truncated_gzip_is_a_4xx(server, db):
    body = gzip.compress(b"m,t=a f=1 1\n" * 1000)
    resp = write_lp(server, db, body[: len(body) - 10], headers={"Content-Encoding": "gzip"})
    assert_client_error(resp)
    assert_healthy(server)


def test_rejected_line_is_logged_at_warn_with_its_line_number(server, db):
    resp = write_lp(server, db, "m,t=a f=1 1\nm,t=b f=tru 2\n", precision="second")
    expect_status(resp, 400)

    def warned():
        for line in server.log_text().splitlines():
            if "WARN" in line and any(s in line for s in ("line 2", "line=2", "line_number=2", '"line_number":2')):
                return line
        return None

    poll_until(warned, 10, "a WARN log line naming line 2")
