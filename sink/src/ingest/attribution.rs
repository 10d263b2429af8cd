//! Attribution of one export request: which generator node, agent node and
//! generator each span belongs to. The result borrows from the request and is
//! aggregated locally by *origin* (generator node, agent node, generator id),
//! so the sink merges it into its shared state once per request and origin
//! instead of once per span.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::wire::{KeyValue, TraceRequest, get_str, get_u64};
use crate::k8s::{PodRef, PodResolver, Resolution, Unresolved};
use trace_proto::keys;
use trace_proto::stats::Attribution;

/// Longest attribute value taken as a node name or generator id (Kubernetes node
/// names are at most 253 bytes). Longer values count as unknown, so a client
/// cannot make the sink keep arbitrarily large keys.
pub const MAX_KEY_VALUE_LEN: usize = 256;

/// Which attribute keys name the generator node and the agent node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributionKeys {
    /// Key of the generator node (default [`keys::GENERATOR_NODE`]).
    pub generator_node: String,
    /// Key of the agent node (default [`keys::AGENT_NODE`]).
    pub agent_node: String,
}

impl Default for AttributionKeys {
    fn default() -> Self {
        AttributionKeys {
            generator_node: keys::GENERATOR_NODE.to_owned(),
            agent_node: keys::AGENT_NODE.to_owned(),
        }
    }
}

/// How a span travelled (part of the contract: `/stats` counts by it).
pub use trace_proto::stats::RouteKind;

/// Where a span came from and how it travelled; `None` when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Origin<'a> {
    /// Node of the generator.
    pub generator_node: Option<&'a str>,
    /// Node of the agent that forwarded it.
    pub agent_node: Option<&'a str>,
    /// Generator id.
    pub generator_id: Option<&'a str>,
}

impl Origin<'_> {
    /// The kind of route.
    pub fn kind(&self) -> RouteKind {
        RouteKind::of(self.generator_node, self.agent_node)
    }
}

/// Spans of one origin within one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Spans, with or without a sequence number.
    pub spans: u64,
    /// Sequence numbers in arrival order.
    pub seqs: Vec<u64>,
}

/// Everything one request contributes to the sink's accounting.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestSummary<'a> {
    /// Spans in the request.
    pub spans: u64,
    /// Spans per origin.
    pub origins: HashMap<Origin<'a>, Batch>,
}

impl RequestSummary<'_> {
    /// Spans per kind of route.
    pub fn count(&self, kind: RouteKind) -> u64 {
        self.origins
            .iter()
            .filter(|(o, _)| o.kind() == kind)
            .map(|(_, b)| b.spans)
            .sum()
    }
}

fn key_value<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    get_str(attrs, key).filter(|v| v.len() <= MAX_KEY_VALUE_LEN)
}

/// Attributes every span of `req`. Lookup order: resource attributes first,
/// span attributes as fallback.
pub fn attribute<'a>(req: &'a TraceRequest, keys: &AttributionKeys) -> RequestSummary<'a> {
    let mut out = RequestSummary::default();
    for rs in &req.resource_spans {
        let res: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
        let resource_origin = Origin {
            generator_node: key_value(res, &keys.generator_node),
            agent_node: key_value(res, &keys.agent_node),
            generator_id: key_value(res, keys::GENERATOR_ID),
        };
        let complete = resource_origin.generator_node.is_some()
            && resource_origin.agent_node.is_some()
            && resource_origin.generator_id.is_some();
        let spans = rs.scope_spans.iter().flat_map(|ss| &ss.spans);
        if complete {
            // The usual case (trace-gen behind an agent): one origin for the whole
            // resource, looked up once; per span only the sequence number is read.
            let batch = out.origins.entry(resource_origin).or_default();
            let mut n = 0;
            for span in spans {
                n += 1;
                if let Some(seq) = get_u64(&span.attributes, keys::SEQUENCE) {
                    batch.seqs.push(seq);
                }
            }
            batch.spans += n;
            out.spans += n;
            continue;
        }
        for span in spans {
            let a = &span.attributes;
            let origin = Origin {
                generator_node: resource_origin
                    .generator_node
                    .or_else(|| key_value(a, &keys.generator_node)),
                agent_node: resource_origin
                    .agent_node
                    .or_else(|| key_value(a, &keys.agent_node)),
                generator_id: resource_origin
                    .generator_id
                    .or_else(|| key_value(a, keys::GENERATOR_ID)),
            };
            out.spans += 1;
            let batch = out.origins.entry(origin).or_default();
            batch.spans += 1;
            if origin.generator_id.is_some()
                && let Some(seq) = get_u64(a, keys::SEQUENCE)
            {
                batch.seqs.push(seq);
            }
        }
    }
    out
}

/// What the connection's peer address says about the agent node
/// (`--k8s-attribution`): the agent's Pod, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerLookup {
    /// Peer attribution is off.
    Off,
    /// The Pod at the peer address, scheduled on a node.
    Pod(PodRef),
    /// No usable answer (never a guess).
    Unresolved(Unresolved),
}

impl PeerLookup {
    /// Looks `peer` up with `pods` (`None`: peer attribution is off).
    pub fn of(pods: Option<&PodResolver>, peer: Option<SocketAddr>) -> Self {
        let Some(pods) = pods else {
            return PeerLookup::Off;
        };
        let Some(peer) = peer else {
            return PeerLookup::Unresolved(Unresolved::NoPod);
        };
        match pods.resolve(peer.ip()) {
            Resolution::Pod(p) if p.node.is_some() => PeerLookup::Pod(p),
            // A Pod with an IP but no node cannot run; nothing to attribute to.
            Resolution::Pod(_) => PeerLookup::Unresolved(Unresolved::NoPod),
            Resolution::Unknown(u) => PeerLookup::Unresolved(u),
        }
    }

    /// The agent's node, if resolved.
    pub fn node(&self) -> Option<&str> {
        match self {
            PeerLookup::Pod(p) => p.node.as_deref(),
            _ => None,
        }
    }

    /// `resolved` or why not (the keys of `kubernetes.peer_spans`); `None` when off.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            PeerLookup::Off => None,
            PeerLookup::Pod(_) => Some("resolved"),
            PeerLookup::Unresolved(u) => Some(u.as_str()),
        }
    }
}

/// The agent node of spans, from their attribute and their peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentNode<'a> {
    /// The node, `None` if neither source knows it.
    pub node: Option<&'a str>,
    /// Where it came from, `None` with the node.
    pub source: Option<Attribution>,
    /// Both sources gave a node and they differ. The peer's node is used: it
    /// is what the sink saw (the agent's Pod opened the connection), while
    /// the attribute is whatever the agent was configured to stamp.
    pub conflict: bool,
}

/// Combines the agent-node attribute of spans with the node of their peer's Pod.
pub fn agent_node<'a>(attribute: Option<&'a str>, peer: Option<&'a str>) -> AgentNode<'a> {
    let (node, source, conflict) = match (attribute, peer) {
        (Some(a), Some(p)) if a == p => (Some(p), Some(Attribution::Both), false),
        (Some(_), Some(p)) => (Some(p), Some(Attribution::Peer), true),
        (Some(a), None) => (Some(a), Some(Attribution::Attribute), false),
        (None, Some(p)) => (Some(p), Some(Attribution::Peer), false),
        (None, None) => (None, None, false),
    };
    AgentNode {
        node,
        source,
        conflict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attribute only, peer only, both agreeing, both disagreeing (the peer
    /// wins and the conflict is flagged), neither.
    #[test]
    fn agent_node_sources() {
        let an = |a, p| {
            let r = agent_node(a, p);
            (r.node, r.source, r.conflict)
        };
        assert_eq!(
            an(Some("n1"), None),
            (Some("n1"), Some(Attribution::Attribute), false)
        );
        assert_eq!(
            an(None, Some("n2")),
            (Some("n2"), Some(Attribution::Peer), false)
        );
        assert_eq!(
            an(Some("n2"), Some("n2")),
            (Some("n2"), Some(Attribution::Both), false)
        );
        assert_eq!(
            an(Some("n1"), Some("n2")),
            (Some("n2"), Some(Attribution::Peer), true)
        );
        assert_eq!(an(None, None), (None, None, false));
    }

    /// Peers resolve only through a resolver that is synced; an unknown
    /// address and a missing peer are unresolved, with their reason.
    #[test]
    fn peer_lookup() {
        use crate::k8s::{ApiState, PodView};
        let addr = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert_eq!(PeerLookup::of(None, addr("10.0.0.5:1")), PeerLookup::Off);
        assert_eq!(PeerLookup::Off.label(), None);
        let r = PodResolver::new(10);
        r.index().apply(PodView {
            uid: "u".into(),
            namespace: "ns".into(),
            name: "agent".into(),
            node: Some("node-1".into()),
            ips: vec!["10.0.0.5".parse().unwrap()],
            terminal: false,
            terminating: false,
            created: None,
        });
        let l = PeerLookup::of(Some(&r), addr("10.0.0.5:1"));
        assert_eq!(l.label(), Some("api_unreachable"));
        assert_eq!(l.node(), None);
        r.set_state(ApiState::Synced, None);
        let l = PeerLookup::of(Some(&r), addr("10.0.0.5:1"));
        assert_eq!((l.label(), l.node()), (Some("resolved"), Some("node-1")));
        let l = PeerLookup::of(Some(&r), addr("[::ffff:10.0.0.5]:1"));
        assert_eq!(l.node(), Some("node-1"));
        let l = PeerLookup::of(Some(&r), addr("10.0.0.6:1"));
        assert_eq!((l.label(), l.node()), (Some("no_pod"), None));
        assert_eq!(PeerLookup::of(Some(&r), None).label(), Some("no_pod"));
    }
    use trace_proto::otlp::{
        ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span, kv_int,
        kv_str,
    };

    /// A full request as the sink reads it: its OTLP/JSON through the lean types.
    fn lean(full: &ExportTraceServiceRequest) -> TraceRequest {
        serde_json::from_slice(&serde_json::to_vec(full).unwrap()).unwrap()
    }

    fn rs(res: Vec<KeyValue>, spans: Vec<Vec<KeyValue>>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: res,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: spans
                    .into_iter()
                    .map(|attributes| Span {
                        attributes,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Local, remote and unattributed spans are told apart.
    #[test]
    fn classifies_routes() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                rs(
                    vec![
                        kv_str(keys::GENERATOR_NODE, "a"),
                        kv_str(keys::AGENT_NODE, "a"),
                    ],
                    vec![vec![], vec![]],
                ),
                rs(
                    vec![
                        kv_str(keys::GENERATOR_NODE, "a"),
                        kv_str(keys::AGENT_NODE, "b"),
                    ],
                    vec![vec![]],
                ),
                rs(vec![kv_str(keys::GENERATOR_NODE, "a")], vec![vec![]]),
            ],
        };
        let req = lean(&req);
        let s = attribute(&req, &AttributionKeys::default());
        assert_eq!(s.spans, 4);
        assert_eq!(s.count(RouteKind::Local), 2);
        assert_eq!(s.count(RouteKind::Remote), 1);
        assert_eq!(s.count(RouteKind::Unattributed), 1);
        assert_eq!(s.origins.len(), 3);
    }

    /// Span attributes are the fallback; resource attributes win.
    #[test]
    fn resource_first_span_fallback() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![rs(
                vec![kv_str(keys::AGENT_NODE, "agent-res")],
                vec![vec![
                    kv_str(keys::GENERATOR_NODE, "gen-span"),
                    kv_str(keys::AGENT_NODE, "agent-span"),
                    kv_str(keys::GENERATOR_ID, "g1"),
                    kv_int(keys::SEQUENCE, 7),
                ]],
            )],
        };
        let req = lean(&req);
        let s = attribute(&req, &AttributionKeys::default());
        let origin = Origin {
            generator_node: Some("gen-span"),
            agent_node: Some("agent-res"),
            generator_id: Some("g1"),
        };
        assert_eq!(s.origins[&origin].seqs, vec![7]);
    }

    /// Custom keys are honoured.
    #[test]
    fn custom_keys() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![rs(
                vec![kv_str("host.name", "h"), kv_str("collector.node", "h")],
                vec![vec![]],
            )],
        };
        let keys = AttributionKeys {
            generator_node: "host.name".into(),
            agent_node: "collector.node".into(),
        };
        let req = lean(&req);
        assert_eq!(attribute(&req, &keys).count(RouteKind::Local), 1);
    }

    /// Two resources of the same origin in one request add up, once each.
    #[test]
    fn same_origin_twice() {
        let res = || {
            vec![
                kv_str(keys::GENERATOR_NODE, "a"),
                kv_str(keys::AGENT_NODE, "a"),
                kv_str(keys::GENERATOR_ID, "g"),
            ]
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                rs(
                    res(),
                    vec![
                        vec![kv_int(keys::SEQUENCE, 1)],
                        vec![kv_int(keys::SEQUENCE, 2)],
                    ],
                ),
                rs(res(), vec![vec![kv_int(keys::SEQUENCE, 3)]]),
            ],
        };
        let req = lean(&req);
        let s = attribute(&req, &AttributionKeys::default());
        assert_eq!(s.spans, 3);
        assert_eq!(s.origins.len(), 1);
        let b = s.origins.values().next().unwrap();
        assert_eq!((b.spans, b.seqs.clone()), (3, vec![1, 2, 3]));
    }

    /// Overlong node names and ids count as unknown.
    #[test]
    fn overlong_values_are_unknown() {
        let long = "x".repeat(MAX_KEY_VALUE_LEN + 1);
        let req = ExportTraceServiceRequest {
            resource_spans: vec![rs(
                vec![
                    kv_str(keys::GENERATOR_NODE, long.clone()),
                    kv_str(keys::AGENT_NODE, "a"),
                    kv_str(keys::GENERATOR_ID, long),
                ],
                vec![vec![kv_int(keys::SEQUENCE, 1)]],
            )],
        };
        let req = lean(&req);
        let s = attribute(&req, &AttributionKeys::default());
        assert_eq!(s.count(RouteKind::Unattributed), 1);
        let (origin, batch) = s.origins.iter().next().unwrap();
        assert_eq!((origin.generator_node, origin.generator_id), (None, None));
        assert!(batch.seqs.is_empty());
    }
}
