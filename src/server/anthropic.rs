//! `/v1/messages` and `/v1/messages/count_tokens` on an Anthropic provider: passthrough.
//!
//! The body goes upstream byte for byte (only `model` is rewritten, when it is an alias), and
//! the answer comes back as the upstream sent it, streamed event by event. The client's
//! `x-api-key`/`Authorization` never leave (the front end's header policy drops them; the
//! key goes in as `x-api-key` by the injector), `anthropic-version` is forwarded or set to
//! `2023-06-01`, and `anthropic-beta` is forwarded (`docs/anthropic-wire.md`). The retry
//! engine fails over before the first content block exactly as on the Responses wire, with
//! the wire's event classes; after commit a failure ends the stream with Anthropic's own
//! `event: error`.

use std::hash::BuildHasher;

use bytes::Bytes;
use http::header;
use http::Response;
use serde::Deserialize;

use super::body::{ProxyBody, RequestLog};
use super::errors::invalid_json;
use super::handler::{header_session, relayed, send};
use super::limits::Reservation;
use super::routes::Route;
use super::State;
use crate::pool::Target;
use crate::translate::Dialect;
use crate::upstream::Outbound;

use super::handler::Text;

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(default, borrow)]
    user_id: Option<Text<'a>>,
}

/// The fields of a Messages body the proxy reads; the rest passes through unread.
#[derive(Deserialize)]
struct MessagesFields<'a> {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, borrow)]
    model: Option<Text<'a>>,
    #[serde(default, borrow)]
    metadata: Option<Metadata<'a>>,
}

/// Sends a Messages (or `count_tokens`) request to the Anthropic provider `target`.
#[allow(clippy::too_many_arguments)]
pub async fn passthrough(
    state: &State,
    route: Route,
    parts: http::request::Parts,
    body: Bytes,
    decoded: Option<Vec<u8>>,
    target: Target,
    reservation: Reservation,
    log: &mut RequestLog,
) -> Response<ProxyBody> {
    let dialect = Dialect::Anthropic;
    let plain = decoded.as_deref().unwrap_or(&body);
    let Ok(fields) = serde_json::from_slice::<MessagesFields>(plain) else {
        return invalid_json(dialect);
    };
    let count_tokens = route == Route::CountTokens;
    let streaming = !count_tokens && fields.stream.unwrap_or(false);
    // A conversation by Anthropic's `metadata.user_id`, else Codex-style session headers.
    let session = fields
        .metadata
        .and_then(|m| m.user_id)
        .map(|u| u.0.into_owned())
        .or_else(|| header_session(&parts.headers))
        .map(|s| state.session_hasher.hash_one(s));
    let alias = fields
        .model
        .as_ref()
        .and_then(|m| state.models.alias_of(&m.0))
        .map(str::to_owned);
    let mut headers = parts.headers;
    let (body, decoded) = match alias {
        // An alias: the one rewrite; the body then goes upstream plain.
        Some(model) => {
            let mut value: serde_json::Value = match serde_json::from_slice(plain) {
                Ok(value) => value,
                Err(_) => return invalid_json(dialect),
            };
            if let Some(object) = value.as_object_mut() {
                object.insert("model".into(), serde_json::Value::String(model));
            }
            headers.remove(header::CONTENT_ENCODING);
            let bytes = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
            (bytes, None)
        }
        None => (body, decoded.map(Bytes::from)),
    };
    let endpoint = match state.upstream.kind_for(target) {
        Some(kind) if count_tokens => kind.count_tokens_endpoint(),
        Some(kind) => Some(kind.endpoint(false)),
        None => None,
    };
    let Some(endpoint) = endpoint else {
        return super::handler::unsupported_on_provider(dialect, route.path());
    };
    let outbound = Outbound {
        target,
        endpoint,
        headers: &headers,
        body,
        decoded,
        streaming,
        session,
        abort: state.abort.clone(),
    };
    match send(state, outbound, reservation, dialect, log).await {
        Err(refused) => refused,
        Ok(reply) => relayed(reply, log),
    }
}
