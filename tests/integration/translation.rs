//! The translated routes end to end: Chat Completions and Anthropic Messages clients against a
//! Responses mock, through the real proxy — streaming event by event, aggregated answers,
//! pre-commit failover, errors before and after output in each dialect, the local routes, and
//! a ChatGPT account's non-streaming `/v1/responses` answered from its stream.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::mock::event::{completed, created, delta, in_progress};
use crate::mock::{responses_stream, sse_event, MockUpstream, Script};
use crate::proxy::TestProxy;
use crate::raw::{self, RawResponse};

const LIMIT: Duration = Duration::from_secs(15);

async fn post(
    proxy: &TestProxy,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> RawResponse {
    raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, path, &body.to_string(), headers),
        LIMIT,
    )
    .await
}

/// The `data:` payloads of an SSE body, in order.
fn data_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// `event:` names of an SSE body, in order.
fn event_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(str::to_string)
        .collect()
}

fn chat(stream: bool) -> Value {
    json!({"model":"gpt-5.4","stream":stream,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]})
}

fn messages(stream: bool) -> Value {
    json!({"model":"gpt-5.4","max_tokens":64,"stream":stream,"system":"be brief","messages":[{"role":"user","content":"hi"}]})
}

#[tokio::test]
async fn a_chat_stream_is_translated_chunk_by_chunk_and_ends_with_done() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    mock.push(Script::sse(
        &responses_stream("one two three", 3),
        Duration::from_millis(5),
    ));
    let response = post(&proxy, "/v1/chat/completions", &chat(true), &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let data = data_lines(&response.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let text: String = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "one two three");
    // Upstream got a streaming Responses request with the system prompt as instructions or a
    // developer/system message, never a chat body.
    let sent: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(sent["stream"], true);
    assert!(sent.get("messages").is_none());
    assert_eq!(mock.requests()[0].target, "/v1/responses");
}

#[tokio::test]
async fn a_chat_request_without_stream_gets_one_chat_completion() {
    let mock = MockUpstream::start("aggregated answer").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    let response = post(&proxy, "/v1/chat/completions", &chat(false), &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-5.4");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "aggregated answer"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn anthropic_messages_stream_and_not() {
    let mock = MockUpstream::start("bonjour").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    let headers = [("anthropic-version", "2023-06-01"), ("anthropic-beta", "x")];
    let response = raw::exchange(
        proxy.addr,
        &raw::post(
            proxy.addr,
            "/v1/messages?beta=true",
            &messages(true).to_string(),
            &headers,
        ),
        LIMIT,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let names = event_names(&response.text());
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert!(names.contains(&"content_block_delta".to_string()));
    let sent = &mock.requests()[0];
    assert!(
        sent.headers.get("anthropic-version").is_none(),
        "Anthropic headers stay here"
    );

    let response = post(&proxy, "/v1/messages", &messages(false), &[]).await;
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "bonjour");
    assert_eq!(body["stop_reason"], "end_turn");
}

#[tokio::test]
async fn an_in_band_failure_before_output_fails_over_invisibly_for_translated_clients() {
    let mock = MockUpstream::start("second account").await;
    let proxy = TestProxy::start_with_key(&mock.base_url, &[], "sk-test-tr-A\nsk-test-tr-B").await;
    let failed = sse_event(
        "response.failed",
        json!({"type":"response.failed","response":{"id":"r","status":"failed","error":{"code":"server_is_overloaded","message":"overloaded"}}}),
    );
    mock.push(Script::sse(
        &[created(), in_progress(), failed],
        Duration::ZERO,
    ));
    let response = post(&proxy, "/v1/messages", &messages(true), &[]).await;
    assert_eq!(response.status, 200);
    let text = response.text();
    let said: String = data_lines(&text)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(said, "second account");
    assert!(!text.contains("overloaded"));
    assert_eq!(
        event_names(&text)
            .iter()
            .filter(|n| *n == "message_start")
            .count(),
        1
    );
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("2"));
}

#[tokio::test]
async fn upstream_errors_before_output_keep_their_status_in_the_clients_dialect() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &["--max-attempts", "1"]).await;
    let limited = || Script::Respond {
        status: 429,
        headers: vec![
            ("content-type", "application/json".into()),
            ("retry-after", "600".into()),
        ],
        chunks: vec![(
            Duration::ZERO,
            Bytes::from(
                r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
            ),
        )],
    };
    mock.push(limited());
    let response = post(&proxy, "/v1/messages", &messages(false), &[]).await;
    assert_eq!(response.status, 429);
    let body = response.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // Now every account cools down: the proxy's own 429, still in Anthropic's shape.
    let response = post(&proxy, "/v1/messages", &messages(true), &[]).await;
    assert_eq!(response.status, 429);
    assert_eq!(response.json()["error"]["type"], "rate_limit_error");
    assert_eq!(response.header("x-should-retry"), Some("false"));

    // The same for a Chat client, in the OpenAI shape.
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &["--max-attempts", "1"]).await;
    mock.push(limited());
    let response = post(&proxy, "/v1/chat/completions", &chat(true), &[]).await;
    assert_eq!(response.status, 429);
    assert_eq!(response.json()["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn a_stream_cut_after_output_ends_with_the_dialects_error_event_never_a_fake_success() {
    for (path, body, success_marker) in [
        ("/v1/chat/completions", chat(true), "[DONE]"),
        ("/v1/messages", messages(true), "message_stop"),
    ] {
        let mock = MockUpstream::start("unused").await;
        let proxy = TestProxy::start(&mock.base_url, &[]).await;
        mock.push(Script::CutAfter {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            chunks: [created(), in_progress(), delta("partial ")]
                .into_iter()
                .map(|e| (Duration::ZERO, Bytes::from(e)))
                .collect(),
        });
        let response = post(&proxy, path, &body, &[]).await;
        assert_eq!(response.status, 200);
        let text = response.text();
        assert!(text.contains("partial"), "{path}: {text}");
        assert!(text.contains("error"), "{path}: {text}");
        assert!(!text.contains(success_marker), "{path}: {text}");
        assert!(!response.complete, "{path}: the transfer is aborted");
        assert_eq!(mock.count(), 1, "{path}: no retry after output");
    }
}

#[tokio::test]
async fn local_routes_answer_without_the_upstream() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    let response = post(
        &proxy,
        "/v1/messages/count_tokens?beta=true",
        &json!({"model":"claude-opus-4-8","messages":[{"role":"user","content":"count these words please"}]}),
        &[],
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(response.json()["input_tokens"].as_u64().unwrap() > 0);
    let openai = raw::exchange(proxy.addr, &raw::get(proxy.addr, "/v1/models", &[]), LIMIT).await;
    assert_eq!(openai.json()["object"], "list");
    let anthropic = raw::exchange(
        proxy.addr,
        &raw::get(
            proxy.addr,
            "/v1/models",
            &[("anthropic-version", "2023-06-01")],
        ),
        LIMIT,
    )
    .await;
    assert_eq!(anthropic.json()["data"][0]["type"], "model");
    // Other queries stay refused, in the route's dialect.
    let refused = post(&proxy, "/v1/messages?beta=false", &messages(false), &[]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["type"], "error");
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn a_bad_request_is_refused_locally_in_the_clients_dialect() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    let response = post(
        &proxy,
        "/v1/messages",
        &json!({"model":"gpt-5.4","messages":"nope"}),
        &[],
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["type"], "error");
    let response = post(
        &proxy,
        "/v1/chat/completions",
        &json!({"model":"gpt-5-xhigh","messages":[]}),
        &[],
    )
    .await;
    assert_eq!(response.status, 400);
    assert!(response.json()["error"]["message"].is_string());
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn a_chatgpt_accounts_non_streaming_responses_answer_is_built_from_the_events() {
    let mock = MockUpstream::start("unused").await;
    let backend = format!("http://{}/backend-api/codex", mock.addr);
    let account = json!({"access_token":"at-agg","refresh_token":"rt-agg","account_id":"acct-agg"})
        .to_string();
    let proxy = TestProxy::start_with_input(
        &mock.base_url,
        &["--chatgpt-base-url", &backend],
        account.as_bytes(),
    )
    .await;
    // The backend's completed event can carry an empty output: the answer comes from the items.
    let mut events = responses_stream("from events", 2);
    events.pop();
    events.push(completed());
    mock.push(Script::sse(&events, Duration::ZERO));
    let response = post(
        &proxy,
        "/v1/responses",
        &json!({"model":"gpt-5","input":"hi"}),
        &[],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert_eq!(body["status"], "completed", "{body}");
    let text = body["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(text, "from events");
    let sent: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(sent["stream"], true);
}

#[tokio::test]
async fn a_model_suffix_on_a_responses_body_is_rewritten_and_a_plain_body_is_not() {
    let mock = MockUpstream::start("ok").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    let plain = r#"{"model":"gpt-5.4","stream":true,"input":"hi"}"#;
    let response = raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, "/v1/responses", plain, &[]),
        LIMIT,
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(mock.requests()[0].body, Bytes::from(plain), "byte for byte");
    let suffixed = r#"{"model":"gpt-5.4-high-fast","stream":true,"input":"hi"}"#;
    let response = raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, "/v1/responses", suffixed, &[]),
        LIMIT,
    )
    .await;
    assert_eq!(response.status, 200);
    let sent: Value = serde_json::from_slice(&mock.requests()[1].body).unwrap();
    assert_eq!(sent["model"], "gpt-5.4");
    assert_eq!(sent["reasoning"]["effort"], "high");
    assert_eq!(sent["service_tier"], "priority");
}

#[tokio::test]
async fn an_anthropic_conversation_stays_on_one_account_by_its_metadata_user_id() {
    let mock = MockUpstream::start("ok").await;
    let proxy = TestProxy::start_with_key(
        &mock.base_url,
        &[],
        "sk-test-aff-A\nsk-test-aff-B\nsk-test-aff-C",
    )
    .await;
    let mut body = messages(false);
    body["metadata"] = json!({"user_id": "user_abc_session_42"});
    for _ in 0..6 {
        assert_eq!(post(&proxy, "/v1/messages", &body, &[]).await.status, 200);
    }
    let used: std::collections::HashSet<String> = mock.authorizations().into_iter().collect();
    assert_eq!(
        used.len(),
        1,
        "one account for the whole conversation: {used:?}"
    );
    // Without a session key, requests spread.
    for _ in 0..6 {
        assert_eq!(
            post(&proxy, "/v1/messages", &messages(false), &[])
                .await
                .status,
            200
        );
    }
    let used: std::collections::HashSet<String> = mock.authorizations().into_iter().collect();
    assert_eq!(used.len(), 3);
}

/// Real OpenAI model names that are not in the built-in table (and do not end in a suffix
/// word): the upstream decides about them.
const REAL_NAMES: [&str; 7] = [
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-5-pro",
    "gpt-5-chat-latest",
    "gpt-5-2025-08-07",
    "gpt-5.4-mini",
    "gpt-5.4-pro",
];

#[tokio::test]
async fn real_model_names_go_upstream_unchanged_on_every_route() {
    let mock = MockUpstream::start("ok").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    for name in REAL_NAMES {
        for stream in [false, true] {
            let body = format!(r#"{{"model":"{name}","stream":{stream},"input":"hi"}}"#);
            let response = raw::exchange(
                proxy.addr,
                &raw::post(proxy.addr, "/v1/responses", &body, &[]),
                LIMIT,
            )
            .await;
            assert_eq!(response.status, 200, "{name}: {}", response.text());
            let sent = mock.requests().last().unwrap().body.clone();
            assert_eq!(sent, Bytes::from(body), "{name}: byte for byte");

            let mut chat = chat(stream);
            chat["model"] = json!(name);
            let response = post(&proxy, "/v1/chat/completions", &chat, &[]).await;
            assert_eq!(response.status, 200, "{name}: {}", response.text());
            let sent: Value =
                serde_json::from_slice(&mock.requests().last().unwrap().body).unwrap();
            assert_eq!(sent["model"], name, "chat, stream {stream}");
            assert_eq!(sent.get("service_tier"), None);

            let mut messages = messages(stream);
            messages["model"] = json!(name);
            let response = post(&proxy, "/v1/messages", &messages, &[]).await;
            assert_eq!(response.status, 200, "{name}: {}", response.text());
            let sent: Value =
                serde_json::from_slice(&mock.requests().last().unwrap().body).unwrap();
            assert_eq!(sent["model"], name, "messages, stream {stream}");
        }
    }
    assert_eq!(mock.count(), REAL_NAMES.len() * 2 * 3);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_suffix_the_model_does_not_take_is_a_local_400_naming_the_model_on_every_route() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    let mut chat = chat(false);
    chat["model"] = json!("gpt-5-xhigh");
    let mut messages = messages(false);
    messages["model"] = json!("gpt-5-xhigh");
    let responses = json!({"model":"gpt-5-xhigh","input":"hi"});
    for (path, body, message) in [
        ("/v1/responses", &responses, "/error/message"),
        ("/v1/chat/completions", &chat, "/error/message"),
        ("/v1/messages", &messages, "/error/message"),
    ] {
        let response = post(&proxy, path, body, &[]).await;
        assert_eq!(response.status, 400, "{path}: {}", response.text());
        let text = response
            .json()
            .pointer(message)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            text.contains("`gpt-5`") && text.contains("xhigh"),
            "{path}: {text}"
        );
    }
    assert_eq!(mock.count(), 0, "nothing reached the upstream");
    proxy.shutdown().await;
}

/// How an upstream stream goes wrong after its first output, for the timeout and cut tests.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Goes silent (longer than the proxy's `--idle-timeout 0.5`, shorter than `LIMIT`).
    Silent,
    /// Cuts the connection.
    Cut,
    /// Closes cleanly without a terminal event.
    EndsEarly,
}

fn faulty_stream(fault: Fault) -> Script {
    let chunks: Vec<(Duration, Bytes)> = [created(), in_progress(), delta("partial ")]
        .into_iter()
        .map(|e| (Duration::ZERO, Bytes::from(e)))
        .collect();
    let headers = vec![("content-type", "text/event-stream".into())];
    match fault {
        Fault::Silent => {
            let mut chunks = chunks;
            chunks.push((Duration::from_secs(5), Bytes::from(completed())));
            Script::Respond {
                status: 200,
                headers,
                chunks,
            }
        }
        Fault::Cut => Script::CutAfter {
            status: 200,
            headers,
            chunks,
        },
        Fault::EndsEarly => Script::Respond {
            status: 200,
            headers,
            chunks,
        },
    }
}

/// What `/v1/responses` passthrough says for each fault (README, "A stream that fails never
/// looks like success"): the translated routes must say the same.
fn fault_code(fault: Fault) -> &'static str {
    match fault {
        Fault::Silent => "upstream_idle_timeout",
        Fault::Cut => "upstream_connection_error",
        Fault::EndsEarly => "upstream_stream_truncated",
    }
}

/// The Anthropic `error.type` the fault's status maps to.
fn fault_anthropic_type(fault: Fault) -> &'static str {
    match fault {
        Fault::Silent => "timeout_error",
        Fault::Cut | Fault::EndsEarly => "api_error",
    }
}

#[tokio::test]
async fn chat_and_messages_streams_tell_an_idle_timeout_from_a_cut_in_their_error_events() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &["--idle-timeout", "0.5"]).await;
    let mut messages_seen = Vec::new();
    for fault in [Fault::Silent, Fault::Cut, Fault::EndsEarly] {
        mock.push(faulty_stream(fault));
        let started = tokio::time::Instant::now();
        let response = post(&proxy, "/v1/chat/completions", &chat(true), &[]).await;
        let text = response.text();
        assert_eq!(response.status, 200, "{fault:?}: {text}");
        assert!(text.contains("partial"), "{fault:?}: {text}");
        assert!(!response.complete, "{fault:?}: the transfer is aborted");
        let last = data_lines(&text).pop().unwrap_or_default();
        let error: Value = serde_json::from_str(&last).unwrap_or_default();
        assert_eq!(
            error["error"]["code"],
            fault_code(fault),
            "chat {fault:?}: {text}"
        );
        if let Fault::Silent = fault {
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "the idle timeout, not the upstream, ended the stream"
            );
        }

        mock.push(faulty_stream(fault));
        let response = post(&proxy, "/v1/messages", &messages(true), &[]).await;
        let text = response.text();
        assert_eq!(response.status, 200, "{fault:?}: {text}");
        assert!(text.contains("partial"), "{fault:?}: {text}");
        assert!(!response.complete, "{fault:?}: the transfer is aborted");
        assert_eq!(
            event_names(&text).last().map(String::as_str),
            Some("error"),
            "{text}"
        );
        let last = data_lines(&text).pop().unwrap_or_default();
        let error: Value = serde_json::from_str(&last).unwrap_or_default();
        assert_eq!(
            error["error"]["type"],
            fault_anthropic_type(fault),
            "messages {fault:?}: {text}"
        );
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{text}");
        messages_seen.push(message.to_owned());
    }
    messages_seen.dedup();
    assert_eq!(
        messages_seen.len(),
        3,
        "each fault has its own message: {messages_seen:?}"
    );
}

#[tokio::test]
async fn non_streaming_chat_and_messages_answer_504_when_the_upstream_goes_silent() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &["--idle-timeout", "0.5"]).await;
    for fault in [Fault::Silent, Fault::Cut, Fault::EndsEarly] {
        let status = match fault {
            Fault::Silent => 504,
            Fault::Cut | Fault::EndsEarly => 502,
        };
        mock.push(faulty_stream(fault));
        let started = tokio::time::Instant::now();
        let response = post(&proxy, "/v1/chat/completions", &chat(false), &[]).await;
        assert_eq!(
            response.status,
            status,
            "chat {fault:?}: {}",
            response.text()
        );
        assert_eq!(
            response.json()["error"]["code"],
            fault_code(fault),
            "chat {fault:?}"
        );
        if let Fault::Silent = fault {
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "the idle timeout, not the upstream, ended the answer"
            );
        }

        mock.push(faulty_stream(fault));
        let response = post(&proxy, "/v1/messages", &messages(false), &[]).await;
        assert_eq!(
            response.status,
            status,
            "messages {fault:?}: {}",
            response.text()
        );
        let body = response.json();
        assert_eq!(body["type"], "error", "{body}");
        assert_eq!(body["error"]["type"], fault_anthropic_type(fault), "{body}");
    }
    assert_eq!(mock.count(), 6, "no retry after output");
}

#[tokio::test]
async fn non_streaming_chat_and_messages_past_the_request_timeout_get_504_request_timeout() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &["--request-timeout", "0.5"]).await;
    for (path, body) in [
        ("/v1/chat/completions", chat(false)),
        ("/v1/messages", messages(false)),
    ] {
        mock.push(faulty_stream(Fault::Silent));
        let started = tokio::time::Instant::now();
        let response = post(&proxy, path, &body, &[]).await;
        assert!(started.elapsed() < Duration::from_secs(4), "{path}");
        assert_eq!(response.status, 504, "{path}: {}", response.text());
        let body = response.json();
        match path {
            "/v1/chat/completions" => assert_eq!(body["error"]["code"], "request_timeout"),
            _ => assert_eq!(body["error"]["type"], "timeout_error", "{body}"),
        }
    }
}
