//! The sink's accounting. Ingest attributes a whole request first
//! ([`super::attribution::attribute`], no lock held) and then merge the
//! summary here under one `std::sync::Mutex`, once per request. A std mutex is
//! right because nothing awaits while it is held, and one lock for everything
//! makes `/reset` and `/stats` atomic: a span is in exactly one snapshot.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use trace_proto::stats::{
    ATTRIBUTION_MIXED, AgentStats, Attribution, GeneratorStats, KubernetesStats, MAX_PEERS,
    RouteStats, SINK_STATS_SCHEMA, SinkStats, rfc3339,
};

use super::attribution::{PeerLookup, RequestSummary, RouteKind, agent_node};
use super::seqset::{SeqSet, runs};
use crate::metrics::Metrics;
use crate::outcome::{Outcome, Via};

#[derive(Debug)]
struct RouteEntry {
    spans: u64,
    /// Spans by where their agent node came from ([`Attribution::index`]).
    by_source: [u64; 3],
    /// Spans whose attribute and peer disagreed.
    conflicts: u64,
    first: SystemTime,
    last: SystemTime,
    /// Its `/metrics` counter.
    counter: prometheus_client::metrics::counter::Counter,
}

#[derive(Debug, Default)]
struct AgentEntry {
    spans: u64,
    peers: BTreeSet<SocketAddr>,
}

#[derive(Debug)]
struct GeneratorEntry {
    node: Option<String>,
    spans: u64,
    duplicates: u64,
    seqs: SeqSet,
    peers: BTreeSet<SocketAddr>,
    last: SystemTime,
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
    routes: HashMap<(Option<String>, Option<String>), RouteEntry>,
    agents: HashMap<Option<String>, AgentEntry>,
    generators: HashMap<String, GeneratorEntry>,
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
            routes: HashMap::new(),
            agents: HashMap::new(),
            generators: HashMap::new(),
            intervals: 0,
            requests: BTreeMap::new(),
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
        let now = SystemTime::now();
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
            let route_key = (g.map(str::to_owned), a.map(str::to_owned));
            // One cap for routes: the metrics' route label set (`--max-series`
            // pairs for the life of the process) decides whether a new route is
            // broken down, in `/stats` and `/metrics` alike. The agent table
            // needs no cap of its own: every agent has at least one route.
            let route = match st.routes.entry(route_key) {
                Entry::Occupied(e) => Some(e.into_mut()),
                Entry::Vacant(v) => {
                    self.metrics
                        .route_counter(g, a, kind.as_str())
                        .map(|counter| {
                            v.insert(RouteEntry {
                                spans: 0,
                                by_source: [0; 3],
                                conflicts: 0,
                                first: now,
                                last: now,
                                counter,
                            })
                        })
                }
            };
            if let Some(route) = route {
                route.spans += n;
                if let Some(source) = agent.source {
                    route.by_source[source.index()] += n;
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
                let agent = st.agents.entry(a.map(str::to_owned)).or_default();
                agent.spans += n;
                insert_peer(&mut agent.peers, peer);
            } else {
                st.overflow += n;
                self.metrics.count_overflow(n);
            }
            let Some(id) = origin.generator_id else {
                continue;
            };
            if !st.generators.contains_key(id) && st.generators.len() >= self.max_generators {
                st.overflow_generators += n;
                continue;
            }
            let generator = st
                .generators
                .entry(id.to_owned())
                .or_insert_with(|| GeneratorEntry {
                    node: None,
                    spans: 0,
                    duplicates: 0,
                    seqs: SeqSet::new(self.max_gaps),
                    peers: BTreeSet::new(),
                    last: now,
                });
            generator.spans += n;
            generator.last = now;
            if let Some(node) = g
                && generator.node.as_deref() != Some(node)
            {
                generator.node = Some(node.to_owned());
            }
            insert_peer(&mut generator.peers, peer);
            generator.duplicates += in_batch_dups;
            let before = generator.seqs.intervals();
            for (lo, hi) in seq_runs {
                generator.duplicates += generator.seqs.insert_range(lo, hi);
            }
            st.intervals = st.intervals + generator.seqs.intervals() - before;
        }
        if st.intervals > self.max_total_gaps {
            self.freeze_gaps(st);
        }
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
        for g in st.generators.values_mut() {
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
        snapshot(&self.lock(), self.peer_attribution)
    }

    /// Zeroes everything and returns the numbers as they were just before.
    pub fn reset(&self) -> SinkStats {
        let old = std::mem::replace(&mut *self.lock(), State::new());
        snapshot(&old, self.peer_attribution)
    }
}

fn snapshot(st: &State, peer_attribution: bool) -> SinkStats {
    let mut routes: Vec<RouteStats> = st
        .routes
        .iter()
        .map(|((g, a), e)| {
            let sources: Vec<Attribution> = Attribution::ALL
                .into_iter()
                .filter(|s| e.by_source[s.index()] > 0)
                .collect();
            RouteStats {
                generator_node: g.clone(),
                agent_node: a.clone(),
                spans: e.spans,
                first_seen: rfc3339(e.first),
                last_seen: rfc3339(e.last),
                attribution: match sources.as_slice() {
                    [] => None,
                    [one] => Some(one.as_str().to_owned()),
                    _ => Some(ATTRIBUTION_MIXED.to_owned()),
                },
                spans_by_attribution: sources
                    .iter()
                    .map(|s| (s.as_str().to_owned(), e.by_source[s.index()]))
                    .collect(),
                agent_node_conflicts: e.conflicts,
            }
        })
        .collect();
    routes.sort_by(|x, y| {
        (&x.generator_node, &x.agent_node).cmp(&(&y.generator_node, &y.agent_node))
    });
    let mut agents: Vec<AgentStats> = st
        .agents
        .iter()
        .map(|(node, e)| AgentStats {
            node: node.clone(),
            spans: e.spans,
            peers: e.peers.iter().map(ToString::to_string).collect(),
        })
        .collect();
    agents.sort_by(|x, y| x.node.cmp(&y.node));
    let mut generators: Vec<GeneratorStats> = st
        .generators
        .iter()
        .map(|(id, e)| GeneratorStats {
            id: id.clone(),
            node: e.node.clone(),
            spans: e.spans,
            duplicates: e.duplicates,
            missing: e.seqs.missing(),
            untracked: e.seqs.untracked(),
            min_seq: e.seqs.min(),
            max_seq: e.seqs.max(),
            connections: e.peers.len() as u64,
            last_seen: rfc3339(e.last),
        })
        .collect();
    generators.sort_by(|x, y| (&x.node, &x.id).cmp(&(&y.node, &y.id)));
    let mut requests: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (&(p, o), &n) in &st.requests {
        requests
            .entry(p.as_str().to_owned())
            .or_default()
            .insert(o.as_str().to_owned(), n);
    }
    SinkStats {
        schema: SINK_STATS_SCHEMA.to_owned(),
        since: rfc3339(st.since),
        spans_total: st.spans_total,
        local_spans: st.local,
        remote_spans: st.remote,
        unattributed_spans: st.unattributed,
        overflow_spans: st.overflow,
        overflow_generator_spans: st.overflow_generators,
        routes,
        agents,
        generators,
        requests,
        agent_node_conflicts: st.conflicts,
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
            let held: usize = st.generators.values().map(|g| g.seqs.intervals()).sum();
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
}
