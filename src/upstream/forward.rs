//! Sending one client request upstream: attempts, the commit point, and the reply.
//!
//! Phases of an attempt (see `shared/reference/retry-semantics.md`): connect, awaiting
//! headers, headers received, streaming before commit, committed. This module retries the
//! first two only — a connect failure (always safe), and for streaming requests a
//! response-header timeout — up to `--max-attempts`, with full-jitter exponential backoff,
//! replaying the same buffered body bytes. Once response headers arrive there is no retry.
//!
//! Commit point: for an event stream the status line and the bootstrap events
//! (`response.created`, `response.in_progress`, `codex.*`) are held until the first
//! content-bearing or terminal event, at most for the header timeout; from then on every
//! chunk is relayed as it arrives (see [`relay`](super::relay)).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{is_connect_timeout, HttpClient};
use super::headers::{request_headers_for_upstream, response_headers_for_client};
use super::redact::redact;
use super::relay::{RelayBody, RelayFailure, RelayParts, RelayStats, SseWatch};
use crate::config::{Timeouts, UpstreamBase};
use crate::pool::Pool;

/// Largest upstream error body read (to redact it) before relaying; beyond it: 502.
pub const MAX_ERROR_BODY_BYTES: usize = 4 * 1024 * 1024;
/// First backoff step before a retry; doubled per attempt, capped, with full jitter.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
pub const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Everything the forwarder needs, shared by all requests.
pub struct Upstream {
    pub client: HttpClient,
    pub base: UpstreamBase,
    /// Per account (by index): the sensitive `Authorization` value requests carry — a
    /// placeholder that the connection layer swaps for the key (see `inject`).
    pub authorizations: Vec<HeaderValue>,
    pub pool: Arc<Pool>,
    pub openai_organization: Option<HeaderValue>,
    pub openai_project: Option<HeaderValue>,
    pub timeouts: Timeouts,
    pub max_attempts: u32,
}

/// A request ready to go upstream: headers already checked by the front end, body buffered.
pub struct Outbound<'a> {
    pub endpoint: &'static str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    /// The client asked for an event stream (`"stream": true`).
    pub streaming: bool,
    /// Cancelled when shutdown stops waiting.
    pub abort: CancellationToken,
}

/// The upstream's answer, ready to be sent to the client.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ReplyBody,
    pub attempts: u32,
    pub stats: Arc<RelayStats>,
}

pub enum ReplyBody {
    /// A complete body (error bodies, after redaction).
    Full(Bytes),
    /// Relayed as it arrives.
    Relay(Box<RelayBody>),
}

/// The proxy gives up without an upstream response to relay.
#[derive(Debug)]
pub struct GiveUp {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: &'static str,
    pub attempts: u32,
}

/// The outcome of one attempt that did not produce response headers.
enum AttemptError {
    /// Connection refused, reset, DNS or TLS failure before the request was sent.
    Connect,
    ConnectTimeout,
    HeaderTimeout,
    /// The connection failed after the request was sent: the upstream may have acted on it.
    AfterSend,
    /// The non-streaming request deadline passed.
    Deadline,
    Shutdown,
}

impl AttemptError {
    fn retryable(&self) -> bool {
        matches!(
            self,
            AttemptError::Connect | AttemptError::ConnectTimeout | AttemptError::HeaderTimeout
        )
    }

    fn give_up(&self, attempts: u32) -> GiveUp {
        let (status, code, message) = match self {
            AttemptError::Connect => (
                StatusCode::BAD_GATEWAY,
                "upstream_connect_failed",
                "Could not connect to the upstream.",
            ),
            AttemptError::ConnectTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_connect_timeout",
                "Connecting to the upstream timed out.",
            ),
            AttemptError::HeaderTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_header_timeout",
                "The upstream did not send response headers in time.",
            ),
            AttemptError::AfterSend => (
                StatusCode::BAD_GATEWAY,
                "upstream_connection_failed",
                "The upstream connection failed before a response arrived.",
            ),
            AttemptError::Deadline => (
                StatusCode::GATEWAY_TIMEOUT,
                "request_timeout",
                "The upstream did not answer within the request timeout.",
            ),
            AttemptError::Shutdown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "proxy_shutting_down",
                "The proxy is shutting down.",
            ),
        };
        GiveUp {
            status,
            code,
            message,
            attempts,
        }
    }
}

/// Full-jitter exponential backoff before retry number `retry` (1-based).
fn backoff(retry: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << (retry - 1).min(16))
        .min(BACKOFF_CAP);
    let mut random = [0u8; 4];
    let fraction = match getrandom::fill(&mut random) {
        Ok(()) => f64::from(u32::from_ne_bytes(random)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    };
    ceiling.mul_f64(fraction)
}

impl Upstream {
    fn build_request(&self, out: &Outbound<'_>) -> Option<Request<Full<Bytes>>> {
        let account = self.pool.pick()?;
        let mut headers = request_headers_for_upstream(out.headers);
        headers.insert(
            header::AUTHORIZATION,
            self.authorizations.get(account.index)?.clone(),
        );
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        if let Some(org) = &self.openai_organization {
            headers.insert("openai-organization", org.clone());
        }
        if let Some(project) = &self.openai_project {
            headers.insert("openai-project", project.clone());
        }
        let mut request = Request::new(Full::new(out.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.base.uri(out.endpoint);
        *request.headers_mut() = headers;
        Some(request)
    }

    /// Sends `out` upstream, retrying what is safe to retry, and prepares the reply.
    pub async fn forward(&self, out: Outbound<'_>) -> Result<Reply, GiveUp> {
        let deadline = (!out.streaming).then(|| Instant::now() + self.timeouts.request);
        let mut attempts = 0;
        let response = loop {
            attempts += 1;
            let Some(request) = self.build_request(&out) else {
                return Err(GiveUp {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "no_usable_account",
                    message: "No usable upstream account.",
                    attempts: 0,
                });
            };
            let error = match self.attempt(request, deadline, &out.abort).await {
                Ok(response) => break response,
                Err(error) => error,
            };
            let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
            if !error.retryable() || attempts >= self.max_attempts || out_of_time {
                return Err(error.give_up(attempts));
            }
            let pause = backoff(attempts);
            tracing::debug!(
                attempt = attempts,
                backoff_ms = pause.as_millis() as u64,
                "retrying upstream request"
            );
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = out.abort.cancelled() => return Err(AttemptError::Shutdown.give_up(attempts)),
            }
        };
        if let Some(account) = self.pool.pick() {
            account.record_status(response.status().as_u16());
        }
        self.reply(response, &out, deadline, attempts).await
    }

    async fn attempt(
        &self,
        request: Request<Full<Bytes>>,
        deadline: Option<Instant>,
        abort: &CancellationToken,
    ) -> Result<http::Response<Incoming>, AttemptError> {
        let limit = match deadline {
            Some(deadline) => deadline,
            None => Instant::now() + self.timeouts.header,
        };
        let sent = tokio::select! {
            result = tokio::time::timeout_at(limit, self.client.request(request)) => result,
            _ = abort.cancelled() => return Err(AttemptError::Shutdown),
        };
        match sent {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) if error.is_connect() => {
                if is_connect_timeout(&error) {
                    Err(AttemptError::ConnectTimeout)
                } else {
                    Err(AttemptError::Connect)
                }
            }
            Ok(Err(_)) => Err(AttemptError::AfterSend),
            Err(_) if deadline.is_some() => Err(AttemptError::Deadline),
            Err(_) => Err(AttemptError::HeaderTimeout),
        }
    }

    async fn reply(
        &self,
        response: http::Response<Incoming>,
        out: &Outbound<'_>,
        deadline: Option<Instant>,
        attempts: u32,
    ) -> Result<Reply, GiveUp> {
        let (parts, mut body) = response.into_parts();
        let mut headers = response_headers_for_client(&parts.headers);
        let stats = Arc::new(RelayStats::default());

        if !parts.status.is_success() && !parts.status.is_redirection() {
            let bytes = self
                .read_error_body(&mut body, deadline)
                .await
                .map_err(|e| e.give_up(attempts))?;
            let bytes = match redact(&bytes, self.pool.secrets()) {
                Some(clean) => Bytes::from(clean),
                None => bytes,
            };
            headers.remove(header::CONTENT_LENGTH);
            return Ok(Reply {
                status: parts.status,
                headers,
                body: ReplyBody::Full(bytes),
                attempts,
                stats,
            });
        }

        let is_event_stream = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            });
        let mut relay = RelayParts {
            held: Vec::new(),
            upstream: Some(body),
            early_failure: None,
            sse: None,
            idle: self.timeouts.idle,
            deadline,
            abort: out.abort.clone(),
        };
        if is_event_stream {
            headers.remove(header::CONTENT_LENGTH);
            relay.sse = Some(SseWatch::new());
            let hold_until = Instant::now() + self.timeouts.header;
            self.hold(&mut relay, hold_until).await;
        } else {
            // A plain body goes out with its head: wait for its first bytes (nobody can use a
            // JSON head without its body), so both leave in one write.
            let idle = Instant::now() + self.timeouts.idle;
            let until = deadline.map_or(idle, |d| d.min(idle));
            self.hold(&mut relay, until).await;
        }
        Ok(Reply {
            status: parts.status,
            headers,
            body: ReplyBody::Relay(Box::new(RelayBody::new(relay, Arc::clone(&stats)))),
            attempts,
            stats,
        })
    }

    /// Reads upstream bytes into `relay.held` until the commit point: for an event stream the
    /// first content-bearing or terminal event, for a plain body its first bytes; or the end
    /// of the body, an error, shutdown, or `until`.
    async fn hold(&self, relay: &mut RelayParts, until: Instant) {
        let Some(body) = relay.upstream.as_mut() else {
            return;
        };
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                _ = tokio::time::sleep_until(until) => return,
                _ = relay.abort.cancelled() => return,
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let commit = match relay.sse.as_mut() {
                            Some(watch) => watch.feed(&data),
                            None => !data.is_empty(),
                        };
                        relay.held.push(data);
                        if commit {
                            return;
                        }
                    }
                }
                Some(Err(_)) => {
                    relay.upstream = None;
                    relay.early_failure = Some(RelayFailure::UpstreamError);
                    return;
                }
                None => {
                    relay.upstream = None;
                    return;
                }
            }
        }
    }

    async fn read_error_body(
        &self,
        body: &mut Incoming,
        deadline: Option<Instant>,
    ) -> Result<Bytes, AttemptError> {
        let limit = deadline.unwrap_or_else(|| Instant::now() + self.timeouts.idle);
        let mut collected = Vec::new();
        loop {
            let frame = match tokio::time::timeout_at(limit, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => return Err(AttemptError::Deadline),
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if collected.len() + data.len() > MAX_ERROR_BODY_BYTES {
                            return Err(AttemptError::AfterSend);
                        }
                        collected.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) => return Err(AttemptError::AfterSend),
                None => return Ok(Bytes::from(collected)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_capped_ceiling() {
        for retry in 1..20 {
            let ceiling = BACKOFF_BASE
                .saturating_mul(1 << (retry - 1).min(16))
                .min(BACKOFF_CAP);
            for _ in 0..50 {
                assert!(backoff(retry) <= ceiling);
            }
        }
    }
}
