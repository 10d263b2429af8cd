//! The HTTP API a test suite asserts with: `GET /stats`, `POST /reset`,
//! `GET /check`, `GET /metrics`, `GET /healthz`, `GET /readyz`; and `GET /`,
//! the route matrix page for people ([`crate::page`]).
//!
//! Answers that grow with the tables (`/stats` is about 5 MB with 10,000
//! series) cannot pile up for slow readers: at most
//! [`API_ANSWERS`] are built or being written at
//! once (a further request waits up to [`API_WAIT`]
//! or `--request-timeout` if shorter, so its silent connection is not taken
//! for idle, then gets 503 with `Retry-After`), each is sent in 64 KiB chunks copied
//! out of it, and one not written within `--api-write-timeout`, or whose
//! reader takes no chunk for [`API_STALL`], is dropped, its slot freed and
//! its connection closed ([`DeadlineBody`]). So N readers that never read
//! delay a good one by about N / 2 x [`API_STALL`], and hold no memory.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use trace_proto::check::{Conditions, evaluate, parse_node_list};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::OwnedSemaphorePermit;

#[cfg(doc)]
use crate::state::API_ANSWERS;
use crate::state::{API_WAIT, Shared};

/// Bytes of an answer handed to hyper at a time.
const CHUNK: usize = 64 * 1024;

/// A reader that takes no chunk of an answer for this long loses it.
pub const API_STALL: Duration = Duration::from_secs(2);

/// An answer's bytes with the slot it holds.
struct Pending {
    data: Bytes,
    sent: usize,
    last_pull: tokio::time::Instant,
    _slot: OwnedSemaphorePermit,
}

/// A response body sent in 64 KiB chunks, each a copy (so hyper holds no
/// reference to the whole), that gives up its data and slot when `timeout`
/// passes or no chunk was taken for [`API_STALL`], whether or not hyper is
/// still polling it: a reader that stops reading holds at most the chunks
/// already handed to hyper.
pub struct DeadlineBody {
    pending: Arc<Mutex<Option<Pending>>>,
    done: bool,
    timeout: Duration,
    timer: tokio::task::JoinHandle<()>,
}

impl DeadlineBody {
    fn new(data: Vec<u8>, slot: OwnedSemaphorePermit, timeout: Duration) -> Self {
        let start = tokio::time::Instant::now();
        let pending = Arc::new(Mutex::new(Some(Pending {
            data: data.into(),
            sent: 0,
            last_pull: start,
            _slot: slot,
        })));
        let expire = pending.clone();
        let timer = tokio::spawn(async move {
            let deadline = start + timeout;
            let mut check = (start + API_STALL).min(deadline);
            loop {
                tokio::time::sleep_until(check).await;
                let mut guard = expire.lock().unwrap_or_else(|e| e.into_inner());
                let Some(p) = guard.as_ref() else { return };
                let stall_end = p.last_pull + API_STALL;
                let now = tokio::time::Instant::now();
                if now >= deadline || now >= stall_end {
                    guard.take();
                    return;
                }
                check = stall_end.min(deadline);
            }
        });
        DeadlineBody {
            pending,
            done: false,
            timeout,
            timer,
        }
    }
}

impl Drop for DeadlineBody {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut guard = this.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = guard.as_mut() else {
            this.done = true;
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "answer not read within {:?} (--api-write-timeout)",
                    this.timeout
                ),
            ))));
        };
        let end = (p.sent + CHUNK).min(p.data.len());
        let chunk = Bytes::copy_from_slice(&p.data[p.sent..end]);
        p.sent = end;
        p.last_pull = tokio::time::Instant::now();
        if end == p.data.len() {
            guard.take();
            this.done = true;
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Waits for an API answer slot: at most [`API_WAIT`] or `--request-timeout`
/// if shorter (which is below `--idle-timeout`, so the waiting connection,
/// silent meanwhile, is not closed as idle).
async fn answer_slot(shared: &Shared) -> Option<OwnedSemaphorePermit> {
    let wait = API_WAIT.min(shared.config.request_timeout);
    tokio::time::timeout(wait, shared.api_slots.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

/// 503: no API answer slot freed in time.
fn slots_busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(serde_json::json!({
            "error": "every API answer slot is busy with slow readers; retry later"
        })),
    )
        .into_response()
}

/// Builds a large answer under one of the API answer slots and sends it as a
/// [`DeadlineBody`]; 503 if no slot frees within [`API_WAIT`].
async fn large_answer(
    shared: &Shared,
    status: StatusCode,
    content_type: &'static str,
    build: impl FnOnce() -> Vec<u8>,
) -> Response {
    let Some(slot) = answer_slot(shared).await else {
        return slots_busy();
    };
    let body = DeadlineBody::new(build(), slot, shared.config.transport.api_write_timeout);
    (
        status,
        [(header::CONTENT_TYPE, content_type)],
        axum::body::Body::new(body),
    )
        .into_response()
}

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
    let summary = summary.unwrap_or(false);
    large_answer(&shared, StatusCode::OK, "application/json", || {
        shared.ingest.stats_json(summary)
    })
    .await
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
    large_answer(&shared, StatusCode::OK, "application/json", || {
        shared.ingest.reset_json()
    })
    .await
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
    // The snapshot is as large as /stats while it is evaluated: take a slot.
    let Some(_slot) = answer_slot(&shared).await else {
        return slots_busy();
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
    large_answer(
        &shared,
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        || shared.metrics.encode().into_bytes(),
    )
    .await
}

/// `GET /`: the route matrix page. A few KB of static bytes, not an answer
/// that grows with the tables: it fits a socket's send buffer, so a reader that
/// does not read holds nothing, and it takes no answer slot. The data it shows
/// comes from `/stats` and `/check`, which do.
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                crate::page::content_security_policy(),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crate::page::HTML,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready while the receivers serve and, with `--k8s-attribution`, while the
/// Pod list is current (an informer-backed component is ready once its cache
/// is synced): spans that arrive otherwise cannot be attributed by peer.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if !shared.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    }
    if let Some(pods) = shared.ingest.pods() {
        let st = pods.status();
        if st.state != crate::k8s::ApiState::Synced {
            let why = st.last_error.map(|e| format!(": {e}")).unwrap_or_default();
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: Kubernetes API {}{why}\n", st.state.as_str()),
            )
                .into_response();
        }
    }
    "ready\n".into_response()
}

/// The API router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/stats", get(stats))
        .route("/reset", post(reset))
        .route("/check", get(check))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared)
}
