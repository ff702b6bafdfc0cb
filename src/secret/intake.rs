//! Reading credentials from standard input, once, at start-up.
//!
//! stdin is read to EOF with raw `read(2)` calls (no std buffering, which would keep a
//! process-lifetime copy) straight into locked memory that grows by whole locked buffers;
//! a buffer that is outgrown is wiped when it is dropped. The input is then parsed, each
//! secret is copied once into a [`SecretArena`], and the intake buffer is wiped on every path,
//! success or error. Errors name the problem and where it is, never the bytes.
//!
//! Formats are detected from the input: key lines (one API key per line; one line is the form
//! `codex responses-api-proxy` takes; CRLF tolerated, blank lines skipped), or JSON when the
//! first line that is neither blank nor a `#` comment starts with `{` or `[` (a Codex
//! `auth.json`, account objects, arrays, JSON lines: see [`accounts`](super::accounts)).
//! Duplicates are merged, in linear time.

use std::io;
use std::sync::Arc;

use std::borrow::Cow;

use super::accounts::{self, Parsed};
use super::arena::{ArenaError, LockedBuf, SecretArena, SecretRange};

/// The longest API key line accepted (the key itself, without line ending).
pub const MAX_KEY_LINE_BYTES: usize = 1024;

/// Initial size of the locked intake buffer; it doubles as needed up to the stdin limit.
const INITIAL_INTAKE_BYTES: usize = 4096;

const BEARER_PREFIX: &[u8] = b"Bearer ";

/// What went wrong with the credential input. Messages never contain input bytes.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("no credentials on standard input (pipe an API key in, e.g. `printenv OPENAI_API_KEY | codex-proxy …`)")]
    Empty,
    #[error("credential input is larger than --max-stdin-bytes ({limit} bytes)")]
    TooLarge { limit: usize },
    #[error("cannot read standard input: {0}")]
    Read(io::ErrorKind),
    #[error("line {line}: invalid character at position {position} (an API key may contain only A-Z, a-z, 0-9, '_' and '-')")]
    InvalidCharacter { line: usize, position: usize },
    #[error("line {line}: API key is longer than {MAX_KEY_LINE_BYTES} bytes")]
    KeyTooLong { line: usize },
    #[error("account {account} (line {line}, column {column}): malformed JSON or a field of the wrong type")]
    InvalidJson {
        account: usize,
        line: usize,
        column: usize,
    },
    #[error("account {account}: field `{field}` is not valid")]
    BadField { account: usize, field: &'static str },
    /// A known field holds the wrong kind of JSON value (e.g. `tokens` as a string).
    #[error(
        "account {account} (line {line}, column {column}): field `{field}` has the wrong type"
    )]
    WrongType {
        account: usize,
        field: &'static str,
        line: usize,
        column: usize,
    },
    #[error(
        "account {account}: no credential (needs OPENAI_API_KEY, access_token or refresh_token)"
    )]
    NoCredential { account: usize },
    #[error(transparent)]
    Memory(#[from] ArenaError),
}

impl IntakeError {
    /// Locked-memory failures are hardening failures (exit 5); the rest is bad input (exit 3).
    pub fn is_hardening_failure(&self) -> bool {
        matches!(self, IntakeError::Memory(_))
    }
}

/// One credential, its secret bytes in the arena. No `Debug`: it names an account.
#[derive(Clone)]
pub enum Credential {
    /// An API key. `bearer` is `Bearer <key>`, ready to be an `Authorization` value (the
    /// key alone is [`Credential::secret_range`]). `provider`: the provider the input named
    /// (`None`: `openai`).
    ApiKey {
        bearer: SecretRange,
        provider: Option<String>,
    },
    /// A ChatGPT account: bare tokens (either may be missing, not both).
    Chatgpt(ChatgptCredential),
}

#[derive(Clone)]
pub struct ChatgptCredential {
    pub access: Option<SecretRange>,
    pub refresh: Option<SecretRange>,
    /// Sent as `chatgpt-account-id`. Not a credential, but never logged or shown.
    pub account_id: Option<String>,
    /// Unix seconds after which the access token is refused (from `expired` or its JWT `exp`).
    pub expires_at: Option<i64>,
    /// The provider the input named (`None`: `chatgpt`).
    pub provider: Option<String>,
}

impl Credential {
    /// The bare secret sent as the bearer token (an API key or an access token), if any.
    pub fn secret_range(&self) -> Option<SecretRange> {
        match self {
            Credential::ApiKey { bearer, .. } => Some(bearer.slice(BEARER_PREFIX.len())),
            Credential::Chatgpt(c) => c.access,
        }
    }

    /// The provider the credential belongs to: the one it names, else `openai` for an API
    /// key and `chatgpt` for a ChatGPT login (DESIGN §9).
    pub fn provider(&self) -> &str {
        match self {
            Credential::ApiKey { provider, .. } => provider.as_deref().unwrap_or("openai"),
            Credential::Chatgpt(c) => c.provider.as_deref().unwrap_or("chatgpt"),
        }
    }
}

/// The parsed credential input: the secrets in locked memory, and what each one is.
pub struct Credentials {
    pub arena: Arc<SecretArena>,
    pub accounts: Vec<Credential>,
}

impl Credentials {
    /// No accounts (allowed when they come from `--auth-dir`).
    pub fn empty() -> Result<Credentials, ArenaError> {
        Ok(Credentials {
            arena: Arc::new(SecretArena::with_capacity(1)?),
            accounts: Vec::new(),
        })
    }
}

/// A growable locked buffer for the raw input.
pub struct IntakeBuffer {
    buf: LockedBuf,
    limit: usize,
}

impl IntakeBuffer {
    /// An empty buffer that will refuse input beyond `limit` bytes.
    pub fn new(limit: usize) -> Result<Self, ArenaError> {
        Ok(IntakeBuffer {
            buf: LockedBuf::new(INITIAL_INTAKE_BYTES.min(limit.max(1)))?,
            limit,
        })
    }

    /// Reads to EOF with `read`, wiping the buffer on any error.
    ///
    /// `read` behaves like `read(2)`: `Ok(0)` is EOF, `Interrupted` is retried.
    pub fn read_to_end<R>(&mut self, mut read: R) -> Result<(), IntakeError>
    where
        R: FnMut(&mut [u8]) -> io::Result<usize>,
    {
        let result = loop {
            if self.buf.len() == self.buf.capacity() {
                if self.buf.len() > self.limit {
                    break Err(IntakeError::TooLarge { limit: self.limit });
                }
                // Grow by doubling; one byte past the limit is room to detect oversize input.
                let wanted = (self.buf.capacity() * 2).min(self.limit + 1);
                match self.grow(wanted) {
                    Ok(()) => {}
                    Err(e) => break Err(e.into()),
                }
            }
            match read(self.buf.spare_mut()) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    self.buf.commit(n);
                    if self.buf.len() > self.limit {
                        break Err(IntakeError::TooLarge { limit: self.limit });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(IntakeError::Read(e.kind())),
            }
        };
        if result.is_err() {
            self.buf.wipe();
        }
        result
    }

    /// Reads `bytes` as if they were all of stdin (for tests, benchmarks and embedders).
    pub fn read_slice(&mut self, bytes: &[u8]) -> Result<(), IntakeError> {
        let mut offset = 0;
        self.read_to_end(|buf: &mut [u8]| {
            let n = buf.len().min(bytes.len() - offset);
            buf[..n].copy_from_slice(&bytes[offset..offset + n]);
            offset += n;
            Ok(n)
        })
    }

    fn grow(&mut self, capacity: usize) -> Result<(), ArenaError> {
        let mut bigger = LockedBuf::new(capacity)?;
        bigger.push(self.buf.as_slice());
        // The old buffer is wiped by its Drop.
        self.buf = bigger;
        Ok(())
    }

    /// Parses the input, copies each secret once into a new locked arena, and wipes the input.
    pub fn into_credentials(mut self) -> Result<Credentials, IntakeError> {
        self.parse_and_wipe()
    }

    /// Parses the input and wipes it, whatever the outcome.
    fn parse_and_wipe(&mut self) -> Result<Credentials, IntakeError> {
        let result = parse(self.buf.as_slice());
        self.buf.wipe();
        result
    }

    #[cfg(test)]
    fn is_wiped(&mut self) -> bool {
        self.buf.is_empty() && self.buf.spare_mut().iter().all(|b| *b == 0)
    }
}

/// Reads stdin (fd 0) to EOF into a locked buffer, then points fd 0 at `/dev/null`.
pub fn read_stdin(limit: usize) -> Result<IntakeBuffer, IntakeError> {
    let mut intake = IntakeBuffer::new(limit)?;
    intake.read_to_end(|buf| {
        nix::unistd::read(std::io::stdin(), buf)
            .map_err(|errno| io::Error::from_raw_os_error(errno as i32))
    })?;
    crate::hardening::detach_stdin();
    Ok(intake)
}

/// Splits input into lines, tolerating CRLF and a missing final newline; blank lines are skipped.
fn key_lines(input: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    input
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.is_empty())
}

pub(crate) fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn parse(input: &[u8]) -> Result<Credentials, IntakeError> {
    // The first byte of the first line that is neither blank nor a `#` comment: JSON lines
    // may open with comments (keys may not, so a `#` before keys stays an error).
    let first = input
        .split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .find(|line| !line.is_empty() && !line.starts_with(b"#"))
        .and_then(|line| line.first());
    let first = match first {
        Some(b'{') | Some(b'[') => first,
        _ => input.iter().find(|b| !b.is_ascii_whitespace()),
    };
    let parsed = match first {
        None => return Err(IntakeError::Empty),
        Some(b'{') | Some(b'[') => accounts::parse(input)?,
        Some(_) => parse_key_lines(input)?,
    };
    store(parsed)
}

fn parse_key_lines(input: &[u8]) -> Result<Vec<Parsed<'_>>, IntakeError> {
    let mut keys = Vec::new();
    for (line, key) in key_lines(input) {
        if key.len() > MAX_KEY_LINE_BYTES {
            return Err(IntakeError::KeyTooLong { line });
        }
        if let Some(pos) = key.iter().position(|b| !is_key_byte(*b)) {
            return Err(IntakeError::InvalidCharacter {
                line,
                position: pos + 1,
            });
        }
        keys.push(Parsed::ApiKey(Cow::Borrowed(key)));
    }
    Ok(keys)
}

/// The accounts of `parsed` in order, each one kept only if no earlier kept account is
/// the same account: the same key, or a ChatGPT account sharing its refresh token or its
/// access token.
///
/// Linear: each kept account's identifying tokens go into a set (borrowed slices of the
/// intake buffer, never copies). Comparing every pair made 100,000 keys take half a minute.
fn dedup(parsed: Vec<Parsed<'_>>) -> Vec<Parsed<'_>> {
    use std::collections::HashSet;
    let mut keys: HashSet<&[u8]> = HashSet::with_capacity(parsed.len());
    let mut refresh_tokens: HashSet<&str> = HashSet::new();
    let mut access_tokens: HashSet<&str> = HashSet::new();
    let mut keep = Vec::with_capacity(parsed.len());
    for account in &parsed {
        let new = match account {
            Parsed::ApiKey(key) | Parsed::NamedKey { key, .. } => keys.insert(&key[..]),
            Parsed::Chatgpt {
                access, refresh, ..
            } => {
                let seen = refresh
                    .as_deref()
                    .is_some_and(|r| refresh_tokens.contains(r))
                    || access.as_deref().is_some_and(|a| access_tokens.contains(a));
                if !seen {
                    refresh_tokens.extend(refresh.as_deref());
                    access_tokens.extend(access.as_deref());
                }
                !seen
            }
        };
        keep.push(new);
    }
    drop((keys, refresh_tokens, access_tokens));
    parsed
        .into_iter()
        .zip(keep)
        .filter_map(|(account, new)| new.then_some(account))
        .collect()
}

/// Copies each account's secrets once into a new locked arena, duplicates merged.
fn store(parsed: Vec<Parsed<'_>>) -> Result<Credentials, IntakeError> {
    let unique = dedup(parsed);
    if unique.is_empty() {
        return Err(IntakeError::Empty);
    }
    let needed: usize = unique
        .iter()
        .map(|p| match p {
            Parsed::ApiKey(key) | Parsed::NamedKey { key, .. } => BEARER_PREFIX.len() + key.len(),
            Parsed::Chatgpt {
                access, refresh, ..
            } => access.as_ref().map_or(0, |a| a.len()) + refresh.as_ref().map_or(0, |r| r.len()),
        })
        .sum();
    let mut arena = SecretArena::with_capacity(needed.max(1))?;
    let too_small =
        || IntakeError::Memory(ArenaError::Map(io::Error::other("secret arena too small")));
    let mut accounts = Vec::with_capacity(unique.len());
    for account in unique {
        let credential = match account {
            Parsed::ApiKey(key) => Credential::ApiKey {
                bearer: arena
                    .push_concat(&[BEARER_PREFIX, &key])
                    .ok_or_else(too_small)?,
                provider: None,
            },
            Parsed::NamedKey { key, provider } => Credential::ApiKey {
                bearer: arena
                    .push_concat(&[BEARER_PREFIX, &key])
                    .ok_or_else(too_small)?,
                provider: Some(provider),
            },
            Parsed::Chatgpt {
                access,
                refresh,
                account_id,
                expires_at,
                provider,
            } => {
                let mut push =
                    |token: Option<Cow<'_, str>>| -> Result<Option<SecretRange>, IntakeError> {
                        match token {
                            Some(t) => Ok(Some(
                                arena.push_concat(&[t.as_bytes()]).ok_or_else(too_small)?,
                            )),
                            None => Ok(None),
                        }
                    };
                Credential::Chatgpt(ChatgptCredential {
                    access: push(access)?,
                    refresh: push(refresh)?,
                    account_id,
                    expires_at,
                    provider,
                })
            }
        };
        accounts.push(credential);
    }
    Ok(Credentials {
        arena: Arc::new(arena),
        accounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out `input` in the given chunk sizes, then EOF or `end`.
    fn chunked_reader(
        input: &'static [u8],
        chunk: usize,
        end: Option<io::ErrorKind>,
    ) -> impl FnMut(&mut [u8]) -> io::Result<usize> {
        let mut pos = 0;
        let mut interrupted_once = false;
        move |buf: &mut [u8]| {
            if !interrupted_once {
                interrupted_once = true;
                return Err(io::ErrorKind::Interrupted.into());
            }
            if pos == input.len() {
                return match end {
                    Some(kind) => Err(kind.into()),
                    None => Ok(0),
                };
            }
            let n = chunk.min(buf.len()).min(input.len() - pos);
            buf[..n].copy_from_slice(&input[pos..pos + n]);
            pos += n;
            Ok(n)
        }
    }

    fn load(input: &'static [u8], chunk: usize) -> Result<Credentials, IntakeError> {
        let mut intake = IntakeBuffer::new(4 * 1024 * 1024).unwrap();
        intake.read_to_end(chunked_reader(input, chunk, None))?;
        intake.into_credentials()
    }

    fn bearer_of(creds: &Credentials) -> &[u8] {
        let Credential::ApiKey { bearer, .. } = creds.accounts[0] else {
            panic!("not an API key")
        };
        creds.arena.get(bearer)
    }

    #[test]
    fn accepts_one_key_line_with_short_reads_and_crlf() {
        for chunk in [1, 2, 3, 7, 4096] {
            let creds = load(b"sk-test_KEY-123\r\n", chunk).unwrap();
            assert_eq!(bearer_of(&creds), b"Bearer sk-test_KEY-123");
            let range = creds.accounts[0].secret_range().unwrap();
            assert_eq!(creds.arena.get(range), b"sk-test_KEY-123");
        }
    }

    #[test]
    fn accepts_a_key_without_final_newline_and_surrounding_blank_lines() {
        assert_eq!(bearer_of(&load(b"abc", 100).unwrap()), b"Bearer abc");
        assert_eq!(
            bearer_of(&load(b"\n\nabc\n\n", 100).unwrap()),
            b"Bearer abc"
        );
    }

    #[test]
    fn empty_input_is_an_error() {
        assert!(matches!(load(b"", 10), Err(IntakeError::Empty)));
        assert!(matches!(load(b"\r\n\n", 10), Err(IntakeError::Empty)));
    }

    #[test]
    fn invalid_bytes_are_named_by_position_never_echoed() {
        for input in [
            &b"sk-ab cd\n"[..],
            b"sk-\xffab\n",
            b"sk-a\0b",
            b"sk=secretvalue",
        ] {
            let input: &'static [u8] = Box::leak(input.to_vec().into_boxed_slice());
            let err = load(input, 3).err().unwrap();
            assert!(
                matches!(err, IntakeError::InvalidCharacter { line: 1, .. }),
                "{err}"
            );
            let message = err.to_string();
            assert!(
                !message.contains("secretvalue") && !message.contains("sk-"),
                "{message}"
            );
        }
    }

    #[test]
    fn several_key_lines_are_several_accounts_and_duplicates_merge() {
        let creds = load(b"key1\r\nkey2\n\nkey1\nkey3", 5).unwrap();
        let keys: Vec<&[u8]> = creds
            .accounts
            .iter()
            .map(|c| creds.arena.get(c.secret_range().unwrap()))
            .collect();
        assert_eq!(keys, vec![&b"key1"[..], b"key2", b"key3"]);
    }

    #[test]
    fn a_thousand_keys_fit_in_a_small_locked_arena() {
        let mut input = String::new();
        for i in 0..1000 {
            input.push_str(&format!("sk-proj-{i:04}-{}\n", "x".repeat(150)));
        }
        let input: &'static [u8] = Box::leak(input.into_bytes().into_boxed_slice());
        let creds = load(input, 4096).unwrap();
        assert_eq!(creds.accounts.len(), 1000);
        assert!(
            creds.arena.len() < 256 * 1024,
            "{} bytes locked",
            creds.arena.len()
        );
    }

    #[test]
    fn json_accounts_land_in_the_arena_and_duplicates_merge() {
        let creds = load(
            b"[{\"access_token\":\"at-1\",\"refresh_token\":\"rt-1\",\"account_id\":\"a1\"},\n {\"refresh_token\":\"rt-1\"}, {\"OPENAI_API_KEY\":\"sk-k\"}]",
            7,
        )
        .unwrap();
        assert_eq!(
            creds.accounts.len(),
            2,
            "the same refresh token is one account"
        );
        let Credential::Chatgpt(c) = &creds.accounts[0] else {
            panic!("expected a ChatGPT account")
        };
        assert_eq!(creds.arena.get(c.access.unwrap()), b"at-1");
        assert_eq!(creds.arena.get(c.refresh.unwrap()), b"rt-1");
        assert_eq!(c.account_id.as_deref(), Some("a1"));
        assert_eq!(
            creds.arena.get(creds.accounts[1].secret_range().unwrap()),
            b"sk-k"
        );
    }

    #[test]
    fn json_lines_may_start_with_comment_and_blank_lines() {
        let creds = load(
            b"# exported pool\n\n  # second comment\n{\"refresh_token\":\"rt-1\"}\n{\"OPENAI_API_KEY\":\"sk-k\"}\n",
            5,
        )
        .unwrap();
        assert_eq!(creds.accounts.len(), 2);
        assert_eq!(
            creds.arena.get(creds.accounts[1].secret_range().unwrap()),
            b"sk-k"
        );
        // Key lines take no comments: a '#' line before keys is still an invalid character.
        let err = load(b"# keys\nsk-one\n", 3).err().unwrap();
        assert!(
            matches!(
                err,
                IntakeError::InvalidCharacter {
                    line: 1,
                    position: 1
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_thousand_chatgpt_accounts_fit_in_a_small_locked_arena() {
        let access = "x".repeat(1800);
        let mut input = String::new();
        for i in 0..1000 {
            input.push_str(&format!(
                "{{\"access_token\":\"{access}{i}\",\"refresh_token\":\"rt_{i:04}_{}\",\"account_id\":\"acct-{i}\"}}\n",
                "r".repeat(60)
            ));
        }
        let input: &'static [u8] = Box::leak(input.into_bytes().into_boxed_slice());
        let creds = load(input, 1 << 16).unwrap();
        assert_eq!(creds.accounts.len(), 1000);
        assert!(
            creds.arena.len() < 2 * 1024 * 1024,
            "{} bytes",
            creds.arena.len()
        );
    }

    fn chatgpt<'a>(access: Option<&'a str>, refresh: Option<&'a str>) -> Parsed<'a> {
        Parsed::Chatgpt {
            access: access.map(Cow::Borrowed),
            refresh: refresh.map(Cow::Borrowed),
            account_id: None,
            expires_at: None,
            provider: None,
        }
    }

    /// True when `a` and `b` are the same account (merged at intake).
    fn same_account(a: &Parsed<'_>, b: &Parsed<'_>) -> bool {
        match (a, b) {
            (Parsed::ApiKey(a), Parsed::ApiKey(b)) => a == b,
            (
                Parsed::Chatgpt {
                    access: a1,
                    refresh: r1,
                    ..
                },
                Parsed::Chatgpt {
                    access: a2,
                    refresh: r2,
                    ..
                },
            ) => (r1.is_some() && r1 == r2) || (a1.is_some() && a1 == a2),
            _ => false,
        }
    }

    type Kept<'a> = (&'a str, Option<&'a [u8]>, Option<&'a str>);

    /// The accounts `dedup` kept, as (kind, access or key, refresh).
    fn kept<'a>(accounts: &'a [Parsed<'a>]) -> Vec<Kept<'a>> {
        accounts
            .iter()
            .map(|p| match p {
                Parsed::ApiKey(k) | Parsed::NamedKey { key: k, .. } => ("key", Some(&k[..]), None),
                Parsed::Chatgpt {
                    access, refresh, ..
                } => (
                    "chatgpt",
                    access.as_deref().map(str::as_bytes),
                    refresh.as_deref(),
                ),
            })
            .collect()
    }

    #[test]
    fn dedup_keeps_the_first_of_each_account_in_order() {
        let input = || {
            vec![
                Parsed::ApiKey(Cow::Borrowed(b"k1")),
                chatgpt(Some("a1"), Some("r1")),
                Parsed::ApiKey(Cow::Borrowed(b"k2")),
                Parsed::ApiKey(Cow::Borrowed(b"k1")),
                // Same refresh token, other access token: the same account.
                chatgpt(Some("a9"), Some("r1")),
                // Same access token, no refresh token: the same account.
                chatgpt(Some("a1"), None),
                // No tokens in common with a kept account: kept, although an access token
                // equals a key's bytes (keys and ChatGPT tokens never merge).
                chatgpt(Some("k2"), Some("r2")),
                chatgpt(None, Some("r2")),
                chatgpt(None, Some("r3")),
            ]
        };
        // The pairwise definition, for reference.
        let mut reference: Vec<Parsed<'_>> = Vec::new();
        for account in input() {
            if !reference.iter().any(|u| same_account(u, &account)) {
                reference.push(account);
            }
        }
        let unique = dedup(input());
        assert_eq!(kept(&unique), kept(&reference));
        assert_eq!(
            kept(&unique),
            vec![
                ("key", Some(&b"k1"[..]), None),
                ("chatgpt", Some(&b"a1"[..]), Some("r1")),
                ("key", Some(&b"k2"[..]), None),
                ("chatgpt", Some(&b"k2"[..]), Some("r2")),
                ("chatgpt", None, Some("r3")),
            ]
        );
    }

    #[test]
    #[allow(clippy::disallowed_types)] // a wall-clock bound on a synchronous function
    fn dedup_of_two_hundred_thousand_accounts_is_not_quadratic() {
        // Quadratic pairwise comparison: 2e10 comparisons, minutes even in release builds.
        // Linear: well under a second in a debug build.
        let keys: Vec<String> = (0..200_000).map(|i| format!("sk-key{i:08}")).collect();
        let mut input: Vec<Parsed<'_>> = keys
            .iter()
            .map(|k| Parsed::ApiKey(Cow::Borrowed(k.as_bytes())))
            .collect();
        input.push(Parsed::ApiKey(Cow::Borrowed(keys[7].as_bytes())));
        let started = std::time::Instant::now();
        let unique = dedup(input);
        let took = started.elapsed();
        assert_eq!(unique.len(), 200_000);
        assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    }

    #[test]
    fn key_line_length_limit_is_1024() {
        let ok: &'static [u8] = Box::leak(vec![b'k'; MAX_KEY_LINE_BYTES].into_boxed_slice());
        assert!(load(ok, 100).is_ok());
        let long: &'static [u8] = Box::leak(vec![b'k'; MAX_KEY_LINE_BYTES + 1].into_boxed_slice());
        assert!(matches!(
            load(long, 100),
            Err(IntakeError::KeyTooLong { line: 1 })
        ));
    }

    #[test]
    fn oversize_input_is_refused_and_wiped() {
        let mut intake = IntakeBuffer::new(10).unwrap();
        let err = intake
            .read_to_end(chunked_reader(b"0123456789A", 4, None))
            .unwrap_err();
        assert!(matches!(err, IntakeError::TooLarge { limit: 10 }));
        assert!(intake.is_wiped());
        // Exactly at the limit is fine.
        let mut intake = IntakeBuffer::new(10).unwrap();
        intake
            .read_to_end(chunked_reader(b"0123456789", 4, None))
            .unwrap();
    }

    #[test]
    fn input_growing_past_the_first_buffer_is_kept_whole() {
        let mut line = vec![b'a'; 1000];
        line.push(b'\n');
        let input: &'static [u8] = Box::leak(line.repeat(9).into_boxed_slice());
        let mut intake = IntakeBuffer::new(1 << 20).unwrap();
        intake
            .read_to_end(chunked_reader(input, 333, None))
            .unwrap();
        assert_eq!(intake.buf.as_slice(), input);
    }

    #[test]
    fn read_error_is_reported_and_wipes_the_buffer() {
        let mut intake = IntakeBuffer::new(1024).unwrap();
        let err = intake
            .read_to_end(chunked_reader(
                b"sk-partial",
                3,
                Some(io::ErrorKind::BrokenPipe),
            ))
            .unwrap_err();
        assert!(matches!(err, IntakeError::Read(io::ErrorKind::BrokenPipe)));
        assert!(intake.is_wiped());
    }

    #[test]
    fn parse_errors_wipe_the_buffer_too() {
        let mut intake = IntakeBuffer::new(1024).unwrap();
        intake
            .read_to_end(chunked_reader(b"bad key\n", 3, None))
            .unwrap();
        // into_credentials consumes the buffer; check the wipe through the same path it uses.
        assert!(intake.parse_and_wipe().is_err());
        assert!(intake.is_wiped());
    }
}
