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
            max_gaps_per_generator: 1024,
        }
    }
}
