//! What the real binary logs about refused requests: the method, the path and why, at INFO,
//! never the query or a header; and `HEAD /` (Claude Code's probe) is a served request, not a
//! refusal.

use std::time::Duration;

use crate::mock::MockUpstream;
use crate::raw::{exchange, post};
use crate::spawn::{start, temp_dir, Launch};

/// Put in the query and a header of a refused request: no log line may contain it.
const MARKER: &str = "zqxRefusalMarker3k";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_logs_its_method_path_and_reason_but_never_its_query_or_headers() {
    let mock = MockUpstream::start("unused").await;
    let dir = temp_dir("refusal-log");
    let launch = Launch {
        args: vec![
            "--upstream-url".into(),
            mock.base_url.clone(),
            "--log-format".into(),
            "json".into(),
        ],
        stdin: b"sk-refusal-log-test\n",
        as_uid: None,
        env: vec![],
    };
    let proxy = start(launch, &dir);
    let limit = Duration::from_secs(10);
    let target = format!("/v1/v1/messages?beta=true&q={MARKER}");
    let body = r#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
    let refused = exchange(
        proxy.addr,
        &post(proxy.addr, &target, body, &[("x-api-key", MARKER)]),
        limit,
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let probe = format!(
        "HEAD / HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n\r\n",
        proxy.addr.port()
    );
    let probed = exchange(proxy.addr, probe.as_bytes(), limit).await;
    assert_eq!(probed.status, 200);
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{status}: {logs}");

    assert!(
        !logs.contains(MARKER),
        "the query or a header was logged: {logs}"
    );
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let refusals: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "request refused")
        .collect();
    assert_eq!(refusals.len(), 1, "one refusal line: {logs}");
    let line = refusals[0];
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["method"], "POST", "{line}");
    assert_eq!(line["path"], "/v1/v1/messages", "{line}");
    assert_eq!(line["status"], 403, "{line}");
    assert_eq!(line["reason"], "v1_doubled", "{line}");

    let probe_line = lines
        .iter()
        .find(|l| l["message"] == "request" && l["route"] == "probe")
        .unwrap_or_else(|| panic!("no request line for the probe: {logs}"));
    assert_eq!(probe_line["status"], 200, "{probe_line}");
    assert_eq!(mock.count(), 0);
}
