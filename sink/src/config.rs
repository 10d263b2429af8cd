//! The sink's settings, independent of how they were given (flags, code).

use crate::ingest::attribution::AttributionKeys;

/// Default `--max-request-bytes`: 4 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Default `--max-request-elements`.
pub const DEFAULT_MAX_REQUEST_ELEMENTS: u64 = 500_000;

/// Default `--max-concurrent-requests`.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 8;

/// Default `--request-timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Default `--max-series`.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// Default `--max-gaps`: sequence gaps tracked across all generators.
pub const DEFAULT_MAX_GAPS: usize = 262_144;

/// Gaps tracked per generator before its oldest are frozen.
pub const DEFAULT_MAX_GAPS_PER_GENERATOR: usize = 1024;

/// Default `--max-connections` (per listener).
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;

/// Default `--max-connections-per-peer`: half the default cap, so one
/// address cannot fill a listener, while an address that carries many
/// clients (a node's pods behind SNAT) still has room.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 64;

/// Default `--per-peer-exempt`: Istio's inbound passthrough address, from
/// which every client arrives behind a sidecar.
pub const DEFAULT_PER_PEER_EXEMPT: &str = "127.0.0.6";

/// Default `--max-streams` (HTTP/2 streams per connection).
pub const DEFAULT_MAX_STREAMS: u32 = 16;

/// Default `--max-buffered-bytes`: 32 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 32 * 1024 * 1024;

/// Transport limits: connections, HTTP/2 streams, timeouts, memory held for
/// requests and answers (`--max-connections` and the flags next to it).
#[derive(Debug, Clone)]
pub struct TransportLimits {
    /// Connections open at once on each listener; a newcomer beyond it evicts
    /// the longest-idle connection, or is closed at once if none is idle.
    pub max_connections: usize,
    /// Connections one peer address may hold on one listener (0: no share).
    pub max_connections_per_peer: usize,
    /// Peer addresses the per-peer share does not apply to (a mesh sidecar's).
    pub per_peer_exempt: Vec<std::net::IpAddr>,
    /// HTTP/2 streams open at once on one connection (`MAX_CONCURRENT_STREAMS`).
    pub max_streams: u32,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout: std::time::Duration,
    /// HTTP/1: the request head must arrive within this long (also the
    /// keep-alive idle time between requests).
    pub header_read_timeout: std::time::Duration,
    /// Bytes of export request bodies held at once (received, not yet counted),
    /// both receivers together; a request that would exceed it is answered
    /// 503 / `UNAVAILABLE` (retryable).
    pub max_buffered_bytes: usize,
    /// An API answer not written within this long is dropped and its
    /// connection closed.
    pub api_write_timeout: std::time::Duration,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            per_peer_exempt: vec![DEFAULT_PER_PEER_EXEMPT.parse().expect("an IP address")],
            max_streams: DEFAULT_MAX_STREAMS,
            idle_timeout: std::time::Duration::from_secs(60),
            header_read_timeout: std::time::Duration::from_secs(10),
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            api_write_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// Settings of one sink.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Largest request body accepted, after decompression too.
    pub max_request_bytes: usize,
    /// Largest number of elements (resource spans, scope spans, spans, resource
    /// and span attributes) one request may carry; checked before decoding.
    pub max_request_elements: u64,
    /// Export requests decoded at once (both receivers together); more wait.
    pub max_concurrent_requests: usize,
    /// Longest time one export request may take to arrive and be processed.
    pub request_timeout: std::time::Duration,
    /// Cap on routes, agents and generator ids tracked (each); spans beyond it
    /// count in the totals and in `overflow_spans`.
    pub max_series: usize,
    /// Attribute keys of the generator node and the agent node.
    pub keys: AttributionKeys,
    /// If set, `POST /reset` requires `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Gaps tracked per generator before the oldest are frozen (memory bound).
    pub max_gaps_per_generator: usize,
    /// Gaps tracked across all generators (`--max-gaps`); past it the
    /// generators holding the most are frozen down to a fair share.
    pub max_gaps: usize,
    /// Connections, streams, timeouts and buffered bytes.
    pub transport: TransportLimits,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_request_elements: DEFAULT_MAX_REQUEST_ELEMENTS,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_series: DEFAULT_MAX_SERIES,
            keys: AttributionKeys::default(),
            api_token: None,
            max_gaps_per_generator: DEFAULT_MAX_GAPS_PER_GENERATOR,
            max_gaps: DEFAULT_MAX_GAPS,
            transport: TransportLimits::default(),
        }
    }
}
