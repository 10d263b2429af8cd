//! The task that keeps a [`PodResolver`]'s index current: `kube`'s Pod
//! watcher (paged list, then watch with bookmarks), its events applied to the
//! index in order, its failures turned into the resolver's state.
//!
//! After any watch error the watcher is started afresh, so recovery always
//! goes through a complete list (`Init` .. `InitDone`): the resolver is
//! `synced` again only once it provably holds the current Pods. (A resumed
//! watch that succeeds emits nothing, so its recovery could not be told from
//! a continuing outage.) Errors are retried with a backoff from 0.5 s doubling
//! to 30 s. Watch requests ask the server to end them after 60 s, so a
//! connection that died silently is noticed within about 65 s.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ApiState, K8sConfig, PodResolver, PodView};

/// First wait after an error.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Server-side timeout of one watch request.
const WATCH_TIMEOUT_SECS: u32 = 60;
/// While over the cap, how often the Pods are listed again to see whether
/// they fit now (a DELETED event of an untracked Pod cannot be counted).
const RELIST_OVER_CAPACITY: Duration = Duration::from_secs(60);

impl PodView {
    /// The parts of a Pod the index needs; `None` without `metadata.uid`.
    /// Unparsable IPs are left out (the API validates them; this is not
    /// reachable from a conforming server).
    pub fn from_pod(pod: &Pod) -> Option<PodView> {
        let meta = &pod.metadata;
        let uid: Arc<str> = meta.uid.as_deref()?.into();
        let status = pod.status.as_ref();
        let mut ips: Vec<IpAddr> = Vec::new();
        if let Some(list) = status.and_then(|s| s.pod_ips.as_ref()) {
            ips.extend(list.iter().filter_map(|p| p.ip.parse::<IpAddr>().ok()));
        }
        if let Some(ip) = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|s| s.parse().ok())
        {
            ips.push(ip);
        }
        let phase = status.and_then(|s| s.phase.as_deref());
        Some(PodView {
            uid,
            namespace: meta.namespace.as_deref().unwrap_or_default().into(),
            name: meta.name.as_deref().unwrap_or_default().into(),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .filter(|n| !n.is_empty())
                .map(Into::into),
            ips,
            terminal: matches!(phase, Some("Succeeded" | "Failed")),
            terminating: meta.deletion_timestamp.is_some(),
            created: meta.creation_timestamp.as_ref().map(|t| t.0.as_second()),
        })
    }
}

/// The watcher's settings for `config`.
fn watcher_config(config: &K8sConfig) -> watcher::Config {
    let mut wc = watcher::Config::default().timeout(WATCH_TIMEOUT_SECS);
    if let Some(sel) = config.label_selector.as_deref().filter(|s| !s.is_empty()) {
        wc = wc.labels(sel);
    }
    wc
}

/// Starts watching Pods with `client` into `resolver` on a task of its own,
/// until `cancel`.
pub fn spawn(
    client: kube::Client,
    config: &K8sConfig,
    resolver: PodResolver,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(watch(client, config, resolver, cancel))
}

/// Watches Pods with `client` into `resolver` until `cancel` (what
/// [`spawn`] runs; the sink runs it among its own tasks).
pub fn watch(
    client: kube::Client,
    config: &K8sConfig,
    resolver: PodResolver,
    cancel: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let api: Api<Pod> = match config.namespace.as_deref().filter(|n| !n.is_empty()) {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let scope = match (&config.namespace, &config.label_selector) {
        (Some(ns), Some(sel)) => format!("Pods in namespace {ns} matching {sel:?}"),
        (Some(ns), None) => format!("Pods in namespace {ns}"),
        (None, Some(sel)) => format!("Pods matching {sel:?}"),
        (None, None) => "all Pods".to_owned(),
    };
    let wc = watcher_config(config);
    async move {
        tokio::select! {
            () = run(api, wc, &scope, &resolver) => {}
            () = cancel.cancelled() => {}
        }
    }
}

async fn run(api: Api<Pod>, wc: watcher::Config, scope: &str, resolver: &PodResolver) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut stream = watcher::watcher(api.clone(), wc.clone()).boxed();
        let mut relist_at: Option<tokio::time::Instant> = None;
        let error = loop {
            let next = match relist_at {
                Some(at) => match tokio::time::timeout_at(at, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => break None,
                },
                None => stream.next().await,
            };
            match next {
                Some(Ok(event)) => {
                    if apply(resolver, event) {
                        backoff = BACKOFF_MIN;
                        let status = resolver.status();
                        let prev = resolver.set_state(ApiState::Synced, None);
                        if prev != ApiState::Synced {
                            tracing::info!(
                                "kubernetes: watching {scope}; {} with an IP tracked",
                                status.pods
                            );
                        }
                        if status.over_capacity {
                            tracing::error!(
                                "kubernetes: more than --k8s-max-pods={} Pods with an IP; peers are \
                                 not resolved until they fit (narrow the watch with \
                                 --k8s-pod-selector or --k8s-namespace, or raise the cap)",
                                status.max_pods
                            );
                            relist_at = Some(tokio::time::Instant::now() + RELIST_OVER_CAPACITY);
                        } else {
                            relist_at = None;
                        }
                    }
                }
                Some(Err(e)) => break Some(error_text(&e)),
                None => break Some("the watch ended".to_owned()),
            }
        };
        let Some(error) = error else {
            continue; // a re-list while over the cap: no error, no wait
        };
        let prev = resolver.set_state(ApiState::Unreachable, Some(error.clone()));
        if prev != ApiState::Unreachable {
            tracing::warn!(
                "kubernetes API unreachable, peers are not resolved until it is back: {error}"
            );
        } else {
            tracing::debug!("kubernetes API still unreachable: {error}");
        }
        drop(stream);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Applies one watcher event; true when it completed a list.
fn apply(resolver: &PodResolver, event: Event<Pod>) -> bool {
    let mut idx = resolver.index();
    match event {
        Event::Apply(pod) => {
            if let Some(v) = PodView::from_pod(&pod) {
                idx.apply(v);
            }
        }
        Event::Delete(pod) => {
            if let Some(uid) = pod.metadata.uid.as_deref() {
                idx.delete(uid);
            }
        }
        Event::Init => idx.relist_start(),
        Event::InitApply(pod) => {
            if let Some(v) = PodView::from_pod(&pod) {
                idx.relist_apply(v);
            }
        }
        Event::InitDone => {
            idx.relist_done();
            return true;
        }
    }
    false
}

/// The error with its causes, on one line (a cause already quoted in its
/// parent's message is not repeated).
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn api_pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some("u-1".into()),
                namespace: Some("kyma-system".into()),
                name: Some("agent-x".into()),
                creation_timestamp: Some(Time("2026-01-01T00:00:10Z".parse().unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-2".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.1.0.7".into()),
                pod_ips: Some(vec![
                    PodIP {
                        ip: "10.1.0.7".into(),
                    },
                    PodIP {
                        ip: "fd00::7".into(),
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    /// The fields of a Pod the index uses are read from where the API puts them.
    #[test]
    fn view_of_api_pod() {
        let v = PodView::from_pod(&api_pod()).unwrap();
        assert_eq!(&*v.uid, "u-1");
        assert_eq!((&*v.namespace, &*v.name), ("kyma-system", "agent-x"));
        assert_eq!(v.node.as_deref(), Some("node-2"));
        let want: Vec<IpAddr> = vec![
            "10.1.0.7".parse().unwrap(),
            "fd00::7".parse().unwrap(),
            "10.1.0.7".parse().unwrap(),
        ];
        assert_eq!(v.ips, want);
        assert!(!v.terminal && !v.terminating);
        assert_eq!(v.created, Some(1_767_225_610));
    }

    /// Succeeded and Failed are terminal; a deletion timestamp means terminating.
    #[test]
    fn phases_and_deletion() {
        for (phase, terminal) in [
            ("Pending", false),
            ("Running", false),
            ("Unknown", false),
            ("Succeeded", true),
            ("Failed", true),
        ] {
            let mut p = api_pod();
            p.status.as_mut().unwrap().phase = Some(phase.into());
            assert_eq!(PodView::from_pod(&p).unwrap().terminal, terminal, "{phase}");
        }
        let mut p = api_pod();
        p.metadata.deletion_timestamp = Some(Time("2026-01-01T00:01:00Z".parse().unwrap()));
        assert!(PodView::from_pod(&p).unwrap().terminating);
        p.metadata.uid = None;
        assert!(PodView::from_pod(&p).is_none());
    }

    /// A list completes only at InitDone, and only then is the resolver told
    /// it is synced.
    #[test]
    fn events_in_order() {
        let r = PodResolver::new(10);
        assert!(!apply(&r, Event::Init));
        assert!(!apply(&r, Event::InitApply(api_pod())));
        assert_eq!(r.index().len(), 0);
        assert!(apply(&r, Event::InitDone));
        assert_eq!(r.index().len(), 1);
        let mut gone = api_pod();
        gone.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!apply(&r, Event::Apply(gone)));
        assert_eq!(r.index().len(), 0);
        assert!(!apply(&r, Event::Apply(api_pod())));
        assert!(!apply(&r, Event::Delete(api_pod())));
        assert_eq!(r.index().len(), 0);
    }
}
