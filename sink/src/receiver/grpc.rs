//! OTLP/gRPC `TraceService/Export`, gzip accepted.
//!
//! The service is written out here rather than taken from the generated
//! `TraceServiceServer`, for one reason: the codec. [`LeanCodec`] counts the
//! elements of the message before decoding it (`--max-request-elements`,
//! `RESOURCE_EXHAUSTED` beyond), decodes only what the sink reads
//! ([`trace_proto::wire`]), and answers `INVALID_ARGUMENT` for a message that
//! does not decode (tonic's own codec says `INTERNAL`).
//!
//! tonic checks `--max-request-bytes` itself, before and while decompressing,
//! but reports an oversized uncompressed message as `OUT_OF_RANGE`; the
//! [`map_rejection`] layer turns that into `RESOURCE_EXHAUSTED`, as OTLP clients
//! expect, and counts every rejected request.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use prost::Message;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};
use trace_proto::attribution::attribute;
use trace_proto::otlp::ExportTraceServiceResponse;
use trace_proto::wire::{ScanError, TraceRequest, count_elements};

use crate::server::Shared;
use crate::stats::{Protocol, outcome};

/// gRPC service name of OTLP traces.
pub const SERVICE_NAME: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Encodes the response; counts, then decodes, the lean request.
#[derive(Debug, Clone, Copy)]
struct LeanCodec {
    max_elements: u64,
}

impl Codec for LeanCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = TraceRequest;
    type Encoder = LeanCodec;
    type Decoder = LeanCodec;
    fn encoder(&mut self) -> LeanCodec {
        *self
    }
    fn decoder(&mut self) -> LeanCodec {
        *self
    }
}

impl Encoder for LeanCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;
    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}

impl Decoder for LeanCodec {
    type Item = TraceRequest;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<TraceRequest>, Status> {
        // The message is one contiguous buffer; copy only if it ever is not.
        let owned;
        let bytes: &[u8] = if src.chunk().len() == src.remaining() {
            src.chunk()
        } else {
            owned = src.copy_to_bytes(src.remaining());
            &owned
        };
        match count_elements(bytes, self.max_elements) {
            Ok(_) => {}
            Err(ScanError::TooMany) => {
                return Err(Status::resource_exhausted(format!(
                    "request carries more than {} elements (spans and attributes); limit --max-request-elements",
                    self.max_elements
                )));
            }
            Err(ScanError::Malformed) => {
                return Err(Status::invalid_argument(
                    "invalid OTLP protobuf message: malformed wire format",
                ));
            }
        }
        let req = TraceRequest::decode(bytes)
            .map_err(|e| Status::invalid_argument(format!("invalid OTLP protobuf message: {e}")))?;
        let n = src.remaining();
        src.advance(n);
        Ok(Some(req))
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

impl UnaryService<TraceRequest> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = std::future::Ready<Result<Response<ExportTraceServiceResponse>, Status>>;

    fn call(&mut self, request: Request<TraceRequest>) -> Self::Future {
        let peer = request.remote_addr();
        let req = request.into_inner();
        let summary = attribute(&req, &self.0.config.keys);
        self.0.accounting.ingest(summary, peer, Protocol::Grpc);
        std::future::ready(Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        })))
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
            let codec = LeanCodec {
                max_elements: shared.config.max_request_elements,
            };
            let mut grpc = tonic::server::Grpc::new(codec)
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
        Code::OutOfRange | Code::ResourceExhausted => (Code::ResourceExhausted, outcome::TOO_LARGE),
        Code::InvalidArgument | Code::Internal => (Code::InvalidArgument, outcome::BAD_REQUEST),
        Code::Unimplemented => (Code::Unimplemented, outcome::UNIMPLEMENTED),
        Code::DeadlineExceeded | Code::Cancelled => (code, outcome::TIMEOUT),
        other => (other, outcome::OTHER_ERROR),
    };
    shared.accounting.reject(Protocol::Grpc, what);
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
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), cancel.cancelled_owned())
        .await
}
