//! An offline Anthropic Messages upstream on 127.0.0.1: the wire an `anthropic` provider
//! speaks, for `examples/mock_upstream.rs --wire anthropic` (the demo and the end-to-end
//! scripts). Plain HTTP/1.1 and h2 (prior knowledge), like the Responses mock.
//!
//! Routes (the base URL is `http://127.0.0.1:PORT/v1`; a query string such as Claude Code's
//! `?beta=true` is ignored):
//!   POST /v1/messages               a message saying the configured text, streamed or not
//!   POST /v1/messages/count_tokens  `{"input_tokens": N}`, N = the body's bytes / 4 (at least 1)
//!   anything else                   404 `not_found_error`
//!
//! Checked in this order, each refusal in Anthropic's error shape
//! (`{"type":"error","error":{"type":…,"message":…}}`):
//! 1. `x-api-key` must be the key given to the mock, else 401 `authentication_error`
//!    (an `Authorization` header does not count: the Messages API takes `x-api-key`);
//! 2. `anthropic-version` must be present, else 400 `invalid_request_error`;
//! 3. the body must be a JSON object with a string `model` and a `messages` array, and on
//!    `/v1/messages` an integer `max_tokens`, else 400 `invalid_request_error`.
//!
//! The answer, decided by the last message:
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
//! `usage.output_tokens`), `message_stop`, each event after the configured gap.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the mock accepts and says.
#[derive(Clone)]
pub struct MessagesConfig {
    /// The only `x-api-key` accepted.
    pub api_key: String,
    /// The answer's text.
    pub text: String,
    /// How many `text_delta` events carry it.
    pub deltas: usize,
    /// The wait before each event of a stream.
    pub gap: Duration,
}

/// A running Messages mock.
pub struct MessagesMock {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
}

impl MessagesMock {
    /// Listens on 127.0.0.1:`port` (0: ephemeral) and serves until the runtime ends.
    pub async fn start(port: u16, config: MessagesConfig) -> MessagesMock {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Arc::new(config);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let config = Arc::clone(&config);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let config = Arc::clone(&config);
                        async move { Ok::<_, Infallible>(answer(request, &config).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        MessagesMock {
            addr,
            base_url: format!("http://127.0.0.1:{}/v1", addr.port()),
        }
    }
}

type MockBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(request: Request<Incoming>, config: &MessagesConfig) -> Response<MockBody> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path();
    let count_tokens = match (&parts.method, path) {
        (&Method::POST, "/v1/messages") => false,
        (&Method::POST, "/v1/messages/count_tokens") => true,
        _ => {
            return error(
                404,
                "not_found_error",
                &format!("{} {path}: no such route", parts.method),
            )
        }
    };
    let key = parts.headers.get("x-api-key").map(|v| v.as_bytes());
    if key != Some(config.api_key.as_bytes()) {
        return error(401, "authentication_error", "invalid x-api-key");
    }
    if !parts.headers.contains_key("anthropic-version") {
        return error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => {
            return error(
                400,
                "invalid_request_error",
                "the body is not a JSON object",
            )
        }
    };
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return error(400, "invalid_request_error", "model: Field required");
    };
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return error(400, "invalid_request_error", "messages: Field required");
    };
    let input_tokens = (body.len() / 4).max(1);
    if count_tokens {
        return json_response(200, &json!({ "input_tokens": input_tokens }));
    }
    if !request.get("max_tokens").is_some_and(Value::is_u64) {
        return error(400, "invalid_request_error", "max_tokens: Field required");
    }
    let reply = decide(&request, messages, &config.text);
    let streaming = request.get("stream").and_then(Value::as_bool) == Some(true);
    let output_tokens = reply.output_tokens();
    if !streaming {
        return json_response(
            200,
            &json!({
                "id": "msg_mock_1",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [reply.block(true)],
                "stop_reason": reply.stop_reason(),
                "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            }),
        );
    }
    let mut events = vec![
        event(
            "message_start",
            json!({"message": {
                "id": "msg_mock_1", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            }}),
        ),
        event(
            "content_block_start",
            json!({"index": 0, "content_block": reply.block(false)}),
        ),
        event("ping", json!({})),
    ];
    for delta in reply.deltas(config.deltas) {
        events.push(event(
            "content_block_delta",
            json!({"index": 0, "delta": delta}),
        ));
    }
    events.push(event("content_block_stop", json!({"index": 0})));
    events.push(event(
        "message_delta",
        json!({"delta": {"stop_reason": reply.stop_reason(), "stop_sequence": null},
               "usage": {"output_tokens": output_tokens}}),
    ));
    events.push(event("message_stop", json!({})));
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let gap = config.gap;
    tokio::spawn(async move {
        for event in events {
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            if tx.send(Bytes::from(event)).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(ChannelBody { rx }.boxed());
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}

/// What the mock answers with.
enum Reply {
    Text(String),
    ToolUse { name: String, input: Value },
}

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
    fn output_tokens(&self) -> usize {
        match self {
            Reply::Text(text) => text.split_whitespace().count().max(1),
            Reply::ToolUse { input, .. } => input.to_string().len().div_ceil(4).max(1),
        }
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

/// The answer for this request (see the module docs).
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

fn event(kind: &str, mut data: Value) -> String {
    data["type"] = Value::String(kind.to_owned());
    format!("event: {kind}\ndata: {data}\n\n")
}

fn error(status: u16, kind: &str, message: &str) -> Response<MockBody> {
    json_response(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

fn json_response(status: u16, body: &Value) -> Response<MockBody> {
    let mut response =
        Response::new(http_body_util::Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}
