//! The Pod resolver against a real kube-apiserver and etcd (built by
//! deploy/kube/build.sh; started by each test on loopback). Pods are created
//! bound to a node and their status is written as a kubelet would, including
//! an IP taken over by a new Pod while the old one is still terminating.
//!
//! These tests need the binaries, so they are `#[ignore]`d for a plain
//! `cargo test`; ./run-tests.sh builds them and runs ignored tests too.

#[path = "common/control_plane.rs"]
mod control_plane;

use std::net::IpAddr;
use std::time::Duration;

use control_plane::{
    ControlPlane, SINK_TOKEN, SINK_USER, create_namespace, create_pod, delete_pod, eventually,
    grant_sink_role, set_status,
};
use tokio_util::sync::CancellationToken;
use trace_sink::k8s::{
    ApiState, ClientSource, K8sConfig, PodRef, PodResolver, Resolution, Unresolved, watch,
};

const WAIT: Duration = Duration::from_secs(20);
const NS: &str = "kyma-system";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The sink's resolver, as the sink user with only list/watch on Pods, through
/// a kubeconfig file.
async fn resolver(cp: &ControlPlane, config: K8sConfig) -> (PodResolver, CancellationToken) {
    let kubeconfig = cp.kubeconfig("sink", SINK_TOKEN);
    let config = K8sConfig {
        source: ClientSource::Kubeconfig(kubeconfig),
        ..config
    };
    let client = trace_sink::k8s::client(&config.source).await.unwrap();
    let r = PodResolver::new(config.max_pods);
    let cancel = CancellationToken::new();
    watch::spawn(client, &config, r.clone(), cancel.clone());
    (r, cancel)
}

fn pod_at(r: &PodResolver, addr: &str) -> Option<PodRef> {
    match r.resolve(ip(addr)) {
        Resolution::Pod(p) => Some(p),
        Resolution::Unknown(_) => None,
    }
}

/// Running Pods resolve to their node; an IP reused by a new Pod while the old
/// one is still terminating resolves to the new Pod; a terminating Pod keeps its
/// IP until then; a Pod that completed releases it; an IP no Pod has is unknown.
#[tokio::test]
#[ignore = "needs deploy/kube/build.sh; run-tests.sh runs it"]
async fn churn_against_real_apiserver() {
    let cp = ControlPlane::start().await;
    let admin = cp.admin().await;
    create_namespace(&admin, NS).await;
    grant_sink_role(&admin, SINK_USER).await;
    // Pods that exist before the sink starts come from the initial list.
    create_pod(&admin, NS, "agent-a", "node-1").await;
    set_status(&admin, NS, "agent-a", "Running", Some("127.0.0.5")).await;
    let (r, cancel) = resolver(&cp, K8sConfig::default()).await;

    let a = eventually("agent-a resolved", WAIT, || pod_at(&r, "127.0.0.5")).await;
    assert_eq!((&*a.namespace, &*a.name), (NS, "agent-a"));
    assert_eq!(a.node.as_deref(), Some("node-1"));
    assert!(!a.terminating);
    assert_eq!(r.status().state, ApiState::Synced);
    assert_eq!(
        r.resolve(ip("127.0.0.9")),
        Resolution::Unknown(Unresolved::NoPod)
    );

    // Pending without an IP: nothing to resolve yet.
    create_pod(&admin, NS, "agent-b", "node-2").await;
    set_status(&admin, NS, "agent-b", "Pending", None).await;

    // agent-a is deleted with a grace period: it is terminating and, with no
    // kubelet to finish it, stays so. It still owns its IP.
    delete_pod(&admin, NS, "agent-a", 30).await;
    let a = eventually("agent-a terminating", WAIT, || {
        pod_at(&r, "127.0.0.5").filter(|p| p.terminating)
    })
    .await;
    assert_eq!(a.node.as_deref(), Some("node-1"));

    // agent-b on node-2 gets the same IP: it holds it now, not agent-a.
    set_status(&admin, NS, "agent-b", "Running", Some("127.0.0.5")).await;
    let b = eventually("127.0.0.5 taken over by agent-b", WAIT, || {
        pod_at(&r, "127.0.0.5").filter(|p| &*p.name == "agent-b")
    })
    .await;
    assert_eq!(b.node.as_deref(), Some("node-2"));
    assert!(!b.terminating);

    // agent-a finally goes: nothing changes for the IP. Two Pods claim it
    // until the resolver has seen the delete, one after: wait for that, then
    // look.
    assert_eq!(r.status().pods, 2, "agent-a and agent-b claim 127.0.0.5");
    delete_pod(&admin, NS, "agent-a", 0).await;
    eventually("agent-a's delete seen", WAIT, || {
        (r.status().pods == 1).then_some(())
    })
    .await;
    assert_eq!(
        pod_at(&r, "127.0.0.5")
            .map(|p| p.name.to_string())
            .as_deref(),
        Some("agent-b")
    );

    // A Pod that completes (Succeeded) releases its IP.
    create_pod(&admin, NS, "job-c", "node-3").await;
    set_status(&admin, NS, "job-c", "Running", Some("127.0.0.6")).await;
    eventually("job-c resolved", WAIT, || pod_at(&r, "127.0.0.6")).await;
    set_status(&admin, NS, "job-c", "Succeeded", Some("127.0.0.6")).await;
    eventually("job-c released its IP", WAIT, || {
        (r.resolve(ip("127.0.0.6")) == Resolution::Unknown(Unresolved::NoPod)).then_some(())
    })
    .await;
    assert_eq!(r.status().pods, 1, "only agent-b holds an IP");
    cancel.cancel();
}

/// A label selector narrows the watch: Pods outside it are unknown.
#[tokio::test]
#[ignore = "needs deploy/kube/build.sh; run-tests.sh runs it"]
async fn label_selector_narrows_watch() {
    let cp = ControlPlane::start().await;
    let admin = cp.admin().await;
    create_namespace(&admin, NS).await;
    grant_sink_role(&admin, SINK_USER).await;
    let (r, cancel) = resolver(
        &cp,
        K8sConfig {
            label_selector: Some("app.kubernetes.io/name=trace-agent".into()),
            ..K8sConfig::default()
        },
    )
    .await;
    // An app Pod without the agent's label.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(admin.clone(), NS);
    let app: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "app", "labels": { "app": "other" } },
        "spec": { "nodeName": "node-2", "containers": [{ "name": "c", "image": "i" }] }
    }))
    .unwrap();
    pods.create(&Default::default(), &app).await.unwrap();
    set_status(&admin, NS, "app", "Running", Some("127.0.0.6")).await;
    create_pod(&admin, NS, "agent", "node-1").await;
    set_status(&admin, NS, "agent", "Running", Some("127.0.0.5")).await;
    eventually("agent resolved", WAIT, || pod_at(&r, "127.0.0.5")).await;
    // The app's status was written before the agent's, so the watch, which
    // delivers changes in order, has passed it too.
    assert_eq!(
        r.resolve(ip("127.0.0.6")),
        Resolution::Unknown(Unresolved::NoPod)
    );
    cancel.cancel();
}

/// Without RBAC permission the API is "unreachable" with the API's own
/// explanation, and nothing resolves.
#[tokio::test]
#[ignore = "needs deploy/kube/build.sh; run-tests.sh runs it"]
async fn forbidden_is_visible() {
    let cp = ControlPlane::start().await;
    let admin = cp.admin().await;
    create_namespace(&admin, NS).await;
    create_pod(&admin, NS, "agent", "node-1").await;
    set_status(&admin, NS, "agent", "Running", Some("127.0.0.5")).await;
    let (r, cancel) = resolver(&cp, K8sConfig::default()).await;
    let status = eventually("state unreachable", WAIT, || {
        let s = r.status();
        (s.state == ApiState::Unreachable).then_some(s)
    })
    .await;
    let err = status.last_error.unwrap();
    assert!(err.contains("forbidden"), "{err}");
    assert!(err.contains("pods"), "{err}");
    assert_eq!(
        r.resolve(ip("127.0.0.5")),
        Resolution::Unknown(Unresolved::ApiUnreachable)
    );
    // Granting the role later is picked up by the retries.
    grant_sink_role(&admin, SINK_USER).await;
    eventually("resolved after the grant", Duration::from_secs(60), || {
        pod_at(&r, "127.0.0.5")
    })
    .await;
    cancel.cancel();
}

/// When kube-apiserver goes away the resolver says so and resolves nothing;
/// when it is back, the Pods changed meanwhile (an IP reused) are current
/// again before anything resolves.
#[tokio::test]
#[ignore = "needs deploy/kube/build.sh; run-tests.sh runs it"]
async fn apiserver_outage_is_visible() {
    let mut cp = ControlPlane::start().await;
    let admin = cp.admin().await;
    create_namespace(&admin, NS).await;
    grant_sink_role(&admin, SINK_USER).await;
    create_pod(&admin, NS, "agent-a", "node-1").await;
    set_status(&admin, NS, "agent-a", "Running", Some("127.0.0.5")).await;
    let (r, cancel) = resolver(&cp, K8sConfig::default()).await;
    eventually("agent-a resolved", WAIT, || pod_at(&r, "127.0.0.5")).await;

    cp.stop_apiserver();
    let status = eventually("state unreachable", WAIT, || {
        let s = r.status();
        (s.state == ApiState::Unreachable).then_some(s)
    })
    .await;
    assert!(status.last_error.is_some());
    assert_eq!(
        r.resolve(ip("127.0.0.5")),
        Resolution::Unknown(Unresolved::ApiUnreachable)
    );

    cp.start_apiserver().await;
    // While the sink was cut off, agent-a went and agent-b took its IP.
    let admin = cp.admin().await;
    delete_pod(&admin, NS, "agent-a", 0).await;
    create_pod(&admin, NS, "agent-b", "node-2").await;
    set_status(&admin, NS, "agent-b", "Running", Some("127.0.0.5")).await;
    let b = eventually("synced again, agent-b", Duration::from_secs(60), || {
        pod_at(&r, "127.0.0.5").filter(|p| &*p.name == "agent-b")
    })
    .await;
    assert_eq!(r.status().state, ApiState::Synced);
    assert_eq!(r.status().last_error, None);
    assert_eq!(
        (b.name.to_string(), b.node.as_deref().map(str::to_owned)),
        ("agent-b".to_owned(), Some("node-2".to_owned()))
    );
    cancel.cancel();
}
