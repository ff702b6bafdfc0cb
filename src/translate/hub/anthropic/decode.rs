//! Anthropic Messages stream events → the Responses events a Responses upstream would send
//! (`docs/hub.md`), one wire event at a time.
//!
//! | Messages event | Responses events |
//! | --- | --- |
//! | `message_start` | `response.created` (`id` = `resp_` + the message id, `model` the upstream's, or the one given to [`MessagesDecoder::echoing`]) |
//! | `content_block_start` `text` | `output_item.added` (a `message`), `content_part.added` (`output_text`) |
//! | `text_delta` | `output_text.delta` |
//! | `content_block_start` `thinking` | `output_item.added` (a `reasoning` item); `reasoning_summary_part.added` at its first text |
//! | `thinking_delta` | `reasoning_summary_text.delta` (summary part 0) |
//! | `signature_delta` | kept: the item's `encrypted_content` |
//! | `content_block_start` `redacted_thinking` | a `reasoning` item without summary whose `encrypted_content` is `REDACTED_PREFIX` + `data` |
//! | `content_block_start` `tool_use` | `output_item.added` (a `function_call`, `call_id` = the `toolu_…` id), or a `custom_tool_call` for a freeform tool of the request |
//! | `input_json_delta` | `function_call_arguments.delta` (freeform tools: held until the block ends, then `custom_tool_call_input.delta` with the `input` string) |
//! | `content_block_stop` | the `.done` events of the part and the item (`output_text.done`, `content_part.done`, `reasoning_summary_text.done`, `reasoning_summary_part.done`, `function_call_arguments.done` (`"{}"` for a call without arguments), `custom_tool_call_input.done`), then `output_item.done` |
//! | `message_delta` | kept: `stop_reason`, usage |
//! | `message_stop` | `response.completed` (`end_turn`, `stop_sequence`, `tool_use`, `pause_turn`), or `response.incomplete` with `incomplete_details.reason` `max_output_tokens` (`max_tokens`, `model_context_window_exceeded`) or `content_filter` (`refusal`); `output` = every finished item, `usage` mapped |
//! | `error` | `response.failed` with `error.code` from [`error_code`] |
//! | `ping`, unknown events, unknown block types | nothing |
//!
//! Usage: `input_tokens` = Anthropic's `input_tokens` + `cache_read_input_tokens` +
//! `cache_creation_input_tokens` (Responses counts cached input inside `input_tokens`),
//! `input_tokens_details.cached_tokens` = `cache_read_input_tokens`, `output_tokens` as is
//! (the last value `message_delta` reported), `total_tokens` their sum.
//!
//! A stream cut before `message_stop` gets no terminal: the pipeline ends it as truncated. The
//! text, arguments and items held for the `.done` events and the terminal's `output` are
//! bounded by [`MAX_HELD_BYTES`]; past it the response fails with `response_too_large`.
//!
//! Events are parsed into borrowed structs and written by hand into one reused buffer: no
//! `serde_json::Value` per event.

use std::borrow::Cow;
use std::io::Write as _;

use serde::Deserialize;

use super::request::REDACTED_PREFIX;
use crate::translate::codec::write_json_str;
use crate::translate::hub::{Emit, WireDecoder};

/// Most bytes of text, arguments and finished items one response may hold (the `.done`
/// events repeat them and the terminal event carries every item): 32 MiB.
pub const MAX_HELD_BYTES: usize = 32 << 20;

/// The Responses error code for an Anthropic error `type` (and message): a code the proxy's
/// table of upstream codes knows, so statuses and account handling follow.
///
/// | Anthropic `error.type` | code |
/// | --- | --- |
/// | `overloaded_error` | `server_is_overloaded` |
/// | `rate_limit_error` | `rate_limit_exceeded` |
/// | `api_error`, `timeout_error` | `server_error` |
/// | `billing_error` | `insufficient_quota` |
/// | `invalid_request_error` whose message starts "prompt is too long" | `context_length_exceeded` |
/// | `invalid_request_error`, `request_too_large` | `invalid_request_error` |
/// | `authentication_error`, `permission_error`, `not_found_error` | the same |
/// | anything else | the type as given |
pub fn error_code<'a>(kind: &'a str, message: &str) -> &'a str {
    match kind {
        "overloaded_error" => "server_is_overloaded",
        "rate_limit_error" => "rate_limit_exceeded",
        "api_error" | "timeout_error" => "server_error",
        "billing_error" => "insufficient_quota",
        "invalid_request_error" if message.starts_with("prompt is too long") => {
            "context_length_exceeded"
        }
        "request_too_large" => "invalid_request_error",
        other => other,
    }
}

// === wire events ===

#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<WireDelta<'a>>,
    #[serde(borrow)]
    content_block: Option<WireBlock<'a>>,
    #[serde(borrow)]
    message: Option<WireMessage<'a>>,
    usage: Option<WireUsage>,
    #[serde(borrow)]
    error: Option<WireError<'a>>,
}

/// A `content_block_delta`'s or a `message_delta`'s `delta`.
#[derive(Deserialize)]
struct WireDelta<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    signature: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    signature: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<Cow<'a, str>>,
    /// A `tool_use`'s input at start (`{}` from Anthropic; whole from some compatible servers).
    #[serde(default)]
    input: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WireError<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

// === state ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Thinking,
    Redacted,
    Function,
    Custom,
}

/// One open content block.
#[derive(Debug)]
struct Block {
    /// Anthropic's `index`.
    index: u64,
    kind: Kind,
    output_index: u64,
    item_id: String,
    /// Text, thinking, arguments or the freeform tool's raw JSON so far.
    text: String,
    /// A thinking block's signature, a redacted block's data.
    signature: String,
    call_id: String,
    name: String,
    /// A thinking block's summary part was announced.
    part_open: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    input: u64,
    cache_read: u64,
    cache_creation: u64,
    output: u64,
    seen: bool,
}

impl Usage {
    fn take(&mut self, u: &WireUsage) {
        self.seen = true;
        if let Some(n) = u.input_tokens {
            self.input = n;
        }
        if let Some(n) = u.cache_read_input_tokens {
            self.cache_read = n;
        }
        if let Some(n) = u.cache_creation_input_tokens {
            self.cache_creation = n;
        }
        if let Some(n) = u.output_tokens {
            self.output = n;
        }
    }
}

/// The Messages stream decoder; see the module docs.
pub struct MessagesDecoder {
    custom_tools: Vec<String>,
    /// `resp_` + the message id.
    id: String,
    /// The message id without its `msg_` prefix, for item ids.
    stem: String,
    model: String,
    /// `model` was set by [`MessagesDecoder::echoing`]: the upstream's name does not replace it.
    echo_model: bool,
    created_at: u64,
    started: bool,
    blocks: Vec<Block>,
    next_output: u64,
    /// Finished items' JSON, comma-separated, for the terminal's `output`.
    items: Vec<u8>,
    usage: Usage,
    stop_reason: Option<String>,
    ended: bool,
    held: usize,
    max_held: usize,
    /// The next event's `sequence_number`.
    sequence: u64,
    /// The event being written.
    buf: Vec<u8>,
}

impl MessagesDecoder {
    /// A decoder for one response; `custom_tools` are the request's freeform tool names.
    pub fn new(custom_tools: Vec<String>) -> Self {
        Self::with_limit(custom_tools, MAX_HELD_BYTES)
    }

    /// [`MessagesDecoder::new`] with another bound on held bytes.
    pub fn with_limit(custom_tools: Vec<String>, max_held: usize) -> Self {
        MessagesDecoder {
            custom_tools,
            id: String::new(),
            stem: String::new(),
            model: String::new(),
            echo_model: false,
            created_at: 0,
            started: false,
            blocks: Vec::new(),
            next_output: 0,
            items: Vec::new(),
            usage: Usage::default(),
            stop_reason: None,
            ended: false,
            held: 0,
            max_held,
            sequence: 0,
            buf: Vec::with_capacity(256),
        }
    }

    /// Names `model` in every response object instead of the model the upstream reports: the
    /// name the client asked for, which a Responses client expects echoed (as a Chat client's
    /// translator does from its context), even when an alias sent another name upstream.
    pub fn echoing(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self.echo_model = true;
        self
    }

    /// Counts `n` more held bytes; false (and the response failed) past the bound.
    fn hold(&mut self, n: usize, emit: &mut Emit<'_>) -> bool {
        self.held = self.held.saturating_add(n);
        if self.held > self.max_held {
            self.fail(
                "response_too_large",
                "The upstream response is larger than the proxy holds for one answer.",
                emit,
            );
            return false;
        }
        true
    }

    fn ensure_id(&mut self) {
        if self.id.is_empty() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            self.stem = format!("{nanos:x}");
            self.id = format!("resp_{}", self.stem);
        }
        if self.created_at == 0 {
            self.created_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
        }
    }

    // === writing ===

    /// `{"type":"<kind>"` into the cleared buffer.
    fn open(&mut self, kind: &str) {
        self.buf.clear();
        self.buf.extend_from_slice(b"{\"type\":");
        write_json_str(&mut self.buf, kind);
    }

    /// Ends the event with its `sequence_number` (0, 1, … as a Responses upstream numbers
    /// them) and hands it on.
    fn send(&mut self, kind: &str, emit: &mut Emit<'_>) {
        let _ = write!(self.buf, ",\"sequence_number\":{}}}", self.sequence);
        self.sequence += 1;
        emit(kind, &self.buf);
    }

    /// `,"item_id":…,"output_index":N` for block `b`.
    fn item_ref(buf: &mut Vec<u8>, b: &Block) {
        buf.extend_from_slice(b",\"item_id\":");
        write_json_str(buf, &b.item_id);
        let _ = write!(buf, ",\"output_index\":{}", b.output_index);
    }

    /// The `response` object (`output` and `usage` only for terminals).
    fn response_object(&mut self, status: &str, terminal: bool) {
        let buf = &mut self.buf;
        buf.extend_from_slice(b"{\"id\":");
        write_json_str(buf, &self.id);
        let _ = write!(
            buf,
            ",\"object\":\"response\",\"created_at\":{}",
            self.created_at
        );
        buf.extend_from_slice(b",\"model\":");
        write_json_str(buf, &self.model);
        buf.extend_from_slice(b",\"status\":");
        write_json_str(buf, status);
        buf.extend_from_slice(b",\"output\":[");
        if terminal {
            buf.extend_from_slice(&self.items);
        }
        buf.push(b']');
        let u = self.usage;
        if terminal && u.seen {
            let input = u.input + u.cache_read + u.cache_creation;
            let _ = write!(
                buf,
                ",\"usage\":{{\"input_tokens\":{input},\"input_tokens_details\":{{\"cached_tokens\":{}}},\"output_tokens\":{},\"total_tokens\":{}}}",
                u.cache_read,
                u.output,
                input + u.output
            );
        } else {
            buf.extend_from_slice(b",\"usage\":null");
        }
    }

    /// Writes block `b`'s finished item into `buf`.
    fn item_json(buf: &mut Vec<u8>, b: &Block, done: bool) {
        buf.extend_from_slice(b"{\"id\":");
        write_json_str(buf, &b.item_id);
        let status = if done { "completed" } else { "in_progress" };
        match b.kind {
            Kind::Text => {
                let _ = write!(
                    buf,
                    ",\"type\":\"message\",\"status\":\"{status}\",\"role\":\"assistant\",\"content\":["
                );
                if done {
                    buf.extend_from_slice(b"{\"type\":\"output_text\",\"text\":");
                    write_json_str(buf, &b.text);
                    buf.extend_from_slice(b",\"annotations\":[]}");
                }
                buf.push(b']');
            }
            Kind::Thinking | Kind::Redacted => {
                buf.extend_from_slice(b",\"type\":\"reasoning\",\"summary\":[");
                if done && b.kind == Kind::Thinking && !b.text.is_empty() {
                    buf.extend_from_slice(b"{\"type\":\"summary_text\",\"text\":");
                    write_json_str(buf, &b.text);
                    buf.push(b'}');
                }
                buf.push(b']');
                if done && !b.signature.is_empty() {
                    buf.extend_from_slice(b",\"encrypted_content\":");
                    if b.kind == Kind::Redacted {
                        let mut carried =
                            String::with_capacity(REDACTED_PREFIX.len() + b.signature.len());
                        carried.push_str(REDACTED_PREFIX);
                        carried.push_str(&b.signature);
                        write_json_str(buf, &carried);
                    } else {
                        write_json_str(buf, &b.signature);
                    }
                }
            }
            Kind::Function | Kind::Custom => {
                let (kind, field) = if b.kind == Kind::Function {
                    ("function_call", "arguments")
                } else {
                    ("custom_tool_call", "input")
                };
                let _ = write!(
                    buf,
                    ",\"type\":\"{kind}\",\"status\":\"{status}\",\"call_id\":"
                );
                write_json_str(buf, &b.call_id);
                buf.extend_from_slice(b",\"name\":");
                write_json_str(buf, &b.name);
                let _ = write!(buf, ",\"{field}\":");
                write_json_str(buf, if done { &b.text } else { "" });
            }
        }
        buf.push(b'}');
    }

    // === events ===

    fn start(&mut self, message: Option<WireMessage<'_>>, emit: &mut Emit<'_>) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(m) = message {
            if let Some(id) = m.id.filter(|i| !i.is_empty()) {
                self.stem = id.strip_prefix("msg_").unwrap_or(&id).to_owned();
                self.id = format!("resp_{id}");
            }
            if let Some(model) = m.model.filter(|_| !self.echo_model) {
                self.model = model.into_owned();
            }
            if let Some(u) = &m.usage {
                self.usage.take(u);
            }
        }
        self.ensure_id();
        self.open("response.created");
        self.buf.extend_from_slice(b",\"response\":");
        self.response_object("in_progress", false);
        self.buf.push(b'}');
        self.send("response.created", emit);
    }

    fn block_start(&mut self, index: u64, block: WireBlock<'_>, emit: &mut Emit<'_>) {
        if let Some(pos) = self.blocks.iter().position(|b| b.index == index) {
            self.block_stop(pos, emit);
            if self.ended {
                return;
            }
        }
        let kind = match block.kind.as_ref() {
            "text" => Kind::Text,
            "thinking" => Kind::Thinking,
            "redacted_thinking" => Kind::Redacted,
            "tool_use" => {
                let name = block.name.as_deref().unwrap_or("");
                if self.custom_tools.iter().any(|c| c == name) {
                    Kind::Custom
                } else {
                    Kind::Function
                }
            }
            _ => return, // server tools and other blocks this proxy never asks for
        };
        let output_index = self.next_output;
        self.next_output += 1;
        let prefix = match kind {
            Kind::Text => "msg",
            Kind::Thinking | Kind::Redacted => "rs",
            Kind::Function => "fc",
            Kind::Custom => "ctc",
        };
        let b = Block {
            index,
            kind,
            output_index,
            item_id: format!("{prefix}_{}_{output_index}", self.stem),
            text: String::new(),
            signature: block
                .signature
                .as_deref()
                .or(block.data.as_deref())
                .unwrap_or("")
                .to_owned(),
            call_id: block.id.as_deref().unwrap_or("").to_owned(),
            name: block.name.as_deref().unwrap_or("").to_owned(),
            part_open: false,
        };
        if !self.hold(b.signature.len(), emit) {
            return;
        }
        self.open("response.output_item.added");
        let _ = write!(self.buf, ",\"output_index\":{output_index},\"item\":");
        Self::item_json(&mut self.buf, &b, false);
        self.send("response.output_item.added", emit);
        if kind == Kind::Text {
            self.open("response.content_part.added");
            Self::item_ref(&mut self.buf, &b);
            self.buf.extend_from_slice(
                b",\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"\",\"annotations\":[]}",
            );
            self.send("response.content_part.added", emit);
        }
        self.blocks.push(b);
        let pos = self.blocks.len() - 1;
        // Content a block already carries at its start.
        let initial = match kind {
            Kind::Text => block.text,
            Kind::Thinking => block.thinking,
            Kind::Function | Kind::Custom => block
                .input
                .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
                .map(|v| Cow::Owned(v.to_string())),
            Kind::Redacted => None,
        };
        if let Some(text) = initial.filter(|t| !t.is_empty()) {
            self.block_delta(pos, &text, emit);
        }
    }

    /// Text, thinking or argument bytes for block `pos`.
    fn block_delta(&mut self, pos: usize, delta: &str, emit: &mut Emit<'_>) {
        if delta.is_empty() || !self.hold(delta.len(), emit) {
            return;
        }
        let b = &mut self.blocks[pos];
        b.text.push_str(delta);
        let announce = b.kind == Kind::Thinking && !b.part_open;
        b.part_open |= announce;
        let (kind, extra): (&str, &[u8]) = match b.kind {
            Kind::Text => ("response.output_text.delta", b",\"content_index\":0"),
            Kind::Thinking => (
                "response.reasoning_summary_text.delta",
                b",\"summary_index\":0",
            ),
            Kind::Function => ("response.function_call_arguments.delta", b""),
            Kind::Custom | Kind::Redacted => return, // held until the block ends
        };
        if announce {
            self.open("response.reasoning_summary_part.added");
            Self::item_ref(&mut self.buf, &self.blocks[pos]);
            self.buf.extend_from_slice(
                b",\"summary_index\":0,\"part\":{\"type\":\"summary_text\",\"text\":\"\"}",
            );
            self.send("response.reasoning_summary_part.added", emit);
        }
        self.open(kind);
        Self::item_ref(&mut self.buf, &self.blocks[pos]);
        self.buf.extend_from_slice(extra);
        self.buf.extend_from_slice(b",\"delta\":");
        write_json_str(&mut self.buf, delta);
        self.send(kind, emit);
    }

    fn block_stop(&mut self, pos: usize, emit: &mut Emit<'_>) {
        let mut b = self.blocks.remove(pos);
        match b.kind {
            Kind::Text => {
                self.open("response.output_text.done");
                Self::item_ref(&mut self.buf, &b);
                self.buf
                    .extend_from_slice(b",\"content_index\":0,\"text\":");
                write_json_str(&mut self.buf, &b.text);
                self.send("response.output_text.done", emit);
                self.open("response.content_part.done");
                Self::item_ref(&mut self.buf, &b);
                self.buf.extend_from_slice(
                    b",\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":",
                );
                write_json_str(&mut self.buf, &b.text);
                self.buf.extend_from_slice(b",\"annotations\":[]}");
                self.send("response.content_part.done", emit);
            }
            Kind::Thinking if b.part_open => {
                self.open("response.reasoning_summary_text.done");
                Self::item_ref(&mut self.buf, &b);
                self.buf
                    .extend_from_slice(b",\"summary_index\":0,\"text\":");
                write_json_str(&mut self.buf, &b.text);
                self.send("response.reasoning_summary_text.done", emit);
                self.open("response.reasoning_summary_part.done");
                Self::item_ref(&mut self.buf, &b);
                self.buf.extend_from_slice(
                    b",\"summary_index\":0,\"part\":{\"type\":\"summary_text\",\"text\":",
                );
                write_json_str(&mut self.buf, &b.text);
                self.buf.push(b'}');
                self.send("response.reasoning_summary_part.done", emit);
            }
            Kind::Thinking | Kind::Redacted => {}
            Kind::Function => {
                if b.text.is_empty() {
                    b.text.push_str("{}");
                }
                self.open("response.function_call_arguments.done");
                Self::item_ref(&mut self.buf, &b);
                self.buf.extend_from_slice(b",\"arguments\":");
                write_json_str(&mut self.buf, &b.text);
                self.send("response.function_call_arguments.done", emit);
            }
            Kind::Custom => {
                b.text = custom_input(&b.text);
                if !b.text.is_empty() {
                    self.open("response.custom_tool_call_input.delta");
                    Self::item_ref(&mut self.buf, &b);
                    self.buf.extend_from_slice(b",\"delta\":");
                    write_json_str(&mut self.buf, &b.text);
                    self.send("response.custom_tool_call_input.delta", emit);
                }
                self.open("response.custom_tool_call_input.done");
                Self::item_ref(&mut self.buf, &b);
                self.buf.extend_from_slice(b",\"input\":");
                write_json_str(&mut self.buf, &b.text);
                self.send("response.custom_tool_call_input.done", emit);
            }
        }
        self.open("response.output_item.done");
        let _ = write!(self.buf, ",\"output_index\":{},\"item\":", b.output_index);
        let start = self.buf.len();
        Self::item_json(&mut self.buf, &b, true);
        let item_len = self.buf.len() - start;
        if !self.hold(item_len, emit) {
            return;
        }
        if !self.items.is_empty() {
            self.items.push(b',');
        }
        self.items.extend_from_slice(&self.buf[start..]);
        self.send("response.output_item.done", emit);
    }

    fn terminal(&mut self, emit: &mut Emit<'_>) {
        while !self.blocks.is_empty() && !self.ended {
            self.block_stop(0, emit);
        }
        if self.ended {
            return;
        }
        self.ended = true;
        self.ensure_id();
        let incomplete = match self.stop_reason.as_deref() {
            Some("max_tokens" | "model_context_window_exceeded") => Some("max_output_tokens"),
            Some("refusal") => Some("content_filter"),
            _ => None,
        };
        let (kind, status) = match incomplete {
            Some(_) => ("response.incomplete", "incomplete"),
            None => ("response.completed", "completed"),
        };
        self.open(kind);
        self.buf.extend_from_slice(b",\"response\":");
        self.response_object(status, true);
        match incomplete {
            Some(reason) => {
                self.buf
                    .extend_from_slice(b",\"incomplete_details\":{\"reason\":");
                write_json_str(&mut self.buf, reason);
                self.buf.push(b'}');
            }
            None => self.buf.extend_from_slice(b",\"incomplete_details\":null"),
        }
        self.buf.extend_from_slice(b",\"error\":null}");
        self.send(kind, emit);
    }

    /// `response.failed` with `code` and `message`; the decoder says nothing more.
    fn fail(&mut self, code: &str, message: &str, emit: &mut Emit<'_>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.ensure_id();
        self.open("response.failed");
        self.buf.extend_from_slice(b",\"response\":");
        self.response_object("failed", false);
        self.buf.extend_from_slice(b",\"error\":{\"code\":");
        write_json_str(&mut self.buf, code);
        self.buf.extend_from_slice(b",\"message\":");
        write_json_str(&mut self.buf, message);
        self.buf.extend_from_slice(b"}}");
        self.send("response.failed", emit);
    }
}

/// A freeform tool's input: the `input` string of the JSON object the model produced, else
/// the JSON as it came.
fn custom_input(raw: &str) -> String {
    #[derive(Deserialize)]
    struct Input {
        input: String,
    }
    match serde_json::from_str::<Input>(raw) {
        Ok(Input { input }) => input,
        Err(_) => raw.to_owned(),
    }
}

impl WireDecoder for MessagesDecoder {
    fn event(&mut self, name: Option<&str>, data: &[u8], emit: &mut Emit<'_>) {
        if self.ended || name == Some("ping") {
            return;
        }
        let Ok(event) = serde_json::from_slice::<WireEvent>(data) else {
            return;
        };
        match event.kind.as_ref() {
            "message_start" => self.start(event.message, emit),
            "content_block_start" => {
                self.start(None, emit);
                if let (Some(index), Some(block)) = (event.index, event.content_block) {
                    self.block_start(index, block, emit);
                }
            }
            "content_block_delta" => {
                let (Some(index), Some(delta)) = (event.index, event.delta) else {
                    return;
                };
                let Some(pos) = self.blocks.iter().position(|b| b.index == index) else {
                    return;
                };
                match delta.kind.as_deref() {
                    Some("text_delta") => {
                        if let Some(t) = delta.text {
                            self.block_delta(pos, &t, emit);
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(t) = delta.thinking {
                            self.block_delta(pos, &t, emit);
                        }
                    }
                    Some("input_json_delta") => {
                        if let Some(t) = delta.partial_json {
                            self.block_delta(pos, &t, emit);
                        }
                    }
                    Some("signature_delta") => {
                        if let Some(s) = delta.signature {
                            if self.hold(s.len(), emit) {
                                self.blocks[pos].signature.push_str(&s);
                            }
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(pos) = event
                    .index
                    .and_then(|i| self.blocks.iter().position(|b| b.index == i))
                {
                    self.block_stop(pos, emit);
                }
            }
            "message_delta" => {
                if let Some(reason) = event.delta.and_then(|d| d.stop_reason) {
                    self.stop_reason = Some(reason.into_owned());
                }
                if let Some(u) = &event.usage {
                    self.usage.take(u);
                }
            }
            "message_stop" => {
                self.start(None, emit);
                self.terminal(emit);
            }
            "error" => {
                let (kind, message) = match event.error {
                    Some(e) => (e.kind, e.message),
                    None => (None, None),
                };
                let message = message.unwrap_or(Cow::Borrowed("The upstream reported an error."));
                let code = error_code(kind.as_deref().unwrap_or("api_error"), &message);
                self.fail(code, &message, emit);
            }
            _ => {}
        }
    }

    fn finish(&mut self, _emit: &mut Emit<'_>) {
        // A stream without `message_stop` was cut: no terminal, the pipeline reports it.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::error::status_for_upstream_code;
    use serde_json::{json, Value};

    /// Feeds `(event name, data)` pairs; returns the Responses events as `(type, JSON)`.
    fn decode(decoder: &mut MessagesDecoder, events: &[Value]) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for e in events {
            let name = e["type"].as_str().map(str::to_owned);
            let data = serde_json::to_vec(e).unwrap();
            decoder.event(name.as_deref(), &data, &mut |t: &str, d: &[u8]| {
                out.push((t.to_owned(), serde_json::from_slice(d).unwrap()));
            });
        }
        decoder.finish(&mut |t: &str, d: &[u8]| {
            out.push((t.to_owned(), serde_json::from_slice(d).unwrap()));
        });
        out
    }

    fn types(events: &[(String, Value)]) -> Vec<&str> {
        events.iter().map(|(t, _)| t.as_str()).collect()
    }

    fn start() -> Value {
        json!({"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":3,"output_tokens":1}}})
    }

    #[test]
    fn an_echoed_model_names_every_response_object_instead_of_the_upstreams() {
        let stop = json!({"type":"message_stop"});
        let plain = decode(
            &mut MessagesDecoder::new(Vec::new()),
            &[start(), stop.clone()],
        );
        assert_eq!(plain[0].1["response"]["model"], "claude-x");
        let mut echoing = MessagesDecoder::new(Vec::new()).echoing("sonnet");
        let out = decode(&mut echoing, &[start(), stop]);
        assert_eq!(types(&out), ["response.created", "response.completed"]);
        for (_, event) in &out {
            assert_eq!(event["response"]["model"], "sonnet", "{event}");
        }
    }

    #[test]
    fn error_types_map_to_codes_the_upstream_table_knows() {
        for (kind, message, code, status) in [
            (
                "overloaded_error",
                "Overloaded",
                "server_is_overloaded",
                503,
            ),
            ("rate_limit_error", "slow", "rate_limit_exceeded", 429),
            ("api_error", "boom", "server_error", 502),
            ("timeout_error", "late", "server_error", 502),
            ("billing_error", "pay", "insufficient_quota", 429),
            (
                "invalid_request_error",
                "prompt is too long: 300000 tokens > 200000 maximum",
                "context_length_exceeded",
                400,
            ),
            ("invalid_request_error", "bad", "invalid_request_error", 400),
            ("request_too_large", "big", "invalid_request_error", 400),
            ("authentication_error", "who", "authentication_error", 401),
            ("permission_error", "no", "permission_error", 403),
            ("not_found_error", "gone", "not_found_error", 404),
        ] {
            assert_eq!(error_code(kind, message), code, "{kind}");
            assert_eq!(status_for_upstream_code(code), status, "{kind}");
        }
        assert_eq!(error_code("something_new", ""), "something_new");
    }

    #[test]
    fn an_error_without_message_start_fails_the_response_alone() {
        let mut d = MessagesDecoder::new(Vec::new());
        let out = decode(
            &mut d,
            &[json!({"type":"error","error":{"type":"rate_limit_error","message":"Too many"}})],
        );
        assert_eq!(types(&out), ["response.failed"]);
        assert_eq!(
            out[0].1["response"]["error"],
            json!({"code":"rate_limit_exceeded","message":"Too many"})
        );
        assert!(out[0].1["response"]["id"]
            .as_str()
            .unwrap()
            .starts_with("resp_"));
    }

    #[test]
    fn events_after_the_terminal_and_unknown_blocks_are_ignored() {
        let mut d = MessagesDecoder::new(Vec::new());
        let out = decode(
            &mut d,
            &[
                start(),
                json!({"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}}),
                json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{}"}}),
                json!({"type":"content_block_stop","index":0}),
                json!({"type":"message_delta","delta":{"stop_reason":"pause_turn"},"usage":{"output_tokens":5}}),
                json!({"type":"message_stop"}),
                json!({"type":"message_start","message":{"id":"msg_2"}}),
                json!({"type":"error","error":{"type":"api_error","message":"late"}}),
            ],
        );
        assert_eq!(types(&out), ["response.created", "response.completed"]);
        assert_eq!(
            out[1].1["response"]["usage"],
            json!({"input_tokens":3,"input_tokens_details":{"cached_tokens":0},"output_tokens":5,"total_tokens":8})
        );
        assert_eq!(out[1].1["response"]["output"], json!([]));
    }

    #[test]
    fn a_tool_use_whose_input_comes_whole_at_its_start_keeps_it() {
        let mut d = MessagesDecoder::new(Vec::new());
        let out = decode(
            &mut d,
            &[
                start(),
                json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_9","name":"f","input":{"a":1}}}),
                json!({"type":"message_delta","delta":{"stop_reason":"tool_use"}}),
                json!({"type":"message_stop"}),
            ],
        );
        assert_eq!(
            types(&out),
            [
                "response.created",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        // The block never saw its stop: the terminal closes it.
        assert_eq!(
            out[4].1["item"],
            json!({"id":"fc_1_0","type":"function_call","status":"completed","call_id":"toolu_9","name":"f","arguments":"{\"a\":1}"})
        );
    }

    #[test]
    fn held_bytes_are_bounded() {
        let mut d = MessagesDecoder::with_limit(Vec::new(), 10);
        let out = decode(
            &mut d,
            &[
                start(),
                json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"12345"}}),
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"678901"}}),
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"more"}}),
                json!({"type":"message_stop"}),
            ],
        );
        assert_eq!(
            types(&out),
            [
                "response.created",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.failed",
            ]
        );
        assert_eq!(out[4].1["response"]["error"]["code"], "response_too_large");
    }
}
