//! One account's state, and the cooldown policy as pure transitions.
//!
//! | what an attempt said (`Verdict`)          | account state afterwards                                  |
//! |-------------------------------------------|-----------------------------------------------------------|
//! | served (any status the request caused)    | `Active`; the rate-limit level resets                     |
//! | 429 rate limit, hint H                    | `CoolingDown` for H, else `1 s × 2^level` (cap 30 min)    |
//! | usage limit (`usage_limit_reached`, …)    | `CoolingDown` until the reset hint, else 60 s             |
//! | 401 on an API key (nothing to refresh)    | `Disabled(unauthorized)`                                  |
//! | 401 on a ChatGPT account                  | `Refreshing`, then retried once on it; a second 401: `Disabled(unauthorized)` |
//! | refresh refused for good (`invalid_grant`, `refresh_token_reused`, revoked) | `Disabled(refresh_failed)` |
//! | token endpoint 429/5xx/unreachable        | `CoolingDown` 60 s (`refresh_unavailable`)                |
//! | 402/403 without a usage-limit code        | `CoolingDown` 5 min                                       |
//! | 408/5xx/529                               | `CoolingDown` 15 s                                        |
//! | connect failure, header timeout           | unchanged: the network's fault, not the account's         |
//! | 400/404/413/422, context length           | unchanged: the request's fault                            |
//! | `invalid_encrypted_content`               | unchanged; retried once on the same account without the ciphertext |
//!
//! A cooldown that has ended counts as `Active` (checked lazily against the clock), and no
//! cooldown outlives its reset: the quota reading that came with a limit (0 % left) is
//! dropped with it, so the next request after the reset probes the account instead of
//! steering around it. A rate limit that arrives while the account is already cooling
//! extends the cooldown but does not raise the level, so a burst of concurrent 429s does not
//! escalate. All time is `tokio::time`, so tests can pause it.

use std::time::Duration;

use tokio::time::Instant;

/// A cooldown without a usable reset hint after a usage limit.
pub const DEFAULT_USAGE_COOLDOWN: Duration = Duration::from_secs(60);
/// First step of the exponential rate-limit cooldown, and its cap.
pub const RATE_LIMIT_BASE: Duration = Duration::from_secs(1);
pub const RATE_LIMIT_CAP: Duration = Duration::from_secs(30 * 60);
/// Cooldown after 402/403 without a usage-limit code.
pub const FORBIDDEN_COOLDOWN: Duration = Duration::from_secs(5 * 60);
/// Cooldown after the token endpoint could not refresh (429, 5xx, unreachable).
pub const REFRESH_UNAVAILABLE_COOLDOWN: Duration = Duration::from_secs(60);
/// Cooldown after a transient upstream error (408, 5xx, 529).
pub const SERVER_ERROR_COOLDOWN: Duration = Duration::from_secs(15);

/// Why an account is not active (shown by `/health` as `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    RateLimited,
    UsageLimit,
    Unauthorized,
    Forbidden,
    ServerError,
    /// The token endpoint refused the refresh token for good.
    RefreshFailed,
    /// The token endpoint could not refresh right now.
    RefreshUnavailable,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RateLimited => "rate_limited",
            Reason::UsageLimit => "usage_limit",
            Reason::Unauthorized => "unauthorized",
            Reason::Forbidden => "forbidden",
            Reason::ServerError => "server_error",
            Reason::RefreshFailed => "refresh_failed",
            Reason::RefreshUnavailable => "refresh_unavailable",
        }
    }
}

/// The account state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    /// A ChatGPT account whose tokens are being refreshed: requests already bound to it wait
    /// for the refresh; new ones go elsewhere while another account is available.
    Refreshing,
    CoolingDown {
        until: Instant,
        reason: Reason,
    },
    Disabled {
        reason: Reason,
    },
}

/// What one upstream attempt said about the account that served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A response the account served; its status is the request's business.
    Served,
    /// 429 (or "model at capacity"), with the server's delay hint if it gave one.
    RateLimited {
        retry_after: Option<Duration>,
    },
    /// The account's usage limit, with the time until it resets if known.
    UsageLimit {
        reset_after: Option<Duration>,
    },
    Unauthorized,
    Forbidden,
    /// 408, 5xx, 529, or an in-band overload.
    ServerError,
    /// Connect failure, header timeout, a cut before commit: the network's fault.
    NetworkFault,
    /// 400, 404, 413, 422, context length: the request's fault.
    RequestError,
    /// The token endpoint refused the refresh token for good.
    RefreshFailed,
    /// The token endpoint was unreachable, overloaded or rate limited.
    RefreshUnavailable,
    /// Reasoning ciphertext minted by another account (or expired): the request's fault,
    /// retried once on the same account without the ciphertext.
    InvalidEncryptedContent,
}

/// Everything the pool tracks about one account.
///
/// Two kinds of cooldown are kept apart: a *limit* (rate, usage, 403) is hard: the account
/// takes no request until it ends; a *transient* cooldown after a 5xx is soft: new requests
/// go elsewhere, but the account may still serve as a last resort. A limit always wins.
#[derive(Debug, Clone, Default)]
pub struct AccountStatus {
    /// Set for good (until an operator replaces the credential).
    pub disabled: Option<Reason>,
    /// A hard cooldown: its end and its reason.
    pub limit: Option<(Instant, Reason)>,
    /// The end of a soft cooldown after a transient server error.
    pub transient_until: Option<Instant>,
    /// Status of the last upstream response.
    pub last_status: Option<u16>,
    /// Consecutive rate-limit cooldowns without a hint (the exponent).
    pub rate_limit_level: u32,
    /// Remaining quota as a fraction (0–1), when the upstream has said.
    pub remaining: Option<f64>,
    /// A token refresh is running.
    pub refreshing: bool,
}

impl AccountStatus {
    /// The state at `now`, as the state machine names it.
    pub fn state(&self, now: Instant) -> State {
        if let Some(reason) = self.disabled {
            return State::Disabled { reason };
        }
        if self.refreshing {
            return State::Refreshing;
        }
        match (self.limit, self.transient_until) {
            (Some((until, reason)), _) if until > now => State::CoolingDown { until, reason },
            (_, Some(until)) if until > now => State::CoolingDown {
                until,
                reason: Reason::ServerError,
            },
            _ => State::Active,
        }
    }

    /// True when the account may take a new request at `now`.
    pub fn is_available(&self, now: Instant) -> bool {
        self.state(now) == State::Active
    }

    /// True when only a soft (5xx) cooldown keeps it from being available: usable as a last
    /// resort, and for a retry of a request already on it.
    pub fn is_last_resort(&self, now: Instant) -> bool {
        matches!(
            self.state(now),
            State::Refreshing
                | State::CoolingDown {
                    reason: Reason::ServerError,
                    ..
                }
        )
    }

    /// When the account is available again, if not now (`None`); `Some(None)`: never.
    pub fn unavailable_until(&self, now: Instant) -> Option<Option<Instant>> {
        if self.disabled.is_some() {
            return Some(None);
        }
        if self.refreshing {
            // Until the refresh ends (it clears this and republishes).
            return Some(None);
        }
        let hard = self
            .limit
            .map(|(until, _)| until)
            .filter(|until| *until > now);
        let soft = self.transient_until.filter(|until| *until > now);
        hard.max(soft).map(Some)
    }

    /// When a cooldown still running at `now` ends.
    pub fn cooling_until(&self, now: Instant) -> Option<Instant> {
        match self.state(now) {
            State::CoolingDown { until, .. } => Some(until),
            _ => None,
        }
    }

    /// The state as `/health` shows it at `now`: (state, reason, whole seconds of cooldown
    /// left, rounded up).
    pub fn describe(&self, now: Instant) -> (&'static str, Option<&'static str>, Option<u64>) {
        match self.state(now) {
            State::CoolingDown { until, reason } => {
                let left = until - now;
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                ("cooling_down", Some(reason.as_str()), Some(secs))
            }
            State::Disabled { reason } => ("disabled", Some(reason.as_str()), None),
            State::Refreshing => ("refreshing", None, None),
            State::Active => ("active", None, None),
        }
    }

    /// Takes the remaining-quota reading of a response that said `verdict`. A reading that came
    /// with a limit describes the window the limit closes: the cooldown keeps the account out
    /// until the window resets, and after that the reading is stale, so it is forgotten.
    pub fn observe_quota(&mut self, verdict: Verdict, remaining: Option<f64>) {
        match verdict {
            Verdict::RateLimited { .. } | Verdict::UsageLimit { .. } => self.remaining = None,
            _ if remaining.is_some() => self.remaining = remaining,
            _ => {}
        }
    }

    /// Applies the policy table to what an attempt said, at `now`.
    pub fn record(&mut self, verdict: Verdict, now: Instant) {
        let limited = self.limit.is_some_and(|(until, _)| until > now);
        let limit = |this: &mut Self, length: Duration, reason: Reason| {
            let until = now + length.max(Duration::from_millis(1));
            // Never shorten a running limit (nor relabel it: its reason goes with its end).
            match this.limit {
                Some((current, _)) if current > now && current >= until => {}
                _ => this.limit = Some((until, reason)),
            }
        };
        match verdict {
            Verdict::Served => {
                // A transient cooldown ends with a success. A limit the upstream announced
                // stays even if a request that was already in flight succeeds.
                self.transient_until = None;
                if !limited {
                    self.limit = None;
                    self.rate_limit_level = 0;
                }
            }
            Verdict::RateLimited { retry_after } => {
                let length = match retry_after {
                    Some(hint) => hint,
                    // A burst of concurrent 429s inside one cooldown window changes nothing.
                    None if limited => return,
                    None => {
                        let step =
                            RATE_LIMIT_BASE.saturating_mul(1u32 << self.rate_limit_level.min(20));
                        self.rate_limit_level += 1;
                        step.min(RATE_LIMIT_CAP)
                    }
                };
                limit(self, length, Reason::RateLimited);
            }
            Verdict::UsageLimit { reset_after } => {
                let length = reset_after
                    .filter(|d| !d.is_zero())
                    .unwrap_or(DEFAULT_USAGE_COOLDOWN);
                limit(self, length, Reason::UsageLimit);
            }
            Verdict::Forbidden => limit(self, FORBIDDEN_COOLDOWN, Reason::Forbidden),
            Verdict::Unauthorized => self.disabled = Some(Reason::Unauthorized),
            Verdict::RefreshFailed => self.disabled = Some(Reason::RefreshFailed),
            Verdict::RefreshUnavailable => limit(
                self,
                REFRESH_UNAVAILABLE_COOLDOWN,
                Reason::RefreshUnavailable,
            ),
            Verdict::ServerError => {
                let until = now + SERVER_ERROR_COOLDOWN;
                self.transient_until = Some(self.transient_until.map_or(until, |t| t.max(until)));
            }
            Verdict::NetworkFault | Verdict::RequestError | Verdict::InvalidEncryptedContent => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_with_a_hint_cools_for_exactly_that_long() {
        let mut s = AccountStatus::default();
        let now = Instant::now();
        s.record(
            Verdict::RateLimited {
                retry_after: Some(secs(7)),
            },
            now,
        );
        assert!(!s.is_available(now));
        assert_eq!(
            s.describe(now),
            ("cooling_down", Some("rate_limited"), Some(7))
        );
        tokio::time::advance(secs(7)).await;
        assert!(s.is_available(Instant::now()));
        assert_eq!(s.describe(Instant::now()).0, "active");
    }

    #[tokio::test(start_paused = true)]
    async fn hintless_429s_back_off_exponentially_but_a_burst_does_not_escalate() {
        let mut s = AccountStatus::default();
        let t0 = Instant::now();
        s.record(Verdict::RateLimited { retry_after: None }, t0);
        assert_eq!(s.cooling_until(t0), Some(t0 + secs(1)));
        // Concurrent 429s while cooling: no escalation, no extension.
        s.record(Verdict::RateLimited { retry_after: None }, t0);
        s.record(Verdict::RateLimited { retry_after: None }, t0);
        assert_eq!(s.rate_limit_level, 1);
        assert_eq!(s.cooling_until(t0), Some(t0 + secs(1)));
        tokio::time::advance(secs(1)).await;
        let t1 = Instant::now();
        s.record(Verdict::RateLimited { retry_after: None }, t1);
        assert_eq!(s.cooling_until(t1), Some(t1 + secs(2)));
        tokio::time::advance(secs(2)).await;
        let t2 = Instant::now();
        s.record(Verdict::RateLimited { retry_after: None }, t2);
        assert_eq!(s.cooling_until(t2), Some(t2 + secs(4)));
        // A success resets the level.
        tokio::time::advance(secs(4)).await;
        s.record(Verdict::Served, Instant::now());
        assert_eq!(
            (s.state(Instant::now()), s.rate_limit_level),
            (State::Active, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_exponential_cooldown_is_capped() {
        let mut s = AccountStatus {
            rate_limit_level: 40,
            ..Default::default()
        };
        let now = Instant::now();
        s.record(Verdict::RateLimited { retry_after: None }, now);
        assert_eq!(s.cooling_until(now), Some(now + RATE_LIMIT_CAP));
    }

    #[tokio::test(start_paused = true)]
    async fn usage_limit_uses_the_reset_hint_or_the_default() {
        let now = Instant::now();
        let mut s = AccountStatus::default();
        s.record(
            Verdict::UsageLimit {
                reset_after: Some(secs(300)),
            },
            now,
        );
        assert_eq!(
            s.describe(now),
            ("cooling_down", Some("usage_limit"), Some(300))
        );
        let mut s = AccountStatus::default();
        s.record(Verdict::UsageLimit { reset_after: None }, now);
        assert_eq!(s.cooling_until(now), Some(now + DEFAULT_USAGE_COOLDOWN));
        let mut s = AccountStatus::default();
        s.record(
            Verdict::UsageLimit {
                reset_after: Some(Duration::ZERO),
            },
            now,
        );
        assert_eq!(
            s.cooling_until(now),
            Some(now + DEFAULT_USAGE_COOLDOWN),
            "a reset in the past gets the default"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_cooldown_never_shortens_a_longer_one() {
        let now = Instant::now();
        let mut s = AccountStatus::default();
        s.record(
            Verdict::UsageLimit {
                reset_after: Some(secs(600)),
            },
            now,
        );
        s.record(Verdict::ServerError, now);
        assert_eq!(s.cooling_until(now), Some(now + secs(600)));
    }

    #[tokio::test(start_paused = true)]
    async fn unauthorized_disables_for_good_and_forbidden_or_5xx_cool_down() {
        let now = Instant::now();
        let mut s = AccountStatus::default();
        s.record(Verdict::Unauthorized, now);
        assert_eq!(s.describe(now), ("disabled", Some("unauthorized"), None));
        s.record(Verdict::Served, now);
        assert!(!s.is_available(now), "a disabled account stays disabled");
        let mut s = AccountStatus::default();
        s.record(Verdict::Forbidden, now);
        assert_eq!(s.cooling_until(now), Some(now + FORBIDDEN_COOLDOWN));
        let mut s = AccountStatus::default();
        s.record(Verdict::ServerError, now);
        assert_eq!(s.cooling_until(now), Some(now + SERVER_ERROR_COOLDOWN));
    }

    #[tokio::test(start_paused = true)]
    async fn network_faults_and_request_errors_leave_the_account_alone() {
        let now = Instant::now();
        let mut s = AccountStatus::default();
        s.record(Verdict::NetworkFault, now);
        s.record(Verdict::RequestError, now);
        assert_eq!(s.state(now), State::Active);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_success_does_not_cancel_an_announced_limit_but_ends_a_5xx_cooldown() {
        let now = Instant::now();
        let mut s = AccountStatus::default();
        s.record(
            Verdict::RateLimited {
                retry_after: Some(secs(10)),
            },
            now,
        );
        s.record(Verdict::Served, now);
        assert_eq!(
            s.cooling_until(now),
            Some(now + secs(10)),
            "the in-flight success changes nothing"
        );
        let mut s = AccountStatus::default();
        s.record(Verdict::ServerError, now);
        s.record(Verdict::Served, now);
        assert!(s.is_available(now), "a success ends a 5xx cooldown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_cooldown_does_not_relabel_a_longer_one() {
        let now = Instant::now();
        let mut s = AccountStatus::default();
        s.record(
            Verdict::RateLimited {
                retry_after: Some(secs(60)),
            },
            now,
        );
        s.record(Verdict::ServerError, now);
        assert_eq!(
            s.describe(now),
            ("cooling_down", Some("rate_limited"), Some(60))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_forgets_the_quota_reading_so_the_account_is_probed_after_its_reset() {
        let now = Instant::now();
        let mut s = AccountStatus::default();
        s.observe_quota(Verdict::Served, Some(0.4));
        assert_eq!(s.remaining, Some(0.4));
        s.observe_quota(Verdict::Served, None);
        assert_eq!(s.remaining, Some(0.4), "no reading keeps the last one");
        let limit = Verdict::RateLimited {
            retry_after: Some(secs(1)),
        };
        s.record(limit, now);
        s.observe_quota(limit, Some(0.0));
        assert_eq!(s.remaining, None);
        s.observe_quota(Verdict::UsageLimit { reset_after: None }, Some(0.0));
        assert_eq!(s.remaining, None);
        tokio::time::advance(secs(1)).await;
        assert_eq!(s.describe(Instant::now()), ("active", None, None));
    }

    #[tokio::test(start_paused = true)]
    async fn cooldown_remaining_rounds_up_to_whole_seconds() {
        let now = Instant::now();
        let mut s = AccountStatus::default();
        s.record(
            Verdict::RateLimited {
                retry_after: Some(Duration::from_millis(1500)),
            },
            now,
        );
        assert_eq!(s.describe(now).2, Some(2));
    }
}
