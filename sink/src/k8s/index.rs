//! The pod IP index: which Pod holds an IP right now, from the order in which
//! the watch reported the Pods. Pure data, no I/O: the watcher feeds it events,
//! the receivers ask it about peer addresses.
//!
//! # Who holds an IP
//! A Pod *claims* each of its `status.podIPs` (or `status.podIP`) from the
//! moment the watch first shows it with that IP, unless its phase is terminal
//! (`Succeeded`, `Failed`: its containers are gone, and so is its sandbox or it
//! soon will be). Deleting a Pod does not end its claim: during its grace
//! period a terminating agent still runs and still forwards spans, from the IP
//! it has always had. Its claim ends when the Pod is gone from the API (a
//! watch `DELETED` event, or absent from a re-list), when it turns terminal,
//! or when another Pod that is not terminating claims the same IP (a runtime
//! only hands out an IP again after the old sandbox released it).
//!
//! Of several claims on one IP, the holder is a Pod that is not terminating
//! before one that is, and among equals the latest claim in watch order. A
//! re-list (after the watch lost its place) keeps the order of claims it
//! already knew; claims first seen in a re-list are ordered by the Pods'
//! `creationTimestamp`, oldest first, so a Pod created later wins a tie.
//!
//! # Memory
//! At most `max_pods` Pods that claim an IP are tracked (terminal Pods and Pods
//! without an IP take no room). Each costs its uid, namespace, name and node
//! name (bounded by the API's validation: at most 36 + 63 + 253 + 253 bytes)
//! plus about 150 bytes of map overhead per Pod and per IP: under 1 KiB, about
//! 250 bytes for typical names. A re-list holds the new list next to the old
//! index until it completes, so the peak is twice that. Beyond the cap the
//! index is *incomplete*: an untracked Pod may hold an IP a tracked one held
//! before, so every lookup answers [`Unresolved::OverCapacity`] until a
//! re-list fits under the cap again.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Default cap on Pods tracked (`--k8s-max-pods`).
pub const DEFAULT_MAX_PODS: usize = 20_000;

/// What the index needs of one Pod, taken from the API object by
/// [`PodView::from_pod`](crate::k8s::watch) or built directly in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// `metadata.uid`: a Pod recreated under the same name is another Pod.
    pub uid: Arc<str>,
    /// `metadata.namespace`.
    pub namespace: Arc<str>,
    /// `metadata.name`.
    pub name: Arc<str>,
    /// `spec.nodeName`, `None` while unscheduled.
    pub node: Option<Arc<str>>,
    /// `status.podIPs` (or `status.podIP`), canonical form.
    pub ips: Vec<IpAddr>,
    /// `status.phase` is `Succeeded` or `Failed`.
    pub terminal: bool,
    /// `metadata.deletionTimestamp` is set: the Pod is in its grace period.
    pub terminating: bool,
    /// `metadata.creationTimestamp` in seconds since the epoch.
    pub created: Option<i64>,
}

impl PodView {
    /// True if this Pod claims its IPs.
    fn claims(&self) -> bool {
        !self.terminal && !self.ips.is_empty()
    }
}

/// The Pod that holds an IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Namespace of the Pod.
    pub namespace: Arc<str>,
    /// Name of the Pod.
    pub name: Arc<str>,
    /// Node the Pod runs on, `None` if it is not scheduled (no usable node).
    pub node: Option<Arc<str>>,
    /// The Pod is terminating (in its grace period).
    pub terminating: bool,
}

/// Why a peer address was not resolved to a Pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unresolved {
    /// No tracked Pod claims the address.
    NoPod,
    /// The Pod list is not known to be current: the Kubernetes API has not
    /// been reached yet, or the watch failed and has not been re-established.
    ApiUnreachable,
    /// More Pods than `--k8s-max-pods` claim IPs: the index is incomplete.
    OverCapacity,
}

impl Unresolved {
    /// The label in `/stats`, `/metrics` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Unresolved::NoPod => "no_pod",
            Unresolved::ApiUnreachable => "api_unreachable",
            Unresolved::OverCapacity => "over_capacity",
        }
    }
}

/// The answer for one peer address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The Pod holding the address.
    Pod(PodRef),
    /// Nobody known: never a guess.
    Unknown(Unresolved),
}

#[derive(Debug)]
struct Entry {
    namespace: Arc<str>,
    name: Arc<str>,
    node: Option<Arc<str>>,
    terminating: bool,
    /// Each IP with the sequence number of its claim (watch order).
    ips: Vec<(IpAddr, u64)>,
}

/// The pod IP index (see the module documentation).
#[derive(Debug)]
pub struct PodIndex {
    max_pods: usize,
    pods: HashMap<Arc<str>, Entry>,
    /// Uids of the Pods claiming each IP.
    by_ip: HashMap<IpAddr, Vec<Arc<str>>>,
    next_claim: u64,
    /// A Pod was left out because of the cap since the last complete re-list.
    over_capacity: bool,
    /// Pods of a re-list in progress (between `Init` and `InitDone`).
    relist: Option<Relist>,
}

#[derive(Debug, Default)]
struct Relist {
    pods: Vec<PodView>,
    over_capacity: bool,
}

impl PodIndex {
    /// An empty index tracking at most `max_pods` Pods (at least 1).
    pub fn new(max_pods: usize) -> Self {
        PodIndex {
            max_pods: max_pods.max(1),
            pods: HashMap::new(),
            by_ip: HashMap::new(),
            next_claim: 0,
            over_capacity: false,
            relist: None,
        }
    }

    /// Pods tracked.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// True if no Pod is tracked.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// The cap on Pods tracked.
    pub fn max_pods(&self) -> usize {
        self.max_pods
    }

    /// True if Pods were left out because of the cap (lookups answer
    /// [`Unresolved::OverCapacity`]).
    pub fn over_capacity(&self) -> bool {
        self.over_capacity
    }

    /// A Pod was added or modified (watch `ADDED`/`MODIFIED`).
    pub fn apply(&mut self, pod: PodView) {
        if !pod.claims() {
            self.remove(&pod.uid);
            return;
        }
        if !self.pods.contains_key(&pod.uid) && self.pods.len() >= self.max_pods {
            self.over_capacity = true;
            return;
        }
        let old = self.pods.remove(&pod.uid);
        let mut ips = Vec::with_capacity(pod.ips.len());
        for ip in dedup(&pod.ips) {
            let kept = old
                .as_ref()
                .and_then(|o| o.ips.iter().find(|(i, _)| *i == ip))
                .map(|&(_, claim)| claim);
            let claim = kept.unwrap_or_else(|| self.claim());
            ips.push((ip, claim));
        }
        if let Some(old) = &old {
            for (ip, _) in &old.ips {
                if !ips.iter().any(|(i, _)| i == ip) {
                    self.unlink(*ip, &pod.uid);
                }
            }
        }
        for (ip, _) in &ips {
            let holders = self.by_ip.entry(*ip).or_default();
            if !holders.contains(&pod.uid) {
                holders.push(pod.uid.clone());
            }
        }
        self.pods.insert(
            pod.uid,
            Entry {
                namespace: pod.namespace,
                name: pod.name,
                node: pod.node,
                terminating: pod.terminating,
                ips,
            },
        );
    }

    /// A Pod is gone from the API (watch `DELETED`).
    pub fn delete(&mut self, uid: &str) {
        self.remove(uid);
    }

    /// A re-list starts (watcher `Init`): the Pods that follow replace the
    /// index when [`PodIndex::relist_done`] is called; until then lookups
    /// answer from the index as it was.
    pub fn relist_start(&mut self) {
        self.relist = Some(Relist::default());
    }

    /// One Pod of the re-list (watcher `InitApply`).
    pub fn relist_apply(&mut self, pod: PodView) {
        let relist = self.relist.get_or_insert_with(Relist::default);
        if !pod.claims() {
            return;
        }
        if relist.pods.len() >= self.max_pods {
            relist.over_capacity = true;
            return;
        }
        relist.pods.push(pod);
    }

    /// The re-list is complete (watcher `InitDone`): Pods not in it are gone.
    pub fn relist_done(&mut self) {
        let Some(mut relist) = self.relist.take() else {
            return;
        };
        // Claims the old index knew keep their order; new ones are ordered by
        // creation, oldest first, so that a later Pod wins a tie.
        relist.pods.sort_by(|a, b| {
            (a.created, &a.namespace, &a.name).cmp(&(b.created, &b.namespace, &b.name))
        });
        let max_pods = self.max_pods;
        let old = std::mem::replace(self, PodIndex::new(max_pods));
        self.next_claim = old.next_claim;
        self.over_capacity = relist.over_capacity;
        for pod in relist.pods {
            let known = old.pods.get(&pod.uid);
            let mut ips = Vec::with_capacity(pod.ips.len());
            for ip in dedup(&pod.ips) {
                let kept = known
                    .and_then(|o| o.ips.iter().find(|(i, _)| *i == ip))
                    .map(|&(_, claim)| claim);
                ips.push((ip, kept.unwrap_or_else(|| self.claim())));
            }
            for (ip, _) in &ips {
                self.by_ip.entry(*ip).or_default().push(pod.uid.clone());
            }
            self.pods.insert(
                pod.uid,
                Entry {
                    namespace: pod.namespace,
                    name: pod.name,
                    node: pod.node,
                    terminating: pod.terminating,
                    ips,
                },
            );
        }
    }

    /// Which Pod holds `ip` (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn resolve(&self, ip: IpAddr) -> Resolution {
        if self.over_capacity {
            return Resolution::Unknown(Unresolved::OverCapacity);
        }
        let ip = ip.to_canonical();
        let best = self
            .by_ip
            .get(&ip)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.pods.get(uid))
            .filter_map(|e| {
                let claim = e.ips.iter().find(|(i, _)| *i == ip)?.1;
                Some((e, claim))
            })
            // Not terminating first, then the latest claim.
            .max_by_key(|(e, claim)| (Reverse(e.terminating), *claim));
        match best {
            Some((e, _)) => Resolution::Pod(PodRef {
                namespace: e.namespace.clone(),
                name: e.name.clone(),
                node: e.node.clone(),
                terminating: e.terminating,
            }),
            None => Resolution::Unknown(Unresolved::NoPod),
        }
    }

    fn claim(&mut self) -> u64 {
        self.next_claim += 1;
        self.next_claim
    }

    fn remove(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            for (ip, _) in old.ips {
                self.unlink(ip, uid);
            }
        }
    }

    fn unlink(&mut self, ip: IpAddr, uid: &str) {
        if let Some(holders) = self.by_ip.get_mut(&ip) {
            holders.retain(|u| &**u != uid);
            if holders.is_empty() {
                self.by_ip.remove(&ip);
            }
        }
    }
}

/// The IPs in canonical form, each once, in their order.
fn dedup(ips: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(ips.len());
    for ip in ips.iter().map(IpAddr::to_canonical) {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, node: &str, ip: &str) -> PodView {
        PodView {
            uid: uid.into(),
            namespace: "kyma-system".into(),
            name: format!("agent-{uid}").into(),
            node: Some(node.into()),
            ips: vec![ip.parse().unwrap()],
            terminal: false,
            terminating: false,
            created: Some(1_000),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn node_of(idx: &PodIndex, addr: &str) -> Option<String> {
        match idx.resolve(ip(addr)) {
            Resolution::Pod(p) => p.node.map(|n| n.to_string()),
            Resolution::Unknown(_) => None,
        }
    }

    fn name_of(idx: &PodIndex, addr: &str) -> Result<String, Unresolved> {
        match idx.resolve(ip(addr)) {
            Resolution::Pod(p) => Ok(p.name.to_string()),
            Resolution::Unknown(u) => Err(u),
        }
    }

    /// A Pod's IP resolves to its namespace, name and node.
    #[test]
    fn resolves_pod() {
        let mut idx = PodIndex::new(10);
        idx.apply(pod("a", "node-1", "10.0.0.5"));
        assert_eq!(
            idx.resolve(ip("10.0.0.5")),
            Resolution::Pod(PodRef {
                namespace: "kyma-system".into(),
                name: "agent-a".into(),
                node: Some("node-1".into()),
                terminating: false,
            })
        );
    }

    /// An address no Pod claims is unknown, never the nearest guess.
    #[test]
    fn unknown_ip_is_unknown() {
        let mut idx = PodIndex::new(10);
        idx.apply(pod("a", "node-1", "10.0.0.5"));
        assert_eq!(name_of(&idx, "10.0.0.6"), Err(Unresolved::NoPod));
    }

    /// A peer seen as an IPv4-mapped IPv6 address (a dual-stack listener)
    /// resolves like the IPv4 address.
    #[test]
    fn ipv4_mapped_peer() {
        let mut idx = PodIndex::new(10);
        idx.apply(pod("a", "node-1", "10.0.0.5"));
        assert_eq!(node_of(&idx, "::ffff:10.0.0.5").as_deref(), Some("node-1"));
    }

    /// A new Pod that reuses the IP of a deleted one is the one resolved, even
    /// before the old Pod's DELETED event arrives.
    #[test]
    fn reused_ip_goes_to_new_pod() {
        let mut idx = PodIndex::new(10);
        idx.apply(pod("old", "node-1", "10.0.0.5"));
        let mut old = pod("old", "node-1", "10.0.0.5");
        old.terminating = true;
        idx.apply(old);
        idx.apply(pod("new", "node-2", "10.0.0.5"));
        assert_eq!(name_of(&idx, "10.0.0.5").unwrap(), "agent-new");
        idx.delete("old");
        assert_eq!(node_of(&idx, "10.0.0.5").as_deref(), Some("node-2"));
    }

    /// Of two Pods not terminating that claim one IP, the later claim wins:
    /// the old Pod's record is stale (no runtime gives out an IP in use).
    #[test]
    fn later_claim_wins() {
        let mut idx = PodIndex::new(10);
        idx.apply(pod("old", "node-1", "10.0.0.5"));
        idx.apply(pod("new", "node-2", "10.0.0.5"));
        assert_eq!(name_of(&idx, "10.0.0.5").unwrap(), "agent-new");
        // A later update of the old Pod (say, a label) is not a new claim.
        let mut old = pod("old", "node-1", "10.0.0.5");
        old.created = Some(5);
        idx.apply(old);
        assert_eq!(name_of(&idx, "10.0.0.5").unwrap(), "agent-new");
    }

    /// A terminating Pod keeps its IP during its grace period: an agent
    /// shutting down still forwards spans from it.
    #[test]
    fn terminating_pod_keeps_ip() {
        let mut idx = PodIndex::new(10);
        let mut p = pod("a", "node-1", "10.0.0.5");
        p.terminating = true;
        idx.apply(p);
        let Resolution::Pod(r) = idx.resolve(ip("10.0.0.5")) else {
            panic!("terminating pod not resolved")
        };
        assert!(r.terminating);
        assert_eq!(r.node.as_deref(), Some("node-1"));
    }

    /// A terminating Pod does not win an IP back from a running one, even if
    /// its later update is newer in watch order.
    #[test]
    fn terminating_loses_to_running() {
        let mut idx = PodIndex::new(10);
        idx.apply(pod("old", "node-1", "10.0.0.5"));
        idx.apply(pod("new", "node-2", "10.0.0.5"));
        let mut old = pod("old", "node-1", "10.0.0.5");
        old.terminating = true;
        idx.apply(old);
        assert_eq!(name_of(&idx, "10.0.0.5").unwrap(), "agent-new");
    }

    /// A Pod in a terminal phase (Succeeded, Failed) holds no IP; the IP is
    /// unknown once no other Pod claims it.
    #[test]
    fn terminal_pod_releases_ip() {
        let mut idx = PodIndex::new(10);
        idx.apply(pod("a", "node-1", "10.0.0.5"));
        let mut done = pod("a", "node-1", "10.0.0.5");
        done.terminal = true;
        idx.apply(done);
        assert_eq!(name_of(&idx, "10.0.0.5"), Err(Unresolved::NoPod));
        assert!(idx.is_empty());
    }

    /// A terminal Pod never takes an IP from a running Pod, whatever the order.
    #[test]
    fn terminal_pod_never_claims() {
        let mut idx = PodIndex::new(10);
        idx.apply(pod("run", "node-1", "10.0.0.5"));
        let mut failed = pod("failed", "node-2", "10.0.0.5");
        failed.terminal = true;
        idx.apply(failed);
        assert_eq!(name_of(&idx, "10.0.0.5").unwrap(), "agent-run");
    }

    /// After the deletion of the only Pod with an IP, the IP is unknown.
    #[test]
    fn deleted_pod_is_forgotten() {
        let mut idx = PodIndex::new(10);
        idx.apply(pod("a", "node-1", "10.0.0.5"));
        idx.delete("a");
        assert_eq!(name_of(&idx, "10.0.0.5"), Err(Unresolved::NoPod));
        assert!(idx.is_empty());
    }

    /// A Pod recreated under the same name (a new uid) is a new claim.
    #[test]
    fn same_name_new_uid() {
        let mut idx = PodIndex::new(10);
        idx.apply(pod("u1", "node-1", "10.0.0.5"));
        let mut again = pod("u2", "node-2", "10.0.0.5");
        again.name = "agent-u1".into();
        idx.apply(again);
        idx.delete("u1");
        assert_eq!(node_of(&idx, "10.0.0.5").as_deref(), Some("node-2"));
    }

    /// A Pod whose IPs change gives up the old one and claims the new one.
    #[test]
    fn changed_ip_moves() {
        let mut idx = PodIndex::new(10);
        idx.apply(pod("a", "node-1", "10.0.0.5"));
        idx.apply(pod("a", "node-1", "10.0.0.6"));
        assert_eq!(name_of(&idx, "10.0.0.5"), Err(Unresolved::NoPod));
        assert_eq!(name_of(&idx, "10.0.0.6").unwrap(), "agent-a");
    }

    /// Dual-stack: every IP of a Pod resolves to it.
    #[test]
    fn dual_stack() {
        let mut idx = PodIndex::new(10);
        let mut p = pod("a", "node-1", "10.0.0.5");
        p.ips.push(ip("fd00::5"));
        idx.apply(p);
        assert_eq!(node_of(&idx, "fd00::5").as_deref(), Some("node-1"));
        assert_eq!(node_of(&idx, "10.0.0.5").as_deref(), Some("node-1"));
    }

    /// Beyond the cap the index says it is incomplete for every address
    /// (an untracked Pod may hold a tracked Pod's old IP), and a re-list that
    /// fits under the cap makes it complete again.
    #[test]
    fn cap_makes_index_incomplete() {
        let mut idx = PodIndex::new(2);
        idx.apply(pod("a", "node-1", "10.0.0.1"));
        idx.apply(pod("b", "node-1", "10.0.0.2"));
        idx.apply(pod("c", "node-1", "10.0.0.3"));
        assert_eq!(idx.len(), 2);
        assert!(idx.over_capacity());
        assert_eq!(name_of(&idx, "10.0.0.1"), Err(Unresolved::OverCapacity));
        // Updates of tracked Pods still apply while over the cap.
        idx.apply(pod("a", "node-1", "10.0.0.1"));
        assert_eq!(idx.len(), 2);
        idx.relist_start();
        idx.relist_apply(pod("a", "node-1", "10.0.0.1"));
        idx.relist_apply(pod("c", "node-1", "10.0.0.3"));
        idx.relist_done();
        assert!(!idx.over_capacity());
        assert_eq!(name_of(&idx, "10.0.0.3").unwrap(), "agent-c");
        assert_eq!(name_of(&idx, "10.0.0.2"), Err(Unresolved::NoPod));
        // A re-list over the cap leaves it incomplete.
        idx.relist_start();
        for (u, a) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
            idx.relist_apply(pod(u, "node-1", a));
        }
        idx.relist_done();
        assert!(idx.over_capacity());
        assert_eq!(idx.len(), 2);
    }

    /// Terminal Pods and Pods without an IP take no room under the cap.
    #[test]
    fn cap_counts_only_claims() {
        let mut idx = PodIndex::new(1);
        let mut pending = pod("p", "node-1", "10.0.0.9");
        pending.ips.clear();
        idx.apply(pending);
        let mut done = pod("d", "node-1", "10.0.0.8");
        done.terminal = true;
        idx.apply(done);
        idx.apply(pod("a", "node-1", "10.0.0.1"));
        assert!(!idx.over_capacity());
        assert_eq!(name_of(&idx, "10.0.0.1").unwrap(), "agent-a");
    }

    /// A re-list drops Pods it does not contain (their DELETED event was
    /// missed) and keeps answering from the old index until it completes.
    #[test]
    fn relist_replaces() {
        let mut idx = PodIndex::new(10);
        idx.apply(pod("a", "node-1", "10.0.0.1"));
        idx.apply(pod("b", "node-2", "10.0.0.2"));
        idx.relist_start();
        idx.relist_apply(pod("b", "node-2", "10.0.0.2"));
        assert_eq!(name_of(&idx, "10.0.0.1").unwrap(), "agent-a");
        idx.relist_done();
        assert_eq!(name_of(&idx, "10.0.0.1"), Err(Unresolved::NoPod));
        assert_eq!(name_of(&idx, "10.0.0.2").unwrap(), "agent-b");
        assert_eq!(idx.len(), 1);
    }

    /// A re-list keeps the order of claims it knew: the old Pod does not win
    /// back an IP because the list happens to show it last.
    #[test]
    fn relist_keeps_claim_order() {
        let mut idx = PodIndex::new(10);
        let mut old = pod("old", "node-1", "10.0.0.5");
        old.created = Some(9_000); // created later, claimed earlier: order is by claim
        idx.apply(old.clone());
        idx.apply(pod("new", "node-2", "10.0.0.5"));
        idx.relist_start();
        idx.relist_apply(pod("new", "node-2", "10.0.0.5"));
        idx.relist_apply(old);
        idx.relist_done();
        assert_eq!(name_of(&idx, "10.0.0.5").unwrap(), "agent-new");
    }

    /// Claims first seen in a re-list are ordered by creation: the Pod
    /// created later holds the IP, whatever the order of the list.
    #[test]
    fn relist_orders_new_claims_by_creation() {
        for flip in [false, true] {
            let mut idx = PodIndex::new(10);
            let mut early = pod("early", "node-1", "10.0.0.5");
            early.created = Some(100);
            let mut late = pod("late", "node-2", "10.0.0.5");
            late.created = Some(200);
            let list = if flip {
                vec![late, early]
            } else {
                vec![early, late]
            };
            idx.relist_start();
            for p in list {
                idx.relist_apply(p);
            }
            idx.relist_done();
            assert_eq!(name_of(&idx, "10.0.0.5").unwrap(), "agent-late");
            // A claim after the re-list still beats both.
            idx.apply(pod("next", "node-3", "10.0.0.5"));
            assert_eq!(name_of(&idx, "10.0.0.5").unwrap(), "agent-next");
        }
    }

    /// The same IP twice in one Pod's list (podIP repeated in podIPs) is one claim.
    #[test]
    fn duplicate_ips_in_one_pod() {
        let mut idx = PodIndex::new(10);
        let mut p = pod("a", "node-1", "10.0.0.5");
        p.ips.push(ip("10.0.0.5"));
        p.ips.push(ip("::ffff:10.0.0.5"));
        idx.apply(p);
        idx.delete("a");
        assert!(idx.by_ip.is_empty());
    }

    /// A long churn of Pods through the same few IPs leaves nothing behind.
    #[test]
    fn churn_leaves_nothing_behind() {
        let mut idx = PodIndex::new(100);
        for i in 0..1_000u32 {
            let addr = format!("10.0.0.{}", i % 7);
            let uid = format!("u{i}");
            idx.apply(pod(&uid, "node-1", &addr));
            assert_eq!(name_of(&idx, &addr).unwrap(), format!("agent-{uid}"));
            if i >= 3 {
                idx.delete(&format!("u{}", i - 3));
            }
        }
        assert_eq!(idx.len(), 3);
        assert!(idx.by_ip.len() <= 3);
    }
}
