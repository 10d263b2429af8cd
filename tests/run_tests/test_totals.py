"""The totals line of ./run-tests.sh: parsed from cargo test's and pytest's own result
lines, printed last even when a step fails, with a non-zero exit status then."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import totals

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

CARGO_OK = """\
     Running unittests src/lib.rs (target/debug/deps/trace_proto-0f1e2d3c)

running 12 tests
test check::tests::local ... ok
test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

     Running tests/api.rs (target/debug/deps/api-1a2b3c)

running 9 tests
test result: ok. 9 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s

   Doc-tests trace_proto

running 1 test
test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.30s
"""

CARGO_FAILED = """\
running 4 tests
test a ... ok
test b ... FAILED
failures:
    b
\x1b[31mtest result: FAILED. 3 passed; 1 failed; 2 ignored; 0 measured; 5 filtered out; finished in 0.02s\x1b[0m

error: test failed, to rerun pass `-p trace-gen --test binary`
"""

PYTEST_Q = """\
..........................................                               [100%]
42 passed in 12.34s
"""

PYTEST_BANNER = """\
FAILED tests/deploy/test_manifests.py::test_x - AssertionError: 1 passed, 2 failed
=========== 2 failed, 40 passed, 1 skipped, 1 error, 3 warnings in 20.01s (0:00:20) ===========
"""


def test_cargo_result_lines_are_added_up():
    """Every `test result:` line counts, doc-tests included."""
    assert totals.count(CARGO_OK) == {"passed": 22, "failed": 0, "skipped": 0}


def test_cargo_failure_with_colour_and_ignored():
    """A FAILED result line (even coloured) counts its failures; ignored tests are skipped."""
    assert totals.count(CARGO_FAILED) == {"passed": 3, "failed": 1, "skipped": 2}


def test_pytest_summary_quiet_and_bannered():
    """pytest's last summary line counts; errors are failures; a test name quoting
    numbers does not."""
    assert totals.count(PYTEST_Q) == {"passed": 42, "failed": 0, "skipped": 0}
    assert totals.count(PYTEST_BANNER) == {"passed": 40, "failed": 3, "skipped": 1}


def test_totals_line_over_several_logs(tmp_path):
    """The command adds every log up into one plain line; skipped shown only when some were."""
    for name, text in [("cargo", CARGO_OK + CARGO_FAILED), ("pytest", PYTEST_BANNER)]:
        (tmp_path / f"{name}.log").write_text(text)
    out = subprocess.run(
        [sys.executable, str(HERE / "totals.py"), *sorted(map(str, tmp_path.glob("*.log")))],
        capture_output=True, text=True, check=True,
    ).stdout
    assert out == "65 passed, 4 failed, 3 skipped\n"
    assert totals.line({"passed": 5, "failed": 0, "skipped": 0}) == "5 passed, 0 failed"


def test_run_tests_prints_totals_last_and_fails_when_a_step_fails(tmp_path):
    """With a cargo that fails its first step, run-tests.sh names the step, still ends
    with the totals line, and exits non-zero."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # go answers the toolchain check (deploy/lib/toolchain.sh) with a version it accepts.
    go = '[ "$1 $2" = "env GOVERSION" ] && echo go1.26.0; exit 0'
    for tool, script in [("cargo", "echo 'error: could not compile' >&2; exit 101"), ("go", go)]:
        path = bin_dir / tool
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    result = subprocess.run(["bash", str(REPO / "run-tests.sh")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 101, result.stdout + result.stderr
    lines = result.stdout.rstrip("\n").splitlines()
    assert lines[-1] == "0 passed, 0 failed", result.stdout
    assert 'step "release binaries (the Dockerfile\'s build command)" failed (exit 101)' in result.stdout
