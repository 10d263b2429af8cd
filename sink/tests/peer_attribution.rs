//! Peer attribution (`--k8s-attribution`) in-process: a client connecting from
//! a Pod's IP (127.0.0.0/8 is all loopback, so a client socket bound to
//! 127.0.0.5 arrives from "the agent Pod's IP"), a resolver fed by hand. The
//! same path against a real kube-apiserver is in k8s_sink.rs.

mod common;

use std::net::IpAddr;

use common::{api_url, request};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tokio::net::TcpListener;
use trace_sink::k8s::{ApiState, PodResolver, PodView};
use trace_sink::{SinkBuilder, SinkConfig, SinkHandle};

fn agent(uid: &str, node: &str, ip: &str) -> PodView {
    PodView {
        uid: uid.into(),
        namespace: "kyma-system".into(),
        name: format!("agent-{uid}").into(),
        node: Some(node.into()),
        ips: vec![ip.parse().unwrap()],
        terminal: false,
        terminating: false,
        created: None,
    }
}

async fn start(pods: PodResolver) -> SinkHandle {
    let l = || TcpListener::bind("127.0.0.1:0");
    SinkBuilder::new(SinkConfig::default())
        .grpc(l().await.unwrap())
        .http(l().await.unwrap())
        .api(l().await.unwrap())
        .pod_resolver(pods)
        .start()
        .unwrap()
}

/// A synced resolver that knows agent-a on node-1 at 127.0.0.5.
fn resolver() -> PodResolver {
    let r = PodResolver::new(100);
    r.index().apply(agent("a", "node-1", "127.0.0.5"));
    r.set_state(ApiState::Synced, None);
    r
}

/// Exports `req` over OTLP/gRPC from a socket bound to `from`.
async fn send_from(
    sink: &SinkHandle,
    from: &str,
    req: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) {
    let ep =
        tonic::transport::Endpoint::from_shared(format!("http://{}", sink.grpc_addr().unwrap()))
            .unwrap()
            .local_address(Some(from.parse::<IpAddr>().unwrap()));
    let mut client = TraceServiceClient::new(ep.connect().await.unwrap());
    client.export(req).await.unwrap();
}

async fn stats(sink: &SinkHandle) -> serde_json::Value {
    reqwest::get(api_url(sink, "/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Spans without an agent-node attribute, from the agent Pod's IP, are
/// attributed to that Pod's node: local, `attribution: peer`.
#[tokio::test]
async fn peer_only() {
    let sink = start(resolver()).await;
    send_from(
        &sink,
        "127.0.0.5",
        request(Some("node-1"), None, "g1", 1..=3),
    )
    .await;
    let s = stats(&sink).await;
    assert_eq!(s["local_spans"], 3);
    assert_eq!(s["unattributed_spans"], 0);
    let r = &s["routes"][0];
    assert_eq!(
        (r["generator_node"].as_str(), r["agent_node"].as_str()),
        (Some("node-1"), Some("node-1"))
    );
    assert_eq!(r["attribution"], "peer");
    assert_eq!(r["spans_by_attribution"], serde_json::json!({"peer": 3}));
    assert_eq!(s["kubernetes"]["api"], "synced");
    assert_eq!(s["kubernetes"]["pods"], 1);
    assert_eq!(
        s["kubernetes"]["peer_spans"],
        serde_json::json!({"resolved": 3})
    );
    assert_eq!(s["agent_node_conflicts"], 0);
    // The agent table lists the peer that delivered them.
    assert!(
        s["agents"][0]["peers"][0]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.5:")
    );
    let check = reqwest::get(api_url(&sink, "/check?expect=local&from_nodes=node-1"))
        .await
        .unwrap();
    assert_eq!(check.status(), 200);
}

/// Attribute and peer agreeing: `both`. A route fed by both kinds of spans is `mixed`.
#[tokio::test]
async fn both_and_mixed() {
    let sink = start(resolver()).await;
    send_from(
        &sink,
        "127.0.0.5",
        request(Some("node-1"), Some("node-1"), "g1", 1..=2),
    )
    .await;
    let s = stats(&sink).await;
    assert_eq!(s["routes"][0]["attribution"], "both");
    send_from(
        &sink,
        "127.0.0.5",
        request(Some("node-1"), None, "g1", 3..=3),
    )
    .await;
    let s = stats(&sink).await;
    assert_eq!(s["routes"][0]["attribution"], "mixed");
    assert_eq!(
        s["routes"][0]["spans_by_attribution"],
        serde_json::json!({"both": 2, "peer": 1})
    );
    assert_eq!(s["local_spans"], 3);
}

/// An agent stamping the wrong node: the span counts under the peer's node,
/// the conflict is counted (in /stats and /metrics), and /check fails whatever
/// it was asked, naming the route; `POST /reset` clears it.
#[tokio::test]
async fn conflict_fails_check() {
    let sink = start(resolver()).await;
    send_from(
        &sink,
        "127.0.0.5",
        request(Some("node-1"), Some("node-7"), "g1", 1..=4),
    )
    .await;
    let s = stats(&sink).await;
    assert_eq!(s["agent_node_conflicts"], 4);
    let r = &s["routes"][0];
    assert_eq!(r["agent_node"], "node-1");
    assert_eq!(r["agent_node_conflicts"], 4);
    assert_eq!(r["attribution"], "peer");
    assert_eq!(s["local_spans"], 4);
    let check = reqwest::get(api_url(&sink, "/check?min_spans=1"))
        .await
        .unwrap();
    assert_eq!(check.status(), 412);
    let body: serde_json::Value = check.json().await.unwrap();
    let msg = body["failures"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("4 spans carry an agent-node attribute")
            && msg.contains("node-1 -> node-1: 4"),
        "{msg}"
    );
    let metrics = reqwest::get(api_url(&sink, "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("trace_sink_agent_node_conflicts_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("trace_sink_peer_spans_total{result=\"resolved\"} 4"),
        "{metrics}"
    );
    reqwest::Client::new()
        .post(api_url(&sink, "/reset"))
        .send()
        .await
        .unwrap();
    let s = stats(&sink).await;
    assert_eq!(s["agent_node_conflicts"], 0);
    assert_eq!(s["kubernetes"]["peer_spans"], serde_json::json!({}));
}

/// A peer no Pod explains is unattributed when the spans carry no agent node
/// (never guessed), and expect=local fails on it; over OTLP/HTTP too.
#[tokio::test]
async fn unknown_peer_is_unattributed() {
    let sink = start(resolver()).await;
    send_from(
        &sink,
        "127.0.0.9",
        request(Some("node-1"), None, "g1", 1..=2),
    )
    .await;
    let body = request(Some("node-1"), None, "g2", 1..=1).encode_to_vec();
    let resp = reqwest::Client::builder()
        .local_address(Some("127.0.0.9".parse::<IpAddr>().unwrap()))
        .build()
        .unwrap()
        .post(format!("http://{}/v1/traces", sink.http_addr().unwrap()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let s = stats(&sink).await;
    assert_eq!(s["unattributed_spans"], 3);
    assert_eq!(s["routes"][0]["agent_node"], serde_json::Value::Null);
    assert_eq!(s["routes"][0]["attribution"], serde_json::Value::Null);
    assert_eq!(
        s["kubernetes"]["peer_spans"],
        serde_json::json!({"no_pod": 3})
    );
    let check = reqwest::get(api_url(&sink, "/check?expect=local"))
        .await
        .unwrap();
    assert_eq!(check.status(), 412);
    // The attribute alone still attributes where the peer cannot.
    send_from(
        &sink,
        "127.0.0.9",
        request(Some("node-1"), Some("node-1"), "g3", 1..=1),
    )
    .await;
    let s = stats(&sink).await;
    let attr_route = s["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["agent_node"] == "node-1")
        .unwrap();
    assert_eq!(attr_route["attribution"], "attribute");
}

/// While the Pod list is not current (API unreachable), /readyz says so with
/// the error, /stats shows it, and spans of a known Pod's IP are not resolved
/// from the stale list.
#[tokio::test]
async fn api_unreachable_is_visible() {
    let r = resolver();
    let sink = start(r.clone()).await;
    r.set_state(ApiState::Unreachable, Some("connection refused".into()));
    let ready = reqwest::get(api_url(&sink, "/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let text = ready.text().await.unwrap();
    assert!(
        text.contains("Kubernetes API unreachable: connection refused"),
        "{text}"
    );
    send_from(
        &sink,
        "127.0.0.5",
        request(Some("node-1"), None, "g1", 1..=2),
    )
    .await;
    let s = stats(&sink).await;
    assert_eq!(s["kubernetes"]["api"], "unreachable");
    assert_eq!(s["kubernetes"]["last_error"], "connection refused");
    assert_eq!(
        s["kubernetes"]["peer_spans"],
        serde_json::json!({"api_unreachable": 2})
    );
    assert_eq!(s["unattributed_spans"], 2);
    r.set_state(ApiState::Synced, None);
    assert_eq!(
        reqwest::get(api_url(&sink, "/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Without Kubernetes attribution nothing changes: no `kubernetes` section,
/// the peer is not looked up, routes say `attribute`.
#[tokio::test]
async fn off_by_default() {
    let sink = common::start_default().await;
    send_from(
        &sink,
        "127.0.0.5",
        request(Some("node-1"), None, "g1", 1..=1),
    )
    .await;
    send_from(
        &sink,
        "127.0.0.5",
        request(Some("node-1"), Some("node-1"), "g2", 1..=1),
    )
    .await;
    let s = stats(&sink).await;
    assert!(s.get("kubernetes").is_none());
    assert_eq!(s["unattributed_spans"], 1);
    let attributed = s["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["agent_node"] == "node-1")
        .unwrap();
    assert_eq!(attributed["attribution"], "attribute");
    assert!(sink.pod_resolver().is_none());
}
