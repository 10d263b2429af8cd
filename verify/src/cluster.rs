//! Everything trace-verify asks of the API server, with kube-rs: server-side
//! apply of the rendered objects, deletes, node labels, rollout state, the
//! agent endpoints, and the sink's and the generators' HTTP APIs through the
//! API server's proxy (no port-forward, no exec). The permissions each call
//! needs are in deploy/verify-rbac.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PropagationPolicy,
};
use kube::{Api, Client};
use serde_json::{Value, json};
use trace_proto::stats::{GeneratorReport, SinkStats};

use crate::manifests::{Manifests, describe, id, names};

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "trace-verify";

/// A call to the API server that failed, with what it was for.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct ClusterError {
    /// What was being done.
    pub what: String,
    /// The client's error (boxed: it is large, and errors are rare).
    #[source]
    pub source: Box<kube::Error>,
}

/// An object kind the manifests hold that trace-verify does not know how to apply.
#[derive(Debug, thiserror::Error)]
#[error("{0}: a kind trace-verify does not apply (known: {KNOWN})")]
pub struct UnknownKind(pub String);

const KNOWN: &str = "Namespace, ServiceAccount, ConfigMap, Service, Deployment, DaemonSet, \
                     ClusterRole, ClusterRoleBinding, PeerAuthentication";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or could not be reached.
    #[error(transparent)]
    Api(#[from] ClusterError),
    /// See [`UnknownKind`].
    #[error(transparent)]
    Kind(#[from] UnknownKind),
    /// A document the sink or a generator served is not what trace-proto says.
    #[error("{what}: not a {schema} document: {message}")]
    Document {
        /// Where it came from.
        what: String,
        /// The schema expected.
        schema: &'static str,
        /// The decoder's message.
        message: String,
    },
}

fn ctx(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError {
        what,
        source: Box::new(source),
    }
}

/// Whether the error is the API server's 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// (group, version, kind) -> (plural, namespaced), for the kinds of deploy/.
fn resource_of(obj: &Value) -> Result<(ApiResource, bool), UnknownKind> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let (plural, namespaced) = match (group, kind) {
        ("", "Namespace") => ("namespaces", false),
        ("", "ServiceAccount") => ("serviceaccounts", true),
        ("", "ConfigMap") => ("configmaps", true),
        ("", "Service") => ("services", true),
        ("apps", "Deployment") => ("deployments", true),
        ("apps", "DaemonSet") => ("daemonsets", true),
        ("rbac.authorization.k8s.io", "ClusterRole") => ("clusterroles", false),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => ("clusterrolebindings", false),
        ("security.istio.io", "PeerAuthentication") => ("peerauthentications", true),
        _ => return Err(UnknownKind(describe(obj))),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Ok((ApiResource::from_gvk_with_plural(&gvk, plural), namespaced))
}

/// An agent pod as the crash-loop event needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPod {
    /// Its node.
    pub node: String,
    /// Restarts of its first container.
    pub restarts: i32,
    /// Whether that container is ready.
    pub ready: bool,
    /// The pod is being deleted.
    pub terminating: bool,
}

/// An endpoint of the agent Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEndpoint {
    /// Its node.
    pub node: String,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
}

/// The cluster, through one client.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
}

impl Cluster {
    /// Wraps a client.
    pub fn new(client: Client) -> Self {
        Cluster { client }
    }

    fn api(&self, obj: &Value) -> Result<Api<DynamicObject>, Error> {
        let (ar, namespaced) = resource_of(obj)?;
        let (_, ns, _) = id(obj);
        Ok(match (namespaced, ns) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), &ns, &ar),
            (true, None) => Api::default_namespaced_with(self.client.clone(), &ar),
            (false, _) => Api::all_with(self.client.clone(), &ar),
        })
    }

    /// Server-side apply of every object, in order (field manager
    /// [`FIELD_MANAGER`], conflicts forced: the run owns what it deploys).
    pub async fn apply(&self, m: &Manifests) -> Result<(), Error> {
        for obj in &m.objects {
            let api = self.api(obj)?;
            let (_, _, name) = id(obj);
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await
            .map_err(ctx(format!("apply {}", describe(obj))))?;
        }
        Ok(())
    }

    /// The value of `app.kubernetes.io/part-of` of each object that exists
    /// (`Some(None)`: exists without the label), by position in `m`.
    pub async fn existing(&self, m: &Manifests) -> Result<Vec<Option<Option<String>>>, Error> {
        let mut out = Vec::new();
        for obj in &m.objects {
            let api = self.api(obj)?;
            let (_, _, name) = id(obj);
            let found = api
                .get_opt(&name)
                .await
                .map_err(ctx(format!("get {}", describe(obj))))?;
            out.push(found.map(|o| {
                o.metadata
                    .labels
                    .and_then(|l| l.get(names::PART_OF).cloned())
            }));
        }
        Ok(out)
    }

    /// Whether the namespace exists.
    pub async fn namespace_exists(&self, name: &str) -> Result<bool, Error> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        Ok(api
            .get_opt(name)
            .await
            .map_err(ctx(format!("get namespace {name}")))?
            .is_some())
    }

    /// Deletes the object (its dependents in the background); gone already is fine.
    pub async fn delete(&self, obj: &Value) -> Result<(), Error> {
        let api = self.api(obj)?;
        let (_, _, name) = id(obj);
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(ctx(format!("delete {}", describe(obj)))(e).into()),
        }
    }

    /// Whether the object is gone (or being deleted, when `deleting_counts`).
    pub async fn gone(&self, obj: &Value, deleting_counts: bool) -> Result<bool, Error> {
        let api = self.api(obj)?;
        let (_, _, name) = id(obj);
        let o = api
            .get_opt(&name)
            .await
            .map_err(ctx(format!("get {}", describe(obj))))?;
        Ok(match o {
            None => true,
            Some(o) => deleting_counts && o.metadata.deletion_timestamp.is_some(),
        })
    }

    /// Sets (`Some`) or removes (`None`) a label of a node.
    pub async fn label_node(
        &self,
        node: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({ "metadata": { "labels": { key: value } } });
        api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(ctx(format!("label node {node} {key}")))?;
        Ok(())
    }

    /// The label's value on the node.
    pub async fn node_label(&self, node: &str, key: &str) -> Result<Option<String>, Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let n = api
            .get(node)
            .await
            .map_err(ctx(format!("get node {node}")))?;
        Ok(n.metadata.labels.and_then(|l| l.get(key).cloned()))
    }

    /// Running pods of `app` (label `app.kubernetes.io/name`) in `ns`: node -> pod name.
    pub async fn pods_by_node(
        &self,
        ns: &str,
        app: &str,
    ) -> Result<BTreeMap<String, String>, Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/name={app}"));
        let pods = api
            .list(&lp)
            .await
            .map_err(ctx(format!("list pods {ns}/{app}")))?;
        let mut out = BTreeMap::new();
        for p in pods {
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if !running || p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let (Some(node), Some(name)) = (p.spec.and_then(|s| s.node_name), p.metadata.name) {
                out.insert(node, name);
            }
        }
        Ok(out)
    }

    /// The agent pods (any phase).
    pub async fn agent_pods(&self, ns: &str) -> Result<Vec<AgentPod>, Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/name={}", names::AGENT));
        let pods = api
            .list(&lp)
            .await
            .map_err(ctx(format!("list agent pods in {ns}")))?;
        Ok(pods
            .into_iter()
            .map(|p| {
                let cs = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first().cloned());
                AgentPod {
                    node: p.spec.and_then(|s| s.node_name).unwrap_or_default(),
                    restarts: cs.as_ref().map_or(0, |c| c.restart_count),
                    ready: cs.as_ref().is_some_and(|c| c.ready),
                    terminating: p.metadata.deletion_timestamp.is_some(),
                }
            })
            .collect())
    }

    /// Deletes every agent pod at once, without a graceful shutdown (grace
    /// period 0: the API server removes them now, and the DaemonSet creates
    /// their replacements at once). Used when the terminating event is over:
    /// its agents carry a long preStop drain, a kubelet does not cut a
    /// running preStop hook short when the grace period is shortened, and a
    /// rollout back to the usual configuration would wait one whole drain
    /// per node (seen in the lab: 90-140 s). Outside any measuring window.
    /// Returns how many pods it deleted.
    pub async fn replace_agent_pods(&self, ns: &str) -> Result<usize, Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/name={}", names::AGENT));
        let pods = api
            .list(&lp)
            .await
            .map_err(ctx(format!("list agent pods in {ns}")))?;
        let mut n = 0;
        for name in pods.into_iter().filter_map(|p| p.metadata.name) {
            match api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await
            {
                Ok(_) => n += 1,
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(ctx(format!("delete pod {ns}/{name}"))(e).into()),
            }
        }
        Ok(n)
    }

    /// The endpoints of the agent Service, from its EndpointSlices.
    pub async fn agent_endpoints(&self, ns: &str) -> Result<Vec<AgentEndpoint>, Error> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let lp = ListParams::default().labels(&format!(
            "kubernetes.io/service-name={}",
            names::AGENT_SERVICE
        ));
        let slices = api
            .list(&lp)
            .await
            .map_err(ctx(format!("list endpointslices in {ns}")))?;
        Ok(slices
            .into_iter()
            .flat_map(|s| s.endpoints.unwrap_or_default())
            .map(|e| {
                let c = e.conditions.unwrap_or_default();
                AgentEndpoint {
                    node: e.node_name.unwrap_or_default(),
                    ready: c.ready.unwrap_or(false),
                    serving: c.serving.unwrap_or(false),
                    terminating: c.terminating.unwrap_or(false),
                }
            })
            .collect())
    }

    /// Whether the DaemonSet's current template runs everywhere and is
    /// available (`kubectl rollout status`'s condition); with `ready_none`,
    /// whether every pod runs the current template and none is ready (a
    /// crash-looping rollout).
    pub async fn daemonset_state(&self, ns: &str, name: &str) -> Result<(bool, bool), Error> {
        let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), ns);
        let ds = api
            .get(name)
            .await
            .map_err(ctx(format!("get daemonset {ns}/{name}")))?;
        let generation = ds.metadata.generation.unwrap_or(0);
        let s = ds.status.unwrap_or_default();
        let observed = s.observed_generation.unwrap_or(0) >= generation;
        let updated = s.updated_number_scheduled.unwrap_or(0) == s.desired_number_scheduled;
        let done = observed
            && updated
            && s.desired_number_scheduled > 0
            && s.number_available.unwrap_or(0) == s.desired_number_scheduled;
        let broken = observed && updated && s.desired_number_scheduled > 0 && s.number_ready == 0;
        Ok((done, broken))
    }

    /// Whether the Deployment's rollout is complete.
    pub async fn deployment_done(&self, ns: &str, name: &str) -> Result<bool, Error> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let d = api
            .get(name)
            .await
            .map_err(ctx(format!("get deployment {ns}/{name}")))?;
        let generation = d.metadata.generation.unwrap_or(0);
        let want = d.spec.and_then(|s| s.replicas).unwrap_or(1);
        let s = d.status.unwrap_or_default();
        Ok(s.observed_generation.unwrap_or(0) >= generation
            && s.updated_replicas.unwrap_or(0) == want
            && s.available_replicas.unwrap_or(0) == want
            && s.replicas.unwrap_or(0) == want)
    }

    async fn proxy(&self, method: http::Method, path: &str) -> Result<String, ClusterError> {
        let req = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .body(Vec::new())
            .expect("a request of a method and a path");
        self.client
            .request_text(req)
            .await
            .map_err(ctx(format!("{method} {path}")))
    }

    /// The sink's API through the service proxy.
    pub fn sink_path(ns: &str, rest: &str) -> String {
        format!(
            "/api/v1/namespaces/{ns}/services/http:{}:http-api/proxy/{rest}",
            names::SINK
        )
    }

    /// The sink's `GET /stats`.
    pub async fn sink_stats(&self, ns: &str) -> Result<SinkStats, Error> {
        let path = Self::sink_path(ns, "stats");
        let body = self.proxy(http::Method::GET, &path).await?;
        serde_json::from_str(&body).map_err(|e| Error::Document {
            what: path,
            schema: trace_proto::stats::SINK_STATS_SCHEMA,
            message: e.to_string(),
        })
    }

    /// The sink's `POST /reset`: a new measuring window starts.
    pub async fn sink_reset(&self, ns: &str) -> Result<(), Error> {
        self.proxy(http::Method::POST, &Self::sink_path(ns, "reset"))
            .await?;
        Ok(())
    }

    /// A generator's `GET /stats`, through the pod proxy (port 8081).
    pub async fn generator_report(&self, ns: &str, pod: &str) -> Result<GeneratorReport, Error> {
        let path = format!("/api/v1/namespaces/{ns}/pods/{pod}:8081/proxy/stats");
        let body = self.proxy(http::Method::GET, &path).await?;
        serde_json::from_str(&body).map_err(|e| Error::Document {
            what: path,
            schema: trace_proto::stats::GENERATOR_STATS_SCHEMA,
            message: e.to_string(),
        })
    }

    /// Whether Istio's PeerAuthentication CRD exists (`--istio`).
    pub async fn istio_installed(&self) -> Result<bool, Error> {
        let gvk = GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "customresourcedefinitions");
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        Ok(api
            .get_opt("peerauthentications.security.istio.io")
            .await
            .map_err(ctx("get the PeerAuthentication CRD"))?
            .is_some())
    }
}
