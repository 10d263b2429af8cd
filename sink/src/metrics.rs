//! Prometheus metrics behind `GET /metrics` (prometheus-client, text exposition).
//!
//! Counters are monotonic since the process started, as Prometheus expects:
//! `POST /reset` zeroes `/stats`, not these. Route label pairs are capped at
//! `--max-series` for the life of the process; spans of further routes count
//! in `trace_sink_overflow_spans_total` only. This is the one route cap: the
//! accounting breaks a route down in `/stats` only if it got a counter here.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::outcome::{Outcome, Via};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    generator_node: String,
    agent_node: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: String,
    outcome: String,
}

/// The sink's Prometheus registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    spans: Family<RouteLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    overflow: Counter,
    conflicts: Counter,
    peer_spans: Family<PeerLabels, Counter>,
    refused: Family<ListenerLabels, Counter>,
    evicted: Family<ListenerLabels, Counter>,
    accepted: Family<ListenerLabels, Counter>,
    known_routes: Mutex<HashSet<(Option<String>, Option<String>)>>,
    max_series: usize,
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new(max_series: usize) -> Self {
        let mut registry = Registry::with_prefix("trace_sink");
        let spans = Family::<RouteLabels, Counter>::default();
        registry.register(
            "spans",
            "Spans received per route (generator node -> agent node; empty label = unknown)",
            spans.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "OTLP export requests by protocol and outcome (ok or the reason of the reject)",
            requests.clone(),
        );
        let overflow = Counter::default();
        registry.register(
            "overflow_spans",
            "Spans of routes beyond --max-series, not broken down by route",
            overflow.clone(),
        );
        let conflicts = Counter::default();
        registry.register(
            "agent_node_conflicts",
            "Spans whose agent-node attribute names another node than the Pod at the peer address (--k8s-attribution)",
            conflicts.clone(),
        );
        let peer_spans = Family::<PeerLabels, Counter>::default();
        registry.register(
            "peer_spans",
            "Spans by what their connection's peer address resolved to (--k8s-attribution): resolved, no_pod, api_unreachable, over_capacity",
            peer_spans.clone(),
        );
        let refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at once: their peer held --max-connections-per-peer, or the listener had --max-connections open and none could be evicted",
            refused.clone(),
        );
        let accepted = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_accepted",
            "Connections accepted from the kernel, before the sink admits, evicts for or refuses them",
            accepted.clone(),
        );
        let evicted = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_evicted",
            "Idle connections closed to admit a new one because the listener had --max-connections open",
            evicted.clone(),
        );
        Metrics {
            registry,
            refused,
            evicted,
            accepted,
            spans,
            requests,
            overflow,
            conflicts,
            peer_spans,
            known_routes: Mutex::new(HashSet::new()),
            max_series,
        }
    }

    /// The counter of a route, registered on first use; `None` once
    /// `--max-series` route label pairs exist (count those spans with
    /// [`Metrics::count_overflow`]). Callers keep the handle, so a known route
    /// costs one atomic add per request.
    /// `route` is the route's kind label (`local`, `remote`, `unattributed`).
    pub(crate) fn route_counter(
        &self,
        g: Option<&str>,
        a: Option<&str>,
        route: &'static str,
    ) -> Option<Counter> {
        let key = (g.map(str::to_owned), a.map(str::to_owned));
        let mut known = self.known_routes.lock().unwrap_or_else(|e| e.into_inner());
        if !known.contains(&key) {
            if known.len() >= self.max_series {
                return None;
            }
            known.insert(key);
        }
        Some(
            self.spans
                .get_or_create(&RouteLabels {
                    generator_node: g.unwrap_or_default().to_owned(),
                    agent_node: a.unwrap_or_default().to_owned(),
                    route: route.to_owned(),
                })
                .clone(),
        )
    }

    /// Counts spans that are not broken down by route.
    pub(crate) fn count_overflow(&self, n: u64) {
        self.overflow.inc_by(n);
    }

    /// Counts spans whose attribute and peer disagreed on the agent node.
    pub(crate) fn count_conflicts(&self, n: u64) {
        self.conflicts.inc_by(n);
    }

    /// Counts spans by the result of their peer lookup (a fixed set of labels).
    pub(crate) fn count_peer_spans(&self, result: &'static str, n: u64) {
        self.peer_spans
            .get_or_create(&PeerLabels {
                result: result.to_owned(),
            })
            .inc_by(n);
    }

    /// Counts a connection closed at once (peer share reached, or listener full).
    pub(crate) fn count_refused_connection(&self, listener: &'static str) {
        self.refused
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    /// Counts a connection taken from the kernel's queue.
    pub(crate) fn count_accepted_connection(&self, listener: &'static str) {
        self.accepted
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    /// Counts a connection closed to make room for a new one.
    pub(crate) fn count_evicted_connection(&self, listener: &'static str) {
        self.evicted
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    /// Counts one request.
    pub(crate) fn count_request(&self, via: Via, outcome: Outcome) {
        self.requests
            .get_or_create(&RequestLabels {
                protocol: via.as_str().to_owned(),
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
