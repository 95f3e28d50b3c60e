"""SQL over HTTP: `GET|POST /api/v3/query_sql`.

Specifies:
- `GET ?db=&q=&format=` and `POST` with the JSON body `{"db", "q", "format"}`;
- formats `json` (an array of objects), `jsonl`, `csv` (with a header row), `pretty`
  (a text table) and `parquet`, each with its content type; without `format` the `Accept`
  header picks one, and JSON is the default;
- result types keep the data model: tags are `dictionary<int32, string>`, string fields
  `string` (not `string_view`), `time` is `timestamp[ns]` without a time zone; JSON values
  keep their kinds (float, integer, boolean, string), a null field is omitted or `null`;
- an unknown database is a `404`, SQL errors (syntax, unknown table or column) are `400`s,
  each with a JSON message;
- `$name` placeholders take their values from `params`: a JSON object in the query string
  (`GET ?params={"host":"a"}`) or in the body (`POST {"db", "q", "params": {...}}`); string,
  integer and float values filter as the same literals do, each request binds its own values,
  and a placeholder left without a value, a `params` that is not a JSON object or a value
  that is not a string, number, boolean or null is a `400` whose message names it;
- `information_schema.tables`/`columns` and `SHOW TABLES` list what was written;
- rows with the same tag set and time are one row: the last write wins field by field and
  the fields it does not name keep their older values, also after a restart;
- aggregations, time filters and `ORDER BY time DESC LIMIT 1` answer correctly;
- a statement run again reuses its optimized plan (`tributary_query_plans_reused_total`) and
  still reads the rows written since; a new column or `now()` makes it plan again.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pytest
import requests

from conftest import (
    assert_healthy,
    count_rows,
    error_message,
    expect_status,
    json_body,
    parse_result,
    query,
    query_raw,
    ts_ns,
    write_lp,
)

T0 = 1_700_000_000 * 1_000_000_000  # 2023-11-14T22:13:20Z
S = 1_000_000_000

CPU_LINES = (
    f'cpu,host=a,region=eu usage=1.5,count=1i,ucount=10u,ok=true,msg="one" {T0}\n'
    f'cpu,host=b,region=us usage=2.5,count=2i,ucount=20u,ok=false,msg="two" {T0 + S}\n'
    f'cpu,host=a,region=eu usage=3.5,count=3i,ucount=30u,ok=true,msg="three" {T0 + 2 * S}\n'
)

CPU_ROWS = [
    {"host": "a", "region": "eu", "usage": 1.5, "count": 1, "ucount": 10, "ok": True, "msg": "one", "time": T0},
    {"host": "b", "region": "us", "usage": 2.5, "count": 2, "ucount": 20, "ok": False, "msg": "two", "time": T0 + S},
    {"host": "a", "region": "eu", "usage": 3.5, "count": 3, "ucount": 30, "ok": True, "msg": "three", "time": T0 + 2 * S},
]

CONTENT_TYPES = {
    "json": "application/json",
    "jsonl": "application/jsonl",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "pretty": "text/plain",
}

SELECT_ALL = "SELECT host, region, usage, count, ucount, ok, msg, time FROM cpu ORDER BY time"


@pytest.fixture
def cpu(server, db):
    """The server with three `cpu` rows in `db`."""
    expect_status(write_lp(server, db, CPU_LINES, precision="nanosecond"), 204)
    return server


def with_ns_time(rows):
    return [{**row, "time": ts_ns(row["time"])} for row in rows]


def content_type(resp) -> str:
    return resp.headers.get("Content-Type", "").split(";")[0].strip().lower()


# -- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_json_is_an_array_of_objects_with_typed_values(cpu, db, method):
    resp = expect_status(query_raw(cpu, db, SELECT_ALL, "json", method=method), 200)
    assert content_type(resp) == CONTENT_TYPES["json"]
    rows = json_body(resp)
    assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows), rows
    assert with_ns_time(rows) == CPU_ROWS
    row = rows[0]
    assert type(row["host"]) is str and type(row["msg"]) is str
    assert type(row["usage"]) is float
    assert type(row["count"]) is int and type(row["ucount"]) is int
    assert type(row["ok"]) is bool
    assert isinstance(row["time"], str), "time is an RFC 3339 string in JSON"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_jsonl_is_one_object_per_line(cpu, db, method):
    resp = expect_status(query_raw(cpu, db, SELECT_ALL, "jsonl", method=method), 200)
    assert content_type(resp) == CONTENT_TYPES["jsonl"]
    assert len([line for line in resp.text.splitlines() if line.strip()]) == 3
    assert with_ns_time(parse_result(resp, "jsonl")) == CPU_ROWS


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_csv_has_a_header_row(cpu, db, method):
    resp = expect_status(query_raw(cpu, db, "SELECT host, usage, count, ok, time FROM cpu ORDER BY time", "csv", method=method), 200)
    assert content_type(resp) == CONTENT_TYPES["csv"]
    lines = resp.text.splitlines()
    assert lines[0] == "host,usage,count,ok,time"
    assert len(lines) == 4
    rows = parse_result(resp, "csv")
    assert [(r["host"], float(r["usage"]), int(r["count"]), r["ok"], ts_ns(r["time"])) for r in rows] == [
        ("a", 1.5, 1, "true", T0),
        ("b", 2.5, 2, "false", T0 + S),
        ("a", 3.5, 3, "true", T0 + 2 * S),
    ]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pretty_is_a_text_table(cpu, db, method):
    resp = expect_status(query_raw(cpu, db, "SELECT host, usage, msg FROM cpu ORDER BY time", "pretty", method=method), 200)
    assert content_type(resp) == CONTENT_TYPES["pretty"]
    lines = [line for line in resp.text.splitlines() if line.strip()]
    # +---+ border, header, border, three rows, border
    assert len(lines) == 7, resp.text
    assert lines[0].startswith("+-") and lines[2].startswith("+-") and lines[-1].startswith("+-")
    assert [c.strip() for c in lines[1].strip("|").split("|")] == ["host", "usage", "msg"]
    assert [c.strip() for c in lines[3].strip("|").split("|")] == ["a", "1.5", "one"]
    assert [c.strip() for c in lines[5].strip("|").split("|")] == ["a", "3.5", "three"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_parquet_keeps_the_data_model_types(cpu, db, method):
    resp = expect_status(query_raw(cpu, db, SELECT_ALL, "parquet", method=method), 200)
    assert content_type(resp) == CONTENT_TYPES["parquet"]
    assert resp.content[:4] == b"PAR1" and resp.content[-4:] == b"PAR1"
    table = parse_result(resp, "parquet")
    schema = table.schema
    assert schema.field("host").type == pa.dictionary(pa.int32(), pa.string()), schema
    assert schema.field("region").type == pa.dictionary(pa.int32(), pa.string()), schema
    assert schema.field("msg").type == pa.string(), schema  # not string_view / large_string
    assert schema.field("time").type == pa.timestamp("ns"), schema  # no time zone
    assert schema.field("usage").type == pa.float64()
    assert schema.field("count").type == pa.int64()
    assert schema.field("ucount").type == pa.uint64()
    assert schema.field("ok").type == pa.bool_()
    rows = table.to_pylist()
    assert [r["host"] for r in rows] == ["a", "b", "a"]
    assert [r["msg"] for r in rows] == ["one", "two", "three"]
    assert table.column("time").cast(pa.int64()).to_pylist() == [T0, T0 + S, T0 + 2 * S]


def test_parquet_is_readable_by_polars(cpu, db):
    import polars as pl

    resp = expect_status(query_raw(cpu, db, SELECT_ALL, "parquet"), 200)
    frame = pl.read_parquet(io.BytesIO(resp.content))
    assert frame.height == 3
    assert frame["usage"].to_list() == [1.5, 2.5, 3.5]
    assert frame["host"].cast(pl.Utf8).to_list() == ["a", "b", "a"]


@pytest.mark.parametrize("format", ["json", "jsonl", "csv", "parquet", "pretty"])
def test_format_in_post_body_is_honoured(cpu, db, format):
    resp = expect_status(query_raw(cpu, db, "SELECT count(*) AS n FROM cpu", format, method="POST"), 200)
    assert content_type(resp) == CONTENT_TYPES[format]


@pytest.mark.parametrize(
    "accept,format",
    [
        ("application/json", "json"),
        ("application/jsonl", "jsonl"),
        ("text/csv", "csv"),
        ("application/vnd.apache.parquet", "parquet"),
        ("text/plain", "pretty"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_accept_header_picks_the_format_when_none_is_given(cpu, db, accept, format, method):
    resp = expect_status(query_raw(cpu, db, SELECT_ALL, None, method=method, headers={"Accept": accept}), 200)
    assert content_type(resp) == CONTENT_TYPES[format]
    result = parse_result(resp, format)
    if format in ("json", "jsonl"):
        assert with_ns_time(result) == CPU_ROWS
    elif format == "csv":
        assert [r["msg"] for r in result] == ["one", "two", "three"]
    elif format == "parquet":
        assert result.num_rows == 3
    else:
        assert "three" in result and result.lstrip().startswith("+-")


def test_format_parameter_wins_over_accept_header(cpu, db):
    resp = expect_status(query_raw(cpu, db, SELECT_ALL, "csv", headers={"Accept": "application/json"}), 200)
    assert content_type(resp) == CONTENT_TYPES["csv"]


@pytest.mark.parametrize("accept", ["*/*", None], ids=["any", "no_accept_header"])
def test_json_is_the_default_format(cpu, db, accept):
    resp = expect_status(query_raw(cpu, db, SELECT_ALL, None, headers={"Accept": accept}), 200)
    assert content_type(resp) == CONTENT_TYPES["json"]
    assert with_ns_time(json_body(resp)) == CPU_ROWS


def test_unknown_format_is_a_400(cpu, db):
    resp = query_raw(cpu, db, SELECT_ALL, "xml")
    expect_status(resp, 400)
    assert "format" in error_message(resp).lower()


def test_null_fields_are_omitted_or_null_in_json(server, db):
    expect_status(write_lp(server, db, "m,t=a f=1 1\nm,t=b g=2 2\n", precision="second"), 204)
    rows = query(server, db, "SELECT t, f, g FROM m ORDER BY t")
    assert [r["t"] for r in rows] == ["a", "b"]
    assert rows[0]["f"] == 1.0 and rows[0].get("g") is None
    assert rows[1]["g"] == 2.0 and rows[1].get("f") is None


def test_empty_result_is_an_empty_json_array(cpu, db):
    resp = expect_status(query_raw(cpu, db, "SELECT * FROM cpu WHERE host = 'nobody'", "json"), 200)
    assert json_body(resp) == []


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_database_is_a_404_with_a_message(server, method):
    resp = query_raw(server, "no_such_db", "SELECT 1", method=method)
    expect_status(resp, 404)
    assert "no_such_db" in error_message(resp)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_sql_syntax_error_is_a_400_with_a_message(cpu, db, method):
    resp = query_raw(cpu, db, "SELEC * FRM cpu", method=method)
    expect_status(resp, 400)
    error_message(resp)


def test_unknown_table_is_a_400_naming_it(cpu, db):
    resp = query_raw(cpu, db, "SELECT * FROM no_such_table")
    expect_status(resp, 400)
    assert "no_such_table" in error_message(resp)


def test_unknown_column_is_a_400_naming_it(cpu, db):
    resp = query_raw(cpu, db, "SELECT no_such_column FROM cpu")
    expect_status(resp, 400)
    assert "no_such_column" in error_message(resp)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_missing_query_is_a_400(cpu, db, method):
    resp = query_raw(cpu, db, None, method=method)
    expect_status(resp, 400)
    error_message(resp)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_missing_database_is_a_400(cpu, method):
    resp = query_raw(cpu, None, "SELECT 1", method=method)
    expect_status(resp, 400)
    error_message(resp)


def test_malformed_json_body_is_a_400(cpu):
    import requests

    resp = requests.post(
        f"{cpu.url}/api/v3/query_sql", data=b'{"db": "x", "q": ', headers={"Content-Type": "application/json"}, timeout=30
    )
    expect_status(resp, 400)
    error_message(resp)


# -- parameters ----------------------------------------------------------------------------


def query_with_params(server, db: str, sql: str, params, method: str = "GET") -> requests.Response:
    """`query_sql` with `params`, in the query string for GET (a string as it is, anything else
    as JSON) and as the body's `params` member for POST."""
    url = f"{server.url}/api/v3/query_sql"
    if method == "GET":
        text = params if isinstance(params, str) else json.dumps(params)
        return requests.get(url, params={"db": db, "q": sql, "format": "json", "params": text}, timeout=60)
    if method == "POST":
        return requests.post(url, json={"db": db, "q": sql, "format": "json", "params": params}, timeout=60)
    raise ValueError(method)


# (statement with placeholders, their values, the same statement with literals, hosts and
# times of the rows it keeps)
PARAMETER_CASES = [
    ("host = $host", {"host": "a"}, "host = 'a'", [("a", T0), ("a", T0 + 2 * S)]),
    ("count >= $n", {"n": 2}, "count >= 2", [("b", T0 + S), ("a", T0 + 2 * S)]),
    ("usage > $u", {"u": 2.75}, "usage > 2.75", [("a", T0 + 2 * S)]),
    ("region = $region AND usage < $u", {"region": "eu", "u": 2.0}, "region = 'eu' AND usage < 2.0", [("a", T0)]),
]
PARAMETER_IDS = ["tag-string", "integer", "float", "two-parameters"]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(("condition", "params", "literal", "kept"), PARAMETER_CASES, ids=PARAMETER_IDS)
def test_named_parameters_filter_as_the_same_literals_do(cpu, db, method, condition, params, literal, kept):
    sql = f"SELECT host, usage, count, time FROM cpu WHERE {condition} ORDER BY time"
    resp = expect_status(query_with_params(cpu, db, sql, params, method), 200)
    rows = json_body(resp)
    assert [(r["host"], ts_ns(r["time"])) for r in rows] == kept
    assert rows == query(cpu, db, f"SELECT host, usage, count, time FROM cpu WHERE {literal} ORDER BY time", method=method)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_each_request_binds_its_own_parameter_values(cpu, db, method):
    # The same text with other values: a plan kept with the first values bound would answer
    # the first request's rows again.
    sql = "SELECT msg FROM cpu WHERE host = $host ORDER BY time"
    for host, msgs in [("a", ["one", "three"]), ("b", ["two"]), ("a", ["one", "three"]), ("nobody", [])]:
        resp = expect_status(query_with_params(cpu, db, sql, {"host": host}, method), 200)
        assert [r["msg"] for r in json_body(resp)] == msgs, host


@pytest.mark.parametrize("params", ["host=a", "[\"a\"]", "\"a\"", "{\"host\": "], ids=["not-json", "array", "string", "truncated"])
def test_params_in_the_query_string_that_are_not_a_json_object_are_a_400_naming_params(cpu, db, params):
    resp = query_with_params(cpu, db, "SELECT msg FROM cpu WHERE host = $host", params, "GET")
    expect_status(resp, 400)
    assert "params" in error_message(resp)


@pytest.mark.parametrize("params", [["a"], "{\"host\": \"a\"}", 3], ids=["array", "string", "number"])
def test_params_in_the_body_that_are_not_a_json_object_are_a_400_naming_params(cpu, db, params):
    resp = query_with_params(cpu, db, "SELECT msg FROM cpu WHERE host = $host", params, "POST")
    expect_status(resp, 400)
    assert "params" in error_message(resp)


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("value", [["a"], {"v": "a"}], ids=["array", "object"])
def test_a_parameter_value_that_sql_cannot_use_is_a_400_naming_it(cpu, db, method, value):
    resp = query_with_params(cpu, db, "SELECT msg FROM cpu WHERE host = $host", {"host": value}, method)
    expect_status(resp, 400)
    assert "host" in error_message(resp)


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("params", [{}, {"host": "a"}], ids=["no-params", "another-parameter"])
def test_a_placeholder_without_a_value_is_a_400_naming_it(cpu, db, method, params):
    sql = "SELECT msg FROM cpu WHERE host = $host AND region = $wanted_region"
    resp = query_with_params(cpu, db, sql, params, method)
    expect_status(resp, 400)
    message = error_message(resp)
    unbound = {"$host", "$wanted_region"} - {f"${name}" for name in params}
    assert any(name in message for name in unbound), message


# -- catalog views -------------------------------------------------------------------------


def test_information_schema_tables_lists_the_table(cpu, db):
    rows = query(cpu, db, "SELECT table_name FROM information_schema.tables WHERE table_name = 'cpu'")
    assert rows == [{"table_name": "cpu"}]


def test_information_schema_columns_lists_columns_with_types(cpu, db):
    rows = query(cpu, db, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'cpu'")
    types = {r["column_name"]: r["data_type"] for r in rows}
    assert set(types) == {"host", "region", "usage", "count", "ucount", "ok", "msg", "time"}, types
    assert "dictionary" in types["host"].lower() and "utf8" in types["host"].lower(), types
    assert "timestamp" in types["time"].lower(), types
    assert "utf8" in types["msg"].lower() and "view" not in types["msg"].lower(), types
    assert "float64" in types["usage"].lower() and "int64" in types["count"].lower(), types


def test_show_tables_lists_the_table(cpu, db):
    rows = query(cpu, db, "SHOW TABLES")
    assert "cpu" in [r["table_name"] for r in rows], rows


def test_show_columns_lists_the_columns(cpu, db):
    rows = query(cpu, db, "SHOW COLUMNS FROM cpu")
    assert {r["column_name"] for r in rows} == {"host", "region", "usage", "count", "ucount", "ok", "msg", "time"}


def test_new_columns_appear_after_a_later_write(cpu, db):
    expect_status(write_lp(cpu, db, f"cpu,host=c,zone=z1 temp=20.5 {T0 + 3 * S}", precision="nanosecond"), 204)
    rows = query(cpu, db, "SELECT host, zone, temp, usage FROM cpu ORDER BY time")
    assert len(rows) == 4
    assert rows[-1]["host"] == "c" and rows[-1]["zone"] == "z1" and rows[-1]["temp"] == 20.5
    assert rows[0].get("zone") is None and rows[0].get("temp") is None


def plans_reused(server) -> float:
    """`tributary_query_plans_reused_total` from `/metrics`."""
    resp = expect_status(requests.get(f"{server.url}/metrics", timeout=10), 200)
    for line in resp.text.splitlines():
        if line.startswith("tributary_query_plans_reused_total "):
            return float(line.split()[1])
    raise AssertionError(f"/metrics has no tributary_query_plans_reused_total:\n{resp.text}")


def test_a_repeated_statement_reuses_its_plan_and_reads_new_rows(cpu, db):
    sql = "SELECT count(*) AS n FROM cpu WHERE host = 'a'"
    assert query(cpu, db, sql) == [{"n": 2}]
    before = plans_reused(cpu)
    expect_status(write_lp(cpu, db, f"cpu,host=a usage=4.5 {T0 + 3 * S}", precision="nanosecond"), 204)
    assert query(cpu, db, sql) == [{"n": 3}]
    assert plans_reused(cpu) == before + 1

    # A new column: planned again, and seen.
    expect_status(write_lp(cpu, db, f"cpu,host=a temp=20.5 {T0 + 4 * S}", precision="nanosecond"), 204)
    rows = query(cpu, db, "SELECT * FROM cpu WHERE host = 'a' ORDER BY time")
    assert rows[-1]["temp"] == 20.5
    reused = plans_reused(cpu)
    rows = query(cpu, db, "SELECT * FROM cpu WHERE host = 'a' ORDER BY time")
    assert rows[-1]["temp"] == 20.5 and len(rows) == 4
    assert plans_reused(cpu) == reused + 1

    # `now()` is read at each run: never reused.
    reused = plans_reused(cpu)
    for _ in range(2):
        query(cpu, db, "SELECT count(*) AS n FROM cpu WHERE time < now()")
    assert plans_reused(cpu) == reused


# -- dedup ---------------------------------------------------------------------------------


def test_same_series_and_time_keeps_last_write_per_field(server, db):
    expect_status(write_lp(server, db, "m,t=a f=1,g=2 100", precision="nanosecond"), 204)
    expect_status(write_lp(server, db, "m,t=a f=3 100", precision="nanosecond"), 204)
    rows = query(server, db, "SELECT t, f, g, time FROM m")
    assert with_ns_time(rows) == [{"t": "a", "f": 3.0, "g": 2.0, "time": 100}]
    assert count_rows(server, db, "m") == 1


def test_same_series_and_time_within_one_batch_is_one_row(server, db):
    expect_status(write_lp(server, db, "m,t=a f=1,g=2 100\nm,t=a f=3 100\n", precision="nanosecond"), 204)
    assert query(server, db, "SELECT f, g FROM m") == [{"f": 3.0, "g": 2.0}]


def test_each_later_write_overwrites_only_the_fields_it_names(server, db):
    for body in ("m,t=a f=1,g=2 100", "m,t=a f=3 100", "m,t=a g=4,h=5i 100", "m,t=a f=6 100"):
        expect_status(write_lp(server, db, body, precision="nanosecond"), 204)
    assert query(server, db, "SELECT f, g, h FROM m") == [{"f": 6.0, "g": 4.0, "h": 5}]


def test_different_tag_sets_or_times_are_different_rows(server, db):
    body = "m,t=a f=1 100\nm,t=b f=2 100\nm,t=a f=3 101\nm,t=a,u=x f=4 100\n"
    expect_status(write_lp(server, db, body, precision="nanosecond"), 204)
    rows = query(server, db, "SELECT t, u, f FROM m ORDER BY f")
    assert [(r["t"], r.get("u"), r["f"]) for r in rows] == [("a", None, 1.0), ("b", None, 2.0), ("a", None, 3.0), ("a", "x", 4.0)]


def test_dedup_holds_after_a_restart(server, db):
    expect_status(write_lp(server, db, "m,t=a f=1,g=2 100", precision="nanosecond"), 204)
    expect_status(write_lp(server, db, "m,t=a f=3 100", precision="nanosecond"), 204)
    server.kill()
    server.restart()
    assert query(server, db, "SELECT f, g FROM m") == [{"f": 3.0, "g": 2.0}]
    assert count_rows(server, db, "m") == 1


def test_dedup_applies_to_aggregates(server, db):
    for body in ("m,t=a f=1 100", "m,t=a f=10 100", "m,t=b f=5 100"):
        expect_status(write_lp(server, db, body, precision="nanosecond"), 204)
    assert query(server, db, "SELECT count(*) AS n, sum(f) AS s FROM m") == [{"n": 2, "s": 15.0}]


# -- queries -------------------------------------------------------------------------------


def test_group_by_aggregation(cpu, db):
    rows = query(
        cpu,
        db,
        "SELECT host, count(*) AS n, sum(usage) AS total, max(count) AS max_count, min(msg) AS first_msg "
        "FROM cpu GROUP BY host ORDER BY host",
    )
    assert rows == [
        {"host": "a", "n": 2, "total": 5.0, "max_count": 3, "first_msg": "one"},
        {"host": "b", "n": 1, "total": 2.5, "max_count": 2, "first_msg": "two"},
    ]


def test_order_by_time_desc_limit_1_is_the_latest_row(cpu, db):
    rows = query(cpu, db, "SELECT host, usage, msg, time FROM cpu ORDER BY time DESC LIMIT 1")
    assert with_ns_time(rows) == [{"host": "a", "usage": 3.5, "msg": "three", "time": T0 + 2 * S}]


def test_time_range_filter(cpu, db):
    rows = query(
        cpu,
        db,
        "SELECT msg FROM cpu WHERE time >= TIMESTAMP '2023-11-14T22:13:21' AND time < TIMESTAMP '2023-11-14T22:13:22'",
    )
    assert rows == [{"msg": "two"}]


def test_tag_filter(cpu, db):
    assert query(cpu, db, "SELECT msg FROM cpu WHERE host = 'a' ORDER BY time") == [{"msg": "one"}, {"msg": "three"}]


def test_rows_across_utc_days_are_all_found(server, db):
    day = 86_400
    body = "".join(f"m,t=a f={i} {1_700_000_000 + i * day}\n" for i in range(3))
    expect_status(write_lp(server, db, body, precision="second"), 204)
    rows = query(server, db, "SELECT date_trunc('day', time) AS d, count(*) AS n FROM m GROUP BY 1 ORDER BY 1")
    assert [r["n"] for r in rows] == [1, 1, 1]


def test_many_rows_round_trip(server, db):
    n = 20_000
    body = "".join(f"m,host=h{i % 50} v={i}i {i}\n" for i in range(n))
    expect_status(write_lp(server, db, body, precision="nanosecond"), 204)
    rows = query(server, db, "SELECT count(*) AS n, sum(v) AS s, count(DISTINCT host) AS hosts FROM m")
    assert rows == [{"n": n, "s": n * (n - 1) // 2, "hosts": 50}]


# -- safety of the SQL surface -----------------------------------------------------------------


def test_contradictory_time_filters_return_no_rows(server, db):
    expect_status(write_lp(server, db, "m,t=a f=1 1700000000000000000"), 204)
    rows = query(
        server,
        db,
        "SELECT * FROM m WHERE time >= '2024-01-02T00:00:00Z' AND time < '2024-01-01T00:00:00Z'",
    )
    assert rows == []
    assert_healthy(server)


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 1) TO '/tmp/tributary-copy-test.csv' STORED AS CSV",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "CREATE TABLE y AS SELECT 1",
        "SET datafusion.execution.batch_size = 1",
    ],
    ids=["copy", "external-table", "create-table", "set"],
)
def test_sql_endpoint_is_read_only(server, db, sql, tmp_path):
    expect_status(write_lp(server, db, "m f=1 1"), 204)
    resp = query_raw(server, db, sql)
    assert resp.status_code == 400, (resp.status_code, resp.text)
    assert error_message(resp)
    assert_healthy(server)


# -- large results stream ----------------------------------------------------------------------


@pytest.mark.parametrize("format", list(CONTENT_TYPES))
def test_small_results_are_sent_whole_with_their_length(cpu, db, format):
    resp = query_raw(cpu, db, SELECT_ALL, format)
    assert resp.status_code == 200
    assert content_type(resp) == CONTENT_TYPES[format]
    assert int(resp.headers["Content-Length"]) == len(resp.content) > 0
    result = parse_result(resp, format)
    if format == "pretty":
        assert all(row["msg"] in result for row in CPU_ROWS)
    else:
        assert len(result) == len(CPU_ROWS)
    empty = query_raw(cpu, db, "SELECT host FROM cpu WHERE host = 'nobody'", format)
    assert empty.status_code == 200
    assert int(empty.headers["Content-Length"]) == len(empty.content)
    if format in ("json", "jsonl", "parquet"):
        assert len(parse_result(empty, format)) == 0


def test_large_results_stream_complete_in_every_format(server, db):
    n = 150_000
    for start in range(0, n, 50_000):
        body = "".join(f"big,h=h{i % 7} v={i}i {i}\n" for i in range(start, start + 50_000))
        expect_status(write_lp(server, db, body, precision="nanosecond"), 204)
    sql = "SELECT h, v, time FROM big ORDER BY time"
    expected_sum = n * (n - 1) // 2

    rows = query(server, db, sql, "json")
    assert len(rows) == n and sum(r["v"] for r in rows) == expected_sum

    # Streamed as it is produced: no length known up front.
    streamed = query_raw(server, db, sql, "jsonl")
    assert "Content-Length" not in streamed.headers
    assert streamed.headers.get("Transfer-Encoding") == "chunked"

    jsonl = query_raw(server, db, sql, "jsonl")
    assert jsonl.status_code == 200
    lines = [json.loads(line) for line in jsonl.text.splitlines() if line]
    assert len(lines) == n and lines[-1]["v"] == n - 1

    csv_text = query_raw(server, db, sql, "csv").text.splitlines()
    assert csv_text[0] == "h,v,time" and len(csv_text) == n + 1

    resp = query_raw(server, db, sql, "parquet")
    assert resp.status_code == 200
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(io.BytesIO(resp.content))
    assert pf.metadata.num_rows == n
    assert pf.metadata.num_row_groups > 1, "results stream in several row groups"
    table = pf.read()
    assert sum(table.column("v").to_pylist()) == expected_sum
