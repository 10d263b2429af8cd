//! A real OTLP client nobody here wrote: the official Rust `opentelemetry-otlp`
//! exporter (gRPC with gzip, HTTP protobuf, HTTP JSON) sends spans with resource
//! attributes; the sink counts and attributes them.

mod common;

use common::*;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Tracer, TracerProvider};
use opentelemetry_otlp::{Compression, Protocol, SpanExporter, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

fn resource(gen_node: &str, agent_node: &str) -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "sdk-test"),
            KeyValue::new(trace_proto::keys::GENERATOR_NODE, gen_node.to_owned()),
            KeyValue::new(trace_proto::keys::AGENT_NODE, agent_node.to_owned()),
        ])
        .build()
}

/// Emits `n` spans through `exporter` with a simple (synchronous) processor, then shuts down.
fn emit(exporter: SpanExporter, res: Resource, n: usize) {
    let provider = SdkTracerProvider::builder()
        .with_resource(res)
        .with_simple_exporter(exporter)
        .build();
    let tracer = provider.tracer("sdk-test");
    for _ in 0..n {
        tracer.in_span("op", |_| {});
    }
    provider.force_flush().unwrap();
    provider.shutdown().unwrap();
}

/// gRPC (tonic, gzip): 7 spans from node a via agent a.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_exporter() {
    let sink = start_default().await;
    let endpoint = format!("http://{}", sink.grpc_addr().unwrap());
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _guard = handle.enter();
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_compression(Compression::Gzip)
            .build()
            .unwrap();
        emit(exporter, resource("a", "a"), 7);
    })
    .await
    .unwrap();
    let s = sink.stats();
    assert_eq!(s.spans_total, 7);
    assert_eq!(s.local_spans, 7);
    assert_eq!(s.routes[0].generator_node.as_deref(), Some("a"));
    assert_eq!(s.requests["grpc"]["ok"], 7);
    sink.shutdown().await;
}

/// HTTP protobuf and HTTP JSON: spans from node b via agent c are remote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_exporters() {
    let sink = start_default().await;
    let endpoint = traces_url(&sink);
    tokio::task::spawn_blocking(move || {
        for (protocol, n) in [(Protocol::HttpBinary, 4), (Protocol::HttpJson, 3)] {
            let exporter = SpanExporter::builder()
                .with_http()
                .with_endpoint(endpoint.clone())
                .with_protocol(protocol)
                .build()
                .unwrap();
            emit(exporter, resource("b", "c"), n);
        }
    })
    .await
    .unwrap();
    let s = sink.stats();
    assert_eq!(s.spans_total, 7);
    assert_eq!(s.remote_spans, 7);
    assert_eq!(s.requests["http_protobuf"]["ok"], 4);
    assert_eq!(s.requests["http_json"]["ok"], 3);
    sink.shutdown().await;
}
