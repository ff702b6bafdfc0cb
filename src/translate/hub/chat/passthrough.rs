//! Chat clients → a chat provider: the body and the stream go through as they are, rewritten
//! only where a rule applies (`docs/chat-wire.md`, "Passthrough").
//!
//! Request ([`rewrite_request`]): the model (an alias becomes the model it names), the model's
//! forced `params`, and `stream_options.include_usage` on a streaming request (usage is counted
//! from the usage chunk). A body no rule changes goes out as the same bytes.
//!
//! Stream ([`ChatPassthrough`]): events are relayed one by one as each completes, as the same
//! bytes unless
//! * the model's `think_tags` rule changes a chunk's `delta.content`: `strip` removes
//!   `<think>…</think>` and the whitespace right after the closing tag, `reasoning` moves the
//!   section to `delta.reasoning_content`. Tags split across chunks are found; at most a tag's
//!   length minus one byte of content is held back, and released with the next chunk's content
//!   (at the latest with the `finish_reason` chunk). A chunk left with nothing to say is
//!   dropped.
//! * the client did not ask for usage: the usage chunk (`choices: []`) the proxy asked for is
//!   dropped (its usage is still read, for accounting).
//!
//! A server that answers a streaming request with one `chat.completion` body is turned into the
//! chunk stream a streaming server would have sent ([`completion_as_stream`]).
//!
//! The bytes are split into events here, not decoded and re-encoded, so an unchanged event is
//! the upstream's bytes, line endings and all; a UTF-8 character or a line ending split across
//! reads is joined before anything looks at it. One event holds at most
//! [`DEFAULT_MAX_EVENT_BYTES`].

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::translate::codec::{DecodeError, DEFAULT_MAX_EVENT_BYTES};
use crate::translate::think::{ThinkFilter, ThinkMode, ThinkPiece};
use crate::translate::TranslateError;

use super::decode::ChatUsage;

// === Request ===

/// A chat request after the passthrough rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassthroughRequest {
    /// The body to send, when a rule changed it (`None`: send the client's bytes).
    pub body: Option<Vec<u8>>,
    /// The client asked for a stream.
    pub stream: bool,
    /// The client itself asked for the usage chunk (`stream_options.include_usage`).
    pub client_usage: bool,
}

/// Applies the passthrough rules to a Chat Completions body (decoded JSON bytes): `model` set
/// to `upstream_model` when given and different, every forced param set, and on a streaming
/// request `stream_options.include_usage: true` (other `stream_options` kept).
pub fn rewrite_request(
    body: &[u8],
    upstream_model: Option<&str>,
    params: &Map<String, Value>,
) -> Result<PassthroughRequest, TranslateError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|_| {
        TranslateError::bad_request("invalid_json", "The request body is not valid JSON.")
    })?;
    let Some(obj) = value.as_object_mut() else {
        return Err(TranslateError::invalid("body", "a JSON object"));
    };
    let stream = obj.get("stream").and_then(Value::as_bool) == Some(true);
    let client_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    let mut changed = false;
    if let Some(model) = upstream_model {
        if obj.get("model").and_then(Value::as_str) != Some(model) {
            obj.insert("model".into(), Value::String(model.to_owned()));
            changed = true;
        }
    }
    for (key, forced) in params {
        if obj.get(key) != Some(forced) {
            obj.insert(key.clone(), forced.clone());
            changed = true;
        }
    }
    if stream && !client_usage {
        match obj.get_mut("stream_options") {
            Some(Value::Object(options)) => {
                options.insert("include_usage".into(), Value::Bool(true));
            }
            _ => {
                obj.insert(
                    "stream_options".into(),
                    serde_json::json!({"include_usage": true}),
                );
            }
        }
        changed = true;
    }
    let body = match changed {
        true => Some(serde_json::to_vec(&value).map_err(|_| {
            TranslateError::bad_request("invalid_json", "The request body is not valid JSON.")
        })?),
        false => None,
    };
    Ok(PassthroughRequest {
        body,
        stream,
        client_usage,
    })
}

// === One body for a stream ===

/// The chunk stream for a whole `chat.completion` body (a server that does not stream): one
/// chunk per choice with its whole message (`role`, `content`, reasoning, `tool_calls` with
/// their `index`), one with its `finish_reason`, the usage chunk when the client asked for
/// usage, and `[DONE]`; the think rule applied as on a stream. Also returns the body's usage.
/// `None` when the body is not a completion (an error body, or not JSON).
pub fn completion_as_stream(
    body: &[u8],
    mode: ThinkMode,
    client_usage: bool,
) -> Option<(Vec<u8>, Option<ChatUsage>)> {
    let completion: Value = serde_json::from_slice(body).ok()?;
    let obj = completion.as_object()?;
    let choices = obj.get("choices")?.as_array()?;
    let mut head = Map::new();
    for key in ["id", "created", "model", "system_fingerprint"] {
        if let Some(v) = obj.get(key) {
            head.insert(key.into(), v.clone());
        }
    }
    head.insert(
        "object".into(),
        Value::String("chat.completion.chunk".into()),
    );
    let chunk = |choices: Vec<Value>, usage: Option<&Value>| {
        let mut c = head.clone();
        c.insert("choices".into(), Value::Array(choices));
        if let Some(u) = usage {
            c.insert("usage".into(), u.clone());
        }
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(Value::Object(c).to_string().as_bytes());
        event.extend_from_slice(b"\n\n");
        event
    };
    let mut wire = Vec::with_capacity(body.len() + 512);
    let mut finishes = Vec::with_capacity(choices.len());
    for (n, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or_else(|| n.into());
        let mut delta = choice
            .get("message")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
            for (i, call) in calls.iter_mut().enumerate() {
                if let Some(call) = call.as_object_mut() {
                    call.entry("index").or_insert_with(|| i.into());
                }
            }
        }
        let mut first = Map::new();
        first.insert("index".into(), index.clone());
        first.insert("delta".into(), Value::Object(delta));
        first.insert("finish_reason".into(), Value::Null);
        wire.extend(chunk(vec![Value::Object(first)], None));
        let mut last = Map::new();
        last.insert("index".into(), index);
        last.insert("delta".into(), Value::Object(Map::new()));
        last.insert(
            "finish_reason".into(),
            // A whole body is a whole answer, whatever its `finish_reason` says.
            choice
                .get("finish_reason")
                .filter(|f| f.is_string())
                .cloned()
                .unwrap_or_else(|| "stop".into()),
        );
        finishes.push(Value::Object(last));
    }
    wire.extend(chunk(finishes, None));
    let usage = obj.get("usage").filter(|u| u.is_object());
    if let Some(u) = usage {
        wire.extend(chunk(Vec::new(), Some(u)));
    }
    wire.extend_from_slice(b"data: [DONE]\n\n");
    let mut stage = ChatPassthrough::new(mode, client_usage);
    let mut out = Vec::with_capacity(wire.len());
    stage.push(&wire, &mut out).ok()?;
    stage.finish(&mut out).ok()?;
    Some((out, stage.usage.take()))
}

/// A whole `chat.completion` body (a non-streaming answer) with the model's think rule
/// applied to each choice's `message.content`: `strip` removes the sections (and the
/// whitespace right after a closing tag), `reasoning` moves them to
/// `message.reasoning_content` (after any reasoning the server gave). `None`: nothing to
/// change (no rule, no tag, or not a completion), so the body goes out as it came.
pub fn completion_with_think(body: &[u8], mode: ThinkMode) -> Option<Vec<u8>> {
    if mode == ThinkMode::Off || !may_hold_tag(body) {
        return None;
    }
    let mut completion: Value = serde_json::from_slice(body).ok()?;
    let choices = completion.get_mut("choices")?.as_array_mut()?;
    let mut changed = false;
    for choice in choices {
        let Some(message) = choice.get_mut("message").and_then(Value::as_object_mut) else {
            continue;
        };
        let Some(content) = message.get("content").and_then(Value::as_str) else {
            continue;
        };
        let mut filter = ThinkFilter::new(mode);
        let (mut text, mut thought) = (String::new(), String::new());
        let mut take = |piece: ThinkPiece<'_>| match piece {
            ThinkPiece::Text(t) => text.push_str(t),
            ThinkPiece::Reasoning(r) => thought.push_str(r),
        };
        filter.push(content, &mut take);
        filter.finish(&mut take);
        if text == content {
            continue;
        }
        changed = true;
        message.insert("content".into(), Value::String(text));
        if !thought.is_empty() {
            let given = message
                .get("reasoning_content")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let joined = format!("{given}{thought}");
            message.insert("reasoning_content".into(), Value::String(joined));
        }
    }
    changed
        .then(|| serde_json::to_vec(&completion).ok())
        .flatten()
}

// === Stream ===

#[derive(Deserialize, Default)]
#[serde(default)]
struct Peek<'a> {
    #[serde(borrow)]
    choices: Option<Vec<PeekChoice<'a>>>,
    usage: Option<ChatUsage>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PeekChoice<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<PeekDelta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PeekDelta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    /// Fields that make a chunk worth sending even with its content gone.
    role: Option<IgnoredAny>,
    tool_calls: Option<IgnoredAny>,
    reasoning_content: Option<IgnoredAny>,
    reasoning: Option<IgnoredAny>,
    refusal: Option<IgnoredAny>,
}

impl PeekDelta<'_> {
    fn says_more_than_content(&self) -> bool {
        self.role.is_some()
            || self.tool_calls.is_some()
            || self.reasoning_content.is_some()
            || self.reasoning.is_some()
            || self.refusal.is_some()
    }
}

/// The streaming stage of chat passthrough; see the module docs.
pub struct ChatPassthrough {
    mode: ThinkMode,
    drop_usage: bool,
    /// One filter per choice index.
    filters: Vec<(u64, ThinkFilter)>,
    /// The raw bytes of the event being read.
    event: Vec<u8>,
    /// Where the current line starts in `event`.
    line_start: usize,
    /// The last read ended in `\r`: a `\n` first in the next belongs to it.
    after_cr: bool,
    /// No event dispatched yet (a byte-order mark may start the stream).
    first: bool,
    max_event_bytes: usize,
    saw_finish: bool,
    saw_done: bool,
    usage: Option<ChatUsage>,
    failed: Option<DecodeError>,
}

impl ChatPassthrough {
    /// A stage for one answer: the model's think-tag rule, and whether the client asked for
    /// the usage chunk itself.
    pub fn new(mode: ThinkMode, client_usage: bool) -> Self {
        ChatPassthrough {
            mode,
            drop_usage: !client_usage,
            filters: Vec::new(),
            event: Vec::new(),
            line_start: 0,
            after_cr: false,
            first: true,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            saw_finish: false,
            saw_done: false,
            usage: None,
            failed: None,
        }
    }

    /// The usage the server reported, if any.
    pub fn usage(&self) -> Option<&ChatUsage> {
        self.usage.as_ref()
    }

    /// True once a chunk carried a `finish_reason`.
    pub fn saw_finish(&self) -> bool {
        self.saw_finish
    }

    /// Bytes held for the event being read.
    pub fn buffered(&self) -> usize {
        self.event.capacity()
    }

    /// Feeds the next upstream bytes (split anywhere); appends the client's bytes for every
    /// event they complete. After an error every later call returns it and writes nothing.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                // The rest of a `\r\n`: part of the event it ended, or, when that event has
                // already gone out, the byte that came right after it.
                match self.event.is_empty() {
                    true => out.push(b'\n'),
                    false => self.event.push(b'\n'),
                }
                self.line_start = self.event.len();
                chunk = &chunk[1..];
            }
        }
        // Events that lie whole inside `chunk` are dispatched from it without a copy; only an
        // event that spans reads is gathered in `self.event`.
        let mut event_start = 0;
        // Where the current line starts: in `chunk` (`line_in_chunk`) or in `self.event`.
        let mut line_in_chunk = self.event.len() == self.line_start;
        let mut line_start = 0;
        let mut at = 0;
        while let Some(found) = memchr::memchr2(b'\n', b'\r', &chunk[at..]) {
            let pos = at + found;
            let end = match (chunk[pos], chunk.get(pos + 1)) {
                (b'\r', Some(b'\n')) => pos + 2,
                (b'\r', None) => {
                    self.after_cr = true;
                    pos + 1
                }
                _ => pos + 1,
            };
            let blank = line_in_chunk && pos == line_start;
            line_in_chunk = true;
            line_start = end;
            at = end;
            if !blank {
                continue;
            }
            if self.event.is_empty() {
                self.dispatch(&chunk[event_start..end], out);
            } else {
                self.event.extend_from_slice(&chunk[event_start..end]);
                let event = std::mem::take(&mut self.event);
                self.dispatch(&event, out);
                self.event = event;
                self.event.clear();
            }
            event_start = end;
            self.line_start = 0;
        }
        let rest = &chunk[event_start..];
        if self.event.len() + rest.len() > self.max_event_bytes {
            self.failed = Some(DecodeError::TooLarge);
            self.event = Vec::new();
            return Err(DecodeError::TooLarge);
        }
        if line_in_chunk {
            self.line_start = self.event.len() + (line_start - event_start);
        }
        self.event.extend_from_slice(rest);
        Ok(())
    }

    /// The upstream closed. A stream that ended inside an event, or before any
    /// `finish_reason`, is [`DecodeError::Truncated`] (the caller ends the client's stream
    /// with an error event). A finished answer whose `[DONE]` never came gets one.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let pending = self.event.iter().any(|b| !b.is_ascii_whitespace());
        if pending || !self.saw_finish {
            self.failed = Some(DecodeError::Truncated);
            return Err(DecodeError::Truncated);
        }
        if !self.saw_done {
            self.saw_done = true;
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
        Ok(())
    }

    /// One whole event (its raw bytes, blank line included).
    fn dispatch(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let first = std::mem::replace(&mut self.first, false);
        let data = match event_data(raw, first) {
            Some(data) => data,
            None => {
                out.extend_from_slice(raw);
                return;
            }
        };
        if data.as_ref() == b"[DONE]" {
            self.saw_done = true;
            // Before any `finish_reason` the answer is truncated: a `[DONE]` would read as a
            // clean end to the client (SDKs stop at it), so it is held back and the stream
            // ends in the error event instead (`finish`).
            if self.saw_finish {
                out.extend_from_slice(raw);
            }
            return;
        }
        // Most chunks need only two facts, found without parsing: whether a choice finishes,
        // and whether the think rule could change anything. A usage chunk (one per stream)
        // is parsed whole.
        let usage = has_value_for(&data, &USAGE_KEY);
        if !usage {
            if has_value_for(&data, &FINISH_KEY) {
                self.saw_finish = true;
            }
            let idle = self.filters.iter().all(|(_, f)| f.is_idle());
            if self.mode == ThinkMode::Off || (idle && !may_hold_tag(&data)) {
                out.extend_from_slice(raw);
                return;
            }
        }
        let Ok(peek) = serde_json::from_slice::<Peek>(&data) else {
            out.extend_from_slice(raw);
            return;
        };
        let choices = peek.choices.unwrap_or_default();
        if let Some(usage) = peek.usage {
            self.usage = Some(usage);
            if self.drop_usage && choices.is_empty() {
                return;
            }
        }
        if choices.iter().any(|c| c.finish_reason.is_some()) {
            self.saw_finish = true;
        }
        if self.mode == ThinkMode::Off {
            out.extend_from_slice(raw);
            return;
        }
        // (choice index, new content, new reasoning) for every choice the rule changed.
        let mut changes: Vec<(u64, String, String)> = Vec::new();
        for choice in &choices {
            let index = choice.index.unwrap_or(0);
            let content = choice
                .delta
                .as_ref()
                .and_then(|d| d.content.as_deref())
                .unwrap_or("");
            let finishing = choice.finish_reason.is_some();
            if content.is_empty() && !finishing {
                continue;
            }
            let filter = self.filter(index);
            let (mut text, mut reasoning) = (String::new(), String::new());
            let mut on = |piece: ThinkPiece<'_>| match piece {
                ThinkPiece::Text(t) => text.push_str(t),
                ThinkPiece::Reasoning(r) => reasoning.push_str(r),
            };
            filter.push(content, &mut on);
            if finishing {
                filter.finish(&mut on);
            }
            if text != content || !reasoning.is_empty() {
                changes.push((index, text, reasoning));
            }
        }
        if changes.is_empty() {
            out.extend_from_slice(raw);
            return;
        }
        // The common rewrite in `strip` mode: a chunk that carried only think text.
        let emptied = changes.len() == choices.len()
            && changes.iter().all(|(_, t, r)| t.is_empty() && r.is_empty())
            && choices.iter().all(|c| {
                c.finish_reason.is_none()
                    && !c
                        .delta
                        .as_ref()
                        .is_some_and(PeekDelta::says_more_than_content)
            });
        if emptied && !usage {
            return;
        }
        match rewrite_chunk(&data, &changes) {
            Some(Some(json)) => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&json);
                out.extend_from_slice(b"\n\n");
            }
            // Nothing left to say: the chunk is dropped.
            Some(None) => {}
            None => out.extend_from_slice(raw),
        }
    }

    fn filter(&mut self, index: u64) -> &mut ThinkFilter {
        let pos = match self.filters.iter().position(|(i, _)| *i == index) {
            Some(pos) => pos,
            None => {
                self.filters.push((index, ThinkFilter::new(self.mode)));
                self.filters.len() - 1
            }
        };
        &mut self.filters[pos].1
    }
}

static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\":"));
static FINISH_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"finish_reason\":"));
static ESCAPED_LT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\\u003"));

/// True when `key` (a quoted JSON key and its colon) occurs with a value other than `null`.
/// A key inside a JSON string cannot match: its quotes would be escaped.
fn has_value_for(data: &[u8], key: &Finder<'_>) -> bool {
    key.find_iter(data).any(|at| {
        let rest = &data[at + key.needle().len()..];
        let value = rest.iter().position(|b| !b.is_ascii_whitespace());
        value.is_some_and(|v| !rest[v..].starts_with(b"null"))
    })
}

/// True when the chunk's text may hold a `<`: raw, or escaped as `\u003c` (Go's encoder
/// writes it so; any `\u003…` escape counts, which is rare enough).
fn may_hold_tag(data: &[u8]) -> bool {
    memchr::memchr(b'<', data).is_some() || ESCAPED_LT.find(data).is_some()
}

/// The `data:` of a raw event (lines joined with `\n`), or `None` when it has none.
fn event_data(raw: &[u8], first: bool) -> Option<Cow<'_, [u8]>> {
    let raw = match first {
        true => raw.strip_prefix("\u{feff}".as_bytes()).unwrap_or(raw),
        false => raw,
    };
    let mut data: Option<Cow<'_, [u8]>> = None;
    for line in raw.split(|b| *b == b'\n' || *b == b'\r') {
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        if field != b"data" {
            continue;
        }
        data = Some(match data {
            None => Cow::Borrowed(value),
            Some(have) => {
                let mut joined = have.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(value);
                Cow::Owned(joined)
            }
        });
    }
    data
}

/// The chunk with the rule's changes applied: `Some(None)` when nothing is left to send,
/// `None` when the chunk cannot be rewritten (then it goes out as it came).
fn rewrite_chunk(data: &[u8], changes: &[(u64, String, String)]) -> Option<Option<Vec<u8>>> {
    let mut chunk: Value = serde_json::from_slice(data).ok()?;
    let choices = chunk.get_mut("choices")?.as_array_mut()?;
    let mut says_something = false;
    for (n, choice) in choices.iter_mut().enumerate() {
        let choice = choice.as_object_mut()?;
        let index = choice
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(n as u64);
        if let Some((_, text, reasoning)) = changes.iter().find(|(i, _, _)| *i == index) {
            let delta = choice
                .entry("delta")
                .or_insert_with(|| Value::Object(Map::new()));
            let delta = delta.as_object_mut()?;
            match text.is_empty() {
                true => delta.remove("content"),
                false => delta.insert("content".into(), Value::String(text.clone())),
            };
            if !reasoning.is_empty() {
                let mut joined = delta
                    .get("reasoning_content")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                joined.push_str(reasoning);
                delta.insert("reasoning_content".into(), Value::String(joined));
            }
        }
        let delta_says = choice
            .get("delta")
            .and_then(Value::as_object)
            .is_some_and(|d| d.values().any(|v| !v.is_null()));
        let finishes = choice.get("finish_reason").is_some_and(|f| !f.is_null());
        says_something |= delta_says || finishes;
    }
    if chunk.get("usage").is_some_and(|u| !u.is_null()) {
        says_something = true;
    }
    match says_something {
        true => Some(Some(serde_json::to_vec(&chunk).ok()?)),
        false => Some(None),
    }
}
