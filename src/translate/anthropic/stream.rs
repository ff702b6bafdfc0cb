//! Responses stream → Anthropic Messages stream.
//!
//! [`MessagesStream`] is fed one upstream event at a time and appends whole client SSE events
//! (`event: <name>\ndata: <json>\n\n`) to the output buffer.
//!
//! Output: one `message_start` (then a `ping`), content blocks with dense indices, then
//! `message_delta` (stop reason and usage) and `message_stop` on `response.completed` or
//! `response.incomplete`. A failure (`response.failed`, `error`, or [`StreamEnd::Failed`], or
//! a stream that ends without a terminal event) ends with one `event: error` and never with
//! `message_stop`.
//!
//! Upstream items become client blocks in the order the items appear:
//!
//! - a `reasoning` item → one `thinking` block (summary parts joined by `"\n\n"`) closed by one
//!   `signature_delta` carrying the item's `encrypted_content` when the item is done; without
//!   a summary it is a signature-only block. Only when the client asked for thinking.
//! - a `message` item → one `text` block (text from deltas, or from `output_text.done` /
//!   `output_item.done` when no delta carried it; refusal text too). With think-tag handling
//!   on, `<think>` sections become `thinking` blocks (or vanish, per the model's mode).
//! - a `function_call` item → one `tool_use` block (`id` = `call_id`, the original tool name),
//!   an empty `input_json_delta`, then the argument deltas keyed by `item_id`, and the missing
//!   tail of the arguments from `.done` / `output_item.done`.
//!
//! Anthropic blocks cannot interleave, so only the earliest unfinished item streams live;
//! events of later items are buffered until every item before them is done (with the usual
//! strictly sequential upstream this buffers nothing). Calls that appear only in the terminal
//! `response.output` are emitted at the end.
//!
//! Cost: each event is deserialized into a borrowed struct (no `serde_json::Value`, except for
//! the terminal response object) and output JSON is written by hand.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};

use super::{stop_reason, Usage};
use crate::translate::codec::write_json_str as write_str;
use crate::translate::events::{Event, Item, PartAdded, Response, UpstreamUsage};
use crate::translate::think::{ThinkFilter, ThinkMode, ThinkPiece};
use crate::translate::tool_names::ToolNameMap;
use crate::translate::{
    write_error_event, Dialect, Interruption, ResponseContext, StreamEnd, StreamTranslator,
};

/// The error message when the upstream stream stops without a terminal event.
const TRUNCATED: &str = "The upstream stream ended before the response was complete.";

/// Appends an unsigned integer in decimal (no formatting machinery on the hot path).
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        // `n % 10` is below 10: the cast cannot truncate.
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

impl UpstreamUsage {
    pub(crate) fn to_anthropic(&self) -> Usage {
        let cached = self
            .input_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0);
        Usage::from_upstream(
            self.input_tokens.unwrap_or(0),
            cached,
            self.output_tokens.unwrap_or(0),
        )
    }
}

// === client block writer ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    Thinking,
    Tool,
}

/// Writes client content blocks: keeps the open block, the next dense index, and what the
/// stop reason needs to know.
#[derive(Debug)]
struct Blocks {
    /// `message_start` is written. It waits for the first block (or the end of the message):
    /// until then the stream has no client bytes, so a failure can still become an HTTP error.
    started: bool,
    /// The message id (`response.id` once known).
    id: Option<String>,
    /// The model name echoed to the client.
    model: String,
    open: Open,
    /// Index of the open block, or of the next block when none is open.
    index: u64,
    saw_tool_use: bool,
    saw_refusal: bool,
}

impl Blocks {
    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        out.extend_from_slice(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":",
        );
        write_str(out, self.id.as_deref().unwrap_or("msg_codex_proxy"));
        out.extend_from_slice(
            b",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":",
        );
        write_str(out, &self.model);
        out.extend_from_slice(b",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\n");
        out.extend_from_slice(PING);
    }

    fn start(&mut self, kind: Open, out: &mut Vec<u8>) {
        self.stop(out);
        self.ensure_started(out);
        out.extend_from_slice(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
        );
        write_u64(out, self.index);
        out.extend_from_slice(match kind {
            Open::Thinking => {
                b",\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n"
                    as &[u8]
            }
            _ => b",\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        });
        self.open = kind;
    }

    fn delta_head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        write_u64(out, self.index);
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        self.block_text(
            Open::Text,
            b",\"delta\":{\"type\":\"text_delta\",\"text\":",
            text,
            out,
        );
    }

    fn thinking(&mut self, text: &str, out: &mut Vec<u8>) {
        self.block_text(
            Open::Thinking,
            b",\"delta\":{\"type\":\"thinking_delta\",\"thinking\":",
            text,
            out,
        );
    }

    /// A text-like delta (`delta_head` is the delta object up to its string value) in a block
    /// of kind `block`, opening that block first if another one is open.
    fn block_text(&mut self, block: Open, delta_head: &[u8], text: &str, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        if self.open != block {
            self.start(block, out);
        }
        self.delta_head(out);
        out.extend_from_slice(delta_head);
        write_str(out, text);
        out.extend_from_slice(b"}}\n\n");
    }

    fn signature(&mut self, signature: &str, out: &mut Vec<u8>) {
        if self.open != Open::Thinking {
            self.start(Open::Thinking, out);
        }
        self.delta_head(out);
        out.extend_from_slice(b",\"delta\":{\"type\":\"signature_delta\",\"signature\":");
        write_str(out, signature);
        out.extend_from_slice(b"}}\n\n");
    }

    fn tool_start(&mut self, id: &str, name: &str, out: &mut Vec<u8>) {
        self.stop(out);
        self.ensure_started(out);
        out.extend_from_slice(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
        );
        write_u64(out, self.index);
        out.extend_from_slice(b",\"content_block\":{\"type\":\"tool_use\",\"id\":");
        write_str(out, id);
        out.extend_from_slice(b",\"name\":");
        write_str(out, name);
        out.extend_from_slice(b",\"input\":{}}}\n\n");
        self.open = Open::Tool;
        self.saw_tool_use = true;
        // Clients expect the first delta to be an empty input_json_delta.
        self.args_delta("", out);
    }

    fn tool_args(&mut self, args: &str, out: &mut Vec<u8>) {
        if self.open == Open::Tool && !args.is_empty() {
            self.args_delta(args, out);
        }
    }

    fn args_delta(&self, args: &str, out: &mut Vec<u8>) {
        self.delta_head(out);
        out.extend_from_slice(b",\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":");
        write_str(out, args);
        out.extend_from_slice(b"}}\n\n");
    }

    fn stop(&mut self, out: &mut Vec<u8>) {
        if self.open == Open::None {
            return;
        }
        out.extend_from_slice(
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":",
        );
        write_u64(out, self.index);
        out.extend_from_slice(b"}\n\n");
        self.open = Open::None;
        self.index += 1;
    }

    fn apply(&mut self, op: &Op, out: &mut Vec<u8>) {
        match op {
            Op::Text(t) => self.text(t, out),
            Op::Thinking(t) => self.thinking(t, out),
            Op::Signature(s) => self.signature(s, out),
            Op::ToolStart { id, name } => self.tool_start(id, name, out),
            Op::ToolArgs(a) => self.tool_args(a, out),
            Op::Close => self.stop(out),
        }
    }
}

/// A client-block operation of an item that is not live yet.
#[derive(Debug)]
enum Op {
    Text(String),
    Thinking(String),
    Signature(String),
    ToolStart { id: String, name: String },
    ToolArgs(String),
    Close,
}

// === per-item state ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Reasoning,
    Call,
}

/// Part namespaces inside an item (the same index can occur in each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartNs {
    OutputText,
    Refusal,
    Summary,
    ReasoningText,
}

/// One upstream output item.
struct Slot {
    /// The item id, or `#<output_index>` when the upstream gave none.
    key: String,
    kind: Kind,
    /// Every op of the item is queued or written, `Close` included.
    done: bool,
    /// Ops waiting for the item to become live.
    pending: Vec<Op>,
    /// Upstream bytes already taken from each part: `.done` events only add the missing tail.
    parts: Vec<(PartNs, u64, usize)>,
    /// The part the last reasoning text came from: a new part gets a `"\n\n"` separator.
    last_part: Option<(PartNs, u64)>,
    /// Think-tag filter of a message item (`None` when the model's mode is off).
    filter: Option<ThinkFilter>,
    /// Reasoning: `encrypted_content` seen at `output_item.added`.
    signature: Option<String>,
    /// Call: announced to the client (its `ToolStart` op exists).
    started: bool,
    /// Call: argument bytes that arrived before the call was announced.
    early_args: String,
    /// Call: argument bytes taken from deltas so far.
    args_len: usize,
}

impl Slot {
    fn new(key: String, kind: Kind, think: ThinkMode) -> Slot {
        Slot {
            key,
            kind,
            done: false,
            pending: Vec::new(),
            parts: Vec::new(),
            last_part: None,
            filter: (kind == Kind::Message && think != ThinkMode::Off)
                .then(|| ThinkFilter::new(think)),
            signature: None,
            started: false,
            early_args: String::new(),
            args_len: 0,
        }
    }

    fn part_len(&self, ns: PartNs, index: u64) -> usize {
        self.parts
            .iter()
            .find(|(n, i, _)| *n == ns && *i == index)
            .map_or(0, |p| p.2)
    }

    fn add_part_len(&mut self, ns: PartNs, index: u64, len: usize) {
        match self
            .parts
            .iter_mut()
            .find(|(n, i, _)| *n == ns && *i == index)
        {
            Some(p) => p.2 += len,
            None => self.parts.push((ns, index, len)),
        }
    }
}

// === the translator ===

/// The Anthropic stream state machine; see the module docs. Build it with
/// [`MessagesStream::new`] and drive it through [`StreamTranslator`].
pub struct MessagesStream {
    tool_names: ToolNameMap,
    /// Upstream → client call ids, for ids the request mapper had to sanitise.
    call_id_map: Vec<(String, String)>,
    /// The client asked for thinking blocks.
    thinking: bool,
    think: ThinkMode,
    /// `message_stop` or `event: error` is written: nothing follows.
    ended: bool,
    blocks: Blocks,
    /// Unfinished items in order of appearance; the front one streams live.
    slots: VecDeque<Slot>,
    /// Keys of finished items: late events for them are ignored.
    finished: HashSet<String>,
    /// Call ids already emitted (terminal-output hydration must not repeat them).
    call_ids: HashSet<String>,
}

impl MessagesStream {
    /// A translator for one response, from the context the request mapper produced;
    /// `thinking`: the client asked for thinking blocks ([`super::AnthropicParts::thinking`]).
    pub fn new(ctx: &ResponseContext, thinking: bool) -> MessagesStream {
        MessagesStream {
            tool_names: ctx.tool_names.clone(),
            call_id_map: ctx.call_ids.clone(),
            thinking,
            think: ctx.think,
            ended: false,
            blocks: Blocks {
                started: false,
                id: None,
                model: ctx.model.clone(),
                open: Open::None,
                index: 0,
                saw_tool_use: false,
                saw_refusal: false,
            },
            slots: VecDeque::new(),
            finished: HashSet::new(),
            call_ids: HashSet::new(),
        }
    }

    /// Position of the item's slot, creating it when the item is new; `None` for items that
    /// are finished (late events) or that the client does not see.
    fn slot(&mut self, key: &str, kind: Kind) -> Option<usize> {
        if let Some(pos) = self.slots.iter().position(|s| s.key == key) {
            // A finished item waiting behind a live one takes no more events.
            return (!self.slots.get(pos).is_some_and(|s| s.done)).then_some(pos);
        }
        if self.finished.contains(key) || (kind == Kind::Reasoning && !self.thinking) {
            return None;
        }
        self.slots
            .push_back(Slot::new(key.to_owned(), kind, self.think));
        Some(self.slots.len() - 1)
    }

    /// Queues or writes one op of the item at `pos`.
    fn op(&mut self, pos: usize, op: OpRef<'_>, out: &mut Vec<u8>) {
        if pos == 0 {
            match op {
                OpRef::Text(t) => self.blocks.text(t, out),
                OpRef::Thinking(t) => self.blocks.thinking(t, out),
                OpRef::Signature(s) => self.blocks.signature(s, out),
                OpRef::ToolStart { id, name } => self.blocks.tool_start(id, name, out),
                OpRef::ToolArgs(a) => self.blocks.tool_args(a, out),
                OpRef::Close => self.blocks.stop(out),
            }
        } else if let Some(slot) = self.slots.get_mut(pos) {
            slot.pending.push(match op {
                OpRef::Text(t) => Op::Text(t.to_owned()),
                OpRef::Thinking(t) => Op::Thinking(t.to_owned()),
                OpRef::Signature(s) => Op::Signature(s.to_owned()),
                OpRef::ToolStart { id, name } => Op::ToolStart {
                    id: id.to_owned(),
                    name: name.to_owned(),
                },
                OpRef::ToolArgs(a) => Op::ToolArgs(a.to_owned()),
                OpRef::Close => Op::Close,
            });
        }
    }

    /// Message text: through the think-tag filter when the model has one.
    fn message_text(&mut self, pos: usize, ns: PartNs, index: u64, text: &str, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        let Some(slot) = self.slots.get_mut(pos) else {
            return;
        };
        slot.add_part_len(ns, index, text.len());
        if ns == PartNs::Refusal {
            self.blocks.saw_refusal = true;
        }
        match slot.filter.take() {
            None => self.op(pos, OpRef::Text(text), out),
            Some(mut filter) => {
                let thinking = self.thinking;
                let (blocks, slots) = (&mut self.blocks, &mut self.slots);
                filter.push(text, |piece| {
                    route_piece(piece, pos, thinking, blocks, slots, out)
                });
                if let Some(slot) = self.slots.get_mut(pos) {
                    slot.filter = Some(filter);
                }
            }
        }
    }

    /// Reasoning text of one part, with the `"\n\n"` separator between parts.
    fn reasoning_text(
        &mut self,
        pos: usize,
        ns: PartNs,
        index: u64,
        text: &str,
        out: &mut Vec<u8>,
    ) {
        if text.is_empty() {
            return;
        }
        let Some(slot) = self.slots.get_mut(pos) else {
            return;
        };
        let separator = matches!(slot.last_part, Some(last) if last != (ns, index));
        slot.last_part = Some((ns, index));
        slot.add_part_len(ns, index, text.len());
        if separator {
            self.op(pos, OpRef::Thinking("\n\n"), out);
        }
        self.op(pos, OpRef::Thinking(text), out);
    }

    /// The tail of a part's full text that deltas did not carry.
    fn tail<'t>(&self, pos: usize, ns: PartNs, index: u64, full: &'t str) -> &'t str {
        let seen = self.slots.get(pos).map_or(0, |s| s.part_len(ns, index));
        full.get(seen..).unwrap_or("")
    }

    /// Ends an item: flushes the filter, closes its block, and advances the live item.
    fn close_slot(&mut self, pos: usize, out: &mut Vec<u8>) {
        let Some(slot) = self.slots.get_mut(pos) else {
            return;
        };
        if let Some(mut filter) = slot.filter.take() {
            let thinking = self.thinking;
            let (blocks, slots) = (&mut self.blocks, &mut self.slots);
            filter.finish(|piece| route_piece(piece, pos, thinking, blocks, slots, out));
        }
        self.op(pos, OpRef::Close, out);
        if let Some(slot) = self.slots.get_mut(pos) {
            slot.done = true;
        }
        self.advance(out);
    }

    /// Retires finished items at the front; the next item goes live and its queue is written.
    fn advance(&mut self, out: &mut Vec<u8>) {
        while self.slots.front().is_some_and(|s| s.done) {
            if let Some(slot) = self.slots.pop_front() {
                self.finished.insert(slot.key);
            }
            if let Some(next) = self.slots.front_mut() {
                let pending = std::mem::take(&mut next.pending);
                for op in &pending {
                    self.blocks.apply(op, out);
                }
            }
        }
    }

    fn key_of(item_id: Option<&str>, output_index: Option<u64>) -> Option<Cow<'_, str>> {
        match (item_id, output_index) {
            (Some(id), _) if !id.is_empty() => Some(Cow::Borrowed(id)),
            (_, Some(i)) => Some(Cow::Owned(format!("#{i}"))),
            _ => None,
        }
    }

    // --- events ---

    fn on_item_added(&mut self, ev: &Event<'_>, out: &mut Vec<u8>) {
        let Some(item) = &ev.item else { return };
        let Some(key) = Self::key_of(item.id.as_deref(), ev.output_index) else {
            return;
        };
        match item.kind.as_deref() {
            Some("message") => {
                self.slot(&key, Kind::Message);
            }
            Some("reasoning") => {
                if let Some(pos) = self.slot(&key, Kind::Reasoning) {
                    if let (Some(slot), Some(sig)) =
                        (self.slots.get_mut(pos), item.encrypted_content.as_deref())
                    {
                        slot.signature = Some(sig.to_owned());
                    }
                }
            }
            Some("function_call") => {
                if let Some(pos) = self.slot(&key, Kind::Call) {
                    self.announce_call(pos, item, out);
                }
            }
            _ => {}
        }
    }

    /// Opens the call's `tool_use` block (once), followed by arguments that arrived early.
    fn announce_call(&mut self, pos: usize, item: &Item<'_>, out: &mut Vec<u8>) {
        let Some(slot) = self.slots.get_mut(pos) else {
            return;
        };
        if slot.started {
            return;
        }
        slot.started = true;
        let early = std::mem::take(&mut slot.early_args);
        let call_id = match item.call_id.as_deref().or(item.id.as_deref()) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => format!("call_{}", slot.key.trim_start_matches('#')),
        };
        self.call_ids.insert(call_id.clone());
        let call_id = self
            .call_id_map
            .iter()
            .find(|(upstream, _)| *upstream == call_id)
            .map_or(call_id, |(_, client)| client.clone());
        let name = self
            .tool_names
            .original(item.name.as_deref().unwrap_or(""))
            .to_owned();
        self.op(
            pos,
            OpRef::ToolStart {
                id: &call_id,
                name: &name,
            },
            out,
        );
        self.op(pos, OpRef::ToolArgs(&early), out);
    }

    fn on_args_delta(&mut self, ev: &Event<'_>, out: &mut Vec<u8>) {
        let Some(key) = Self::key_of(ev.item_id.as_deref(), ev.output_index) else {
            return;
        };
        let delta = ev.delta.as_deref().unwrap_or("");
        let Some(pos) = self.slot(&key, Kind::Call) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(pos) else {
            return;
        };
        if slot.kind != Kind::Call {
            return;
        }
        slot.args_len += delta.len();
        if slot.started {
            self.op(pos, OpRef::ToolArgs(delta), out);
        } else {
            slot.early_args.push_str(delta);
        }
    }

    /// `function_call_arguments.done` and `output_item.done` of a call: announce it if needed,
    /// add the argument tail no delta carried, close it.
    fn finish_call(
        &mut self,
        pos: usize,
        item: &Item<'_>,
        full_args: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        let started = self.slots.get(pos).is_some_and(|s| s.started);
        if !started {
            if item.call_id.is_none() && item.name.is_none() {
                // `.done` of a call never announced: wait for `output_item.done`, which
                // names it.
                return;
            }
            self.announce_call(pos, item, out);
        }
        if let (Some(full), Some(slot)) = (full_args, self.slots.get_mut(pos)) {
            let tail = full.get(slot.args_len..).unwrap_or("");
            slot.args_len = full.len().max(slot.args_len);
            self.op(pos, OpRef::ToolArgs(tail), out);
        }
        self.close_slot(pos, out);
    }

    fn on_item_done(&mut self, ev: &Event<'_>, out: &mut Vec<u8>) {
        let Some(item) = &ev.item else { return };
        let Some(key) = Self::key_of(item.id.as_deref(), ev.output_index) else {
            return;
        };
        match item.kind.as_deref() {
            Some("message") => {
                if let Some(pos) = self.slot(&key, Kind::Message) {
                    self.finish_message(pos, item, out);
                }
            }
            Some("reasoning") => {
                if let Some(pos) = self.slot(&key, Kind::Reasoning) {
                    self.finish_reasoning(pos, item, out);
                }
            }
            Some("function_call") => {
                if let Some(pos) = self.slot(&key, Kind::Call) {
                    self.finish_call(pos, item, item.arguments.as_deref(), out);
                }
            }
            _ => {}
        }
    }

    fn finish_message(&mut self, pos: usize, item: &Item<'_>, out: &mut Vec<u8>) {
        for (index, part) in (0u64..).zip(item.content.iter().flatten()) {
            let (ns, full) = match part.kind.as_deref() {
                Some("output_text") => (PartNs::OutputText, part.text.as_deref()),
                Some("refusal") => (PartNs::Refusal, part.refusal.as_deref()),
                _ => continue,
            };
            if let Some(full) = full {
                let tail = self.tail(pos, ns, index, full).to_owned();
                self.message_text(pos, ns, index, &tail, out);
            }
        }
        self.close_slot(pos, out);
    }

    fn finish_reasoning(&mut self, pos: usize, item: &Item<'_>, out: &mut Vec<u8>) {
        for (index, part) in (0u64..).zip(item.summary.iter().flatten()) {
            if let Some(full) = part.text.as_deref() {
                let tail = self.tail(pos, PartNs::Summary, index, full).to_owned();
                self.reasoning_text(pos, PartNs::Summary, index, &tail, out);
            }
        }
        for (index, part) in (0u64..).zip(item.content.iter().flatten()) {
            if let Some(full) = part.text.as_deref() {
                let tail = self
                    .tail(pos, PartNs::ReasoningText, index, full)
                    .to_owned();
                self.reasoning_text(pos, PartNs::ReasoningText, index, &tail, out);
            }
        }
        let signature = item
            .encrypted_content
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| self.slots.get(pos).and_then(|s| s.signature.clone()));
        if let Some(sig) = signature.filter(|s| !s.is_empty()) {
            self.op(pos, OpRef::Signature(&sig), out);
        }
        self.close_slot(pos, out);
    }

    fn on_text(&mut self, ev: &Event<'_>, ns: PartNs, delta: bool, out: &mut Vec<u8>) {
        let Some(key) = Self::key_of(ev.item_id.as_deref(), ev.output_index) else {
            return;
        };
        let Some(pos) = self.slot(&key, Kind::Message) else {
            return;
        };
        if self.slots.get(pos).map(|s| s.kind) != Some(Kind::Message) {
            return;
        }
        let index = ev.content_index.unwrap_or(0);
        if delta {
            let text = ev.delta.as_deref().unwrap_or("");
            self.message_text(pos, ns, index, text, out);
        } else {
            let full = match ns {
                PartNs::Refusal => ev.refusal.as_deref(),
                _ => ev.text.as_deref(),
            };
            if let Some(full) = full {
                let tail = self.tail(pos, ns, index, full).to_owned();
                self.message_text(pos, ns, index, &tail, out);
            }
        }
    }

    fn on_reasoning(&mut self, ev: &Event<'_>, ns: PartNs, delta: bool, out: &mut Vec<u8>) {
        let Some(key) = Self::key_of(ev.item_id.as_deref(), ev.output_index) else {
            return;
        };
        let Some(pos) = self.slot(&key, Kind::Reasoning) else {
            return;
        };
        if self.slots.get(pos).map(|s| s.kind) != Some(Kind::Reasoning) {
            return;
        }
        let index = match ns {
            PartNs::Summary => ev.summary_index,
            _ => ev.content_index,
        }
        .unwrap_or(0);
        if delta {
            let text = ev.delta.as_deref().unwrap_or("");
            self.reasoning_text(pos, ns, index, text, out);
        } else if let Some(full) = ev.text.as_deref() {
            let tail = self.tail(pos, ns, index, full).to_owned();
            self.reasoning_text(pos, ns, index, &tail, out);
        }
    }

    /// `response.completed` / `response.incomplete` (`incomplete` says which).
    fn on_done(&mut self, response: Option<&Response<'_>>, incomplete: bool, out: &mut Vec<u8>) {
        if let Some(output) = response.and_then(|r| r.output.as_ref()) {
            self.hydrate(output, out);
        }
        // Items that never got their `output_item.done` end here, in order.
        while let Some(front) = self.slots.front() {
            if front.kind == Kind::Reasoning {
                if let Some(sig) = front.signature.clone() {
                    self.op(0, OpRef::Signature(&sig), out);
                }
            }
            self.close_slot(0, out);
        }
        self.blocks.stop(out);
        self.blocks.ensure_started(out);

        let incomplete_reason = incomplete.then(|| {
            response
                .and_then(|r| r.incomplete_details.as_ref())
                .and_then(|d| d.reason.as_deref())
                .unwrap_or("")
        });
        let reason = stop_reason(
            incomplete_reason,
            self.blocks.saw_refusal,
            self.blocks.saw_tool_use,
        );
        let usage = response
            .and_then(|r| r.usage.as_ref())
            .map(UpstreamUsage::to_anthropic)
            .unwrap_or_default();
        out.extend_from_slice(
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":",
        );
        write_str(out, reason);
        out.extend_from_slice(b",\"stop_sequence\":null},\"usage\":{\"input_tokens\":");
        write_u64(out, usage.input);
        out.extend_from_slice(b",\"cache_read_input_tokens\":");
        write_u64(out, usage.cache_read);
        out.extend_from_slice(b",\"output_tokens\":");
        write_u64(out, usage.output);
        out.extend_from_slice(b"}}\n\n");
        out.extend_from_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        self.ended = true;
    }

    /// The terminal `response.output`: items never streamed are emitted now, and items left
    /// unfinished get their missing tail from it (deltas already sent are not repeated).
    fn hydrate(&mut self, output: &[Item<'_>], out: &mut Vec<u8>) {
        for (index, item) in (0u64..).zip(output) {
            let Some(key) = Self::key_of(item.id.as_deref(), Some(index)) else {
                continue;
            };
            let known = self.slots.iter().any(|s| s.key == key);
            if item.id.is_none() && !known {
                // Without an id an item cannot be told apart from one already streamed under
                // its real id; only calls can, by their call id.
                let is_new_call = item.kind.as_deref() == Some("function_call")
                    && item
                        .call_id
                        .as_deref()
                        .is_some_and(|c| !self.call_ids.contains(c));
                if !is_new_call {
                    continue;
                }
            }
            match item.kind.as_deref() {
                Some("function_call") => {
                    let seen = item
                        .call_id
                        .as_deref()
                        .is_some_and(|c| self.call_ids.contains(c));
                    if seen && !known {
                        continue;
                    }
                    if let Some(pos) = self.slot(&key, Kind::Call) {
                        self.finish_call(pos, item, item.arguments.as_deref(), out);
                    }
                }
                Some("message") => {
                    if let Some(pos) = self.slot(&key, Kind::Message) {
                        self.finish_message(pos, item, out);
                    }
                }
                Some("reasoning") => {
                    if let Some(pos) = self.slot(&key, Kind::Reasoning) {
                        self.finish_reasoning(pos, item, out);
                    }
                }
                _ => {}
            }
        }
    }

    /// Ends the stream with one `event: error` (the type follows the upstream code). No block
    /// is closed and no `message_delta` is sent: Anthropic ends a failed stream with the error
    /// event alone, and clients retry on it.
    fn fail(&mut self, code: &str, message: &str, out: &mut Vec<u8>) {
        write_error_event(out, Dialect::Anthropic, code, message);
        self.ended = true;
    }
}

/// A borrowed [`Op`], written at once when the item is live.
enum OpRef<'a> {
    Text(&'a str),
    Thinking(&'a str),
    Signature(&'a str),
    ToolStart { id: &'a str, name: &'a str },
    ToolArgs(&'a str),
    Close,
}

/// A piece out of the think-tag filter: text, or thinking when the client asked for it.
fn route_piece(
    piece: ThinkPiece<'_>,
    pos: usize,
    thinking: bool,
    blocks: &mut Blocks,
    slots: &mut VecDeque<Slot>,
    out: &mut Vec<u8>,
) {
    let op = match piece {
        ThinkPiece::Text(t) => Op::Text(t.to_owned()),
        ThinkPiece::Reasoning(t) if thinking => Op::Thinking(t.to_owned()),
        ThinkPiece::Reasoning(_) => return,
    };
    if pos == 0 {
        blocks.apply(&op, out);
    } else if let Some(slot) = slots.get_mut(pos) {
        slot.pending.push(op);
    }
}

const PING: &[u8] = b"event: ping\ndata: {\"type\":\"ping\"}\n\n";

/// One `ping` event, for keep-alives while the upstream is silent (after commit only).
pub fn ping_event() -> &'static [u8] {
    PING
}

impl StreamTranslator for MessagesStream {
    fn event(&mut self, event_type: &str, data: &[u8], out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let Ok(ev) = serde_json::from_slice::<Event<'_>>(data) else {
            // Unreadable upstream JSON: nothing trustworthy to translate, except that a
            // terminal event still ends the message as its type says (the pipeline counts it
            // as terminal too, so the non-stream answer agrees).
            match event_type {
                "response.completed" => self.on_done(None, false, out),
                "response.incomplete" => self.on_done(None, true, out),
                "response.failed" | "error" => {
                    self.fail("upstream_error", "the upstream response failed", out);
                }
                _ => {}
            }
            return;
        };
        if self.blocks.id.is_none() {
            if let Some(id) = ev.response.as_ref().and_then(|r| r.id.as_deref()) {
                self.blocks.id = Some(id.to_owned());
            }
        }
        match event_type {
            // The id is taken above; `message_start` waits for the first block.
            "response.created" | "response.in_progress" => {}
            "response.output_item.added" => {
                self.on_item_added(&ev, out);
            }
            "response.output_item.done" => {
                self.on_item_done(&ev, out);
            }
            "response.output_text.delta" => {
                self.on_text(&ev, PartNs::OutputText, true, out);
            }
            "response.output_text.done" => self.on_text(&ev, PartNs::OutputText, false, out),
            "response.refusal.delta" => {
                self.on_text(&ev, PartNs::Refusal, true, out);
            }
            "response.refusal.done" => self.on_text(&ev, PartNs::Refusal, false, out),
            "response.content_part.added" => {
                // A refusal part marks the stop reason even if it never carries text.
                let refusal = serde_json::from_slice::<PartAdded<'_>>(data)
                    .ok()
                    .and_then(|p| p.part)
                    .and_then(|p| p.kind)
                    .is_some_and(|k| k == "refusal");
                if refusal {
                    self.blocks.saw_refusal = true;
                }
            }
            "response.reasoning_summary_text.delta" => {
                self.on_reasoning(&ev, PartNs::Summary, true, out);
            }
            "response.reasoning_summary_text.done" => {
                self.on_reasoning(&ev, PartNs::Summary, false, out);
            }
            "response.reasoning_text.delta" => {
                self.on_reasoning(&ev, PartNs::ReasoningText, true, out);
            }
            "response.reasoning_text.done" => {
                self.on_reasoning(&ev, PartNs::ReasoningText, false, out);
            }
            "response.function_call_arguments.delta" => {
                self.on_args_delta(&ev, out);
            }
            "response.function_call_arguments.done" => {
                let key = Self::key_of(ev.item_id.as_deref(), ev.output_index);
                if let Some(pos) = key.and_then(|k| self.slot(&k, Kind::Call)) {
                    if self.slots.get(pos).is_some_and(|s| s.kind == Kind::Call) {
                        let item = Item::default();
                        self.finish_call(pos, &item, ev.arguments.as_deref(), out);
                    }
                }
            }
            "response.completed" => self.on_done(ev.response.as_ref(), false, out),
            "response.incomplete" => self.on_done(ev.response.as_ref(), true, out),
            "response.failed" => {
                let err = ev.response.as_ref().and_then(|r| r.error.as_ref());
                let code = err.and_then(|e| e.code.as_deref().or(e.kind.as_deref()));
                let message = err
                    .and_then(|e| e.message.as_deref())
                    .unwrap_or("the upstream response failed");
                self.fail(code.unwrap_or("upstream_error"), message, out);
            }
            "error" => {
                let nested = ev.error.as_ref();
                let code = ev
                    .code
                    .as_deref()
                    .or(nested.and_then(|e| e.code.as_deref().or(e.kind.as_deref())));
                let message = ev
                    .message
                    .as_deref()
                    .or(nested.and_then(|e| e.message.as_deref()))
                    .unwrap_or("upstream error");
                self.fail(code.unwrap_or("upstream_error"), message, out);
            }
            _ => {}
        }
    }

    fn finish(&mut self, end: StreamEnd, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match end {
            // The translator saw no terminal event, so a "clean" close is still a truncation.
            StreamEnd::Clean => self.fail(Interruption::Truncated.code(), TRUNCATED, out),
            // The code picks the error type: `timeout_error` for the timeouts, else `api_error`.
            StreamEnd::Failed { cause, message } => self.fail(cause.code(), &message, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(thinking: bool) -> MessagesStream {
        let ctx = ResponseContext::new(
            Dialect::Anthropic,
            "claude-x",
            super::super::parts(thinking),
        );
        MessagesStream::new(&ctx, thinking)
    }

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn nothing_is_written_before_the_first_block() {
        let mut t = stream(false);
        let mut out = Vec::new();
        t.event(
            "response.created",
            br#"{"response":{"id":"resp_1"}}"#,
            &mut out,
        );
        t.event(
            "response.in_progress",
            br#"{"response":{"id":"resp_1"}}"#,
            &mut out,
        );
        t.event(
            "response.output_item.added",
            br#"{"output_index":0,"item":{"id":"rs_1","type":"reasoning"}}"#,
            &mut out,
        );
        t.event("codex.rate_limits", br#"{"x":1}"#, &mut out);
        assert!(out.is_empty(), "{}", text(&out));
        t.event(
            "response.failed",
            br#"{"response":{"error":{"code":"server_is_overloaded","message":"busy"}}}"#,
            &mut out,
        );
        assert_eq!(
            text(&out),
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n"
        );
    }

    #[test]
    fn a_clean_close_without_a_terminal_event_is_an_error() {
        let mut t = stream(false);
        let mut out = Vec::new();
        t.event(
            "response.output_text.delta",
            br#"{"item_id":"m","delta":"hi"}"#,
            &mut out,
        );
        t.finish(StreamEnd::Clean, &mut out);
        let s = text(&out);
        assert!(s.contains("\"text_delta\",\"text\":\"hi\""), "{s}");
        assert!(s.ends_with("\"type\":\"api_error\",\"message\":\"The upstream stream ended before the response was complete.\"}}\n\n"), "{s}");
        assert!(!s.contains("message_stop"));
        assert!(!s.contains("message_delta"));
    }

    #[test]
    fn null_usage_fields_and_unreadable_terminals_still_complete() {
        let mut t = stream(false);
        let mut out = Vec::new();
        t.event(
            "response.completed",
            br#"{"response":{"id":"r","usage":{"input_tokens":null,"output_tokens":7,"input_tokens_details":null}}}"#,
            &mut out,
        );
        let s = text(&out);
        assert!(
            s.contains(
                "\"usage\":{\"input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":7}"
            ),
            "{s}"
        );
        assert!(s.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));

        let mut t = stream(false);
        let mut out = Vec::new();
        t.event("response.incomplete", b"{not json", &mut out);
        assert!(text(&out).contains("\"stop_reason\":\"max_tokens\""));
        assert!(text(&out).contains("message_stop"));
    }

    #[test]
    fn nothing_follows_the_end() {
        let mut t = stream(true);
        let mut out = Vec::new();
        t.event(
            "response.completed",
            br#"{"response":{"id":"r"}}"#,
            &mut out,
        );
        let len = out.len();
        t.event(
            "response.output_text.delta",
            br#"{"item_id":"m","delta":"late"}"#,
            &mut out,
        );
        t.finish(
            StreamEnd::Failed {
                cause: Interruption::UpstreamError,
                message: "transport".into(),
            },
            &mut out,
        );
        assert_eq!(out.len(), len, "an error after completion is ignored");
    }

    #[test]
    fn one_signature_per_reasoning_item_even_with_several_parts() {
        let mut t = stream(true);
        let mut out = Vec::new();
        for (kind, data) in [
            ("response.output_item.added", &br#"{"output_index":0,"item":{"id":"rs","type":"reasoning","encrypted_content":"gAAAAAold"}}"#[..]),
            ("response.reasoning_summary_text.delta", br#"{"item_id":"rs","summary_index":0,"delta":"a"}"#),
            ("response.reasoning_summary_text.done", br#"{"item_id":"rs","summary_index":0,"text":"a"}"#),
            ("response.reasoning_summary_text.done", br#"{"item_id":"rs","summary_index":1,"text":"b"}"#),
            ("response.output_item.done", br#"{"output_index":0,"item":{"id":"rs","type":"reasoning","summary":[{"type":"summary_text","text":"a"},{"type":"summary_text","text":"b"}]}}"#),
        ] {
            t.event(kind, data, &mut out);
        }
        let s = text(&out);
        assert_eq!(s.matches("signature_delta").count(), 1, "{s}");
        assert!(
            s.contains("\"signature\":\"gAAAAAold\""),
            "falls back to the added item"
        );
        assert_eq!(s.matches("\"thinking\":\"a\"").count(), 1, "{s}");
        assert_eq!(s.matches("\"thinking\":\"\\n\\n\"").count(), 1, "{s}");
        assert_eq!(s.matches("\"thinking\":\"b\"").count(), 1, "{s}");
        assert_eq!(s.matches("event: content_block_stop").count(), 1, "{s}");
    }
}
