//! How an export request ended, as counted in `/stats` `requests`, in
//! `/metrics` `trace_sink_requests_total` and in the README: one enum per
//! label, one label per variant. The types are trace-proto's (the keys of
//! `SinkStats::requests`); this module holds the README to them.

pub use trace_proto::outcome::{Outcome, Via};

#[cfg(test)]
mod tests {
    use super::*;
    use trace_proto::protocol::Protocol;

    /// Every label is documented in the README's table of request outcomes.
    #[test]
    fn every_outcome_is_in_the_readme() {
        let readme = include_str!("../../README.md");
        for o in Outcome::ALL {
            assert!(
                readme.contains(&format!("`{}`", o.as_str())),
                "README does not mention outcome `{o}`"
            );
        }
        for v in [
            Via::Http,
            Via::Otlp(Protocol::Grpc),
            Via::Otlp(Protocol::HttpProtobuf),
            Via::Otlp(Protocol::HttpJson),
        ] {
            assert!(readme.contains(&format!("`{}`", v.as_str())));
        }
    }
}
