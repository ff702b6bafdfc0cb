//! Incremental server-sent-events scanning for the provider wires: the Responses API and
//! Anthropic Messages (`docs/anthropic-wire.md`).
//!
//! [`SseScanner`] is fed upstream bytes exactly as they arrive, split anywhere (inside a UTF-8
//! character, inside `\r\n`, inside a `data:` line), and reports the class of every complete
//! event. The bytes themselves are not changed or kept: passthrough forwards them verbatim,
//! and the scanner only tells the streaming code where the commit point is and whether the
//! stream ended with a terminal event.
//!
//! Line endings may be `\n`, `\r\n` or `\r`; comments (`:` lines) are ignored; the event type
//! is the `event:` field, or else the `type` of the `data:` JSON.

use serde::Deserialize;

use super::codec::LineSplitter;

/// Data bytes collected per event for finding its `type` when there is no `event:` line.
/// A larger event without an `event:` line is classed as content.
const MAX_TYPE_SCAN_BYTES: usize = 1 << 20;
/// Bytes of one line kept while it is incomplete: enough for the type scan. The rest of a
/// longer line is passed over (the relay forwards it; the scanner only classifies), so a
/// single huge event costs the scanner no more than this.
const MAX_LINE_BYTES: usize = MAX_TYPE_SCAN_BYTES + 64;

/// What an event means for the commit point (`docs/retry.md`, "The commit point").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// Handshake only: `response.created`, `response.in_progress`, `codex.*` metadata.
    Bootstrap,
    /// Anything else that is not terminal: output items, deltas, reasoning.
    Content,
    /// The stream's last word: `response.completed`, `response.failed`, `response.incomplete`,
    /// `error` (or a `[DONE]` sentinel).
    Terminal,
}

impl EventClass {
    /// Classifies an event type of `wire`'s stream.
    pub fn of_wire(wire: super::Dialect, event_type: &str) -> EventClass {
        match wire {
            super::Dialect::Responses => Self::of_type(event_type),
            super::Dialect::Anthropic => Self::of_anthropic(event_type),
            // Chat chunks have no event types; only `[DONE]` (handled by the scanner) ends.
            super::Dialect::Chat => EventClass::Content,
        }
    }

    /// Classifies an Anthropic Messages event type: `message_start` and `ping` are bootstrap,
    /// `message_stop` and `error` terminal, the rest (content blocks, `message_delta`)
    /// content.
    pub fn of_anthropic(event_type: &str) -> EventClass {
        match event_type {
            "message_start" | "ping" => EventClass::Bootstrap,
            "message_stop" | "error" => EventClass::Terminal,
            _ => EventClass::Content,
        }
    }

    /// Classifies a Responses event type.
    pub fn of_type(event_type: &str) -> EventClass {
        match event_type {
            "response.created" | "response.in_progress" => EventClass::Bootstrap,
            t if t.starts_with("codex.") => EventClass::Bootstrap,
            "response.completed" | "response.failed" | "response.incomplete" | "error" => {
                EventClass::Terminal
            }
            _ => EventClass::Content,
        }
    }
}

/// Incremental SSE event scanner; see the module docs.
#[derive(Default)]
pub struct SseScanner {
    /// The wire the stream speaks.
    wire: WireKind,
    /// Anthropic: what `message_start` reported, until `message_delta` completes it.
    partial_usage: Option<super::usage::Reported>,
    /// The lines of the stream (the first [`MAX_LINE_BYTES`] bytes of each).
    lines: LineSplitter<MAX_LINE_BYTES>,
    /// Fields of the event being read.
    event_name: Option<String>,
    data: Vec<u8>,
    data_overflow: bool,
    has_fields: bool,
    /// The usage the last terminal event reported, until taken ([`SseScanner::take_usage`]).
    usage: Option<super::usage::Reported>,
    /// Chat: a chunk with a `finish_reason` was seen (a `[DONE]` before one ends nothing).
    chat_finished: bool,
}

/// What the commit point needs of a Chat Completions chunk (`docs/chat-wire.md`).
#[derive(Deserialize)]
struct ChatPeek<'a> {
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
    #[serde(default, borrow)]
    choices: Option<Vec<ChatChoicePeek<'a>>>,
    #[serde(default)]
    usage: Option<super::hub::chat::ChatUsage>,
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChatChoicePeek<'a> {
    #[serde(default)]
    finish_reason: Option<serde::de::IgnoredAny>,
    #[serde(default, borrow)]
    delta: Option<ChatDeltaPeek<'a>>,
}

#[derive(Deserialize)]
struct ChatDeltaPeek<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
    #[serde(default, borrow)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<std::borrow::Cow<'a, str>>,
}

impl ChatDeltaPeek<'_> {
    /// Carries something for the client (not just a role).
    fn says_something(&self) -> bool {
        let text =
            |t: &Option<std::borrow::Cow<'_, str>>| t.as_ref().is_some_and(|t| !t.is_empty());
        text(&self.content)
            || self.tool_calls.is_some()
            || text(&self.reasoning_content)
            || text(&self.reasoning)
            || text(&self.refusal)
    }
}

#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

/// The wires a scanner knows (a `Dialect` with a default, for `#[derive(Default)]`).
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum WireKind {
    #[default]
    Responses,
    Anthropic,
    Chat,
}

impl WireKind {
    fn dialect(self) -> super::Dialect {
        match self {
            WireKind::Responses => super::Dialect::Responses,
            WireKind::Anthropic => super::Dialect::Anthropic,
            WireKind::Chat => super::Dialect::Chat,
        }
    }

    fn carries_usage(self, event_type: &str) -> bool {
        match self {
            WireKind::Responses => super::usage::carries_usage(event_type),
            WireKind::Anthropic => super::usage::anthropic_carries_usage(event_type),
            WireKind::Chat => false,
        }
    }
}

impl SseScanner {
    /// A scanner at the start of a Responses stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// A scanner at the start of a stream of `wire`.
    pub fn for_wire(wire: super::Dialect) -> Self {
        SseScanner {
            wire: match wire {
                super::Dialect::Responses => WireKind::Responses,
                super::Dialect::Anthropic => WireKind::Anthropic,
                super::Dialect::Chat => WireKind::Chat,
            },
            ..Self::default()
        }
    }

    /// The wire this scanner reads.
    pub fn wire(&self) -> super::Dialect {
        self.wire.dialect()
    }

    /// Feeds the next bytes; calls `on_event` once for every event completed by them.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(EventClass)) {
        // The splitter is moved out while it hands lines to `on_line`, which needs `self`.
        let mut lines = std::mem::take(&mut self.lines);
        let Ok(rest) = lines.split(chunk, |line, cut| {
            if let Some(class) = self.on_line(line, cut) {
                on_event(class);
            }
            Ok::<(), std::convert::Infallible>(())
        });
        lines.hold(rest);
        self.lines = lines;
    }

    /// The usage reported by a terminal event since the last call, if any.
    pub fn take_usage(&mut self) -> Option<super::usage::Reported> {
        self.usage.take()
    }

    /// True when the bytes so far stop inside an event (a partial line or undispatched fields).
    pub fn mid_event(&self) -> bool {
        !self.lines.is_empty() || self.has_fields
    }

    /// Processes one complete line (`cut`: only its start was kept); returns the class of an
    /// event it completes.
    fn on_line(&mut self, line: &[u8], cut: bool) -> Option<EventClass> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.has_fields = true;
                self.event_name = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"data" => {
                self.has_fields = true;
                // The data is kept to find the event's type when it has no `event:` line, and
                // for the usage of a terminal event; the data of other events is not kept.
                let wire = self.wire;
                let wanted = self
                    .event_name
                    .as_deref()
                    .is_none_or(|name| wire.carries_usage(name));
                if wanted && !self.data_overflow {
                    if cut || self.data.len() + value.len() + 1 > MAX_TYPE_SCAN_BYTES {
                        self.data_overflow = true;
                        self.data = Vec::new();
                    } else {
                        if !self.data.is_empty() {
                            self.data.push(b'\n');
                        }
                        self.data.extend_from_slice(value);
                    }
                }
            }
            _ => self.has_fields = true,
        }
        None
    }

    fn dispatch(&mut self) -> Option<EventClass> {
        if !self.has_fields {
            return None;
        }
        let mut usage_event = false;
        let wire = self.wire;
        if wire == WireKind::Chat && self.event_name.is_none() {
            let class = self.chat_class();
            self.data.clear();
            self.data_overflow = false;
            self.has_fields = false;
            return Some(class);
        }
        let class = match self.event_name.take() {
            Some(name) => {
                usage_event = wire.carries_usage(&name);
                EventClass::of_wire(wire.dialect(), &name)
            }
            None if self.data_overflow => EventClass::Content,
            None if self.data == b"[DONE]" => EventClass::Terminal,
            None => match serde_json::from_slice::<TypeOnly>(&self.data) {
                Ok(TypeOnly { kind: Some(kind) }) => {
                    usage_event = wire.carries_usage(&kind);
                    EventClass::of_wire(wire.dialect(), &kind)
                }
                _ => EventClass::Content,
            },
        };
        if usage_event && !self.data_overflow {
            let usage = match wire {
                WireKind::Responses => super::usage::from_event(&self.data),
                WireKind::Anthropic => {
                    super::usage::anthropic_event(&self.data, &mut self.partial_usage)
                }
                WireKind::Chat => None,
            };
            if let Some(usage) = usage {
                self.usage = Some(usage);
            }
        }
        self.data.clear();
        self.data_overflow = false;
        self.has_fields = false;
        Some(class)
    }
}

impl SseScanner {
    /// The class of the Chat chunk in `self.data`: content, tool calls or reasoning commit;
    /// a `finish_reason`, an in-band `error`, and `[DONE]` after a finish are terminal; a
    /// role-only or empty chunk, the usage chunk and a `[DONE]` before any finish are
    /// bootstrap (a stream that stops there ended before its answer). The usage chunk's
    /// usage is kept for [`SseScanner::take_usage`].
    fn chat_class(&mut self) -> EventClass {
        if self.data_overflow {
            return EventClass::Content;
        }
        if self.data == b"[DONE]" {
            return match self.chat_finished {
                true => EventClass::Terminal,
                false => EventClass::Bootstrap,
            };
        }
        let Ok(peek) = serde_json::from_slice::<ChatPeek>(&self.data) else {
            return EventClass::Content;
        };
        if peek.error.is_some() {
            return EventClass::Terminal;
        }
        if let Some(usage) = &peek.usage {
            self.usage = Some(usage.reported(peek.model.as_deref().map(str::to_owned)));
        }
        let choices = peek.choices.unwrap_or_default();
        if choices.iter().any(|c| c.finish_reason.is_some()) {
            self.chat_finished = true;
            return EventClass::Terminal;
        }
        let content = choices
            .iter()
            .any(|c| c.delta.as_ref().is_some_and(ChatDeltaPeek::says_something));
        match content {
            true => EventClass::Content,
            false => EventClass::Bootstrap,
        }
    }
}

/// The `data` of the last complete event in `stream` (multi-line data joined by `\n`).
pub fn last_event_data(stream: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(stream)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let complete = &text[..text.rfind("\n\n")? + 1];
    let last = complete.trim_end_matches('\n').rsplit("\n\n").next()?;
    let data: Vec<&str> = last
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    (!data.is_empty()).then(|| data.join("\n").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r1\"}}\n\n\
: keep-alive comment\n\n\
data: {\"type\":\"response.in_progress\"}\r\n\r\n\
data: {\"type\":\"response.output_text.delta\",\"delta\":\"h\u{e9}llo\"}\r\r\
event: codex.rate_limits\ndata: {}\n\n\
event: response.completed\ndata: {\"type\":\"response.completed\",\n\
data: \"response\":{\"id\":\"r1\"}}\n\n";

    fn classes(splits: &[usize]) -> Vec<EventClass> {
        let bytes = STREAM.as_bytes();
        let mut scanner = SseScanner::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &end in splits.iter().chain(std::iter::once(&bytes.len())) {
            scanner.feed(&bytes[start..end], |c| out.push(c));
            start = end;
        }
        out
    }

    /// The classes of a chat stream fed one byte at a time, and the usage it reported.
    fn chat_classes(stream: &str) -> (Vec<EventClass>, Option<super::super::usage::Reported>) {
        let mut scanner = SseScanner::for_wire(super::super::Dialect::Chat);
        let mut out = Vec::new();
        for byte in stream.as_bytes().chunks(1) {
            scanner.feed(byte, |c| out.push(c));
        }
        (out, scanner.take_usage())
    }

    #[test]
    fn chat_chunks_are_classed_by_what_they_carry() {
        use EventClass::*;
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hm\"}}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\\u00e9\"},\"finish_reason\":null}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
            data: {\"model\":\"q\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7,\
            \"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n\
            data: [DONE]\n\n";
        let (classes, usage) = chat_classes(stream);
        assert_eq!(
            classes,
            [Bootstrap, Content, Content, Content, Terminal, Bootstrap, Terminal]
        );
        let usage = usage.unwrap();
        assert_eq!(
            (
                usage.input,
                usage.cached,
                usage.output,
                usage.model.as_deref()
            ),
            (11, 3, 7, Some("q"))
        );
        // `[DONE]` before any finish ends nothing; an in-band error is terminal.
        let (classes, _) = chat_classes(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\ndata: [DONE]\n\n\
             data: {\"error\":{\"message\":\"busy\",\"code\":503}}\n\n",
        );
        assert_eq!(classes, [Bootstrap, Bootstrap, Terminal]);
    }

    #[test]
    fn classifies_every_event_in_one_chunk() {
        use EventClass::*;
        assert_eq!(
            classes(&[]),
            vec![Bootstrap, Bootstrap, Content, Bootstrap, Terminal]
        );
    }

    #[test]
    fn the_same_events_come_out_at_every_split_point() {
        let whole = classes(&[]);
        let len = STREAM.len();
        for a in 0..=len {
            assert_eq!(classes(&[a]), whole, "split at {a}");
        }
        for a in (0..len).step_by(7) {
            for b in (a..len).step_by(5) {
                assert_eq!(classes(&[a, b]), whole, "split at {a},{b}");
            }
        }
        let every_byte: Vec<usize> = (1..len).collect();
        assert_eq!(classes(&every_byte), whole);
    }

    #[test]
    fn error_event_and_done_sentinel_are_terminal() {
        let mut scanner = SseScanner::new();
        let mut out = Vec::new();
        scanner.feed(
            b"event: error\ndata: {\"type\":\"error\"}\n\ndata: [DONE]\n\n",
            |c| out.push(c),
        );
        assert_eq!(out, vec![EventClass::Terminal, EventClass::Terminal]);
    }

    #[test]
    fn an_empty_chunk_between_cr_and_lf_is_still_one_line_ending() {
        // The relay can see an empty body frame anywhere; it must not turn `\r` `\n` into two
        // line endings (an extra blank line would dispatch the event early, and twice).
        let mut scanner = SseScanner::new();
        let mut out = Vec::new();
        for chunk in [
            &b"event: response.created\r"[..],
            b"",
            b"\ndata: {}\r\n\r\n",
        ] {
            scanner.feed(chunk, |c| out.push(c));
        }
        assert_eq!(out, vec![EventClass::Bootstrap]);
        assert!(!scanner.mid_event());
    }

    #[test]
    fn last_event_data_finds_the_last_complete_event() {
        let stream = b"event: a\ndata: {\"n\":1}\n\nevent: b\r\ndata: {\"n\":\r\ndata: 2}\r\n\r\ndata: partial";
        assert_eq!(last_event_data(stream), Some(b"{\"n\":\n2}".to_vec()));
        assert_eq!(last_event_data(b"data: x"), None);
    }

    #[test]
    fn a_line_longer_than_the_scan_limit_keeps_only_its_start() {
        let mut scanner = SseScanner::new();
        let mut out = Vec::new();
        scanner.feed(
            b"event: response.created\ndata: {}\n\ndata: {\"type\":\"",
            |c| out.push(c),
        );
        let filler = vec![b'x'; 1 << 16];
        for _ in 0..64 {
            scanner.feed(&filler, |c| out.push(c));
            assert!(scanner.lines.len() <= MAX_LINE_BYTES);
        }
        assert!(scanner.lines.capacity() <= 2 * MAX_LINE_BYTES);
        scanner.feed(b"\"}\n\nevent: response.completed\ndata: {}\n\n", |c| {
            out.push(c)
        });
        assert_eq!(
            out,
            vec![
                EventClass::Bootstrap,
                EventClass::Content,
                EventClass::Terminal
            ]
        );
        assert!(!scanner.mid_event());
    }

    #[test]
    fn terminal_usage_is_kept_at_every_split_point_and_only_from_terminal_events() {
        let stream: &[u8] = b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"response\":{\"usage\":{\"input_tokens\":99}}}\n\n\
event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"m\",\n\
data: \"usage\":{\"input_tokens\":5,\"output_tokens\":2}}}\n\n";
        for split in 0..=stream.len() {
            let mut scanner = SseScanner::new();
            scanner.feed(&stream[..split], |_| {});
            let early = scanner.take_usage();
            scanner.feed(&stream[split..], |_| {});
            let usage = early.or_else(|| scanner.take_usage()).expect("usage");
            assert_eq!((usage.input, usage.output), (5, 2), "split at {split}");
            assert_eq!(usage.model.as_deref(), Some("m"));
            assert_eq!(scanner.take_usage(), None);
        }
        let mut scanner = SseScanner::new();
        scanner.feed(&stream[..stream.len() - 1], |_| {});
        assert_eq!(
            scanner.take_usage(),
            None,
            "a cut terminal event reports nothing"
        );
    }

    #[test]
    fn data_that_is_not_json_is_content() {
        let mut scanner = SseScanner::new();
        let mut out = Vec::new();
        scanner.feed(b"data: hello\n\n", |c| out.push(c));
        assert_eq!(out, vec![EventClass::Content]);
    }

    /// An Anthropic stream with usage in `message_start` and `message_delta`.
    const ANTHROPIC: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":12,\"cache_read_input_tokens\":3,\"cache_creation_input_tokens\":2,\"output_tokens\":1}}}\r\n\r\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"h\u{e9}\u{1F600}\"}}\r\r\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn anthropic_events_are_classed_and_their_usage_read_at_every_split() {
        let bytes = ANTHROPIC.as_bytes();
        let expected = vec![
            EventClass::Bootstrap,
            EventClass::Bootstrap,
            EventClass::Content,
            EventClass::Content,
            EventClass::Content,
            EventClass::Terminal,
        ];
        for split in 0..=bytes.len() {
            let mut scanner = SseScanner::for_wire(crate::translate::Dialect::Anthropic);
            let mut classes = Vec::new();
            scanner.feed(&bytes[..split], |c| classes.push(c));
            scanner.feed(&bytes[split..], |c| classes.push(c));
            assert_eq!(classes, expected, "split at {split}");
            let usage = scanner.take_usage().expect("usage");
            assert_eq!(
                (usage.input, usage.cached, usage.output),
                (17, 3, 7),
                "split at {split}"
            );
            assert_eq!(usage.model.as_deref(), Some("claude-x"));
        }
    }
}
