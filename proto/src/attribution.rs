//! Attribution of one export request: which generator node, agent node and
//! generator each span belongs to. The result borrows from the request and is
//! aggregated locally, so the sink merges it into its shared state once per
//! request instead of once per span.

use std::collections::HashMap;

use crate::keys;
use crate::otlp::{ExportTraceServiceRequest, KeyValue, get_str, get_u64};

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

/// How a span travelled.
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
}

/// (generator node, agent node); `None` when unknown.
pub type RouteKey<'a> = (Option<&'a str>, Option<&'a str>);

/// Spans of one generator within one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GeneratorBatch<'a> {
    /// Generator node of the last span seen for this generator.
    pub node: Option<&'a str>,
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
    /// Spans per route.
    pub routes: HashMap<RouteKey<'a>, u64>,
    /// Spans per agent node.
    pub agents: HashMap<Option<&'a str>, u64>,
    /// Spans per generator id.
    pub generators: HashMap<&'a str, GeneratorBatch<'a>>,
}

impl RequestSummary<'_> {
    /// Spans per kind of route.
    pub fn count(&self, kind: RouteKind) -> u64 {
        self.routes
            .iter()
            .filter(|((g, a), _)| RouteKind::of(*g, *a) == kind)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Attributes every span of `req`. Lookup order: resource attributes first,
/// span attributes as fallback.
pub fn attribute<'a>(
    req: &'a ExportTraceServiceRequest,
    keys: &AttributionKeys,
) -> RequestSummary<'a> {
    let mut out = RequestSummary::default();
    for rs in &req.resource_spans {
        let res: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
        let r_gen = get_str(res, &keys.generator_node);
        let r_agent = get_str(res, &keys.agent_node);
        let r_id = get_str(res, keys::GENERATOR_ID);
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let a = &span.attributes;
                let g_node = r_gen.or_else(|| get_str(a, &keys.generator_node));
                let a_node = r_agent.or_else(|| get_str(a, &keys.agent_node));
                out.spans += 1;
                *out.routes.entry((g_node, a_node)).or_default() += 1;
                *out.agents.entry(a_node).or_default() += 1;
                if let Some(id) = r_id.or_else(|| get_str(a, keys::GENERATOR_ID)) {
                    let g = out.generators.entry(id).or_default();
                    g.spans += 1;
                    if g_node.is_some() {
                        g.node = g_node;
                    }
                    if let Some(seq) = get_u64(a, keys::SEQUENCE) {
                        g.seqs.push(seq);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{Resource, ResourceSpans, ScopeSpans, Span, kv_int, kv_str};

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
        let s = attribute(&req, &AttributionKeys::default());
        assert_eq!(s.spans, 4);
        assert_eq!(s.count(RouteKind::Local), 2);
        assert_eq!(s.count(RouteKind::Remote), 1);
        assert_eq!(s.count(RouteKind::Unattributed), 1);
        assert_eq!(s.agents[&None], 1);
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
        let s = attribute(&req, &AttributionKeys::default());
        assert_eq!(s.routes[&(Some("gen-span"), Some("agent-res"))], 1);
        assert_eq!(s.generators["g1"].seqs, vec![7]);
        assert_eq!(s.generators["g1"].node, Some("gen-span"));
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
        assert_eq!(attribute(&req, &keys).count(RouteKind::Local), 1);
    }
}
