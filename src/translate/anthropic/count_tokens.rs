//! `POST /v1/messages/count_tokens`, answered locally (never forwarded: the upstream has no
//! such endpoint and the answer only guides the client's context management).
//!
//! The estimate, documented because clients budget with it:
//!
//! - text: one token per [`BYTES_PER_TOKEN`] bytes of UTF-8, rounded up, summed over every
//!   text-bearing field: `system` text, message text, `thinking` text, `tool_use` input (as
//!   compact JSON), `tool_result` text, document text, and each tool's name, description and
//!   input schema (as compact JSON);
//! - plus [`PER_MESSAGE`] tokens per message (role and turn markers), [`PER_TOOL`] per tool
//!   definition (its wrapper), [`PER_BLOCK`] per non-text block (tool use, tool result,
//!   thinking) and [`PER_REQUEST`] once;
//! - plus [`PER_IMAGE`] per image (Anthropic's cost of a full-size ~1.15 megapixel image, since
//!   the proxy does not decode sizes) and [`PER_DOCUMENT`] per base64 or URL document (the
//!   proxy does not parse PDFs; an average few-page document).
//!
//! Four bytes per token is the usual figure for English prose and code with BPE tokenizers;
//! it overestimates dense ASCII and underestimates some scripts. It is an estimate, not the
//! upstream's count.

use serde_json::Value;

use crate::translate::error::TranslateError;

/// Bytes of UTF-8 text per token.
pub const BYTES_PER_TOKEN: usize = 4;
/// Fixed tokens per request (the conversation frame).
pub const PER_REQUEST: u64 = 3;
/// Tokens per message.
pub const PER_MESSAGE: u64 = 4;
/// Tokens per tool definition, on top of its text.
pub const PER_TOOL: u64 = 8;
/// Tokens per structural block (tool use, tool result, thinking), on top of its text.
pub const PER_BLOCK: u64 = 4;
/// Tokens per image.
pub const PER_IMAGE: u64 = 1600;
/// Tokens per base64 or URL document.
pub const PER_DOCUMENT: u64 = 3000;

/// The estimate as the response body `{"input_tokens":N}`, for a request body given as bytes
/// or a parsed value (see [`super::Body`]).
pub fn count_tokens<'a>(body: impl Into<super::Body<'a>>) -> Result<Vec<u8>, TranslateError> {
    let body = body.into().parse()?;
    let n = estimate(&body)?;
    Ok(format!("{{\"input_tokens\":{n}}}").into_bytes())
}

/// The estimated input tokens of a Messages request (see the module docs).
pub fn estimate(body: &Value) -> Result<u64, TranslateError> {
    let obj = body.as_object().ok_or_else(|| TranslateError {
        status: 400,
        code: "invalid_request_error",
        message: "the request body must be a JSON object".into(),
    })?;
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError {
            status: 400,
            code: "invalid_request_error",
            message: "messages: an array is required".into(),
        })?;
    let mut c = Counter::default();
    c.fixed += PER_REQUEST;
    match obj.get("system") {
        Some(Value::String(s)) => c.text(s),
        Some(Value::Array(blocks)) => blocks.iter().for_each(|b| c.block(b)),
        _ => {}
    }
    for message in messages {
        c.fixed += PER_MESSAGE;
        match message.get("content") {
            Some(Value::String(s)) => c.text(s),
            Some(Value::Array(blocks)) => blocks.iter().for_each(|b| c.block(b)),
            _ => {}
        }
    }
    for tool in obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        c.fixed += PER_TOOL;
        for key in ["name", "description"] {
            if let Some(s) = tool.get(key).and_then(Value::as_str) {
                c.text(s);
            }
        }
        if let Some(schema) = tool.get("input_schema") {
            c.json(schema);
        }
    }
    Ok(c.total())
}

#[derive(Default)]
struct Counter {
    bytes: usize,
    fixed: u64,
}

impl Counter {
    fn text(&mut self, s: &str) {
        self.bytes += s.len();
    }

    fn json(&mut self, v: &Value) {
        self.bytes += serde_json::to_string(v).map_or(0, |s| s.len());
    }

    fn block(&mut self, block: &Value) {
        let s = |k: &str| block.get(k).and_then(Value::as_str);
        match s("type").unwrap_or("") {
            "text" => self.text(s("text").unwrap_or("")),
            "image" => self.fixed += PER_IMAGE,
            "document" => match block.pointer("/source/type").and_then(Value::as_str) {
                Some("text") => self.text(
                    block
                        .pointer("/source/data")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                ),
                Some("content") => {
                    if let Some(Value::Array(blocks)) = block.pointer("/source/content") {
                        blocks.iter().for_each(|b| self.block(b));
                    }
                }
                _ => self.fixed += PER_DOCUMENT,
            },
            "thinking" => {
                self.fixed += PER_BLOCK;
                self.text(s("thinking").unwrap_or(""));
            }
            "redacted_thinking" => self.fixed += PER_BLOCK,
            "tool_use" => {
                self.fixed += PER_BLOCK;
                self.text(s("name").unwrap_or(""));
                if let Some(input) = block.get("input") {
                    self.json(input);
                }
            }
            "tool_result" => {
                self.fixed += PER_BLOCK;
                match block.get("content") {
                    Some(Value::String(t)) => self.text(t),
                    Some(Value::Array(blocks)) => blocks.iter().for_each(|b| self.block(b)),
                    _ => {}
                }
            }
            _ => {
                if let Some(t) = s("text") {
                    self.text(t);
                }
            }
        }
    }

    fn total(&self) -> u64 {
        let text = self.bytes.div_ceil(BYTES_PER_TOKEN);
        u64::try_from(text)
            .unwrap_or(u64::MAX)
            .saturating_add(self.fixed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_input_tokens_object() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "abcdefgh"}]});
        let out: Value = serde_json::from_slice(&count_tokens(&body).unwrap()).unwrap();
        // 8 bytes → 2, one message 4, the request 3.
        assert_eq!(out, json!({"input_tokens": 9}));
    }

    #[test]
    fn counts_system_tools_images_and_tool_blocks() {
        let body = json!({
            "system": [{"type": "text", "text": "1234"}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "12345678"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t", "name": "ls", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": "abcd"}
                ]}
            ],
            "tools": [{"name": "ls", "description": "list", "input_schema": {}}]
        });
        // bytes: 4 + 8 + ("ls" 2 + "{}" 2) + 4 + ("ls" 2 + "list" 4 + "{}" 2) = 28 → 7
        // fixed: 3 + 3×4 + 1600 + 4 + 4 + 8 = 1631
        assert_eq!(estimate(&body).unwrap(), 7 + 1631);
    }

    #[test]
    fn rejects_bodies_without_messages() {
        let err = estimate(&json!({"model": "m"})).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(estimate(&json!([])).is_err());
    }
}
