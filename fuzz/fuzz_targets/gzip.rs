//! gzip and the gRPC unary framing: any bytes inflate within the limit or are
//! refused, never a panic; any bytes gzipped as two members read back whole,
//! through `gunzip` (both receivers) and through a gRPC frame.
#![no_main]

use std::io::Write;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use trace_sink::receiver::{grpc::unary_message, gunzip};

const MAX: usize = 1 << 20;

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = gunzip(data, MAX) {
        assert!(out.len() <= MAX);
    }
    for compressed in [false, true] {
        if let Ok(m) = unary_message(Bytes::copy_from_slice(data), compressed, MAX) {
            assert!(m.len() <= MAX);
        }
    }
    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let members = [gz(&data[..cut]), gz(&data[cut..])].concat();
    assert_eq!(gunzip(&members, MAX).unwrap(), data);
    let mut frame = vec![1];
    frame.extend_from_slice(&(members.len() as u32).to_be_bytes());
    frame.extend_from_slice(&members);
    assert_eq!(&unary_message(frame.into(), true, MAX).unwrap()[..], data);
});
