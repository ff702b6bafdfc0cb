//! The one error type of request translation, the status table for upstream failures, and
//! the ways an upstream stream can stop before its terminal event ([`Interruption`]).
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

/// Why an upstream stream stopped before its terminal event. The relay finds out; the
/// translators render it in the client's dialect. This is the one list of these codes and
/// their statuses (README, "Streaming, retries and errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The upstream sent nothing for longer than the idle timeout.
    Idle,
    /// The stream ended (or an event could not be decoded) before a terminal event.
    Truncated,
    /// The upstream connection failed or was cut mid-response.
    UpstreamError,
    /// A non-streaming request reached its deadline.
    Deadline,
    /// Shutdown stopped waiting for the response.
    Shutdown,
    /// The proxy's buffer budget (`--max-buffered-bytes`) could not take what the response
    /// needs held.
    Overloaded,
}

impl Interruption {
    const ALL: [Interruption; 6] = [
        Interruption::Idle,
        Interruption::Truncated,
        Interruption::UpstreamError,
        Interruption::Deadline,
        Interruption::Shutdown,
        Interruption::Overloaded,
    ];

    /// The machine-readable code clients see.
    pub fn code(self) -> &'static str {
        match self {
            Interruption::Idle => "upstream_idle_timeout",
            Interruption::Truncated => "upstream_stream_truncated",
            Interruption::UpstreamError => "upstream_connection_error",
            Interruption::Deadline => "request_timeout",
            Interruption::Shutdown => "proxy_shutting_down",
            Interruption::Overloaded => "proxy_overloaded",
        }
    }

    /// The status of a non-streaming answer that ended this way (and the error type of an
    /// error event): the two timeouts are 504, shutdown 503, a broken stream 502.
    pub fn status(self) -> u16 {
        match self {
            Interruption::Idle | Interruption::Deadline => 504,
            Interruption::Shutdown | Interruption::Overloaded => 503,
            Interruption::Truncated | Interruption::UpstreamError => 502,
        }
    }

    /// A fixed sentence for the client.
    pub fn message(self) -> &'static str {
        match self {
            Interruption::Idle => "The upstream sent nothing for longer than the idle timeout; the response is incomplete.",
            Interruption::Truncated => "The upstream stream ended before a terminal event; the response is incomplete.",
            Interruption::UpstreamError => "The upstream connection failed mid-response; the response is incomplete.",
            Interruption::Deadline => "The request took longer than the request timeout; the response is incomplete.",
            Interruption::Shutdown => "The proxy is shutting down; the response is incomplete.",
            Interruption::Overloaded => "Too many response bytes are buffered in the proxy right now; the response is incomplete.",
        }
    }

    /// The interruption whose code is `code`, if any.
    pub fn from_code(code: &str) -> Option<Interruption> {
        Self::ALL.into_iter().find(|i| i.code() == code)
    }
}

/// What an upstream error code (or `type`) says about whose fault a failure is, beyond its
/// status: read by the upstream classifier to decide what happens to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeClass {
    /// The account's usage limit or billing cap, whatever the status.
    UsageLimit,
    /// Reasoning ciphertext this account cannot read, whatever the status.
    InvalidEncryptedContent,
    /// The request's own fault, whatever the status.
    RequestFault,
    /// A rate limit.
    RateLimited,
    /// The server failed.
    ServerFault,
}

/// One upstream error code the proxy knows.
struct UpstreamCode {
    code: &'static str,
    /// The status a client gets for it (`docs/upstream-contract.md`, "Errors and the statuses
    /// they map to").
    status: u16,
    /// What it says about the account, where that is more than its status says.
    class: Option<CodeClass>,
}

const fn row(code: &'static str, status: u16, class: Option<CodeClass>) -> UpstreamCode {
    UpstreamCode {
        code,
        status,
        class,
    }
}

/// The one table of upstream error codes: request faults are 4xx, limits 429, overload 503.
const UPSTREAM_CODES: &[UpstreamCode] = &[
    row(
        "context_length_exceeded",
        400,
        Some(CodeClass::RequestFault),
    ),
    row("invalid_prompt", 400, Some(CodeClass::RequestFault)),
    row("cyber_policy", 400, Some(CodeClass::RequestFault)),
    row(
        "invalid_encrypted_content",
        400,
        Some(CodeClass::InvalidEncryptedContent),
    ),
    row(
        "previous_response_not_found",
        400,
        Some(CodeClass::RequestFault),
    ),
    row("invalid_request_error", 400, None),
    row("invalid_request", 400, None),
    row("bad_request", 400, None),
    row("invalid_api_key", 401, None),
    row("authentication_error", 401, None),
    row("unauthorized", 401, None),
    row("usage_not_included", 403, None),
    row("permission_error", 403, None),
    row("forbidden", 403, None),
    row("model_not_found", 404, None),
    row("not_found", 404, None),
    row("not_found_error", 404, None),
    row("model_not_supported", 404, None),
    row("rate_limit_exceeded", 429, Some(CodeClass::RateLimited)),
    row("insufficient_quota", 429, None),
    row("usage_limit_reached", 429, Some(CodeClass::UsageLimit)),
    row("usage_limit_exceeded", 429, Some(CodeClass::UsageLimit)),
    row("billing_hard_cap_reached", 429, Some(CodeClass::UsageLimit)),
    row("rate_limit_error", 429, None),
    row("server_is_overloaded", 503, Some(CodeClass::ServerFault)),
    row("overloaded", 503, None),
    row("overloaded_error", 503, None),
    row("slow_down", 503, None),
    row("server_error", 502, Some(CodeClass::ServerFault)),
];

fn upstream_code(code: &str) -> Option<&'static UpstreamCode> {
    UPSTREAM_CODES.iter().find(|row| row.code == code)
}

/// True when `code` is in the table of upstream error codes (its status and class are known).
pub fn is_known_upstream_code(code: &str) -> bool {
    upstream_code(code).is_some()
}

/// The HTTP status for an upstream in-band error code (`response.failed`'s `error.code`, an
/// `error` event's `code`), from [`UPSTREAM_CODES`]; the proxy's own [`Interruption`] codes
/// keep their statuses, and anything unknown is 502 (the upstream failed, not the client).
pub fn status_for_upstream_code(code: &str) -> u16 {
    match upstream_code(code) {
        Some(row) => row.status,
        None => Interruption::from_code(code).map_or(502, Interruption::status),
    }
}

/// What an upstream error code or type says about whose fault the failure is, if the table
/// says more than the status would.
pub fn upstream_code_class(code: &str) -> Option<CodeClass> {
    upstream_code(code).and_then(|row| row.class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_are_the_tables_rows() {
        assert!(is_known_upstream_code("server_is_overloaded"));
        assert!(is_known_upstream_code("context_length_exceeded"));
        assert!(!is_known_upstream_code("exceed_context_size_error"));
        assert!(!is_known_upstream_code(""));
    }

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
        // The proxy's own interruption codes keep their statuses.
        assert_eq!(status_for_upstream_code("upstream_idle_timeout"), 504);
        assert_eq!(status_for_upstream_code("request_timeout"), 504);
        assert_eq!(status_for_upstream_code("upstream_stream_truncated"), 502);
        assert_eq!(status_for_upstream_code("proxy_shutting_down"), 503);
    }

    #[test]
    fn each_upstream_code_has_one_row() {
        for (i, row) in UPSTREAM_CODES.iter().enumerate() {
            assert!(
                UPSTREAM_CODES[i + 1..].iter().all(|r| r.code != row.code),
                "{} twice",
                row.code
            );
            assert!(Interruption::from_code(row.code).is_none(), "{}", row.code);
        }
        assert_eq!(
            upstream_code_class("usage_limit_reached"),
            Some(CodeClass::UsageLimit)
        );
        assert_eq!(upstream_code_class("insufficient_quota"), None);
        assert_eq!(upstream_code_class("something_new"), None);
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
