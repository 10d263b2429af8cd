//! The sink's accounting. Receivers attribute a whole request first
//! ([`trace_proto::attribution::attribute`], no lock held) and then merge the
//! summary here under one `std::sync::Mutex`, once per request. A std mutex is
//! right because nothing awaits while it is held, and one lock for everything
//! makes `/reset` and `/stats` atomic: a span is in exactly one snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use trace_proto::attribution::{RequestSummary, RouteKind};
use trace_proto::seqset::{SeqSet, runs};
use trace_proto::stats::{
    AgentStats, GeneratorStats, MAX_PEERS, RouteStats, SINK_STATS_SCHEMA, SinkStats, rfc3339,
};

use crate::metrics::Metrics;

/// Which receiver a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with `application/x-protobuf`.
    HttpProtobuf,
    /// OTLP/HTTP with `application/json`.
    HttpJson,
    /// OTLP/HTTP rejected before its encoding was known (bad method, content type).
    Http,
}

impl Protocol {
    /// Name used in `/stats` and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http_protobuf",
            Protocol::HttpJson => "http_json",
            Protocol::Http => "http",
        }
    }
}

/// Outcome names of requests, shared by `/stats` and `/metrics`.
pub mod outcome {
    /// Accepted.
    pub const OK: &str = "ok";
    /// Undecodable body (HTTP 400, gRPC INVALID_ARGUMENT).
    pub const BAD_REQUEST: &str = "bad_request";
    /// Body over `--max-request-bytes` (HTTP 413, gRPC RESOURCE_EXHAUSTED).
    pub const TOO_LARGE: &str = "too_large";
    /// Content type or encoding not supported (HTTP 415).
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// Wrong HTTP method (405).
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// Unknown path (HTTP 404).
    pub const NOT_FOUND: &str = "not_found";
    /// gRPC UNIMPLEMENTED: unknown method or unsupported `grpc-encoding`.
    pub const UNIMPLEMENTED: &str = "unimplemented";
    /// The request body did not arrive within `--request-timeout` (HTTP 408, gRPC DEADLINE_EXCEEDED/CANCELLED).
    pub const TIMEOUT: &str = "timeout";
    /// Any other gRPC error.
    pub const OTHER_ERROR: &str = "error";
}

#[derive(Debug)]
struct RouteEntry {
    spans: u64,
    first: SystemTime,
    last: SystemTime,
    /// Its `/metrics` counter (None past the metrics' own series cap).
    counter: Option<prometheus_client::metrics::counter::Counter>,
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
    requests: BTreeMap<(Protocol, &'static str), u64>,
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
    max_series: usize,
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
    pub fn new(max_series: usize, max_gaps: usize, metrics: Arc<Metrics>) -> Self {
        Accounting {
            state: Mutex::new(State::new()),
            max_series,
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
    /// the route and agent tables together, or, when either is full
    /// (`--max-series`) and would need a new entry, into `overflow_spans`; so
    /// `spans_total` = Σ `routes` + `overflow_spans`. Independently, a generator
    /// already tracked always gets its spans and sequence numbers (an
    /// overflowing route must not fake missing spans); a new one beyond the cap
    /// goes into `overflow_generator_spans`.
    pub fn ingest(
        &self,
        summary: RequestSummary<'_>,
        peer: Option<SocketAddr>,
        protocol: Protocol,
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
        let mut guard = self.lock();
        let st = &mut *guard;
        st.spans_total += summary.spans;
        *st.requests.entry((protocol, outcome::OK)).or_default() += 1;
        for (origin, n, seq_runs, in_batch_dups) in prepared {
            let (g, a) = (origin.generator_node, origin.agent_node);
            match origin.kind() {
                RouteKind::Local => st.local += n,
                RouteKind::Remote => st.remote += n,
                RouteKind::Unattributed => st.unattributed += n,
            }
            let route_key = (g.map(str::to_owned), a.map(str::to_owned));
            let agent_key = a.map(str::to_owned);
            let fits = |len: usize, present: bool| present || len < self.max_series;
            let route_tracked = fits(st.routes.len(), st.routes.contains_key(&route_key))
                && fits(st.agents.len(), st.agents.contains_key(&agent_key));
            if route_tracked {
                let route = st.routes.entry(route_key).or_insert_with(|| RouteEntry {
                    spans: 0,
                    first: now,
                    last: now,
                    counter: self.metrics.route_counter(g, a),
                });
                route.spans += n;
                route.last = now;
                match &route.counter {
                    Some(c) => {
                        c.inc_by(n);
                    }
                    None => self.metrics.count_overflow(n),
                }
                let agent = st.agents.entry(agent_key).or_default();
                agent.spans += n;
                insert_peer(&mut agent.peers, peer);
            } else {
                st.overflow += n;
                self.metrics.count_overflow(n);
            }
            let Some(id) = origin.generator_id else {
                continue;
            };
            if !fits(st.generators.len(), st.generators.contains_key(id)) {
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
        self.metrics.count_request(protocol, outcome::OK);
    }

    /// Counts a rejected request.
    pub fn reject(&self, protocol: Protocol, outcome: &'static str) {
        *self.lock().requests.entry((protocol, outcome)).or_default() += 1;
        self.metrics.count_request(protocol, outcome);
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
            .insert(o.to_owned(), n);
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
