//! OTLP receivers. Both attribute the whole request without a lock, then merge
//! it into the accounting once ([`crate::stats::Accounting::ingest`]).

pub mod grpc;
pub mod http;
