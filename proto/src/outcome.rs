//! How an export request to trace-sink ended, and what it is counted under:
//! the keys of its `/stats` `requests` (`{"grpc": {"ok": 3}}`) and the labels
//! of `/metrics` `trace_sink_requests_total`. One enum per label set, one
//! label per variant; a test in trace-sink holds the README to the list.

use crate::label::label_traits;
use crate::protocol::Protocol;

/// What a request is counted under: the protocol, or plain `http` when an
/// OTLP/HTTP request was rejected before its encoding was known (bad method,
/// path or content type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A known protocol.
    Otlp(Protocol),
    /// OTLP/HTTP, encoding unknown.
    Http,
    /// A label this version does not know (read from a newer sink's `/stats`).
    Unknown,
}

impl Via {
    /// Every label a sink writes.
    pub const ALL: [Via; 4] = [
        Via::Otlp(Protocol::Grpc),
        Via::Otlp(Protocol::HttpProtobuf),
        Via::Otlp(Protocol::HttpJson),
        Via::Http,
    ];

    /// Label in `/stats` and `/metrics`: `grpc`, `http_protobuf`, `http_json`,
    /// `http` (`unknown` for [`Via::Unknown`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Otlp(p) => p.label(),
            Via::Http => "http",
            Via::Unknown => "unknown",
        }
    }

    /// The variant of a label; [`Via::Unknown`] for any other.
    pub fn from_label(s: &str) -> Self {
        Via::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .unwrap_or(Via::Unknown)
    }
}

label_traits!(Via, "a request protocol label");

impl From<Protocol> for Via {
    fn from(p: Protocol) -> Self {
        Via::Otlp(p)
    }
}

/// The outcome of one export request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted.
    Ok,
    /// Undecodable body (HTTP 400, gRPC INVALID_ARGUMENT).
    BadRequest,
    /// Body over `--max-request-bytes` or `--max-request-elements` (HTTP 413,
    /// gRPC RESOURCE_EXHAUSTED).
    TooLarge,
    /// Content type or encoding not supported (HTTP 415).
    UnsupportedMediaType,
    /// Wrong HTTP method (405).
    MethodNotAllowed,
    /// Unknown path (HTTP 404).
    NotFound,
    /// gRPC UNIMPLEMENTED: unknown method or unsupported `grpc-encoding`.
    Unimplemented,
    /// The request did not arrive within `--request-timeout` (HTTP 408, gRPC
    /// DEADLINE_EXCEEDED/CANCELLED).
    Timeout,
    /// The sink held `--max-buffered-bytes` of request bodies already (HTTP
    /// 503 with `Retry-After`, gRPC UNAVAILABLE; both retryable).
    Busy,
    /// Any other gRPC error.
    Error,
    /// A label this version does not know (read from a newer sink's `/stats`);
    /// a sink never counts a request under it.
    Unknown,
}

impl Outcome {
    /// Every outcome a sink counts, in the order the README lists them.
    pub const ALL: [Outcome; 10] = [
        Outcome::Ok,
        Outcome::BadRequest,
        Outcome::TooLarge,
        Outcome::UnsupportedMediaType,
        Outcome::MethodNotAllowed,
        Outcome::NotFound,
        Outcome::Unimplemented,
        Outcome::Timeout,
        Outcome::Busy,
        Outcome::Error,
    ];

    /// Label in `/stats`, `/metrics` and logs (`unknown` for [`Outcome::Unknown`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BadRequest => "bad_request",
            Outcome::TooLarge => "too_large",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::NotFound => "not_found",
            Outcome::Unimplemented => "unimplemented",
            Outcome::Timeout => "timeout",
            Outcome::Busy => "busy",
            Outcome::Error => "error",
            Outcome::Unknown => "unknown",
        }
    }

    /// The variant of a label; [`Outcome::Unknown`] for any other.
    pub fn from_label(s: &str) -> Self {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .unwrap_or(Outcome::Unknown)
    }
}

label_traits!(Outcome, "a request outcome label");

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Labels round-trip through JSON as plain strings, maps keyed by them
    /// keep the order of their labels and index by label, and a label this
    /// version does not know reads as `Unknown` instead of failing.
    #[test]
    fn labels_round_trip_and_unknown_is_accepted() {
        for v in Via::ALL {
            assert_eq!(Via::from_label(v.as_str()), v);
        }
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_label(o.as_str()), o);
        }
        let doc = r#"{"grpc":{"ok":2,"bad_request":1},"http":{"not_found":1},"quic":{"shed":4}}"#;
        let m: BTreeMap<Via, BTreeMap<Outcome, u64>> = serde_json::from_str(doc).unwrap();
        assert_eq!(m["grpc"]["ok"], 2);
        assert_eq!(m[&Via::Otlp(Protocol::Grpc)][&Outcome::BadRequest], 1);
        assert_eq!(m[&Via::Unknown][&Outcome::Unknown], 4);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"grpc":{"bad_request":1,"ok":2},"http":{"not_found":1},"unknown":{"unknown":4}}"#
        );
    }
}
