//! The HTTP API: /stats, /reset, /check, /metrics, /healthz, /readyz.

mod common;

use common::*;
use trace_proto::check::CheckReport;
use trace_proto::stats::{SINK_STATS_SCHEMA, SinkStats};

/// /stats is the versioned JSON, with null for unknown nodes.
#[tokio::test]
async fn stats_json() {
    let sink = start_default().await;
    grpc_client(&sink)
        .await
        .export(request(Some("n1"), None, "g", 1..=2))
        .await
        .unwrap();
    let v: serde_json::Value = reqwest::get(api_url(&sink, "/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["schema"], SINK_STATS_SCHEMA);
    assert_eq!(v["spans_total"], 2);
    assert_eq!(v["routes"][0]["agent_node"], serde_json::Value::Null);
    assert_eq!(v["routes"][0]["generator_node"], "n1");
    assert!(v["since"].as_str().unwrap().ends_with('Z'));
    let typed: SinkStats = serde_json::from_value(v).unwrap();
    assert_eq!(typed, sink.stats());
    sink.shutdown().await;
}

/// /stats is written straight from the state: the same document as the typed
/// snapshot, byte for byte, for every table and kind of value; ?summary=true leaves the
/// tables out; bad parameters answer 400.
#[tokio::test]
async fn stats_written_directly_equals_the_snapshot() {
    let sink = start_default().await;
    let mut client = grpc_client(&sink).await;
    client
        .export(request(Some("n1"), Some("n1"), "g1", 1..=5))
        .await
        .unwrap();
    client
        .export(request(Some("n2"), Some("n1"), "g2", 3..=4))
        .await
        .unwrap();
    client
        .export(request(None, None, "g3", 7..=7))
        .await
        .unwrap();
    let get = |path: &'static str| {
        let url = api_url(&sink, path);
        async move {
            let r = reqwest::get(url).await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, full) = get("/stats").await;
    assert_eq!(status, 200);
    assert_eq!(full, serde_json::to_value(sink.stats()).unwrap());
    // Byte for byte what serde writes for the typed snapshot.
    let bytes = reqwest::get(api_url(&sink, "/stats"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(bytes.to_vec()).unwrap(),
        serde_json::to_string(&sink.stats()).unwrap()
    );
    assert_eq!(full["routes"].as_array().unwrap().len(), 3);
    assert_eq!(full["generators"][1]["missing"], 0);
    assert!(
        full["agents"][0]["peers"][0]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(get("/stats?summary=false").await.1, full);
    let (status, summary) = get("/stats?summary=true").await;
    assert_eq!(status, 200);
    assert_eq!(summary["summary"], true);
    assert_eq!(summary["spans_total"], 8);
    assert_eq!(summary["requests"], full["requests"]);
    for table in ["routes", "agents", "generators"] {
        assert!(summary.get(table).is_none(), "{table} in the summary");
    }
    for bad in [
        "/stats?summary=yes",
        "/stats?routes=false",
        "/stats?summary=true&summary=true",
    ] {
        assert_eq!(get(bad).await.0, 400, "{bad}");
    }
    sink.shutdown().await;
}

/// /reset zeroes everything and answers with the snapshot taken just before.
#[tokio::test]
async fn reset_returns_previous_snapshot() {
    let sink = start_default().await;
    grpc_client(&sink)
        .await
        .export(request(Some("n"), Some("n"), "g", 1..=5))
        .await
        .unwrap();
    let resp = reqwest::Client::new()
        .post(api_url(&sink, "/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let before: SinkStats = resp.json().await.unwrap();
    assert_eq!(before.spans_total, 5);
    let after = sink.stats();
    assert_eq!(after.spans_total, 0);
    assert!(after.routes.is_empty() && after.generators.is_empty() && after.requests.is_empty());
    assert!(after.since >= before.since);
    // Sequence tracking starts over: the next spans do not look like a gap.
    grpc_client(&sink)
        .await
        .export(request(Some("n"), Some("n"), "g", 6..=7))
        .await
        .unwrap();
    assert_eq!(sink.stats().generators[0].missing, 0);
    sink.shutdown().await;
}

/// With a token, /reset needs `Authorization: Bearer <token>`; without it, 401 and nothing is lost.
#[tokio::test]
async fn reset_token() {
    let sink = start(trace_sink::SinkConfig {
        api_token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    grpc_client(&sink)
        .await
        .export(request(Some("n"), Some("n"), "g", 1..=3))
        .await
        .unwrap();
    let c = reqwest::Client::new();
    for auth in [None, Some("Bearer wrong"), Some("s3cret")] {
        let mut b = c.post(api_url(&sink, "/reset"));
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let resp = b.send().await.unwrap();
        assert_eq!(resp.status(), 401, "auth {auth:?}");
        assert!(resp.text().await.unwrap().contains("Authorization: Bearer"));
    }
    assert_eq!(sink.stats().spans_total, 3);
    for wrong in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret"] {
        let resp = c
            .post(api_url(&sink, "/reset"))
            .header("authorization", wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{wrong}");
    }
    let resp = c
        .post(api_url(&sink, "/reset"))
        .header("authorization", "bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sink.stats().spans_total, 0);
    sink.shutdown().await;
}

async fn check(sink: &trace_sink::SinkHandle, query: &str) -> (u16, CheckReport) {
    let resp = reqwest::get(api_url(sink, &format!("/check?{query}")))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// /check: 200 when every condition holds, 412 with the failed ones in words otherwise.
#[tokio::test]
async fn check_each_condition() {
    let sink = start_default().await;
    let (status, r) = check(&sink, "").await;
    assert_eq!(status, 412, "min_spans defaults to 1");
    assert!(r.failures[0].message.contains("at least 1 spans"));
    assert_eq!(check(&sink, "min_spans=0").await.0, 200);

    let mut c = grpc_client(&sink).await;
    c.export(request(Some("a"), Some("a"), "ga", 1..=5))
        .await
        .unwrap();
    c.export(request(Some("b"), Some("b"), "gb", 1..=5))
        .await
        .unwrap();
    assert_eq!(
        check(
            &sink,
            "expect=local&min_spans=10&from_nodes=a,b&silent_nodes=c"
        )
        .await
        .0,
        200
    );
    let (status, r) = check(&sink, "min_spans=11").await;
    assert_eq!(status, 412);
    assert!(r.failures[0].message.contains("at least 11 spans, got 10"));
    let (status, r) = check(&sink, "from_nodes=a,c").await;
    assert_eq!(status, 412);
    assert_eq!(r.failures.len(), 1);
    assert!(r.failures[0].message.contains("node c"));
    let (status, r) = check(&sink, "silent_nodes=b").await;
    assert_eq!(status, 412);
    assert!(
        r.failures[0]
            .message
            .contains("expected no spans from generator node b, got 5")
    );

    c.export(request(Some("a"), Some("b"), "ga", 6..=6))
        .await
        .unwrap();
    let (status, r) = check(&sink, "expect=local").await;
    assert_eq!(status, 412);
    assert!(
        r.failures[0].message.contains("a -> b: 1"),
        "{:?}",
        r.failures
    );
    c.export(request(Some("a"), None, "ga", 7..=7))
        .await
        .unwrap();
    let (_, r) = check(&sink, "expect=local").await;
    assert_eq!(r.failures.len(), 2);

    let resp = reqwest::get(api_url(&sink, "/check?expect=everything"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = reqwest::get(api_url(&sink, "/check?min_spans=-1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    sink.shutdown().await;
}

/// /metrics is Prometheus text with spans per route and requests by outcome.
#[tokio::test]
async fn metrics_exposition() {
    let sink = start_default().await;
    grpc_client(&sink)
        .await
        .export(request(Some("a"), Some("b"), "g", 1..=3))
        .await
        .unwrap();
    let _ = reqwest::Client::new()
        .post(traces_url(&sink))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    let resp = reqwest::get(api_url(&sink, "/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(
            r#"trace_sink_spans_total{generator_node="a",agent_node="b",route="remote"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"trace_sink_requests_total{protocol="grpc",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"trace_sink_requests_total{protocol="http",outcome="unsupported_media_type"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("# TYPE trace_sink_spans counter"));
    // Counters are monotonic: /reset does not zero them.
    sink.reset();
    assert!(sink.metrics_text().contains(r#"route="remote"} 3"#));
    sink.shutdown().await;
}

/// /healthz and /readyz answer 200 while serving.
#[tokio::test]
async fn health_and_readiness() {
    let sink = start_default().await;
    assert_eq!(
        reqwest::get(api_url(&sink, "/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(api_url(&sink, "/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(api_url(&sink, "/nope"))
            .await
            .unwrap()
            .status(),
        404
    );
    sink.shutdown().await;
}

/// Shutdown stops the listeners.
#[tokio::test]
async fn shutdown_closes_listeners() {
    let sink = start_default().await;
    let api = api_url(&sink, "/healthz");
    sink.shutdown().await;
    assert!(reqwest::get(api).await.is_err());
}

/// `GET /` is the route matrix page: 200, the HTML compiled into the binary, as
/// UTF-8 HTML under a strict Content-Security-Policy; other paths stay 404.
#[tokio::test]
async fn page_at_root() {
    let sink = start_default().await;
    let r = reqwest::get(api_url(&sink, "/")).await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-"),
        "{csp}"
    );
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let body = r.text().await.unwrap();
    assert_eq!(body, trace_sink::page::HTML);
    assert!(body.starts_with("<!doctype html>"));
    assert!(body.contains("<table id=\"matrix\">"));
    let head = reqwest::Client::new()
        .head(api_url(&sink, "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        reqwest::get(api_url(&sink, "/index.html"))
            .await
            .unwrap()
            .status(),
        404
    );
    sink.shutdown().await;
}
