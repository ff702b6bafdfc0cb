//! The Anthropic Messages API as the mock upstream answers it: the one model of an Anthropic
//! answer (events, JSON, errors, checks), served by `tests/common/mock.rs` (a submodule of it)
//! for the in-process tests and for `examples/mock_upstream.rs --wire anthropic` (the demo, the
//! bench and the end-to-end scripts).
//!
//! Routes (the base URL is `http://127.0.0.1:PORT/v1`; a query string such as Claude Code's
//! `?beta=true` is ignored):
//!   POST /v1/messages               a message, streamed or not (see "The answer")
//!   POST /v1/messages/count_tokens  `{"input_tokens": N}`
//!   anything else                   404 `not_found_error`
//!
//! Checked in this order, each refusal in Anthropic's error shape
//! (`{"type":"error","error":{"type":…,"message":…}}`):
//! 1. `x-api-key` must be one of the keys given to the mock, else 401 `authentication_error`
//!    (an `Authorization` header does not count: the Messages API takes `x-api-key`);
//! 2. `anthropic-version` must be present, else 400 `invalid_request_error`;
//!
//! then the mock's queued scripts, if any (`MockUpstream::push`), answer; else
//! 3. the body must be a JSON object with a string `model` and a `messages` array, and on
//!    `/v1/messages` an integer `max_tokens`, else 400 `invalid_request_error`.
//!
//! The answer. [`Answers::Canned`] (the in-process tests, which compare bytes with
//! [`events`]/[`json`] of [`canned`]): the configured text, model `claude-mock`, id
//! `msg_mock_1`, usage 12 input, 3 cache reads, 2 cache writes, 7 output; `count_tokens` 42.
//! [`Answers::Decided`] (the example binary): id `msg_mock_N` (N counts the mock's answers, so
//! an answer recorded by the mock can be told from another), the request's model, input tokens
//! the body's bytes / 4 (also the `count_tokens` answer), and decided by the last message:
//! * it is a user message holding `tool_result` blocks: a text quoting each result,
//!   `The tool returned: <content>` (results joined with "; ");
//! * the request has `tools`, and `tool_choice` is `any` or names a tool, or the last user text
//!   mentions a tool by name or the word "tool": one `tool_use` block for that tool (else the
//!   first), its `input` filled with the schema's required fields (`"mock"`, `1`, `true`, `[]`,
//!   `{}` by type), `stop_reason: "tool_use"`;
//! * otherwise the configured text, `stop_reason: "end_turn"`.
//!
//! A stream is `message_start`, `content_block_start`, `ping`, the deltas (`text_delta`, or
//! `input_json_delta` for a tool), `content_block_stop`, `message_delta` (stop reason and
//! `usage.output_tokens`), `message_stop`, each event after the configured gap (Anthropic's
//! order; docs/anthropic-wire.md).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use serde_json::{json, Map, Value};

use super::{sse_event, Script};

/// What an Anthropic mock accepts and says.
#[derive(Clone)]
pub struct MessagesConfig {
    /// The `x-api-key` values accepted.
    pub keys: Vec<String>,
    /// The answer's text.
    pub text: String,
    /// How many delta events carry it.
    pub deltas: usize,
    /// The wait before each event of a stream.
    pub gap: Duration,
    pub answers: Answers,
}

/// How the answer is chosen (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Answers {
    /// Always the configured text, with fixed id, model and usage.
    Canned,
    /// By the request: its model, its size, its tools and tool results.
    Decided,
}

/// Token counts of one answer.
#[derive(Clone, Copy)]
pub struct Usage {
    pub input: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
    pub output: u64,
}

/// One answer, before it is written as events or JSON.
pub struct Answer {
    pub id: String,
    pub model: String,
    pub reply: Reply,
    pub usage: Usage,
}

/// What the answer's one content block says.
pub enum Reply {
    Text(String),
    ToolUse { name: String, input: Value },
}

/// The canned answer saying `text` (see the module docs).
pub fn canned(text: &str) -> Answer {
    Answer {
        id: "msg_mock_1".into(),
        model: "claude-mock".into(),
        reply: Reply::Text(text.to_owned()),
        usage: Usage {
            input: 12,
            cache_read: 3,
            cache_creation: 2,
            output: 7,
        },
    }
}

/// The answer's stream, one framed event a string, the content in `deltas` delta events.
pub fn events(answer: &Answer, deltas: usize) -> Vec<String> {
    let usage = &answer.usage;
    let mut events = vec![
        sse_event(
            "message_start",
            json!({"message": {
                "id": answer.id, "type": "message", "role": "assistant", "model": answer.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": usage.input, "cache_read_input_tokens": usage.cache_read,
                          "cache_creation_input_tokens": usage.cache_creation, "output_tokens": 1},
            }}),
        ),
        sse_event(
            "content_block_start",
            json!({"index": 0, "content_block": answer.reply.block(false)}),
        ),
        sse_event("ping", json!({})),
    ];
    for delta in answer.reply.deltas(deltas) {
        events.push(sse_event(
            "content_block_delta",
            json!({"index": 0, "delta": delta}),
        ));
    }
    events.push(sse_event("content_block_stop", json!({"index": 0})));
    events.push(sse_event(
        "message_delta",
        json!({"delta": {"stop_reason": answer.reply.stop_reason(), "stop_sequence": null},
               "usage": {"output_tokens": usage.output}}),
    ));
    events.push(sse_event("message_stop", json!({})));
    events
}

/// The answer as one JSON message.
pub fn json(answer: &Answer) -> String {
    let usage = &answer.usage;
    json!({
        "id": answer.id, "type": "message", "role": "assistant", "model": answer.model,
        "content": [answer.reply.block(true)],
        "stop_reason": answer.reply.stop_reason(), "stop_sequence": null,
        "usage": {"input_tokens": usage.input, "cache_read_input_tokens": usage.cache_read,
                  "cache_creation_input_tokens": usage.cache_creation, "output_tokens": usage.output},
    })
    .to_string()
}

/// An Anthropic error body.
pub fn error_body(kind: &str, message: &str) -> String {
    json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
}

fn refuse(status: u16, kind: &str, message: &str) -> Script {
    Script::json(status, &error_body(kind, message))
}

/// Checks 1 and 2 of the module docs: the refusal, if the request fails one.
pub fn refusal(config: &MessagesConfig, headers: &HeaderMap) -> Option<Script> {
    let given = headers.get("x-api-key").map(|v| v.as_bytes());
    if !given.is_some_and(|g| config.keys.iter().any(|k| k.as_bytes() == g)) {
        return Some(refuse(401, "authentication_error", "invalid x-api-key"));
    }
    if !headers.contains_key("anthropic-version") {
        return Some(refuse(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        ));
    }
    None
}

/// How a request no script answered is answered (check 3, then the answer).
pub fn respond(config: &MessagesConfig, method: &str, path: &str, body: &[u8]) -> Script {
    let count_tokens = match (method, path) {
        ("POST", "/v1/messages") => false,
        ("POST", "/v1/messages/count_tokens") => true,
        _ => {
            return refuse(
                404,
                "not_found_error",
                &format!("{method} {path}: no such route"),
            )
        }
    };
    let request: Value = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => {
            return refuse(
                400,
                "invalid_request_error",
                "the body is not a JSON object",
            )
        }
    };
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return refuse(400, "invalid_request_error", "model: Field required");
    };
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return refuse(400, "invalid_request_error", "messages: Field required");
    };
    let decided = config.answers == Answers::Decided;
    let input = if decided {
        (body.len() as u64 / 4).max(1)
    } else {
        42
    };
    if count_tokens {
        return Script::json(200, &json!({ "input_tokens": input }).to_string());
    }
    if !request.get("max_tokens").is_some_and(Value::is_u64) {
        return refuse(400, "invalid_request_error", "max_tokens: Field required");
    }
    let answer = if decided {
        static ANSWERS: AtomicU64 = AtomicU64::new(0);
        let reply = decide(&request, messages, &config.text);
        Answer {
            id: format!("msg_mock_{}", ANSWERS.fetch_add(1, Ordering::Relaxed) + 1),
            model: model.to_owned(),
            usage: Usage {
                input,
                cache_read: 0,
                cache_creation: 0,
                output: reply.output_tokens(),
            },
            reply,
        }
    } else {
        canned(&config.text)
    };
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        Script::sse(&events(&answer, config.deltas), config.gap)
    } else {
        Script::json(200, &json(&answer))
    }
}

// === impl Reply ===

impl Reply {
    /// The content block: complete, or as `content_block_start` opens it (empty).
    fn block(&self, complete: bool) -> Value {
        match self {
            Reply::Text(text) => json!({"type": "text", "text": if complete { text } else { "" }}),
            Reply::ToolUse { name, input } => json!({
                "type": "tool_use", "id": "toolu_mock_1", "name": name,
                "input": if complete { input.clone() } else { json!({}) },
            }),
        }
    }

    fn stop_reason(&self) -> &'static str {
        match self {
            Reply::Text(_) => "end_turn",
            Reply::ToolUse { .. } => "tool_use",
        }
    }

    /// A word count, as a stand-in for tokens.
    fn output_tokens(&self) -> u64 {
        let n = match self {
            Reply::Text(text) => text.split_whitespace().count(),
            Reply::ToolUse { input, .. } => input.to_string().len().div_ceil(4),
        };
        n.max(1) as u64
    }

    /// The block's content in `n` delta objects (a tool's input JSON in pieces).
    fn deltas(&self, n: usize) -> Vec<Value> {
        let (whole, kind, field) = match self {
            Reply::Text(text) => (text.clone(), "text_delta", "text"),
            Reply::ToolUse { input, .. } => (input.to_string(), "input_json_delta", "partial_json"),
        };
        let chars: Vec<char> = whole.chars().collect();
        let per = chars.len().div_ceil(n.max(1)).max(1);
        chars
            .chunks(per)
            .map(|piece| json!({"type": kind, field: piece.iter().collect::<String>()}))
            .collect()
    }
}

/// The decided answer for this request (see the module docs).
fn decide(request: &Value, messages: &[Value], text: &str) -> Reply {
    let last = messages.last();
    let blocks: &[Value] = last
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let results: Vec<String> = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| match b.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .collect();
    if !results.is_empty() {
        return Reply::Text(format!("The tool returned: {}", results.join("; ")));
    }
    let tools: Vec<&Value> = request
        .get("tools")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter(|t| t.get("name").is_some()).collect())
        .unwrap_or_default();
    if tools.is_empty() {
        return Reply::Text(text.to_owned());
    }
    let name_of = |t: &Value| {
        t.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let prompt: String = match last.and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s.clone(),
        _ => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .filter(|t| !t.starts_with('<'))
            .collect::<Vec<_>>()
            .join(" "),
    };
    let choice = request.get("tool_choice");
    let chosen_by_choice = match choice.and_then(|c| c.get("type")).and_then(Value::as_str) {
        Some("tool") => {
            let wanted = choice.and_then(|c| c.get("name")).and_then(Value::as_str);
            tools
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == wanted)
        }
        Some("any") => tools.first(),
        _ => None,
    };
    let named = tools.iter().find(|t| prompt.contains(&name_of(t)));
    let chosen = chosen_by_choice.or(named).or_else(|| {
        prompt
            .to_lowercase()
            .contains("tool")
            .then(|| tools.first())
            .flatten()
    });
    match chosen {
        Some(tool) => Reply::ToolUse {
            name: name_of(tool),
            input: example(tool.get("input_schema")),
        },
        None => Reply::Text(text.to_owned()),
    }
}

/// A value of this JSON schema: an object gets its required properties.
fn example(schema: Option<&Value>) -> Value {
    let Some(schema) = schema else {
        return json!({});
    };
    let kind = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object");
    match kind {
        "object" => {
            let mut map = Map::new();
            let required = schema.get("required").and_then(Value::as_array);
            for name in required.into_iter().flatten().filter_map(Value::as_str) {
                let property = schema.get("properties").and_then(|p| p.get(name));
                map.insert(name.to_owned(), example(property));
            }
            Value::Object(map)
        }
        "string" => json!("mock"),
        "integer" | "number" => json!(1),
        "boolean" => json!(true),
        "array" => json!([]),
        _ => Value::Null,
    }
}
