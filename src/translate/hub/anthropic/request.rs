//! A Responses request → an Anthropic Messages request (`docs/hub.md`).
//!
//! | Responses | Messages |
//! | --- | --- |
//! | (always) | `stream:true` |
//! | `model` | copied (already resolved: suffixes, aliases and forced params were applied to the Responses request) |
//! | `instructions`, `system` / `developer` messages (anywhere in `input`) | `system` text blocks, in order |
//! | `input` as a string | one `user` message |
//! | user / assistant `input_text` / `output_text` parts | `text` blocks (empty texts skipped: Anthropic rejects them); an assistant `refusal` part is its text |
//! | `input_image` with a `data:` URL / an `http(s)` URL | `image{source:{type:"base64", media_type, data}}` / `image{source:{type:"url", url}}` |
//! | `input_file` with a PDF `data:` URL / `file_url` | `document{source:{type:"base64", media_type:"application/pdf", data}}` / `document{source:{type:"url"}}`, `title` = `filename` |
//! | `function_call{call_id, name, arguments}` | assistant `tool_use{id:call_id, name, input}` (`arguments` parsed; anything but a JSON object becomes `{}`) |
//! | `custom_tool_call{call_id, name, input}` | assistant `tool_use{id, name, input:{"input": input}}` |
//! | `function_call_output` / `custom_tool_call_output` | user `tool_result{tool_use_id, content}` (a string, or `text`/`image`/`document` blocks for an array), placed before any other content of that user message |
//! | `reasoning` whose `encrypted_content` is an Anthropic signature | assistant `thinking{thinking: summary texts (else `reasoning_text` parts) joined with "\n\n", signature}` |
//! | `reasoning` whose `encrypted_content` starts [`REDACTED_PREFIX`] | assistant `redacted_thinking{data}` |
//! | `reasoning` without `encrypted_content`, or with an OpenAI one (`gAAAA…`) | dropped: Anthropic cannot read it |
//! | `tools[type=function]` | `{name, description, input_schema: parameters}` (`{type:"object",properties:{}}` when absent) |
//! | `tools[type=custom]` (freeform) | `{name, description (+ the grammar, if any), input_schema: {input: string}}`; the decoder turns its `tool_use` back into a `custom_tool_call` |
//! | hosted tools (`web_search*`, `file_search`, `image_generation`, `code_interpreter`, `computer_use*`, `local_shell`, `mcp`, …) | dropped: the model is simply not offered them (a `tool_choice` naming one is a 400) |
//! | `tool_choice` `auto` / `none` / `required` / `{type:"function"\|"custom", name}` | `{type:"auto"}` / `{type:"none"}` / `{type:"any"}` / `{type:"tool", name}` (400 if the tool is not declared) |
//! | `parallel_tool_calls:false` | `tool_choice.disable_parallel_tool_use:true` |
//! | `max_output_tokens` | `max_tokens`; [`DEFAULT_MAX_TOKENS`] when absent (Anthropic requires it) |
//! | `reasoning.effort`, Claude before 4.6 and other model names ([`generation`]) | `thinking{type:"enabled", budget_tokens}` from [`thinking_budget`]: `none`/`minimal` off, `low` 1024, `medium` 8192, `high` 16384, `xhigh` 28672 |
//! | `reasoning.effort`, Claude 4.6 and later | `thinking{type:"adaptive"}` and `output_config.effort`: `none` off, `minimal`/`low` `low`, `medium`, `high`, `xhigh` `max` (4.7 and later refuse the budget form) |
//! | `reasoning.summary` (other than `none`), with adaptive thinking | `thinking.display:"summarized"` (from 4.7 on, the thinking text is otherwise left out) |
//! | `temperature`, `top_p` | copied; dropped when thinking is on (Anthropic allows no sampling changes with thinking) and for Claude 4.7 and later (which refuse them) |
//! | `safety_identifier`, else `user` | `metadata.user_id` (hashed when over 256 characters) |
//! | `prompt_cache_key` (the client asks for caching) | `cache_control:{type:"ephemeral"}` on the last system block, the last tool and the last block of the last message (Anthropic caches only at such breakpoints) |
//!
//! A conversation ending with an assistant turn (a prefill) has that turn's trailing whitespace
//! trimmed: Anthropic refuses it.
//!
//! Thinking is turned off (the request still goes) when Anthropic would refuse it: with a forced
//! tool choice (`required` or a named tool), when `max_tokens` leaves no room for the smallest
//! budget (the budget is at most half of `max_tokens`, at least 1024), and when the last
//! assistant turn calls a tool without starting with a signed thinking block (a conversation
//! begun on another model or a Chat client: Anthropic requires that block to continue a tool
//! loop with thinking on).
//!
//! Refused with a 400, because no faithful mapping exists: `previous_response_id`,
//! `conversation`, `background:true`, `prompt` (stored state on OpenAI's side);
//! `text.format` `json_schema` / `json_object`; `item_reference` and `compaction` input items
//! (OpenAI-side state); `input_image` / `input_file` by `file_id`; files other than PDF;
//! `input_audio`; a `tool_choice` of another kind; an `input` without any user or assistant
//! message. Dropped (no effect on the answer's
//! shape or no Anthropic equivalent that matters): `store`, `include`, `stream_options`,
//! `metadata`, `client_metadata`, `service_tier`, `text.verbosity`, `truncation`,
//! `reasoning.summary`, `top_logprobs`, `max_tool_calls`, `prompt_cache_retention`, an image's
//! `detail`, and records of hosted tool calls in `input` (`web_search_call`, …).
//!
//! Tool call ids: Anthropic's `toolu_…` ids come back as the `call_id`; any other id is mapped
//! by `tool_names::sanitize_call_id` (deterministic, so a call and its output still pair up).
//! A tool output that answers no earlier call is dropped, as are repeated calls and outputs for
//! one id.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::translate::error::TranslateError;
use crate::translate::schema;
use crate::translate::tool_names::{sanitize_call_id, stable_hash64};

use super::decode::MessagesDecoder;

/// `max_tokens` when the request sets no `max_output_tokens`: every current Claude model
/// accepts at least this many output tokens.
pub const DEFAULT_MAX_TOKENS: u64 = 32_000;

/// Anthropic's smallest thinking budget.
pub const MIN_THINKING_BUDGET: u64 = 1024;

/// How a `redacted_thinking` block's `data` is carried in a reasoning item's
/// `encrypted_content`: this prefix, then the data (`:` never occurs in a signature).
pub const REDACTED_PREFIX: &str = "anthropic-redacted:";

/// Longest `metadata.user_id` Anthropic accepts.
const MAX_USER_ID: usize = 256;

/// A Messages request mapped from a Responses request, plus what its decoder must know.
#[derive(Debug, Clone)]
pub struct MessagesRequest {
    /// The Messages request body; always `"stream": true`.
    pub body: Value,
    /// Names of the request's freeform (`custom`) tools, whose calls decode back to
    /// `custom_tool_call` items.
    custom_tools: Vec<String>,
}

impl MessagesRequest {
    /// A fresh decoder for one attempt's response stream.
    pub fn decoder(&self) -> MessagesDecoder {
        MessagesDecoder::new(self.custom_tools.clone())
    }

    /// The freeform tool names the decoder is given.
    pub fn custom_tools(&self) -> &[String] {
        &self.custom_tools
    }
}

/// The thinking budget for a `reasoning.effort` (module docs); `None` = thinking off. Each
/// budget maps back to its effort through `models::budget_effort`.
pub fn thinking_budget(effort: &str) -> Result<Option<u64>, TranslateError> {
    Ok(match effort {
        "none" | "minimal" => None,
        "low" => Some(1024),
        "medium" => Some(8192),
        "high" => Some(16_384),
        "xhigh" => Some(28_672),
        _ => {
            return Err(TranslateError::invalid(
                "reasoning.effort",
                "one of none, minimal, low, medium, high, xhigh",
            ))
        }
    })
}

/// How a model takes thinking, by its generation (`docs/hub.md`, "Thinking by model").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// Claude before 4.6, and models of other names served over the Messages wire:
    /// `thinking{type:"enabled", budget_tokens}`.
    Budget,
    /// Claude 4.6: `thinking{type:"adaptive"}` with `output_config.effort` (the budget form
    /// is deprecated there).
    Adaptive,
    /// Claude 4.7 and later, and Claude names without a version: adaptive thinking only, and
    /// no `temperature` / `top_p`.
    AdaptiveOnly,
}

/// The generation of a model name: `claude-` names are read for their version
/// (`claude-3-7-sonnet-…`, `claude-sonnet-4-5-…`, `claude-opus-4-…`, `claude-fable-5`; an
/// eight-digit date is not a version); other names take the budget form.
pub fn generation(model: &str) -> Generation {
    let Some(rest) = model.strip_prefix("claude-") else {
        return Generation::Budget;
    };
    let version = |t: &str| -> Option<u32> {
        (!t.is_empty() && t.len() <= 2 && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let tokens: Vec<&str> = rest.split('-').collect();
    let Some(at) = tokens.iter().position(|t| version(t).is_some()) else {
        return Generation::AdaptiveOnly;
    };
    let major = version(tokens[at]).unwrap_or(0);
    let minor = tokens.get(at + 1).and_then(|t| version(t)).unwrap_or(0);
    match (major, minor) {
        v if v < (4, 6) => Generation::Budget,
        (4, 6) => Generation::Adaptive,
        _ => Generation::AdaptiveOnly,
    }
}

/// The `output_config.effort` for a `reasoning.effort` under adaptive thinking; `None` =
/// thinking off.
fn adaptive_effort(effort: &str) -> Option<&'static str> {
    match effort {
        "minimal" | "low" => Some("low"),
        "medium" => Some("medium"),
        "high" => Some("high"),
        "xhigh" => Some("max"),
        _ => None,
    }
}

/// Maps a Responses request (as `Mapped.body` holds it) to a Messages request; see the
/// module docs.
pub fn map_request(request: &Value) -> Result<MessagesRequest, TranslateError> {
    let obj = request
        .as_object()
        .ok_or_else(|| TranslateError::invalid("body", "a JSON object"))?;
    refuse_stateful(obj)?;
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(TranslateError::invalid("model", "a non-empty string")),
    };

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.clone()));

    let (tools, custom_tools, hosted) = map_tools(obj.get("tools"))?;
    let choice = map_tool_choice(obj, &tools, &custom_tools, &hosted)?;

    let mut conv = Conversation::default();
    if let Some(Value::String(text)) = obj.get("instructions") {
        conv.system_text(text);
    }
    match obj.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => conv.push("user", text_block(text)),
        Some(Value::Array(items)) => {
            for item in items {
                conv.item(item)?;
            }
        }
        Some(_) => return Err(TranslateError::invalid("input", "a string or an array")),
    }
    let Conversation {
        system,
        mut messages,
        ..
    } = conv;
    trim_prefill(&mut messages);
    if messages.is_empty() {
        return Err(TranslateError::invalid(
            "input",
            "at least one user or assistant message (Anthropic takes no request without one)",
        ));
    }

    let max_tokens = match obj.get("max_output_tokens") {
        None | Some(Value::Null) => DEFAULT_MAX_TOKENS,
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| TranslateError::invalid("max_output_tokens", "a positive integer"))?,
    };
    let effort = obj
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str);
    let budget = match effort {
        Some(e) => thinking_budget(e)?,
        None => None,
    };
    // The client wants the reasoning's text: from 4.7 on, adaptive thinking leaves it out
    // unless asked.
    let summary = obj
        .get("reasoning")
        .and_then(|r| r.get("summary"))
        .and_then(Value::as_str)
        .is_some_and(|s| s != "none");
    let forced = choice
        .as_ref()
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t == "any" || t == "tool");
    let allowed = !forced && !tool_loop_without_thinking(&messages);
    let generation = generation(&model);
    let thinking = match generation {
        Generation::Budget => budget
            .map(|b| if b < max_tokens { b } else { max_tokens / 2 })
            .filter(|b| *b >= MIN_THINKING_BUDGET)
            .filter(|_| allowed)
            .map(|b| (json!({"type": "enabled", "budget_tokens": b}), None)),
        Generation::Adaptive | Generation::AdaptiveOnly => effort
            .and_then(adaptive_effort)
            .filter(|_| allowed)
            .map(|e| {
                let mut thinking = json!({"type": "adaptive"});
                if summary {
                    thinking["display"] = "summarized".into();
                }
                (thinking, Some(json!({ "effort": e })))
            }),
    };

    let cache = obj
        .get("prompt_cache_key")
        .and_then(Value::as_str)
        .is_some_and(|k| !k.is_empty());
    let mut system = system;
    let mut tools = tools;
    if cache {
        mark_cache(system.last_mut());
        mark_cache(tools.last_mut());
        mark_cache(
            messages
                .last_mut()
                .and_then(|m| m.get_mut("content"))
                .and_then(Value::as_array_mut)
                .and_then(|blocks| blocks.iter_mut().rev().find(|b| cacheable(b))),
        );
    }

    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), max_tokens.into());
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = choice {
            out.insert("tool_choice".into(), choice);
        }
    }
    let sampling = thinking.is_none() && generation != Generation::AdaptiveOnly;
    if let Some((thinking, output_config)) = thinking {
        out.insert("thinking".into(), thinking);
        if let Some(config) = output_config {
            out.insert("output_config".into(), config);
        }
    }
    if sampling {
        for key in ["temperature", "top_p"] {
            if let Some(v) = obj.get(key).filter(|v| v.is_number()) {
                out.insert(key.into(), v.clone());
            }
        }
    }
    let user = ["safety_identifier", "user"].iter().find_map(|k| {
        obj.get(*k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    });
    if let Some(user) = user {
        let id = if user.len() <= MAX_USER_ID {
            user.to_owned()
        } else {
            format!(
                "{:016x}{:016x}",
                stable_hash64(user.as_bytes(), 0),
                stable_hash64(user.as_bytes(), 1)
            )
        };
        out.insert("metadata".into(), json!({ "user_id": id }));
    }
    out.insert("stream".into(), Value::Bool(true));
    Ok(MessagesRequest {
        body: Value::Object(out),
        custom_tools,
    })
}

/// The 400s for request fields that refer to state kept on OpenAI's side or ask for an
/// output shape Anthropic cannot promise.
fn refuse_stateful(obj: &Map<String, Value>) -> Result<(), TranslateError> {
    const STATE: &str = "Anthropic providers keep no server-side state; send the whole input.";
    for key in ["previous_response_id", "conversation", "prompt"] {
        if obj.get(key).is_some_and(|v| !v.is_null()) {
            return Err(TranslateError::unsupported(key, STATE));
        }
    }
    if obj.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(TranslateError::unsupported(
            "background",
            "Anthropic providers answer in the foreground only.",
        ));
    }
    let format = obj
        .get("text")
        .and_then(|t| t.get("format"))
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str);
    if let Some(kind @ ("json_schema" | "json_object")) = format {
        return Err(TranslateError::unsupported(
            "text.format",
            if kind == "json_schema" {
                "Anthropic providers cannot enforce a JSON schema on the answer."
            } else {
                "Anthropic providers have no JSON mode."
            },
        ));
    }
    Ok(())
}

/// A conversation that ends with an assistant turn asks Anthropic to continue that text (a
/// prefill), and Anthropic refuses a prefill that ends in whitespace: the whitespace is
/// trimmed, and a turn left empty is removed.
fn trim_prefill(messages: &mut Vec<Value>) {
    let Some(last) = messages.last_mut() else {
        return;
    };
    if last.get("role").and_then(Value::as_str) != Some("assistant") {
        return;
    }
    let Some(blocks) = last.get_mut("content").and_then(Value::as_array_mut) else {
        return;
    };
    if let Some(Value::Object(block)) = blocks.last_mut() {
        if let Some(Value::String(text)) = block.get_mut("text") {
            let kept = text.trim_end().len();
            text.truncate(kept);
            if kept == 0 {
                blocks.pop();
            }
        }
    }
    if blocks.is_empty() {
        messages.pop();
    }
}

/// `cache_control` on a block, if there is one.
fn mark_cache(block: Option<&mut Value>) {
    if let Some(Value::Object(block)) = block {
        block.insert("cache_control".into(), json!({"type": "ephemeral"}));
    }
}

/// Blocks that may carry `cache_control` (thinking blocks may not).
fn cacheable(block: &Value) -> bool {
    matches!(
        block.get("type").and_then(Value::as_str),
        Some("text" | "image" | "document" | "tool_use" | "tool_result")
    )
}

/// True when the last assistant message calls a tool but does not start with a thinking
/// block: Anthropic refuses such a history with thinking on.
fn tool_loop_without_thinking(messages: &[Value]) -> bool {
    let Some(last) = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
    else {
        return false;
    };
    let blocks = last
        .get("content")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let kind = |b: &Value| b.get("type").and_then(Value::as_str).map(str::to_owned);
    let calls = blocks
        .iter()
        .any(|b| kind(b).as_deref() == Some("tool_use"));
    let starts_thinking = blocks
        .first()
        .and_then(kind)
        .is_some_and(|k| k == "thinking" || k == "redacted_thinking");
    calls && !starts_thinking
}

// === tools ===

/// Hosted tools: run by OpenAI, not by the client; the Anthropic model is not offered them.
fn is_hosted(kind: &str) -> bool {
    kind != "function" && kind != "custom"
}

type Tools = (Vec<Value>, Vec<String>, Vec<String>);

/// The Messages tools, the freeform tool names, and the hosted tool types that were dropped.
fn map_tools(tools: Option<&Value>) -> Result<Tools, TranslateError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(Default::default()),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(TranslateError::invalid("tools", "an array")),
    };
    let mut out = Vec::with_capacity(tools.len());
    let mut custom = Vec::new();
    let mut hosted = Vec::new();
    for tool in tools {
        let kind = tool
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::invalid("tools[].type", "a string"))?;
        if is_hosted(kind) {
            hosted.push(kind.to_owned());
            continue;
        }
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| TranslateError::invalid("tools[].name", "a non-empty string"))?;
        let description = tool.get("description").and_then(Value::as_str);
        let mut entry = Map::new();
        entry.insert("name".into(), name.into());
        if kind == "function" {
            if let Some(d) = description.filter(|d| !d.is_empty()) {
                entry.insert("description".into(), d.into());
            }
            let mut schema = match tool.get("parameters") {
                Some(p @ Value::Object(_)) => p.clone(),
                _ => schema::empty_object_schema(),
            };
            schema::repair(&mut schema);
            entry.insert("input_schema".into(), schema);
        } else {
            custom.push(name.to_owned());
            let mut text = description.unwrap_or("").to_owned();
            if let Some(format) = tool.get("format") {
                let definition = format.get("definition").and_then(Value::as_str);
                let syntax = format.get("syntax").and_then(Value::as_str).unwrap_or("");
                if let Some(definition) = definition {
                    text.push_str(&format!(
                        "\n\nThe `input` string must follow this {syntax} grammar:\n{definition}"
                    ));
                }
            }
            if !text.is_empty() {
                entry.insert("description".into(), text.into());
            }
            entry.insert(
                "input_schema".into(),
                json!({
                    "type": "object",
                    "properties": {"input": {"type": "string", "description": "The tool's raw input."}},
                    "required": ["input"],
                }),
            );
        }
        out.push(Value::Object(entry));
    }
    Ok((out, custom, hosted))
}

/// The Messages `tool_choice`, if the request says anything about it.
fn map_tool_choice(
    obj: &Map<String, Value>,
    tools: &[Value],
    custom: &[String],
    hosted: &[String],
) -> Result<Option<Value>, TranslateError> {
    let declared = |name: &str| {
        tools
            .iter()
            .any(|t| t.get("name").and_then(Value::as_str) == Some(name))
            || custom.iter().any(|c| c == name)
    };
    let mut choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            _ => {
                return Err(TranslateError::invalid(
                    "tool_choice",
                    "auto, none, required or a named tool",
                ))
            }
        }),
        Some(Value::Object(c)) => {
            let kind = c.get("type").and_then(Value::as_str).unwrap_or("");
            match kind {
                "function" | "custom" => {
                    let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                    if !declared(name) {
                        return Err(TranslateError::invalid(
                            "tool_choice.name",
                            "the name of a tool in `tools`",
                        ));
                    }
                    Some(json!({"type": "tool", "name": name}))
                }
                "allowed_tools" => {
                    return Err(TranslateError::unsupported(
                        "tool_choice",
                        "Anthropic providers have no allowed-tools choice.",
                    ))
                }
                other if hosted.iter().any(|h| h == other) || !other.is_empty() => {
                    return Err(TranslateError::unsupported(
                        "tool_choice",
                        "hosted tools are not offered to Anthropic models.",
                    ))
                }
                _ => return Err(TranslateError::invalid("tool_choice.type", "a string")),
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                "tool_choice",
                "a string or an object",
            ))
        }
    };
    if obj.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c.get("type").and_then(Value::as_str) != Some("none") {
            c["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    Ok(choice)
}

// === input ===

/// The conversation being built: system blocks, and messages whose consecutive same-role
/// content is merged (Anthropic wants alternating roles, tool results first in their turn).
#[derive(Default)]
struct Conversation {
    system: Vec<Value>,
    messages: Vec<Value>,
    /// Tool-use ids already in the conversation.
    calls: HashSet<String>,
    /// Tool-use ids already answered.
    answered: HashSet<String>,
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

impl Conversation {
    fn system_text(&mut self, text: &str) {
        if !text.is_empty() {
            self.system.push(text_block(text));
        }
    }

    /// Appends a block to the last message when it has `role`, else starts a message. A
    /// `tool_result` goes before the other blocks of its user message.
    fn push(&mut self, role: &str, block: Value) {
        if block.get("type").and_then(Value::as_str) == Some("text")
            && block.get("text").and_then(Value::as_str) == Some("")
        {
            return;
        }
        let is_result = block.get("type").and_then(Value::as_str) == Some("tool_result");
        if let Some(last) = self.messages.last_mut() {
            if last.get("role").and_then(Value::as_str) == Some(role) {
                if let Some(blocks) = last.get_mut("content").and_then(Value::as_array_mut) {
                    let at = if is_result {
                        blocks
                            .iter()
                            .position(|b| {
                                b.get("type").and_then(Value::as_str) != Some("tool_result")
                            })
                            .unwrap_or(blocks.len())
                    } else {
                        blocks.len()
                    };
                    blocks.insert(at, block);
                    return;
                }
            }
        }
        self.messages
            .push(json!({"role": role, "content": [block]}));
    }

    fn item(&mut self, item: &Value) -> Result<(), TranslateError> {
        let kind = item.get("type").and_then(Value::as_str);
        match kind {
            Some("message") => self.message(item),
            None if item.get("role").is_some() => self.message(item),
            Some("function_call") | Some("custom_tool_call") => {
                let id = call_id(item)?;
                let name = item
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| TranslateError::invalid("input[].name", "a non-empty string"))?;
                if !self.calls.insert(id.clone()) {
                    return Ok(());
                }
                let input = if kind == Some("function_call") {
                    let args = item.get("arguments").and_then(Value::as_str).unwrap_or("");
                    match serde_json::from_str::<Value>(args) {
                        Ok(v @ Value::Object(_)) => v,
                        _ => json!({}),
                    }
                } else {
                    let input = item.get("input").and_then(Value::as_str).unwrap_or("");
                    json!({ "input": input })
                };
                self.push(
                    "assistant",
                    json!({"type": "tool_use", "id": id, "name": name, "input": input}),
                );
                Ok(())
            }
            Some("function_call_output") | Some("custom_tool_call_output") => {
                let id = call_id(item)?;
                if !self.calls.contains(&id) || !self.answered.insert(id.clone()) {
                    return Ok(()); // an orphan or a repeat
                }
                let mut block = Map::new();
                block.insert("type".into(), "tool_result".into());
                block.insert("tool_use_id".into(), id.into());
                match item.get("output") {
                    Some(Value::String(s)) if !s.is_empty() => {
                        block.insert("content".into(), s.as_str().into());
                    }
                    Some(Value::Array(parts)) => {
                        let mut content = Vec::with_capacity(parts.len());
                        for part in parts {
                            content.extend(content_part(part, "user")?);
                        }
                        if !content.is_empty() {
                            block.insert("content".into(), Value::Array(content));
                        }
                    }
                    _ => {}
                }
                self.push("user", Value::Object(block));
                Ok(())
            }
            Some("reasoning") => {
                if let Some(block) = thinking_block(item) {
                    self.push("assistant", block);
                }
                Ok(())
            }
            Some("item_reference") | Some("compaction") => Err(TranslateError::unsupported(
                "input[].type",
                "items stored on OpenAI's side mean nothing to an Anthropic provider.",
            )),
            // Records of hosted tool calls: the model was not offered those tools.
            Some(_) => Ok(()),
            None => Err(TranslateError::invalid("input[].type", "a string")),
        }
    }

    fn message(&mut self, item: &Value) -> Result<(), TranslateError> {
        let role = item.get("role").and_then(Value::as_str).unwrap_or("");
        let role = match role {
            "system" | "developer" => {
                for block in content_blocks(item.get("content"), "user")? {
                    if let Some(t) = block.get("text").and_then(Value::as_str) {
                        self.system_text(t);
                    }
                }
                return Ok(());
            }
            "user" => "user",
            "assistant" => "assistant",
            _ => {
                return Err(TranslateError::invalid(
                    "input[].role",
                    "user, assistant, system or developer",
                ))
            }
        };
        for block in content_blocks(item.get("content"), role)? {
            self.push(role, block);
        }
        Ok(())
    }
}

fn call_id(item: &Value) -> Result<String, TranslateError> {
    let id = item
        .get("call_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| TranslateError::invalid("input[].call_id", "a non-empty string"))?;
    Ok(sanitize_call_id(id).into_owned())
}

/// A `reasoning` item as a thinking block, when it carries something Anthropic minted.
fn thinking_block(item: &Value) -> Option<Value> {
    let carried = item
        .get("encrypted_content")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())?;
    if let Some(data) = carried.strip_prefix(REDACTED_PREFIX) {
        return Some(json!({"type": "redacted_thinking", "data": data}));
    }
    if carried.starts_with("gAAAA") {
        return None; // an OpenAI reasoning ciphertext
    }
    let texts = |key: &str, part: &str| -> Vec<&str> {
        item.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some(part))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect()
    };
    let mut parts = texts("summary", "summary_text");
    if parts.is_empty() {
        parts = texts("content", "reasoning_text");
    }
    Some(json!({"type": "thinking", "thinking": parts.join("\n\n"), "signature": carried}))
}

/// A message's `content` (a string or parts) as blocks.
fn content_blocks(content: Option<&Value>, role: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![text_block(s)]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for part in parts {
                out.extend(content_part(part, role)?);
            }
            Ok(out)
        }
        Some(_) => Err(TranslateError::invalid(
            "input[].content",
            "a string or an array",
        )),
    }
}

/// One content part as a block (`None`: nothing to send).
fn content_part(part: &Value, role: &str) -> Result<Option<Value>, TranslateError> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    Ok(match kind {
        "input_text" | "output_text" | "text" => part
            .get("text")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(text_block),
        "refusal" => part
            .get("refusal")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(text_block),
        "input_image" if role == "user" => Some(image_block(part)?),
        "input_file" if role == "user" => Some(document_block(part)?),
        "input_image" | "input_file" => None, // assistant turns carry no media
        "input_audio" => {
            return Err(TranslateError::unsupported(
                "input_audio",
                "Anthropic models take no audio input.",
            ))
        }
        _ => {
            return Err(TranslateError::invalid(
                "input[].content[].type",
                "input_text, output_text, refusal, input_image or input_file",
            ))
        }
    })
}

/// A `data:<media type>;base64,<data>` URL, split.
fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (media, data) = rest.split_once(',')?;
    let media = media.strip_suffix(";base64")?;
    Some((media, data))
}

fn is_http(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

fn image_block(part: &Value) -> Result<Value, TranslateError> {
    let url = match part.get("image_url") {
        Some(Value::String(u)) => Some(u.as_str()),
        Some(Value::Object(o)) => o.get("url").and_then(Value::as_str),
        _ => None,
    };
    let Some(url) = url else {
        if part.get("file_id").is_some() {
            return Err(TranslateError::unsupported(
                "input_image.file_id",
                "files stored on OpenAI's side mean nothing to an Anthropic provider.",
            ));
        }
        return Err(TranslateError::invalid("input_image.image_url", "a URL"));
    };
    if let Some((media_type, data)) = data_url(url) {
        return Ok(json!({"type": "image", "source": {
            "type": "base64", "media_type": media_type, "data": data}}));
    }
    if is_http(url) {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(TranslateError::invalid(
        "input_image.image_url",
        "a base64 data URL or an http(s) URL",
    ))
}

fn document_block(part: &Value) -> Result<Value, TranslateError> {
    let source = if let Some(data) = part.get("file_data").and_then(Value::as_str) {
        match data_url(data) {
            Some(("application/pdf", data)) => {
                json!({"type": "base64", "media_type": "application/pdf", "data": data})
            }
            _ => {
                return Err(TranslateError::unsupported(
                    "input_file.file_data",
                    "Anthropic providers take PDF files, as a base64 data URL.",
                ))
            }
        }
    } else if let Some(url) = part
        .get("file_url")
        .and_then(Value::as_str)
        .filter(|u| is_http(u))
    {
        json!({"type": "url", "url": url})
    } else if part.get("file_id").is_some() {
        return Err(TranslateError::unsupported(
            "input_file.file_id",
            "files stored on OpenAI's side mean nothing to an Anthropic provider.",
        ));
    } else {
        return Err(TranslateError::invalid(
            "input_file",
            "a PDF as `file_data` or `file_url`",
        ));
    };
    let mut block = json!({"type": "document", "source": source});
    if let Some(name) = part
        .get("filename")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        block["title"] = name.into();
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::models::budget_effort;
    use serde_json::json;

    fn map(request: Value) -> Value {
        map_request(&request).unwrap().body
    }

    fn refused(request: Value) -> TranslateError {
        map_request(&request).unwrap_err()
    }

    fn base(extra: Value) -> Value {
        let mut r = json!({"model": "claude-sonnet-4-5", "stream": true, "input": "hi"});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    }

    #[test]
    fn a_minimal_request_streams_with_the_default_max_tokens() {
        assert_eq!(
            map(base(
                json!({"store": false, "include": ["reasoning.encrypted_content"],
                "client_metadata": {"a": "b"}, "service_tier": "priority",
                "text": {"verbosity": "low"}, "reasoning": {"summary": "auto"}})
            )),
            json!({"model": "claude-sonnet-4-5", "max_tokens": DEFAULT_MAX_TOKENS, "stream": true,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
        );
    }

    #[test]
    fn instructions_and_system_and_developer_messages_become_system_in_order() {
        let body = map(base(json!({"instructions": "one", "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "two"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]},
            {"role": "system", "content": "three"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a"}]},
        ]})));
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "one"}, {"type": "text", "text": "two"},
                {"type": "text", "text": "three"}])
        );
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [{"type": "text", "text": "q"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "a"}]}])
        );
    }

    #[test]
    fn consecutive_same_role_content_is_merged_and_empty_text_skipped() {
        let body = map(base(json!({"input": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "input_text", "text": ""}, {"type": "input_text", "text": "b"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        ]})));
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "no"}]}])
        );
    }

    #[test]
    fn a_final_assistant_prefill_loses_its_trailing_whitespace() {
        let body = map(base(json!({"input": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "Sure, here it is: \n"},
        ]})));
        assert_eq!(
            body["messages"][1],
            json!({"role": "assistant", "content": [{"type": "text", "text": "Sure, here it is:"}]})
        );
        let body = map(base(json!({"input": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "  "},
        ]})));
        assert_eq!(body["messages"].as_array().unwrap().len(), 1);
        // Earlier assistant turns keep theirs.
        let body = map(base(json!({"input": [
            {"role": "assistant", "content": "a "},
            {"role": "user", "content": "q "},
        ]})));
        assert_eq!(body["messages"][0]["content"][0]["text"], "a ");
        assert_eq!(body["messages"][1]["content"][0]["text"], "q ");
    }

    #[test]
    fn a_request_without_any_message_is_refused_locally() {
        let e = refused(base(
            json!({"input": [{"role": "developer", "content": "only rules"}]}),
        ));
        assert_eq!((e.status, e.code), (400, "invalid_request"));
        assert!(e.message.contains("input"), "{}", e.message);
    }

    #[test]
    fn images_by_data_url_and_by_http_url() {
        let body = map(base(json!({"input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0K", "detail": "high"},
            {"type": "input_image", "image_url": "https://example.com/cat.jpg"},
        ]}]})));
        assert_eq!(
            body["messages"][0]["content"],
            json!([
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ])
        );
        let e = refused(base(json!({"input": [{"role": "user", "content": [
            {"type": "input_image", "file_id": "file_1"}]}]})));
        assert_eq!((e.status, e.code), (400, "unsupported_parameter"));
        let e = refused(base(json!({"input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "ftp://x"}]}]})));
        assert_eq!(e.code, "invalid_request");
    }

    #[test]
    fn pdf_files_become_documents_and_other_files_are_refused() {
        let body = map(base(json!({"input": [{"role": "user", "content": [
            {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0", "filename": "a.pdf"},
            {"type": "input_file", "file_url": "https://example.com/b.pdf"},
        ]}]})));
        assert_eq!(
            body["messages"][0]["content"],
            json!([
                {"type": "document", "title": "a.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0"}},
                {"type": "document", "source": {"type": "url", "url": "https://example.com/b.pdf"}},
            ])
        );
        for part in [
            json!({"type": "input_file", "file_data": "data:text/plain;base64,aGk="}),
            json!({"type": "input_file", "file_id": "file_1"}),
            json!({"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}),
        ] {
            let e = refused(base(
                json!({"input": [{"role": "user", "content": [part]}]}),
            ));
            assert_eq!(e.code, "unsupported_parameter", "{part}");
        }
    }

    #[test]
    fn calls_and_outputs_pair_by_call_id_with_results_first_in_their_turn() {
        let body = map(base(json!({"input": [
            {"role": "user", "content": "run it"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"type": "function_call", "call_id": "toolu_1", "name": "shell", "arguments": "{\"cmd\":\"ls\"}"},
            {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "*** Begin"},
            {"type": "function_call", "call_id": "toolu_1", "name": "shell", "arguments": "{}"},
            {"role": "user", "content": "and then"},
            {"type": "function_call_output", "call_id": "toolu_1", "output": "a.txt"},
            {"type": "custom_tool_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "done"}]},
            {"type": "function_call_output", "call_id": "toolu_1", "output": "again"},
            {"type": "function_call_output", "call_id": "orphan", "output": "x"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        ]})));
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "run it"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "ok"},
                    {"type": "tool_use", "id": "toolu_1", "name": "shell", "input": {"cmd": "ls"}},
                    {"type": "tool_use", "id": "call_2", "name": "apply_patch", "input": {"input": "*** Begin"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "done"}]},
                    {"type": "text", "text": "and then"},
                ]},
            ])
        );
    }

    #[test]
    fn call_ids_outside_the_anthropic_charset_are_sanitised_the_same_on_both_sides() {
        let body = map(base(json!({"input": [
            {"type": "function_call", "call_id": "call.1", "name": "f", "arguments": "not json"},
            {"type": "function_call_output", "call_id": "call.1", "output": ""},
        ]})));
        let id = body["messages"][0]["content"][0]["id"].as_str().unwrap();
        assert!(id.starts_with("call_1_"), "{id}");
        assert_eq!(body["messages"][0]["content"][0]["input"], json!({}));
        assert_eq!(
            body["messages"][1]["content"][0],
            json!({"type": "tool_result", "tool_use_id": id})
        );
    }

    #[test]
    fn reasoning_items_carrying_anthropic_signatures_become_thinking_blocks() {
        let body = map(base(json!({"input": [
            {"role": "user", "content": "q"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Plan"}, {"type": "summary_text", "text": "More"}], "encrypted_content": "EqQBsig"},
            {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "raw"}], "encrypted_content": "Esig2"},
            {"type": "reasoning", "summary": [], "encrypted_content": "anthropic-redacted:opaque"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "gpt"}], "encrypted_content": "gAAAAB"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "unsigned"}]},
            {"type": "function_call", "call_id": "toolu_1", "name": "f", "arguments": "{}"},
        ]})));
        assert_eq!(
            body["messages"][1]["content"],
            json!([
                {"type": "thinking", "thinking": "Plan\n\nMore", "signature": "EqQBsig"},
                {"type": "thinking", "thinking": "raw", "signature": "Esig2"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
            ])
        );
    }

    #[test]
    fn function_and_custom_tools_are_mapped_and_hosted_tools_dropped() {
        let body = map(base(json!({"tools": [
            {"type": "function", "name": "shell", "description": "Run", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}, "strict": false},
            {"type": "function", "name": "noargs"},
            {"type": "custom", "name": "apply_patch", "description": "Patch", "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}},
            {"type": "web_search"},
            {"type": "local_shell"},
        ]})));
        assert_eq!(
            body["tools"],
            json!([
                {"name": "shell", "description": "Run", "input_schema": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
                {"name": "noargs", "input_schema": {"type": "object", "properties": {}}},
                {"name": "apply_patch", "description": "Patch\n\nThe `input` string must follow this lark grammar:\nstart: x",
                 "input_schema": {"type": "object", "properties": {"input": {"type": "string", "description": "The tool's raw input."}}, "required": ["input"]}},
            ])
        );
        let mapped = map_request(&base(
            json!({"tools": [{"type": "custom", "name": "apply_patch"}]}),
        ))
        .unwrap();
        assert_eq!(mapped.custom_tools(), ["apply_patch".to_owned()]);
    }

    #[test]
    fn tool_choice_rows() {
        let tools = json!([{"type": "function", "name": "f"}, {"type": "custom", "name": "c"}, {"type": "web_search"}]);
        for (choice, parallel, expected) in [
            (json!("auto"), None, json!({"type": "auto"})),
            (json!("none"), Some(false), json!({"type": "none"})),
            (json!("required"), None, json!({"type": "any"})),
            (
                json!({"type": "function", "name": "f"}),
                None,
                json!({"type": "tool", "name": "f"}),
            ),
            (
                json!({"type": "custom", "name": "c"}),
                None,
                json!({"type": "tool", "name": "c"}),
            ),
            (
                Value::Null,
                Some(false),
                json!({"type": "auto", "disable_parallel_tool_use": true}),
            ),
            (
                json!("required"),
                Some(false),
                json!({"type": "any", "disable_parallel_tool_use": true}),
            ),
        ] {
            let mut r = base(json!({"tools": tools, "tool_choice": choice}));
            if let Some(p) = parallel {
                r["parallel_tool_calls"] = p.into();
            }
            assert_eq!(map(r)["tool_choice"], expected, "{choice}");
        }
        assert!(map(base(json!({"tools": tools})))
            .get("tool_choice")
            .is_none());
        // No tools offered: no tool_choice either (Anthropic refuses one without tools).
        assert!(map(base(json!({"tool_choice": "auto"})))
            .get("tool_choice")
            .is_none());
        for choice in [
            json!({"type": "function", "name": "missing"}),
            json!({"type": "web_search"}),
            json!({"type": "allowed_tools", "mode": "auto", "tools": []}),
            json!("sometimes"),
        ] {
            let e = refused(base(json!({"tools": tools, "tool_choice": choice})));
            assert_eq!(e.status, 400, "{choice}");
        }
    }

    #[test]
    fn effort_maps_to_a_thinking_budget_that_maps_back_to_the_same_effort() {
        for effort in ["low", "medium", "high", "xhigh"] {
            let budget = thinking_budget(effort).unwrap().unwrap();
            assert_eq!(budget_effort(budget as i64), effort);
            assert!(budget < DEFAULT_MAX_TOKENS);
            let body = map(base(
                json!({"reasoning": {"effort": effort, "summary": "auto"},
                "temperature": 0.2, "top_p": 0.5}),
            ));
            assert_eq!(
                body["thinking"],
                json!({"type": "enabled", "budget_tokens": budget})
            );
            assert!(body.get("temperature").is_none() && body.get("top_p").is_none());
        }
        for effort in ["none", "minimal"] {
            let body = map(base(
                json!({"reasoning": {"effort": effort}, "temperature": 0.2}),
            ));
            assert!(body.get("thinking").is_none());
            assert_eq!(body["temperature"], 0.2);
        }
        assert_eq!(
            refused(base(json!({"reasoning": {"effort": "max"}}))).code,
            "invalid_request"
        );
    }

    #[test]
    fn model_generations_choose_the_thinking_form() {
        for (model, form) in [
            ("claude-3-7-sonnet-20250219", Generation::Budget),
            ("claude-sonnet-4-20250514", Generation::Budget),
            ("claude-opus-4-1", Generation::Budget),
            ("claude-opus-4-1-20250805", Generation::Budget),
            ("claude-sonnet-4-5-20250929", Generation::Budget),
            ("claude-haiku-4-5", Generation::Budget),
            ("claude-sonnet-4-6", Generation::Adaptive),
            ("claude-opus-4-6-20260201", Generation::Adaptive),
            ("claude-opus-4-7", Generation::AdaptiveOnly),
            ("claude-opus-4-8", Generation::AdaptiveOnly),
            ("claude-fable-5", Generation::AdaptiveOnly),
            ("claude-mythos-preview", Generation::AdaptiveOnly),
            ("deepseek-chat", Generation::Budget),
            ("kimi-k2", Generation::Budget),
        ] {
            assert_eq!(generation(model), form, "{model}");
        }
    }

    #[test]
    fn models_from_4_6_get_adaptive_thinking_with_an_effort() {
        for (model, effort, output_effort) in [
            ("claude-sonnet-4-6", "low", "low"),
            ("claude-opus-4-8", "minimal", "low"),
            ("claude-opus-4-8", "medium", "medium"),
            ("claude-opus-4-8", "high", "high"),
            ("claude-opus-4-8", "xhigh", "max"),
        ] {
            let body = map(
                json!({"model": model, "input": "q", "max_output_tokens": 100,
                "reasoning": {"effort": effort}}),
            );
            assert_eq!(
                body["thinking"],
                json!({"type": "adaptive"}),
                "{model} {effort}"
            );
            assert_eq!(body["output_config"], json!({"effort": output_effort}));
        }
        let body =
            map(json!({"model": "claude-opus-4-8", "input": "q", "reasoning": {"effort": "none"}}));
        assert!(body.get("thinking").is_none() && body.get("output_config").is_none());
        // Forced tools still turn it off.
        let body = map(
            json!({"model": "claude-sonnet-4-6", "input": "q", "reasoning": {"effort": "high"},
            "tools": [{"type": "function", "name": "f"}], "tool_choice": "required"}),
        );
        assert!(body.get("thinking").is_none());
    }

    #[test]
    fn a_requested_reasoning_summary_asks_adaptive_thinking_for_summarized_display() {
        let body = map(json!({"model": "claude-opus-4-8", "input": "q",
            "reasoning": {"effort": "high", "summary": "auto"}}));
        assert_eq!(
            body["thinking"],
            json!({"type": "adaptive", "display": "summarized"})
        );
        let body = map(json!({"model": "claude-opus-4-8", "input": "q",
            "reasoning": {"effort": "high", "summary": "none"}}));
        assert_eq!(body["thinking"], json!({"type": "adaptive"}));
        // The budget form predates `display` (summaries are its default).
        let body = map(json!({"model": "claude-sonnet-4-5", "input": "q",
            "reasoning": {"effort": "high", "summary": "detailed"}}));
        assert!(body["thinking"].get("display").is_none());
    }

    #[test]
    fn models_from_4_7_take_no_sampling_parameters() {
        let body = map(
            json!({"model": "claude-opus-4-8", "input": "q", "temperature": 0.2, "top_p": 0.9}),
        );
        assert!(body.get("temperature").is_none() && body.get("top_p").is_none());
        let body = map(json!({"model": "claude-sonnet-4-6", "input": "q", "temperature": 0.2}));
        assert_eq!(body["temperature"], 0.2);
    }

    #[test]
    fn thinking_is_off_where_anthropic_would_refuse_it() {
        let high = json!({"effort": "high"});
        // A small max_output_tokens: the budget is at most half of it, at least 1024.
        let body = map(base(json!({"reasoning": high, "max_output_tokens": 10000})));
        assert_eq!(body["max_tokens"], 10000);
        assert_eq!(body["thinking"]["budget_tokens"], 5000);
        let body = map(base(json!({"reasoning": high, "max_output_tokens": 2000})));
        assert!(body.get("thinking").is_none());
        // A forced tool.
        let body = map(base(
            json!({"reasoning": high, "tools": [{"type": "function", "name": "f"}],
            "tool_choice": "required"}),
        ));
        assert!(body.get("thinking").is_none());
        // A tool loop begun without a signed thinking block.
        let history = json!([
            {"role": "user", "content": "q"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "r"},
        ]);
        let body = map(base(json!({"reasoning": high, "input": history})));
        assert!(body.get("thinking").is_none());
        let mut signed = history.as_array().unwrap().clone();
        signed.insert(
            1,
            json!({"type": "reasoning", "summary": [], "encrypted_content": "Esig"}),
        );
        let body = map(base(json!({"reasoning": high, "input": signed})));
        assert_eq!(body["thinking"]["budget_tokens"], 16_384);
    }

    #[test]
    fn max_output_tokens_and_sampling_are_copied() {
        let body = map(base(
            json!({"max_output_tokens": 500, "temperature": 0.3, "top_p": 0.9}),
        ));
        assert_eq!(
            (&body["max_tokens"], &body["temperature"], &body["top_p"]),
            (&json!(500), &json!(0.3), &json!(0.9))
        );
        assert_eq!(
            refused(base(json!({"max_output_tokens": 0}))).code,
            "invalid_request"
        );
    }

    #[test]
    fn the_user_becomes_metadata_user_id() {
        assert_eq!(
            map(base(json!({"user": "u1"})))["metadata"],
            json!({"user_id": "u1"})
        );
        assert_eq!(
            map(base(json!({"user": "u1", "safety_identifier": "s1"})))["metadata"],
            json!({"user_id": "s1"})
        );
        let long = "x".repeat(300);
        let id = map(base(json!({"user": long})))["metadata"]["user_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(id.len(), 32);
        assert!(!id.contains('x'));
    }

    #[test]
    fn a_prompt_cache_key_sets_cache_breakpoints() {
        let body = map(base(
            json!({"prompt_cache_key": "thread-1", "instructions": "sys",
            "tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}],
            "input": [
                {"role": "user", "content": "q"},
                {"type": "reasoning", "summary": [], "encrypted_content": "Esig"},
                {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "r"},
            ]}),
        ));
        let ephemeral = json!({"type": "ephemeral"});
        assert_eq!(body["system"][0]["cache_control"], ephemeral);
        assert!(body["tools"][0].get("cache_control").is_none());
        assert_eq!(body["tools"][1]["cache_control"], ephemeral);
        assert_eq!(
            body["messages"][2]["content"][0]["cache_control"],
            ephemeral
        );
        assert!(body["messages"][1]["content"][0]
            .get("cache_control")
            .is_none());
        let plain = map(base(json!({"instructions": "sys"})));
        assert!(plain["system"][0].get("cache_control").is_none());
    }

    #[test]
    fn stateful_and_unenforceable_requests_are_refused() {
        for extra in [
            json!({"previous_response_id": "resp_1"}),
            json!({"conversation": "conv_1"}),
            json!({"background": true}),
            json!({"prompt": {"id": "pmpt_1"}}),
            json!({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}),
            json!({"text": {"format": {"type": "json_object"}}}),
            json!({"input": [{"type": "item_reference", "id": "msg_1"}]}),
            json!({"input": [{"type": "compaction", "encrypted_content": "gAAAA"}]}),
        ] {
            let e = refused(base(extra.clone()));
            assert_eq!(
                (e.status, e.code),
                (400, "unsupported_parameter"),
                "{extra}"
            );
        }
        assert!(map_request(&base(json!({"text": {"format": {"type": "text"}}}))).is_ok());
        assert_eq!(refused(json!({"input": "x"})).code, "invalid_request");
        assert_eq!(refused(json!([])).code, "invalid_request");
    }
}
