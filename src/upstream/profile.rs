//! Upstream profiles: what each kind of upstream accepts, applied to a Responses request body
//! just before it goes to an account of that kind.
//!
//! The OpenAI API takes the Responses API as documented: bodies pass unchanged. The Codex
//! backend (ChatGPT accounts) is narrower (`docs/upstream-contract.md`, "Codex backend: what a
//! request body may contain"):
//!
//! | rule                                   | done here                                         |
//! |----------------------------------------|---------------------------------------------------|
//! | `stream` must be `true`                | forced; a non-streaming client's answer is aggregated from the events |
//! | `store` must be `false`                | forced                                            |
//! | `instructions` required                | `""` added when absent                            |
//! | no `system` role in `input`            | rewritten to `developer`                          |
//! | rejected parameters                    | removed: `max_output_tokens`, `max_completion_tokens`, `temperature`, `top_p`, `context_management`, `truncation`, `user`, `safety_identifier`, `prompt_cache_retention`, `previous_response_id` (nothing is stored), `stream_options` other than `reasoning_summary_delivery` |
//!
//! Compaction bodies (`/responses/compact`) get only the removals and the role rewrite: the
//! backend refuses `stream`, `store` and `include` there.

use serde_json::{Map, Value};

/// Parameters the Codex backend refuses.
const CODEX_REJECTED: &[&str] = &[
    "max_output_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "context_management",
    "truncation",
    "user",
    "safety_identifier",
    "prompt_cache_retention",
    "previous_response_id",
];

/// Applies the Codex backend's rules to a Responses body; `None` when nothing had to change
/// (the original bytes then go upstream as they are, compressed or not) or the body is not a
/// JSON object (the front end has refused those already).
pub fn codex_backend(json: &[u8], compact: bool) -> Option<Vec<u8>> {
    let mut body: Map<String, Value> = serde_json::from_slice(json).ok()?;
    if !apply_codex_backend(&mut body, compact) {
        return None;
    }
    serde_json::to_vec(&body).ok()
}

/// The same rules on a parsed body; true when something changed.
pub fn apply_codex_backend(body: &mut Map<String, Value>, compact: bool) -> bool {
    let mut changed = false;
    for key in CODEX_REJECTED {
        changed |= body.remove(*key).is_some();
    }
    if let Some(options) = body.get_mut("stream_options") {
        let kept = options
            .as_object()
            .and_then(|o| o.get("reasoning_summary_delivery"))
            .cloned();
        match kept {
            Some(value) => {
                let only: Map<String, Value> = [("reasoning_summary_delivery".to_string(), value)]
                    .into_iter()
                    .collect();
                if options.as_object().is_some_and(|o| o.len() != 1) {
                    *options = Value::Object(only);
                    changed = true;
                }
            }
            None => {
                body.remove("stream_options");
                changed = true;
            }
        }
    }
    if let Some(Value::Array(items)) = body.get_mut("input") {
        for item in items {
            if let Some(role) = item.get_mut("role") {
                if role == "system" {
                    *role = Value::String("developer".into());
                    changed = true;
                }
            }
        }
    }
    if compact {
        return changed;
    }
    if body.get("stream") != Some(&Value::Bool(true)) {
        body.insert("stream".into(), Value::Bool(true));
        changed = true;
    }
    if body.get("store") != Some(&Value::Bool(false)) {
        body.insert("store".into(), Value::Bool(false));
        changed = true;
    }
    if !body.get("instructions").is_some_and(Value::is_string) {
        body.insert("instructions".into(), Value::String(String::new()));
        changed = true;
    }
    changed
}

/// Removes reasoning ciphertext from a request's `input` (reasoning items carrying
/// `encrypted_content`), for the one retry after `invalid_encrypted_content`; `None` when
/// there was none to remove.
pub fn strip_encrypted_reasoning(json: &[u8]) -> Option<Vec<u8>> {
    let mut body: Map<String, Value> = serde_json::from_slice(json).ok()?;
    let Some(Value::Array(items)) = body.get_mut("input") else {
        return None;
    };
    let before = items.len();
    items.retain(|item| {
        !(item.get("type") == Some(&Value::String("reasoning".into()))
            && item.get("encrypted_content").is_some())
    });
    if items.len() == before {
        return None;
    }
    serde_json::to_vec(&body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(body: Value, compact: bool) -> Option<Value> {
        codex_backend(&serde_json::to_vec(&body).unwrap(), compact)
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn a_codex_cli_body_needs_only_instructions() {
        let body = json!({"model":"gpt-5","stream":true,"store":false,"input":[{"type":"message","role":"developer","content":[]}],
                          "include":["reasoning.encrypted_content"],"prompt_cache_key":"t"});
        let out = apply(body.clone(), false).unwrap();
        let mut expected = body;
        expected["instructions"] = json!("");
        assert_eq!(out, expected);
        assert_eq!(
            apply(out, false),
            None,
            "an adjusted body needs nothing more"
        );
    }

    #[test]
    fn an_api_style_body_is_fitted_to_the_codex_backend() {
        let out = apply(
            json!({"model":"gpt-5","input":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],
                   "temperature":0.2,"top_p":1,"max_output_tokens":50,"previous_response_id":"resp_1","user":"u",
                   "stream_options":{"include_usage":true},"instructions":"sys"}),
            false,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"model":"gpt-5","input":[{"role":"developer","content":"be brief"},{"role":"user","content":"hi"}],
                   "instructions":"sys","stream":true,"store":false})
        );
    }

    #[test]
    fn compaction_bodies_get_no_stream_store_or_include() {
        let body = json!({"model":"gpt-5","input":[],"tools":[],"parallel_tool_calls":true});
        assert_eq!(apply(body, true), None);
        let out = apply(
            json!({"model":"gpt-5","input":[{"role":"system","content":"x"}],"temperature":1}),
            true,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"model":"gpt-5","input":[{"role":"developer","content":"x"}]})
        );
    }

    #[test]
    fn encrypted_reasoning_is_stripped_for_the_retry() {
        let body = json!({"input":[{"type":"reasoning","summary":[],"encrypted_content":"gAAAA"},{"type":"message","role":"user","content":"hi"}]});
        let out: Value = serde_json::from_slice(
            &strip_encrypted_reasoning(&serde_json::to_vec(&body).unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"input":[{"type":"message","role":"user","content":"hi"}]})
        );
        assert_eq!(strip_encrypted_reasoning(br#"{"input":[]}"#), None);
    }
}
