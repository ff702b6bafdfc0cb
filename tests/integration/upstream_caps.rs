//! What an upstream answer may make the proxy buffer: the held start of a stream (bytes and
//! events), aggregated answers and a translated stream's partial event, each capped and
//! counted against `--max-buffered-bytes` (issue 9, defect 3). Peak memory under a flood is
//! measured in `tests/process/caps.rs`.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::mock::event::{completed, created, delta};
use crate::mock::{sse_event, MockUpstream, Script};
use crate::proxy::TestProxy;
use crate::raw::{exchange, post, RawResponse};

const LIMIT: Duration = Duration::from_secs(15);

async fn send(proxy: &TestProxy, path: &str, body: serde_json::Value) -> RawResponse {
    exchange(
        proxy.addr,
        &post(proxy.addr, path, &body.to_string(), &[]),
        LIMIT,
    )
    .await
}

fn stream(chunks: Vec<String>) -> Script {
    Script::Respond {
        status: 200,
        headers: vec![("content-type", "text/event-stream".into())],
        chunks: chunks
            .into_iter()
            .map(|c| (Duration::from_millis(1), Bytes::from(c)))
            .collect(),
    }
}

fn rate_limits(pad: usize) -> String {
    sse_event(
        "codex.rate_limits",
        json!({"rate_limits":{"primary":{"used_percent":1.0}},"pad":"p".repeat(pad)}),
    )
}

fn responses_stream_request() -> serde_json::Value {
    json!({"model":"m","stream":true,"input":"x"})
}

#[tokio::test]
async fn a_stream_start_over_the_hold_back_caps_is_502_before_anything_is_sent() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &["--max-attempts", "1"]).await;
    // Bytes: five 1 MiB bootstrap events (over the 4 MiB cap), then content that never comes.
    let mut big = vec![created()];
    big.extend((0..5).map(|_| rate_limits(1 << 20)));
    big.extend([delta("late"), completed()]);
    // Events: 1,100 small bootstrap events (over the 1,024-event cap).
    let mut many = vec![created()];
    many.extend((0..1100).map(|_| rate_limits(0)));
    many.extend([delta("late"), completed()]);
    for chunks in [big, many] {
        mock.push(stream(chunks));
        let r = send(&proxy, "/v1/responses", responses_stream_request()).await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "upstream_response_too_large");
    }
    // Control: a stream whose start fits is served.
    mock.push(stream(vec![
        created(),
        rate_limits(1000),
        delta("hi"),
        completed(),
    ]));
    let r = send(&proxy, "/v1/responses", responses_stream_request()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(proxy.state.budget.used(), 0, "every share returned");
}

#[tokio::test]
async fn a_stream_start_over_max_buffered_bytes_is_503_proxy_overloaded() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(
        &mock.base_url,
        &["--max-attempts", "1", "--max-buffered-bytes", "65536"],
    )
    .await;
    mock.push(stream(vec![
        created(),
        rate_limits(40_000),
        rate_limits(40_000),
        delta("late"),
        completed(),
    ]));
    let r = send(&proxy, "/v1/responses", responses_stream_request()).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "proxy_overloaded");
    assert_eq!(proxy.state.budget.used(), 0);
}

#[tokio::test]
async fn an_aggregate_over_max_buffered_bytes_is_503_in_the_clients_dialect() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(
        &mock.base_url,
        &["--max-attempts", "1", "--max-buffered-bytes", "65536"],
    )
    .await;
    let chunks = || {
        let mut c = vec![created()];
        c.extend((0..100).map(|_| delta(&"d".repeat(1000))));
        c.push(completed());
        c
    };
    mock.push(stream(chunks()));
    let r = send(
        &proxy,
        "/v1/chat/completions",
        json!({"model":"gpt-5.4","messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "proxy_overloaded");
    mock.push(stream(chunks()));
    let r = send(
        &proxy,
        "/v1/messages",
        json!({"model":"gpt-5.4","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    assert_eq!(proxy.state.budget.used(), 0);
}

#[tokio::test]
async fn a_translated_streams_partial_event_over_max_buffered_bytes_ends_with_an_error_event() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(
        &mock.base_url,
        &["--max-attempts", "1", "--max-buffered-bytes", "65536"],
    )
    .await;
    let partial = format!(
        "event: response.output_text.delta\ndata: {{\"delta\":\"{}",
        "z".repeat(100_000)
    );
    mock.push(stream(vec![created(), delta("hello"), partial]));
    let r = send(
        &proxy,
        "/v1/chat/completions",
        json!({"model":"gpt-5.4","stream":true,"messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!r.complete, "an aborted transfer");
    let text = r.text();
    assert!(text.contains("hello"), "{text}");
    assert!(
        text.contains("Too many response bytes are buffered"),
        "{text}"
    );
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(
        tokio::time::timeout(LIMIT, async {
            while proxy.state.budget.used() != 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok(),
        "the share returns: {}",
        proxy.state.budget.used()
    );
}

#[tokio::test]
async fn a_chatgpt_accounts_aggregated_responses_answer_is_capped_at_16_mib() {
    let backend = MockUpstream::start("unused").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims =
        json!({"exp": now + 3600, "https://api.openai.com/auth": {"chatgpt_account_id": "acct-1"}});
    let access = format!(
        "{}.{}.sig",
        crate::chatgpt::b64url(br#"{"alg":"none","typ":"JWT"}"#),
        crate::chatgpt::b64url(claims.to_string().as_bytes())
    );
    let stdin = json!({"access_token": access, "refresh_token": "rt-caps", "account_id": "acct-1"})
        .to_string();
    let base = format!("http://{}/backend-api/codex", backend.addr);
    let proxy = TestProxy::start_with_input(
        &backend.base_url,
        &["--chatgpt-base-url", &base, "--max-attempts", "1"],
        stdin.as_bytes(),
    )
    .await;
    let one_mib = delta(&"a".repeat(1 << 20));
    let mut chunks = vec![created()];
    chunks.extend((0..20).map(|_| one_mib.clone()));
    chunks.push(completed());
    backend.push(stream(chunks));
    // Not streaming: the Codex backend only streams, so the proxy aggregates the answer.
    let r = send(
        &proxy,
        "/v1/responses",
        json!({"model":"gpt-5.4","input":"x"}),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_response_too_large");
    assert_eq!(backend.requests().len(), 1);
    assert_eq!(proxy.state.budget.used(), 0);
}
