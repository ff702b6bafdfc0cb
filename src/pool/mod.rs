//! The accounts the proxy can send requests with, and their health.
//!
//! This release serves one API-key account; the type is shaped for the pool (several
//! accounts, states, selection) without exposing any secret: an [`Account`] hands out only a
//! sensitive `Authorization` value that borrows the locked arena, and the bare secret for
//! redacting echoes of it.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use http::HeaderValue;
use serde::Serialize;

use crate::secret::{Credential, Credentials, SecretArena, SecretRange};

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
    authorization: HeaderValue,
    secret: SecretRange,
    /// Status of the last upstream response on this account (0: none yet).
    last_status: AtomicU16,
}

impl Account {
    /// `Authorization: Bearer …`, marked sensitive, sharing the locked bytes (no copy).
    pub fn authorization(&self) -> HeaderValue {
        self.authorization.clone()
    }

    /// Remembers the status of an upstream response for `/health`.
    pub fn record_status(&self, status: u16) {
        self.last_status.store(status, Ordering::Relaxed);
    }
}

/// All accounts, plus the arena that holds their secrets.
pub struct Pool {
    arena: Arc<SecretArena>,
    accounts: Vec<Account>,
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

/// The pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("a credential is not usable as an HTTP header value")]
    InvalidHeader,
}

impl Pool {
    /// Builds accounts from parsed credentials.
    pub fn new(credentials: Credentials) -> Result<Self, PoolError> {
        let Credentials { arena, accounts } = credentials;
        let accounts = accounts
            .into_iter()
            .enumerate()
            .map(|(index, credential)| {
                let Credential::ApiKey { bearer } = credential;
                let mut authorization = HeaderValue::from_maybe_shared(arena.shared_bytes(bearer))
                    .map_err(|_| PoolError::InvalidHeader)?;
                authorization.set_sensitive(true);
                Ok(Account {
                    index,
                    kind: AccountKind::ApiKey,
                    authorization,
                    secret: credential.secret_range(),
                    last_status: AtomicU16::new(0),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pool { arena, accounts })
    }

    /// The account for the next request, if any is usable.
    pub fn pick(&self) -> Option<&Account> {
        self.accounts.first()
    }

    /// Every account's bare secret, for redacting echoes in upstream error bodies.
    pub fn secrets(&self) -> impl Iterator<Item = &[u8]> + Clone {
        self.accounts.iter().map(|a| self.arena.get(a.secret))
    }

    /// The `/health` summary: never a secret or an account identifier.
    pub fn health(&self) -> Health {
        let accounts: Vec<AccountHealth> = self
            .accounts
            .iter()
            .map(|a| {
                let last = a.last_status.load(Ordering::Relaxed);
                AccountHealth {
                    index: a.index,
                    kind: a.kind,
                    state: "active",
                    cooldown_remaining_s: None,
                    last_status: (last != 0).then_some(last),
                    reason: None,
                }
            })
            .collect();
        let status = if accounts.is_empty() {
            "unavailable"
        } else {
            "ok"
        };
        Health { status, accounts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::IntakeBuffer;

    fn pool(key: &'static [u8]) -> Pool {
        let mut intake = IntakeBuffer::new(1024).unwrap();
        let mut done = false;
        intake
            .read_to_end(|buf: &mut [u8]| {
                if done {
                    return Ok(0);
                }
                done = true;
                buf[..key.len()].copy_from_slice(key);
                Ok(key.len())
            })
            .unwrap();
        Pool::new(intake.into_credentials().unwrap()).unwrap()
    }

    #[test]
    fn authorization_is_sensitive_and_secret_is_redactable() {
        let pool = pool(b"sk-canary-123\n");
        let account = pool.pick().unwrap();
        let auth = account.authorization();
        assert!(auth.is_sensitive());
        assert_eq!(auth.as_bytes(), b"Bearer sk-canary-123");
        assert_eq!(format!("{auth:?}"), "Sensitive");
        assert_eq!(
            pool.secrets().collect::<Vec<_>>(),
            vec![&b"sk-canary-123"[..]]
        );
    }

    #[test]
    fn health_names_accounts_by_index_only() {
        let pool = pool(b"sk-canary-123\n");
        pool.pick().unwrap().record_status(200);
        let json = serde_json::to_value(pool.health()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"status":"ok","accounts":[{"index":0,"kind":"api_key","state":"active","cooldown_remaining_s":null,"last_status":200,"reason":null}]})
        );
    }
}
