//! OTLP/gRPC `TraceService/Export`, gzip accepted.
//!
//! The service is written out here rather than taken from the generated
//! `TraceServiceServer`, for one reason: the codec. `RawCodec` hands the
//! message bytes over undecoded (no copy: tonic's buffer is split off), so the
//! one ingest path ([`crate::ingest::Ingest::export`]) counts and decodes them
//! like the HTTP receiver's; its rejections become `INVALID_ARGUMENT` or
//! `RESOURCE_EXHAUSTED` (tonic's own codec would say `INTERNAL`).
//!
//! Fairness: a request is charged to the byte budget (`--max-buffered-bytes`,
//! [`crate::budget`]) as its frames arrive, and takes a decode slot
//! (`--max-concurrent-requests`) only once its message is whole, so a client
//! trickling a body or opening body-less streams holds no slot. Connections
//! come from [`crate::net::Acceptor`] (cap, idle timeout, `TCP_NODELAY`) and
//! HTTP/2 streams are capped per connection (`--max-streams`).
//!
//! tonic checks `--max-request-bytes` itself, before and while decompressing,
//! but reports an oversized uncompressed message as `OUT_OF_RANGE`; the
//! `map_rejection` layer turns that into `RESOURCE_EXHAUSTED`, as OTLP clients
//! expect, and counts every rejected request.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};
use trace_proto::otlp::ExportTraceServiceResponse;
use trace_proto::protocol::Protocol;

use crate::budget::{BodyError, BudgetBody, Held};
use crate::ingest::{Rejected, Traces};
use crate::net::{self, Acceptor};
use crate::outcome::Outcome;
use crate::state::Shared;

/// gRPC service name of OTLP traces.
pub const SERVICE_NAME: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Encodes the response; passes the request message on as bytes.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        *self
    }
    fn decoder(&mut self) -> RawCodec {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;
    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // Splits the message off tonic's buffer: no copy.
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The gRPC status of a request ingest refused.
fn status(r: Rejected) -> Status {
    match r.outcome {
        Outcome::TooLarge => Status::resource_exhausted(r.message),
        _ => Status::invalid_argument(r.message),
    }
}

/// The OTLP trace service on top of the shared accounting.
#[derive(Clone)]
pub struct TraceExportService {
    shared: Arc<Shared>,
}

impl NamedService for TraceExportService {
    const NAME: &'static str = SERVICE_NAME;
}

struct Export {
    shared: Arc<Shared>,
    held: Held,
}

fn busy(e: crate::budget::Busy) -> Status {
    Status::unavailable(e.to_string())
}

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<Response<ExportTraceServiceResponse>, Status>>
                + Send,
        >,
    >;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let (shared, held) = (self.shared.clone(), self.held.clone());
        Box::pin(async move {
            let peer = request.remote_addr();
            let body = request.into_inner();
            // What stays in memory now is the message (inflated if it was
            // gzip), not the frames: charge exactly that while it waits.
            shared.budget.resize(&held, body.len()).map_err(busy)?;
            // The slot is taken only now that the whole message is here.
            // The semaphore is never closed, so acquiring cannot fail.
            let _slot = shared.request_slots.acquire().await.ok();
            // A rejection is counted by `map_rejection`, like tonic's own.
            shared
                .ingest
                .export::<Traces>(&body, Protocol::Grpc, peer)
                .map(|_| {
                    Response::new(ExportTraceServiceResponse {
                        partial_success: None,
                    })
                })
                .map_err(status)
        })
    }
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
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(shared.config.max_request_bytes), None);
            let answer = grpc
                .unary(
                    Export {
                        shared,
                        held: held.clone(),
                    },
                    req,
                )
                .await;
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
        Code::InvalidArgument | Code::Internal => (Code::InvalidArgument, Outcome::BadRequest),
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
