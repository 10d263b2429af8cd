//! The OTLP wire protocols, spelled once for both sides.
//!
//! One concept, two documented spellings: the OpenTelemetry specification's
//! names (`grpc`, `http/protobuf`, `http/json`: trace-gen's `--protocol`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL`, its `/stats` `protocol` field) and the label
//! trace-sink uses as a JSON key and Prometheus label (`grpc`, `http_protobuf`,
//! `http_json`). Both are contracts (docs/trace-gen.md, docs/trace-sink.md), so both live here.

use std::fmt;
use std::str::FromStr;

/// An OTLP wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    HttpJson,
}

/// A protocol name that is none of the specification's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid protocol {0:?}: use grpc, http/protobuf or http/json")]
pub struct UnknownProtocol(pub String);

impl Protocol {
    /// Every protocol.
    pub const ALL: [Protocol; 3] = [Protocol::Grpc, Protocol::HttpProtobuf, Protocol::HttpJson];

    /// The specification's name: `grpc`, `http/protobuf`, `http/json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
    }

    /// trace-sink's label in `/stats` `requests` and `/metrics`:
    /// `grpc`, `http_protobuf`, `http_json`.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http_protobuf",
            Protocol::HttpJson => "http_json",
        }
    }

    /// Parses the specification's name (surrounding blanks ignored).
    pub fn parse(s: &str) -> Result<Self, UnknownProtocol> {
        let s = s.trim();
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownProtocol(s.to_owned()))
    }

    /// True for the two OTLP/HTTP encodings.
    pub fn is_http(self) -> bool {
        !matches!(self, Protocol::Grpc)
    }
}

impl FromStr for Protocol {
    type Err = UnknownProtocol;
    fn from_str(s: &str) -> Result<Self, UnknownProtocol> {
        Protocol::parse(s)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::parse(p.as_str()), Ok(p));
            assert_eq!(p.label(), p.as_str().replace('/', "_"));
        }
        assert_eq!(Protocol::parse(" http/json "), Ok(Protocol::HttpJson));
        let e = Protocol::parse("http_json").unwrap_err();
        assert!(
            e.to_string()
                .contains("use grpc, http/protobuf or http/json")
        );
    }
}
