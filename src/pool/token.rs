//! An account's current bearer token, replaceable as a whole when a ChatGPT token rotates.
//!
//! The token bytes stay in locked memory (the intake arena, or a small arena of their own
//! after a refresh). Requests never carry them: they carry a placeholder `Authorization`
//! value registered with the upstream's key injector through [`Swaps`], which swaps it for
//! the real token on the wire. A replaced token's swap stays registered for one more rotation
//! so requests already in flight still go out with a real (if old) token.

use std::sync::Arc;

use http::HeaderValue;

use crate::secret::{ArenaError, SecretArena, SecretRange};

/// How a credential travels upstream (its provider kind decides; see
/// `upstream::provider`). The pool keeps it beside the token so the placeholder goes in the
/// right header and the injector swaps the right field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthForm {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `x-api-key: <secret>`.
    XApiKey,
}

impl AuthForm {
    /// The request header the placeholder goes in.
    pub fn header(self) -> http::HeaderName {
        match self {
            AuthForm::Bearer => http::header::AUTHORIZATION,
            AuthForm::XApiKey => http::HeaderName::from_static("x-api-key"),
        }
    }
}

/// The registry of placeholder swaps (implemented by the upstream's key injector, so the
/// pool does not depend on the HTTP stack).
pub trait Swaps: Send + Sync {
    /// Registers a placeholder for each secret, in the header its form names; returns (swap
    /// id, the sensitive header value requests should carry) per secret, in order.
    fn add(
        &self,
        arena: &Arc<SecretArena>,
        secrets: &[(SecretRange, AuthForm)],
    ) -> Result<Vec<(u64, HeaderValue)>, ArenaError>;
    /// Forgets a swap (its secret may then be freed).
    fn remove(&self, id: u64);
}

/// One generation of an account's credentials. No `Debug`: it refers to secrets.
pub struct Token {
    arena: Arc<SecretArena>,
    /// The bearer secret (an API key or a ChatGPT access token); `None` until a refresh
    /// produced one (an account given only a refresh token).
    access: Option<SecretRange>,
    refresh: Option<SecretRange>,
    /// The placeholder value of the credential header ([`Token::form`]), when there is an
    /// access token.
    pub placeholder: Option<HeaderValue>,
    /// Which header the placeholder goes in.
    pub form: AuthForm,
    swap_id: Option<u64>,
    /// Unix seconds after which the access token is refused, when known.
    pub expires_at: Option<i64>,
    /// Counts replacements; a 401 on an older generation needs no refresh, only a retry.
    pub generation: u64,
}

impl Token {
    /// A token whose secrets live in `arena`, registered with `swaps`.
    pub fn new(
        swaps: &dyn Swaps,
        arena: Arc<SecretArena>,
        access: Option<SecretRange>,
        refresh: Option<SecretRange>,
        expires_at: Option<i64>,
        generation: u64,
    ) -> Result<Token, ArenaError> {
        // Only ChatGPT tokens are replaced (refreshed), and they are Bearer tokens.
        let form = AuthForm::Bearer;
        let (swap_id, placeholder) = match access {
            Some(range) => match swaps.add(&arena, &[(range, form)])?.pop() {
                Some((id, value)) => (Some(id), Some(value)),
                None => (None, None),
            },
            None => (None, None),
        };
        Ok(Token {
            arena,
            access,
            refresh,
            placeholder,
            form,
            swap_id,
            expires_at,
            generation,
        })
    }

    /// A token whose swap was registered in bulk (at start-up).
    pub fn registered(
        arena: Arc<SecretArena>,
        access: Option<SecretRange>,
        refresh: Option<SecretRange>,
        swap: Option<(u64, HeaderValue)>,
        form: AuthForm,
        expires_at: Option<i64>,
    ) -> Token {
        let (swap_id, placeholder) = match swap {
            Some((id, value)) => (Some(id), Some(value)),
            None => (None, None),
        };
        Token {
            arena,
            access,
            refresh,
            placeholder,
            form,
            swap_id,
            expires_at,
            generation: 0,
        }
    }

    /// The bearer secret, for redacting echoes of it.
    pub fn secret(&self) -> Option<&[u8]> {
        self.access.map(|r| self.arena.get(r))
    }

    /// The refresh token, for the token endpoint.
    pub fn refresh_token(&self) -> Option<&[u8]> {
        self.refresh.map(|r| self.arena.get(r))
    }

    pub fn swap_id(&self) -> Option<u64> {
        self.swap_id
    }

    /// True when the access token is missing or expires within `margin_s` of `now_unix`.
    pub fn needs_refresh(&self, now_unix: i64, margin_s: i64) -> bool {
        self.access.is_none()
            || self
                .expires_at
                .is_some_and(|exp| exp <= now_unix.saturating_add(margin_s))
    }
}
