//! Sending one export request, over OTLP/gRPC (tonic) or OTLP/HTTP (hyper), and
//! naming the reason when it fails.
//!
//! Both protocols dial through one [`Connector`]: it resolves the host name on
//! every new connection (so a reconnect can land on another Service endpoint)
//! and returns a typed [`ConnectError`], which is how a DNS failure, a refused
//! connection (kube-proxy's REJECT) and a connect timeout (kube-proxy's DROP) are
//! told apart without parsing error strings.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tokio::net::TcpStream;
use tonic::transport::Channel;
use trace_proto::json::Int64;
use trace_proto::otlp::{ExportTraceServiceRequest, ExportTraceServiceResponse};

use crate::config::{Compression, ConfigError, ExporterSettings, Protocol};
use crate::failure::{Failure, Reason};

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Dns {
        /// Host name.
        host: String,
        /// Resolver error.
        source: std::io::Error,
    },
    /// The host name resolved to no address, or resolving took longer than the connect timeout.
    #[error("cannot resolve {host}: {reason}")]
    DnsOther {
        /// Host name.
        host: String,
        /// What happened.
        reason: String,
    },
    /// Connection refused (nothing listening, or a REJECT rule).
    #[error("connection to {addr} refused")]
    Refused {
        /// Address dialled.
        addr: SocketAddr,
    },
    /// No answer to the SYN within the connect timeout (e.g. a DROP rule).
    #[error("connect to {addr} timed out after {timeout:?}")]
    Timeout {
        /// Address dialled.
        addr: SocketAddr,
        /// The connect timeout.
        timeout: Duration,
    },
    /// Any other connect error.
    #[error("connect to {addr} failed: {source}")]
    Io {
        /// Address dialled.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

impl ConnectError {
    /// The failure reason it is counted under.
    pub fn reason(&self) -> Reason {
        match self {
            ConnectError::Dns { .. } | ConnectError::DnsOther { .. } => Reason::Dns,
            ConnectError::Refused { .. } => Reason::ConnectionRefused,
            ConnectError::Timeout { .. } => Reason::ConnectTimeout,
            ConnectError::Io { .. } => Reason::Transport,
        }
    }
}

/// Dials TCP connections for both exporters and counts the ones opened.
#[derive(Debug, Clone)]
pub struct Connector {
    connect_timeout: Duration,
    opened: Arc<AtomicU64>,
}

impl Connector {
    /// A connector with this connect timeout, counting into `opened`.
    pub fn new(connect_timeout: Duration, opened: Arc<AtomicU64>) -> Self {
        Connector {
            connect_timeout,
            opened,
        }
    }

    async fn dial(self, uri: http::Uri) -> Result<TokioIo<TcpStream>, ConnectError> {
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let looked_up =
            tokio::time::timeout_at(deadline, tokio::net::lookup_host((host.clone(), port))).await;
        let addrs: Vec<SocketAddr> = match looked_up {
            Err(_) => {
                return Err(ConnectError::DnsOther {
                    host,
                    reason: format!("no answer within {:?}", self.connect_timeout),
                });
            }
            Ok(Err(source)) => return Err(ConnectError::Dns { host, source }),
            Ok(Ok(a)) => a.collect(),
        };
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    return Ok(TokioIo::new(stream));
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    last = Some(ConnectError::Refused { addr })
                }
                Ok(Err(source)) => last = Some(ConnectError::Io { addr, source }),
                Err(_) => {
                    return Err(ConnectError::Timeout {
                        addr,
                        timeout: self.connect_timeout,
                    });
                }
            }
        }
        Err(last.unwrap_or(ConnectError::DnsOther {
            host,
            reason: "no address".into(),
        }))
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(self.clone().dial(uri))
    }
}

fn find_connect_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a ConnectError> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(ce) = c.downcast_ref::<ConnectError>() {
            return Some(ce);
        }
        cur = c.source();
    }
    None
}

/// Classifies a transport-level error (no answer from the endpoint).
fn transport_failure(e: &(dyn StdError + 'static)) -> Failure {
    match find_connect_error(e) {
        Some(ce) => Failure::new(ce.reason(), ce.to_string()),
        None => Failure::new(Reason::Transport, trace_proto::error::chain(e)),
    }
}

fn status_failure(status: &tonic::Status, answer: &GrpcAnswer) -> Failure {
    // A status tonic made from a transport error carries it as its source;
    // one the server sent has none.
    if let Some(src) = StdError::source(status) {
        let mut f = transport_failure(src);
        if f.reason != Reason::Transport || status.code() != tonic::Code::Unknown {
            if f.reason == Reason::Transport && answered_http1(src) {
                f.message = not_grpc("HTTP/1.1", &f.message);
            }
            return f;
        }
    }
    let code = status.code();
    if !answer.server_sent(code) {
        if let Some(src) = StdError::source(status) {
            return transport_failure(src);
        }
        // tonic made this status itself while reading the answer (message
        // too large, cut off, undecodable, missing): the server said nothing
        // we could read, so whether the spans were taken is unknown.
        return Failure::new(
            Reason::BadResponse,
            format!("unreadable gRPC response: {}", status.message()),
        );
    }
    let detail = format!("gRPC {code:?}: {}", status.message());
    let mut f = Failure::new(
        Reason::Grpc(code),
        match answer.plain_http_status() {
            Some(code) => not_grpc(&format!("HTTP {code} without gRPC framing"), &detail),
            None => detail,
        },
    );
    // google.rpc.RetryInfo in grpc-status-details-bin (tonic-types decodes it).
    use tonic_types::StatusExt;
    f.retry_after = status.get_details_retry_info().and_then(|i| i.retry_delay);
    f
}

/// What the gRPC server itself sent on one call: the HTTP status and the
/// `grpc-status` value (from the headers of a trailers-only answer, or from
/// the trailers). tonic turns its own reading errors (a message over the size
/// limit, a cut or undecodable message, no message) into statuses too; only a
/// status whose code the server sent (or inferred from a non-200 HTTP status,
/// as gRPC maps them) is the server's answer.
#[derive(Clone, Default)]
struct GrpcAnswer(Arc<std::sync::Mutex<(Option<u16>, Option<i32>)>>);

impl GrpcAnswer {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<u16>, Option<i32>)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, http: Option<http::StatusCode>, headers: &http::HeaderMap) {
        let mut a = self.lock();
        if let Some(s) = http {
            a.0 = Some(s.as_u16());
        }
        if let Some(code) = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i32>().ok())
        {
            a.1 = Some(code);
        }
    }

    /// The HTTP status of an answer that carried no gRPC framing (no
    /// `grpc-status` at all, and not 2xx): what the server really said,
    /// where tonic reports a body it cannot decode or a status it mapped.
    fn plain_http_status(&self) -> Option<u16> {
        match *self.lock() {
            (Some(http), None) if !(200..300).contains(&http) => Some(http),
            _ => None,
        }
    }

    fn server_sent(&self, code: tonic::Code) -> bool {
        match *self.lock() {
            (_, Some(sent)) => sent == code as i32,
            (Some(http), None) => http != 200,
            (None, None) => false,
        }
    }
}

/// A layer over the gRPC channel that records, per call, what the server
/// sent into the call's [`GrpcAnswer`] (carried in the request extensions).
#[derive(Clone)]
struct Observed<S>(S);

type ObservedBody = http_body_util::combinators::UnsyncBoxBody<Bytes, tonic::Status>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for Observed<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<ObservedBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let answer = req.extensions().get::<GrpcAnswer>().cloned();
        let call = self.0.call(req);
        Box::pin(async move {
            let resp = call.await?;
            let Some(answer) = answer else {
                return Ok(resp.map(BodyExt::boxed_unsync));
            };
            answer.record(Some(resp.status()), resp.headers());
            Ok(resp.map(|body| {
                body.map_frame(move |frame| {
                    if let Some(trailers) = frame.trailers_ref() {
                        answer.record(None, trailers);
                    }
                    frame
                })
                .boxed_unsync()
            }))
        })
    }
}

/// The wording when the peer of a gRPC export answered in plain HTTP: most likely the
/// OTLP/HTTP port (4318) of a receiver whose gRPC port is 4317.
fn not_grpc(answer: &str, detail: &str) -> String {
    format!(
        "the endpoint answered plain HTTP ({answer}), not gRPC: it looks like an OTLP/HTTP \
         port; use --protocol http/protobuf for it (port 4318), or the gRPC port (4317) \
         [{detail}]"
    )
}

/// An HTTP/2 client (gRPC) reading an HTTP/1.1 answer: `HTTP/1.1 400 ...` read as a
/// frame header is a frame far over the size limit, which h2 reports as its
/// `FRAME_SIZE_ERROR` (found by type on the error's source chain).
fn answered_http1(e: &(dyn StdError + 'static)) -> bool {
    causes(e)
        .filter_map(|c| c.downcast_ref::<h2::Error>())
        .any(|h2| h2.reason() == Some(h2::Reason::FRAME_SIZE_ERROR))
}

/// `e` and its sources, outermost first.
fn causes<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |&c| c.source())
}

/// gRPC path of OTLP trace export.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// What the generated `TraceServiceClient::export` does, with the request sent
/// as the protobuf bytes it already is instead of being encoded from the types.
async fn grpc_export(
    mut client: tonic::client::Grpc<Observed<Channel>>,
    mut request: tonic::Request<Bytes>,
) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("Service was not ready: {e}")))?;
    request.extensions_mut().insert(tonic::GrpcMethod::new(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        "Export",
    ));
    let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
    client.unary(request, path, EncodedCodec).await
}

/// Writes an already encoded request as it is; decodes the response with prost.
#[derive(Debug, Clone, Copy, Default)]
struct EncodedCodec;

impl tonic::codec::Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = EncodedCodec;
    type Decoder = EncodedCodec;
    fn encoder(&mut self) -> EncodedCodec {
        *self
    }
    fn decoder(&mut self) -> EncodedCodec {
        *self
    }
}

impl tonic::codec::Decoder for EncodedCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        // As tonic's ProstCodec: an undecodable answer is INTERNAL.
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl tonic::codec::Encoder for EncodedCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

/// A client for one connection epoch: dropping it (and every clone) closes its
/// connections. Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub struct Exporter {
    kind: Arc<Kind>,
}

// Built once per connection epoch and kept behind an Arc: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Kind {
    /// OTLP/gRPC.
    Grpc {
        /// The tonic client (lazy channel: connects on first use), sending
        /// requests already encoded ([`EncodedCodec`]).
        client: tonic::client::Grpc<Observed<Channel>>,
        /// Metadata added to every request.
        metadata: tonic::metadata::MetadataMap,
    },
    /// OTLP/HTTP.
    Http {
        /// The hyper client.
        client: Client<Connector, Full<Bytes>>,
        /// Full URL.
        uri: http::Uri,
        /// JSON instead of protobuf.
        json: bool,
        /// gzip the body.
        gzip: bool,
        /// Extra headers.
        headers: http::HeaderMap,
    },
}

/// Largest response body read (the response is tiny; this bounds a hostile
/// one). A success answer larger than this is a [`Reason::BadResponse`].
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What the endpoint said about an accepted request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Spans it reported as rejected (`partial_success.rejected_spans`).
    pub rejected: u64,
    /// `partial_success.error_message` (empty when none).
    pub message: String,
}

impl Exporter {
    /// A new exporter; no connection is opened until the first export.
    pub fn new(settings: &ExporterSettings, connector: Connector) -> Result<Self, ConfigError> {
        let ExporterSettings {
            endpoint,
            protocol,
            compression,
            headers,
            ..
        } = settings;
        let (protocol, compression) = (*protocol, *compression);
        let bad = |m: String| ConfigError::Endpoint(endpoint.url.clone(), m);
        match protocol {
            Protocol::Grpc => {
                let origin = format!("http://{}:{}", bracket(&endpoint.host), endpoint.port);
                let channel = tonic::transport::Endpoint::from_shared(origin)
                    .map_err(|e| bad(e.to_string()))?
                    .connect_with_connector_lazy(connector);
                let mut client = tonic::client::Grpc::new(Observed(channel))
                    .max_decoding_message_size(MAX_RESPONSE_BYTES);
                if compression == Compression::Gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in headers {
                    let key =
                        tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                            .map_err(|e| ConfigError::Header(k.clone(), e.to_string()))?;
                    let val = v
                        .parse()
                        .map_err(|_| ConfigError::Header(k.clone(), "not ASCII".into()))?;
                    metadata.insert(key, val);
                }
                Ok(Exporter {
                    kind: Arc::new(Kind::Grpc { client, metadata }),
                })
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                let uri: http::Uri = format!(
                    "http://{}:{}{}",
                    bracket(&endpoint.host),
                    endpoint.port,
                    endpoint.path
                )
                .parse()
                .map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
                let client = Client::builder(TokioExecutor::new()).build(connector);
                let mut map = http::HeaderMap::new();
                for (k, v) in headers {
                    let name = http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| ConfigError::Header(k.clone(), e.to_string()))?;
                    let value = http::HeaderValue::from_str(v)
                        .map_err(|e| ConfigError::Header(k.clone(), e.to_string()))?;
                    map.insert(name, value);
                }
                Ok(Exporter {
                    kind: Arc::new(Kind::Http {
                        client,
                        uri,
                        json: protocol == Protocol::HttpJson,
                        gzip: compression == Compression::Gzip,
                        headers: map,
                    }),
                })
            }
        }
    }

    /// Sends one request, an `ExportTraceServiceRequest` already encoded as
    /// protobuf (as [`trace_proto::span::encode_request`] writes it). `Ok` when
    /// the endpoint accepted it, with what it reported as rejected (partial
    /// success).
    pub async fn export(&self, req: Bytes, timeout: Duration) -> Result<Accepted, Failure> {
        match tokio::time::timeout(timeout, self.export_inner(req)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                Reason::ExportTimeout,
                format!("no answer within {timeout:?}"),
            )),
        }
    }

    async fn export_inner(&self, req: Bytes) -> Result<Accepted, Failure> {
        match &*self.kind {
            Kind::Grpc { client, metadata } => {
                let mut request = tonic::Request::new(req);
                *request.metadata_mut() = metadata.clone();
                let answer = GrpcAnswer::default();
                request.extensions_mut().insert(answer.clone());
                match grpc_export(client.clone(), request).await {
                    Ok(resp) => accepted(resp.into_inner()),
                    Err(status) => Err(status_failure(&status, &answer)),
                }
            }
            Kind::Http {
                client,
                uri,
                json,
                gzip,
                headers,
            } => {
                let mut body: Bytes = if *json {
                    // JSON is the slow path anyway: read the bytes back into the
                    // full types and write them as OTLP/JSON.
                    ExportTraceServiceRequest::decode(req)
                        .map_err(|e| e.to_string())
                        .and_then(|r| serde_json::to_vec(&r).map_err(|e| e.to_string()))
                        .map_err(|e| {
                            Failure::new(Reason::Other, format!("cannot encode JSON: {e}"))
                        })?
                        .into()
                } else {
                    req
                };
                let mut builder = http::Request::post(uri.clone()).header(
                    http::header::CONTENT_TYPE,
                    if *json {
                        "application/json"
                    } else {
                        "application/x-protobuf"
                    },
                );
                if *gzip {
                    body = gzip_bytes(&body).into();
                    builder = builder.header(http::header::CONTENT_ENCODING, "gzip");
                }
                let mut request = builder
                    .body(Full::new(body))
                    .map_err(|e| Failure::new(Reason::Other, e.to_string()))?;
                request.headers_mut().extend(headers.clone());
                let resp = client.request(request).await.map_err(|e| {
                    let mut f = transport_failure(&e);
                    if answered_http2(&e) {
                        f.message = format!(
                            "the endpoint answered HTTP/2, not HTTP/1.1: it looks like a gRPC \
                             port; use --protocol grpc for it (port 4317), or the OTLP/HTTP port \
                             (4318) [{}]",
                            f.message
                        );
                    }
                    f
                })?;
                let status = resp.status();
                let retry_after = retry_after(resp.headers(), std::time::SystemTime::now());
                let content_type = resp
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let read = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map(|c| c.to_bytes());
                if !status.is_success() {
                    let bytes = read.unwrap_or_default();
                    let detail =
                        String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                    let mut message = format!("HTTP {status}: {}", detail.trim());
                    if let Some(hint) = http_hint(status, &content_type, uri.path(), *json) {
                        message = format!("{hint} [{message}]");
                    }
                    let mut f = Failure::new(Reason::Http(status.as_u16()), message);
                    f.retry_after = retry_after;
                    return Err(f);
                }
                let bytes = read.map_err(|e| {
                    let why = if e
                        .downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        format!("larger than {MAX_RESPONSE_BYTES} bytes")
                    } else {
                        format!("cut off: {}", trace_proto::error::chain(&*e))
                    };
                    Failure::new(
                        Reason::BadResponse,
                        format!("HTTP {status} with an unreadable body: {why}"),
                    )
                })?;
                let undecodable = |e: &dyn std::fmt::Display| {
                    Failure::new(
                        Reason::BadResponse,
                        format!("HTTP {status} with an undecodable body: {e}"),
                    )
                };
                if bytes.is_empty() {
                    // An empty body is the empty protobuf message; the
                    // OpenTelemetry Collector's exporter reads it as full
                    // success in JSON too.
                    Ok(Accepted::default())
                } else if *json {
                    json_response(&bytes).map_err(|e| undecodable(&e))
                } else {
                    let resp =
                        ExportTraceServiceResponse::decode(bytes).map_err(|e| undecodable(&e))?;
                    accepted(resp).map_err(|f| undecodable(&f.message))
                }
            }
        }
    }
}

/// The partial success of a decoded response.
fn accepted(resp: ExportTraceServiceResponse) -> Result<Accepted, Failure> {
    let Some(p) = resp.partial_success else {
        return Ok(Accepted::default());
    };
    let rejected = u64::try_from(p.rejected_spans).map_err(|_| {
        Failure::new(
            Reason::BadResponse,
            format!("negative rejected_spans {}", p.rejected_spans),
        )
    })?;
    Ok(Accepted {
        rejected,
        message: p.error_message,
    })
}

/// Why an OTLP/JSON success answer could not be read ([`json_response`]).
#[derive(Debug, thiserror::Error)]
enum BadJson {
    #[error("not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("not a JSON object")]
    NotObject,
    #[error("partialSuccess is not an object: {0}")]
    PartialSuccess(serde_json::Value),
    #[error("rejectedSpans is not an int64: {0}")]
    RejectedSpans(serde_json::Value),
    #[error("errorMessage is not a string: {0}")]
    ErrorMessage(serde_json::Value),
    #[error("negative rejectedSpans {0}")]
    Negative(i64),
}

/// Reads an OTLP/JSON `ExportTraceServiceResponse` as proto3 JSON does:
/// `rejectedSpans` (or `rejected_spans`) is an int64 ([`Int64`], the reader
/// the sink reads `intValue` with); `null` means unset; unknown fields are
/// ignored. (The serde derive of `opentelemetry-proto` takes numbers only,
/// so a string, which is how OTLP/JSON writes int64, would be lost.)
fn json_response(bytes: &[u8]) -> Result<Accepted, BadJson> {
    use serde_json::Value;
    let v: Value = serde_json::from_slice(bytes)?;
    let field = |o: &serde_json::Map<String, Value>, camel: &str, snake: &str| {
        o.get(camel)
            .or_else(|| o.get(snake))
            .filter(|v| !v.is_null())
            .cloned()
    };
    let Value::Object(top) = v else {
        return Err(BadJson::NotObject);
    };
    let partial = match field(&top, "partialSuccess", "partial_success") {
        None => return Ok(Accepted::default()),
        Some(Value::Object(p)) => p,
        Some(other) => return Err(BadJson::PartialSuccess(other)),
    };
    let rejected = match field(&partial, "rejectedSpans", "rejected_spans") {
        None => 0,
        Some(v) => match serde_json::from_value::<Int64>(v.clone()) {
            Ok(Int64(i)) => i,
            Err(_) => return Err(BadJson::RejectedSpans(v)),
        },
    };
    let message = match field(&partial, "errorMessage", "error_message") {
        None => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => return Err(BadJson::ErrorMessage(other)),
    };
    let rejected = u64::try_from(rejected).map_err(|_| BadJson::Negative(rejected))?;
    Ok(Accepted { rejected, message })
}

/// An HTTP/1.1 client reading an HTTP/2 server's first frames (a gRPC port answering
/// an OTLP/HTTP request): hyper fails to parse the status line (found by type
/// on the error's source chain: a parse error that is not of the status code or of
/// the size, which leaves the version, as the frame's bytes are no `HTTP/1.x`).
fn answered_http2(e: &(dyn StdError + 'static)) -> bool {
    causes(e)
        .filter_map(|c| c.downcast_ref::<hyper::Error>())
        .any(|h| h.is_parse() && !h.is_parse_status() && !h.is_parse_too_large())
}

/// Plain words for the answers that mean "not an OTLP/HTTP traces endpoint": a 404
/// (wrong path or port) and a 415 (wrong encoding), most often as an HTML or text page.
fn http_hint(
    status: http::StatusCode,
    content_type: &str,
    path: &str,
    json: bool,
) -> Option<String> {
    let page = if content_type.starts_with("text/html") {
        " with an HTML page"
    } else {
        ""
    };
    match status.as_u16() {
        404 => Some(format!(
            "the endpoint answered 404 Not Found{page} for POST {path}: nothing takes OTLP/HTTP \
             traces there; OTLP/HTTP receivers take POST /v1/traces on port 4318 (give the \
             full URL, or a URL without a path), and a gRPC port (4317) needs --protocol grpc"
        )),
        415 => Some(format!(
            "the endpoint answered 415 Unsupported Media Type{page}: it does not take {}; try \
             --protocol {}, or check that it is an OTLP/HTTP traces endpoint (port 4318, \
             POST /v1/traces)",
            if json {
                "application/json"
            } else {
                "application/x-protobuf"
            },
            if json { "http/protobuf" } else { "http/json" },
        )),
        _ => None,
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110), relative to
/// `now`; a date in the past is no wait.
fn retry_after(headers: &http::HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn json_partial_success_in_every_proto3_form() {
        let ok = |s: &str| json_response(s.as_bytes()).unwrap();
        assert_eq!(ok("{}"), Accepted::default());
        assert_eq!(ok(r#"{"partialSuccess":null}"#), Accepted::default());
        assert_eq!(ok(r#"{"partialSuccess":{}}"#), Accepted::default());
        for form in [r#""7""#, "7", "7.0", r#""7e0""#] {
            let body =
                format!(r#"{{"partialSuccess":{{"rejectedSpans":{form},"errorMessage":"m"}}}}"#);
            assert_eq!(
                ok(&body),
                Accepted {
                    rejected: 7,
                    message: "m".into()
                },
                "{form}"
            );
        }
        assert_eq!(
            ok(r#"{"partial_success":{"rejected_spans":"9223372036854775807"},"extra":[1]}"#)
                .rejected,
            i64::MAX as u64
        );
        for bad in [
            "",
            "[]",
            "<html>",
            r#"{"partialSuccess":5}"#,
            r#"{"partialSuccess":{"rejectedSpans":"x"}}"#,
            r#"{"partialSuccess":{"rejectedSpans":"1.5"}}"#,
            r#"{"partialSuccess":{"rejectedSpans":"-2"}}"#,
            r#"{"partialSuccess":{"rejectedSpans":"9223372036854775808"}}"#,
            r#"{"partialSuccess":{"rejectedSpans":true}}"#,
            r#"{"partialSuccess":{"errorMessage":3}}"#,
        ] {
            assert!(json_response(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn retry_after_seconds_or_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let header = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::RETRY_AFTER, v.parse().unwrap());
            retry_after(&h, now)
        };
        assert_eq!(header("120"), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(header(&later), Some(Duration::from_secs(90)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(header(&earlier), Some(Duration::ZERO));
        assert_eq!(header("soon"), None);
        assert_eq!(header("-1"), None);
        assert_eq!(retry_after(&http::HeaderMap::new(), now), None);
    }
}
