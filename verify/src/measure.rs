//! What a step measured, per node: spans delivered local / remote, lost,
//! duplicated, the generator's failures by reason, and for rollouts the
//! longest time a node delivered nothing. Built from the typed documents of
//! trace-proto (the sink's [`SinkStats`], the generators' [`GeneratorReport`]s);
//! nothing here talks to a cluster.
//!
//! **Lost** spans of a node are the larger of two counts that see loss from
//! opposite ends: the sequence numbers the sink never received between the
//! first and the last it did receive from that node's generator in the step
//! (`missing` in `/stats`: spans an agent accepted and never forwarded, or a
//! request that failed), and the spans the generator itself gave up on in
//! the step after its retries (`spans_failed`: a node whose requests all
//! failed sends the sink nothing, so it has no sequence range).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use trace_proto::stats::{Attribution, GeneratorReport, RouteKind, SinkStats};

/// One generator node's part of a step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeasurement {
    /// The generator's node.
    pub node: String,
    /// Spans that reached the sink through this node's own agent.
    pub local: u64,
    /// Spans that reached the sink through another node's agent.
    pub remote: u64,
    /// Spans whose agent node is unknown.
    pub unattributed: u64,
    /// Spans lost (see the module doc): `max(missing, generator_failed)`.
    pub lost: u64,
    /// Sequence numbers missing at the sink (gaps in what it received).
    pub missing: u64,
    /// Spans that arrived more than once.
    pub duplicated: u64,
    /// Spans the generator gave up on during the step, `None` when its
    /// report could not be read at the start or the end of the step.
    pub generator_failed: Option<u64>,
    /// Those failures by reason (`connect_timeout`, `unavailable`, ...).
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Export attempts (retries included) that failed during the step,
    /// `None` when the report could not be read. An export gives up only
    /// after its retries (seconds of connect timeouts and back-off), so a
    /// short window may see failed attempts before any failed export.
    #[serde(default)]
    pub failed_attempts: Option<u64>,
    /// Rollouts only: the longest time, in milliseconds, the sink received
    /// nothing from this node (to the resolution of the polling interval).
    pub longest_silence_ms: Option<u64>,
}

impl NodeMeasurement {
    /// Spans delivered, by any route.
    pub fn delivered(&self) -> u64 {
        self.local + self.remote + self.unattributed
    }
}

/// What one of a generator's counters grew by between two reports. A
/// generator that restarted in between has a new id and counts from 0: all of
/// `after`'s count is new.
fn counted_since(
    before: &GeneratorReport,
    after: &GeneratorReport,
    count: impl Fn(&GeneratorReport) -> u64,
) -> u64 {
    if after.generator_id == before.generator_id {
        count(after).saturating_sub(count(before))
    } else {
        count(after)
    }
}

/// Failed export attempts (retries included) of one generator over a step.
pub fn failed_attempts_delta(
    before: Option<&GeneratorReport>,
    after: Option<&GeneratorReport>,
) -> Option<u64> {
    let (Some(b), Some(a)) = (before, after) else {
        return None;
    };
    Some(counted_since(b, a, |r| {
        r.requests_failed_by_reason.values().sum()
    }))
}

/// Whether every span the generators had sent at `end` has come to an end
/// in `now` (accepted, or failed after its retries). A generator missing
/// from `now`, or restarted (a new id), is not waited for.
pub fn exports_ended(
    end: &BTreeMap<String, GeneratorReport>,
    now: &BTreeMap<String, GeneratorReport>,
) -> bool {
    end.iter().all(|(node, e)| match now.get(node) {
        Some(n) if n.generator_id == e.generator_id => {
            n.spans_accepted + n.spans_failed >= e.spans_sent
        }
        _ => true,
    })
}

/// The change of one generator's report over a step: failures since the start.
pub fn generator_delta(
    before: Option<&GeneratorReport>,
    after: Option<&GeneratorReport>,
) -> (Option<u64>, BTreeMap<String, u64>) {
    let (Some(b), Some(a)) = (before, after) else {
        return (None, BTreeMap::new());
    };
    let failed = counted_since(b, a, |r| r.spans_failed);
    let reasons = a
        .spans_failed_by_reason
        .keys()
        .filter_map(|reason| {
            let d = counted_since(b, a, |r| {
                r.spans_failed_by_reason.get(reason).copied().unwrap_or(0)
            });
            (d > 0).then(|| (reason.clone(), d))
        })
        .collect();
    (Some(failed), reasons)
}

/// Per node, from the sink's `/stats` at the end of a step (reset at its
/// start) and the generators' reports at its start and end. `nodes` are the
/// generator nodes of the run; a node the sink heard of that is not listed
/// is added, so nothing received goes uncounted.
pub fn measure_nodes(
    stats: &SinkStats,
    nodes: &[String],
    before: &BTreeMap<String, GeneratorReport>,
    after: &BTreeMap<String, GeneratorReport>,
) -> Vec<NodeMeasurement> {
    let mut all: BTreeSet<String> = nodes.iter().cloned().collect();
    all.extend(stats.routes.iter().filter_map(|r| r.generator_node.clone()));
    all.into_iter()
        .map(|node| {
            let mut m = NodeMeasurement {
                node: node.clone(),
                ..Default::default()
            };
            for r in stats
                .routes
                .iter()
                .filter(|r| r.generator_node.as_deref() == Some(node.as_str()))
            {
                match r.kind() {
                    RouteKind::Local => m.local += r.spans,
                    RouteKind::Remote => m.remote += r.spans,
                    RouteKind::Unattributed => m.unattributed += r.spans,
                }
            }
            for g in stats
                .generators
                .iter()
                .filter(|g| g.node.as_deref() == Some(node.as_str()))
            {
                m.missing += g.missing;
                m.duplicated += g.duplicates;
            }
            let (failed, reasons) = generator_delta(before.get(&node), after.get(&node));
            m.generator_failed = failed;
            m.failed_by_reason = reasons;
            m.failed_attempts = failed_attempts_delta(before.get(&node), after.get(&node));
            m.lost = m.missing.max(failed.unwrap_or(0));
            m
        })
        .collect()
}

/// Where the agent nodes of a step's spans came from: the routes'
/// `attribution` values, one -> it, several -> `mixed`, none -> `None`.
pub fn attribution(stats: &SinkStats) -> Option<Attribution> {
    let mut values = stats.routes.iter().filter_map(|r| r.attribution);
    let first = values.next()?;
    Some(if values.all(|a| a == first) {
        first
    } else {
        Attribution::Mixed
    })
}

/// The longest time each node delivered nothing, from `/stats` polled at a
/// fixed interval during a rollout. A node's silence runs from the last poll
/// whose count of its spans grew (or the start) to the next one that grew
/// (or the end), so the figure is exact to one polling interval.
#[derive(Debug, Clone)]
pub struct SilenceTracker {
    start_ms: u64,
    nodes: BTreeMap<String, NodeSilence>,
}

#[derive(Debug, Clone)]
struct NodeSilence {
    count: u64,
    since_ms: u64,
    longest_ms: u64,
}

impl SilenceTracker {
    /// Starts tracking `nodes` at `start_ms` (any monotonic clock in ms).
    pub fn new(nodes: &[String], start_ms: u64) -> Self {
        SilenceTracker {
            start_ms,
            nodes: nodes
                .iter()
                .map(|n| {
                    let s = NodeSilence {
                        count: 0,
                        since_ms: start_ms,
                        longest_ms: 0,
                    };
                    (n.clone(), s)
                })
                .collect(),
        }
    }

    /// One poll of the sink's `/stats` at `at_ms`.
    pub fn observe(&mut self, at_ms: u64, stats: &SinkStats) {
        for (node, s) in &mut self.nodes {
            let count = trace_proto::check::spans_from(stats, node);
            if count != s.count {
                // also a drop (a reset of the sink): something arrived since
                s.longest_ms = s.longest_ms.max(at_ms.saturating_sub(s.since_ms));
                s.since_ms = at_ms;
                s.count = count;
            }
        }
    }

    /// The longest silence per node, counting the time from the last change
    /// to `end_ms` too.
    pub fn finish(&self, end_ms: u64) -> BTreeMap<String, u64> {
        let _ = self.start_ms;
        self.nodes
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    s.longest_ms.max(end_ms.saturating_sub(s.since_ms)),
                )
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use trace_proto::stats::{GeneratorStats, RouteStats, SINK_STATS_SCHEMA};

    /// A `/stats` document with these routes (generator node, agent node,
    /// spans) and per generator node (missing, duplicates).
    pub(crate) fn stats(
        routes: &[(&str, Option<&str>, u64)],
        gens: &[(&str, u64, u64)],
    ) -> SinkStats {
        let mut s = SinkStats {
            schema: SINK_STATS_SCHEMA.into(),
            since: String::new(),
            spans_total: 0,
            local_spans: 0,
            remote_spans: 0,
            unattributed_spans: 0,
            overflow_spans: 0,
            overflow_generator_spans: 0,
            routes: vec![],
            agents: vec![],
            generators: vec![],
            requests: Default::default(),
            agent_node_conflicts: 0,
            kubernetes: None,
            summary: false,
        };
        for &(g, a, n) in routes {
            s.spans_total += n;
            match RouteKind::of(Some(g), a) {
                RouteKind::Local => s.local_spans += n,
                RouteKind::Remote => s.remote_spans += n,
                RouteKind::Unattributed => s.unattributed_spans += n,
            }
            s.routes.push(RouteStats {
                generator_node: Some(g.into()),
                agent_node: a.map(Into::into),
                spans: n,
                first_seen: String::new(),
                last_seen: String::new(),
                attribution: a.map(|_| Attribution::Attribute),
                spans_by_attribution: Default::default(),
                agent_node_conflicts: 0,
            });
        }
        for &(node, missing, duplicates) in gens {
            s.generators.push(GeneratorStats {
                id: format!("id-{node}"),
                node: Some(node.into()),
                spans: 0,
                duplicates,
                missing,
                untracked: 0,
                min_seq: None,
                max_seq: None,
                connections: 1,
                last_seen: String::new(),
            });
        }
        s
    }

    pub(crate) fn report(id: &str, failed: &[(&str, u64)]) -> GeneratorReport {
        GeneratorReport {
            schema: trace_proto::stats::GENERATOR_STATS_SCHEMA.into(),
            node: "n".into(),
            generator_id: id.into(),
            endpoint: String::new(),
            protocol: "grpc".into(),
            spans_sent: 0,
            spans_accepted: 0,
            spans_failed: failed.iter().map(|f| f.1).sum(),
            spans_failed_by_reason: failed.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            requests_ok: 0,
            requests_failed_by_reason: Default::default(),
            last_error: None,
            connections_opened: 0,
            first_seq: None,
            last_seq: None,
            elapsed_seconds: 0.0,
            rate: 0.0,
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    /// Routes split into local / remote / unattributed per generator node;
    /// missing and duplicates come from the sink's sequence accounting; a
    /// node only the sink knows is added.
    #[test]
    fn per_node_routes_and_sequences() {
        let s = stats(
            &[
                ("a", Some("a"), 10),
                ("a", Some("b"), 3),
                ("b", None, 2),
                ("x", Some("x"), 1),
            ],
            &[("a", 4, 1), ("b", 0, 2)],
        );
        let m = measure_nodes(
            &s,
            &names(&["a", "b", "c"]),
            &Default::default(),
            &Default::default(),
        );
        let nodes: Vec<&str> = m.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(nodes, ["a", "b", "c", "x"]);
        assert_eq!((m[0].local, m[0].remote, m[0].unattributed), (10, 3, 0));
        assert_eq!((m[0].missing, m[0].duplicated, m[0].lost), (4, 1, 4));
        assert_eq!((m[1].unattributed, m[1].duplicated), (2, 2));
        assert_eq!(m[2].delivered(), 0);
        assert_eq!(m[2].generator_failed, None, "no reports: unknown, not 0");
    }

    /// Lost is the larger of the sink's gaps and the generator's failures in
    /// the step; failures count only what happened since the start, and a
    /// restarted generator (new id) counts from zero.
    #[test]
    fn lost_from_both_ends() {
        let s = stats(&[], &[]);
        let before = BTreeMap::from([("a".to_string(), report("g1", &[("connect_timeout", 5)]))]);
        let after = BTreeMap::from([(
            "a".to_string(),
            report("g1", &[("connect_timeout", 12), ("unavailable", 1)]),
        )]);
        let m = measure_nodes(&s, &names(&["a"]), &before, &after);
        assert_eq!(m[0].generator_failed, Some(8));
        assert_eq!(m[0].lost, 8, "nothing arrived: the generator's count");
        assert_eq!(
            m[0].failed_by_reason,
            BTreeMap::from([("connect_timeout".into(), 7), ("unavailable".into(), 1)])
        );
        let restarted = BTreeMap::from([("a".to_string(), report("g2", &[("unavailable", 2)]))]);
        let m = measure_nodes(
            &stats(&[("a", Some("a"), 9)], &[("a", 3, 0)]),
            &names(&["a"]),
            &before,
            &restarted,
        );
        assert_eq!(m[0].generator_failed, Some(2));
        assert_eq!(m[0].lost, 3, "the sink's gaps are larger here");
    }

    /// Failed attempts count retries too, only those since the start, and a
    /// restarted generator counts from zero; unknown without both reports.
    #[test]
    fn failed_attempts_over_the_step() {
        let with = |id: &str, attempts: &[(&str, u64)]| {
            let mut r = report(id, &[]);
            r.requests_failed_by_reason = attempts.iter().map(|&(k, n)| (k.into(), n)).collect();
            r
        };
        let before = BTreeMap::from([("a".to_string(), with("g1", &[("connect_timeout", 4)]))]);
        let after = BTreeMap::from([(
            "a".to_string(),
            with("g1", &[("connect_timeout", 9), ("unavailable", 2)]),
        )]);
        let s = stats(&[], &[]);
        let m = measure_nodes(&s, &names(&["a", "b"]), &before, &after);
        assert_eq!(m[0].failed_attempts, Some(7));
        assert_eq!(m[0].generator_failed, Some(0), "no export gave up yet");
        assert_eq!(m[1].failed_attempts, None, "no reports: unknown, not 0");
        let restarted = BTreeMap::from([("a".to_string(), with("g2", &[("unavailable", 3)]))]);
        let m = measure_nodes(&s, &names(&["a"]), &before, &restarted);
        assert_eq!(m[0].failed_attempts, Some(3));
    }

    /// The exports in flight at the end of a window have ended once what was
    /// sent then is accepted or failed; a restarted or unreadable generator
    /// is not waited for.
    #[test]
    fn exports_in_flight_end() {
        let r = |id: &str, sent: u64, accepted: u64, failed: u64| {
            let mut r = report(id, &[]);
            r.spans_sent = sent;
            r.spans_accepted = accepted;
            r.spans_failed = failed;
            r
        };
        let end = BTreeMap::from([
            ("a".to_string(), r("g1", 100, 80, 10)),
            ("b".to_string(), r("g2", 50, 50, 0)),
        ]);
        assert!(!exports_ended(&end, &end), "10 spans of a in flight");
        let mut now = end.clone();
        now.insert("a".into(), r("g1", 110, 80, 19));
        assert!(!exports_ended(&end, &now), "one still in flight");
        now.insert("a".into(), r("g1", 110, 80, 20));
        assert!(exports_ended(&end, &now), "failed after its retries");
        now.insert("a".into(), r("g3", 5, 0, 0));
        assert!(exports_ended(&end, &now), "restarted: not waited for");
        now.remove("a");
        assert!(exports_ended(&end, &now), "unreadable: not waited for");
    }

    /// The attribution of a step: one source, several (mixed), none.
    #[test]
    fn attribution_of_a_step() {
        let mut s = stats(&[("a", Some("a"), 1), ("b", Some("b"), 1)], &[]);
        assert_eq!(attribution(&s), Some(Attribution::Attribute));
        s.routes[1].attribution = Some(Attribution::Peer);
        assert_eq!(attribution(&s), Some(Attribution::Mixed));
        assert_eq!(attribution(&stats(&[("a", None, 1)], &[])), None);
    }

    /// The longest silence is the longest time between two polls at which a
    /// node's count grew, including the start and the end of the rollout.
    #[test]
    fn longest_silence() {
        let nodes = names(&["a", "b"]);
        let mut t = SilenceTracker::new(&nodes, 1_000);
        let poll = |a: u64, b: u64| stats(&[("a", Some("a"), a), ("b", Some("b"), b)], &[]);
        t.observe(2_000, &poll(5, 0));
        t.observe(3_000, &poll(10, 0));
        t.observe(4_000, &poll(10, 0));
        t.observe(5_000, &poll(10, 0));
        t.observe(6_000, &poll(15, 3));
        t.observe(7_000, &poll(20, 3));
        let s = t.finish(8_000);
        assert_eq!(s["a"], 3_000, "a grew at 3 s, then only at 6 s");
        assert_eq!(s["b"], 5_000, "b was silent from the start until 6 s");
        let t = SilenceTracker::new(&nodes, 0);
        assert_eq!(
            t.finish(4_000)["a"],
            4_000,
            "never delivered: the whole rollout"
        );
    }
}
