//! The accounts the proxy sends requests with: their state, selection and health.
//!
//! Each account has a state machine ([`state`]), selection is a pure function ([`select`]),
//! and remaining quota is learned from response headers ([`quota`]). Secrets stay in the
//! locked arena; only the upstream's key injector and the redactor read them. Logs and
//! `/health` name an account by its index in intake order, never by anything secret.

pub mod quota;
pub mod select;
pub mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::secret::{Credential, Credentials, SecretArena, SecretRange};
use select::Candidate;
use state::{AccountStatus, Verdict};

/// Sessions remembered for affinity; beyond this the map starts over (a session then simply
/// lands on a fresh account once).
pub const MAX_SESSIONS: usize = 65_536;

/// What kind of credential an account holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    ApiKey,
}

/// One account. No `Debug`: it refers to a secret.
pub struct Account {
    /// Position in intake order; the only name logs and `/health` use.
    pub index: usize,
    pub kind: AccountKind,
    secret: SecretRange,
    status: Mutex<AccountStatus>,
    /// Lock-free copy of what selection needs, refreshed whenever `status` changes: nanoseconds
    /// after the pool's epoch from which the account is available (0: now; `u64::MAX`: never).
    available_from: AtomicU64,
    /// Remaining quota in thousandths (1000 when unknown).
    remaining_milli: AtomicU32,
}

impl Account {
    /// Refreshes the lock-free snapshot from `status` (call with the lock held).
    fn publish(&self, status: &AccountStatus, epoch: Instant, now: Instant) {
        let from = match status.unavailable_until(now) {
            None => 0,
            Some(None) => u64::MAX,
            Some(Some(until)) => u64::try_from((until - epoch).as_nanos()).unwrap_or(u64::MAX),
        };
        self.available_from.store(from, Ordering::Release);
        let remaining = status.remaining.unwrap_or(1.0).clamp(0.0, 1.0);
        self.remaining_milli
            .store((remaining * 1000.0) as u32, Ordering::Release);
    }

    fn status(&self) -> MutexGuard<'_, AccountStatus> {
        // A panic while holding this lock cannot leave the status half-written (plain copies),
        // so a poisoned lock is still usable.
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The outcome of choosing an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Account(usize),
    /// Every account not yet tried is cooling down; the first is free after `wait`.
    AllCooling {
        wait: Duration,
    },
    /// Every account not yet tried is disabled (or there are none).
    NoneUsable,
}

/// All accounts, plus the arena that holds their secrets.
pub struct Pool {
    arena: Arc<SecretArena>,
    accounts: Vec<Account>,
    /// Time zero of the accounts' `available_from`.
    epoch: Instant,
    cursor: AtomicUsize,
    affinity: Mutex<HashMap<u64, usize>>,
}

/// The `/health` document (DESIGN.md §8).
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub accounts: Vec<AccountHealth>,
}

#[derive(Debug, Serialize)]
pub struct AccountHealth {
    pub index: usize,
    pub kind: AccountKind,
    pub state: &'static str,
    pub cooldown_remaining_s: Option<u64>,
    pub last_status: Option<u16>,
    pub reason: Option<&'static str>,
}

impl Pool {
    /// Builds accounts from parsed credentials.
    pub fn new(credentials: Credentials) -> Self {
        let Credentials { arena, accounts } = credentials;
        let accounts = accounts
            .into_iter()
            .enumerate()
            .map(|(index, credential)| {
                let Credential::ApiKey { .. } = credential;
                Account {
                    index,
                    kind: AccountKind::ApiKey,
                    secret: credential.secret_range(),
                    status: Mutex::new(AccountStatus::default()),
                    available_from: AtomicU64::new(0),
                    remaining_milli: AtomicU32::new(1000),
                }
            })
            .collect();
        Pool {
            arena,
            accounts,
            epoch: Instant::now(),
            cursor: AtomicUsize::new(0),
            affinity: Mutex::new(HashMap::new()),
        }
    }

    /// The locked arena holding every account's secret, and each account's range in it (in
    /// account order), for the upstream's key injector.
    pub fn secret_ranges(&self) -> (Arc<SecretArena>, Vec<SecretRange>) {
        (
            Arc::clone(&self.arena),
            self.accounts.iter().map(|a| a.secret).collect(),
        )
    }

    /// Every account's bare secret in account order, for redacting echoes in upstream error
    /// bodies.
    pub fn secrets(&self) -> impl Iterator<Item = &[u8]> + Clone {
        self.accounts.iter().map(|a| self.arena.get(a.secret))
    }

    /// Chooses the account for the next attempt of a request of `session` (if it has one),
    /// skipping the accounts in `skip`.
    pub fn pick(&self, session: Option<u64>, skip: &[usize], now: Instant) -> Pick {
        let now_ns =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let candidates: Vec<Candidate> = self
            .accounts
            .iter()
            .map(|a| Candidate {
                available: a.available_from.load(Ordering::Acquire) <= now_ns,
                remaining: f64::from(a.remaining_milli.load(Ordering::Acquire)) / 1000.0,
            })
            .collect();
        let affinity = session.and_then(|key| self.affinity_lock().get(&key).copied());
        let cursor = self.cursor.fetch_add(1, Ordering::Relaxed);
        if let Some(index) = select::select(&candidates, cursor, affinity, skip) {
            return Pick::Account(index);
        }
        // A cooldown after a transient server error only steers traffic elsewhere: with no
        // other account, use the one that recovers first rather than refuse the request.
        let transient = self
            .accounts
            .iter()
            .filter(|a| !skip.contains(&a.index))
            .filter_map(|a| {
                let s = a.status();
                s.is_last_resort(now)
                    .then(|| (s.cooling_until(now), a.index))
            })
            .min();
        if let Some((_, index)) = transient {
            return Pick::Account(index);
        }
        let earliest = self
            .accounts
            .iter()
            .filter(|a| !skip.contains(&a.index))
            .filter_map(|a| a.status().cooling_until(now))
            .min();
        match earliest {
            Some(until) => Pick::AllCooling { wait: until - now },
            None => Pick::NoneUsable,
        }
    }

    /// True when account `index` may take a retry at `now`: available, or cooling only
    /// after a transient server error (which steers new requests elsewhere but does not
    /// forbid a retry). A limit announced meanwhile by another request forbids it.
    pub fn may_retry_on(&self, index: usize, now: Instant) -> bool {
        self.accounts.get(index).is_some_and(|a| {
            let s = a.status();
            s.is_available(now) || s.is_last_resort(now)
        })
    }

    fn affinity_lock(&self) -> MutexGuard<'_, HashMap<u64, usize>> {
        self.affinity
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records what an attempt on account `index` said: its verdict, the response status and
    /// the quota headers' reading. A served request binds its session to the account.
    pub fn record(
        &self,
        index: usize,
        verdict: Verdict,
        status: Option<u16>,
        remaining: Option<f64>,
        session: Option<u64>,
        now: Instant,
    ) {
        let Some(account) = self.accounts.get(index) else {
            return;
        };
        {
            let mut s = account.status();
            s.record(verdict, now);
            if status.is_some() {
                s.last_status = status;
            }
            if remaining.is_some() {
                s.remaining = remaining;
            }
            account.publish(&s, self.epoch, now);
        }
        if let (Verdict::Served, Some(key)) = (verdict, session) {
            let mut map = self.affinity_lock();
            if map.len() >= MAX_SESSIONS && !map.contains_key(&key) {
                map.clear();
            }
            map.insert(key, index);
        }
    }

    /// The `/health` summary: never a secret or an account identifier.
    pub fn health(&self, now: Instant) -> Health {
        let accounts: Vec<AccountHealth> = self
            .accounts
            .iter()
            .map(|a| {
                let s = a.status();
                let (state, reason, cooldown) = s.describe(now);
                AccountHealth {
                    index: a.index,
                    kind: a.kind,
                    state,
                    cooldown_remaining_s: cooldown,
                    last_status: s.last_status,
                    reason,
                }
            })
            .collect();
        let active = accounts.iter().filter(|a| a.state == "active").count();
        let status = if active == 0 {
            "unavailable"
        } else if active == accounts.len() {
            "ok"
        } else {
            "degraded"
        };
        Health { status, accounts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::IntakeBuffer;

    fn pool(keys: &'static [u8]) -> Pool {
        let mut intake = IntakeBuffer::new(1 << 20).unwrap();
        intake.read_slice(keys).unwrap();
        Pool::new(intake.into_credentials().unwrap())
    }

    #[test]
    fn secrets_are_the_bare_keys_in_account_order() {
        let pool = pool(b"sk-one\nsk-two\n");
        assert_eq!(
            pool.secrets().collect::<Vec<_>>(),
            vec![&b"sk-one"[..], &b"sk-two"[..]]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn health_names_accounts_by_index_and_shows_states() {
        let pool = pool(b"sk-canary-1\nsk-canary-2\nsk-canary-3\n");
        let now = Instant::now();
        pool.record(0, Verdict::Served, Some(200), None, None, now);
        pool.record(
            1,
            Verdict::RateLimited {
                retry_after: Some(Duration::from_secs(30)),
            },
            Some(429),
            None,
            None,
            now,
        );
        pool.record(2, Verdict::Unauthorized, Some(401), None, None, now);
        let json = serde_json::to_value(pool.health(now)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"status":"degraded","accounts":[
                {"index":0,"kind":"api_key","state":"active","cooldown_remaining_s":null,"last_status":200,"reason":null},
                {"index":1,"kind":"api_key","state":"cooling_down","cooldown_remaining_s":30,"last_status":429,"reason":"rate_limited"},
                {"index":2,"kind":"api_key","state":"disabled","cooldown_remaining_s":null,"last_status":401,"reason":"unauthorized"}
            ]})
        );
        assert!(!json.to_string().contains("canary"));
    }

    #[tokio::test(start_paused = true)]
    async fn pick_reports_cooling_with_the_shortest_wait_and_none_usable() {
        let pool = pool(b"k1\nk2\n");
        let now = Instant::now();
        pool.record(
            0,
            Verdict::RateLimited {
                retry_after: Some(Duration::from_secs(20)),
            },
            Some(429),
            None,
            None,
            now,
        );
        pool.record(
            1,
            Verdict::RateLimited {
                retry_after: Some(Duration::from_secs(5)),
            },
            Some(429),
            None,
            None,
            now,
        );
        assert_eq!(
            pool.pick(None, &[], now),
            Pick::AllCooling {
                wait: Duration::from_secs(5)
            }
        );
        assert_eq!(pool.health(now).status, "unavailable");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(pool.pick(None, &[], Instant::now()), Pick::Account(1));
        let pool2 = self::pool(b"k1\n");
        pool2.record(0, Verdict::Unauthorized, Some(401), None, None, now);
        assert_eq!(pool2.pick(None, &[], now), Pick::NoneUsable);
    }

    #[tokio::test(start_paused = true)]
    async fn an_account_cooling_after_a_server_error_is_still_used_when_it_is_the_last() {
        let pool = pool(b"k1\nk2\n");
        let now = Instant::now();
        pool.record(0, Verdict::ServerError, Some(503), None, None, now);
        assert_eq!(
            pool.pick(None, &[], now),
            Pick::Account(1),
            "the healthy one first"
        );
        pool.record(1, Verdict::ServerError, Some(500), None, None, now);
        assert!(
            matches!(pool.pick(None, &[], now), Pick::Account(_)),
            "never refused for 5xx alone"
        );
        pool.record(
            1,
            Verdict::UsageLimit { reset_after: None },
            Some(429),
            None,
            None,
            now,
        );
        assert_eq!(pool.pick(None, &[], now), Pick::Account(0));
        assert_eq!(
            pool.pick(None, &[0], now),
            Pick::AllCooling {
                wait: Duration::from_secs(60)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn selection_sees_the_later_of_a_limit_and_a_5xx_cooldown() {
        let pool = pool(b"k1\nk2\n");
        let now = Instant::now();
        pool.record(0, Verdict::ServerError, Some(503), None, None, now);
        pool.record(
            0,
            Verdict::RateLimited {
                retry_after: Some(Duration::from_secs(2)),
            },
            Some(429),
            None,
            None,
            now,
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        // The limit is over, the 15 s soft cooldown is not: the other account is preferred.
        for _ in 0..4 {
            assert_eq!(pool.pick(None, &[], Instant::now()), Pick::Account(1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_stays_on_its_account_while_available() {
        let pool = pool(b"k1\nk2\nk3\n");
        let now = Instant::now();
        let Pick::Account(first) = pool.pick(Some(42), &[], now) else {
            panic!()
        };
        pool.record(first, Verdict::Served, Some(200), None, Some(42), now);
        for _ in 0..10 {
            assert_eq!(pool.pick(Some(42), &[], now), Pick::Account(first));
        }
        pool.record(first, Verdict::ServerError, Some(503), None, None, now);
        let Pick::Account(other) = pool.pick(Some(42), &[], now) else {
            panic!()
        };
        assert_ne!(other, first, "moves while its account cools down");
    }
}
