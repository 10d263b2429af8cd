//! `--listen-file` / `SINK_LISTEN_FILE`: the binary on port 0 says where it listens in
//! a JSON file, so a test reads its ports without parsing logs.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use prost::Message;

const BIN: &str = env!("CARGO_BIN_EXE_trace-sink");

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trace-sink-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits (20 s at most) until the file exists, then reads it; fails early if the
/// process exits first.
fn wait_for_file(child: &mut Child, path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "trace-sink exited ({status}) before writing {}",
                path.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no {} within 20 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// The flag: the file names the three bound addresses, each serving what it should
/// (a span in over gRPC, one over OTLP/HTTP, both counted by the API); a clean
/// exit removes it.
#[tokio::test(flavor = "multi_thread")]
async fn listen_file_names_every_listener() {
    let dir = scratch("listen-file");
    let path = dir.join("ports.json");
    let mut child = Command::new(BIN)
        .args(["--grpc-listen=127.0.0.1:0", "--http-listen=127.0.0.1:0"])
        .args(["--api-listen=127.0.0.1:0", "--listen-file"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = wait_for_file(&mut child, &path);
    let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut keys: Vec<_> = doc.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["api", "grpc", "http"], "{text}");
    let addr = |k: &str| -> SocketAddr { doc[k].as_str().unwrap().parse().unwrap() };
    for k in ["api", "grpc", "http"] {
        assert_ne!(addr(k).port(), 0, "{text}");
    }

    grpc_client_at(addr("grpc"))
        .await
        .export(request(Some("n1"), Some("n1"), "g", 1..=2))
        .await
        .unwrap();
    let answer = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", addr("http")))
        .header("content-type", "application/x-protobuf")
        .body(request(Some("n1"), Some("n1"), "g", 3..=5).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let stats: serde_json::Value = reqwest::get(format!("http://{}/stats", addr("api")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["spans_total"], 5);

    sigterm(&child);
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
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The environment variable works as the flag; a file that cannot be written is a
/// setup error: exit 2, one line naming the path.
#[test]
fn listen_file_from_env_and_unwritable() {
    let dir = scratch("listen-env");
    let path = dir.join("ports.json");
    let mut child = Command::new(BIN)
        .args(["--grpc-listen=127.0.0.1:0", "--http-listen=127.0.0.1:0"])
        .arg("--api-listen=127.0.0.1:0")
        .env("SINK_LISTEN_FILE", &path)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&wait_for_file(&mut child, &path)).unwrap();
    let api = doc["api"].as_str().unwrap();
    let mut c = std::net::TcpStream::connect(api).unwrap();
    std::io::Write::write_all(
        &mut c,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut c, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    sigterm(&child);
    assert!(child.wait().unwrap().success());

    let unwritable = dir.join("no-such-dir/ports.json");
    let out = Command::new(BIN)
        .args(["--grpc-listen=127.0.0.1:0", "--http-listen=127.0.0.1:0"])
        .args(["--api-listen=127.0.0.1:0", "--listen-file"])
        .arg(&unwritable)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with(&format!(
            "trace-sink: cannot write --listen-file {}: ",
            unwritable.display()
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
