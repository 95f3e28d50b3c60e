"""The Python examples of docs/python.md, run as a reader would run them.

Every ```python block of the page is extracted, pointed at a fresh server (its
`127.0.0.1:8181` replaced by the server's address) and run top to bottom, in page order, in
its own interpreter (this one: the venv's). The first block writes the database the others
read, so the blocks share one server and run in one test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

DOC = REPO_ROOT / "docs" / "python.md"
#: The address the page's examples use.
DOC_ADDRESS = "127.0.0.1:8181"
#: Upper bound for one block (a hang fails the test instead of blocking it).
BLOCK_TIMEOUT_S = 120

_BLOCK_RE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[str]:
    return _BLOCK_RE.findall(text)


def _text(output: str | bytes | None) -> str:
    # TimeoutExpired may carry bytes even when the run asked for text.
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # gRPC honours http(s)_proxy; the server is on loopback.
    for key in ("NO_PROXY", "no_proxy"):
        env[key] = ",".join(filter(None, [env.get(key, ""), "127.0.0.1", "localhost"]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_blocks_are_found():
    blocks = python_blocks(DOC.read_text())
    # influxdb3-python, ADBC, pyarrow.flight.
    assert len(blocks) >= 3, f"expected at least 3 ```python blocks in {DOC}, found {len(blocks)}"
    for i, block in enumerate(blocks, 1):
        assert DOC_ADDRESS in block, f"block {i} of {DOC} does not use {DOC_ADDRESS}"


def test_python_examples_run(server, tmp_path: Path):
    address = server.url.removeprefix("http://")
    blocks = python_blocks(DOC.read_text())
    assert blocks, f"no ```python blocks in {DOC}"
    for i, block in enumerate(blocks, 1):
        script = tmp_path / f"block_{i}.py"
        script.write_text(block.replace(DOC_ADDRESS, address))
        try:
            proc = subprocess.run(
                [sys.executable, str(script)],
                cwd=tmp_path,
                env=_env(),
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as e:
            raise AssertionError(
                f"python block {i} of {DOC.name} did not finish in {BLOCK_TIMEOUT_S}s\n"
                f"--- stderr ---\n{_text(e.stderr)}\n--- stdout ---\n{_text(e.stdout)}"
            ) from None
        assert proc.returncode == 0, (
            f"python block {i} of {DOC.name} exited with {proc.returncode}\n"
            f"--- block ---\n{block}\n--- stderr ---\n{proc.stderr}\n--- stdout ---\n{proc.stdout[-5000:]}"
        )
