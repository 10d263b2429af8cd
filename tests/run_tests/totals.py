#!/usr/bin/env python3
"""The totals line of ./run-tests.sh: `N passed, N failed[, N skipped]` over the whole run.

Reads the captured output of `cargo test` (one `test result:` line per test binary and
doc-test run) and of pytest (its final summary line), and adds them up. Only the tools'
own result lines count: a step that died before printing one (a compile error) adds
nothing here, which is why run-tests.sh also exits non-zero and names the failed step.

Usage: totals.py LOG...   (standard library only: it must run even if the venv failed)
"""

import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s
CARGO = re.compile(
    r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored; \d+ measured;"
)
# pytest: "==== 3 failed, 40 passed, 1 skipped, 2 warnings in 12.34s ====" or, with -q,
# "40 passed in 1.2s"; also "no tests ran in 0.01s".
PYTEST = re.compile(r"^=*\s*((?:\d+ [a-z]+(?:, )?)+) in \d+(?:\.\d+)?s\b")
PYTEST_KINDS = {
    "passed": "passed",
    "xpassed": "passed",
    "failed": "failed",
    "error": "failed",
    "errors": "failed",
    "skipped": "skipped",
    "xfailed": "skipped",
}


def count(text):
    """Totals {passed, failed, skipped} of one captured output."""
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    last_pytest = None
    for raw in text.splitlines():
        line = ANSI.sub("", raw).strip()
        m = CARGO.match(line)
        if m:
            totals["passed"] += int(m.group(1))
            totals["failed"] += int(m.group(2))
            totals["skipped"] += int(m.group(3))
            continue
        m = PYTEST.match(line)
        if m:
            last_pytest = m.group(1)
    if last_pytest:
        for part in last_pytest.split(", "):
            n, kind = part.split(" ", 1)
            if kind in PYTEST_KINDS:
                totals[PYTEST_KINDS[kind]] += int(n)
    return totals


def line(totals):
    """`N passed, N failed`, with `, N skipped` only when some were."""
    s = f"{totals['passed']} passed, {totals['failed']} failed"
    if totals["skipped"]:
        s += f", {totals['skipped']} skipped"
    return s


def main(paths):
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        for k, v in count(text).items():
            totals[k] += v
    print(line(totals))


if __name__ == "__main__":
    main(sys.argv[1:])
