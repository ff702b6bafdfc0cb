//! A Chat Completions request → a Responses request (`docs/translation.md`).
//!
//! | Chat | Responses |
//! | --- | --- |
//! | (always) | `stream:true`, `store:false` (Chat is stateless: nothing refers back to a stored response) |
//! | `model` | resolved by [`ModelTable::resolve`]: suffixes, aliases, defaults, forced params |
//! | `system` / `developer` messages | `developer` messages, in place |
//! | user / assistant text | `input_text` / `output_text` parts; an empty string → `content: []` |
//! | user `image_url` (URL or data URL) | `input_image` with `detail` kept |
//! | user `file.file_data` | `input_file{file_data, filename}` |
//! | assistant `tool_calls` | `function_call` / `custom_tool_call` items after the assistant's text; no empty message for a calls-only turn |
//! | `tool` messages | `function_call_output` / `custom_tool_call_output`; text parts joined, images and files kept as structured parts |
//! | `tools` | flattened functions with repaired schemas (`strict` only when asked and compatible), custom tools, `web_search_preview*` → `web_search`, others as is; names over 64 characters shortened |
//! | `tool_choice`, `parallel_tool_calls` | the same (a function choice must name a declared tool, else 400) |
//! | `response_format` | `text.format` (`json_object` adds a developer "Respond in JSON format." when no text mentions JSON) |
//! | `reasoning_effort` / `reasoning` | `reasoning.effort` (a model suffix overrides it), `summary:"auto"` for any effort but `none` |
//! | `verbosity`, `service_tier`, `prompt_cache_key` | `text.verbosity`, copied, copied (else a stable key derived from the conversation's first messages) |
//! | `max_completion_tokens` / `max_tokens` | `max_output_tokens` (the Codex profile drops it later) |
//! | `temperature`, `top_p` | copied (the Codex profile drops them later) |
//! | `stream_options.include_usage` | consumed locally |
//!
//! Refused with a 400, because no faithful mapping exists and ignoring them would be silently
//! wrong: `n` > 1, non-empty `stop`, `input_audio` parts, `file_id` files, the legacy
//! `functions`/`function_call` and `role:"function"`. Dropped (no upstream equivalent, no
//! effect on the answer's shape): `seed`, `logprobs`, `top_logprobs`, `logit_bias`,
//! `frequency_penalty`, `presence_penalty`, `user` (used as the affinity key), `metadata`,
//! `prediction`, `modalities`, `audio`, `store`, `web_search_options`.
//!
//! History: tool results must answer an earlier call. An orphan result (no earlier call with
//! its id) is dropped; a repeated call id keeps its first call and first result; a call
//! without an id gets `call_missing_<message>_<call>`. Call ids are sanitised to the upstream
//! charset deterministically (the same id in a call and its result maps to the same value).

use serde_json::{json, Map, Value};

use crate::translate::models::ModelTable;
use crate::translate::tool_names::{sanitize_call_id, stable_hash64, ToolNameMap};
use crate::translate::{schema, Dialect, Mapped, ResponseContext, TranslateError};

type Obj = Map<String, Value>;

/// Maps a Chat Completions request body (decoded JSON bytes); see the module docs.
pub fn map_request(body: &[u8], models: &ModelTable) -> Result<Mapped, TranslateError> {
    let req: Value = serde_json::from_slice(body).map_err(|_| {
        TranslateError::bad_request("invalid_json", "The request body is not valid JSON.")
    })?;
    let Value::Object(req) = req else {
        return Err(TranslateError::invalid("body", "a JSON object"));
    };
    let model = match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.as_str(),
        _ => return Err(TranslateError::invalid("model", "a non-empty string")),
    };
    refuse_unfaithful(&req)?;
    let resolved = models.resolve(model)?;

    let tools_in = match req.get("tools") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(t)) => t.as_slice(),
        Some(_) => return Err(TranslateError::invalid("tools", "an array")),
    };
    let mut names = ToolNameMap::from_names(tools_in.iter().filter_map(tool_name));
    let tools = map_tools(tools_in, &mut names)?;

    let messages = match req.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        _ => return Err(TranslateError::invalid("messages", "a non-empty array")),
    };
    let mut input = map_messages(messages, &mut names)?;

    let mut out = Obj::new();
    out.insert(
        "model".into(),
        Value::String(resolved.upstream_model.clone()),
    );
    out.insert("stream".into(), Value::Bool(true));
    out.insert("store".into(), Value::Bool(false));
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = req.get("tool_choice").filter(|v| !v.is_null()) {
        out.insert("tool_choice".into(), map_tool_choice(choice, &names)?);
    }
    match req.get("parallel_tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            out.insert("parallel_tool_calls".into(), Value::Bool(*b));
        }
        Some(_) => return Err(TranslateError::invalid("parallel_tool_calls", "a boolean")),
    }

    let mut text = Obj::new();
    if let Some(format) = req.get("response_format").filter(|v| !v.is_null()) {
        let (format, wants_json_hint) = map_response_format(format)?;
        if wants_json_hint && !mentions_json(&input) {
            input.insert(
                0,
                json!({"type":"message","role":"developer","content":[
                    {"type":"input_text","text":"Respond in JSON format."}]}),
            );
        }
        if let Some(format) = format {
            text.insert("format".into(), format);
        }
    }
    if let Some(v) = req.get("verbosity").filter(|v| !v.is_null()) {
        let v = v
            .as_str()
            .ok_or_else(|| TranslateError::invalid("verbosity", "a string"))?;
        text.insert("verbosity".into(), Value::String(v.to_owned()));
    }
    if !text.is_empty() {
        out.insert("text".into(), Value::Object(text));
    }

    let mut reasoning = Obj::new();
    match req.get("reasoning") {
        None | Some(Value::Null) => {}
        Some(Value::Object(r)) => {
            for key in ["effort", "summary"] {
                if let Some(v) = r.get(key).filter(|v| !v.is_null()) {
                    let v = v.as_str().ok_or_else(|| {
                        TranslateError::invalid(&format!("reasoning.{key}"), "a string")
                    })?;
                    reasoning.insert(key.into(), Value::String(v.to_owned()));
                }
            }
        }
        Some(_) => return Err(TranslateError::invalid("reasoning", "an object")),
    }
    if let Some(v) = req.get("reasoning_effort").filter(|v| !v.is_null()) {
        let v = v
            .as_str()
            .ok_or_else(|| TranslateError::invalid("reasoning_effort", "a string"))?;
        reasoning.insert("effort".into(), Value::String(v.to_owned()));
    }
    if !reasoning.is_empty() {
        out.insert("reasoning".into(), Value::Object(reasoning));
    }

    if let Some(v) = req.get("service_tier").filter(|v| !v.is_null()) {
        let v = v
            .as_str()
            .ok_or_else(|| TranslateError::invalid("service_tier", "a string"))?;
        out.insert("service_tier".into(), Value::String(v.to_owned()));
    }
    let cache_key = opt_str(&req, "prompt_cache_key")?;
    out.insert(
        "prompt_cache_key".into(),
        Value::String(cache_key.map_or_else(|| derived_cache_key(&input), str::to_owned)),
    );
    let max = match req.get("max_completion_tokens").filter(|v| !v.is_null()) {
        Some(v) => Some(("max_completion_tokens", v)),
        None => req
            .get("max_tokens")
            .filter(|v| !v.is_null())
            .map(|v| ("max_tokens", v)),
    };
    if let Some((field, v)) = max {
        let n = v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| TranslateError::invalid(field, "a positive integer"))?;
        out.insert("max_output_tokens".into(), n.into());
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            if !v.is_number() {
                return Err(TranslateError::invalid(key, "a number"));
            }
            out.insert(key.into(), v.clone());
        }
    }
    out.insert("input".into(), Value::Array(input));

    let mut body = Value::Object(out);
    resolved.apply(&mut body);
    // A summary makes the reasoning visible as `reasoning_content`; only asked for when the
    // client (or a suffix, or a configured default) asked for reasoning.
    if let Some(r) = body.get_mut("reasoning").and_then(Value::as_object_mut) {
        let effort = r.get("effort").and_then(Value::as_str);
        if effort.is_some_and(|e| e != "none") && !r.contains_key("summary") {
            r.insert("summary".into(), Value::String("auto".into()));
        }
    }

    let client_stream = match req.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(TranslateError::invalid("stream", "a boolean")),
    };
    let include_usage = match req.get("stream_options") {
        Some(Value::Object(o)) => o
            .get("include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        _ => false,
    };
    let session = cache_key
        .map(str::to_owned)
        .or(opt_str(&req, "user")?.map(str::to_owned));

    let mut context = ResponseContext::new(Dialect::Chat, model, &super::PARTS);
    context.tool_names = names;
    context.include_usage = include_usage;
    context.think = resolved.think;
    Ok(Mapped {
        body,
        client_stream,
        session,
        context,
    })
}

fn opt_str<'a>(req: &'a Obj, key: &str) -> Result<Option<&'a str>, TranslateError> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TranslateError::invalid(key, "a string")),
    }
}

/// The 400s for parameters that cannot be honoured (module docs).
fn refuse_unfaithful(req: &Obj) -> Result<(), TranslateError> {
    match req.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64() == Some(1) => {}
        Some(n) if n.as_u64().is_some() => {
            return Err(TranslateError::unsupported(
                "n",
                "the upstream returns one choice per request; send n=1 or leave it out.",
            ))
        }
        Some(_) => return Err(TranslateError::invalid("n", "a positive integer")),
    }
    let stop_set = match req.get("stop") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => {
            return Err(TranslateError::invalid(
                "stop",
                "a string or an array of strings",
            ))
        }
    };
    if stop_set {
        return Err(TranslateError::unsupported(
            "stop",
            "the Responses API has no stop sequences, and ignoring them would return text past \
             the stop point.",
        ));
    }
    for key in ["functions", "function_call"] {
        if req.get(key).is_some_and(|v| !v.is_null()) {
            return Err(TranslateError::unsupported(
                key,
                "the legacy functions API is not translated; use tools and tool_choice.",
            ));
        }
    }
    Ok(())
}

fn tool_name(tool: &Value) -> Option<&str> {
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => tool.get("function")?.get("name")?.as_str(),
        Some("custom") => tool.get("custom")?.get("name")?.as_str(),
        _ => None,
    }
}

fn map_tools(tools: &[Value], names: &mut ToolNameMap) -> Result<Vec<Value>, TranslateError> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let field = |f: &str| format!("tools[{i}].{f}");
        let Some(obj) = tool.as_object() else {
            return Err(TranslateError::invalid(&format!("tools[{i}]"), "an object"));
        };
        let kind = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::invalid(&field("type"), "a string"))?;
        match kind {
            "function" => {
                let f = obj
                    .get("function")
                    .and_then(Value::as_object)
                    .ok_or_else(|| TranslateError::invalid(&field("function"), "an object"))?;
                let name = f
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        TranslateError::invalid(&field("function.name"), "a non-empty string")
                    })?;
                let mut parameters = f.get("parameters").cloned().unwrap_or(Value::Null);
                schema::repair(&mut parameters);
                let strict = f.get("strict").and_then(Value::as_bool) == Some(true)
                    && schema::is_strict_compatible(&parameters);
                let mut m = Obj::new();
                m.insert("type".into(), "function".into());
                m.insert("name".into(), Value::String(names.shorten(name)));
                if let Some(d) = f.get("description").filter(|d| d.is_string()) {
                    m.insert("description".into(), d.clone());
                }
                m.insert("parameters".into(), parameters);
                m.insert("strict".into(), Value::Bool(strict));
                out.push(Value::Object(m));
            }
            "custom" => {
                let c = obj
                    .get("custom")
                    .and_then(Value::as_object)
                    .ok_or_else(|| TranslateError::invalid(&field("custom"), "an object"))?;
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        TranslateError::invalid(&field("custom.name"), "a non-empty string")
                    })?;
                let mut m = Obj::new();
                m.insert("type".into(), "custom".into());
                m.insert("name".into(), Value::String(names.shorten(name)));
                for key in ["description", "format"] {
                    if let Some(v) = c.get(key).filter(|v| !v.is_null()) {
                        m.insert(key.into(), v.clone());
                    }
                }
                out.push(Value::Object(m));
            }
            k if k.starts_with("web_search_preview") => {
                let mut m = obj.clone();
                m.insert("type".into(), "web_search".into());
                out.push(Value::Object(m));
            }
            _ => out.push(tool.clone()),
        }
    }
    Ok(out)
}

fn map_tool_choice(choice: &Value, names: &ToolNameMap) -> Result<Value, TranslateError> {
    let missing = || {
        TranslateError::bad_request(
            "invalid_tool_choice",
            "`tool_choice` names a tool that is not in `tools`.",
        )
    };
    match choice {
        Value::String(_) => Ok(choice.clone()),
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some(kind @ ("function" | "custom")) => {
                let name = o
                    .get(kind)
                    .and_then(|f| f.get("name"))
                    .or_else(|| o.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        TranslateError::invalid(&format!("tool_choice.{kind}.name"), "a string")
                    })?;
                let short = names.lookup(name).ok_or_else(missing)?;
                Ok(json!({"type": kind, "name": short}))
            }
            Some(_) => Ok(choice.clone()),
            None => Err(TranslateError::invalid("tool_choice.type", "a string")),
        },
        _ => Err(TranslateError::invalid(
            "tool_choice",
            "a string or an object",
        )),
    }
}

/// `response_format` → (`text.format`, whether JSON mode wants the word "json" in the input).
fn map_response_format(format: &Value) -> Result<(Option<Value>, bool), TranslateError> {
    let kind = format
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid("response_format.type", "a string"))?;
    match kind {
        "text" => Ok((None, false)),
        "json_object" => Ok((Some(json!({"type":"json_object"})), true)),
        "json_schema" => {
            let js = format
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    TranslateError::invalid("response_format.json_schema", "an object")
                })?;
            let name = js.get("name").and_then(Value::as_str).ok_or_else(|| {
                TranslateError::invalid("response_format.json_schema.name", "a string")
            })?;
            let mut m = Obj::new();
            m.insert("type".into(), "json_schema".into());
            m.insert("name".into(), name.into());
            // The client's schema is its contract with the model: passed as is, never repaired.
            m.insert(
                "schema".into(),
                js.get("schema")
                    .cloned()
                    .unwrap_or_else(schema::empty_object_schema),
            );
            if let Some(strict) = js.get("strict").and_then(Value::as_bool) {
                m.insert("strict".into(), strict.into());
            }
            if let Some(d) = js.get("description").filter(|d| d.is_string()) {
                m.insert("description".into(), d.clone());
            }
            Ok((Some(Value::Object(m)), false))
        }
        _ => Err(TranslateError::invalid(
            "response_format.type",
            "one of text, json_object, json_schema",
        )),
    }
}

/// Whether any text in the input mentions "json" (any case).
fn mentions_json(input: &[Value]) -> bool {
    input.iter().any(|item| {
        item.get("content")
            .and_then(Value::as_array)
            .is_some_and(|parts| {
                parts.iter().any(|p| {
                    p.get("text")
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.to_ascii_lowercase().contains("json"))
                })
            })
    })
}

/// A stable key for a conversation without `prompt_cache_key`: a hash of its items up to and
/// including the first user message, which stay the same as the conversation grows.
fn derived_cache_key(input: &[Value]) -> String {
    let end = input
        .iter()
        .position(|i| i.get("role").and_then(Value::as_str) == Some("user"))
        .map_or(input.len(), |p| p + 1);
    let bytes = serde_json::to_vec(&input[..end]).unwrap_or_default();
    format!("chat-{:016x}", stable_hash64(&bytes, 7))
}

/// Kinds of calls, so a result becomes the matching output item.
#[derive(Clone, Copy, PartialEq)]
enum CallKind {
    Function,
    Custom,
}

fn map_messages(messages: &[Value], names: &mut ToolNameMap) -> Result<Vec<Value>, TranslateError> {
    let mut input = Vec::with_capacity(messages.len() + 4);
    // Calls seen so far (call id → kind, whether a result was placed).
    let mut calls: Vec<(String, CallKind, bool)> = Vec::new();
    for (i, msg) in messages.iter().enumerate() {
        let at = |f: &str| format!("messages[{i}].{f}");
        let Some(msg) = msg.as_object() else {
            return Err(TranslateError::invalid(
                &format!("messages[{i}]"),
                "an object",
            ));
        };
        let role = msg
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::invalid(&at("role"), "a string"))?;
        let content = msg.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                let parts = text_parts(content, "input_text", &at("content"))?;
                input.push(message("developer", parts));
            }
            "user" => {
                let parts = user_parts(content, &at("content"))?;
                input.push(message("user", parts));
            }
            "assistant" => {
                let mut parts = assistant_parts(content, &at("content"))?;
                if let Some(refusal) = msg.get("refusal").and_then(Value::as_str) {
                    if !refusal.is_empty() {
                        parts.push(json!({"type":"refusal","refusal":refusal}));
                    }
                }
                let tool_calls = match msg.get("tool_calls") {
                    None | Some(Value::Null) => &[][..],
                    Some(Value::Array(c)) => c.as_slice(),
                    Some(_) => return Err(TranslateError::invalid(&at("tool_calls"), "an array")),
                };
                // A calls-only turn is only its calls: an empty assistant message there is a
                // known pitfall. A turn with neither keeps its (empty) message.
                if !parts.is_empty() || tool_calls.is_empty() {
                    input.push(message("assistant", parts));
                }
                for (j, call) in tool_calls.iter().enumerate() {
                    let at = |f: &str| format!("messages[{i}].tool_calls[{j}].{f}");
                    let Some(call) = call.as_object() else {
                        return Err(TranslateError::invalid(
                            &format!("messages[{i}].tool_calls[{j}]"),
                            "an object",
                        ));
                    };
                    let id = match call
                        .get("id")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                    {
                        Some(id) => sanitize_call_id(id).into_owned(),
                        None => format!("call_missing_{i}_{j}"),
                    };
                    if calls.iter().any(|(c, _, _)| *c == id) {
                        continue;
                    }
                    let kind = call
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("function");
                    match kind {
                        "function" => {
                            let f = call.get("function").and_then(Value::as_object).ok_or_else(
                                || TranslateError::invalid(&at("function"), "an object"),
                            )?;
                            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
                                TranslateError::invalid(&at("function.name"), "a string")
                            })?;
                            let arguments = match f.get("arguments") {
                                Some(Value::String(a)) => a.clone(),
                                None | Some(Value::Null) => "{}".to_owned(),
                                // Some clients send the object itself.
                                Some(other) => other.to_string(),
                            };
                            input.push(json!({"type":"function_call","call_id":id,
                                "name":names.shorten(name),"arguments":arguments}));
                            calls.push((id, CallKind::Function, false));
                        }
                        "custom" => {
                            let c =
                                call.get("custom")
                                    .and_then(Value::as_object)
                                    .ok_or_else(|| {
                                        TranslateError::invalid(&at("custom"), "an object")
                                    })?;
                            let name = c.get("name").and_then(Value::as_str).ok_or_else(|| {
                                TranslateError::invalid(&at("custom.name"), "a string")
                            })?;
                            let call_input = c.get("input").and_then(Value::as_str).unwrap_or("");
                            input.push(json!({"type":"custom_tool_call","call_id":id,
                                "name":names.shorten(name),"input":call_input}));
                            calls.push((id, CallKind::Custom, false));
                        }
                        _ => {
                            return Err(TranslateError::invalid(&at("type"), "function or custom"))
                        }
                    }
                }
            }
            "tool" => {
                let id = msg
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::invalid(&at("tool_call_id"), "a string"))?;
                let id = sanitize_call_id(id);
                let Some(call) = calls.iter_mut().find(|(c, _, _)| *c == id) else {
                    continue; // orphan result: dropped (module docs)
                };
                if call.2 {
                    continue; // a second result for the same call: the first wins
                }
                call.2 = true;
                let output = tool_output(content, &at("content"))?;
                let kind = match call.1 {
                    CallKind::Function => "function_call_output",
                    CallKind::Custom => "custom_tool_call_output",
                };
                input.push(json!({"type":kind,"call_id":call.0,"output":output}));
            }
            "function" => {
                return Err(TranslateError::unsupported(
                    &at("role"),
                    "role \"function\" is the legacy functions API; use role \"tool\".",
                ))
            }
            _ => {
                return Err(TranslateError::invalid(
                    &at("role"),
                    "one of system, developer, user, assistant, tool",
                ))
            }
        }
    }
    Ok(input)
}

fn message(role: &str, content: Vec<Value>) -> Value {
    json!({"type":"message","role":role,"content":content})
}

/// Text-only content (system, developer) → parts of `kind`.
fn text_parts(content: &Value, kind: &str, field: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"type":kind,"text":s})]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => Ok(json!({"type":kind,"text":t})),
                    _ => Err(TranslateError::invalid(
                        &format!("{field}[{j}]"),
                        "a text part",
                    )),
                }
            })
            .collect(),
        _ => Err(TranslateError::invalid(
            field,
            "a string or an array of parts",
        )),
    }
}

fn user_parts(content: &Value, field: &str) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Value::Array(parts) => parts,
        _ => return text_parts(content, "input_text", field),
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        out.push(user_part(part, &format!("{field}[{j}]"))?);
    }
    Ok(out)
}

/// One user (or tool-result) content part → an input part.
fn user_part(part: &Value, field: &str) -> Result<Value, TranslateError> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            let t = part
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid(&format!("{field}.text"), "a string"))?;
            Ok(json!({"type":"input_text","text":t}))
        }
        Some("image_url") => {
            let image = part.get("image_url").unwrap_or(&Value::Null);
            let (url, detail) = match image {
                Value::String(u) => (Some(u.as_str()), None),
                Value::Object(o) => (
                    o.get("url").and_then(Value::as_str),
                    o.get("detail").and_then(Value::as_str),
                ),
                _ => (None, None),
            };
            let url = url.ok_or_else(|| {
                TranslateError::invalid(&format!("{field}.image_url.url"), "a string")
            })?;
            let mut m = Obj::new();
            m.insert("type".into(), "input_image".into());
            m.insert("image_url".into(), url.into());
            if let Some(d) = detail {
                m.insert("detail".into(), d.into());
            }
            Ok(Value::Object(m))
        }
        Some("file") => {
            let file = part
                .get("file")
                .and_then(Value::as_object)
                .ok_or_else(|| TranslateError::invalid(&format!("{field}.file"), "an object"))?;
            if file.get("file_id").is_some_and(|v| !v.is_null()) {
                return Err(TranslateError::unsupported(
                    &format!("{field}.file.file_id"),
                    "uploaded files cannot be referenced through this proxy; send file_data.",
                ));
            }
            let data = file
                .get("file_data")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    TranslateError::invalid(&format!("{field}.file.file_data"), "a string")
                })?;
            let mut m = Obj::new();
            m.insert("type".into(), "input_file".into());
            m.insert("file_data".into(), data.into());
            if let Some(name) = file.get("filename").and_then(Value::as_str) {
                m.insert("filename".into(), name.into());
            }
            Ok(Value::Object(m))
        }
        Some("input_audio") => Err(TranslateError::unsupported(
            &format!("{field}.type"),
            "audio input is not translated to the Responses API.",
        )),
        _ => Err(TranslateError::invalid(
            &format!("{field}.type"),
            "one of text, image_url, file",
        )),
    }
}

fn assistant_parts(content: &Value, field: &str) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Value::Array(parts) => parts,
        _ => return text_parts(content, "output_text", field),
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = part.get("text").and_then(Value::as_str).ok_or_else(|| {
                    TranslateError::invalid(&format!("{field}[{j}].text"), "a string")
                })?;
                out.push(json!({"type":"output_text","text":t}));
            }
            Some("refusal") => {
                let r = part.get("refusal").and_then(Value::as_str).unwrap_or("");
                out.push(json!({"type":"refusal","refusal":r}));
            }
            // Assistant images have no Responses counterpart: dropped (docs/translation.md).
            Some("image_url") => {}
            _ => {
                return Err(TranslateError::invalid(
                    &format!("{field}[{j}].type"),
                    "one of text, refusal",
                ))
            }
        }
    }
    Ok(out)
}

/// A tool message's content → `output`: a string, or structured parts when it holds images
/// or files (never the raw JSON text of the array).
fn tool_output(content: &Value, field: &str) -> Result<Value, TranslateError> {
    match content {
        Value::Null => Ok(Value::String(String::new())),
        Value::String(s) => Ok(Value::String(s.clone())),
        Value::Array(parts) => {
            let all_text = parts
                .iter()
                .all(|p| p.get("type").and_then(Value::as_str) == Some("text"));
            if all_text {
                let texts: Vec<&str> = parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect();
                return Ok(Value::String(texts.join("\n")));
            }
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                out.push(user_part(part, &format!("{field}[{j}]"))?);
            }
            Ok(Value::Array(out))
        }
        _ => Err(TranslateError::invalid(
            field,
            "a string or an array of parts",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Result<Mapped, TranslateError> {
        map_request(&serde_json::to_vec(&v).unwrap(), &ModelTable::builtin())
    }

    fn err(v: Value) -> TranslateError {
        map(v).unwrap_err()
    }

    #[test]
    fn minimal_request() {
        let m =
            map(json!({"model":"gpt-5.4","messages":[{"role":"user","content":"hi"}]})).unwrap();
        assert_eq!(m.body["stream"], true);
        assert_eq!(m.body["store"], false);
        assert_eq!(m.body["model"], "gpt-5.4");
        assert_eq!(
            m.body["input"],
            json!([{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}])
        );
        assert!(m.body["prompt_cache_key"]
            .as_str()
            .unwrap()
            .starts_with("chat-"));
        assert!(!m.client_stream);
        assert_eq!(m.session, None);
        assert_eq!(m.context.model, "gpt-5.4");
        assert_eq!(m.context.dialect, Dialect::Chat);
    }

    #[test]
    fn derived_cache_key_is_stable_as_the_conversation_grows() {
        let first = map(json!({"model":"gpt-5.4","messages":[{"role":"system","content":"s"},{"role":"user","content":"q1"}]})).unwrap();
        let later = map(json!({"model":"gpt-5.4","messages":[{"role":"system","content":"s"},{"role":"user","content":"q1"},
            {"role":"assistant","content":"a1"},{"role":"user","content":"q2"}]})).unwrap();
        let other = map(json!({"model":"gpt-5.4","messages":[{"role":"system","content":"s"},{"role":"user","content":"other"}]})).unwrap();
        assert_eq!(
            first.body["prompt_cache_key"],
            later.body["prompt_cache_key"]
        );
        assert_ne!(
            first.body["prompt_cache_key"],
            other.body["prompt_cache_key"]
        );
        let keyed = map(json!({"model":"gpt-5.4","prompt_cache_key":"k","user":"u","messages":[{"role":"user","content":"x"}]})).unwrap();
        assert_eq!(
            (
                keyed.body["prompt_cache_key"].as_str(),
                keyed.session.as_deref()
            ),
            (Some("k"), Some("k"))
        );
        let user =
            map(json!({"model":"gpt-5.4","user":"u","messages":[{"role":"user","content":"x"}]}))
                .unwrap();
        assert_eq!(user.session.as_deref(), Some("u"));
        assert!(user.body.get("user").is_none());
    }

    #[test]
    fn refusals_are_400_without_echo() {
        for (body, code) in [
            (
                json!({"model":"gpt-5.4","n":2,"messages":[{"role":"user","content":"x"}]}),
                "unsupported_parameter",
            ),
            (
                json!({"model":"gpt-5.4","stop":["END"],"messages":[{"role":"user","content":"x"}]}),
                "unsupported_parameter",
            ),
            (
                json!({"model":"gpt-5.4","stop":"SECRETSTOP","messages":[{"role":"user","content":"x"}]}),
                "unsupported_parameter",
            ),
            (
                json!({"model":"gpt-5.4","functions":[],"messages":[{"role":"user","content":"x"}]}),
                "unsupported_parameter",
            ),
            (
                json!({"model":"gpt-5.4","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}),
                "unsupported_parameter",
            ),
            (
                json!({"model":"gpt-5.4","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"f"}}]}]}),
                "unsupported_parameter",
            ),
            (json!({"model":"gpt-5.4","messages":[]}), "invalid_request"),
            (
                json!({"model":"gpt-5-xhigh","messages":[{"role":"user","content":"x"}]}),
                "model_not_found",
            ),
            (
                json!({"model":"gpt-5.4","messages":[{"role":"function","name":"f","content":"x"}]}),
                "unsupported_parameter",
            ),
            (
                json!({"model":"gpt-5.4","messages":[{"role":"user","content":[{"type":"video","text":"SECRET"}]}]}),
                "invalid_request",
            ),
            (
                json!({"model":"gpt-5.4","tool_choice":{"type":"function","function":{"name":"nope"}},
                "tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"x"}]}),
                "invalid_tool_choice",
            ),
        ] {
            let e = err(body.clone());
            assert_eq!((e.status, e.code), (400, code), "{body}");
            assert!(!e.message.contains("SECRET"));
        }
        assert_eq!(err(json!([1])).code, "invalid_request");
        let e = map_request(b"{not json", &ModelTable::builtin()).unwrap_err();
        assert_eq!(e.code, "invalid_json");
        map(json!({"model":"gpt-5.4","n":1,"stop":[],"messages":[{"role":"user","content":"x"}]}))
            .unwrap();
    }
}
