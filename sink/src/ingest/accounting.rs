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
    pub fn new(
        max_generators: usize,
        max_gaps: usize,
        max_total_gaps: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Accounting {
            state: Mutex::new(State::new()),
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
        self.metrics.count_request(via, Outcome::Ok);
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

    /// The current numbers.
    pub fn snapshot(&self) -> SinkStats {
        snapshot(&self.lock())
    }

    /// `GET /stats` as JSON, written straight from the state while the lock is
    /// held: the document [`Accounting::snapshot`] serializes to (a test holds
    /// them equal), without first copying every node name, id and timestamp
    /// into owned strings, which made a 10,000-series answer take tens of
    /// milliseconds. `summary`: the totals only, without the per-series tables
    /// `routes`, `agents` and `generators`, and with `"summary": true`.
    pub fn stats_json(&self, summary: bool) -> Vec<u8> {
        let st = self.lock();
        let view = view(&st, summary);
        let mut out = Vec::with_capacity(if summary {
            1024
        } else {
            512 + 400 * (st.routes.len() + st.agents.len() + st.generators.len())
        });
        view.write(&mut out);
        out
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
    }
}

/// A timestamp serialized as [`rfc3339`] writes it (`2026-11-26T03:59:03.870Z`),
/// without allocating.
struct Millis(SystemTime);

impl serde::Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.digits() {
            Some(b) => s.serialize_str(std::str::from_utf8(&b).unwrap_or_default()),
            None => s.serialize_str(&rfc3339(self.0)),
        }
    }
}

impl Millis {
    /// Appends the timestamp as a JSON string.
    fn write(&self, out: &mut Vec<u8>) {
        out.push(b'"');
        match self.digits() {
            Some(b) => out.extend_from_slice(&b),
            None => out.extend_from_slice(rfc3339(self.0).as_bytes()),
        }
        out.push(b'"');
    }

    /// The 24 ASCII bytes, for 1970..=9999 (`None` otherwise: use [`rfc3339`]).
    fn digits(&self) -> Option<[u8; 24]> {
        let d = self.0.duration_since(std::time::UNIX_EPOCH).ok()?;
        let secs = d.as_secs();
        let days = secs / 86_400;
        // Days to civil date (Howard Hinnant's algorithm), for 1970..=9999.
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        if year > 9999 {
            return None;
        }
        let rem = secs % 86_400;
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, v: u64, width: usize| {
            let mut v = v;
            for i in (0..width).rev() {
                b[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, year as u64, 4);
        put(5, month as u64, 2);
        put(8, day as u64, 2);
        put(11, rem / 3600, 2);
        put(14, rem % 3600 / 60, 2);
        put(17, rem % 60, 2);
        put(20, u64::from(d.subsec_millis()), 3);
        Some(b)
    }
}

/// Appends `s` as a JSON string: copied as it is when nothing in it needs
/// escaping (node names and ids nearly always), else escaped by serde_json.
fn json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_u64(out: &mut Vec<u8>, n: u64) {
    use std::io::Write;
    let _ = write!(out, "{n}");
}

fn json_opt_u64(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => json_u64(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

impl StatsView<'_> {
    /// Writes the document by hand: serde_json spent most of a 4 MB answer
    /// escaping the same field names over and over. Same bytes as
    /// `serde_json::to_vec(self)` (a test holds them equal).
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"schema\":");
        json_str(out, self.schema);
        out.extend_from_slice(b",\"since\":");
        self.since.write(out);
        for (k, v) in [
            (&b",\"spans_total\":"[..], self.spans_total),
            (b",\"local_spans\":", self.local_spans),
            (b",\"remote_spans\":", self.remote_spans),
            (b",\"unattributed_spans\":", self.unattributed_spans),
            (b",\"overflow_spans\":", self.overflow_spans),
            (
                b",\"overflow_generator_spans\":",
                self.overflow_generator_spans,
            ),
        ] {
            out.extend_from_slice(k);
            json_u64(out, v);
        }
        if let Some(routes) = &self.routes {
            out.extend_from_slice(b",\"routes\":[");
            for (i, r) in routes.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"generator_node\":");
                json_opt_str(out, r.generator_node);
                out.extend_from_slice(b",\"agent_node\":");
                json_opt_str(out, r.agent_node);
                out.extend_from_slice(b",\"spans\":");
                json_u64(out, r.spans);
                out.extend_from_slice(b",\"first_seen\":");
                r.first_seen.write(out);
                out.extend_from_slice(b",\"last_seen\":");
                r.last_seen.write(out);
                out.push(b'}');
            }
            out.push(b']');
        }
        if let Some(agents) = &self.agents {
            out.extend_from_slice(b",\"agents\":[");
            for (i, a) in agents.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"node\":");
                json_opt_str(out, a.node);
                out.extend_from_slice(b",\"spans\":");
                json_u64(out, a.spans);
                out.extend_from_slice(b",\"peers\":[");
                for (j, p) in a.peers.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    use std::io::Write;
                    let _ = write!(out, "\"{}\"", p.0);
                }
                out.extend_from_slice(b"]}");
            }
            out.push(b']');
        }
        if let Some(generators) = &self.generators {
            out.extend_from_slice(b",\"generators\":[");
            for (i, g) in generators.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"id\":");
                json_str(out, g.id);
                out.extend_from_slice(b",\"node\":");
                json_opt_str(out, g.node);
                out.extend_from_slice(b",\"spans\":");
                json_u64(out, g.spans);
                out.extend_from_slice(b",\"duplicates\":");
                json_u64(out, g.duplicates);
                out.extend_from_slice(b",\"missing\":");
                json_u64(out, g.missing);
                out.extend_from_slice(b",\"untracked\":");
                json_u64(out, g.untracked);
                out.extend_from_slice(b",\"min_seq\":");
                json_opt_u64(out, g.min_seq);
                out.extend_from_slice(b",\"max_seq\":");
                json_opt_u64(out, g.max_seq);
                out.extend_from_slice(b",\"connections\":");
                json_u64(out, g.connections);
                out.extend_from_slice(b",\"last_seen\":");
                g.last_seen.write(out);
                out.push(b'}');
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"requests\":");
        let _ = serde_json::to_writer(&mut *out, &self.requests);
        if self.summary {
            out.extend_from_slice(b",\"summary\":true");
        }
        out.push(b'}');
    }
}

/// Serializes with `Display` (socket addresses), without allocating.
struct Shown<T>(T);

impl<T: std::fmt::Display> serde::Serialize for Shown<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// [`SinkStats`] borrowed from the state, fields in the same order.
#[derive(serde::Serialize)]
struct StatsView<'a> {
    schema: &'static str,
    since: Millis,
    spans_total: u64,
    local_spans: u64,
    remote_spans: u64,
    unattributed_spans: u64,
    overflow_spans: u64,
    overflow_generator_spans: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    routes: Option<Vec<RouteView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agents: Option<Vec<AgentView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generators: Option<Vec<GeneratorView<'a>>>,
    requests: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    summary: bool,
}

#[derive(serde::Serialize)]
struct RouteView<'a> {
    generator_node: Option<&'a str>,
    agent_node: Option<&'a str>,
    spans: u64,
    first_seen: Millis,
    last_seen: Millis,
}

#[derive(serde::Serialize)]
struct AgentView<'a> {
    node: Option<&'a str>,
    spans: u64,
    peers: Vec<Shown<&'a SocketAddr>>,
}

#[derive(serde::Serialize)]
struct GeneratorView<'a> {
    id: &'a str,
    node: Option<&'a str>,
    spans: u64,
    duplicates: u64,
    missing: u64,
    untracked: u64,
    min_seq: Option<u64>,
    max_seq: Option<u64>,
    connections: u64,
    last_seen: Millis,
}

fn view(st: &State, summary: bool) -> StatsView<'_> {
    let mut requests: BTreeMap<&'static str, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for (&(p, o), &n) in &st.requests {
        requests
            .entry(p.as_str())
            .or_default()
            .insert(o.as_str(), n);
    }
    let tables = (!summary).then(|| {
        let mut routes: Vec<RouteView<'_>> = st
            .routes
            .iter()
            .map(|((g, a), e)| RouteView {
                generator_node: g.as_deref(),
                agent_node: a.as_deref(),
                spans: e.spans,
                first_seen: Millis(e.first),
                last_seen: Millis(e.last),
            })
            .collect();
        routes.sort_unstable_by(|x, y| {
            (x.generator_node, x.agent_node).cmp(&(y.generator_node, y.agent_node))
        });
        let mut agents: Vec<AgentView<'_>> = st
            .agents
            .iter()
            .map(|(node, e)| AgentView {
                node: node.as_deref(),
                spans: e.spans,
                peers: e.peers.iter().map(Shown).collect(),
            })
            .collect();
        agents.sort_unstable_by(|x, y| x.node.cmp(&y.node));
        let mut generators: Vec<GeneratorView<'_>> = st
            .generators
            .iter()
            .map(|(id, e)| GeneratorView {
                id,
                node: e.node.as_deref(),
                spans: e.spans,
                duplicates: e.duplicates,
                missing: e.seqs.missing(),
                untracked: e.seqs.untracked(),
                min_seq: e.seqs.min(),
                max_seq: e.seqs.max(),
                connections: e.peers.len() as u64,
                last_seen: Millis(e.last),
            })
            .collect();
        generators.sort_unstable_by(|x, y| (x.node, x.id).cmp(&(y.node, y.id)));
        (routes, agents, generators)
    });
    let (routes, agents, generators) = match tables {
        Some((r, a, g)) => (Some(r), Some(a), Some(g)),
        None => (None, None, None),
    };
    StatsView {
        schema: SINK_STATS_SCHEMA,
        since: Millis(st.since),
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
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::attribution::{Batch, Origin};
    use std::time::{Duration, UNIX_EPOCH};

    /// The allocation-free timestamp writes what `rfc3339` writes.
    #[test]
    fn millis_matches_rfc3339() {
        let mut secs: Vec<u64> = vec![
            0,
            59,
            86_399,
            86_400,
            951_782_400,     // 2000-02-29
            1_709_251_199,   // 2024-02-29T23:59:59
            4_107_542_400,   // 2100-02-28
            4_107_628_800,   // 2100-03-01
            253_402_300_799, // 9999-12-31T23:59:59
        ];
        let mut x: u64 = 12345;
        for _ in 0..2000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            secs.push(x % 253_402_300_800);
        }
        for s in secs {
            for ms in [0, 7, 999] {
                let t = UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms);
                let got = serde_json::to_value(Millis(t)).unwrap();
                assert_eq!(got, rfc3339(t), "{s}.{ms}");
            }
        }
        let now = SystemTime::now();
        assert_eq!(serde_json::to_value(Millis(now)).unwrap(), rfc3339(now));
    }

    /// The hand-written document is byte for byte what serde_json writes of
    /// the same view, names needing escapes included.
    #[test]
    fn written_json_is_serde_json() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        let peer: SocketAddr = "[::1]:4317".parse().unwrap();
        let peer2: SocketAddr = "127.0.0.1:5".parse().unwrap();
        for summary in [false, true] {
            let mut requests = BTreeMap::new();
            requests.insert("grpc", BTreeMap::from([("ok", 3), ("too_large", 1)]));
            let v = StatsView {
                schema: SINK_STATS_SCHEMA,
                since: Millis(t),
                spans_total: 7,
                local_spans: 1,
                remote_spans: 2,
                unattributed_spans: 4,
                overflow_spans: 0,
                overflow_generator_spans: u64::MAX,
                routes: (!summary).then(|| {
                    vec![
                        RouteView {
                            generator_node: Some("n\"1\\\u{1}\n\u{7f}é✓"),
                            agent_node: None,
                            spans: 3,
                            first_seen: Millis(t),
                            last_seen: Millis(UNIX_EPOCH),
                        },
                        RouteView {
                            generator_node: None,
                            agent_node: Some("a"),
                            spans: 0,
                            first_seen: Millis(t),
                            last_seen: Millis(t),
                        },
                    ]
                }),
                agents: (!summary).then(|| {
                    vec![AgentView {
                        node: Some("a"),
                        spans: 1,
                        peers: vec![Shown(&peer), Shown(&peer2)],
                    }]
                }),
                generators: (!summary).then(|| {
                    vec![GeneratorView {
                        id: "g\t",
                        node: None,
                        spans: 2,
                        duplicates: 1,
                        missing: 9,
                        untracked: 3,
                        min_seq: None,
                        max_seq: Some(u64::MAX),
                        connections: 2,
                        last_seen: Millis(t),
                    }]
                }),
                requests,
                summary,
            };
            let mut out = Vec::new();
            v.write(&mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&v).unwrap()
            );
        }
    }

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
        let acc = Accounting::new(1000, 1024, 1000, Arc::new(Metrics::new(1000)));
        let ids: Vec<String> = (0..50).map(|i| format!("g{i}")).collect();
        for id in &ids {
            // 100 gaps each: 0, 2, 4, ..., 200.
            acc.ingest(
                summary(id, (0..=100).map(|i| i * 2).collect()),
                None,
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
        acc.ingest(summary("g0", vec![1]), None, Via::Http);
        let g0 = acc
            .snapshot()
            .generators
            .into_iter()
            .find(|g| g.id == "g0")
            .unwrap();
        assert_eq!((g0.missing, g0.untracked), (100, 1));
        // The JSON written straight from the state says what the snapshot says.
        let direct: serde_json::Value = serde_json::from_slice(&acc.stats_json(false)).unwrap();
        assert_eq!(direct, serde_json::to_value(acc.snapshot()).unwrap());
    }
}
