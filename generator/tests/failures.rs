//! Failure accounting: each failure is counted under its own reason, the
//! generator keeps going, nothing panics, and nothing queues without bound.

mod common;

use std::time::Duration;

use common::*;
use trace_gen::Generator;
use trace_gen::config::Protocol;
use trace_proto::stats::GeneratorReport;

async fn run_watching(c: trace_gen::GenConfig) -> GeneratorReport {
    let bound = (c.workers * c.batch) as u64;
    let g = Generator::new(c).unwrap();
    let live = g.counters();
    let watcher = tokio::spawn(async move {
        let mut max = 0;
        for _ in 0..200 {
            max = max.max(live.in_flight());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        max
    });
    let r = g.run(std::future::pending()).await;
    let max_in_flight = watcher.await.unwrap();
    // Memory stays bounded: never more than workers x batch spans outstanding.
    assert!(
        max_in_flight <= bound,
        "in flight {max_in_flight} > {bound}"
    );
    assert_eq!(
        r.spans_sent,
        r.spans_accepted + r.spans_failed,
        "every span accounted for"
    );
    r
}

/// A closed port: connection_refused.
#[tokio::test]
async fn refused() {
    let mut c = config("n", &closed_port_url(), Protocol::Grpc);
    c.count = Some(30);
    c.batch = 10;
    c.min_backoff = Duration::from_millis(10);
    let r = run_watching(c).await;
    assert_eq!(
        r.spans_failed_by_reason.get("connection_refused"),
        Some(&30),
        "{r:?}"
    );
    assert_eq!(r.spans_accepted, 0);
    assert_eq!(r.last_error.as_ref().unwrap().reason, "connection_refused");
}

/// A listener that accepts and never answers: export_timeout, over gRPC and HTTP.
#[tokio::test]
async fn export_timeout() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let url = start_black_hole().await;
        let mut c = config("n", &url, protocol);
        c.count = Some(20);
        c.batch = 10;
        c.workers = 2;
        c.exporter.timeout = Duration::from_millis(300);
        let r = run_watching(c).await;
        assert_eq!(
            r.spans_failed_by_reason.get("export_timeout"),
            Some(&20),
            "{protocol:?} {r:?}"
        );
    }
}

/// An unresolvable name: dns.
#[tokio::test]
async fn dns_failure() {
    let mut c = config("n", "http://no-such-host.invalid:4317", Protocol::HttpJson);
    c.count = Some(10);
    let r = run_watching(c).await;
    assert_eq!(r.spans_failed_by_reason.get("dns"), Some(&10), "{r:?}");
    assert_eq!(r.connections_opened, 0);
}

/// A server answering UNAVAILABLE (gRPC) or 503 (HTTP): its own reason each.
#[tokio::test]
async fn server_says_unavailable() {
    let (url, _rec) = start_recorder(Some(tonic::Code::Unavailable)).await;
    let mut c = config("n", &url, Protocol::Grpc);
    c.count = Some(20);
    c.min_backoff = Duration::from_millis(5);
    let r = run_watching(c).await;
    assert_eq!(
        r.spans_failed_by_reason.get("grpc_unavailable"),
        Some(&20),
        "{r:?}"
    );
    assert_eq!(
        r.requests_failed_by_reason.get("grpc_unavailable"),
        Some(&2)
    );

    let url = start_http_status(503).await;
    let mut c = config("n", &url, Protocol::HttpProtobuf);
    c.count = Some(20);
    c.min_backoff = Duration::from_millis(5);
    let r = run_watching(c).await;
    assert_eq!(r.spans_failed_by_reason.get("http_503"), Some(&20), "{r:?}");
    assert!(r.last_error.unwrap().message.contains("503"));
}

/// --retries: a failed request is tried again; the spans fail only if every attempt does.
#[tokio::test]
async fn retries_then_fail() {
    let (url, rec) = start_recorder(Some(tonic::Code::Unavailable)).await;
    let mut c = config("n", &url, Protocol::Grpc);
    c.count = Some(10);
    c.retries = 2;
    c.min_backoff = Duration::from_millis(5);
    let r = run_watching(c).await;
    assert_eq!(
        rec.requests.lock().unwrap().len(),
        3,
        "1 try + 2 retries: {r:?}"
    );
    assert_eq!(
        r.requests_failed_by_reason.get("grpc_unavailable"),
        Some(&3)
    );
    assert_eq!(r.spans_failed, 10);
}

/// After the endpoint comes back the generator delivers again (keeps going, reconnects).
#[tokio::test]
async fn recovers_after_outage() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut c = config("n", &format!("http://{addr}"), Protocol::Grpc);
    c.rate = 100.0;
    c.duration = Some(Duration::from_secs(3));
    c.min_backoff = Duration::from_millis(50);
    c.max_backoff = Duration::from_millis(200);
    let gen_task = tokio::spawn(Generator::new(c).unwrap().run(std::future::pending()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The endpoint appears on the same port.
    let sink = trace_sink::SinkBuilder::new(trace_sink::SinkConfig::default())
        .grpc(tokio::net::TcpListener::bind(addr).await.unwrap())
        .start()
        .unwrap();
    let r = gen_task.await.unwrap();
    assert!(
        r.spans_failed_by_reason
            .get("connection_refused")
            .copied()
            .unwrap_or(0)
            > 0,
        "{r:?}"
    );
    assert!(r.spans_accepted > 100, "{r:?}");
    let s = sink.stats();
    assert_eq!(s.spans_total, r.spans_accepted);
    // The sink sees exactly the failed spans as missing (they were sent before it existed,
    // so they fall below its first sequence number) and no duplicates.
    assert_eq!(s.generators[0].duplicates, 0);
    assert_eq!(s.generators[0].missing, 0);
    assert_eq!(s.generators[0].max_seq, r.last_seq);
    sink.shutdown().await;
}
