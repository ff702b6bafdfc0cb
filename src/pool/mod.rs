//! The accounts the proxy sends requests with: their state, selection and health.
//!
//! Each account has a state machine ([`state`]), selection is a pure function ([`select`]),
//! and remaining quota is learned from response headers ([`quota`]). Secrets stay in locked
//! memory ([`token`]); only the upstream's key injector, the token refresher and the
//! redactor read them. Logs and `/health` name an account by its index in intake order,
//! never by anything secret.
//!
//! The list of accounts only grows: accounts from `--auth-dir` files are appended as files
//! appear, and an account whose file disappears is marked removed (never selected, not shown),
//! so an index always names the same account.

pub mod auth_dir;
pub mod quota;
pub mod select;
pub mod state;
pub mod token;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use http::HeaderValue;
use serde::Serialize;
use tokio::time::Instant;

use crate::secret::{ArenaError, Credential, Credentials, SecretRange};
use select::Candidate;
use state::{AccountStatus, Verdict};
pub use token::{AuthForm, Swaps, Token};

/// Sessions remembered for affinity; beyond this the map starts over (a session then simply
/// lands on a fresh account once).
pub const MAX_SESSIONS: usize = 65_536;
/// Up to this many accounts, choosing one allocates nothing.
const FEW_ACCOUNTS: usize = 16;

/// What kind of credential an account holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    ApiKey,
    Chatgpt,
}

/// What the pool knows of one provider (DESIGN §9): enough to place each credential with its
/// provider and to put its secret in the right header. (The pool does not depend on the
/// upstream layer that knows the rest; `upstream::provider` builds these.)
#[derive(Debug, Clone)]
pub struct ProviderSlot {
    /// The provider's name (logs, `/health`, metric labels). Made `'static` once at start:
    /// the providers are fixed for the life of the process.
    pub name: &'static str,
    /// How its credentials travel upstream.
    pub form: AuthForm,
    /// The kind of credential it takes.
    pub takes: AccountKind,
    /// One of the providers that exist without a config file.
    pub implicit: bool,
    /// It takes no credential (a keyless `chat` provider): the pool gives it one account
    /// without a secret, so selection, cooldowns and `/health` work as for any other.
    pub keyless: bool,
}

/// Why a credential has no provider in the pool. Names the provider, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("account {account}: unknown provider `{provider}`")]
    UnknownProvider { account: usize, provider: String },
    #[error("account {account}: provider `{provider}` does not take this kind of credential")]
    WrongCredential { account: usize, provider: String },
}

/// The providers a request may use: one (routed by its model), or, without a config file,
/// the implicit ones together (today's pool of API keys and ChatGPT accounts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Provider(usize),
    Implicit,
}

/// One account. No `Debug`: it refers to secrets.
pub struct Account {
    /// Position in intake order; the only name logs and `/health` use.
    pub index: usize,
    pub kind: AccountKind,
    /// Its provider: an index into the pool's [`ProviderSlot`]s.
    pub provider: usize,
    token: RwLock<Arc<Token>>,
    /// The swap of the token before the current one, removed at the next rotation.
    previous_swap: Mutex<Option<u64>>,
    /// `chatgpt-account-id` for ChatGPT accounts (an identifier; never logged or shown).
    pub account_id: RwLock<Option<HeaderValue>>,
    /// The `--auth-dir` file the account came from.
    pub source: Option<PathBuf>,
    /// One refresh at a time per account: refresh tokens are single-use.
    pub refresh_lock: tokio::sync::Mutex<()>,
    removed: AtomicBool,
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
            _ if self.removed.load(Ordering::Acquire) => u64::MAX,
            None => 0,
            Some(None) => u64::MAX,
            Some(Some(until)) => u64::try_from((until - epoch).as_nanos()).unwrap_or(u64::MAX),
        };
        self.available_from.store(from, Ordering::Release);
        let remaining = status.remaining.unwrap_or(1.0).clamp(0.0, 1.0);
        self.remaining_milli
            .store((remaining * 1000.0) as u32, Ordering::Release);
    }

    pub fn status(&self) -> MutexGuard<'_, AccountStatus> {
        // A panic while holding this lock cannot leave the status half-written (plain copies),
        // so a poisoned lock is still usable.
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current token.
    pub fn token(&self) -> Arc<Token> {
        Arc::clone(&self.token.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// True once the account's file has gone.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// The `chatgpt-account-id` header value, if any.
    pub fn account_id(&self) -> Option<HeaderValue> {
        self.account_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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

/// All accounts and the swaps registry their tokens are registered with.
pub struct Pool {
    accounts: RwLock<Arc<Vec<Arc<Account>>>>,
    providers: Vec<ProviderSlot>,
    swaps: Arc<dyn Swaps>,
    /// Time zero of the accounts' `available_from`.
    epoch: Instant,
    cursor: AtomicUsize,
    affinity: Mutex<HashMap<u64, usize>>,
}

/// The pool part of the `/health` document (README.md, "Server-info file and `/health`").
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub accounts: Vec<AccountHealth>,
}

#[derive(Debug, Serialize)]
pub struct AccountHealth {
    pub index: usize,
    pub kind: AccountKind,
    /// The name of the account's provider.
    pub provider: &'static str,
    pub state: &'static str,
    pub cooldown_remaining_s: Option<u64>,
    pub last_status: Option<u16>,
    pub reason: Option<&'static str>,
}

/// A header value for a ChatGPT account id (visible ASCII, checked at intake).
fn account_id_header(id: Option<&str>) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(id?).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The providers that exist without a config file: `openai` (API keys) and `chatgpt`.
pub fn implicit_slots() -> Vec<ProviderSlot> {
    vec![
        ProviderSlot {
            name: "openai",
            form: AuthForm::Bearer,
            takes: AccountKind::ApiKey,
            implicit: true,
            keyless: false,
        },
        ProviderSlot {
            name: "chatgpt",
            form: AuthForm::Bearer,
            takes: AccountKind::Chatgpt,
            implicit: true,
            keyless: false,
        },
    ]
}

/// The provider of each credential, in order (`account` in errors counts from 1).
pub fn place(
    providers: &[ProviderSlot],
    credentials: &[Credential],
) -> Result<Vec<usize>, PlacementError> {
    credentials
        .iter()
        .enumerate()
        .map(|(i, credential)| {
            let name = credential.provider();
            let kind = match credential {
                Credential::ApiKey { .. } => AccountKind::ApiKey,
                Credential::Chatgpt(_) => AccountKind::Chatgpt,
            };
            let Some(index) = providers.iter().position(|p| p.name == name) else {
                return Err(PlacementError::UnknownProvider {
                    account: i + 1,
                    provider: name.to_string(),
                });
            };
            // A keyless provider takes none: a key for it would never be sent.
            if providers[index].takes != kind || providers[index].keyless {
                return Err(PlacementError::WrongCredential {
                    account: i + 1,
                    provider: name.to_string(),
                });
            }
            Ok(index)
        })
        .collect()
}

impl Pool {
    /// Builds accounts from parsed credentials, registering their tokens with `swaps`; every
    /// account belongs to the implicit providers (`openai`, `chatgpt`).
    pub fn new(credentials: Credentials, swaps: Arc<dyn Swaps>) -> Result<Self, ArenaError> {
        Self::with_providers(credentials, swaps, implicit_slots())
    }

    /// Builds accounts of `providers` from parsed credentials (a credential no provider takes
    /// is left out with a warning: startup refuses such input before, see [`place`]).
    pub fn with_providers(
        credentials: Credentials,
        swaps: Arc<dyn Swaps>,
        providers: Vec<ProviderSlot>,
    ) -> Result<Self, ArenaError> {
        let pool = Pool {
            providers,
            accounts: RwLock::new(Arc::new(Vec::new())),
            swaps,
            epoch: Instant::now(),
            cursor: AtomicUsize::new(0),
            affinity: Mutex::new(HashMap::new()),
        };
        let arena = Arc::clone(&credentials.arena);
        pool.add(credentials, None)?;
        pool.add_keyless(&arena);
        Ok(pool)
    }

    /// Appends one account without a secret for each keyless provider (after the accounts
    /// from stdin, so their indices keep intake order). Its token has no placeholder: no
    /// credential header is set for it (`upstream::forward`).
    fn add_keyless(&self, arena: &Arc<crate::secret::SecretArena>) {
        let mut list = self.accounts.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<Arc<Account>> = list.as_ref().clone();
        for (provider, slot) in self.providers.iter().enumerate() {
            if !slot.keyless {
                continue;
            }
            let index = next.len();
            next.push(Arc::new(Account {
                index,
                kind: AccountKind::ApiKey,
                provider,
                token: RwLock::new(Arc::new(Token::registered(
                    Arc::clone(arena),
                    None,
                    None,
                    None,
                    slot.form,
                    None,
                ))),
                previous_swap: Mutex::new(None),
                account_id: RwLock::new(None),
                source: None,
                refresh_lock: tokio::sync::Mutex::new(()),
                removed: AtomicBool::new(false),
                status: Mutex::new(AccountStatus::default()),
                available_from: AtomicU64::new(0),
                remaining_milli: AtomicU32::new(1000),
            }));
        }
        *list = Arc::new(next);
    }

    /// Appends the accounts in `credentials` (from `source`, an `--auth-dir` file, if given);
    /// returns their indices.
    pub fn add(
        &self,
        credentials: Credentials,
        source: Option<PathBuf>,
    ) -> Result<Vec<usize>, ArenaError> {
        let Credentials { arena, accounts } = credentials;
        // Each credential with its provider; one no provider takes is left out.
        let placed: Vec<(Credential, usize)> = accounts
            .into_iter()
            .enumerate()
            .filter_map(|(i, credential)| {
                match place(&self.providers, std::slice::from_ref(&credential)) {
                    Ok(found) => found.first().map(|p| (credential, *p)),
                    Err(e) => {
                        let e = match e {
                            PlacementError::UnknownProvider { provider, .. } => {
                                PlacementError::UnknownProvider {
                                    account: i + 1,
                                    provider,
                                }
                            }
                            PlacementError::WrongCredential { provider, .. } => {
                                PlacementError::WrongCredential {
                                    account: i + 1,
                                    provider,
                                }
                            }
                        };
                        tracing::warn!(error = %e, "credential left out");
                        None
                    }
                }
            })
            .collect();
        let secrets: Vec<(SecretRange, AuthForm)> = placed
            .iter()
            .filter_map(|(c, p)| Some((c.secret_range()?, self.providers[*p].form)))
            .collect();
        let mut swaps = self.swaps.add(&arena, &secrets)?.into_iter();
        let mut list = self.accounts.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<Arc<Account>> = list.as_ref().clone();
        let mut added = Vec::new();
        for (credential, provider) in placed {
            let swap = credential.secret_range().and_then(|_| swaps.next());
            let form = self.providers[provider].form;
            let (kind, token, account_id) = match &credential {
                Credential::ApiKey { .. } => (
                    AccountKind::ApiKey,
                    Token::registered(
                        Arc::clone(&arena),
                        credential.secret_range(),
                        None,
                        swap,
                        form,
                        None,
                    ),
                    None,
                ),
                Credential::Chatgpt(c) => (
                    AccountKind::Chatgpt,
                    Token::registered(
                        Arc::clone(&arena),
                        c.access,
                        c.refresh,
                        swap,
                        form,
                        c.expires_at,
                    ),
                    account_id_header(c.account_id.as_deref()),
                ),
            };
            let index = next.len();
            next.push(Arc::new(Account {
                index,
                kind,
                provider,
                token: RwLock::new(Arc::new(token)),
                previous_swap: Mutex::new(None),
                account_id: RwLock::new(account_id),
                source: source.clone(),
                refresh_lock: tokio::sync::Mutex::new(()),
                removed: AtomicBool::new(false),
                status: Mutex::new(AccountStatus::default()),
                available_from: AtomicU64::new(0),
                remaining_milli: AtomicU32::new(1000),
            }));
            added.push(index);
        }
        *list = Arc::new(next);
        Ok(added)
    }

    /// Every account (removed ones included: indices are positions).
    pub fn accounts(&self) -> Arc<Vec<Arc<Account>>> {
        Arc::clone(&self.accounts.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// One account by index.
    pub fn account(&self, index: usize) -> Option<Arc<Account>> {
        self.accounts().get(index).cloned()
    }

    /// Installs a new token generation on account `index` (after a refresh or a changed
    /// account file). The previous generation's swap stays registered until the next one, so
    /// requests already in flight still go out with a real token.
    pub fn replace_token(
        &self,
        index: usize,
        arena: Arc<crate::secret::SecretArena>,
        access: Option<SecretRange>,
        refresh: Option<SecretRange>,
        expires_at: Option<i64>,
    ) -> Result<Arc<Token>, ArenaError> {
        let Some(account) = self.account(index) else {
            return Err(ArenaError::Map(std::io::Error::other("no such account")));
        };
        let generation = account.token().generation + 1;
        let token = Arc::new(Token::new(
            self.swaps.as_ref(),
            arena,
            access,
            refresh,
            expires_at,
            generation,
        )?);
        let old = std::mem::replace(
            &mut *account.token.write().unwrap_or_else(|p| p.into_inner()),
            Arc::clone(&token),
        );
        let mut previous = account
            .previous_swap
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(stale) = previous.take() {
            self.swaps.remove(stale);
        }
        *previous = old.swap_id();
        Ok(token)
    }

    /// Sets (or clears) a ChatGPT account's `chatgpt-account-id`.
    pub fn set_account_id(&self, index: usize, id: Option<&str>) {
        if let Some(account) = self.account(index) {
            *account
                .account_id
                .write()
                .unwrap_or_else(|p| p.into_inner()) = account_id_header(id);
        }
    }

    /// Marks account `index` removed (its file is gone): never selected again, not shown.
    pub fn remove(&self, index: usize) {
        if let Some(account) = self.account(index) {
            account.removed.store(true, Ordering::Release);
            let s = account.status();
            account.publish(&s, self.epoch, Instant::now());
        }
    }

    /// Applies `change` to account `index`'s status and republishes the selection snapshot.
    pub fn update_status(&self, index: usize, change: impl FnOnce(&mut AccountStatus)) {
        if let Some(account) = self.account(index) {
            let mut s = account.status();
            change(&mut s);
            account.publish(&s, self.epoch, Instant::now());
        }
    }

    /// Every account's current token, for redacting echoes of any secret in error bodies.
    pub fn tokens(&self) -> Vec<Arc<Token>> {
        self.accounts().iter().map(|a| a.token()).collect()
    }

    /// The providers, in routing order.
    pub fn providers(&self) -> &[ProviderSlot] {
        &self.providers
    }

    /// True when `account` may serve a request for `target`.
    pub fn serves(&self, target: Target, account: &Account) -> bool {
        match target {
            Target::Provider(p) => account.provider == p,
            Target::Implicit => self
                .providers
                .get(account.provider)
                .is_some_and(|p| p.implicit),
        }
    }

    /// True when provider `index` has an account that is not removed.
    pub fn has_accounts(&self, index: usize) -> bool {
        self.accounts()
            .iter()
            .any(|a| a.provider == index && !a.is_removed())
    }

    /// Chooses the account for the next attempt of a request of `session` (if it has one)
    /// among the accounts of `target`, skipping the accounts in `skip`. Pool-wide state
    /// (cursor, affinity) is shared; an affinity to another provider's account is ignored.
    pub fn pick(&self, session: Option<u64>, skip: &[usize], now: Instant) -> Pick {
        self.pick_for(Target::Implicit, session, skip, now)
    }

    /// [`Pool::pick`] among the accounts of `target`.
    pub fn pick_for(
        &self,
        target: Target,
        session: Option<u64>,
        skip: &[usize],
        now: Instant,
    ) -> Pick {
        let accounts = self.accounts();
        let now_ns =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let candidate = |a: &Arc<Account>| Candidate {
            available: self.serves(target, a) && a.available_from.load(Ordering::Acquire) <= now_ns,
            remaining: f64::from(a.remaining_milli.load(Ordering::Acquire)) / 1000.0,
        };
        // A few accounts (the usual case) are judged on the stack: no allocation per request.
        let mut few = [Candidate {
            available: false,
            remaining: 0.0,
        }; FEW_ACCOUNTS];
        let many: Vec<Candidate>;
        let candidates: &[Candidate] = if accounts.len() <= FEW_ACCOUNTS {
            for (slot, a) in few.iter_mut().zip(accounts.iter()) {
                *slot = candidate(a);
            }
            &few[..accounts.len()]
        } else {
            many = accounts.iter().map(candidate).collect();
            &many
        };
        let affinity = session.and_then(|key| self.affinity_lock().get(&key).copied());
        let cursor = self.cursor.fetch_add(1, Ordering::Relaxed);
        if let Some(index) = select::select(candidates, cursor, affinity, skip) {
            return Pick::Account(index);
        }
        let open = || {
            accounts
                .iter()
                .filter(|a| !a.is_removed() && !skip.contains(&a.index) && self.serves(target, a))
        };
        // A cooldown after a transient server error, or a refresh in progress, only steers
        // traffic elsewhere: with no other account, use the one that recovers first rather
        // than refuse the request (a refreshing account first: the request waits for it).
        let transient = open()
            .filter_map(|a| {
                let s = a.status();
                s.is_last_resort(now)
                    .then(|| (s.cooling_until(now), a.index))
            })
            .min();
        if let Some((_, index)) = transient {
            return Pick::Account(index);
        }
        let earliest = open().filter_map(|a| a.status().cooling_until(now)).min();
        match earliest {
            Some(until) => Pick::AllCooling { wait: until - now },
            None => Pick::NoneUsable,
        }
    }

    /// True when account `index` may take a retry at `now`: available, or cooling only
    /// after a transient server error (which steers new requests elsewhere but does not
    /// forbid a retry). A limit announced meanwhile by another request forbids it.
    pub fn may_retry_on(&self, index: usize, now: Instant) -> bool {
        self.account(index).is_some_and(|a| {
            let s = a.status();
            !a.is_removed() && (s.is_available(now) || s.is_last_resort(now))
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
        let Some(account) = self.account(index) else {
            return;
        };
        {
            let mut s = account.status();
            s.record(verdict, now);
            if status.is_some() {
                s.last_status = status;
            }
            s.observe_quota(verdict, remaining);
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
            .accounts()
            .iter()
            .filter(|a| !a.is_removed())
            .map(|a| {
                let s = a.status();
                let (state, reason, cooldown) = s.describe(now);
                AccountHealth {
                    index: a.index,
                    kind: a.kind,
                    provider: self.providers.get(a.provider).map_or("unknown", |p| p.name),
                    state,
                    cooldown_remaining_s: cooldown,
                    last_status: s.last_status,
                    reason,
                }
            })
            .collect();
        let active = accounts.iter().filter(|a| a.state == "active").count();
        let usable = accounts
            .iter()
            .filter(|a| {
                matches!(a.state, "active" | "refreshing") || a.reason == Some("server_error")
            })
            .count();
        let status = if usable == 0 {
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

    /// Swaps that hand out numbered placeholders (the real ones need the HTTP layer).
    #[derive(Default)]
    pub(crate) struct CountingSwaps {
        next: AtomicU64,
        pub removed: Mutex<Vec<u64>>,
    }

    impl Swaps for CountingSwaps {
        fn add(
            &self,
            _arena: &Arc<crate::secret::SecretArena>,
            ranges: &[(SecretRange, AuthForm)],
        ) -> Result<Vec<(u64, HeaderValue)>, ArenaError> {
            Ok(ranges
                .iter()
                .map(|_| {
                    let id = self.next.fetch_add(1, Ordering::Relaxed);
                    (
                        id,
                        HeaderValue::from_str(&format!("Bearer placeholder-{id}")).unwrap(),
                    )
                })
                .collect())
        }
        fn remove(&self, id: u64) {
            self.removed.lock().unwrap().push(id);
        }
    }

    fn pool(keys: &'static [u8]) -> Pool {
        let mut intake = IntakeBuffer::new(1 << 20).unwrap();
        intake.read_slice(keys).unwrap();
        Pool::new(
            intake.into_credentials().unwrap(),
            Arc::new(CountingSwaps::default()),
        )
        .unwrap()
    }

    #[test]
    fn secrets_are_the_bare_keys_in_account_order() {
        let pool = pool(b"sk-one\nsk-two\n");
        let tokens = pool.tokens();
        let secrets: Vec<&[u8]> = tokens.iter().filter_map(|t| t.secret()).collect();
        assert_eq!(secrets, vec![&b"sk-one"[..], &b"sk-two"[..]]);
    }

    #[test]
    fn a_replaced_token_keeps_one_older_swap_for_requests_in_flight() {
        let swaps = Arc::new(CountingSwaps::default());
        let mut intake = IntakeBuffer::new(1 << 20).unwrap();
        intake
            .read_slice(br#"{"access_token":"at-0","refresh_token":"rt-0"}"#)
            .unwrap();
        let pool = Pool::new(intake.into_credentials().unwrap(), swaps.clone()).unwrap();
        let account = pool.account(0).unwrap();
        assert_eq!(account.kind, AccountKind::Chatgpt);
        let first = account.token().swap_id();
        for generation in 1..=2u64 {
            let mut arena = crate::secret::SecretArena::with_capacity(16).unwrap();
            let access = arena.push_concat(&[b"at-new"]);
            pool.replace_token(0, Arc::new(arena), access, None, Some(1))
                .unwrap();
            assert_eq!(account.token().generation, generation);
        }
        assert_eq!(*swaps.removed.lock().unwrap(), vec![first.unwrap()]);
        assert_eq!(account.token().secret(), Some(&b"at-new"[..]));
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
                {"index":0,"kind":"api_key","provider":"openai","state":"active","cooldown_remaining_s":null,"last_status":200,"reason":null},
                {"index":1,"kind":"api_key","provider":"openai","state":"cooling_down","cooldown_remaining_s":30,"last_status":429,"reason":"rate_limited"},
                {"index":2,"kind":"api_key","provider":"openai","state":"disabled","cooldown_remaining_s":null,"last_status":401,"reason":"unauthorized"}
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
