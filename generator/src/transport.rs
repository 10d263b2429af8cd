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
        Some(ce) => Failure {
            reason: ce.reason(),
            message: ce.to_string(),
        },
        None => Failure {
            reason: Reason::Transport,
            message: trace_proto::error::chain(e),
        },
    }
}

fn status_failure(status: &tonic::Status) -> Failure {
    // A status tonic made from a transport error carries it as its source;
    // one the server sent has none.
    if let Some(src) = StdError::source(status) {
        let f = transport_failure(src);
        if f.reason != Reason::Transport || status.code() != tonic::Code::Unknown {
            return f;
        }
    }
    Failure {
        reason: Reason::Grpc(status.code()),
        message: format!("gRPC {:?}: {}", status.code(), status.message()),
    }
}

/// gRPC path of OTLP trace export.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// What the generated `TraceServiceClient::export` does, with the request sent
/// as the protobuf bytes it already is instead of being encoded from the types.
async fn grpc_export(
    mut client: tonic::client::Grpc<Channel>,
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
        client: tonic::client::Grpc<Channel>,
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

/// Largest response body read (the response is tiny; this bounds a hostile one).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

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
                let mut client =
                    tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
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
    /// protobuf (as [`trace_proto::span::encode_request`] writes it). `Ok(rejected)`
    /// when the endpoint accepted it, with the number of spans it reported as
    /// rejected (partial success).
    pub async fn export(&self, req: Bytes, timeout: Duration) -> Result<u64, Failure> {
        match tokio::time::timeout(timeout, self.export_inner(req)).await {
            Ok(r) => r,
            Err(_) => Err(Failure {
                reason: Reason::ExportTimeout,
                message: format!("no answer within {timeout:?}"),
            }),
        }
    }

    async fn export_inner(&self, req: Bytes) -> Result<u64, Failure> {
        match &*self.kind {
            Kind::Grpc { client, metadata } => {
                let mut request = tonic::Request::new(req);
                *request.metadata_mut() = metadata.clone();
                match grpc_export(client.clone(), request).await {
                    Ok(resp) => Ok(rejected(&resp.into_inner())),
                    Err(status) => Err(status_failure(&status)),
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
                        .map_err(|e| Failure {
                            reason: Reason::Other,
                            message: format!("cannot encode JSON: {e}"),
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
                let mut request = builder.body(Full::new(body)).map_err(|e| Failure {
                    reason: Reason::Other,
                    message: e.to_string(),
                })?;
                request.headers_mut().extend(headers.clone());
                let resp = client
                    .request(request)
                    .await
                    .map_err(|e| transport_failure(&e))?;
                let status = resp.status();
                let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                if !status.is_success() {
                    let detail =
                        String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                    return Err(Failure {
                        reason: Reason::Http(status.as_u16()),
                        message: format!("HTTP {status}: {}", detail.trim()),
                    });
                }
                let parsed = if *json {
                    serde_json::from_slice::<ExportTraceServiceResponse>(&bytes).ok()
                } else {
                    ExportTraceServiceResponse::decode(bytes).ok()
                };
                Ok(parsed.as_ref().map_or(0, rejected))
            }
        }
    }
}

fn rejected(resp: &ExportTraceServiceResponse) -> u64 {
    resp.partial_success
        .as_ref()
        .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
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
