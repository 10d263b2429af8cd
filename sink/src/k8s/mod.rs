//! Kubernetes attribution: the Pod behind a peer address.
//!
//! In a cluster the peer of each OTLP connection is the forwarding agent's Pod
//! IP (the sink runs without a sidecar). A [`PodResolver`] watches Pods
//! through the Kubernetes API with the `kube` crate's watcher and answers
//! "which Pod, in which namespace, on which node holds this IP now" from an
//! index of its own ([`index`]; why not the `reflector` store: it would keep
//! whole Pod objects, several KiB each, and knows nothing of the order in
//! which IPs were claimed).
//!
//! - [`index`]: the pod IP index: claims in watch order, terminal and
//!   terminating Pods, the cap on tracked Pods. Pure data, unit-tested.
//! - [`watch`]: the task that keeps the index current and the API's state
//!   (`connecting`, `synced`, `unreachable`) known.
//!
//! The answer is never a guess: an address no Pod claims, or any address while
//! the Pod list is not known to be current (before the first complete list,
//! after a watch error until a new list completes, beyond the cap), is
//! [`Resolution::Unknown`] with the reason.

pub mod index;
pub mod watch;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

pub use index::{DEFAULT_MAX_PODS, PodIndex, PodRef, PodView, Resolution, Unresolved};

/// Where the Kubernetes client's configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClientSource {
    /// `KUBECONFIG` or `~/.kube/config` if there is one, else in-cluster (the
    /// Pod's service account), as `kubectl` and client-go do.
    #[default]
    Infer,
    /// The service account of the Pod the sink runs in
    /// (`KUBERNETES_SERVICE_HOST`/`_PORT`, `/var/run/secrets/kubernetes.io/serviceaccount`).
    InCluster,
    /// This kubeconfig file (its current context).
    Kubeconfig(PathBuf),
}

/// Settings of the Pod watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sConfig {
    /// How to reach the API.
    pub source: ClientSource,
    /// Watch only this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// Watch only Pods matching this label selector (`None`: all Pods).
    pub label_selector: Option<String>,
    /// Cap on tracked Pods ([`index`] explains the budget).
    pub max_pods: usize,
}

impl Default for K8sConfig {
    fn default() -> Self {
        K8sConfig {
            source: ClientSource::Infer,
            namespace: None,
            label_selector: None,
            max_pods: DEFAULT_MAX_PODS,
        }
    }
}

/// State of the Kubernetes API as the resolver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiState {
    /// The first list of Pods has not completed yet.
    Connecting,
    /// The Pod list is complete and the watch is running.
    Synced,
    /// The last list or watch failed; retrying. Lookups answer
    /// [`Unresolved::ApiUnreachable`] until a new list completes.
    Unreachable,
}

impl ApiState {
    /// `connecting`, `synced` or `unreachable`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiState::Connecting => "connecting",
            ApiState::Synced => "synced",
            ApiState::Unreachable => "unreachable",
        }
    }
}

/// What the resolver knows about itself, for `/readyz`, `/stats` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverStatus {
    /// The API's state.
    pub state: ApiState,
    /// When the state was entered.
    pub since: SystemTime,
    /// The last error of the list or watch, if any since the last sync.
    pub last_error: Option<String>,
    /// Pods tracked (those that claim an IP).
    pub pods: usize,
    /// The cap on tracked Pods.
    pub max_pods: usize,
    /// More Pods than the cap claim IPs: lookups answer
    /// [`Unresolved::OverCapacity`].
    pub over_capacity: bool,
}

#[derive(Debug)]
struct Health {
    state: ApiState,
    since: SystemTime,
    last_error: Option<String>,
}

#[derive(Debug)]
struct Inner {
    // std Mutex: held only for a map lookup or one event's update, never
    // across an `.await`.
    index: Mutex<PodIndex>,
    health: Mutex<Health>,
}

/// Answers peer IP -> Pod. Cheap to clone; all clones share one index.
#[derive(Debug, Clone)]
pub struct PodResolver {
    inner: Arc<Inner>,
}

impl PodResolver {
    /// A resolver with an empty index, in state `connecting`. Feed it with
    /// [`watch::spawn`] (or, in tests, through [`PodResolver::index`]).
    pub fn new(max_pods: usize) -> Self {
        PodResolver {
            inner: Arc::new(Inner {
                index: Mutex::new(PodIndex::new(max_pods)),
                health: Mutex::new(Health {
                    state: ApiState::Connecting,
                    since: SystemTime::now(),
                    last_error: None,
                }),
            }),
        }
    }

    /// The Pod holding `ip`, or why it is not known.
    pub fn resolve(&self, ip: IpAddr) -> Resolution {
        if self.health().state != ApiState::Synced {
            return Resolution::Unknown(Unresolved::ApiUnreachable);
        }
        self.index().resolve(ip)
    }

    /// True once the Pod list is complete and while the watch runs.
    pub fn is_synced(&self) -> bool {
        self.health().state == ApiState::Synced
    }

    /// The current status.
    pub fn status(&self) -> ResolverStatus {
        let (pods, max_pods, over_capacity) = {
            let idx = self.index();
            (idx.len(), idx.max_pods(), idx.over_capacity())
        };
        let h = self.health();
        ResolverStatus {
            state: h.state,
            since: h.since,
            last_error: h.last_error.clone(),
            pods,
            max_pods,
            over_capacity,
        }
    }

    /// The index itself (the watcher's way in; tests use it to set up cases).
    pub fn index(&self) -> MutexGuard<'_, PodIndex> {
        // A panic while holding the lock cannot leave the index half-updated in a
        // way worse than a missed event; keep serving.
        self.inner.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        self.inner.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a state change; returns the previous state. The error is kept
    /// while unreachable and cleared on sync.
    pub fn set_state(&self, state: ApiState, error: Option<String>) -> ApiState {
        let mut h = self.health();
        let prev = h.state;
        if prev != state {
            h.state = state;
            h.since = SystemTime::now();
        }
        if state == ApiState::Synced {
            h.last_error = None;
        } else if error.is_some() {
            h.last_error = error;
        }
        prev
    }
}

/// Errors that keep the Pod watch from starting at all (a missing or invalid
/// configuration); an unreachable API is not one of them but a state.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// No kubeconfig and not in a cluster.
    #[error(
        "no Kubernetes client configuration: {0} (give --k8s-kubeconfig, set KUBECONFIG, or run in a Pod with a service account)"
    )]
    Infer(#[source] kube::config::InferConfigError),
    /// Not in a cluster.
    #[error("not running in a Kubernetes Pod with a service account: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    /// The kubeconfig file could not be used.
    #[error("cannot use kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The client could not be built from the configuration (TLS, proxy, ...).
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// Builds a Kubernetes client from `source`.
pub async fn client(source: &ClientSource) -> Result<kube::Client, K8sError> {
    let config = match source {
        ClientSource::Infer => kube::Config::infer().await.map_err(K8sError::Infer)?,
        ClientSource::InCluster => kube::Config::incluster().map_err(K8sError::InCluster)?,
        ClientSource::Kubeconfig(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                K8sError::Kubeconfig {
                    path: path.clone(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| K8sError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
    };
    kube::Client::try_from(config).map_err(K8sError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(uid: &str, ip: &str) -> PodView {
        PodView {
            uid: uid.into(),
            namespace: "ns".into(),
            name: uid.into(),
            node: Some("node-1".into()),
            ips: vec![ip.parse().unwrap()],
            terminal: false,
            terminating: false,
            created: None,
        }
    }

    /// Before the first complete list, and while the API is unreachable, no
    /// address resolves, even one the index knows: the list may be stale.
    #[test]
    fn unsynced_answers_unknown() {
        let r = PodResolver::new(10);
        r.index().apply(view("a", "10.0.0.1"));
        let ip = "10.0.0.1".parse().unwrap();
        assert_eq!(
            r.resolve(ip),
            Resolution::Unknown(Unresolved::ApiUnreachable)
        );
        r.set_state(ApiState::Synced, None);
        assert!(matches!(r.resolve(ip), Resolution::Pod(_)));
        r.set_state(ApiState::Unreachable, Some("connection refused".into()));
        assert_eq!(
            r.resolve(ip),
            Resolution::Unknown(Unresolved::ApiUnreachable)
        );
        let s = r.status();
        assert_eq!(s.state, ApiState::Unreachable);
        assert_eq!(s.last_error.as_deref(), Some("connection refused"));
        assert_eq!((s.pods, s.max_pods, s.over_capacity), (1, 10, false));
        r.set_state(ApiState::Synced, None);
        assert_eq!(r.status().last_error, None);
    }
}
