//! `GET /stats` (the [`GeneratorReport`] JSON), `GET /metrics` (Prometheus) and
//! `GET /healthz` on `--stats-listen`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use trace_proto::stats::GeneratorReport;

use crate::counters::Counters;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// Prometheus text for one report. A fresh registry per scrape: the values are
/// the live counters, so nothing is kept twice.
pub fn metrics_text(r: &GeneratorReport) -> String {
    let mut reg = Registry::with_prefix("trace_gen");
    let counter = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
    reg.register(
        "spans_sent",
        "Spans given a sequence number and sent",
        counter(r.spans_sent),
    );
    reg.register(
        "spans_accepted",
        "Spans the endpoint accepted",
        counter(r.spans_accepted),
    );
    let failed = Family::<ReasonLabels, Counter>::default();
    for (k, v) in &r.spans_failed_by_reason {
        failed
            .get_or_create(&ReasonLabels { reason: k.clone() })
            .inc_by(*v);
    }
    reg.register(
        "spans_failed",
        "Spans whose export failed, by reason",
        failed,
    );
    reg.register(
        "requests_ok",
        "Export requests accepted",
        counter(r.requests_ok),
    );
    let req_failed = Family::<ReasonLabels, Counter>::default();
    for (k, v) in &r.requests_failed_by_reason {
        req_failed
            .get_or_create(&ReasonLabels { reason: k.clone() })
            .inc_by(*v);
    }
    reg.register(
        "requests_failed",
        "Export attempts that failed, by reason",
        req_failed,
    );
    reg.register(
        "connections_opened",
        "TCP connections opened to the endpoint",
        counter(r.connections_opened),
    );
    let last = Gauge::<i64>::default();
    last.set(
        r.last_seq
            .map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX)),
    );
    reg.register("last_sequence", "Last sequence number sent", last);
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

/// The router.
pub fn router(counters: Arc<Counters>) -> Router {
    Router::new()
        .route(
            "/stats",
            get(|State(c): State<Arc<Counters>>| async move { axum::Json(c.report()) }),
        )
        .route(
            "/metrics",
            get(|State(c): State<Arc<Counters>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics_text(&c.report()),
                )
                    .into_response()
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(counters)
}

/// Serves the stats API on `listener` until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    counters: Arc<Counters>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // TCP_NODELAY on every accepted connection (no 40 ms Nagle + delayed-ACK stalls).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(counters))
        .with_graceful_shutdown(stop)
        .await
}
