//! How an export request ended, as counted in `/stats` `requests`, in
//! `/metrics` `trace_sink_requests_total` and in docs/trace-sink.md: one enum
//! per label, one label per variant. The types are trace-proto's (the keys of
//! `SinkStats::requests`); this module holds the docs' tables to them.

pub use trace_proto::outcome::{Outcome, Via};

#[cfg(test)]
mod tests {
    use super::*;
    use trace_proto::protocol::Protocol;

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
