//! Removing echoes of a secret from upstream error bodies.
//!
//! OpenAI's 401 says "Incorrect API key provided: sk-abc1****…wxyz" (short keys in full). Any
//! token of key-like characters (`A-Za-z0-9_-` and the `*` mask) that contains the key, is a
//! long piece of it, or is a masked form sharing its first or last characters, is replaced
//! by `[REDACTED]`.

const REDACTED: &[u8] = b"[REDACTED]";

/// Prefix or suffix length that identifies a masked echo.
const MASK_PREFIX: usize = 3;
const MASK_SUFFIX: usize = 4;
/// A bare (unmasked) fragment this long of the key is itself redacted.
const FRAGMENT: usize = 8;

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'*'
}

fn is_echo(token: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() || token.len() < MASK_SUFFIX {
        return false;
    }
    if memchr::memmem::find(token, secret).is_some() {
        return true;
    }
    if token.len() >= FRAGMENT.min(secret.len()) && memchr::memmem::find(secret, token).is_some() {
        return true;
    }
    if token.contains(&b'*') {
        let prefix = MASK_PREFIX.min(secret.len());
        let suffix = MASK_SUFFIX.min(secret.len());
        return token.starts_with(&secret[..prefix])
            || token.ends_with(&secret[secret.len() - suffix..]);
    }
    false
}

/// Returns the body with every echo of any secret replaced, or `None` when there is none.
pub fn redact<'a>(body: &[u8], secrets: impl Iterator<Item = &'a [u8]> + Clone) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    let mut copied = 0;
    while i < body.len() {
        if !is_token_byte(body[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < body.len() && is_token_byte(body[i]) {
            i += 1;
        }
        let token = &body[start..i];
        if secrets.clone().any(|s| is_echo(token, s)) {
            let buf = out.get_or_insert_with(|| Vec::with_capacity(body.len()));
            buf.extend_from_slice(&body[copied..start]);
            buf.extend_from_slice(REDACTED);
            copied = i;
        }
    }
    let mut buf = out?;
    buf.extend_from_slice(&body[copied..]);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"sk-proj-CANARYabcdefghijklmnopqrstuvwxyz0123";

    fn run(body: &str) -> String {
        match redact(body.as_bytes(), std::iter::once(KEY)) {
            Some(b) => String::from_utf8(b).unwrap(),
            None => body.to_string(),
        }
    }

    #[test]
    fn full_key_masked_forms_and_fragments_are_redacted() {
        let full = format!(
            "Incorrect API key provided: {}.",
            std::str::from_utf8(KEY).unwrap()
        );
        assert_eq!(run(&full), "Incorrect API key provided: [REDACTED].");
        assert_eq!(
            run("key sk-proj-************************0123 bad"),
            "key [REDACTED] bad"
        );
        assert_eq!(run("key sk-p****0123"), "key [REDACTED]");
        assert_eq!(run("\"CANARYabcdefgh\""), "\"[REDACTED]\"");
        assert_eq!(
            run("{\"k\":\"Bearer sk-proj-CANARYabcdefghijklmnopqrstuvwxyz0123\"}"),
            "{\"k\":\"Bearer [REDACTED]\"}"
        );
    }

    #[test]
    fn unrelated_text_is_untouched() {
        let body = r#"{"error":{"message":"Rate limit reached for gpt-5 in organization org-abc","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(redact(body.as_bytes(), std::iter::once(KEY)), None);
        assert_eq!(
            run("**** masked other-key wxyz"),
            "**** masked other-key wxyz"
        );
    }
}
