//! A scriptable Chat Completions server: a real hyper server on 127.0.0.1:0 that answers
//! `POST …/chat/completions` in the style of llama.cpp, vLLM, Ollama or a plain server that
//! leaves `<think>` tags in the text, and records every request.
//!
//! * Authorization: [`ChatAuth::Bearer`] answers 401 unless the request carries exactly
//!   `Authorization: Bearer KEY`; [`ChatAuth::Keyless`] answers 401 when the request carries
//!   any `Authorization` at all (a keyless provider must send none).
//! * By default a request gets [`ChatMock::answer`] in the mock's [`ChatStyle`]: a stream when
//!   the body says `"stream": true` (with the usage chunk when it asks for
//!   `stream_options.include_usage`), else one `chat.completion` JSON body.
//! * With [`ChatMock::answer_tools`] on (`mock_upstream --wire chat --tools`), the default
//!   answer follows the conversation like an agent's model ([`tool_answer`]): after a `tool`
//!   message, `The tool returned: <content>`; given `tools` and a last user text that names
//!   one (or says "tool"), or a `tool_choice` that asks for one, a call of that tool (else the
//!   first) with its required arguments filled (a `command` gets `echo tool-ran-$((6*7))`).
//! * Queued [`ChatScript`]s answer the next requests instead: chunk streams written in pieces
//!   of any size (so tags, UTF-8 characters and lines are split anywhere), cut connections,
//!   in-band error chunks, one JSON body to a stream request, HTTP errors.
//!
//! Shared by the tests and `examples/mock_upstream.rs --wire chat` (the demo and e2e scripts).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the mock expects in `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatAuth {
    /// `Authorization: Bearer KEY`, exactly.
    Bearer(String),
    /// No `Authorization` header at all.
    Keyless,
}

/// Where a server puts the model's reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatStyle {
    /// `delta.reasoning_content`, and `timings` on the last chunk.
    LlamaCpp,
    /// `delta.reasoning_content`.
    Vllm,
    /// `delta.reasoning`.
    Ollama,
    /// `<think>…</think>` inline in `delta.content`.
    ThinkTags,
}

impl ChatStyle {
    /// The style named `llama.cpp`/`llamacpp`, `vllm`, `ollama` or `think`.
    pub fn parse(name: &str) -> Option<ChatStyle> {
        match name {
            "llama.cpp" | "llamacpp" => Some(ChatStyle::LlamaCpp),
            "vllm" => Some(ChatStyle::Vllm),
            "ollama" => Some(ChatStyle::Ollama),
            "think" => Some(ChatStyle::ThinkTags),
            _ => None,
        }
    }
}

/// What the default answer says.
#[derive(Debug, Clone)]
pub struct ChatAnswer {
    /// Reasoning before the text (none when empty).
    pub reasoning: String,
    /// The answer's text.
    pub text: String,
    /// A tool call after the text: name and JSON arguments.
    pub tool_call: Option<(String, String)>,
    /// How many content chunks the text is cut into.
    pub deltas: usize,
    /// Prompt and completion tokens in the usage.
    pub usage: (u64, u64),
}

impl ChatAnswer {
    /// An answer that says `text` in a few chunks, with a little reasoning.
    pub fn text(text: &str) -> ChatAnswer {
        ChatAnswer {
            reasoning: "Thinking it over.".into(),
            text: text.into(),
            tool_call: None,
            deltas: 4,
            usage: (11, 7),
        }
    }
}

/// How to answer one request.
pub enum ChatScript {
    /// A `text/event-stream` body written in the given pieces, `gap` apart; when `cut`, the
    /// connection fails after the last piece instead of ending cleanly.
    Stream {
        pieces: Vec<Bytes>,
        gap: Duration,
        cut: bool,
    },
    /// A JSON body with this status (a one-body answer to a stream request, or an HTTP error).
    Json { status: u16, body: String },
    /// A plain-text body with this status (servers that answer errors in plain text).
    Text { status: u16, body: String },
}

impl ChatScript {
    /// `body` as an event stream written `every` bytes at a time (0: in one write).
    pub fn stream(body: &str, every: usize) -> ChatScript {
        ChatScript::Stream {
            pieces: split_every(body.as_bytes(), every),
            gap: Duration::ZERO,
            cut: false,
        }
    }

    /// `body` written `every` bytes at a time, then the connection is cut.
    pub fn cut(body: &str, every: usize) -> ChatScript {
        ChatScript::Stream {
            pieces: split_every(body.as_bytes(), every),
            gap: Duration::ZERO,
            cut: true,
        }
    }
}

fn split_every(bytes: &[u8], every: usize) -> Vec<Bytes> {
    match every {
        0 => vec![Bytes::copy_from_slice(bytes)],
        n => bytes.chunks(n).map(Bytes::copy_from_slice).collect(),
    }
}

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub struct ChatRecorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ChatRecorded {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

struct Shared {
    auth: ChatAuth,
    style: ChatStyle,
    answer: ChatAnswer,
    gap: Duration,
    recorded: Mutex<Vec<ChatRecorded>>,
    scripts: Mutex<VecDeque<ChatScript>>,
    /// The default answer follows tools and tool results ([`tool_answer`]).
    tools: AtomicBool,
}

/// The running mock; see the module docs.
pub struct ChatMock {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT/v1`, the provider's `base_url`.
    pub base_url: String,
    shared: Arc<Shared>,
}

impl ChatMock {
    /// A mock on an ephemeral port.
    pub async fn start(auth: ChatAuth, style: ChatStyle, answer: ChatAnswer) -> ChatMock {
        Self::start_on(0, auth, style, answer, Duration::ZERO).await
    }

    /// A mock on `port` (0: ephemeral) whose default stream sends its chunks `gap` apart.
    pub async fn start_on(
        port: u16,
        auth: ChatAuth,
        style: ChatStyle,
        answer: ChatAnswer,
        gap: Duration,
    ) -> ChatMock {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            auth,
            style,
            answer,
            gap,
            recorded: Mutex::new(Vec::new()),
            scripts: Mutex::new(VecDeque::new()),
            tools: AtomicBool::new(false),
        });
        let mock = ChatMock {
            addr,
            base_url: format!("http://127.0.0.1:{}/v1", addr.port()),
            shared: Arc::clone(&shared),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(serve(request, shared).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        mock
    }

    /// Turns the tool-following default answer on or off (see the module docs).
    pub fn answer_tools(&self, on: bool) {
        self.shared.tools.store(on, Ordering::Relaxed);
    }

    /// Queues the answer for a future request (answered in order, before the default).
    pub fn push(&self, script: ChatScript) {
        self.shared.scripts.lock().unwrap().push_back(script);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<ChatRecorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    /// The default answer's stream for a request for `model` (with the usage chunk when
    /// `usage`), in the mock's style.
    pub fn answer(&self, model: &str, usage: bool) -> String {
        stream_body(self.shared.style, model, &self.shared.answer, usage)
    }
}

// === Answers ===

/// One `chat.completion.chunk` event.
pub fn chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
    let body = json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,
        "model":model,"choices":[{"index":0,"delta":delta,"logprobs":null,"finish_reason":finish}]});
    format!("data: {body}\n\n")
}

/// The usage chunk (`choices: []`).
pub fn usage_chunk(model: &str, usage: (u64, u64)) -> String {
    let body = json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,
        "model":model,"choices":[],
        "usage":{"prompt_tokens":usage.0,"completion_tokens":usage.1,"total_tokens":usage.0 + usage.1}});
    format!("data: {body}\n\n")
}

/// An in-band error chunk, as OpenAI-compatible servers send one mid-stream.
pub fn error_chunk(message: &str, kind: &str, code: Value) -> String {
    format!(
        "data: {}\n\n",
        json!({"error":{"message":message,"type":kind,"code":code}})
    )
}

/// `text` cut into `n` pieces on character boundaries.
fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let per = chars.len().div_ceil(n.max(1)).max(1);
    chars.chunks(per).map(|c| c.iter().collect()).collect()
}

/// The whole answer as a chunk stream in `style`, ending in `[DONE]`.
pub fn stream_body(style: ChatStyle, model: &str, answer: &ChatAnswer, usage: bool) -> String {
    let mut out = chunk(model, json!({"role":"assistant","content":""}), None);
    if !answer.reasoning.is_empty() {
        for piece in pieces(&answer.reasoning, 2) {
            let delta = match style {
                ChatStyle::LlamaCpp | ChatStyle::Vllm => json!({ "reasoning_content": piece }),
                ChatStyle::Ollama => json!({ "reasoning": piece }),
                ChatStyle::ThinkTags => json!({ "content": piece }),
            };
            if style == ChatStyle::ThinkTags && out.matches("<think>").count() == 0 {
                out.push_str(&chunk(model, json!({"content":"<think>"}), None));
            }
            out.push_str(&chunk(model, delta, None));
        }
        if style == ChatStyle::ThinkTags {
            out.push_str(&chunk(model, json!({"content":"</think>\n\n"}), None));
        }
    }
    for piece in pieces(&answer.text, answer.deltas) {
        out.push_str(&chunk(model, json!({ "content": piece }), None));
    }
    let finish = match &answer.tool_call {
        Some((name, arguments)) => {
            out.push_str(&chunk(
                model,
                json!({"tool_calls":[{"index":0,"id":"call_mock_1","type":"function",
                    "function":{"name":name,"arguments":""}}]}),
                None,
            ));
            for piece in pieces(arguments, 3) {
                out.push_str(&chunk(
                    model,
                    json!({"tool_calls":[{"index":0,"function":{"arguments":piece}}]}),
                    None,
                ));
            }
            "tool_calls"
        }
        None => "stop",
    };
    let last = chunk(model, json!({}), Some(finish));
    match style {
        ChatStyle::LlamaCpp => {
            let mut v: Value =
                serde_json::from_str(last.trim_start_matches("data: ").trim_end()).unwrap();
            v["timings"] = json!({"prompt_n": answer.usage.0, "predicted_n": answer.usage.1});
            out.push_str(&format!("data: {v}\n\n"));
        }
        _ => out.push_str(&last),
    }
    if usage {
        out.push_str(&usage_chunk(model, answer.usage));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

/// The whole answer as one `chat.completion` body in `style`.
pub fn completion_body(style: ChatStyle, model: &str, answer: &ChatAnswer) -> String {
    let mut message = json!({"role":"assistant","content":answer.text});
    if !answer.reasoning.is_empty() {
        match style {
            ChatStyle::LlamaCpp | ChatStyle::Vllm => {
                message["reasoning_content"] = json!(answer.reasoning)
            }
            ChatStyle::Ollama => message["reasoning"] = json!(answer.reasoning),
            ChatStyle::ThinkTags => {
                message["content"] = json!(format!(
                    "<think>{}</think>\n\n{}",
                    answer.reasoning, answer.text
                ))
            }
        }
    }
    let finish = match &answer.tool_call {
        Some((name, arguments)) => {
            message["tool_calls"] = json!([{"id":"call_mock_1","type":"function",
                "function":{"name":name,"arguments":arguments}}]);
            "tool_calls"
        }
        None => "stop",
    };
    json!({"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":model,
        "choices":[{"index":0,"message":message,"finish_reason":finish}],
        "usage":{"prompt_tokens":answer.usage.0,"completion_tokens":answer.usage.1,
                 "total_tokens":answer.usage.0 + answer.usage.1}})
    .to_string()
}

// === Serving ===

type MockBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

async fn serve(request: Request<Incoming>, shared: Arc<Shared>) -> Response<MockBody> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let recorded = ChatRecorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    shared.recorded.lock().unwrap().push(recorded);
    if parts.method != http::Method::POST || !parts.uri.path().ends_with("/chat/completions") {
        return json_response(
            404,
            &error_json("no such route", "not_found_error", json!(null)),
        );
    }
    let auth = parts
        .headers
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let auth_ok = match &shared.auth {
        ChatAuth::Keyless => auth.is_none(),
        ChatAuth::Bearer(key) => auth.as_deref() == Some(format!("Bearer {key}").as_str()),
    };
    if !auth_ok {
        let message = match &shared.auth {
            ChatAuth::Keyless => "unexpected Authorization header on a keyless server",
            ChatAuth::Bearer(_) => "invalid api key",
        };
        return json_response(
            401,
            &error_json(message, "invalid_request_error", json!("invalid_api_key")),
        );
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or("mock-model").to_owned();
    let streaming = request["stream"].as_bool() == Some(true);
    let usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
    let script = shared.scripts.lock().unwrap().pop_front();
    match script {
        Some(ChatScript::Stream { pieces, gap, cut }) => sse_response(pieces, gap, cut),
        Some(ChatScript::Json { status, body }) => json_response(status, &body),
        Some(ChatScript::Text { status, body }) => {
            let mut response = Response::new(full(body));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            response
                .headers_mut()
                .insert("content-type", "text/plain".parse().unwrap());
            response
        }
        None if streaming => {
            let answer = match shared.tools.load(Ordering::Relaxed) {
                true => tool_answer(&request, &shared.answer),
                false => shared.answer.clone(),
            };
            let body = stream_body(shared.style, &model, &answer, usage);
            // One event per write, `gap` apart.
            let pieces = body
                .split_inclusive("\n\n")
                .map(|e| Bytes::from(e.to_owned()))
                .collect();
            sse_response(pieces, shared.gap, false)
        }
        None => {
            let answer = match shared.tools.load(Ordering::Relaxed) {
                true => tool_answer(&request, &shared.answer),
                false => shared.answer.clone(),
            };
            json_response(200, &completion_body(shared.style, &model, &answer))
        }
    }
}

/// The answer an agent's model would give to `request` (a chat body): after a `tool` message,
/// a text quoting the results; given tools and a last user text (its last text part that is
/// not a `<system-reminder>`) naming one (or the word
/// "tool"), or a `tool_choice` asking for one, a call of that tool (else the first) with its
/// required arguments filled; else `base`. Reasoning and usage are `base`'s.
pub fn tool_answer(request: &Value, base: &ChatAnswer) -> ChatAnswer {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let text_of = |content: &Value| match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    let mut answer = base.clone();
    answer.tool_call = None;
    let last = messages.last().cloned().unwrap_or(Value::Null);
    if last["role"] == "tool" {
        let results: Vec<String> = messages
            .iter()
            .rev()
            .take_while(|m| m["role"] == "tool")
            .map(|m| text_of(&m["content"]))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        answer.text = format!("The tool returned: {}", results.join("; "));
        return answer;
    }
    let tools = request["tools"].as_array().cloned().unwrap_or_default();
    let name_of = |tool: &Value| tool["function"]["name"].as_str().unwrap_or("").to_owned();
    // The last text part of the last user message that is not a `<system-reminder>` (Claude
    // Code puts reminders, which name tools, beside the prompt).
    let prompt = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| match &m["content"] {
            Value::Array(parts) => parts
                .iter()
                .rev()
                .filter_map(|p| p["text"].as_str())
                .find(|t| !t.trim_start().starts_with("<system-reminder>"))
                .unwrap_or_default()
                .to_owned(),
            content => without_reminders(&text_of(content)),
        })
        .unwrap_or_default();
    let forced = match &request["tool_choice"] {
        Value::String(s) if s == "required" => tools.first().cloned(),
        Value::Object(o) => {
            let wanted = o
                .get("function")
                .and_then(|f| f["name"].as_str())
                .unwrap_or("");
            tools.iter().find(|t| name_of(t) == wanted).cloned()
        }
        _ => None,
    };
    let chosen = forced
        .or_else(|| {
            tools
                .iter()
                .find(|t| !name_of(t).is_empty() && prompt.contains(&name_of(t)))
                .cloned()
        })
        .or_else(|| {
            prompt
                .to_lowercase()
                .contains("tool")
                .then(|| tools.first().cloned())
                .flatten()
        });
    if let Some(tool) = chosen {
        let arguments = example(Some(&tool["function"]["parameters"]), "");
        answer.text = String::new();
        answer.tool_call = Some((name_of(&tool), arguments.to_string()));
    }
    answer
}

/// `text` without its `<system-reminder>…</system-reminder>` sections (a mapper may join
/// Claude Code's reminder parts and its prompt into one string).
fn without_reminders(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("<system-reminder>") {
        out.push_str(&rest[..start]);
        rest = match rest[start..].find("</system-reminder>") {
            Some(end) => &rest[start + end + "</system-reminder>".len()..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// A value of a JSON schema: an object gets its required properties; a string `"mock"`, but a
/// property named `command` a shell command that prints a marker.
fn example(schema: Option<&Value>, name: &str) -> Value {
    let Some(schema) = schema.filter(|s| s.is_object()) else {
        return json!({});
    };
    match schema["type"].as_str().unwrap_or("object") {
        "object" => {
            let mut map = serde_json::Map::new();
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(key) = required.as_str() {
                    map.insert(key.to_owned(), example(schema["properties"].get(key), key));
                }
            }
            Value::Object(map)
        }
        "string" if name == "command" => json!("echo tool-ran-$((6*7))"),
        "string" => json!("mock"),
        "integer" | "number" => json!(1),
        "boolean" => json!(true),
        "array" => json!([]),
        _ => Value::Null,
    }
}

fn error_json(message: &str, kind: &str, code: Value) -> String {
    json!({"error":{"message":message,"type":kind,"param":null,"code":code}}).to_string()
}

fn full(body: String) -> MockBody {
    http_body_util::Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed()
}

fn json_response(status: u16, body: &str) -> Response<MockBody> {
    let mut response = Response::new(full(body.to_owned()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

fn sse_response(pieces: Vec<Bytes>, gap: Duration, cut: bool) -> Response<MockBody> {
    let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    tokio::spawn(async move {
        for piece in pieces {
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            if tx.send(Ok(piece)).is_err() {
                return;
            }
        }
        if cut {
            // Let hyper flush the pieces first: a failing body drops unflushed bytes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(Err(std::io::Error::other("cut by the chat mock")));
        }
    });
    let mut response = Response::new(ChannelBody { rx }.boxed());
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}

struct ChannelBody {
    rx: mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|r| r.map(Frame::data)))
    }
}
