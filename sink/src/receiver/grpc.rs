//! OTLP/gRPC `TraceService/Export`, gzip accepted.
//!
//! The service is written out here rather than taken from the generated
//! `TraceServiceServer`, for one reason: the codec. `RawCodec` hands the
//! message bytes over undecoded (no copy: tonic's buffer is split off), so the
//! one ingest path ([`crate::ingest::Ingest::export`]) counts and decodes them
//! like the HTTP receiver's; its rejections become `INVALID_ARGUMENT` or
//! `RESOURCE_EXHAUSTED` (tonic's own codec would say `INTERNAL`).
//!
//! tonic checks `--max-request-bytes` itself, before and while decompressing,
//! but reports an oversized uncompressed message as `OUT_OF_RANGE`; the
//! `map_rejection` layer turns that into `RESOURCE_EXHAUSTED`, as OTLP clients
//! expect, and counts every rejected request.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use trace_proto::otlp::ExportTraceServiceResponse;
use trace_proto::protocol::Protocol;

use crate::ingest::{Rejected, Traces};
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

struct Export(Arc<Shared>);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = std::future::Ready<Result<Response<ExportTraceServiceResponse>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let peer = request.remote_addr();
        let body = request.into_inner();
        // A rejection is counted by `map_rejection`, like tonic's own.
        let answer = self
            .0
            .ingest
            .export::<Traces>(&body, Protocol::Grpc, peer)
            .map(|_| {
                Response::new(ExportTraceServiceResponse {
                    partial_success: None,
                })
            })
            .map_err(status);
        std::future::ready(answer)
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
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(shared.config.max_request_bytes), None);
            Ok(grpc.unary(Export(shared), req).await)
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
        other => (other, Outcome::Error),
    };
    shared.ingest.reject(Protocol::Grpc, what);
    if new_code != code {
        resp.headers_mut()
            .insert("grpc-status", http::HeaderValue::from(new_code as i32));
    }
    resp
}

/// Serves OTLP/gRPC on `listener` until `cancel` fires, then waits for open
/// connections to finish. At most `--max-concurrent-requests` requests (shared
/// with the HTTP receiver) are decoded at once; the others wait. A request
/// taking longer than `--request-timeout` is cancelled, so a stalled client
/// cannot hold a slot for ever.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let svc = TraceExportService {
        shared: shared.clone(),
    };
    let slots = shared.request_slots.clone();
    let shared_timeout = shared.config.request_timeout;
    let layer = tower::ServiceBuilder::new()
        .map_response(move |resp| map_rejection(&shared, resp))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(
            slots,
        ))
        .into_inner();
    let timeout = shared_timeout;
    tonic::transport::Server::builder()
        // Bounds how long one request (a slow or stalled client) can hold a slot.
        .timeout(timeout)
        .layer(layer)
        .add_service(svc)
        // TCP_NODELAY on every accepted connection: `serve_with_incoming` ignores
        // the builder's `tcp_nodelay`, and with Nagle on, the small frames of an
        // answer wait for the client's delayed ACK (40 ms each on Linux).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            cancel.cancelled_owned(),
        )
        .await
}
