//! Remaining quota, learned from the headers of every upstream response.
//!
//! Codex backend: `x-codex-primary-used-percent` and `x-codex-secondary-used-percent` (the
//! short and the long window); the tighter one decides. OpenAI API: the `x-ratelimit-remaining-*`
//! / `x-ratelimit-limit-*` pairs for requests and tokens; the tighter one decides. Anthropic
//! API: the `anthropic-ratelimit-*-remaining` / `-limit` pairs for requests and (input,
//! output) tokens ([`anthropic_remaining`], `docs/anthropic-wire.md`).

use http::HeaderMap;

fn number(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

/// Remaining quota as a fraction in 0–1, or `None` when the response says nothing about it.
pub fn remaining(headers: &HeaderMap) -> Option<f64> {
    let codex = [
        "x-codex-primary-used-percent",
        "x-codex-secondary-used-percent",
    ]
    .iter()
    .filter_map(|h| number(headers, h))
    .map(|used| 1.0 - used / 100.0);
    let api = [
        (
            "x-ratelimit-remaining-requests",
            "x-ratelimit-limit-requests",
        ),
        ("x-ratelimit-remaining-tokens", "x-ratelimit-limit-tokens"),
    ]
    .iter()
    .filter_map(|(rem, lim)| {
        let (rem, lim) = (number(headers, rem)?, number(headers, lim)?);
        (lim > 0.0).then(|| rem / lim)
    });
    codex
        .chain(api)
        .map(|r| r.clamp(0.0, 1.0))
        .fold(None, |min: Option<f64>, r| {
            Some(min.map_or(r, |m| m.min(r)))
        })
}

/// The Anthropic rate-limit header pairs (remaining, limit).
const ANTHROPIC_PAIRS: [(&str, &str); 4] = [
    (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-limit",
    ),
    (
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-limit",
    ),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-limit",
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-limit",
    ),
];

/// Remaining quota of an Anthropic key as a fraction in 0–1 (the tightest pair), or `None`.
pub fn anthropic_remaining(headers: &HeaderMap) -> Option<f64> {
    ANTHROPIC_PAIRS
        .iter()
        .filter_map(|(rem, lim)| {
            let (rem, lim) = (number(headers, rem)?, number(headers, lim)?);
            (lim > 0.0).then(|| (rem / lim).clamp(0.0, 1.0))
        })
        .fold(None, |min: Option<f64>, r| {
            Some(min.map_or(r, |m| m.min(r)))
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn anthropic_headers_give_the_tightest_pair() {
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "90"),
            ("anthropic-ratelimit-requests-limit", "100"),
            ("anthropic-ratelimit-input-tokens-remaining", "2000"),
            ("anthropic-ratelimit-input-tokens-limit", "10000"),
        ]);
        assert_eq!(anthropic_remaining(&h), Some(0.2));
        assert_eq!(remaining(&h), None, "not the OpenAI headers");
        assert_eq!(anthropic_remaining(&HeaderMap::new()), None);
    }

    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_tighter_codex_window_decides() {
        let h = headers(&[
            ("x-codex-primary-used-percent", "20"),
            ("x-codex-secondary-used-percent", "75.5"),
        ]);
        assert_eq!(remaining(&h), Some(0.245));
    }

    #[test]
    fn api_rate_limit_headers_give_the_tighter_ratio() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "450"),
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-tokens", "1000"),
            ("x-ratelimit-limit-tokens", "10000"),
        ]);
        assert_eq!(remaining(&h), Some(0.1));
    }

    #[test]
    fn nothing_known_is_none_and_nonsense_is_ignored() {
        assert_eq!(remaining(&HeaderMap::new()), None);
        assert_eq!(
            remaining(&headers(&[("x-codex-primary-used-percent", "lots")])),
            None
        );
        assert_eq!(
            remaining(&headers(&[("x-codex-primary-used-percent", "140")])),
            Some(0.0)
        );
        assert_eq!(
            remaining(&headers(&[
                ("x-ratelimit-remaining-requests", "5"),
                ("x-ratelimit-limit-requests", "0")
            ])),
            None
        );
    }
}
