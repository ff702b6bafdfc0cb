//! The body that carries an upstream response to the client, chunk by chunk.
//!
//! Every upstream data frame is handed to hyper as soon as it arrives (hyper writes and
//! flushes each frame; nothing here batches). Bytes read before the commit point are
//! replayed first. The body ends with an error the client can see when:
//! - the upstream stays silent longer than the idle timeout,
//! - the upstream connection fails or is cut,
//! - an event stream ends without a terminal event (`response.completed` and kin),
//! - the request deadline passes (non-streaming requests), or
//! - shutdown gives up waiting for it.
//!
//! Every byte passes an [`EchoFilter`] first (when one is given), so an echo of a secret is
//! masked on every route before any stage or client sees it.
//!
//! For an event stream that error is an SSE `error` event followed by an aborted transfer
//! (no final chunk), so no client mistakes it for a clean end. Dropping this body (the client
//! went away) drops the upstream response at once, which closes or resets that upstream
//! stream.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::connections::Lease;

use super::redact::EchoFilter;
use crate::translate::sse::{EventClass, SseScanner};
use crate::translate::usage::{Reported, TopLevelUsage};
use crate::translate::{write_error_event, Dialect};

/// Why a relayed body ended early: the translate layer's [`Interruption`], so the translators
/// render the same kinds and codes the relay reports.
pub use crate::translate::error::Interruption as RelayFailure;

impl RelayFailure {
    /// The SSE `error` event for this failure in `wire`'s shape (a relay without a stage
    /// passes its provider's wire through to a client of the same dialect).
    pub fn sse_event(self, mid_event: bool, wire: Dialect) -> Bytes {
        // A blank line first ends any partial event the upstream left behind, so the error
        // event itself parses on its own.
        let mut out = Vec::with_capacity(256);
        if mid_event {
            out.extend_from_slice(b"\n\n");
        }
        match wire {
            // Anthropic's error has no `code`: the proxy's goes in front of the message.
            Dialect::Anthropic => write_error_event(
                &mut out,
                wire,
                self.code(),
                &format!("{}: {}", self.code(), self.message()),
            ),
            Dialect::Responses | Dialect::Chat => {
                write_error_event(&mut out, wire, self.code(), self.message())
            }
        }
        Bytes::from(out)
    }
}

impl std::fmt::Display for RelayFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for RelayFailure {}

/// Turns relayed upstream bytes into what the client gets: a dialect translator on the
/// translated routes. Without a stage the bytes pass through unchanged.
pub trait RelayStage: Send {
    /// Upstream bytes in (any split), client bytes appended to `out`.
    fn chunk(&mut self, upstream: &[u8], out: &mut Vec<u8>);
    /// The upstream ended: cleanly after its terminal event (`None`), or with `failure`. The
    /// stage appends its dialect's closing or error event.
    fn end(&mut self, failure: Option<RelayFailure>, out: &mut Vec<u8>);
    /// Bytes the stage holds between chunks (a partial event), counted against the buffer
    /// budget while it holds them.
    fn buffered(&self) -> usize {
        0
    }
}

/// What the request log needs from a relay.
#[derive(Default, Debug)]
pub struct RelayStats {
    failure: std::sync::OnceLock<RelayFailure>,
    /// The token usage the upstream reported (its terminal event, or a JSON body's `usage`).
    usage: std::sync::OnceLock<Reported>,
}

impl RelayStats {
    /// Why the body ended early, if it did.
    pub fn failure(&self) -> Option<RelayFailure> {
        self.failure.get().copied()
    }

    /// The usage the upstream reported, if it reported any (a stream cut before its terminal
    /// event reported none).
    pub fn usage(&self) -> Option<&Reported> {
        self.usage.get()
    }

    fn report(&self, usage: Option<Reported>) {
        if let Some(usage) = usage {
            let _ = self.usage.set(usage);
        }
    }
}

/// How long a failing body waits, after its last bytes, before aborting the transfer.
///
/// hyper drops whatever is still in its write buffer when a body fails, so the failure is
/// announced with `Pending` first: hyper flushes the error event, then the timer ends the body
/// with an error (no final chunk). Only a client that has stopped reading loses the event.
pub const FLUSH_GRACE: Duration = Duration::from_millis(100);

enum State {
    Streaming,
    /// The last bytes (an error event, on event streams) are out; after the flush grace the
    /// body ends with this error.
    Failing(RelayFailure, Option<Pin<Box<Sleep>>>),
    Done,
}

/// Terminal-event tracking for an event stream.
pub struct SseWatch {
    scanner: SseScanner,
    terminal_seen: bool,
    content_seen: bool,
    events: usize,
}

impl SseWatch {
    /// A watch over a Responses stream.
    pub fn new() -> Self {
        Self::for_wire(Dialect::Responses)
    }

    /// A watch over a stream of `wire` (its commit point and terminal events).
    pub fn for_wire(wire: Dialect) -> Self {
        SseWatch {
            scanner: SseScanner::for_wire(wire),
            terminal_seen: false,
            content_seen: false,
            events: 0,
        }
    }

    /// Scans `chunk`; returns true when it completed a content-bearing or terminal event.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        let mut commit = false;
        let terminal = &mut self.terminal_seen;
        let content = &mut self.content_seen;
        let events = &mut self.events;
        self.scanner.feed(chunk, |class| {
            *events += 1;
            match class {
                EventClass::Bootstrap => {}
                EventClass::Content => {
                    commit = true;
                    *content = true;
                    *terminal = false;
                }
                EventClass::Terminal => {
                    commit = true;
                    *terminal = true;
                }
            }
        });
        commit
    }

    /// The usage a terminal event reported since the last call, if any.
    pub fn take_usage(&mut self) -> Option<Reported> {
        self.scanner.take_usage()
    }

    /// Events completed so far.
    pub fn events(&self) -> usize {
        self.events
    }

    /// True once a content-bearing event has been seen.
    pub fn content_seen(&self) -> bool {
        self.content_seen
    }

    /// True when the stream's last complete event was terminal.
    pub fn terminal_seen(&self) -> bool {
        self.terminal_seen
    }
}

impl Default for SseWatch {
    fn default() -> Self {
        Self::new()
    }
}

/// What a relay starts from.
pub struct RelayParts {
    /// Bytes already read from the upstream (before the commit point), replayed first.
    pub held: Vec<Bytes>,
    /// The rest of the upstream body; `None` when it already ended.
    pub upstream: Option<Incoming>,
    /// Why the upstream already failed before commit, if it did.
    pub early_failure: Option<RelayFailure>,
    /// Present for event streams.
    pub sse: Option<SseWatch>,
    pub idle: Duration,
    /// Deadline of a non-streaming request.
    pub deadline: Option<Instant>,
    /// Cancelled when shutdown stops waiting for in-flight requests.
    pub abort: CancellationToken,
    /// Masks echoes of the pool's secrets in every byte relayed.
    pub echo: Option<EchoFilter>,
    /// The budget share `held` is counted against, returned when the relay is dropped.
    pub held_budget: Option<BudgetShare>,
    /// The upstream connection, poisoned (never handed out again) once an echo was masked in
    /// its bytes: its read buffers keep what they read until they are freed (and wiped) with it.
    pub connection: Lease,
    /// Follows a plain JSON answer for its top-level `usage` (successful non-streamed
    /// answers; `None` otherwise).
    pub json_usage: Option<Box<TopLevelUsage>>,
}

/// A shared cap on bytes buffered at once (`--max-buffered-bytes`), seen from the upstream
/// side so that bytes it buffers count against the same budget as request bodies.
pub trait ByteBudget: Send + Sync {
    /// Takes `n` bytes from the budget; false (and nothing taken) when it would overflow.
    fn try_take(&self, n: usize) -> bool;
    /// Returns `n` bytes taken earlier.
    fn give_back(&self, n: usize);
}

/// Bytes taken from a [`ByteBudget`], given back on drop.
pub struct BudgetShare {
    budget: Arc<dyn ByteBudget>,
    bytes: usize,
}

impl BudgetShare {
    pub fn new(budget: Arc<dyn ByteBudget>) -> Self {
        BudgetShare { budget, bytes: 0 }
    }

    /// Takes `more` bytes; false (and nothing taken) when the budget is spent.
    pub fn grow(&mut self, more: usize) -> bool {
        let ok = self.budget.try_take(more);
        if ok {
            self.bytes += more;
        }
        ok
    }

    /// Bytes held by this share.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows or shrinks the share to `target` bytes; false (share unchanged) when growing
    /// does not fit.
    pub fn set(&mut self, target: usize) -> bool {
        if target > self.bytes {
            return self.grow(target - self.bytes);
        }
        self.budget.give_back(self.bytes - target);
        self.bytes = target;
        true
    }
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// See the module docs.
pub struct RelayBody {
    held: VecDeque<Bytes>,
    upstream: Option<Incoming>,
    pending_failure: Option<RelayFailure>,
    sse: Option<SseWatch>,
    idle: Duration,
    /// When the last upstream bytes arrived. The timer is re-armed from it only when it
    /// fires, instead of being reset on every chunk (that showed up in profiles).
    last_data: Instant,
    /// One timer for both the idle timeout and the deadline: it fires at the earlier of the
    /// two and is re-armed for the other (one timer entry and allocation per request).
    timer: Pin<Box<Sleep>>,
    /// Deadline of a non-streaming request.
    deadline: Option<Instant>,
    abort: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Chunks relayed since shutdown and the deadline were last checked.
    since_check: u32,
    state: State,
    stats: Arc<RelayStats>,
    stage: Option<Box<dyn RelayStage>>,
    echo: Option<EchoFilter>,
    /// The budget share of the held bytes until they are relayed, then of what the stage
    /// buffers.
    budget: Option<BudgetShare>,
    connection: Lease,
    json_usage: Option<Box<TopLevelUsage>>,
}

/// While data flows, shutdown and the deadline are checked every this many chunks (and always
/// while waiting for the upstream).
const CHECK_EVERY: u32 = 64;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl RelayBody {
    pub fn new(mut parts: RelayParts, stats: Arc<RelayStats>) -> Self {
        // A terminal event may already be among the held bytes.
        if let Some(watch) = &mut parts.sse {
            stats.report(watch.take_usage());
        }
        let now = Instant::now();
        let idle_due = now + parts.idle;
        RelayBody {
            held: parts.held.into(),
            upstream: parts.upstream,
            pending_failure: parts.early_failure,
            sse: parts.sse,
            idle: parts.idle,
            last_data: now,
            timer: Box::pin(tokio::time::sleep_until(
                parts.deadline.map_or(idle_due, |d| d.min(idle_due)),
            )),
            since_check: 0,
            deadline: parts.deadline,
            abort: Box::pin(parts.abort.cancelled_owned()),
            state: State::Streaming,
            stats,
            stage: None,
            echo: parts.echo,
            budget: parts.held_budget,
            connection: parts.connection,
            json_usage: parts.json_usage,
        }
    }

    /// The echo filter's matcher, for redacting what is built from this body's bytes.
    pub fn echo_matcher(&self) -> Option<Arc<super::redact::EchoMatcher>> {
        self.echo.as_ref().map(EchoFilter::matcher)
    }

    /// The same relay with its bytes passed through `stage`.
    pub fn with_stage(mut self, stage: Box<dyn RelayStage>) -> Self {
        self.stage = Some(stage);
        self
    }

    /// Upstream bytes as the client gets them: through the stage, if any (`None`: nothing to
    /// send yet).
    fn staged(&mut self, data: Bytes) -> Option<Bytes> {
        let data = match &mut self.echo {
            Some(echo) => {
                let out = echo.push(data);
                if echo.take_found() {
                    self.connection.poison();
                }
                out
            }
            None => data,
        };
        match &mut self.stage {
            None => (!data.is_empty()).then_some(data),
            Some(stage) => {
                let mut out = Vec::new();
                stage.chunk(&data, &mut out);
                (!out.is_empty()).then(|| Bytes::from(out))
            }
        }
    }

    /// Brings the budget share to what is buffered now (held bytes not yet relayed, plus the
    /// stage's partial event); false when the budget cannot take it.
    fn account(&mut self) -> bool {
        let Some(share) = &mut self.budget else {
            return true;
        };
        let held: usize = self.held.iter().map(Bytes::len).sum();
        let staged = self.stage.as_ref().map_or(0, |s| s.buffered());
        share.set(held + staged)
    }

    fn emit(&self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    /// Starts ending the body with `failure`: on event streams an error event goes out first;
    /// then, after the flush grace, the body fails (see [`FLUSH_GRACE`]).
    fn fail(
        &mut self,
        failure: RelayFailure,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.upstream = None;
        let _ = self.stats.failure.set(failure);
        self.state = State::Failing(failure, None);
        let mut out = self.echo_tail();
        if let Some(stage) = &mut self.stage {
            stage.end(Some(failure), &mut out);
        } else if let Some(watch) = &self.sse {
            out.extend_from_slice(
                &failure.sse_event(watch.scanner.mid_event(), watch.scanner.wire()),
            );
        }
        if out.is_empty() {
            self.poll_failing(cx)
        } else {
            self.emit(Bytes::from(out))
        }
    }

    /// The bytes the echo filter still held back, through the stage (the body is ending).
    fn echo_tail(&mut self) -> Vec<u8> {
        let tail = match &mut self.echo {
            Some(echo) if echo.held() > 0 => {
                let tail = echo.finish();
                if echo.take_found() {
                    self.connection.poison();
                }
                tail
            }
            _ => return Vec::new(),
        };
        match &mut self.stage {
            Some(stage) => {
                let mut out = Vec::new();
                stage.chunk(&tail, &mut out);
                out
            }
            None => tail.to_vec(),
        }
    }

    fn poll_failing(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let State::Failing(failure, timer) = &mut self.state else {
            return Poll::Ready(None);
        };
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(FLUSH_GRACE)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let failure = *failure;
        self.state = State::Done;
        Poll::Ready(Some(Err(Box::new(failure))))
    }

    /// Shutdown's abort or the request deadline, if either has come (registers for the
    /// abort; the deadline wakes through [`Self::poll_timer`]).
    fn poll_stops(&mut self, cx: &mut Context<'_>) -> Option<RelayFailure> {
        if self.abort.as_mut().poll(cx).is_ready() {
            return Some(RelayFailure::Shutdown);
        }
        self.deadline
            .is_some_and(|d| Instant::now() >= d)
            .then_some(RelayFailure::Deadline)
    }

    /// The deadline, or the upstream silent for the idle timeout, once either has come
    /// (registers the timer for the earlier of the two).
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Option<RelayFailure> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                return Some(RelayFailure::Deadline);
            }
            let due = self.last_data + self.idle;
            if now >= due {
                return Some(RelayFailure::Idle);
            }
            let next = self.deadline.map_or(due, |d| d.min(due));
            self.timer.as_mut().reset(next);
        }
    }

    /// Reports a plain answer's usage once all of its bytes have been seen. A body of known
    /// length may not be polled again after its last bytes (hyper stops at the length), so
    /// [`Self::finish`] alone would miss it.
    fn report_if_complete(&mut self) {
        let complete = self.held.is_empty()
            && self.pending_failure.is_none()
            && self.upstream.as_ref().is_none_or(Body::is_end_stream);
        if complete {
            if let Some(json) = self.json_usage.take() {
                self.stats.report(json.finish());
            }
        }
    }

    /// The upstream body has ended: cleanly only if an event stream saw its terminal event.
    fn finish(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(failure) = self.pending_failure.take() {
            return self.fail(failure, cx);
        }
        match &self.sse {
            Some(watch) if !watch.terminal_seen() => self.fail(RelayFailure::Truncated, cx),
            _ => {
                self.state = State::Done;
                if let Some(json) = self.json_usage.take() {
                    self.stats.report(json.finish());
                }
                let mut out = self.echo_tail();
                if let Some(stage) = &mut self.stage {
                    stage.end(None, &mut out);
                }
                if out.is_empty() {
                    Poll::Ready(None)
                } else {
                    self.emit(Bytes::from(out))
                }
            }
        }
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Failing(..) => return this.poll_failing(cx),
                State::Streaming => {}
            }
            if let Some(chunk) = this.held.pop_front() {
                if let Some(json) = &mut this.json_usage {
                    json.feed(&chunk);
                }
                this.report_if_complete();
                let out = this.staged(chunk);
                if !this.account() {
                    return this.fail(RelayFailure::Overloaded, cx);
                }
                match out {
                    Some(out) => return this.emit(out),
                    None => continue,
                }
            }
            if this.since_check >= CHECK_EVERY {
                this.since_check = 0;
                if let Some(stop) = this.poll_stops(cx) {
                    return this.fail(stop, cx);
                }
            }
            let Some(upstream) = &mut this.upstream else {
                return this.finish(cx);
            };
            match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // upstream trailers are not relayed
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if let Some(watch) = &mut this.sse {
                        watch.feed(&data);
                        this.stats.report(watch.take_usage());
                    } else if let Some(json) = &mut this.json_usage {
                        json.feed(&data);
                        this.report_if_complete();
                    }
                    this.last_data = Instant::now();
                    this.since_check += 1;
                    let out = this.staged(data);
                    if this.stage.is_some() && !this.account() {
                        return this.fail(RelayFailure::Overloaded, cx);
                    }
                    match out {
                        Some(out) => return this.emit(out),
                        None => continue,
                    }
                }
                Poll::Ready(Some(Err(_))) => return this.fail(RelayFailure::UpstreamError, cx),
                Poll::Ready(None) => {
                    this.upstream = None;
                    return this.finish(cx);
                }
                Poll::Pending => {
                    if let Some(stop) = this.poll_stops(cx) {
                        return this.fail(stop, cx);
                    }
                    if let Some(stop) = this.poll_timer(cx) {
                        return this.fail(stop, cx);
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        // A plain body keeps the upstream's exact length (held bytes plus what is left), so
        // the client gets a content-length; event streams and failing bodies have none.
        if self.sse.is_some()
            || self.stage.is_some()
            || self.pending_failure.is_some()
            || !matches!(self.state, State::Streaming)
        {
            return SizeHint::default();
        }
        let held: u64 = self.held.iter().map(|b| b.len() as u64).sum();
        let rest = match &self.upstream {
            Some(upstream) => upstream.size_hint().exact(),
            None => Some(0),
        };
        match rest {
            Some(rest) => SizeHint::with_exact(held + rest),
            None => SizeHint::default(),
        }
    }
}
