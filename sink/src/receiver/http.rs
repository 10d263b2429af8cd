//! OTLP/HTTP `POST /v1/traces`: `application/x-protobuf` and `application/json`
//! (OTLP/JSON: hex ids, camelCase, int64 as strings), optionally gzip.
//!
//! Answers in the request's content type, as the OTLP specification asks:
//! 200 with an `ExportTraceServiceResponse`; 400 (undecodable), 413 (over
//! `--max-request-bytes`, checked on the wire and again while inflating, so a
//! gzip bomb is cut off, not inflated), 415 (content type or encoding) and 405
//! (method) and 503 with `Retry-After` (the byte budget `--max-buffered-bytes`
//! was full) with a `google.rpc.Status` carrying a one-line message.
//!
//! Fairness: the body is read without a decode slot, charged to the byte
//! budget as it arrives ([`crate::budget`]); the slot is taken once the whole
//! body is in memory, for inflating and decoding.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::Message;
use trace_proto::otlp::ExportTraceServiceResponse;
use trace_proto::protocol::Protocol;

use super::GunzipError;
use crate::budget::{BodyError, Budget, BudgetBody, Held};
use crate::ingest::{Rejected, Traces};
use crate::outcome::{Outcome, Via};
use crate::state::Shared;

/// Path of the traces endpoint.
pub const TRACES_PATH: &str = "/v1/traces";

/// `google.rpc.Status`, the error body of OTLP/HTTP (details are not sent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// A `google.rpc.Code`.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// One line saying what was wrong.
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let mime = ct.split(';').next()?.trim().to_ascii_lowercase();
        match mime.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }

    fn protocol(self) -> Protocol {
        match self {
            Encoding::Protobuf => Protocol::HttpProtobuf,
            Encoding::Json => Protocol::HttpJson,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// An error answer in the request's encoding (or plain text if unknown).
fn error(
    enc: Option<Encoding>,
    status: StatusCode,
    grpc_code: tonic::Code,
    message: String,
) -> Response {
    match enc {
        Some(Encoding::Protobuf) => {
            let body = RpcStatus {
                code: grpc_code as i32,
                message,
            }
            .encode_to_vec();
            (
                status,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                body,
            )
                .into_response()
        }
        Some(Encoding::Json) => {
            let body =
                serde_json::json!({ "code": grpc_code as i32, "message": message }).to_string();
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        None => (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            message + "\n",
        )
            .into_response(),
    }
}

/// Counts a rejected request and answers it in the request's encoding.
fn reject(shared: &Shared, protocol: Protocol, enc: Encoding, r: Rejected) -> Response {
    let (status, code) = match r.outcome {
        Outcome::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::ResourceExhausted,
        ),
        Outcome::UnsupportedMediaType => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
        ),
        Outcome::Timeout => (StatusCode::REQUEST_TIMEOUT, tonic::Code::DeadlineExceeded),
        Outcome::Busy => (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable),
        _ => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
    };
    shared.ingest.reject(protocol, r.outcome);
    let mut resp = error(Some(enc), status, code, r.message);
    if r.outcome == Outcome::Busy {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    resp
}

fn rejected(outcome: Outcome, message: String) -> Rejected {
    Rejected { outcome, message }
}

/// Reads the whole body within `timeout` and `max` bytes, charging it to
/// `budget` as it arrives.
async fn read_body(
    body: Body,
    max: usize,
    timeout: Duration,
    budget: Arc<Budget>,
    held: Held,
) -> Result<Bytes, Rejected> {
    let body = BudgetBody::new(body, budget, held);
    let read = tokio::time::timeout(timeout, Limited::new(body, max).collect());
    let Ok(collected) = read.await else {
        return Err(rejected(
            Outcome::Timeout,
            format!("request body not received within {timeout:?}"),
        ));
    };
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(rejected(
            Outcome::TooLarge,
            format!("request body exceeds the limit of {max} bytes"),
        )),
        Err(e) => match e.downcast::<BodyError>() {
            Ok(b) => match *b {
                BodyError::Busy(busy) => Err(rejected(Outcome::Busy, busy.to_string())),
                BodyError::Inner(e) => Err(rejected(
                    Outcome::BadRequest,
                    format!("could not read the request body: {e}"),
                )),
            },
            Err(e) => Err(rejected(
                Outcome::BadRequest,
                format!("could not read the request body: {e}"),
            )),
        },
    }
}

/// Undoes `Content-Encoding`, bounded by `max` bytes of output.
fn inflate(raw: Bytes, headers: &HeaderMap, max: usize) -> Result<Bytes, Rejected> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") => match super::gunzip(&raw, max) {
            Ok(out) => Ok(out.into()),
            Err(GunzipError::Invalid(e)) => Err(rejected(
                Outcome::BadRequest,
                format!("invalid gzip body: {e}"),
            )),
            Err(GunzipError::TooLarge) => Err(rejected(
                Outcome::TooLarge,
                format!("decompressed request body exceeds the limit of {max} bytes"),
            )),
        },
        Some(other) => Err(rejected(
            Outcome::UnsupportedMediaType,
            format!("unsupported Content-Encoding {other:?}: use gzip or none"),
        )),
    }
}

async fn export(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(enc) = Encoding::from_headers(&headers) else {
        shared
            .ingest
            .reject(Via::Http, Outcome::UnsupportedMediaType);
        let got = headers
            .get(header::CONTENT_TYPE)
            .map_or("none".into(), |v| {
                format!("{:?}", v.to_str().unwrap_or("?"))
            });
        return error(
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
            format!(
                "unsupported Content-Type {got}: use application/x-protobuf or application/json"
            ),
        );
    };
    let protocol = enc.protocol();
    // The body is read without a slot, charged to the byte budget as it
    // arrives; the charge is held until the answer.
    let held = Held::default();
    let max = shared.config.max_request_bytes;
    let deadline = tokio::time::Instant::now() + shared.config.request_timeout;
    let raw = match read_body(
        body,
        max,
        shared.config.request_timeout,
        shared.budget.clone(),
        held.clone(),
    )
    .await
    {
        Ok(b) => b,
        Err(r) => return reject(&shared, protocol, enc, r),
    };
    // Bounded decoding: at most --max-concurrent-requests bodies (both
    // receivers) are inflated and decoded at once; the others wait, whole.
    // The semaphore is never closed, so acquiring cannot fail; the wait
    // counts towards --request-timeout, as on the gRPC side.
    let Ok(_slot) = tokio::time::timeout_at(deadline, shared.request_slots.acquire()).await else {
        let timeout = shared.config.request_timeout;
        let r = rejected(
            Outcome::Timeout,
            format!("request not counted within {timeout:?} (the sink is busy decoding)"),
        );
        return reject(&shared, protocol, enc, r);
    };
    let bytes = match inflate(raw, &headers, max) {
        Ok(b) => b,
        Err(r) => return reject(&shared, protocol, enc, r),
    };
    if let Err(r) = shared.ingest.export::<Traces>(&bytes, protocol, Some(peer)) {
        return reject(&shared, protocol, enc, r);
    }
    drop(held);
    let body = match enc {
        Encoding::Protobuf => ExportTraceServiceResponse::default().encode_to_vec(),
        Encoding::Json => b"{}".to_vec(),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, enc.content_type())],
        body,
    )
        .into_response()
}

async fn method_not_allowed(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.ingest.reject(Via::Http, Outcome::MethodNotAllowed);
    let mut resp = error(
        Encoding::from_headers(&headers),
        StatusCode::METHOD_NOT_ALLOWED,
        tonic::Code::Unimplemented,
        format!("only POST is allowed on {TRACES_PATH}"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    resp
}

async fn not_found(State(shared): State<Arc<Shared>>) -> Response {
    shared.ingest.reject(Via::Http, Outcome::NotFound);
    error(
        None,
        StatusCode::NOT_FOUND,
        tonic::Code::NotFound,
        format!("not found: this receiver serves POST {TRACES_PATH} only"),
    )
}

/// The OTLP/HTTP router; serve it with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(TRACES_PATH, post(export).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(shared)
}
