#!/usr/bin/env python3
"""Peak memory of trace-sink under hostile input, held to the documented budget.

Starts target/release/trace-sink on loopback (with the default limits, given
as flags so the budget below is computed from them) and sends, phase by
phase, the requests that cost the most memory per byte, printing the sink's
peak RSS (VmHWM) once each phase is over (every request answered, or the
sink has closed what it closes):
  1. 4 MiB bodies of empty spans (2 bytes each), 8 at once  -> rejected before decoding
  2. the largest accepted request: one span with max-request-elements empty attributes, 8 at once
  3. 4 MiB JSON bodies of {} objects, 8 at once               -> rejected before decoding
  4. 10 000 generators with 256-byte node names and ids       -> the tables at --max-series
  5. 4 MiB JSON bodies with an intValue that is a huge array   -> rejected, never buffered
  6. every generator of phase 4 with more than 1024 gaps       -> gap tables at --max-gaps
  7. 40 clients asking GET /stats (about 15 MB) and never reading the answer
  8. one HTTP/2 connection to the gRPC port sending 200 000 body-less streams
  9. 200 uploads of 4 MiB - 1 byte that then stall              -> the byte budget
After each phase its peak is checked against README "Limits and memory
budget": the terms the sink can have reached by then (base, bodies, decoding,
connections from the start; the tables from phase 4, with the API term for
the /stats size measured then; the gap tables from phase 6). The exit status
is 1 if a phase exceeded its budget, 2 if the run could not be done (a phase
not over within its bound, the binary missing). tests/bench runs it in CI.
Usage: bench/hostile_memory.py   (builds nothing: run cargo build --release first)
The figures are also written to bench/results/hostile-memory-<UTC time>.json and
bench/results/hostile-memory-latest.json (another directory: HOSTILE_MEMORY_OUT), which
bench/render.py turns into docs/limits.md's table.
"""
import concurrent.futures as cf
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import REPO, field, varint  # noqa: E402  (the benchmark's protobuf writer)

SINK = Path(os.environ.get("TRACE_SINK_BIN", REPO / "target/release/trace-sink"))

MIB = 1024 * 1024
# The limits the sink runs with here: its defaults, spelled out.
LIMITS = {
    "max-series": 10_000,
    "max-gaps": 262_144,
    "max-buffered-bytes": 32 * MIB,
    "max-request-bytes": 4 * MIB,
    "max-concurrent-requests": 8,
    "worker-threads": 1,
    "max-connections": 128,
    "max-streams": 16,
}


def budget_terms(stats_bytes):
    """README "Limits and memory budget", term by term, in MiB."""
    lim = LIMITS
    return {
        "base": 10,
        "tables": lim["max-series"] * 6.5 / 1024,
        "gaps": lim["max-gaps"] * 48 / MIB,
        "bodies": lim["max-buffered-bytes"] / MIB,
        "decoding": min(lim["worker-threads"], lim["max-concurrent-requests"]) * 10 * lim["max-request-bytes"] / MIB,
        "api": 2 * 2 * stats_bytes / MIB,
        "conns": 3 * lim["max-connections"] * (64 * 1024 + lim["max-streams"] * 8 * 1024) / MIB,
    }


class NotOver(Exception):
    """A phase did not end within its bound."""


def until(what, within, cond, every=0.05):
    """Waits until cond() is true, at most `within` seconds (an event, not a guessed sleep)."""
    end = time.monotonic() + within
    while not cond():
        if time.monotonic() > end:
            raise NotOver(f"{what}: not within {within} s")
        time.sleep(every)


def tcp_rows():
    """(local, remote, state, rx_queue) of every IPv4 TCP socket here (/proc/net/tcp)."""
    def addr(s):
        ip, port = s.split(":")
        return socket.inet_ntoa(struct.pack("<I", int(ip, 16))), int(port, 16)
    rows = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            rows.append((addr(p[1]), addr(p[2]), int(p[3], 16), int(p[4].split(":")[1], 16)))
    return rows


ESTABLISHED = 1


def sink_ends(listener, clients):
    """The sink's end (state, rx_queue) of each client's connection to `listener`, None when gone."""
    host, port = listener.rsplit(":", 1)
    want = {c: None for c in clients}
    for local, remote, state, rx in tcp_rows():
        if local == (host, int(port)) and remote in want:
            want[remote] = (state, rx)
    return want


def kv(key, value):
    return field(1, key.encode()) + field(2, field(1, value.encode()))


def request(resource_attrs, spans):
    scope = b"".join(field(2, s) for s in spans)
    rs = field(1, b"".join(field(1, a) for a in resource_attrs)) + field(2, scope)
    return field(1, rs)


def post(url, body, ctype="application/x-protobuf"):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def hold_connections(addr, n, first):
    host, port = addr.rsplit(":", 1)
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        if first:
            s.sendall(first)
        socks.append(s)
    return socks


def h2_frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_literal(name, value):
    # Literal header field without indexing, new name (RFC 7541 6.2.2).
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def stream_flood(addr, streams):
    """HEADERS without a body on `streams` streams, without waiting for anything."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b""))
    block = (hpack_literal(b":method", b"POST") + hpack_literal(b":scheme", b"http")
             + hpack_literal(b":path", b"/opentelemetry.proto.collector.trace.v1.TraceService/Export")
             + hpack_literal(b":authority", b"sink") + hpack_literal(b"content-type", b"application/grpc")
             + hpack_literal(b"te", b"trailers"))
    sent = 0
    try:
        batch = []
        for i in range(streams):
            batch.append(h2_frame(1, 0x4, 2 * i + 1, block))  # END_HEADERS, no END_STREAM
            if len(batch) == 1000:
                s.sendall(b"".join(batch))
                sent += len(batch)
                batch = []
        s.sendall(b"".join(batch))
        sent += len(batch)
    except OSError:
        pass  # the sink closed the connection (GOAWAY): what it should do
    return s, sent


def rss(pid):
    """Peak RSS so far and current RSS, in MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    hwm = int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024
    now = int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024
    return hwm, now



HEADER = f"{'phase':<62} {'answers':<14} peak RSS MiB"


def phase_line(phase):
    """One line of the table (bench/render.py writes the same into docs/limits.md)."""
    return (f"{phase['phase']:<62} {phase['answers']:<14} "
            f"{phase['peak_mib']:.1f} (now {phase['now_mib']:.1f})")


def main():
    if not SINK.exists():
        print(f"{SINK} missing: cargo build --release --bin trace-sink", file=sys.stderr)
        return 2
    flags = [f"--{k}={v}" for k, v in LIMITS.items()]
    ports_file = Path(tempfile.mkdtemp(prefix="hostile-memory-")) / "ports.json"
    proc = subprocess.Popen(
        [str(SINK), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0",
         "--listen-file", str(ports_file), *flags],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"},
    )
    over = []
    # The terms that apply so far (see the module doc); the API term grows with /stats.
    applies = {"base", "bodies", "decoding", "conns", "api"}
    stats_bytes = [0]

    phases = []
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load1 = os.getloadavg()[0]

    def peak(phase):
        hwm, now = rss(proc.pid)
        terms = budget_terms(stats_bytes[0])
        budget = sum(v for k, v in terms.items() if k in applies)
        if hwm > budget:
            over.append(f"{phase}: peak {hwm:.1f} MiB > budget {budget:.1f} MiB")
        text = f"{hwm:.1f} (now {now:.1f}) <= {budget:.0f}" if hwm <= budget else f"{hwm:.1f} OVER {budget:.0f}"
        return hwm, now, budget, text

    def report(name, answers_text, key):
        hwm, now, budget, text = peak(key)
        phases.append({"phase": name, "answers": answers_text, "peak_mib": round(hwm, 1),
                       "now_mib": round(now, 1), "budget_mib": round(budget, 1)})
        print(f"{name:<62} {answers_text:<14} {text}", flush=True)

    def answers(phase, codes, expected):
        if codes != expected:
            over.append(f"{phase}: answers {codes}, expected {expected}: its figure would not mean what it says")
        return str(codes)

    def measure_stats():
        with urllib.request.urlopen(f"http://{api_addr}/stats", timeout=60) as r:
            stats_bytes[0] = len(r.read())

    try:
        import threading
        # Keep reading stderr (the final stats line at exit is long).
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        # The bound ports, from --listen-file (written whole once the sink listens).
        until("the sink listening (--listen-file)", 30, lambda: ports_file.exists() or proc.poll() is not None)
        if not ports_file.exists():
            raise NotOver(f"the sink exited ({proc.returncode}) before listening")
        ports = json.loads(ports_file.read_text())
        grpc_addr, http_addr, api_addr = ports["grpc"], ports["http"], ports["api"]
        url = f"http://{http_addr}/v1/traces"
        print(f"{'phase':<62} {'answers':<14} peak RSS MiB <= budget")
        report('idle', '-', 'idle')

        empty_spans = request([], [b""] * ((4 * 1024 * 1024 - 64) // 2))
        with cf.ThreadPoolExecutor(8) as ex:
            codes = sorted(set(ex.map(lambda _: post(url, empty_spans), range(8))))
        report('1. 8 x 4 MiB of empty spans (protobuf)', answers('phase 1', codes, [413]), 'phase 1')

        limit = 500_000 - 10
        span = b"".join(field(9, b"") for _ in range(limit))
        body = request([], [span])
        with cf.ThreadPoolExecutor(8) as ex:
            codes = sorted(set(ex.map(lambda _: post(url, body), range(8))))
        report('2. 8 x one span with ' + str(limit) + ' empty attributes', answers('phase 2', codes, [200]), 'phase 2')

        js = b'{"resourceSpans":[{"scopeSpans":[{"spans":[' + b",".join([b"{}"] * 1_300_000) + b"]}]}]}"
        with cf.ThreadPoolExecutor(8) as ex:
            codes = sorted(set(ex.map(lambda _: post(url, js, "application/json"), range(8))))
        report('3. 8 x 4 MiB of {} spans (JSON)', answers('phase 3', codes, [413]), 'phase 3')

        def gen(i):
            name = f"{i:05d}" + "n" * 251
            attrs = [kv("k8s.node.name", name), kv("agent.node.name", name), kv("tracegen.generator.id", name)]
            seq = field(9, field(1, b"tracegen.seq") + field(2, bytes([3 << 3]) + varint(1)))
            return post(url, request(attrs, [seq]))
        with cf.ThreadPoolExecutor(8) as ex:
            codes = sorted(set(ex.map(gen, range(10_000))))
        applies.add("tables")
        measure_stats()
        report('4. 10 000 generators, 256-byte names (tables full)', answers('phase 4', codes, [200]), 'phase 4')

        arr = b",".join([b"0"] * 2_000_000)
        js = (b'{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":{"intValue":['
              + arr + b']}}]}}]}')
        with cf.ThreadPoolExecutor(8) as ex:
            codes = sorted(set(ex.map(lambda _: post(url, js, "application/json"), range(8))))
        report('5. 8 x 4 MiB JSON, intValue = an array of 2M numbers', answers('phase 5', codes, [400]), 'phase 5')

        def gaps(first):
            resources = b""
            for i in range(first, first + 10):
                name = f"{i:05d}" + "n" * 251
                attrs = [kv("k8s.node.name", name), kv("agent.node.name", name), kv("tracegen.generator.id", name)]
                spans = [field(9, field(1, b"tracegen.seq") + field(2, bytes([3 << 3]) + varint(2 * k + 10)))
                         for k in range(1100)]
                rs = field(1, b"".join(field(1, a) for a in attrs)) + field(2, b"".join(field(2, s) for s in spans))
                resources += field(1, rs)
            return post(url, resources)
        with cf.ThreadPoolExecutor(8) as ex:
            codes = sorted(set(ex.map(gaps, range(0, 10_000, 10))))
        applies.add("gaps")
        measure_stats()
        report('6. the 10 000 generators, 1100 gaps each (gap tables full)', answers('phase 6', codes, [200]), 'phase 6')

        readers = hold_connections(api_addr, 40, b"GET /stats HTTP/1.1\r\nHost: sink\r\n\r\n")
        # Over when the sink has dropped 3 unread answers (2 are built at a
        # time; each is dropped, its connection closed, after 2 s untaken):
        # a slot was taken again after a drop, the steady state of this phase.
        clients = [r.getsockname() for r in readers]
        until("3 unread /stats answers dropped", 120, lambda: sum(
            1 for e in sink_ends(api_addr, clients).values() if e is None or e[0] != ESTABLISHED) >= 3)
        report('7. 40 x GET /stats never read', '-', 'phase 7')
        for r in readers:
            r.close()

        conn, sent = stream_flood(grpc_addr, 200_000)
        # Over when the sink has closed the connection (EOF or reset).
        conn.settimeout(60)
        try:
            while conn.recv(65536):
                pass
        except socket.timeout:
            raise NotOver("the stream flood's connection not closed within 60 s") from None
        except OSError:
            pass
        report('8. 200 000 body-less HTTP/2 streams on one connection', str(sent) + ' sent', 'phase 8')
        conn.close()

        head = (b"POST /v1/traces HTTP/1.1\r\nHost: sink\r\nContent-Type: application/x-protobuf\r\n"
                b"Content-Length: 4194304\r\n\r\n")
        stalled = []
        chunk = b"\n" * (4 * 1024 * 1024 - 1)

        def stall(_):
            host, port = http_addr.rsplit(":", 1)
            s = socket.create_connection((host, int(port)))
            s.settimeout(5)
            try:
                s.sendall(head + chunk)
            except OSError:
                pass
            return s
        with cf.ThreadPoolExecutor(16) as ex:
            stalled = list(ex.map(stall, range(200)))
        # Over when the sink has taken in what it will: at every connection's
        # end it has read everything sent, or closed it.
        clients = [s.getsockname() for s in stalled]
        until("the stalled uploads taken in", 120, lambda: all(
            e is None or e[0] != ESTABLISHED or e[1] == 0 for e in sink_ends(http_addr, clients).values()))
        report('9. 200 uploads of 4 MiB - 1 byte, then stalled', '-', 'phase 9')
        for s in stalled:
            s.close()
    except NotOver as e:
        print(f"hostile_memory: {e}", file=sys.stderr)
        return 2
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    res = {
        "schema": "trace-bench/hostile-memory/v1",
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
        "host": {"cpus": os.cpu_count(), "load1": load1},
        "within_budget": not over,
        "phases": phases,
    }
    out = Path(os.environ.get("HOSTILE_MEMORY_OUT", REPO / "bench/results"))
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(res, indent=1) + "\n"
    (out / f"hostile-memory-{started}.json").write_text(text)
    (out / "hostile-memory-latest.json").write_text(text)
    print(f"\nJSON: {out / 'hostile-memory-latest.json'}")
    if over:
        print("hostile_memory: failed:\n  " + "\n  ".join(over), file=sys.stderr)
        return 1
    print("hostile_memory: every phase within the documented budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
