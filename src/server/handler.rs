//! One request, from gate to response.

use std::convert::Infallible;
use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use tokio::time::Instant;

use super::body::{ProxyBody, RequestLog};
use super::encoding::{self, DecodeError};
use super::errors::{json_response, openai_error, refusal};
use super::limits::Reservation;
use super::routes::Route;
use super::{translated, State};
use crate::translate::Dialect;
use crate::upstream::{Outbound, ReplyBody};

/// Longest pause tolerated between two chunks of a request body (slow senders).
pub const BODY_CHUNK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Handles one request. Never fails: every problem is a response in the OpenAI dialect.
pub async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let mut log = RequestLog {
        route: "refused",
        status: 0,
        upstream_status: None,
        attempts: 0,
        bytes_in: 0,
        started,
        stats: None,
        full_bytes: 0,
        account: None,
    };
    // Errors on the Anthropic routes (refusals included) use Anthropic's shape.
    let anthropic = request.uri().path().starts_with("/v1/messages");
    let response = if head_size(&request) > super::MAX_HEADER_BYTES {
        openai_error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "The request head is larger than the limit.",
        )
    } else {
        match state
            .gate
            .classify(request.method(), request.uri(), request.headers())
        {
            Err(refused) => refusal(refused),
            Ok(route) => {
                log.route = route.name();
                if state
                    .token
                    .as_ref()
                    .is_some_and(|t| !t.authorizes(request.headers()))
                {
                    openai_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client_token",
                        "Missing or wrong client token (send it as Authorization: Bearer or x-api-key).",
                    )
                } else {
                    serve(&state, route, request, &mut log).await
                }
            }
        }
    };
    let response = if anthropic {
        translated::in_dialect(Dialect::Anthropic, response)
    } else {
        response
    };
    log.status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, body.with_log(log)))
}

/// Bytes of the request target and headers, counted as they were sent (`name: value\r\n`).
fn head_size(request: &Request<Incoming>) -> usize {
    let headers: usize = request
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    headers + request.uri().path().len() + request.uri().query().map_or(0, |q| q.len() + 1)
}

async fn serve(
    state: &State,
    route: Route,
    request: Request<Incoming>,
    log: &mut RequestLog,
) -> Response<ProxyBody> {
    match route {
        Route::Health => json_response(StatusCode::OK, &state.upstream.pool.health(Instant::now())),
        Route::Shutdown => {
            tracing::info!("shutdown requested over HTTP");
            state.shutdown_requested.cancel();
            json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "shutting_down"}),
            )
        }
        Route::Models => {
            let anthropic = request.headers().contains_key("anthropic-version");
            json_response(StatusCode::OK, &state.models.list(anthropic))
        }
        Route::Responses
        | Route::ResponsesCompact
        | Route::ChatCompletions
        | Route::Messages
        | Route::CountTokens => forward(state, route, request, log).await,
    }
}

/// Why a request body was not accepted.
enum BodyError {
    TooLarge,
    OverBudget,
    SlowSender,
    Broken,
}

impl BodyError {
    fn response(&self, max: usize) -> Response<ProxyBody> {
        match self {
            BodyError::TooLarge => openai_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                &format!("Request body is larger than the limit of {max} bytes."),
            ),
            BodyError::OverBudget => openai_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "proxy_overloaded",
                "Too many request bytes are buffered right now; try again shortly.",
            ),
            BodyError::SlowSender => openai_error(
                StatusCode::REQUEST_TIMEOUT,
                "request_body_timeout",
                "The request body arrived too slowly.",
            ),
            BodyError::Broken => openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "The request body could not be read.",
            ),
        }
    }
}

/// Reads the whole body within the size limit, the global budget and the slow-sender bound.
async fn read_body(
    state: &State,
    request: Request<Incoming>,
) -> Result<(http::request::Parts, Bytes, Reservation), BodyError> {
    let max = state.limits.max_body_bytes;
    let (parts, mut body) = request.into_parts();
    let declared = match parts.headers.get(header::CONTENT_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or(BodyError::Broken)?,
        ),
        None => None,
    };
    if declared.is_some_and(|n| n > max) {
        return Err(BodyError::TooLarge);
    }
    let mut reservation = state.budget.reserve_none();
    if let Some(n) = declared {
        if !reservation.grow(n) {
            return Err(BodyError::OverBudget);
        }
    }
    // A body that arrives in one frame is kept as it is (no copy); more frames are joined.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    loop {
        let frame = match tokio::time::timeout(BODY_CHUNK_TIMEOUT, body.frame()).await {
            Err(_) => return Err(BodyError::SlowSender),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if total + data.len() > max {
            return Err(BodyError::TooLarge);
        }
        if declared.is_none() && !reservation.grow(data.len()) {
            return Err(BodyError::OverBudget);
        }
        total += data.len();
        match (&mut joined, first.take()) {
            (Some(buf), _) => buf.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(earlier)) => {
                let mut buf =
                    BytesMut::with_capacity(declared.unwrap_or(earlier.len() + data.len()));
                buf.extend_from_slice(&earlier);
                buf.extend_from_slice(&data);
                joined = Some(buf);
            }
        }
    }
    let body = match (joined, first) {
        (Some(buf), _) => buf.freeze(),
        (None, Some(only)) => only,
        (None, None) => Bytes::new(),
    };
    Ok((parts, body, reservation))
}

/// A string field borrowed from the body when it has no escapes.
#[derive(Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

/// The fields of a request body the proxy itself reads; the rest passes through unread.
#[derive(Deserialize)]
struct BodyFields<'a> {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, borrow)]
    prompt_cache_key: Option<Text<'a>>,
    #[serde(default, borrow)]
    model: Option<Text<'a>>,
}

/// What the proxy reads from a request: whether it streams, and its conversation.
struct RequestFacts {
    streaming: bool,
    /// `prompt_cache_key`, else the `session-id`/`session_id`/`thread-id` header.
    session: Option<String>,
    /// `model`, when it needs a rewrite (a suffix, an alias, defaults or overrides).
    model_rewrite: bool,
}

/// The session of a request by its headers (Codex sends `session-id` or `session_id`, and
/// `thread-id`).
pub(super) fn header_session(headers: &http::HeaderMap) -> Option<String> {
    ["session-id", "session_id", "thread-id"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(str::to_string)
}

/// True when `--models` or a suffix changes a request for `model`.
fn needs_model_rewrite(models: &crate::translate::models::ModelTable, model: &str) -> bool {
    match models.resolve(model) {
        // An unknown suffix: let the rewrite produce the 400.
        Err(_) => true,
        Ok(r) => {
            r.upstream_model != model
                || r.effort_from_suffix
                || r.effort.is_some()
                || r.default_effort.is_some()
                || r.service_tier.is_some()
                || !r.params.is_empty()
                || r.append_to_last_user.is_some()
        }
    }
}

/// `None`: the body is not a JSON object.
fn request_facts(
    route: Route,
    headers: &http::HeaderMap,
    json: &[u8],
    models: &crate::translate::models::ModelTable,
) -> Option<RequestFacts> {
    let fields: BodyFields = serde_json::from_slice(json).ok()?;
    Some(RequestFacts {
        streaming: route == Route::Responses && fields.stream.unwrap_or(false),
        session: fields
            .prompt_cache_key
            .map(|k| k.0.into_owned())
            .or_else(|| header_session(headers)),
        model_rewrite: fields
            .model
            .is_some_and(|m| needs_model_rewrite(models, &m.0)),
    })
}

async fn forward(
    state: &State,
    route: Route,
    request: Request<Incoming>,
    log: &mut RequestLog,
) -> Response<ProxyBody> {
    let (parts, body, reservation) = match read_body(state, request).await {
        Ok(read) => read,
        Err(e) => return e.response(state.limits.max_body_bytes),
    };
    log.bytes_in = body.len();
    let mut reservation = reservation;
    let decoded = match encoding::decode(&parts.headers, &body, state.limits.max_body_bytes) {
        Ok(decoded) => decoded,
        Err(DecodeError::TooLarge) => {
            return BodyError::TooLarge.response(state.limits.max_body_bytes)
        }
        Err(DecodeError::Unsupported) => {
            return openai_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_encoding",
                "Content-Encoding must be zstd, gzip, deflate or identity.",
            )
        }
        Err(DecodeError::Corrupt) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "The request body does not match its Content-Encoding.",
            )
        }
    };
    if decoded.as_ref().is_some_and(|d| !reservation.grow(d.len())) {
        return BodyError::OverBudget.response(state.limits.max_body_bytes);
    }
    let plain = decoded.as_deref().unwrap_or(&body);
    match route {
        Route::ChatCompletions | Route::Messages => {
            let dialect = if route == Route::Messages {
                Dialect::Anthropic
            } else {
                Dialect::Chat
            };
            return translated::forward(state, dialect, &parts.headers, plain, reservation, log)
                .await;
        }
        Route::CountTokens => {
            return match crate::translate::anthropic::count_tokens(plain) {
                Ok(body) => {
                    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    response
                }
                Err(e) => translated::dialect_error(
                    Dialect::Anthropic,
                    StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                    e.code,
                    &e.message,
                ),
            };
        }
        _ => {}
    }
    let facts = request_facts(route, &parts.headers, plain, &state.models);
    let Some(RequestFacts {
        streaming,
        session,
        model_rewrite,
    }) = facts
    else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "The request body is not a valid JSON object.",
        );
    };
    let mut decoded = decoded.map(Bytes::from);
    let mut body = body;
    let mut headers = parts.headers;
    let mut model = String::new();
    if model_rewrite {
        // A model suffix, alias or override: the body is rewritten (and goes out plain).
        let mut value: serde_json::Value =
            match serde_json::from_slice(decoded.as_deref().unwrap_or(&body)) {
                Ok(value) => value,
                Err(_) => {
                    return openai_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_json",
                        "The request body is not a valid JSON object.",
                    )
                }
            };
        if let Err(e) = state.models.rewrite_responses(&mut value) {
            return translated::dialect_error(
                Dialect::Responses,
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                e.code,
                &e.message,
            );
        }
        model = value
            .get("model")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_string();
        body = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        decoded = None;
        headers.remove(header::CONTENT_ENCODING);
    }
    let Some(endpoint) = route.upstream_endpoint() else {
        return openai_error(StatusCode::NOT_FOUND, "not_found", "Unknown route.");
    };
    let parts_headers = headers;
    let outbound = Outbound {
        endpoint,
        headers: &parts_headers,
        body,
        decoded,
        streaming,
        session: session.map(|s| state.session_hasher.hash_one(s)),
        abort: state.abort.clone(),
    };
    let result = state.upstream.forward(outbound).await;
    drop(reservation);
    let attempts_header = |attempts: u32| HeaderValue::from(attempts);
    match result {
        Err(give_up) => {
            log.attempts = give_up.attempts;
            let mut response = openai_error(give_up.status, give_up.code, give_up.message);
            if let Some(wait) = give_up.retry_after {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            if give_up.attempts > 0 {
                response
                    .headers_mut()
                    .insert("x-codex-proxy-attempts", attempts_header(give_up.attempts));
            }
            response
        }
        Ok(reply) if reply.aggregate => {
            // A stream-only upstream served a client that wants one JSON answer.
            let ctx = crate::translate::responses::context(model);
            translated::respond(reply, &ctx, false, log, &state.budget).await
        }
        Ok(reply) => {
            log.attempts = reply.attempts;
            log.account = Some(reply.account);
            log.upstream_status = Some(reply.status.as_u16());
            log.stats = Some(Arc::clone(&reply.stats));
            let body = match reply.body {
                ReplyBody::Full(bytes) => ProxyBody::full(bytes),
                ReplyBody::Relay(relay) => ProxyBody::relay(relay),
            };
            let mut response = Response::new(body);
            *response.status_mut() = reply.status;
            *response.headers_mut() = reply.headers;
            response
                .headers_mut()
                .insert("x-codex-proxy-attempts", attempts_header(reply.attempts));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(
        route: Route,
        headers: &[(&'static str, &'static str)],
        body: &[u8],
    ) -> Option<(bool, Option<String>)> {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_static(v));
        }
        request_facts(
            route,
            &h,
            body,
            &crate::translate::models::ModelTable::builtin(),
        )
        .map(|f| (f.streaming, f.session))
    }

    #[test]
    fn stream_flag_comes_from_the_body() {
        assert_eq!(
            facts(Route::Responses, &[], br#"{"model":"m","stream":true}"#),
            Some((true, None))
        );
        assert_eq!(
            facts(Route::Responses, &[], br#"{"model":"m","stream":false}"#),
            Some((false, None))
        );
        assert_eq!(
            facts(Route::Responses, &[], br#"{"model":"m"}"#),
            Some((false, None))
        );
        assert_eq!(
            facts(Route::ResponsesCompact, &[], br#"{"stream":true}"#),
            Some((false, None))
        );
        assert_eq!(facts(Route::Responses, &[], b"not json"), None);
        assert_eq!(facts(Route::Responses, &[], b"[1]"), None);
    }

    #[test]
    fn the_session_is_the_prompt_cache_key_else_a_session_header() {
        let body = br#"{"prompt_cache_key":"thread-1","input":"x"}"#;
        assert_eq!(
            facts(Route::Responses, &[("session-id", "s")], body)
                .unwrap()
                .1
                .as_deref(),
            Some("thread-1")
        );
        assert_eq!(
            facts(Route::Responses, &[("session_id", "s2")], b"{}")
                .unwrap()
                .1
                .as_deref(),
            Some("s2")
        );
        assert_eq!(
            facts(Route::Responses, &[("thread-id", "t3")], b"{}")
                .unwrap()
                .1
                .as_deref(),
            Some("t3")
        );
        assert_eq!(facts(Route::Responses, &[], b"{}").unwrap().1, None);
    }
}
