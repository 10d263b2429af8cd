//! A real receiver nobody here wrote: the OpenTelemetry Collector built from its
//! official Go modules (deploy/collector/builder-config.yaml), running the very
//! agent configuration the Kubernetes manifests and the lab ship
//! (deploy/agent/config.yaml): OTLP receiver -> resource processor inserting
//! agent.node.name -> OTLP exporter -> trace-sink.
//!
//! The collector is built (once, cached) by deploy/collector/build.sh, which
//! needs Go and minutes on a cold machine, so the test is `#[ignore]`d: plain
//! `cargo test` reports it as ignored, and `./run-tests.sh` (run by `.ci/run`)
//! turns it on with `-- --include-ignored`.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use trace_gen::Generator;
use trace_gen::config::Protocol;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn collector_binary() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("deploy/collector/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run deploy/collector/build.sh");
    assert!(
        out.status.success(),
        "deploy/collector/build.sh failed: the collector is needed for this test (install Go, see README.md: What you need)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

struct Collector(Child);

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

async fn healthy(ip: &str) -> bool {
    tokio::net::TcpStream::connect((ip, 13133)).await.is_ok()
}

/// trace-gen -> collector agent (gRPC and HTTP) -> trace-sink: exact counts, the
/// agent's node stamped on every span, nothing lost or duplicated.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "builds the OpenTelemetry Collector with Go; run by ./run-tests.sh (cargo test -- --include-ignored)"]
async fn through_a_real_collector() {
    let bin = collector_binary();
    let sink = start_sink().await;
    // A loopback address of our own so the agent's fixed ports cannot collide.
    let ip = format!(
        "127.0.{}.{}",
        100 + std::process::id() % 100,
        2 + std::process::id() % 250
    );
    let child = Command::new(&bin)
        .arg("--config")
        .arg(repo().join("deploy/agent/config.yaml"))
        .env("MY_POD_IP", &ip)
        .env("MY_NODE_NAME", "node-c")
        .env("SINK_OTLP_ENDPOINT", sink.grpc_addr().unwrap().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the collector");
    let _collector = Collector(child);
    let mut up = false;
    // Generous: the collector starts slowly on a loaded machine.
    for _ in 0..600 {
        if healthy(&ip).await {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        up,
        "the collector's health endpoint never came up on {ip}:13133"
    );

    let mut ids = Vec::new();
    let mut accepted = 0;
    for (protocol, url) in [
        (Protocol::Grpc, format!("http://{ip}:4317")),
        (Protocol::HttpProtobuf, format!("http://{ip}:4318")),
        (Protocol::HttpJson, format!("http://{ip}:4318")),
    ] {
        let mut c = config("node-c", &url, protocol);
        c.count = Some(60);
        c.batch = 10;
        let g = Generator::new(c).unwrap();
        ids.push(g.generator_id().to_owned());
        let r = g.run(std::future::pending()).await;
        assert_eq!(
            (r.spans_accepted, r.spans_failed),
            (60, 0),
            "{protocol:?}: {r:?}"
        );
        accepted += r.spans_accepted;
    }
    // The collector forwards asynchronously: wait for everything to arrive.
    let mut s = sink.stats();
    for _ in 0..600 {
        if s.spans_total >= accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        s = sink.stats();
    }
    assert_eq!(s.spans_total, accepted);
    assert_eq!(s.local_spans, accepted, "{s:?}");
    assert_eq!(s.routes.len(), 1);
    assert_eq!(s.routes[0].generator_node.as_deref(), Some("node-c"));
    assert_eq!(
        s.routes[0].agent_node.as_deref(),
        Some("node-c"),
        "the agent stamped agent.node.name"
    );
    assert_eq!(s.agents[0].node.as_deref(), Some("node-c"));
    assert_eq!(s.generators.len(), 3);
    for g in &s.generators {
        assert!(ids.contains(&g.id));
        assert_eq!((g.spans, g.missing, g.duplicates), (60, 0, 0), "{g:?}");
    }
    sink.shutdown().await;
}
