//! What the proxy reads from a ChatGPT token without verifying it: the expiry of an access
//! token and the account id in an id token (the Codex client reads them the same way,
//! unverified). Also the RFC 3339 timestamps of account files.
//!
//! Decoded claims are ordinary heap data, freed (and so wiped by the wiping allocator) when
//! dropped; only the claims asked for are kept.

use serde::Deserialize;

/// The claims the pool uses.
#[derive(Default, Deserialize)]
pub struct Claims {
    pub exp: Option<i64>,
    #[serde(rename = "https://api.openai.com/auth", default)]
    auth: Option<AuthClaims>,
}

#[derive(Default, Deserialize)]
struct AuthClaims {
    chatgpt_account_id: Option<String>,
}

impl Claims {
    /// The ChatGPT account id the token was issued for.
    pub fn account_id(self) -> Option<String> {
        self.auth.and_then(|a| a.chatgpt_account_id)
    }
}

/// The claims of a JWT's payload (`header.payload.signature`), if it decodes.
pub fn claims(token: &[u8]) -> Option<Claims> {
    let mut parts = token.split(|b| *b == b'.');
    let _header = parts.next()?;
    let payload = parts.next()?;
    parts.next()?;
    let json = zeroize::Zeroizing::new(base64url_decode(payload)?);
    serde_json::from_slice(&json).ok()
}

/// Unpadded (or padded) base64url, as JWTs use.
fn base64url_decode(input: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32)
    }
    let input = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="))
        .unwrap_or(input);
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    for chunk in input.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds of an RFC 3339 timestamp (`2026-11-21T08:00:00Z`, fractions and offsets allowed).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        b"Z" | b"z" | b"" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let d = |i: usize| i64::from(digits[i] - b'0');
            let minutes = (d(0) * 10 + d(1)) * 60 + d(2) * 10 + d(3);
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// RFC 3339 in UTC with whole seconds, as account files write it.
pub fn format_rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let mut acc = 0u32;
            for (i, b) in chunk.iter().enumerate() {
                acc |= u32::from(*b) << (16 - 8 * i);
            }
            for i in 0..=chunk.len() {
                out.push(A[((acc >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn reads_expiry_and_account_id_of_an_unsigned_token() {
        for payload in [
            r#"{"exp":1900000000,"https://api.openai.com/auth":{"chatgpt_account_id":"acct-1"}}"#,
            r#"{"exp":1900000000,"https://api.openai.com/auth":{"chatgpt_account_id":"acct-1"},"x":"ab"}"#,
            r#"{"exp":1900000000,"https://api.openai.com/auth":{"chatgpt_account_id":"acct-1"},"x":"abc"}"#,
        ] {
            let token = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(payload.as_bytes()));
            let claims = claims(token.as_bytes()).unwrap();
            assert_eq!(claims.exp, Some(1_900_000_000));
            assert_eq!(claims.account_id().as_deref(), Some("acct-1"));
        }
        assert!(claims(b"not-a-jwt").is_none());
        assert!(claims(b"a.!!!.b").is_none());
    }

    #[test]
    fn rfc3339_round_trips_and_accepts_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-21T08:00:00Z"), Some(1_795_248_000));
        assert_eq!(
            parse_rfc3339("2026-11-21T09:30:00.123456+01:30"),
            Some(1_795_248_000)
        );
        assert_eq!(format_rfc3339(1_795_248_000), "2026-11-21T08:00:00Z");
        for t in [0, 951_782_400, 1_795_248_000, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
