//! An aggregated stream → a `chat.completion` object (non-streaming Chat clients).
//!
//! One choice holds everything: all text of all message items (every `output_text` part),
//! all reasoning (every summary part, `"\n\n"` between parts) as `reasoning_content`, every
//! call in `tool_calls` with its original name, refusals in `refusal`. Failures become the
//! OpenAI error shape with the failure's status; an interrupted stream has its interruption's
//! status and code (502 for a cut, 504 for a timeout);
//! `response.incomplete` is a 200 with `finish_reason` `length` or `content_filter`.

use serde_json::{json, Map, Value};

use super::{chat_usage, completion_id, finish_reason, now_secs};
use crate::translate::aggregate::{Aggregate, Outcome};
use crate::translate::think::{ThinkFilter, ThinkPiece};
use crate::translate::{error_body, Dialect, Rendered, ResponseContext};

/// Renders the aggregate for a Chat client; see the module docs.
pub fn render(ctx: &ResponseContext, aggregate: Aggregate) -> Rendered {
    let incomplete = match &aggregate.outcome {
        Outcome::Completed => None,
        Outcome::Incomplete { reason } => Some(reason.clone()),
        Outcome::Failed(f) => {
            return Rendered {
                status: f.status,
                body: error_body(Dialect::Chat, f.status, &f.code, &f.message),
            }
        }
        Outcome::Truncated { cause, message } => {
            return Rendered {
                status: cause.status(),
                body: error_body(Dialect::Chat, cause.status(), cause.code(), message),
            }
        }
    };
    let mut text = String::new();
    let mut reasoning: Vec<String> = Vec::new();
    let mut refusal = String::new();
    let mut tool_calls = Vec::new();
    let mut think = ThinkFilter::new(ctx.think);
    let mut think_reasoning = String::new();
    let mut on_piece = |p: ThinkPiece<'_>, text: &mut String| match p {
        ThinkPiece::Text(t) => text.push_str(t),
        ThinkPiece::Reasoning(r) => think_reasoning.push_str(r),
    };
    for item in aggregate.output() {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match part.get("type").and_then(Value::as_str) {
                        Some("output_text") => {
                            if let Some(t) = part.get("text").and_then(Value::as_str) {
                                think.push(t, |p| on_piece(p, &mut text));
                            }
                        }
                        Some("refusal") => {
                            if let Some(r) = part.get("refusal").and_then(Value::as_str) {
                                refusal.push_str(r);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Some("reasoning") => {
                let parts = |key: &str| -> Vec<String> {
                    item.get(key)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect()
                };
                let summary = parts("summary");
                if summary.is_empty() {
                    reasoning.extend(parts("content"));
                } else {
                    reasoning.extend(summary);
                }
            }
            Some(kind @ ("function_call" | "custom_tool_call")) => {
                let id = item
                    .get("call_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
                let name = ctx.tool_names.original(name);
                if kind == "function_call" {
                    let args = item.get("arguments").and_then(Value::as_str).unwrap_or("");
                    tool_calls.push(json!({"id":id,"type":"function","function":{"name":name,"arguments":args}}));
                } else {
                    let input = item.get("input").and_then(Value::as_str).unwrap_or("");
                    tool_calls.push(
                        json!({"id":id,"type":"custom","custom":{"name":name,"input":input}}),
                    );
                }
            }
            _ => {}
        }
    }
    think.finish(|p| on_piece(p, &mut text));
    if !think_reasoning.is_empty() {
        reasoning.push(think_reasoning);
    }
    let reason = finish_reason(
        incomplete.as_ref().map(Option::as_deref),
        !tool_calls.is_empty(),
        !refusal.is_empty(),
    );
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    let content = if text.is_empty() && (!tool_calls.is_empty() || !refusal.is_empty()) {
        Value::Null
    } else {
        Value::String(text)
    };
    message.insert("content".into(), content);
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), reasoning.join("\n\n").into());
    }
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    message.insert(
        "refusal".into(),
        if refusal.is_empty() {
            Value::Null
        } else {
            refusal.into()
        },
    );
    let response = &aggregate.response;
    let created = response
        .get("created_at")
        .and_then(Value::as_f64)
        .map_or_else(now_secs, |t| t as i64);
    let mut body = Map::new();
    body.insert(
        "id".into(),
        completion_id(response.get("id").and_then(Value::as_str)).into(),
    );
    body.insert("object".into(), "chat.completion".into());
    body.insert("created".into(), created.into());
    body.insert("model".into(), ctx.model.as_str().into());
    body.insert(
        "choices".into(),
        json!([{"index":0,"message":Value::Object(message),"finish_reason":reason,"logprobs":null}]),
    );
    if let Some(usage) = aggregate.usage().and_then(chat_usage) {
        body.insert("usage".into(), usage);
    }
    Rendered {
        status: 200,
        body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
    }
}
