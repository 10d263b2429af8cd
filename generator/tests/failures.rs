//! Failure accounting: each failure is counted under its own reason, the
//! generator keeps going, nothing panics, and nothing queues without bound.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use tokio_stream::wrappers::TcpListenerStream;
use trace_gen::Generator;
use trace_gen::config::Protocol;
use trace_gen::counters::Counters;
use trace_proto::otlp::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use trace_proto::stats::GeneratorReport;

/// Runs the generator; every span is accounted for (sent = accepted + failed).
async fn run_accounted(c: trace_gen::GenConfig) -> GeneratorReport {
    let r = Generator::new(c).unwrap().run(std::future::pending()).await;
    assert_eq!(
        r.spans_sent,
        r.spans_accepted + r.spans_failed,
        "every span accounted for"
    );
    r
}

/// What a [`Gate`] saw, checked at every request's arrival.
#[derive(Debug, Default)]
struct GateState {
    /// Requests arrived and not answered yet.
    held: usize,
    /// The most requests held at once.
    max_held: usize,
    /// Spans arrived so far.
    arrived: u64,
    /// The generator's own in-flight count, the largest seen at an arrival.
    max_in_flight: u64,
    /// How many times the held requests were let go.
    releases: u64,
}

/// An OTLP endpoint that holds every request until `workers` are held at once
/// (or every span has arrived), then answers them all: a generator that keeps
/// its bound fills it exactly, one that does not shows it at the next arrival.
/// At every arrival it records the requests held and the generator's own
/// in-flight count (the generator is in process).
struct Gate {
    workers: usize,
    count: u64,
    state: Mutex<GateState>,
    released: tokio::sync::watch::Sender<u64>,
    live: OnceLock<Arc<Counters>>,
}

impl Gate {
    fn new(workers: usize, count: u64) -> Arc<Self> {
        Arc::new(Gate {
            workers,
            count,
            state: Mutex::default(),
            released: tokio::sync::watch::Sender::new(0),
            live: OnceLock::new(),
        })
    }

    /// One request of `spans` spans: held until released, then answered.
    async fn pass(&self, spans: u64) {
        let mut rx = self.released.subscribe();
        let generation = {
            let mut st = self.state.lock().unwrap();
            st.held += 1;
            st.arrived += spans;
            st.max_held = st.max_held.max(st.held);
            let in_flight = self.live.get().expect("generator counters set").in_flight();
            st.max_in_flight = st.max_in_flight.max(in_flight);
            let generation = st.releases;
            if st.held >= self.workers || st.arrived >= self.count {
                st.releases += 1;
                self.released.send_replace(st.releases);
            }
            generation
        };
        rx.wait_for(|&g| g > generation).await.unwrap();
        // Counted out before the answer leaves, so the generator cannot send
        // its next request before this one stops being held.
        self.state.lock().unwrap().held -= 1;
    }
}

fn span_count(req: &ExportTraceServiceRequest) -> u64 {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum()
}

#[derive(Clone)]
struct GrpcGate(Arc<Gate>);

#[tonic::async_trait]
impl TraceService for GrpcGate {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.pass(span_count(request.get_ref())).await;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts `gate` as an OTLP/gRPC or OTLP/HTTP endpoint on loopback; its URL.
async fn start_gate(gate: Arc<Gate>, protocol: Protocol) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    if protocol == Protocol::Grpc {
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(GrpcGate(gate)))
                .serve_with_incoming(TcpListenerStream::new(l)),
        );
    } else {
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let gate = gate.clone();
            async move {
                use prost::Message;
                let req = ExportTraceServiceRequest::decode(body).unwrap();
                gate.pass(span_count(&req)).await;
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        });
        tokio::spawn(async move { axum::serve(l, app).await });
    }
    url
}

/// Never more than `--workers` requests, `workers x batch` spans, in flight:
/// nothing queues when the endpoint is slow, over gRPC and HTTP. Checked at
/// every request's arrival, by the endpoint (requests it holds) and in the
/// generator's own account; the endpoint holds requests until the bound is
/// reached, so the bound is reached exactly.
#[tokio::test]
async fn in_flight_stays_within_workers_times_batch() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let (workers, batch, count) = (3, 10, 90);
        let gate = Gate::new(workers, count);
        let url = start_gate(gate.clone(), protocol).await;
        let mut c = config("n", &url, protocol);
        c.count = Some(count);
        c.batch = batch;
        c.workers = workers;
        let g = Generator::new(c).unwrap();
        gate.live.set(g.counters()).ok().unwrap();
        let r = g.run(std::future::pending()).await;
        assert_eq!(r.spans_accepted, count, "{protocol:?} {r:?}");
        let st = gate.state.lock().unwrap();
        assert_eq!(st.arrived, count, "{protocol:?}");
        assert_eq!(st.max_held, workers, "{protocol:?}: requests at once");
        assert_eq!(
            st.max_in_flight,
            (workers * batch) as u64,
            "{protocol:?}: spans in flight in the generator's account"
        );
    }
}

/// A closed port: connection_refused.
#[tokio::test]
async fn refused() {
    let closed = closed_port();
    let mut c = config("n", &closed.url, Protocol::Grpc);
    c.count = Some(30);
    c.batch = 10;
    c.min_backoff = Duration::from_millis(10);
    let r = run_accounted(c).await;
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
        let r = run_accounted(c).await;
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
    let r = run_accounted(c).await;
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
    let r = run_accounted(c).await;
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
    let r = run_accounted(c).await;
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
    let r = run_accounted(c).await;
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

/// After the endpoint comes back the generator delivers again (keeps going,
/// reconnects). The port refuses connections (held closed) until the sink
/// listens on it; the generator stops once the sink has 100 spans.
#[tokio::test]
async fn recovers_after_outage() {
    let closed = closed_port();
    let mut c = config("n", &closed.url, Protocol::Grpc);
    c.rate = 100.0;
    c.min_backoff = Duration::from_millis(50);
    c.max_backoff = Duration::from_millis(200);
    let g = Generator::new(c).unwrap();
    let live = g.counters();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gen_task = tokio::spawn(g.run(async {
        let _ = stop_rx.await;
    }));
    eventually("connections refused", Duration::from_secs(20), || {
        let r = live.report();
        r.spans_failed_by_reason.get("connection_refused").copied()
    })
    .await;
    // The endpoint appears on the same port.
    let sink = trace_sink::SinkBuilder::new(trace_sink::SinkConfig::default())
        .grpc(closed.listen())
        .start()
        .unwrap();
    eventually("100 spans at the sink", Duration::from_secs(30), || {
        (sink.stats().spans_total >= 100).then_some(())
    })
    .await;
    stop_tx.send(()).unwrap();
    let r = gen_task.await.unwrap();
    assert!(
        r.spans_failed_by_reason
            .get("connection_refused")
            .copied()
            .unwrap_or(0)
            > 0,
        "{r:?}"
    );
    assert!(r.spans_accepted >= 100, "{r:?}");
    assert_eq!(r.spans_sent, r.spans_accepted + r.spans_failed, "{r:?}");
    let s = sink.stats();
    assert_eq!(s.spans_total, r.spans_accepted);
    // The sink sees exactly the failed spans as missing (they were sent before it existed,
    // so they fall below its first sequence number) and no duplicates.
    assert_eq!(s.generators[0].duplicates, 0);
    assert_eq!(s.generators[0].missing, 0);
    assert_eq!(s.generators[0].max_seq, r.last_seq);
    sink.shutdown().await;
}
