//! trace-gen -> trace-sink, in process: every protocol and compression, exact counts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use trace_gen::Generator;
use trace_gen::config::{Compression, Protocol, Reconnect};

/// gRPC, HTTP protobuf and HTTP JSON, each with and without gzip: the sink's
/// count equals the generator's accepted count exactly, the route carries the
/// generator's node, nothing missing or duplicated.
#[tokio::test]
async fn every_protocol_and_compression() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf, Protocol::HttpJson] {
        for compression in [Compression::None, Compression::Gzip] {
            let sink = start_sink().await;
            let url = if protocol.is_http() {
                http_url(&sink)
            } else {
                grpc_url(&sink)
            };
            let mut c = config("node-a", &url, protocol);
            c.exporter.compression = compression;
            c.count = Some(95);
            c.batch = 10;
            c.workers = 3;
            let g = Generator::new(c).unwrap();
            let id = g.generator_id().to_owned();
            let r = g.run(std::future::pending()).await;
            let what = format!("{protocol:?}/{compression:?}");
            assert_eq!(
                (r.spans_sent, r.spans_accepted, r.spans_failed),
                (95, 95, 0),
                "{what}"
            );
            assert_eq!((r.first_seq, r.last_seq), (Some(1), Some(95)), "{what}");
            let s = sink.stats();
            assert_eq!(s.spans_total, r.spans_accepted, "{what}");
            assert_eq!(s.routes.len(), 1, "{what}");
            assert_eq!(
                s.routes[0].generator_node.as_deref(),
                Some("node-a"),
                "{what}"
            );
            let g = &s.generators[0];
            assert_eq!(g.id, id);
            assert_eq!(
                (g.missing, g.duplicates, g.min_seq, g.max_seq),
                (0, 0, Some(1), Some(95)),
                "{what}"
            );
            let key = match protocol {
                Protocol::Grpc => "grpc",
                Protocol::HttpProtobuf => "http_protobuf",
                Protocol::HttpJson => "http_json",
            };
            assert_eq!(s.requests[key]["ok"], 10, "{what}");
            sink.shutdown().await;
        }
    }
}

/// At --rate 200 for 5 s the sink receives 1000 spans, give or take one batch
/// (asserting counts, not wall time). Batches of 20 (one per 100 ms) leave room
/// for a busy machine: only a stall longer than a period could skip a tick.
#[tokio::test]
async fn rate_holds() {
    let sink = start_sink().await;
    let mut c = config("n", &grpc_url(&sink), Protocol::Grpc);
    c.rate = 200.0;
    c.batch = 20;
    c.duration = Some(Duration::from_secs(5));
    let r = Generator::new(c).unwrap().run(std::future::pending()).await;
    let got = sink.stats().spans_total;
    assert_eq!(got, r.spans_accepted);
    assert!((980..=1020).contains(&got), "received {got}");
    sink.shutdown().await;
}

/// An answer late by several periods does not cost the rate: the ticks it
/// held up are sent once it arrives (up to 1 s behind), so at --rate 100 for
/// 2 s the endpoint gets 200 spans, give or take one batch, although one
/// answer took 400 ms (skipping missed ticks would have lost 40).
#[tokio::test]
async fn late_answer_is_caught_up() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let spans = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let (s, r) = (spans.clone(), requests.clone());
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let (s, r) = (s.clone(), r.clone());
        async move {
            use prost::Message;
            let req = trace_proto::otlp::ExportTraceServiceRequest::decode(body).unwrap();
            let n: usize = req.resource_spans[0]
                .scope_spans
                .iter()
                .map(|ss| ss.spans.len())
                .sum();
            if r.fetch_add(1, Ordering::SeqCst) == 3 {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            s.fetch_add(n as u64, Ordering::SeqCst);
            (
                [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                Vec::<u8>::new(),
            )
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let mut c = config("n", &url, Protocol::HttpProtobuf);
    c.rate = 100.0;
    c.batch = 5;
    c.workers = 1;
    c.duration = Some(Duration::from_secs(2));
    let rep = Generator::new(c).unwrap().run(std::future::pending()).await;
    let got = spans.load(Ordering::SeqCst);
    assert_eq!(got, rep.spans_accepted);
    assert!((195..=205).contains(&got), "received {got}");
}

/// With --reconnect-every 3 (requests) the sink sees several connections from one generator.
#[tokio::test]
async fn reconnect_every_requests() {
    let sink = start_sink().await;
    let mut c = config("n", &grpc_url(&sink), Protocol::Grpc);
    c.count = Some(100);
    c.batch = 10;
    c.reconnect = Reconnect::Requests(3);
    let r = Generator::new(c).unwrap().run(std::future::pending()).await;
    assert_eq!(r.spans_accepted, 100);
    assert!(r.connections_opened >= 4, "opened {}", r.connections_opened);
    let g = &sink.stats().generators[0];
    assert!(g.connections >= 4, "sink saw {} connections", g.connections);
    assert_eq!(g.missing, 0);
    sink.shutdown().await;
}

/// Without a reconnect policy one connection carries everything.
#[tokio::test]
async fn one_connection_by_default() {
    let sink = start_sink().await;
    let mut c = config("n", &http_url(&sink), Protocol::HttpProtobuf);
    c.count = Some(50);
    let r = Generator::new(c).unwrap().run(std::future::pending()).await;
    assert_eq!(r.connections_opened, 1);
    assert_eq!(sink.stats().generators[0].connections, 1);
    sink.shutdown().await;
}

/// The shutdown future stops the generator: it waits for in-flight requests,
/// so everything sent is accounted for.
#[tokio::test]
async fn shutdown_future_stops_cleanly() {
    let sink = start_sink().await;
    let mut c = config("n", &grpc_url(&sink), Protocol::Grpc);
    c.rate = 100.0;
    let g = Generator::new(c).unwrap();
    let live = g.counters();
    let r = g.run(tokio::time::sleep(Duration::from_millis(700))).await;
    assert!(r.spans_sent >= 50, "sent {}", r.spans_sent);
    assert_eq!(r.spans_sent, r.spans_accepted);
    assert_eq!(live.in_flight(), 0);
    assert_eq!(live.report().spans_sent, r.spans_sent);
    assert_eq!(sink.stats().spans_total, r.spans_sent);
    sink.shutdown().await;
}

/// Every span carries the contract's resource attributes.
#[tokio::test]
async fn resource_attributes_on_the_wire() {
    let (url, rec) = start_recorder(None).await;
    let mut c = config("node-z", &url, Protocol::Grpc);
    c.count = Some(5);
    c.pod_name = Some("pod-1".into());
    c.namespace = Some("ns-1".into());
    c.extra_resource = vec![("team".into(), "obs".into())];
    c.exporter.headers = vec![("x-tenant".into(), "t1".into())];
    let g = Generator::new(c).unwrap();
    let id = g.generator_id().to_owned();
    g.run(std::future::pending()).await;
    let reqs = rec.requests.lock().unwrap();
    let (req, md) = &reqs[0];
    let res = &req.resource_spans[0].resource.as_ref().unwrap().attributes;
    use trace_proto::keys;
    use trace_proto::otlp::{get_str, get_u64};
    assert_eq!(get_str(res, keys::GENERATOR_NODE), Some("node-z"));
    assert_eq!(get_str(res, keys::POD_NAME), Some("pod-1"));
    assert_eq!(get_str(res, keys::NAMESPACE_NAME), Some("ns-1"));
    assert_eq!(get_str(res, keys::SERVICE_NAME), Some("trace-gen"));
    assert_eq!(get_str(res, keys::GENERATOR_ID), Some(id.as_str()));
    assert_eq!(get_str(res, "team"), Some("obs"));
    assert_eq!(md.get("x-tenant").unwrap(), "t1");
    let spans = &req.resource_spans[0].scope_spans[0].spans;
    let seqs: Vec<_> = spans
        .iter()
        .map(|s| get_u64(&s.attributes, keys::SEQUENCE).unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert!(
        spans
            .iter()
            .all(|s| s.trace_id.len() == 16 && s.span_id.len() == 8 && !s.name.is_empty())
    );
}
