//! What an upstream answer says about the account that served it: pure functions.
//!
//! Error codes decide before statuses: a 400 or 403 carrying `usage_limit_reached` is the
//! account's usage limit, not the request's fault. Then the status class decides (see
//! `pool::state` for what each verdict does to the account).
//!
//! A 4xx other than 401, 402, 403, 408, 409 and 429 is the request's fault whatever its error
//! `type` or message says: only an account-level usage-limit code (or the usage-limit message)
//! overrides it, and `invalid_encrypted_content` keeps its own handling. So a 400 that calls
//! itself `"type":"server_error"` goes back to the client at once instead of being tried on
//! every account.
//!
//! The server's delay hint is read, first valid wins, from `retry-after-ms`, `Retry-After`
//! (seconds, fractional allowed, or an HTTP date), the body's `error.resets_in_seconds` or
//! `error.resets_at` (unix seconds), and "try again in N s" in an error message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::pool::state::Verdict;
use crate::translate::error::{upstream_code_class, CodeClass};

/// Messages (lower case) known to mean an account-level limit or overload. One table, each
/// row tested.
const KNOWN_MESSAGES: &[(&str, Verdict)] = &[
    (
        "usage limit has been reached",
        Verdict::UsageLimit { reset_after: None },
    ),
    (
        "selected model is at capacity",
        Verdict::RateLimited { retry_after: None },
    ),
    (
        "model is at capacity",
        Verdict::RateLimited { retry_after: None },
    ),
];

/// The `error` object of an OpenAI-style body (`{"error":{…}}`, or the object itself for an
/// in-band `error` event or `response.failed`'s `response.error`).
fn error_object(body: &Value) -> Option<&Value> {
    body.get("error")
        .filter(|e| e.is_object())
        .or_else(|| body.pointer("/response/error").filter(|e| e.is_object()))
        .or_else(|| (body.get("type").and_then(Value::as_str) == Some("error")).then_some(body))
}

fn field<'a>(error: &'a Value, name: &str) -> Option<&'a str> {
    error.get(name).and_then(Value::as_str)
}

/// True when the error's `code` or `type` is of `class` in the one table of upstream codes
/// (`translate::error`).
fn labelled(error: &Value, class: CodeClass) -> bool {
    [field(error, "code"), field(error, "type")]
        .into_iter()
        .flatten()
        .any(|l| upstream_code_class(l) == Some(class))
}

/// The verdict an error object carries by an account-level code or message, which overrides
/// any status: a usage limit, or reasoning ciphertext this account cannot read.
fn by_account_code(error: &Value, delay: Option<Duration>) -> Option<Verdict> {
    if labelled(error, CodeClass::UsageLimit) {
        return Some(Verdict::UsageLimit { reset_after: delay });
    }
    if labelled(error, CodeClass::InvalidEncryptedContent) {
        return Some(Verdict::InvalidEncryptedContent);
    }
    let message = field(error, "message")?.to_ascii_lowercase();
    KNOWN_MESSAGES
        .iter()
        .find(|(m, v)| matches!(v, Verdict::UsageLimit { .. }) && message.contains(m))
        .map(|_| Verdict::UsageLimit { reset_after: delay })
}

/// The verdict an error object carries by its code, type or message alone.
fn by_code(error: &Value, delay: Option<Duration>) -> Option<Verdict> {
    if let Some(verdict) = by_account_code(error, delay) {
        return Some(verdict);
    }
    if labelled(error, CodeClass::RequestFault) {
        return Some(Verdict::RequestError);
    }
    if labelled(error, CodeClass::RateLimited) {
        return Some(Verdict::RateLimited { retry_after: delay });
    }
    if labelled(error, CodeClass::ServerFault) {
        return Some(Verdict::ServerError);
    }
    let message = field(error, "message")?.to_ascii_lowercase();
    KNOWN_MESSAGES
        .iter()
        .find(|(m, _)| message.contains(m))
        .map(|(_, v)| match v {
            Verdict::UsageLimit { .. } => Verdict::UsageLimit { reset_after: delay },
            Verdict::RateLimited { .. } => Verdict::RateLimited { retry_after: delay },
            other => *other,
        })
}

/// Unix time now, in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The server's delay hint, if any (see the module docs for the order).
pub fn server_delay(headers: &HeaderMap, body: Option<&Value>, now_unix: u64) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    if let Some(value) = header("retry-after") {
        if let Ok(secs) = value.parse::<f64>() {
            if secs.is_finite() && secs >= 0.0 {
                return Some(Duration::from_secs_f64(secs));
            }
        } else if let Ok(at) = httpdate::parse_http_date(value) {
            let at = at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            return Some(Duration::from_secs(at.saturating_sub(now_unix)));
        }
    }
    let error = body.and_then(error_object)?;
    if let Some(secs) = error
        .get("resets_in_seconds")
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite() && *v >= 0.0)
    {
        return Some(Duration::from_secs_f64(secs));
    }
    if let Some(at) = error.get("resets_at").and_then(Value::as_u64) {
        return Some(Duration::from_secs(at.saturating_sub(now_unix)));
    }
    try_again_in(field(error, "message")?)
}

/// "… try again in 20s" / "in 1.5 seconds" / "in 350ms".
fn try_again_in(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    let rest = &lower[lower.find("try again in ")? + "try again in ".len()..];
    let number: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let value: f64 = number.parse().ok().filter(|v: &f64| v.is_finite())?;
    let unit = rest[number.len()..].trim_start();
    let secs = if unit.starts_with("ms") {
        value / 1000.0
    } else {
        value
    };
    Some(Duration::from_secs_f64(secs))
}

/// What an HTTP answer (status, headers and, for errors, the body) says about the account.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8], now_unix: u64) -> Verdict {
    if status.is_success() || status.is_redirection() || status.is_informational() {
        return Verdict::Served;
    }
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let delay = server_delay(headers, json.as_ref(), now_unix);
    let error = json.as_ref().and_then(error_object);
    if request_scoped(status) {
        // Only an account-level code turns the request's fault into the account's.
        return error
            .and_then(|e| by_account_code(e, delay))
            .unwrap_or(Verdict::RequestError);
    }
    if let Some(verdict) = error.and_then(|e| by_code(e, delay)) {
        return verdict;
    }
    match status.as_u16() {
        429 => Verdict::RateLimited { retry_after: delay },
        401 => Verdict::Unauthorized,
        402 | 403 => Verdict::Forbidden,
        408 | 409 | 500 | 502 | 503 | 504 | 529 => Verdict::ServerError,
        s if s >= 500 => Verdict::ServerError,
        _ => Verdict::RequestError,
    }
}

/// A 4xx status that is the request's own fault unless an account-level code says otherwise:
/// every 4xx but 401, 402, 403 (the account's credential or plan), 408, 409 (transient: SDKs
/// retry them) and 429 (a limit).
pub fn request_scoped(status: StatusCode) -> bool {
    status.is_client_error() && !matches!(status.as_u16(), 401 | 402 | 403 | 408 | 409 | 429)
}

/// What an in-band failure event (`response.failed`, `error`) before any output says.
/// Unknown failures count as the server's.
pub fn classify_in_band(event: &Value, now_unix: u64) -> Verdict {
    let delay = server_delay(&HeaderMap::new(), Some(event), now_unix);
    error_object(event)
        .and_then(|e| by_code(e, delay))
        .unwrap_or(Verdict::ServerError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn verdict(status: u16, body: Value) -> Verdict {
        classify(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.to_string().as_bytes(),
            NOW,
        )
    }

    #[test]
    fn codes_decide_before_statuses() {
        let usage = json!({"error":{"type":"usage_limit_reached","message":"The usage limit has been reached","resets_in_seconds":120}});
        for status in [400, 403, 429] {
            assert_eq!(
                verdict(status, usage.clone()),
                Verdict::UsageLimit {
                    reset_after: Some(Duration::from_secs(120))
                },
                "{status}"
            );
        }
        assert_eq!(
            verdict(
                429,
                json!({"error":{"code":"context_length_exceeded","message":"too long"}})
            ),
            Verdict::RequestError,
            "a request-scoped code is the request's fault even on 429"
        );
        assert_eq!(
            verdict(400, json!({"error":{"code":"billing_hard_cap_reached"}})),
            Verdict::UsageLimit { reset_after: None }
        );
    }

    #[test]
    fn statuses_decide_otherwise() {
        assert_eq!(verdict(200, json!({})), Verdict::Served);
        assert_eq!(verdict(302, json!({})), Verdict::Served);
        assert_eq!(
            verdict(429, json!({"error":{"message":"slow down"}})),
            Verdict::RateLimited { retry_after: None }
        );
        assert_eq!(
            verdict(401, json!({"error":{"code":"invalid_api_key"}})),
            Verdict::Unauthorized
        );
        assert_eq!(verdict(403, json!({})), Verdict::Forbidden);
        assert_eq!(verdict(402, json!({})), Verdict::Forbidden);
        for s in [408, 500, 502, 503, 504, 529] {
            assert_eq!(verdict(s, json!({})), Verdict::ServerError, "{s}");
        }
        for s in [400, 404, 413, 422] {
            assert_eq!(
                verdict(s, json!({"error":{"message":"bad"}})),
                Verdict::RequestError,
                "{s}"
            );
        }
        assert_eq!(
            classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>", NOW),
            Verdict::ServerError
        );
    }

    #[test]
    fn a_request_scoped_4xx_is_the_requests_fault_whatever_its_type_says() {
        for status in [400, 404, 405, 413, 415, 422] {
            for body in [
                json!({"error":{"message":"bad","type":"server_error","code":null}}),
                json!({"error":{"message":"x","type":"server_is_overloaded"}}),
                json!({"error":{"message":"x","code":"rate_limit_exceeded"}}),
                json!({"error":{"message":"The selected model is at capacity."}}),
                json!({"error":{"message":"x","code":"context_length_exceeded"}}),
            ] {
                assert_eq!(
                    verdict(status, body.clone()),
                    Verdict::RequestError,
                    "{status} {body}"
                );
            }
            // Account-level codes (and the usage-limit message) still override the status.
            assert_eq!(
                verdict(
                    status,
                    json!({"error":{"type":"server_error","code":"usage_limit_reached"}})
                ),
                Verdict::UsageLimit { reset_after: None },
                "{status}"
            );
            assert_eq!(
                verdict(
                    status,
                    json!({"error":{"code":"invalid_encrypted_content"}})
                ),
                Verdict::InvalidEncryptedContent,
                "{status}"
            );
        }
        assert!(request_scoped(StatusCode::BAD_REQUEST));
        for status in [401, 402, 403, 408, 409, 429, 500, 200] {
            assert!(
                !request_scoped(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        // Outside the request-scoped set, codes still decide.
        assert_eq!(
            verdict(429, json!({"error":{"type":"server_error"}})),
            Verdict::ServerError
        );
        assert_eq!(
            verdict(409, json!({})),
            Verdict::ServerError,
            "409 is transient"
        );
    }

    #[test]
    fn known_messages_table_rows() {
        assert_eq!(
            verdict(
                500,
                json!({"error":{"message":"The selected model is at capacity. Please try a different model."}})
            ),
            Verdict::RateLimited { retry_after: None }
        );
        assert_eq!(
            verdict(
                400,
                json!({"error":{"message":"Your usage limit has been reached, try again in 45s"}})
            ),
            Verdict::UsageLimit {
                reset_after: Some(Duration::from_secs(45))
            }
        );
    }

    #[test]
    fn delay_hints_in_order_of_precedence() {
        let body = json!({"error":{"resets_at": NOW + 300, "resets_in_seconds": 200}});
        assert_eq!(
            server_delay(
                &headers(&[("retry-after-ms", "1500"), ("retry-after", "9")]),
                Some(&body),
                NOW
            ),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            server_delay(&headers(&[("retry-after", "9")]), Some(&body), NOW),
            Some(Duration::from_secs(9))
        );
        assert_eq!(
            server_delay(&headers(&[("retry-after", "2.5")]), None, NOW),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            server_delay(&HeaderMap::new(), Some(&body), NOW),
            Some(Duration::from_secs(200))
        );
        let at_only = json!({"error":{"resets_at": NOW + 300}});
        assert_eq!(
            server_delay(&HeaderMap::new(), Some(&at_only), NOW),
            Some(Duration::from_secs(300))
        );
        let past = json!({"error":{"resets_at": NOW - 300}});
        assert_eq!(
            server_delay(&HeaderMap::new(), Some(&past), NOW),
            Some(Duration::ZERO)
        );
        let message = json!({"error":{"message":"Rate limit reached. Please try again in 20s."}});
        assert_eq!(
            server_delay(&HeaderMap::new(), Some(&message), NOW),
            Some(Duration::from_secs(20))
        );
        let ms = json!({"error":{"message":"try again in 350ms"}});
        assert_eq!(
            server_delay(&HeaderMap::new(), Some(&ms), NOW),
            Some(Duration::from_millis(350))
        );
        assert_eq!(
            server_delay(&headers(&[("retry-after", "soon")]), None, NOW),
            None
        );
    }

    #[test]
    fn an_http_date_retry_after_counts_from_now() {
        let at = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(NOW + 42));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_str(&at).unwrap());
        assert_eq!(server_delay(&h, None, NOW), Some(Duration::from_secs(42)));
    }

    #[test]
    fn in_band_failures_are_classified_by_their_codes() {
        let failed = json!({"type":"response.failed","response":{"id":"r","status":"failed","error":{"code":"rate_limit_exceeded","message":"Rate limit reached. Please try again in 3s."}}});
        assert_eq!(
            classify_in_band(&failed, NOW),
            Verdict::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        let event =
            json!({"type":"error","code":"usage_limit_reached","message":"limit","param":null});
        assert_eq!(
            classify_in_band(&event, NOW),
            Verdict::UsageLimit { reset_after: None }
        );
        let context = json!({"type":"response.failed","response":{"error":{"code":"context_length_exceeded"}}});
        assert_eq!(classify_in_band(&context, NOW), Verdict::RequestError);
        let unknown =
            json!({"type":"response.failed","response":{"error":{"code":"something_new"}}});
        assert_eq!(classify_in_band(&unknown, NOW), Verdict::ServerError);
    }

    /// Anthropic's error bodies and in-band `error` event (`docs/anthropic-wire.md`, "Errors").
    #[test]
    fn anthropic_errors_classify_like_their_statuses_and_overload_is_the_servers() {
        let body = |kind: &str| json!({"type":"error","error":{"type":kind,"message":"m"}});
        let limited = classify(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "30")]),
            body("rate_limit_error").to_string().as_bytes(),
            NOW,
        );
        assert_eq!(
            limited,
            Verdict::RateLimited {
                retry_after: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(verdict(529, body("overloaded_error")), Verdict::ServerError);
        assert_eq!(verdict(500, body("api_error")), Verdict::ServerError);
        assert_eq!(
            verdict(400, body("invalid_request_error")),
            Verdict::RequestError
        );
        assert_eq!(verdict(404, body("not_found_error")), Verdict::RequestError);
        assert_eq!(
            verdict(413, body("request_too_large")),
            Verdict::RequestError
        );
        assert_eq!(
            verdict(401, body("authentication_error")),
            Verdict::Unauthorized
        );
        assert_eq!(verdict(403, body("permission_error")), Verdict::Forbidden);
        assert_eq!(
            classify_in_band(&body("overloaded_error"), NOW),
            Verdict::ServerError
        );
    }
}
