//! trace-gen never reports optimistically (issue 9): partial success in every
//! form OTLP writes it, success answers that cannot be read, and retries as
//! the OTLP specification says (retryable codes only, `Retry-After` and
//! `RetryInfo` honoured with a bound, a stop cancels the wait).
//!
//! The servers here misbehave on purpose (hand-written HTTP/1.1 over TCP, a
//! gRPC service answering raw frames); where a real server can say it, the
//! real tonic server says it.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use trace_gen::config::Protocol;
use trace_gen::{GenConfig, Generator};
use trace_proto::otlp::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use trace_proto::stats::GeneratorReport;

/// When each request arrived.
#[derive(Clone, Default)]
struct Hits(Arc<Mutex<Vec<Instant>>>);

impl Hits {
    fn push(&self) -> usize {
        let mut h = self.0.lock().unwrap();
        h.push(Instant::now());
        h.len() - 1
    }
    fn times(&self) -> Vec<Instant> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// One canned HTTP/1.1 answer: the bytes written, and whether the connection
/// is closed after them.
struct Answer {
    bytes: Vec<u8>,
    close: bool,
}

fn http_answer(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut bytes = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        bytes.push_str(&format!("{k}: {v}\r\n"));
    }
    bytes.push_str("\r\n");
    let mut bytes = bytes.into_bytes();
    bytes.extend_from_slice(body);
    Answer {
        bytes,
        close: false,
    }
}

/// An HTTP/1.1 server on loopback, written by hand so it can answer what no
/// well-behaved server would: it reads each request in full, then writes
/// `respond(n)` for the n-th request (from 0).
async fn canned_http(respond: impl Fn(usize) -> Answer + Send + Sync + 'static) -> (String, Hits) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let hits = Hits::default();
    let respond = Arc::new(respond);
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (respond, hits) = (respond.clone(), h.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Headers, then Content-Length bytes of body.
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + len {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + len);
                    let answer = respond(hits.push());
                    if s.write_all(&answer.bytes).await.is_err() || answer.close {
                        return;
                    }
                }
            });
        }
    });
    (url, hits)
}

/// A gRPC TraceService (the real tonic server) answering `respond(n)` to the
/// n-th call.
#[derive(Clone)]
struct Scripted {
    hits: Hits,
    respond: Arc<dyn Fn(usize) -> Result<ExportTraceServiceResponse, tonic::Status> + Send + Sync>,
}

#[tonic::async_trait]
impl TraceService for Scripted {
    async fn export(
        &self,
        _: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        (self.respond)(self.hits.push()).map(tonic::Response::new)
    }
}

async fn scripted_grpc(
    respond: impl Fn(usize) -> Result<ExportTraceServiceResponse, tonic::Status> + Send + Sync + 'static,
) -> (String, Hits) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let svc = Scripted {
        hits: Hits::default(),
        respond: Arc::new(respond),
    };
    let hits = svc.hits.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(svc))
            .serve_with_incoming(TcpListenerStream::new(l)),
    );
    (url, hits)
}

/// A gRPC server (tonic's HTTP/2 server, but no codec) that answers every
/// export with these raw DATA bytes and then `grpc-status: 0` trailers.
#[derive(Clone)]
struct RawGrpc {
    data: Bytes,
    hits: Hits,
}

impl tonic::server::NamedService for RawGrpc {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tower::Service<http::Request<tonic::body::Body>> for RawGrpc {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        self.hits.push();
        let data = self.data.clone();
        Box::pin(async move {
            // Read the request in full first, as a server would.
            let _ = http_body_util::BodyExt::collect(req.into_body()).await;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let frames: Vec<Result<http_body::Frame<Bytes>, tonic::Status>> = vec![
                Ok(http_body::Frame::data(data)),
                Ok(http_body::Frame::trailers(trailers)),
            ];
            let body = http_body_util::StreamBody::new(tokio_stream::iter(frames));
            Ok(http::Response::builder()
                .header("content-type", "application/grpc")
                .body(tonic::body::Body::new(body))
                .unwrap())
        })
    }
}

async fn raw_grpc(data: Bytes) -> (String, Hits) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let svc = RawGrpc {
        data,
        hits: Hits::default(),
    };
    let hits = svc.hits.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(l)),
    );
    (url, hits)
}

/// One gRPC message frame: uncompressed flag, big-endian length, `declared`
/// as the length and `payload` as the bytes.
fn grpc_frame(declared: u32, payload: &[u8]) -> Bytes {
    let mut b = vec![0u8];
    b.extend_from_slice(&declared.to_be_bytes());
    b.extend_from_slice(payload);
    Bytes::from(b)
}

fn quick(url: &str, protocol: Protocol, count: u64) -> GenConfig {
    let mut c = config("n", url, protocol);
    c.count = Some(count);
    c.batch = 10;
    c.min_backoff = Duration::from_millis(5);
    c.max_backoff = Duration::from_millis(10);
    c
}

async fn run(c: GenConfig) -> GeneratorReport {
    let r = Generator::new(c).unwrap().run(std::future::pending()).await;
    assert_eq!(
        r.spans_sent,
        r.spans_accepted + r.spans_failed,
        "every span accounted for: {r:?}"
    );
    r
}

fn failed(r: &GeneratorReport, reason: &str) -> u64 {
    r.spans_failed_by_reason.get(reason).copied().unwrap_or(0)
}

fn json_ok(body: &str) -> Answer {
    http_answer(
        "200 OK",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// `rejectedSpans` as a JSON string (how OTLP/JSON writes an int64) and as a
/// number are both partial success; `errorMessage` reaches `last_error`.
/// (On the old main the string form was dropped: all 20 spans "accepted".)
#[tokio::test]
async fn json_partial_success_string_and_number() {
    for (body, rejected) in [
        (
            r#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"span too old"}}"#,
            3,
        ),
        (
            r#"{"partialSuccess":{"rejectedSpans":4,"errorMessage":"span too old"}}"#,
            4,
        ),
        (
            r#"{"partial_success":{"rejected_spans":"2","error_message":"span too old"}}"#,
            2,
        ),
    ] {
        let (url, _) = canned_http(move |_| json_ok(body)).await;
        let r = run(quick(&url, Protocol::HttpJson, 20)).await;
        assert_eq!(
            failed(&r, "partial_rejected"),
            2 * rejected,
            "{body}: {r:?}"
        );
        assert_eq!(r.spans_accepted, 20 - 2 * rejected, "{body}");
        assert_eq!(r.requests_ok, 2);
        let last = r.last_error.expect("partial success is in last_error");
        assert_eq!(last.reason, "partial_rejected");
        assert!(last.message.contains("span too old"), "{last:?}");
    }
    // A warning with nothing rejected is full success; so is an empty body.
    for answer in [
        r#"{"partialSuccess":{"rejectedSpans":"0","errorMessage":"deprecated field"}}"#,
        r#"{"partialSuccess":null}"#,
        "",
    ] {
        let (url, _) = canned_http(move |_| json_ok(answer)).await;
        let r = run(quick(&url, Protocol::HttpJson, 20)).await;
        assert_eq!(r.spans_accepted, 20, "{answer}: {r:?}");
    }
}

/// Partial success over gRPC from the real tonic server: counted, and the
/// error message kept (the old main dropped the message).
#[tokio::test]
async fn grpc_partial_success_keeps_the_message() {
    let (url, _) = scripted_grpc(|_| {
        Ok(ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 1,
                error_message: "missing service.name".into(),
            }),
        })
    })
    .await;
    let r = run(quick(&url, Protocol::Grpc, 30)).await;
    assert_eq!(failed(&r, "partial_rejected"), 3, "{r:?}");
    assert_eq!(r.spans_accepted, 27);
    assert!(
        r.last_error
            .unwrap()
            .message
            .contains("missing service.name")
    );
}

/// A 200 whose body is cut off, larger than the bound, or undecodable (as
/// protobuf or as JSON) is `bad_response`, never accepted, and not retried
/// (the spans may have been taken: a retry could duplicate them).
/// (On the old main every one of these counted all spans as accepted.)
#[tokio::test]
async fn unreadable_http_success_is_bad_response() {
    // A valid response padded with an unknown field past the 64 KiB bound:
    // only its size makes it unreadable.
    let mut oversize = ExportTraceServiceResponse::default().encode_to_vec();
    prost::encoding::bytes::encode(15, &vec![b'x'; 70 * 1024], &mut oversize);
    assert!(ExportTraceServiceResponse::decode(&oversize[..]).is_ok());
    let proto = [("Content-Type", "application/x-protobuf")];
    type Respond = Arc<dyn Fn() -> Answer + Send + Sync>;
    let cases: Vec<(&str, Protocol, Respond)> = vec![
        (
            "cut off",
            Protocol::HttpProtobuf,
            Arc::new(|| {
                let mut a = http_answer("200 OK", &[], b"");
                // Claims 100 bytes, sends 3, closes.
                a.bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n\x0a\x02\x08".to_vec();
                a.close = true;
                a
            }),
        ),
        (
            "oversize",
            Protocol::HttpProtobuf,
            Arc::new(move || http_answer("200 OK", &proto, &oversize)),
        ),
        (
            "undecodable protobuf",
            Protocol::HttpProtobuf,
            Arc::new(move || http_answer("200 OK", &proto, b"\xff\xff\xff\xff")),
        ),
        (
            "HTML",
            Protocol::HttpJson,
            Arc::new(|| {
                http_answer(
                    "200 OK",
                    &[("Content-Type", "text/html")],
                    b"<html>OK</html>",
                )
            }),
        ),
        (
            "JSON of the wrong shape",
            Protocol::HttpJson,
            Arc::new(|| json_ok(r#"{"partialSuccess":{"rejectedSpans":"many"}}"#)),
        ),
        (
            "negative rejectedSpans",
            Protocol::HttpJson,
            Arc::new(|| json_ok(r#"{"partialSuccess":{"rejectedSpans":-1}}"#)),
        ),
    ];
    for (what, protocol, answer) in cases {
        let (url, hits) = canned_http(move |_| answer()).await;
        let mut c = quick(&url, protocol, 20);
        c.retries = 2;
        let r = run(c).await;
        assert_eq!(failed(&r, "bad_response"), 20, "{what}: {r:?}");
        assert_eq!(r.spans_accepted, 0, "{what}");
        assert_eq!(hits.count(), 2, "{what}: not retried");
        assert_eq!(r.last_error.as_ref().unwrap().reason, "bad_response");
        // One label everywhere: /stats (above) and /metrics.
        let metrics = trace_gen::stats_server::metrics_text(&r);
        assert!(
            metrics.contains(r#"trace_gen_spans_failed_total{reason="bad_response"} 20"#),
            "{metrics}"
        );
    }
}

/// Over gRPC, an OK whose message does not decode, or is larger than the
/// bound, is `bad_response` and not retried. (On the old main these were
/// `grpc_internal` and `grpc_out_of_range`, the latter retryable: a status
/// tonic made up, counted as if the server had said it.)
#[tokio::test]
async fn unreadable_grpc_success_is_bad_response() {
    for (what, data) in [
        ("undecodable", grpc_frame(4, b"\xff\xff\xff\xff")),
        ("oversize", grpc_frame(100 * 1024, &vec![0u8; 100 * 1024])),
        ("cut off", grpc_frame(100, b"\x0a\x00")),
    ] {
        let (url, hits) = raw_grpc(data).await;
        let mut c = quick(&url, Protocol::Grpc, 20);
        c.retries = 2;
        let r = run(c).await;
        assert_eq!(failed(&r, "bad_response"), 20, "{what}: {r:?}");
        assert_eq!(hits.count(), 2, "{what}: not retried");
    }
    // A server that does not speak HTTP/2 at all is not a bad response of
    // a gRPC server (and nothing is accepted).
    let (url, _) = canned_http(|_| http_answer("200 OK", &[], b"")).await;
    let r = run(quick(&url, Protocol::Grpc, 10)).await;
    assert_eq!(r.spans_accepted, 0, "{r:?}");
    assert_eq!(failed(&r, "bad_response"), 0, "{r:?}");
    // The same server with a well-formed message is accepted: the test
    // server itself is sound.
    let (url, _) = raw_grpc(grpc_frame(0, b"")).await;
    let r = run(quick(&url, Protocol::Grpc, 20)).await;
    assert_eq!(r.spans_accepted, 20, "{r:?}");
}

/// 400 and INVALID_ARGUMENT (and every other code the OTLP specification
/// calls non-retryable) are tried once, whatever `--retries` says.
/// (The old main tried each 1 + 3 times.)
#[tokio::test]
async fn non_retryable_answers_are_not_retried() {
    for status in [
        "400 Bad Request",
        "401 Unauthorized",
        "413 Payload Too Large",
    ] {
        let (url, hits) = canned_http(move |_| http_answer(status, &[], b"no")).await;
        let mut c = quick(&url, Protocol::HttpProtobuf, 10);
        c.retries = 3;
        let r = run(c).await;
        assert_eq!(hits.count(), 1, "{status}: {r:?}");
        assert_eq!(r.spans_failed, 10);
    }
    for code in [
        tonic::Code::InvalidArgument,
        tonic::Code::PermissionDenied,
        tonic::Code::Unimplemented,
        tonic::Code::ResourceExhausted, // without RetryInfo
    ] {
        let (url, hits) = scripted_grpc(move |_| Err(tonic::Status::new(code, "no"))).await;
        let mut c = quick(&url, Protocol::Grpc, 10);
        c.retries = 3;
        let r = run(c).await;
        assert_eq!(hits.count(), 1, "{code:?}: {r:?}");
        assert_eq!(r.spans_failed, 10);
    }
    // Retryable ones are retried: 429, 502, 503, 504; UNAVAILABLE etc.
    for status in [
        "429 Too Many Requests",
        "502 Bad Gateway",
        "504 Gateway Timeout",
    ] {
        let (url, hits) = canned_http(move |_| http_answer(status, &[], b"later")).await;
        let mut c = quick(&url, Protocol::HttpProtobuf, 10);
        c.retries = 2;
        run(c).await;
        assert_eq!(hits.count(), 3, "{status}");
    }
    for code in [tonic::Code::DeadlineExceeded, tonic::Code::Aborted] {
        let (url, hits) = scripted_grpc(move |_| Err(tonic::Status::new(code, "later"))).await;
        let mut c = quick(&url, Protocol::Grpc, 10);
        c.retries = 2;
        run(c).await;
        assert_eq!(hits.count(), 3, "{code:?}");
    }
}

fn gap(hits: &Hits) -> Duration {
    let t = hits.times();
    assert_eq!(t.len(), 2, "one retry");
    t[1] - t[0]
}

/// `Retry-After` in seconds is waited for before the retry (the backoff here
/// is 5 ms), and the retry then succeeds. (The old main retried after 5 ms.)
#[tokio::test]
async fn retry_after_is_honoured() {
    let (url, hits) = canned_http(|n| {
        if n == 0 {
            http_answer("503 Service Unavailable", &[("Retry-After", "1")], b"busy")
        } else {
            http_answer("200 OK", &[], b"")
        }
    })
    .await;
    let mut c = quick(&url, Protocol::HttpProtobuf, 10);
    c.retries = 1;
    let r = run(c).await;
    assert_eq!(r.spans_accepted, 10, "{r:?}");
    assert!(gap(&hits) >= Duration::from_secs(1), "{:?}", gap(&hits));
}

/// RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` (sent by the real tonic
/// server with tonic-types) is retried after its delay. (The old main
/// retried after the 5 ms backoff.)
#[tokio::test]
async fn retry_info_is_honoured() {
    use tonic_types::{ErrorDetails, StatusExt};
    let (url, hits) = scripted_grpc(|n| {
        if n == 0 {
            Err(tonic::Status::with_error_details(
                tonic::Code::ResourceExhausted,
                "slow down",
                ErrorDetails::with_retry_info(Some(Duration::from_millis(700))),
            ))
        } else {
            Ok(ExportTraceServiceResponse::default())
        }
    })
    .await;
    let mut c = quick(&url, Protocol::Grpc, 10);
    c.retries = 1;
    let r = run(c).await;
    assert_eq!(r.spans_accepted, 10, "{r:?}");
    assert_eq!(
        r.requests_failed_by_reason.get("grpc_resource_exhausted"),
        Some(&1)
    );
    assert!(gap(&hits) >= Duration::from_millis(700), "{:?}", gap(&hits));
}

/// A server asking for more than the bound (30 s) gets no retry: the spans
/// fail at once under its reason.
#[tokio::test]
async fn retry_after_beyond_the_bound_ends_the_retries() {
    let (url, hits) = canned_http(|_| {
        http_answer(
            "503 Service Unavailable",
            &[("Retry-After", "3600")],
            b"down for maintenance",
        )
    })
    .await;
    let mut c = quick(&url, Protocol::HttpProtobuf, 10);
    c.retries = 3;
    let r = run(c).await;
    assert_eq!(hits.count(), 1, "{r:?}");
    assert_eq!(failed(&r, "http_503"), 10);
}

/// A stop (SIGTERM in the binary) ends a pending retry wait at once: the
/// spans fail under the server's reason, not `aborted`, and no retry is sent.
/// (On the old main the retry went out after the backoff.)
#[tokio::test]
async fn stop_cancels_the_retry_wait() {
    let (url, hits) =
        canned_http(|_| http_answer("503 Service Unavailable", &[("Retry-After", "20")], b"busy"))
            .await;
    let mut c = quick(&url, Protocol::HttpProtobuf, 10);
    c.retries = 1;
    let started = Instant::now();
    let r = Generator::new(c)
        .unwrap()
        .run(tokio::time::sleep(Duration::from_millis(300)))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the 20 s wait was not cancelled"
    );
    assert_eq!(hits.count(), 1, "{r:?}");
    assert_eq!(failed(&r, "http_503"), 10, "{r:?}");
    assert_eq!(failed(&r, "aborted"), 0);
}

/// The binary: a partial success written the OTLP/JSON way (int64 as a
/// string) makes the run fail with exit 1, and the summary says why.
/// (The old main reported every span accepted and exited 0.)
#[tokio::test(flavor = "multi_thread")]
async fn binary_exits_1_on_json_partial_success() {
    let (url, _) = canned_http(|_| {
        json_ok(r#"{"partialSuccess":{"rejectedSpans":"1","errorMessage":"dropped"}}"#)
    })
    .await;
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_trace-gen"));
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn").args([
        "--stats-listen",
        "off",
        "--report-interval",
        "0s",
        "--node-name",
        "n",
        "--protocol",
        "http/json",
        "--endpoint",
        &url,
        "--count",
        "10",
        "--rate",
        "0",
        "--summary-json",
        "-",
    ]);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let r: GeneratorReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r.spans_accepted, failed(&r, "partial_rejected")), (9, 1));
    assert!(stderr.contains("dropped"), "errorMessage logged: {stderr}");
}

/// gRPC through a proxy that answers HTTP 503 without a grpc-status: tonic
/// maps it to UNAVAILABLE as gRPC says, and that is the server's answer
/// (retryable), not an unreadable one.
#[tokio::test]
async fn grpc_http_status_from_a_proxy_is_the_servers_answer() {
    let (url, hits) = h2_status(503).await;
    let mut c = quick(&url, Protocol::Grpc, 10);
    c.retries = 1;
    let r = run(c).await;
    assert_eq!(failed(&r, "grpc_unavailable"), 10, "{r:?}");
    assert_eq!(hits.count(), 2, "retried");
}

/// An HTTP/2 server answering every request with this HTTP status and no
/// gRPC headers (what a proxy in front of a gRPC server may send).
async fn h2_status(status: u16) -> (String, Hits) {
    #[derive(Clone)]
    struct Status(u16, Hits);
    impl tonic::server::NamedService for Status {
        const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    }
    impl tower::Service<http::Request<tonic::body::Body>> for Status {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
            self.1.push();
            std::future::ready(Ok(http::Response::builder()
                .status(self.0)
                .body(tonic::body::Body::empty())
                .unwrap()))
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let svc = Status(status, Hits::default());
    let hits = svc.1.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(l)),
    );
    (url, hits)
}
