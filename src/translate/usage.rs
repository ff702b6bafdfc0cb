//! The token usage an upstream reports for one answer, read from the Responses wire.
//!
//! Only what the upstream reported is counted, never an estimate: the `usage` object of a
//! terminal `response.completed` / `response.incomplete` / `response.failed` event (streamed),
//! or the top-level `usage` of a Responses JSON body (not streamed). A stream cut before its
//! terminal event reports nothing, so it counts nothing (`docs/usage.md`).
//!
//! The hot path stays cheap: the SSE scanner hands over the data of terminal events only, and
//! a plain JSON body is followed by [`TopLevelUsage`], a byte-at-a-time tracker that keeps
//! only the top-level `usage` and `model` values (bounded), never the body.

use serde::Deserialize;

/// Tokens one answer used, as the upstream reported them. `input` includes `cached`, and
/// `output` includes `reasoning` (OpenAI's meaning).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reported {
    pub input: u64,
    pub cached: u64,
    pub output: u64,
    pub reasoning: u64,
    /// The model the upstream says answered (free text from the upstream; the metrics layer
    /// bounds it before it becomes a label).
    pub model: Option<String>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WireUsage {
    /// Chat Completions names it `prompt_tokens` (a chat provider's JSON answer).
    #[serde(default, alias = "prompt_tokens")]
    input_tokens: Option<u64>,
    #[serde(default, alias = "completion_tokens")]
    output_tokens: Option<u64>,
    /// Anthropic counts cache reads and cache writes apart from `input_tokens`
    /// (`docs/anthropic-wire.md`, "Usage"); the Responses wire never sends these.
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default, alias = "prompt_tokens_details")]
    input_tokens_details: Option<Details>,
    #[serde(default, alias = "completion_tokens_details")]
    output_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct WireResponse<'a> {
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(default, borrow)]
    response: Option<WireResponse<'a>>,
}

impl WireUsage {
    fn reported(self, model: Option<String>) -> Option<Reported> {
        // An object without either count is not a report.
        if self.input_tokens.is_none() && self.output_tokens.is_none() {
            return None;
        }
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        let cache_write = self.cache_creation_input_tokens.unwrap_or(0);
        Some(Reported {
            // OpenAI's meaning: input includes the cached tokens.
            input: self
                .input_tokens
                .unwrap_or(0)
                .saturating_add(cache_read)
                .saturating_add(cache_write),
            cached: self
                .input_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0)
                .saturating_add(cache_read),
            output: self.output_tokens.unwrap_or(0),
            reasoning: self
                .output_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
            model,
        })
    }
}

/// True for the event types whose `response` may carry a final `usage`.
pub fn carries_usage(event_type: &str) -> bool {
    matches!(
        event_type,
        "response.completed" | "response.incomplete" | "response.failed"
    )
}

/// True for the Anthropic events that carry usage: `message_start` (input, cache, model) and
/// `message_delta` (the final output count).
pub fn anthropic_carries_usage(event_type: &str) -> bool {
    matches!(event_type, "message_start" | "message_delta")
}

#[derive(Deserialize)]
struct AnthropicMessage<'a> {
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AnthropicEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    message: Option<AnthropicMessage<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Folds an Anthropic streaming event into `partial` (what `message_start` said so far);
/// returns the whole report once `message_delta` gives the final output count.
pub fn anthropic_event(data: &[u8], partial: &mut Option<Reported>) -> Option<Reported> {
    let event: AnthropicEvent = serde_json::from_slice(data).ok()?;
    match event.kind.as_ref() {
        "message_start" => {
            let message = event.message?;
            let model = message.model.map(|m| m.into_owned());
            *partial = message.usage?.reported(model);
            None
        }
        "message_delta" => {
            let delta = event.usage?;
            let mut report = partial.clone().unwrap_or_default();
            if let Some(output) = delta.output_tokens {
                report.output = output;
            }
            // A delta that restates input counts (newer API versions do) wins.
            if delta.input_tokens.is_some()
                || delta.cache_read_input_tokens.is_some()
                || delta.cache_creation_input_tokens.is_some()
            {
                if let Some(input) = delta.reported(None) {
                    report.input = input.input;
                    report.cached = input.cached;
                }
            }
            Some(report)
        }
        _ => None,
    }
}

/// The usage in a terminal event's data (`{"type":..,"response":{"usage":..,"model":..}}`).
pub fn from_event(data: &[u8]) -> Option<Reported> {
    let event: WireEvent = serde_json::from_slice(data).ok()?;
    let response = event.response?;
    let model = response.model.map(|m| m.into_owned());
    response.usage?.reported(model)
}

/// Most bytes kept of the top-level `usage` or `model` value of a plain body; a larger value
/// is not a usage report and is dropped (counted as nothing).
const MAX_VALUE_BYTES: usize = 4096;
/// Longest top-level key compared (longer keys are neither `usage` nor `model`).
const MAX_KEY_BYTES: usize = 16;
/// The first buffer of a kept value: a usual `usage` object (with its details) fits.
const VALUE_START_BYTES: usize = 256;

/// Which top-level value is being kept.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    Nothing,
    Usage,
    Model,
}

/// Follows a JSON document byte by byte, keeping only its top-level `usage` and `model`
/// values (see the module docs). Never buffers more than [`MAX_VALUE_BYTES`] twice over.
pub struct TopLevelUsage {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// At depth 1: the string being read is a key (not a value).
    expecting_key: bool,
    /// The key read so far (`key_len` bytes): inline, so reading keys allocates nothing.
    key: [u8; MAX_KEY_BYTES],
    key_len: usize,
    key_overflow: bool,
    /// The last complete top-level key, while its value is read.
    keep: Keep,
    value: Vec<u8>,
    value_overflow: bool,
    usage: Option<Vec<u8>>,
    model: Option<Vec<u8>>,
}

impl Default for TopLevelUsage {
    fn default() -> Self {
        Self::new()
    }
}

impl TopLevelUsage {
    pub fn new() -> Self {
        TopLevelUsage {
            depth: 0,
            in_string: false,
            escaped: false,
            expecting_key: false,
            key: [0; MAX_KEY_BYTES],
            key_len: 0,
            key_overflow: false,
            keep: Keep::Nothing,
            value: Vec::new(),
            value_overflow: false,
            usage: None,
            model: None,
        }
    }

    /// Feeds the next bytes of the body (any split).
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut i = 0;
        while i < chunk.len() {
            // The bulk of a body is string content nobody keeps: skip to its next quote or
            // backslash at once.
            if self.in_string
                && !self.escaped
                && self.keep == Keep::Nothing
                && !(self.depth == 1 && self.expecting_key)
            {
                match memchr::memchr2(b'"', b'\\', &chunk[i..]) {
                    Some(skip) => i += skip,
                    None => return,
                }
            }
            self.byte(chunk[i]);
            i += 1;
        }
    }

    fn keep_byte(&mut self, b: u8) {
        if self.keep != Keep::Nothing && self.depth >= 1 {
            if self.value.capacity() == 0 {
                // One buffer per kept value (grown byte by byte it was reallocated 6-8
                // times for a usual `usage` object).
                self.value.reserve(VALUE_START_BYTES);
            }
            if self.value.len() < MAX_VALUE_BYTES {
                self.value.push(b);
            } else {
                self.value_overflow = true;
            }
        }
    }

    /// A top-level value ended: keep it if it was `usage` or `model`.
    fn value_done(&mut self) {
        let value = std::mem::take(&mut self.value);
        if !self.value_overflow {
            match self.keep {
                Keep::Usage => self.usage = Some(value),
                Keep::Model => self.model = Some(value),
                Keep::Nothing => {}
            }
        }
        self.keep = Keep::Nothing;
        self.value_overflow = false;
    }

    fn byte(&mut self, b: u8) {
        if self.in_string {
            if self.depth == 1 && self.expecting_key {
                if self.escaped {
                    self.escaped = false;
                    self.key_overflow = true; // an escaped key is not a plain `usage`
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    self.expecting_key = false;
                    self.keep = match (self.key_overflow, &self.key[..self.key_len]) {
                        (false, b"usage") => Keep::Usage,
                        (false, b"model") => Keep::Model,
                        _ => Keep::Nothing,
                    };
                    self.key_len = 0;
                    self.key_overflow = false;
                } else if let Some(slot) = self.key.get_mut(self.key_len) {
                    *slot = b;
                    self.key_len += 1;
                } else {
                    self.key_overflow = true;
                }
                return;
            }
            self.keep_byte(b);
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.depth == 1 {
                    self.value_done();
                }
            }
            return;
        }
        match b {
            b'"' => {
                self.in_string = true;
                self.keep_byte(b);
            }
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth == 1 {
                    self.expecting_key = b == b'{';
                } else {
                    self.keep_byte(b);
                }
            }
            b'}' | b']' => {
                if self.depth >= 2 {
                    self.keep_byte(b);
                }
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 1 {
                    self.value_done();
                }
            }
            b',' if self.depth == 1 => {
                // The end of a scalar top-level value (numbers, literals).
                self.value_done();
                self.expecting_key = true;
            }
            b':' if self.depth == 1 => {}
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => self.keep_byte(b),
        }
    }

    /// The usage reported by the whole document, if it had one.
    pub fn finish(&self) -> Option<Reported> {
        let usage: WireUsage = serde_json::from_slice(self.usage.as_deref()?).ok()?;
        let model = self
            .model
            .as_deref()
            .and_then(|m| serde_json::from_slice::<String>(m).ok());
        usage.reported(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_event_usage_is_read_with_details() {
        let data = br#"{"type":"response.completed","response":{"id":"r","model":"gpt-5","output":[{"type":"message"}],"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":4},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":3},"total_tokens":17}}}"#;
        assert_eq!(
            from_event(data),
            Some(Reported {
                input: 10,
                cached: 4,
                output: 7,
                reasoning: 3,
                model: Some("gpt-5".into())
            })
        );
        assert_eq!(
            from_event(br#"{"type":"response.completed","response":{"id":"r"}}"#),
            None
        );
        assert_eq!(
            from_event(br#"{"type":"response.completed","response":{"usage":null}}"#),
            None
        );
        assert_eq!(from_event(b"not json"), None);
    }

    fn top_level(doc: &[u8], split: usize) -> Option<Reported> {
        let mut t = TopLevelUsage::new();
        t.feed(&doc[..split]);
        t.feed(&doc[split..]);
        t.finish()
    }

    #[test]
    fn plain_body_usage_is_the_top_level_one_at_every_split() {
        let doc = br#"{"id":"r","model":"gpt-5.4","metadata":{"usage":{"input_tokens":999}},"output":[{"type":"message","content":[{"text":"\"usage\":{\"input_tokens\":5} [{}]"}]}],"n":12,"esc":"back\\","deep":[{"s":"q\"}\\"}],"usage":{"input_tokens":21,"input_tokens_details":{"cached_tokens":1},"output_tokens":8,"output_tokens_details":{"reasoning_tokens":2}},"user":null}"#;
        let want = Some(Reported {
            input: 21,
            cached: 1,
            output: 8,
            reasoning: 2,
            model: Some("gpt-5.4".into()),
        });
        for split in 0..=doc.len() {
            assert_eq!(top_level(doc, split), want, "split at {split}");
        }
    }

    #[test]
    fn plain_body_without_usage_or_with_a_huge_one_reports_nothing() {
        assert_eq!(top_level(br#"{"id":"r","output":[]}"#, 3), None);
        let mut huge = br#"{"usage":{"input_tokens":1,"pad":""#.to_vec();
        huge.extend(std::iter::repeat_n(b'x', MAX_VALUE_BYTES * 2));
        huge.extend_from_slice(br#""},"x":1}"#);
        assert_eq!(top_level(&huge, 10), None);
        assert_eq!(top_level(b"[1,2]", 1), None);
    }
}
