"""Start-up configuration of `tributary serve`.

Specifies that
- `--http-bind 127.0.0.1:0` picks a free port, writes the bound `host:port` to
  `<data-dir>/http-addr` and logs it;
- every flag has a `TRIBUTARY_*` environment variable (`--max-http-request-size` ->
  `TRIBUTARY_MAX_HTTP_REQUEST_SIZE`) with the same effect;
- sizes take units (`1KiB`, `64MiB`);
- a bad value stops start-up with a non-zero exit and a message that names the flag;
- two servers never share a data directory by accident: the second one refuses to start
  while the first runs.
"""

from __future__ import annotations

import subprocess

import pytest

from conftest import Server, binary_path, error_message, expect_status, write_lp


def test_port_zero_writes_the_bound_address_file_and_logs_it(server):
    addr = (server.data_dir / "http-addr").read_text().strip()
    host, port = addr.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert server.url == f"http://{addr}"
    assert addr in server.log_text()


def test_environment_variable_sets_a_flag(start_server, db):
    server = start_server(env={"TRIBUTARY_MAX_HTTP_REQUEST_SIZE": "1KiB"})
    resp = write_lp(server, db, b"m,t=a f=1 1\n" * 400)
    expect_status(resp, 413)
    assert "--max-http-request-size" in error_message(resp)


def test_flag_wins_over_environment_variable(start_server, db):
    server = start_server("--max-http-request-size", "1MiB", env={"TRIBUTARY_MAX_HTTP_REQUEST_SIZE": "1KiB"})
    expect_status(write_lp(server, db, b"m,t=a f=1 1\n" * 400), 204)


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--buffer-mem-limit", "banana"),
        ("--max-http-request-size", "-5"),
        ("--query-mem-limit", "12 parsecs"),
        ("--max-tables-per-database", "many"),
        ("--max-columns-per-table", "-1"),
    ],
)
def test_bad_flag_value_stops_start_up_naming_the_flag(start_server, flag, value):
    server = start_server(f"{flag}={value}", wait=False)
    code = server.expect_exit()
    assert code != 0
    assert flag in server.log_text(), server.log_tail()


def test_bad_environment_value_stops_start_up_naming_flag_or_variable(start_server):
    server = start_server(env={"TRIBUTARY_BUFFER_MEM_LIMIT": "banana"}, wait=False)
    assert server.expect_exit() != 0
    log = server.log_text()
    assert "--buffer-mem-limit" in log or "TRIBUTARY_BUFFER_MEM_LIMIT" in log, server.log_tail()


def test_help_lists_the_serve_flags():
    out = subprocess.run([str(binary_path()), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for flag in (
        "--data-dir",
        "--http-bind",
        "--buffer-mem-limit",
        "--max-http-request-size",
        "--query-mem-limit",
        "--max-tables-per-database",
        "--max-columns-per-table",
        "--log-filter",
    ):
        assert flag in out.stdout, f"{flag} missing from `tributary serve --help`"
    assert "TRIBUTARY_DATA_DIR" in out.stdout


def test_second_server_on_the_same_data_dir_refuses_to_start(server):
    # Two processes appending to one WAL would corrupt it; the second must not take over
    # the address file of the running one either.
    addr_before = (server.data_dir / "http-addr").read_text()
    cmd = Server(server.binary, server.data_dir, server.log_path, [], server.env).command()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=server.env)
    assert out.returncode != 0, "a second server started on a data dir that is in use"
    assert str(server.data_dir) in out.stdout + out.stderr or "lock" in (out.stdout + out.stderr).lower()
    assert (server.data_dir / "http-addr").read_text() == addr_before
    assert server.running()
