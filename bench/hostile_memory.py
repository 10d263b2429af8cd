#!/usr/bin/env python3
"""Peak memory of trace-sink under hostile input (prints figures, asserts nothing).

Starts target/release/trace-sink on loopback and sends, phase by phase, the
requests that cost the most memory per byte, printing the sink's peak RSS
(VmHWM) after each phase:
  1. 4 MiB bodies of empty spans (2 bytes each), 8 at once  -> rejected before decoding
  2. the largest accepted request: one span with max-request-elements empty attributes, 8 at once
  3. 4 MiB JSON bodies of {} objects, 8 at once               -> rejected before decoding
  4. 10 000 generators with 256-byte node names and ids       -> the tables at --max-series
  5. 4 MiB JSON bodies with an intValue that is a huge array   -> rejected, never buffered
Usage: bench/hostile_memory.py   (builds nothing: run cargo build --release first)
"""
import concurrent.futures as cf
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SINK = REPO / "target/release/trace-sink"


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
    return bytes([(tag << 3) | 2]) + varint(len(payload)) + payload


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


def peak(pid):
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024


def main():
    if not SINK.exists():
        sys.exit(f"{SINK} missing: cargo build --release --bin trace-sink")
    proc = subprocess.Popen(
        [str(SINK), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        m = re.search(r"OTLP/HTTP on (\S+), API on (\S+)", proc.stderr.readline())
        url = f"http://{m.group(1).rstrip(',')}/v1/traces"
        print(f"{'phase':<62} {'answers':<14} peak RSS MiB")
        print(f"{'idle':<62} {'-':<14} {peak(proc.pid):.1f}")

        empty_spans = request([], [b""] * ((4 * 1024 * 1024 - 64) // 2))
        with cf.ThreadPoolExecutor(8) as ex:
            codes = sorted(set(ex.map(lambda _: post(url, empty_spans), range(8))))
        print(f"{'1. 8 x 4 MiB of empty spans (protobuf)':<62} {str(codes):<14} {peak(proc.pid):.1f}")

        limit = 500_000 - 10
        span = b"".join(field(9, b"") for _ in range(limit))
        body = request([], [span])
        with cf.ThreadPoolExecutor(8) as ex:
            codes = sorted(set(ex.map(lambda _: post(url, body), range(8))))
        print(f"{'2. 8 x one span with ' + str(limit) + ' empty attributes':<62} {str(codes):<14} {peak(proc.pid):.1f}")

        js = b'{"resourceSpans":[{"scopeSpans":[{"spans":[' + b",".join([b"{}"] * 1_300_000) + b"]}]}]}"
        with cf.ThreadPoolExecutor(8) as ex:
            codes = sorted(set(ex.map(lambda _: post(url, js, "application/json"), range(8))))
        print(f"{'3. 8 x 4 MiB of {} spans (JSON)':<62} {str(codes):<14} {peak(proc.pid):.1f}")

        def gen(i):
            name = f"{i:05d}" + "n" * 251
            attrs = [kv("k8s.node.name", name), kv("agent.node.name", name), kv("tracegen.generator.id", name)]
            seq = field(9, field(1, b"tracegen.seq") + field(2, bytes([3 << 3]) + varint(1)))
            return post(url, request(attrs, [seq]))
        with cf.ThreadPoolExecutor(8) as ex:
            codes = sorted(set(ex.map(gen, range(10_000))))
        print(f"{'4. 10 000 generators, 256-byte names (tables full)':<62} {str(codes):<14} {peak(proc.pid):.1f}")

        arr = b",".join([b"0"] * 2_000_000)
        js = (b'{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":{"intValue":['
              + arr + b']}}]}}]}')
        with cf.ThreadPoolExecutor(8) as ex:
            codes = sorted(set(ex.map(lambda _: post(url, js, "application/json"), range(8))))
        print(f"{'5. 8 x 4 MiB JSON, intValue = an array of 2M numbers':<62} {str(codes):<14} {peak(proc.pid):.1f}")
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    main()
