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
use super::errors::{
    dialect_of_path, error_response, give_up_response, invalid_json, json_response, refusal,
};
use super::limits::Reservation;
use super::peer::{Caller, UidLabel};
use super::policy::PolicyDenied;
use super::routes::{log_safe, Refusal, Route};
use super::{anthropic, translated, State};
use crate::translate::Dialect;
use crate::upstream::{Outbound, Reply, ReplyBody};

/// Longest pause tolerated between two chunks of a request body (slow senders).
pub const BODY_CHUNK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Handles one request on a connection owned by `caller` (`None`: the owner could not be
/// determined). Never fails: every problem is an error response in the dialect of the path
/// (`errors`).
pub async fn handle(
    state: Arc<State>,
    caller: Option<Caller>,
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
        bytes_out: 0,
        account: None,
        provider: None,
        caller: None,
        slot: None,
        budget: None,
        first_byte: None,
        accounting: state.accounting_on.then(|| Arc::clone(&state.accounting)),
    };
    // Errors on the Anthropic routes (refusals included) use Anthropic's shape.
    let dialect = dialect_of_path(request.uri().path());
    let admitted = state.access.admits(caller.as_ref());
    log.caller = caller;
    // A user who may not use the port is refused before anything else is looked at, so
    // nothing about the proxy (routes, token, probe) answers them but this.
    let response = if let Err(denied) = admitted {
        tracing::warn!(
            uid = %UidLabel(denied.uid()),
            method = %log_safe(request.method().as_str()),
            path = %log_safe(request.uri().path()),
            reason = "user_not_allowed",
            "request refused: local user not allowed"
        );
        denied.response(dialect)
    } else if head_size(&request) > super::MAX_HEADER_BYTES {
        error_response(
            dialect,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "The request head is larger than the limit.",
        )
    } else if !only_chunked(request.headers()) {
        error_response(
            dialect,
            StatusCode::NOT_IMPLEMENTED,
            "unsupported_transfer_encoding",
            "Transfer-Encoding must be exactly chunked.",
        )
    } else {
        match state
            .gate
            .classify(request.method(), request.uri(), request.headers())
        {
            Err(refused) => {
                // A wrong base URL answers in the dialect of the route it names.
                let dialect = match refused {
                    Refusal::WrongBaseUrl { route, .. } if route.is_anthropic() => {
                        Dialect::Anthropic
                    }
                    Refusal::WrongBaseUrl { .. } => Dialect::Responses,
                    _ => dialect,
                };
                let response = refusal(refused, state.gate.port, dialect);
                log_refusal(&request, refused, response.status());
                response
            }
            Ok(route) => {
                log.route = route.name();
                // The probe says only what a TCP connect says: something listens here.
                if route != Route::Probe
                    && state
                        .token
                        .as_ref()
                        .is_some_and(|t| !t.authorizes(request.headers()))
                {
                    error_response(
                        dialect,
                        StatusCode::UNAUTHORIZED,
                        "invalid_client_token",
                        "Missing or wrong client token (send it as Authorization: Bearer or x-api-key).",
                    )
                } else {
                    serve(&state, route, request, dialect, &mut log).await
                }
            }
        }
    };
    log.status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, body.with_log(log)))
}

/// True unless the request names a transfer-coding other than exactly one `chunked`.
///
/// hyper decodes the final `chunked` and refuses a list that does not end in it, but would
/// hand on a `gzip, chunked` body still gzip-coded, to be forwarded as if it were plain.
/// RFC 9112 §6.1 lets a server answer an unknown or unsupported transfer-coding with 501.
fn only_chunked(headers: &http::HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    match (codings.next(), codings.next()) {
        (None, _) => true,
        (Some(only), None) => only.eq_ignore_ascii_case(b"chunked"),
        (Some(_), Some(_)) => false,
    }
}

/// One line per refused request: its method, path and why, so a client set up wrong can be
/// told from the log. Never the query or a header (they may carry credentials); the path is
/// escaped and cut short by [`log_safe`]. INFO, like the request line that follows it: the
/// refused requests that a noisy neighbour could repeat already log one line each.
fn log_refusal(request: &Request<Incoming>, refused: Refusal, status: StatusCode) {
    tracing::info!(
        method = %log_safe(request.method().as_str()),
        path = %log_safe(request.uri().path()),
        status = status.as_u16(),
        reason = refused.reason(),
        "request refused"
    );
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
    dialect: Dialect,
    log: &mut RequestLog,
) -> Response<ProxyBody> {
    match route {
        Route::Health => json_response(
            StatusCode::OK,
            &state.upstream.health_document(Instant::now()),
        ),
        Route::Usage => {
            let caller = log.caller.as_ref();
            let admin = caller.is_some_and(|c| c.uid == 0 || c.uid == state.usage_admin);
            let mut document = state.accounting.usage_document(caller, admin);
            let now = super::policy::unix_now();
            for row in &mut document.users {
                if let Some(status) = state.policies.budget_status(Some(row.uid), now) {
                    row.budget = Some(status.budget);
                    row.remaining = Some(status.remaining);
                    row.window_ends_at = Some(crate::secret::jwt::format_rfc3339(
                        i64::try_from(status.window_end).unwrap_or(i64::MAX),
                    ));
                }
            }
            json_response(StatusCode::OK, &document)
        }
        Route::Metrics => {
            let accounts = state.upstream.pool.health(Instant::now()).accounts;
            let text = state
                .accounting
                .exposition(&accounts, state.open_connections());
            let mut response = Response::new(ProxyBody::full(Bytes::from(text)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                // What the encoder writes: OpenMetrics text (Prometheus scrapes it natively).
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        Route::Shutdown => {
            tracing::info!("shutdown requested over HTTP");
            state.shutdown_requested.cancel();
            json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "shutting_down"}),
            )
        }
        // A bare 200: no body, no JSON, nothing about the proxy.
        Route::Probe => {
            let mut response = Response::new(ProxyBody::full(Bytes::new()));
            // Hyper leaves the length off a HEAD answer; say it, so no client waits for a body.
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            response
        }
        Route::Models => {
            let anthropic = request.headers().contains_key("anthropic-version");
            let (known, exact) = state.upstream.listed_models();
            json_response(
                StatusCode::OK,
                &state.models.list_for(anthropic, known, &exact),
            )
        }
        Route::Responses
        | Route::ResponsesCompact
        | Route::ChatCompletions
        | Route::Messages
        | Route::CountTokens => forward(state, route, request, dialect, log).await,
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
    fn response(&self, max: usize, dialect: Dialect) -> Response<ProxyBody> {
        let error = |status, code, message: &str| error_response(dialect, status, code, message);
        match self {
            BodyError::TooLarge => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                &format!("Request body is larger than the limit of {max} bytes."),
            ),
            BodyError::OverBudget => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "proxy_overloaded",
                "Too many request bytes are buffered right now; try again shortly.",
            ),
            BodyError::SlowSender => error(
                StatusCode::REQUEST_TIMEOUT,
                "request_body_timeout",
                "The request body arrived too slowly.",
            ),
            BodyError::Broken => error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "The request body could not be read.",
            ),
        }
    }
}

/// Reads the whole body within the size limit, the global budget, the slow-sender bound and
/// the whole-body deadline.
///
/// The budget is reserved as bytes arrive, never by the declared `Content-Length`: a sender
/// that declares 32 MiB and trickles one byte at a time holds only what it sent (and only
/// until the whole-body deadline), so a handful of such sockets cannot refuse every other
/// body with 503.
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
    let deadline = Instant::now() + state.timeouts.body_read;
    let mut reservation = state.budget.reserve_none();
    // A body that arrives in one frame is kept as it is (no copy); more frames are joined.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    loop {
        let wait = (Instant::now() + BODY_CHUNK_TIMEOUT).min(deadline);
        let frame = match tokio::time::timeout_at(wait, body.frame()).await {
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
        if !reservation.grow(data.len()) {
            return Err(BodyError::OverBudget);
        }
        total += data.len();
        match (&mut joined, first.take()) {
            (Some(buf), _) => buf.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(earlier)) => {
                // Sized by what arrived, not by the declared length: a declared 32 MiB
                // that never comes must not cost 32 MiB. Growth doubles from here.
                let arrived = earlier.len() + data.len();
                let capacity = declared.map_or(arrived * 2, |d| d.min(arrived * 2));
                let mut buf = BytesMut::with_capacity(capacity.max(arrived));
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
pub(super) struct Text<'a>(#[serde(borrow)] pub(super) std::borrow::Cow<'a, str>);

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

/// The `model` field alone.
#[derive(Deserialize)]
struct ModelField<'a> {
    #[serde(default, borrow)]
    model: Option<Text<'a>>,
}

/// Whether `policy` lets the request in `json` through, judged by the model as it would go
/// upstream: after aliases and suffixes (`--models`), so an alias cannot reach a model the
/// user may not use, and an alias of an allowed model works. A body that is not a JSON object
/// with a string `model` passes here: every route refuses it with 400 before the upstream.
fn model_allowed(
    policy: &super::policy::UserPolicy,
    models: &crate::translate::models::ModelTable,
    json: &[u8],
) -> bool {
    if policy.models.is_none() {
        return true;
    }
    let Ok(fields) = serde_json::from_slice::<ModelField>(json) else {
        return true;
    };
    let upstream = fields.model.map(|m| match models.resolve(&m.0) {
        Ok(resolved) => resolved.upstream_model,
        // An unknown suffix: refused with 400 later; judged by the name as asked here.
        Err(_) => m.0.into_owned(),
    });
    policy.allows_model(upstream.as_deref())
}

/// A request refused by its user's policy, with one log line naming the uid and the reason.
fn policy_refusal(denied: PolicyDenied, log: &RequestLog, dialect: Dialect) -> Response<ProxyBody> {
    tracing::info!(
        uid = %UidLabel(log.caller.as_ref().map(|c| c.uid)),
        route = log.route,
        reason = denied.code(),
        "request refused by the user's policy"
    );
    denied.response(dialect)
}

/// The dialect a client speaks on `route` (errors aside: Chat clients get OpenAI-shaped
/// errors, see [`super::errors::dialect_of_path`]).
fn client_dialect(route: Route) -> Dialect {
    match route {
        Route::Messages | Route::CountTokens => Dialect::Anthropic,
        Route::ChatCompletions => Dialect::Chat,
        _ => Dialect::Responses,
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
    dialect: Dialect,
    log: &mut RequestLog,
) -> Response<ProxyBody> {
    // A user at their `max_concurrent` is refused before the body is read. The slot lives in
    // the log, which the response body carries: it is released when the body is done with (a
    // stream's last byte, or the client going away), not when this function returns.
    if route != Route::CountTokens {
        // A user whose window has reached their token budget is refused first; the charge
        // is made when the body is done with, so a request in flight still counts.
        match state
            .policies
            .check_budget(log.caller.as_ref(), super::policy::unix_now())
        {
            Ok(charge) => log.budget = charge,
            Err(denied) => return policy_refusal(denied, log, dialect),
        }
        match state.policies.acquire(log.caller.as_ref()) {
            Ok(slot) => log.slot = slot,
            Err(denied) => return policy_refusal(denied, log, dialect),
        }
    }
    let (parts, body, reservation) = match read_body(state, request).await {
        Ok(read) => read,
        Err(e) => return e.response(state.limits.max_body_bytes, dialect),
    };
    log.bytes_in = body.len();
    let mut reservation = reservation;
    let decoded = match encoding::decode(&parts.headers, &body, state.limits.max_body_bytes) {
        Ok(decoded) => decoded,
        Err(DecodeError::TooLarge) => {
            return BodyError::TooLarge.response(state.limits.max_body_bytes, dialect)
        }
        Err(DecodeError::Unsupported) => {
            return error_response(
                dialect,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_encoding",
                "Content-Encoding must be zstd, gzip, deflate or identity.",
            )
        }
        Err(DecodeError::Corrupt) => {
            return error_response(
                dialect,
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "The request body does not match its Content-Encoding.",
            )
        }
    };
    if decoded.as_ref().is_some_and(|d| !reservation.grow(d.len())) {
        return BodyError::OverBudget.response(state.limits.max_body_bytes, dialect);
    }
    let plain = decoded.as_deref().unwrap_or(&body);
    if let Some(policy) = state.policies.for_caller(log.caller.as_ref()) {
        if !model_allowed(policy, &state.models, plain) {
            return policy_refusal(PolicyDenied::ModelNotAllowed, log, dialect);
        }
    }
    // Where the request goes: the provider its model routes to (DESIGN §9).
    // Without configured providers the model decides nothing here: the body is not read again.
    let model = state
        .upstream
        .routes_by_model()
        .then(|| body_model(plain))
        .flatten();
    let target = crate::upstream::provider::route(
        &state.upstream.providers,
        &state.upstream.pool,
        &state.models,
        model.as_deref(),
    );
    let wire = target.map(|t| state.upstream.wire_of(t));
    // The arms other than the Responses passthrough box their futures: an async fn's state
    // is as large as its largest arm, and this one is moved along with every request.
    match (route, target, wire) {
        (Route::CountTokens | Route::Messages, Some(target), Some(Dialect::Anthropic)) => {
            return Box::pin(anthropic::passthrough(
                state,
                route,
                parts,
                body,
                decoded,
                target,
                reservation,
                log,
            ))
            .await;
        }
        // Estimated here when no provider of the model counts tokens itself.
        (Route::CountTokens, ..) => {
            return match crate::translate::anthropic::count_tokens(plain) {
                Ok(body) => {
                    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    response
                }
                Err(e) => error_response(
                    Dialect::Anthropic,
                    StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                    e.code,
                    &e.message,
                ),
            };
        }
        (_, None, _) | (_, _, None) => return model_not_found(dialect, model.as_deref()),
        (Route::ChatCompletions | Route::Messages, Some(target), Some(Dialect::Responses)) => {
            return Box::pin(translated::forward(
                state,
                client_dialect(route),
                &parts.headers,
                plain,
                target,
                reservation,
                log,
            ))
            .await;
        }
        (Route::ChatCompletions, Some(target), Some(Dialect::Chat)) => {
            return Box::pin(super::chat::passthrough(
                state,
                parts,
                body,
                decoded,
                target,
                reservation,
                log,
            ))
            .await;
        }
        (Route::ResponsesCompact, Some(target), _) if !state.upstream.compacts(target) => {
            return unsupported_on_provider(dialect, "/v1/responses/compact");
        }
        (Route::Responses | Route::ResponsesCompact, Some(_), Some(Dialect::Responses)) => {}
        // A client whose dialect is not its provider's wire (Responses and Chat clients of an
        // Anthropic provider, Responses and Anthropic clients of a chat provider) goes through
        // the hub.
        (
            Route::Responses | Route::ChatCompletions | Route::Messages,
            Some(target),
            Some(wire @ (Dialect::Anthropic | Dialect::Chat)),
        ) if client_dialect(route) != wire => {
            return Box::pin(super::hub::forward_over_wire(
                state,
                client_dialect(route),
                wire,
                &parts.headers,
                plain,
                target,
                reservation,
                log,
            ))
            .await;
        }
        // The rest cannot happen (routes above).
        _ => {
            return unsupported_on_provider(dialect, log.route);
        }
    }
    let target = target.unwrap_or(crate::pool::Target::Implicit);
    let prepared = match prepare_responses(state, route, dialect, parts.headers, body, decoded) {
        Ok(prepared) => prepared,
        Err(refused) => return *refused,
    };
    let model = prepared.model;
    let outbound = Outbound {
        target,
        endpoint: prepared.endpoint,
        headers: &prepared.headers,
        body: prepared.body,
        decoded: prepared.decoded,
        streaming: prepared.streaming,
        session: prepared.session,
        abort: state.abort.clone(),
    };
    match send(state, outbound, reservation, dialect, log).await {
        Err(refused) => refused,
        Ok(reply) if reply.aggregate => {
            // A stream-only upstream served a client that wants one JSON answer.
            let ctx = crate::translate::responses::context(model);
            translated::respond(reply, &ctx, false, None, log, &state.budget).await
        }
        Ok(reply) => relayed(reply, log),
    }
}

/// Sends `outbound` upstream (the retry engine) and frees the concurrency reservation once it
/// has an answer; when the engine gives up, the client's error answer in `dialect`, with the
/// attempts logged. Every route that goes upstream goes through here.
pub(super) async fn send(
    state: &State,
    outbound: Outbound<'_>,
    reservation: Reservation,
    dialect: Dialect,
    log: &mut RequestLog,
) -> Result<Reply, Response<ProxyBody>> {
    let result = state.upstream.forward(outbound).await;
    drop(reservation);
    result.map_err(|give_up| {
        log.attempts = give_up.attempts;
        give_up_response(dialect, &give_up)
    })
}

/// A `/v1/responses` or `/v1/responses/compact` request ready for the retry engine, whatever
/// carries it upstream: what [`prepare_responses`] makes of the client's request.
struct Prepared {
    endpoint: &'static str,
    headers: http::HeaderMap,
    /// The body to send (the client's bytes unless a rewrite applied).
    body: Bytes,
    /// The decoded body when `body` is still the client's compressed one.
    decoded: Option<Bytes>,
    streaming: bool,
    /// The conversation, hashed, for account affinity.
    session: Option<u64>,
    /// The model after a rewrite (empty when the body went as it came).
    model: String,
}

/// Reads what the proxy needs from a Responses request and applies the model table's
/// rewrite (suffix, alias, overrides), independent of the connection it came on and of the
/// transport it leaves on. `Err`: the client's answer (400 in `dialect`).
fn prepare_responses(
    state: &State,
    route: Route,
    dialect: Dialect,
    headers: http::HeaderMap,
    body: Bytes,
    decoded: Option<Vec<u8>>,
) -> Result<Prepared, Box<Response<ProxyBody>>> {
    let plain = decoded.as_deref().unwrap_or(&body);
    let facts = request_facts(route, &headers, plain, &state.models);
    let Some(RequestFacts {
        streaming,
        session,
        model_rewrite,
    }) = facts
    else {
        return Err(Box::new(invalid_json(dialect)));
    };
    let mut decoded = decoded.map(Bytes::from);
    let mut body = body;
    let mut headers = headers;
    let mut model = String::new();
    if model_rewrite {
        // A model suffix, alias or override: the body is rewritten (and goes out plain).
        let mut value: serde_json::Value =
            match serde_json::from_slice(decoded.as_deref().unwrap_or(&body)) {
                Ok(value) => value,
                Err(_) => return Err(Box::new(invalid_json(dialect))),
            };
        if let Err(e) = state.models.rewrite_responses(&mut value) {
            return Err(Box::new(error_response(
                dialect,
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                e.code,
                &e.message,
            )));
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
        return Err(Box::new(error_response(
            dialect,
            StatusCode::NOT_FOUND,
            "not_found",
            "Unknown route.",
        )));
    };
    Ok(Prepared {
        endpoint,
        headers,
        body,
        decoded,
        streaming,
        session: session.map(|s| state.session_hasher.hash_one(s)),
        model,
    })
}

/// The client's answer for an upstream reply relayed as it is (passthrough).
pub(super) fn relayed(reply: crate::upstream::Reply, log: &mut RequestLog) -> Response<ProxyBody> {
    // The usual counts without an allocation (`HeaderValue::from(u32)` allocates).
    let attempts_header = |attempts: u32| match attempts {
        1 => HeaderValue::from_static("1"),
        2 => HeaderValue::from_static("2"),
        3 => HeaderValue::from_static("3"),
        n => HeaderValue::from(n),
    };
    log.attempts = reply.attempts;
    log.account = Some(reply.account);
    log.provider = Some(reply.provider);
    log.upstream_status = Some(reply.status.as_u16());
    log.stats = Some(Arc::clone(&reply.stats));
    let body = match reply.body {
        ReplyBody::Full(bytes) => ProxyBody::full(bytes),
        ReplyBody::Relay(relay) => ProxyBody::relay(relay),
    };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    *response.headers_mut() = reply.headers;
    response.headers_mut().insert(
        crate::upstream::forward::ATTEMPTS_HEADER,
        attempts_header(reply.attempts),
    );
    response
}

/// The `model` of a request body, if it has a string one.
fn body_model(json: &[u8]) -> Option<String> {
    serde_json::from_slice::<ModelField>(json)
        .ok()?
        .model
        .map(|m| m.0.into_owned())
}

/// 400 `model_not_found`: no provider serves the model (upstream untouched).
fn model_not_found(dialect: Dialect, model: Option<&str>) -> Response<ProxyBody> {
    let message = match model {
        // Bounded, and only printable ASCII: a model name the client sent is shown back to it.
        Some(m) if m.len() <= 128 && m.bytes().all(|b| b.is_ascii_graphic()) => {
            format!("No provider of this proxy serves the model `{m}`.")
        }
        _ => "No provider of this proxy serves the requested model.".to_string(),
    };
    error_response(
        dialect,
        StatusCode::BAD_REQUEST,
        "model_not_found",
        &message,
    )
}

/// 400 `unsupported_on_provider`: the model's provider does not serve this route.
pub(super) fn unsupported_on_provider(dialect: Dialect, what: &str) -> Response<ProxyBody> {
    error_response(
        dialect,
        StatusCode::BAD_REQUEST,
        "unsupported_on_provider",
        &format!("The provider of this model does not serve {what}."),
    )
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
