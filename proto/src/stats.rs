//! The versioned JSON documents: trace-sink's `/stats` ([`SinkStats`]) and
//! trace-gen's `/stats` and `--summary-json` ([`GeneratorReport`]). A Rust test
//! suite deserializes them with these types. Adding a field is compatible;
//! renaming or removing one changes the schema version.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::outcome::{Outcome, Via};

/// Schema version of [`SinkStats`].
pub const SINK_STATS_SCHEMA: &str = "trace-sink/stats/v1";

/// Schema version of [`GeneratorReport`].
pub const GENERATOR_STATS_SCHEMA: &str = "trace-gen/stats/v1";

/// RFC 3339 UTC timestamp with milliseconds, as used in every document.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// trace-sink's `GET /stats` (and the body of `POST /reset`), and its
/// `?summary=true` form: the same document with `summary` true, written
/// without the per-series tables (`routes`, `agents`, `generators`), which
/// read back as empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStats {
    /// Always [`SINK_STATS_SCHEMA`].
    pub schema: String,
    /// Start of the sink or time of the last reset (RFC 3339).
    pub since: String,
    /// Every span received since `since`.
    pub spans_total: u64,
    /// Spans whose generator node and agent node are known and equal.
    pub local_spans: u64,
    /// Spans whose generator node and agent node are known and differ.
    pub remote_spans: u64,
    /// Spans where either node is unknown.
    pub unattributed_spans: u64,
    /// Spans counted in the totals but not in `routes` / `agents` because one of
    /// those tables reached `--max-series`: `spans_total` = Σ `routes` + this.
    pub overflow_spans: u64,
    /// Spans of generators not tracked in `generators` because that table
    /// reached `--max-series`.
    #[serde(default)]
    pub overflow_generator_spans: u64,
    /// Spans per (generator node, agent node).
    #[serde(default)]
    pub routes: Vec<RouteStats>,
    /// Spans per agent node, with the peer addresses that delivered them.
    #[serde(default)]
    pub agents: Vec<AgentStats>,
    /// Per generator id: sequence accounting.
    #[serde(default)]
    pub generators: Vec<GeneratorStats>,
    /// Export requests by protocol (`grpc`, `http_protobuf`, `http_json`, `http`)
    /// and outcome (`ok`, `bad_request`, `too_large`, `unsupported_media_type`, ...).
    pub requests: BTreeMap<Via, BTreeMap<Outcome, u64>>,
    /// Spans whose agent-node attribute names another node than the Pod at
    /// the connection's peer address runs on (only with `--k8s-attribution`;
    /// such spans count on the peer's route). `/check` fails while it is not 0.
    #[serde(default)]
    pub agent_node_conflicts: u64,
    /// Kubernetes attribution (`--k8s-attribution`): the API's state and what
    /// the peers resolved to. Absent when it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesStats>,
    /// `true` in the `?summary=true` document, whose tables are left out (so
    /// that "omitted" is never read as "none"); absent in the full one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub summary: bool,
}

/// Where a span's agent node came from, and the value of
/// `routes[].attribution` (where a route's spans came from more than one
/// source, [`Attribution::Mixed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    /// The span's agent-node attribute (`--agent-node-key`) only.
    Attribute,
    /// The node of the Pod at the connection's peer address only
    /// (`--k8s-attribution`), or the peer's where the attribute disagreed.
    Peer,
    /// Both, and they agreed.
    Both,
    /// A route's spans came from more than one of the sources above.
    Mixed,
    /// A label this version does not know (read from a newer sink's `/stats`).
    Unknown,
}

impl Attribution {
    /// The sources of one span, in the order of [`Attribution::index`].
    pub const ALL: [Attribution; 3] =
        [Attribution::Attribute, Attribution::Peer, Attribution::Both];

    /// `attribute`, `peer`, `both`, `mixed` (or `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            Attribution::Attribute => "attribute",
            Attribution::Peer => "peer",
            Attribution::Both => "both",
            Attribution::Mixed => "mixed",
            Attribution::Unknown => "unknown",
        }
    }

    /// The variant of a label; [`Attribution::Unknown`] for any other.
    pub fn from_label(s: &str) -> Self {
        Attribution::ALL
            .into_iter()
            .chain([Attribution::Mixed])
            .find(|a| a.as_str() == s)
            .unwrap_or(Attribution::Unknown)
    }

    /// Position of a source in [`Attribution::ALL`]; `None` for
    /// [`Attribution::Mixed`] and [`Attribution::Unknown`], which no single
    /// span has.
    pub fn index(self) -> Option<usize> {
        Attribution::ALL.iter().position(|&a| a == self)
    }
}

crate::label::label_traits!(Attribution, "an attribution label");

/// Kubernetes attribution in `/stats` (`--k8s-attribution`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesStats {
    /// The Pod watch: `connecting` (no complete list yet), `synced`, or
    /// `unreachable` (the last list or watch failed; retrying). Peers resolve
    /// only while `synced`.
    pub api: String,
    /// Since when `api` has had its value (RFC 3339).
    pub api_since: String,
    /// The last error of the list or watch, `null` while synced.
    pub last_error: Option<String>,
    /// Pods tracked (Pods that hold an IP).
    pub pods: u64,
    /// `--k8s-max-pods`.
    pub max_pods: u64,
    /// More Pods than `max_pods` hold IPs: no peer resolves until they fit.
    pub over_capacity: bool,
    /// Spans since `since` by what their connection's peer address resolved
    /// to: `resolved` (a Pod on a node), `no_pod` (no Pod holds the address),
    /// `api_unreachable` (the Pod list was not current), `over_capacity`.
    pub peer_spans: BTreeMap<String, u64>,
}

/// How a span travelled: what `local_spans`, `remote_spans` and
/// `unattributed_spans` count, and the `route` label of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Both nodes known and equal.
    Local,
    /// Both nodes known and different.
    Remote,
    /// Either node unknown.
    Unattributed,
}

impl RouteKind {
    /// Classifies a (generator node, agent node) pair.
    pub fn of(generator_node: Option<&str>, agent_node: Option<&str>) -> Self {
        match (generator_node, agent_node) {
            (Some(g), Some(a)) if g == a => RouteKind::Local,
            (Some(_), Some(_)) => RouteKind::Remote,
            _ => RouteKind::Unattributed,
        }
    }

    /// `local`, `remote` or `unattributed`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Local => "local",
            RouteKind::Remote => "remote",
            RouteKind::Unattributed => "unattributed",
        }
    }
}

impl RouteStats {
    /// How spans on this route travelled.
    pub fn kind(&self) -> RouteKind {
        RouteKind::of(self.generator_node.as_deref(), self.agent_node.as_deref())
    }
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStats {
    /// Generator node, `null` if unknown.
    pub generator_node: Option<String>,
    /// Agent node, `null` if unknown (no agent stamped the span and, with
    /// `--k8s-attribution`, no Pod explained the peer).
    pub agent_node: Option<String>,
    /// Spans on this route.
    pub spans: u64,
    /// First span on this route (RFC 3339).
    pub first_seen: String,
    /// Last span on this route (RFC 3339).
    pub last_seen: String,
    /// Where the agent node of its spans came from: `attribute`, `peer` or
    /// `both`, `mixed` if its spans had more than one of these
    /// ([`Attribution`]); `null` when the agent node is unknown.
    #[serde(default)]
    pub attribution: Option<Attribution>,
    /// Its spans by where their agent node came from (sources with spans only).
    #[serde(default)]
    pub spans_by_attribution: BTreeMap<Attribution, u64>,
    /// Its spans whose agent-node attribute named another node than the
    /// peer's Pod (counted here, under the peer's node, and in `peer`).
    #[serde(default)]
    pub agent_node_conflicts: u64,
}

/// One agent node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStats {
    /// Agent node, `null` for spans no agent stamped.
    pub node: Option<String>,
    /// Spans forwarded by this agent.
    pub spans: u64,
    /// Peer socket addresses (`ip:port`) of the connections that carried them
    /// (at most [`MAX_PEERS`] are listed).
    pub peers: Vec<String>,
}

/// Peer addresses kept per agent and per generator.
pub const MAX_PEERS: usize = 64;

/// One generator (one trace-gen process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratorStats {
    /// Generator id ([`crate::keys::GENERATOR_ID`]).
    pub id: String,
    /// Its node, `null` if unknown.
    pub node: Option<String>,
    /// Spans received, duplicates included.
    pub spans: u64,
    /// Spans whose sequence number had already arrived.
    pub duplicates: u64,
    /// Sequence numbers between `min_seq` and `max_seq` that never arrived.
    pub missing: u64,
    /// Spans whose sequence number arrived below the frozen part of the gap
    /// table (`--max-gaps` / 1024 per generator): whether each was late or a
    /// duplicate cannot be told, so they fill no gap (`missing` stays
    /// conservative) and count as no duplicate.
    #[serde(default)]
    pub untracked: u64,
    /// Smallest sequence number since the last reset.
    pub min_seq: Option<u64>,
    /// Largest sequence number since the last reset.
    pub max_seq: Option<u64>,
    /// Distinct peer connections (`ip:port`) that delivered its spans, up to [`MAX_PEERS`].
    pub connections: u64,
    /// Last span (RFC 3339).
    pub last_seen: String,
}

/// trace-gen's `GET /stats` and `--summary-json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorReport {
    /// Always [`GENERATOR_STATS_SCHEMA`].
    pub schema: String,
    /// Node the generator runs on.
    pub node: String,
    /// Generator id, new per process start.
    pub generator_id: String,
    /// Endpoint it sends to.
    pub endpoint: String,
    /// `grpc`, `http/protobuf` or `http/json`.
    pub protocol: String,
    /// Spans given a sequence number and sent (accepted + failed + in flight).
    pub spans_sent: u64,
    /// Spans in requests the endpoint accepted.
    pub spans_accepted: u64,
    /// Spans in requests that failed.
    pub spans_failed: u64,
    /// Failed spans by reason.
    pub spans_failed_by_reason: BTreeMap<String, u64>,
    /// Requests accepted.
    pub requests_ok: u64,
    /// Failed requests (attempts, retries included) by reason.
    pub requests_failed_by_reason: BTreeMap<String, u64>,
    /// The last failure.
    pub last_error: Option<LastError>,
    /// TCP connections opened to the endpoint.
    pub connections_opened: u64,
    /// First sequence number sent.
    pub first_seq: Option<u64>,
    /// Last sequence number sent.
    pub last_seq: Option<u64>,
    /// Seconds since the start.
    pub elapsed_seconds: f64,
    /// Achieved rate: spans sent per second since the start.
    pub rate: f64,
}

/// A failure with its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// Reason, as in `requests_failed_by_reason`.
    pub reason: String,
    /// Error message.
    pub message: String,
    /// When (RFC 3339).
    pub time: String,
}
