//! The manifests: rendered by `kubectl kustomize` from the repository's
//! deploy/ (the same files users apply), read as YAML documents into JSON
//! objects, and varied by typed patches: each change decodes the object into
//! its k8s-openapi type, changes fields, and encodes it back. No text edit.
//!
//! The kustomize components (istio, peer attribution, control-plane) are
//! added by rendering a generated kustomization that lists them, serialized
//! from a struct: the components stay the one place that says what they do.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Service, SleepAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::suite::Policy;

/// What went wrong with the manifests.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// `kubectl kustomize` could not run or failed.
    #[error("kubectl kustomize {dir}: {message}")]
    Kustomize {
        /// The kustomization directory.
        dir: String,
        /// Its error output, or why it could not run.
        message: String,
    },
    /// A document is not YAML of a Kubernetes object.
    #[error("the rendered manifests are not valid YAML of Kubernetes objects: {0}")]
    Yaml(String),
    /// An object the verification needs is missing.
    #[error("the rendered manifests have no {0}")]
    Missing(String),
    /// An object does not decode as its type.
    #[error("{what} does not decode as a Kubernetes object of its kind: {message}")]
    Type {
        /// kind/name.
        what: String,
        /// The decoder's message.
        message: String,
    },
    /// Writing the generated kustomization failed.
    #[error("writing the kustomization in {dir}: {message}")]
    Io {
        /// The directory.
        dir: String,
        /// The error.
        message: String,
    },
}

/// The agent DaemonSet, the agent Service, the sink, the generators (names in deploy/).
pub mod names {
    /// The agent DaemonSet.
    pub const AGENT: &str = "trace-agent";
    /// The agent Service the generators send to.
    pub const AGENT_SERVICE: &str = "telemetry-otlp-traces-local";
    /// The sink Deployment and Service.
    pub const SINK: &str = "trace-sink";
    /// The generator DaemonSet.
    pub const GENERATOR: &str = "trace-gen";
    /// The label of every object of the project.
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    /// Its value.
    pub const PART_OF_VALUE: &str = "trace-gen-sink";
    /// The node label the agent DaemonSet's node affinity excludes.
    pub const NO_AGENT_LABEL: &str = "trace-gen-sink/no-agent";
    /// The pod-template annotation a rollout event changes.
    pub const ROLLOUT_ANNOTATION: &str = "trace-gen-sink/rollout";
}

/// A set of rendered objects, in apply order (kustomize's).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    /// The objects.
    pub objects: Vec<Value>,
}

/// kind, namespace and name of an object.
pub fn id(obj: &Value) -> (String, Option<String>, String) {
    let s = |v: &Value| v.as_str().map(str::to_owned);
    (
        s(&obj["kind"]).unwrap_or_default(),
        s(&obj["metadata"]["namespace"]),
        s(&obj["metadata"]["name"]).unwrap_or_default(),
    )
}

/// `Kind namespace/name` or `Kind name`.
pub fn describe(obj: &Value) -> String {
    match id(obj) {
        (k, Some(ns), n) => format!("{k} {ns}/{n}"),
        (k, None, n) => format!("{k} {n}"),
    }
}

/// Reads the YAML documents of `kubectl kustomize` output.
pub fn parse(yaml: &str) -> Result<Manifests, ManifestError> {
    let mut objects = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v = <Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| ManifestError::Yaml(e.to_string()))?;
        if v.is_null() {
            continue; // an empty document
        }
        let (kind, _, name) = id(&v);
        if kind.is_empty() || name.is_empty() || v["apiVersion"].as_str().is_none() {
            return Err(ManifestError::Yaml(format!(
                "a document without apiVersion, kind or metadata.name: {}",
                clip_json(&v)
            )));
        }
        objects.push(v);
    }
    if objects.is_empty() {
        return Err(ManifestError::Yaml("no object at all".into()));
    }
    Ok(Manifests { objects })
}

fn clip_json(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}...", &s[..117])
    } else {
        s
    }
}

/// The generated kustomization: the repository's kustomization and components.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Kustomization {
    api_version: &'static str,
    kind: &'static str,
    resources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    components: Vec<String>,
}

/// Which kustomize components to render with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Components {
    /// deploy/components/istio.
    pub istio: bool,
    /// deploy/components/control-plane.
    pub control_plane: bool,
    /// deploy/components/peer-attribution (and agent-stamps-nothing, except
    /// on the broken-agent overlay, whose configuration is its point).
    pub peer_attribution: bool,
}

/// The path from `from` (a directory) to `to`, both absolute (kustomize
/// refuses absolute resource paths).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let mut rel = PathBuf::new();
    for _ in from.components().skip(1) {
        rel.push("..");
    }
    rel.join(to.strip_prefix("/").unwrap_or(to))
}

/// Renders `deploy/<resource>` (`base`, `overlays/broken-agent`) with the
/// components, by `kubectl kustomize` on a generated kustomization in `work`.
pub fn render(
    kubectl: &Path,
    deploy: &Path,
    resource: &str,
    components: &Components,
    work: &Path,
) -> Result<Manifests, ManifestError> {
    let deploy = std::fs::canonicalize(deploy).map_err(|e| ManifestError::Kustomize {
        dir: deploy.display().to_string(),
        message: e.to_string(),
    })?;
    let dir = work.join(resource.replace('/', "-"));
    let io = |e: std::io::Error| ManifestError::Io {
        dir: dir.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let dir = std::fs::canonicalize(&dir).map_err(io)?;
    let rel = |p: &str| relative(&dir, &deploy.join(p)).display().to_string();
    let mut k = Kustomization {
        api_version: "kustomize.config.k8s.io/v1beta1",
        kind: "Kustomization",
        resources: vec![rel(resource)],
        components: vec![],
    };
    if components.istio {
        k.components.push(rel("components/istio"));
    }
    if components.control_plane {
        k.components.push(rel("components/control-plane"));
    }
    if components.peer_attribution {
        k.components.push(rel("components/peer-attribution"));
        if resource != "overlays/broken-agent" {
            k.components.push(rel("components/agent-stamps-nothing"));
        }
    }
    let text = serde_yaml_ng::to_string(&k).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    std::fs::write(dir.join("kustomization.yaml"), text).map_err(io)?;
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .map_err(|e| ManifestError::Kustomize {
            dir: dir.display().to_string(),
            message: format!("cannot run {}: {e}", kubectl.display()),
        })?;
    if !out.status.success() {
        return Err(ManifestError::Kustomize {
            dir: dir.display().to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

impl Manifests {
    /// The object of `kind` named `name`.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    /// The namespace of the object of `kind` named `name`.
    pub fn namespace_of(&self, kind: &str, name: &str) -> Result<String, ManifestError> {
        self.find(kind, name)
            .and_then(|o| o["metadata"]["namespace"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| ManifestError::Missing(format!("{kind} {name} with a namespace")))
    }

    /// The names of the Namespace objects.
    pub fn namespaces(&self) -> Vec<String> {
        self.objects
            .iter()
            .filter(|o| o["kind"] == "Namespace")
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Decodes the object of `kind` named `name` as `K`, lets `f` change it,
    /// and encodes it back.
    pub fn edit<K: Serialize + DeserializeOwned>(
        &mut self,
        kind: &str,
        name: &str,
        f: impl FnOnce(&mut K),
    ) -> Result<(), ManifestError> {
        let what = format!("{kind} {name}");
        let obj = self
            .objects
            .iter_mut()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .ok_or_else(|| ManifestError::Missing(what.clone()))?;
        let mut typed: K =
            serde_json::from_value(obj.clone()).map_err(|e| ManifestError::Type {
                what: what.clone(),
                message: e.to_string(),
            })?;
        f(&mut typed);
        let mut back = serde_json::to_value(&typed).map_err(|e| ManifestError::Type {
            what,
            message: e.to_string(),
        })?;
        // The document's own apiVersion and kind, whatever the type writes.
        back["apiVersion"] = obj["apiVersion"].clone();
        back["kind"] = obj["kind"].clone();
        *obj = back;
        Ok(())
    }

    /// Leaves out the Namespace objects named in `existing`: namespaces that
    /// were there before the run are neither changed nor deleted.
    pub fn without_namespaces(&mut self, existing: &[String]) {
        self.objects.retain(|o| {
            !(o["kind"] == "Namespace"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| existing.iter().any(|e| e == n)))
        });
    }

    /// The objects the sink needs before anything sends to it: the
    /// namespaces, the cluster-scoped objects (the sink's ClusterRole and
    /// binding with `--peer-attribution`) and everything in `sink_ns`.
    pub fn sink_part(&self, sink_ns: &str) -> Manifests {
        Manifests {
            objects: self
                .objects
                .iter()
                .filter(|o| match o["metadata"]["namespace"].as_str() {
                    None => true,
                    Some(ns) => ns == sink_ns,
                })
                .cloned()
                .collect(),
        }
    }

    /// `--registry` / `--tag`: the images `trace-gen` and `trace-sink` become
    /// `REGISTRY/NAME:TAG` in every Deployment and DaemonSet.
    pub fn set_images(&mut self, registry: Option<&str>, tag: Option<&str>) {
        if registry.is_none() && tag.is_none() {
            return;
        }
        for obj in &mut self.objects {
            if obj["kind"] != "DaemonSet" && obj["kind"] != "Deployment" {
                continue;
            }
            let Some(containers) = obj["spec"]["template"]["spec"]["containers"].as_array_mut()
            else {
                continue;
            };
            for c in containers {
                let Some(image) = c["image"].as_str() else {
                    continue;
                };
                let (repo, old_tag) = split_image(image);
                let base = repo.rsplit('/').next().unwrap_or(repo);
                if base != names::GENERATOR && base != names::SINK {
                    continue;
                }
                let repo = match registry {
                    Some(r) => format!("{}/{base}", r.trim_end_matches('/')),
                    None => repo.to_owned(),
                };
                let new = match tag.or(old_tag) {
                    Some(t) => format!("{repo}:{t}"),
                    None => repo,
                };
                c["image"] = Value::String(new);
            }
        }
    }

    /// The agent Service under `policy`. `local` is the Service as shipped
    /// (`deploy/agent/service.yaml`: internalTrafficPolicy Local), not
    /// patched: its promises are judged on what users deploy, so a shipped
    /// Service changed to Cluster fails the `local` steps.
    pub fn set_policy(&mut self, policy: Policy) -> Result<(), ManifestError> {
        if policy == Policy::Local {
            return self
                .find("Service", names::AGENT_SERVICE)
                .map(|_| ())
                .ok_or_else(|| {
                    ManifestError::Missing(format!("Service {}", names::AGENT_SERVICE))
                });
        }
        self.edit::<Service>("Service", names::AGENT_SERVICE, |s| {
            let spec = s.spec.get_or_insert_with(Default::default);
            match policy {
                Policy::Local => {}
                Policy::PreferSameNode => {
                    spec.internal_traffic_policy = Some("Cluster".into());
                    spec.traffic_distribution = Some("PreferSameNode".into());
                }
                Policy::Cluster => {
                    spec.internal_traffic_policy = Some("Cluster".into());
                    spec.traffic_distribution = None;
                }
            }
        })
    }

    /// The generators reconnect every `reconnect` (kube-proxy chooses an
    /// endpoint per new connection) and retry a failed export `retries` times.
    pub fn set_generator_args(
        &mut self,
        reconnect: &str,
        retries: u32,
    ) -> Result<(), ManifestError> {
        self.edit::<DaemonSet>("DaemonSet", names::GENERATOR, |ds| {
            for c in containers(ds) {
                let args = c.args.get_or_insert_with(Vec::new);
                args.retain(|a| !a.starts_with("--reconnect-every") && !a.starts_with("--retries"));
                args.push(format!("--reconnect-every={reconnect}"));
                args.push(format!("--retries={retries}"));
            }
        })
    }

    /// The agents get a graceful shutdown of `seconds` (a preStop sleep and
    /// a grace period 30 s longer), so a removed agent stays terminating and
    /// serving that long.
    pub fn set_agent_drain(&mut self, seconds: i64) -> Result<(), ManifestError> {
        self.edit::<DaemonSet>("DaemonSet", names::AGENT, |ds| {
            if let Some(spec) = ds.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
                spec.termination_grace_period_seconds = Some(seconds + 30);
            }
            for c in containers(ds) {
                let l = c.lifecycle.get_or_insert_with(Default::default);
                l.pre_stop = Some(LifecycleHandler {
                    sleep: Some(SleepAction { seconds }),
                    ..Default::default()
                });
            }
        })
    }

    /// The agent DaemonSet's update strategy: `max_surge` / `max_unavailable`
    /// as kustomize writes them (`1`, `0`, `100%`).
    pub fn set_agent_strategy(
        &mut self,
        max_surge: &str,
        max_unavailable: &str,
    ) -> Result<(), ManifestError> {
        let v = |s: &str| match s.parse::<i32>() {
            Ok(n) => IntOrString::Int(n),
            Err(_) => IntOrString::String(s.to_owned()),
        };
        self.edit::<DaemonSet>("DaemonSet", names::AGENT, |ds| {
            let spec = ds.spec.get_or_insert_with(Default::default);
            spec.update_strategy = Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_surge: Some(v(max_surge)),
                    max_unavailable: Some(v(max_unavailable)),
                }),
            });
        })
    }

    /// Marks the agent pod template with `value`: a new value rolls the DaemonSet.
    pub fn set_agent_rollout_mark(&mut self, value: &str) -> Result<(), ManifestError> {
        self.edit::<DaemonSet>("DaemonSet", names::AGENT, |ds| {
            if let Some(spec) = ds.spec.as_mut() {
                spec.template
                    .metadata
                    .get_or_insert_with(Default::default)
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(names::ROLLOUT_ANNOTATION.into(), value.into());
            }
        })
    }

    /// The agent Service's internalTrafficPolicy (`Cluster` when unset, as
    /// the API server defaults it) and trafficDistribution, as the
    /// manifests have them.
    pub fn agent_service_policy(&self) -> (String, Option<String>) {
        let spec = self
            .find("Service", names::AGENT_SERVICE)
            .map(|s| s["spec"].clone())
            .unwrap_or_default();
        (
            spec["internalTrafficPolicy"]
                .as_str()
                .unwrap_or("Cluster")
                .to_owned(),
            spec["trafficDistribution"].as_str().map(str::to_owned),
        )
    }

    /// The image of the sink's container (the check pods use it).
    pub fn sink_image(&self) -> Option<String> {
        self.find("Deployment", names::SINK)?["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .map(str::to_owned)
    }

    /// All objects as YAML documents (what a dry run prints).
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for o in &self.objects {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(o).unwrap_or_default());
        }
        out
    }
}

fn containers(ds: &mut DaemonSet) -> impl Iterator<Item = &mut Container> {
    ds.spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .map(|s| s.containers.iter_mut())
        .into_iter()
        .flatten()
}

/// `registry/name:tag` -> (`registry/name`, `Some(tag)`); a port in the
/// registry is not a tag.
fn split_image(image: &str) -> (&str, Option<&str>) {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], Some(&image[i + 1..])),
        _ => (image, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
    }

    /// deploy/kube/build.sh's kubectl (the release the lab runs), else PATH's.
    fn kubectl() -> PathBuf {
        let built = deploy().join("kube/build/bin/kubectl");
        if built.is_file() {
            built
        } else {
            PathBuf::from("kubectl")
        }
    }

    fn base(c: &Components) -> Manifests {
        let work = std::env::temp_dir().join(format!(
            "trace-verify-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let m = render(&kubectl(), &deploy(), "base", c, &work).unwrap();
        let _ = std::fs::remove_dir_all(&work);
        m
    }

    /// Multi-document YAML is read into objects; a document that is no
    /// object is refused with a message, not a panic.
    #[test]
    fn parses_documents() {
        let m = parse("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  namespace: a\n").unwrap();
        assert_eq!(m.objects.len(), 2);
        assert_eq!(describe(&m.objects[1]), "ConfigMap a/b");
        assert!(
            parse("just: text\n")
                .unwrap_err()
                .to_string()
                .contains("without apiVersion")
        );
        assert!(parse("a: [unclosed\n").is_err());
        assert!(parse("").is_err());
    }

    /// The base renders with its namespaces; the components add their
    /// objects and changes (istio: the PeerAuthentication; peer
    /// attribution: the sink's ServiceAccount and --k8s-attribution).
    #[test]
    #[ignore = "needs kubectl (deploy/kube/build.sh); run-tests.sh runs it"]
    fn renders_base_and_components() {
        let m = base(&Components::default());
        assert_eq!(
            m.namespace_of("DaemonSet", names::AGENT).unwrap(),
            "kyma-system"
        );
        assert_eq!(
            m.namespace_of("Deployment", names::SINK).unwrap(),
            "trace-sink"
        );
        assert_eq!(m.namespaces(), ["kyma-system", "trace-gen", "trace-sink"]);
        assert!(m.find("PeerAuthentication", "trace-agent").is_none());
        let m = base(&Components {
            istio: true,
            peer_attribution: true,
            control_plane: true,
        });
        assert!(m.find("PeerAuthentication", "trace-agent").is_some());
        assert!(m.find("ServiceAccount", "trace-sink").is_some());
        let args =
            m.find("Deployment", names::SINK).unwrap()["spec"]["template"]["spec"]["containers"][0]
                ["args"]
                .to_string();
        assert!(args.contains("--k8s-attribution"), "{args}");
        let tol = m.find("DaemonSet", names::GENERATOR).unwrap()["spec"]["template"]["spec"]["tolerations"].to_string();
        assert!(tol.contains("control-plane"), "{tol}");
    }

    /// Each policy sets exactly the Service fields it is made of.
    #[test]
    #[ignore = "needs kubectl (deploy/kube/build.sh); run-tests.sh runs it"]
    fn policies() {
        let mut m = base(&Components::default());
        let svc = |m: &Manifests| m.find("Service", names::AGENT_SERVICE).unwrap()["spec"].clone();
        assert_eq!(svc(&m)["internalTrafficPolicy"], "Local");
        m.set_policy(Policy::PreferSameNode).unwrap();
        assert_eq!(svc(&m)["internalTrafficPolicy"], "Cluster");
        assert_eq!(svc(&m)["trafficDistribution"], "PreferSameNode");
        assert_eq!(
            m.find("Service", names::AGENT_SERVICE).unwrap()["kind"],
            "Service"
        );
        m.set_policy(Policy::Cluster).unwrap();
        assert!(svc(&m).get("trafficDistribution").is_none());
        assert_eq!(m.agent_service_policy(), ("Cluster".into(), None));
        // the ports and the selector are untouched
        assert_eq!(svc(&m)["ports"][0]["targetPort"], "grpc-otlp");
        // local is the Service as shipped: a shipped Service changed to
        // Cluster stays Cluster (and fails the local steps' promises)
        let mut m = base(&Components::default());
        m.set_policy(Policy::Local).unwrap();
        assert_eq!(svc(&m)["internalTrafficPolicy"], "Local");
        assert_eq!(m.agent_service_policy(), ("Local".into(), None));
        m.set_policy(Policy::Cluster).unwrap();
        let shipped_cluster = m.clone();
        let mut m = shipped_cluster;
        m.set_policy(Policy::Local).unwrap();
        assert_eq!(svc(&m)["internalTrafficPolicy"], "Cluster");
    }

    /// The sink's part: namespaces and the sink's objects, no agent or
    /// generator object.
    #[test]
    #[ignore = "needs kubectl (deploy/kube/build.sh); run-tests.sh runs it"]
    fn sink_part() {
        let m = base(&Components::default());
        let part = m.sink_part("trace-sink");
        assert!(part.find("Deployment", names::SINK).is_some());
        assert!(part.find("Service", "trace-sink").is_some());
        assert!(part.objects.iter().any(|o| o["kind"] == "Namespace"));
        assert!(part.find("DaemonSet", names::AGENT).is_none());
        assert!(part.find("DaemonSet", names::GENERATOR).is_none());
        assert!(part.find("Service", names::AGENT_SERVICE).is_none());
        assert!(part.objects.len() < m.objects.len());
    }

    /// Images: registry and tag replace only trace-gen's and trace-sink's.
    #[test]
    #[ignore = "needs kubectl (deploy/kube/build.sh); run-tests.sh runs it"]
    fn images() {
        let mut m = base(&Components::default());
        m.set_images(Some("ghcr.io:443/acme/"), Some("v1"));
        let img = |m: &Manifests, k, n| {
            m.find(k, n).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"].clone()
        };
        assert_eq!(
            img(&m, "DaemonSet", names::GENERATOR),
            "ghcr.io:443/acme/trace-gen:v1"
        );
        assert_eq!(
            img(&m, "Deployment", names::SINK),
            "ghcr.io:443/acme/trace-sink:v1"
        );
        assert_eq!(
            img(&m, "DaemonSet", names::AGENT),
            "otel/opentelemetry-collector-contrib:0.165.0"
        );
        let mut m = base(&Components::default());
        m.set_images(None, Some("t2"));
        assert_eq!(img(&m, "DaemonSet", names::GENERATOR), "trace-gen:t2");
        assert_eq!(split_image("reg:5000/x"), ("reg:5000/x", None));
    }

    /// The typed patches of the events: generator arguments (replaced, not
    /// added twice), the drain, the rollout strategy and mark; existing
    /// namespaces left out.
    #[test]
    #[ignore = "needs kubectl (deploy/kube/build.sh); run-tests.sh runs it"]
    fn event_patches() {
        let mut m = base(&Components::default());
        m.set_generator_args("2s", 3).unwrap();
        m.set_generator_args("5s", 2).unwrap();
        let args = m.find("DaemonSet", names::GENERATOR).unwrap()["spec"]["template"]["spec"]["containers"][0]["args"].clone();
        let args: Vec<&str> = args
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.contains(&"--reconnect-every=5s") && args.contains(&"--retries=2"),
            "{args:?}"
        );
        assert_eq!(
            args.iter().filter(|a| a.starts_with("--retries")).count(),
            1
        );
        m.set_agent_drain(60).unwrap();
        m.set_agent_strategy("1", "0").unwrap();
        m.set_agent_rollout_mark("r1").unwrap();
        let ds = &m.find("DaemonSet", names::AGENT).unwrap()["spec"];
        assert_eq!(
            ds["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"],
            60
        );
        assert_eq!(ds["template"]["spec"]["terminationGracePeriodSeconds"], 90);
        assert_eq!(ds["updateStrategy"]["rollingUpdate"]["maxSurge"], 1);
        assert_eq!(ds["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 0);
        assert_eq!(
            ds["template"]["metadata"]["annotations"][names::ROLLOUT_ANNOTATION],
            "r1"
        );
        m.without_namespaces(&["kyma-system".into()]);
        assert_eq!(m.namespaces(), ["trace-gen", "trace-sink"]);
        assert!(m.to_yaml().contains("kind: DaemonSet"));
    }

    /// A kustomize failure is an error with kustomize's message.
    #[test]
    #[ignore = "needs kubectl (deploy/kube/build.sh); run-tests.sh runs it"]
    fn kustomize_error() {
        let work = std::env::temp_dir().join(format!("trace-verify-bad-{}", std::process::id()));
        let e = render(
            &kubectl(),
            &deploy(),
            "no-such-dir",
            &Components::default(),
            &work,
        )
        .unwrap_err();
        let _ = std::fs::remove_dir_all(&work);
        assert!(e.to_string().contains("kubectl kustomize"), "{e}");
    }
}
