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
    AgentStats, GeneratorStats, MAX_PEERS, RouteStats, SINK_STATS_SCHEMA, SinkStats, rfc3339,
};

use super::attribution::{RequestSummary, RouteKind};
use super::seqset::{SeqSet, runs};
use crate::metrics::Metrics;
use crate::outcome::{Outcome, Via};

#[derive(Debug)]
struct RouteEntry {
    spans: u64,
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
    routes: HashMap<(Option<String>, Option<String>), RouteEntry>,
    agents: HashMap<Option<String>, AgentEntry>,
    generators: HashMap<String, GeneratorEntry>,
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
            routes: HashMap::new(),
            agents: HashMap::new(),
            generators: HashMap::new(),
            requests: BTreeMap::new(),
        }
    }
}

/// Shared accounting of one sink.
#[derive(Debug)]
pub struct Accounting {
    state: Mutex<State>,
    max_generators: usize,
    max_gaps: usize,
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
    /// ids by `max_generators`.
    pub fn new(max_generators: usize, max_gaps: usize, metrics: Arc<Metrics>) -> Self {
        Accounting {
            state: Mutex::new(State::new()),
            max_generators,
            max_gaps,
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
    pub fn ingest(&self, summary: RequestSummary<'_>, peer: Option<SocketAddr>, via: Via) {
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
        let mut guard = self.lock();
        let st = &mut *guard;
        st.spans_total += summary.spans;
        *st.requests.entry((via, Outcome::Ok)).or_default() += 1;
        for (origin, n, seq_runs, in_batch_dups) in prepared {
            let (g, a) = (origin.generator_node, origin.agent_node);
            match origin.kind() {
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
                Entry::Vacant(v) => self
                    .metrics
                    .route_counter(g, a, origin.kind().as_str())
                    .map(|counter| {
                        v.insert(RouteEntry {
                            spans: 0,
                            first: now,
                            last: now,
                            counter,
                        })
                    }),
            };
            if let Some(route) = route {
                route.spans += n;
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
            for (lo, hi) in seq_runs {
                generator.duplicates += generator.seqs.insert_range(lo, hi);
            }
        }
        drop(guard);
        self.metrics.count_request(via, Outcome::Ok);
    }

    /// Counts a rejected request.
    pub fn reject(&self, via: Via, outcome: Outcome) {
        *self.lock().requests.entry((via, outcome)).or_default() += 1;
        self.metrics.count_request(via, outcome);
    }

    /// The current numbers.
    pub fn snapshot(&self) -> SinkStats {
        snapshot(&self.lock())
    }

    /// Zeroes everything and returns the numbers as they were just before.
    pub fn reset(&self) -> SinkStats {
        let old = std::mem::replace(&mut *self.lock(), State::new());
        snapshot(&old)
    }
}

fn snapshot(st: &State) -> SinkStats {
    let mut routes: Vec<RouteStats> = st
        .routes
        .iter()
        .map(|((g, a), e)| RouteStats {
            generator_node: g.clone(),
            agent_node: a.clone(),
            spans: e.spans,
            first_seen: rfc3339(e.first),
            last_seen: rfc3339(e.last),
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
    }
}
