//! Whether the upstreams can be reached: for the log, `/health` and the start-up line.
//!
//! A connection that fails (refused, reset, DNS, TLS, the `--upstream-proxy`, a connect
//! timeout) or breaks after the request was written and before response headers is logged at
//! WARN with the upstream's host and the error chain, and marks that upstream `failing` in
//! `/health` until it answers again (any response headers: the connection works). The host
//! and the error come from our own configuration and the network stack, never from a
//! credential: keys are swapped in below the HTTP stack ([`inject`](super::inject)), and
//! URLs with credentials in them are refused at start-up.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use tokio::time::Instant;

use super::Upstream;
use crate::pool::AccountKind;

/// Longest error text kept (the error chain of one connect failure is a few hundred bytes).
const MAX_ERROR_CHARS: usize = 512;
/// Most upstream hosts remembered at once (there are two configured upstreams).
const MAX_HOSTS: usize = 8;

/// The last failure of one upstream host, until it answers again.
struct Failure {
    host: String,
    error: String,
    since: Instant,
    count: u64,
}

/// Connection failures per upstream host, and each provider's last attempt.
#[derive(Default)]
pub struct UpstreamHealth {
    failing: Mutex<Vec<Failure>>,
    /// True while `failing` may be non-empty: every answered request checks it, so the
    /// common case (nothing failing) takes no lock.
    any_failing: AtomicBool,
    /// Per provider (its index): how its last upstream attempt ended and when. Learned from
    /// real requests only: the proxy sends no probing traffic of its own.
    last_attempts: Mutex<Vec<Option<LastAttempt>>>,
}

/// How a provider's last upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LastAttempt {
    ok: bool,
    /// Unix seconds.
    at: i64,
}

/// One provider in `/health`'s `providers`: never a URL, key or account.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ProviderStatus {
    pub name: String,
    pub kind: &'static str,
    /// Whether its last upstream attempt succeeded (`null`: none yet). A success is an answer
    /// the client got (its request's own 4xx included); a failure is a network fault, a
    /// timeout, a 429/5xx or an in-band failure before the answer.
    pub last_attempt_ok: Option<bool>,
    /// When that attempt ended (RFC 3339, UTC).
    pub last_attempt_at: Option<String>,
}

/// The `upstream` object of `/health`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct UpstreamStatus {
    /// `ok` when no upstream is failing, `failing` when the last connection to one failed.
    pub status: &'static str,
    /// The failing upstream (`host:port`), the most recent failure's when several are.
    pub host: Option<String>,
    /// Why its last connection failed.
    pub last_error: Option<String>,
    /// Whole seconds since its first failure in a row.
    pub failing_for_s: Option<u64>,
    /// Failed connections in a row.
    pub failures: u64,
}

/// `error` and its sources, joined by `: `, at most [`MAX_ERROR_CHARS`] long.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let part = e.to_string();
        // Wrappers often repeat their source's text; keep it once.
        if !text.ends_with(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            let _ = write!(text, "{part}");
        }
        current = e.source();
    }
    if text.chars().count() > MAX_ERROR_CHARS {
        text = text.chars().take(MAX_ERROR_CHARS).collect::<String>() + "…";
    }
    text
}

impl UpstreamHealth {
    /// A connection to `host` failed with `error` (`when`: before or after the request was
    /// written). Logs it and marks the host failing.
    pub fn failed(
        &self,
        host: &str,
        when: &'static str,
        error: &(dyn std::error::Error + 'static),
        now: Instant,
    ) {
        let error = error_chain(error);
        tracing::warn!(host, error = %error, "upstream connection failed {when}");
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match failing.iter_mut().find(|f| f.host == host) {
            Some(failure) => {
                failure.error = error;
                failure.count += 1;
            }
            None => {
                if failing.len() >= MAX_HOSTS {
                    failing.remove(0);
                }
                failing.push(Failure {
                    host: host.to_string(),
                    error,
                    since: now,
                    count: 1,
                });
            }
        }
        // The most recent failure last.
        if let Some(i) = failing.iter().position(|f| f.host == host) {
            let failure = failing.remove(i);
            failing.push(failure);
        }
        self.any_failing.store(true, Ordering::Release);
    }

    /// `host` answered: it is no longer failing.
    pub fn answered(&self, host: &str) {
        if !self.any_failing.load(Ordering::Acquire) {
            return;
        }
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = failing.iter().position(|f| f.host == host) {
            failing.remove(i);
            tracing::info!(host, "upstream reachable again");
        }
        self.any_failing
            .store(!failing.is_empty(), Ordering::Release);
    }

    /// Provider `index`'s upstream attempt ended (`ok`: see [`ProviderStatus`]) at `unix`
    /// seconds.
    pub fn attempted(&self, index: usize, ok: bool, unix: i64) {
        let mut last = self.last_attempts.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() <= index {
            last.resize(index + 1, None);
        }
        last[index] = Some(LastAttempt { ok, at: unix });
    }

    /// Provider `index`'s last attempt: (succeeded, unix seconds).
    fn last_attempt(&self, index: usize) -> Option<LastAttempt> {
        let last = self.last_attempts.lock().unwrap_or_else(|p| p.into_inner());
        last.get(index).copied().flatten()
    }

    pub fn status(&self, now: Instant) -> UpstreamStatus {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match failing.last() {
            None => UpstreamStatus {
                status: "ok",
                host: None,
                last_error: None,
                failing_for_s: None,
                failures: 0,
            },
            Some(f) => UpstreamStatus {
                status: "failing",
                host: Some(f.host.clone()),
                last_error: Some(f.error.clone()),
                failing_for_s: Some(now.saturating_duration_since(f.since).as_secs()),
                failures: f.count,
            },
        }
    }
}

/// The `/health` document: the pool's summary (its fields as before) and `upstream`.
#[derive(Debug, Serialize)]
pub struct HealthDocument {
    #[serde(flatten)]
    pub pool: crate::pool::Health,
    pub upstream: UpstreamStatus,
    /// Every provider in routing order, with how its last upstream attempt went.
    pub providers: Vec<ProviderStatus>,
}

impl Upstream {
    pub fn health_document(&self, now: Instant) -> HealthDocument {
        let providers = self
            .providers
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let last = self.health.last_attempt(index);
                ProviderStatus {
                    name: p.name.clone(),
                    kind: p.kind.name(),
                    last_attempt_ok: last.map(|l| l.ok),
                    last_attempt_at: last.map(|l| crate::secret::jwt::format_rfc3339(l.at)),
                }
            })
            .collect();
        HealthDocument {
            pool: self.pool.health(now),
            upstream: self.health.status(now),
            providers,
        }
    }

    /// The upstreams the accounts use, for the start-up line: each provider's base URL with
    /// its number of accounts (and the token endpoint for ChatGPT accounts); a provider of a
    /// config file is named.
    pub fn in_use(&self, token_url: &str) -> String {
        let accounts = self.pool.accounts();
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut parts = Vec::new();
        for (index, provider) in self.providers.iter().enumerate() {
            let n = accounts
                .iter()
                .filter(|a| a.provider == index && !a.is_removed())
                .count();
            if n == 0 {
                continue;
            }
            let name = if provider.implicit {
                String::new()
            } else {
                format!("{}: ", provider.name)
            };
            let base = provider.base.display();
            parts.push(match provider.kind.credential() {
                _ if provider.keyless => format!("{name}{base} (keyless)"),
                AccountKind::ApiKey => {
                    format!("{name}{base} ({})", plural(n, "API key", "API keys"))
                }
                AccountKind::Chatgpt => format!(
                    "{name}{base} ({}; token refresh at {token_url})",
                    plural(n, "ChatGPT account", "ChatGPT accounts")
                ),
            });
        }
        if parts.is_empty() {
            "none yet (no accounts)".to_string()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_reported_until_the_host_answers_again() {
        let health = UpstreamHealth::default();
        let now = Instant::now();
        assert_eq!(health.status(now).status, "ok");
        let error = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        health.failed("api.example:443", "to connect", &error, now);
        health.failed("api.example:443", "to connect", &error, now);
        let status = health.status(now + std::time::Duration::from_secs(3));
        assert_eq!(
            status,
            UpstreamStatus {
                status: "failing",
                host: Some("api.example:443".into()),
                last_error: Some("refused".into()),
                failing_for_s: Some(3),
                failures: 2,
            }
        );
        health.answered("other.example:443");
        assert_eq!(health.status(now).status, "failing");
        health.answered("api.example:443");
        assert_eq!(health.status(now).status, "ok");
    }

    #[test]
    fn each_provider_keeps_its_last_attempt_only() {
        let health = UpstreamHealth::default();
        assert_eq!(health.last_attempt(2), None);
        health.attempted(2, false, 1_800_000_000);
        health.attempted(2, true, 1_800_000_005);
        health.attempted(0, false, 1_800_000_001);
        assert_eq!(
            health.last_attempt(2),
            Some(LastAttempt {
                ok: true,
                at: 1_800_000_005
            })
        );
        assert_eq!(health.last_attempt(0).map(|l| l.ok), Some(false));
        assert_eq!(health.last_attempt(1), None);
    }

    #[test]
    fn error_chains_are_joined_and_bounded() {
        let inner = std::io::Error::other("x".repeat(2000));
        let text = error_chain(&inner);
        assert_eq!(text.chars().count(), MAX_ERROR_CHARS + 1);
    }
}
