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
use super::errors::{error_response, reshape_wire_error};
use super::limits::{BufferBudget, Reservation};
use super::State;
use crate::translate::hub::WireDecoder;
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

/// The provider's wire when it is not Responses (the Responses hub, `super::hub`): the
/// dialect its error bodies are written in, and the decoder its event stream goes through
/// before the client's translator sees Responses events.
pub struct Wire {
    /// The provider's wire.
    pub dialect: Dialect,
    /// A fresh decoder for this answer.
    pub decoder: Box<dyn WireDecoder>,
    /// For a wire whose servers may answer a streaming request with one JSON body (some chat
    /// servers do): turns such a body into the wire's event stream (`None`: not an answer).
    /// The body is read whole first, at most [`MAX_AGGREGATE_BYTES`].
    pub one_body: Option<OneBody>,
}

/// Turns a wire's one-JSON-body answer into its event stream (`None`: not an answer).
pub type OneBody = fn(&[u8]) -> Option<Vec<u8>>;

/// Most upstream bytes read into one aggregated answer (a non-streaming client's); beyond it
/// the client gets 502 `upstream_response_too_large`.
pub const MAX_AGGREGATE_BYTES: usize = 16 * 1024 * 1024;

/// Reads an upstream event stream to its end (the relay enforces the idle timeout, the
/// deadline and shutdown) and renders it as one answer; a timeout is a 504 in the client's
/// dialect (`upstream_idle_timeout`, `request_timeout`), a cut a 502. The bytes read are
/// capped at [`MAX_AGGREGATE_BYTES`] and counted against the buffer budget (503
/// `proxy_overloaded` when it is spent); echoes of a secret are masked in the rendered answer,
/// so one spread over several deltas is caught too. `wire`: the decoder of a provider wire
/// that is not Responses.
pub async fn aggregate(
    relay: RelayBody,
    ctx: &ResponseContext,
    wire: Option<Box<dyn WireDecoder>>,
    budget: &Arc<BufferBudget>,
) -> translate::Rendered {
    let echo = relay.echo_matcher();
    let mut pipeline = AggregatePipeline::new(ctx);
    if let Some(decoder) = wire {
        pipeline = pipeline.over_wire(decoder);
    }
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
    let mapped = match map_client(state, dialect, body) {
        Ok(mapped) => mapped,
        Err(refused) => return *refused,
    };
    let outgoing = Outgoing {
        body: &mapped.body,
        endpoint: "/responses",
        headers: &[],
        wire: None,
    };
    send(state, headers, &mapped, outgoing, target, reservation, log).await
}

/// The client's request (`dialect`, decoded JSON) as the streaming Responses request every
/// provider wire starts from (the model table applied); `Err`: the client's 400 in its
/// dialect, the upstream untouched.
pub(super) fn map_client(
    state: &State,
    dialect: Dialect,
    body: &[u8],
) -> Result<translate::Mapped, Box<Response<ProxyBody>>> {
    translate::map_request(dialect, body, &state.models).map_err(|e| {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
        Box::new(error_response(dialect, status, e.code, &e.message))
    })
}

/// What a translated request sends upstream, in the provider's wire.
pub(super) struct Outgoing<'a> {
    /// The body (the mapped Responses request, or the wire's request made from it).
    pub body: &'a serde_json::Value,
    /// Below the provider's base URL.
    pub endpoint: &'static str,
    /// Headers the wire requires, set over the client's.
    pub headers: &'a [(header::HeaderName, HeaderValue)],
    /// How the answer reads when the wire is not Responses.
    pub wire: Option<Wire>,
}

/// Sends a translated request through the retry engine (failover, cooldowns and affinity as on
/// every route) and translates the answer for the client: `mapped` holds the client's side
/// (its dialect, whether it streams, its conversation), `outgoing` the upstream's.
pub(super) async fn send(
    state: &State,
    client_headers: &HeaderMap,
    mapped: &translate::Mapped,
    outgoing: Outgoing<'_>,
    target: crate::pool::Target,
    reservation: Reservation,
    log: &mut RequestLog,
) -> Response<ProxyBody> {
    let dialect = mapped.context.dialect;
    let upstream_body = match serde_json::to_vec(outgoing.body) {
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
    let mut headers = client_headers.clone();
    // The body is plain JSON made here; the client's Anthropic headers mean nothing upstream
    // (a wire that needs its own sets them in `outgoing.headers`).
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
    for (name, value) in outgoing.headers {
        headers.insert(name.clone(), value.clone());
    }
    let session = mapped
        .session
        .clone()
        .or_else(|| super::handler::header_session(&headers))
        .map(|s| state.session_hasher.hash_one(s));
    let outbound = Outbound {
        target,
        endpoint: outgoing.endpoint,
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
                outgoing.wire,
                log,
                &state.budget,
            )
            .await
        }
    }
}

/// A whole wire event stream (made from a one-body answer) through the client's translator:
/// the client's stream as one body when it streams, else its aggregated answer.
fn render_whole(
    ctx: &ResponseContext,
    client_stream: bool,
    decoder: Option<Box<dyn WireDecoder>>,
    stream: &[u8],
) -> translate::Rendered {
    if client_stream {
        let mut pipeline = StreamPipeline::new(ctx);
        if let Some(decoder) = decoder {
            pipeline = pipeline.over_wire(decoder);
        }
        let mut out = Vec::with_capacity(stream.len() * 2);
        pipeline.push(stream, &mut out);
        pipeline.finish(None, &mut out);
        return translate::Rendered {
            status: 200,
            body: out,
        };
    }
    let mut pipeline = AggregatePipeline::new(ctx);
    if let Some(decoder) = decoder {
        pipeline = pipeline.over_wire(decoder);
    }
    pipeline.push(stream);
    pipeline.finish(None)
}

/// The client's answer for an upstream reply to a request translated with `ctx`; `wire` when
/// the provider's wire is not Responses (its events are decoded to Responses events first,
/// and its error bodies read in its shape).
pub async fn respond(
    reply: Reply,
    ctx: &ResponseContext,
    client_stream: bool,
    wire: Option<Wire>,
    log: &mut RequestLog,
    budget: &Arc<BufferBudget>,
) -> Response<ProxyBody> {
    let (wire_dialect, decoder, one_body) = match wire {
        Some(Wire {
            dialect,
            decoder,
            one_body,
        }) => (dialect, Some(decoder), one_body),
        None => (Dialect::Responses, None, None),
    };
    log.attempts = reply.attempts;
    log.account = Some(reply.account);
    log.provider = Some(reply.provider);
    log.upstream_status = Some(reply.status.as_u16());
    log.stats = Some(Arc::clone(&reply.stats));
    let attempts = HeaderValue::from(reply.attempts);
    let status = reply.status;
    // One JSON body where the wire streams: read whole and made the wire's stream first.
    let one_body = one_body.filter(|_| {
        status.is_success()
            && matches!(reply.body, ReplyBody::Relay(_))
            && !super::chat::is_event_stream(&reply.headers)
    });
    let mut response = match reply.body {
        ReplyBody::Relay(relay) if one_body.is_some() => {
            let rendered = match (one_body, super::chat::read_whole(*relay).await) {
                (Some(convert), Ok(whole)) => match convert(&whole) {
                    Some(stream) => render_whole(ctx, client_stream, decoder, &stream),
                    None => rendered_error(
                        ctx.dialect,
                        StatusCode::BAD_GATEWAY,
                        "upstream_invalid_response",
                        "The upstream answered with a body that is not a response.",
                    ),
                },
                (_, Err(super::chat::ReadFailure::Relay(failure))) => rendered_error(
                    ctx.dialect,
                    StatusCode::from_u16(failure.status()).unwrap_or(StatusCode::BAD_GATEWAY),
                    failure.code(),
                    failure.message(),
                ),
                _ => rendered_error(
                    ctx.dialect,
                    StatusCode::BAD_GATEWAY,
                    "upstream_response_too_large",
                    "The upstream answer is larger than the proxy aggregates.",
                ),
            };
            let streamed = client_stream && rendered.status == 200;
            let status = StatusCode::from_u16(rendered.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = Response::new(ProxyBody::full(Bytes::from(rendered.body)));
            *response.status_mut() = status;
            let kind = if streamed {
                "text/event-stream"
            } else {
                "application/json"
            };
            *response.headers_mut() = translated_headers(reply.headers, kind);
            response
        }
        ReplyBody::Full(bytes) => {
            // An upstream error (or a plain body where an event stream was expected).
            let body = if status.is_success() {
                bytes
            } else {
                reshape_wire_error(ctx.dialect, wire_dialect, status, &bytes)
            };
            let mut response = Response::new(ProxyBody::full(body));
            *response.status_mut() = status;
            *response.headers_mut() = translated_headers(reply.headers, "application/json");
            response
        }
        ReplyBody::Relay(relay) if client_stream && status.is_success() => {
            let mut pipeline = StreamPipeline::new(ctx);
            if let Some(decoder) = decoder {
                pipeline = pipeline.over_wire(decoder);
            }
            let relay = relay.with_stage(Box::new(pipeline));
            let mut response = Response::new(ProxyBody::relay(Box::new(relay)));
            *response.status_mut() = status;
            *response.headers_mut() = translated_headers(reply.headers, "text/event-stream");
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        ReplyBody::Relay(relay) => {
            let rendered = aggregate(*relay, ctx, decoder, budget).await;
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
