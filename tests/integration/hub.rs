//! The Responses hub over an Anthropic provider (DESIGN §9, `docs/hub.md`): Responses and Chat
//! Completions clients whose model routes to an `anthropic` provider get their answer from a
//! Messages upstream, streamed and not, with tools, thinking signatures, usage, pre-commit
//! failover and errors in their own dialect.

use std::time::Duration;

use bytes::Bytes;
use codex_proxy::config::UpstreamBase;
use codex_proxy::glob::Glob;
use codex_proxy::upstream::provider::{ProviderConfig, ProviderKind};
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use crate::mock::{anthropic_error, anthropic_stream, sse_event, MockUpstream, Recorded, Script};
use crate::proxy::TestProxy;
use crate::raw::{self, RawResponse};

const LIMIT: Duration = Duration::from_secs(10);
const ANT_KEY: &str = "sk-ant-api03-TESTk3yQ7zX9pL2mN5vB8cR4tY6wA1sD0fG";
const ANT_KEY_2: &str = "sk-ant-api03-TESTsecondKEYq1w2e3r4t5y6u7i8o9p0";
const TEXT: &str = "hello from claude";
/// What the client asks for; the mock answers as `claude-mock`.
const MODEL: &str = "claude-sonnet-4-5";

fn claude_provider(base_url: &str) -> ProviderConfig {
    ProviderConfig {
        name: "claude".to_string(),
        kind: ProviderKind::Anthropic,
        base: UpstreamBase::parse(base_url).unwrap(),
        models: vec![Glob::new("claude-*").unwrap()],
        default: false,
        headers: Vec::new(),
        implicit: false,
        keyless: false,
        chat: Default::default(),
    }
}

/// The Anthropic mock taking `keys`, and a proxy whose one configured provider is it.
async fn setup(keys: &[&str]) -> (MockUpstream, TestProxy) {
    let mock = MockUpstream::start_anthropic_with(keys, TEXT, None).await;
    let input: String = keys
        .iter()
        .map(|k| format!("{{\"provider\":\"claude\",\"api_key\":\"{k}\"}}\n"))
        .collect();
    let provider = claude_provider(&mock.base_url);
    let proxy = TestProxy::start_tweaked("http://127.0.0.1:9/v1", &[], input.as_bytes(), |c| {
        let implicit = std::mem::take(&mut c.providers);
        c.providers = vec![provider];
        c.providers.extend(implicit);
    })
    .await;
    (mock, proxy)
}

async fn post(proxy: &TestProxy, path: &str, body: &Value) -> RawResponse {
    let body = body.to_string();
    raw::exchange(
        proxy.addr,
        &raw::post(
            proxy.addr,
            path,
            &body,
            &[
                ("authorization", "Bearer client-token-must-not-travel"),
                ("x-api-key", "client-key-must-not-travel"),
            ],
        ),
        LIMIT,
    )
    .await
}

fn header<'a>(recorded: &'a Recorded, name: &str) -> Option<&'a str> {
    recorded.headers.get(name).map(|v| v.to_str().unwrap())
}

fn sent(recorded: &Recorded) -> Value {
    serde_json::from_slice(&recorded.body).unwrap()
}

/// The `data:` JSON of every SSE event of a body (`[DONE]` as a string).
fn events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.into())))
        .collect()
}

/// The Responses events of `type`.
fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// The text of a Chat stream's content deltas.
fn chat_text(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// Checks what every hub request sent upstream: the Messages endpoint, the stdin key as
/// `x-api-key`, `anthropic-version`, no client credential, a streaming Messages body.
fn assert_messages_request(recorded: &Recorded) {
    assert_eq!(recorded.target, "/v1/messages");
    assert_eq!(header(recorded, "x-api-key"), Some(ANT_KEY));
    assert_eq!(recorded.headers.get_all("x-api-key").iter().count(), 1);
    assert_eq!(header(recorded, "authorization"), None);
    assert_eq!(header(recorded, "anthropic-version"), Some("2023-06-01"));
    assert_eq!(header(recorded, "content-type"), Some("application/json"));
    let body = sent(recorded);
    assert_eq!(body["stream"], true, "{body}");
    assert_eq!(body["model"], MODEL, "{body}");
    assert!(body["max_tokens"].is_u64(), "{body}");
    assert!(body["messages"].is_array(), "{body}");
}

/// `/metrics` once `done` holds for it (usage is counted when a body ends), or after `LIMIT`.
async fn metrics_with(proxy: &TestProxy, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let metrics = raw::exchange(proxy.addr, &raw::get(proxy.addr, "/metrics", &[]), LIMIT)
            .await
            .text();
        if done(&metrics) || tokio::time::Instant::now() > deadline {
            return metrics;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of the `codex_proxy_tokens_total` samples whose labels contain every part.
fn tokens(metrics: &str, parts: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("codex_proxy_tokens_total{"))
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A Messages stream: `message_start`, the given blocks' events, `message_delta` with
/// `stop_reason`, `message_stop`.
fn messages_stream(blocks: &[Vec<String>], stop_reason: &str) -> Vec<String> {
    let mut events = vec![sse_event(
        "message_start",
        json!({"message":{"id":"msg_hub_1","type":"message","role":"assistant","model":"claude-mock","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":20,"output_tokens":1}}}),
    )];
    for block in blocks {
        events.extend(block.iter().cloned());
    }
    events.push(sse_event(
        "message_delta",
        json!({"delta":{"stop_reason":stop_reason,"stop_sequence":null},"usage":{"output_tokens":9}}),
    ));
    events.push(sse_event("message_stop", json!({})));
    events
}

fn text_block(index: u64, text: &str) -> Vec<String> {
    vec![
        sse_event(
            "content_block_start",
            json!({"index":index,"content_block":{"type":"text","text":""}}),
        ),
        sse_event(
            "content_block_delta",
            json!({"index":index,"delta":{"type":"text_delta","text":text}}),
        ),
        sse_event("content_block_stop", json!({"index":index})),
    ]
}

fn tool_block(index: u64, id: &str, name: &str, input: &str) -> Vec<String> {
    let (a, b) = input.split_at(input.len() / 2);
    vec![
        sse_event(
            "content_block_start",
            json!({"index":index,"content_block":{"type":"tool_use","id":id,"name":name,"input":{}}}),
        ),
        sse_event(
            "content_block_delta",
            json!({"index":index,"delta":{"type":"input_json_delta","partial_json":a}}),
        ),
        sse_event(
            "content_block_delta",
            json!({"index":index,"delta":{"type":"input_json_delta","partial_json":b}}),
        ),
        sse_event("content_block_stop", json!({"index":index})),
    ]
}

fn thinking_block(index: u64, thinking: &str, signature: &str) -> Vec<String> {
    vec![
        sse_event(
            "content_block_start",
            json!({"index":index,"content_block":{"type":"thinking","thinking":"","signature":""}}),
        ),
        sse_event(
            "content_block_delta",
            json!({"index":index,"delta":{"type":"thinking_delta","thinking":thinking}}),
        ),
        sse_event(
            "content_block_delta",
            json!({"index":index,"delta":{"type":"signature_delta","signature":signature}}),
        ),
        sse_event("content_block_stop", json!({"index":index})),
    ]
}

fn weather_tool_chat() -> Value {
    json!([{"type":"function","function":{"name":"get_weather","description":"Weather of a city",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}])
}

fn weather_tool_responses() -> Value {
    json!([{"type":"function","name":"get_weather","description":"Weather of a city",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}])
}

#[tokio::test]
async fn a_responses_client_streams_over_an_anthropic_provider_with_its_own_model_and_usage() {
    let (mock, proxy) = setup(&[ANT_KEY]).await;
    let response = post(
        &proxy,
        "/v1/responses",
        &json!({"model":MODEL,"input":"hi","stream":true,"instructions":"be brief"}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.complete);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("1"));
    let events = events(&response.text());
    assert_eq!(events[0]["type"], "response.created", "{events:?}");
    assert_eq!(events[0]["response"]["model"], MODEL, "the client's model");
    let text: String = of_type(&events, "response.output_text.delta")
        .iter()
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, TEXT);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed", "{last}");
    assert_eq!(last["response"]["model"], MODEL);
    assert_eq!(
        last["response"]["output"][0]["content"][0]["text"], TEXT,
        "{last}"
    );
    // Anthropic's input 12 + cache reads 3 + cache writes 2; output 7.
    assert_eq!(last["response"]["usage"]["input_tokens"], 17);
    assert_eq!(
        last["response"]["usage"]["input_tokens_details"]["cached_tokens"],
        3
    );
    assert_eq!(last["response"]["usage"]["output_tokens"], 7);

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_messages_request(&requests[0]);
    let body = sent(&requests[0]);
    assert_eq!(body["system"][0]["text"], "be brief", "{body}");
    assert_eq!(body["messages"][0]["role"], "user", "{body}");

    // Counted under the provider and the model the upstream was asked for.
    let metrics = metrics_with(&proxy, |m| {
        tokens(m, &["provider=\"claude\"", "kind=\"output\""]) >= 7.0
    })
    .await;
    assert_eq!(
        tokens(&metrics, &["provider=\"claude\"", "kind=\"input\""]),
        17.0,
        "{metrics}"
    );
    assert_eq!(
        tokens(&metrics, &["provider=\"claude\"", "kind=\"cached_input\""]),
        3.0
    );
    assert!(
        metrics.contains(
            "codex_proxy_requests_total{route=\"responses\",status=\"200\",provider=\"claude\""
        ),
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_non_streaming_responses_client_gets_one_response_object() {
    let (mock, proxy) = setup(&[ANT_KEY]).await;
    let response = post(
        &proxy,
        "/v1/responses",
        &json!({"model":MODEL,"input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}]}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert_eq!(body["object"], "response", "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["model"], MODEL, "{body}");
    assert_eq!(body["output"][0]["type"], "message", "{body}");
    assert_eq!(body["output"][0]["content"][0]["text"], TEXT, "{body}");
    assert_eq!(body["usage"]["input_tokens"], 17, "{body}");
    assert_eq!(body["usage"]["output_tokens"], 7, "{body}");
    assert_eq!(mock.count(), 1);
    assert_messages_request(&mock.requests()[0]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_chat_client_streams_and_not_over_an_anthropic_provider() {
    let (mock, proxy) = setup(&[ANT_KEY]).await;
    let messages = json!([{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]);
    let response = post(
        &proxy,
        "/v1/chat/completions",
        &json!({"model":MODEL,"messages":messages,"stream":true,"stream_options":{"include_usage":true}}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.complete);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let streamed = events(&response.text());
    assert_eq!(chat_text(&streamed), TEXT);
    assert!(streamed
        .iter()
        .filter(|e| e.is_object())
        .all(|e| e["model"] == MODEL && e["object"] == "chat.completion.chunk"));
    let finish: Vec<&Value> = streamed
        .iter()
        .filter(|e| !e["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finish.len(), 1, "{streamed:?}");
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "stop");
    let usage = streamed
        .iter()
        .find(|e| e["usage"].is_object())
        .unwrap_or_else(|| panic!("no usage chunk: {streamed:?}"));
    assert_eq!(usage["usage"]["prompt_tokens"], 17, "{usage}");
    assert_eq!(usage["usage"]["completion_tokens"], 7, "{usage}");
    assert_eq!(streamed.last().unwrap(), &json!("[DONE]"));

    let response = post(
        &proxy,
        "/v1/chat/completions",
        &json!({"model":MODEL,"messages":messages}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert_eq!(body["model"], MODEL, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], TEXT, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 17, "{body}");
    assert_eq!(body["usage"]["total_tokens"], 24, "{body}");

    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    for recorded in &requests {
        assert_messages_request(recorded);
        let body = sent(recorded);
        assert_eq!(body["system"][0]["text"], "be brief", "{body}");
        assert_eq!(
            body["messages"],
            json!([{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}]),
            "{body}"
        );
    }
    let metrics = metrics_with(&proxy, |m| {
        tokens(m, &["provider=\"claude\"", "kind=\"output\""]) >= 14.0
    })
    .await;
    assert_eq!(
        tokens(&metrics, &["provider=\"claude\"", "kind=\"input\""]),
        34.0
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_chat_client_round_trips_a_tool_call_over_an_anthropic_provider() {
    let (mock, proxy) = setup(&[ANT_KEY]).await;
    let input = r#"{"city":"Paris"}"#;
    for stream in [true, false] {
        mock.push(Script::sse(
            &messages_stream(
                &[
                    text_block(0, "Let me look."),
                    tool_block(1, "toolu_01A", "get_weather", input),
                ],
                "tool_use",
            ),
            Duration::ZERO,
        ));
        let ask = json!([{"role":"user","content":"weather in Paris? use the tool"}]);
        let response = post(
            &proxy,
            "/v1/chat/completions",
            &json!({"model":MODEL,"messages":ask,"tools":weather_tool_chat(),"stream":stream}),
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.text());
        let (call, finish) = if stream {
            let streamed = events(&response.text());
            let calls: Vec<&Value> = streamed
                .iter()
                .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].as_array())
                .flatten()
                .collect();
            let arguments: String = calls
                .iter()
                .filter_map(|c| c["function"]["arguments"].as_str())
                .collect();
            let first = calls[0].clone();
            let finish = streamed
                .iter()
                .find_map(|e| e["choices"][0]["finish_reason"].as_str())
                .unwrap()
                .to_string();
            (
                json!({"id":first["id"],"name":first["function"]["name"],"arguments":arguments}),
                finish,
            )
        } else {
            let body = response.json();
            let call = &body["choices"][0]["message"]["tool_calls"][0];
            assert_eq!(
                body["choices"][0]["message"]["content"], "Let me look.",
                "{body}"
            );
            (
                json!({"id":call["id"],"name":call["function"]["name"],"arguments":call["function"]["arguments"]}),
                body["choices"][0]["finish_reason"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        };
        assert_eq!(
            call,
            json!({"id":"toolu_01A","name":"get_weather","arguments":input})
        );
        assert_eq!(finish, "tool_calls");

        // The result goes back (checked below as the mock received it).
        mock.push(Script::sse(
            &messages_stream(
                &[text_block(0, "The tool returned: sunny, 21C")],
                "end_turn",
            ),
            Duration::ZERO,
        ));
        let history = json!([
            {"role":"user","content":"weather in Paris? use the tool"},
            {"role":"assistant","content":"Let me look.","tool_calls":[{"id":"toolu_01A","type":"function","function":{"name":"get_weather","arguments":input}}]},
            {"role":"tool","tool_call_id":"toolu_01A","content":"sunny, 21C"}
        ]);
        let response = post(
            &proxy,
            "/v1/chat/completions",
            &json!({"model":MODEL,"messages":history,"tools":weather_tool_chat(),"stream":stream}),
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.text());
        let answer = if stream {
            chat_text(&events(&response.text()))
        } else {
            response.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(answer, "The tool returned: sunny, 21C");
        let last = sent(mock.requests().last().unwrap());
        let messages = last["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "{last}");
        let tool_use = messages[1]["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "tool_use")
            .unwrap_or_else(|| panic!("{last}"));
        assert_eq!(tool_use["id"], "toolu_01A");
        assert_eq!(tool_use["input"], json!({"city":"Paris"}));
        assert_eq!(messages[2]["content"][0]["type"], "tool_result", "{last}");
        assert_eq!(messages[2]["content"][0]["tool_use_id"], "toolu_01A");
        assert_eq!(last["tools"][0]["name"], "get_weather", "{last}");
    }
    assert_eq!(mock.count(), 4);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_responses_client_round_trips_a_tool_call_and_a_thinking_signature() {
    let (mock, proxy) = setup(&[ANT_KEY]).await;
    let input = r#"{"city":"Paris"}"#;
    let signature = "EqQBCkYIBRgCKkAsig/+nature==";
    mock.push(Script::sse(
        &messages_stream(
            &[
                thinking_block(0, "The user wants weather.", signature),
                tool_block(1, "toolu_01B", "get_weather", input),
            ],
            "tool_use",
        ),
        Duration::ZERO,
    ));
    let ask = json!([{"role":"user","content":[{"type":"input_text","text":"weather in Paris?"}]}]);
    let response = post(
        &proxy,
        "/v1/responses",
        &json!({"model":MODEL,"input":ask,"tools":weather_tool_responses(),"stream":true,
            "reasoning":{"effort":"medium","summary":"auto"},"include":["reasoning.encrypted_content"],"store":false}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let streamed = events(&response.text());
    let done: Vec<&Value> = of_type(&streamed, "response.output_item.done")
        .into_iter()
        .map(|e| &e["item"])
        .collect();
    assert_eq!(done.len(), 2, "{streamed:?}");
    assert_eq!(done[0]["type"], "reasoning");
    assert_eq!(done[0]["encrypted_content"], signature);
    assert_eq!(done[0]["summary"][0]["text"], "The user wants weather.");
    assert_eq!(done[1]["type"], "function_call");
    assert_eq!(done[1]["call_id"], "toolu_01B");
    assert_eq!(done[1]["name"], "get_weather");
    assert_eq!(done[1]["arguments"], input);
    let completed = of_type(&streamed, "response.completed");
    assert_eq!(completed.len(), 1, "{streamed:?}");
    assert_eq!(
        completed[0]["response"]["output"].as_array().unwrap().len(),
        2
    );

    // Codex sends the items back with the tool's output.
    mock.push(Script::sse(
        &messages_stream(
            &[text_block(0, "The tool returned: sunny, 21C")],
            "end_turn",
        ),
        Duration::ZERO,
    ));
    let mut history = ask.as_array().unwrap().clone();
    history.push(done[0].clone());
    history.push(done[1].clone());
    history
        .push(json!({"type":"function_call_output","call_id":"toolu_01B","output":"sunny, 21C"}));
    let response = post(
        &proxy,
        "/v1/responses",
        &json!({"model":MODEL,"input":history,"tools":weather_tool_responses(),"stream":false,
            "reasoning":{"effort":"medium","summary":"auto"}}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(
        body["output"][0]["content"][0]["text"], "The tool returned: sunny, 21C",
        "{body}"
    );
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let first = sent(&requests[0]);
    assert_eq!(first["thinking"]["type"], "enabled", "{first}");
    let second = sent(&requests[1]);
    let assistant = &second["messages"][1];
    assert_eq!(assistant["role"], "assistant", "{second}");
    assert_eq!(
        assistant["content"][0],
        json!({"type":"thinking","thinking":"The user wants weather.","signature":signature}),
        "the signed thinking block goes back unchanged: {second}"
    );
    assert_eq!(assistant["content"][1]["type"], "tool_use");
    assert_eq!(assistant["content"][1]["id"], "toolu_01B");
    assert_eq!(second["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(
        second["messages"][2]["content"][0]["tool_use_id"],
        "toolu_01B"
    );
    assert_eq!(second["thinking"]["type"], "enabled", "{second}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_529_or_an_in_band_overload_before_content_fails_over_to_the_other_key() {
    let overloaded = anthropic_error("overloaded_error", "Overloaded");
    for (label, path) in [
        ("529", "/v1/responses"),
        ("in-band", "/v1/chat/completions"),
    ] {
        let (mock, proxy) = setup(&[ANT_KEY, ANT_KEY_2]).await;
        if label == "529" {
            mock.push(Script::Respond {
                status: 529,
                headers: vec![("content-type", "application/json".into())],
                chunks: vec![(Duration::ZERO, Bytes::from(overloaded.clone()))],
            });
        } else {
            // message_start and a ping: bootstrap events, nothing committed yet.
            let mut events = anthropic_stream(TEXT, 1)[..1].to_vec();
            events.push(sse_event("ping", json!({})));
            events.push(sse_event(
                "error",
                json!({"error":{"type":"overloaded_error","message":"Overloaded"}}),
            ));
            mock.push(Script::sse(&events, Duration::ZERO));
        }
        let body = if path == "/v1/responses" {
            json!({"model":MODEL,"input":"hi","stream":true})
        } else {
            json!({"model":MODEL,"messages":[{"role":"user","content":"hi"}],"stream":true})
        };
        let response = post(&proxy, path, &body).await;
        assert_eq!(response.status, 200, "{label}: {}", response.text());
        assert_eq!(response.header("x-codex-proxy-attempts"), Some("2"));
        let streamed = events(&response.text());
        let text = if path == "/v1/responses" {
            of_type(&streamed, "response.output_text.delta")
                .iter()
                .map(|e| e["delta"].as_str().unwrap())
                .collect()
        } else {
            chat_text(&streamed)
        };
        assert_eq!(text, TEXT, "{label}");
        assert!(
            !response.text().contains("overloaded"),
            "{label}: invisible"
        );
        let requests = mock.requests();
        assert_eq!(requests.len(), 2, "{label}");
        assert_ne!(
            header(&requests[0], "x-api-key"),
            header(&requests[1], "x-api-key"),
            "{label}"
        );
        assert_eq!(
            &requests[0].body, &requests[1].body,
            "{label}: same request"
        );
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_cut_after_commit_ends_in_the_clients_error_event_without_a_retry() {
    let committed: Vec<String> = anthropic_stream(TEXT, 3)[..4].to_vec();
    for path in ["/v1/responses", "/v1/chat/completions"] {
        let (mock, proxy) = setup(&[ANT_KEY, ANT_KEY_2]).await;
        mock.push(Script::CutAfter {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            chunks: committed
                .iter()
                .map(|e| (Duration::ZERO, Bytes::from(e.clone())))
                .collect(),
        });
        let body = if path == "/v1/responses" {
            json!({"model":MODEL,"input":"hi","stream":true})
        } else {
            json!({"model":MODEL,"messages":[{"role":"user","content":"hi"}],"stream":true})
        };
        let response = post(&proxy, path, &body).await;
        assert_eq!(response.status, 200, "{path}");
        let text = response.text();
        let streamed = events(&text);
        let last = streamed.last().unwrap();
        if path == "/v1/responses" {
            assert!(
                text.contains("event: error\ndata: "),
                "{path}: Responses error event: {text}"
            );
            assert_eq!(last["type"], "error", "{path}: {text}");
            assert!(
                last["code"].as_str().unwrap().starts_with("upstream_"),
                "{last}"
            );
            assert!(of_type(&streamed, "response.completed").is_empty());
        } else {
            assert!(
                last["error"]["code"]
                    .as_str()
                    .unwrap()
                    .starts_with("upstream_"),
                "{path}: {text}"
            );
            assert!(!text.contains("[DONE]"), "{path}: {text}");
        }
        assert_eq!(mock.count(), 1, "{path}: no retry after commit");
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn requests_the_hub_cannot_map_and_upstream_errors_answer_in_the_clients_dialect() {
    let (mock, proxy) = setup(&[ANT_KEY]).await;
    // Refused by the mapper: 400 in the OpenAI shape, upstream untouched.
    let response = post(
        &proxy,
        "/v1/responses",
        &json!({"model":MODEL,"input":"hi","previous_response_id":"resp_1"}),
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.text());
    let error = &response.json()["error"];
    assert_eq!(error["code"], "unsupported_parameter", "{error}");
    assert_eq!(error["type"], "invalid_request_error", "{error}");
    let response = post(
        &proxy,
        "/v1/chat/completions",
        &json!({"model":MODEL,"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}}),
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(
        response.json()["error"]["type"],
        "invalid_request_error",
        "{}",
        response.text()
    );
    assert_eq!(mock.count(), 0, "the upstream never saw them");

    // Anthropic's own refusal becomes the OpenAI error shape, its code the hub's.
    mock.push(Script::json(
        400,
        &anthropic_error(
            "invalid_request_error",
            "prompt is too long: 300000 tokens > 200000 maximum",
        ),
    ));
    let response = post(
        &proxy,
        "/v1/chat/completions",
        &json!({"model":MODEL,"messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.text());
    let body = response.json();
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("prompt is too long"));
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("1"));
    // A model no provider serves is still model_not_found, upstream untouched.
    let response = post(
        &proxy,
        "/v1/responses",
        &json!({"model":"llama-3","input":"hi"}),
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["code"], "model_not_found");
    assert_eq!(mock.count(), 1);
    proxy.shutdown().await;
}
