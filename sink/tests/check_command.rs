//! `trace-sink check`: polling semantics and exit codes, through the library and the binary.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use trace_proto::check::Conditions;
use trace_sink::check::{CheckOptions, CheckOutcome, run};

fn opts(url: String, conditions: Conditions, within_ms: u64, hold_ms: u64) -> CheckOptions {
    CheckOptions {
        url,
        conditions,
        within: Duration::from_millis(within_ms),
        hold: Duration::from_millis(hold_ms),
        interval: Duration::from_millis(50),
    }
}

fn base(sink: &trace_sink::SinkHandle) -> String {
    format!("http://{}", sink.api_addr().unwrap())
}

/// Positive conditions may become true during --within.
#[tokio::test]
async fn positive_conditions_may_become_true() {
    let sink = start_default().await;
    let addr = sink.grpc_addr().unwrap();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut c = grpc_client_at(addr).await;
        c.export(request(Some("a"), Some("a"), "g", 1..=3))
            .await
            .unwrap();
    });
    let cond = Conditions {
        expect_local: true,
        from_nodes: vec!["a".into()],
        ..Default::default()
    };
    let out = run(&opts(base(&sink), cond, 10_000, 0)).await;
    assert_eq!(out.exit_code(), 0, "{out:?}");
    sender.await.unwrap();
    sink.shutdown().await;
}

/// A positive condition still false at the deadline fails.
#[tokio::test]
async fn positive_condition_times_out() {
    let sink = start_default().await;
    let cond = Conditions {
        from_nodes: vec!["a".into()],
        min_spans: 0,
        ..Default::default()
    };
    let started = Instant::now();
    let out = run(&opts(base(&sink), cond, 300, 0)).await;
    assert!(matches!(out, CheckOutcome::Fail { .. }));
    assert!(started.elapsed() >= Duration::from_millis(300));
    sink.shutdown().await;
}

/// A negative condition broken during --hold fails the check.
#[tokio::test]
async fn negative_condition_broken_during_hold() {
    let sink = start_default().await;
    let mut c = grpc_client(&sink).await;
    c.export(request(Some("a"), Some("a"), "g", 1..=3))
        .await
        .unwrap();
    let addr = sink.grpc_addr().unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut c = grpc_client_at(addr).await;
        c.export(request(Some("c"), Some("a"), "gc", 1..=1))
            .await
            .unwrap();
    });
    let cond = Conditions {
        silent_nodes: vec!["c".into()],
        ..Default::default()
    };
    let out = run(&opts(base(&sink), cond, 5_000, 5_000)).await;
    let CheckOutcome::Fail { report, .. } = out else {
        panic!("expected a failure, got {out:?}")
    };
    assert!(report.failures[0].message.contains("node c"));
    sink.shutdown().await;
}

/// The binary's exit codes: 0 pass, 1 fail, 2 usage error, 2 unreachable.
#[tokio::test]
async fn binary_exit_codes() {
    let sink = start_default().await;
    grpc_client(&sink)
        .await
        .export(request(Some("a"), Some("a"), "g", 1..=3))
        .await
        .unwrap();
    let url = base(&sink);
    let bin = env!("CARGO_BIN_EXE_trace-sink");
    let run_bin = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || Command::new(bin).args(args).output().unwrap())
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    let out = run_bin(s(&[
        "check",
        "--url",
        &url,
        "--expect-local",
        "--from-nodes",
        "a",
        "--within",
        "2s",
    ]))
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("PASS"));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with('a') && l.contains("local") && l.contains('3')),
        "{stdout}"
    );

    let out = run_bin(s(&[
        "check",
        "--url",
        &url,
        "--silent-nodes",
        "a",
        "--within",
        "1s",
    ]))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("expected no spans from generator node a")
    );

    let out = run_bin(s(&["check", "--url", &url, "--within", "soon"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--within"));

    let out = run_bin(s(&[
        "check",
        "--url",
        "http://127.0.0.1:1",
        "--within",
        "1s",
        "--interval",
        "100ms",
    ]))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));

    let out = run_bin(s(&[
        "check",
        "--url",
        &url,
        "--json",
        "--min-spans",
        "4",
        "--within",
        "200ms",
    ]))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"]["pass"], false);
    assert_eq!(v["stats"]["spans_total"], 3);
    sink.shutdown().await;
}

/// The server binary: a bad flag and a taken port are both setup errors (exit 2, as in
/// trace-gen), each reported in one line.
#[test]
fn serve_usage_errors() {
    let bin = env!("CARGO_BIN_EXE_trace-sink");
    let out = Command::new(bin)
        .args(["--grpc-listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(bin)
        .args([
            "--grpc-listen",
            &addr,
            "--http-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen for OTLP/gRPC on {addr}")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `check --url` reads URLs as `trace-gen --endpoint` does: a bare HOST:PORT is
/// taken as http://HOST:PORT; a port that cannot be used is refused (exit 2) in one
/// line saying what is expected, never silently turned into port 80.
#[tokio::test]
async fn check_url_like_trace_gen_endpoint() {
    let sink = start_default().await;
    grpc_client(&sink)
        .await
        .export(request(Some("a"), Some("a"), "g", 1..=3))
        .await
        .unwrap();
    let bare = base(&sink).trim_start_matches("http://").to_owned();
    let bin = env!("CARGO_BIN_EXE_trace-sink");
    let run = |url: String| {
        tokio::task::spawn_blocking(move || {
            Command::new(bin)
                .args(["check", "--url", &url, "--within", "2s"])
                .output()
                .unwrap()
        })
    };
    let out = run(bare.clone()).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{bare}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (url, says) in [
        ("http://127.0.0.1:65536", "port 65536 is out of range"),
        ("127.0.0.1:99999", "port 99999 is out of range"),
        ("http://127.0.0.1:abc", "port \"abc\" is not a number"),
        ("http://127.0.0.1:", "the port after ':' is empty"),
        ("https://127.0.0.1:8080", "https is not supported"),
    ] {
        let out = run(url.to_owned()).await.unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {err}");
        assert!(err.contains(says), "{url}: {err}");
        assert!(err.contains(&format!("invalid --url {url:?}")), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    sink.shutdown().await;
}

/// `--worker-threads` / `SINK_WORKER_THREADS`: the one-thread default and a
/// multi-thread runtime both serve; 0 is a usage error (exit 2).
#[test]
fn worker_threads_flag() {
    use std::io::{BufRead, BufReader, Read, Write};
    let bin = env!("CARGO_BIN_EXE_trace-sink");
    let out = Command::new(bin)
        .args(["--worker-threads", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    for threads in ["1", "3"] {
        let mut child = Command::new(bin)
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
            ])
            .env("SINK_WORKER_THREADS", threads)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = lines
            .find_map(|l| l.ok().filter(|l| l.contains("listening")))
            .expect("start-up line");
        let api = line.rsplit("API on ").next().unwrap().trim().to_owned();
        let mut c = std::net::TcpStream::connect(&api).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{threads} thread(s): {answer}"
        );
    }
}
