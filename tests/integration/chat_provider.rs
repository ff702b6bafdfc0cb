//! `kind = "chat"` providers (DESIGN §9): Chat clients over a Chat Completions server in the
//! styles of llama.cpp, vLLM, Ollama and a server with inline `<think>` tags
//! (`tests/common/chat_mock.rs`). Passthrough bytes equal the mock's except the documented
//! rewrites; forced params, aliases and `include_usage` reach the server; a keyless provider
//! sends no `Authorization`, a keyed one its own key and never the client's; failures before
//! content fail over; a cut stream ends in the Chat error event; `/health` shows the
//! provider's last attempt.

use std::path::PathBuf;
use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use crate::chat_mock::{
    chunk, completion_body, error_chunk, stream_body, ChatAnswer, ChatAuth, ChatMock, ChatScript,
    ChatStyle,
};
use crate::proxy::TestProxy;
use crate::raw::{self, RawResponse};

const LIMIT: Duration = Duration::from_secs(10);
const MODEL: &str = "qwen3-coder";
const KEY: &str = "sk-chat-TESTk3yQ7zX9pL2mN5vB8cR4tY6wA1sD0fGhJ";

/// A `--config` file, removed when dropped.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).unwrap();
        let path = std::env::temp_dir().join(format!(
            "codex-proxy-chat-{:016x}.toml",
            u64::from_ne_bytes(raw)
        ));
        std::fs::write(&path, text).unwrap();
        ConfigFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A proxy whose one configured provider is the chat mock (keyless unless `keyed`), with
/// `models` (extra TOML: `[models.*]`, `[aliases]`) and `input` on stdin.
async fn start(mock: &ChatMock, keyed: bool, models: &str, input: &str) -> (TestProxy, ConfigFile) {
    let auth = match keyed {
        true => "",
        false => "keyless = true\n",
    };
    let file = ConfigFile::new(&format!(
        "[providers.local]\nkind = \"chat\"\nbase_url = \"{}\"\n{auth}models = [\"qwen3-*\"]\n\n{models}",
        mock.base_url
    ));
    let proxy = TestProxy::start_with_input(
        "http://127.0.0.1:9/v1",
        &["--config", file.arg()],
        input.as_bytes(),
    )
    .await;
    (proxy, file)
}

async fn keyless(style: ChatStyle, models: &str) -> (ChatMock, TestProxy, ConfigFile) {
    let mock = ChatMock::start(
        ChatAuth::Keyless,
        style,
        ChatAnswer::text("Hé, the answer is 42."),
    )
    .await;
    let (proxy, file) = start(&mock, false, models, "").await;
    (mock, proxy, file)
}

async fn chat(proxy: &TestProxy, body: &Value, headers: &[(&str, &str)]) -> RawResponse {
    raw::exchange(
        proxy.addr,
        &raw::post(
            proxy.addr,
            "/v1/chat/completions",
            &body.to_string(),
            headers,
        ),
        LIMIT,
    )
    .await
}

fn stream_request(model: &str, usage: Option<bool>) -> Value {
    let mut body = json!({"model": model, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    if let Some(usage) = usage {
        body["stream_options"] = json!({ "include_usage": usage });
    }
    body
}

/// The `data:` JSON of every event of a chat stream (`[DONE]` as the string).
fn events(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_owned())))
        .collect()
}

/// The concatenated `delta.<field>` strings of a chat stream.
fn joined(body: &[u8], field: &str) -> String {
    events(body)
        .iter()
        .filter_map(|e| e["choices"][0]["delta"][field].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn passthrough_bytes_equal_the_servers_in_every_style() {
    for style in [ChatStyle::LlamaCpp, ChatStyle::Vllm, ChatStyle::Ollama] {
        let (mock, proxy, _file) = keyless(style, "").await;
        // The client asks for usage itself: the request and the answer go through unchanged.
        let request = stream_request(MODEL, Some(true));
        let response = chat(&proxy, &request, &[]).await;
        assert_eq!(response.status, 200, "{style:?}");
        assert_eq!(response.header("content-type"), Some("text/event-stream"));
        assert_eq!(response.text(), mock.answer(MODEL, true), "{style:?}");
        let sent = &mock.requests()[0];
        assert_eq!(sent.path, "/v1/chat/completions");
        assert_eq!(sent.body, request.to_string().as_bytes(), "{style:?}");
        // Without usage asked for: the proxy asks, and drops the usage chunk on the way back.
        let response = chat(&proxy, &stream_request(MODEL, None), &[]).await;
        assert_eq!(response.text(), mock.answer(MODEL, false), "{style:?}");
        let sent = mock.requests()[1].json();
        assert_eq!(sent["stream_options"], json!({"include_usage": true}));
        // Not streamed: the server's JSON body as it is.
        let request = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
        let response = chat(&proxy, &request, &[]).await;
        assert_eq!(response.status, 200);
        let answer = ChatAnswer::text("Hé, the answer is 42.");
        assert_eq!(response.text(), completion_body(style, MODEL, &answer));
        assert_eq!(mock.requests()[2].body, request.to_string().as_bytes());
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn think_tags_are_stripped_or_made_reasoning_streamed_and_whole() {
    let answer = ChatAnswer::text("Hé, the answer is 42.");
    for (rule, text, reasoning) in [
        ("strip", answer.text.clone(), String::new()),
        ("reasoning", answer.text.clone(), answer.reasoning.clone()),
    ] {
        let models = format!("[models.\"{MODEL}\"]\nthink_tags = \"{rule}\"\n");
        let (mock, proxy, _file) = keyless(ChatStyle::ThinkTags, &models).await;
        let response = chat(&proxy, &stream_request(MODEL, None), &[]).await;
        assert_eq!(response.status, 200);
        let body = response.body.clone();
        assert!(
            !response.text().contains("think>"),
            "{rule}: {}",
            response.text()
        );
        // (`reasoning` keeps the blank line after `</think>`; only `strip` drops it.)
        assert_eq!(joined(&body, "content").trim_start(), text, "{rule}");
        assert_eq!(joined(&body, "reasoning_content"), reasoning, "{rule}");
        assert_eq!(events(&body).last(), Some(&json!("[DONE]")));
        // The same stream split at every byte: the same answer.
        let whole = mock.answer(MODEL, true);
        mock.push(ChatScript::stream(&whole, 1));
        let split = chat(&proxy, &stream_request(MODEL, None), &[]).await;
        assert_eq!(split.text(), response.text(), "{rule}: split at every byte");
        // A whole answer: `message.content` filtered.
        let request = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
        let response = chat(&proxy, &request, &[]).await;
        let message = &response.json()["choices"][0]["message"];
        assert_eq!(
            message["content"].as_str().unwrap().trim_start(),
            text,
            "{rule}"
        );
        match rule {
            "strip" => assert!(message.get("reasoning_content").is_none()),
            _ => assert_eq!(message["reasoning_content"], json!(reasoning)),
        }
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn forced_params_and_aliases_reach_the_server() {
    let models = format!(
        "[models.\"{MODEL}\"]\nparams = {{ top_k = 20, temperature = 0.7 }}\n\n\
         [aliases]\n\"local-coder\" = \"{MODEL}\"\n"
    );
    let (mock, proxy, _file) = keyless(ChatStyle::Vllm, &models).await;
    let mut request = stream_request("local-coder", Some(true));
    request["temperature"] = json!(1.0);
    let response = chat(&proxy, &request, &[]).await;
    assert_eq!(response.status, 200);
    let sent = mock.requests()[0].json();
    assert_eq!(sent["model"], json!(MODEL));
    assert_eq!(sent["top_k"], json!(20));
    assert_eq!(sent["temperature"], json!(0.7));
    assert_eq!(sent["messages"], request["messages"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_keyless_provider_sends_no_authorization_and_a_keyed_one_its_own_key() {
    let (mock, proxy, _file) = keyless(ChatStyle::Vllm, "").await;
    let response = chat(
        &proxy,
        &stream_request(MODEL, Some(true)),
        &[
            ("authorization", "Bearer client-secret"),
            ("x-api-key", "k"),
        ],
    )
    .await;
    // The keyless mock answers 401 to any Authorization.
    assert_eq!(response.status, 200, "{}", response.text());
    let sent = &mock.requests()[0];
    assert!(sent.headers.get("authorization").is_none());
    assert!(sent.headers.get("x-api-key").is_none());
    proxy.shutdown().await;

    let mock = ChatMock::start(
        ChatAuth::Bearer(KEY.into()),
        ChatStyle::Ollama,
        ChatAnswer::text("keyed"),
    )
    .await;
    let input = format!("{{\"provider\":\"local\",\"api_key\":\"{KEY}\"}}\n");
    let (proxy, _file) = start(&mock, true, "", &input).await;
    let response = chat(
        &proxy,
        &stream_request(MODEL, Some(true)),
        &[("authorization", "Bearer client-secret")],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), mock.answer(MODEL, true));
    proxy.shutdown().await;
}

#[tokio::test]
async fn failures_before_content_fail_over_and_the_client_sees_one_clean_answer() {
    let (mock, proxy, _file) = keyless(ChatStyle::LlamaCpp, "").await;
    // An in-band error right after the role chunk, then an HTTP 503, then the answer.
    let failed = format!(
        "{}{}",
        chunk(MODEL, json!({"role": "assistant", "content": ""}), None),
        error_chunk("model is loading", "server_error", json!(503))
    );
    mock.push(ChatScript::stream(&failed, 7));
    mock.push(ChatScript::Json {
        status: 503,
        body: json!({"error": {"message": "busy", "type": "server_error", "code": 503}})
            .to_string(),
    });
    let response = chat(&proxy, &stream_request(MODEL, Some(true)), &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), mock.answer(MODEL, true));
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("3"));
    assert_eq!(mock.requests().len(), 3);
    // A stream cut before any content is retried too.
    let role = chunk(MODEL, json!({"role": "assistant", "content": ""}), None);
    mock.push(ChatScript::cut(&role, 0));
    let response = chat(&proxy, &stream_request(MODEL, Some(true)), &[]).await;
    assert_eq!(response.text(), mock.answer(MODEL, true));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_stream_cut_or_ended_before_its_finish_ends_in_the_chat_error_event() {
    let (mock, proxy, _file) = keyless(ChatStyle::Vllm, "").await;
    let answer = ChatAnswer::text("Hé, the answer is 42.");
    let whole = stream_body(ChatStyle::Vllm, MODEL, &answer, true);
    // Everything up to (not including) the finish chunk.
    let before_finish = &whole[..whole.find("\"finish_reason\":\"stop\"").unwrap()];
    let before_finish = &before_finish[..before_finish.rfind("\n\n").unwrap() + 2];
    for (script, how, code) in [
        (
            ChatScript::cut(before_finish, 5),
            "cut",
            "upstream_connection_error",
        ),
        (
            ChatScript::stream(&format!("{before_finish}data: [DONE]\n\n"), 3),
            "[DONE] without a finish",
            "upstream_stream_truncated",
        ),
    ] {
        mock.push(script);
        let response = chat(&proxy, &stream_request(MODEL, Some(true)), &[]).await;
        assert_eq!(response.status, 200, "{how}");
        let events = events(&response.body);
        let last = events.last().unwrap();
        assert!(last["error"]["code"].is_string(), "{how}: {last}");
        assert_eq!(last["error"]["code"], json!(code), "{how}");
        // Nothing the client reads as a clean end comes before it.
        assert!(!events.contains(&json!("[DONE]")), "{how}: {events:?}");
        assert!(joined(&response.body, "content").starts_with("Hé"), "{how}");
    }
    // A finished answer whose [DONE] never came gets one.
    let finished = &whole[..whole.find("data: [DONE]").unwrap()];
    mock.push(ChatScript::stream(finished, 0));
    let response = chat(&proxy, &stream_request(MODEL, Some(true)), &[]).await;
    assert_eq!(response.text(), whole);
    proxy.shutdown().await;
}

#[tokio::test]
async fn one_json_body_for_a_stream_request_becomes_the_stream() {
    let (mock, proxy, _file) = keyless(ChatStyle::Ollama, "").await;
    let answer = ChatAnswer::text("Hé, the answer is 42.");
    mock.push(ChatScript::Json {
        status: 200,
        body: completion_body(ChatStyle::Ollama, MODEL, &answer),
    });
    let response = chat(&proxy, &stream_request(MODEL, None), &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(joined(&response.body, "content"), answer.text);
    assert_eq!(joined(&response.body, "reasoning"), answer.reasoning);
    let events = events(&response.body);
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    // The client did not ask for usage: no usage chunk.
    assert!(events.iter().all(|e| e.get("usage").is_none()));
    proxy.shutdown().await;
}

#[tokio::test]
async fn health_shows_the_providers_last_attempt() {
    let (mock, proxy, _file) = keyless(ChatStyle::Vllm, "").await;
    let health = raw::exchange(proxy.addr, &raw::get(proxy.addr, "/health", &[]), LIMIT).await;
    let local = &health.json()["providers"][0];
    assert_eq!(local["name"], json!("local"));
    assert_eq!(local["kind"], json!("chat"));
    assert_eq!(local["last_attempt_ok"], Value::Null);
    let response = chat(&proxy, &stream_request(MODEL, Some(true)), &[]).await;
    assert_eq!(response.status, 200);
    let health = raw::exchange(proxy.addr, &raw::get(proxy.addr, "/health", &[]), LIMIT).await;
    let local = &health.json()["providers"][0];
    assert_eq!(local["last_attempt_ok"], json!(true));
    assert!(local["last_attempt_at"].as_str().unwrap().ends_with('Z'));
    // The keyless provider's account is listed like any other, with its provider.
    let accounts = health.json()["accounts"].clone();
    assert_eq!(accounts[0]["provider"], json!("local"));
    // A failure (every attempt a 500) is what the provider shows next.
    for _ in 0..3 {
        mock.push(ChatScript::Json {
            status: 500,
            body: json!({"error": {"message": "boom", "type": "server_error"}}).to_string(),
        });
    }
    let response = chat(&proxy, &stream_request(MODEL, Some(true)), &[]).await;
    assert_eq!(response.status, 500);
    let health = raw::exchange(proxy.addr, &raw::get(proxy.addr, "/health", &[]), LIMIT).await;
    assert_eq!(
        health.json()["providers"][0]["last_attempt_ok"],
        json!(false)
    );
    proxy.shutdown().await;
}

// === Through the hub: Responses and Anthropic clients over a chat provider ===

async fn post_json(proxy: &TestProxy, path: &str, body: &Value) -> RawResponse {
    raw::exchange(
        proxy.addr,
        &raw::post(
            proxy.addr,
            path,
            &body.to_string(),
            &[
                ("x-api-key", "client-key"),
                ("anthropic-version", "2023-06-01"),
            ],
        ),
        LIMIT,
    )
    .await
}

/// The JSON of every event of a Responses or Messages stream.
fn typed_events(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test]
async fn a_responses_client_streams_and_not_over_a_chat_provider_in_every_style() {
    let answer = ChatAnswer::text("Hé, the answer is 42.");
    for (style, rule) in [
        (ChatStyle::LlamaCpp, "off"),
        (ChatStyle::Vllm, "off"),
        (ChatStyle::Ollama, "off"),
        (ChatStyle::ThinkTags, "reasoning"),
    ] {
        let models =
            format!("[models.\"{MODEL}\"]\nthink_tags = \"{rule}\"\nparams = {{ top_k = 20 }}\n");
        let (mock, proxy, _file) = keyless(style, &models).await;
        let request = json!({"model": MODEL, "input": "hi", "stream": true});
        let response = post_json(&proxy, "/v1/responses", &request).await;
        assert_eq!(response.status, 200, "{style:?}: {}", response.text());
        let events = typed_events(&response.body);
        let text: String = of_type(&events, "response.output_text.delta")
            .iter()
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(text.trim_start(), answer.text, "{style:?}");
        let reasoning: String = of_type(&events, "response.reasoning_summary_text.delta")
            .iter()
            .chain(of_type(&events, "response.reasoning_text.delta").iter())
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(reasoning, answer.reasoning, "{style:?}");
        let last = events.last().unwrap();
        assert_eq!(last["type"], "response.completed", "{style:?}");
        assert_eq!(last["response"]["usage"]["input_tokens"], json!(11));
        assert_eq!(last["response"]["usage"]["output_tokens"], json!(7));
        // The chat server got a chat request, with the forced param and no Authorization.
        let sent = &mock.requests()[0];
        assert_eq!(sent.path, "/v1/chat/completions");
        assert!(sent.headers.get("authorization").is_none());
        let sent = sent.json();
        assert_eq!(sent["model"], json!(MODEL));
        assert_eq!(sent["top_k"], json!(20));
        assert_eq!(sent["stream"], json!(true));
        assert_eq!(sent["messages"][0]["role"], json!("user"));
        // Not streamed: one response object with the same text.
        let request = json!({"model": MODEL, "input": "hi"});
        let response = post_json(&proxy, "/v1/responses", &request).await;
        assert_eq!(response.status, 200, "{style:?}: {}", response.text());
        let body = response.json();
        assert_eq!(body["status"], "completed");
        let text = body["output"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["type"] == "message")
            .flat_map(|i| i["content"].as_array().unwrap().iter())
            .filter_map(|c| c["text"].as_str())
            .collect::<String>();
        assert_eq!(text.trim_start(), answer.text, "{style:?}");
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn an_anthropic_client_gets_a_tool_use_over_a_chat_provider() {
    let mut answer = ChatAnswer::text("Let me look.");
    answer.tool_call = Some(("Bash".into(), "{\"command\":\"ls -la\"}".into()));
    let mock = ChatMock::start(ChatAuth::Keyless, ChatStyle::Vllm, answer).await;
    let (proxy, _file) = start(&mock, false, "", "").await;
    let request = json!({"model": MODEL, "max_tokens": 256, "stream": true,
        "tools": [{"name": "Bash", "description": "Run a command",
                   "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                                    "required": ["command"]}}],
        "messages": [{"role": "user", "content": "list the files"}]});
    let response = post_json(&proxy, "/v1/messages", &request).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let events = typed_events(&response.body);
    let tool = of_type(&events, "content_block_start")
        .into_iter()
        .find(|e| e["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    assert_eq!(tool["content_block"]["name"], "Bash");
    let input: String = of_type(&events, "content_block_delta")
        .iter()
        .filter(|e| e["delta"]["type"] == "input_json_delta")
        .map(|e| e["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        json!({"command": "ls -la"})
    );
    let stop = of_type(&events, "message_delta");
    assert_eq!(stop[0]["delta"]["stop_reason"], "tool_use");
    assert_eq!(events.last().unwrap()["type"], "message_stop");
    // The tool went to the server as a function.
    let sent = mock.requests()[0].json();
    assert_eq!(sent["tools"][0]["type"], "function");
    assert_eq!(sent["tools"][0]["function"]["name"], "Bash");
    // The tool result goes back as a `tool` message paired with its call.
    let tool_id = tool["content_block"]["id"].as_str().unwrap().to_owned();
    let mut follow = request.clone();
    follow["messages"] = json!([
        {"role": "user", "content": "list the files"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": tool_id, "name": "Bash", "input": {"command": "ls -la"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": tool_id, "content": "README.md"}]}
    ]);
    let response = post_json(&proxy, "/v1/messages", &follow).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let sent = mock.requests()[1].json();
    let messages = sent["messages"].as_array().unwrap();
    let call = &messages[1]["tool_calls"][0];
    assert_eq!(messages[2]["role"], "tool");
    assert_eq!(messages[2]["tool_call_id"], call["id"]);
    assert_eq!(messages[2]["content"], "README.md");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_cut_chat_stream_ends_in_an_error_in_every_client_dialect() {
    let (mock, proxy, _file) = keyless(ChatStyle::Vllm, "").await;
    let answer = ChatAnswer::text("Hé, the answer is 42.");
    let whole = stream_body(ChatStyle::Vllm, MODEL, &answer, true);
    let before_finish = &whole[..whole.find("\"finish_reason\":\"stop\"").unwrap()];
    let before_finish = &before_finish[..before_finish.rfind("\n\n").unwrap() + 2];
    let responses = json!({"model": MODEL, "input": "hi", "stream": true});
    let messages = json!({"model": MODEL, "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    for (path, request) in [
        ("/v1/responses", &responses),
        ("/v1/messages", &messages),
        ("/v1/chat/completions", &stream_request(MODEL, None)),
    ] {
        for script in [
            ChatScript::cut(before_finish, 9),
            ChatScript::stream(&format!("{before_finish}data: [DONE]\n\n"), 0),
        ] {
            mock.push(script);
            let response = post_json(&proxy, path, request).await;
            assert_eq!(response.status, 200, "{path}");
            let text = response.text();
            let events = typed_events(&response.body);
            let last = events.last().unwrap();
            let failed = match path {
                "/v1/responses" => last["type"] == "error" || last["type"] == "response.failed",
                "/v1/messages" => last["type"] == "error",
                _ => last.get("error").is_some(),
            };
            assert!(failed, "{path}: {text}");
            assert!(!text.contains("response.completed"), "{path}: {text}");
            assert!(!text.contains("message_stop"), "{path}: {text}");
            assert!(!text.contains("[DONE]"), "{path}: {text}");
        }
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn one_json_body_for_a_stream_request_is_read_through_the_hub() {
    let (mock, proxy, _file) = keyless(ChatStyle::Vllm, "").await;
    let answer = ChatAnswer::text("Hé, the answer is 42.");
    mock.push(ChatScript::Json {
        status: 200,
        body: completion_body(ChatStyle::Vllm, MODEL, &answer),
    });
    let request = json!({"model": MODEL, "input": "hi", "stream": true});
    let response = post_json(&proxy, "/v1/responses", &request).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let events = typed_events(&response.body);
    let text: String = of_type(&events, "response.output_text.delta")
        .iter()
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, answer.text);
    assert_eq!(events.last().unwrap()["type"], "response.completed");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_responses_client_round_trips_a_tool_call_with_the_tool_following_mock() {
    let (mock, proxy, _file) = keyless(ChatStyle::LlamaCpp, "").await;
    mock.answer_tools(true);
    let shell = json!({"type": "function", "name": "shell", "description": "Run a command",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                       "required": ["command"]}});
    let request = json!({"model": MODEL, "stream": true, "tools": [shell],
        "input": [{"role": "user", "content": "Use the shell tool to print a marker."}]});
    let response = post_json(&proxy, "/v1/responses", &request).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let events = typed_events(&response.body);
    let done = of_type(&events, "response.output_item.done");
    let call = done
        .iter()
        .map(|e| &e["item"])
        .find(|i| i["type"] == "function_call")
        .expect("a function_call item");
    assert_eq!(call["name"], "shell");
    let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"command": "echo tool-ran-$((6*7))"}));
    let call_id = call["call_id"].as_str().unwrap().to_owned();
    let follow = json!({"model": MODEL, "stream": true, "tools": request["tools"],
    "input": [
        {"role": "user", "content": "Use the shell tool to print a marker."},
        {"type": "function_call", "call_id": call_id, "name": "shell",
         "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call_id, "output": "tool-ran-42"}
    ]});
    let response = post_json(&proxy, "/v1/responses", &follow).await;
    let events = typed_events(&response.body);
    let text: String = of_type(&events, "response.output_text.delta")
        .iter()
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "The tool returned: tool-ran-42");
    let sent = mock.requests()[1].json();
    assert_eq!(sent["messages"][2]["role"], "tool");
    assert_eq!(sent["messages"][2]["tool_call_id"], json!(call_id));
    proxy.shutdown().await;
}

/// `reasoning.effort` and `max_output_tokens` reach a chat server only in the fields its
/// provider says it takes: by default no `reasoning_effort` (some servers refuse fields they
/// do not know) and `max_tokens`; with `reasoning_effort = true` and
/// `max_completion_tokens = true`, those.
#[tokio::test]
async fn reasoning_effort_and_the_max_tokens_field_follow_what_the_provider_says_its_server_takes()
{
    let request = json!({"model": MODEL, "input": "hi", "stream": true,
        "reasoning": {"effort": "high"}, "max_output_tokens": 100});
    for (keys, effort, field) in [
        ("", None, "max_tokens"),
        (
            "reasoning_effort = true\nmax_completion_tokens = true\n",
            Some("high"),
            "max_completion_tokens",
        ),
    ] {
        let mock =
            ChatMock::start(ChatAuth::Keyless, ChatStyle::Vllm, ChatAnswer::text("ok")).await;
        let file = ConfigFile::new(&format!(
            "[providers.local]\nkind = \"chat\"\nbase_url = \"{}\"\nkeyless = true\n{keys}models = [\"qwen3-*\"]\n",
            mock.base_url
        ));
        let proxy =
            TestProxy::start_with_input("http://127.0.0.1:9/v1", &["--config", file.arg()], b"")
                .await;
        let response = post_json(&proxy, "/v1/responses", &request).await;
        assert_eq!(response.status, 200, "{keys:?}: {}", response.text());
        let sent = mock.requests()[0].json();
        assert_eq!(
            sent["reasoning_effort"].as_str(),
            effort,
            "{keys:?}: {sent}"
        );
        assert_eq!(sent[field], json!(100), "{keys:?}: {sent}");
        let other = if field == "max_tokens" {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        assert!(sent.get(other).is_none(), "{keys:?}: {sent}");
        proxy.shutdown().await;
    }
}
