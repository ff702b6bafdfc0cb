//! Responses the proxy makes itself, in the OpenAI error shape
//! `{"error":{"message","type","param","code"}}`. Messages are fixed strings: nothing from
//! the request is ever echoed.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use super::body::ProxyBody;
use super::routes::Refusal;

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
    // The proxy has already done whatever retrying made sense: SDKs should not multiply it.
    if matches!(status.as_u16(), 429 | 502 | 503 | 504) {
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    response
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

/// The fixed response for a refused request.
pub fn refusal(refusal: Refusal) -> Response<ProxyBody> {
    match refusal {
        Refusal::NotFound => openai_error(StatusCode::NOT_FOUND, "not_found", "Unknown route."),
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
