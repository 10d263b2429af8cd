//! The HTTP API a test suite asserts with: `GET /stats`, `POST /reset`,
//! `GET /check`, `GET /metrics`, `GET /healthz`, `GET /readyz`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use trace_proto::check::{Conditions, evaluate, parse_node_list};

use crate::state::Shared;

/// `GET /stats[?summary=true]`: the whole document, or (`summary=true`) the
/// totals without the per-series tables, for pollers that need no more. An
/// unknown parameter or value, or one given twice, answers 400 (as `/check`).
async fn stats(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let mut summary = None;
    for (k, v) in &q {
        let value = match (k.as_str(), v.as_str()) {
            ("summary", "true") => true,
            ("summary", "false") => false,
            ("summary", other) => {
                return bad_request(format!("summary={other:?}: use true or false"));
            }
            (other, _) => {
                return bad_request(format!("unknown parameter {other:?}: use summary"));
            }
        };
        if summary.replace(value).is_some() {
            return bad_request("parameter \"summary\" given more than once".into());
        }
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        shared.ingest.stats_json(summary.unwrap_or(false)),
    )
        .into_response()
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = shared.config.api_token.as_deref() else {
        return true;
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t)
    else {
        return false;
    };
    // Compare in constant time: the answer must not leak how much of the token matched.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn reset(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({
                "error": "POST /reset needs the header Authorization: Bearer <token> (the sink was started with --api-token)"
            })),
        )
            .into_response();
    }
    Json(shared.ingest.reset()).into_response()
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// Parses the query of `/check` into conditions. A parameter given twice is an
/// error: silently keeping one of two contradicting values could pass a check
/// that should fail.
pub fn parse_check_query(q: &[(String, String)]) -> Result<Conditions, QueryError> {
    let mut c = Conditions::default();
    let mut seen = HashSet::new();
    for (k, v) in q {
        if !seen.insert(k.as_str()) {
            return Err(QueryError::Repeated(k.clone()));
        }
        match k.as_str() {
            "expect" => match v.as_str() {
                "local" => c.expect_local = true,
                "" | "any" => {}
                other => return Err(QueryError::Expect(other.to_owned())),
            },
            "min_spans" => c.min_spans = v.parse().map_err(|_| QueryError::MinSpans(v.clone()))?,
            "from_nodes" => c.from_nodes = parse_node_list(v),
            "silent_nodes" => c.silent_nodes = parse_node_list(v),
            other => return Err(QueryError::Unknown(other.to_owned())),
        }
    }
    Ok(c)
}

/// A `/check` query that cannot be evaluated (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A parameter given twice.
    #[error("parameter {0:?} given more than once")]
    Repeated(String),
    /// `expect` other than `local`.
    #[error("unknown expect={0:?}: the only value is local")]
    Expect(String),
    /// `min_spans` not a number.
    #[error("min_spans={0:?} is not a non-negative integer")]
    MinSpans(String),
    /// Any other parameter.
    #[error("unknown parameter {0:?}: use expect, min_spans, from_nodes, silent_nodes")]
    Unknown(String),
}

async fn check(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let cond = match parse_check_query(&q) {
        Ok(c) => c,
        Err(e) => return bad_request(e.to_string()),
    };
    let report = evaluate(&shared.ingest.snapshot(), &cond);
    let status = if report.pass {
        StatusCode::OK
    } else {
        StatusCode::PRECONDITION_FAILED
    };
    (status, Json(report)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::Relaxed) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// The API router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/stats", get(stats))
        .route("/reset", post(reset))
        .route("/check", get(check))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared)
}
