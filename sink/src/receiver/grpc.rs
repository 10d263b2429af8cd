//! OTLP/gRPC `TraceService/Export`, gzip accepted.
//!
//! tonic serves the HTTP/2 connection (and `--request-timeout`); the unary
//! call itself is read here rather than by `tonic::server::Grpc`, for two
//! reasons tonic's reader cannot serve:
//! - gzip: tonic inflates only the first member of a gzip message and drops the
//!   rest unseen; here every member is inflated ([`super::gunzip`], as grpc-go
//!   and the HTTP receiver do), bounded by `--max-request-bytes`;
//! - cardinality: tonic answers a unary call that carries two messages with the
//!   first and drains the second unseen; here it is refused as grpc-go refuses
//!   it, `INTERNAL` "cardinality violation", and nothing of it is counted.
//!
//! The message bytes go to the one ingest path
//! ([`crate::ingest::Ingest::export`]) without a copy unless inflated; its
//! rejections become `INVALID_ARGUMENT` or `RESOURCE_EXHAUSTED`. The
//! `map_rejection` layer counts every rejected request, including tonic's own.
//!
//! Fairness: a request is charged to the byte budget (`--max-buffered-bytes`,
//! [`crate::budget`]) as its frames arrive, and takes a decode slot
//! (`--max-concurrent-requests`) only once its message is whole, so a client
//! trickling a body or opening body-less streams holds no slot. Connections
//! come from [`crate::net::Acceptor`] (cap, idle timeout, `TCP_NODELAY`) and
//! HTTP/2 streams are capped per connection (`--max-streams`).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::{Code, Status};
use trace_proto::otlp::ExportTraceServiceResponse;
use trace_proto::protocol::Protocol;

use super::GunzipError;
use crate::budget::{BodyError, BudgetBody, Held};
use crate::ingest::{Rejected, Traces};
use crate::net::{self, Acceptor};
use crate::outcome::Outcome;
use crate::state::Shared;

/// gRPC service name of OTLP traces.
pub const SERVICE_NAME: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A gRPC message's prefix: the compressed flag and the length (big-endian u32).
const HEADER_LEN: usize = 5;

/// The gRPC status of a request ingest refused.
fn status(r: Rejected) -> Status {
    match r.outcome {
        Outcome::TooLarge => Status::resource_exhausted(r.message),
        _ => Status::invalid_argument(r.message),
    }
}

/// Whether the request's messages are gzip (`grpc-encoding`); another encoding
/// is `UNIMPLEMENTED`, with the ones accepted, as tonic and grpc-go answer it.
fn request_gzip(headers: &http::HeaderMap) -> Result<bool, Status> {
    match headers.get("grpc-encoding").map(|v| v.as_bytes()) {
        None | Some(b"identity") => Ok(false),
        Some(b"gzip") => Ok(true),
        Some(other) => {
            let mut s = Status::unimplemented(format!(
                "Content is compressed with `{}` which isn't supported",
                String::from_utf8_lossy(other)
            ));
            s.metadata_mut().insert(
                "grpc-accept-encoding",
                tonic::metadata::MetadataValue::from_static("gzip"),
            );
            Err(s)
        }
    }
}

/// The length of the message whose prefix starts `body` (at least
/// [`HEADER_LEN`] bytes), after the checks grpc-go makes on a prefix: the
/// compressed flag is 0 or 1, and 1 only with an encoding; the length is within
/// `max`.
fn message_len(body: &[u8], gzip: bool, max: usize) -> Result<usize, Status> {
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    match body[0] {
        0 => {}
        1 if gzip => {}
        1 => {
            return Err(Status::invalid_argument(
                "invalid gRPC message: compressed flag set without a grpc-encoding",
            ));
        }
        f => {
            return Err(Status::invalid_argument(format!(
                "invalid gRPC message: compressed flag {f} (valid flags are 0 and 1)"
            )));
        }
    }
    if len > max {
        return Err(Status::resource_exhausted(format!(
            "request message of {len} bytes exceeds the limit of {max} bytes"
        )));
    }
    Ok(len)
}

/// The one request message of a unary call, from the call's whole body
/// (`gzip`: the request's `grpc-encoding` is gzip). Exactly one message, as
/// grpc-go requires of a unary call: none or more than one is `INTERNAL`
/// "cardinality violation" (its words). A prefix or message cut off, a bad
/// compressed flag or bad gzip is `INVALID_ARGUMENT`; a message over `max`
/// bytes, before or after inflating, `RESOURCE_EXHAUSTED`. Public for the
/// fuzz targets.
pub fn unary_message(body: Bytes, gzip: bool, max: usize) -> Result<Bytes, Status> {
    if body.is_empty() {
        return Err(Status::internal(
            "cardinality violation: received no request message from non-client-streaming RPC",
        ));
    }
    if body.len() < HEADER_LEN {
        return Err(Status::invalid_argument(
            "invalid gRPC message: the length prefix is cut off",
        ));
    }
    let len = message_len(&body, gzip, max)?;
    let end = HEADER_LEN + len;
    if body.len() < end {
        return Err(Status::invalid_argument(format!(
            "invalid gRPC message: cut off after {} of {len} bytes",
            body.len() - HEADER_LEN
        )));
    }
    if body.len() > end {
        return Err(Status::internal(
            "cardinality violation: received multiple request messages for non-client-streaming RPC",
        ));
    }
    let message = body.slice(HEADER_LEN..end);
    if body[0] == 0 {
        return Ok(message);
    }
    match super::gunzip(&message, max) {
        Ok(inflated) => Ok(inflated.into()),
        Err(GunzipError::Invalid(e)) => Err(Status::invalid_argument(format!(
            "invalid gzip message: {e}"
        ))),
        Err(GunzipError::TooLarge) => Err(Status::resource_exhausted(format!(
            "decompressed request message exceeds the limit of {max} bytes"
        ))),
    }
}

/// Reads a unary call's body for [`unary_message`]: stops as soon as the
/// answer is known (a prefix over the limit, or the start of a second
/// message), so at most `max` plus two prefixes and one HTTP/2 frame are held.
async fn read_unary(mut body: tonic::body::Body, gzip: bool, max: usize) -> Result<Bytes, Status> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        buf.extend_from_slice(&data);
        if buf.len() >= HEADER_LEN && buf.len() >= 2 * HEADER_LEN + message_len(&buf, gzip, max)? {
            break;
        }
    }
    unary_message(buf.freeze(), gzip, max)
}

/// A unary call's answer: one message, then the trailers with `grpc-status` 0.
fn ok_response(msg: &ExportTraceServiceResponse) -> http::Response<tonic::body::Body> {
    let encoded = msg.encode_to_vec();
    let mut frame = BytesMut::with_capacity(HEADER_LEN + encoded.len());
    frame.put_u8(0);
    frame.put_u32(encoded.len() as u32);
    frame.put_slice(&encoded);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = http_body_util::Full::new(frame.freeze())
        .with_trailers(std::future::ready(Some(Ok(trailers))));
    let mut resp = http::Response::new(tonic::body::Body::new(body));
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        "grpc-accept-encoding",
        http::HeaderValue::from_static("gzip"),
    );
    resp
}

/// One `Export` call: its message read (its frames charged to `held` as they
/// arrive), then counted by the one ingest path.
async fn export(
    shared: &Shared,
    req: http::Request<tonic::body::Body>,
    held: &Held,
) -> Result<http::Response<tonic::body::Body>, Status> {
    let gzip = request_gzip(req.headers())?;
    let peer = req
        .extensions()
        .get::<net::ConnInfo>()
        .and_then(|info| info.remote_addr());
    let message = read_unary(req.into_body(), gzip, shared.config.max_request_bytes).await?;
    // What stays in memory now is the message (inflated if it was gzip), not
    // the frames: charge exactly that while it waits.
    shared.budget.resize(held, message.len()).map_err(busy)?;
    // The slot is taken only now that the whole message is here.
    // The semaphore is never closed, so acquiring cannot fail.
    let _slot = shared.request_slots.acquire().await.ok();
    shared
        .ingest
        .export::<Traces>(&message, Protocol::Grpc, peer)
        .map_err(status)?;
    Ok(ok_response(&ExportTraceServiceResponse {
        partial_success: None,
    }))
}

/// The OTLP trace service on top of the shared accounting.
#[derive(Clone)]
pub struct TraceExportService {
    shared: Arc<Shared>,
}

impl NamedService for TraceExportService {
    const NAME: &'static str = SERVICE_NAME;
}

fn busy(e: crate::budget::Busy) -> Status {
    Status::unavailable(e.to_string())
}

impl tower::Service<http::Request<tonic::body::Body>> for TraceExportService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            if req.uri().path() != EXPORT_PATH {
                return Ok(Status::unimplemented(format!(
                    "{} is not served here",
                    req.uri().path()
                ))
                .into_http());
            }
            // Every frame is charged to the byte budget as it arrives; the
            // charge is held until the answer is ready.
            let held = Held::default();
            let budget = shared.budget.clone();
            let charged = held.clone();
            let req = req.map(move |b| {
                tonic::body::Body::new(BudgetBody::new(b, budget, charged).map_err(|e| match e {
                    BodyError::Busy(b) => busy(b),
                    BodyError::Inner(e) => Status::from_error(e),
                }))
            });
            // A rejection is counted by `map_rejection`, like tonic's own.
            let answer = export(&shared, req, &held)
                .await
                .unwrap_or_else(|status| status.into_http());
            drop(held);
            Ok(answer)
        })
    }
}

/// Maps tonic's own rejections to OTLP's codes and counts every rejected request.
fn map_rejection(
    shared: &Shared,
    mut resp: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    // A rejected request comes back trailers-only: the status is a header.
    let Some(code) = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
    else {
        return resp;
    };
    let (new_code, what) = match code {
        Code::Ok => return resp,
        Code::OutOfRange | Code::ResourceExhausted => (Code::ResourceExhausted, Outcome::TooLarge),
        // INTERNAL: a cardinality violation (see `unary_message`), as grpc-go says it.
        Code::InvalidArgument | Code::Internal => (code, Outcome::BadRequest),
        Code::Unimplemented => (Code::Unimplemented, Outcome::Unimplemented),
        Code::DeadlineExceeded | Code::Cancelled => (code, Outcome::Timeout),
        Code::Unavailable => (code, Outcome::Busy),
        other => (other, Outcome::Error),
    };
    shared.ingest.reject(Protocol::Grpc, what);
    if new_code != code {
        resp.headers_mut()
            .insert("grpc-status", http::HeaderValue::from(new_code as i32));
    }
    resp
}

/// Serves OTLP/gRPC on `acceptor` until `cancel` fires, then waits for open
/// connections to finish. At most `--max-concurrent-requests` requests (shared
/// with the HTTP receiver) are decoded at once; the others wait, their
/// messages whole and charged to the byte budget. A request taking longer
/// than `--request-timeout` is cancelled.
pub async fn serve(
    acceptor: Acceptor,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let svc = TraceExportService {
        shared: shared.clone(),
    };
    let limits = shared.config.transport.clone();
    let timeout = shared.config.request_timeout;
    let layer = tower::ServiceBuilder::new()
        .map_response(move |resp| map_rejection(&shared, resp))
        .layer(net::TrackRequestsLayer)
        .into_inner();
    let incoming = acceptor.into_stream(cancel.clone());
    tonic::transport::Server::builder()
        // Bounds how long one request (a slow or stalled client) may take.
        .timeout(timeout)
        .max_concurrent_streams(limits.max_streams)
        .http2_max_header_list_size(net::H2_MAX_HEADER_LIST)
        .initial_stream_window_size(net::H2_STREAM_WINDOW)
        .initial_connection_window_size(net::H2_CONN_WINDOW)
        .http2_max_pending_accept_reset_streams(Some(net::H2_MAX_PENDING_RESETS))
        .http2_max_local_error_reset_streams(Some(net::H2_MAX_LOCAL_ERROR_RESETS))
        .layer(layer)
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
        .await
}
