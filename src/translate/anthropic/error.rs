//! Anthropic error shapes: `{"type":"error","error":{"type":…,"message":…}}` as an HTTP body,
//! or as one `event: error` SSE event after the stream has started.

use super::json::write_str;

/// The Anthropic error types a client may see.
const ANTHROPIC_TYPES: [&str; 10] = [
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "timeout_error",
    "api_error",
    "overloaded_error",
];

/// The Anthropic error type for an HTTP status (Anthropic's own status table; 503 is answered
/// as `overloaded_error` like 529, since both mean "try again shortly").
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The Anthropic error type for an upstream error code (`response.failed` `error.code`, an
/// `error` event's `code`, or an OpenAI `error.type`), if the code is recognised. An Anthropic
/// type passes through unchanged.
pub fn error_type_for_code(code: &str) -> Option<&'static str> {
    if let Some(t) = ANTHROPIC_TYPES.iter().find(|t| **t == code) {
        return Some(t);
    }
    let t = match code {
        "rate_limit_exceeded"
        | "usage_limit_reached"
        | "usage_limit_exceeded"
        | "insufficient_quota"
        | "billing_hard_cap_reached"
        | "usage_not_included" => "rate_limit_error",
        "server_is_overloaded" | "server_overloaded" | "overloaded" | "slow_down" => {
            "overloaded_error"
        }
        "context_length_exceeded"
        | "invalid_prompt"
        | "invalid_request"
        | "invalid_request_error"
        | "invalid_encrypted_content"
        | "previous_response_not_found"
        | "cyber_policy"
        | "string_above_max_length"
        | "unsupported_parameter"
        | "invalid_value" => "invalid_request_error",
        "model_not_found" | "not_found" => "not_found_error",
        "invalid_api_key" | "authentication_error" | "unauthorized" => "authentication_error",
        "permission_denied" | "forbidden" => "permission_error",
        "server_error" | "internal_error" => "api_error",
        _ => return None,
    };
    Some(t)
}

/// A whole Anthropic error body for an HTTP error answer. The type comes from `code` when it
/// is recognised (see [`error_type_for_code`]), else from `status`.
pub fn error_body(status: u16, code: &str, message: &str) -> Vec<u8> {
    let kind = error_type_for_code(code).unwrap_or_else(|| error_type_for_status(status));
    let mut out = Vec::with_capacity(64 + message.len());
    write_error_json(&mut out, kind, message);
    out
}

/// One whole `event: error` SSE event (after the stream has started). The type comes from
/// `code` when it is recognised, else `api_error`.
pub fn error_event(code: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(80 + message.len());
    write_error_event(
        &mut out,
        error_type_for_code(code).unwrap_or("api_error"),
        message,
    );
    out
}

pub(crate) fn write_error_event(out: &mut Vec<u8>, kind: &str, message: &str) {
    out.extend_from_slice(b"event: error\ndata: ");
    write_error_json(out, kind, message);
    out.extend_from_slice(b"\n\n");
}

fn write_error_json(out: &mut Vec<u8>, kind: &str, message: &str) {
    out.extend_from_slice(b"{\"type\":\"error\",\"error\":{\"type\":");
    write_str(out, kind);
    out.extend_from_slice(b",\"message\":");
    write_str(out, message);
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn status_table() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (422, "invalid_request_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (529, "overloaded_error"),
        ] {
            assert_eq!(error_type_for_status(status), kind, "{status}");
        }
    }

    #[test]
    fn body_uses_code_then_status() {
        let v: Value = serde_json::from_slice(&error_body(400, "whatever", "bad \"x\"")).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","error":{"type":"invalid_request_error","message":"bad \"x\""}})
        );
        let v: Value =
            serde_json::from_slice(&error_body(500, "rate_limit_exceeded", "slow")).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        let v: Value = serde_json::from_slice(&error_body(529, "", "busy")).unwrap();
        assert_eq!(v["error"]["type"], "overloaded_error");
    }

    #[test]
    fn event_is_one_sse_event() {
        let ev = error_event("server_is_overloaded", "line1\nline2");
        let text = String::from_utf8(ev).unwrap();
        assert!(text.starts_with("event: error\ndata: "));
        assert!(text.ends_with("\n\n"));
        let data = text
            .trim_end()
            .strip_prefix("event: error\ndata: ")
            .unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","error":{"type":"overloaded_error","message":"line1\nline2"}})
        );
        let v = error_event("mystery", "m");
        assert!(String::from_utf8(v).unwrap().contains("\"api_error\""));
    }
}
