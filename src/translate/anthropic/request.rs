//! Anthropic Messages request → Responses request.
//!
//! | Messages | Responses |
//! | --- | --- |
//! | `system` (string or text blocks) | one `developer` message at the start of `input` (blocks joined with `"\n\n"`; lines starting `x-anthropic-billing-header:` removed: Claude Code's volatile attribution line would defeat prompt caching) |
//! | `messages[role=system]` | a `user` message |
//! | `text` | `input_text` (user) / `output_text` (assistant) |
//! | `image` (`base64`, `url`; also the `source.base64` / `mime_type` variants) | `input_image` with a data URL or the URL |
//! | `document` (`base64` PDF, `url`, `text`, `content`) | `input_file{file_data, filename}` / `input_file{file_url}` / `input_text` |
//! | assistant `tool_use` | `function_call{call_id, name, arguments}` in place, after any text before it |
//! | user `tool_result` | `function_call_output{call_id, output}` **before** the rest of that user message; text-only content is a string, content with images or documents an array of `input_text`/`input_image`/`input_file`; `is_error:true` prefixes [`TOOL_ERROR_PREFIX`] |
//! | assistant `thinking` with a GPT-minted signature (`gAAAA…`) | `reasoning{summary:[], encrypted_content}` in place |
//! | `thinking` with any other signature, `redacted_thinking` | dropped (the ciphertext of another vendor means nothing upstream) |
//! | `tools[]` (no type, or `custom`) | `function` tools, `parameters` repaired by `schema::repair`, `strict:false`, names over 64 characters shortened |
//! | `web_search_*` server tool | `web_search` (`allowed_domains` → `filters`, `user_location`) |
//! | other server tools (`bash_…`, `computer_…`, `text_editor_…`, …) | 400: they need Anthropic-side execution |
//! | `tool_choice` `auto`/`any`/`none`/`tool` | `"auto"`/`"required"`/`"none"`/`{type:"function",name}` (400 if the tool is not declared) |
//! | `tool_choice.disable_parallel_tool_use:true` | `parallel_tool_calls:false` |
//! | `thinking{type:"enabled",budget_tokens}` | `reasoning.effort` from the budget: ≤0 `none`, ≤1024 `low`, ≤8192 `medium`, ≤24576 `high`, more `xhigh` |
//! | `thinking{type:"adaptive"\|"auto"}` | `output_config.effort`, else `high` |
//! | `thinking{type:"disabled"}` | `reasoning.effort:"none"` |
//! | `output_config.effort` | the effort (`max` → `xhigh`); it wins over a budget |
//! | `output_config.format` / `output_format` (`json_schema`) | `text.format{type:"json_schema", name:"output", schema, strict:true}` |
//! | `max_tokens` | `max_output_tokens` (at least 16, the Responses minimum; the Codex-backend profile deletes it later) |
//! | `temperature`, `top_p` | copied (the Codex-backend profile deletes them later) |
//! | `metadata.user_id` | [`Mapped::session`] and `prompt_cache_key` (hashed when it is not a short plain token) |
//! | `service_tier` `priority`/`fast`, `speed:"fast"` | `service_tier:"priority"` |
//! | `stream` | [`Mapped::client_stream`]; upstream is always `stream:true` |
//!
//! Always added: `stream:true`, `store:false`, `include:["reasoning.encrypted_content"]` (the
//! signature round trip needs the ciphertext). A requested reasoning summary
//! (`reasoning.summary:"auto"`) is added when the client asked for thinking, so that the
//! thinking blocks carry text.
//!
//! Dropped, by design: `top_k` (no upstream equivalent), `stop_sequences` (the Responses API has
//! no stop parameter; the stream never invents a `stop_sequence` stop reason), `cache_control`
//! anywhere (caching is automatic upstream), `container`, `mcp_servers`, `context_management`,
//! and content blocks of other types (`server_tool_use`, `web_search_tool_result`, …), which
//! only this proxy's own earlier answers could contain and which it never produces.
//!
//! Tool-call ids: ids that match `^[A-Za-z0-9_-]{1,64}$` pass unchanged; others go through
//! `tool_names::sanitize_call_id` (deterministic, so the id in a `tool_use` and the one echoed
//! in its `tool_result` map to the same `call_id`; the pair is kept in
//! [`ResponseContext::call_ids`] so any id coming back is restored). A missing id
//! becomes `call_missing_<message>_<block>`. A `tool_result` that answers no earlier `tool_use`
//! (an orphan) is dropped, as are repeated `tool_use` ids and repeated results for one id: the
//! upstream rejects outputs without a call and duplicate call ids.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::translate::error::TranslateError;
use crate::translate::models::{budget_effort, ModelTable};
use crate::translate::schema;
use crate::translate::tool_names::{sanitize_call_id, stable_hash64, ToolNameMap};
use crate::translate::{Dialect, Mapped, ResponseContext};

/// Marks the output of a `tool_result` with `is_error:true`: the Responses API has no error flag
/// on `function_call_output`, so the model learns it from the text.
pub const TOOL_ERROR_PREFIX: &str = "[tool execution error] ";

/// The Responses API's smallest accepted `max_output_tokens`.
const MIN_OUTPUT_TOKENS: u64 = 16;

/// Claude Code's attribution line: it changes per request and would defeat prompt caching.
const BILLING_HEADER_PREFIX: &str = "x-anthropic-billing-header:";

/// Maps a Messages request body (bytes or a parsed value, see [`super::Body`]) to the upstream
/// Responses request (see the module docs).
pub fn map_request<'a>(
    body: impl Into<super::Body<'a>>,
    models: &ModelTable,
) -> Result<Mapped, TranslateError> {
    let body = body.into().parse()?;
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("the request body must be a JSON object"))?;
    let requested = obj
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("model: a non-empty string is required"))?;
    let resolved = models.resolve(requested)?;

    // Every declared name is registered first so that a name the client uses as is always
    // wins over a shortened one.
    let mut names = ToolNameMap::from_names(
        obj.get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("name").and_then(Value::as_str)),
    );
    let mut out = Map::new();

    let declared = map_tools(obj.get("tools"), &mut names, &mut out)?;
    map_tool_choice(obj.get("tool_choice"), &declared, &mut names, &mut out)?;

    let mut input = Vec::new();
    if let Some(text) = system_text(obj.get("system"))? {
        input.push(json!({
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": text}],
        }));
    }
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages: an array is required"))?;
    let call_ids = Messages::new(&mut names, &mut input).map_all(messages)?;
    out.insert("input".into(), Value::Array(input));

    let thinking = map_thinking(obj, &mut out)?;
    map_output_format(obj, &mut out)?;

    if let Some(max) = obj.get("max_tokens").filter(|v| !v.is_null()) {
        let max = max
            .as_u64()
            .ok_or_else(|| invalid("max_tokens: a non-negative integer is required"))?;
        out.insert(
            "max_output_tokens".into(),
            max.max(MIN_OUTPUT_TOKENS).into(),
        );
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = obj.get(key).filter(|v| v.is_number()) {
            out.insert(key.into(), v.clone());
        }
    }
    let session = obj
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    if let Some(user) = &session {
        out.insert("prompt_cache_key".into(), cache_key(user).into());
    }
    let fast = matches!(
        obj.get("service_tier").and_then(Value::as_str),
        Some("priority" | "fast")
    ) || obj.get("speed").and_then(Value::as_str) == Some("fast");
    if fast {
        out.insert("service_tier".into(), "priority".into());
    }

    out.insert("model".into(), resolved.upstream_model.clone().into());
    out.insert("stream".into(), true.into());
    out.insert("store".into(), false.into());
    out.insert("include".into(), json!(["reasoning.encrypted_content"]));

    let mut body = Value::Object(out);
    resolved.apply(&mut body);

    let mut context = ResponseContext::new(Dialect::Anthropic, requested, super::parts(thinking));
    context.tool_names = names;
    context.think = resolved.think;
    context.call_ids = call_ids;
    Ok(Mapped {
        body,
        client_stream: obj.get("stream").and_then(Value::as_bool).unwrap_or(false),
        session,
        context,
    })
}

fn invalid(message: impl Into<String>) -> TranslateError {
    TranslateError::bad_request("invalid_request", message)
}

// === system ===

/// The system prompt as one text: blocks joined with `"\n\n"`, billing-header lines removed,
/// `None` when nothing is left.
fn system_text(system: Option<&Value>) -> Result<Option<String>, TranslateError> {
    let mut parts: Vec<String> = Vec::new();
    match system {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => parts.push(strip_billing_header(s)),
        Some(Value::Array(blocks)) => {
            for block in blocks {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = block
                            .get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid("system: a text block needs a string `text`"))?;
                        parts.push(strip_billing_header(text));
                    }
                    _ => return Err(invalid("system: only text blocks are supported")),
                }
            }
        }
        Some(_) => return Err(invalid("system: a string or an array of text blocks")),
    }
    parts.retain(|p| !p.trim().is_empty());
    Ok((!parts.is_empty()).then(|| parts.join("\n\n")))
}

fn strip_billing_header(text: &str) -> String {
    if !text.contains(BILLING_HEADER_PREFIX) {
        return text.to_owned();
    }
    text.split_inclusive('\n')
        .filter(|line| !line.trim_start().starts_with(BILLING_HEADER_PREFIX))
        .collect::<String>()
        .trim_end_matches('\n')
        .to_owned()
}

// === messages ===

/// Walks the conversation, appending Responses items to `input`.
struct Messages<'a> {
    names: &'a mut ToolNameMap,
    input: &'a mut Vec<Value>,
    /// Upstream call ids of the `function_call` items emitted so far.
    calls: HashSet<String>,
    /// Call ids that already have their `function_call_output`.
    answered: HashSet<String>,
    /// Upstream → client ids, for ids that had to be sanitised.
    renamed: Vec<(String, String)>,
}

impl<'a> Messages<'a> {
    fn new(names: &'a mut ToolNameMap, input: &'a mut Vec<Value>) -> Self {
        Messages {
            names,
            input,
            calls: HashSet::new(),
            answered: HashSet::new(),
            renamed: Vec::new(),
        }
    }

    /// Maps every message; returns the sanitised call ids (upstream → client).
    fn map_all(mut self, messages: &[Value]) -> Result<Vec<(String, String)>, TranslateError> {
        for (i, message) in messages.iter().enumerate() {
            let role = message
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("messages[{i}].role: a string is required")))?;
            let content = message.get("content").unwrap_or(&Value::Null);
            match role {
                "user" | "system" => self.user(i, content)?,
                "assistant" => self.assistant(i, content)?,
                _ => {
                    return Err(invalid(format!(
                        "messages[{i}].role: expected user or assistant"
                    )))
                }
            }
        }
        Ok(self.renamed)
    }

    fn user(&mut self, i: usize, content: &Value) -> Result<(), TranslateError> {
        let mut parts = Vec::new();
        match content {
            Value::String(s) => push_text(&mut parts, "input_text", s),
            Value::Array(blocks) => {
                for (j, block) in blocks.iter().enumerate() {
                    match block_type(block) {
                        "text" => push_text(&mut parts, "input_text", block_text(block, i, j)?),
                        "image" => parts.push(image_part(block, i, j)?),
                        "document" => parts.push(document_part(block, i, j)?),
                        "tool_result" => self.tool_result(block, i, j)?,
                        // Thinking in a user turn, server-tool records and unknown types carry
                        // nothing the upstream can use (see the module docs).
                        _ => {}
                    }
                }
            }
            Value::Null => {}
            _ => {
                return Err(invalid(format!(
                    "messages[{i}].content: a string or an array of blocks"
                )))
            }
        }
        if !parts.is_empty() {
            self.input
                .push(json!({"type": "message", "role": "user", "content": parts}));
        }
        Ok(())
    }

    fn assistant(&mut self, i: usize, content: &Value) -> Result<(), TranslateError> {
        let mut parts = Vec::new();
        match content {
            Value::String(s) => push_text(&mut parts, "output_text", s),
            Value::Array(blocks) => {
                for (j, block) in blocks.iter().enumerate() {
                    match block_type(block) {
                        "text" => {
                            push_text(&mut parts, "output_text", block_text(block, i, j)?);
                        }
                        "thinking" => {
                            let signature = block.get("signature").and_then(Value::as_str);
                            if let Some(sig) = signature.filter(|s| is_gpt_signature(s)) {
                                self.flush_assistant(&mut parts);
                                self.input.push(json!({
                                    "type": "reasoning",
                                    "summary": [],
                                    "encrypted_content": sig,
                                }));
                            }
                        }
                        "tool_use" => {
                            self.flush_assistant(&mut parts);
                            self.tool_use(block, i, j)?;
                        }
                        // redacted_thinking, images (the upstream takes none from the
                        // assistant), server-tool records: dropped.
                        _ => {}
                    }
                }
            }
            Value::Null => {}
            _ => {
                return Err(invalid(format!(
                    "messages[{i}].content: a string or an array of blocks"
                )))
            }
        }
        self.flush_assistant(&mut parts);
        Ok(())
    }

    /// Emits the assistant text gathered so far as one message, so that items after it keep
    /// their order; nothing when there is no text (no empty assistant messages).
    fn flush_assistant(&mut self, parts: &mut Vec<Value>) {
        if !parts.is_empty() {
            self.input.push(json!({
                "type": "message",
                "role": "assistant",
                "content": std::mem::take(parts),
            }));
        }
    }

    fn tool_use(&mut self, block: &Value, i: usize, j: usize) -> Result<(), TranslateError> {
        let call_id = match block.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => {
                let upstream = sanitize_call_id(id).into_owned();
                if upstream != id && !self.renamed.iter().any(|(u, _)| *u == upstream) {
                    self.renamed.push((upstream.clone(), id.to_owned()));
                }
                upstream
            }
            _ => format!("call_missing_{i}_{j}"),
        };
        if !self.calls.insert(call_id.clone()) {
            // A repeated id: the first call keeps it (see the module docs).
            return Ok(());
        }
        let name = block
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("messages[{i}].content[{j}].name: required")))?;
        let arguments = match block.get("input") {
            None | Some(Value::Null) => "{}".to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        self.input.push(json!({
            "type": "function_call",
            "call_id": call_id,
            "name": self.names.shorten(name),
            "arguments": arguments,
        }));
        Ok(())
    }

    fn tool_result(&mut self, block: &Value, i: usize, j: usize) -> Result<(), TranslateError> {
        let Some(id) = block.get("tool_use_id").and_then(Value::as_str) else {
            return Ok(()); // cannot be paired with a call: an orphan
        };
        let call_id = sanitize_call_id(id).into_owned();
        if !self.calls.contains(&call_id) || !self.answered.insert(call_id.clone()) {
            return Ok(()); // orphan or repeated result (see the module docs)
        }
        let is_error = block.get("is_error").and_then(Value::as_bool) == Some(true);
        let output = tool_output(block.get("content"), is_error, i, j)?;
        self.input.push(json!({
            "type": "function_call_output",
            "call_id": call_id,
            "output": output,
        }));
        Ok(())
    }
}

fn block_type(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or("")
}

fn block_text(block: &Value, i: usize, j: usize) -> Result<&str, TranslateError> {
    block.get("text").and_then(Value::as_str).ok_or_else(|| {
        invalid(format!(
            "messages[{i}].content[{j}].text: a string is required"
        ))
    })
}

/// Adds a text part; empty texts are skipped (the upstream has no use for them).
fn push_text(parts: &mut Vec<Value>, kind: &str, text: &str) {
    if !text.is_empty() {
        parts.push(json!({"type": kind, "text": text}));
    }
}

/// A thinking signature minted by the Responses API: a Fernet token (`gAAAA…`). Anthropic's
/// own signatures never start that way.
fn is_gpt_signature(signature: &str) -> bool {
    signature.starts_with("gAAAA")
}

/// The `function_call_output.output` of a `tool_result`.
fn tool_output(
    content: Option<&Value>,
    is_error: bool,
    i: usize,
    j: usize,
) -> Result<Value, TranslateError> {
    let prefix = if is_error { TOOL_ERROR_PREFIX } else { "" };
    let blocks = match content {
        None | Some(Value::Null) => return Ok(Value::String(prefix.trim_end().to_owned())),
        Some(Value::String(s)) => return Ok(Value::String(format!("{prefix}{s}"))),
        Some(Value::Array(blocks)) => blocks,
        Some(_) => {
            return Err(invalid(format!(
                "messages[{i}].content[{j}].content: a string or an array of blocks"
            )))
        }
    };
    let mut texts = Vec::new();
    let mut parts = Vec::new();
    for block in blocks {
        match block_type(block) {
            "text" => {
                if let Some(t) = block.get("text").and_then(Value::as_str) {
                    texts.push(t);
                    push_text(&mut parts, "input_text", t);
                }
            }
            "image" => parts.push(image_part(block, i, j)?),
            "document" => parts.push(document_part(block, i, j)?),
            _ => {
                // search_result and similar: keep whatever text they carry.
                if let Some(t) = block.get("text").and_then(Value::as_str) {
                    texts.push(t);
                    push_text(&mut parts, "input_text", t);
                }
            }
        }
    }
    if parts.iter().all(|p| p["type"] == "input_text") {
        return Ok(Value::String(format!("{prefix}{}", texts.join("\n\n"))));
    }
    if is_error {
        parts.insert(
            0,
            json!({"type": "input_text", "text": TOOL_ERROR_PREFIX.trim_end()}),
        );
    }
    Ok(Value::Array(parts))
}

fn image_part(block: &Value, i: usize, j: usize) -> Result<Value, TranslateError> {
    let where_ = || format!("messages[{i}].content[{j}].source");
    let source = block
        .get("source")
        .ok_or_else(|| invalid(format!("{}: required", where_())))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("{}.url: a string is required", where_())))?
            .to_owned(),
        Some("base64") | None => {
            let data = source
                .get("data")
                .or_else(|| source.get("base64"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{}.data: a string is required", where_())))?;
            let media = source
                .get("media_type")
                .or_else(|| source.get("mime_type"))
                .and_then(Value::as_str)
                .unwrap_or("image/png");
            format!("data:{media};base64,{data}")
        }
        Some(_) => {
            return Err(invalid(format!(
                "{}.type: only base64 and url image sources are supported",
                where_()
            )))
        }
    };
    Ok(json!({"type": "input_image", "image_url": url}))
}

fn document_part(block: &Value, i: usize, j: usize) -> Result<Value, TranslateError> {
    let where_ = || format!("messages[{i}].content[{j}].source");
    let source = block
        .get("source")
        .ok_or_else(|| invalid(format!("{}: required", where_())))?;
    let filename = block
        .get("title")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .unwrap_or("document.pdf");
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{}.data: a string is required", where_())))?;
            let media = source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("application/pdf");
            Ok(json!({
                "type": "input_file",
                "filename": filename,
                "file_data": format!("data:{media};base64,{data}"),
            }))
        }
        Some("url") => {
            let url = source
                .get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{}.url: a string is required", where_())))?;
            Ok(json!({"type": "input_file", "file_url": url}))
        }
        Some("text") => {
            let text = source
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{}.data: a string is required", where_())))?;
            Ok(json!({"type": "input_text", "text": text}))
        }
        Some("content") => {
            let text = match source.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(blocks)) => blocks
                    .iter()
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n\n"),
                _ => return Err(invalid(format!("{}.content: required", where_()))),
            };
            Ok(json!({"type": "input_text", "text": text}))
        }
        _ => Err(invalid(format!(
            "{}.type: only base64, url, text and content document sources are supported",
            where_()
        ))),
    }
}

/// `prompt_cache_key` from `metadata.user_id`: a short plain token as is, anything else (Claude
/// Code sends long composite ids or JSON) hashed into a stable key.
fn cache_key(user: &str) -> String {
    let plain = user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if plain {
        return user.to_owned();
    }
    // Two independent 64-bit hashes: the key only has to be stable and collision-unlikely.
    format!(
        "user_{:016x}{:016x}",
        stable_hash64(user.as_bytes(), 0),
        stable_hash64(user.as_bytes(), 1)
    )
}

// === tools ===

/// Maps `tools`; returns the client names of the function tools it declared.
fn map_tools(
    tools: Option<&Value>,
    names: &mut ToolNameMap,
    out: &mut Map<String, Value>,
) -> Result<HashSet<String>, TranslateError> {
    let mut declared = HashSet::new();
    let tools = match tools {
        None | Some(Value::Null) => return Ok(declared),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("tools: an array is required")),
    };
    let mut mapped = Vec::with_capacity(tools.len());
    for (k, tool) in tools.iter().enumerate() {
        let kind = tool.get("type").and_then(Value::as_str);
        match kind {
            None | Some("custom") => {
                let name = tool
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| invalid(format!("tools[{k}].name: a string is required")))?;
                let mut parameters = tool.get("input_schema").cloned().unwrap_or(Value::Null);
                schema::repair(&mut parameters);
                let mut f = Map::new();
                f.insert("type".into(), "function".into());
                f.insert("name".into(), names.shorten(name).into());
                if let Some(d) = tool.get("description").and_then(Value::as_str) {
                    f.insert("description".into(), d.into());
                }
                f.insert("parameters".into(), parameters);
                f.insert("strict".into(), false.into());
                mapped.push(Value::Object(f));
                declared.insert(name.to_owned());
            }
            Some(t) if t.starts_with("web_search_") => {
                let mut w = Map::new();
                w.insert("type".into(), "web_search".into());
                if let Some(domains) = tool.get("allowed_domains").filter(|d| d.is_array()) {
                    w.insert("filters".into(), json!({"allowed_domains": domains}));
                }
                if let Some(loc) = tool.get("user_location").and_then(Value::as_object) {
                    let mut l = Map::new();
                    l.insert("type".into(), "approximate".into());
                    for key in ["city", "region", "country", "timezone"] {
                        if let Some(v) = loc.get(key).filter(|v| v.is_string()) {
                            l.insert(key.into(), v.clone());
                        }
                    }
                    w.insert("user_location".into(), Value::Object(l));
                }
                mapped.push(Value::Object(w));
            }
            Some(_) => {
                return Err(TranslateError::unsupported(
                    &format!("tools[{k}].type"),
                    "only client tools and web_search server tools can be served",
                ));
            }
        }
    }
    if !mapped.is_empty() {
        out.insert("tools".into(), Value::Array(mapped));
    }
    Ok(declared)
}

fn map_tool_choice(
    choice: Option<&Value>,
    declared: &HashSet<String>,
    names: &mut ToolNameMap,
    out: &mut Map<String, Value>,
) -> Result<(), TranslateError> {
    let choice = match choice {
        None | Some(Value::Null) => return Ok(()),
        Some(c) => c,
    };
    let kind = choice
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("tool_choice.type: a string is required"))?;
    let has_tools = out.contains_key("tools");
    let mapped = match kind {
        "auto" => has_tools.then(|| json!("auto")),
        "any" => has_tools.then(|| json!("required")),
        "none" => has_tools.then(|| json!("none")),
        "tool" => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice.name: a string is required"))?;
            if !declared.contains(name) {
                return Err(invalid("tool_choice.name: the named tool is not in tools"));
            }
            Some(json!({"type": "function", "name": names.shorten(name)}))
        }
        _ => {
            return Err(invalid(
                "tool_choice.type: expected auto, any, tool or none",
            ))
        }
    };
    if let Some(m) = mapped {
        out.insert("tool_choice".into(), m);
    }
    if choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        == Some(true)
    {
        out.insert("parallel_tool_calls".into(), false.into());
    }
    Ok(())
}

// === thinking, effort, format ===

/// Sets `reasoning`; returns whether the client asked for thinking blocks.
fn map_thinking(
    obj: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<bool, TranslateError> {
    let output_effort = match obj.get("output_config").and_then(|c| c.get("effort")) {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => Some(match e.as_str() {
            "max" => "xhigh",
            "none" => "none",
            "minimal" => "minimal",
            "low" => "low",
            "medium" => "medium",
            "high" => "high",
            "xhigh" => "xhigh",
            _ => {
                return Err(invalid(
                    "output_config.effort: expected low, medium, high or max",
                ))
            }
        }),
        Some(_) => return Err(invalid("output_config.effort: a string is required")),
    };
    let thinking = obj.get("thinking").filter(|t| !t.is_null());
    let (requested, budget_effort) = match thinking {
        None => (false, None),
        Some(t) => match t.get("type").and_then(Value::as_str) {
            Some("enabled") => {
                let budget = t
                    .get("budget_tokens")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| invalid("thinking.budget_tokens: an integer is required"))?;
                (true, Some(budget_effort(budget)))
            }
            Some("adaptive" | "auto") => (true, Some("high")),
            Some("disabled") => (false, Some("none")),
            _ => {
                return Err(invalid(
                    "thinking.type: expected enabled, adaptive or disabled",
                ))
            }
        },
    };
    if let Some(effort) = output_effort.or(budget_effort) {
        let mut reasoning = Map::new();
        reasoning.insert("effort".into(), effort.into());
        if requested && effort != "none" {
            reasoning.insert("summary".into(), "auto".into());
        }
        out.insert("reasoning".into(), Value::Object(reasoning));
    } else if requested {
        out.insert("reasoning".into(), json!({"summary": "auto"}));
    }
    Ok(requested)
}

fn map_output_format(
    obj: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<(), TranslateError> {
    let format = obj
        .get("output_config")
        .and_then(|c| c.get("format"))
        .or_else(|| obj.get("output_format"))
        .filter(|f| !f.is_null());
    let Some(format) = format else {
        return Ok(());
    };
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => {
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| invalid("output_config.format.schema: an object is required"))?;
            out.insert(
                "text".into(),
                json!({"format": {
                    "type": "json_schema",
                    "name": "output",
                    "schema": schema,
                    "strict": true,
                }}),
            );
            Ok(())
        }
        _ => Err(invalid("output_config.format.type: expected json_schema")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_header_lines_removed() {
        assert_eq!(
            strip_billing_header(
                "x-anthropic-billing-header: cc_version=1; cch=abc\nYou are Claude."
            ),
            "You are Claude."
        );
        assert_eq!(
            strip_billing_header("keep\n  x-anthropic-billing-header: x\nthis"),
            "keep\nthis"
        );
        assert_eq!(strip_billing_header("untouched\n"), "untouched\n");
    }

    #[test]
    fn cache_keys() {
        assert_eq!(cache_key("user-123"), "user-123");
        let long = "user_abc_account__session_0b7e1f4e-1c39-4d9a-9f5c-2e5b8c0d7a11_extra_long";
        let k = cache_key(long);
        assert_eq!(k, cache_key(long));
        assert!(k.len() <= 64 && k.starts_with("user_"));
        assert_ne!(k, cache_key("{\"session_id\":\"x\"}"));
    }
}
