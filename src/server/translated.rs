//! The translated routes (`/v1/chat/completions`, `/v1/messages`), the local ones
//! (`/v1/messages/count_tokens`, `/v1/models`), and the aggregation of an upstream event stream
//! for a client that asked for one JSON answer.
//!
//! A translated request is mapped to a Responses request that always streams, sent through
//! the same retry engine as `/v1/responses` (so pre-commit failover, cooldowns and affinity
//! apply unchanged), and its answer is translated on the way back: event by event for a
//! streaming client (a [`StreamPipeline`] as the relay's stage, so every upstream event is
//! flushed as soon as its translation exists), or aggregated from the events for the rest.
//! Errors are in the client's dialect, written by `super::errors`: upstream error bodies are
//! re-shaped, and the proxy's own answers are rendered in it.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::body::{ProxyBody, RequestLog};
use super::errors::{error_response, reshape_error};
use super::limits::{BufferBudget, Reservation};
use super::State;
use crate::translate::{self, AggregatePipeline, Dialect, ResponseContext, StreamPipeline};
use crate::upstream::relay::{RelayBody, RelayFailure, RelayStage};
use crate::upstream::{Outbound, Reply, ReplyBody};
use std::hash::BuildHasher;

/// A streaming translator as the relay's stage.
impl RelayStage for StreamPipeline {
    fn chunk(&mut self, upstream: &[u8], out: &mut Vec<u8>) {
        self.push(upstream, out);
    }

    fn end(&mut self, failure: Option<RelayFailure>, out: &mut Vec<u8>) {
        self.finish(failure, out);
    }

    fn buffered(&self) -> usize {
        StreamPipeline::buffered(self)
    }
}

/// The relay's stage for an aggregated answer: upstream bytes unchanged, and no error event of
/// the relay's own at the end (the failure reaches the pipeline as its kind, not as an event
/// that would read like the upstream's).
struct Verbatim;

impl RelayStage for Verbatim {
    fn chunk(&mut self, upstream: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(upstream);
    }

    fn end(&mut self, _failure: Option<RelayFailure>, _out: &mut Vec<u8>) {}
}

/// Response headers for a translated answer: the upstream's end-to-end headers (request id,
/// rate-limit headers) without those that described the upstream's own body.
fn translated_headers(upstream: HeaderMap, content_type: &'static str) -> HeaderMap {
    let mut headers = upstream;
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
    ] {
        headers.remove(name);
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers
}

/// Most upstream bytes read into one aggregated answer (a non-streaming client's); beyond it
/// the client gets 502 `upstream_response_too_large`.
pub const MAX_AGGREGATE_BYTES: usize = 16 * 1024 * 1024;

/// Reads an upstream event stream to its end (the relay enforces the idle timeout, the
/// deadline and shutdown) and renders it as one answer; a timeout is a 504 in the client's
/// dialect (`upstream_idle_timeout`, `request_timeout`), a cut a 502. The bytes read are
/// capped at [`MAX_AGGREGATE_BYTES`] and counted against the buffer budget (503
/// `proxy_overloaded` when it is spent); echoes of a secret are masked in the rendered answer,
/// so one spread over several deltas is caught too.
pub async fn aggregate(
    relay: RelayBody,
    ctx: &ResponseContext,
    budget: &Arc<BufferBudget>,
) -> translate::Rendered {
    let echo = relay.echo_matcher();
    let mut pipeline = AggregatePipeline::new(ctx);
    let mut share = budget.reserve_none();
    let mut total = 0usize;
    let mut body = relay.with_stage(Box::new(Verbatim));
    let failure = loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    if total > MAX_AGGREGATE_BYTES {
                        return rendered_error(
                            ctx.dialect,
                            StatusCode::BAD_GATEWAY,
                            "upstream_response_too_large",
                            "The upstream answer is larger than the proxy aggregates.",
                        );
                    }
                    if !share.grow(data.len()) {
                        return rendered_error(
                            ctx.dialect,
                            StatusCode::SERVICE_UNAVAILABLE,
                            "proxy_overloaded",
                            "Too many response bytes are buffered right now; try again shortly.",
                        );
                    }
                    pipeline.push(&data);
                }
            }
            Some(Err(e)) => {
                let kind = e.downcast_ref::<RelayFailure>().copied();
                break Some(kind.unwrap_or(RelayFailure::UpstreamError));
            }
            None => break None,
        }
    };
    let mut rendered = pipeline.finish(failure);
    if let Some(echo) = echo {
        echo.redact_whole(&mut rendered.body);
    }
    rendered
}

fn rendered_error(
    dialect: Dialect,
    status: StatusCode,
    code: &str,
    message: &str,
) -> translate::Rendered {
    translate::Rendered {
        status: status.as_u16(),
        body: translate::error_body(dialect, status.as_u16(), code, message),
    }
}

/// Serves a Chat Completions or Anthropic Messages request: map, forward, translate back.
pub async fn forward(
    state: &State,
    dialect: Dialect,
    headers: &HeaderMap,
    body: &[u8],
    target: crate::pool::Target,
    reservation: Reservation,
    log: &mut RequestLog,
) -> Response<ProxyBody> {
    let mapped = match translate::map_request(dialect, body, &state.models) {
        Ok(mapped) => mapped,
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
            return error_response(dialect, status, e.code, &e.message);
        }
    };
    let upstream_body = match serde_json::to_vec(&mapped.body) {
        Ok(bytes) => Bytes::from(bytes),
        Err(_) => {
            return error_response(
                dialect,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Could not encode the upstream request.",
            )
        }
    };
    let mut headers = headers.clone();
    // The mapped body is plain JSON; the client's Anthropic headers mean nothing upstream.
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(header::CONTENT_LENGTH);
    let anthropic: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("anthropic-"))
        .cloned()
        .collect();
    for name in anthropic {
        headers.remove(name);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    let session = mapped
        .session
        .clone()
        .or_else(|| super::handler::header_session(&headers))
        .map(|s| state.session_hasher.hash_one(s));
    let outbound = Outbound {
        target,
        endpoint: "/responses",
        headers: &headers,
        body: upstream_body,
        decoded: None,
        streaming: mapped.client_stream,
        session,
        abort: state.abort.clone(),
    };
    match super::handler::send(state, outbound, reservation, dialect, log).await {
        Err(refused) => refused,
        Ok(reply) => {
            respond(
                reply,
                &mapped.context,
                mapped.client_stream,
                log,
                &state.budget,
            )
            .await
        }
    }
}

/// The client's answer for an upstream reply to a request translated with `ctx`.
pub async fn respond(
    reply: Reply,
    ctx: &ResponseContext,
    client_stream: bool,
    log: &mut RequestLog,
    budget: &Arc<BufferBudget>,
) -> Response<ProxyBody> {
    log.attempts = reply.attempts;
    log.account = Some(reply.account);
    log.provider = Some(reply.provider);
    log.upstream_status = Some(reply.status.as_u16());
    log.stats = Some(Arc::clone(&reply.stats));
    let attempts = HeaderValue::from(reply.attempts);
    let status = reply.status;
    let mut response = match reply.body {
        ReplyBody::Full(bytes) => {
            // An upstream error (or a plain body where an event stream was expected).
            let body = if status.is_success() {
                bytes
            } else {
                reshape_error(ctx.dialect, status, &bytes)
            };
            let mut response = Response::new(ProxyBody::full(body));
            *response.status_mut() = status;
            *response.headers_mut() = translated_headers(reply.headers, "application/json");
            response
        }
        ReplyBody::Relay(relay) if client_stream && status.is_success() => {
            let relay = relay.with_stage(Box::new(StreamPipeline::new(ctx)));
            let mut response = Response::new(ProxyBody::relay(Box::new(relay)));
            *response.status_mut() = status;
            *response.headers_mut() = translated_headers(reply.headers, "text/event-stream");
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        ReplyBody::Relay(relay) => {
            let rendered = aggregate(*relay, ctx, budget).await;
            let status = StatusCode::from_u16(rendered.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = Response::new(ProxyBody::full(Bytes::from(rendered.body)));
            *response.status_mut() = status;
            *response.headers_mut() = translated_headers(reply.headers, "application/json");
            response
        }
    };
    response
        .headers_mut()
        .insert("x-codex-proxy-attempts", attempts);
    response
}
