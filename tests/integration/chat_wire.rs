//! The Chat Completions mock (`tests/common/chat_mock.rs`) over a real socket, its answers
//! read by the chat wire's pieces as the seam will use them: the hub decoder behind
//! `StreamPipeline::over_wire`, `decode_body` for one-JSON-body answers, and the passthrough
//! stage for Chat clients. (Routing a provider to the mock is the seam's part.)

use std::collections::HashSet;
use std::time::Duration;

use codex_proxy::translate::codec::DecodeError;
use codex_proxy::translate::hub::chat::{decode_body, ChatPassthrough, ChatWireDecoder};
use codex_proxy::translate::think::ThinkMode;
use codex_proxy::translate::tool_names::ToolNameMap;
use codex_proxy::translate::{
    anthropic, chat, responses, AggregatePipeline, Dialect, ResponseContext, StreamPipeline,
};
use serde_json::{json, Value};

use crate::chat_mock::{
    chunk, error_chunk, stream_body, ChatAnswer, ChatAuth, ChatMock, ChatScript, ChatStyle,
};
use crate::raw::{exchange, post, RawResponse};

const LIMIT: Duration = Duration::from_secs(10);

async fn ask(mock: &ChatMock, body: Value, headers: &[(&str, &str)]) -> RawResponse {
    let request = post(
        mock.addr,
        "/v1/chat/completions",
        &body.to_string(),
        headers,
    );
    exchange(mock.addr, &request, LIMIT).await
}

fn stream_request(usage: bool) -> Value {
    json!({"model":"qwen3-coder","stream":true,"stream_options":{"include_usage":usage},
           "messages":[{"role":"user","content":"hi"}]})
}

fn decoder(think: ThinkMode) -> Box<ChatWireDecoder> {
    Box::new(ChatWireDecoder::new(
        "qwen3-coder",
        think,
        ToolNameMap::default(),
        HashSet::new(),
    ))
}

/// The Responses object a non-streaming client gets for a chat stream.
fn responses_answer(body: &[u8], think: ThinkMode) -> (u16, Value) {
    let mut pipeline =
        AggregatePipeline::new(&responses::context("qwen3-coder")).over_wire(decoder(think));
    pipeline.push(body);
    let rendered = pipeline.finish(None);
    (
        rendered.status,
        serde_json::from_slice(&rendered.body).unwrap(),
    )
}

#[tokio::test]
async fn the_mock_checks_the_bearer_key_or_its_absence() {
    let keyed = ChatMock::start(
        ChatAuth::Bearer("sk-local".into()),
        ChatStyle::Vllm,
        ChatAnswer::text("hi"),
    )
    .await;
    let wrong = ask(
        &keyed,
        stream_request(true),
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    let missing = ask(&keyed, stream_request(true), &[]).await;
    assert_eq!(missing.status, 401);
    let right = ask(
        &keyed,
        stream_request(true),
        &[("authorization", "Bearer sk-local")],
    )
    .await;
    assert_eq!(right.status, 200);

    let keyless = ChatMock::start(ChatAuth::Keyless, ChatStyle::Vllm, ChatAnswer::text("hi")).await;
    let sent = ask(
        &keyless,
        stream_request(true),
        &[("authorization", "Bearer x")],
    )
    .await;
    assert_eq!(sent.status, 401);
    assert!(sent.text().contains("keyless"), "{}", sent.text());
    let none = ask(&keyless, stream_request(true), &[]).await;
    assert_eq!(none.status, 200);
    assert_eq!(none.header("content-type"), Some("text/event-stream"));
    assert_eq!(keyless.requests().len(), 2);
    assert_eq!(keyless.requests()[1].json()["model"], "qwen3-coder");
}

#[tokio::test]
async fn every_style_reads_as_reasoning_then_text_through_the_hub() {
    for style in [
        ChatStyle::LlamaCpp,
        ChatStyle::Vllm,
        ChatStyle::Ollama,
        ChatStyle::ThinkTags,
    ] {
        let mock =
            ChatMock::start(ChatAuth::Keyless, style, ChatAnswer::text("Hello, wörld!")).await;
        let answer = ask(&mock, stream_request(true), &[]).await;
        assert_eq!(answer.status, 200);
        assert!(answer.complete);
        let think = match style {
            ChatStyle::ThinkTags => ThinkMode::Reasoning,
            _ => ThinkMode::Off,
        };
        let (status, body) = responses_answer(&answer.body, think);
        assert_eq!(status, 200, "{style:?}");
        assert_eq!(body["status"], "completed", "{style:?}");
        assert_eq!(body["output"][0]["type"], "reasoning", "{style:?}");
        assert_eq!(
            body["output"][0]["content"][0]["text"], "Thinking it over.",
            "{style:?}"
        );
        let text = body["output"][1]["content"][0]["text"].as_str().unwrap();
        assert_eq!(text.trim_start(), "Hello, wörld!", "{style:?}");
        assert_eq!(body["usage"]["input_tokens"], 11, "{style:?}");
        assert_eq!(body["usage"]["output_tokens"], 7, "{style:?}");
    }
}

#[tokio::test]
async fn a_tool_call_reaches_an_anthropic_client_as_tool_use() {
    let mut answer = ChatAnswer::text("Listing.");
    answer.tool_call = Some(("Bash".into(), "{\"command\":\"ls -la\"}".into()));
    let mock = ChatMock::start(ChatAuth::Keyless, ChatStyle::LlamaCpp, answer).await;
    let got = ask(&mock, stream_request(true), &[]).await;
    let ctx = ResponseContext::new(
        Dialect::Anthropic,
        "claude-alias",
        &anthropic::WITH_THINKING,
    );
    let mut pipeline = StreamPipeline::new(&ctx).over_wire(decoder(ThinkMode::Off));
    let mut out = Vec::new();
    // As the bytes might arrive: 7 at a time.
    for piece in got.body.chunks(7) {
        pipeline.push(piece, &mut out);
    }
    pipeline.finish(None, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("\"type\":\"tool_use\",\"id\":\"call_mock_1\",\"name\":\"Bash\""),
        "{text}"
    );
    assert!(text.contains("\"stop_reason\":\"tool_use\""), "{text}");
    assert!(
        text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{text}"
    );
}

#[tokio::test]
async fn passthrough_relays_the_mocks_bytes_except_the_documented_rewrites() {
    let mock = ChatMock::start(
        ChatAuth::Keyless,
        ChatStyle::Vllm,
        ChatAnswer::text("Same bytes."),
    )
    .await;
    // The proxy asked for usage on the client's behalf; the client did not.
    let answer = ask(&mock, stream_request(true), &[]).await;
    let expected = mock.answer("qwen3-coder", true);
    assert_eq!(answer.text(), expected);
    let mut stage = ChatPassthrough::new(ThinkMode::Off, true);
    let mut out = Vec::new();
    for piece in answer.body.chunks(5) {
        stage.push(piece, &mut out).unwrap();
    }
    stage.finish(&mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), expected);

    let mut stage = ChatPassthrough::new(ThinkMode::Off, false);
    let mut out = Vec::new();
    stage.push(&answer.body, &mut out).unwrap();
    stage.finish(&mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        mock.answer("qwen3-coder", false)
    );
    assert_eq!(stage.usage().unwrap().prompt_tokens, Some(11));

    // Inline tags, stripped on the way.
    let tags = ChatMock::start(
        ChatAuth::Keyless,
        ChatStyle::ThinkTags,
        ChatAnswer::text("Clean."),
    )
    .await;
    let answer = ask(&tags, stream_request(false), &[]).await;
    let mut stage = ChatPassthrough::new(ThinkMode::Strip, false);
    let mut out = Vec::new();
    for piece in answer.body.chunks(3) {
        stage.push(piece, &mut out).unwrap();
    }
    stage.finish(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        !text.contains("think") && !text.contains("Thinking"),
        "{text}"
    );
    let mut content = String::new();
    for event in text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
        if let Ok(v) = serde_json::from_str::<Value>(event) {
            content.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(content, "Clean.");
}

#[tokio::test]
async fn a_cut_stream_is_truncated_for_every_reader() {
    let mock = ChatMock::start(ChatAuth::Keyless, ChatStyle::Vllm, ChatAnswer::text("x")).await;
    let partial = chunk(
        "m",
        json!({"role":"assistant","content":"half an ans"}),
        None,
    );
    mock.push(ChatScript::cut(&partial, 4));
    let answer = ask(&mock, stream_request(true), &[]).await;
    assert!(!answer.complete);
    let mut stage = ChatPassthrough::new(ThinkMode::Off, true);
    let mut out = Vec::new();
    stage.push(&answer.body, &mut out).unwrap();
    assert_eq!(stage.finish(&mut out), Err(DecodeError::Truncated));
    for ctx in [
        responses::context("m"),
        ResponseContext::new(Dialect::Chat, "m", &chat::PARTS),
        ResponseContext::new(Dialect::Anthropic, "m", &anthropic::WITHOUT_THINKING),
    ] {
        let mut pipeline = StreamPipeline::new(&ctx).over_wire(decoder(ThinkMode::Off));
        let mut out = Vec::new();
        pipeline.push(&answer.body, &mut out);
        pipeline.finish(None, &mut out);
        assert!(!pipeline.saw_terminal());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("error"), "{:?}: {text}", ctx.dialect);
        assert!(
            !text.contains("[DONE]") && !text.contains("message_stop"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_one_json_body_answer_to_a_stream_request_is_read_whole() {
    let mut answer = ChatAnswer::text("All at once.");
    answer.tool_call = Some(("shell".into(), "{\"cmd\":\"pwd\"}".into()));
    let mock = ChatMock::start(ChatAuth::Keyless, ChatStyle::Ollama, answer.clone()).await;
    mock.push(ChatScript::Json {
        status: 200,
        body: crate::chat_mock::completion_body(ChatStyle::Ollama, "qwen3-coder", &answer),
    });
    let got = ask(&mock, stream_request(true), &[]).await;
    assert_eq!(got.header("content-type"), Some("application/json"));
    let mut decoder = ChatWireDecoder::new(
        "qwen3-coder",
        ThinkMode::Off,
        ToolNameMap::default(),
        HashSet::new(),
    );
    let mut kinds = Vec::new();
    let mut terminal = Value::Null;
    decode_body(&mut decoder, &got.body, &mut |kind: &str, data: &[u8]| {
        kinds.push(kind.to_owned());
        if kind == "response.completed" {
            terminal = serde_json::from_slice(data).unwrap();
        }
    });
    assert_eq!(kinds.first().map(String::as_str), Some("response.created"));
    let output = &terminal["response"]["output"];
    assert_eq!(output[0]["content"][0]["text"], "Thinking it over.");
    assert_eq!(output[1]["content"][0]["text"], "All at once.");
    assert_eq!(output[2]["name"], "shell");
    assert_eq!(output[2]["arguments"], "{\"cmd\":\"pwd\"}");
}

#[tokio::test]
async fn in_band_and_http_errors_come_back_as_scripted() {
    let mock = ChatMock::start(ChatAuth::Keyless, ChatStyle::Vllm, ChatAnswer::text("x")).await;
    mock.push(ChatScript::stream(
        &error_chunk("overloaded, retry", "server_error", json!(503)),
        0,
    ));
    mock.push(ChatScript::Json {
        status: 429,
        body: json!({"error":{"message":"slow down","type":"rate_limit_exceeded"}}).to_string(),
    });
    mock.push(ChatScript::Text {
        status: 500,
        body: "internal failure".into(),
    });
    let in_band = ask(&mock, stream_request(true), &[]).await;
    assert_eq!(in_band.status, 200);
    let (status, body) = responses_answer(&in_band.body, ThinkMode::Off);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("server_is_overloaded"))
    );
    assert_eq!(ask(&mock, stream_request(true), &[]).await.status, 429);
    let text = ask(&mock, stream_request(true), &[]).await;
    assert_eq!(
        (text.status, text.text().as_str()),
        (500, "internal failure")
    );
    // The scripts are used up: the default answer again.
    let again = ask(&mock, stream_request(false), &[]).await;
    assert_eq!(
        again.text(),
        stream_body(
            ChatStyle::Vllm,
            "qwen3-coder",
            &ChatAnswer::text("x"),
            false
        )
    );
}

#[tokio::test]
async fn a_non_streaming_request_gets_one_completion_body() {
    let mock = ChatMock::start(
        ChatAuth::Keyless,
        ChatStyle::LlamaCpp,
        ChatAnswer::text("Plain."),
    )
    .await;
    let got = ask(
        &mock,
        json!({"model":"m","messages":[{"role":"user","content":"hi"}]}),
        &[],
    )
    .await;
    let body = got.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Plain.");
    assert_eq!(
        body["choices"][0]["message"]["reasoning_content"],
        "Thinking it over."
    );
}
