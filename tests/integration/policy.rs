//! Per-user policy from `--config` (`[users.NAME]`): the models allowlist and the concurrency
//! limit, each in the OpenAI and the Anthropic dialect. In-process, this test's own uid is the
//! restricted user (its requests go over raw sockets); "another user" is `nobody`, a real
//! client process run under that uid with `setpriv` (root only: skipped with a message
//! otherwise), whose requests must be served as if no policy existed.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::mock::event::{completed, created, delta};
use crate::mock::{MockUpstream, Script};
use crate::proxy::TestProxy;
use crate::raw::{self, RawResponse};

const LIMIT: Duration = Duration::from_secs(10);
const NOBODY: u32 = 65534;
const ANTHROPIC: (&str, &str) = ("anthropic-version", "2023-06-01");

fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn responses_body(model: &str) -> String {
    json!({"model": model, "input": "hi"}).to_string()
}

fn chat_body(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

fn messages_body(model: &str) -> String {
    json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

/// A `--config` file with `text`, removed when dropped.
struct PolicyFile(PathBuf);

impl PolicyFile {
    fn new(tag: &str, text: &str) -> PolicyFile {
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).unwrap();
        let path = std::env::temp_dir().join(format!(
            "codex-proxy-policy-{tag}-{:016x}.toml",
            u64::from_ne_bytes(raw)
        ));
        std::fs::write(&path, text).unwrap();
        PolicyFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for PolicyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn post(proxy: &TestProxy, path: &str, body: &str, headers: &[(&str, &str)]) -> RawResponse {
    raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, path, body, headers),
        LIMIT,
    )
    .await
}

/// One POST from a client process running as `uid`; its status. `None` when this test cannot
/// run processes as another user (not root).
async fn status_as(uid: u32, proxy: &TestProxy, path: &str, body: &str) -> Option<u16> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping the other-user half: needs root to run a client as uid {uid}");
        return None;
    }
    const CLIENT: &str = r#"
import http.client, sys
port, path, body = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
c.request("POST", path, body, {"content-type": "application/json",
                               "anthropic-version": "2023-06-01"})
r = c.getresponse()
r.read()
print(r.status)
"#;
    let mut cmd = crate::as_user::command_as(Some(uid), "/usr/bin/python3");
    cmd.args(["-c", CLIENT])
        .arg(proxy.addr.port().to_string())
        .args([path, body])
        .current_dir("/");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "client as {uid} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap())
}

fn assert_model_not_allowed_openai(response: &RawResponse) {
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(response.header("x-should-retry"), Some("false"));
    assert_eq!(
        response.json(),
        json!({"error": {"message": "This local user may not use this model (see the proxy's --config).",
            "type": "permission_error", "param": null, "code": "model_not_allowed"}})
    );
}

#[tokio::test]
async fn a_model_outside_the_users_globs_is_refused_in_its_dialect_and_another_user_is_served() {
    let mock = MockUpstream::start("allowed").await;
    let policy = PolicyFile::new(
        "models",
        &format!(
            "[users.{}]\nmodels = [\"gpt-5.4\", \"gpt-5-mini*\"]\n",
            my_uid()
        ),
    );
    let proxy = TestProxy::start(&mock.base_url, &["--config", policy.arg()]).await;

    let response = post(&proxy, "/v1/responses", &responses_body("o3"), &[]).await;
    assert_model_not_allowed_openai(&response);
    let response = post(&proxy, "/v1/chat/completions", &chat_body("o3"), &[]).await;
    assert_model_not_allowed_openai(&response);
    // No model at all: what the upstream would pick cannot be checked.
    let response = post(&proxy, "/v1/responses", r#"{"input":"hi"}"#, &[]).await;
    assert_model_not_allowed_openai(&response);
    let response = post(
        &proxy,
        "/v1/messages",
        &messages_body("claude-sonnet-4"),
        &[ANTHROPIC],
    )
    .await;
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(response.header("x-should-retry"), Some("false"));
    assert_eq!(
        response.json(),
        json!({"type": "error", "error": {"type": "permission_error",
            "message": "model_not_allowed: This local user may not use this model (see the proxy's --config)."}})
    );
    assert_eq!(mock.count(), 0, "no refused request may reach the upstream");

    // Matched as it goes upstream: `gpt-5.4-high` is gpt-5.4 with a high effort.
    let response = post(
        &proxy,
        "/v1/responses",
        &responses_body("gpt-5.4-high"),
        &[],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let response = post(
        &proxy,
        "/v1/chat/completions",
        &chat_body("gpt-5-mini"),
        &[],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let response = post(
        &proxy,
        "/v1/messages",
        &messages_body("gpt-5.4"),
        &[ANTHROPIC],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let sent: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["model"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(sent, ["gpt-5.4", "gpt-5-mini", "gpt-5.4"]);

    // Another local user has no section and no "*": every model is theirs.
    if let Some(status) = status_as(NOBODY, &proxy, "/v1/responses", &responses_body("o3")).await {
        assert_eq!(status, 200);
        let status = status_as(
            NOBODY,
            &proxy,
            "/v1/messages",
            &messages_body("claude-sonnet-4"),
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
        assert_eq!(mock.count(), 5);
    }
}

#[tokio::test]
async fn the_star_section_applies_to_users_without_their_own() {
    let mock = MockUpstream::start("star").await;
    let policy = PolicyFile::new(
        "star",
        &format!("[users.\"*\"]\nmodels = [\"gpt-5.4\"]\n\n[users.{NOBODY}]\n"),
    );
    let proxy = TestProxy::start(&mock.base_url, &["--config", policy.arg()]).await;
    let response = post(&proxy, "/v1/responses", &responses_body("o3"), &[]).await;
    assert_model_not_allowed_openai(&response);
    // nobody's own (empty) section wins over "*".
    if let Some(status) = status_as(NOBODY, &proxy, "/v1/responses", &responses_body("o3")).await {
        assert_eq!(status, 200);
        assert_eq!(mock.count(), 1);
    }
}

fn assert_concurrency_openai(response: &RawResponse) {
    assert_eq!(response.status, 429, "{}", response.text());
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(response.header("x-should-retry"), None);
    assert_eq!(response.json()["error"]["code"], "user_concurrency_limit");
    assert_eq!(response.json()["error"]["type"], "rate_limit_error");
}

/// A proxy where this test's user may have one request in flight, and that request: a stream
/// held open by the mock after its first delta, read by the client up to that delta.
struct HeldStream {
    mock: MockUpstream,
    proxy: TestProxy,
    stream: TcpStream,
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::UnboundedSender<Bytes>,
    _policy: PolicyFile,
}

async fn hold_one_stream(tag: &str) -> HeldStream {
    let mock = MockUpstream::start(tag).await;
    let (gated, tx) = Script::gated_sse();
    mock.push(gated);
    let policy = PolicyFile::new(tag, &format!("[users.{}]\nmax_concurrent = 1\n", my_uid()));
    let proxy = TestProxy::start(&mock.base_url, &["--config", policy.arg()]).await;
    let body = json!({"model": "gpt-5.4", "input": "hi", "stream": true}).to_string();
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(&raw::post(proxy.addr, "/v1/responses", &body, &[]))
        .await
        .unwrap();
    assert!(mock.wait_requests(1, LIMIT).await);
    tx.send(Bytes::from([created(), delta("holding")].concat()))
        .unwrap();
    let mut buf = Vec::new();
    assert!(raw::read_until(&mut stream, &mut buf, b"holding", LIMIT).await);
    HeldStream {
        mock,
        proxy,
        stream,
        buf,
        tx,
        _policy: policy,
    }
}

/// Waits until this test's user holds no slot, then checks it is served again.
async fn assert_slot_released_and_served_again(proxy: &TestProxy) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while proxy.state.policies.in_flight(Some(my_uid())) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let response = post(proxy, "/v1/responses", &responses_body("gpt-5.4"), &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
}

#[tokio::test]
async fn beyond_max_concurrent_the_user_gets_429_until_the_stream_holding_the_slot_ends() {
    // The held request's handler has long returned: the slot must still be held by the body.
    let HeldStream {
        mock,
        proxy,
        mut stream,
        buf,
        tx,
        _policy,
    } = hold_one_stream("concurrency").await;

    let response = post(&proxy, "/v1/responses", &responses_body("gpt-5.4"), &[]).await;
    assert_concurrency_openai(&response);
    let response = post(&proxy, "/v1/chat/completions", &chat_body("gpt-5.4"), &[]).await;
    assert_concurrency_openai(&response);
    let response = post(
        &proxy,
        "/v1/messages",
        &messages_body("gpt-5.4"),
        &[ANTHROPIC],
    )
    .await;
    assert_eq!(response.status, 429, "{}", response.text());
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(response.header("x-should-retry"), None);
    assert_eq!(response.json()["type"], "error");
    assert_eq!(response.json()["error"]["type"], "rate_limit_error");
    // Local answers hold no slot.
    let count = post(
        &proxy,
        "/v1/messages/count_tokens",
        &messages_body("gpt-5.4"),
        &[ANTHROPIC],
    )
    .await;
    assert_eq!(count.status, 200, "{}", count.text());
    assert_eq!(
        mock.count(),
        1,
        "refused requests must not reach the upstream"
    );

    // Another user is not limited by this user's slots.
    if let Some(status) = status_as(NOBODY, &proxy, "/v1/messages", &messages_body("gpt-5.4")).await
    {
        assert_eq!(status, 200);
        assert_eq!(mock.count(), 2);
    }

    // The stream ends: its slot is released with the body, and the user is served again.
    tx.send(Bytes::from(completed())).unwrap();
    drop(tx);
    let first = raw::read_rest(&mut stream, buf, LIMIT).await;
    assert_eq!(first.status, 200);
    assert!(first.complete, "{}", first.text());
    assert_slot_released_and_served_again(&proxy).await;
}

#[tokio::test]
async fn a_client_that_goes_away_mid_stream_releases_its_slot() {
    let HeldStream {
        proxy,
        stream,
        tx,
        _policy,
        ..
    } = hold_one_stream("abandon").await;
    assert_eq!(proxy.state.policies.in_flight(Some(my_uid())), 1);
    drop(stream);
    assert_slot_released_and_served_again(&proxy).await;
    drop(tx);
}

/// A non-streamed Responses answer whose usage is `input` + `output` tokens.
fn answer_using(input: u64, output: u64) -> Script {
    Script::json(
        200,
        &json!({"id": "resp_b", "object": "response", "status": "completed", "model": "gpt-5.4",
            "output": [{"id": "msg_1", "type": "message", "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "ok", "annotations": []}]}],
            "usage": {"input_tokens": input, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input + output},
            "metadata": {}})
        .to_string(),
    )
}

/// The `response.completed` event of a stream whose usage is `input` + `output` tokens.
fn completed_using(input: u64, output: u64) -> String {
    crate::mock::sse_event(
        "response.completed",
        json!({"response": {"id": "resp_s", "status": "completed", "model": "gpt-5.4",
            "output": [{"id": "msg_1", "type": "message", "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "holding", "annotations": []}]}],
            "usage": {"input_tokens": input, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input + output}}}),
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Checks a `user_budget_exhausted` refusal: 429, no `x-should-retry: false`, and a
/// `Retry-After` that is the seconds to the end of the hour window (epoch-aligned).
fn assert_budget_exhausted(response: &RawResponse, anthropic: bool) {
    assert_eq!(response.status, 429, "{}", response.text());
    assert_eq!(response.header("x-should-retry"), None);
    let retry_after: u64 = response.header("retry-after").unwrap().parse().unwrap();
    let expected = 3_600 - unix_now() % 3_600;
    assert!(
        retry_after.abs_diff(expected) <= 2 && retry_after >= 1,
        "Retry-After {retry_after}, window ends in {expected}"
    );
    let body = response.json();
    if anthropic {
        assert_eq!(body["type"], "error", "{body}");
        assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    } else {
        assert_eq!(body["error"]["code"], "user_budget_exhausted", "{body}");
        assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    }
}

/// This test's own row of `GET /usage`.
async fn my_usage_row(proxy: &TestProxy) -> serde_json::Value {
    let response = raw::exchange(proxy.addr, &raw::get(proxy.addr, "/usage", &[]), LIMIT).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let document = response.json();
    document["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["uid"] == my_uid())
        .cloned()
        .unwrap_or_else(|| panic!("no row for {}: {document}", my_uid()))
}

/// Waits until the proxy has charged `tokens` to this test's user (a request is charged when
/// its body is done with, just after the client has read it).
async fn wait_spent(proxy: &TestProxy, tokens: u64) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while proxy.state.policies.spent(Some(my_uid()), unix_now()) != tokens {
        assert!(
            tokio::time::Instant::now() < deadline,
            "spent {} tokens, expected {tokens}",
            proxy.state.policies.spent(Some(my_uid()), unix_now())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_spent_budget_is_429_until_the_window_ends_in_both_dialects_and_in_flight_requests_count()
{
    // Windows are aligned to the hour: start well inside one so the test does not straddle two.
    let into_hour = unix_now() % 3_600;
    if into_hour > 3_540 {
        tokio::time::sleep(Duration::from_secs(3_600 - into_hour + 1)).await;
    }
    let mock = MockUpstream::start("budget").await;
    let policy = PolicyFile::new(
        "budget",
        &format!(
            "[users.{}]\ntoken_budget = 100\nbudget_window = \"1h\"\n\n\
             [users.\"*\"]\ntoken_budget = 1000\nbudget_window = \"1h\"\n",
            my_uid()
        ),
    );
    let proxy = TestProxy::start(&mock.base_url, &["--config", policy.arg()]).await;

    // 80 of 100 tokens.
    mock.push(answer_using(50, 30));
    let response = post(&proxy, "/v1/responses", &responses_body("gpt-5.4"), &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    wait_spent(&proxy, 80).await;
    let row = my_usage_row(&proxy).await;
    assert_eq!(
        (row["budget"].as_u64(), row["remaining"].as_u64()),
        (Some(100), Some(20)),
        "{row}"
    );

    // A stream goes in flight while 20 tokens are left...
    let (gated, tx) = Script::gated_sse();
    mock.push(gated);
    let body = json!({"model": "gpt-5.4", "input": "hi", "stream": true}).to_string();
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(&raw::post(proxy.addr, "/v1/responses", &body, &[]))
        .await
        .unwrap();
    assert!(mock.wait_requests(2, LIMIT).await);
    tx.send(Bytes::from([created(), delta("holding")].concat()))
        .unwrap();
    let mut buf = Vec::new();
    assert!(raw::read_until(&mut stream, &mut buf, b"holding", LIMIT).await);

    // ...and another request spends them: the budget runs out while the stream is in flight.
    mock.push(Script::sse(
        &[created(), delta("ok"), completed_using(15, 5)],
        Duration::ZERO,
    ));
    let response = post(&proxy, "/v1/chat/completions", &chat_body("gpt-5.4"), &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    wait_spent(&proxy, 100).await;

    let response = post(&proxy, "/v1/responses", &responses_body("gpt-5.4"), &[]).await;
    assert_budget_exhausted(&response, false);
    let response = post(&proxy, "/v1/chat/completions", &chat_body("gpt-5.4"), &[]).await;
    assert_budget_exhausted(&response, false);
    let response = post(
        &proxy,
        "/v1/messages",
        &messages_body("gpt-5.4"),
        &[ANTHROPIC],
    )
    .await;
    assert_budget_exhausted(&response, true);
    assert_eq!(
        mock.count(),
        3,
        "refused requests must not reach the upstream"
    );

    // The stream in flight finishes, and what it reported is counted too.
    tx.send(Bytes::from(completed_using(4, 3))).unwrap();
    drop(tx);
    let held = raw::read_rest(&mut stream, buf, LIMIT).await;
    assert_eq!(held.status, 200);
    assert!(held.complete, "{}", held.text());
    wait_spent(&proxy, 107).await;

    // /usage: remaining never negative, and the window's end.
    let row = my_usage_row(&proxy).await;
    assert_eq!(row["budget"], 100, "{row}");
    assert_eq!(row["remaining"], 0, "{row}");
    assert_eq!(row["input_tokens"], 69, "{row}");
    assert_eq!(row["output_tokens"], 38, "{row}");
    let now = unix_now();
    let window_end = now - now % 3_600 + 3_600;
    assert_eq!(
        row["window_ends_at"],
        codex_proxy::secret::jwt::format_rfc3339(i64::try_from(window_end).unwrap()),
        "{row}"
    );

    // Another user has a budget of their own (`"*"`), untouched by this user's: served.
    if let Some(status) = status_as(NOBODY, &proxy, "/v1/messages", &messages_body("gpt-5.4")).await
    {
        assert_eq!(status, 200);
        assert_eq!(mock.count(), 4);
    }
    proxy.shutdown().await;
}
