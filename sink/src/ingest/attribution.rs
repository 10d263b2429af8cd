//! Attribution of one export request: which generator node, agent node and
//! generator each span belongs to. The result borrows from the request and is
//! aggregated locally by *origin* (generator node, agent node, generator id),
//! so the sink merges it into its shared state once per request and origin
//! instead of once per span.

use std::collections::HashMap;

use super::wire::{KeyValue, TraceRequest, get_str, get_u64};
use trace_proto::keys;

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

#[cfg(test)]
mod tests {
    use super::*;
    use trace_proto::otlp::{
        ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span, kv_int,
        kv_str,
    };

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
        let req = TraceRequest::from(&req);
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
        let req = TraceRequest::from(&req);
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
        let req = TraceRequest::from(&req);
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
        let req = TraceRequest::from(&req);
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
        let req = TraceRequest::from(&req);
        let s = attribute(&req, &AttributionKeys::default());
        assert_eq!(s.count(RouteKind::Unattributed), 1);
        let (origin, batch) = s.origins.iter().next().unwrap();
        assert_eq!((origin.generator_node, origin.generator_id), (None, None));
        assert!(batch.seqs.is_empty());
    }
}
