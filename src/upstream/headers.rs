//! Which headers cross the proxy, in each direction.
//!
//! Request: every end-to-end header is forwarded except the client's credentials
//! (`Authorization`, `x-api-key`, cookies), billing selectors (`OpenAI-Organization`,
//! `OpenAI-Project`: the key's owner sets them with flags), proxy and forwarding headers,
//! `Accept-Encoding` (identity is asked for, so error bodies can be redacted), framing (the
//! client's `Content-Length`, `Expect`) and hop-by-hop headers, including any the client names
//! in `Connection`. Response: everything end-to-end is mirrored except hop-by-hop headers and
//! `Set-Cookie`.

use http::header::{self, HeaderMap, HeaderName};

/// Hop-by-hop and framing headers, never forwarded in either direction.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::HOST,
    header::CONTENT_LENGTH,
];

const REQUEST_DROPPED: &[HeaderName] = &[
    header::AUTHORIZATION,
    header::COOKIE,
    header::ACCEPT_ENCODING,
    header::EXPECT,
    header::FORWARDED,
    header::VIA,
];

const REQUEST_DROPPED_NAMES: &[&str] = &[
    "x-api-key",
    "openai-organization",
    "openai-project",
    "keep-alive",
    "http2-settings",
    "x-real-ip",
];

fn named_in_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
            })
            .unwrap_or(false)
    })
}

/// Whether a client request header may be forwarded upstream.
pub fn forward_request_header(headers: &HeaderMap, name: &HeaderName) -> bool {
    let n = name.as_str();
    !(HOP_BY_HOP.contains(name)
        || REQUEST_DROPPED.contains(name)
        || REQUEST_DROPPED_NAMES.contains(&n)
        || n.starts_with("proxy-")
        || n.starts_with("x-forwarded-")
        || named_in_connection(headers, name))
}

/// Whether an upstream response header may be mirrored to the client.
pub fn mirror_response_header(headers: &HeaderMap, name: &HeaderName) -> bool {
    let n = name.as_str();
    !(HOP_BY_HOP.contains(name)
        || name == header::SET_COOKIE
        || n == "keep-alive"
        || n.starts_with("proxy-")
        || named_in_connection(headers, name))
}

/// The client's headers that go upstream, in order.
pub fn request_headers_for_upstream(client: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(client.len() + 4);
    for (name, value) in client {
        if forward_request_header(client, name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The upstream's headers that go to the client.
pub fn response_headers_for_client(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        if mirror_response_header(upstream, name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn client_credentials_billing_proxy_and_hop_headers_are_dropped() {
        let client = map(&[
            ("authorization", "Bearer client"),
            ("x-api-key", "client"),
            ("cookie", "a=b"),
            ("openai-organization", "org"),
            ("openai-project", "proj"),
            ("proxy-authorization", "x"),
            ("proxy-connection", "keep-alive"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("accept-encoding", "gzip"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("content-length", "5"),
            ("host", "127.0.0.1:1"),
            ("expect", "100-continue"),
            ("session-id", "s1"),
            ("session_id", "s2"),
            ("x-codex-turn-metadata", "{}"),
            ("originator", "codex_exec"),
            ("openai-beta", "responses=experimental"),
            ("content-encoding", "zstd"),
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
        ]);
        let out = request_headers_for_upstream(&client);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "session-id",
                "session_id",
                "x-codex-turn-metadata",
                "originator",
                "openai-beta",
                "content-encoding",
                "content-type",
                "accept"
            ]
        );
    }

    #[test]
    fn response_hop_headers_and_cookies_are_dropped() {
        let upstream = map(&[
            ("content-type", "text/event-stream"),
            ("x-request-id", "req_1"),
            ("x-codex-primary-used-percent", "10"),
            ("x-ratelimit-remaining-requests", "99"),
            ("openai-model", "gpt-5"),
            ("set-cookie", "__cf=1"),
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("keep-alive", "timeout=5"),
        ]);
        let out = response_headers_for_client(&upstream);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "content-type",
                "x-request-id",
                "x-codex-primary-used-percent",
                "x-ratelimit-remaining-requests",
                "openai-model"
            ]
        );
    }
}
