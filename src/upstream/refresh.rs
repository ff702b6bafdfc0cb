//! ChatGPT token refresh: single-flight per account, proactive before expiry, forced after a
//! 401, persisted to `--auth-dir` files under the directory's advisory lock.
//!
//! Refresh tokens rotate and are single-use, so at most one refresh per account runs at a
//! time (the account's `refresh_lock`); a request that waited for the lock and finds a newer
//! token generation than the one it saw uses that instead of refreshing again.
//!
//! The request and response bodies carry tokens: the request body is built in a zeroizing
//! buffer and sent on a connection that is not pooled (its buffers are freed, and so wiped by
//! the wiping allocator, when the exchange ends); the response is parsed into borrowed
//! strings and the new tokens are copied once into a fresh locked arena.
//!
//! | token endpoint answer                               | outcome                          |
//! |-----------------------------------------------------|----------------------------------|
//! | 200 with `access_token`                             | new generation installed         |
//! | 400/401/403 (`invalid_grant`, `refresh_token_reused`, revoked, expired …) | `Disabled(refresh_failed)` |
//! | 429                                                 | `CoolingDown(refresh_unavailable)` 60 s |
//! | 5xx, connect failure, timeout                       | retried after 1 s and 2 s, then as 429 |

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::client::HttpClient;
use crate::pool::auth_dir::{self, AuthDir, Rotated};
use crate::pool::state::Verdict;
use crate::pool::{Account, AccountKind, Pool};
use crate::secret::{Credential, SecretArena};

/// The Codex CLI's OAuth client id (the public client the refresh tokens were issued to).
pub const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
/// Refresh this long before the access token's `exp`.
pub const EXPIRY_MARGIN_S: i64 = 300;
/// One token-endpoint exchange, whatever the triggering request does meanwhile.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
/// Waits before the retries after a transient token-endpoint failure.
pub const TRANSIENT_RETRIES: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];
/// The largest token-endpoint response read.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// How a refresh ended when it did not produce a usable token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshError {
    /// The refresh token is refused for good (or there is none): the account is disabled.
    Permanent,
    /// The endpoint could not help now: the account cools down.
    Transient,
}

impl RefreshError {
    pub fn verdict(self) -> Verdict {
        match self {
            RefreshError::Permanent => Verdict::RefreshFailed,
            RefreshError::Transient => Verdict::RefreshUnavailable,
        }
    }
}

pub struct Refresher {
    pub client: HttpClient,
    pub token_url: Uri,
    pub pool: Arc<Pool>,
    pub auth_dir: Option<Arc<AuthDir>>,
    /// How often `--auth-dir` is rescanned.
    pub rescan_every: Duration,
}

/// How often idle accounts are checked for tokens about to expire.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct TokenResponse<'a> {
    #[serde(borrow)]
    access_token: Cow<'a, str>,
    #[serde(borrow, default)]
    refresh_token: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id_token: Option<Cow<'a, str>>,
    #[serde(default)]
    expires_in: Option<i64>,
}

/// Unix seconds now (wall clock: token expiry is wall-clock time).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

enum Exchange {
    Tokens(Zeroizing<Vec<u8>>),
    Failed(RefreshError),
    /// 429 from the token endpoint: stop asking for a while.
    Throttled,
}

impl Refresher {
    /// Makes sure account `index` has a usable token before a request uses it: refreshes
    /// when `force` (a 401 on generation `seen`) or when the token is missing or expires
    /// within the margin. Concurrent callers share one refresh.
    pub async fn ensure_fresh(
        &self,
        index: usize,
        force: bool,
        seen: u64,
    ) -> Result<(), RefreshError> {
        let Some(account) = self.pool.account(index) else {
            return Err(RefreshError::Permanent);
        };
        if account.kind != AccountKind::Chatgpt {
            return if force {
                Err(RefreshError::Permanent)
            } else {
                Ok(())
            };
        }
        if !force && !account.token().needs_refresh(unix_now(), EXPIRY_MARGIN_S) {
            return Ok(());
        }
        let _single_flight = account.refresh_lock.lock().await;
        let token = account.token();
        if token.generation != seen || (!force && !token.needs_refresh(unix_now(), EXPIRY_MARGIN_S))
        {
            // Someone refreshed while this caller waited.
            return Ok(());
        }
        self.pool.update_status(index, |s| s.refreshing = true);
        let result = self.refresh_locked(&account).await;
        self.pool.update_status(index, |s| s.refreshing = false);
        match result {
            Ok(()) => {
                tracing::info!(account = index, "token refreshed");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(account = index, ?error, "token refresh failed");
                self.pool.record(
                    index,
                    error.verdict(),
                    None,
                    None,
                    None,
                    tokio::time::Instant::now(),
                );
                Err(error)
            }
        }
    }

    /// Background work until `stop`: rescans `--auth-dir`, and refreshes idle accounts whose
    /// tokens are about to expire (so a request rarely waits for a refresh).
    pub async fn maintain(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut rescan = tokio::time::interval(self.rescan_every);
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Both fire at once at first; the initial scan was done at start-up.
        rescan.tick().await;
        sweep.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = rescan.tick(), if self.auth_dir.is_some() => {
                    if let Some(dir) = self.auth_dir.clone() {
                        let pool = Arc::clone(&self.pool);
                        let _ = tokio::task::spawn_blocking(move || dir.rescan(&pool)).await;
                    }
                }
                _ = sweep.tick() => {
                    for account in self.pool.accounts().iter() {
                        let token = account.token();
                        if account.kind == AccountKind::Chatgpt
                            && !account.is_removed()
                            && account.status().disabled.is_none()
                            && token.needs_refresh(unix_now(), EXPIRY_MARGIN_S)
                        {
                            let _ = self.ensure_fresh(account.index, false, token.generation).await;
                        }
                    }
                }
            }
        }
    }

    async fn refresh_locked(&self, account: &Arc<Account>) -> Result<(), RefreshError> {
        let index = account.index;
        let dir = self.auth_dir.as_ref().zip(account.source.as_ref());
        // With a file: the directory lock first, then the file as it is now.
        let _dir_lock = match dir {
            Some((dir, path)) => {
                let lock = lock_dir(&dir.dir)
                    .await
                    .map_err(|_| RefreshError::Transient)?;
                if self.adopt_newer_file(account, dir, path)? {
                    return Ok(());
                }
                Some(lock)
            }
            None => None,
        };
        let token = account.token();
        let Some(refresh) = token.refresh_token() else {
            return Err(RefreshError::Permanent);
        };
        let mut body = Zeroizing::new(Vec::with_capacity(refresh.len() + 160));
        body.extend_from_slice(b"{\"client_id\":\"");
        body.extend_from_slice(CLIENT_ID.as_bytes());
        body.extend_from_slice(b"\",\"grant_type\":\"refresh_token\",\"refresh_token\":");
        // A refresh token is visible ASCII without quotes or backslashes (checked at intake),
        // so it needs no escaping; serde_json writes it straight into the zeroizing buffer.
        let _ = serde_json::to_writer(&mut *body, &String::from_utf8_lossy(refresh));
        body.push(b'}');

        let mut delays = TRANSIENT_RETRIES.iter();
        let response = loop {
            match self.exchange(&body).await {
                Exchange::Failed(RefreshError::Transient) => match delays.next() {
                    Some(delay) => tokio::time::sleep(*delay).await,
                    None => return Err(RefreshError::Transient),
                },
                Exchange::Failed(e) => return Err(e),
                Exchange::Throttled => return Err(RefreshError::Transient),
                Exchange::Tokens(bytes) => break bytes,
            }
        };
        let parsed: TokenResponse<'_> =
            serde_json::from_slice(&response).map_err(|_| RefreshError::Transient)?;
        if parsed.access_token.is_empty() {
            return Err(RefreshError::Transient);
        }
        // When the endpoint omits a value, keep the old one (a refresh that drops the refresh
        // token "succeeds" and then can never refresh again).
        let new_refresh: Cow<'_, str> = match &parsed.refresh_token {
            Some(r) if !r.is_empty() => Cow::Borrowed(r.as_ref()),
            _ => String::from_utf8_lossy(refresh),
        };
        let claims = crate::secret::jwt::claims(parsed.access_token.as_bytes());
        let now = unix_now();
        let expires_at = parsed
            .expires_in
            .map(|s| now + s)
            .or_else(|| claims.as_ref().and_then(|c| c.exp));
        let account_id = parsed
            .id_token
            .as_deref()
            .and_then(|t| crate::secret::jwt::claims(t.as_bytes()))
            .and_then(|c| c.account_id());

        if let Some((dir, path)) = dir {
            let rotated = Rotated {
                access_token: &parsed.access_token,
                refresh_token: &new_refresh,
                id_token: parsed.id_token.as_deref(),
                expires_at,
                now_unix: now,
            };
            match auth_dir::write_back(path, dir.owner, &rotated) {
                Ok(version) => dir.known.set_version(path, version),
                Err(e) => tracing::error!(
                    account = index,
                    error = %e,
                    "cannot write rotated tokens back to the account file; they are kept in memory"
                ),
            }
        }
        let mut arena = SecretArena::with_capacity(parsed.access_token.len() + new_refresh.len())
            .map_err(|_| RefreshError::Transient)?;
        let access = arena.push_concat(&[parsed.access_token.as_bytes()]);
        let refresh = arena.push_concat(&[new_refresh.as_bytes()]);
        self.pool
            .replace_token(index, Arc::new(arena), access, refresh, expires_at)
            .map_err(|_| RefreshError::Transient)?;
        if account_id.is_some() {
            self.pool.set_account_id(index, account_id.as_deref());
        }
        Ok(())
    }

    /// Under the directory lock: if the account file holds a different refresh token than
    /// the proxy's (another process rotated it), installs the file's tokens; true when those
    /// need no refresh now.
    fn adopt_newer_file(
        &self,
        account: &Arc<Account>,
        dir: &AuthDir,
        path: &Path,
    ) -> Result<bool, RefreshError> {
        let (credentials, version) =
            auth_dir::read_account_file(path, dir.owner).map_err(|_| RefreshError::Transient)?;
        let token = account.token();
        let Some(Credential::Chatgpt(file)) = credentials
            .accounts
            .iter()
            .find(|c| matches!(c, Credential::Chatgpt(_)))
            .cloned()
        else {
            return Err(RefreshError::Permanent);
        };
        let file_refresh = file.refresh.map(|r| credentials.arena.get(r));
        if file_refresh == token.refresh_token() {
            return Ok(false);
        }
        self.pool
            .replace_token(
                account.index,
                Arc::clone(&credentials.arena),
                file.access,
                file.refresh,
                file.expires_at,
            )
            .map_err(|_| RefreshError::Transient)?;
        dir.known.set_version(path, version);
        tracing::info!(
            account = account.index,
            "adopted tokens another process rotated"
        );
        Ok(!account.token().needs_refresh(unix_now(), EXPIRY_MARGIN_S))
    }

    /// One POST to the token endpoint.
    async fn exchange(&self, body: &[u8]) -> Exchange {
        let mut request = Request::new(Full::new(Bytes::copy_from_slice(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.token_url.clone();
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        let call = async {
            let (response, _connection) = self
                .client
                .send(request)
                .await
                .map_err(|_| RefreshError::Transient)?;
            let status = response.status();
            let mut body = response.into_body();
            let mut bytes = Zeroizing::new(Vec::new());
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| RefreshError::Transient)?;
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > MAX_RESPONSE_BYTES {
                        return Err(RefreshError::Transient);
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Ok((status, bytes))
        };
        match tokio::time::timeout(REFRESH_TIMEOUT, call).await {
            Err(_) | Ok(Err(_)) => Exchange::Failed(RefreshError::Transient),
            Ok(Ok((status, bytes))) if status.is_success() => Exchange::Tokens(bytes),
            Ok(Ok((status, _))) if status.as_u16() == 429 => Exchange::Throttled,
            Ok(Ok((status, _))) if status.is_server_error() => {
                Exchange::Failed(RefreshError::Transient)
            }
            // 400/401/403: invalid_grant, refresh_token_reused, revoked, expired — for good.
            Ok(Ok(_)) => Exchange::Failed(RefreshError::Permanent),
        }
    }
}

/// Takes the directory's advisory lock on a blocking thread.
async fn lock_dir(dir: &Path) -> std::io::Result<nix::fcntl::Flock<std::fs::File>> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || auth_dir::lock(&dir))
        .await
        .map_err(std::io::Error::other)?
}
