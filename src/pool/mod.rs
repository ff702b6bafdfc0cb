//! The accounts the proxy can send requests with, and their health.
//!
//! This release serves one API-key account; the type is shaped for the pool (several
//! accounts, states, selection) without exposing any secret: the keys stay in the locked
//! arena, and only the upstream's key injector and the redactor read them.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

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
    secret: SecretRange,
    /// Status of the last upstream response on this account (0: none yet).
    last_status: AtomicU16,
}

impl Account {
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
                    last_status: AtomicU16::new(0),
                }
            })
            .collect();
        Pool { arena, accounts }
    }

    /// The locked arena holding every account's secret, and each account's range in it (in
    /// account order), for the upstream's key injector.
    pub fn secret_ranges(&self) -> (Arc<SecretArena>, Vec<SecretRange>) {
        (
            Arc::clone(&self.arena),
            self.accounts.iter().map(|a| a.secret).collect(),
        )
    }

    /// The account for the next request, if any is usable.
    pub fn pick(&self) -> Option<&Account> {
        self.accounts.first()
    }

    /// Every account's bare secret in account order: for the key injector and for redacting
    /// echoes in upstream error bodies.
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
        Pool::new(intake.into_credentials().unwrap())
    }

    #[test]
    fn secrets_are_the_bare_keys_in_account_order() {
        let pool = pool(b"sk-canary-123\n");
        assert_eq!(pool.pick().unwrap().index, 0);
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
