//! Which local users may use the port (`--allow-user`), decided from the caller the kernel
//! reported for the connection ([`super::peer`]).
//!
//! Every route is guarded, the bare `HEAD /` probe included: a user who may not use the proxy
//! learns nothing from it but the refusal. Per-user policy (models, concurrency) for the users
//! admitted here is [`super::policy`].

use std::collections::BTreeSet;

use http::{Response, StatusCode};

use super::body::ProxyBody;
use super::errors::error_response;
use super::peer::Caller;
use crate::translate::Dialect;

/// Who may use the port.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `None`: every local user (each still attributed). `Some`: only these uids.
    allowed: Option<BTreeSet<u32>>,
}

/// Why a connection's requests are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The caller's uid is not on the list.
    NotAllowed { uid: u32 },
    /// The list is set and the connection's owner could not be determined (fail closed).
    Unknown,
}

// === impl Access ===

impl Access {
    /// Every local user may call.
    pub fn everyone() -> Self {
        Access { allowed: None }
    }

    /// Only these uids may call.
    pub fn only(uids: impl IntoIterator<Item = u32>) -> Self {
        Access {
            allowed: Some(uids.into_iter().collect()),
        }
    }

    /// True when a list is set (an undetermined owner is then refused).
    pub fn is_restricted(&self) -> bool {
        self.allowed.is_some()
    }

    /// Whether `caller` (`None`: the owner could not be determined) may use the port.
    pub fn admits(&self, caller: Option<&Caller>) -> Result<(), Denied> {
        let Some(allowed) = &self.allowed else {
            return Ok(());
        };
        match caller {
            Some(c) if allowed.contains(&c.uid) => Ok(()),
            Some(c) => Err(Denied::NotAllowed { uid: c.uid }),
            None => Err(Denied::Unknown),
        }
    }
}

// === impl Denied ===

impl Denied {
    /// The 403 `user_not_allowed` in `dialect`, with `x-should-retry: false`. The message
    /// names no user: the caller knows who it is.
    pub fn response(self, dialect: Dialect) -> Response<ProxyBody> {
        let message = match self {
            Denied::NotAllowed { .. } => "This local user may not use this proxy (--allow-user).",
            Denied::Unknown => {
                "The proxy could not determine which local user owns this connection, and only \
                 some users may use it (--allow-user)."
            }
        };
        error_response(dialect, StatusCode::FORBIDDEN, "user_not_allowed", message)
    }

    /// The uid refused, if it is known.
    pub fn uid(self) -> Option<u32> {
        match self {
            Denied::NotAllowed { uid } => Some(uid),
            Denied::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32) -> Caller {
        Caller { uid, name: None }
    }

    #[test]
    fn without_a_list_everyone_is_admitted_even_unknown_owners() {
        let access = Access::everyone();
        assert_eq!(access.admits(Some(&caller(1234))), Ok(()));
        assert_eq!(access.admits(None), Ok(()));
    }

    #[test]
    fn with_a_list_only_listed_uids_pass_and_unknown_owners_fail_closed() {
        let access = Access::only([0, 1001]);
        assert_eq!(access.admits(Some(&caller(1001))), Ok(()));
        assert_eq!(access.admits(Some(&caller(0))), Ok(()));
        assert_eq!(
            access.admits(Some(&caller(65534))),
            Err(Denied::NotAllowed { uid: 65534 })
        );
        assert_eq!(access.admits(None), Err(Denied::Unknown));
        assert_eq!(
            Access::only([]).admits(Some(&caller(0))),
            Err(Denied::NotAllowed { uid: 0 })
        );
    }

    #[test]
    fn refusal_is_a_final_403_user_not_allowed() {
        let response = Denied::Unknown.response(Dialect::Responses);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()["x-should-retry"], "false");
        let body: serde_json::Value =
            serde_json::from_slice(response.body().full_bytes().unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "user_not_allowed");
        assert_eq!(body["error"]["type"], "permission_error");
    }
}
