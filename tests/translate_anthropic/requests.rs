//! Request-mapping rules that read better as code than as fixtures.

use codex_proxy::translate::anthropic::{self, count_tokens};
use codex_proxy::translate::models::ModelTable;
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

fn map(body: Value) -> Value {
    anthropic::map_request(&body, &ModelTable::builtin())
        .unwrap()
        .body
}

fn refuse(body: Value) -> (u16, String) {
    let e = anthropic::map_request(&body, &ModelTable::builtin()).unwrap_err();
    (e.status, e.message)
}

fn with(extra: Value) -> Value {
    let mut body = json!({
        "model": "gpt-5.4",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[test]
fn thinking_budgets_map_to_efforts() {
    for (budget, effort) in [
        (0, "none"),
        (1024, "low"),
        (1025, "medium"),
        (8192, "medium"),
        (24576, "high"),
        (32768, "xhigh"),
        (100_000, "xhigh"),
    ] {
        let body = map(with(
            json!({"thinking": {"type": "enabled", "budget_tokens": budget}}),
        ));
        assert_eq!(body["reasoning"]["effort"], effort, "budget {budget}");
        let summary = if effort == "none" {
            Value::Null
        } else {
            json!("auto")
        };
        assert_eq!(body["reasoning"]["summary"], summary, "budget {budget}");
    }
}

#[test]
fn adaptive_disabled_and_output_config_efforts() {
    let body = map(with(json!({"thinking": {"type": "adaptive"}})));
    assert_eq!(
        body["reasoning"],
        json!({"effort": "high", "summary": "auto"})
    );
    let body = map(with(json!({
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "max"},
    })));
    assert_eq!(body["reasoning"]["effort"], "xhigh");
    let body = map(with(json!({
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "output_config": {"effort": "low"},
    })));
    assert_eq!(body["reasoning"]["effort"], "low", "output_config wins");
    let body = map(with(json!({"thinking": {"type": "disabled"}})));
    assert_eq!(body["reasoning"], json!({"effort": "none"}));
    let body = map(with(json!({})));
    assert_eq!(
        body.get("reasoning"),
        None,
        "no thinking, no effort: model default"
    );
}

#[test]
fn a_model_suffix_overrides_the_thinking_budget() {
    let body = map(json!({
        "model": "gpt-5.4-low",
        "max_tokens": 10,
        "thinking": {"type": "enabled", "budget_tokens": 30000},
        "messages": [{"role": "user", "content": "hi"}],
    }));
    assert_eq!(body["model"], "gpt-5.4");
    assert_eq!(body["reasoning"]["effort"], "low");
}

#[test]
fn fast_tier_and_unaccepted_suffix() {
    let body = map(with(json!({"speed": "fast"})));
    assert_eq!(body["service_tier"], "priority");
    let body = map(with(json!({"service_tier": "standard_only"})));
    assert_eq!(body.get("service_tier"), None);
    let (status, _) = refuse(with(json!({"model": "gpt-5-xhigh"})));
    assert_eq!(status, 400);
}

#[test]
fn structured_output_format() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": false});
    let body = map(with(
        json!({"output_config": {"format": {"type": "json_schema", "schema": schema}}}),
    ));
    assert_eq!(
        body["text"],
        json!({"format": {"type": "json_schema", "name": "output", "schema": schema, "strict": true}})
    );
}

#[test]
fn limits_and_sampling() {
    let body = map(with(
        json!({"max_tokens": 1, "temperature": 0.2, "top_k": 5}),
    ));
    assert_eq!(
        body["max_output_tokens"], 16,
        "raised to the Responses minimum"
    );
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body.get("top_k"), None);
    assert_eq!(body.get("stop_sequences"), None);
    assert_eq!(body.get("stop"), None);
}

#[test]
fn streaming_is_decided_by_the_body() {
    let m = anthropic::map_request(&with(json!({"stream": true})), &ModelTable::builtin()).unwrap();
    assert!(m.client_stream);
    let m = anthropic::map_request(&with(json!({})), &ModelTable::builtin()).unwrap();
    assert!(!m.client_stream);
    assert_eq!(m.body["stream"], true);
}

#[test]
fn malformed_requests_are_refused_without_echoing_content() {
    let secret = "sk-very-secret-value-that-must-not-leak";
    for body in [
        json!("just a string"),
        json!({"messages": []}),
        json!({"model": "gpt-5.4", "max_tokens": 1}),
        json!({"model": "gpt-5.4", "messages": [{"role": "tool", "content": secret}]}),
        json!({"model": "gpt-5.4", "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
        json!({"model": "gpt-5.4", "messages": [{"role": "user", "content": 5}]}),
        with(json!({"system": [{"type": "image", "text": secret}]})),
        with(json!({"thinking": {"type": "enabled"}})),
        with(json!({"thinking": {"type": secret}})),
        with(json!({"tools": [{"type": "bash_20250124", "name": "bash"}]})),
        with(json!({"tools": [{"name": "a"}], "tool_choice": {"type": "tool", "name": secret}})),
        with(json!({"tool_choice": {"type": "any"}, "tools": "nope"})),
        with(json!({"output_config": {"effort": secret}})),
        with(
            json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": secret}}]}]}),
        ),
    ] {
        let e = anthropic::map_request(&body, &ModelTable::builtin()).unwrap_err();
        assert_eq!(e.status, 400, "{body}");
        assert!(!e.message.contains(secret), "{}", e.message);
        assert!(!e.message.contains("very-secret"), "{}", e.message);
    }
}

#[test]
fn tool_choice_without_tools_is_dropped_but_a_named_tool_must_exist() {
    let body = map(with(json!({"tool_choice": {"type": "auto"}})));
    assert_eq!(body.get("tool_choice"), None);
    let (status, message) = refuse(with(json!({"tool_choice": {"type": "tool", "name": "x"}})));
    assert_eq!(status, 400);
    assert!(message.contains("tool_choice"), "{message}");
    let body = map(with(json!({
        "tools": [{"name": "x", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
    })));
    assert_eq!(body["tool_choice"], "required");
    assert_eq!(body["parallel_tool_calls"], false);
    let body = map(with(json!({
        "tools": [{"name": "x"}],
        "tool_choice": {"type": "none"},
    })));
    assert_eq!(body["tool_choice"], "none");
    assert_eq!(
        body.get("parallel_tool_calls"),
        None,
        "client value only when given"
    );
}

#[test]
fn valid_tool_schemas_are_unchanged() {
    let schema = json!({
        "type": "object",
        "properties": {"q": {"type": "string", "description": "query"}, "n": {"type": "array", "items": {"type": "integer"}}},
        "required": ["q"],
        "additionalProperties": false,
    });
    let body = map(with(
        json!({"tools": [{"name": "s", "input_schema": schema}]}),
    ));
    assert_eq!(body["tools"][0]["parameters"], schema);
    assert_eq!(body["tools"][0]["strict"], false);
}

#[test]
fn count_tokens_is_a_local_estimate() {
    let body = json!({
        "model": "claude-opus-4-8",
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "How many tokens is this?"}],
    });
    let out: Value = serde_json::from_slice(&count_tokens(&body).unwrap()).unwrap();
    // 14 + 24 bytes → 10 tokens, one message 4, the request 3.
    assert_eq!(out, json!({"input_tokens": 17}));
    let longer = json!({
        "messages": [{"role": "user", "content": "How many tokens is this? ".repeat(40)}],
    });
    let n: Value = serde_json::from_slice(&count_tokens(&longer).unwrap()).unwrap();
    assert!(n["input_tokens"].as_u64().unwrap() > 200);
    assert_eq!(
        count_tokens(&json!({"model": "m"})).unwrap_err().status,
        400
    );
}

#[test]
fn bytes_and_parsed_bodies_map_the_same() {
    let value = with(json!({"stream": true, "system": "s"}));
    let bytes = serde_json::to_vec(&value).unwrap();
    let models = ModelTable::builtin();
    let a = anthropic::map_request(&value, &models).unwrap();
    let b = anthropic::map_request(&bytes[..], &models).unwrap();
    assert_eq!(a.body, b.body);
    assert_eq!(a.client_stream, b.client_stream);
    let e = anthropic::map_request(&b"{\"model\": sk-secret"[..], &models).unwrap_err();
    assert_eq!((e.status, e.code), (400, "invalid_json"));
    assert!(!e.message.contains("sk-secret"));
    assert_eq!(
        count_tokens(&bytes[..]).unwrap(),
        count_tokens(&value).unwrap()
    );
    assert_eq!(count_tokens(&b"nope"[..]).unwrap_err().status, 400);
}
