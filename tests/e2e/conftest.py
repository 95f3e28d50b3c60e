"""Fixtures and helpers shared by the end-to-end tests.

Every test starts the real `tributary` binary (`tributary serve`) on `127.0.0.1:0` with a
fresh `--data-dir`, reads the bound address from `<data-dir>/http-addr` and talks to it
over HTTP, as a client would. Nothing here knows the server's internals.

The binary is found at `$TRIBUTARY_BIN`, else `$CARGO_TARGET_DIR/debug/tributary`, else
`<repo>/target/debug/tributary`; `scripts/test.sh` builds it and sets `TRIBUTARY_BIN`.

Waits poll a condition with a deadline; no test sleeps for a fixed time.
"""

from __future__ import annotations

import calendar
import csv
import gzip
import io
import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Upper bound for the server to come up (bind, write `http-addr`, answer `/health`).
STARTUP_TIMEOUT_S = 30.0
#: Upper bound for the server to exit after SIGTERM/SIGINT.
SHUTDOWN_TIMEOUT_S = 30.0
#: Timeout of every HTTP request the tests make: a hang fails the test instead of blocking it.
HTTP_TIMEOUT_S = 60.0
#: How much of the server log a failing test prints.
LOG_TAIL_BYTES = 20_000


def binary_path() -> Path:
    """Where the `tributary` binary under test is."""
    explicit = os.environ.get("TRIBUTARY_BIN")
    if explicit:
        return Path(explicit).resolve()
    target_dir = os.environ.get("CARGO_TARGET_DIR")
    if target_dir:
        # cargo resolves a relative CARGO_TARGET_DIR against its working directory, which
        # for scripts/test.sh is the repository root.
        target = Path(target_dir)
        if not target.is_absolute():
            target = REPO_ROOT / target
        return target / "debug" / "tributary"
    return REPO_ROOT / "target" / "debug" / "tributary"


def poll_until(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.02) -> Any:
    """Call `condition` until it returns something truthy, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class Server:
    """One `tributary serve` process on its own data directory.

    `restart()` starts a new process on the same data directory (and a new port), so a
    `Server` outlives the processes it runs: `.url` and `.proc` always name the current one.
    """

    _ADDR_RE = re.compile(r"^\s*(\[[0-9a-fA-F:.]+\]|[^\s:]+):(\d+)\s*$")

    def __init__(self, binary: Path, data_dir: Path, log_path: Path, extra_args: Iterable[str], env: dict[str, str]):
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra_args = [str(a) for a in extra_args]
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.starts = 0
        # Set when the test stops the process on purpose (kill/terminate), so teardown can
        # tell a crash from a deliberate stop.
        self.stopped_on_purpose = False

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def addr_file(self) -> Path:
        return self.data_dir / "http-addr"

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--http-bind",
            "127.0.0.1:0",
            *self.extra_args,
        ]

    def spawn(self) -> subprocess.Popen:
        """Start the process without waiting for it to be ready."""
        assert self.proc is None or self.proc.poll() is not None, "server is already running"
        # A stale address file from the previous process must not be mistaken for the new one.
        self.addr_file.unlink(missing_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        cmd = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                # Own process group: a Ctrl-C in the terminal reaches pytest, not the server.
                start_new_session=True,
            )
        self.url = None
        self.stopped_on_purpose = False
        return self.proc

    def start(self) -> "Server":
        """Start the process and wait until it answers `/health`."""
        self.spawn()
        self.wait_ready()
        return self

    def _read_addr(self) -> str | None:
        try:
            text = self.addr_file.read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        m = self._ADDR_RE.match(text)
        if not m or int(m.group(2)) == 0:
            return None  # not written yet, or written only in part
        return f"{m.group(1)}:{m.group(2)}"

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                raise AssertionError(
                    f"tributary exited with code {code} during start-up\n"
                    f"command: {' '.join(self.command())}\n--- log tail ---\n{self.log_tail()}"
                )
            addr = self._read_addr()
            if addr is not None:
                url = f"http://{addr}"
                try:
                    if requests.get(f"{url}/health", timeout=2).status_code == 200:
                        self.url = url
                        return
                except requests.RequestException:
                    pass
            if time.monotonic() > deadline:
                state = f"{self.addr_file} holds {addr!r}" if addr else f"{self.addr_file} missing or incomplete"
                raise AssertionError(
                    f"tributary not ready after {timeout_s}s ({state})\n--- log tail ---\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int | None:
        """SIGKILL the process (a crash) and reap it. Returns its exit status."""
        self.stopped_on_purpose = True
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=SHUTDOWN_TIMEOUT_S)

    def terminate(self, sig: int = signal.SIGTERM, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> int:
        """Send SIGTERM (or `sig`) and wait for the process to exit; returns its exit code."""
        self.stopped_on_purpose = True
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"tributary did not exit within {timeout_s}s of signal {sig}\n--- log tail ---\n{self.log_tail()}"
            )

    def expect_exit(self, timeout_s: float = STARTUP_TIMEOUT_S) -> int:
        """Wait for a process that is supposed to exit on its own (e.g. on a bad flag); returns its code."""
        self.stopped_on_purpose = True
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tributary still running after {timeout_s}s\n--- log tail ---\n{self.log_tail()}")

    def restart(self) -> "Server":
        """Start again on the same data directory (new port). Kills the old process if it still runs."""
        if self.running():
            self.kill()
        return self.start()

    # -- logs ----------------------------------------------------------------------------

    def log_text(self) -> str:
        """The server's log so far (all starts), without ANSI colour codes."""
        try:
            return _ANSI_RE.sub("", self.log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return ""

    def log_tail(self, max_bytes: int = LOG_TAIL_BYTES) -> str:
        text = self.log_text()
        return text if len(text) <= max_bytes else "...\n" + text[-max_bytes:]


# -- fixtures ------------------------------------------------------------------------------


def _server_env(extra_env: dict[str, str] | None) -> dict[str, str]:
    # The developer's own TRIBUTARY_* settings must not change what the tests see.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIBUTARY_")}
    env.setdefault("RUST_BACKTRACE", "1")
    env.setdefault("NO_COLOR", "1")  # plain log lines (tracing-subscriber honours NO_COLOR)
    env.update(extra_env or {})
    return env


@pytest.fixture
def start_server(request, tmp_path_factory) -> Callable[..., Server]:
    """Factory: `start_server(*extra_args, env=None, wait=True)` starts a server on a fresh data dir.

    On teardown every server is killed. A server that died during the test without the
    test stopping it, or that logged a panic, fails the test.
    """
    binary = binary_path()
    if not binary.is_file():
        pytest.fail(
            f"tributary binary not found at {binary}: build it with `cargo build --bins` "
            "or set TRIBUTARY_BIN (scripts/test.sh does both)"
        )
    servers: list[Server] = []
    request.node._tributary_servers = servers

    def start(*extra_args: str, env: dict[str, str] | None = None, wait: bool = True) -> Server:
        base = tmp_path_factory.mktemp("tributary")
        server = Server(binary, base / "data", base / "server.log", extra_args, _server_env(env))
        servers.append(server)
        if wait:
            server.start()
        else:
            server.spawn()
        return server

    yield start

    problems = []
    for server in servers:
        crashed = server.proc is not None and server.proc.poll() is not None and not server.stopped_on_purpose
        if server.running():
            server.kill()
        found = []
        if crashed:
            found.append(f"tributary exited with code {server.proc.returncode} during the test")
        if "panicked at" in server.log_text():
            found.append("tributary logged a panic")
        if found:
            problems.append("; ".join(found) + f"\n--- log tail ({server.log_path}) ---\n{server.log_tail()}")
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture
def server(start_server) -> Server:
    """A running server with default flags on its own data directory."""
    return start_server()


@pytest.fixture
def db(request) -> str:
    """A database name unique to this test."""
    return unique_name("db", request.node.name)


def unique_name(prefix: str, hint: str = "") -> str:
    """A valid, unique database/table name: letters, digits and `_`, starting with a letter."""
    slug = re.sub(r"[^a-zA-Z0-9]+", "_", hint).strip("_").lower()[:30]
    return f"{prefix}_{slug}_{uuid.uuid4().hex[:8]}" if slug else f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of each server's log to the report of a failing test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in getattr(item, "_tributary_servers", []):
            report.sections.append((f"tributary log tail ({server.log_path})", server.log_tail()))


# -- HTTP helpers --------------------------------------------------------------------------


def _params(params: dict[str, Any]) -> dict[str, str]:
    """Drop `None` values (so a test can omit a parameter) and spell booleans as the server reads them."""
    out = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _body(body: str | bytes | Iterable[bytes]) -> bytes | Iterable[bytes]:
    return body.encode("utf-8") if isinstance(body, str) else body


def write_lp(server: Server, db: str | None, body, *, headers=None, timeout=HTTP_TIMEOUT_S, **params) -> requests.Response:
    """`POST /api/v3/write_lp?db=..&<params>`; `db=None` leaves the parameter out."""
    return requests.post(
        f"{server.url}/api/v3/write_lp",
        params=_params({"db": db, **params}),
        data=_body(body),
        headers=headers,
        timeout=timeout,
    )


def write_v2(server: Server, bucket: str | None, body, *, org: str | None = "o", headers=None, timeout=HTTP_TIMEOUT_S, **params) -> requests.Response:
    """`POST /api/v2/write?bucket=..&org=..&<params>` (InfluxDB 2 clients)."""
    return requests.post(
        f"{server.url}/api/v2/write",
        params=_params({"bucket": bucket, "org": org, **params}),
        data=_body(body),
        headers=headers,
        timeout=timeout,
    )


def write_v1(server: Server, db: str | None, body, *, headers=None, timeout=HTTP_TIMEOUT_S, **params) -> requests.Response:
    """`POST /write?db=..&<params>` (InfluxDB 1 clients)."""
    return requests.post(
        f"{server.url}/write",
        params=_params({"db": db, **params}),
        data=_body(body),
        headers=headers,
        timeout=timeout,
    )


#: The three write endpoints, by the name tests parametrize over; each takes the
#: database name as its own parameter (`db` or `bucket`).
WRITERS = {"v3": write_lp, "v2": write_v2, "v1": write_v1}


def query_raw(server: Server, db: str | None, sql: str | None, format: str | None = "json", *,
              method: str = "GET", headers=None, timeout=HTTP_TIMEOUT_S) -> requests.Response:
    """`GET|POST /api/v3/query_sql`; POST sends the JSON body `{"db","q","format"}`."""
    url = f"{server.url}/api/v3/query_sql"
    fields = {"db": db, "q": sql, "format": format}
    if method == "GET":
        return requests.get(url, params=_params(fields), headers=headers, timeout=timeout)
    if method == "POST":
        body = {k: v for k, v in fields.items() if v is not None}
        return requests.post(url, json=body, headers=headers, timeout=timeout)
    raise ValueError(method)


def parse_result(resp: requests.Response, format: str) -> Any:
    """Decode a query response body of the given format."""
    if format == "json":
        text = resp.text.strip()
        return json.loads(text) if text else []
    if format == "jsonl":
        return [json.loads(line) for line in resp.text.splitlines() if line.strip()]
    if format == "csv":
        return list(csv.DictReader(io.StringIO(resp.text)))
    if format == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(resp.content))
    return resp.text


def query(server: Server, db: str, sql: str, format: str = "json", *, method: str = "GET") -> Any:
    """Run SQL and return the decoded result (JSON rows by default); any non-200 fails the test."""
    resp = query_raw(server, db, sql, format, method=method)
    assert resp.status_code == 200, f"query {sql!r} on {db!r}: HTTP {resp.status_code}: {resp.text[:2000]}"
    return parse_result(resp, format)


def count_rows(server: Server, db: str, table: str, where: str = "") -> int:
    rows = query(server, db, f'SELECT count(*) AS n FROM "{table}" {where}')
    return int(rows[0]["n"])


def expect_status(resp: requests.Response, status: int) -> requests.Response:
    assert resp.status_code == status, (
        f"{resp.request.method} {resp.url}: expected HTTP {status}, got {resp.status_code}: {resp.text[:2000]}"
    )
    return resp


def json_body(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise AssertionError(f"HTTP {resp.status_code} body is not JSON: {resp.text[:2000]!r}")


def error_message(resp: requests.Response) -> str:
    """The message of a JSON error body: `{"error": ...}` (v1/v3) or `{"code", "message"}` (v2)."""
    body = json_body(resp)
    assert isinstance(body, dict), f"error body is not a JSON object: {body!r}"
    message = body.get("error", body.get("message"))
    assert isinstance(message, str) and message.strip(), f"error body has no message: {body!r}"
    return message


def assert_client_error(resp: requests.Response) -> str:
    """A 4xx with a JSON error message; returns the whole body text for further checks."""
    assert 400 <= resp.status_code < 500, (
        f"{resp.request.method} {resp.url}: expected a 4xx, got {resp.status_code}: {resp.text[:2000]}"
    )
    error_message(resp)
    return resp.text


def assert_healthy(server: Server) -> None:
    resp = requests.get(f"{server.url}/health", timeout=10)
    assert resp.status_code == 200, f"/health answered {resp.status_code}: {resp.text[:500]}"


# -- data helpers --------------------------------------------------------------------------

_TS_RE = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)?$"
)


def ts_ns(value: Any) -> int:
    """Nanoseconds since the epoch of a `time` value as a query result shows it.

    Accepts an RFC 3339 / ISO 8601 string with up to nanosecond digits and an optional
    offset (`1970-01-01T00:00:01`, `...01.000000001Z`), or an integer of nanoseconds.
    """
    if isinstance(value, int):
        return value
    m = _TS_RE.match(str(value).strip())
    assert m, f"not a timestamp: {value!r}"
    y, mo, d, h, mi, s, frac, tz = m.groups()
    seconds = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def gzip_members(*parts: bytes) -> bytes:
    """One gzip member per part, concatenated (a multi-member stream, as `cat a.gz b.gz`)."""
    return b"".join(gzip.compress(p) for p in parts)


def files_under(root: Path, suffix: str = "") -> list[Path]:
    """Files under `root` ending in `suffix`, sorted. `os.walk` skips a directory that garbage
    collection removes during the walk, where `Path.rglob` raises `FileNotFoundError`."""
    return sorted(
        Path(dirpath) / name
        for dirpath, _, names in os.walk(root)
        for name in names
        if name.endswith(suffix)
    )
