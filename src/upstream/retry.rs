//! The retry decision (a pure function), full-jitter backoff, and the retry budget.
//!
//! | verdict                                   | another account left | only this account            |
//! |-------------------------------------------|----------------------|------------------------------|
//! | served, request error                     | give up (relay)      | give up (relay)              |
//! | network fault (connect, header timeout, a cut before headers) | fail over | retry after backoff |
//! | 5xx / overload                            | fail over            | retry after backoff          |
//! | 429 with a hint ≤ 10 s                    | fail over            | retry after the hint         |
//! | 429 otherwise, usage limit, 401, 403      | fail over            | give up                      |
//!
//! Before an attempt, when every account the request may use is cooling down, [`pool_wait`]
//! says whether to wait for the first one: at most [`MAX_COOLDOWN_WAIT`] in all, and only
//! if the wait ends before the request's own deadline. Longer waits get the 429 at once.
//!
//! Every retry also needs `--max-attempts` left and a place in the retry budget: at most
//! max(3, 20 % of the requests in flight) requests may be retrying at once (Envoy's retry
//! budget). A lone client always gets its retries; a failing upstream under load sees at most
//! about `1 + 20 % × (attempts − 1)` times the requests, not `attempts` times.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::pool::state::Verdict;

/// First backoff step before a same-account retry; doubled per attempt, capped, full jitter.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
pub const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// The longest wait for a cooldown to end: a server-hinted wait on the same account when no
/// other is left, and all the waits of one request for a cooling pool together.
pub const MAX_COOLDOWN_WAIT: Duration = Duration::from_secs(10);

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try another account now (no sleep: the fault was this account's or this path's).
    Failover,
    /// Try the same account again after this long.
    RetrySame { after: Duration },
    /// Stop: relay what we have, or answer with the proxy's error.
    GiveUp,
}

/// The decision for attempt number `attempt` (1-based) that ended with `verdict`.
/// `jitter` is a number in 0–1 (random in production, fixed in tests).
pub fn decide(
    verdict: Verdict,
    attempt: u32,
    max_attempts: u32,
    other_account: bool,
    jitter: f64,
) -> Decision {
    if matches!(verdict, Verdict::Served | Verdict::RequestError) || attempt >= max_attempts {
        return Decision::GiveUp;
    }
    if other_account {
        return Decision::Failover;
    }
    match verdict {
        Verdict::NetworkFault | Verdict::ServerError => Decision::RetrySame {
            after: backoff(attempt, jitter),
        },
        Verdict::RateLimited {
            retry_after: Some(hint),
        } if hint <= MAX_COOLDOWN_WAIT => Decision::RetrySame { after: hint },
        _ => Decision::GiveUp,
    }
}

/// How long to wait when every account the request may use is cooling down and the first is
/// usable after `cooling`: `None` to answer 429 at once. `waited` is what this request has
/// already waited for the pool; `time_left` is what remains of its deadline (`None`: no
/// deadline, as for a streaming request).
///
/// The wait is stretched by up to half again (`jitter` in 0–1, Envoy's hinted-wait jitter),
/// within the same bounds, so the requests that queued up behind one cooldown do not all hit
/// the account in the same instant it resets: the first to wake probes it, and a new limit it
/// meets is seen by the others.
pub fn pool_wait(
    cooling: Duration,
    waited: Duration,
    time_left: Option<Duration>,
    jitter: f64,
) -> Option<Duration> {
    let allowance = MAX_COOLDOWN_WAIT.saturating_sub(waited);
    let within_cap = cooling <= allowance;
    let within_deadline = time_left.is_none_or(|left| cooling < left);
    if !(within_cap && within_deadline) {
        return None;
    }
    let mut pause = cooling + (cooling / 2).mul_f64(jitter.clamp(0.0, 1.0));
    pause = pause.min(allowance);
    if let Some(left) = time_left {
        // The stretch takes at most half of what the deadline leaves after the cooldown.
        pause = pause.min(cooling + (left - cooling) / 2);
    }
    Some(pause.max(cooling))
}

/// Full-jitter exponential backoff before retry number `retry` (1-based).
pub fn backoff(retry: u32, jitter: f64) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    ceiling.mul_f64(jitter.clamp(0.0, 1.0))
}

/// A random number in 0–1 for jitter.
pub fn jitter() -> f64 {
    let mut random = [0u8; 4];
    match getrandom::fill(&mut random) {
        Ok(()) => f64::from(u32::from_ne_bytes(random)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    }
}

/// Requests that may retry at once, at least.
pub const MIN_RETRY_CONCURRENCY: usize = 3;
/// Share of the requests in flight that may be retrying at once, in percent.
pub const RETRY_PERCENT: usize = 20;

/// The global retry budget: requests in flight, and how many of them are retrying.
#[derive(Debug, Default)]
pub struct RetryBudget {
    in_flight: AtomicUsize,
    retrying: AtomicUsize,
}

/// One request's place in the budget; released when dropped.
#[derive(Debug)]
pub struct Ticket<'a> {
    budget: &'a RetryBudget,
    retrying: bool,
}

impl RetryBudget {
    /// A request starts.
    pub fn enter(&self) -> Ticket<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ticket {
            budget: self,
            retrying: false,
        }
    }

    /// Requests retrying right now (for tests and gauges).
    pub fn retrying(&self) -> usize {
        self.retrying.load(Ordering::Acquire)
    }

    /// Requests in the retry engine right now (for tests and gauges).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl Ticket<'_> {
    /// May this request retry? Its first retry takes a place, kept until the request ends.
    pub fn may_retry(&mut self) -> bool {
        if self.retrying {
            return true;
        }
        let budget = self.budget;
        let limit = (budget.in_flight.load(Ordering::Acquire) * RETRY_PERCENT / 100)
            .max(MIN_RETRY_CONCURRENCY);
        let taken = budget
            .retrying
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                (r < limit).then_some(r + 1)
            })
            .is_ok();
        self.retrying = taken;
        taken
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.budget.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.retrying {
            self.budget.retrying.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECS: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn request_errors_and_successes_are_never_retried() {
        for other in [false, true] {
            assert_eq!(decide(Verdict::Served, 1, 3, other, 0.5), Decision::GiveUp);
            assert_eq!(
                decide(Verdict::RequestError, 1, 3, other, 0.5),
                Decision::GiveUp
            );
        }
    }

    #[test]
    fn account_faults_fail_over_when_another_account_is_left() {
        for v in [
            Verdict::RateLimited { retry_after: None },
            Verdict::UsageLimit { reset_after: None },
            Verdict::Unauthorized,
            Verdict::Forbidden,
            Verdict::ServerError,
            Verdict::NetworkFault,
        ] {
            assert_eq!(decide(v, 1, 3, true, 0.5), Decision::Failover, "{v:?}");
        }
    }

    #[test]
    fn with_one_account_only_transient_faults_and_short_hints_are_retried() {
        assert_eq!(
            decide(Verdict::NetworkFault, 1, 3, false, 1.0),
            Decision::RetrySame {
                after: BACKOFF_BASE
            }
        );
        assert_eq!(
            decide(Verdict::ServerError, 2, 3, false, 1.0),
            Decision::RetrySame {
                after: BACKOFF_BASE * 2
            }
        );
        assert_eq!(
            decide(
                Verdict::RateLimited {
                    retry_after: Some(SECS(3))
                },
                1,
                3,
                false,
                0.5
            ),
            Decision::RetrySame { after: SECS(3) }
        );
        assert_eq!(
            decide(
                Verdict::RateLimited {
                    retry_after: Some(SECS(30))
                },
                1,
                3,
                false,
                0.5
            ),
            Decision::GiveUp
        );
        assert_eq!(
            decide(Verdict::RateLimited { retry_after: None }, 1, 3, false, 0.5),
            Decision::GiveUp
        );
        assert_eq!(
            decide(Verdict::UsageLimit { reset_after: None }, 1, 3, false, 0.5),
            Decision::GiveUp
        );
        assert_eq!(
            decide(Verdict::Unauthorized, 1, 3, false, 0.5),
            Decision::GiveUp
        );
    }

    #[test]
    fn a_cooling_pool_is_waited_for_only_briefly_and_within_the_deadline() {
        let none = Duration::ZERO;
        assert_eq!(pool_wait(SECS(1), none, None, 0.0), Some(SECS(1)));
        assert_eq!(pool_wait(SECS(10), none, None, 0.0), Some(SECS(10)));
        assert_eq!(pool_wait(SECS(11), none, None, 0.0), None);
        assert_eq!(
            pool_wait(SECS(3), SECS(8), None, 0.0),
            None,
            "the cap bounds all waits of a request together"
        );
        assert_eq!(pool_wait(SECS(2), SECS(8), None, 0.0), Some(SECS(2)));
        assert_eq!(pool_wait(SECS(4), none, Some(SECS(2)), 0.0), None);
        assert_eq!(
            pool_wait(SECS(2), none, Some(SECS(2)), 0.0),
            None,
            "no time left for the attempt itself"
        );
        assert_eq!(
            pool_wait(SECS(1), none, Some(SECS(600)), 0.0),
            Some(SECS(1))
        );
    }

    #[test]
    fn the_wait_is_stretched_by_up_to_half_within_the_same_bounds() {
        let none = Duration::ZERO;
        assert_eq!(pool_wait(SECS(2), none, None, 1.0), Some(SECS(3)));
        assert_eq!(
            pool_wait(SECS(2), none, None, 0.5),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            pool_wait(SECS(8), none, None, 1.0),
            Some(SECS(10)),
            "never past the cap"
        );
        assert_eq!(
            pool_wait(SECS(2), none, Some(SECS(3)), 1.0),
            Some(Duration::from_millis(2500)),
            "half of what the deadline leaves"
        );
        for j in 0..=10 {
            let pause = pool_wait(SECS(4), SECS(1), Some(SECS(9)), f64::from(j) / 10.0).unwrap();
            assert!(pause >= SECS(4) && pause <= SECS(6), "{pause:?}");
        }
    }

    #[test]
    fn attempts_are_bounded() {
        assert_eq!(
            decide(Verdict::NetworkFault, 3, 3, true, 0.5),
            Decision::GiveUp
        );
        assert_eq!(
            decide(Verdict::NetworkFault, 1, 1, true, 0.5),
            Decision::GiveUp
        );
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_capped_ceiling() {
        for retry in 1..20 {
            let ceiling = BACKOFF_BASE
                .saturating_mul(1 << (retry - 1).min(16))
                .min(BACKOFF_CAP);
            for j in 0..=10 {
                let d = backoff(retry, f64::from(j) / 10.0);
                assert!(d <= ceiling, "retry {retry}: {d:?} > {ceiling:?}");
            }
            assert_eq!(backoff(retry, 1.0), ceiling);
            assert_eq!(backoff(retry, 0.0), Duration::ZERO);
        }
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..=1.0).contains(&j));
        }
    }

    #[test]
    fn a_lone_request_always_gets_its_retries() {
        let budget = RetryBudget::default();
        let mut ticket = budget.enter();
        assert!(ticket.may_retry() && ticket.may_retry() && ticket.may_retry());
        drop(ticket);
        assert_eq!(budget.retrying(), 0);
    }

    #[test]
    fn at_most_a_fifth_of_the_requests_in_flight_retry_at_once() {
        let budget = RetryBudget::default();
        let mut tickets: Vec<Ticket> = (0..100).map(|_| budget.enter()).collect();
        let allowed = tickets
            .iter_mut()
            .filter_map(|t| t.may_retry().then_some(()))
            .count();
        assert_eq!(allowed, 20);
        drop(tickets);
        let mut few: Vec<Ticket> = (0..5).map(|_| budget.enter()).collect();
        let allowed = few
            .iter_mut()
            .filter_map(|t| t.may_retry().then_some(()))
            .count();
        assert_eq!(
            allowed, MIN_RETRY_CONCURRENCY,
            "the minimum applies to small loads"
        );
        drop(few);
        assert_eq!(budget.retrying(), 0);
    }
}
