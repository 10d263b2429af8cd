//! The promise table: what each policy promises in each event, written down
//! once, and the judging of a step's data against it. Everything not in the
//! table is measured and reported, never judged (`--max-lost N` is the one
//! way to turn loss into a failure).
//!
//! The promises follow the Kubernetes semantics (kube-proxy
//! `pkg/proxy/topology.go`, the EndpointSlice controller's hints; see
//! docs/verify.md):
//! - **Local** (`internalTrafficPolicy: Local`): a client is only ever sent to
//!   an agent on its own node (ready ones, else serving-terminating ones);
//!   with none, new connections are dropped. So: never a remote span, and
//!   nothing at all from a node without a ready or serving-terminating agent.
//! - **PreferSameNode** (`trafficDistribution: PreferSameNode`,
//!   `internalTrafficPolicy: Cluster`): the local ready agent while there is
//!   one, any node's ready agent otherwise (terminating counts as not ready).
//!   So: local while the local agent is ready, and no span lost while another
//!   node's agent could take it.
//! - **Cluster**: any ready agent per new connection. The negative control:
//!   some spans go remote, so the locality check must fail.
//!
//! Every decision on the sink's data is made by [`trace_proto::check::evaluate`],
//! the same conditions `trace-sink check` uses.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use trace_proto::check::{Conditions, evaluate};
use trace_proto::stats::{RouteKind, SinkStats};

use crate::measure::NodeMeasurement;
use crate::suite::{Event, Policy};

/// One promise a policy makes in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Promise {
    /// No span reaches another node's agent (and none is unattributed).
    NoRemote,
    /// Every generator node delivers.
    AllDeliver,
    /// Every generator node but the victim delivers.
    OthersDeliver,
    /// The nodes other than the victim deliver only through their own agent.
    OthersLocal,
    /// The victim (no local agent) delivers nothing; its generator reports failures.
    VictimSilent,
    /// No node delivers anything (no agent is ready anywhere); every generator reports failures.
    AllSilent,
    /// The victim loses no span (another node's agent could take them).
    VictimNoLoss,
    /// Some spans go to another node's agent: the locality check fails (negative control).
    SomeRemote,
}

impl Promise {
    /// The name in the results.
    pub fn key(self) -> &'static str {
        match self {
            Promise::NoRemote => "no-remote",
            Promise::AllDeliver => "all-deliver",
            Promise::OthersDeliver => "others-deliver",
            Promise::OthersLocal => "others-local",
            Promise::VictimSilent => "victim-silent",
            Promise::AllSilent => "all-silent",
            Promise::VictimNoLoss => "victim-no-loss",
            Promise::SomeRemote => "some-remote",
        }
    }

    /// The promise in words.
    pub fn describe(self) -> &'static str {
        match self {
            Promise::NoRemote => "no span reaches another node's agent",
            Promise::AllDeliver => "every node delivers",
            Promise::OthersDeliver => "every other node delivers",
            Promise::OthersLocal => "the other nodes stay on their own agent",
            Promise::VictimSilent => {
                "the node without a local agent delivers nothing (its exports fail)"
            }
            Promise::AllSilent => "nothing is delivered (every generator's exports fail)",
            Promise::VictimNoLoss => "the node without a ready local agent loses no span",
            Promise::SomeRemote => "some spans go remote: the locality check fails",
        }
    }
}

/// The promise table: what `policy` promises in `event`. An empty list means
/// the cell is measured only.
pub fn promises(policy: Policy, event: Event) -> &'static [Promise] {
    use Event::*;
    use Promise::*;
    match (policy, event) {
        (Policy::Local, AllUp | Recovered) => &[NoRemote, AllDeliver],
        (Policy::Local, AgentRemoved) => &[NoRemote, OthersDeliver, VictimSilent],
        (Policy::Local, CrashLoop) => &[NoRemote, AllSilent],
        // kube-proxy falls back to the local serving-terminating endpoint.
        (Policy::Local, Terminating) => &[NoRemote, AllDeliver],
        (Policy::Local, RollingMaxUnavailable | RollingMaxSurge) => &[NoRemote],
        (Policy::PreferSameNode, AllUp | Recovered) => &[NoRemote, AllDeliver],
        (Policy::PreferSameNode, AgentRemoved | Terminating) => {
            &[OthersLocal, AllDeliver, VictimNoLoss]
        }
        // no agent is ready anywhere: no remote agent could take the spans
        (Policy::PreferSameNode, CrashLoop) => &[],
        // Measured only. A rollout replaces each node's agent while the
        // window runs: until kube-proxy has the endpoint change, new
        // connections still go to the stopping agent, and what is lost then
        // depends on the agent's shutdown (a preStop delay) and the client's
        // retries, not on the policy (one lab run in iptables mode lost a
        // batch of 10 this way, transport errors through all retries).
        (Policy::PreferSameNode, RollingMaxUnavailable | RollingMaxSurge) => &[],
        (Policy::Cluster, AllUp) => &[SomeRemote, AllDeliver],
        (Policy::Cluster, Recovered) => &[AllDeliver],
        (Policy::Cluster, _) => &[],
    }
}

/// The outcome of one judged item of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Judgement {
    /// The promise's key, or `precondition:...`, `max-lost`, `attribution`.
    pub check: String,
    /// What was required, in words.
    pub requires: String,
    /// Whether it held.
    pub pass: bool,
    /// What was seen (the failures of `check::evaluate`, counts).
    pub detail: String,
}

/// What judging a step needs besides the promise table.
#[derive(Debug, Clone)]
pub struct StepData<'a> {
    /// The sink's `/stats` at the end of the step (reset at its start).
    pub stats: &'a SinkStats,
    /// Per generator node.
    pub nodes: &'a [NodeMeasurement],
    /// The generator nodes of the run.
    pub gen_nodes: &'a [String],
    /// The node the event singled out.
    pub victim: Option<&'a str>,
}

/// The sink's data restricted to the routes of `nodes`, totals recomputed;
/// `None` when the route table overflowed (the routes do not add up then).
fn restrict(stats: &SinkStats, nodes: &BTreeSet<&str>) -> Option<SinkStats> {
    if stats.overflow_spans > 0 {
        return None;
    }
    let mut s = stats.clone();
    s.routes.retain(|r| {
        r.generator_node
            .as_deref()
            .is_some_and(|g| nodes.contains(g))
    });
    s.spans_total = s.routes.iter().map(|r| r.spans).sum();
    let sum = |k: RouteKind| {
        s.routes
            .iter()
            .filter(|r| r.kind() == k)
            .map(|r| r.spans)
            .sum()
    };
    s.local_spans = sum(RouteKind::Local);
    s.remote_spans = sum(RouteKind::Remote);
    s.unattributed_spans = sum(RouteKind::Unattributed);
    s.agent_node_conflicts = s.routes.iter().map(|r| r.agent_node_conflicts).sum();
    Some(s)
}

fn failures(stats: &SinkStats, cond: &Conditions) -> (bool, String) {
    let r = evaluate(stats, cond);
    let detail = if r.pass {
        format!(
            "{} spans: {} local, {} remote, {} unattributed",
            r.spans_total, r.local_spans, r.remote_spans, r.unattributed_spans
        )
    } else {
        r.failures
            .iter()
            .map(|f| f.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    (r.pass, detail)
}

/// Judges one promise on a step's data.
pub fn judge_promise(promise: Promise, d: &StepData<'_>) -> Judgement {
    let cond =
        |expect_local: bool, min_spans: u64, from: Vec<String>, silent: Vec<String>| Conditions {
            expect_local,
            min_spans,
            from_nodes: from,
            silent_nodes: silent,
        };
    let victim = d.victim.map(str::to_owned);
    let others: Vec<String> = d
        .gen_nodes
        .iter()
        .filter(|n| Some(n.as_str()) != d.victim)
        .cloned()
        .collect();
    let node = |n: &str| d.nodes.iter().find(|m| m.node == n);
    // The generators of `nodes` all reported failures in the step: an export
    // that gave up, or a failed attempt (an export gives up only after its
    // retries, which can outlast a short window).
    let all_failed = |nodes: &[String]| -> Result<(), String> {
        let bad: Vec<String> = nodes
            .iter()
            .filter_map(
                |n| match node(n).map(|m| (m.generator_failed, m.failed_attempts)) {
                    Some((Some(f), a)) if f > 0 || a.unwrap_or(0) > 0 => None,
                    Some((Some(_), _)) => Some(format!("{n}: no failed export or attempt")),
                    _ => Some(format!("{n}: its generator's report could not be read")),
                },
            )
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join(", "))
        }
    };
    let no_loss = |nodes: &[String]| -> (bool, String) {
        let mut bad = Vec::new();
        let mut total = 0;
        for n in nodes {
            match node(n) {
                Some(m) if m.generator_failed.is_some() => {
                    total += m.lost;
                    if m.lost > 0 {
                        bad.push(format!(
                            "{n}: {} lost ({} missing at the sink, {} failed exports)",
                            m.lost,
                            m.missing,
                            m.generator_failed.unwrap_or(0)
                        ));
                    }
                }
                _ => bad.push(format!(
                    "{n}: loss unknown (its generator's report could not be read)"
                )),
            }
        }
        if bad.is_empty() {
            (true, format!("0 lost of {} nodes ({total})", nodes.len()))
        } else {
            (false, bad.join("; "))
        }
    };
    let (pass, detail) = match promise {
        Promise::NoRemote => failures(d.stats, &cond(true, 0, vec![], vec![])),
        Promise::AllDeliver => failures(d.stats, &cond(false, 1, d.gen_nodes.to_vec(), vec![])),
        Promise::OthersDeliver => failures(d.stats, &cond(false, 0, others.clone(), vec![])),
        Promise::OthersLocal => {
            let set: BTreeSet<&str> = others.iter().map(String::as_str).collect();
            match restrict(d.stats, &set) {
                Some(s) => failures(&s, &cond(true, 0, vec![], vec![])),
                None => (
                    false,
                    "the sink's route table overflowed: routes cannot be told apart per node"
                        .to_owned(),
                ),
            }
        }
        Promise::VictimSilent => match &victim {
            None => (false, "no node was singled out".to_owned()),
            Some(v) => {
                let (ok, detail) = failures(d.stats, &cond(false, 0, vec![], vec![v.clone()]));
                match all_failed(std::slice::from_ref(v)) {
                    Ok(()) => (ok, detail),
                    Err(e) => (false, format!("{detail}; {e}")),
                }
            }
        },
        Promise::AllSilent => {
            let (ok, detail) = failures(d.stats, &cond(false, 0, vec![], d.gen_nodes.to_vec()));
            let ok = ok && d.stats.spans_total == 0;
            match all_failed(d.gen_nodes) {
                Ok(()) => (ok, detail),
                Err(e) => (false, format!("{detail}; {e}")),
            }
        }
        Promise::VictimNoLoss => match &victim {
            None => (false, "no node was singled out".to_owned()),
            Some(v) => no_loss(std::slice::from_ref(v)),
        },
        Promise::SomeRemote => {
            if d.gen_nodes.len() < 2 {
                (false, "needs two nodes with a generator".to_owned())
            } else {
                let r = evaluate(d.stats, &cond(true, 0, vec![], vec![]));
                if !r.pass && r.remote_spans > 0 {
                    (
                        true,
                        format!(
                            "the locality check failed, as it must: {} of {} spans remote",
                            r.remote_spans, r.spans_total
                        ),
                    )
                } else {
                    (
                        false,
                        format!(
                            "the locality check did not fail: {} of {} spans remote",
                            r.remote_spans, r.spans_total
                        ),
                    )
                }
            }
        }
    };
    Judgement {
        check: promise.key().to_owned(),
        requires: promise.describe().to_owned(),
        pass,
        detail,
    }
}

/// Judges every promise of the cell, then `--max-lost` (when given).
pub fn judge(
    policy: Policy,
    event: Event,
    d: &StepData<'_>,
    max_lost: Option<u64>,
) -> Vec<Judgement> {
    let mut out: Vec<Judgement> = promises(policy, event)
        .iter()
        .map(|p| judge_promise(*p, d))
        .collect();
    if let Some(max) = max_lost {
        let lost: u64 = d.nodes.iter().map(|n| n.lost).sum();
        out.push(Judgement {
            check: "max-lost".into(),
            requires: format!("at most {max} spans lost (--max-lost)"),
            pass: lost <= max,
            detail: format!("{lost} lost"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::tests::stats;
    use crate::measure::{NodeMeasurement, measure_nodes};

    const NODES: [&str; 3] = ["a", "b", "c"];
    const VICTIM: &str = "a";

    /// The data of one step: routes (generator, agent, spans), and per node
    /// (sink missing, generator failed).
    #[derive(Clone)]
    struct Data {
        routes: Vec<(&'static str, Option<&'static str>, u64)>,
        loss: Vec<(&'static str, u64, u64)>,
    }

    impl Data {
        fn all_local() -> Self {
            Data {
                routes: NODES.iter().map(|n| (*n, Some(*n), 50)).collect(),
                loss: NODES.iter().map(|n| (*n, 0, 0)).collect(),
            }
        }

        fn judge(&self, policy: Policy, event: Event) -> Vec<Judgement> {
            let s = stats(&self.routes, &[]);
            let gen_nodes: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
            let mut nodes: Vec<NodeMeasurement> =
                measure_nodes(&s, &gen_nodes, &Default::default(), &Default::default());
            for m in &mut nodes {
                let &(_, missing, failed) = self.loss.iter().find(|l| l.0 == m.node).unwrap();
                m.missing = missing;
                m.generator_failed = Some(failed);
                m.lost = missing.max(failed);
            }
            let d = StepData {
                stats: &s,
                nodes: &nodes,
                gen_nodes: &gen_nodes,
                victim: event.has_victim().then_some(VICTIM),
            };
            judge(policy, event, &d, None)
        }
    }

    /// What the Kubernetes semantics make each cell look like: the data a
    /// correct dataplane produces.
    fn as_promised(policy: Policy, event: Event) -> Data {
        let mut d = Data::all_local();
        match (policy, event) {
            (Policy::Local, Event::AgentRemoved) => {
                d.routes.retain(|r| r.0 != VICTIM);
                d.loss[0] = (VICTIM, 0, 40);
            }
            (_, Event::CrashLoop) => {
                d.routes.clear();
                d.loss = NODES.iter().map(|n| (*n, 0, 40)).collect();
            }
            (Policy::Local, Event::RollingMaxUnavailable | Event::RollingMaxSurge) => {
                // loss during a rollout is measured, not judged, under Local
                d.loss[1] = ("b", 3, 12);
            }
            (Policy::PreferSameNode, Event::AgentRemoved | Event::Terminating) => {
                d.routes[0] = (VICTIM, Some("b"), 50);
            }
            (Policy::PreferSameNode, Event::RollingMaxUnavailable | Event::RollingMaxSurge) => {
                d.routes.push(("b", Some("c"), 7));
            }
            (Policy::Cluster, _) => {
                d.routes.push(("a", Some("c"), 20));
                d.routes.push(("b", Some("a"), 20));
                if event != Event::AllUp && event != Event::Recovered {
                    d.loss[2] = ("c", 9, 30); // measured only
                }
            }
            _ => {}
        }
        d
    }

    /// Changes the data so that it breaks `p` (and only what `p` is about).
    fn breaking(p: Promise, mut d: Data) -> Data {
        match p {
            Promise::NoRemote => d.routes.push(("b", Some("c"), 1)),
            Promise::AllDeliver => d.routes.retain(|r| r.0 != "c"),
            Promise::OthersDeliver => d.routes.retain(|r| r.0 != "b"),
            Promise::OthersLocal => d.routes.push(("c", Some("b"), 1)),
            Promise::VictimSilent => d.routes.push((VICTIM, Some(VICTIM), 1)),
            Promise::AllSilent => d.routes.push(("c", Some("c"), 1)),
            Promise::VictimNoLoss => d.loss[0] = (VICTIM, 2, 0),
            Promise::SomeRemote => {
                d.routes = NODES.iter().map(|n| (*n, Some(*n), 50)).collect();
            }
        }
        d
    }

    /// Every cell passes on the data its policy promises.
    #[test]
    fn every_cell_passes_as_promised() {
        for policy in Policy::ALL {
            for event in Event::ALL {
                let j = as_promised(policy, event).judge(policy, event);
                assert_eq!(j.len(), promises(policy, event).len());
                for x in &j {
                    assert!(x.pass, "{policy} {event}: {} failed: {}", x.check, x.detail);
                }
            }
        }
    }

    /// For every cell and every promise in it, data that breaks the promise
    /// fails that promise's judgement.
    #[test]
    fn every_promise_can_be_broken() {
        let mut broken = 0;
        for policy in Policy::ALL {
            for event in Event::ALL {
                for &p in promises(policy, event) {
                    let d = breaking(p, as_promised(policy, event));
                    let j = d.judge(policy, event);
                    let x = j.iter().find(|x| x.check == p.key()).unwrap();
                    assert!(
                        !x.pass,
                        "{policy} {event}: {} passed on data that breaks it",
                        p.key()
                    );
                    broken += 1;
                }
            }
        }
        assert!(broken >= 20, "{broken}");
    }

    /// The table says what the semantics say: Local never allows a
    /// remote span in any event; PreferSameNode judges loss wherever another
    /// agent could take the spans; Cluster's all-up cell is the negative
    /// control; the crash loop under the other policies is measured only.
    #[test]
    fn the_table() {
        for e in Event::ALL {
            assert!(
                promises(Policy::Local, e).contains(&Promise::NoRemote),
                "{e}"
            );
            assert!(
                !promises(Policy::Cluster, e).contains(&Promise::NoRemote),
                "{e}"
            );
        }
        for e in [Event::AgentRemoved, Event::Terminating] {
            assert!(promises(Policy::PreferSameNode, e).contains(&Promise::VictimNoLoss));
            assert!(!promises(Policy::PreferSameNode, e).contains(&Promise::NoRemote));
        }
        for e in [Event::RollingMaxUnavailable, Event::RollingMaxSurge] {
            assert!(
                promises(Policy::PreferSameNode, e).is_empty(),
                "measured only"
            );
        }
        assert!(promises(Policy::Cluster, Event::AllUp).contains(&Promise::SomeRemote));
        assert!(promises(Policy::PreferSameNode, Event::CrashLoop).is_empty());
    }

    /// The Local data under PreferSameNode's agent-removed cell fails (the
    /// victim lost its spans), and PreferSameNode's data under Local fails
    /// (the victim went remote): swapping the policies fails the right cells.
    #[test]
    fn swapped_policies_fail() {
        let local = as_promised(Policy::Local, Event::AgentRemoved);
        let j = local.judge(Policy::PreferSameNode, Event::AgentRemoved);
        let failed: Vec<&str> = j
            .iter()
            .filter(|x| !x.pass)
            .map(|x| x.check.as_str())
            .collect();
        assert_eq!(failed, ["all-deliver", "victim-no-loss"]);
        let psn = as_promised(Policy::PreferSameNode, Event::Terminating);
        let j = psn.judge(Policy::Local, Event::Terminating);
        let failed: Vec<&str> = j
            .iter()
            .filter(|x| !x.pass)
            .map(|x| x.check.as_str())
            .collect();
        assert_eq!(failed, ["no-remote"]);
    }

    /// "Its exports fail" is seen from an export that gave up or from a
    /// failed attempt (retries outlast a short window); a node with neither
    /// could have sent nothing at all, and the judgement fails.
    #[test]
    fn victim_silent_needs_a_failure_seen() {
        let s = stats(&as_promised(Policy::Local, Event::AgentRemoved).routes, &[]);
        let gen_nodes: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
        let mut nodes = measure_nodes(&s, &gen_nodes, &Default::default(), &Default::default());
        for m in &mut nodes {
            m.generator_failed = Some(0);
            m.failed_attempts = Some(0);
        }
        let silent = |nodes: &[NodeMeasurement]| {
            let d = StepData {
                stats: &s,
                nodes,
                gen_nodes: &gen_nodes,
                victim: Some(VICTIM),
            };
            judge_promise(Promise::VictimSilent, &d)
        };
        let j = silent(&nodes);
        assert!(!j.pass);
        assert!(
            j.detail.contains("a: no failed export or attempt"),
            "{}",
            j.detail
        );
        nodes[0].failed_attempts = Some(3);
        assert!(
            silent(&nodes).pass,
            "failed attempts, no export gave up yet"
        );
        nodes[0].failed_attempts = None;
        nodes[0].generator_failed = None;
        let j = silent(&nodes);
        assert!(!j.pass);
        assert!(j.detail.contains("could not be read"), "{}", j.detail);
    }

    /// A Service left at (or changed to) internalTrafficPolicy Cluster where
    /// Local is promised: what Cluster's dataplane delivers fails every Local
    /// cell on `no-remote`; but the crash loop, where no agent anywhere
    /// takes a span and both policies look the same.
    #[test]
    fn cluster_data_fails_every_local_cell() {
        for event in Event::ALL.into_iter().filter(|&e| e != Event::CrashLoop) {
            let j = as_promised(Policy::Cluster, event).judge(Policy::Local, event);
            let x = j.iter().find(|x| x.check == "no-remote").unwrap();
            assert!(!x.pass, "{event}: no-remote passed on Cluster's data");
        }
    }

    /// Loss is judged only with --max-lost, against the sum over nodes.
    #[test]
    fn max_lost() {
        let d = as_promised(Policy::Local, Event::RollingMaxSurge);
        let s = stats(&d.routes, &[]);
        let gen_nodes: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
        let mut nodes = measure_nodes(&s, &gen_nodes, &Default::default(), &Default::default());
        nodes[1].lost = 12;
        let data = StepData {
            stats: &s,
            nodes: &nodes,
            gen_nodes: &gen_nodes,
            victim: None,
        };
        let j = judge(Policy::Local, Event::RollingMaxSurge, &data, None);
        assert!(j.iter().all(|x| x.pass));
        let j = judge(Policy::Local, Event::RollingMaxSurge, &data, Some(12));
        assert!(j.iter().all(|x| x.pass));
        let j = judge(Policy::Local, Event::RollingMaxSurge, &data, Some(11));
        let m = j.iter().find(|x| x.check == "max-lost").unwrap();
        assert!(!m.pass);
        assert_eq!(m.detail, "12 lost");
    }
}
