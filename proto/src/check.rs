//! The conditions of `GET /check` and `trace-sink check`, evaluated on a
//! [`SinkStats`] snapshot. Positive conditions (enough spans, every listed node
//! delivered) must *become* true; negative ones (local only, silent nodes) must
//! *stay* true. The polling command uses that distinction.
//!
//! A condition passes only on what the sink could see. Once the route table
//! is full (`overflow_spans` > 0), spans of new routes are counted in the
//! totals but not per node, so "node X sent nothing" cannot be proved and
//! `silent_nodes` fails with that reason. `expect_local` stays exact: the
//! local, remote and unattributed totals count every span, overflowed or not.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::stats::SinkStats;

/// What to assert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conditions {
    /// No remote and no unattributed spans.
    pub expect_local: bool,
    /// At least this many spans in total.
    pub min_spans: u64,
    /// Each of these generator nodes delivered at least one span.
    pub from_nodes: Vec<String>,
    /// Each of these generator nodes delivered none.
    pub silent_nodes: Vec<String>,
}

impl Default for Conditions {
    fn default() -> Self {
        Conditions {
            expect_local: false,
            min_spans: 1,
            from_nodes: Vec::new(),
            silent_nodes: Vec::new(),
        }
    }
}

/// Whether a condition must become true (positive) or stay true (negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Polarity {
    /// Must become true (min spans, from nodes).
    Positive,
    /// Must hold at all times (local only, silent nodes).
    Negative,
}

/// One failed condition, in words: a [`Violation`] as `/check` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Positive or negative condition.
    pub polarity: Polarity,
    /// What was wrong.
    pub message: String,
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// True when no condition failed.
    pub pass: bool,
    /// Every failed condition.
    pub failures: Vec<Failure>,
    /// The conditions evaluated.
    pub conditions: Conditions,
    /// Totals of the snapshot, for context.
    pub spans_total: u64,
    /// Local spans of the snapshot.
    pub local_spans: u64,
    /// Remote spans of the snapshot.
    pub remote_spans: u64,
    /// Unattributed spans of the snapshot.
    pub unattributed_spans: u64,
    /// Spans whose agent-node attribute and peer disagreed.
    #[serde(default)]
    pub agent_node_conflicts: u64,
}

/// Spans whose generator node is `node`.
pub fn spans_from(stats: &SinkStats, node: &str) -> u64 {
    stats
        .routes
        .iter()
        .filter(|r| r.generator_node.as_deref() == Some(node))
        .map(|r| r.spans)
        .sum()
}

/// Spans on one route (generator node -> agent node), as a violation names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpans {
    /// Generator node, `None` if unknown.
    pub generator_node: Option<String>,
    /// Agent node, `None` if unknown.
    pub agent_node: Option<String>,
    /// The spans (or conflicting spans) on it.
    pub spans: u64,
}

impl fmt::Display for RouteSpans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {}: {}",
            self.generator_node.as_deref().unwrap_or("?"),
            self.agent_node.as_deref().unwrap_or("?"),
            self.spans
        )
    }
}

/// One failed condition, with its numbers: what [`evaluate`] reports as a
/// [`Failure`] (its [`Violation::polarity`], and its `Display` as the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Fewer spans than `min_spans`.
    TooFewSpans {
        /// `min_spans`.
        min: u64,
        /// `spans_total`.
        got: u64,
    },
    /// A node of `from_nodes` delivered nothing (among the routes tracked,
    /// when `overflow` spans are not broken down by node).
    NoSpansFrom {
        /// The node.
        node: String,
        /// `overflow_spans`.
        overflow: u64,
    },
    /// `expect_local`, and spans travelled between nodes.
    Remote {
        /// `remote_spans`.
        spans: u64,
        /// The remote routes.
        routes: Vec<RouteSpans>,
    },
    /// `expect_local`, and spans of an unknown generator or agent node.
    Unattributed {
        /// `unattributed_spans`.
        spans: u64,
    },
    /// A node of `silent_nodes` has no route, but spans overflowed the route table.
    CannotProveSilent {
        /// The node.
        node: String,
        /// `overflow_spans`.
        overflow: u64,
    },
    /// A node of `silent_nodes` delivered spans.
    NotSilent {
        /// The node.
        node: String,
        /// Its spans.
        spans: u64,
        /// Its spans per agent node (`None`: no agent).
        via: Vec<(u64, Option<String>)>,
    },
    /// Spans whose agent-node attribute and peer's node disagreed.
    AgentNodeConflicts {
        /// `agent_node_conflicts`.
        spans: u64,
        /// The routes with conflicts (by the peer's node), their conflicting spans.
        routes: Vec<RouteSpans>,
    },
}

impl Violation {
    /// Whether the condition must become true ([`Polarity::Positive`]) or stay true.
    pub fn polarity(&self) -> Polarity {
        match self {
            Violation::TooFewSpans { .. } | Violation::NoSpansFrom { .. } => Polarity::Positive,
            _ => Polarity::Negative,
        }
    }
}

fn joined<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::TooFewSpans { min, got } => {
                write!(f, "expected at least {min} spans, got {got}")
            }
            Violation::NoSpansFrom { node, overflow } => {
                write!(f, "no spans from generator node {node}")?;
                if *overflow > 0 {
                    write!(
                        f,
                        " among the routes tracked ({overflow} spans overflowed the route table, --max-series; theirs may be among them)"
                    )?;
                }
                Ok(())
            }
            Violation::Remote { spans, routes } => write!(
                f,
                "expected only local spans, got {spans} remote ({})",
                joined(routes)
            ),
            Violation::Unattributed { spans } => write!(
                f,
                "expected only local spans, got {spans} unattributed (generator or agent node unknown)"
            ),
            Violation::CannotProveSilent { node, overflow } => write!(
                f,
                "cannot prove generator node {node} silent: {overflow} spans overflowed the route table (--max-series) and are not broken down by node"
            ),
            Violation::NotSilent { node, spans, via } => {
                let via: Vec<String> = via
                    .iter()
                    .map(|(n, a)| format!("{n} via {}", a.as_deref().unwrap_or("no agent")))
                    .collect();
                write!(
                    f,
                    "expected no spans from generator node {node}, got {spans} ({})",
                    via.join(", ")
                )
            }
            Violation::AgentNodeConflicts { spans, routes } => write!(
                f,
                "{spans} spans carry an agent-node attribute naming another node than the Pod at \
                 their connection's peer address runs on (by the peer's node: {})",
                if routes.is_empty() {
                    "routes not broken down".to_owned()
                } else {
                    joined(routes)
                }
            ),
        }
    }
}

impl From<&Violation> for Failure {
    fn from(v: &Violation) -> Self {
        Failure {
            polarity: v.polarity(),
            message: v.to_string(),
        }
    }
}

/// The conditions of `cond` that `stats` violates, in the order [`evaluate`]
/// reports them.
pub fn violations(stats: &SinkStats, cond: &Conditions) -> Vec<Violation> {
    let mut out = Vec::new();
    let route = |r: &crate::stats::RouteStats, spans: u64| RouteSpans {
        generator_node: r.generator_node.clone(),
        agent_node: r.agent_node.clone(),
        spans,
    };
    if stats.spans_total < cond.min_spans {
        out.push(Violation::TooFewSpans {
            min: cond.min_spans,
            got: stats.spans_total,
        });
    }
    for node in &cond.from_nodes {
        if spans_from(stats, node) == 0 {
            out.push(Violation::NoSpansFrom {
                node: node.clone(),
                overflow: stats.overflow_spans,
            });
        }
    }
    if cond.expect_local {
        if stats.remote_spans > 0 {
            let routes = stats
                .routes
                .iter()
                .filter(
                    |r| matches!((&r.generator_node, &r.agent_node), (Some(g), Some(a)) if g != a),
                )
                .map(|r| route(r, r.spans))
                .collect();
            out.push(Violation::Remote {
                spans: stats.remote_spans,
                routes,
            });
        }
        if stats.unattributed_spans > 0 {
            out.push(Violation::Unattributed {
                spans: stats.unattributed_spans,
            });
        }
    }
    for node in &cond.silent_nodes {
        let n = spans_from(stats, node);
        if n == 0 && stats.overflow_spans > 0 {
            out.push(Violation::CannotProveSilent {
                node: node.clone(),
                overflow: stats.overflow_spans,
            });
        }
        if n > 0 {
            let via = stats
                .routes
                .iter()
                .filter(|r| r.generator_node.as_deref() == Some(node))
                .map(|r| (r.spans, r.agent_node.clone()))
                .collect();
            out.push(Violation::NotSilent {
                node: node.clone(),
                spans: n,
                via,
            });
        }
    }
    // Whatever was asked: two sources that disagree about an agent's node mean
    // one of them is wrong (typically an agent stamping the wrong node).
    if stats.agent_node_conflicts > 0 {
        let routes = stats
            .routes
            .iter()
            .filter(|r| r.agent_node_conflicts > 0)
            .map(|r| route(r, r.agent_node_conflicts))
            .collect();
        out.push(Violation::AgentNodeConflicts {
            spans: stats.agent_node_conflicts,
            routes,
        });
    }
    out
}

/// Evaluates `cond` on `stats`: each [`Violation`] as a [`Failure`].
pub fn evaluate(stats: &SinkStats, cond: &Conditions) -> CheckReport {
    let failures: Vec<Failure> = violations(stats, cond).iter().map(Failure::from).collect();
    CheckReport {
        pass: failures.is_empty(),
        failures,
        conditions: cond.clone(),
        spans_total: stats.spans_total,
        local_spans: stats.local_spans,
        remote_spans: stats.remote_spans,
        unattributed_spans: stats.unattributed_spans,
        agent_node_conflicts: stats.agent_node_conflicts,
    }
}

/// Splits a comma-separated node list, dropping empty items.
pub fn parse_node_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{RouteStats, SINK_STATS_SCHEMA};

    fn stats(routes: &[(Option<&str>, Option<&str>, u64)]) -> SinkStats {
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
            match crate::stats::RouteKind::of(g, a) {
                crate::stats::RouteKind::Local => s.local_spans += n,
                crate::stats::RouteKind::Remote => s.remote_spans += n,
                crate::stats::RouteKind::Unattributed => s.unattributed_spans += n,
            }
            s.routes.push(RouteStats {
                generator_node: g.map(Into::into),
                agent_node: a.map(Into::into),
                spans: n,
                first_seen: String::new(),
                last_seen: String::new(),
                attribution: None,
                spans_by_attribution: Default::default(),
                agent_node_conflicts: 0,
            });
        }
        s
    }

    fn cond(expect_local: bool, min: u64, from: &[&str], silent: &[&str]) -> Conditions {
        Conditions {
            expect_local,
            min_spans: min,
            from_nodes: from.iter().map(|s| s.to_string()).collect(),
            silent_nodes: silent.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// All local, every node present: pass.
    #[test]
    fn passes_when_all_hold() {
        let s = stats(&[(Some("a"), Some("a"), 5), (Some("b"), Some("b"), 5)]);
        let r = evaluate(&s, &cond(true, 10, &["a", "b"], &["c"]));
        assert!(r.pass, "{:?}", r.failures);
    }

    /// Each condition fails on its own, as its violation with its numbers,
    /// reported with its polarity and its message.
    #[test]
    fn each_condition_can_fail() {
        let s = stats(&[(Some("a"), Some("b"), 3), (Some("c"), None, 1)]);
        let r = evaluate(&s, &cond(false, 5, &[], &[]));
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.failures[0].polarity, Polarity::Positive);
        assert_eq!(
            violations(&s, &cond(false, 5, &[], &[])),
            [Violation::TooFewSpans { min: 5, got: 4 }]
        );
        assert_eq!(
            violations(&s, &cond(false, 0, &["b"], &[])),
            [Violation::NoSpansFrom {
                node: "b".into(),
                overflow: 0
            }]
        );
        let local = cond(true, 0, &[], &[]);
        let v = violations(&s, &local);
        assert_eq!(
            v,
            [
                Violation::Remote {
                    spans: 3,
                    routes: vec![RouteSpans {
                        generator_node: Some("a".into()),
                        agent_node: Some("b".into()),
                        spans: 3
                    }]
                },
                Violation::Unattributed { spans: 1 }
            ]
        );
        // The report is the violations, in words.
        let r = evaluate(&s, &local);
        assert_eq!(r.failures, v.iter().map(Failure::from).collect::<Vec<_>>());
        assert!(r.failures.iter().all(|f| f.polarity == Polarity::Negative));
        assert_eq!(
            r.failures[0].message,
            "expected only local spans, got 3 remote (a -> b: 3)"
        );
        assert_eq!(
            violations(&s, &cond(false, 0, &[], &["a"])),
            [Violation::NotSilent {
                node: "a".into(),
                spans: 3,
                via: vec![(3, Some("b".into()))]
            }]
        );
        assert_eq!(
            evaluate(&s, &cond(false, 0, &[], &["a"])).failures[0].message,
            "expected no spans from generator node a, got 3 (3 via b)"
        );
    }

    /// Agent node conflicts (attribute vs. peer) fail every check, as a
    /// negative condition, naming the route; without them the same check passes.
    #[test]
    fn agent_node_conflicts_fail() {
        let mut s = stats(&[(Some("a"), Some("a"), 5)]);
        assert!(evaluate(&s, &cond(true, 1, &["a"], &[])).pass);
        s.agent_node_conflicts = 2;
        s.routes[0].agent_node_conflicts = 2;
        for c in [cond(true, 1, &["a"], &[]), cond(false, 0, &[], &[])] {
            let r = evaluate(&s, &c);
            assert!(!r.pass);
            assert_eq!(r.failures.len(), 1);
            assert_eq!(r.failures[0].polarity, Polarity::Negative);
            assert_eq!(
                violations(&s, &c),
                [Violation::AgentNodeConflicts {
                    spans: 2,
                    routes: vec![RouteSpans {
                        generator_node: Some("a".into()),
                        agent_node: Some("a".into()),
                        spans: 2
                    }]
                }]
            );
            assert_eq!(r.agent_node_conflicts, 2);
        }
    }

    /// `/stats` documents of before these fields still parse; new ones round-trip.
    #[test]
    fn stats_fields_only_added() {
        let mut doc = serde_json::to_value(stats(&[(Some("a"), Some("a"), 1)])).unwrap();
        assert!(doc.get("kubernetes").is_none(), "absent when off");
        let obj = doc.as_object_mut().unwrap();
        obj.remove("agent_node_conflicts");
        for r in obj["routes"].as_array_mut().unwrap() {
            let r = r.as_object_mut().unwrap();
            for k in [
                "attribution",
                "spans_by_attribution",
                "agent_node_conflicts",
            ] {
                r.remove(k);
            }
        }
        let old: SinkStats = serde_json::from_value(doc).unwrap();
        assert_eq!(old.routes[0].attribution, None);
        assert_eq!(old.agent_node_conflicts, 0);
    }

    /// With spans in overflow, a silent node cannot be proved silent: FAIL
    /// with that reason, never PASS; `expect_local` still judges the exact
    /// totals, which count overflowed spans too.
    #[test]
    fn overflow_never_proves_silence() {
        let mut s = stats(&[(Some("a"), Some("a"), 5)]);
        s.overflow_spans = 3;
        s.spans_total += 3;
        s.local_spans += 3;
        let r = evaluate(&s, &cond(true, 0, &[], &["b"]));
        assert!(!r.pass);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(r.failures[0].polarity, Polarity::Negative);
        assert_eq!(
            violations(&s, &cond(true, 0, &[], &["b"])),
            [Violation::CannotProveSilent {
                node: "b".into(),
                overflow: 3
            }]
        );
        assert_eq!(
            violations(&s, &cond(false, 0, &["b"], &[])),
            [Violation::NoSpansFrom {
                node: "b".into(),
                overflow: 3
            }]
        );
        // Only-local is judged on the totals, which include the overflow.
        assert!(evaluate(&s, &cond(true, 0, &["a"], &[])).pass);
        s.remote_spans += 1;
        s.spans_total += 1;
        s.overflow_spans += 1;
        assert!(!evaluate(&s, &cond(true, 0, &[], &[])).pass);
    }

    /// Node lists tolerate spaces and empty items.
    #[test]
    fn node_lists() {
        assert_eq!(parse_node_list(" a, b,,c "), vec!["a", "b", "c"]);
        assert!(parse_node_list("").is_empty());
    }
}
