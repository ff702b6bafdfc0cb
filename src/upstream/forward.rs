//! The retry engine around every upstream call: account choice, attempts, the commit point.
//!
//! Phases of an attempt (see `docs/retry.md`, which also says why): connect; awaiting
//! headers; headers received; streaming but not yet committed; committed. Until the commit
//! point the engine may retry or switch accounts:
//! - a connect failure, (for streaming requests) a response-header timeout, or a connection
//!   that resets or closes after the request was written and before any response header: the
//!   network's fault, no penalty for the account (SDKs retry that last case themselves, so a
//!   retry here adds nothing they would not do);
//! - an error status: classified by its error code first, then its status
//!   ([`classify`](super::classify)); the account's state is updated
//!   ([`pool::state`](crate::pool::state)) and the retry decision is the pure
//!   [`retry::decide`](super::retry::decide);
//! - an event stream whose first non-bootstrap event is an in-band `response.failed`/`error`,
//!   or that ends before any content: failed over invisibly.
//!
//! The commit point: for an event stream the status line and the bootstrap events
//! (`response.created`, `response.in_progress`, `codex.*`) are held until the first
//! content-bearing or terminal event, at most for the header timeout; a plain body goes out
//! with its first bytes. From then on every chunk is relayed as it arrives
//! ([`relay`](super::relay)) and nothing is retried.
//!
//! When every account the request may use is cooling down and the first is usable again
//! within [`MAX_COOLDOWN_WAIT`](super::retry::MAX_COOLDOWN_WAIT) (and before the request's
//! deadline), the request waits for it ([`pool_wait`]); otherwise it gets the 429 at once.
//!
//! Retries are bounded by `--max-attempts` and by a global [`RetryBudget`]. When the engine
//! gives up it relays the last upstream answer (redacted) or answers itself: 502/504 for
//! network faults, 429 with `Retry-After` when every account is cooling down, 503 when none
//! is usable.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::classify::{classify, classify_in_band, unix_now};
use super::client::{is_connect_timeout, HttpClient};
use super::connections::Lease;
use super::headers::{request_headers_for_upstream, response_headers_for_client};
use super::profile;
use super::provider::{ProviderConfig, ProviderKind, DEFAULT_ANTHROPIC_VERSION};
use super::redact::{redact, EchoFilter, EchoMatcher, SecretBytes};
use super::refresh::Refresher;
use super::relay::{
    BudgetShare, ByteBudget, RelayBody, RelayFailure, RelayParts, RelayStats, SseWatch,
};
use super::retry::{decide, jitter, pool_wait, Decision, RetryBudget};
use crate::config::Timeouts;
use crate::pool::state::Verdict;
use crate::pool::{Account, Pick, Pool, Target};
use crate::translate::sse::last_event_data;

/// Largest upstream error body read (to classify and redact it) before relaying; beyond: 502.
pub const MAX_ERROR_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes of an event stream held before its commit point (bootstrap events); beyond it
/// the attempt ends with 502 `upstream_response_too_large`.
pub const MAX_HOLD_BYTES: usize = 4 * 1024 * 1024;
/// Most events held before the commit point; beyond it, the same 502.
pub const MAX_HOLD_EVENTS: usize = 1024;
/// Most bytes of a plain (not event-stream) answer held so that it goes to the client whole,
/// with a `content-length`, in one write; a larger answer goes out as it comes.
pub const MAX_PLAIN_HOLD_BYTES: usize = 64 * 1024;
/// The header that tells the client how many upstream attempts its answer took. A constant:
/// a name made from a `&str` at each insert is a new allocation per request.
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-codex-proxy-attempts");
/// The longest wait a proxy-made 429 advertises in `Retry-After` (SDKs sleep as told).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Everything the forwarder needs, shared by all requests.
pub struct Upstream {
    pub client: HttpClient,
    /// The providers in routing order; an account's `provider` indexes this list (and the
    /// pool's slots, built from it).
    pub providers: Vec<ProviderConfig>,
    pub refresher: Arc<Refresher>,
    pub pool: Arc<Pool>,
    pub openai_organization: Option<HeaderValue>,
    pub openai_project: Option<HeaderValue>,
    pub timeouts: Timeouts,
    pub max_attempts: u32,
    pub budget: RetryBudget,
    /// Connection failures per upstream host, for the log and `/health`.
    pub health: super::health::UpstreamHealth,
    /// Bytes buffered from upstream answers count against this (`--max-buffered-bytes`).
    pub buffers: Option<Arc<dyn ByteBudget>>,
    /// The echo matcher for the pool's current secrets.
    pub echo: EchoCache,
    /// Told of every upstream attempt and how it ended (the metrics).
    pub attempts: Option<Arc<dyn AttemptObserver>>,
}

/// Hears of every upstream attempt: the account's provider (its name) and index, and how it
/// ended.
pub trait AttemptObserver: Send + Sync {
    fn attempt(&self, provider: &'static str, index: usize, outcome: &'static str);
}

/// A stable name for how an attempt ended.
pub fn outcome(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Served => "served",
        Verdict::RateLimited { .. } => "rate_limited",
        Verdict::UsageLimit { .. } => "usage_limit",
        Verdict::Unauthorized => "unauthorized",
        Verdict::Forbidden => "forbidden",
        Verdict::ServerError => "server_error",
        Verdict::NetworkFault => "network_fault",
        Verdict::RequestError => "request_error",
        Verdict::RefreshFailed => "refresh_failed",
        Verdict::RefreshUnavailable => "refresh_unavailable",
        Verdict::InvalidEncryptedContent => "invalid_encrypted_content",
    }
}

/// The [`EchoMatcher`] of the pool's current tokens, rebuilt when a token changes.
#[derive(Default)]
pub struct EchoCache {
    current: std::sync::Mutex<Option<(Vec<usize>, Arc<EchoMatcher>)>>,
}

impl EchoCache {
    /// The matcher for `pool`'s tokens as they are now.
    pub fn get(&self, pool: &Pool) -> Arc<EchoMatcher> {
        // The check for an unchanged pool runs on every request: it compares in place and
        // allocates nothing (two vectors per request before).
        let accounts = pool.accounts();
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((built_for, matcher)) = current.as_ref() {
            if built_for.len() == accounts.len()
                && built_for
                    .iter()
                    .zip(accounts.iter())
                    .all(|(id, a)| *id == Arc::as_ptr(&a.token()) as usize)
            {
                return Arc::clone(matcher);
            }
        }
        let tokens: Vec<_> = accounts.iter().map(|a| a.token()).collect();
        let ids: Vec<usize> = tokens.iter().map(|t| Arc::as_ptr(t) as usize).collect();
        let sources: Vec<Arc<dyn SecretBytes>> = tokens
            .into_iter()
            .map(|t| t as Arc<dyn SecretBytes>)
            .collect();
        let matcher = Arc::new(EchoMatcher::new(sources));
        *current = Some((ids, Arc::clone(&matcher)));
        matcher
    }
}

/// A request ready to go upstream: headers already checked by the front end, body buffered.
pub struct Outbound<'a> {
    /// The providers the request may use (its route, by model).
    pub target: Target,
    pub endpoint: &'static str,
    pub headers: &'a HeaderMap,
    /// The body as received (possibly compressed).
    pub body: Bytes,
    /// The decoded body when the client compressed it (for upstream profiles).
    pub decoded: Option<Bytes>,
    /// The client asked for an event stream (`"stream": true`).
    pub streaming: bool,
    /// The conversation this request belongs to, for account affinity.
    pub session: Option<u64>,
    /// Cancelled when shutdown stops waiting.
    pub abort: CancellationToken,
}

/// The upstream's answer, ready to be sent to the client.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ReplyBody,
    pub attempts: u32,
    /// The account that served it.
    pub account: usize,
    /// The name of that account's provider (logs, metrics and usage).
    pub provider: &'static str,
    pub stats: Arc<RelayStats>,
    /// The upstream streamed a request its client asked to get as one JSON document (the
    /// Codex backend only streams): the events are to be aggregated.
    pub aggregate: bool,
}

pub enum ReplyBody {
    /// A complete body (error bodies, after redaction).
    Full(Bytes),
    /// Relayed as it arrives.
    Relay(Box<RelayBody>),
}

/// The proxy gives up without an upstream answer to relay.
#[derive(Debug)]
pub struct GiveUp {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: &'static str,
    pub attempts: u32,
    /// Sent as `Retry-After` (whole seconds, rounded up) when at most [`MAX_RETRY_AFTER`].
    pub retry_after: Option<Duration>,
}

impl GiveUp {
    /// Adds what the client needs besides the body: `Retry-After`, the attempt count, and
    /// `x-should-retry: false` exactly where an immediate retry cannot help — every proxy-made
    /// 429/502/503/504, except a 429 with a `Retry-After` (the client's own wait-and-retry is
    /// what works, as it would be against the upstream).
    pub fn decorate(&self, headers: &mut HeaderMap) {
        let should_retry = HeaderValue::from_static("false");
        match self.retry_after {
            Some(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                headers.remove("x-should-retry");
            }
            None if matches!(self.status.as_u16(), 429 | 502 | 503 | 504) => {
                headers.insert("x-should-retry", should_retry);
            }
            None => {}
        }
        if self.attempts > 0 {
            headers.insert(ATTEMPTS_HEADER, HeaderValue::from(self.attempts));
        }
    }
}

/// Why an upstream error body was not read whole.
enum ErrorBodyError {
    /// Over [`MAX_ERROR_BODY_BYTES`]: answered with 502 `upstream_error_too_large`.
    TooLarge,
    /// The read itself failed (deadline, broken connection).
    Unreadable,
}

/// An attempt that did not produce response headers.
enum AttemptError {
    /// Connection refused, reset, DNS, proxy or TLS failure before the request was sent.
    Connect,
    ConnectTimeout,
    HeaderTimeout,
    /// The connection reset or closed after the request was sent, before any response header.
    AfterSend,
    /// The non-streaming request deadline passed.
    Deadline,
    Shutdown,
}

impl AttemptError {
    /// The verdict for the retry decision, or `None` when retrying is not safe or useful.
    fn verdict(&self) -> Option<Verdict> {
        matches!(
            self,
            AttemptError::Connect
                | AttemptError::ConnectTimeout
                | AttemptError::HeaderTimeout
                | AttemptError::AfterSend
        )
        .then_some(Verdict::NetworkFault)
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
            retry_after: None,
        }
    }
}

/// How an attempt that got response headers ended.
enum Answered {
    /// Relay this, no retry (success, or an error that is the request's own).
    Final(Reply),
    /// A retryable failure; `reply` is what the client gets if the engine gives up here.
    Retryable { verdict: Verdict, reply: Reply },
}

/// The body an attempt sends, per kind of account (computed once per request).
#[derive(Default)]
struct Bodies {
    /// The Codex backend's version: `Some(None)` when the original fits as it is.
    codex: Option<Option<Bytes>>,
    /// After `invalid_encrypted_content`: the body without reasoning ciphertext.
    stripped: Option<Bytes>,
}

impl Upstream {
    /// What the `target` provider's chat server accepts (nothing beyond the common fields
    /// for any other target).
    pub fn chat_server(&self, target: Target) -> super::provider::ChatServer {
        match target {
            Target::Provider(i) => self.providers.get(i).map(|p| p.chat).unwrap_or_default(),
            Target::Implicit => Default::default(),
        }
    }

    /// The wire a request for `target` is sent in (the implicit providers speak Responses).
    pub fn wire_of(&self, target: Target) -> crate::translate::Dialect {
        match target {
            Target::Provider(i) => self
                .providers
                .get(i)
                .map_or(crate::translate::Dialect::Responses, |p| p.kind.wire()),
            Target::Implicit => crate::translate::Dialect::Responses,
        }
    }

    /// True when a request's model picks its provider (a config file defined providers);
    /// otherwise every request goes to the implicit providers.
    pub fn routes_by_model(&self) -> bool {
        !self.providers.iter().all(|p| p.implicit)
    }

    /// What `/v1/models` lists: whether the known model table is served (by an implicit
    /// provider), and every configured provider's exact model names (globs left out).
    pub fn listed_models(&self) -> (bool, Vec<&str>) {
        let all_implicit = self.providers.iter().all(|p| p.implicit);
        let known = all_implicit
            || self
                .providers
                .iter()
                .enumerate()
                .any(|(i, p)| p.implicit && self.pool.has_accounts(i));
        let exact = self
            .providers
            .iter()
            .filter(|p| !p.implicit)
            .flat_map(|p| p.models.iter())
            .map(|g| g.as_str())
            .filter(|g| !g.contains(['*', '?', '[']))
            .collect();
        (known, exact)
    }

    /// The kind of `target`'s provider (`None`: the implicit providers together).
    pub fn kind_for(&self, target: Target) -> Option<ProviderKind> {
        match target {
            Target::Provider(i) => self.providers.get(i).map(|p| p.kind),
            Target::Implicit => None,
        }
    }

    /// True when `target` serves `/v1/responses/compact`.
    pub fn compacts(&self, target: Target) -> bool {
        match target {
            Target::Provider(i) => self.providers.get(i).is_some_and(|p| p.kind.compacts()),
            Target::Implicit => true,
        }
    }

    /// The kind of `account`'s provider.
    pub fn kind_of(&self, account: &Account) -> ProviderKind {
        self.providers
            .get(account.provider)
            .map_or(ProviderKind::Openai, |p| p.kind)
    }

    /// The name of `account`'s provider.
    pub fn provider_name(&self, account: &Account) -> &'static str {
        self.pool
            .providers()
            .get(account.provider)
            .map_or("unknown", |p| p.name)
    }

    /// The request for one attempt on `account`, and whether the upstream will stream a
    /// request its client wanted as JSON.
    fn build_request(
        &self,
        out: &Outbound<'_>,
        account: &Account,
        bodies: &mut Bodies,
    ) -> Option<(Request<Full<Bytes>>, bool)> {
        let provider = self.providers.get(account.provider)?;
        let mut headers = request_headers_for_upstream(out.headers);
        for (name, value) in &provider.headers {
            headers.insert(name.clone(), value.clone());
        }
        // A placeholder that the connection layer swaps for the key (see `inject`). A keyless
        // provider sends no credential header at all (the client's was dropped above).
        let token = account.token();
        if !provider.keyless {
            headers.insert(token.form.header(), token.placeholder.clone()?);
        }
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        let chatgpt = match provider.kind {
            ProviderKind::Chatgpt => true,
            ProviderKind::Openai => false,
            ProviderKind::Anthropic => {
                if !headers.contains_key("anthropic-version") {
                    headers.insert(
                        "anthropic-version",
                        HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
                    );
                }
                false
            }
            ProviderKind::Chat => false,
        };
        let mut body = out.body.clone();
        let mut rewritten = false;
        let mut aggregate = false;
        if let Some(stripped) = &bodies.stripped {
            body = stripped.clone();
            rewritten = true;
        }
        if chatgpt {
            let compact = out.endpoint == "/responses/compact";
            let source = if rewritten {
                body.clone()
            } else {
                out.decoded.clone().unwrap_or_else(|| out.body.clone())
            };
            let fitted = match &bodies.codex {
                Some(done) if !rewritten => done.clone(),
                _ => {
                    let fitted = profile::codex_backend(&source, compact).map(Bytes::from);
                    if !rewritten {
                        bodies.codex = Some(fitted.clone());
                    }
                    fitted
                }
            };
            if let Some(fitted) = fitted {
                body = fitted;
                rewritten = true;
            }
            aggregate = !compact && !out.streaming;
            if let Some(id) = account.account_id() {
                headers.insert("chatgpt-account-id", id);
            }
            if !compact {
                headers.insert(
                    header::ACCEPT,
                    HeaderValue::from_static("text/event-stream"),
                );
            }
        } else if provider.kind == ProviderKind::Openai {
            if let Some(org) = &self.openai_organization {
                headers.insert("openai-organization", org.clone());
            }
            if let Some(project) = &self.openai_project {
                headers.insert("openai-project", project.clone());
            }
        }
        if rewritten {
            // A rewritten body goes upstream uncompressed.
            headers.remove(header::CONTENT_ENCODING);
        }
        let base = &provider.base;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = base.uri(out.endpoint);
        *request.headers_mut() = headers;
        Some((request, aggregate))
    }

    /// Sends `out` upstream: choose an account, attempt, and retry or fail over until the
    /// answer can be committed, the budget or attempts run out, or no account is left.
    pub async fn forward(&self, out: Outbound<'_>) -> Result<Reply, GiveUp> {
        let mut ticket = self.budget.enter();
        let deadline = (!out.streaming).then(|| Instant::now() + self.timeouts.request);
        let mut attempts = 0u32;
        // Accounts this request has given up on (failed over from).
        let mut skip: Vec<usize> = Vec::new();
        // What the client gets if the engine stops after the last attempt.
        let mut fallback: Option<Result<Reply, GiveUp>> = None;
        let mut same_account: Option<usize> = None;
        let mut bodies = Bodies::default();
        // ChatGPT accounts this request already refreshed after a 401 (once each).
        let mut refreshed: Vec<usize> = Vec::new();
        // Time spent waiting for a cooling pool.
        let mut waited = Duration::ZERO;
        loop {
            // A same-account retry only while that account may still take it (another request
            // may have hit a limit on it meanwhile); otherwise choose again.
            let retry_on = same_account
                .take()
                .filter(|a| self.pool.may_retry_on(*a, Instant::now()));
            let account = match retry_on {
                Some(account) => account,
                None => match self
                    .pool
                    .pick_for(out.target, out.session, &skip, Instant::now())
                {
                    Pick::Account(account) => account,
                    Pick::AllCooling { wait } => {
                        let now = Instant::now();
                        let left = deadline.map(|d| d.saturating_duration_since(now));
                        let Some(pause) = pool_wait(wait, waited, left, jitter()) else {
                            return fallback.unwrap_or_else(|| Err(all_cooling(wait, attempts)));
                        };
                        tracing::debug!(
                            wait_ms = pause.as_millis(),
                            "every account cooling: waiting"
                        );
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = out.abort.cancelled() => return Err(AttemptError::Shutdown.give_up(attempts)),
                        }
                        // At least a millisecond, so a zero-length wait cannot spin.
                        waited += pause.max(Duration::from_millis(1));
                        continue;
                    }
                    Pick::NoneUsable => {
                        return fallback.unwrap_or_else(|| Err(none_usable(attempts)))
                    }
                },
            };
            let Some(chosen) = self.pool.account(account) else {
                return Err(none_usable(attempts));
            };
            let kind = self.kind_of(&chosen);
            if kind.refreshes() {
                let seen = chosen.token().generation;
                if self
                    .refresher
                    .ensure_fresh(account, false, seen)
                    .await
                    .is_err()
                {
                    // No usable token on this account (its state says why): try another.
                    skip.push(account);
                    continue;
                }
            }
            let generation = chosen.token().generation;
            let Some((request, aggregate)) = self.build_request(&out, &chosen, &mut bodies) else {
                skip.push(account);
                continue;
            };
            attempts += 1;
            let observe = |outcome: &'static str| {
                if let Some(observer) = &self.attempts {
                    observer.attempt(self.provider_name(&chosen), account, outcome);
                }
                // `/health`'s per-provider last attempt (an abort says nothing about it).
                if outcome != "aborted" {
                    let ok = matches!(outcome, "served" | "request_error");
                    let unix = i64::try_from(unix_now()).unwrap_or(i64::MAX);
                    self.health.attempted(chosen.provider, ok, unix);
                }
            };
            let (verdict, answer) = match self.attempt(request, deadline, &out.abort).await {
                Err(error) => match error.verdict() {
                    Some(verdict) => (verdict, Err(error.give_up(attempts))),
                    None => {
                        observe("aborted");
                        return Err(error.give_up(attempts));
                    }
                },
                Ok(answered) => match self
                    .answer(answered, &out, deadline, attempts, &chosen, aggregate)
                    .await
                {
                    Answered::Final(reply) => {
                        let success = reply.status.is_success() || reply.status.is_redirection();
                        observe(if success { "served" } else { "request_error" });
                        return Ok(reply);
                    }
                    Answered::Retryable { verdict, reply } => (verdict, Ok(reply)),
                },
            };
            observe(outcome(verdict));
            let stop = |answer: Result<Reply, GiveUp>| answer.map(gave_up_on);
            match verdict {
                // A ChatGPT token the upstream no longer takes: refresh once, retry on the
                // same account (a second 401 disables it).
                Verdict::Unauthorized if kind.refreshes() => {
                    if !refreshed.contains(&account) {
                        refreshed.push(account);
                        if self
                            .refresher
                            .ensure_fresh(account, true, generation)
                            .await
                            .is_ok()
                        {
                            same_account = Some(account);
                            fallback = Some(stop(answer));
                            continue;
                        }
                    } else {
                        self.pool.record(
                            account,
                            Verdict::Unauthorized,
                            Some(401),
                            None,
                            None,
                            Instant::now(),
                        );
                    }
                }
                // Reasoning minted elsewhere: once, on the same account, without it. Never
                // another account (the ciphertext is bound to the account).
                Verdict::InvalidEncryptedContent => {
                    let source = out.decoded.as_ref().unwrap_or(&out.body);
                    match bodies
                        .stripped
                        .is_none()
                        .then(|| profile::strip_encrypted_reasoning(source))
                        .flatten()
                    {
                        Some(stripped) => {
                            bodies.stripped = Some(Bytes::from(stripped));
                            same_account = Some(account);
                            fallback = Some(stop(answer));
                            continue;
                        }
                        None => return stop(answer),
                    }
                }
                _ => {}
            }
            // (The account's state was updated where the answer was read; a network fault
            // leaves it alone.)
            let mut tried = skip.clone();
            tried.push(account);
            let other = matches!(
                self.pool
                    .pick_for(out.target, out.session, &tried, Instant::now()),
                Pick::Account(_)
            );
            let decision = decide(verdict, attempts, self.max_attempts, other, jitter());
            tracing::debug!(
                account,
                attempt = attempts,
                ?verdict,
                ?decision,
                "upstream attempt failed"
            );
            match decision {
                Decision::Failover if ticket.may_retry() => {
                    skip.push(account);
                    fallback = Some(stop(answer));
                }
                Decision::RetrySame { after } if ticket.may_retry() => {
                    let out_of_time = deadline.is_some_and(|d| Instant::now() + after >= d);
                    if out_of_time {
                        return stop(answer);
                    }
                    drop(answer);
                    tokio::select! {
                        _ = tokio::time::sleep(after) => {}
                        _ = out.abort.cancelled() => return Err(AttemptError::Shutdown.give_up(attempts)),
                    }
                    same_account = Some(account);
                    fallback = None;
                }
                _ => return stop(answer),
            }
        }
    }

    async fn attempt(
        &self,
        request: Request<Full<Bytes>>,
        deadline: Option<Instant>,
        abort: &CancellationToken,
    ) -> Result<(http::Response<Incoming>, Lease), AttemptError> {
        let limit = match deadline {
            Some(deadline) => deadline,
            None => Instant::now() + self.timeouts.header,
        };
        // A shared handle on the prebuilt URI's bytes, not a new string per attempt.
        let authority = request.uri().authority().cloned();
        let host = authority.as_ref().map_or("", |a| a.as_str());
        let sent = tokio::select! {
            result = tokio::time::timeout_at(limit, self.client.send(request)) => result,
            _ = abort.cancelled() => return Err(AttemptError::Shutdown),
        };
        match sent {
            // The lease, to poison the connection if the answer echoes a secret (see
            // `RelayParts::connection`).
            Ok(Ok(answer)) => {
                self.health.answered(host);
                Ok(answer)
            }
            Ok(Err(error)) if error.is_connect() => {
                self.health
                    .failed(host, "to connect", &error, Instant::now());
                if is_connect_timeout(&error) {
                    Err(AttemptError::ConnectTimeout)
                } else {
                    Err(AttemptError::Connect)
                }
            }
            Ok(Err(error)) => {
                self.health
                    .failed(host, "before response headers", &error, Instant::now());
                Err(AttemptError::AfterSend)
            }
            Err(_) if deadline.is_some() => Err(AttemptError::Deadline),
            Err(_) => Err(AttemptError::HeaderTimeout),
        }
    }

    /// Turns response headers into an answer: reads and classifies error bodies, holds event
    /// streams until their commit point, and records what the account's answer says.
    async fn answer(
        &self,
        (response, connection): (http::Response<Incoming>, Lease),
        out: &Outbound<'_>,
        deadline: Option<Instant>,
        attempts: u32,
        chosen: &Account,
        aggregate: bool,
    ) -> Answered {
        let account = chosen.index;
        let kind = self.kind_of(chosen);
        let provider = self.provider_name(chosen);
        let (parts, mut body) = response.into_parts();
        let mut headers = response_headers_for_client(&parts.headers);
        let echo = self.echo.get(&self.pool);
        if echo.redact_headers(&mut headers) {
            connection.poison();
        }
        let stats = Arc::new(RelayStats::default());
        let status = parts.status;
        let remaining = kind.remaining_quota(&parts.headers);
        let reply = |headers: HeaderMap, body: ReplyBody, stats: Arc<RelayStats>| Reply {
            status,
            headers,
            body,
            attempts,
            account,
            provider,
            stats,
            aggregate,
        };

        if !status.is_success() && !status.is_redirection() {
            let bytes = match self.read_error_body(&mut body, deadline).await {
                Ok(bytes) => bytes,
                Err(ErrorBodyError::TooLarge) => {
                    // Never relayed unread (it may echo a key): the documented 502, with a
                    // body the front end puts in the client's dialect.
                    let mut headers = HeaderMap::new();
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    headers.insert("x-should-retry", HeaderValue::from_static("false"));
                    let body = crate::translate::error_body(
                        kind.wire(),
                        502,
                        "upstream_error_too_large",
                        "The upstream's error body is larger than the proxy reads (4 MiB).",
                    );
                    let reply = Reply {
                        status: StatusCode::BAD_GATEWAY,
                        headers,
                        body: ReplyBody::Full(Bytes::from(body)),
                        attempts,
                        account,
                        provider,
                        stats,
                        aggregate: false,
                    };
                    return Answered::Retryable {
                        verdict: Verdict::ServerError,
                        reply,
                    };
                }
                Err(ErrorBodyError::Unreadable) => {
                    // The body could not be read: count it as the server's failure.
                    headers.remove(header::CONTENT_LENGTH);
                    let reply = reply(headers, ReplyBody::Full(Bytes::new()), stats);
                    return Answered::Retryable {
                        verdict: Verdict::ServerError,
                        reply,
                    };
                }
            };
            let verdict = classify(status, &parts.headers, &bytes, unix_now());
            // A ChatGPT 401 is judged after the refresh it triggers (see `forward`).
            let judged_later = verdict == Verdict::Unauthorized && kind.refreshes();
            if !judged_later {
                self.pool.record(
                    account,
                    verdict,
                    Some(status.as_u16()),
                    remaining,
                    None,
                    Instant::now(),
                );
            }
            let tokens = self.pool.tokens();
            let secrets = tokens.iter().filter_map(|t| t.secret());
            let bytes = match redact(&bytes, secrets) {
                Some(clean) => {
                    connection.poison();
                    Bytes::from(clean)
                }
                None => bytes,
            };
            headers.remove(header::CONTENT_LENGTH);
            let reply = reply(headers, ReplyBody::Full(bytes), stats);
            return match verdict {
                Verdict::RequestError | Verdict::Served => Answered::Final(reply),
                verdict => Answered::Retryable { verdict, reply },
            };
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
            echo: Some(EchoFilter::new(echo)),
            held_budget: self.buffers.clone().map(BudgetShare::new),
            connection,
            json_usage: None,
        };
        let mut verdict = Verdict::Served;
        if is_event_stream {
            headers.remove(header::CONTENT_LENGTH);
            relay.sse = Some(SseWatch::for_wire(kind.wire()));
            let hold_until = Instant::now() + self.timeouts.header;
            if let Err(over) = self.hold(&mut relay, hold_until).await {
                // The upstream said too much before its first content: not an answer.
                self.pool.record(
                    account,
                    Verdict::ServerError,
                    Some(status.as_u16()),
                    remaining,
                    None,
                    Instant::now(),
                );
                let body = Bytes::from(crate::translate::error_body(
                    kind.wire(),
                    over.status().as_u16(),
                    over.code(),
                    over.message(),
                ));
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                let mut reply = reply(headers, ReplyBody::Full(body), stats);
                reply.status = over.status();
                reply.aggregate = false;
                return Answered::Final(reply);
            }
            verdict = pre_commit_verdict(&relay, kind);
        } else {
            // A plain body goes out with its head: wait for its first bytes (nobody can use a
            // JSON head without its body), and for the rest while it follows at once, so a
            // small answer leaves whole, in one write, with its length.
            let idle = Instant::now() + self.timeouts.idle;
            let until = deadline.map_or(idle, |d| d.min(idle));
            // Bounded by MAX_PLAIN_HOLD_BYTES and the buffer budget: it cannot overflow.
            let _ = self.hold(&mut relay, until).await;
            // A successful JSON answer reports its usage at its top level.
            let json = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
            if status.is_success() && json {
                relay.json_usage = Some(Box::default());
            }
        }
        let session = (verdict == Verdict::Served)
            .then_some(out.session)
            .flatten();
        self.pool.record(
            account,
            verdict,
            Some(status.as_u16()),
            remaining,
            session,
            Instant::now(),
        );
        let reply = reply(
            headers,
            ReplyBody::Relay(Box::new(RelayBody::new(relay, Arc::clone(&stats)))),
            stats,
        );
        match verdict {
            Verdict::Served => Answered::Final(reply),
            verdict => Answered::Retryable { verdict, reply },
        }
    }

    /// Reads upstream bytes into `relay.held` until the commit point: for an event stream the
    /// first content-bearing or terminal event; for a plain body its end, unless it is over
    /// [`MAX_PLAIN_HOLD_BYTES`] or the buffer budget is spent; or an error, shutdown, or
    /// `until`. A plain body's `until` moves with its bytes (the idle timeout counts from the
    /// last of them); when the idle timeout ends the hold, the relay ends with that error
    /// after what was held, as it would have while relaying. (No shorter timer: arming one
    /// per request woke the runtime's parked timer thread every time.)
    ///
    /// The held bytes are bounded by [`MAX_HOLD_BYTES`] and [`MAX_HOLD_EVENTS`] and counted
    /// against the buffer budget; past either, the upstream is dropped and the caller answers
    /// with the returned error (nothing has been sent to the client yet).
    async fn hold(&self, relay: &mut RelayParts, until: Instant) -> Result<(), Overflow> {
        let Some(body) = relay.upstream.as_mut() else {
            return Ok(());
        };
        let mut bytes = 0usize;
        let mut until = until;
        loop {
            let frame = tokio::select! {
                // A frame that is ready is taken without arming the timer first.
                biased;
                frame = body.frame() => Some(frame),
                _ = tokio::time::sleep_until(until) => None,
                _ = relay.abort.cancelled() => return Ok(()),
            };
            let Some(frame) = frame else {
                let plain_idle = relay.sse.is_none()
                    && bytes > 0
                    && relay.deadline.is_none_or(|d| Instant::now() < d);
                if plain_idle {
                    relay.upstream = None;
                    relay.early_failure = Some(RelayFailure::Idle);
                }
                return Ok(());
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let streaming = relay.sse.is_some();
                        bytes += data.len();
                        let budget_ok = relay
                            .held_budget
                            .as_mut()
                            .is_none_or(|share| share.grow(data.len()));
                        let commit = match relay.sse.as_mut() {
                            Some(watch) => watch.feed(&data),
                            // A plain body past its cap, or the budget, goes out as it comes.
                            None => bytes > MAX_PLAIN_HOLD_BYTES || !budget_ok,
                        };
                        if !streaming {
                            let idle = Instant::now() + self.timeouts.idle;
                            until = relay.deadline.map_or(idle, |d| d.min(idle));
                        }
                        let events = relay.sse.as_ref().map_or(0, SseWatch::events);
                        let over = if streaming && !budget_ok {
                            Some(Overflow::Budget)
                        } else if streaming
                            && !commit
                            && (bytes > MAX_HOLD_BYTES || events > MAX_HOLD_EVENTS)
                        {
                            Some(Overflow::Hold)
                        } else {
                            None
                        };
                        if let Some(over) = over {
                            relay.upstream = None;
                            relay.held.clear();
                            relay.held_budget = None;
                            return Err(over);
                        }
                        relay.held.push(data);
                        if commit {
                            return Ok(());
                        }
                    }
                }
                Some(Err(_)) => {
                    relay.upstream = None;
                    relay.early_failure = Some(RelayFailure::UpstreamError);
                    return Ok(());
                }
                None => {
                    relay.upstream = None;
                    return Ok(());
                }
            }
        }
    }

    async fn read_error_body(
        &self,
        body: &mut Incoming,
        deadline: Option<Instant>,
    ) -> Result<Bytes, ErrorBodyError> {
        let limit = deadline.unwrap_or_else(|| Instant::now() + self.timeouts.idle);
        let mut collected = Vec::new();
        loop {
            let frame = match tokio::time::timeout_at(limit, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => return Err(ErrorBodyError::Unreadable),
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if collected.len() + data.len() > MAX_ERROR_BODY_BYTES {
                            return Err(ErrorBodyError::TooLarge);
                        }
                        collected.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) => return Err(ErrorBodyError::Unreadable),
                None => return Ok(Bytes::from(collected)),
            }
        }
    }
}

/// Why the bytes before the commit point could not be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    /// Over [`MAX_HOLD_BYTES`] or [`MAX_HOLD_EVENTS`].
    Hold,
    /// `--max-buffered-bytes` is in use by other requests.
    Budget,
}

impl Overflow {
    fn status(self) -> StatusCode {
        match self {
            Overflow::Hold => StatusCode::BAD_GATEWAY,
            Overflow::Budget => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Overflow::Hold => "upstream_response_too_large",
            Overflow::Budget => "proxy_overloaded",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Overflow::Hold => {
                "The upstream sent more before its first output than the proxy holds."
            }
            Overflow::Budget => {
                "Too many response bytes are buffered right now; try again shortly."
            }
        }
    }
}

/// What a held event stream says before commit: an in-band failure as its first real event,
/// or an end (or cut) before any content, is retryable; anything else is served.
fn pre_commit_verdict(relay: &RelayParts, kind: ProviderKind) -> Verdict {
    let Some(watch) = relay.sse.as_ref() else {
        return Verdict::Served;
    };
    if watch.content_seen() {
        return Verdict::Served;
    }
    if watch.terminal_seen() {
        let held: Vec<u8> = relay.held.iter().flat_map(|b| b.iter().copied()).collect();
        let event: Option<serde_json::Value> =
            last_event_data(&held).and_then(|d| serde_json::from_slice(&d).ok());
        let failed = event.as_ref().is_some_and(|e| kind.is_failure_chunk(e));
        return match (failed, event.as_ref()) {
            (true, Some(event)) => classify_in_band(event, unix_now()),
            // A completed or incomplete response with no output is still an answer.
            _ => Verdict::Served,
        };
    }
    let ended = relay.upstream.is_none();
    if ended || relay.early_failure.is_some() {
        // The stream ended or broke before anything was said: the network's fault.
        return Verdict::NetworkFault;
    }
    // Only bootstrap events until the hold timer: commit and keep streaming.
    Verdict::Served
}

/// Marks an upstream error the engine gave up on: SDKs should not retry it again — except a
/// 429 that carries `Retry-After`, which leaves the client free to wait and retry.
fn gave_up_on(mut reply: Reply) -> Reply {
    let waitable = reply.status == StatusCode::TOO_MANY_REQUESTS
        && (reply.headers.contains_key(header::RETRY_AFTER)
            || reply.headers.contains_key("retry-after-ms"));
    if (reply.status.is_client_error() || reply.status.is_server_error()) && !waitable {
        reply
            .headers
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    reply
}

fn all_cooling(wait: Duration, attempts: u32) -> GiveUp {
    GiveUp {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: "pool_exhausted",
        message: "Every upstream account is cooling down after a rate or usage limit; retry later.",
        attempts,
        retry_after: (wait <= MAX_RETRY_AFTER).then_some(wait),
    }
}

fn none_usable(attempts: u32) -> GiveUp {
    GiveUp {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "pool_unavailable",
        message: "No upstream account is usable (all are disabled).",
        attempts,
        retry_after: None,
    }
}
