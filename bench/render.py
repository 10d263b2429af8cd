#!/usr/bin/env python3
"""Write the measured figures of the docs from the results files, so they cannot drift.

Every performance and memory figure in the Markdown pages listed in PAGES stands between
markers, `<!-- render:NAME -->...<!-- /render -->`, and is written by this script from
bench/results/*.json (the benchmark's latest.json, the hostile-memory run, the two baselines) and
verify/results/ (trace-verify's policy matrix on the lab)
or, for the memory budget, computed from the defaults in docs/trace-sink.md's flag table.
Edit a figure by hand and `--check` (run by tests/docs/test_rendered.py) fails; re-run the
measurement instead, then this script.

Usage: bench/render.py            rewrite the marked figures in place
       bench/render.py --check    exit 1 and name the pages whose figures differ
"""
import argparse
import json
import re
import statistics
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import fmt, table_lines  # noqa: E402  (the benchmark's own table format)

PAGES = ["bench/README.md", "docs/limits.md", "docs/trace-gen.md", "docs/trace-sink.md", "docs/choosing-a-policy.md"]
MARKER = re.compile(r"<!-- render:([a-z0-9_.]+) -->(.*?)<!-- /render -->", re.S)

LATEST = "bench/results/latest.json"
HOSTILE = "bench/results/hostile-memory-latest.json"
BASELINE = "bench/results/baseline-main-d7b1ec4.json"
STATS_BEFORE = "bench/results/stats-before-main-839029a.json"
# trace-verify's whole matrix on the lab (its results JSON, schema trace-verify/results/v1)
POLICY_MATRIX = "verify/results/lab-matrix.json"
# an earlier run of the same matrix (the agent as in production), quoted for a cell that varies
POLICY_MATRIX_EARLIER = "verify/results/lab-matrix-2026-12-06.json"
# Everything the figures are read from, besides PAGES (docs/trace-sink.md gives the defaults).
INPUTS = [LATEST, HOSTILE, BASELINE, STATS_BEFORE, POLICY_MATRIX, POLICY_MATRIX_EARLIER,
          "deploy/sink/deployment.yaml"]


def measured(res):
    """Where and when a results file was measured: `commit abc1234, 2026-11-26`."""
    return f"commit {res['commit']}, {res['finished'][:10]}"


def minutes(res):
    """How long a run took, from its `started` and `finished` times."""
    start, end = (datetime.strptime(res[k], "%Y-%m-%dT%H:%M:%SZ") for k in ("started", "finished"))
    return (end - start).total_seconds() / 60


def block(lines):
    return "\n```\n" + "\n".join(lines) + "\n```\n"


def bench_values(root):
    latest = json.loads((root / LATEST).read_text())
    rows = {r["metric"]: r for r in latest["table"]}

    def row(metric):
        return rows[metric]

    v = {
        "bench.measured": measured(latest),
        "bench.load": f"{latest['host']['load1']:.1f}",
        "bench.duration": f"{minutes(latest):.0f} minutes",
        "bench.table": block(table_lines(latest["table"])),
    }
    met = [r["met"] for r in latest["table"] if r["met"] is not None]
    v["bench.targets"] = ("every target is met" if all(met)
                          else f"{sum(met)} of {len(met)} targets are met (column `met`)")
    b100 = row("sink CPU-s/1M spans, gRPC batch 100")
    b1000 = row("sink CPU-s/1M spans, gRPC batch 1000")
    v["sink.b100.cpu"] = fmt(b100["ours"])
    v["sink.b100.ratio"] = f"{b100['ratio']:.1f}x"
    v["sink.b1000.ratio"] = f"{b1000['ratio']:.1f}x"
    rate = statistics.median(r["trace-sink"]["spans_per_s"]
                             for r in latest["runs"]["sink grpc batch 100"])
    v["sink.b100.rate"] = f"{rate / 1e6:.2f} M spans/s"
    full = row("trace-gen CPU-s/1M at full speed (b100, 4 workers)")
    v["gen.full.cpu"] = fmt(full["ours"])
    v["gen.full.rate"] = full["note"]
    idle, changing = (row(f"/stats p99 ms @10k series (full, {m})") for m in ("idle", "changing"))
    lo, hi = sorted((idle["ours"], changing["ours"]))
    v["stats.p99"] = f"{lo:.1f}-{hi:.1f} ms"
    cpu = sorted(row(f"/stats sink CPU ms per answer @10k series ({m})")["ours"]
                 for m in ("idle", "changing"))
    v["stats.cpu"] = f"{cpu[0]:.1f}-{cpu[1]:.1f} ms"
    summary = row("/stats p99 ms @10k series (?summary=true)")
    v["stats.summary.p99"] = f"{summary['ours']:.2f} ms"
    v["stats.summary.bytes"] = f"{float(summary['note'].split()[0]):.0f} bytes"

    base = json.loads((root / BASELINE).read_text())
    brows = {r["metric"]: r for r in base["table"]}
    v["baseline.measured"] = measured(base)
    v["baseline.b100.ratio"] = f"{brows['sink CPU-s/1M spans, gRPC batch 100']['ratio']:.2f}x"
    v["baseline.b1000.ratio"] = f"{brows['sink CPU-s/1M spans, gRPC batch 1000']['ratio']:.2f}x"
    v["baseline.gen.full.cpu"] = f"{brows['trace-gen CPU-s/1M at full speed (b100, 4 workers)']['ours']:.2f}"
    errors = [abs(r[k]) for m, r in brows.items() if m.startswith("trace-gen rate error")
              for k in ("ours", "theirs")]
    v["baseline.rate.errors"] = f"-{min(errors):.0f}% to -{max(errors):.0f}%"
    v["baseline.e2e.ratio"] = f"{brows['gen -> agent -> X delivered spans/s']['ratio']:.2f}x"

    before = json.loads((root / STATS_BEFORE).read_text())
    srows = {r["metric"]: r["ours"] for r in before["table"]}
    v["stats_before.measured"] = measured(before)
    v["stats_before.idle"] = (f"p50 {srows['/stats p50 ms @10k series (full, idle)']:.0f} ms and "
                              f"p99 {srows['/stats p99 ms @10k series (full, idle)']:.0f} ms idle")
    v["stats_before.changing"] = (f"p50 {srows['/stats p50 ms @10k series (full, changing)']:.0f} ms and "
                                  f"p99 {srows['/stats p99 ms @10k series (full, changing)']:.0f} ms changing")
    bcpu = sorted(srows[f"/stats sink CPU ms per answer @10k series ({m})"] for m in ("idle", "changing"))
    v["stats_before.cpu"] = f"{bcpu[0]:.0f}-{bcpu[1]:.0f} ms"
    v["stats_before.summary.p99"] = f"{srows['/stats p99 ms @10k series (?summary=true)']:.0f} ms"
    return v


def hostile_values(root):
    res = json.loads((root / HOSTILE).read_text())
    from hostile_memory import HEADER, phase_line  # noqa: E402  (the script's own format)

    phases = res["phases"]
    v = {
        "hostile.measured": measured(res),
        "hostile.table": block(["$ bench/hostile_memory.py", HEADER] + [phase_line(p) for p in phases]),
        "hostile.peak": f"{max(p['peak_mib'] for p in phases):.0f} MiB",
    }
    steps = [(b["peak_mib"] - a["peak_mib"], b["phase"]) for a, b in zip(phases, phases[1:])]
    rise, name = max(steps)
    v["hostile.largest"] = f"{name.split('. ', 1)[-1]} (+{rise:.0f} MiB)"
    flat = [n.split(". ", 1)[0] for r, n in steps if r < 1.0]
    v["hostile.flat"] = ", ".join(flat) if flat else "none"
    return v


def policy_values(root):
    """docs/choosing-a-policy.md: the policy x event matrix (remote / lost spans per cell) and
    how long the run took, from trace-verify's results file."""
    res = json.loads((root / POLICY_MATRIX).read_text())
    policies, events = res["options"]["policies"], res["options"]["events"]
    cells = {(c["policy"], c["event"]): c for c in res["matrix"]}
    titles = {s["event"]: s["title"] for s in res["steps"]}
    names = {"local": "Local", "prefer-same-node": "PreferSameNode", "cluster": "Cluster (control)"}
    lines = ["| event | " + " | ".join(names.get(p, p) for p in policies) + " |",
             "|---" * (len(policies) + 1) + "|"]
    for e in events:
        row = [f"{cells[(p, e)]['remote']} / {cells[(p, e)]['lost']}" for p in policies]
        lines.append(f"| {titles.get(e, e)} | " + " | ".join(row) + " |")
    start, end = (datetime.strptime(res[k][:19], "%Y-%m-%dT%H:%M:%S") for k in ("started", "finished"))
    if not res.get("commit"):
        raise SystemExit(f"render.py: {POLICY_MATRIX} names no commit (trace-verify built outside a git checkout)")
    earlier = json.loads((root / POLICY_MATRIX_EARLIER).read_text())
    lost = {(c["policy"], c["event"]): c["lost"] for c in earlier["matrix"]}
    return {
        "policy.local_mu_lost": str(cells[("local", "rolling-max-unavailable")]["lost"]),
        "policy.earlier_local_mu_lost": str(lost[("local", "rolling-max-unavailable")]),
        "policy.table": "\n" + "\n".join(lines) + "\n",
        "policy.date": res["started"][:10],
        "policy.commit": res["commit"],
        "policy.seconds": f"{(end - start).total_seconds():.0f} s",
        "policy.all_pass": "every cell came out as its policy promises" if all(c["pass"] for c in res["matrix"])
        else "not every cell came out as its policy promises",
    }


def flag_default(flags_table, flag):
    """The default column of a flag's row in docs/trace-sink.md's flag table, as an int."""
    m = re.search(r"^\| `" + re.escape(flag) + r"` \|[^|]*\| `(\d+)` \|", flags_table, re.M)
    if not m:
        raise SystemExit(f"render.py: no numeric default for {flag} in docs/trace-sink.md")
    return int(m.group(1))


# The per-entry sizes of docs/limits.md's budget formula (a test holds the two together).
BUDGET = {"base_mib": 10, "entry_kib": 6.5, "gap_b": 48, "decode_factor": 10, "stats_kib": 1.5,
          "conn_kib": 64, "stream_kib": 8}


def budget_values(root):
    """The memory budget of docs/limits.md with the defaults: each term, then the sum."""
    flags = (root / "docs/trace-sink.md").read_text()
    d = {f: flag_default(flags, f) for f in (
        "--max-series", "--max-gaps", "--max-buffered-bytes", "--max-concurrent-requests",
        "--max-request-bytes", "--max-connections", "--max-streams", "--worker-threads")}
    mib = 1024 * 1024
    b = BUDGET
    terms = [
        b["base_mib"],
        d["--max-series"] * b["entry_kib"] * 1024 / mib,          # tables
        d["--max-gaps"] * b["gap_b"] / mib,                       # gaps
        d["--max-buffered-bytes"] / mib,                          # bodies
        min(d["--worker-threads"], d["--max-concurrent-requests"]) * b["decode_factor"] * d["--max-request-bytes"] / mib,
        2 * 2 * d["--max-series"] * b["stats_kib"] * 1024 / mib,  # API
        3 * d["--max-connections"] * (b["conn_kib"] + d["--max-streams"] * b["stream_kib"]) * 1024 / mib,
    ]
    limit = sink_memory_limit_mib(root / "deploy/sink/deployment.yaml")
    return {
        "budget.sum": " + ".join(f"{t:.0f}" for t in terms) + f" ≈ {sum(terms):.0f} MiB",
        "budget.mib": sum(terms),
        "deploy.limit": f"{limit}Mi",
        "deploy.limit.mib": limit,
    }


def sink_memory_limit_mib(path):
    """The sink container's memory limit in Mi, read from its Deployment (YAML parsed)."""
    import yaml  # tests/requirements.txt (PyYAML); only this page figure needs it
    for doc in yaml.safe_load_all(path.read_text()):
        if (doc or {}).get("kind") != "Deployment":
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            if c.get("name") == "trace-sink":
                limit = str(((c.get("resources") or {}).get("limits") or {}).get("memory", ""))
                if limit.endswith("Mi") and limit[:-2].isdigit():
                    return int(limit[:-2])
    raise SystemExit(f"render.py: no memory limit in Mi for the trace-sink container in {path}")


def values(root):
    v = {}
    for part in (bench_values, hostile_values, budget_values, policy_values):
        v.update(part(root))
    return v


def render_text(text, vals, page="page"):
    """The page with every marked figure rewritten; an unknown name stops with exit 2."""
    def one(m):
        name = m.group(1)
        if name not in vals:
            raise SystemExit(f"render.py: {page}: unknown figure {name!r}")
        return f"<!-- render:{name} -->{vals[name]}<!-- /render -->"
    return MARKER.sub(one, text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page differs")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent), help=argparse.SUPPRESS)
    a = ap.parse_args()
    root = Path(a.root)
    vals = values(root)
    stale = []
    for page in PAGES:
        path = root / page
        text = path.read_text()
        new = render_text(text, vals, page)
        if new != text:
            stale.append(page)
            if not a.check:
                path.write_text(new)
    if a.check and stale:
        print("render.py: figures differ from bench/results (edited by hand, or the results are new): "
              + ", ".join(stale) + "; run bench/render.py", file=sys.stderr)
        return 1
    for page in stale:
        print(f"render.py: rewrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
