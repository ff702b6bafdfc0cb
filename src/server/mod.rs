//! The front end: accept loop, connection limits, per-connection HTTP/1.1, and shutdown.
//!
//! [`run`] takes an already-bound listener and a shutdown future, so tests bind
//! `127.0.0.1:0` in-process. Shutdown (the future, or `/shutdown`) stops accepting, asks every
//! connection to finish its in-flight request and close, waits up to the drain timeout, then
//! ends whatever is still open with an error its client can see, and returns.

pub mod anthropic;
pub mod body;
pub mod chat;
pub mod encoding;
pub mod errors;
pub mod handler;
pub mod head_clock;
pub mod hub;
pub mod info;
pub mod limits;
pub mod peer;
pub mod policy;
pub mod routes;
pub mod state_dir;
pub mod token;
pub mod translated;
pub mod usage;
pub mod users;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Limits, Timeouts};
use crate::upstream::Upstream;
use head_clock::HeadClock;
use limits::BufferBudget;
use routes::Gate;
use token::ClientToken;

/// Time allowed to send a whole request head, and to start the next one on a kept-alive
/// connection (slowloris and idle-connection bound).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (target and headers, counted as sent) accepted; beyond it: 431.
/// hyper's read buffer is capped at the same size, so a much larger head is closed unread.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// After the drain timeout, how long streams get to deliver their error events.
const ABORT_GRACE: Duration = Duration::from_secs(2);
/// Refused connections are logged at most once per interval, as a count: any local user
/// can open connections at will, and one line each would let them flood the log.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counts refused connections and decides when to log them: the first refusal after a
/// quiet interval at once, then one line per [`REFUSAL_LOG_INTERVAL`] with the count.
#[derive(Debug, Default)]
struct RefusalLog {
    /// Refusals not yet logged.
    pending: u64,
    /// When the current interval ends (`None`: quiet, the next refusal is logged at once).
    window_end: Option<tokio::time::Instant>,
}

// === impl RefusalLog ===

impl RefusalLog {
    fn refused(&mut self, now: tokio::time::Instant) {
        self.pending += 1;
        if self.window_end.is_none() {
            self.flush(now);
        }
    }

    /// Logs what is pending (if anything) and starts a new interval; with nothing pending
    /// the interval ends quietly.
    fn flush(&mut self, now: tokio::time::Instant) {
        if self.pending == 0 {
            self.window_end = None;
            return;
        }
        tracing::warn!(
            refused = self.pending,
            interval_s = REFUSAL_LOG_INTERVAL.as_secs(),
            "connection limit reached: connections refused"
        );
        self.pending = 0;
        self.window_end = Some(now + REFUSAL_LOG_INTERVAL);
    }
}

/// Everything a request handler needs, shared by all connections.
pub struct State {
    pub gate: Gate,
    /// Known models, aliases and overrides (`--models`).
    pub models: crate::translate::models::ModelTable,
    pub token: Option<ClientToken>,
    pub upstream: Upstream,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub budget: Arc<BufferBudget>,
    /// Cancelled by `/shutdown`.
    pub shutdown_requested: CancellationToken,
    /// Cancelled when the drain timeout has passed: in-flight requests end with an error.
    pub abort: CancellationToken,
    /// Open client connections (a gauge for tests and logs).
    pub open_connections: AtomicUsize,
    /// Keys sessions for account affinity (random per launch, so session ids are not kept).
    pub session_hasher: std::collections::hash_map::RandomState,
    /// Who may use the port (`--allow-user`).
    pub access: users::Access,
    /// Per-user models and concurrency (`--config` `[users]`).
    pub policies: policy::Policies,
    /// Callers' user names, resolved once per uid.
    pub names: peer::NameCache,
    /// Usage per local user, and the metrics (`/usage`, `/metrics`).
    pub accounting: Arc<usage::Accounting>,
    /// Who sees every user's row of `/usage` besides root: the info owner's uid.
    pub usage_admin: u32,
    /// Where usage and budgets are kept across restarts (`--state-dir`).
    pub state_dir: Option<Arc<state_dir::StateDir>>,
    /// Whether connections are attributed and requests counted (off only for scripts/bench,
    /// to measure what the lookup and the accounting cost).
    pub accounting_on: bool,
}

impl State {
    /// Open client connections right now.
    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }
}

/// Serves `listener` until `shutdown` resolves or `/shutdown` is called, then drains.
pub async fn run(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let connections = Arc::new(Semaphore::new(state.limits.max_connections));
    let tracker = TaskTracker::new();
    let draining = CancellationToken::new();
    let maintenance =
        tokio::spawn(Arc::clone(&state.upstream.refresher).maintain(draining.clone()));
    let saver_stop = CancellationToken::new();
    let saver = state.state_dir.as_ref().map(|dir| {
        tokio::spawn(state_dir::run_saver(
            Arc::clone(dir),
            Arc::clone(&state),
            saver_stop.clone(),
        ))
    });
    let mut refusals = RefusalLog::default();
    tokio::pin!(shutdown);
    loop {
        let window_end = refusals.window_end;
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            _ = state.shutdown_requested.cancelled() => break,
            _ = tokio::time::sleep_until(window_end.unwrap_or_else(tokio::time::Instant::now)), if window_end.is_some() => {
                refusals.flush(tokio::time::Instant::now());
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match Arc::clone(&connections).try_acquire_owned() {
            Ok(permit) => {
                tracker.spawn(serve_connection(
                    Arc::clone(&state),
                    stream,
                    permit,
                    draining.clone(),
                ));
            }
            Err(_) => {
                refusals.refused(tokio::time::Instant::now());
                tracker.spawn(refuse_connection(stream));
            }
        }
    }
    drop(listener);
    // Refusals counted since the last line are reported before the shutdown lines.
    refusals.flush(tokio::time::Instant::now());
    tracing::info!(
        in_flight = state.open_connections(),
        "shutting down: draining connections"
    );
    draining.cancel();
    maintenance.abort();
    tracker.close();
    if tokio::time::timeout(state.timeouts.drain, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = state.open_connections(),
            "drain timeout: ending in-flight requests with an error"
        );
        state.abort.cancel();
        if tokio::time::timeout(ABORT_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = state.open_connections(),
                "connections still open after the abort grace; closing"
            );
        }
    }
    // The last state, after the drain: what the requests that just finished spent counts.
    if let (Some(dir), Some(saver)) = (&state.state_dir, saver) {
        saver_stop.cancel();
        let _ = saver.await;
        let last = state_dir::snapshot(&state.accounting, &state.policies);
        let writer = Arc::clone(dir);
        match tokio::task::spawn_blocking(move || writer.save(&last)).await {
            Ok(Ok(())) => tracing::debug!(dir = %dir.path().display(), "state written"),
            Ok(Err(error)) => {
                tracing::error!(dir = %dir.path().display(), %error, "cannot write the state at shutdown")
            }
            Err(error) => tracing::error!(%error, "state writer task failed at shutdown"),
        }
    }
}

async fn serve_connection(
    state: Arc<State>,
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    draining: CancellationToken,
) {
    state.open_connections.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    // Who is calling, asked once, before the first request is read; every request on the
    // connection carries the answer.
    let caller = if state.accounting_on {
        identify(&state, &stream)
    } else {
        None
    };
    let service_state = Arc::clone(&state);
    let clock = HeadClock::new();
    let service_clock = Arc::clone(&clock);
    let service = service_fn(move |request| {
        let done = service_clock.request_started();
        let handled = handler::handle(Arc::clone(&service_state), caller.clone(), request);
        async move {
            let response = handled.await?;
            Ok::<_, Infallible>(response.map(|body| body.until_done(done)))
        }
    });
    let mut builder = http1::Builder::new();
    // The header-read bound is the connection's HeadClock, not hyper's timer per request.
    builder
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        // Dropping the connection closes it: a head that never completes gets no answer.
        () = clock.expired(HEADER_READ_TIMEOUT) => {
            tracing::debug!("request head not received within the header read timeout: closed");
            Ok(())
        }
        _ = draining.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection.as_mut() => result,
                // Past the abort grace the connection is dropped (closed) regardless.
                _ = async { state.abort.cancelled().await; tokio::time::sleep(ABORT_GRACE).await } => Ok(()),
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "client connection ended with an error");
    }
    state.open_connections.fetch_sub(1, Ordering::Relaxed);
}

/// The owner of the client's end of `stream` (`None`: it could not be determined; with
/// `--allow-user` every request on the connection is then refused).
fn identify(state: &State, stream: &TcpStream) -> Option<peer::Caller> {
    let (client, server) = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(client), Ok(server)) => (client, server),
        (Err(error), _) | (_, Err(error)) => {
            tracing::debug!(%error, "connection addresses unavailable: owner unknown");
            return None;
        }
    };
    match peer::identify(client, server, &state.names) {
        Ok(caller) => Some(caller),
        Err(error) => {
            tracing::debug!(%error, "connection owner could not be determined");
            None
        }
    }
}

/// Over `--max-connections`: a fixed 503 and close, without reading the request.
/// Logged by the caller, as a count ([`RefusalLog`]).
async fn refuse_connection(mut stream: TcpStream) {
    const BODY: &str = r#"{"error":{"message":"Too many connections to the proxy.","type":"server_error","param":null,"code":"too_many_connections"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nx-should-retry: false\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_at_once_then_counted_per_interval() {
        let start = tokio::time::Instant::now();
        let mut log = RefusalLog::default();
        log.refused(start);
        assert_eq!(
            (log.pending, log.window_end),
            (0, Some(start + REFUSAL_LOG_INTERVAL))
        );
        for _ in 0..499 {
            log.refused(start);
        }
        assert_eq!(log.pending, 499, "counted, not logged, inside the interval");
        let later = start + REFUSAL_LOG_INTERVAL;
        log.flush(later);
        assert_eq!(
            (log.pending, log.window_end),
            (0, Some(later + REFUSAL_LOG_INTERVAL))
        );
        // A quiet interval ends the window: the next refusal is logged at once again.
        log.flush(later + REFUSAL_LOG_INTERVAL);
        assert_eq!(log.window_end, None);
    }
}
