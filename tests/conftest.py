"""Fixtures shared by the Python tests."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SINK = Path(os.environ.get("TRACE_SINK_BIN", REPO / "target/release/trace-sink"))


def wait_for_file(proc: subprocess.Popen, path: Path, within: float = 20.0) -> str:
    """The file's text once it exists (written atomically, so whole), waiting at most
    `within` seconds; fails at once if the process exits first."""
    deadline = time.monotonic() + within
    while not path.exists():
        assert proc.poll() is None, f"{proc.args[0]} exited ({proc.returncode}) before writing {path}"
        assert time.monotonic() < deadline, f"no {path} within {within} s"
        time.sleep(0.02)
    return path.read_text()


@pytest.fixture()
def sink(tmp_path):
    """trace-sink on port 0; its bound addresses ({"grpc", "http", "api"}) are read from
    --listen-file, not from its logs."""
    assert SINK.exists(), f"{SINK} missing: build it with cargo build --release (./run-tests.sh does)"
    ports = tmp_path / "sink-ports.json"
    proc = subprocess.Popen(
        [str(SINK), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0",
         "--listen-file", str(ports)],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        addrs = json.loads(wait_for_file(proc, ports))
        assert sorted(addrs) == ["api", "grpc", "http"], addrs
        yield addrs
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0, "trace-sink exits 0 on SIGTERM"
    assert not ports.exists(), "trace-sink removes its listen file at a clean exit"
