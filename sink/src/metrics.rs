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
    refused: Family<ListenerLabels, Counter>,
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
        let refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because the listener had --max-connections open",
            refused.clone(),
        );
        Metrics {
            registry,
            refused,
            spans,
            requests,
            overflow,
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

    /// Counts a connection closed because its listener was full.
    pub(crate) fn count_refused_connection(&self, listener: &'static str) {
        self.refused
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
