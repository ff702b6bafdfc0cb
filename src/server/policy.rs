//! Per-user policy from `--config` (`[users.NAME]`, `[users."*"]`): which models a local user
//! may ask for, and how many of their requests may be in flight at once.
//!
//! The caller is the uid the kernel reported for the connection ([`super::peer`]). A user's own
//! section applies to them; `"*"` applies to everyone without one (a caller whose owner could
//! not be determined included). Models are matched as they go upstream, after aliases and
//! suffixes (docs/user-policy.md says why). A concurrency slot is held by the response body, so
//! a stream holds it until its last byte is sent or the client goes away.

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
        caller
            .and_then(|c| self.by_uid.get(&c.uid))
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
        }
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

// === impl PolicyDenied ===

impl PolicyDenied {
    /// The refusal in `dialect`.
    ///
    /// `model_not_allowed` is final (403, `x-should-retry: false`). `user_concurrency_limit`
    /// is a 429 with `Retry-After: 1` and without `x-should-retry: false`: waiting for one of
    /// the user's own requests to finish is exactly what helps.
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
        }
    }

    /// The code, for the log.
    pub fn code(self) -> &'static str {
        match self {
            PolicyDenied::ModelNotAllowed => "model_not_allowed",
            PolicyDenied::Concurrency => "user_concurrency_limit",
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
}
