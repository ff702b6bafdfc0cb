//! Responses events → Chat Completions chunks (`docs/translation.md`), one event at a time.
//!
//! Every chunk is written straight into the output buffer from a prefix built once per
//! stream (`data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,
//! "choices":[{"index":0,"delta":`); events are parsed into borrowed structs. No
//! `serde_json::Value` is built per delta.
//!
//! * Nothing is written before the first event that carries output; the first chunk carries
//!   `role:"assistant"`.
//! * Tool calls get dense indices 0, 1, … in announcement order, keyed by `item_id`
//!   (`output_index` only as a fallback). The first chunk of a call has `id`, `type`, `name`
//!   and `arguments:""`; later ones carry argument deltas only. Arguments that arrive only in
//!   `…arguments.done`, `output_item.done` or the terminal `output` are sent once, and a call
//!   seen only there is announced once.
//! * Reasoning summary parts (and raw reasoning text) stream as `reasoning_content`, parts
//!   separated by `"\n\n"`; a part seen only in its `.done` is sent whole; `reasoning_text.done`
//!   adds only the missing tail.
//! * Text seen only in `output_text.done` / `output_item.done` / the terminal `output` is sent
//!   once. With think tags configured, text passes through [`ThinkFilter`].
//! * `response.failed`, `error`, or an end without a terminal event → `data: {"error":…}`, and
//!   no `[DONE]` (never a fake `stop`).

use std::borrow::Cow;

use serde_json::Value;

use super::{chat_usage, completion_id, finish_reason, now_secs};
use crate::translate::aggregate::failure_of;
use crate::translate::codec::write_json_str;
use crate::translate::events::{Delta, Envelope, Item, ItemEvent, Response, ResponseHead};
use crate::translate::think::{ThinkFilter, ThinkMode, ThinkPiece};
use crate::translate::{
    write_error_event, Dialect, Interruption, ResponseContext, StreamEnd, StreamTranslator,
};

/// One tool call of the response.
#[derive(Debug)]
struct Call {
    /// `item_id`, or `#<output_index>` when the upstream gave no id.
    key: String,
    call_id: Option<String>,
    announced: bool,
    args_sent: bool,
    custom: bool,
    /// Arguments known before the call could be announced (full, from a `.done`).
    pending: Option<String>,
}

/// The Chat stream state machine; see the module docs.
pub struct ChatStream {
    ctx: ResponseContext,
    id: Option<String>,
    created: Option<i64>,
    /// The chunk prefix, built at the first chunk.
    prefix: Vec<u8>,
    role_sent: bool,
    /// Dense tool-call index = position.
    calls: Vec<Call>,
    /// Message items whose text went out.
    text_items: Vec<String>,
    /// Message items whose refusal went out.
    refusal_items: Vec<String>,
    refusal: bool,
    /// Reasoning: any sent; the current part (kind, item, index) and whether it had a delta;
    /// a separator owed before the next reasoning text.
    reasoning_sent: bool,
    reasoning_items: Vec<String>,
    part: Option<(u8, String, u64)>,
    part_had_delta: bool,
    part_len: usize,
    think: ThinkFilter,
    done: bool,
}

const REASONING_SUMMARY: u8 = 0;
const REASONING_TEXT: u8 = 1;

impl ChatStream {
    /// A state machine for one response.
    pub fn new(ctx: ResponseContext) -> Self {
        let think = ThinkFilter::new(ctx.think);
        ChatStream {
            ctx,
            id: None,
            created: None,
            prefix: Vec::new(),
            role_sent: false,
            calls: Vec::new(),
            text_items: Vec::new(),
            refusal_items: Vec::new(),
            refusal: false,
            reasoning_sent: false,
            reasoning_items: Vec::new(),
            part: None,
            part_had_delta: false,
            part_len: 0,
            think,
            done: false,
        }
    }

    // === chunk writing ===

    fn build_prefix(&mut self) {
        let id = completion_id(self.id.as_deref());
        let created = self.created.unwrap_or_else(now_secs);
        self.created = Some(created);
        let p = &mut self.prefix;
        p.extend_from_slice(b"data: {\"id\":");
        write_json_str(p, &id);
        p.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        p.extend_from_slice(created.to_string().as_bytes());
        p.extend_from_slice(b",\"model\":");
        write_json_str(p, &self.ctx.model);
        p.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
    }

    /// Starts a chunk: prefix, `{`, and the role on the first one. The caller writes the delta
    /// fields and calls [`ChatStream::close`].
    fn open(&mut self, out: &mut Vec<u8>) {
        if self.prefix.is_empty() {
            self.build_prefix();
        }
        out.extend_from_slice(&self.prefix);
        if self.role_sent {
            out.push(b'{');
        } else {
            self.role_sent = true;
            out.extend_from_slice(b"{\"role\":\"assistant\",");
        }
    }

    fn close(out: &mut Vec<u8>) {
        out.extend_from_slice(b"},\"finish_reason\":null}]}\n\n");
    }

    fn string_chunk(&mut self, field: &str, value: &str, out: &mut Vec<u8>) {
        if value.is_empty() {
            return;
        }
        self.open(out);
        write_json_str(out, field);
        out.push(b':');
        write_json_str(out, value);
        Self::close(out);
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        if self.think.mode() == ThinkMode::Off {
            self.string_chunk("content", text, out);
            return;
        }
        let mut think = std::mem::take(&mut self.think);
        think.push(text, |piece| self.think_piece(piece, out));
        self.think = think;
    }

    fn think_piece(&mut self, piece: ThinkPiece<'_>, out: &mut Vec<u8>) {
        match piece {
            ThinkPiece::Text(t) => self.string_chunk("content", t, out),
            ThinkPiece::Reasoning(r) => {
                self.reasoning_sent = true;
                self.string_chunk("reasoning_content", r, out);
            }
        }
    }

    fn flush_think(&mut self, out: &mut Vec<u8>) {
        let mut think = std::mem::take(&mut self.think);
        think.finish(|piece| self.think_piece(piece, out));
        self.think = think;
    }

    /// Reasoning text of part (kind, item, index); a new part owes a separator if reasoning
    /// was sent before.
    fn reasoning(&mut self, kind: u8, item: &str, index: u64, text: &str, out: &mut Vec<u8>) {
        self.enter_part(kind, item, index);
        if text.is_empty() {
            return;
        }
        self.part_had_delta = true;
        self.part_len += text.len();
        if !self.reasoning_items.iter().any(|i| i == item) {
            self.reasoning_items.push(item.to_owned());
        }
        self.open(out);
        out.extend_from_slice(b"\"reasoning_content\":");
        if self.reasoning_sent && self.part_len == text.len() {
            let mut joined = String::with_capacity(text.len() + 2);
            joined.push_str("\n\n");
            joined.push_str(text);
            write_json_str(out, &joined);
        } else {
            write_json_str(out, text);
        }
        self.reasoning_sent = true;
        Self::close(out);
    }

    fn enter_part(&mut self, kind: u8, item: &str, index: u64) {
        let same = self
            .part
            .as_ref()
            .is_some_and(|(k, i, n)| *k == kind && i == item && *n == index);
        if !same {
            self.part = Some((kind, item.to_owned(), index));
            self.part_had_delta = false;
            self.part_len = 0;
        }
    }

    fn call_position(
        &self,
        item_id: Option<&str>,
        output_index: Option<u64>,
        call_id: Option<&str>,
    ) -> Option<usize> {
        if let Some(id) = item_id {
            if let Some(p) = self.calls.iter().position(|c| c.key == id) {
                return Some(p);
            }
        }
        if let Some(cid) = call_id {
            if let Some(p) = self
                .calls
                .iter()
                .position(|c| c.call_id.as_deref() == Some(cid))
            {
                return Some(p);
            }
        }
        let key = format!("#{}", output_index?);
        self.calls.iter().position(|c| c.key == key)
    }

    fn call_key(item_id: Option<&str>, output_index: Option<u64>) -> String {
        match (item_id, output_index) {
            (Some(id), _) => id.to_owned(),
            (None, Some(i)) => format!("#{i}"),
            (None, None) => "#?".to_owned(),
        }
    }

    /// Writes the announcement of call `k`, with `arguments` (possibly empty).
    fn announce(&mut self, k: usize, name: &str, arguments: &str, out: &mut Vec<u8>) {
        let call = &mut self.calls[k];
        call.announced = true;
        if !arguments.is_empty() {
            call.args_sent = true;
        }
        let custom = call.custom;
        let call_id = call
            .call_id
            .clone()
            .unwrap_or_else(|| format!("call_missing_{k}"));
        let name = self.ctx.tool_names.original(name).to_owned();
        self.open(out);
        out.extend_from_slice(b"\"tool_calls\":[{\"index\":");
        out.extend_from_slice(k.to_string().as_bytes());
        out.extend_from_slice(b",\"id\":");
        write_json_str(out, &call_id);
        if custom {
            out.extend_from_slice(b",\"type\":\"custom\",\"custom\":{\"name\":");
            write_json_str(out, &name);
            out.extend_from_slice(b",\"input\":");
        } else {
            out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
            write_json_str(out, &name);
            out.extend_from_slice(b",\"arguments\":");
        }
        write_json_str(out, arguments);
        out.extend_from_slice(b"}}]");
        Self::close(out);
    }

    fn arguments(&mut self, k: usize, delta: &str, out: &mut Vec<u8>) {
        if delta.is_empty() {
            return;
        }
        self.calls[k].args_sent = true;
        let custom = self.calls[k].custom;
        self.open(out);
        out.extend_from_slice(b"\"tool_calls\":[{\"index\":");
        out.extend_from_slice(k.to_string().as_bytes());
        out.extend_from_slice(if custom {
            b",\"custom\":{\"input\":"
        } else {
            b",\"function\":{\"arguments\":"
        });
        write_json_str(out, delta);
        out.extend_from_slice(b"}}]");
        Self::close(out);
    }

    // === events ===

    fn on_created(&mut self, data: &[u8]) {
        if let Ok(Envelope { response: Some(r) }) =
            serde_json::from_slice::<Envelope<ResponseHead>>(data)
        {
            if self.id.is_none() {
                self.id = r.id.map(Cow::into_owned);
            }
            if self.created.is_none() {
                self.created = r.created_at.map(|t| t as i64);
            }
        }
    }

    /// A complete item (from `output_item.added`/`.done` or the terminal output).
    fn on_item(
        &mut self,
        item: &Item<'_>,
        output_index: Option<u64>,
        complete: bool,
        out: &mut Vec<u8>,
    ) {
        let id = item.id.as_deref();
        match item.kind.as_deref() {
            Some(kind @ ("function_call" | "custom_tool_call")) => {
                let custom = kind == "custom_tool_call";
                let full = if custom {
                    item.input.as_deref()
                } else {
                    item.arguments.as_deref()
                };
                let k = match self.call_position(id, output_index, item.call_id.as_deref()) {
                    Some(k) => k,
                    None => {
                        self.calls.push(Call {
                            key: Self::call_key(id, output_index),
                            call_id: None,
                            announced: false,
                            args_sent: false,
                            custom,
                            pending: None,
                        });
                        self.calls.len() - 1
                    }
                };
                if self.calls[k].call_id.is_none() {
                    self.calls[k].call_id = item.call_id.as_deref().map(str::to_owned);
                }
                let call = &self.calls[k];
                if !call.announced {
                    let Some(name) = item.name.as_deref() else {
                        return; // cannot announce without a name; wait for the done item
                    };
                    let args = if complete {
                        full.map(str::to_owned)
                            .or_else(|| call.pending.clone())
                            .unwrap_or_default()
                    } else {
                        full.unwrap_or("").to_owned()
                    };
                    self.announce(k, name, &args, out);
                } else if complete && !call.args_sent {
                    if let Some(full) = full.map(str::to_owned).or_else(|| call.pending.clone()) {
                        self.arguments(k, &full, out);
                    }
                }
            }
            Some("message") if complete => {
                let Some(id) = id else { return };
                if !self.text_items.iter().any(|i| i == id) {
                    let text: String = item
                        .content()
                        .iter()
                        .filter(|p| p.kind.as_deref() == Some("output_text"))
                        .filter_map(|p| p.text.as_deref())
                        .collect();
                    if !text.is_empty() {
                        self.text_items.push(id.to_owned());
                        self.text(&text, out);
                    }
                }
                if !self.refusal_items.iter().any(|i| i == id) {
                    let refusal: String = item
                        .content()
                        .iter()
                        .filter_map(|p| p.refusal.as_deref())
                        .collect();
                    if !refusal.is_empty() {
                        self.refusal_items.push(id.to_owned());
                        self.refusal = true;
                        self.string_chunk("refusal", &refusal, out);
                    }
                }
            }
            Some("reasoning") if complete => {
                let Some(id) = id else { return };
                if self.reasoning_items.iter().any(|i| i == id) {
                    return;
                }
                for (n, part) in item.summary().iter().enumerate() {
                    if let Some(t) = part.text.as_deref() {
                        self.reasoning(REASONING_SUMMARY, id, n as u64, t, out);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_delta(&mut self, kind: &str, data: &[u8], out: &mut Vec<u8>) {
        let Ok(d) = serde_json::from_slice::<Delta>(data) else {
            return;
        };
        let item = d.item_id.as_deref().unwrap_or("");
        match kind {
            "response.output_text.delta" => {
                let delta = d.delta.as_deref().unwrap_or("");
                if delta.is_empty() {
                    return;
                }
                if self.text_items.last().map(String::as_str) != Some(item)
                    && !self.text_items.iter().any(|i| i == item)
                {
                    self.text_items.push(item.to_owned());
                }
                self.text(delta, out);
            }
            "response.output_text.done" => {
                if let Some(text) = d.text.as_deref() {
                    if !text.is_empty() && !self.text_items.iter().any(|i| i == item) {
                        self.text_items.push(item.to_owned());
                        self.text(text, out);
                    }
                }
            }
            "response.refusal.delta" | "response.refusal.done" => {
                let text = if kind.ends_with("delta") {
                    d.delta.as_deref()
                } else {
                    d.refusal.as_deref()
                };
                let seen = self.refusal_items.iter().any(|i| i == item);
                if kind.ends_with("done") && seen {
                    return;
                }
                if let Some(t) = text.filter(|t| !t.is_empty()) {
                    if !seen {
                        self.refusal_items.push(item.to_owned());
                    }
                    self.refusal = true;
                    self.string_chunk("refusal", t, out);
                }
            }
            "response.reasoning_summary_part.added" => {
                self.enter_part(REASONING_SUMMARY, item, d.summary_index.unwrap_or(0));
            }
            "response.reasoning_summary_text.delta" => {
                let delta = d.delta.as_deref().unwrap_or("");
                self.reasoning(
                    REASONING_SUMMARY,
                    item,
                    d.summary_index.unwrap_or(0),
                    delta,
                    out,
                );
            }
            "response.reasoning_summary_text.done" => {
                self.enter_part(REASONING_SUMMARY, item, d.summary_index.unwrap_or(0));
                if !self.part_had_delta {
                    let text = d.text.as_deref().unwrap_or("");
                    self.reasoning(
                        REASONING_SUMMARY,
                        item,
                        d.summary_index.unwrap_or(0),
                        text,
                        out,
                    );
                }
            }
            "response.reasoning_text.delta" => {
                let delta = d.delta.as_deref().unwrap_or("");
                self.reasoning(
                    REASONING_TEXT,
                    item,
                    d.content_index.unwrap_or(0),
                    delta,
                    out,
                );
            }
            "response.reasoning_text.done" => {
                let index = d.content_index.unwrap_or(0);
                self.enter_part(REASONING_TEXT, item, index);
                let text = d.text.as_deref().unwrap_or("");
                let sent = self.part_len;
                if text.len() > sent && text.is_char_boundary(sent) {
                    let tail = text[sent..].to_owned();
                    self.reasoning(REASONING_TEXT, item, index, &tail, out);
                }
            }
            "response.function_call_arguments.delta" | "response.custom_tool_call_input.delta" => {
                let delta = d.delta.as_deref().unwrap_or("");
                match self.call_position(d.item_id.as_deref(), d.output_index, None) {
                    Some(k) if self.calls[k].announced => self.arguments(k, delta, out),
                    Some(k) => self.calls[k]
                        .pending
                        .get_or_insert_with(String::new)
                        .push_str(delta),
                    None => self.calls.push(Call {
                        key: Self::call_key(d.item_id.as_deref(), d.output_index),
                        call_id: None,
                        announced: false,
                        args_sent: false,
                        custom: kind.contains("custom"),
                        pending: Some(delta.to_owned()),
                    }),
                }
            }
            "response.function_call_arguments.done" | "response.custom_tool_call_input.done" => {
                let full = if kind.contains("custom") {
                    d.input
                } else {
                    d.arguments
                };
                let Some(full) = full else { return };
                match self.call_position(d.item_id.as_deref(), d.output_index, None) {
                    Some(k) if self.calls[k].announced => {
                        if !self.calls[k].args_sent {
                            self.arguments(k, &full, out);
                        }
                    }
                    Some(k) => self.calls[k].pending = Some(full.into_owned()),
                    None => self.calls.push(Call {
                        key: Self::call_key(d.item_id.as_deref(), d.output_index),
                        call_id: None,
                        announced: false,
                        args_sent: false,
                        custom: kind.contains("custom"),
                        pending: Some(full.into_owned()),
                    }),
                }
            }
            _ => {}
        }
    }

    fn on_terminal(&mut self, kind: &str, data: &[u8], out: &mut Vec<u8>) {
        self.done = true;
        if kind == "response.failed" || kind == "error" {
            self.flush_think(out);
            let f = failure_of(kind, data);
            write_error_event(out, Dialect::Chat, &f.code, &f.message);
            return;
        }
        let terminal = serde_json::from_slice::<Envelope<Response<Value>>>(data)
            .ok()
            .and_then(|t| t.response);
        let mut usage = None;
        let mut incomplete = None;
        if let Some(r) = terminal {
            if self.id.is_none() {
                self.id = r.id.as_deref().map(str::to_owned);
            }
            if self.created.is_none() {
                self.created = r.created_at.map(|t| t as i64);
            }
            // Items only in the terminal output (or never completed in the stream).
            for (n, item) in r.output().iter().enumerate() {
                self.on_item(item, Some(n as u64), true, out);
            }
            usage = r.usage.as_ref().and_then(chat_usage);
            incomplete = r
                .incomplete_details
                .and_then(|d| d.reason.map(Cow::into_owned));
        }
        // Calls whose name never arrived cannot be announced; pending arguments of announced
        // calls go out now.
        for k in 0..self.calls.len() {
            if self.calls[k].announced && !self.calls[k].args_sent {
                if let Some(p) = self.calls[k].pending.take() {
                    self.arguments(k, &p, out);
                }
            }
        }
        self.flush_think(out);
        let any_call = self.calls.iter().any(|c| c.announced);
        let reason = finish_reason(
            (kind == "response.incomplete").then_some(incomplete.as_deref()),
            any_call,
            self.refusal,
        );
        self.open(out);
        // `open` wrote `{` plus possibly the role; an empty completion's only chunk still
        // gets `content:""` so clients that read content find a string.
        if out.ends_with(b",") {
            out.extend_from_slice(b"\"content\":\"\"");
        }
        out.extend_from_slice(b"},\"finish_reason\":");
        write_json_str(out, reason);
        out.extend_from_slice(b"}]}\n\n");
        if self.ctx.include_usage {
            let id = completion_id(self.id.as_deref());
            let chunk = serde_json::json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": self.created.unwrap_or_else(now_secs),
                "model": self.ctx.model,
                "choices": [],
                "usage": usage.unwrap_or(Value::Null),
            });
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&serde_json::to_vec(&chunk).unwrap_or_default());
            out.extend_from_slice(b"\n\n");
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

impl StreamTranslator for ChatStream {
    fn event(&mut self, event_type: &str, data: &[u8], out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match event_type {
            "response.created" | "response.in_progress" => self.on_created(data),
            "response.output_item.added" | "response.output_item.done" => {
                if let Ok(ItemEvent {
                    output_index,
                    item: Some(item),
                }) = serde_json::from_slice::<ItemEvent>(data)
                {
                    let complete = event_type.ends_with("done");
                    self.on_item(&item, output_index, complete, out);
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" | "error" => {
                self.on_terminal(event_type, data, out)
            }
            _ => self.on_delta(event_type, data, out),
        }
    }

    fn finish(&mut self, end: StreamEnd, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.done = true;
        let (cause, message) = match end {
            StreamEnd::Failed { cause, message } => (cause, message),
            // A clean close that this translator never saw a terminal event for is still a
            // truncation from the client's point of view.
            StreamEnd::Clean => (
                Interruption::Truncated,
                "The upstream stream ended before the response was complete.".to_owned(),
            ),
        };
        self.flush_think(out);
        write_error_event(out, Dialect::Chat, cause.code(), &message);
    }
}
