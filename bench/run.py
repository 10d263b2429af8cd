#!/usr/bin/env python3
"""Side-by-side benchmark: trace-sink vs the OpenTelemetry Collector, trace-gen vs telemetrygen.

Run it through bench/run.sh (which builds everything first). Prints one table with
ratios and writes it as JSON. Asserts nothing: figures from a shared machine are
not a test. Every figure is the median of --reps runs taken in alternation
(A, B, A, B, ...), so a burst of load from elsewhere hits both sides alike; the
ratios within one run are what to compare, the absolute figures are noisy.

CPU is the CPU time (user + system) of the measured process itself: for a
receiver, the change of utime + stime in /proc/<pid>/stat over the load; for a
generator, the rusage of the finished child (os.wait4). Everything runs on
loopback; every run is bounded by a count or a duration and a timeout.

Sections:
  sink      CPU-s per 1M spans received, trace-sink vs collector (otlp receiver ->
            nop exporter), gRPC batch 100 / 1000, HTTP protobuf / JSON batch 100;
            load from trace-gen at full speed (the same client for both)
  gen       CPU-s per 1M delivered spans, trace-gen vs telemetrygen at one target
            rate (both batch 100, one worker), into the collector; trace-gen at
            full speed into trace-sink
  rate      trace-gen's delivered rate vs its target, 1k / 20k / 100k spans/s,
            into trace-sink and into the collector (counted by the receiver)
  e2e       trace-gen -> agent (the lab's collector, deploy/agent/config.yaml)
            -> trace-sink vs -> collector: delivered spans/s
  stats     GET /stats latency (p50, p99 of 300) with 10,000 routes, agents and generators,
            idle and with one span posted before every request (no answer of the same state)
"""
import argparse
import http.client
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- processes


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime + stime of a live process (all its threads, dead ones included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wait_until(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def stop(proc, timeout=10):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_child(cmd, timeout, env=None):
    """Run a generator to its end; return (exit code, CPU seconds, peak RSS MiB, wall)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = t0 + timeout
    # Peak RSS from /proc while it runs: rusage's ru_maxrss would report this
    # Python process's own size, which Linux carries over the fork and exec.
    rss = 0.0
    try:
        while True:
            try:
                rss = max(rss, peak_rss_mib(p.pid))
            except (OSError, ValueError):
                pass
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.02)
    except BaseException:
        p.kill()
        p.wait()
        raise
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    return p.returncode, ru.ru_utime + ru.ru_stime, rss, time.monotonic() - t0, err


class Sink:
    """trace-sink on loopback, ports chosen by the kernel (read back from its --listen-file)."""

    name = "trace-sink"

    def __init__(self, bins, tmp):
        self.log = open(Path(tmp) / f"sink-{time.monotonic_ns()}.log", "w+")
        ports_file = Path(tmp) / f"sink-{time.monotonic_ns()}.ports.json"
        self.proc = subprocess.Popen(
            [bins["trace-sink"], "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
             "--api-listen", "127.0.0.1:0", "--listen-file", str(ports_file)],
            stdout=subprocess.DEVNULL, stderr=self.log,
            env={**os.environ, "RUST_LOG": "warn,trace_sink=info", "NO_COLOR": "1"})

        # The bound ports from --listen-file (written whole once the sink listens).
        if not wait_until(ports_file.exists, 20):
            stop(self.proc)
            raise RuntimeError("trace-sink did not start")
        ports = json.loads(ports_file.read_text())
        self.grpc, self.http, self.api = ports["grpc"], ports["http"], ports["api"]

    def received(self):
        with urllib.request.urlopen(f"http://{self.api}/stats?summary=true", timeout=10) as r:
            return json.load(r)["spans_total"]

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def rss(self):
        return peak_rss_mib(self.proc.pid)

    def close(self):
        stop(self.proc)
        self.log.close()


COLLECTOR_CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  nop:
service:
  telemetry:
    logs: {{level: warn}}
    metrics:
      readers:
        - pull:
            exporter:
              prometheus: {{host: "127.0.0.1", port: {metrics}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [nop]}}
"""


class Collector:
    """The reference collector: otlp receiver -> nop exporter; counts from its own metrics."""

    name = "collector"

    def __init__(self, bins, tmp):
        g, h, m = free_port(), free_port(), free_port()
        self.grpc, self.http, self.metrics = f"127.0.0.1:{g}", f"127.0.0.1:{h}", f"127.0.0.1:{m}"
        cfg = Path(tmp) / f"collector-{g}.yaml"
        cfg.write_text(COLLECTOR_CONFIG.format(grpc=g, http=h, metrics=m))
        self.log = open(Path(tmp) / f"collector-{g}.log", "w+")
        self.proc = subprocess.Popen([bins["collector"], "--config", str(cfg)],
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        if wait_until(lambda: self._try_received() is not None and port_open(self.grpc)
                      and port_open(self.http), 30) is None:
            stop(self.proc)
            raise RuntimeError(f"collector did not start: see {self.log.name}")

    def _try_received(self):
        try:
            return self.received()
        except OSError:
            return None

    def received(self):
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as r:
            text = r.read().decode()
        total = 0
        for line in text.splitlines():
            if line.startswith("otelcol_receiver_accepted_spans"):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def rss(self):
        return peak_rss_mib(self.proc.pid)

    def close(self):
        stop(self.proc)
        self.log.close()


def port_open(addr):
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


class Agent:
    """The lab's agent (deploy/agent/config.yaml) on a loopback address of its own."""

    def __init__(self, bins, tmp, sink_grpc):
        self.ip = f"127.{77 + os.getpid() % 100}.{os.getpid() % 250 + 1}.{1 + time.monotonic_ns() % 250}"
        self.log = open(Path(tmp) / f"agent-{self.ip}.log", "w+")
        # The agent config is used as the lab and the cluster use it; only its own
        # telemetry is moved off the fixed port 8888 so parallel runs cannot collide.
        override = Path(tmp) / "agent-telemetry.yaml"
        override.write_text("service:\n  telemetry:\n    metrics:\n      level: none\n")
        self.proc = subprocess.Popen(
            [bins["agent"], "--config", str(REPO / "deploy/agent/config.yaml"),
             "--config", str(override)],
            stdout=subprocess.DEVNULL, stderr=self.log,
            env={**os.environ, "MY_POD_IP": self.ip, "MY_NODE_NAME": "bench-node",
                 "SINK_OTLP_ENDPOINT": sink_grpc})
        self.grpc = f"{self.ip}:4317"
        if not wait_until(lambda: health(self.ip), 30):
            stop(self.proc)
            raise RuntimeError(f"agent did not start: see {self.log.name}")

    def close(self):
        stop(self.proc)
        self.log.close()


def health(ip):
    try:
        with urllib.request.urlopen(f"http://{ip}:13133/", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


# ---------------------------------------------------------------- generators


def trace_gen(bins, endpoint, protocol, rate, batch, workers, count=None, duration=None, tmp="/tmp"):
    summary = Path(tmp) / f"gen-{time.monotonic_ns()}.json"
    url = f"http://{endpoint}"
    cmd = [bins["trace-gen"], "--node-name", "bench-node", "--endpoint", url, "--protocol", protocol,
           "--rate", str(rate), "--batch", str(batch), "--workers", str(workers),
           "--stats-listen", "off", "--report-interval", "0s", "--summary-json", str(summary)]
    cmd += ["--count", str(count)] if count else ["--duration", duration]
    rc, cpu, rss, wall, err = run_child(cmd, timeout=180)
    try:
        s = json.loads(summary.read_text())
        summary.unlink()
    except (OSError, ValueError):
        raise RuntimeError(f"trace-gen failed (exit {rc}): {err.strip()[-500:]}")
    return {"cpu": cpu, "rss": rss, "wall": wall, "accepted": s["spans_accepted"],
            "failed": s["spans_failed"], "elapsed": s["elapsed_seconds"], "exit": rc}


def telemetrygen(bins, endpoint, rate, duration, batch):
    cmd = [bins["telemetrygen"], "traces", "--otlp-endpoint", endpoint, "--otlp-insecure",
           "--rate", str(rate), "--duration", duration, "--workers", "1",
           "--batch-size", str(batch), "--interval", "1h"]
    rc, cpu, rss, wall, err = run_child(cmd, timeout=180)
    if rc != 0:
        raise RuntimeError(f"telemetrygen failed (exit {rc}): {err.strip()[-500:]}")
    return {"cpu": cpu, "rss": rss, "wall": wall}


# ---------------------------------------------------------------- sections


def settle(receiver, want, timeout=30):
    """Wait until the receiver has counted `want` spans (or its count stops growing)."""
    last, since = -1, time.monotonic()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        n = receiver.received()
        if n >= want:
            return n
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > 2:
            return n
        time.sleep(0.05)
    return receiver.received()


def settle_stable(receiver, quiet=1.0, timeout=30):
    """The receiver's count once it has not changed for `quiet` seconds."""
    last, since = receiver.received(), time.monotonic()
    end = time.monotonic() + timeout
    while time.monotonic() < end and time.monotonic() - since < quiet:
        time.sleep(0.1)
        n = receiver.received()
        if n != last:
            last, since = n, time.monotonic()
    return last


def sink_cost(bins, tmp, kinds, protocol, batch, seconds):
    """One run: a fresh receiver, trace-gen at full speed for `seconds`, the receiver's CPU per 1M spans."""
    out = {}
    for kind in kinds:
        r = kind(bins, tmp)
        try:
            ep = r.grpc if protocol == "grpc" else r.http
            time.sleep(0.2)
            c0 = r.cpu()
            g = trace_gen(bins, ep, protocol, 0, batch, 4, duration=f"{seconds}s", tmp=tmp)
            got = settle(r, g["accepted"])
            c1 = r.cpu()
            out[r.name] = {"cpu_per_1m": (c1 - c0) / max(got, 1) * 1e6, "received": got,
                           "spans_per_s": g["accepted"] / g["elapsed"], "rss_mib": r.rss()}
        finally:
            r.close()
    return out


def gen_cost(bins, tmp, rate, seconds, batch):
    """trace-gen vs telemetrygen at one target rate into the collector (counted there)."""
    out = {}
    col = Collector(bins, tmp)
    try:
        for name in ("trace-gen", "telemetrygen"):
            before = col.received()
            if name == "trace-gen":
                g = trace_gen(bins, col.grpc, "grpc", rate, batch, 1, duration=f"{seconds}s", tmp=tmp)
            else:
                g = telemetrygen(bins, col.grpc, rate, f"{seconds}s", batch)
            got = settle_stable(col) - before
            out[name] = {"cpu_per_1m": g["cpu"] / max(got, 1) * 1e6, "delivered": got,
                         "rate": got / seconds, "rss_mib": g["rss"]}
    finally:
        col.close()
    return out


def gen_full_speed(bins, tmp, seconds):
    s = Sink(bins, tmp)
    try:
        g = trace_gen(bins, s.grpc, "grpc", 0, 100, 4, duration=f"{seconds}s", tmp=tmp)
        got = settle(s, g["accepted"])
        return {"cpu_per_1m": g["cpu"] / max(got, 1) * 1e6, "spans_per_s": g["accepted"] / g["elapsed"],
                "rss_mib": g["rss"]}
    finally:
        s.close()


def rate_accuracy(bins, tmp, kinds, rate, seconds):
    batch = 10 if rate <= 20000 else 100
    out = {}
    for kind in kinds:
        r = kind(bins, tmp)
        try:
            g = trace_gen(bins, r.grpc, "grpc", rate, batch, 1, duration=f"{seconds}s", tmp=tmp)
            got = settle(r, g["accepted"])
            out[r.name] = {"error_pct": (got / (rate * seconds) - 1) * 100, "delivered": got,
                           "batch": batch}
        finally:
            r.close()
    return out


def e2e(bins, tmp, kinds, seconds):
    out = {}
    for kind in kinds:
        r = kind(bins, tmp)
        a = None
        try:
            a = Agent(bins, tmp, r.grpc)
            c0 = r.cpu()
            t0 = time.monotonic()
            g = trace_gen(bins, a.grpc, "grpc", 0, 100, 4, duration=f"{seconds}s", tmp=tmp)
            got = settle(r, g["accepted"], timeout=60)
            t = time.monotonic() - t0
            out[r.name] = {"spans_per_s": got / t, "delivered": got, "accepted_by_agent": g["accepted"],
                           "receiver_cpu_per_1m": (r.cpu() - c0) / max(got, 1) * 1e6}
        finally:
            if a:
                a.close()
            r.close()
    return out


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(tag, payload):
    return varint((tag << 3) | 2) + varint(len(payload)) + payload


def kv_str(key, value):
    return field(1, key.encode()) + field(2, field(1, value.encode()))


def kv_int(key, value):
    return field(1, key.encode()) + field(2, varint(3 << 3) + varint(value))


def series_request(first, n, seq=1):
    """n resources, each its own generator node, agent node and generator id, one span each."""
    rss = []
    for i in range(first, first + n):
        res = field(1, b"".join(field(1, a) for a in (
            kv_str("k8s.node.name", f"gen-node-{i:05d}"),
            kv_str("agent.node.name", f"agent-node-{i:05d}"),
            kv_str("tracegen.generator.id", f"00000000-0000-4000-8000-{i:012d}"))))
        span = field(1, bytes(16)) + field(2, bytes(8)) + field(5, b"s") + field(9, kv_int("tracegen.seq", seq))
        rss.append(field(1, res + field(2, field(2, span))))
    return b"".join(rss)


def percentile(sorted_times, q):
    """Nearest-rank percentile of sorted values."""
    return sorted_times[max(0, math.ceil(q * len(sorted_times)) - 1)]


def stats_latency(bins, tmp, series, samples):
    """GET /stats with `series` routes, agents and generators: idle (the same
    state for every answer), and changing (one span on an existing series
    posted before every request, so every answer is of a new state and none
    can be served from a cache). Sink CPU per answer: the change of the sink's
    CPU time over the requests / their number; for the changing mode minus
    the cost of the same posts alone, measured before."""
    s = Sink(bins, tmp)
    try:
        host, port = s.http.rsplit(":", 1)
        # A new connection for each phase: an idle one is closed by the sink
        # after --header-read-timeout.
        conns = []

        def post(body, fresh=False):
            if fresh or not conns:
                for c in conns:
                    c.close()
                conns[:] = [http.client.HTTPConnection(host, int(port), timeout=30)]
            ingest = conns[0]
            ingest.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            resp = ingest.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"loading series: HTTP {resp.status}")

        for first in range(0, series, 2000):
            post(series_request(first, min(2000, series - first)))
        # One span each on existing series (the series count stays `series`):
        # the first samples + 1 to measure the posts alone, the others to
        # change the state before every request of the changing mode.
        changes = iter([series_request((k * 7919) % series, 1, seq=2 + k)
                        for k in range(2 * samples + 2)])
        post(next(changes), fresh=True)
        c0 = s.cpu()
        for _ in range(samples):
            post(next(changes))
        post_cpu_ms = (s.cpu() - c0) / samples * 1000
        out = {}
        api_host, api_port = s.api.rsplit(":", 1)
        for label, path, change in (("full", "/stats", False), ("changing", "/stats", True),
                                    ("summary", "/stats?summary=true", False)):
            c = http.client.HTTPConnection(api_host, int(api_port), timeout=30)
            times, size, status = [], 0, 0
            if change:
                post(next(changes), fresh=True)
            c0 = s.cpu()
            for k in range(samples):
                if change:
                    post(next(changes))
                t0 = time.perf_counter()
                c.request("GET", path)
                resp = c.getresponse()
                body = resp.read()
                times.append((time.perf_counter() - t0) * 1000)
                size, status = len(body), resp.status
                if status != 200:
                    raise RuntimeError(f"GET {path}: HTTP {status}")
            cpu_ms = (s.cpu() - c0) / samples * 1000 - (post_cpu_ms if change else 0)
            c.close()
            times.sort()
            out[label] = {"p50_ms": statistics.median(times), "sink_cpu_ms": cpu_ms,
                          "p99_ms": percentile(times, 0.99), "max_ms": times[-1],
                          "bytes": size, "status": status, "path": path, "samples": samples}
        out["changing"]["post_cpu_ms"] = post_cpu_ms
        for c in conns:
            c.close()
        out["series"] = series
        out["rss_mib"] = s.rss()
        return out
    finally:
        s.close()


# ---------------------------------------------------------------- main


def med(runs, *keys):
    vals = []
    for r in runs:
        v = r
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(v)
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bins", required=True, help="JSON: name -> path of each binary")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply span counts and durations")
    ap.add_argument("--only", default="sink,gen,rate,e2e,stats")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so every receiver and agent started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    bins = json.loads(a.bins)
    only = set(a.only.split(","))
    sc = a.scale
    tmp = tempfile.mkdtemp(prefix="trace-bench-")
    res = {"schema": "trace-bench/v1", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "reps": a.reps, "scale": sc, "host": {"cpus": os.cpu_count(), "load1": os.getloadavg()[0]},
           "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip(),
           "runs": {}}
    kinds = (Sink, Collector)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    def rep(name, fn):
        runs = []
        for i in range(a.reps):
            log(f"  {name} run {i + 1}/{a.reps}")
            try:
                runs.append(fn(i))
            except Exception as e:  # a failed run is reported, the others still count
                log(f"    failed: {e}")
                runs.append({"error": str(e)})
        res["runs"][name] = runs
        return runs

    # Alternation: within each run both sides go one after the other, and the order
    # flips every run (A B, B A, A B) so neither always runs first.
    def alt(i):
        return kinds if i % 2 == 0 else kinds[::-1]

    if "sink" in only:
        log("sink cost")
        for proto, batch in (("grpc", 100), ("grpc", 1000), ("http/protobuf", 100), ("http/json", 100)):
            rep(f"sink {proto} batch {batch}",
                lambda i, p=proto, b=batch: sink_cost(bins, tmp, alt(i), p, b, max(1, round(4 * sc))))
    if "gen" in only:
        log("generator cost")
        rep("gen 20000/s", lambda i: gen_cost(bins, tmp, 20000, max(2, round(10 * sc)), 100))
        rep("gen full speed", lambda i: gen_full_speed(bins, tmp, max(2, round(5 * sc))))
    if "rate" in only:
        log("rate accuracy")
        for rate in (1000, 20000, 100000):
            rep(f"rate {rate}", lambda i, r=rate: rate_accuracy(bins, tmp, alt(i), r, max(2, round(6 * sc))))
    if "e2e" in only:
        log("end to end through the agent")
        rep("e2e", lambda i: e2e(bins, tmp, alt(i), max(2, round(5 * sc))))
    if "stats" in only:
        log("/stats latency")
        rep("stats", lambda i: stats_latency(bins, tmp, 10_000, 300))

    rows = table(res)
    res["table"] = rows
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    print_table(res, rows)
    print(f"\nJSON: {a.json}")


def fmt(v, unit=""):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}{unit}"
    if abs(v) >= 10:
        return f"{v:.1f}{unit}"
    return f"{v:.3f}{unit}" if abs(v) < 1 else f"{v:.2f}{unit}"


def table(res):
    """Rows: metric, ours, theirs, ratio (how many times better ours is), target, met."""
    R = res["runs"]
    rows = []

    def row(metric, ours, theirs, lower_better, target=None, goal=None, note=""):
        ratio = None
        if ours and theirs and lower_better is not None:
            ratio = theirs / ours if lower_better else ours / theirs
        met = None
        if goal is not None:
            met = bool(goal(ours, theirs, ratio))
        rows.append({"metric": metric, "ours": ours, "theirs": theirs, "ratio": ratio,
                     "target": target, "met": met, "note": note})

    for name, label, tgt in (("sink grpc batch 100", "sink CPU-s/1M spans, gRPC batch 100", True),
                             ("sink grpc batch 1000", "sink CPU-s/1M spans, gRPC batch 1000", True),
                             ("sink http/protobuf batch 100", "sink CPU-s/1M spans, HTTP protobuf b100", False),
                             ("sink http/json batch 100", "sink CPU-s/1M spans, HTTP JSON b100", False)):
        if name in R:
            row(label, med(R[name], "trace-sink", "cpu_per_1m"), med(R[name], "collector", "cpu_per_1m"),
                True, ">= 3x" if tgt else None,
                (lambda o, t, r: r is not None and r >= 3) if tgt else None)
    for name in ("sink grpc batch 100", "sink grpc batch 1000", "sink http/protobuf batch 100",
                 "sink http/json batch 100"):
        if name in R:
            row(f"peak RSS MiB, {name[5:]}", max((x.get("trace-sink", {}).get("rss_mib", 0) for x in R[name]), default=None),
                max((x.get("collector", {}).get("rss_mib", 0) for x in R[name]), default=None), True)
    if "gen 20000/s" in R:
        g = R["gen 20000/s"]
        row("gen CPU-s/1M delivered @20k/s (vs telemetrygen)", med(g, "trace-gen", "cpu_per_1m"),
            med(g, "telemetrygen", "cpu_per_1m"), True, ">= 10x", lambda o, t, r: r is not None and r >= 10)
        row("gen delivered spans/s @20k/s target", med(g, "trace-gen", "rate"), med(g, "telemetrygen", "rate"), False)
        row("gen peak RSS MiB @20k/s", med(g, "trace-gen", "rss_mib"), med(g, "telemetrygen", "rss_mib"), True)
    if "gen full speed" in R:
        g = R["gen full speed"]
        row("trace-gen CPU-s/1M at full speed (b100, 4 workers)", med(g, "cpu_per_1m"), None, True, "<= 0.5",
            lambda o, t, r: o is not None and o <= 0.5, note=f"{fmt(med(g, 'spans_per_s'))} spans/s")
    for rate in (1000, 20000, 100000):
        name = f"rate {rate}"
        if name in R:
            o, t = med(R[name], "trace-sink", "error_pct"), med(R[name], "collector", "error_pct")
            row(f"trace-gen rate error % @{rate // 1000}k/s (into sink | collector)", o, t, None, "|e| <= 0.5",
                lambda o, t, r: o is not None and t is not None and abs(o) <= 0.5 and abs(t) <= 0.5)
    if "e2e" in R:
        o, t = med(R["e2e"], "trace-sink", "spans_per_s"), med(R["e2e"], "collector", "spans_per_s")
        row("gen -> agent -> X delivered spans/s", o, t, False, ">= 0.9x",
            lambda o, t, r: r is not None and r >= 0.9)
    if "stats" in R:
        s = R["stats"]
        for mode, what in (("full", "idle"), ("changing", "changing")):
            row(f"/stats p50 ms @10k series (full, {what})", med(s, mode, "p50_ms"), None, True)
            row(f"/stats p99 ms @10k series (full, {what})", med(s, mode, "p99_ms"), None, True, "<= 20",
                lambda o, t, r: o is not None and o <= 20, note=f"{fmt(med(s, mode, 'bytes'))} bytes")
            row(f"/stats sink CPU ms per answer @10k series ({what})", med(s, mode, "sink_cpu_ms"), None, True)
        row("/stats p99 ms @10k series (?summary=true)", med(s, "summary", "p99_ms"), None, True, None,
            note=f"{fmt(med(s, 'summary', 'bytes'))} bytes")
    return rows


def table_lines(rows):
    """The table as printed (bench/render.py writes the same lines into bench/README.md)."""
    w = max(len(r["metric"]) for r in rows) if rows else 10
    lines = [f"{'metric':<{w}}  {'trace-*':>10}  {'peer':>10}  {'ratio':>7}  {'target':>10}  met"]
    for r in rows:
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        lines.append(f"{r['metric']:<{w}}  {fmt(r['ours']):>10}  {fmt(r['theirs']):>10}  {ratio:>7}  "
                     f"{r['target'] or '':>10}  {met}  {r['note']}".rstrip())
    lines.append("peer = the OpenTelemetry Collector (otlp receiver -> nop exporter) for receiver rows, "
                 "telemetrygen for generator rows; ratio = how many times better trace-* is.")
    return lines


def print_table(res, rows):
    print(f"trace-gen / trace-sink benchmark  {res['started']}  commit {res['commit']}  "
          f"medians of {res['reps']} alternated runs, {res['host']['cpus']} CPUs (shared: compare ratios)")
    print("\n".join(table_lines(rows)))


if __name__ == "__main__":
    main()
