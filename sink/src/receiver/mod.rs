//! OTLP receivers: transport adapters. Each undoes its framing and
//! compression, hands the message to [`crate::ingest::Ingest::export`] (the one
//! ingest path) and maps the typed result to its status codes.

pub mod grpc;
pub mod http;

use std::io::Read;

/// Why [`gunzip`] refused a body.
#[derive(Debug)]
pub enum GunzipError {
    /// More than the limit once inflated.
    TooLarge,
    /// Not gzip, or cut off.
    Invalid(std::io::Error),
}

/// Inflates a gzip body, every member of it: a gzip stream may be several
/// members one after the other, and the reference readers (Go's
/// `compress/gzip` in grpc-go and the Collector's OTLP/HTTP receiver) read them
/// all. Stops as soon as the output passes `max` bytes, so a gzip bomb is cut
/// off, not inflated. Both receivers inflate with it, so OTLP/HTTP and
/// OTLP/gRPC read the same gzip body the same way.
pub fn gunzip(raw: &[u8], max: usize) -> Result<Vec<u8>, GunzipError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(raw)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(GunzipError::Invalid)?;
    if out.len() > max {
        return Err(GunzipError::TooLarge);
    }
    Ok(out)
}
