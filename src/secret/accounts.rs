//! JSON credential formats: a Codex `auth.json`, one account object, an array of them, or
//! JSON lines (one object per line; blank lines and lines starting with `#` are skipped).
//!
//! Objects are deserialized into borrowed fields, so a token without JSON escapes is never
//! copied out of the locked intake buffer before it reaches the arena (an escaped one is
//! unescaped into a heap string that the wiping allocator zeroes when it is dropped).
//! Error messages give the account's position and the line and column, never a value:
//! serde's own messages can quote the offending value, so they are never shown.

use std::borrow::Cow;

use serde::Deserialize;

use super::intake::{is_key_byte, IntakeError, MAX_KEY_LINE_BYTES};
use super::jwt;

/// The longest token accepted (ChatGPT access and id tokens are a few KiB).
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// One account as found in the input, its secrets still borrowed from it.
pub enum Parsed<'a> {
    /// An OpenAI API key (a key line, or `OPENAI_API_KEY`): the `openai` provider's.
    ApiKey(Cow<'a, [u8]>),
    /// An API key of a named provider (`{"provider":NAME,"api_key":…}`).
    NamedKey {
        key: Cow<'a, [u8]>,
        provider: String,
    },
    /// A ChatGPT account for the Codex backend.
    Chatgpt {
        access: Option<Cow<'a, str>>,
        refresh: Option<Cow<'a, str>>,
        /// Sent as `chatgpt-account-id`; an identifier, not a credential, but never logged.
        account_id: Option<String>,
        /// Unix seconds after which the access token is no longer accepted.
        expires_at: Option<i64>,
        /// The provider the object names (`None`: `chatgpt`).
        provider: Option<String>,
    },
}

/// A string borrowed from the input when it has no escapes. (serde borrows a bare
/// `Cow<str>` field, but not one inside an `Option`: hence the newtype.)
#[derive(Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The fields of `auth.json`'s `tokens` object.
#[derive(Deserialize, Default)]
struct Tokens<'a> {
    #[serde(borrow, default)]
    id_token: Option<Text<'a>>,
    #[serde(borrow, default)]
    access_token: Option<Text<'a>>,
    #[serde(borrow, default)]
    refresh_token: Option<Text<'a>>,
    #[serde(default)]
    account_id: Option<String>,
}

/// Either an `auth.json` (`OPENAI_API_KEY`, `tokens`) or a per-account object (tokens at the
/// top level, the convention several pool proxies share); unknown fields are ignored.
#[derive(Deserialize, Default)]
pub struct AccountObject<'a> {
    #[serde(rename = "OPENAI_API_KEY", borrow, default)]
    openai_api_key: Option<Text<'a>>,
    #[serde(borrow, default)]
    tokens: Option<Tokens<'a>>,
    #[serde(borrow, default)]
    access_token: Option<Text<'a>>,
    #[serde(borrow, default)]
    refresh_token: Option<Text<'a>>,
    /// An alias of `refresh_token` some importers write.
    #[serde(borrow, default)]
    rk: Option<Text<'a>>,
    #[serde(borrow, default)]
    id_token: Option<Text<'a>>,
    #[serde(default)]
    account_id: Option<String>,
    /// Access-token expiry, RFC 3339.
    #[serde(borrow, default)]
    expired: Option<Text<'a>>,
    #[serde(default)]
    disabled: Option<bool>,
    /// The provider the account belongs to (DESIGN §9); a name, never a secret.
    #[serde(default)]
    provider: Option<String>,
    /// An API key of `provider` (`openai` when none is named).
    #[serde(borrow, default)]
    api_key: Option<Text<'a>>,
}

/// The longest provider name accepted in an account object.
pub const MAX_PROVIDER_NAME_BYTES: usize = 64;

/// A provider name as a config file may spell it: `[A-Za-z0-9_-]`, at most
/// [`MAX_PROVIDER_NAME_BYTES`].
pub fn is_provider_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PROVIDER_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A key's bytes, if it is a plausible API key (the key-line alphabet, bounded).
fn key_bytes(key: Cow<'_, str>) -> Option<Cow<'_, [u8]>> {
    let key = match key {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    };
    (key.len() <= MAX_KEY_LINE_BYTES && key.iter().all(|b| is_key_byte(*b))).then_some(key)
}

fn present(value: Option<Text<'_>>) -> Option<Cow<'_, str>> {
    value.map(|t| t.0).filter(|v| !v.trim().is_empty())
}

impl<'a> AccountObject<'a> {
    /// The accounts this object describes (an `auth.json` may hold a key and a login).
    fn into_accounts(self, position: usize) -> Result<Vec<Parsed<'a>>, IntakeError> {
        let mut out = Vec::new();
        if self.disabled == Some(true) {
            return Ok(out);
        }
        let provider = match self.provider {
            Some(name) if is_provider_name(&name) => Some(name),
            Some(_) => {
                return Err(IntakeError::BadField {
                    account: position,
                    field: "provider",
                })
            }
            None => None,
        };
        if let Some(key) = present(self.openai_api_key) {
            let key = key_bytes(key).ok_or(IntakeError::BadField {
                account: position,
                field: "OPENAI_API_KEY",
            })?;
            out.push(Parsed::ApiKey(key));
        }
        if let Some(key) = present(self.api_key) {
            let key = key_bytes(key).ok_or(IntakeError::BadField {
                account: position,
                field: "api_key",
            })?;
            out.push(match &provider {
                Some(name) => Parsed::NamedKey {
                    key,
                    provider: name.clone(),
                },
                None => Parsed::ApiKey(key),
            });
        }
        let tokens = self.tokens.unwrap_or_default();
        let access = present(self.access_token).or(present(tokens.access_token));
        let refresh = present(self.refresh_token)
            .or(present(self.rk))
            .or(present(tokens.refresh_token));
        let id_token = present(self.id_token).or(present(tokens.id_token));
        for (field, value) in [("access_token", &access), ("refresh_token", &refresh)] {
            if let Some(value) = value {
                let bad = |b: &u8| b.is_ascii_control() || *b == b' ' || !b.is_ascii();
                if value.len() > MAX_TOKEN_BYTES || value.bytes().any(|b| bad(&b)) {
                    return Err(IntakeError::BadField {
                        account: position,
                        field,
                    });
                }
            }
        }
        if access.is_none() && refresh.is_none() {
            if out.is_empty() {
                return Err(IntakeError::NoCredential { account: position });
            }
            return Ok(out);
        }
        let access_claims = access.as_deref().and_then(|t| jwt::claims(t.as_bytes()));
        let expires_at = match present(self.expired) {
            Some(text) => Some(jwt::parse_rfc3339(&text).ok_or(IntakeError::BadField {
                account: position,
                field: "expired",
            })?),
            None => access_claims.as_ref().and_then(|c| c.exp),
        };
        let account_id = self
            .account_id
            .or(tokens.account_id)
            .filter(|id| !id.is_empty())
            .or_else(|| id_token.and_then(|t| jwt::claims(t.as_bytes())?.account_id()))
            .or_else(|| access_claims.and_then(Claims::account_id));
        if let Some(id) = &account_id {
            if id.len() > 256 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(IntakeError::BadField {
                    account: position,
                    field: "account_id",
                });
            }
        }
        out.push(Parsed::Chatgpt {
            access,
            refresh,
            account_id,
            expires_at,
            provider,
        });
        Ok(out)
    }
}

use jwt::Claims;

/// Every field path a value can have the wrong type at (the fields of [`AccountObject`] and
/// its `tokens`). An error names its field only from this list, so it never quotes input.
const KNOWN_FIELDS: &[&str] = &[
    "OPENAI_API_KEY",
    "tokens",
    "tokens.id_token",
    "tokens.access_token",
    "tokens.refresh_token",
    "tokens.account_id",
    "access_token",
    "refresh_token",
    "rk",
    "id_token",
    "account_id",
    "expired",
    "disabled",
    "provider",
    "api_key",
];

/// A JSON error, the known field it happened in, and the array position of its account (if
/// the input is an array).
type JsonError = (serde_json::Error, Option<&'static str>, Option<usize>);

/// The message for a JSON error, which shows no value: the field when a known one has the
/// wrong type, else the line and column.
fn json_error((error, field, index): JsonError, line_offset: usize, account: usize) -> IntakeError {
    let (line, column) = (error.line() + line_offset, error.column());
    let account = index.map_or(account, |i| i + 1);
    match field {
        Some(field) if error.classify() == serde_json::error::Category::Data => {
            IntakeError::WrongType {
                account,
                field,
                line,
                column,
            }
        }
        _ => IntakeError::InvalidJson {
            account,
            line,
            column,
        },
    }
}

/// The entry of [`KNOWN_FIELDS`] a failing path names (map keys only: array positions are the
/// account number already).
fn known_field(path: &serde_path_to_error::Path) -> Option<&'static str> {
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    let path = keys.join(".");
    KNOWN_FIELDS.iter().find(|f| **f == path).copied()
}

/// Deserializes all of `input` (trailing bytes other than whitespace are an error, as with
/// `serde_json::from_slice`), keeping the path to a failing field. Only map keys are captured
/// on the way (field names); values are borrowed as before.
fn from_json<'a, T: Deserialize<'a>>(input: &'a [u8]) -> Result<T, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(input);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = known_field(e.path());
        let index = e.path().iter().find_map(|segment| match segment {
            serde_path_to_error::Segment::Seq { index } => Some(*index),
            _ => None,
        });
        (e.into_inner(), field, index)
    })?;
    de.end().map_err(|e| (e, None, None))?;
    Ok(value)
}

/// Parses JSON credential input (the first line that is neither blank nor a `#` comment
/// starts with `{` or `[`; comments are skipped only in JSON lines).
pub fn parse(input: &[u8]) -> Result<Vec<Parsed<'_>>, IntakeError> {
    let start = input
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(input.len());
    let mut accounts = Vec::new();
    if input.get(start) == Some(&b'[') {
        let objects: Vec<AccountObject<'_>> = from_json(input).map_err(|e| json_error(e, 0, 1))?;
        for (i, object) in objects.into_iter().enumerate() {
            accounts.extend(object.into_accounts(i + 1)?);
        }
        return Ok(accounts);
    }
    // One object, possibly spread over many lines; if it is followed by more, JSON lines.
    match from_json::<AccountObject<'_>>(input) {
        Ok(object) => return object.into_accounts(1),
        Err(e)
            if e.0.classify() != serde_json::error::Category::Syntax || !input.contains(&b'\n') =>
        {
            return Err(json_error(e, 0, 1));
        }
        Err(_) => {}
    }
    let mut position = 0;
    for (i, line) in input.split(|b| *b == b'\n').enumerate() {
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        position += 1;
        let object: AccountObject<'_> =
            from_json(trimmed).map_err(|e| json_error(e, i, position))?;
        accounts.extend(object.into_accounts(position)?);
    }
    Ok(accounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chatgpt(p: &Parsed<'_>) -> (Option<String>, Option<String>, Option<String>, Option<i64>) {
        match p {
            Parsed::Chatgpt {
                access,
                refresh,
                account_id,
                expires_at,
                ..
            } => (
                access.as_ref().map(|s| s.to_string()),
                refresh.as_ref().map(|s| s.to_string()),
                account_id.clone(),
                *expires_at,
            ),
            Parsed::ApiKey(_) | Parsed::NamedKey { .. } => panic!("expected a ChatGPT account"),
        }
    }

    #[test]
    fn auth_json_with_a_key_and_tokens_gives_two_accounts() {
        let input = br#"{
          "auth_mode": "chatgpt",
          "OPENAI_API_KEY": "sk-from-auth-json",
          "tokens": {"id_token": "x.y.z", "access_token": "at-1", "refresh_token": "rt-1", "account_id": "acct-7"},
          "last_refresh": "2026-11-01T00:00:00Z"
        }"#;
        let accounts = parse(input).unwrap();
        assert_eq!(accounts.len(), 2);
        assert!(matches!(&accounts[0], Parsed::ApiKey(k) if &k[..] == b"sk-from-auth-json"));
        assert_eq!(
            chatgpt(&accounts[1]),
            (
                Some("at-1".into()),
                Some("rt-1".into()),
                Some("acct-7".into()),
                None
            )
        );
        // The tokens were borrowed from the input, not copied.
        if let Parsed::Chatgpt {
            access: Some(a), ..
        } = &accounts[1]
        {
            assert!(matches!(a, Cow::Borrowed(_)));
        }
    }

    #[test]
    fn arrays_and_json_lines_of_account_objects() {
        let array = br#"[{"access_token":"a1","refresh_token":"r1","account_id":"id1","expired":"2026-11-21T08:00:00Z"},
                         {"rk":"r2","email":"someone@example.com"}]"#;
        let accounts = parse(array).unwrap();
        assert_eq!(
            chatgpt(&accounts[0]),
            (
                Some("a1".into()),
                Some("r1".into()),
                Some("id1".into()),
                Some(1_795_248_000)
            )
        );
        assert_eq!(chatgpt(&accounts[1]), (None, Some("r2".into()), None, None));
        let lines = b"# exported pool\n{\"access_token\":\"a1\"}\n\n{\"refresh_token\":\"r2\",\"disabled\":true}\n{\"refresh_token\":\"r3\"}\n";
        let accounts = parse(lines).unwrap();
        assert_eq!(accounts.len(), 2, "a disabled account is skipped");
        assert_eq!(chatgpt(&accounts[1]).1.as_deref(), Some("r3"));
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_never_its_value() {
        let cases: [(&[u8], &str); 5] = [
            (
                br#"{"auth_mode":"chatgpt","tokens":"sk-secret-value"}"#,
                "account 1 (line 1, column 49): field `tokens` has the wrong type",
            ),
            (
                br#"{"tokens":{"access_token":["sk-secret-value"]}}"#,
                "field `tokens.access_token` has the wrong type",
            ),
            (
                br#"[{"refresh_token":"r"},{"refresh_token":{"v":"sk-secret-value"}}]"#,
                "account 2 (line 1, column 40): field `refresh_token` has the wrong type",
            ),
            (
                b"{\"refresh_token\":\"r\"}\n{\"disabled\":\"sk-secret-value\"}\n",
                "account 2 (line 2, column 29): field `disabled` has the wrong type",
            ),
            (
                br#"{"OPENAI_API_KEY":12345678}"#,
                "field `OPENAI_API_KEY` has the wrong type",
            ),
        ];
        for (input, expected) in cases {
            let message = match parse(input) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("accepted {}", String::from_utf8_lossy(input)),
            };
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("sk-secret-value") && !message.contains("12345678"));
        }
    }

    #[test]
    fn errors_name_the_account_and_position_never_a_value() {
        let cases: [(&[u8], &str); 4] = [
            (b"{\"access_token\": 12345678}", "account 1"),
            (
                b"{\"access_token\":\"a\"}\n{\"access_token\":\"sk-secret-value\" oops}\n",
                "account 2",
            ),
            (b"[{\"email\":\"secret@example.com\"}]", "account 1"),
            (b"{\"OPENAI_API_KEY\":\"sk bad secret\"}", "OPENAI_API_KEY"),
        ];
        for (input, expected) in cases {
            let message = match parse(input) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("accepted {}", String::from_utf8_lossy(input)),
            };
            assert!(message.contains(expected), "{message}");
            for secret in [
                "12345678",
                "sk-secret-value",
                "secret@example.com",
                "bad secret",
            ] {
                assert!(!message.contains(secret), "{message}");
            }
        }
    }
}
