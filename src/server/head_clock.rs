//! The header-read bound of one connection, kept with one timer per connection.
//!
//! A client has [`HEADER_READ_TIMEOUT`](super::HEADER_READ_TIMEOUT) to send a whole request
//! head once the connection is ready for one: from when it opens, and from when the previous
//! response is done with (so the keep-alive wait counts too). hyper can enforce this itself,
//! but it arms a fresh timer for every request head and drops it when the head is in; a timer
//! due earlier than the runtime's next wake-up also costs a write to the driver's wake-up
//! descriptor. Measured, that was one system call, one heap allocation and one timer-wheel
//! insertion and removal per request. Here a connection keeps one timer: it is looked at when
//! it fires (at most once per timeout period while requests keep coming), and either ends the
//! connection or is set again from the moment the connection last became idle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Marks "a request is in flight" in [`HeadClock::idle_since_ms`].
const BUSY: u64 = u64::MAX;

/// When a connection last became ready for a request head.
pub struct HeadClock {
    opened: Instant,
    /// Milliseconds after `opened` at which the connection last became idle, or [`BUSY`].
    idle_since_ms: AtomicU64,
}

impl HeadClock {
    /// A clock for a connection that has just opened (and is waiting for its first head).
    pub fn new() -> Arc<Self> {
        Arc::new(HeadClock {
            opened: Instant::now(),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// A request head has been read: the bound is off until [`RequestDone`] is dropped.
    pub fn request_started(self: &Arc<Self>) -> RequestDone {
        self.idle_since_ms.store(BUSY, Ordering::Relaxed);
        RequestDone(Arc::clone(self))
    }

    /// When the connection must have sent its next head by (`None`: a request is in flight).
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        match self.idle_since_ms.load(Ordering::Relaxed) {
            BUSY => None,
            ms => Some(self.opened + Duration::from_millis(ms) + timeout),
        }
    }

    /// Completes when the connection has been waiting for a request head for `timeout`.
    pub async fn expired(&self, timeout: Duration) {
        let sleep = tokio::time::sleep(timeout);
        tokio::pin!(sleep);
        loop {
            sleep.as_mut().await;
            let now = Instant::now();
            match self.deadline(timeout) {
                Some(deadline) if deadline <= now => return,
                Some(deadline) => sleep.as_mut().reset(deadline),
                None => sleep.as_mut().reset(now + timeout),
            }
        }
    }
}

/// Held by a response body; when it is dropped (the response is done with) the connection is
/// idle again and its head-read bound runs from that moment.
pub struct RequestDone(Arc<HeadClock>);

impl Drop for RequestDone {
    fn drop(&mut self) {
        let clock = &self.0;
        // Rounded up: the bound is never shorter than the timeout.
        let elapsed = clock.opened.elapsed();
        let ms = elapsed.as_millis() as u64 + u64::from(elapsed.subsec_nanos() % 1_000_000 != 0);
        clock
            .idle_since_ms
            .store(ms.min(BUSY - 1), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_one_timeout_after_it_opened() {
        let clock = HeadClock::new();
        let started = Instant::now();
        clock.expired(TIMEOUT).await;
        assert_eq!(started.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_never_expires_and_the_bound_restarts_when_it_is_done() {
        let clock = HeadClock::new();
        let started = Instant::now();
        let done = clock.request_started();
        let expiry = clock.expired(TIMEOUT);
        tokio::pin!(expiry);
        // A response that streams for a minute: the connection is not idle meanwhile.
        assert!(
            tokio::time::timeout(Duration::from_secs(60), expiry.as_mut())
                .await
                .is_err(),
            "expired while a request was in flight"
        );
        drop(done);
        let idle_from = Instant::now();
        expiry.await;
        assert_eq!(idle_from - started, Duration::from_secs(60));
        assert!(idle_from.elapsed() >= TIMEOUT, "{:?}", idle_from.elapsed());
        assert!(
            idle_from.elapsed() < TIMEOUT + Duration::from_millis(2),
            "{:?}",
            idle_from.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_keep_coming_keep_the_connection_open() {
        let clock = HeadClock::new();
        let expiry = clock.expired(TIMEOUT);
        tokio::pin!(expiry);
        // One request every 6 s for a minute: never 10 s without a head.
        for _ in 0..10 {
            tokio::select! {
                () = expiry.as_mut() => panic!("expired between requests"),
                () = tokio::time::sleep(Duration::from_secs(6)) => {}
            }
            drop(clock.request_started());
        }
        let last = Instant::now();
        expiry.await;
        assert!(last.elapsed() >= TIMEOUT && last.elapsed() < TIMEOUT + Duration::from_millis(2));
    }
}
