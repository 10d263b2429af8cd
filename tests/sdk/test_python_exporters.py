"""The official Python OTLP exporters (gRPC and HTTP/protobuf, with gzip) as
clients of the real trace-sink binary: counts and routes come out right."""

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

REPO = Path(__file__).resolve().parents[2]
SINK = Path(os.environ.get("TRACE_SINK_BIN", REPO / "target/release/trace-sink"))


@pytest.fixture()
def sink():
    """trace-sink on port 0; the bound addresses are read from its start-up log line."""
    assert SINK.exists(), f"{SINK} missing: build it with cargo build --release (./run-tests.sh does)"
    proc = subprocess.Popen(
        [str(SINK), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
    )
    line = proc.stderr.readline()
    m = re.search(r"OTLP/gRPC on (\S+), OTLP/HTTP on (\S+), API on (\S+)", line)
    assert m, f"unexpected start-up line: {line!r}"
    yield {"grpc": m.group(1), "http": m.group(2), "api": m.group(3)}
    proc.terminate()
    assert proc.wait(timeout=15) == 0, "trace-sink exits 0 on SIGTERM"


def stats(sink):
    with urllib.request.urlopen(f"http://{sink['api']}/stats", timeout=5) as r:
        return json.load(r)


def emit(exporter, gen_node, agent_node, n):
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": "py-sdk", "k8s.node.name": gen_node, "agent.node.name": agent_node}
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("py-sdk")
    for i in range(n):
        with tracer.start_as_current_span(f"op-{i}"):
            pass
    provider.shutdown()


def test_grpc_exporter_gzip(sink):
    """opentelemetry-exporter-otlp-proto-grpc with gzip: 6 local spans."""
    exporter = GrpcExporter(
        endpoint=f"http://{sink['grpc']}", insecure=True, compression=grpc.Compression.Gzip
    )
    emit(exporter, "py-node", "py-node", 6)
    s = stats(sink)
    assert s["spans_total"] == 6
    assert s["local_spans"] == 6
    assert s["requests"]["grpc"]["ok"] == 6
    assert s["routes"] == [
        {**s["routes"][0], "generator_node": "py-node", "agent_node": "py-node", "spans": 6}
    ]


def test_http_exporter_gzip(sink):
    """opentelemetry-exporter-otlp-proto-http with gzip: 4 remote spans."""
    exporter = HttpExporter(endpoint=f"http://{sink['http']}/v1/traces", compression=HttpCompression.Gzip)
    emit(exporter, "py-a", "py-b", 4)
    s = stats(sink)
    assert s["spans_total"] == 4
    assert s["remote_spans"] == 4
    assert s["requests"]["http_protobuf"]["ok"] == 4
    check = urllib.request.Request(f"http://{sink['api']}/check?expect=local")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(check, timeout=5)
    assert e.value.code == 412
    body = json.load(e.value)
    assert "py-a -> py-b: 4" in body["failures"][0]["message"]
