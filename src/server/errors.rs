//! Every error answer the proxy writes itself, in the dialect of the route it answers: the
//! OpenAI shape `{"error":{"message","type","param","code"}}` on the OpenAI routes and on
//! unknown paths, Anthropic's `{"type":"error","error":{"type","message"}}` on `/v1/messages`
//! and everything below it (refusals included). The bodies come from
//! [`translate::error_body`]; the headers (`x-should-retry`, `Retry-After`,
//! `x-codex-proxy-attempts`) from here. Upstream error bodies are re-shaped here too.
//!
//! Messages are fixed strings (the `/v1` hint adds the listener's port and a path from the
//! route table): nothing from the request is ever echoed.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Deserialize;

use super::body::ProxyBody;
use super::routes::{BaseUrlFix, Refusal};
use crate::translate::{self, Dialect};
use crate::upstream::GiveUp;

/// The dialect of the errors on a request path: Anthropic's under `/v1/messages`, else the
/// OpenAI shape.
pub fn dialect_of_path(path: &str) -> Dialect {
    if path.starts_with("/v1/messages") {
        Dialect::Anthropic
    } else {
        Dialect::Responses
    }
}

/// 400 `invalid_json` in `dialect`: the body is not a JSON object.
pub fn invalid_json(dialect: Dialect) -> Response<ProxyBody> {
    error_response(
        dialect,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        "The request body is not a valid JSON object.",
    )
}

/// An error response in `dialect` made by the proxy.
pub fn error_response(
    dialect: Dialect,
    status: StatusCode,
    code: &str,
    message: &str,
) -> Response<ProxyBody> {
    let body = proxy_error_body(dialect, status.as_u16(), code, message);
    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    mark_refusal_final(&mut response);
    // The proxy has already done whatever retrying made sense: SDKs should not multiply it.
    if matches!(status.as_u16(), 429 | 502 | 503 | 504) {
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    response
}

/// The body of an error the proxy makes itself. Anthropic's shape has no `code`, so on the
/// Anthropic routes it goes in front of the message (`"<code>: <text>"`) and `error.type` is
/// the closest Anthropic type: `not_found_error` for a `*not_found` code, else by status
/// (`permission_error`, `rate_limit_error`, `invalid_request_error`, …).
pub fn proxy_error_body(dialect: Dialect, status: u16, code: &str, message: &str) -> Vec<u8> {
    match dialect {
        Dialect::Responses | Dialect::Chat => translate::error_body(dialect, status, code, message),
        Dialect::Anthropic => {
            let kind = if code == "not_found" || code.ends_with("_not_found") {
                "not_found_error"
            } else {
                translate::anthropic_error_type(status)
            };
            // Written in Anthropic's field order (`serde_json::json!` would sort the keys).
            let text = serde_json::Value::String(format!("{code}: {message}"));
            format!(r#"{{"type":"error","error":{{"type":"{kind}","message":{text}}}}}"#)
                .into_bytes()
        }
    }
}

/// The engine's give-up answer in `dialect`, with `Retry-After` and the attempt count.
pub fn give_up_response(dialect: Dialect, give_up: &GiveUp) -> Response<ProxyBody> {
    let mut response = error_response(dialect, give_up.status, give_up.code, give_up.message);
    give_up.decorate(response.headers_mut());
    response
}

/// Adds `x-should-retry: false` to a 401 or 403 the proxy makes itself (a missing client
/// token, a refused request, every account refused): sending the same request again gets the
/// same answer, and without the header the SDKs and Claude Code retry a 401 for minutes
/// before they show the message.
pub fn mark_refusal_final(response: &mut Response<ProxyBody>) {
    if matches!(response.status().as_u16(), 401 | 403) {
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
}

/// A JSON response with the given status (fields in the order the type declares them).
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<ProxyBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(ProxyBody::full(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The fixed response, in `dialect`, for a refused request on the listener at `port` (named
/// in the base URL a client off by `/v1` should use; nothing else in a refusal comes from
/// outside).
pub fn refusal(refusal: Refusal, port: u16, dialect: Dialect) -> Response<ProxyBody> {
    let error = |status, code, message: &str| error_response(dialect, status, code, message);
    match refusal {
        Refusal::NotFound => error(StatusCode::NOT_FOUND, "not_found", "Unknown route."),
        Refusal::WrongBaseUrl { route, fix } => {
            let served = route.path();
            let message = match fix {
                BaseUrlFix::DropV1 => format!(
                    "Wrong base URL: the path has /v1 twice (this proxy serves {served}). \
                     Did you mean base URL http://127.0.0.1:{port} without /v1?"
                ),
                BaseUrlFix::AddV1 => format!(
                    "Wrong base URL: the path lacks /v1 (this proxy serves {served}). \
                     Did you mean base URL http://127.0.0.1:{port}/v1 with /v1?"
                ),
            };
            // 403 like the other path variants; a 404 would hide the message from Claude
            // Code, which reports a 404 as a problem with the selected model.
            error(StatusCode::FORBIDDEN, "wrong_base_url", &message)
        }
        Refusal::MethodNotAllowed { allow } => {
            let mut response = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed on this route.",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            response
        }
        Refusal::WebSocketUpgrade => {
            let mut response = error(
                StatusCode::UPGRADE_REQUIRED,
                "websocket_not_supported",
                "WebSocket is not supported; send the request as a plain HTTP/1.1 POST.",
            );
            // RFC 9110 asks a 426 to name the protocol to use: plain HTTP/1.1.
            response
                .headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("HTTP/1.1"));
            response
        }
        Refusal::Forbidden(kind) => error(StatusCode::FORBIDDEN, "forbidden", kind.message()),
    }
}

#[derive(Deserialize)]
struct OpenAiError<'a> {
    #[serde(borrow)]
    error: OpenAiErrorFields<'a>,
}

#[derive(Deserialize)]
struct OpenAiErrorFields<'a> {
    #[serde(borrow, default)]
    message: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<std::borrow::Cow<'a, str>>,
}

/// An upstream error body (already redacted, in the OpenAI shape) re-shaped for a client of
/// `dialect`. The OpenAI dialects get it as it is.
pub fn reshape_error(dialect: Dialect, status: StatusCode, body: &[u8]) -> Bytes {
    if dialect != Dialect::Anthropic {
        return Bytes::copy_from_slice(body);
    }
    let (code, message) = match serde_json::from_slice::<OpenAiError<'_>>(body) {
        Ok(e) => (
            e.error
                .code
                .or(e.error.kind)
                .unwrap_or_default()
                .into_owned(),
            e.error
                .message
                .map(|m| m.into_owned())
                .unwrap_or_else(|| "The upstream returned an error.".to_owned()),
        ),
        Err(_) => (
            String::new(),
            format!("The upstream answered with status {}.", status.as_u16()),
        ),
    };
    Bytes::from(translate::error_body(
        dialect,
        status.as_u16(),
        &code,
        &message,
    ))
}

#[derive(Deserialize)]
struct AnthropicError<'a> {
    #[serde(borrow)]
    error: AnthropicErrorFields<'a>,
}

#[derive(Deserialize)]
struct AnthropicErrorFields<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<std::borrow::Cow<'a, str>>,
}

/// An upstream error body (already redacted) in the shape of the provider's `wire`, re-shaped
/// for a client of `dialect`. An Anthropic error for an OpenAI-dialect client (the Responses
/// hub) becomes the OpenAI shape, its code the one the hub's decoder gives that error type
/// (`docs/hub.md`, "Events"), so a client sees the same code whether Anthropic refused before
/// the stream or inside it. Bodies in the OpenAI shape go through [`reshape_error`].
pub fn reshape_wire_error(
    dialect: Dialect,
    wire: Dialect,
    status: StatusCode,
    body: &[u8],
) -> Bytes {
    if wire != Dialect::Anthropic || dialect == Dialect::Anthropic {
        return reshape_error(dialect, status, body);
    }
    let parsed = serde_json::from_slice::<AnthropicError<'_>>(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|e| e.error.message.as_deref())
        .map_or_else(
            || format!("The upstream answered with status {}.", status.as_u16()),
            str::to_owned,
        );
    let code = match parsed.as_ref().and_then(|e| e.error.kind.as_deref()) {
        Some(kind) => translate::hub::anthropic::decode::error_code(kind, &message),
        None => "upstream_error",
    };
    Bytes::from(translate::error_body(
        dialect,
        status.as_u16(),
        code,
        &message,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(response: Response<ProxyBody>) -> String {
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn an_anthropic_error_body_reads_as_an_openai_error_for_a_hub_client() {
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#;
        let reshaped = reshape_wire_error(
            Dialect::Chat,
            Dialect::Anthropic,
            StatusCode::TOO_MANY_REQUESTS,
            body,
        );
        assert_eq!(
            &reshaped[..],
            br#"{"error":{"message":"slow","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}"#
        );
        let garbage = reshape_wire_error(
            Dialect::Responses,
            Dialect::Anthropic,
            StatusCode::BAD_GATEWAY,
            b"<html>",
        );
        let parsed: serde_json::Value = serde_json::from_slice(&garbage).unwrap();
        assert_eq!(parsed["error"]["code"], "upstream_error");
        assert_eq!(
            parsed["error"]["message"],
            "The upstream answered with status 502."
        );
        // The Responses wire's bodies are as before: as they are for OpenAI clients.
        let openai = br#"{"error":{"message":"m","type":"t","code":"c"}}"#;
        assert_eq!(
            &reshape_wire_error(
                Dialect::Chat,
                Dialect::Responses,
                StatusCode::BAD_REQUEST,
                openai
            )[..],
            openai
        );
    }

    #[test]
    fn the_path_picks_the_dialect() {
        assert_eq!(dialect_of_path("/v1/messages"), Dialect::Anthropic);
        assert_eq!(
            dialect_of_path("/v1/messages/count_tokens"),
            Dialect::Anthropic
        );
        assert_eq!(dialect_of_path("/v1/messagesx"), Dialect::Anthropic);
        assert_eq!(dialect_of_path("/v1/responses"), Dialect::Responses);
        assert_eq!(dialect_of_path("/v1/chat/completions"), Dialect::Responses);
        assert_eq!(dialect_of_path("/nope"), Dialect::Responses);
    }

    #[tokio::test]
    async fn refusals_are_written_in_the_dialect_of_the_route_with_their_headers() {
        let openai = refusal(
            Refusal::MethodNotAllowed { allow: "POST" },
            8080,
            Dialect::Responses,
        );
        assert_eq!(openai.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(openai.headers()[header::ALLOW], "POST");
        assert_eq!(
            body_of(openai).await,
            r#"{"error":{"message":"Method not allowed on this route.","type":"invalid_request_error","param":null,"code":"method_not_allowed"}}"#
        );
        let anthropic = refusal(Refusal::NotFound, 8080, Dialect::Anthropic);
        assert_eq!(anthropic.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            body_of(anthropic).await,
            r#"{"type":"error","error":{"type":"not_found_error","message":"not_found: Unknown route."}}"#
        );
        let forbidden =
            error_response(Dialect::Anthropic, StatusCode::FORBIDDEN, "forbidden", "no");
        assert_eq!(forbidden.headers()["x-should-retry"], "false");
        let busy = error_response(
            Dialect::Responses,
            StatusCode::SERVICE_UNAVAILABLE,
            "proxy_overloaded",
            "busy",
        );
        assert_eq!(busy.headers()["x-should-retry"], "false");
        let bad = error_response(Dialect::Responses, StatusCode::BAD_REQUEST, "x", "y");
        assert!(bad.headers().get("x-should-retry").is_none());
    }
}
