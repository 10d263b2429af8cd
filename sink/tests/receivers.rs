//! The OTLP receivers accept what the specification allows and count exactly.

mod common;

use common::*;
use prost::Message;
use tonic::codec::CompressionEncoding;
use trace_proto::otlp::ExportTraceServiceResponse;

/// OTLP/gRPC, plain and gzip: every span counted, routes carry both nodes.
#[tokio::test]
async fn grpc_plain_and_gzip() {
    let sink = start_default().await;
    let mut c = grpc_client(&sink).await;
    c.export(request(Some("n1"), Some("n1"), "g1", 1..=10))
        .await
        .unwrap();
    let mut cz = grpc_client(&sink)
        .await
        .send_compressed(CompressionEncoding::Gzip);
    cz.export(request(Some("n1"), Some("n2"), "g1", 11..=15))
        .await
        .unwrap();
    let s = sink.stats();
    assert_eq!(s.spans_total, 15);
    assert_eq!(s.local_spans, 10);
    assert_eq!(s.remote_spans, 5);
    assert_eq!(s.requests["grpc"]["ok"], 2);
    assert_eq!(s.generators[0].missing, 0);
    assert_eq!(s.generators[0].max_seq, Some(15));
    let routes: Vec<_> = s
        .routes
        .iter()
        .map(|r| {
            (
                r.generator_node.as_deref(),
                r.agent_node.as_deref(),
                r.spans,
            )
        })
        .collect();
    assert_eq!(
        routes,
        vec![(Some("n1"), Some("n1"), 10), (Some("n1"), Some("n2"), 5)]
    );
    sink.shutdown().await;
}

/// OTLP/HTTP protobuf, plain and gzip: 200 with a protobuf ExportTraceServiceResponse.
#[tokio::test]
async fn http_protobuf_plain_and_gzip() {
    let sink = start_default().await;
    for (gz, seqs) in [(false, 1..=4), (true, 5..=7)] {
        let resp = post_protobuf(&sink, &request(Some("a"), Some("a"), "g", seqs), gz).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
        ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    }
    let s = sink.stats();
    assert_eq!((s.spans_total, s.local_spans), (7, 7));
    assert_eq!(s.requests["http_protobuf"]["ok"], 2);
    assert_eq!(s.generators[0].missing, 0);
    sink.shutdown().await;
}

/// OTLP/HTTP JSON, plain and gzip: 200 with a JSON response.
#[tokio::test]
async fn http_json_plain_and_gzip() {
    let sink = start_default().await;
    for (gz, seqs) in [(false, 1..=3), (true, 4..=6)] {
        let resp = post_json(&sink, &request(Some("a"), None, "g", seqs), gz).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert!(v.is_object());
    }
    let s = sink.stats();
    assert_eq!((s.spans_total, s.unattributed_spans), (6, 6));
    assert_eq!(s.requests["http_json"]["ok"], 2);
    assert_eq!(s.routes[0].agent_node, None);
    sink.shutdown().await;
}

/// Hand-written OTLP/JSON as the specification shows it: hex ids, camelCase,
/// int64 as strings; and `{}` is a valid empty request.
#[tokio::test]
async fn http_json_spec_encoding_and_empty_body() {
    let sink = start_default().await;
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[
        {"key":"k8s.node.name","value":{"stringValue":"n1"}},
        {"key":"agent.node.name","value":{"stringValue":"n1"}},
        {"key":"tracegen.generator.id","value":{"stringValue":"g-json"}}]},
      "scopeSpans":[{"scope":{"name":"manual"},"spans":[
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"a","kind":2,
         "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
         "attributes":[{"key":"tracegen.seq","value":{"intValue":"1"}}]},
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","name":"b","kind":2,
         "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
         "attributes":[{"key":"tracegen.seq","value":{"intValue":3}}]}]}]}]}"#;
    let client = reqwest::Client::new();
    let resp = client
        .post(traces_url(&sink))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let resp = client
        .post(traces_url(&sink))
        .header("content-type", "application/json; charset=utf-8")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let s = sink.stats();
    assert_eq!((s.spans_total, s.local_spans), (2, 2));
    assert_eq!(s.generators[0].id, "g-json");
    assert_eq!(
        (s.generators[0].min_seq, s.generators[0].max_seq),
        (Some(1), Some(3))
    );
    assert_eq!(s.generators[0].missing, 1);
    assert_eq!(s.requests["http_json"]["ok"], 2);
    sink.shutdown().await;
}

/// Local, remote and unattributed spans, and per-agent peers.
#[tokio::test]
async fn routes_local_remote_unattributed() {
    let sink = start_default().await;
    let mut c = grpc_client(&sink).await;
    c.export(request(Some("n1"), Some("n1"), "g1", 1..=3))
        .await
        .unwrap();
    c.export(request(Some("n2"), Some("n1"), "g2", 1..=2))
        .await
        .unwrap();
    c.export(request(None, Some("n1"), "g3", 1..=1))
        .await
        .unwrap();
    c.export(request(Some("n3"), None, "g4", 1..=4))
        .await
        .unwrap();
    let s = sink.stats();
    assert_eq!(s.spans_total, 10);
    assert_eq!(
        (s.local_spans, s.remote_spans, s.unattributed_spans),
        (3, 2, 5)
    );
    let n1 = s
        .agents
        .iter()
        .find(|a| a.node.as_deref() == Some("n1"))
        .unwrap();
    assert_eq!(n1.spans, 6);
    assert_eq!(n1.peers.len(), 1, "one connection carried them");
    assert!(n1.peers[0].starts_with("127.0.0.1:"));
    let none = s.agents.iter().find(|a| a.node.is_none()).unwrap();
    assert_eq!(none.spans, 4);
    sink.shutdown().await;
}

/// A request with sequence numbers 1..10 where 5 is missing and 7 arrives twice.
#[tokio::test]
async fn missing_and_duplicates() {
    let sink = start_default().await;
    let mut c = grpc_client(&sink).await;
    c.export(request(
        Some("n"),
        Some("n"),
        "g",
        [1, 2, 3, 4, 6, 7, 7, 8, 9, 10],
    ))
    .await
    .unwrap();
    let g = &sink.stats().generators[0];
    assert_eq!((g.spans, g.missing, g.duplicates), (10, 1, 1));
    assert_eq!((g.min_seq, g.max_seq), (Some(1), Some(10)));
    // The gap is filled later: nothing missing any more.
    c.export(request(Some("n"), Some("n"), "g", [5]))
        .await
        .unwrap();
    let g = &sink.stats().generators[0];
    assert_eq!((g.spans, g.missing, g.duplicates), (11, 0, 1));
    sink.shutdown().await;
}

/// Attribute lookup falls back to span attributes, and custom keys work.
#[tokio::test]
async fn custom_keys_and_span_fallback() {
    let mut config = trace_sink::SinkConfig::default();
    config.keys.generator_node = "host.name".into();
    config.keys.agent_node = "collector.host".into();
    let sink = start(config).await;
    let mut req = request(None, None, "g", 1..=2);
    req.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(trace_proto::otlp::kv_str("collector.host", "x"));
    for span in &mut req.resource_spans[0].scope_spans[0].spans {
        span.attributes
            .push(trace_proto::otlp::kv_str("host.name", "x"));
    }
    grpc_client(&sink).await.export(req).await.unwrap();
    let s = sink.stats();
    assert_eq!(s.local_spans, 2);
    assert_eq!(s.generators[0].node.as_deref(), Some("x"));
    sink.shutdown().await;
}

/// Beyond --max-series, spans still count in totals and in overflow.
#[tokio::test]
async fn max_series_caps_tables() {
    let config = trace_sink::SinkConfig {
        max_series: 2,
        ..Default::default()
    };
    let sink = start(config).await;
    let mut c = grpc_client(&sink).await;
    for i in 0..5 {
        let n = format!("n{i}");
        c.export(request(Some(&n), Some(&n), &format!("g{i}"), 1..=3))
            .await
            .unwrap();
    }
    let s = sink.stats();
    assert_eq!(s.spans_total, 15);
    assert_eq!(s.local_spans, 15);
    assert_eq!(s.routes.len(), 2);
    assert_eq!(s.generators.len(), 2);
    assert_eq!(s.overflow_spans, 9);
    let metrics = sink.metrics_text();
    assert!(
        metrics.contains("trace_sink_overflow_spans_total 9"),
        "{metrics}"
    );
    sink.shutdown().await;
}

/// One route cap for /stats and /metrics, for the life of the process: after a
/// reset a route seen before is still broken down, a new one beyond the cap is
/// overflow in both, and the two views agree.
#[tokio::test]
async fn route_cap_is_one_cap_across_resets() {
    let sink = start(trace_sink::SinkConfig {
        max_series: 2,
        ..Default::default()
    })
    .await;
    let mut c = grpc_client(&sink).await;
    for n in ["a", "b"] {
        c.export(request(Some(n), Some(n), "g", 1..=2))
            .await
            .unwrap();
    }
    sink.reset();
    c.export(request(Some("a"), Some("a"), "g", 3..=5))
        .await
        .unwrap();
    c.export(request(Some("c"), Some("c"), "g", 6..=6))
        .await
        .unwrap();
    let s = sink.stats();
    assert_eq!(s.spans_total, 4);
    assert_eq!(s.routes.len(), 1, "{:?}", s.routes);
    assert_eq!(s.routes[0].generator_node.as_deref(), Some("a"));
    assert_eq!(s.overflow_spans, 1);
    assert_eq!(s.agents.len(), 1);
    let metrics = sink.metrics_text();
    assert!(
        metrics.contains("trace_sink_overflow_spans_total 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("generator_node=\"c\""), "{metrics}");
    sink.shutdown().await;
}

/// Beyond --max-series every span is still counted once: spans_total = Σ routes
/// + overflow_spans; generators beyond the cap go to overflow_generator_spans.
#[tokio::test]
async fn overflow_is_counted_once_per_table() {
    let sink = start(trace_sink::SinkConfig {
        max_series: 5,
        ..Default::default()
    })
    .await;
    let mut c = grpc_client(&sink).await;
    for i in 0..10 {
        c.export(request(Some("n"), Some("n"), &format!("g{i}"), 1..=4))
            .await
            .unwrap();
    }
    let s = sink.stats();
    assert_eq!((s.spans_total, s.local_spans), (40, 40));
    assert_eq!(s.routes.len(), 1);
    assert_eq!(s.overflow_spans, 0);
    assert_eq!(s.generators.len(), 5);
    assert_eq!(s.overflow_generator_spans, 20);
    for i in 0..10 {
        let n = format!("m{i}");
        c.export(request(Some(&n), Some(&n), "g0", 5 + i..=5 + i))
            .await
            .unwrap();
    }
    let s = sink.stats();
    assert_eq!(s.routes.len(), 5);
    assert_eq!(
        s.overflow_spans, 6,
        "5 routes fit: the first and 4 new; 6 spans overflow"
    );
    assert_eq!(
        s.routes.iter().map(|r| r.spans).sum::<u64>() + s.overflow_spans,
        s.spans_total
    );
    assert_eq!(
        s.agents.iter().map(|a| a.spans).sum::<u64>() + s.overflow_spans,
        s.spans_total
    );
    // A tracked generator keeps its sequence accounting even where its route overflowed.
    let g0 = s.generators.iter().find(|g| g.id == "g0").unwrap();
    assert_eq!((g0.spans, g0.missing, g0.max_seq), (14, 0, Some(14)));
    sink.shutdown().await;
}

/// Node names or ids longer than 256 bytes are not kept: the spans count as unattributed.
#[tokio::test]
async fn overlong_attribute_values_are_unknown() {
    let sink = start_default().await;
    let huge = "n".repeat(1 << 20);
    grpc_client(&sink)
        .await
        .export(request(Some(&huge), Some("a"), &huge, 1..=3))
        .await
        .unwrap();
    let s = sink.stats();
    assert_eq!((s.spans_total, s.unattributed_spans), (3, 3));
    assert_eq!(s.routes[0].generator_node, None);
    assert!(s.generators.is_empty());
    assert!(serde_json::to_string(&s).unwrap().len() < 10_000);
    sink.shutdown().await;
}
