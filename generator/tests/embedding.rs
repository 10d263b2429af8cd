//! The README's "Embedding in Rust test suites" example, compiled and run as written.

use tokio::net::TcpListener;

/// The example from the README works as shown.
#[tokio::test]
async fn readme_example() -> Result<(), Box<dyn std::error::Error>> {
    let sink = trace_sink::SinkBuilder::new(trace_sink::SinkConfig::default())
        .grpc(TcpListener::bind("127.0.0.1:0").await?)
        .api(TcpListener::bind("127.0.0.1:0").await?)
        .start()?;

    let mut config = trace_gen::GenConfig::new("node-1");
    config.exporter.endpoint =
        trace_gen::config::Endpoint::parse(&format!("http://{}", sink.grpc_addr().unwrap()))?;
    config.count = Some(100);
    config.rate = 0.0; // as fast as possible (default: 10 spans/s)
    let generator = trace_gen::Generator::new(config)?;
    let live = generator.counters(); // readable while it runs
    let summary = generator.run(std::future::pending()).await; // any future stops it

    let stats: trace_proto::stats::SinkStats = sink.stats(); // the /stats JSON type
    assert_eq!(stats.spans_total, summary.spans_accepted);
    let verdict = trace_proto::check::evaluate(
        &stats,
        &trace_proto::check::Conditions {
            expect_local: true,
            ..Default::default()
        },
    );
    sink.shutdown().await;

    assert_eq!(summary.spans_accepted, 100);
    assert_eq!(live.report().spans_sent, 100);
    assert!(
        !verdict.pass,
        "no agent stamped the spans: unattributed, so not local"
    );
    Ok(())
}
