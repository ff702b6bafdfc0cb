//! Clients whose dialect is not their provider's wire, through the Responses hub (DESIGN §9,
//! `docs/hub.md`): client → Responses → wire for the request, and wire events → Responses
//! events → client for the answer.
//!
//! Chat and Anthropic clients over a Responses provider go through `super::translated`. This
//! module serves the other direction — a Responses or Chat client whose model is served by a
//! provider of another wire (Anthropic Messages, Chat Completions). Each wire is one arm of
//! [`forward_over_wire`]: its request mapper (from the Responses request), its endpoint and
//! required headers, and its event decoder (`translate::hub::WireDecoder`). Everything else is
//! shared with the translated routes (`translated::send`): the retry engine with the wire's
//! commit point and failover, usage from the wire's events, the relay with a
//! [`crate::translate::StreamPipeline`] over the decoder as its stage (or the aggregate for a
//! non-streaming client), the request log, and errors in the client's dialect.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use http::{Response, StatusCode};

use super::body::{ProxyBody, RequestLog};
use super::errors::error_response;
use super::limits::Reservation;
use super::translated::{self, Outgoing, Wire};
use super::State;
use crate::pool::Target;
use crate::translate::{self, Dialect};

/// The `anthropic-version` the hub writes its Messages requests for (`docs/anthropic-wire.md`).
const ANTHROPIC_VERSION: HeaderValue = HeaderValue::from_static("2023-06-01");

/// Serves a `client`-dialect request (`body`, decoded JSON) whose model's provider (`target`)
/// speaks `wire`: `body` → a Responses request (`translate::map_request`: the Chat mapper, or
/// the Responses body as it is, with the model table applied) → the wire's request, sent to
/// `target`; the answer decoded back to Responses events and translated for the client. A
/// request a mapper refuses is a 400 in the client's dialect, the upstream untouched. The
/// model named to the client is the one it asked for.
#[allow(clippy::too_many_arguments)]
pub async fn forward_over_wire(
    state: &State,
    client: Dialect,
    wire: Dialect,
    headers: &HeaderMap,
    body: &[u8],
    target: Target,
    reservation: Reservation,
    log: &mut RequestLog,
) -> Response<ProxyBody> {
    let mapped = match translated::map_client(state, client, body) {
        Ok(mapped) => mapped,
        Err(refused) => return *refused,
    };
    let Some(kind) = state.upstream.kind_for(target) else {
        return super::handler::unsupported_on_provider(client, "this request");
    };
    let endpoint = kind.endpoint(false);
    match wire {
        Dialect::Anthropic => {
            let request = match translate::hub::anthropic::map_request(&mapped.body) {
                Ok(request) => request,
                Err(e) => return refused(client, e),
            };
            let decoder = request.decoder().echoing(mapped.context.model.as_str());
            let required = [(
                HeaderName::from_static("anthropic-version"),
                ANTHROPIC_VERSION,
            )];
            let outgoing = Outgoing {
                body: &request.body,
                endpoint,
                headers: &required,
                wire: Some(Wire {
                    dialect: wire,
                    decoder: Box::new(decoder),
                    one_body: None,
                }),
            };
            translated::send(state, headers, &mapped, outgoing, target, reservation, log).await
        }
        Dialect::Chat => {
            // The model's settings, by the name the client asked for (an alias's settings
            // included), else the one the Responses request sends upstream: its forced params
            // go on the chat body, and its think-tag rule to the wire's decoder (which reads
            // `<think>` sections into reasoning itself, so the client's translator filters
            // nothing more).
            let upstream_model = mapped
                .body
                .get("model")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default();
            let settings = state
                .models
                .resolve(&mapped.context.model)
                .or_else(|_| state.models.resolve(upstream_model))
                .ok();
            let server = state.upstream.chat_server(target);
            let options = translate::hub::chat::ChatWireOptions {
                reasoning_effort: server.reasoning_effort,
                max_tokens: if server.max_completion_tokens {
                    translate::hub::chat::MaxTokensField::MaxCompletionTokens
                } else {
                    translate::hub::chat::MaxTokensField::MaxTokens
                },
                params: settings
                    .as_ref()
                    .map(|s| s.params.clone())
                    .unwrap_or_default(),
            };
            let request = match translate::hub::chat::map_request(&mapped.body, &options) {
                Ok(request) => request,
                Err(e) => return refused(client, e),
            };
            let think = settings.map_or(mapped.context.think, |s| s.think);
            let mut mapped = mapped;
            mapped.context.think = translate::think::ThinkMode::Off;
            let decoder = request.decoder(&mapped.context.model, think);
            let outgoing = Outgoing {
                body: &request.body,
                endpoint,
                headers: &[],
                wire: Some(Wire {
                    dialect: wire,
                    decoder: Box::new(decoder),
                    one_body: Some(chat_body_as_stream),
                }),
            };
            translated::send(state, headers, &mapped, outgoing, target, reservation, log).await
        }
        // A Responses provider is no hub case: the handler relays to it directly.
        Dialect::Responses => super::handler::unsupported_on_provider(client, "this request"),
    }
}

/// A chat server's one `chat.completion` body as the chunk stream a streaming server sends
/// (usage chunk included, for accounting; the decoder applies the think rule).
fn chat_body_as_stream(body: &[u8]) -> Option<Vec<u8>> {
    translate::hub::chat::completion_as_stream(body, translate::think::ThinkMode::Off, true)
        .map(|(stream, _)| stream)
}

/// A wire mapper's refusal as the client's error answer.
fn refused(client: Dialect, e: translate::TranslateError) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    error_response(client, status, e.code, &e.message)
}
