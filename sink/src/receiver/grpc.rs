//! OTLP/gRPC `TraceService/Export`, gzip accepted, `--max-request-bytes`
//! applied to the message after decompression.
//!
//! tonic rejects bad input before our handler runs, with codes of its own
//! choosing: `OUT_OF_RANGE` for a message over the size limit and `INTERNAL` for
//! one that does not decode. The [`StatusLayer`] below maps them to what OTLP
//! clients expect (`RESOURCE_EXHAUSTED`, `INVALID_ARGUMENT`) and counts every
//! rejected request; our handler itself never fails.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};
use trace_proto::attribution::attribute;
use trace_proto::otlp::{ExportTraceServiceRequest, ExportTraceServiceResponse};

use crate::server::Shared;
use crate::stats::{Protocol, outcome};

struct Receiver {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let peer = request.remote_addr();
        let req = request.into_inner();
        let summary = attribute(&req, &self.shared.config.keys);
        self.shared
            .accounting
            .ingest(&summary, peer, Protocol::Grpc);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Maps tonic's own rejections to OTLP's codes and counts them.
fn map_rejection(
    shared: &Shared,
    mut resp: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    // Errors raised before the handler come back trailers-only: the status is a header.
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
        Code::Internal | Code::InvalidArgument => (Code::InvalidArgument, outcome::BAD_REQUEST),
        Code::Unimplemented => (Code::Unimplemented, outcome::UNSUPPORTED_MEDIA_TYPE),
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
/// connections to finish.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let max = shared.config.max_request_bytes;
    let svc = TraceServiceServer::new(Receiver {
        shared: shared.clone(),
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(max);
    let layer = tower::ServiceBuilder::new()
        .map_response(move |resp| map_rejection(&shared, resp))
        .into_inner();
    tonic::transport::Server::builder()
        .layer(layer)
        .add_service(svc)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), cancel.cancelled_owned())
        .await
}
