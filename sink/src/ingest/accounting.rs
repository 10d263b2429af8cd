//! The sink's accounting. Ingest attributes a whole request first
//! ([`super::attribution::attribute`], no lock held) and then merge the
//! summary here under one `std::sync::Mutex`, once per request. A std mutex is
//! right because nothing awaits while it is held, and one lock for everything
//! makes `/reset` and `/stats` atomic: a span is in exactly one snapshot.
//!
//! `/stats` holds the lock only to copy numbers ([`Accounting::view`], about
//! 1 ms at 10,000 series): the tables are kept in `/stats` order as entries
//! arrive (routes and agents in ordered maps, generators in an order sorted
//! only when one arrived or changed node) rather than sorted per answer, and
//! the names they list are kept back to back in one buffer that a view copies
//! whole rather than name by name. The JSON is written after the lock is
//! released ([`super::view`]).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use trace_proto::stats::{KubernetesStats, MAX_PEERS, SinkStats};

use super::attribution::{PeerLookup, RequestSummary, RouteKind, agent_node};
use super::seqset::{SeqSet, runs};
use super::view::{AgentRow, GeneratorRow, Millis, Names, RouteRow, StatsView, Str};
use crate::metrics::Metrics;
use crate::outcome::{Outcome, Via};

/// A node name or generator id in the tables (an id is shared by the
/// generator table, its index and its place in the `/stats` order).
type Name = Arc<str>;

/// A table keyed by an optional name, kept in the order of `Option<&str>`:
/// `None` first, then the names in byte order. That is the order of
/// `/stats`'s tables, so they are kept sorted as entries arrive instead of
/// being sorted for every answer. Looked up by `Option<&str>` without
/// allocating; a name is allocated (once, as a shared [`Name`]) only when
/// its entry is made.
#[derive(Debug)]
struct ByName<V> {
    unknown: Option<V>,
    known: BTreeMap<Name, V>,
}

impl<V> Default for ByName<V> {
    fn default() -> Self {
        ByName {
            unknown: None,
            known: BTreeMap::new(),
        }
    }
}

impl<V> ByName<V> {
    /// Applies `f` to the entry of `key`, made by `new` first if there is none.
    fn update<R>(
        &mut self,
        key: Option<&str>,
        new: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        match key {
            None => f(self.unknown.get_or_insert_with(new)),
            Some(k) => {
                if let Some(v) = self.known.get_mut(k) {
                    return f(v);
                }
                f(self.known.entry(Name::from(k)).or_insert_with(new))
            }
        }
    }

    /// In table order.
    fn iter(&self) -> impl Iterator<Item = (Option<&Name>, &V)> {
        let unknown = self.unknown.iter().map(|v| (None, v));
        unknown.chain(self.known.iter().map(|(k, v)| (Some(k), v)))
    }

    fn len(&self) -> usize {
        usize::from(self.unknown.is_some()) + self.known.len()
    }
}

/// A route: (generator node, agent node), ordered as `/stats` lists routes.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RouteKey(Option<Name>, Option<Name>);

/// A route key, owned or borrowed: lets the route table be looked up by
/// `(Option<&str>, Option<&str>)` without allocating.
trait RouteKeyParts {
    fn parts(&self) -> (Option<&str>, Option<&str>);
}

impl RouteKeyParts for RouteKey {
    fn parts(&self) -> (Option<&str>, Option<&str>) {
        (self.0.as_deref(), self.1.as_deref())
    }
}

impl RouteKeyParts for (Option<&str>, Option<&str>) {
    fn parts(&self) -> (Option<&str>, Option<&str>) {
        *self
    }
}

impl<'a> Borrow<dyn RouteKeyParts + 'a> for RouteKey {
    fn borrow(&self) -> &(dyn RouteKeyParts + 'a) {
        self
    }
}

// The same order as `RouteKey`'s derived one (as `Borrow` requires).
impl PartialEq for dyn RouteKeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn RouteKeyParts + '_ {}

impl PartialOrd for dyn RouteKeyParts + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn RouteKeyParts + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// The names of the tables' entries, back to back, for `/stats`: a view
/// copies this one buffer instead of every name. Appended to when an entry
/// is made or a generator changes node; [`State::compact_names`] keeps it
/// within twice what the tables refer to.
#[derive(Debug)]
struct NameText {
    names: Names,
    /// Compact when `names` grows past this.
    budget: usize,
}

const NAMES_SLACK: usize = 64 * 1024;

#[derive(Debug)]
struct RouteEntry {
    /// The names of its key in [`NameText`].
    generator_node: Option<Str>,
    agent_node: Option<Str>,
    spans: u64,
    /// Spans by where their agent node came from ([`Attribution::index`]).
    ///
    /// [`Attribution::index`]: trace_proto::stats::Attribution::index
    by_source: [u64; 3],
    /// Spans whose attribute and peer disagreed.
    conflicts: u64,
    first: Millis,
    last: Millis,
    /// Its `/metrics` counter.
    counter: prometheus_client::metrics::counter::Counter,
}

#[derive(Debug, Default)]
struct AgentEntry {
    /// Its node in [`NameText`].
    node: Option<Str>,
    spans: u64,
    peers: BTreeSet<SocketAddr>,
}

#[derive(Debug)]
struct GeneratorEntry {
    id: Name,
    node: Option<Name>,
    /// `id` and `node` in [`NameText`].
    id_text: Str,
    node_text: Option<Str>,
    spans: u64,
    duplicates: u64,
    seqs: SeqSet,
    peers: BTreeSet<SocketAddr>,
    last: Millis,
}

#[derive(Debug)]
struct State {
    since: SystemTime,
    spans_total: u64,
    local: u64,
    remote: u64,
    unattributed: u64,
    overflow: u64,
    overflow_generators: u64,
    conflicts: u64,
    /// Spans by the result of their peer lookup (`--k8s-attribution`).
    peer_spans: BTreeMap<&'static str, u64>,
    /// In `/stats` order.
    routes: BTreeMap<RouteKey, RouteEntry>,
    /// The names the tables refer to.
    text: NameText,
    /// In `/stats` order.
    agents: ByName<AgentEntry>,
    /// Generators in the order they arrived.
    generators: Vec<GeneratorEntry>,
    /// Generator id → its place in `generators`, for ingest.
    generator_index: HashMap<Name, usize>,
    /// Places in `generators` in the `/stats` order, (node, id): sorted
    /// when a view is taken after generators arrived or changed node (a
    /// stable sort of a sorted run and a few new ones is about linear), not
    /// for every answer.
    generator_order: Vec<usize>,
    /// `generator_order` needs sorting.
    generators_moved: bool,
    /// Gap-table intervals held by all generators together.
    intervals: usize,
    requests: BTreeMap<(Via, Outcome), u64>,
}

impl State {
    fn new() -> Self {
        State {
            since: SystemTime::now(),
            spans_total: 0,
            local: 0,
            remote: 0,
            unattributed: 0,
            overflow: 0,
            overflow_generators: 0,
            conflicts: 0,
            peer_spans: BTreeMap::new(),
            routes: BTreeMap::new(),
            text: NameText {
                names: Names::default(),
                budget: NAMES_SLACK,
            },
            agents: ByName::default(),
            generators: Vec::new(),
            generator_index: HashMap::new(),
            generator_order: Vec::new(),
            generators_moved: false,
            intervals: 0,
            requests: BTreeMap::new(),
        }
    }

    /// Rewrites [`NameText`] with only the names the tables refer to, once
    /// it holds more than twice those (generators that changed node left
    /// theirs behind).
    fn compact_names(&mut self) {
        if self.text.names.len() <= self.text.budget {
            return;
        }
        let old = std::mem::take(&mut self.text.names);
        let names = &mut self.text.names;
        let mut copy = |s: &mut Option<Str>| *s = names.push_opt(old.get_opt(*s));
        for r in self.routes.values_mut() {
            copy(&mut r.generator_node);
            copy(&mut r.agent_node);
        }
        if let Some(a) = &mut self.agents.unknown {
            copy(&mut a.node);
        }
        for a in self.agents.known.values_mut() {
            copy(&mut a.node);
        }
        for g in &mut self.generators {
            copy(&mut g.node_text);
            let mut id = Some(g.id_text);
            copy(&mut id);
            g.id_text = id.unwrap_or(g.id_text);
        }
        self.text.budget = 2 * self.text.names.len() + NAMES_SLACK;
    }

    /// Sorts `generator_order` if generators arrived or moved since.
    fn sort_generators(&mut self) {
        if self.generators_moved {
            let g = &self.generators;
            let key = |&pos: &usize| g.get(pos).map(|e| (e.node.as_deref(), &*e.id));
            self.generator_order.sort_by(|x, y| key(x).cmp(&key(y)));
            self.generators_moved = false;
        }
    }
}

/// Shared accounting of one sink.
#[derive(Debug)]
pub struct Accounting {
    state: Mutex<State>,
    /// `--k8s-attribution` is on: `/stats` has a `kubernetes` section.
    peer_attribution: bool,
    max_generators: usize,
    max_gaps: usize,
    max_total_gaps: usize,
    metrics: Arc<Metrics>,
}

fn insert_peer(peers: &mut BTreeSet<SocketAddr>, peer: Option<SocketAddr>) {
    if let Some(p) = peer
        && peers.len() < MAX_PEERS
    {
        peers.insert(p);
    }
}

impl Accounting {
    /// New, empty accounting.
    /// Routes are capped by `metrics` (`Metrics::route_counter`), generator
    /// ids by `max_generators`; gap-table intervals by `max_gaps` per
    /// generator and `max_total_gaps` for all together.
    /// `peer_attribution`: spans come with a [`PeerLookup`] other than `Off`.
    pub fn new(
        max_generators: usize,
        max_gaps: usize,
        max_total_gaps: usize,
        peer_attribution: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        Accounting {
            state: Mutex::new(State::new()),
            peer_attribution,
            max_generators,
            max_gaps,
            max_total_gaps: max_total_gaps.max(1),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters half-merged in
        // a way worse than losing the request, so keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Merges the summary of one accepted request and counts the request as `ok`.
    ///
    /// Per origin (generator node, agent node, generator id): the spans go into
    /// the route and agent tables together, or, when the route is new and the
    /// route cap (`--max-series` route label pairs since the process started,
    /// kept by [`Metrics`]) is reached, into `overflow_spans`; so
    /// `spans_total` = Σ `routes` + `overflow_spans`. Independently, a generator
    /// already tracked always gets its spans and sequence numbers (an
    /// overflowing route must not fake missing spans); a new one beyond the cap
    /// goes into `overflow_generator_spans`.
    ///
    /// The agent node of each origin is its attribute combined with what the
    /// peer address resolved to ([`agent_node`]): the peer's node wins a
    /// disagreement, which is counted in `agent_node_conflicts`.
    pub fn ingest(
        &self,
        summary: RequestSummary<'_>,
        peer: Option<SocketAddr>,
        lookup: &PeerLookup,
        via: Via,
    ) {
        // Sort and collapse sequence numbers before taking the lock.
        let prepared: Vec<_> = summary
            .origins
            .into_iter()
            .map(|(origin, mut batch)| {
                let (runs, in_batch_dups) = runs(&mut batch.seqs);
                (origin, batch.spans, runs, in_batch_dups)
            })
            .collect();
        let now = Millis::of(SystemTime::now());
        let peer_node = lookup.node();
        let mut new_conflicts: Vec<(Option<String>, String, String)> = Vec::new();
        let mut conflict_spans = 0;
        let mut guard = self.lock();
        let st = &mut *guard;
        st.spans_total += summary.spans;
        *st.requests.entry((via, Outcome::Ok)).or_default() += 1;
        if let Some(label) = lookup.label() {
            *st.peer_spans.entry(label).or_default() += summary.spans;
        }
        for (origin, n, seq_runs, in_batch_dups) in prepared {
            let agent = agent_node(origin.agent_node, peer_node);
            let (g, a) = (origin.generator_node, agent.node);
            let kind = RouteKind::of(g, a);
            if agent.conflict {
                st.conflicts += n;
                conflict_spans += n;
            }
            match kind {
                RouteKind::Local => st.local += n,
                RouteKind::Remote => st.remote += n,
                RouteKind::Unattributed => st.unattributed += n,
            }
            // One cap for routes: the metrics' route label set (`--max-series`
            // pairs for the life of the process) decides whether a new route is
            // broken down, in `/stats` and `/metrics` alike. The agent table
            // needs no cap of its own: every agent has at least one route.
            let key = (g, a);
            let key: &dyn RouteKeyParts = &key;
            if !st.routes.contains_key(key)
                && let Some(counter) = self.metrics.route_counter(g, a, kind.as_str())
            {
                let names = &mut st.text.names;
                let route = RouteEntry {
                    generator_node: names.push_opt(g),
                    agent_node: names.push_opt(a),
                    spans: 0,
                    by_source: [0; 3],
                    conflicts: 0,
                    first: now,
                    last: now,
                    counter,
                };
                st.routes
                    .insert(RouteKey(g.map(Name::from), a.map(Name::from)), route);
            }
            if let Some(route) = st.routes.get_mut(key) {
                route.spans += n;
                if let Some(i) = agent.source.and_then(|s| s.index()) {
                    route.by_source[i] += n;
                }
                if agent.conflict {
                    if route.conflicts == 0
                        && let (Some(attr), Some(p)) = (origin.agent_node, a)
                    {
                        new_conflicts.push((g.map(str::to_owned), attr.to_owned(), p.to_owned()));
                    }
                    route.conflicts += n;
                }
                route.last = now;
                route.counter.inc_by(n);
                let names = &mut st.text.names;
                let new_agent = || AgentEntry {
                    node: names.push_opt(a),
                    ..AgentEntry::default()
                };
                st.agents.update(a, new_agent, |agent| {
                    agent.spans += n;
                    insert_peer(&mut agent.peers, peer);
                });
            } else {
                st.overflow += n;
                self.metrics.count_overflow(n);
            }
            let Some(id) = origin.generator_id else {
                continue;
            };
            let pos = match st.generator_index.get(id) {
                Some(&pos) => pos,
                None if st.generators.len() >= self.max_generators => {
                    st.overflow_generators += n;
                    continue;
                }
                None => {
                    let id = Name::from(id);
                    let pos = st.generators.len();
                    let id_text = st.text.names.push(&id);
                    st.generators.push(GeneratorEntry {
                        id: id.clone(),
                        node: None,
                        id_text,
                        node_text: None,
                        spans: 0,
                        duplicates: 0,
                        seqs: SeqSet::new(self.max_gaps),
                        peers: BTreeSet::new(),
                        last: now,
                    });
                    st.generator_index.insert(id, pos);
                    st.generator_order.push(pos);
                    st.generators_moved = true;
                    pos
                }
            };
            let Some(generator) = st.generators.get_mut(pos) else {
                continue;
            };
            generator.spans += n;
            generator.last = now;
            insert_peer(&mut generator.peers, peer);
            generator.duplicates += in_batch_dups;
            let before = generator.seqs.intervals();
            for (lo, hi) in seq_runs {
                generator.duplicates += generator.seqs.insert_range(lo, hi);
            }
            let after = generator.seqs.intervals();
            // A generator moves to the node its spans name last.
            let moved = match g {
                Some(node) if generator.node.as_deref() != Some(node) => {
                    generator.node_text = Some(st.text.names.push(node));
                    generator.node = Some(Name::from(node));
                    true
                }
                _ => false,
            };
            st.intervals = st.intervals + after - before;
            st.generators_moved |= moved;
        }
        if st.intervals > self.max_total_gaps {
            self.freeze_gaps(st);
        }
        st.compact_names();
        drop(guard);
        if conflict_spans > 0 {
            self.metrics.count_conflicts(conflict_spans);
        }
        self.metrics.count_request(via, Outcome::Ok);
        if let Some(label) = lookup.label() {
            self.metrics.count_peer_spans(label, summary.spans);
        }
        if let PeerLookup::Pod(pod) = lookup {
            for (g, attr, p) in new_conflicts {
                tracing::warn!(
                    "agent node conflict: spans of generator node {} delivered by Pod {}/{} on \
                     node {p} carry the agent node attribute {attr:?}; counted under {p} \
                     (GET /check fails while agent_node_conflicts > 0)",
                    g.as_deref().unwrap_or("(unknown)"),
                    pod.namespace,
                    pod.name,
                );
            }
        }
    }

    /// The gap tables together hold more than `--max-gaps` intervals: every
    /// generator above a fair share (3/4 of the budget split evenly, so this
    /// runs once per budget/4 new gaps at most) freezes its oldest gaps down
    /// to it. Frozen gaps stay counted as missing (see [`SeqSet`]).
    fn freeze_gaps(&self, st: &mut State) {
        let share = (self.max_total_gaps / 4 * 3 / st.generators.len().max(1)).max(1);
        for g in &mut st.generators {
            st.intervals -= g.seqs.freeze_to(share);
        }
    }

    /// Counts a rejected request.
    pub fn reject(&self, via: Via, outcome: Outcome) {
        *self.lock().requests.entry((via, outcome)).or_default() += 1;
        self.metrics.count_request(via, outcome);
    }

    /// The current numbers. With peer attribution on, `kubernetes` carries
    /// `peer_spans`; the API's state in it is for the caller to fill in
    /// (the accounting does not know the resolver).
    pub fn snapshot(&self) -> SinkStats {
        self.view(true).to_stats()
    }

    /// The current numbers as copied under the lock (see [`StatsView`]);
    /// without `tables`, only the totals (`routes`, `agents` and `generators`
    /// empty). The lock is held for copying only: numbers, one buffer of names, peer
    /// addresses, in the order the tables are kept in.
    pub fn view(&self, tables: bool) -> StatsView {
        view(&mut self.lock(), tables, self.peer_attribution)
    }

    /// Zeroes everything and returns the numbers as they were just before.
    pub fn reset(&self) -> StatsView {
        let mut old = std::mem::replace(&mut *self.lock(), State::new());
        view(&mut old, true, self.peer_attribution)
    }
}

fn view(st: &mut State, tables: bool, peer_attribution: bool) -> StatsView {
    let mut names = Names::default();
    let (mut routes, mut agents, mut peers, mut generators) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    if tables {
        // The names the rows refer to: one copy of one buffer.
        names = st.text.names.clone();
        routes.reserve_exact(st.routes.len());
        routes.extend(st.routes.values().map(|e| RouteRow {
            generator_node: e.generator_node,
            agent_node: e.agent_node,
            spans: e.spans,
            by_source: e.by_source,
            conflicts: e.conflicts,
            first: e.first,
            last: e.last,
        }));
        agents.reserve_exact(st.agents.len());
        peers.reserve(st.agents.len());
        for (_, e) in st.agents.iter() {
            let start = peers.len();
            peers.extend(e.peers.iter().copied());
            agents.push(AgentRow {
                node: e.node,
                spans: e.spans,
                peers: start..peers.len(),
            });
        }
        generators.reserve_exact(st.generators.len());
        st.sort_generators();
        for e in st
            .generator_order
            .iter()
            .filter_map(|&pos| st.generators.get(pos))
        {
            generators.push(GeneratorRow {
                id: e.id_text,
                node: e.node_text,
                spans: e.spans,
                duplicates: e.duplicates,
                missing: e.seqs.missing(),
                untracked: e.seqs.untracked(),
                min_seq: e.seqs.min(),
                max_seq: e.seqs.max(),
                connections: e.peers.len() as u64,
                last: e.last,
            });
        }
    }
    let mut requests: BTreeMap<Via, BTreeMap<Outcome, u64>> = BTreeMap::new();
    for (&(p, o), &n) in &st.requests {
        requests.entry(p).or_default().insert(o, n);
    }
    StatsView {
        tables,
        since: Millis::of(st.since),
        spans_total: st.spans_total,
        names,
        local: st.local,
        remote: st.remote,
        unattributed: st.unattributed,
        overflow: st.overflow,
        overflow_generators: st.overflow_generators,
        routes,
        agents,
        peers,
        generators,
        requests,
        conflicts: st.conflicts,
        kubernetes: peer_attribution.then(|| KubernetesStats {
            api: String::new(),
            api_since: String::new(),
            last_error: None,
            pods: 0,
            max_pods: 0,
            over_capacity: false,
            peer_spans: st
                .peer_spans
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::attribution::{Batch, Origin};
    use crate::k8s::{PodRef, Unresolved};
    use trace_proto::protocol::Protocol;

    fn summary(id: &str, seqs: Vec<u64>) -> RequestSummary<'_> {
        let mut s = RequestSummary {
            spans: seqs.len() as u64,
            ..Default::default()
        };
        s.origins.insert(
            Origin {
                generator_node: Some("n"),
                agent_node: Some("n"),
                generator_id: Some(id),
            },
            Batch {
                spans: seqs.len() as u64,
                seqs,
            },
        );
        s
    }

    /// The gap tables of all generators together stay within `max_total_gaps`
    /// (issue 9: 10,000 generators x 1024 gaps reached 417 MiB), while every
    /// gap stays counted as missing: frozen gaps make `missing` conservative,
    /// never smaller, and late spans below a frozen floor show as `untracked`.
    #[test]
    fn gap_tables_share_one_budget() {
        let acc = Accounting::new(1000, 1024, 1000, false, Arc::new(Metrics::new(1000)));
        let ids: Vec<String> = (0..50).map(|i| format!("g{i}")).collect();
        for id in &ids {
            // 100 gaps each: 0, 2, 4, ..., 200.
            acc.ingest(
                summary(id, (0..=100).map(|i| i * 2).collect()),
                None,
                &PeerLookup::Off,
                Via::Http,
            );
        }
        {
            let st = acc.lock();
            let held: usize = st.generators.iter().map(|g| g.seqs.intervals()).sum();
            assert_eq!(held, st.intervals);
            assert!(held <= 1000, "{held} intervals held");
        }
        let s = acc.snapshot();
        assert!(s.generators.iter().all(|g| g.missing == 100), "{s:?}");
        // A late span below the first generator's frozen floor fills no gap.
        acc.ingest(summary("g0", vec![1]), None, &PeerLookup::Off, Via::Http);
        let g0 = acc
            .snapshot()
            .generators
            .into_iter()
            .find(|g| g.id == "g0")
            .unwrap();
        assert_eq!((g0.missing, g0.untracked), (100, 1));
    }

    /// The document written straight from the view is, byte for byte, what
    /// serde writes for the typed `SinkStats` (the schema's one definition),
    /// for a state with every kind of value: hundreds of routes with and
    /// without nodes, names that need escaping, every attribution source and
    /// conflicts, IPv4 and IPv6 peers (more than `MAX_PEERS` for one agent),
    /// generators that moved node, with gaps, duplicates and untracked spans,
    /// overflowing routes and generators, rejected requests, the Kubernetes
    /// section. And the tables, kept in order as entries arrive, are in the
    /// order `/stats` promises (what sorting each answer gave).
    #[test]
    fn view_json_equals_serde_of_sink_stats() {
        let names = [
            "node-a",
            "node-b",
            "n\"quoted\"",
            "back\\slash",
            "tab\there",
            "ctl\u{1}\u{1f}",
            "nöde-ü",
            "🚀 rocket",
            "Z-upper",
            "",
        ];
        let more: Vec<String> = (0..14).map(|k| format!("node-{k:02}")).collect();
        let node = |i: usize| {
            (!i.is_multiple_of(25)).then(|| match i % 25 - 1 {
                k if k < names.len() => names[k],
                k => more[k - names.len()].as_str(),
            })
        };
        let ids: Vec<String> = (0..180)
            .map(|i| format!("gen-{:03}-\"{}\"", (i * 37) % 180, i % 3))
            .collect();
        // 150 routes fit, so some overflow; 120 generators fit, so some overflow.
        let acc = Accounting::new(120, 1024, 400, true, Arc::new(Metrics::new(150)));
        let pod = |n: &str| {
            PeerLookup::Pod(PodRef {
                namespace: "telemetry".into(),
                name: format!("agent-{n}").into(),
                node: Some(n.into()),
                terminating: false,
            })
        };
        let unresolved = [
            PeerLookup::Unresolved(Unresolved::NoPod),
            PeerLookup::Unresolved(Unresolved::ApiUnreachable),
            PeerLookup::Unresolved(Unresolved::OverCapacity),
        ];
        // One route of each single source first (the cap is not reached yet).
        // And a generator that never names its node.
        for (g, a, lookup, id) in [
            (Some("src-attr"), Some("src-attr"), PeerLookup::Off, None),
            (Some("src-peer"), None, pod("src-peer"), None),
            (Some("src-both"), Some("src-both"), pod("src-both"), None),
            (None, Some("src-attr"), PeerLookup::Off, Some("gen-nowhere")),
        ] {
            let mut s = RequestSummary {
                spans: 2,
                ..Default::default()
            };
            let origin = Origin {
                generator_node: g,
                agent_node: a,
                generator_id: id,
            };
            s.origins.insert(
                origin,
                Batch {
                    spans: 2,
                    seqs: vec![],
                },
            );
            acc.ingest(s, None, &lookup, Via::Otlp(Protocol::Grpc));
        }
        for round in 0..3u64 {
            for i in 0..400usize {
                let id = &ids[i % ids.len()];
                // Generators move node between rounds.
                let g = node(i + round as usize);
                let a = node(i * 7 + 3);
                // IPv4 and IPv6 peers; one agent gets far more than MAX_PEERS.
                let peer: SocketAddr = if i % 5 == 0 {
                    format!("[fd00::{:x}%3]:{}", i, 4000 + i).parse().unwrap()
                } else {
                    format!("10.0.{}.{}:{}", i % 7, i % 250, 30000 + i)
                        .parse()
                        .unwrap()
                };
                // Sequence numbers with gaps and duplicates; some far below
                // the frozen part of the gap tables (untracked).
                let base = round * 1000 + (i as u64 % 13) * 3;
                let mut seqs: Vec<u64> = (base..base + 6).filter(|s| s % 4 != 1).collect();
                seqs.push(base);
                if round == 2 && i % 9 == 0 {
                    seqs.push(2);
                }
                let mut s = RequestSummary {
                    spans: seqs.len() as u64 + 1,
                    ..Default::default()
                };
                s.origins.insert(
                    Origin {
                        generator_node: g,
                        agent_node: a,
                        generator_id: (i % 17 != 0).then_some(id.as_str()),
                    },
                    Batch {
                        spans: seqs.len() as u64,
                        seqs,
                    },
                );
                s.origins.insert(
                    Origin {
                        generator_node: None,
                        agent_node: None,
                        generator_id: None,
                    },
                    Batch {
                        spans: 1,
                        seqs: vec![],
                    },
                );
                let lookup = match i % 4 {
                    0 => pod(names[i % 3]),
                    1 => pod(a.unwrap_or("elsewhere")),
                    2 => PeerLookup::Off,
                    _ => unresolved[i % 3].clone(),
                };
                let via = [Protocol::Grpc, Protocol::HttpProtobuf, Protocol::HttpJson][i % 3];
                acc.ingest(s, Some(peer), &lookup, Via::Otlp(via));
            }
        }
        acc.reject(Via::Http, Outcome::NotFound);
        acc.reject(Via::Otlp(Protocol::Grpc), Outcome::TooLarge);
        acc.reject(Via::Otlp(Protocol::HttpJson), Outcome::BadRequest);

        let mut view = acc.view(true);
        let k = view.kubernetes_mut().unwrap();
        k.api = "synced".into();
        k.api_since = "2026-11-26T03:59:03.870Z".into();
        k.last_error = Some("watch \"pods\": \\ closed\n".into());
        (k.pods, k.max_pods) = (12, 5000);
        let stats = view.to_stats();

        // Every kind of value is there.
        assert!(stats.overflow_spans > 0 && stats.overflow_generator_spans > 0);
        assert!(stats.agent_node_conflicts > 0);
        assert!(stats.routes.len() == 150, "{}", stats.routes.len());
        assert!(stats.generators.len() == 120);
        use trace_proto::stats::Attribution;
        for source in [
            Attribution::Attribute,
            Attribution::Peer,
            Attribution::Both,
            Attribution::Mixed,
        ] {
            let with = |r: &&trace_proto::stats::RouteStats| r.attribution == Some(source);
            assert!(
                stats.routes.iter().any(|r| with(&r)),
                "no route of {source}"
            );
        }
        assert!(stats.routes.iter().any(|r| r.attribution.is_none()));
        assert!(
            stats
                .routes
                .iter()
                .any(|r| r.spans_by_attribution.len() > 1)
        );
        assert!(stats.agents.iter().any(|a| a.peers.len() == MAX_PEERS));
        assert!(
            stats
                .agents
                .iter()
                .any(|a| a.peers.iter().any(|p| p.starts_with('[')))
        );
        assert!(stats.agents.iter().any(|a| a.node.is_none()));
        assert!(
            stats
                .generators
                .iter()
                .any(|g| g.missing > 0 && g.duplicates > 0)
        );
        assert!(stats.generators.iter().any(|g| g.untracked > 0));
        assert!(stats.generators.iter().any(|g| g.node.is_none()));
        assert_eq!(stats.kubernetes.as_ref().unwrap().peer_spans.len(), 4);
        assert_eq!(stats.requests.len(), 4);

        // The tables are in the documented order.
        let mut routes = stats.routes.clone();
        routes.sort_by(|x, y| {
            (&x.generator_node, &x.agent_node).cmp(&(&y.generator_node, &y.agent_node))
        });
        assert_eq!(routes, stats.routes);
        let mut agents = stats.agents.clone();
        agents.sort_by(|x, y| x.node.cmp(&y.node));
        assert_eq!(agents, stats.agents);
        let mut generators = stats.generators.clone();
        generators.sort_by(|x, y| (&x.node, &x.id).cmp(&(&y.node, &y.id)));
        assert_eq!(generators, stats.generators);

        // Byte for byte the serde document, which reads back as the snapshot.
        let json = view.to_json();
        assert_eq!(
            String::from_utf8(json.clone()).unwrap(),
            serde_json::to_string(&stats).unwrap()
        );
        assert_eq!(serde_json::from_slice::<SinkStats>(&json).unwrap(), stats);
        // The summary is the same type: written without the tables and with
        // `"summary":true` last, in the full document's order otherwise, and
        // it reads back as the snapshot with empty tables.
        let summary_view = acc.view(false);
        let summary_json = String::from_utf8(summary_view.to_json()).unwrap();
        let mut want = SinkStats {
            routes: vec![],
            agents: vec![],
            generators: vec![],
            summary: true,
            ..stats.clone()
        };
        want.kubernetes = summary_view.to_stats().kubernetes;
        assert_eq!(
            serde_json::from_str::<SinkStats>(&summary_json).unwrap(),
            want
        );
        assert_eq!(summary_view.to_stats(), want);
        let full = serde_json::to_string(&SinkStats {
            summary: false,
            ..want.clone()
        })
        .unwrap();
        let (head, tail) = full
            .split_once(r#","routes":[],"agents":[],"generators":[]"#)
            .unwrap();
        assert_eq!(
            summary_json,
            format!(
                "{head}{},\"summary\":true}}",
                tail.strip_suffix('}').unwrap()
            )
        );
        // The Accounting's own snapshot is the same numbers (API state blank).
        let mut typed = acc.snapshot();
        typed.kubernetes = stats.kubernetes.clone();
        assert_eq!(typed, stats);
        // Without peer attribution there is no kubernetes section, in both.
        let plain = Accounting::new(10, 16, 100, false, Arc::new(Metrics::new(10)));
        plain.ingest(summary("g", vec![1, 3]), None, &PeerLookup::Off, Via::Http);
        let view = plain.view(true);
        assert_eq!(
            view.to_json(),
            serde_json::to_vec(&view.to_stats()).unwrap()
        );
        assert!(
            !String::from_utf8(view.to_json())
                .unwrap()
                .contains("kubernetes")
        );
    }

    /// A generator that keeps changing node appends its new node's name each
    /// time; the names buffer is compacted to what the tables refer to, so
    /// it stays bounded, and the rows still read the right names.
    #[test]
    fn names_stay_bounded_when_generators_change_node() {
        let acc = Accounting::new(10, 1024, 1000, false, Arc::new(Metrics::new(4)));
        for i in 0..20_000u64 {
            let node = format!("{:0>200}", i);
            let mut s = RequestSummary {
                spans: 1,
                ..Default::default()
            };
            s.origins.insert(
                Origin {
                    generator_node: Some(&node),
                    agent_node: Some("agent"),
                    generator_id: Some("flapping"),
                },
                Batch {
                    spans: 1,
                    seqs: vec![i],
                },
            );
            acc.ingest(s, None, &PeerLookup::Off, Via::Http);
            let held = acc.lock().text.names.len();
            assert!(
                held <= 2 * (4 * 2 * 200 + 210) + NAMES_SLACK,
                "{held} bytes at {i}"
            );
        }
        let stats = acc.snapshot();
        assert_eq!(stats.overflow_spans, 20_000 - 4);
        assert_eq!(stats.routes.len(), 4);
        assert_eq!(
            stats.routes[0].generator_node.as_deref(),
            Some(&*format!("{:0>200}", 0))
        );
        assert_eq!(stats.agents[0].node.as_deref(), Some("agent"));
        let g = &stats.generators[0];
        assert_eq!((g.id.as_str(), g.spans), ("flapping", 20_000));
        assert_eq!(g.node.as_deref(), Some(&*format!("{:0>200}", 19_999)));
        let view = acc.view(true);
        assert_eq!(
            view.to_json(),
            serde_json::to_vec(&view.to_stats()).unwrap()
        );
    }
}
