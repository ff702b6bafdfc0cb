//! Responses the proxy makes itself, in the OpenAI error shape
//! `{"error":{"message","type","param","code"}}`. Messages are fixed strings (the `/v1` hint
//! adds the listener's port and a path from the route table): nothing from the request is
//! ever echoed.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use super::body::ProxyBody;
use super::routes::{BaseUrlFix, Refusal};

/// An OpenAI-shaped error response.
pub fn openai_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    let mut response = json_response(status, &body);
    mark_refusal_final(&mut response);
    // The proxy has already done whatever retrying made sense: SDKs should not multiply it.
    if matches!(status.as_u16(), 429 | 502 | 503 | 504) {
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
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

/// The fixed response for a refused request on the listener at `port` (named in the base URL
/// a client off by `/v1` should use; nothing else in a refusal comes from outside).
pub fn refusal(refusal: Refusal, port: u16) -> Response<ProxyBody> {
    match refusal {
        Refusal::NotFound => openai_error(StatusCode::NOT_FOUND, "not_found", "Unknown route."),
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
            openai_error(StatusCode::FORBIDDEN, "wrong_base_url", &message)
        }
        Refusal::MethodNotAllowed { allow } => {
            let mut response = openai_error(
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
            let mut response = openai_error(
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
        Refusal::Forbidden(kind) => {
            openai_error(StatusCode::FORBIDDEN, "forbidden", kind.message())
        }
    }
}
