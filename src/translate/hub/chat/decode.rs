//! Chat Completions chunks → Responses events (`docs/chat-wire.md`, "Stream").
//!
//! [`ChatWireDecoder`] is the chat wire's [`WireDecoder`]. It reads `choices[0]` of each chunk
//! and emits the events a Responses upstream would have sent for the same answer:
//!
//! | chat | Responses |
//! | --- | --- |
//! | the first chunk | `response.created` (id `resp_` + the completion id without `chatcmpl-`) |
//! | `delta.content` | a `message` item: `output_item.added`, `content_part.added`, `output_text.delta`s; with think tags on, the model's rule first ([`ThinkFilter`]) |
//! | `delta.reasoning_content` (vLLM, llama.cpp, DeepSeek), else `delta.reasoning` (Ollama, OpenRouter, newer vLLM), and `<think>` sections in `reasoning` mode | a `reasoning` item with `reasoning_text.delta`s |
//! | `delta.tool_calls[]`, keyed by `index` | one `function_call` item per index (announced once its name is known, arguments streamed as `function_call_arguments.delta`); a call to a custom tool becomes one `custom_tool_call` item when it ends |
//! | `finish_reason` | every open item ends (`*.done`, `output_item.done`) |
//! | the usage chunk (`choices: []`) | the terminal's `usage` (`input_tokens` = `prompt_tokens`, cached and reasoning details copied) |
//! | `[DONE]` after a `finish_reason` (or the stream's end when `[DONE]` is missing) | `response.completed` for `stop` / `tool_calls`; `response.incomplete` with reason `max_output_tokens` for `length`, `content_filter` for `content_filter` |
//! | `{"error": …}` | `response.failed` with a code the error table knows |
//! | a stream that ends before any `finish_reason` | nothing: the pipeline reports it truncated |
//!
//! Every event carries its `sequence_number` (0, 1, …), as a Responses upstream's do.
//!
//! A kind of output ends the other open one (reasoning ends when text starts, and so on), so
//! items come out one after another as a Responses stream has them; tool calls stay open until
//! the finish, so a server that interleaves the arguments of several calls is read correctly.
//! Each item's text is kept until it ends, for its `done` events (a Responses client such as
//! Codex records items from `output_item.done`): the decoder holds what the answer says, once.
//!
//! A server that answers a streaming request with one `chat.completion` JSON body is read by
//! [`decode_body`], into the same events.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;

use crate::translate::codec::write_json_str;
use crate::translate::error::is_known_upstream_code;
use crate::translate::hub::{Emit, WireDecoder};
use crate::translate::think::{ThinkFilter, ThinkMode, ThinkPiece};
use crate::translate::tool_names::ToolNameMap;
use crate::translate::usage::Reported;

// === Wire shapes ===

#[derive(Deserialize, Default)]
#[serde(default)]
struct Chunk<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    created: Option<f64>,
    #[serde(borrow)]
    choices: Option<Vec<Choice<'a>>>,
    usage: Option<ChatUsage>,
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Choice<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    /// A whole `chat.completion` has `message` where a chunk has `delta`.
    #[serde(borrow)]
    message: Option<Delta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<CallDelta<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CallDelta<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FunctionDelta<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// A chat `usage` object.
#[derive(Deserialize, Default, Clone, Debug, PartialEq, Eq)]
#[serde(default)]
pub struct ChatUsage {
    /// Input tokens, cached ones included.
    pub prompt_tokens: Option<u64>,
    /// Output tokens, reasoning included.
    pub completion_tokens: Option<u64>,
    /// Their sum, when the server gives it.
    pub total_tokens: Option<u64>,
    /// `prompt_tokens_details.cached_tokens`.
    pub prompt_tokens_details: Option<PromptDetails>,
    /// `completion_tokens_details.reasoning_tokens`.
    pub completion_tokens_details: Option<CompletionDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Deserialize, Default, Clone, Debug, PartialEq, Eq)]
#[serde(default)]
pub struct PromptDetails {
    /// Input tokens read from the server's prompt cache.
    pub cached_tokens: Option<u64>,
}

/// `usage.completion_tokens_details`.
#[derive(Deserialize, Default, Clone, Debug, PartialEq, Eq)]
#[serde(default)]
pub struct CompletionDetails {
    /// Output tokens spent reasoning.
    pub reasoning_tokens: Option<u64>,
}

impl ChatUsage {
    /// Cached input tokens (0 when not reported).
    pub fn cached(&self) -> u64 {
        self.prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
    }

    /// Reasoning output tokens (0 when not reported).
    pub fn reasoning(&self) -> u64 {
        self.completion_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0)
    }

    /// The usage as the accounting reads it (`model`: the model the server named).
    pub fn reported(&self, model: Option<String>) -> Reported {
        Reported {
            input: self.prompt_tokens.unwrap_or(0),
            cached: self.cached(),
            output: self.completion_tokens.unwrap_or(0),
            reasoning: self.reasoning(),
            model,
        }
    }

    /// Appends the Responses `usage` object.
    fn write_responses(&self, out: &mut Vec<u8>) {
        let input = self.prompt_tokens.unwrap_or(0);
        let output = self.completion_tokens.unwrap_or(0);
        let total = self.total_tokens.unwrap_or(input + output);
        out.extend_from_slice(
            format!(
                "{{\"input_tokens\":{input},\"input_tokens_details\":{{\"cached_tokens\":{}}},\
                 \"output_tokens\":{output},\"output_tokens_details\":{{\"reasoning_tokens\":{}}},\
                 \"total_tokens\":{total}}}",
                self.cached(),
                self.reasoning()
            )
            .as_bytes(),
        );
    }
}

// === Decoder state ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Reasoning,
    Call,
}

#[derive(Debug)]
struct Item {
    kind: Kind,
    id: String,
    /// The text, reasoning or arguments so far.
    text: String,
    /// A call: the chat index, call id and original name (once known), custom or not, and
    /// whether `output_item.added` went out.
    index: u64,
    call_id: String,
    /// `call_id` is the server's (not one the decoder made up).
    wire_id: bool,
    name: Option<String>,
    custom: bool,
    added: bool,
    /// The `output_item.done` item JSON, once the item ended.
    done: Option<Vec<u8>>,
}

/// How the answer finished, from `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    Completed,
    Length,
    ContentFilter,
}

/// The chat wire's decoder; see the module docs.
pub struct ChatWireDecoder {
    model: String,
    think: ThinkFilter,
    tool_names: ToolNameMap,
    custom_tools: HashSet<String>,
    started: bool,
    /// The completion id without `chatcmpl-`: the base of every id the decoder makes.
    base_id: String,
    created_at: i64,
    items: Vec<Item>,
    /// The open message and reasoning items (positions in `items`).
    message: Option<usize>,
    reasoning: Option<usize>,
    finish: Option<Finish>,
    usage: Option<ChatUsage>,
    /// A terminal went out, or the wire said `[DONE]`: later events are ignored.
    ended: bool,
    scratch: Vec<u8>,
    /// The next event's `sequence_number`.
    sequence: u64,
    /// Where a numbered event is written.
    numbered_buf: Vec<u8>,
}

impl ChatWireDecoder {
    /// A decoder for one answer: the model name to echo, the model's think-tag rule, the
    /// request's shortened tool names and custom tools (from [`super::ChatRequest`]).
    pub fn new(
        model: &str,
        think: ThinkMode,
        tool_names: ToolNameMap,
        custom_tools: HashSet<String>,
    ) -> Self {
        ChatWireDecoder {
            model: model.to_owned(),
            think: ThinkFilter::new(think),
            tool_names,
            custom_tools,
            started: false,
            base_id: String::new(),
            created_at: 0,
            items: Vec::new(),
            message: None,
            reasoning: None,
            finish: None,
            usage: None,
            ended: false,
            scratch: Vec::with_capacity(256),
            sequence: 0,
            numbered_buf: Vec::with_capacity(256),
        }
    }

    /// The usage the wire reported, if any.
    pub fn usage(&self) -> Option<&ChatUsage> {
        self.usage.as_ref()
    }

    /// True once a `finish_reason` was seen (the answer is whole).
    pub fn finished(&self) -> bool {
        self.finish.is_some()
    }

    fn chunk(&mut self, chunk: Chunk<'_>, emit: &mut Emit<'_>) {
        if !self.started {
            self.start(chunk.id.as_deref(), chunk.created, emit);
        }
        if let Some(error) = chunk.error {
            self.fail(&error, emit);
            return;
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk
            .choices
            .into_iter()
            .flatten()
            .find(|c| c.index.unwrap_or(0) == 0)
        else {
            return;
        };
        if let Some(delta) = choice.delta.or(choice.message) {
            let reasoning = delta
                .reasoning_content
                .filter(|r| !r.is_empty())
                .or(delta.reasoning);
            if let Some(r) = reasoning.filter(|r| !r.is_empty()) {
                self.flush_think(emit);
                self.reasoning_delta(&r, emit);
            }
            for text in [delta.content, delta.refusal].into_iter().flatten() {
                if text.is_empty() {
                    continue;
                }
                let mut think = std::mem::take(&mut self.think);
                think.push(&text, |piece| self.piece(piece, emit));
                self.think = think;
            }
            for (n, call) in delta.tool_calls.into_iter().flatten().enumerate() {
                self.flush_think(emit);
                self.call_delta(n as u64, call, emit);
            }
        }
        if let Some(reason) = choice.finish_reason {
            self.finish = Some(match reason.as_ref() {
                "length" => Finish::Length,
                "content_filter" => Finish::ContentFilter,
                _ => Finish::Completed,
            });
            self.flush_think(emit);
            self.close_open(emit);
            for pos in 0..self.items.len() {
                if self.items[pos].done.is_none() {
                    self.close(pos, emit);
                }
            }
        }
    }

    fn piece(&mut self, piece: ThinkPiece<'_>, emit: &mut Emit<'_>) {
        match piece {
            ThinkPiece::Text(t) => self.text_delta(t, emit),
            ThinkPiece::Reasoning(r) => self.reasoning_delta(r, emit),
        }
    }

    fn flush_think(&mut self, emit: &mut Emit<'_>) {
        let mut think = std::mem::take(&mut self.think);
        think.finish(|piece| self.piece(piece, emit));
        self.think = think;
    }

    fn start(&mut self, id: Option<&str>, created: Option<f64>, emit: &mut Emit<'_>) {
        self.started = true;
        self.base_id = match id {
            Some(id) if !id.is_empty() => id.strip_prefix("chatcmpl-").unwrap_or(id).to_owned(),
            _ => format!("{:x}", now_nanos()),
        };
        self.created_at =
            created.map_or_else(|| (now_nanos() / 1_000_000_000) as i64, |c| c as i64);
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        out.extend_from_slice(b"{\"type\":\"response.created\",\"response\":");
        self.write_response_head(&mut out, "in_progress");
        out.extend_from_slice(b",\"output\":[]}}");
        emit("response.created", &out);
        self.scratch = out;
    }

    /// `{"id":…,"object":"response","created_at":…,"status":…,"model":…` (left open).
    fn write_response_head(&self, out: &mut Vec<u8>, status: &str) {
        out.extend_from_slice(b"{\"id\":\"resp_");
        write_json_inner(out, &self.base_id);
        out.extend_from_slice(b"\",\"object\":\"response\",\"created_at\":");
        out.extend_from_slice(self.created_at.to_string().as_bytes());
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(status.as_bytes());
        out.extend_from_slice(b"\",\"model\":");
        write_json_str(out, &self.model);
    }

    fn new_item(&mut self, kind: Kind) -> usize {
        let prefix = match kind {
            Kind::Message => "msg",
            Kind::Reasoning => "rs",
            Kind::Call => "fc",
        };
        let pos = self.items.len();
        self.items.push(Item {
            kind,
            id: format!("{prefix}_{}_{pos}", self.base_id),
            text: String::new(),
            index: 0,
            call_id: String::new(),
            wire_id: false,
            name: None,
            custom: false,
            added: false,
            done: None,
        });
        pos
    }

    /// Ends the open message and reasoning items.
    fn close_open(&mut self, emit: &mut Emit<'_>) {
        if let Some(pos) = self.message.take() {
            self.close(pos, emit);
        }
        if let Some(pos) = self.reasoning.take() {
            self.close(pos, emit);
        }
    }

    fn text_delta(&mut self, text: &str, emit: &mut Emit<'_>) {
        if let Some(pos) = self.reasoning.take() {
            self.close(pos, emit);
        }
        let pos = match self.message {
            Some(pos) => pos,
            None => {
                let pos = self.new_item(Kind::Message);
                self.message = Some(pos);
                self.announce(pos, emit);
                pos
            }
        };
        self.items[pos].text.push_str(text);
        self.write_delta(pos, "response.output_text.delta", text, true, emit);
    }

    fn reasoning_delta(&mut self, text: &str, emit: &mut Emit<'_>) {
        if let Some(pos) = self.message.take() {
            self.close(pos, emit);
        }
        let pos = match self.reasoning {
            Some(pos) => pos,
            None => {
                let pos = self.new_item(Kind::Reasoning);
                self.reasoning = Some(pos);
                self.announce(pos, emit);
                pos
            }
        };
        self.items[pos].text.push_str(text);
        self.write_delta(pos, "response.reasoning_text.delta", text, true, emit);
    }

    fn call_delta(&mut self, position: u64, call: CallDelta<'_>, emit: &mut Emit<'_>) {
        self.close_open(emit);
        let index = call.index.unwrap_or(position);
        let id = call.id.as_deref().filter(|id| !id.is_empty());
        // The open call with this index, unless the fragment names another call: some servers
        // send every call whole, all with index 0.
        let pos = match self.items.iter().rposition(|it| {
            it.kind == Kind::Call
                && it.index == index
                && it.done.is_none()
                && id.is_none_or(|id| !it.wire_id || it.call_id == id)
        }) {
            Some(pos) => pos,
            None => {
                let pos = self.new_item(Kind::Call);
                let item = &mut self.items[pos];
                item.index = index;
                item.call_id = format!("call_{}_{pos}", self.base_id);
                pos
            }
        };
        let (name, arguments) = match call.function {
            Some(f) => (f.name, f.arguments),
            None => (None, None),
        };
        if let Some(id) = id {
            let item = &mut self.items[pos];
            if !item.added && !item.wire_id {
                item.call_id = id.to_owned();
                item.wire_id = true;
            }
        }
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            if self.items[pos].name.is_none() {
                let custom = self.custom_tools.contains(name.as_ref());
                let original = self.tool_names.original(&name).to_owned();
                let item = &mut self.items[pos];
                item.custom = custom;
                item.name = Some(original);
            }
        }
        let arguments = arguments.unwrap_or_default();
        self.items[pos].text.push_str(&arguments);
        let item = &self.items[pos];
        if item.added {
            if !arguments.is_empty() {
                self.write_delta(
                    pos,
                    "response.function_call_arguments.delta",
                    &arguments,
                    false,
                    emit,
                );
            }
        } else if item.name.is_some() && !item.custom {
            self.announce(pos, emit);
            let so_far = std::mem::take(&mut self.items[pos].text);
            if !so_far.is_empty() {
                self.write_delta(
                    pos,
                    "response.function_call_arguments.delta",
                    &so_far,
                    false,
                    emit,
                );
            }
            self.items[pos].text = so_far;
        }
    }

    /// `output_item.added` (and `content_part.added` for a message).
    fn announce(&mut self, pos: usize, emit: &mut Emit<'_>) {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        out.extend_from_slice(b"{\"type\":\"response.output_item.added\",\"output_index\":");
        out.extend_from_slice(pos.to_string().as_bytes());
        out.extend_from_slice(b",\"item\":");
        self.write_item(pos, false, &mut out);
        out.push(b'}');
        emit("response.output_item.added", &out);
        let item = &mut self.items[pos];
        item.added = true;
        if item.kind == Kind::Message {
            out.clear();
            out.extend_from_slice(b"{\"type\":\"response.content_part.added\",\"item_id\":");
            write_json_str(&mut out, &item.id);
            out.extend_from_slice(b",\"output_index\":");
            out.extend_from_slice(pos.to_string().as_bytes());
            out.extend_from_slice(
                b",\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"\",\"annotations\":[]}}",
            );
            emit("response.content_part.added", &out);
        }
        self.scratch = out;
    }

    /// The item's JSON: in progress and empty (`done = false`), or whole and completed.
    fn write_item(&self, pos: usize, done: bool, out: &mut Vec<u8>) {
        let item = &self.items[pos];
        let text = if done { item.text.as_str() } else { "" };
        let status = if done { "completed" } else { "in_progress" };
        out.extend_from_slice(b"{\"id\":");
        write_json_str(out, &item.id);
        match item.kind {
            Kind::Message => {
                out.extend_from_slice(
                    b",\"type\":\"message\",\"role\":\"assistant\",\"status\":\"",
                );
                out.extend_from_slice(status.as_bytes());
                out.extend_from_slice(b"\",\"content\":[");
                if done {
                    out.extend_from_slice(b"{\"type\":\"output_text\",\"text\":");
                    write_json_str(out, text);
                    out.extend_from_slice(b",\"annotations\":[]}");
                }
                out.extend_from_slice(b"]}");
            }
            Kind::Reasoning => {
                out.extend_from_slice(b",\"type\":\"reasoning\",\"summary\":[],\"content\":[");
                if done {
                    out.extend_from_slice(b"{\"type\":\"reasoning_text\",\"text\":");
                    write_json_str(out, text);
                    out.push(b'}');
                }
                out.extend_from_slice(b"]}");
            }
            Kind::Call => {
                let name = item.name.as_deref().unwrap_or("");
                if item.custom {
                    out.extend_from_slice(b",\"type\":\"custom_tool_call\",\"status\":\"");
                    out.extend_from_slice(status.as_bytes());
                    out.extend_from_slice(b"\",\"call_id\":");
                    write_json_str(out, &item.call_id);
                    out.extend_from_slice(b",\"name\":");
                    write_json_str(out, name);
                    out.extend_from_slice(b",\"input\":");
                    let input = if done {
                        custom_input(&item.text)
                    } else {
                        String::new()
                    };
                    write_json_str(out, &input);
                } else {
                    out.extend_from_slice(b",\"type\":\"function_call\",\"status\":\"");
                    out.extend_from_slice(status.as_bytes());
                    out.extend_from_slice(b"\",\"call_id\":");
                    write_json_str(out, &item.call_id);
                    out.extend_from_slice(b",\"name\":");
                    write_json_str(out, name);
                    out.extend_from_slice(b",\"arguments\":");
                    write_json_str(out, text);
                }
                out.push(b'}');
            }
        }
    }

    /// A delta event for item `pos`: `{"type","item_id","output_index"[,"content_index":0],"delta"}`.
    fn write_delta(
        &mut self,
        pos: usize,
        kind: &str,
        delta: &str,
        content_index: bool,
        emit: &mut Emit<'_>,
    ) {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"item_id\":");
        write_json_str(&mut out, &self.items[pos].id);
        out.extend_from_slice(b",\"output_index\":");
        out.extend_from_slice(pos.to_string().as_bytes());
        if content_index {
            out.extend_from_slice(b",\"content_index\":0");
        }
        out.extend_from_slice(b",\"delta\":");
        write_json_str(&mut out, delta);
        out.push(b'}');
        emit(kind, &out);
        self.scratch = out;
    }

    /// Ends item `pos`: its `*.done` events and `output_item.done`.
    fn close(&mut self, pos: usize, emit: &mut Emit<'_>) {
        if self.items[pos].done.is_some() {
            return;
        }
        if !self.items[pos].added {
            // A call whose name never came, or a custom call (announced whole at its end).
            self.announce(pos, emit);
            if self.items[pos].custom {
                let input = custom_input(&self.items[pos].text);
                self.write_delta(
                    pos,
                    "response.custom_tool_call_input.delta",
                    &input,
                    false,
                    emit,
                );
            } else if !self.items[pos].text.is_empty() {
                let args = std::mem::take(&mut self.items[pos].text);
                self.write_delta(
                    pos,
                    "response.function_call_arguments.delta",
                    &args,
                    false,
                    emit,
                );
                self.items[pos].text = args;
            }
        }
        let mut out = std::mem::take(&mut self.scratch);
        let item = &self.items[pos];
        let head = |out: &mut Vec<u8>, kind: &str| {
            out.clear();
            out.extend_from_slice(b"{\"type\":\"");
            out.extend_from_slice(kind.as_bytes());
            out.extend_from_slice(b"\",\"item_id\":");
            write_json_str(out, &item.id);
            out.extend_from_slice(b",\"output_index\":");
            out.extend_from_slice(pos.to_string().as_bytes());
        };
        match (item.kind, item.custom) {
            (Kind::Message, _) => {
                head(&mut out, "response.output_text.done");
                out.extend_from_slice(b",\"content_index\":0,\"text\":");
                write_json_str(&mut out, &item.text);
                out.push(b'}');
                emit("response.output_text.done", &out);
                head(&mut out, "response.content_part.done");
                out.extend_from_slice(
                    b",\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":",
                );
                write_json_str(&mut out, &item.text);
                out.extend_from_slice(b",\"annotations\":[]}}");
                emit("response.content_part.done", &out);
            }
            (Kind::Reasoning, _) => {
                head(&mut out, "response.reasoning_text.done");
                out.extend_from_slice(b",\"content_index\":0,\"text\":");
                write_json_str(&mut out, &item.text);
                out.push(b'}');
                emit("response.reasoning_text.done", &out);
            }
            (Kind::Call, true) => {
                head(&mut out, "response.custom_tool_call_input.done");
                out.extend_from_slice(b",\"input\":");
                write_json_str(&mut out, &custom_input(&item.text));
                out.push(b'}');
                emit("response.custom_tool_call_input.done", &out);
            }
            (Kind::Call, false) => {
                head(&mut out, "response.function_call_arguments.done");
                out.extend_from_slice(b",\"arguments\":");
                write_json_str(&mut out, &item.text);
                out.push(b'}');
                emit("response.function_call_arguments.done", &out);
            }
        }
        let mut item_json = Vec::with_capacity(item.text.len() + 128);
        self.write_item(pos, true, &mut item_json);
        out.clear();
        out.extend_from_slice(b"{\"type\":\"response.output_item.done\",\"output_index\":");
        out.extend_from_slice(pos.to_string().as_bytes());
        out.extend_from_slice(b",\"item\":");
        out.extend_from_slice(&item_json);
        out.push(b'}');
        emit("response.output_item.done", &out);
        self.scratch = out;
        let item = &mut self.items[pos];
        item.done = Some(item_json);
        // The text lives on in the done JSON only.
        item.text = String::new();
    }

    /// The terminal event for a finished answer.
    fn terminal(&mut self, emit: &mut Emit<'_>) {
        let Some(finish) = self.finish else { return };
        self.ended = true;
        let (kind, status, reason) = match finish {
            Finish::Completed => ("response.completed", "completed", None),
            Finish::Length => (
                "response.incomplete",
                "incomplete",
                Some("max_output_tokens"),
            ),
            Finish::ContentFilter => ("response.incomplete", "incomplete", Some("content_filter")),
        };
        let mut out = Vec::with_capacity(
            256 + self
                .items
                .iter()
                .map(|it| it.done.as_ref().map_or(0, Vec::len) + 1)
                .sum::<usize>(),
        );
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"response\":");
        self.write_response_head(&mut out, status);
        out.extend_from_slice(b",\"output\":[");
        for (n, done) in self
            .items
            .iter()
            .filter_map(|it| it.done.as_ref())
            .enumerate()
        {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(done);
        }
        out.push(b']');
        if let Some(reason) = reason {
            out.extend_from_slice(b",\"incomplete_details\":{\"reason\":\"");
            out.extend_from_slice(reason.as_bytes());
            out.extend_from_slice(b"\"}");
        }
        if let Some(usage) = &self.usage {
            out.extend_from_slice(b",\"usage\":");
            usage.write_responses(&mut out);
        }
        out.extend_from_slice(b"}}");
        emit(kind, &out);
    }

    /// An in-band error: `response.failed`.
    fn fail(&mut self, error: &Value, emit: &mut Emit<'_>) {
        self.ended = true;
        let (code, message) = error_code(error);
        let mut out = Vec::with_capacity(256 + message.len());
        out.extend_from_slice(b"{\"type\":\"response.failed\",\"response\":");
        self.write_response_head(&mut out, "failed");
        out.extend_from_slice(b",\"output\":[],\"error\":{\"code\":");
        write_json_str(&mut out, &code);
        out.extend_from_slice(b",\"message\":");
        write_json_str(&mut out, &message);
        out.extend_from_slice(b"}}}");
        emit("response.failed", &out);
    }
}

impl ChatWireDecoder {
    /// One wire event, its Responses events sent through `emit` unnumbered.
    fn wire_event(&mut self, data: &[u8], emit: &mut Emit<'_>) {
        if self.ended {
            return;
        }
        if data == b"[DONE]" {
            // `[DONE]` before any `finish_reason` ends a truncated answer: no terminal.
            self.terminal(emit);
            self.ended = true;
            return;
        }
        match serde_json::from_slice::<Chunk>(data) {
            Ok(chunk) => self.chunk(chunk, emit),
            Err(_) => {
                if !self.started {
                    self.start(None, None, emit);
                }
                let error = serde_json::json!({
                    "code": "server_error",
                    "message": "The Chat Completions upstream sent an event that is not a chunk.",
                });
                self.fail(&error, emit);
            }
        }
    }

    /// Runs `step` with an `emit` that ends every event with its `sequence_number` (0, 1, …,
    /// as a Responses upstream numbers its events). Every event is built ending in `}`.
    fn numbered(&mut self, emit: &mut Emit<'_>, step: impl FnOnce(&mut Self, &mut Emit<'_>)) {
        let mut sequence = self.sequence;
        let mut buf = std::mem::take(&mut self.numbered_buf);
        let mut numbered = |kind: &str, json: &[u8]| {
            buf.clear();
            buf.extend_from_slice(json.strip_suffix(b"}").unwrap_or(json));
            buf.extend_from_slice(b",\"sequence_number\":");
            buf.extend_from_slice(sequence.to_string().as_bytes());
            buf.push(b'}');
            emit(kind, &buf);
            sequence += 1;
        };
        step(self, &mut numbered);
        self.sequence = sequence;
        self.numbered_buf = buf;
    }
}

impl WireDecoder for ChatWireDecoder {
    fn event(&mut self, _name: Option<&str>, data: &[u8], emit: &mut Emit<'_>) {
        self.numbered(emit, |this, emit| this.wire_event(data, emit));
    }

    fn finish(&mut self, emit: &mut Emit<'_>) {
        self.numbered(emit, |this, emit| {
            if !this.ended {
                this.terminal(emit);
            }
        });
    }
}

/// Reads a whole `chat.completion` JSON body (the answer of a server that does not stream)
/// into the same Responses events a stream of it would give.
pub fn decode_body(decoder: &mut ChatWireDecoder, body: &[u8], emit: &mut Emit<'_>) {
    decoder.event(None, body, emit);
    decoder.event(None, b"[DONE]", emit);
    decoder.finish(emit);
}

/// The `input` of a custom tool's call, from the function arguments it travelled as.
fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(m)) => match m.get("input") {
            Some(Value::String(s)) => s.clone(),
            _ => arguments.to_owned(),
        },
        _ => arguments.to_owned(),
    }
}

/// A code the error table knows, and a message, for an in-band chat error (`docs/chat-wire.md`,
/// "Errors"): the error's string `code` when the table knows it; else one derived from its
/// numeric status (`code`, `status`, `status_code`); else its `type` when the table knows it;
/// else `server_error` (the server failed mid-answer).
fn error_code(error: &Value) -> (String, String) {
    let message = match error {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("The Chat Completions upstream reported an error.")
            .to_owned(),
        _ => "The Chat Completions upstream reported an error.".to_owned(),
    };
    let Value::Object(o) = error else {
        return ("server_error".to_owned(), message);
    };
    let text = |key: &str| o.get(key).and_then(Value::as_str);
    if let Some(code) = text("code").filter(|c| is_known_upstream_code(c)) {
        return (code.to_owned(), message);
    }
    if [text("code"), text("type")].contains(&Some("exceed_context_size_error")) {
        return ("context_length_exceeded".to_owned(), message);
    }
    let status = ["code", "status", "status_code"]
        .iter()
        .find_map(|k| o.get(*k).and_then(Value::as_u64));
    let code = match (status, text("type")) {
        (Some(400 | 422), _) => "invalid_request_error",
        (Some(401), _) => "invalid_api_key",
        (Some(403), _) => "permission_error",
        (Some(404), _) => "model_not_found",
        (Some(429), _) => "rate_limit_exceeded",
        (Some(503 | 529), _) => "server_is_overloaded",
        (_, Some(kind)) if is_known_upstream_code(kind) => kind,
        _ => "server_error",
    };
    (code.to_owned(), message)
}

/// `s` escaped for the inside of a JSON string (no quotes).
fn write_json_inner(out: &mut Vec<u8>, s: &str) {
    let start = out.len();
    write_json_str(out, s);
    // Drop the quotes `write_json_str` put around it.
    out.pop();
    out.remove(start);
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
