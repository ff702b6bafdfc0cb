//! Chat Completions ⇄ Responses.
//!
//! * [`request`]: a Chat request → a streaming Responses request (mapping rules and the
//!   documented refusals are listed there).
//! * [`stream`]: Responses events → `chat.completion.chunk` events, one upstream event at a time.
//! * [`render`]: an aggregated stream → a `chat.completion` object (non-streaming clients).
//!
//! Choices shared by both response paths (`docs/translation.md`, "Responses events → Chat
//! Completions"):
//! * `id` is `chatcmpl-` plus the upstream response id (without its `resp_` prefix); `model`
//!   is the name the client asked for (an alias stays an alias), stream and non-stream alike.
//! * `finish_reason`: `tool_calls` when a call was emitted, else `content_filter` when the
//!   answer was a refusal, else `stop`; `response.incomplete` gives `length`
//!   (`max_output_tokens`) or `content_filter`. A stop sequence is never invented (the
//!   request side refuses `stop`).
//! * Usage: `prompt_tokens` = `input_tokens` (cached included), `completion_tokens` =
//!   `output_tokens` (reasoning included), details copied only when the upstream gave them.
//!   Streams carry it only with `stream_options.include_usage`, in one extra chunk with
//!   `choices:[]` just before `[DONE]`.

pub mod render;
pub mod request;
pub mod stream;

use serde_json::{Map, Value};

pub use request::map_request;
pub use stream::ChatStream;

use super::aggregate::Aggregate;
use super::{DialectParts, Rendered, ResponseContext, StreamTranslator};

/// The Chat dialect's [`DialectParts`].
#[derive(Debug)]
pub struct ChatParts;

/// The one instance, for [`ResponseContext::parts`].
pub static PARTS: ChatParts = ChatParts;

impl DialectParts for ChatParts {
    fn stream(&self, ctx: &ResponseContext) -> Box<dyn StreamTranslator> {
        Box::new(ChatStream::new(ctx.clone()))
    }

    fn render(&self, ctx: &ResponseContext, aggregate: Aggregate) -> Rendered {
        render::render(ctx, aggregate)
    }
}

/// The Chat completion id for an upstream response id.
fn completion_id(response_id: Option<&str>) -> String {
    match response_id {
        Some(id) if !id.is_empty() => {
            format!("chatcmpl-{}", id.strip_prefix("resp_").unwrap_or(id))
        }
        _ => format!("chatcmpl-{:016x}", now_nanos()),
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Unix seconds now: `created` when the upstream gave no `created_at`.
fn now_secs() -> i64 {
    i64::try_from(now_nanos() / 1_000_000_000).unwrap_or(0)
}

/// The `finish_reason` for a finished response.
fn finish_reason(incomplete: Option<Option<&str>>, any_call: bool, refusal: bool) -> &'static str {
    match incomplete {
        Some(Some("content_filter")) => "content_filter",
        Some(_) => "length",
        None if any_call => "tool_calls",
        None if refusal => "content_filter",
        None => "stop",
    }
}

/// Responses `usage` → Chat `usage` (module docs). `None` when the upstream sent none.
fn chat_usage(usage: &Value) -> Option<Value> {
    let u = usage.as_object()?;
    let n = |v: Option<&Value>| v.and_then(Value::as_u64);
    let input = n(u.get("input_tokens")).unwrap_or(0);
    let output = n(u.get("output_tokens")).unwrap_or(0);
    let mut m = Map::new();
    m.insert("prompt_tokens".into(), input.into());
    m.insert("completion_tokens".into(), output.into());
    m.insert(
        "total_tokens".into(),
        n(u.get("total_tokens")).unwrap_or(input + output).into(),
    );
    if let Some(cached) = n(u
        .get("input_tokens_details")
        .and_then(|d| d.get("cached_tokens")))
    {
        m.insert(
            "prompt_tokens_details".into(),
            serde_json::json!({ "cached_tokens": cached }),
        );
    }
    if let Some(reasoning) = n(u
        .get("output_tokens_details")
        .and_then(|d| d.get("reasoning_tokens")))
    {
        m.insert(
            "completion_tokens_details".into(),
            serde_json::json!({ "reasoning_tokens": reasoning }),
        );
    }
    Some(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_maps_cached_and_reasoning_tokens_without_inventing_fields() {
        assert_eq!(
            chat_usage(
                &json!({"input_tokens":100,"input_tokens_details":{"cached_tokens":80},
                "output_tokens":50,"output_tokens_details":{"reasoning_tokens":30},"total_tokens":150})
            ),
            Some(
                json!({"prompt_tokens":100,"completion_tokens":50,"total_tokens":150,
                "prompt_tokens_details":{"cached_tokens":80},"completion_tokens_details":{"reasoning_tokens":30}})
            )
        );
        assert_eq!(
            chat_usage(&json!({"input_tokens":1,"output_tokens":2})),
            Some(json!({"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}))
        );
        assert_eq!(chat_usage(&Value::Null), None);
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason(None, true, true), "tool_calls");
        assert_eq!(finish_reason(None, false, true), "content_filter");
        assert_eq!(finish_reason(None, false, false), "stop");
        assert_eq!(
            finish_reason(Some(Some("max_output_tokens")), true, false),
            "length"
        );
        assert_eq!(finish_reason(Some(None), false, false), "length");
        assert_eq!(
            finish_reason(Some(Some("content_filter")), false, false),
            "content_filter"
        );
    }

    #[test]
    fn completion_ids() {
        assert_eq!(completion_id(Some("resp_abc")), "chatcmpl-abc");
        assert_eq!(completion_id(Some("xyz")), "chatcmpl-xyz");
        assert!(completion_id(None).starts_with("chatcmpl-"));
    }
}
