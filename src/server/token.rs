//! The optional per-launch client token (`--client-token`).
//!
//! Accepted as `Authorization: Bearer <token>` or `x-api-key: <token>`. Every credential
//! header the client sends must carry the token (a wrong one next to a right one is refused),
//! and there must be at least one. The comparison takes the same time wherever it differs.

use http::header::{self, HeaderMap};
use zeroize::Zeroizing;

/// A random token, 32 bytes from the OS as 64 hex digits. No `Debug`.
pub struct ClientToken {
    value: Zeroizing<String>,
}

impl ClientToken {
    /// A fresh random token.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut raw = Zeroizing::new([0u8; 32]);
        getrandom::fill(raw.as_mut())?;
        let mut value = Zeroizing::new(String::with_capacity(64));
        for b in raw.iter() {
            value.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            value.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
        }
        Ok(ClientToken { value })
    }

    /// The token text, for the server-info file only.
    pub fn expose(&self) -> &str {
        &self.value
    }

    fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.value.as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        presented
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// True when the request carries the token and no other credential.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        let mut seen = 0;
        for value in headers.get_all(header::AUTHORIZATION) {
            let bytes = value.as_bytes();
            let Some(token) = bytes
                .strip_prefix(b"Bearer ")
                .or_else(|| bytes.strip_prefix(b"bearer "))
            else {
                return false;
            };
            if !self.matches(token) {
                return false;
            }
            seen += 1;
        }
        for value in headers.get_all("x-api-key") {
            if !self.matches(value.as_bytes()) {
                return false;
            }
            seen += 1;
        }
        seen > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn token_is_64_hex_digits_and_fresh_each_time() {
        let a = ClientToken::generate().unwrap();
        let b = ClientToken::generate().unwrap();
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn accepts_bearer_or_x_api_key_and_nothing_else() {
        let t = ClientToken::generate().unwrap();
        let tok = t.expose().to_string();
        assert!(t.authorizes(&headers(&[("authorization", format!("Bearer {tok}"))])));
        assert!(t.authorizes(&headers(&[("x-api-key", tok.clone())])));
        assert!(t.authorizes(&headers(&[
            ("authorization", format!("Bearer {tok}")),
            ("x-api-key", tok.clone())
        ])));
        assert!(!t.authorizes(&headers(&[])));
        assert!(!t.authorizes(&headers(&[("authorization", tok.clone())])));
        assert!(!t.authorizes(&headers(&[("authorization", "Bearer wrong".into())])));
        assert!(!t.authorizes(&headers(&[
            ("authorization", format!("Bearer {tok}")),
            ("x-api-key", "wrong".into())
        ])));
        assert!(!t.authorizes(&headers(&[("authorization", format!("Basic {tok}"))])));
        assert!(!t.authorizes(&headers(&[("x-api-key", format!("{tok}x"))])));
    }
}
