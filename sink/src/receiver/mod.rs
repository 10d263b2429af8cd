//! OTLP receivers: transport adapters. Each undoes its framing and
//! compression, hands the message to [`crate::ingest::Ingest::export`] (the one
//! ingest path) and maps the typed result to its status codes.

pub mod grpc;
pub mod http;
