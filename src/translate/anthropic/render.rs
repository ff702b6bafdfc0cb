//! The aggregated Response object → a non-streaming Anthropic `message`.
//!
//! The input is the Responses API Response JSON that `aggregate` rebuilt from the stream
//! (`output[]` of `reasoning` / `message` / `function_call` items, `usage`, `status`,
//! `incomplete_details`). The mapping is the stream's (see [`super::stream`]): one `thinking`
//! block per reasoning item (only when the client asked for thinking; summary parts joined by
//! `"\n\n"`, `signature` = `encrypted_content`), one `text` block per message item (think tags
//! handled per the model's mode), one `tool_use` block per call with `input` parsed into an
//! object, the same stop reason and usage.

use serde_json::{json, Map, Value};

use super::{stop_reason, Usage};
use crate::translate::aggregate::{Aggregate, Outcome};
use crate::translate::think::{ThinkFilter, ThinkMode, ThinkPiece};
use crate::translate::{error_body, Dialect, Rendered, ResponseContext};

/// The non-streaming answer: a `message` (status 200) for a completed or incomplete response,
/// else an Anthropic error body with the failure's status (for an interrupted stream its
/// interruption's: 502 for a cut, 504 `timeout_error` for a timeout).
/// `thinking`: the client asked for thinking blocks.
pub fn render(ctx: &ResponseContext, aggregate: Aggregate, thinking: bool) -> Rendered {
    let incomplete = match &aggregate.outcome {
        Outcome::Completed => None,
        Outcome::Incomplete { reason } => Some(reason.as_deref().unwrap_or("")),
        Outcome::Failed(f) => {
            return Rendered {
                status: f.status,
                body: error_body(Dialect::Anthropic, f.status, &f.code, &f.message),
            }
        }
        Outcome::Truncated { cause, message } => {
            return Rendered {
                status: cause.status(),
                body: error_body(Dialect::Anthropic, cause.status(), cause.code(), message),
            }
        }
    };
    let message = message(&aggregate.response, ctx, incomplete, thinking);
    Rendered {
        status: 200,
        body: serde_json::to_vec(&message).unwrap_or_default(),
    }
}

/// The `message` object for a Response object; `incomplete`: the `incomplete_details.reason`
/// of an incomplete response (`""` when it gave none).
pub fn message(
    response: &Value,
    ctx: &ResponseContext,
    incomplete: Option<&str>,
    thinking: bool,
) -> Value {
    let mut content = Content::default();
    let mut saw_refusal = false;
    let mut saw_tool_use = false;
    for item in response
        .get("output")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match item.get("type").and_then(Value::as_str) {
            Some("reasoning") if thinking => content.reasoning(item),
            Some("message") => {
                let mut filter = (ctx.think != ThinkMode::Off).then(|| ThinkFilter::new(ctx.think));
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let text = match part.get("type").and_then(Value::as_str) {
                        Some("output_text") => part.get("text").and_then(Value::as_str),
                        Some("refusal") => {
                            saw_refusal = true;
                            part.get("refusal").and_then(Value::as_str)
                        }
                        _ => None,
                    };
                    let Some(text) = text else { continue };
                    match filter.as_mut() {
                        None => content.text(text),
                        Some(f) => f.push(text, |piece| content.piece(piece, thinking)),
                    }
                }
                if let Some(mut f) = filter {
                    f.finish(|piece| content.piece(piece, thinking));
                }
                content.end_block();
            }
            Some("function_call") => {
                saw_tool_use = true;
                content.tool_use(item, ctx);
            }
            _ => {}
        }
    }

    let reason = stop_reason(incomplete, saw_refusal, saw_tool_use);
    let usage = usage_of(response.get("usage"));
    json!({
        "id": response.get("id").and_then(Value::as_str).unwrap_or("msg_codex_proxy"),
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": content.blocks,
        "stop_reason": reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": usage.input,
            "cache_read_input_tokens": usage.cache_read,
            "output_tokens": usage.output,
        },
    })
}

fn usage_of(usage: Option<&Value>) -> Usage {
    let n = |p: &str| {
        usage
            .and_then(|u| u.pointer(p))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Usage::from_upstream(
        n("/input_tokens"),
        n("/input_tokens_details/cached_tokens"),
        n("/output_tokens"),
    )
}

/// The content array under construction; consecutive text (or thinking) of one item merges
/// into one block, as in the stream.
#[derive(Default)]
struct Content {
    blocks: Vec<Value>,
    /// The last block may still take text of the same kind.
    open: bool,
}

impl Content {
    fn text(&mut self, text: &str) {
        self.append("text", "text", text);
    }

    fn piece(&mut self, piece: ThinkPiece<'_>, thinking: bool) {
        match piece {
            ThinkPiece::Text(t) => self.append("text", "text", t),
            ThinkPiece::Reasoning(t) if thinking => self.append("thinking", "thinking", t),
            ThinkPiece::Reasoning(_) => {}
        }
    }

    fn append(&mut self, kind: &str, field: &str, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.open {
            if let Some(last) = self.blocks.last_mut() {
                if last["type"] == kind {
                    if let Some(Value::String(s)) = last.get_mut(field) {
                        s.push_str(text);
                        return;
                    }
                }
            }
        }
        let mut block = Map::new();
        block.insert("type".into(), kind.into());
        block.insert(field.into(), text.into());
        if kind == "thinking" {
            block.insert("signature".into(), "".into());
        }
        self.blocks.push(Value::Object(block));
        self.open = true;
    }

    fn end_block(&mut self) {
        self.open = false;
    }

    fn reasoning(&mut self, item: &Value) {
        self.end_block();
        let texts = |field: &str| -> Vec<&str> {
            item.get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .filter(|t| !t.is_empty())
                .collect()
        };
        let mut parts = texts("summary");
        parts.extend(texts("content"));
        let signature = item
            .get("encrypted_content")
            .and_then(Value::as_str)
            .unwrap_or("");
        if parts.is_empty() && signature.is_empty() {
            return;
        }
        self.blocks.push(json!({
            "type": "thinking",
            "thinking": parts.join("\n\n"),
            "signature": signature,
        }));
    }

    fn tool_use(&mut self, item: &Value, ctx: &ResponseContext) {
        self.end_block();
        let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
        let id = match s("call_id") {
            "" => s("id"),
            id => id,
        };
        // `input` must be an object: arguments that are empty, malformed or not an object
        // become `{}` (the tool then reports the missing parameters to the model).
        let input = match serde_json::from_str::<Value>(s("arguments")) {
            Ok(v @ Value::Object(_)) => v,
            _ => json!({}),
        };
        self.blocks.push(json!({
            "type": "tool_use",
            "id": ctx.client_call_id(id),
            "name": ctx.tool_names.original(s("name")),
            "input": input,
        }));
    }
}
