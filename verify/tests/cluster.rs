//! trace-verify's cluster logic against a real kube-apiserver (etcd +
//! kube-apiserver from deploy/kube/build.sh, the control plane sink's tests
//! start; no kubelet, no controllers): server-side apply of the variants,
//! existing namespaces and foreign objects, node labels, clean-up, the dry
//! run, and the least-privilege ClusterRole of deploy/verify-rbac.
//!
//! These tests need the binaries, so they are `#[ignore]`d for a plain
//! `cargo test`; ./run-tests.sh builds them and runs ignored tests too.

#[path = "../../sink/tests/common/control_plane.rs"]
mod control_plane;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control_plane::{ControlPlane, SINK_TOKEN, SINK_USER, create_namespace};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use trace_verify::cluster::{self, Cluster};
use trace_verify::harness::{Harness, Options, Progress, SetupError};
use trace_verify::manifests::{self, Components, names};
use trace_verify::suite::{Event, Policy};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn kubectl() -> PathBuf {
    let built = control_plane::bin_dir().join("kubectl");
    if built.is_file() {
        built
    } else {
        PathBuf::from("kubectl")
    }
}

fn options(components: Components) -> Options {
    Options {
        deploy_dir: deploy(),
        kubectl: kubectl(),
        work_dir: std::env::temp_dir().join(format!(
            "trace-verify-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        )),
        components,
        registry: None,
        tag: None,
        policies: Policy::ALL.to_vec(),
        events: Event::ALL.to_vec(),
        window: Duration::from_secs(1),
        settle: Duration::from_secs(0),
        timeout: Duration::from_secs(5),
        poll: Duration::from_millis(100),
        reconnect_every: "2s".into(),
        retries: 3,
        max_lost: None,
        keep: false,
        dry_run: false,
        wait_for_deletion: false,
    }
}

/// A writer the test reads afterwards.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn harness(client: kube::Client, components: Components) -> Result<Harness, SetupError> {
    Harness::prepare(
        options(components),
        Some(Cluster::new(client)),
        Progress::new(Box::new(Buf::default())),
        Box::new(Buf::default()),
    )
    .await
}

async fn create_node(admin: &kube::Client, name: &str) {
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Node>::all(admin.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
}

async fn node_labels(admin: &kube::Client, name: &str) -> Vec<String> {
    let n = Api::<Node>::all(admin.clone()).get(name).await.unwrap();
    n.metadata.labels.unwrap_or_default().into_keys().collect()
}

/// The full flow as one user: a namespace that existed before (with an
/// object of someone else in it) stays; the variant's typed patches reach
/// the API server; the node label is set and removed; clean-up deletes
/// exactly what the run created.
async fn apply_label_cleanup(cp: &ControlPlane, user: kube::Client) {
    let user_client = user.clone();
    let admin = cp.admin().await;
    create_namespace(&admin, "trace-gen").await;
    let foreign = ConfigMap {
        metadata: ObjectMeta {
            name: Some("someone-elses".into()),
            namespace: Some("trace-gen".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(admin.clone(), "trace-gen")
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    create_node(&admin, "node-1").await;

    let mut h = harness(
        user_client,
        Components {
            peer_attribution: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let created: Vec<String> = h.created().iter().map(manifests::describe).collect();
    assert!(
        created.contains(&"Namespace kyma-system".to_owned()),
        "{created:?}"
    );
    assert!(
        !created.iter().any(|c| c == "Namespace trace-gen"),
        "{created:?}"
    );
    assert!(
        created.contains(&"DaemonSet trace-gen/trace-gen".to_owned()),
        "{created:?}"
    );
    assert!(
        created.contains(&"ClusterRole trace-sink-pod-reader".to_owned()),
        "{created:?}"
    );

    h.deploy(Policy::PreferSameNode).await.unwrap();
    let svc = Api::<Service>::namespaced(admin.clone(), "kyma-system")
        .get(names::AGENT_SERVICE)
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(svc.internal_traffic_policy.as_deref(), Some("Cluster"));
    assert_eq!(svc.traffic_distribution.as_deref(), Some("PreferSameNode"));
    let ds = Api::<DaemonSet>::namespaced(admin.clone(), "trace-gen")
        .get(names::GENERATOR)
        .await
        .unwrap();
    let args = ds.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(args.contains(&"--retries=3".to_owned()), "{args:?}");
    let ns = Api::<Namespace>::all(admin.clone())
        .get("trace-gen")
        .await
        .unwrap();
    assert!(
        !ns.metadata
            .labels
            .unwrap_or_default()
            .contains_key(names::PART_OF),
        "the existing namespace was changed"
    );
    // A second apply under another policy: server-side apply updates in place.
    h.deploy(Policy::Local).await.unwrap();
    let svc = Api::<Service>::namespaced(admin.clone(), "kyma-system")
        .get(names::AGENT_SERVICE)
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(svc.internal_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(
        svc.traffic_distribution, None,
        "the field this manager set is removed"
    );

    // The reads of the steps: none fails, the proxied ones for want of
    // endpoints (no kubelet here), never for want of permission.
    let c = Cluster::new(user.clone());
    c.agent_pods("kyma-system").await.unwrap();
    c.agent_endpoints("kyma-system").await.unwrap();
    c.pods_by_node("trace-gen", names::GENERATOR).await.unwrap();
    c.daemonset_state("kyma-system", names::AGENT)
        .await
        .unwrap();
    c.deployment_done("trace-sink", names::SINK).await.unwrap();
    let forbidden = |e: &cluster::Error| matches!(e, cluster::Error::Api(c) if matches!(c.source.as_ref(), kube::Error::Api(s) if s.code == 403));
    for e in [
        c.sink_stats("trace-sink").await.unwrap_err(),
        c.sink_reset("trace-sink").await.unwrap_err(),
        c.generator_report("trace-gen", "no-such-pod")
            .await
            .unwrap_err(),
    ] {
        assert!(!forbidden(&e), "forbidden: {e}");
    }

    h.remove_agent_from("node-1").await.unwrap();
    assert!(
        node_labels(&admin, "node-1")
            .await
            .contains(&names::NO_AGENT_LABEL.to_owned())
    );
    assert_eq!(h.labelled(), ["node-1"]);

    h.cleanup().await;
    assert!(
        !node_labels(&admin, "node-1")
            .await
            .contains(&names::NO_AGENT_LABEL.to_owned())
    );
    let c = Cluster::new(admin.clone());
    let base = h.deployment(Policy::Local).unwrap();
    for o in &base.objects {
        assert!(
            c.gone(o, true).await.unwrap(),
            "{} is still there",
            manifests::describe(o)
        );
    }
    // what was there before the run is still there, not being deleted
    let ns = Api::<Namespace>::all(admin.clone())
        .get("trace-gen")
        .await
        .unwrap();
    assert!(ns.metadata.deletion_timestamp.is_none());
    Api::<ConfigMap>::namespaced(admin.clone(), "trace-gen")
        .get("someone-elses")
        .await
        .unwrap();
}

/// As cluster admin: apply, labels and clean-up.
#[tokio::test]
#[ignore = "needs deploy/kube/build.sh; run-tests.sh runs it"]
async fn applies_labels_and_cleans_up_only_its_own() {
    let cp = ControlPlane::start().await;
    apply_label_cleanup(&cp, cp.admin().await).await;
}

/// The same flow with a token bound to deploy/verify-rbac's ClusterRole and
/// nothing else: the role is sufficient, also for reading the sink and the
/// generators through the proxy (refused for want of endpoints, not of
/// permission). Without the binding the same user is refused: the test
/// can fail.
#[tokio::test]
#[ignore = "needs deploy/kube/build.sh; run-tests.sh runs it"]
async fn least_privilege_role_is_sufficient() {
    let cp = ControlPlane::start().await;
    let admin = cp.admin().await;
    let user = cp.client(SINK_TOKEN).await;

    let e = harness(user.clone(), Components::default())
        .await
        .err()
        .expect("refused without the role");
    assert!(e.to_string().contains("forbidden"), "{e}");

    let work = std::env::temp_dir().join(format!("trace-verify-rbac-{}", std::process::id()));
    let rbac = manifests::render(
        &kubectl(),
        &deploy(),
        "verify-rbac",
        &Components::default(),
        &work,
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&work);
    Cluster::new(admin.clone()).apply(&rbac).await.unwrap();
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some("trace-verify-test-user".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "trace-gen-sink-verify".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: SINK_USER.into(),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // RBAC takes the binding from its informer: wait until it applies.
    let c = Cluster::new(user.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while c.namespace_exists("kube-system").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the binding never applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    apply_label_cleanup(&cp, user).await;
}

/// Objects with our names that are not ours: the run refuses to touch them
/// (a set-up error naming them). A deployment of ours that was there before
/// is restored and kept, not deleted.
#[tokio::test]
#[ignore = "needs deploy/kube/build.sh; run-tests.sh runs it"]
async fn foreign_objects_and_previous_deployments() {
    let cp = ControlPlane::start().await;
    let admin = cp.admin().await;
    create_namespace(&admin, "trace-sink").await;
    let svc = Service {
        metadata: ObjectMeta {
            name: Some(names::SINK.into()),
            namespace: Some("trace-sink".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let svcs = Api::<Service>::namespaced(admin.clone(), "trace-sink");
    svcs.create(&PostParams::default(), &svc).await.unwrap();
    let e = harness(admin.clone(), Components::default())
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("not part of trace-gen-sink"), "{e}");
    assert!(
        e.to_string().contains("Service trace-sink/trace-sink"),
        "{e}"
    );
    svcs.delete(names::SINK, &Default::default()).await.unwrap();

    // ours, deployed before the run
    let h = harness(admin.clone(), Components::default()).await.unwrap();
    let plain = h.deployment(Policy::Local).unwrap();
    Cluster::new(admin.clone()).apply(&plain).await.unwrap();
    let mut h = harness(admin.clone(), Components::default()).await.unwrap();
    assert!(
        h.created().iter().all(|o| o["kind"] == "ConfigMap"),
        "only the other variants' ConfigMaps are new: {:?}",
        h.created()
            .iter()
            .map(manifests::describe)
            .collect::<Vec<_>>()
    );
    h.deploy(Policy::Cluster).await.unwrap();
    h.cleanup().await;
    let agent_svc = Api::<Service>::namespaced(admin.clone(), "kyma-system")
        .get(names::AGENT_SERVICE)
        .await
        .unwrap();
    assert_eq!(
        agent_svc.spec.unwrap().internal_traffic_policy.as_deref(),
        Some("Local"),
        "restored to the shipped policy"
    );
    let ns = Api::<Namespace>::all(admin.clone())
        .get("kyma-system")
        .await
        .unwrap();
    assert!(ns.metadata.deletion_timestamp.is_none(), "kept");
}

/// The dry run prints every variant it would apply (rendered objects with
/// the typed patches), the labels and the waits, and touches no cluster.
#[tokio::test]
#[ignore = "needs kubectl (deploy/kube/build.sh); run-tests.sh runs it"]
async fn dry_run_prints_the_plan() {
    let mut o = options(Components::default());
    o.dry_run = true;
    o.policies = vec![Policy::PreferSameNode];
    let out = Buf::default();
    let results = trace_verify::harness::run(
        o,
        None,
        "dry-run".into(),
        Progress::new(Box::new(Buf::default())),
        Box::new(out.clone()),
        std::future::pending(),
    )
    .await;
    let text = out.text();
    assert_eq!(results.exit_code, 0);
    assert!(!results.pass, "a dry run verifies nothing");
    assert!(
        text.contains("trafficDistribution: PreferSameNode"),
        "{text}"
    );
    assert!(text.contains("label node NODE-1 trace-gen-sink/no-agent=true"));
    assert!(text.contains("label node NODE-1 trace-gen-sink/no-agent-"));
    assert!(
        text.contains("resouce/agent-node"),
        "the broken configuration"
    );
    assert!(text.contains("preStop"), "the draining agents");
    assert!(text.contains("maxSurge: 1"), "the surge rollout");
    assert!(text.contains("trace-gen-sink/rollout"));
    assert!(text.contains("/proxy/reset"));
}

/// Leaving the draining configuration: every agent pod, terminating or
/// not, is deleted at once (grace period 0), as the verify-rbac account
/// may; pods of other names stay.
#[tokio::test]
#[ignore = "needs deploy/kube/build.sh; run-tests.sh runs it"]
async fn replaces_agent_pods_at_once() {
    let cp = ControlPlane::start().await;
    let admin = cp.admin().await;
    create_namespace(&admin, "kyma-system").await;
    for name in ["draining", "running"] {
        control_plane::create_pod(&admin, "kyma-system", name, "node-1").await;
    }
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin.clone(), "kyma-system");
    let other: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "app", "labels": { "app.kubernetes.io/name": "app" } },
        "spec": { "nodeName": "node-1", "containers": [{ "name": "c", "image": "app" }] }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &other).await.unwrap();
    control_plane::delete_pod(&admin, "kyma-system", "draining", 30).await;
    assert!(
        pods.get("draining")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some(),
        "terminating with a grace period of 30 s (no kubelet here)"
    );
    let c = Cluster::new(admin.clone());
    assert_eq!(c.replace_agent_pods("kyma-system").await.unwrap(), 2);
    for name in ["draining", "running"] {
        assert!(
            pods.get_opt(name).await.unwrap().is_none(),
            "{name} is gone at once"
        );
    }
    assert!(pods.get_opt("app").await.unwrap().is_some(), "not an agent");
    assert_eq!(c.replace_agent_pods("kyma-system").await.unwrap(), 0);
}
