//! The one error type of request translation, and the status table for upstream failures.
//!
//! Messages never echo request bytes: at most a field *name* appears in them, so a client's
//! prompt (or a secret pasted into it) cannot leak into logs through an error.

/// A request the translator refuses, or an upstream failure rendered for a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code}, HTTP {status})")]
pub struct TranslateError {
    /// The HTTP status to answer with (400 for almost every request fault).
    pub status: u16,
    /// A stable machine-readable code (`invalid_request`, `unsupported_parameter`, …).
    pub code: &'static str,
    /// A fixed sentence, possibly naming a field; never request content.
    pub message: String,
}

impl TranslateError {
    /// A 400 with the given code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        TranslateError {
            status: 400,
            code,
            message: message.into(),
        }
    }

    /// A 400 `invalid_request` for a field with the wrong shape.
    pub fn invalid(field: &str, expected: &str) -> Self {
        Self::bad_request("invalid_request", format!("`{field}` must be {expected}."))
    }

    /// A 400 `unsupported_parameter` for a field this proxy cannot honour faithfully.
    pub fn unsupported(field: &str, why: &str) -> Self {
        Self::bad_request(
            "unsupported_parameter",
            format!("`{field}` is not supported: {why}"),
        )
    }
}

/// The HTTP status for an upstream in-band error code (`response.failed`'s `error.code`, an
/// `error` event's `code`), as `docs/upstream-contract.md` lists: request faults are 4xx, limits
/// 429, overload 503, anything unknown 502 (the upstream failed, not the client).
pub fn status_for_upstream_code(code: &str) -> u16 {
    match code {
        "context_length_exceeded"
        | "invalid_prompt"
        | "cyber_policy"
        | "invalid_encrypted_content"
        | "previous_response_not_found"
        | "invalid_request_error"
        | "invalid_request"
        | "bad_request" => 400,
        "invalid_api_key" | "authentication_error" | "unauthorized" => 401,
        "usage_not_included" | "permission_error" | "forbidden" => 403,
        "model_not_found" | "not_found" | "not_found_error" | "model_not_supported" => 404,
        "rate_limit_exceeded"
        | "insufficient_quota"
        | "usage_limit_reached"
        | "usage_limit_exceeded"
        | "billing_hard_cap_reached"
        | "rate_limit_error" => 429,
        "server_is_overloaded" | "overloaded" | "overloaded_error" | "slow_down" => 503,
        _ => 502,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_codes_map_to_the_documented_statuses() {
        assert_eq!(status_for_upstream_code("context_length_exceeded"), 400);
        assert_eq!(status_for_upstream_code("cyber_policy"), 400);
        assert_eq!(status_for_upstream_code("model_not_found"), 404);
        assert_eq!(status_for_upstream_code("rate_limit_exceeded"), 429);
        assert_eq!(status_for_upstream_code("usage_limit_reached"), 429);
        assert_eq!(status_for_upstream_code("server_is_overloaded"), 503);
        assert_eq!(status_for_upstream_code("server_error"), 502);
        assert_eq!(status_for_upstream_code("something_new"), 502);
    }

    #[test]
    fn display_names_code_and_status() {
        let e = TranslateError::invalid("messages", "an array");
        assert_eq!(e.status, 400);
        assert_eq!(
            e.to_string(),
            "`messages` must be an array. (invalid_request, HTTP 400)"
        );
    }
}
