//! Remaining quota, learned from the headers of every upstream response.
//!
//! Codex backend: `x-codex-primary-used-percent` and `x-codex-secondary-used-percent` (the
//! short and the long window); the tighter one decides. OpenAI API: the `x-ratelimit-remaining-*`
//! / `x-ratelimit-limit-*` pairs for requests and tokens; the tighter one decides.

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

#[cfg(test)]
mod tests {
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
