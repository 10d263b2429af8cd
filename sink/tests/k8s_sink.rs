//! The whole path of peer attribution against a real kube-apiserver and etcd
//! (deploy/kube/build.sh): the trace-sink binary with `--k8s-attribution
//! --k8s-kubeconfig`, running as a user that may only list and watch Pods;
//! spans arriving from an agent Pod's IP (a client socket bound to 127.0.0.5,
//! loopback like every 127.0.0.0/8 address) carry no agent node and are
//! attributed to that Pod's node, also after the IP moved to another Pod.
//!
//! Needs the binaries, so `#[ignore]`d for a plain `cargo test`;
//! ./run-tests.sh builds them and runs ignored tests too.

mod common;
#[path = "common/control_plane.rs"]
mod control_plane;
#[path = "common/process.rs"]
mod process;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::request;
use control_plane::{
    ControlPlane, SINK_TOKEN, SINK_USER, create_namespace, create_pod, delete_pod, grant_sink_role,
    set_status,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use process::SinkProcess;

const NS: &str = "kyma-system";

/// Starts the sink on ports the kernel picks (127.0.0.1:0; its listen file
/// says which). Its stderr is passed on to the test's.
fn start_sink(kubeconfig: &std::path::Path) -> SinkProcess {
    let mut cmd = process::command(env!("CARGO_BIN_EXE_trace-sink"), None);
    cmd.args([
        "--k8s-attribution",
        &format!("--k8s-kubeconfig={}", kubeconfig.display()),
    ])
    .env_remove("KUBECONFIG")
    .env("RUST_LOG", "info");
    SinkProcess::spawn(cmd, |line| eprintln!("{line}"))
}

async fn get(url: String) -> Option<(u16, String)> {
    let resp = reqwest::get(url).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

async fn stats(sink: &SinkProcess) -> serde_json::Value {
    let (status, body) = get(format!("http://{}/stats", sink.api)).await.unwrap();
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// Polls until `f` holds, at most 30 s.
async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "not within 30s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn send_from(sink: &SinkProcess, from: &str, req: ExportTraceServiceRequest) {
    let ep = tonic::transport::Endpoint::from_shared(format!("http://{}", sink.grpc))
        .unwrap()
        .local_address(Some(from.parse::<IpAddr>().unwrap()));
    let mut client = TraceServiceClient::new(ep.connect().await.unwrap());
    client.export(req).await.unwrap();
}

fn route<'a>(s: &'a serde_json::Value, g: &str, a: &str) -> Option<&'a serde_json::Value> {
    s["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["generator_node"] == g && r["agent_node"] == a)
}

/// An unmodified agent (no agent-node attribute) on node-1 at 127.0.0.5: its
/// spans are local by peer; once agent-a is terminating and agent-b on node-2
/// has taken 127.0.0.5, the same IP's spans go to node-2 (remote, and
/// `/check?expect=local` fails). Readiness follows the API.
#[tokio::test]
#[ignore = "needs deploy/kube/build.sh; run-tests.sh runs it"]
async fn sink_attributes_by_peer_against_real_apiserver() {
    let mut cp = ControlPlane::start().await;
    let admin = cp.admin().await;
    create_namespace(&admin, NS).await;
    grant_sink_role(&admin, SINK_USER).await;
    create_pod(&admin, NS, "agent-a", "node-1").await;
    set_status(&admin, NS, "agent-a", "Running", Some("127.0.0.5")).await;

    let sink = start_sink(&cp.kubeconfig("sink", SINK_TOKEN));
    until("sink ready", || async {
        get(format!("http://{}/readyz", sink.api))
            .await
            .map(|r| r.0)
            == Some(200)
    })
    .await;
    let s = stats(&sink).await;
    assert_eq!(s["kubernetes"]["api"], "synced");
    assert_eq!(s["kubernetes"]["pods"], 1);

    send_from(
        &sink,
        "127.0.0.5",
        request(Some("node-1"), None, "g1", 1..=5),
    )
    .await;
    let s = stats(&sink).await;
    let r = route(&s, "node-1", "node-1").expect("route node-1 -> node-1");
    assert_eq!(
        (r["spans"].as_u64(), r["attribution"].as_str()),
        (Some(5), Some("peer"))
    );
    assert_eq!(s["local_spans"], 5);
    let (status, _) = get(format!(
        "http://{}/check?expect=local&from_nodes=node-1",
        sink.api
    ))
    .await
    .unwrap();
    assert_eq!(status, 200);

    // The IP moves: agent-a terminating (no kubelet finishes it), agent-b on node-2 takes it.
    delete_pod(&admin, NS, "agent-a", 30).await;
    create_pod(&admin, NS, "agent-b", "node-2").await;
    set_status(&admin, NS, "agent-b", "Running", Some("127.0.0.5")).await;
    // The watch delivers in order: once agent-b is tracked, it holds the IP.
    until("agent-b tracked", || async {
        stats(&sink).await["kubernetes"]["pods"] == 2
    })
    .await;
    send_from(
        &sink,
        "127.0.0.5",
        request(Some("node-1"), None, "g1", 6..=8),
    )
    .await;
    let s = stats(&sink).await;
    let r = route(&s, "node-1", "node-2").expect("route node-1 -> node-2");
    assert_eq!(
        (r["spans"].as_u64(), r["attribution"].as_str()),
        (Some(3), Some("peer"))
    );
    assert_eq!(s["remote_spans"], 3);
    let (status, body) = get(format!("http://{}/check?expect=local", sink.api))
        .await
        .unwrap();
    assert_eq!(status, 412, "{body}");
    assert!(body.contains("node-1 -> node-2: 3"), "{body}");

    // The API goes away: not ready, and says why.
    cp.stop_apiserver();
    until("sink not ready", || async {
        matches!(get(format!("http://{}/readyz", sink.api)).await, Some((503, t)) if t.contains("Kubernetes API unreachable"))
    })
    .await;
    assert_eq!(stats(&sink).await["kubernetes"]["api"], "unreachable");
    send_from(
        &sink,
        "127.0.0.5",
        request(Some("node-1"), None, "g1", 9..=9),
    )
    .await;
    let s = stats(&sink).await;
    assert_eq!(s["unattributed_spans"], 1, "a stale list is not used");
    assert_eq!(s["kubernetes"]["peer_spans"]["api_unreachable"], 1);
    cp.start_apiserver().await;
    until("sink ready again", || async {
        get(format!("http://{}/readyz", sink.api))
            .await
            .map(|r| r.0)
            == Some(200)
    })
    .await;
}
