//! A Responses request → a Chat Completions request, for a `chat` provider reached through the
//! hub (`docs/chat-wire.md`, "Request").
//!
//! | Responses | Chat Completions |
//! | --- | --- |
//! | (always) | `stream:true`, `stream_options:{"include_usage":true}` (usage is counted from the usage chunk) |
//! | `model` | `model` (already resolved by the client's mapper) |
//! | `instructions` | a first `system` message |
//! | `developer` / `system` messages | `system` messages, in place (many chat templates know no `developer` role) |
//! | `user` text parts | `content` string (parts joined with `"\n"`) |
//! | `user` with `input_image` / `input_file` | `content` parts: `text`, `image_url{url, detail}`, `file{file_data, filename}` |
//! | `assistant` `output_text` / `refusal` parts | `content` string |
//! | `function_call` / `custom_tool_call` items | `tool_calls` of the assistant message they follow (a new assistant message when none is open); a custom call's input travels as `{"input": …}` |
//! | `function_call_output` / `custom_tool_call_output` | `role:"tool"` messages right after the assistant message that made the call, in call order; a result without an earlier call is dropped, and so is a call that never got a result (servers reject an unanswered call) |
//! | `reasoning` items, `item_reference` and other items | dropped: the chat wire has no field that carries them back |
//! | `tools`: `function` | `{"type":"function","function":{name, description, parameters, strict}}`, the schema repaired, names over 64 characters shortened |
//! | `tools`: `custom` (freeform) | a function with one string parameter `input`; its calls come back as `custom_tool_call` items |
//! | `tools`: hosted tools (`web_search`, `file_search`, …) | dropped: a chat server cannot run them |
//! | `tool_choice` | `auto` / `none` / `required` as is; a named function or custom tool → `{"type":"function","function":{"name":…}}`; other forms → `auto` |
//! | `parallel_tool_calls`, `temperature`, `top_p` | copied |
//! | `reasoning.effort` | `reasoning_effort`, only when [`ChatWireOptions::reasoning_effort`] says the server takes it |
//! | `max_output_tokens` | `max_tokens` or `max_completion_tokens` ([`ChatWireOptions::max_tokens`]) |
//! | `text.format` `json_object` / `json_schema` | `response_format` (`json_schema` nests `{name, schema, strict, description}`) |
//! | `previous_response_id` | refused (400): a chat server keeps no responses to refer back to |
//! | everything else (`store`, `include`, `prompt_cache_key`, `service_tier`, `metadata`, …) | dropped: servers may reject fields they do not know |
//! | forced `params` | merged over the body last, key by key: they always apply |

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::translate::think::ThinkMode;
use crate::translate::tool_names::ToolNameMap;
use crate::translate::{schema, TranslateError};

use super::decode::ChatWireDecoder;

type Obj = Map<String, Value>;

/// Which field carries the output token limit on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxTokensField {
    /// `max_tokens`: understood by every chat server.
    #[default]
    MaxTokens,
    /// `max_completion_tokens`: OpenAI's newer name, not understood everywhere.
    MaxCompletionTokens,
}

/// What the chat server accepts, and what the operator forces.
#[derive(Debug, Clone, Default)]
pub struct ChatWireOptions {
    /// The server accepts `reasoning_effort` (off by default: some servers reject fields they
    /// do not know).
    pub reasoning_effort: bool,
    /// The field for `max_output_tokens`.
    pub max_tokens: MaxTokensField,
    /// Forced fields of the chat body (the model's `params`), merged over it last.
    pub params: Obj,
}

/// A mapped request: the chat body, and what decoding its answer needs.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The Chat Completions body to send (`stream: true`).
    pub body: Value,
    /// Shortened → original tool names.
    pub tool_names: ToolNameMap,
    /// Names (as sent upstream) of the client's custom (freeform) tools.
    pub custom_tools: HashSet<String>,
}

impl ChatRequest {
    /// The decoder for this request's answer: the model name echoed in the Responses events,
    /// and the model's think-tag rule.
    pub fn decoder(&self, model: &str, think: ThinkMode) -> ChatWireDecoder {
        ChatWireDecoder::new(
            model,
            think,
            self.tool_names.clone(),
            self.custom_tools.clone(),
        )
    }
}

/// Maps a Responses request (the hub's form, whatever the client spoke) to a Chat Completions
/// request; see the module docs.
pub fn map_request(
    request: &Value,
    options: &ChatWireOptions,
) -> Result<ChatRequest, TranslateError> {
    let req = request
        .as_object()
        .ok_or_else(|| TranslateError::invalid("body", "a JSON object"))?;
    if req
        .get("previous_response_id")
        .is_some_and(|v| !v.is_null())
    {
        return Err(TranslateError::unsupported(
            "previous_response_id",
            "a Chat Completions provider keeps no stored responses; send the whole conversation.",
        ));
    }
    let model = match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(TranslateError::invalid("model", "a non-empty string")),
    };

    let tools = match req.get("tools") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(tools)) => tools.as_slice(),
        Some(_) => return Err(TranslateError::invalid("tools", "an array")),
    };
    let mut names = ToolNameMap::from_names(tools.iter().filter_map(tool_name));
    let mut custom_tools = HashSet::new();
    let chat_tools = map_tools(tools, &mut names, &mut custom_tools)?;

    let mut messages = Vec::new();
    if let Some(instructions) = req.get("instructions").and_then(Value::as_str) {
        if !instructions.is_empty() {
            messages.push(json!({"role": "system", "content": instructions}));
        }
    }
    match req.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => map_input(items, &mut names, &mut messages)?,
        Some(_) => {
            return Err(TranslateError::invalid(
                "input",
                "a string or an array of items",
            ))
        }
    }

    let mut body = Obj::new();
    body.insert("model".into(), Value::String(model));
    body.insert("messages".into(), Value::Array(messages));
    body.insert("stream".into(), Value::Bool(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    if !chat_tools.is_empty() {
        body.insert("tools".into(), Value::Array(chat_tools));
        if let Some(choice) = req.get("tool_choice").filter(|c| !c.is_null()) {
            body.insert("tool_choice".into(), map_tool_choice(choice, &names));
        }
        if let Some(p) = req.get("parallel_tool_calls").filter(|p| p.is_boolean()) {
            body.insert("parallel_tool_calls".into(), p.clone());
        }
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = req.get(key).filter(|v| v.is_number()) {
            body.insert(key.into(), v.clone());
        }
    }
    if let Some(max) = req.get("max_output_tokens").filter(|v| v.is_u64()) {
        let field = match options.max_tokens {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        };
        body.insert(field.into(), max.clone());
    }
    if options.reasoning_effort {
        if let Some(effort) = req
            .get("reasoning")
            .and_then(|r| r.get("effort"))
            .filter(|e| e.is_string())
        {
            body.insert("reasoning_effort".into(), effort.clone());
        }
    }
    if let Some(format) = req.get("text").and_then(|t| t.get("format")) {
        if let Some(rf) = map_text_format(format)? {
            body.insert("response_format".into(), rf);
        }
    }
    for (key, value) in &options.params {
        body.insert(key.clone(), value.clone());
    }
    Ok(ChatRequest {
        body: Value::Object(body),
        tool_names: names,
        custom_tools,
    })
}

// === Tools ===

fn tool_name(tool: &Value) -> Option<&str> {
    match tool.get("type").and_then(Value::as_str) {
        Some("function" | "custom") => tool.get("name")?.as_str(),
        _ => None,
    }
}

fn map_tools(
    tools: &[Value],
    names: &mut ToolNameMap,
    custom: &mut HashSet<String>,
) -> Result<Vec<Value>, TranslateError> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let kind = tool.get("type").and_then(Value::as_str);
        let name = match kind {
            Some("function" | "custom") => tool
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    TranslateError::invalid(&format!("tools[{i}].name"), "a non-empty string")
                })?,
            _ => continue,
        };
        let short = names.shorten(name);
        let mut function = Obj::new();
        function.insert("name".into(), Value::String(short.clone()));
        if let Some(d) = tool.get("description").filter(|d| d.is_string()) {
            function.insert("description".into(), d.clone());
        }
        if kind == Some("custom") {
            function.insert(
                "parameters".into(),
                json!({"type":"object","properties":{"input":{"type":"string"}},"required":["input"]}),
            );
            custom.insert(short);
        } else {
            let mut parameters = tool.get("parameters").cloned().unwrap_or(Value::Null);
            schema::repair(&mut parameters);
            let strict = tool.get("strict").and_then(Value::as_bool) == Some(true)
                && schema::is_strict_compatible(&parameters);
            function.insert("parameters".into(), parameters);
            if strict {
                function.insert("strict".into(), Value::Bool(true));
            }
        }
        out.push(json!({"type": "function", "function": Value::Object(function)}));
    }
    Ok(out)
}

fn map_tool_choice(choice: &Value, names: &ToolNameMap) -> Value {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => choice.clone(),
        Value::Object(o)
            if matches!(
                o.get("type").and_then(Value::as_str),
                Some("function" | "custom")
            ) =>
        {
            match o
                .get("name")
                .and_then(Value::as_str)
                .and_then(|n| names.lookup(n))
            {
                Some(short) => json!({"type":"function","function":{"name": short}}),
                None => Value::String("auto".into()),
            }
        }
        _ => Value::String("auto".into()),
    }
}

/// `text.format` → `response_format` (`None` for plain text).
fn map_text_format(format: &Value) -> Result<Option<Value>, TranslateError> {
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type":"json_object"}))),
        Some("json_schema") => {
            let mut inner = Obj::new();
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    inner.insert(key.into(), v.clone());
                }
            }
            if !inner.contains_key("schema") {
                return Err(TranslateError::invalid("text.format.schema", "an object"));
            }
            Ok(Some(
                json!({"type":"json_schema","json_schema": Value::Object(inner)}),
            ))
        }
        Some(_) => Err(TranslateError::invalid(
            "text.format.type",
            "one of text, json_object, json_schema",
        )),
    }
}

// === Input ===

/// One assistant turn being built: its text and its calls, and the results seen for them.
#[derive(Default)]
struct Turn {
    text: Vec<String>,
    calls: Vec<Value>,
    call_ids: Vec<String>,
    results: Vec<(String, Value)>,
}

impl Turn {
    fn flush(&mut self, out: &mut Vec<Value>) {
        let turn = std::mem::take(self);
        // Only calls that got a result stay; results follow in call order.
        let mut answered = Vec::new();
        let mut results = Vec::new();
        for (call, id) in turn.calls.into_iter().zip(turn.call_ids) {
            if let Some(pos) = turn.results.iter().position(|(r, _)| *r == id) {
                answered.push(call);
                results.push(turn.results[pos].1.clone());
            }
        }
        if turn.text.is_empty() && answered.is_empty() {
            return;
        }
        let mut message = Obj::new();
        message.insert("role".into(), "assistant".into());
        message.insert(
            "content".into(),
            if turn.text.is_empty() {
                Value::Null
            } else {
                Value::String(turn.text.join("\n"))
            },
        );
        if !answered.is_empty() {
            message.insert("tool_calls".into(), Value::Array(answered));
        }
        out.push(Value::Object(message));
        out.extend(results);
    }
}

fn map_input(
    items: &[Value],
    names: &mut ToolNameMap,
    out: &mut Vec<Value>,
) -> Result<(), TranslateError> {
    let mut turn = Turn::default();
    for (i, item) in items.iter().enumerate() {
        let field = format!("input[{i}]");
        let kind =
            item.get("type")
                .and_then(Value::as_str)
                .unwrap_or(if item.get("role").is_some() {
                    "message"
                } else {
                    ""
                });
        match kind {
            "message" => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                let content = item.get("content").unwrap_or(&Value::Null);
                match role {
                    "assistant" => {
                        if !turn.calls.is_empty() {
                            turn.flush(out);
                        }
                        let text = joined_text(content, &field)?;
                        if !text.is_empty() {
                            turn.text.push(text);
                        }
                    }
                    "system" | "developer" => {
                        turn.flush(out);
                        out.push(json!({"role":"system","content": joined_text(content, &field)?}));
                    }
                    _ => {
                        turn.flush(out);
                        out.push(json!({"role":"user","content": user_content(content, &field)?}));
                    }
                }
            }
            "function_call" | "custom_tool_call" => {
                let call_id = item.get("call_id").and_then(Value::as_str).ok_or_else(|| {
                    TranslateError::invalid(&format!("{field}.call_id"), "a string")
                })?;
                let name = item
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::invalid(&format!("{field}.name"), "a string"))?;
                let arguments = if kind == "custom_tool_call" {
                    let input = item.get("input").and_then(Value::as_str).unwrap_or("");
                    json!({ "input": input }).to_string()
                } else {
                    item.get("arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}")
                        .to_owned()
                };
                if turn.call_ids.iter().any(|id| id == call_id) {
                    continue;
                }
                turn.calls.push(json!({
                    "id": call_id, "type": "function",
                    "function": {"name": names.shorten(name), "arguments": arguments},
                }));
                turn.call_ids.push(call_id.to_owned());
            }
            "function_call_output" | "custom_tool_call_output" => {
                let Some(call_id) = item.get("call_id").and_then(Value::as_str) else {
                    continue;
                };
                let answers_open_call = turn.call_ids.iter().any(|id| id == call_id);
                let repeated = turn.results.iter().any(|(id, _)| id == call_id);
                if !answers_open_call || repeated {
                    // An orphan result (or a second one) would be rejected by the server.
                    continue;
                }
                let content = tool_content(item.get("output").unwrap_or(&Value::Null), &field)?;
                turn.results.push((
                    call_id.to_owned(),
                    json!({"role":"tool","tool_call_id": call_id, "content": content}),
                ));
            }
            _ => {}
        }
    }
    turn.flush(out);
    Ok(())
}

/// The text of a message's content (a string, or text parts joined with `"\n"`).
fn joined_text(content: &Value, field: &str) -> Result<String, TranslateError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                let text = part
                    .get("text")
                    .or_else(|| part.get("refusal"))
                    .and_then(Value::as_str);
                if let Some(t) = text {
                    texts.push(t);
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Err(TranslateError::invalid(
            &format!("{field}.content"),
            "a string or an array of parts",
        )),
    }
}

/// A user message's content: a string when it is all text, else chat content parts.
fn user_content(content: &Value, field: &str) -> Result<Value, TranslateError> {
    let Value::Array(parts) = content else {
        return joined_text(content, field).map(Value::String);
    };
    let all_text = parts.iter().all(|p| {
        matches!(
            p.get("type").and_then(Value::as_str),
            Some("input_text" | "output_text" | "text")
        )
    });
    if all_text {
        return joined_text(content, field).map(Value::String);
    }
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let at = || format!("{field}.content[{j}]");
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => {
                let t = part.get("text").and_then(Value::as_str).unwrap_or("");
                out.push(json!({"type":"text","text":t}));
            }
            Some("input_image") => {
                let url = part
                    .get("image_url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        TranslateError::unsupported(
                            &format!("{}.image_url", at()),
                            "only images given by URL or data URL reach a Chat Completions provider.",
                        )
                    })?;
                let mut image = Obj::new();
                image.insert("url".into(), url.into());
                if let Some(d) = part.get("detail").and_then(Value::as_str) {
                    image.insert("detail".into(), d.into());
                }
                out.push(json!({"type":"image_url","image_url": Value::Object(image)}));
            }
            Some("input_file") => {
                let data = part
                    .get("file_data")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        TranslateError::unsupported(
                            &format!("{}.file_data", at()),
                            "only inline files reach a Chat Completions provider.",
                        )
                    })?;
                let mut file = Obj::new();
                file.insert("file_data".into(), data.into());
                if let Some(name) = part.get("filename").and_then(Value::as_str) {
                    file.insert("filename".into(), name.into());
                }
                out.push(json!({"type":"file","file": Value::Object(file)}));
            }
            _ => {
                return Err(TranslateError::invalid(
                    &format!("{}.type", at()),
                    "one of input_text, input_image, input_file",
                ))
            }
        }
    }
    Ok(Value::Array(out))
}

/// A tool result's `output`: a string, or the text of its parts (images and files keep their
/// chat part form).
fn tool_content(output: &Value, field: &str) -> Result<Value, TranslateError> {
    match output {
        Value::String(_) => Ok(output.clone()),
        Value::Null => Ok(Value::String(String::new())),
        Value::Array(_) => user_content(output, &format!("{field}.output")),
        other => Ok(Value::String(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(request: Value) -> Value {
        map_request(&request, &ChatWireOptions::default())
            .unwrap()
            .body
    }

    #[test]
    fn minimal_request_streams_and_asks_for_usage() {
        assert_eq!(
            map(json!({"model":"qwen3","input":"hi","stream":true,"store":false,"include":["x"]})),
            json!({"model":"qwen3","messages":[{"role":"user","content":"hi"}],"stream":true,
                   "stream_options":{"include_usage":true}})
        );
    }

    #[test]
    fn instructions_developer_and_system_become_system_messages_in_order() {
        let body = map(json!({"model":"m","instructions":"be brief","input":[
            {"type":"message","role":"developer","content":[{"type":"input_text","text":"dev"}]},
            {"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_text","text":"b"}]},
            {"type":"message","role":"system","content":"sys"},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"ok"}]},
        ]}));
        assert_eq!(
            body["messages"],
            json!([
                {"role":"system","content":"be brief"},
                {"role":"system","content":"dev"},
                {"role":"user","content":"a\nb"},
                {"role":"system","content":"sys"},
                {"role":"assistant","content":"ok"},
            ])
        );
    }

    #[test]
    fn images_and_files_become_content_parts() {
        let body = map(json!({"model":"m","input":[{"role":"user","content":[
            {"type":"input_text","text":"look"},
            {"type":"input_image","image_url":"data:image/png;base64,AAAA","detail":"low"},
            {"type":"input_file","file_data":"data:application/pdf;base64,BBBB","filename":"a.pdf"},
        ]}]}));
        assert_eq!(
            body["messages"][0]["content"],
            json!([
                {"type":"text","text":"look"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}},
                {"type":"file","file":{"file_data":"data:application/pdf;base64,BBBB","filename":"a.pdf"}},
            ])
        );
        let err = map_request(
            &json!({"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"f"}]}]}),
            &ChatWireOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.code, "unsupported_parameter");
    }

    #[test]
    fn calls_join_the_assistant_turn_and_results_follow_paired_by_call_id() {
        let body = map(json!({"model":"m","input":[
            {"role":"user","content":"go"},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"running"}]},
            {"type":"function_call","call_id":"c1","name":"shell","arguments":"{\"cmd\":\"ls\"}"},
            {"type":"function_call","call_id":"c2","name":"read","arguments":"{}"},
            {"type":"reasoning","summary":[],"encrypted_content":"x"},
            {"type":"function_call_output","call_id":"c2","output":"two"},
            {"type":"function_call_output","call_id":"c1","output":[{"type":"input_text","text":"one"}]},
            {"type":"function_call_output","call_id":"orphan","output":"dropped"},
            {"type":"function_call","call_id":"c3","name":"shell","arguments":"{}"},
            {"role":"user","content":"next"},
        ]}));
        assert_eq!(
            body["messages"],
            json!([
                {"role":"user","content":"go"},
                {"role":"assistant","content":"running","tool_calls":[
                    {"id":"c1","type":"function","function":{"name":"shell","arguments":"{\"cmd\":\"ls\"}"}},
                    {"id":"c2","type":"function","function":{"name":"read","arguments":"{}"}},
                ]},
                {"role":"tool","tool_call_id":"c1","content":"one"},
                {"role":"tool","tool_call_id":"c2","content":"two"},
                {"role":"user","content":"next"},
            ])
        );
    }

    #[test]
    fn a_calls_only_turn_has_null_content_and_custom_calls_carry_their_input() {
        let body = map(json!({"model":"m","input":[
            {"type":"custom_tool_call","call_id":"c1","name":"apply_patch","input":"*** Begin"},
            {"type":"custom_tool_call_output","call_id":"c1","output":"done"},
        ]}));
        assert_eq!(
            body["messages"],
            json!([
                {"role":"assistant","content":null,"tool_calls":[
                    {"id":"c1","type":"function","function":{"name":"apply_patch","arguments":"{\"input\":\"*** Begin\"}"}},
                ]},
                {"role":"tool","tool_call_id":"c1","content":"done"},
            ])
        );
    }

    #[test]
    fn tools_become_functions_with_repaired_schemas_and_short_names() {
        let long = format!("mcp__server__{}", "x".repeat(80));
        let mapped = map_request(
            &json!({"model":"m","input":"hi","tools":[
                {"type":"function","name":"shell","description":"run","parameters":{"type":"object","properties":{"a":{"type":"array"}}},"strict":false},
                {"type":"function","name": long, "parameters":null},
                {"type":"custom","name":"apply_patch","description":"patch","format":{"type":"grammar"}},
                {"type":"web_search"},
            ],"tool_choice":{"type":"function","name": long},"parallel_tool_calls":false}),
            &ChatWireOptions::default(),
        )
        .unwrap();
        let short = mapped.tool_names.lookup(&long).unwrap().to_owned();
        assert!(short.len() <= 64 && short.starts_with("mcp__"));
        assert_eq!(
            mapped.body["tools"],
            json!([
                {"type":"function","function":{"name":"shell","description":"run",
                    "parameters":{"type":"object","properties":{"a":{"type":"array","items":{}}}}}},
                {"type":"function","function":{"name": short,"parameters":{"type":"object","properties":{}}}},
                {"type":"function","function":{"name":"apply_patch","description":"patch",
                    "parameters":{"type":"object","properties":{"input":{"type":"string"}},"required":["input"]}}},
            ])
        );
        assert_eq!(
            mapped.body["tool_choice"],
            json!({"type":"function","function":{"name": short}})
        );
        assert_eq!(mapped.body["parallel_tool_calls"], json!(false));
        assert!(mapped.custom_tools.contains("apply_patch"));
    }

    #[test]
    fn tool_choice_strings_pass_and_other_forms_become_auto() {
        let with = |choice: Value| {
            map(json!({"model":"m","input":"x","tools":[{"type":"function","name":"f"}],"tool_choice":choice}))
                ["tool_choice"]
                .clone()
        };
        assert_eq!(with(json!("required")), json!("required"));
        assert_eq!(with(json!("none")), json!("none"));
        assert_eq!(with(json!({"type":"web_search"})), json!("auto"));
        assert_eq!(
            with(json!({"type":"function","name":"unknown"})),
            json!("auto")
        );
        // Without tools, no tool_choice goes out.
        assert!(map(json!({"model":"m","input":"x","tool_choice":"auto"}))
            .get("tool_choice")
            .is_none());
    }

    #[test]
    fn effort_and_token_limit_follow_the_options() {
        let request = json!({"model":"m","input":"x","reasoning":{"effort":"high","summary":"auto"},
                             "max_output_tokens":500,"temperature":0.5,"top_p":0.9});
        let plain = map(request.clone());
        assert!(plain.get("reasoning_effort").is_none());
        assert_eq!(plain["max_tokens"], json!(500));
        assert_eq!(
            (plain["temperature"].clone(), plain["top_p"].clone()),
            (json!(0.5), json!(0.9))
        );
        let options = ChatWireOptions {
            reasoning_effort: true,
            max_tokens: MaxTokensField::MaxCompletionTokens,
            ..Default::default()
        };
        let body = map_request(&request, &options).unwrap().body;
        assert_eq!(body["reasoning_effort"], json!("high"));
        assert_eq!(body["max_completion_tokens"], json!(500));
        assert!(body.get("max_tokens").is_none());
    }

    #[test]
    fn text_format_becomes_response_format() {
        let with = |format: Value| map(json!({"model":"m","input":"x","text":{"format":format}}));
        assert!(with(json!({"type":"text"}))
            .get("response_format")
            .is_none());
        assert_eq!(
            with(json!({"type":"json_object"}))["response_format"],
            json!({"type":"json_object"})
        );
        assert_eq!(
            with(json!({"type":"json_schema","name":"r","schema":{"type":"object"},"strict":true}))
                ["response_format"],
            json!({"type":"json_schema","json_schema":{"name":"r","schema":{"type":"object"},"strict":true}})
        );
    }

    #[test]
    fn forced_params_apply_last() {
        let mut params = Map::new();
        params.insert("temperature".into(), json!(0.7));
        params.insert("top_k".into(), json!(20));
        params.insert(
            "stream_options".into(),
            json!({"include_usage":true,"continuous_usage_stats":false}),
        );
        let options = ChatWireOptions {
            params,
            ..Default::default()
        };
        let body = map_request(
            &json!({"model":"m","input":"x","temperature":0.1}),
            &options,
        )
        .unwrap()
        .body;
        assert_eq!(body["temperature"], json!(0.7));
        assert_eq!(body["top_k"], json!(20));
        assert_eq!(
            body["stream_options"]["continuous_usage_stats"],
            json!(false)
        );
    }

    #[test]
    fn previous_response_id_is_refused_without_echo() {
        let err = map_request(
            &json!({"model":"m","input":"secret prompt","previous_response_id":"resp_x"}),
            &ChatWireOptions::default(),
        )
        .unwrap_err();
        assert_eq!((err.status, err.code), (400, "unsupported_parameter"));
        assert!(!err.message.contains("secret") && !err.message.contains("resp_x"));
    }
}
