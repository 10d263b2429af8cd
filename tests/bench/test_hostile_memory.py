"""bench/hostile_memory.py, which backs the figures of README "Limits and
memory budget", run as a test: every phase of hostile input leaves the
release binary's peak memory within the documented budget, and each phase
got the answers its figure assumes. Bounded: the script waits for events
with bounds of its own, and the whole run gets 15 minutes (about 2 on a
loaded 2-core machine)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SINK = Path(os.environ.get("TRACE_SINK_BIN", REPO / "target/release/trace-sink"))


def test_hostile_input_stays_within_the_memory_budget(tmp_path):
    assert SINK.exists(), f"{SINK} missing: build it with cargo build --release (./run-tests.sh does)"
    r = subprocess.run(
        [sys.executable, str(REPO / "bench/hostile_memory.py")],
        capture_output=True,
        text=True,
        timeout=900,
        # Its results go to a scratch directory: bench/results holds the documented run.
        env={**os.environ, "HOSTILE_MEMORY_OUT": str(tmp_path)},
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "every phase within the documented budget" in r.stdout, out
    phases = re.findall(r"^(\d)\. .* <= \d+$", r.stdout, re.M)
    assert phases == [str(n) for n in range(1, 10)], out
    written = json.loads((tmp_path / "hostile-memory-latest.json").read_text())
    assert written["within_budget"] is True
    assert [p["peak_mib"] <= p["budget_mib"] for p in written["phases"]] == [True] * 10
