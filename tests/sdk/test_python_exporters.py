"""The official Python OTLP exporters (gRPC and HTTP/protobuf, with gzip) as
clients of the real trace-sink binary: counts and routes come out right. The
`sink` fixture (tests/conftest.py) starts it on port 0 and reads its ports from
--listen-file."""

import json
import urllib.error
import urllib.request

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


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
