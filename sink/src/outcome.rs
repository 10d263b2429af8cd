//! How an export request ended, as counted in `/stats` `requests`, in
//! `/metrics` `trace_sink_requests_total` and in docs/trace-sink.md: one enum per
//! label, one label per variant.

use std::fmt;

use trace_proto::protocol::Protocol;

/// What a request is counted under: the protocol, or plain `http` when an
/// OTLP/HTTP request was rejected before its encoding was known (bad method,
/// path or content type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Via {
    /// A known protocol.
    Otlp(Protocol),
    /// OTLP/HTTP, encoding unknown.
    Http,
}

impl Via {
    /// Label in `/stats` and `/metrics`: `grpc`, `http_protobuf`, `http_json`, `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Otlp(p) => p.label(),
            Via::Http => "http",
        }
    }
}

impl From<Protocol> for Via {
    fn from(p: Protocol) -> Self {
        Via::Otlp(p)
    }
}

/// The outcome of one export request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
}

impl Outcome {
    /// Every outcome, in the order docs/trace-sink.md lists them.
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

    /// Label in `/stats`, `/metrics` and logs.
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
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every label is a row of the tables of request outcomes and protocols in
    /// docs/trace-sink.md, the outcomes in `Outcome::ALL`'s order, and no row is
    /// a label the sink does not count.
    #[test]
    fn every_outcome_is_in_the_docs() {
        let doc = include_str!("../../docs/trace-sink.md");
        // The first column of the table whose header row starts with `header`.
        let rows = |header: &str| -> Vec<String> {
            doc.lines()
                .skip_while(|l| !l.starts_with(header))
                .skip(2)
                .take_while(|l| l.starts_with('|'))
                .map(|l| l.split('|').nth(1).unwrap_or_default().trim().to_string())
                .collect()
        };
        let outcomes: Vec<String> = Outcome::ALL
            .iter()
            .map(|o| format!("`{}`", o.as_str()))
            .collect();
        assert_eq!(
            rows("| outcome |"),
            outcomes,
            "docs/trace-sink.md outcome table"
        );
        let mut protocols: Vec<String> = [
            Via::Http,
            Via::Otlp(Protocol::Grpc),
            Via::Otlp(Protocol::HttpProtobuf),
            Via::Otlp(Protocol::HttpJson),
        ]
        .iter()
        .map(|v| format!("`{}`", v.as_str()))
        .collect();
        let mut documented = rows("| protocol |");
        protocols.sort();
        documented.sort();
        assert_eq!(documented, protocols, "docs/trace-sink.md protocol table");
    }
}
