//! The trace-gen binary: environment variables, flag precedence, exit codes,
//! the stats server, SIGTERM and the JSON summary.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use trace_proto::stats::GeneratorReport;

const BIN: &str = env!("CARGO_BIN_EXE_trace-gen");

/// A trace-gen command with a clean OTEL environment and quiet logs.
fn gen_cmd() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k == "NODE_NAME" || k == "POD_NAME" || k == "POD_NAMESPACE" {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn")
        .args(["--stats-listen", "off", "--report-interval", "0s"]);
    c
}

async fn output(mut c: Command) -> (Option<i32>, GeneratorReport, String) {
    c.args(["--summary-json", "-"]);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (out.status.code(), report, stderr)
}

/// Environment variables are honoured: NODE_NAME, POD_*, OTEL_SERVICE_NAME,
/// OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_{ENDPOINT,PROTOCOL,HEADERS,TIMEOUT}.
#[tokio::test(flavor = "multi_thread")]
async fn environment_is_honoured() {
    let (url, rec) = start_recorder(None).await;
    let mut c = gen_cmd();
    c.env("NODE_NAME", "env-node")
        .env("POD_NAME", "env-pod")
        .env("POD_NAMESPACE", "env-ns")
        .env("OTEL_SERVICE_NAME", "env-svc")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=lab,team=o%2Cbs",
        )
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &url)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=t-env")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "3000")
        .args(["--count", "3", "--rate", "0"]);
    let (code, r, stderr) = output(c).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        (r.node.as_str(), r.endpoint.as_str(), r.protocol.as_str()),
        ("env-node", url.as_str(), "grpc")
    );
    let reqs = rec.requests.lock().unwrap();
    let (req, md) = &reqs[0];
    let res = &req.resource_spans[0].resource.as_ref().unwrap().attributes;
    use trace_proto::otlp::get_str;
    assert_eq!(get_str(res, "k8s.node.name"), Some("env-node"));
    assert_eq!(get_str(res, "k8s.pod.name"), Some("env-pod"));
    assert_eq!(get_str(res, "k8s.namespace.name"), Some("env-ns"));
    assert_eq!(get_str(res, "service.name"), Some("env-svc"));
    assert_eq!(get_str(res, "deployment.environment"), Some("lab"));
    assert_eq!(get_str(res, "team"), Some("o,bs"));
    assert_eq!(md.get("x-tenant").unwrap(), "t-env");
}

/// OTEL_EXPORTER_OTLP_ENDPOINT with an HTTP protocol gets /v1/traces appended.
#[tokio::test(flavor = "multi_thread")]
async fn generic_endpoint_for_http() {
    let sink = start_sink().await;
    let mut c = gen_cmd();
    c.env("NODE_NAME", "n")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", http_url(&sink))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .args(["--count", "7", "--rate", "0"]);
    let (code, r, stderr) = output(c).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(r.endpoint, format!("{}/v1/traces", http_url(&sink)));
    assert_eq!(sink.stats().requests["http_json"]["ok"], 1);
    assert_eq!(sink.stats().spans_total, 7);
    sink.shutdown().await;
}

/// Flags win over the environment.
#[tokio::test(flavor = "multi_thread")]
async fn flags_win() {
    let sink = start_sink().await;
    let closed = closed_port();
    let mut c = gen_cmd();
    c.env("NODE_NAME", "env-node")
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &closed.url)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_SERVICE_NAME", "env-svc")
        .args([
            "--node-name",
            "flag-node",
            "--endpoint",
            &grpc_url(&sink),
            "--protocol",
            "grpc",
        ])
        .args(["--count", "4", "--rate", "0", "--service-name", "flag-svc"]);
    let (code, r, stderr) = output(c).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        (r.node.as_str(), r.protocol.as_str()),
        ("flag-node", "grpc")
    );
    let s = sink.stats();
    assert_eq!(s.routes[0].generator_node.as_deref(), Some("flag-node"));
    assert_eq!(s.requests["grpc"]["ok"], 1);
    sink.shutdown().await;
}

/// Exit 1 when an export failed, with the reason in the summary; the error is
/// logged once, not per failure.
#[tokio::test(flavor = "multi_thread")]
async fn exit_one_on_failure() {
    let closed = closed_port();
    let mut c = gen_cmd();
    c.args([
        "--node-name",
        "n",
        "--endpoint",
        &closed.url,
        "--count",
        "5",
        "--rate",
        "0",
        "--batch",
        "1",
    ]);
    let (code, r, stderr) = output(c).await;
    assert_eq!(code, Some(1));
    assert_eq!(r.spans_failed_by_reason["connection_refused"], 5);
    assert_eq!(r.requests_failed_by_reason["connection_refused"], 5);
    // Logged once, not once per failure: the rest goes into the progress lines.
    assert_eq!(stderr.matches("export failed").count(), 1, "{stderr}");
    assert!(
        stderr.contains("trace-gen summary:") && stderr.contains("connection_refused=5"),
        "{stderr}"
    );
}

/// Usage errors exit 2 with one clear line, before anything is sent.
#[test]
fn usage_errors() {
    for (args, expect) in [
        (
            vec!["--endpoint", "https://x:4317"],
            "https is not supported",
        ),
        (vec!["--endpoint", "http://"], "invalid endpoint"),
        (vec!["--protocol", "smoke-signals"], "invalid protocol"),
        (vec!["--rate=-1"], "invalid --rate"),
        (vec!["--batch", "0"], "--batch"),
        (vec!["--header", "novalue"], "expected key=value"),
        (vec!["--reconnect-every", "sometimes"], "--reconnect-every"),
        (
            vec!["--count", "5", "--duration", "5s"],
            "cannot be used with",
        ),
        (vec!["--no-such-flag"], "unexpected argument"),
        (
            vec!["--endpoint", "http://127.0.0.1:65536"],
            "port 65536 is out of range; expected http://HOST:PORT with a port from 1 to 65535",
        ),
        (
            vec!["--endpoint", "http://127.0.0.1:99999"],
            "port 99999 is out of range",
        ),
        (
            vec!["--endpoint", "127.0.0.1:abc"],
            "port \"abc\" is not a number",
        ),
        (
            vec!["--endpoint", "http://127.0.0.1:"],
            "the port after ':' is empty",
        ),
        (
            vec![
                "--protocol",
                "http/protobuf",
                "--endpoint",
                "http://[::1]:70000/v1/traces",
            ],
            "port 70000 is out of range",
        ),
    ] {
        let out = gen_cmd()
            .arg("--node-name")
            .arg("n")
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
        // Our own checks say it in one line; clap's (bad flag syntax) keep clap's format.
        if !err.starts_with("error: ") {
            assert!(err.starts_with("trace-gen: "), "{args:?}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        }
    }
    let out = Command::new(BIN)
        .args(["--node-name", "n", "--stats-listen", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --stats-listen"));
    let out = gen_cmd()
        .args(["--node-name", "n"])
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OTEL_EXPORTER_OTLP_TIMEOUT"));
    let out = gen_cmd()
        .args(["--node-name", "n"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:65536")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port 65536 is out of range"));
}

/// A --stats-listen address already taken is a setup error: exit 2 in one line,
/// as a taken listen address is for trace-sink.
#[test]
fn stats_port_taken_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .env("RUST_LOG", "warn")
        .args(["--node-name", "n", "--count", "1", "--stats-listen", &addr])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("cannot listen on --stats-listen {addr}")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// SIGTERM stops sending, waits for in-flight requests and exits 0 with a summary;
/// meanwhile /stats, /metrics and /healthz answer.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_and_stats_server() {
    let sink = start_sink().await;
    let dir = std::env::temp_dir().join(format!("trace-gen-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let summary = dir.join("summary.json");
    let mut child = Command::new(BIN)
        .env("RUST_LOG", "info")
        .args([
            "--node-name",
            "n",
            "--endpoint",
            &grpc_url(&sink),
            "--rate",
            "50",
            "--batch",
            "5",
        ])
        // Port 0: the kernel picks one, the start-up log says which.
        .args(["--stats-listen", "127.0.0.1:0"])
        .arg("--summary-json")
        .arg(&summary)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("stats on http://").nth(1) {
                let _ = tx.send(rest.trim_end_matches("/stats").to_owned());
            }
            lines.push(line);
        }
        lines.join("\n")
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("trace-gen logs its stats address");
    let base = format!("http://{addr}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let live = loop {
        if let Ok(r) = reqwest_get(&format!("{base}/stats")).await
            && let Ok(rep) = serde_json::from_str::<GeneratorReport>(&r)
            && rep.spans_accepted >= 10
        {
            break rep;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/stats answered with progress within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(live.node, "n");
    let metrics = reqwest_get(&format!("{base}/metrics")).await.unwrap();
    assert!(
        metrics.contains("trace_gen_spans_accepted_total"),
        "{metrics}"
    );
    assert_eq!(
        reqwest_get(&format!("{base}/healthz"))
            .await
            .unwrap()
            .trim(),
        "ok"
    );
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let (status, stderr) = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        (status, reader.join().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("trace-gen summary:"), "{stderr}");
    let r: GeneratorReport = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert!(r.spans_sent >= live.spans_accepted);
    assert_eq!(r.spans_sent, r.spans_accepted);
    assert_eq!(sink.stats().spans_total, r.spans_accepted);
    std::fs::remove_dir_all(&dir).ok();
    sink.shutdown().await;
}

/// Minimal HTTP GET over hyper (no extra client dependency).
async fn reqwest_get(url: &str) -> Result<String, String> {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let resp = client
        .get(url.parse().unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Without NODE_NAME the hostname is used, with a warning.
#[tokio::test(flavor = "multi_thread")]
async fn hostname_fallback() {
    let sink = start_sink().await;
    let mut c = gen_cmd();
    c.env("RUST_LOG", "info").args([
        "--endpoint",
        &grpc_url(&sink),
        "--count",
        "2",
        "--rate",
        "0",
    ]);
    let (code, r, stderr) = output(c).await;
    assert_eq!(code, Some(0), "{stderr}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(r.node, host.trim());
    assert!(stderr.contains("NODE_NAME is not set"), "{stderr}");
    sink.shutdown().await;
}

/// The progress line reports the achieved rate, accepted spans and failures by reason.
#[tokio::test(flavor = "multi_thread")]
async fn progress_lines() {
    let closed = closed_port();
    let mut c = Command::new(BIN);
    c.env("RUST_LOG", "info").args([
        "--node-name",
        "n",
        "--endpoint",
        &closed.url,
        "--rate",
        "50",
        "--batch",
        "5",
        // 10 report intervals for the 2 lines asserted: a starved process
        // still writes them.
        "--duration",
        "3s",
        "--report-interval",
        "300ms",
        "--stats-listen",
        "off",
    ]);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let progress: Vec<&str> = stderr.lines().filter(|l| l.contains("progress:")).collect();
    assert!(progress.len() >= 2, "{stderr}");
    let last = progress.last().unwrap();
    assert!(
        last.contains("spans/s") && last.contains("accepted 0"),
        "{last}"
    );
    assert!(last.contains("connection_refused="), "{last}");
}

/// The start line says what --rate 0 means ("as fast as possible"), not "at 0 spans/s".
#[test]
fn rate_zero_is_logged_in_words() {
    let start_line = |rate: &str| {
        let out = Command::new(BIN)
            .env("RUST_LOG", "info")
            .args([
                "--node-name",
                "n",
                "--stats-listen",
                "off",
                "--report-interval",
                "0s",
            ])
            .args([
                "--endpoint",
                "http://127.0.0.1:1",
                "--count",
                "1",
                "--rate",
                rate,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        err.lines()
            .find(|l| l.contains(" on node n: grpc to "))
            .unwrap_or_else(|| panic!("no start line: {err}"))
            .to_owned()
    };
    let line = start_line("0");
    assert!(
        line.contains("http://127.0.0.1:1 as fast as possible, batch 10"),
        "{line}"
    );
    assert!(!line.contains("spans/s"), "{line}");
    let line = start_line("2.5");
    assert!(line.contains("at 2.5 spans/s, batch 10"), "{line}");
}

/// Waits (20 s at most) until `path` exists and reads it; fails early if the
/// process exits first.
fn wait_for_file(child: &mut std::process::Child, path: &std::path::Path) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "trace-gen exited ({status}) before writing {}",
                path.display()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {} within 20 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--listen-file`: on port 0 the stats server's address is read from the file
/// (`{"stats":"127.0.0.1:PORT"}`), not from a log line, and serves /stats; the
/// file is gone after a clean exit. `TRACE_GEN_LISTEN_FILE` works as the flag
/// (`{}` with `--stats-listen off`), and a file that cannot be written is a
/// setup error: exit 2, one line.
#[tokio::test(flavor = "multi_thread")]
async fn listen_file_gives_the_stats_port() {
    let sink = start_sink().await;
    let dir = std::env::temp_dir().join(format!("trace-gen-listen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ports.json");
    let mut child = Command::new(BIN)
        .env("RUST_LOG", "warn")
        .args(["--node-name", "n", "--endpoint", &grpc_url(&sink)])
        .args([
            "--rate",
            "50",
            "--stats-listen",
            "127.0.0.1:0",
            "--listen-file",
        ])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = wait_for_file(&mut child, &path);
    let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(doc.keys().collect::<Vec<_>>(), ["stats"], "{text}");
    let addr: std::net::SocketAddr = doc["stats"].as_str().unwrap().parse().unwrap();
    assert_ne!(addr.port(), 0);
    let live: GeneratorReport =
        serde_json::from_str(&reqwest_get(&format!("http://{addr}/stats")).await.unwrap()).unwrap();
    assert_eq!(live.node, "n");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!path.exists(), "the listen file outlived the process");

    let mut child = gen_cmd()
        .env("TRACE_GEN_LISTEN_FILE", &path)
        .args(["--node-name", "n", "--endpoint", &grpc_url(&sink)])
        .args(["--rate", "50"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(wait_for_file(&mut child, &path), "{}\n");
    child.kill().unwrap();
    child.wait().unwrap();

    let unwritable = dir.join("no-such-dir/ports.json");
    let out = gen_cmd()
        .args([
            "--node-name",
            "n",
            "--endpoint",
            &grpc_url(&sink),
            "--count",
            "1",
        ])
        .arg("--listen-file")
        .arg(&unwritable)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with(&format!(
            "trace-gen: cannot write --listen-file {}: ",
            unwritable.display()
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    sink.shutdown().await;
}
