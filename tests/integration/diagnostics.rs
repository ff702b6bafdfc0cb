//! Diagnostics a user reads: `/health` says when the upstream cannot be reached, and why, until
//! it answers again. (The log lines themselves are checked on the real binary, in
//! `tests/process/diagnostics.rs`.)

use std::time::Duration;

use crate::mock::MockUpstream;
use crate::proxy::{TestProxy, CANARY_KEY};
use crate::raw;

const LIMIT: Duration = Duration::from_secs(10);
const JSON_BODY: &str = r#"{"model":"mock-model","input":"say something"}"#;

/// A loopback port with nothing listening on it (bound, then released).
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

async fn health(proxy: &TestProxy) -> serde_json::Value {
    let response = raw::exchange(proxy.addr, &raw::get(proxy.addr, "/health", &[]), LIMIT).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(!response.text().contains(CANARY_KEY));
    response.json()
}

#[tokio::test]
async fn health_reports_a_failing_upstream_until_it_answers_again() {
    let port = closed_port().await;
    let proxy = TestProxy::start(
        &format!("http://127.0.0.1:{port}/v1"),
        &["--max-attempts", "2"],
    )
    .await;
    let before = health(&proxy).await;
    assert_eq!(
        before["upstream"],
        serde_json::json!({"status":"ok","host":null,"last_error":null,"failing_for_s":null,"failures":0})
    );

    let refused = raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, "/v1/responses", JSON_BODY, &[]),
        LIMIT,
    )
    .await;
    assert_eq!(refused.status, 502, "{}", refused.text());
    let failing = health(&proxy).await;
    let upstream = &failing["upstream"];
    assert_eq!(upstream["status"], "failing", "{failing}");
    assert_eq!(upstream["host"], format!("127.0.0.1:{port}"), "{failing}");
    assert_eq!(upstream["failures"], 2, "both attempts failed: {failing}");
    let why = upstream["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("Connection refused"), "{failing}");
    // The pool's own fields are unchanged: a network fault is not the account's.
    assert_eq!(failing["status"], "ok", "{failing}");
    assert_eq!(failing["accounts"][0]["state"], "active", "{failing}");

    // Still failing on the next look; then the upstream comes up and answers.
    assert_eq!(health(&proxy).await["upstream"]["status"], "failing");
    let mock = MockUpstream::start_on(port, "back", 1, Duration::ZERO).await;
    let answered = raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, "/v1/responses", JSON_BODY, &[]),
        LIMIT,
    )
    .await;
    assert_eq!(answered.status, 200, "{}", answered.text());
    assert_eq!(mock.count(), 1);
    assert_eq!(health(&proxy).await["upstream"]["status"], "ok");
    proxy.shutdown().await;
}
