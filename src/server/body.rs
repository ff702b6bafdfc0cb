//! The response body type of every route, and the one log line per request.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::head_clock::RequestDone;
use super::peer::{Caller, UidLabel};
use crate::upstream::relay::{RelayBody, RelayStats};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a request did, logged once when its response body is finished or dropped.
/// Never a header value or a body.
pub struct RequestLog {
    pub route: &'static str,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub attempts: u32,
    pub bytes_in: usize,
    pub started: Instant,
    pub stats: Option<Arc<RelayStats>>,
    /// Body bytes handed to the client's connection (after any translation or aggregation;
    /// the same for relayed and proxy-made bodies).
    pub bytes_out: u64,
    /// The account that served the request (its index), if one did.
    pub account: Option<usize>,
    /// The name of that account's provider (logs, usage and metrics).
    pub provider: Option<&'static str>,
    /// The local user who owns the connection (`None`: could not be determined).
    pub caller: Option<Caller>,
    /// The user's concurrency slot (`max_concurrent`), held while the response body lives.
    pub slot: Option<super::policy::Slot>,
    /// Where the tokens the upstream reported are charged (the user's `token_budget`).
    pub budget: Option<super::policy::BudgetCharge>,
    /// When the first body bytes went to the client, after `started`.
    pub first_byte: Option<std::time::Duration>,
    /// Where the finished request is counted (`None`: nowhere).
    pub accounting: Option<Arc<super::usage::Accounting>>,
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        if let Some(charge) = &self.budget {
            if let Some(usage) = self.stats.as_ref().and_then(|s| s.usage()) {
                charge.charge(
                    usage.input.saturating_add(usage.output),
                    super::policy::unix_now(),
                );
            }
        }
        if let Some(accounting) = &self.accounting {
            accounting.finished(&super::usage::Finished {
                route: self.route,
                status: self.status,
                caller: self.caller.as_ref(),
                account: self.provider.zip(self.account),
                usage: self.stats.as_ref().and_then(|s| s.usage()),
                duration: self.started.elapsed(),
                first_byte: self.first_byte,
            });
        }
        let failure = self.stats.as_ref().and_then(|s| s.failure());
        let user = self.caller.as_ref().and_then(|c| c.name.as_deref());
        let uid = match &self.caller {
            Some(c) if c.name.is_some() => None,
            other => Some(tracing::field::display(UidLabel(
                other.as_ref().map(|c| c.uid),
            ))),
        };
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    route = self.route,
                    user,
                    uid,
                    status = self.status,
                    upstream_status = self.upstream_status,
                    attempts = self.attempts,
                    provider = self.provider,
                    account = self.account,
                    duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
                    bytes_in = self.bytes_in,
                    bytes_out = self.bytes_out,
                    failure = failure.map(|f| format!("{f:?}")),
                    "request"
                )
            };
        }
        // A response cut short (shutdown, idle upstream, truncation, deadline) is a warning:
        // the client got an error event instead of the rest of its answer.
        if failure.is_some() {
            line!(tracing::Level::WARN);
        } else {
            line!(tracing::Level::INFO);
        }
    }
}

enum Inner {
    Full(Option<Bytes>),
    Relay(Box<RelayBody>),
}

/// A complete body or an upstream relay, carrying the request's log line.
pub struct ProxyBody {
    inner: Inner,
    log: Option<RequestLog>,
    /// Dropped with the body: the connection is ready for its next request head.
    done: Option<RequestDone>,
}

impl ProxyBody {
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody {
            inner: Inner::Full(Some(bytes)),
            log: None,
            done: None,
        }
    }

    pub fn relay(body: Box<RelayBody>) -> Self {
        ProxyBody {
            inner: Inner::Relay(body),
            log: None,
            done: None,
        }
    }

    /// The bytes of a complete body (`None` for a relay).
    pub fn full_bytes(&self) -> Option<&Bytes> {
        match &self.inner {
            Inner::Full(bytes) => bytes.as_ref(),
            Inner::Relay(_) => None,
        }
    }

    /// Attaches the connection's idle mark, set when this body is done with.
    pub fn until_done(mut self, done: RequestDone) -> Self {
        self.done = Some(done);
        self
    }

    /// Attaches the log line, emitted when this body is done with.
    pub fn with_log(mut self, log: RequestLog) -> Self {
        self.log = Some(log);
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.inner {
            Inner::Full(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Inner::Relay(relay) => Pin::new(relay.as_mut()).poll_frame(cx),
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(log)) = (&polled, &mut self.log) {
            if let Some(data) = frame.data_ref() {
                if log.first_byte.is_none() && !data.is_empty() {
                    log.first_byte = Some(log.started.elapsed());
                }
                log.bytes_out += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.as_ref().is_none_or(|b| b.is_empty()),
            Inner::Relay(relay) => relay.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Relay(relay) => relay.size_hint(),
        }
    }
}
