//! A peer that answers in the other protocol is named in plain words, with the likely
//! fix, under the documented failure reasons: gRPC sent to an OTLP/HTTP port, OTLP/HTTP
//! sent to a gRPC port, and 404/415 pages on an OTLP/HTTP export.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use trace_gen::Generator;
use trace_gen::config::{Endpoint, Protocol};
use trace_proto::stats::GeneratorReport;

async fn send(mut c: trace_gen::GenConfig) -> GeneratorReport {
    c.count = Some(10);
    c.batch = 10;
    let r = Generator::new(c).unwrap().run(std::future::pending()).await;
    assert_eq!(r.spans_failed, 10, "{r:?}");
    r
}

fn last_message(r: &GeneratorReport) -> String {
    r.last_error.as_ref().expect("a failure").message.clone()
}

fn only_reason(r: &GeneratorReport) -> String {
    assert_eq!(r.spans_failed_by_reason.len(), 1, "{r:?}");
    r.spans_failed_by_reason.keys().next().unwrap().clone()
}

/// An HTTP/1.1-only server (no h2c) that answers every connection with `status` and an
/// HTML page, then closes it the way nginx and Go's net/http do (lingering close: stop
/// writing, read what the client still sends, then close), as a web server or ingress on
/// the wrong port would.
async fn start_http1_page(status: &'static str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = format!("<html><body><h1>{status}</h1></body></html>");
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
                let linger = async { while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {} };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), linger).await;
            });
        }
    });
    url
}

/// gRPC to the sink's OTLP/HTTP port (which answers HTTP/2 too, with a 404 text page):
/// "answered plain HTTP, not gRPC", naming --protocol http/protobuf and both ports.
#[tokio::test]
async fn grpc_to_the_otlp_http_port() {
    let sink = start_sink().await;
    let r = send(config("n", &http_url(&sink), Protocol::Grpc)).await;
    let m = last_message(&r);
    assert!(
        m.starts_with("the endpoint answered plain HTTP (HTTP 404 without gRPC framing), not gRPC: it looks like an OTLP/HTTP port; use --protocol http/protobuf for it (port 4318), or the gRPC port (4317)"),
        "{m}"
    );
    let reason = only_reason(&r);
    assert!(
        reason.starts_with("grpc_") || reason == "transport",
        "{reason}"
    );
    assert_eq!(sink.stats().spans_total, 0);
    sink.shutdown().await;
}

/// gRPC to an HTTP/1.1-only server: the same plain words.
#[tokio::test]
async fn grpc_to_an_http1_only_server() {
    let url = start_http1_page("404 Not Found").await;
    let r = send(config("n", &url, Protocol::Grpc)).await;
    let m = last_message(&r);
    assert!(
        m.starts_with("the endpoint answered plain HTTP (HTTP/1.1), not gRPC: it looks like an OTLP/HTTP port; use --protocol http/protobuf for it (port 4318), or the gRPC port (4317)"),
        "{m}"
    );
    assert_eq!(only_reason(&r), "transport");
}

/// OTLP/HTTP to the sink's gRPC port: "answered HTTP/2", naming --protocol grpc;
/// counted as `transport`.
#[tokio::test]
async fn otlp_http_to_the_grpc_port() {
    let sink = start_sink().await;
    for protocol in [Protocol::HttpProtobuf, Protocol::HttpJson] {
        let r = send(config("n", &grpc_url(&sink), protocol)).await;
        let m = last_message(&r);
        assert!(
            m.starts_with("the endpoint answered HTTP/2, not HTTP/1.1: it looks like a gRPC port; use --protocol grpc for it (port 4317), or the OTLP/HTTP port (4318)"),
            "{m}"
        );
        assert_eq!(only_reason(&r), "transport");
    }
    assert_eq!(sink.stats().spans_total, 0);
    sink.shutdown().await;
}

/// OTLP/HTTP to the right port but the wrong path: a 404 in plain words, `http_404`.
#[tokio::test]
async fn otlp_http_wrong_path() {
    let sink = start_sink().await;
    let mut c = config("n", &http_url(&sink), Protocol::HttpProtobuf);
    c.exporter.endpoint = Endpoint::parse(&format!("{}/v2/spans", http_url(&sink))).unwrap();
    let r = send(c).await;
    let m = last_message(&r);
    assert!(
        m.starts_with("the endpoint answered 404 Not Found for POST /v2/spans: nothing takes OTLP/HTTP traces there; OTLP/HTTP receivers take POST /v1/traces on port 4318"),
        "{m}"
    );
    assert!(m.contains("--protocol grpc"), "{m}");
    assert_eq!(only_reason(&r), "http_404");
    sink.shutdown().await;
}

/// 404 and 415 HTML pages from an HTTP/1.1 server: said to be pages, with the fix;
/// counted as `http_404` / `http_415`.
#[tokio::test]
async fn html_pages_on_an_otlp_http_export() {
    let url = start_http1_page("404 Not Found").await;
    let r = send(config("n", &url, Protocol::HttpProtobuf)).await;
    let m = last_message(&r);
    assert!(
        m.starts_with("the endpoint answered 404 Not Found with an HTML page for POST /v1/traces"),
        "{m}"
    );
    assert_eq!(only_reason(&r), "http_404");

    let url = start_http1_page("415 Unsupported Media Type").await;
    let r = send(config("n", &url, Protocol::HttpJson)).await;
    let m = last_message(&r);
    assert!(
        m.starts_with("the endpoint answered 415 Unsupported Media Type with an HTML page: it does not take application/json; try --protocol http/protobuf"),
        "{m}"
    );
    assert_eq!(only_reason(&r), "http_415");
}
