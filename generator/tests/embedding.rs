//! tests/routes.rs: trace-gen sends 100 spans straight to an in-process trace-sink.

use tokio::net::TcpListener;
use trace_proto::check::{Conditions, evaluate};

/// Every span arrives. With no agent in between, nothing stamps `agent.node.name`,
/// so the route is unattributed and `expect_local` fails.
#[tokio::test]
async fn spans_reach_the_sink() -> Result<(), Box<dyn std::error::Error>> {
    let sink = trace_sink::SinkBuilder::new(trace_sink::SinkConfig::default())
        .grpc(TcpListener::bind("127.0.0.1:0").await?)
        .start()?;
    let grpc = sink.grpc_addr().expect("a gRPC listener was given");

    let mut config = trace_gen::GenConfig::new("node-1");
    config.exporter.endpoint = trace_gen::config::Endpoint::parse(&format!("http://{grpc}"))?;
    config.count = Some(100);
    config.rate = 0.0; // as fast as possible (default: 10 spans/s)
    let summary = trace_gen::Generator::new(config)?
        .run(std::future::pending()) // ends after `count`; any future stops it sooner
        .await;
    assert_eq!(summary.spans_accepted, 100);

    let stats = sink.stats(); // trace_proto::stats::SinkStats, the /stats JSON
    assert_eq!(stats.spans_total, 100);
    assert_eq!(stats.unattributed_spans, 100);
    let route = &stats.routes[0];
    assert_eq!(route.generator_node.as_deref(), Some("node-1"));
    assert_eq!(route.agent_node, None);

    let local_only = Conditions {
        expect_local: true,
        ..Default::default()
    };
    assert!(!evaluate(&stats, &local_only).pass);

    sink.shutdown().await;
    Ok(())
}
