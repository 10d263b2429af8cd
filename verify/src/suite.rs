//! The suite table: the policies and events of the matrix, their names on the
//! command line and in the results, and the order a run takes them in.
//!
//! A step is one (policy, event) cell. Every policy runs its events in
//! [`Event::ALL`] order, because each event starts from the state the one
//! before left (the agent is removed from a node before it crash-loops, the
//! crash loop is what "recovered" recovers from).

use std::fmt;

use serde::{Deserialize, Serialize};

/// How the agent Service routes a client to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// `internalTrafficPolicy: Local` (the shipped default).
    Local,
    /// `trafficDistribution: PreferSameNode` with `internalTrafficPolicy: Cluster`.
    PreferSameNode,
    /// `internalTrafficPolicy: Cluster`: the negative control.
    Cluster,
}

impl Policy {
    /// Every policy, in the order a run takes them.
    pub const ALL: [Policy; 3] = [Policy::Local, Policy::PreferSameNode, Policy::Cluster];

    /// The name on the command line and in the results.
    pub fn key(self) -> &'static str {
        match self {
            Policy::Local => "local",
            Policy::PreferSameNode => "prefer-same-node",
            Policy::Cluster => "cluster",
        }
    }

    /// What the Service carries, in the Service's own words.
    pub fn describe(self) -> &'static str {
        match self {
            Policy::Local => "internalTrafficPolicy: Local",
            Policy::PreferSameNode => {
                "trafficDistribution: PreferSameNode, internalTrafficPolicy: Cluster"
            }
            Policy::Cluster => "internalTrafficPolicy: Cluster (negative control)",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// What happens to the agents during a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// Every agent is up and ready.
    AllUp,
    /// The agent is removed from one node (node label + the DaemonSet's node affinity).
    AgentRemoved,
    /// Every agent crash-loops on a configuration the collector refuses.
    CrashLoop,
    /// The working configuration is back; every agent is ready again.
    Recovered,
    /// One node's agent terminates with a long graceful shutdown (serving, not ready).
    Terminating,
    /// The agent DaemonSet rolls out a new template with `maxUnavailable: 1`.
    RollingMaxUnavailable,
    /// The agent DaemonSet rolls out a new template with `maxSurge: 1, maxUnavailable: 0`.
    RollingMaxSurge,
}

impl Event {
    /// Every event, in the order a run takes them.
    pub const ALL: [Event; 7] = [
        Event::AllUp,
        Event::AgentRemoved,
        Event::CrashLoop,
        Event::Recovered,
        Event::Terminating,
        Event::RollingMaxUnavailable,
        Event::RollingMaxSurge,
    ];

    /// The name on the command line and in the results.
    pub fn key(self) -> &'static str {
        match self {
            Event::AllUp => "all-up",
            Event::AgentRemoved => "agent-removed",
            Event::CrashLoop => "crash-loop",
            Event::Recovered => "recovered",
            Event::Terminating => "terminating",
            Event::RollingMaxUnavailable => "rolling-max-unavailable",
            Event::RollingMaxSurge => "rolling-max-surge",
        }
    }

    /// A short title for tables (at most 24 characters).
    pub fn title(self) -> &'static str {
        match self {
            Event::AllUp => "all agents up",
            Event::AgentRemoved => "agent removed from node",
            Event::CrashLoop => "crash loop (bad config)",
            Event::Recovered => "recovered",
            Event::Terminating => "local agent terminating",
            Event::RollingMaxUnavailable => "rollout maxUnavailable 1",
            Event::RollingMaxSurge => "rollout maxSurge 1",
        }
    }

    /// Whether the step measures an agent rollout (the longest silence of
    /// each node is measured by polling the sink during the rollout).
    pub fn is_rollout(self) -> bool {
        matches!(self, Event::RollingMaxUnavailable | Event::RollingMaxSurge)
    }

    /// Whether the step singles out one node (the "victim").
    pub fn has_victim(self) -> bool {
        matches!(self, Event::AgentRemoved | Event::Terminating)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A comma-separated list of keys, or `all`, in the table's order; an
/// unknown name is an error that lists the known ones.
fn parse_list<T: Copy + PartialEq + fmt::Display>(
    what: &str,
    all: &[T],
    s: &str,
) -> Result<Vec<T>, String> {
    let mut chosen = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "all" {
            return Ok(all.to_vec());
        }
        match all.iter().find(|p| p.to_string() == name) {
            Some(p) => chosen.push(*p),
            None => {
                let known: Vec<String> = all.iter().map(|p| p.to_string()).collect();
                return Err(format!(
                    "unknown {what} {name:?}; known: {} (or all)",
                    known.join(", ")
                ));
            }
        }
    }
    if chosen.is_empty() {
        return Err(format!("no {what} given"));
    }
    Ok(all.iter().copied().filter(|p| chosen.contains(p)).collect())
}

/// `--policy`: `local,prefer-same-node`, `all`, ...
pub fn parse_policies(s: &str) -> Result<Vec<Policy>, String> {
    parse_list("policy", &Policy::ALL, s)
}

/// `--events`: `all-up,rolling-max-surge`, `all`, ...
pub fn parse_events(s: &str) -> Result<Vec<Event>, String> {
    parse_list("event", &Event::ALL, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lists are taken in the table's order whatever order they were given
    /// in; unknown names are refused with the known ones listed.
    #[test]
    fn lists() {
        assert_eq!(
            parse_policies("cluster, local").unwrap(),
            vec![Policy::Local, Policy::Cluster]
        );
        assert_eq!(parse_events("all").unwrap(), Event::ALL.to_vec());
        let e = parse_events("all-up,rolling").unwrap_err();
        assert!(e.contains("unknown event \"rolling\""), "{e}");
        assert!(e.contains("rolling-max-surge"), "{e}");
        assert!(parse_policies(" , ").is_err());
    }

    /// Titles fit their table column.
    #[test]
    fn titles_fit() {
        for e in Event::ALL {
            assert!(e.title().len() <= 24, "{e}");
        }
    }
}
