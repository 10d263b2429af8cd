//! trace-gen -> trace-sink, in process: every protocol and compression, exact counts.

mod common;

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

/// At --rate 200 in batches of 20 for 5 s, exactly 50 batches go, one per
/// 100 ms on the grid from the start (tokio's paused clock, an in-memory
/// endpoint: the count is exact, not a window).
#[tokio::test(start_paused = true)]
async fn rate_holds() {
    let ep = MemoryEndpoint::immediate();
    let mut c = config("n", "http://127.0.0.1:4317", Protocol::Grpc);
    c.rate = 200.0;
    c.batch = 20;
    c.duration = Some(Duration::from_secs(5));
    let start = tokio::time::Instant::now();
    let e = ep.clone();
    let r = Generator::new(c)
        .unwrap()
        .with_transport(move || e.clone())
        .run(std::future::pending())
        .await;
    assert_eq!((r.spans_sent, r.spans_accepted), (1000, 1000), "{r:?}");
    assert_eq!(ep.spans(), 1000);
    let at: Vec<Duration> = ep.arrivals().iter().map(|a| a.at - start).collect();
    let grid: Vec<Duration> = (0..50).map(|k| Duration::from_millis(100 * k)).collect();
    assert_eq!(at, grid);
}

/// An answer late by several periods does not cost the rate: the ticks it
/// held up are sent as soon as it arrives (up to 1 s behind), so at --rate
/// 100 in batches of 5 for 2 s with one worker the endpoint gets exactly 200
/// spans although the 4th answer took 400 ms (skipping missed ticks would
/// have lost 35).
#[tokio::test(start_paused = true)]
async fn late_answer_is_caught_up() {
    let ep = MemoryEndpoint::new(|n| {
        if n == 3 {
            Duration::from_millis(400)
        } else {
            Duration::ZERO
        }
    });
    let mut c = config("n", "http://127.0.0.1:4318", Protocol::HttpProtobuf);
    c.rate = 100.0;
    c.batch = 5;
    c.workers = 1;
    c.duration = Some(Duration::from_secs(2));
    let start = tokio::time::Instant::now();
    let e = ep.clone();
    let rep = Generator::new(c)
        .unwrap()
        .with_transport(move || e.clone())
        .run(std::future::pending())
        .await;
    assert_eq!((rep.spans_sent, rep.spans_accepted), (200, 200), "{rep:?}");
    assert_eq!(ep.spans(), 200);
    let at: Vec<u64> = ep
        .arrivals()
        .iter()
        .map(|a| (a.at - start).as_millis() as u64)
        .collect();
    // Ticks 0, 50, 100, 150 on time; 200 ... 550 held up by the answer of
    // 150 until 550, then sent at once one after the other; then on the grid.
    let mut expect = vec![0, 50, 100, 150];
    expect.extend([550; 8]);
    expect.extend((12..40).map(|k| 50 * k));
    assert_eq!(at, expect);
}

/// Against a real sink at --rate 200 in batches of 20: exactly the --count
/// spans arrive, none lost or doubled, and never faster than the rate (the
/// 20th batch cannot go before 1.9 s; a lower bound only, so a slow machine
/// cannot fail it).
#[tokio::test]
async fn rate_against_a_real_sink() {
    let sink = start_sink().await;
    let mut c = config("n", &grpc_url(&sink), Protocol::Grpc);
    c.rate = 200.0;
    c.batch = 20;
    c.count = Some(400);
    let t0 = std::time::Instant::now();
    let r = Generator::new(c).unwrap().run(std::future::pending()).await;
    let took = t0.elapsed();
    assert_eq!((r.spans_sent, r.spans_accepted), (400, 400), "{r:?}");
    let s = sink.stats();
    assert_eq!(s.spans_total, 400);
    assert_eq!(s.requests["grpc"]["ok"], 20);
    let g = &s.generators[0];
    assert_eq!((g.missing, g.duplicates, g.max_seq), (0, 0, Some(400)));
    assert!(took >= Duration::from_millis(1900), "400 spans in {took:?}");
    sink.shutdown().await;
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

/// The shutdown future stops the generator: production ends at once, and
/// the requests in flight are waited for, so everything sent is accounted
/// for. At --rate 100 in batches of 10 with answers taking 250 ms, a stop at
/// 700 ms has released exactly 7 batches (0 ... 600 ms), 2 of them still in
/// flight (tokio's paused clock, an in-memory endpoint).
#[tokio::test(start_paused = true)]
async fn shutdown_future_stops_cleanly() {
    let ep = MemoryEndpoint::new(|_| Duration::from_millis(250));
    let mut c = config("n", "http://127.0.0.1:4317", Protocol::Grpc);
    c.rate = 100.0;
    c.batch = 10;
    c.workers = 4;
    let e = ep.clone();
    let g = Generator::new(c).unwrap().with_transport(move || e.clone());
    let live = g.counters();
    let l = live.clone();
    let r = g
        .run(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert_eq!(l.in_flight(), 20, "the batches of 500 and 600 ms");
        })
        .await;
    assert_eq!((r.spans_sent, r.spans_accepted), (70, 70), "{r:?}");
    assert_eq!(live.in_flight(), 0);
    assert_eq!(live.report().spans_sent, r.spans_sent);
    assert_eq!(ep.spans(), 70);
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
