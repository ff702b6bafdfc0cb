//! `/v1/chat/completions` on a `chat` provider: passthrough (DESIGN §9; `docs/chat-wire.md`,
//! "Passthrough").
//!
//! The body goes upstream as received unless a rule changes it (`rewrite_request`): an alias
//! becomes the model it names, the model's forced `params` are set, and a streaming request
//! asks for `stream_options.include_usage` so that usage can be counted. The answer comes
//! back event by event through [`ChatPassthrough`] as the relay's stage: the same bytes,
//! except where the model's `think_tags` rule changes a chunk's content, the usage chunk the
//! client did not ask for (dropped), and a missing `[DONE]` after a finished answer (added).
//! A stream that stops before any `finish_reason` ends in the Chat error event.
//!
//! Two answers are read whole (bounded by [`MAX_AGGREGATE_BYTES`]) instead of relayed: a
//! one-JSON-body answer to a streaming request (some servers send one), turned into the chunk
//! stream a streaming server sends (`completion_as_stream`); and a non-streaming answer of a
//! model with a think rule, whose `message.content` is filtered (`completion_with_think`).
//! The client's `Authorization` never leaves; the provider's key goes in as a Bearer
//! placeholder swapped on the wire, or nothing at all for a keyless provider.

use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::Map;

use super::body::{ProxyBody, RequestLog};
use super::errors::{error_response, give_up_response, invalid_json};
use super::handler::{header_session, relayed};
use super::limits::Reservation;
use super::translated::MAX_AGGREGATE_BYTES;
use super::State;
use crate::pool::Target;
use crate::translate::hub::chat::{
    completion_as_stream, completion_with_think, rewrite_request, ChatPassthrough,
};
use crate::translate::think::ThinkMode;
use crate::translate::Dialect;
use crate::upstream::relay::{RelayBody, RelayFailure, RelayStage};
use crate::upstream::{Outbound, ReplyBody};

use super::handler::Text;

/// The fields of a chat body the proxy reads before the rules; the rest passes unread.
#[derive(Deserialize)]
struct ChatFields<'a> {
    #[serde(default, borrow)]
    model: Option<Text<'a>>,
    #[serde(default, borrow)]
    prompt_cache_key: Option<Text<'a>>,
    #[serde(default, borrow)]
    user: Option<Text<'a>>,
}

/// [`ChatPassthrough`] as the relay's stage: a failure (a cut, a timeout, an event over the
/// size cap, a stream that ends before its `finish_reason`) ends the client's stream with the
/// Chat error event, once.
struct ChatStage {
    inner: ChatPassthrough,
    /// The error event went out: nothing more does.
    ended: bool,
}

impl ChatStage {
    fn fail(&mut self, failure: RelayFailure, out: &mut Vec<u8>) {
        if !std::mem::replace(&mut self.ended, true) {
            // The stage emits whole events only, so the client is never mid-event here.
            out.extend_from_slice(&failure.sse_event(false, Dialect::Chat));
        }
    }
}

impl RelayStage for ChatStage {
    fn chunk(&mut self, upstream: &[u8], out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        // The one push error: an event over the size cap, which cannot be decoded.
        if self.inner.push(upstream, out).is_err() {
            self.fail(RelayFailure::Truncated, out);
        }
    }

    fn end(&mut self, failure: Option<RelayFailure>, out: &mut Vec<u8>) {
        match failure {
            Some(failure) => self.fail(failure, out),
            None => {
                if !self.ended && self.inner.finish(out).is_err() {
                    self.fail(RelayFailure::Truncated, out);
                }
            }
        }
    }

    fn buffered(&self) -> usize {
        self.inner.buffered()
    }
}

/// Sends a Chat Completions request to the chat provider `target`, as it came but for the
/// rules in the module docs.
#[allow(clippy::too_many_arguments)]
pub async fn passthrough(
    state: &State,
    parts: http::request::Parts,
    body: Bytes,
    decoded: Option<Vec<u8>>,
    target: Target,
    reservation: Reservation,
    log: &mut RequestLog,
) -> Response<ProxyBody> {
    let dialect = Dialect::Chat;
    let plain = decoded.as_deref().unwrap_or(&body);
    let Ok(fields) = serde_json::from_slice::<ChatFields>(plain) else {
        return invalid_json(Dialect::Chat);
    };
    let session = fields
        .prompt_cache_key
        .or(fields.user)
        .map(|s| s.0.into_owned())
        .or_else(|| header_session(&parts.headers))
        .map(|s| state.session_hasher.hash_one(s));
    // The model's settings: the name to send, its forced params and its think-tag rule.
    let resolved = match fields.model.as_ref().map(|m| state.models.resolve(&m.0)) {
        Some(Ok(resolved)) => Some(resolved),
        Some(Err(e)) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
            return error_response(dialect, status, e.code, &e.message);
        }
        None => None,
    };
    let (upstream_model, params, think) = match &resolved {
        Some(r) => (Some(r.upstream_model.as_str()), &r.params, r.think),
        None => (None, &Map::new(), ThinkMode::Off),
    };
    let rewritten = match rewrite_request(plain, upstream_model, params) {
        Ok(rewritten) => rewritten,
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
            return error_response(dialect, status, e.code, &e.message);
        }
    };
    let mut headers = parts.headers;
    let (body, decoded) = match rewritten.body {
        // A rewritten body goes upstream plain.
        Some(bytes) => {
            headers.remove(header::CONTENT_ENCODING);
            (Bytes::from(bytes), None)
        }
        None => (body, decoded.map(Bytes::from)),
    };
    let endpoint = match state.upstream.kind_for(target) {
        Some(kind) => kind.endpoint(false),
        None => return super::handler::unsupported_on_provider(dialect, "/v1/chat/completions"),
    };
    let outbound = Outbound {
        target,
        endpoint,
        headers: &headers,
        body,
        decoded,
        streaming: rewritten.stream,
        session,
        abort: state.abort.clone(),
    };
    let result = state.upstream.forward(outbound).await;
    drop(reservation);
    let mut reply = match result {
        Err(give_up) => {
            log.attempts = give_up.attempts;
            return give_up_response(dialect, &give_up);
        }
        Ok(reply) => reply,
    };
    let event_stream = is_event_stream(&reply.headers);
    let ok = reply.status.is_success();
    let relay = match std::mem::replace(&mut reply.body, ReplyBody::Full(Bytes::new())) {
        ReplyBody::Relay(relay) if ok => relay,
        body => {
            reply.body = body;
            return relayed(reply, log);
        }
    };
    match (rewritten.stream, event_stream) {
        (true, true) => {
            let stage = ChatStage {
                inner: ChatPassthrough::new(think, rewritten.client_usage),
                ended: false,
            };
            reply.body = ReplyBody::Relay(Box::new(relay.with_stage(Box::new(stage))));
            relayed(reply, log)
        }
        // One JSON body for a streaming request: the stream a streaming server sends.
        (true, false) => {
            let whole = match read_whole(*relay).await {
                Ok(whole) => whole,
                Err(failure) => return read_failed(failure, reply, log),
            };
            let stream = completion_as_stream(&whole, think, rewritten.client_usage);
            let Some((stream, _usage)) = stream else {
                // Not a completion: relay what the server said.
                reply.body = ReplyBody::Full(Bytes::from(whole));
                return relayed(reply, log);
            };
            reply.headers.remove(header::CONTENT_LENGTH);
            reply.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            reply
                .headers
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            reply.body = ReplyBody::Full(Bytes::from(stream));
            relayed(reply, log)
        }
        // A whole answer of a model with a think rule: filtered as a whole.
        (false, false) if think != ThinkMode::Off => {
            let whole = match read_whole(*relay).await {
                Ok(whole) => whole,
                Err(failure) => return read_failed(failure, reply, log),
            };
            let body = completion_with_think(&whole, think).unwrap_or(whole);
            reply.headers.remove(header::CONTENT_LENGTH);
            reply.body = ReplyBody::Full(Bytes::from(body));
            relayed(reply, log)
        }
        _ => {
            reply.body = ReplyBody::Relay(relay);
            relayed(reply, log)
        }
    }
}

pub(super) fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// Why a whole answer could not be read.
pub(super) enum ReadFailure {
    /// Over [`MAX_AGGREGATE_BYTES`].
    TooLarge,
    /// The relay failed (cut, idle, deadline, shutdown).
    Relay(RelayFailure),
}

/// Reads a plain upstream body to its end (the relay keeps the idle timeout, the deadline,
/// shutdown and the echo filter), at most [`MAX_AGGREGATE_BYTES`].
pub(super) async fn read_whole(mut relay: RelayBody) -> Result<Vec<u8>, ReadFailure> {
    let mut whole = Vec::new();
    loop {
        match relay.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if whole.len() + data.len() > MAX_AGGREGATE_BYTES {
                        return Err(ReadFailure::TooLarge);
                    }
                    whole.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                let kind = e.downcast_ref::<RelayFailure>().copied();
                return Err(ReadFailure::Relay(
                    kind.unwrap_or(RelayFailure::UpstreamError),
                ));
            }
            None => return Ok(whole),
        }
    }
}

/// The client's answer when a whole answer could not be read: the interruption's status (504
/// for a timeout, 502 for a cut) in the Chat dialect.
fn read_failed(
    failure: ReadFailure,
    reply: crate::upstream::Reply,
    log: &mut RequestLog,
) -> Response<ProxyBody> {
    log.attempts = reply.attempts;
    log.account = Some(reply.account);
    log.provider = Some(reply.provider);
    log.upstream_status = Some(reply.status.as_u16());
    log.stats = Some(Arc::clone(&reply.stats));
    let (status, code, message) = match failure {
        ReadFailure::TooLarge => (
            StatusCode::BAD_GATEWAY,
            "upstream_response_too_large",
            "The upstream answer is larger than the proxy reads.",
        ),
        ReadFailure::Relay(f) => (
            StatusCode::from_u16(f.status()).unwrap_or(StatusCode::BAD_GATEWAY),
            f.code(),
            f.message(),
        ),
    };
    error_response(Dialect::Chat, status, code, message)
}
