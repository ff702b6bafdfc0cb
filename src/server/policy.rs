//! Per-user policy from `--config` (`[users.NAME]`, `[users."*"]`): which models a local user
//! may ask for, how many of their requests may be in flight at once, and how many tokens they
//! may spend per fixed window.
//!
//! The caller is the uid the kernel reported for the connection ([`super::peer`]). A user's own
//! section applies to them; `"*"` applies to everyone without one (a caller whose owner could
//! not be determined included). Models are matched as they go upstream, after aliases and
//! suffixes (docs/user-policy.md says why). A concurrency slot is held by the response body, so
//! a stream holds it until its last byte is sent or the client goes away. A token budget is
//! checked before the request is read and charged when its response body is done with, with
//! what the upstream reported (docs/user-policy.md); it lives in memory only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::header::HeaderValue;
use http::{Response, StatusCode};

use super::body::ProxyBody;
use super::errors::error_response;
use super::peer::Caller;
use crate::glob::Glob;
use crate::translate::Dialect;

/// One user's policy. `None` fields do not restrict.
#[derive(Debug, Clone, Default)]
pub struct UserPolicy {
    /// Globs the upstream model must match (`None`: any model).
    pub models: Option<Vec<Glob>>,
    /// Requests in flight at once (`None`: no limit of its own).
    pub max_concurrent: Option<u32>,
    /// Input + output tokens per fixed window (`None`: no budget).
    pub budget: Option<Budget>,
}

/// A token budget: `tokens` input + output tokens per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub tokens: u64,
    pub window: BudgetWindow,
}

/// The length of a budget window. Windows are aligned to the Unix epoch: a window of `n`
/// seconds starts at a multiple of `n` seconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetWindow {
    Hour,
    Day,
    Week,
    Days30,
}

/// A user's budget as `GET /usage` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetStatus {
    pub budget: u64,
    /// Tokens left in the current window (never negative).
    pub remaining: u64,
    /// The current window's end, in Unix seconds.
    pub window_end: u64,
}

/// Tokens counted per caller (`None`: owner unknown): the start of the window they were
/// counted in (Unix seconds) and the count.
type Spent = Arc<Mutex<HashMap<Option<u32>, (u64, u64)>>>;

/// Charges a request's reported tokens to its user's budget (kept in the request's log until
/// its response body is done with).
pub struct BudgetCharge {
    key: Option<u32>,
    window: BudgetWindow,
    spent: Spent,
}

/// Every user's policy, resolved to uids at start.
#[derive(Debug, Clone, Default)]
pub struct PolicyTable {
    by_uid: HashMap<u32, Arc<UserPolicy>>,
    /// `[users."*"]`.
    default: Option<Arc<UserPolicy>>,
}

/// The table with the counters of requests in flight.
#[derive(Debug, Default)]
pub struct Policies {
    table: PolicyTable,
    /// Requests in flight per caller (`None`: owner unknown) that hold a slot; an entry is
    /// removed when its count falls to zero, so the map is bounded by requests in flight.
    in_flight: Arc<Mutex<HashMap<Option<u32>, u32>>>,
    /// Tokens counted per caller with a budget; one entry per such caller seen.
    spent: Spent,
}

/// A held concurrency slot, released when dropped (the response body is done with).
pub struct Slot {
    key: Option<u32>,
    in_flight: Arc<Mutex<HashMap<Option<u32>, u32>>>,
}

/// Why a request is refused by its user's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDenied {
    /// The model (as it would go upstream) matches none of the user's globs.
    ModelNotAllowed,
    /// The user already has `max_concurrent` requests in flight.
    Concurrency,
    /// The user's tokens in the current window have reached `token_budget`; the window ends
    /// in `retry_after` seconds.
    BudgetExhausted { retry_after: u64 },
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// === impl BudgetWindow ===

impl BudgetWindow {
    /// `"1h"`, `"1d"`, `"7d"` or `"30d"`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "1h" => Some(BudgetWindow::Hour),
            "1d" => Some(BudgetWindow::Day),
            "7d" => Some(BudgetWindow::Week),
            "30d" => Some(BudgetWindow::Days30),
            _ => None,
        }
    }

    /// The window as the config file spells it.
    pub fn name(self) -> &'static str {
        match self {
            BudgetWindow::Hour => "1h",
            BudgetWindow::Day => "1d",
            BudgetWindow::Week => "7d",
            BudgetWindow::Days30 => "30d",
        }
    }

    /// The window's length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            BudgetWindow::Hour => 3_600,
            BudgetWindow::Day => 86_400,
            BudgetWindow::Week => 7 * 86_400,
            BudgetWindow::Days30 => 30 * 86_400,
        }
    }

    /// The start of the window holding `now` (Unix seconds); it ends `seconds()` later.
    pub fn start(self, now: u64) -> u64 {
        now - now % self.seconds()
    }
}

// === impl PolicyTable ===

impl PolicyTable {
    /// Sets `uid`'s policy (`None`: the `"*"` default).
    pub fn insert(&mut self, uid: Option<u32>, policy: UserPolicy) {
        let policy = Arc::new(policy);
        match uid {
            Some(uid) => {
                self.by_uid.insert(uid, policy);
            }
            None => self.default = Some(policy),
        }
    }

    /// Whether a policy is set for `uid` already (`None`: the default).
    pub fn contains(&self, uid: Option<u32>) -> bool {
        match uid {
            Some(uid) => self.by_uid.contains_key(&uid),
            None => self.default.is_some(),
        }
    }

    /// The policy that applies to `caller`, if any.
    pub fn for_caller(&self, caller: Option<&Caller>) -> Option<&UserPolicy> {
        self.for_uid(caller.map(|c| c.uid))
    }

    /// The policy that applies to `uid` (`None`: owner unknown), if any.
    pub fn for_uid(&self, uid: Option<u32>) -> Option<&UserPolicy> {
        uid.and_then(|uid| self.by_uid.get(&uid))
            .or(self.default.as_ref())
            .map(Arc::as_ref)
    }

    /// True when no user has a policy (nothing to check per request).
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty() && self.default.is_none()
    }
}

// === impl UserPolicy ===

impl UserPolicy {
    /// Whether `model` (as it goes upstream; `None`: the request names none) is allowed.
    /// A user with a model list may not send a request without a model: what the upstream
    /// would pick cannot be checked.
    pub fn allows_model(&self, model: Option<&str>) -> bool {
        match (&self.models, model) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(globs), Some(model)) => globs.iter().any(|g| g.matches(model)),
        }
    }
}

// === impl Policies ===

impl Policies {
    pub fn new(table: PolicyTable) -> Self {
        Policies {
            table,
            in_flight: Arc::default(),
            spent: Arc::default(),
        }
    }

    /// Tokens `key` has counted in the window starting at `start`.
    fn spent_in(&self, key: Option<u32>, start: u64) -> u64 {
        self.spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .filter(|(window, _)| *window == start)
            .map_or(0, |(_, used)| *used)
    }

    /// Refuses `caller` when their tokens in the current window (at `now`, Unix seconds) have
    /// reached their budget; otherwise the charge to make when the request is done (`None`:
    /// the caller has no budget).
    pub fn check_budget(
        &self,
        caller: Option<&Caller>,
        now: u64,
    ) -> Result<Option<BudgetCharge>, PolicyDenied> {
        let Some(budget) = self.for_caller(caller).and_then(|p| p.budget) else {
            return Ok(None);
        };
        let key = caller.map(|c| c.uid);
        let start = budget.window.start(now);
        if self.spent_in(key, start) >= budget.tokens {
            let end = start + budget.window.seconds();
            return Err(PolicyDenied::BudgetExhausted {
                retry_after: end - now,
            });
        }
        Ok(Some(BudgetCharge {
            key,
            window: budget.window,
            spent: Arc::clone(&self.spent),
        }))
    }

    /// The spent tokens as `--state-dir` keeps them, with the window each was counted under.
    pub fn budget_records(&self) -> Vec<super::state_dir::BudgetRecord> {
        let spent = self
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut records: Vec<_> = spent
            .iter()
            .filter_map(|(uid, (start, tokens))| {
                let budget = self.table.for_uid(*uid)?.budget?;
                Some(super::state_dir::BudgetRecord {
                    uid: *uid,
                    window: budget.window.name().to_string(),
                    window_start: *start,
                    tokens: *tokens,
                })
            })
            .collect();
        records.sort_by_key(|r| r.uid);
        records
    }

    /// Puts spent tokens read back from `--state-dir` in place. A record is kept only when
    /// its caller still has a budget with the same window length: tokens counted under another
    /// window say nothing about this one (the change is logged).
    pub fn restore_budgets(&self, records: &[super::state_dir::BudgetRecord]) {
        let mut spent = self
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for record in records {
            let window = self.table.for_uid(record.uid).and_then(|p| p.budget);
            match window {
                Some(budget) if budget.window.name() == record.window => {
                    spent.insert(record.uid, (record.window_start, record.tokens));
                }
                _ => tracing::info!(
                    uid = %super::peer::UidLabel(record.uid),
                    window = %record.window,
                    "saved budget window not restored: the user's budget window is another now"
                ),
            }
        }
    }

    /// Tokens `uid` has counted in the window holding `now` (for tests).
    pub fn spent(&self, uid: Option<u32>, now: u64) -> u64 {
        match self.table.for_uid(uid).and_then(|p| p.budget) {
            Some(budget) => self.spent_in(uid, budget.window.start(now)),
            None => 0,
        }
    }

    /// `uid`'s budget, what is left of it and when its window ends (`None`: no budget).
    pub fn budget_status(&self, uid: Option<u32>, now: u64) -> Option<BudgetStatus> {
        let budget = self.table.for_uid(uid)?.budget?;
        let start = budget.window.start(now);
        Some(BudgetStatus {
            budget: budget.tokens,
            remaining: budget.tokens.saturating_sub(self.spent_in(uid, start)),
            window_end: start + budget.window.seconds(),
        })
    }

    /// The policy that applies to `caller`, if any.
    pub fn for_caller(&self, caller: Option<&Caller>) -> Option<&UserPolicy> {
        if self.table.is_empty() {
            return None;
        }
        self.table.for_caller(caller)
    }

    /// Takes one of `caller`'s concurrency slots, or refuses when all are taken. `Ok(None)`:
    /// the caller has no limit (nothing to hold).
    pub fn acquire(&self, caller: Option<&Caller>) -> Result<Option<Slot>, PolicyDenied> {
        let Some(limit) = self.for_caller(caller).and_then(|p| p.max_concurrent) else {
            return Ok(None);
        };
        let key = caller.map(|c| c.uid);
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = in_flight.entry(key).or_insert(0);
        if *count >= limit {
            if *count == 0 {
                in_flight.remove(&key);
            }
            return Err(PolicyDenied::Concurrency);
        }
        *count += 1;
        Ok(Some(Slot {
            key,
            in_flight: Arc::clone(&self.in_flight),
        }))
    }

    /// Requests holding a slot for `uid` right now (for tests).
    pub fn in_flight(&self, uid: Option<u32>) -> u32 {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&uid)
            .copied()
            .unwrap_or(0)
    }
}

// === impl Slot ===

impl Drop for Slot {
    fn drop(&mut self) {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = in_flight.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_flight.remove(&self.key);
            }
        }
    }
}

// === impl BudgetCharge ===

impl BudgetCharge {
    /// Counts `tokens` in the window holding `now` (a new window starts from zero).
    pub fn charge(&self, tokens: u64, now: u64) {
        let start = self.window.start(now);
        let mut spent = self
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = spent.entry(self.key).or_insert((start, 0));
        if entry.0 != start {
            *entry = (start, 0);
        }
        entry.1 = entry.1.saturating_add(tokens);
    }
}

// === impl PolicyDenied ===

impl PolicyDenied {
    /// The refusal in `dialect`.
    ///
    /// `model_not_allowed` is final (403, `x-should-retry: false`). `user_concurrency_limit`
    /// is a 429 with `Retry-After: 1` and without `x-should-retry: false`: waiting for one of
    /// the user's own requests to finish is exactly what helps. `user_budget_exhausted` is a
    /// 429 with `Retry-After` at the window's end, also without `x-should-retry: false`.
    pub fn response(self, dialect: Dialect) -> Response<ProxyBody> {
        match self {
            PolicyDenied::ModelNotAllowed => error_response(
                dialect,
                StatusCode::FORBIDDEN,
                "model_not_allowed",
                "This local user may not use this model (see the proxy's --config).",
            ),
            PolicyDenied::Concurrency => {
                let mut response = error_response(
                    dialect,
                    StatusCode::TOO_MANY_REQUESTS,
                    "user_concurrency_limit",
                    "This local user already has as many requests in flight as the proxy \
                     allows (max_concurrent); try again when one has finished.",
                );
                let headers = response.headers_mut();
                headers.remove("x-should-retry");
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
            PolicyDenied::BudgetExhausted { retry_after } => {
                let mut response = error_response(
                    dialect,
                    StatusCode::TOO_MANY_REQUESTS,
                    "user_budget_exhausted",
                    "This local user has used their token budget for the current window \
                     (token_budget); Retry-After says when the window ends.",
                );
                let headers = response.headers_mut();
                headers.remove("x-should-retry");
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
                response
            }
        }
    }

    /// The code, for the log.
    pub fn code(self) -> &'static str {
        match self {
            PolicyDenied::ModelNotAllowed => "model_not_allowed",
            PolicyDenied::Concurrency => "user_concurrency_limit",
            PolicyDenied::BudgetExhausted { .. } => "user_budget_exhausted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32) -> Caller {
        Caller { uid, name: None }
    }

    fn policy(models: Option<&[&str]>, max_concurrent: Option<u32>) -> UserPolicy {
        UserPolicy {
            models: models.map(|m| m.iter().map(|g| Glob::new(g).unwrap()).collect()),
            max_concurrent,
            budget: None,
        }
    }

    #[test]
    fn a_users_own_section_wins_over_the_default_which_covers_everyone_else() {
        let mut table = PolicyTable::default();
        table.insert(Some(1001), policy(Some(&["gpt-5*"]), None));
        table.insert(None, policy(None, Some(3)));
        let policies = Policies::new(table);
        let own = policies.for_caller(Some(&caller(1001))).unwrap();
        assert!(own.allows_model(Some("gpt-5.4")));
        assert!(!own.allows_model(Some("o3")));
        assert!(!own.allows_model(None));
        assert_eq!(own.max_concurrent, None);
        let other = policies.for_caller(Some(&caller(1002))).unwrap();
        assert!(other.allows_model(Some("o3")) && other.allows_model(None));
        assert_eq!(other.max_concurrent, Some(3));
        assert_eq!(policies.for_caller(None).unwrap().max_concurrent, Some(3));
        assert!(Policies::new(PolicyTable::default())
            .for_caller(Some(&caller(1)))
            .is_none());
    }

    #[test]
    fn slots_are_counted_per_user_and_released_on_drop() {
        let mut table = PolicyTable::default();
        table.insert(Some(1001), policy(None, Some(2)));
        let policies = Policies::new(table);
        let alice = caller(1001);
        let a = policies.acquire(Some(&alice)).unwrap();
        let b = policies.acquire(Some(&alice)).unwrap();
        assert!(a.is_some() && b.is_some());
        assert_eq!(
            policies.acquire(Some(&alice)).err(),
            Some(PolicyDenied::Concurrency)
        );
        // Another user without a limit holds nothing.
        assert!(policies.acquire(Some(&caller(1002))).unwrap().is_none());
        drop(a);
        assert_eq!(policies.in_flight(Some(1001)), 1);
        let c = policies.acquire(Some(&alice)).unwrap();
        drop((b, c));
        assert_eq!(policies.in_flight(Some(1001)), 0);
        assert!(policies.in_flight.lock().unwrap().is_empty());
    }

    #[test]
    fn refusals_carry_the_contracted_status_and_headers() {
        let r = PolicyDenied::ModelNotAllowed.response(Dialect::Responses);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()["x-should-retry"], "false");
        let r = PolicyDenied::Concurrency.response(Dialect::Responses);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "1");
        assert!(r.headers().get("x-should-retry").is_none());
        let body: serde_json::Value =
            serde_json::from_slice(r.body().full_bytes().unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "user_concurrency_limit");
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        // 2026-11-21T08:30:00Z, a Saturday.
        let now = 1_795_249_800;
        assert_eq!(BudgetWindow::Hour.start(now), 1_795_248_000);
        assert_eq!(BudgetWindow::Day.start(now), 1_795_219_200);
        // 1970-01-01 was a Thursday: 7-day windows start on Thursdays at 00:00 UTC.
        assert_eq!(BudgetWindow::Week.start(now), 1_795_046_400);
        assert_eq!(
            crate::secret::jwt::format_rfc3339(1_795_046_400),
            "2026-11-19T00:00:00Z"
        );
        assert_eq!(BudgetWindow::Days30.start(now) % (30 * 86_400), 0);
        assert_eq!(BudgetWindow::parse("7d"), Some(BudgetWindow::Week));
        assert_eq!(BudgetWindow::parse("2h"), None);
    }

    #[test]
    fn a_budget_refuses_once_reached_until_the_window_ends_and_never_goes_negative() {
        let mut table = PolicyTable::default();
        let mut limited = policy(None, None);
        limited.budget = Some(Budget {
            tokens: 100,
            window: BudgetWindow::Hour,
        });
        table.insert(Some(1001), limited);
        let policies = Policies::new(table);
        let alice = caller(1001);
        let now = 7_200 + 600;
        let first = policies.check_budget(Some(&alice), now).unwrap().unwrap();
        // A second request already in flight when the first one uses the budget up.
        let second = policies.check_budget(Some(&alice), now).unwrap().unwrap();
        first.charge(90, now + 1);
        assert_eq!(
            policies.budget_status(Some(1001), now + 1),
            Some(BudgetStatus {
                budget: 100,
                remaining: 10,
                window_end: 10_800
            })
        );
        second.charge(30, now + 2);
        assert_eq!(
            policies
                .budget_status(Some(1001), now + 2)
                .unwrap()
                .remaining,
            0
        );
        assert_eq!(
            policies.check_budget(Some(&alice), now + 10).err(),
            Some(PolicyDenied::BudgetExhausted { retry_after: 2_990 })
        );
        // Others are unaffected; the next window starts from zero.
        assert!(policies
            .check_budget(Some(&caller(1002)), now)
            .unwrap()
            .is_none());
        assert!(policies
            .check_budget(Some(&alice), 10_800)
            .unwrap()
            .is_some());
        assert_eq!(
            policies
                .budget_status(Some(1001), 10_800)
                .unwrap()
                .remaining,
            100
        );
        let r = PolicyDenied::BudgetExhausted { retry_after: 2_990 }.response(Dialect::Anthropic);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "2990");
        assert!(r.headers().get("x-should-retry").is_none());
    }
}
