//! Incremental SSE decoding and encoding for translated streams.
//!
//! [`Decoder`] turns upstream bytes, split anywhere, into whole events (`event:` name plus the
//! `data:` lines joined with `\n`), following the WHATWG event-stream rules: `\n`, `\r\n` and
//! lone `\r` end lines; a leading BOM is skipped; `:` lines are comments; one space after the
//! colon is dropped; a field without a colon has an empty value; an event whose data is empty
//! is not dispatched. Unlike [`super::sse::SseScanner`] (which only classifies events for the
//! relay) it hands out the data itself, borrowed from its buffer, so translators parse it in
//! place without copying per event.
//!
//! A stream that stops inside an event is *truncated*: [`Decoder::finish`] says so with a typed
//! error and the partial event is never dispatched. An event over the size limit is an error
//! too, so a hostile or broken upstream cannot grow the buffer without bound.
//!
//! The encoder side writes whole events: [`write_event`] splits a value containing line breaks
//! into several `data:` lines, so a raw newline never lands inside a field, and
//! [`write_json_str`] escapes strings for hand-written JSON (translators build their chunks
//! directly into the output buffer instead of building a `serde_json::Value` per delta).

/// Default limit on one event's bytes (name plus data): 16 MiB. Events carrying a whole
/// response (`response.completed` with a long output) can be large; nothing legitimate is
/// near this.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 << 20;

/// Why decoding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// One event grew past the decoder's limit; the stream cannot be trusted further.
    #[error("an upstream event exceeded the size limit")]
    TooLarge,
    /// The stream ended inside an event (a partial line or fields not yet dispatched).
    #[error("the upstream stream ended inside an event")]
    Truncated,
}

/// One decoded event. `data` is the `data:` lines joined with `\n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, if the event had one.
    pub name: Option<&'a str>,
    /// The joined data (raw bytes: not necessarily UTF-8 or JSON).
    pub data: &'a [u8],
}

/// Splits a byte stream fed in chunks, split anywhere, into lines: `\n`, `\r\n` and a lone
/// `\r` end a line, and a `\r\n` split across two chunks is one ending. The unfinished line is
/// kept between chunks, at most `MAX_LINE` bytes of it: the rest of a longer line is passed
/// over and the line is handed out marked as cut. Used by [`Decoder`] (no cap: it bounds the
/// whole event itself) and by [`super::sse::SseScanner`] (which needs only a line's start).
#[derive(Debug, Default)]
pub(crate) struct LineSplitter<const MAX_LINE: usize = { usize::MAX }> {
    /// The unfinished line (its first `MAX_LINE` bytes).
    line: Vec<u8>,
    /// The unfinished line is longer than what `line` kept.
    cut: bool,
    /// The previous chunk ended in `\r`: a `\n` at the start of the next one belongs to it.
    after_cr: bool,
}

impl<const MAX_LINE: usize> LineSplitter<MAX_LINE> {
    /// Hands every line that `chunk` completes to `on_line` (with `true` when only the line's
    /// start was kept) and returns the rest of `chunk`: the start of the next line, for
    /// [`Self::hold`]. Stops at the first error `on_line` returns.
    pub(crate) fn split<'c, E>(
        &mut self,
        mut chunk: &'c [u8],
        mut on_line: impl FnMut(&[u8], bool) -> Result<(), E>,
    ) -> Result<&'c [u8], E> {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', chunk) {
            if self.line.is_empty() && !self.cut && pos <= MAX_LINE {
                on_line(&chunk[..pos], false)?;
            } else {
                // A line split across chunks: join it, keeping the buffer's capacity.
                self.hold(&chunk[..pos]);
                let result = on_line(&self.line, self.cut);
                self.line.clear();
                self.cut = false;
                result?;
            }
            if chunk[pos] == b'\r' {
                match chunk.get(pos + 1) {
                    Some(b'\n') => chunk = &chunk[pos + 2..],
                    Some(_) => chunk = &chunk[pos + 1..],
                    None => {
                        self.after_cr = true;
                        chunk = &[];
                    }
                }
            } else {
                chunk = &chunk[pos + 1..];
            }
        }
        Ok(chunk)
    }

    /// Appends `more` (no line break in it) to the unfinished line, up to `MAX_LINE` bytes.
    pub(crate) fn hold(&mut self, more: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&more[..more.len().min(room)]);
        self.cut |= more.len() > room;
    }

    /// Bytes of the unfinished line kept.
    pub(crate) fn len(&self) -> usize {
        self.line.len()
    }

    /// True when no unfinished line is kept.
    pub(crate) fn is_empty(&self) -> bool {
        self.line.is_empty()
    }

    /// The buffer's capacity (for the buffered-bytes count).
    pub(crate) fn capacity(&self) -> usize {
        self.line.capacity()
    }

    /// Forgets the unfinished line and frees its buffer.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Incremental SSE decoder; see the module docs.
#[derive(Debug)]
pub struct Decoder {
    /// The lines of the stream.
    lines: LineSplitter,
    /// A BOM's first bytes, held until the stream's start is decided.
    start: Vec<u8>,
    /// Nothing seen yet: a BOM may still come (possibly split across chunks).
    at_start: bool,
    name: String,
    has_name: bool,
    data: Vec<u8>,
    has_data: bool,
    /// Any field seen since the last dispatch (for telling a clean end from a truncated one).
    has_fields: bool,
    max_event_bytes: usize,
    failed: Option<DecodeError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

const BOM: &[u8] = "\u{feff}".as_bytes();

impl Decoder {
    /// A decoder at the start of a stream, with [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A decoder whose events may hold at most `max_event_bytes` bytes.
    pub fn with_limit(max_event_bytes: usize) -> Self {
        Decoder {
            lines: LineSplitter::default(),
            start: Vec::new(),
            at_start: true,
            name: String::new(),
            has_name: false,
            data: Vec::new(),
            has_data: false,
            has_fields: false,
            max_event_bytes,
            failed: None,
        }
    }

    /// Feeds the next bytes; calls `on_event` once per event completed by them. After an error
    /// every later call returns the same error and dispatches nothing.
    pub fn push(
        &mut self,
        mut chunk: &[u8],
        mut on_event: impl FnMut(Event<'_>),
    ) -> Result<(), DecodeError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.at_start {
            // The BOM can be split across chunks: hold its prefix in `start` until decided.
            let have = self.start.len();
            let take = chunk.len().min(BOM.len() - have);
            self.start.extend_from_slice(&chunk[..take]);
            if BOM.starts_with(&self.start) {
                chunk = &chunk[take..];
                if self.start.len() < BOM.len() {
                    return Ok(());
                }
                self.start.clear();
            } else {
                // Not a BOM: put the bytes back in order (the held prefix, then this chunk).
                self.start.truncate(have);
            }
            self.at_start = false;
            let held = std::mem::take(&mut self.start);
            if !held.is_empty() {
                self.feed(&held, &mut on_event)?;
            }
        }
        self.feed(chunk, &mut on_event)
    }

    fn feed(
        &mut self,
        chunk: &[u8],
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(), DecodeError> {
        // The splitter is moved out while it hands lines to `on_line`, which needs `self`.
        let mut lines = std::mem::take(&mut self.lines);
        let rest = lines.split(chunk, |line, _| self.on_line(line, on_event));
        self.lines = lines;
        let rest = match rest {
            Ok(rest) => rest,
            Err(e) => {
                self.lines.reset();
                return Err(e);
            }
        };
        if self.lines.len() + rest.len() + self.data.len() > self.max_event_bytes {
            return Err(self.fail(DecodeError::TooLarge));
        }
        self.lines.hold(rest);
        Ok(())
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.failed = Some(e);
        self.lines.reset();
        self.data = Vec::new();
        e
    }

    /// The upstream closed. `Ok` when it closed between events; [`DecodeError::Truncated`]
    /// when bytes of an unfinished event were pending (they are discarded, never dispatched).
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        // A BOM's prefix alone (held in `start`) is not an event.
        if !self.lines.is_empty() || self.has_fields {
            return Err(self.fail(DecodeError::Truncated));
        }
        Ok(())
    }

    /// Bytes of the event being read, kept until it ends (at most the event limit, twice:
    /// the partial line and the data lines before it).
    pub fn buffered(&self) -> usize {
        self.lines.capacity() + self.data.capacity() + self.start.capacity()
    }

    /// True when the bytes so far stop inside an event.
    pub fn mid_event(&self) -> bool {
        !self.lines.is_empty() || self.has_fields
    }

    fn on_line(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(), DecodeError> {
        if line.is_empty() {
            self.dispatch(on_event);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        self.has_fields = true;
        match field {
            b"event" => {
                self.name.clear();
                self.name.push_str(&String::from_utf8_lossy(value));
                self.has_name = true;
            }
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max_event_bytes {
                    return Err(self.fail(DecodeError::TooLarge));
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            // `id:` and `retry:` mean nothing to a translator; unknown fields are ignored.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(Event<'_>)) {
        if self.has_data {
            on_event(Event {
                name: self.has_name.then_some(self.name.as_str()),
                data: &self.data,
            });
        }
        self.data.clear();
        self.name.clear();
        self.has_name = false;
        self.has_data = false;
        self.has_fields = false;
    }
}

/// Appends one whole event: an optional `event:` line, then `value` as `data:` lines (one per
/// line of `value`, whatever its line endings), then the blank line.
pub fn write_event(out: &mut Vec<u8>, name: Option<&str>, value: &[u8]) {
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        // An event name is ours (a fixed string or an upstream `type`); never let a line break
        // through even so.
        for line in split_lines(name.as_bytes()) {
            out.extend_from_slice(line);
        }
        out.push(b'\n');
    }
    for line in split_lines(value) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Appends `: <text>\n\n`, a comment event (keep-alive). Line breaks in `text` are dropped.
pub fn write_comment(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b": ");
    for line in split_lines(text.as_bytes()) {
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b"\n\n");
}

/// Splits on `\r\n`, `\r` and `\n` (one empty line for empty input).
fn split_lines(mut value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match memchr::memchr2(b'\n', b'\r', value) {
            Some(pos) => {
                let line = &value[..pos];
                let skip = if value[pos] == b'\r' && value.get(pos + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                value = &value[pos + skip..];
                Some(line)
            }
            None => {
                done = true;
                Some(value)
            }
        }
    })
}

/// Appends `s` as a JSON string literal (with quotes). Control characters, `"` and `\` are
/// escaped; so are U+2028/U+2029, which some JavaScript SSE parsers treat as line breaks.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x00..=0x1f => None,
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                out.extend_from_slice(&bytes[start..i]);
                let last = if bytes[i + 2] == 0xa8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                };
                out.extend_from_slice(last);
                i += 3;
                start = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    type Decoded = (Vec<(Option<String>, Vec<u8>)>, Result<(), DecodeError>);

    /// Decodes `input` fed in the given pieces; returns (name, data) pairs and the end result.
    fn decode_split(input: &[u8], splits: &[usize]) -> Decoded {
        let mut d = Decoder::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &end in splits.iter().chain(std::iter::once(&input.len())) {
            let r = d.push(&input[start..end], |e| {
                events.push((e.name.map(str::to_owned), e.data.to_vec()))
            });
            if let Err(e) = r {
                return (events, Err(e));
            }
            start = end;
        }
        let end = d.finish();
        (events, end)
    }

    fn decode(input: &[u8]) -> Decoded {
        let whole = decode_split(input, &[]);
        for i in 0..=input.len() {
            assert_eq!(decode_split(input, &[i]), whole, "split at {i}");
        }
        let every: Vec<usize> = (1..input.len()).collect();
        assert_eq!(decode_split(input, &every), whole, "split at every byte");
        whole
    }

    fn ev(name: Option<&str>, data: &str) -> (Option<String>, Vec<u8>) {
        (name.map(str::to_owned), data.as_bytes().to_vec())
    }

    #[test]
    fn event_and_data_fields() {
        let (events, end) =
            decode(b"event: response.created\ndata: {\"a\":1}\n\ndata: {\"b\":2}\n\n");
        assert_eq!(
            events,
            vec![
                ev(Some("response.created"), "{\"a\":1}"),
                ev(None, "{\"b\":2}")
            ]
        );
        assert_eq!(end, Ok(()));
    }

    #[test]
    fn an_event_line_without_data_dispatches_nothing() {
        let (events, end) = decode(b"event: ping\n\ndata: x\n\n");
        assert_eq!(events, vec![ev(None, "x")]);
        assert_eq!(end, Ok(()));
    }

    #[test]
    fn several_data_lines_join_with_newlines_and_empty_data_lines_count() {
        let (events, _) = decode(b"data: a\ndata:\ndata:  b\ndata\n\n");
        assert_eq!(events, vec![ev(None, "a\n\n b\n")]);
    }

    #[test]
    fn comments_crlf_lone_cr_and_bom() {
        let input =
            "\u{feff}: hello\r\nevent: e\r\ndata: 1\r\n\r\n: c\rdata: 2\r\rdata: [DONE]\n\n";
        let (events, end) = decode(input.as_bytes());
        assert_eq!(
            events,
            vec![ev(Some("e"), "1"), ev(None, "2"), ev(None, "[DONE]")]
        );
        assert_eq!(end, Ok(()));
    }

    #[test]
    fn a_bom_is_skipped_only_at_the_start() {
        let input = "data: a\n\n\u{feff}data: b\n\n";
        let (events, _) = decode(input.as_bytes());
        // A BOM later on is part of a field name, so that line is an unknown field.
        assert_eq!(events, vec![ev(None, "a")]);
        let (events, _) = decode("\u{feff}data: x\n\n".as_bytes());
        assert_eq!(events, vec![ev(None, "x")]);
        let (events, _) = decode(b"\xefdata: x\n\n");
        assert!(events.is_empty(), "a partial BOM is not skipped");
    }

    #[test]
    fn escaped_newlines_u2028_and_split_utf8_survive() {
        let input = "data: {\"t\":\"a\\n\\nb\u{2028}é😀\"}\n\n";
        let (events, _) = decode(input.as_bytes());
        assert_eq!(events, vec![ev(None, "{\"t\":\"a\\n\\nb\u{2028}é😀\"}")]);
    }

    #[test]
    fn a_stream_cut_inside_an_event_is_truncated_and_the_event_is_dropped() {
        let (events, end) = decode_split(b"data: a\n\ndata: {\"partial\"", &[]);
        assert_eq!(events, vec![ev(None, "a")]);
        assert_eq!(end, Err(DecodeError::Truncated));
        let (events, end) = decode_split(b"data: a\n\ndata: b\n", &[]);
        assert_eq!(events, vec![ev(None, "a")]);
        assert_eq!(end, Err(DecodeError::Truncated));
        let (_, end) = decode_split(b"data: a\n\n: trailing comment\n", &[]);
        assert_eq!(end, Ok(()));
    }

    #[test]
    fn a_single_event_over_one_mebibyte_decodes() {
        let big = "x".repeat(1 << 21);
        let input = format!("data: {big}\n\n");
        let (events, end) = decode_split(input.as_bytes(), &[7, 1000, 1 << 20]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].1.len(), 1 << 21);
        assert_eq!(end, Ok(()));
    }

    #[test]
    fn an_event_over_the_limit_is_an_error_and_stays_one() {
        let mut d = Decoder::with_limit(16);
        let mut n = 0;
        assert_eq!(
            d.push(b"data: 0123456789abcdefg", |_| n += 1),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(d.push(b"\n\n", |_| n += 1), Err(DecodeError::TooLarge));
        assert_eq!(n, 0);
        let mut d = Decoder::with_limit(16);
        assert_eq!(
            d.push(b"data: 0123456789\ndata: 0123456789\n", |_| n += 1),
            Err(DecodeError::TooLarge)
        );
    }

    #[test]
    fn encoder_splits_values_on_line_breaks() {
        let mut out = Vec::new();
        write_event(&mut out, Some("message"), b"a\nb\r\nc\rd");
        assert_eq!(
            out,
            b"event: message\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        out.clear();
        write_event(&mut out, None, b"");
        assert_eq!(out, b"data: \n\n");
        out.clear();
        write_comment(&mut out, "keep\nalive");
        assert_eq!(out, b": keepalive\n\n");
    }

    #[test]
    fn encoded_events_decode_to_the_same_value() {
        let value = b"line one\nline two\r\n\nend";
        let mut out = Vec::new();
        write_event(&mut out, Some("x"), value);
        let (events, _) = decode(&out);
        assert_eq!(events, vec![ev(Some("x"), "line one\nline two\n\nend")]);
    }

    #[test]
    fn json_strings_are_escaped_like_serde_json_plus_line_separators() {
        for s in [
            "plain",
            "q\"b\\s",
            "nl\n\r\t",
            "\u{1}\u{1f}\u{7f}",
            "é😀",
            "a\u{2028}b\u{2029}c",
        ] {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
            assert!(!out.contains(&b'\n'));
        }
        let mut out = Vec::new();
        write_json_str(&mut out, "a\u{2028}");
        assert_eq!(out, b"\"a\\u2028\"");
    }
}
