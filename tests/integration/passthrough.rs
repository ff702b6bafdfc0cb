//! Passthrough: bodies byte for byte, the request and response header policy, the upstream URL
//! (including Azure-style paths and queries), redaction of echoed keys, redirects relayed and
//! not followed, and invalid bodies refused before the upstream.

use std::time::Duration;

use bytes::Bytes;
use pretty_assertions::assert_eq;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::mock::{responses_json, MockUpstream, Recorded, Script};
use crate::proxy::{TestProxy, CANARY_KEY};
use crate::raw::{self, RawResponse};

const LIMIT: Duration = Duration::from_secs(5);
const BODY: &str = r#"{"model":"m","input":"hi"}"#;
const TEXT: &str = "passthrough ok";

async fn setup(flags: &[&str]) -> (MockUpstream, TestProxy) {
    let mock = MockUpstream::start(TEXT).await;
    let proxy = TestProxy::start(&mock.base_url, flags).await;
    (mock, proxy)
}

async fn post(proxy: &TestProxy, path: &str, body: &str, headers: &[(&str, &str)]) -> RawResponse {
    raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, path, body, headers),
        LIMIT,
    )
    .await
}

/// Every value of header `name` the upstream received, in order.
fn values<'a>(recorded: &'a Recorded, name: &str) -> Vec<&'a str> {
    recorded
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

fn default_answer() -> Value {
    serde_json::from_str(&responses_json(TEXT)).unwrap()
}

/// The only request the upstream received.
fn only_request(mock: &MockUpstream) -> Recorded {
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "expected exactly one upstream request");
    requests.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_non_streaming_json_request_round_trips() {
    let (mock, proxy) = setup(&[]).await;
    let response = post(&proxy, "/v1/responses", BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.complete);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json(), default_answer());
    let recorded = only_request(&mock);
    assert_eq!(
        (recorded.method.as_str(), recorded.target.as_str()),
        ("POST", "/v1/responses")
    );
    assert_eq!(&recorded.body[..], BODY.as_bytes());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_small_json_answer_sent_chunked_reaches_the_client_whole_with_its_length() {
    // The upstream sends the answer in two chunks, without a length: the proxy holds it
    // until it is complete, so the client gets it in one piece, with a content-length, and
    // without a separate write for the end of the body.
    let (mock, proxy) = setup(&[]).await;
    let answer = responses_json(TEXT);
    let (first, second) = answer.split_at(answer.len() / 2);
    mock.push(Script::Respond {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        chunks: vec![
            (Duration::ZERO, Bytes::from(first.to_string())),
            (Duration::ZERO, Bytes::from(second.to_string())),
        ],
    });
    let response = post(&proxy, "/v1/responses", BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.complete);
    assert_eq!(response.header("transfer-encoding"), None);
    assert_eq!(
        response.header("content-length"),
        Some(answer.len().to_string().as_str())
    );
    assert_eq!(response.json(), default_answer());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_json_answer_whose_rest_is_slow_still_arrives_whole() {
    // A pause inside the answer (shorter than the idle timeout) does not end the hold: the
    // client gets the whole answer, with its length.
    let (mock, proxy) = setup(&[]).await;
    let answer = responses_json(TEXT);
    let (first, second) = answer.split_at(answer.len() / 2);
    mock.push(Script::Respond {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        chunks: vec![
            (Duration::ZERO, Bytes::from(first.to_string())),
            (Duration::from_millis(300), Bytes::from(second.to_string())),
        ],
    });
    let response = post(&proxy, "/v1/responses", BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.complete);
    assert_eq!(
        response.header("content-length"),
        Some(answer.len().to_string().as_str())
    );
    assert_eq!(response.json(), default_answer());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_json_answer_over_the_hold_cap_goes_out_as_it_comes() {
    // 192 KiB in 16 KiB chunks: past the 64 KiB cap the proxy stops holding and relays the
    // rest as it comes (so without a length), complete.
    let (mock, proxy) = setup(&[]).await;
    let text = "x".repeat(192 * 1024);
    let answer = responses_json(&text);
    mock.push(Script::Respond {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        chunks: answer
            .as_bytes()
            .chunks(16 * 1024)
            .map(|c| (Duration::ZERO, Bytes::copy_from_slice(c)))
            .collect(),
    });
    let response = post(&proxy, "/v1/responses", BODY, &[]).await;
    assert_eq!(response.status, 200);
    assert!(response.complete);
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.body, answer.as_bytes());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_json_answer_that_stalls_while_held_ends_after_the_idle_timeout_with_what_came() {
    let mock = MockUpstream::start(TEXT).await;
    let proxy = TestProxy::start(&mock.base_url, &["--idle-timeout", "0.5"]).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    mock.push(Script::Gated {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        chunks: rx,
    });
    let started = tokio::time::Instant::now();
    let exchange = tokio::spawn({
        let addr = proxy.addr;
        async move { raw::exchange(addr, &raw::post(addr, "/v1/responses", BODY, &[]), LIMIT).await }
    });
    assert!(mock.wait_requests(1, LIMIT).await);
    tx.send(Bytes::from_static(b"{\"id\":\"resp_1\",")).unwrap();
    let response = exchange.await.unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status, 200);
    assert!(!response.complete, "a cut answer must not look complete");
    assert!(
        String::from_utf8_lossy(&response.body).starts_with("{\"id\":\"resp_1\","),
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_millis(950),
        "ended after {waited:?}, expected about the 0.5 s idle timeout (once, not twice)"
    );
    drop(tx);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_request_body_reaches_the_upstream_byte_for_byte() {
    let (mock, proxy) = setup(&[]).await;
    let body = "  {\t\"model\" :\"m\" ,\r\n  \"input\":\"h\u{e9}llo \u{2713} \u{1F600} \\u00e9 \\\"q\\\" \\n\",\n\"n\":[1 ,2.50,-0e0, 1E+2],\"s\":false ,\"o\":{ }}\n\n  ";
    let response = post(&proxy, "/v1/responses", body, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let recorded = only_request(&mock);
    assert_eq!(&recorded.body[..], body.as_bytes());
    assert_eq!(
        values(&recorded, "content-length"),
        vec![body.len().to_string()]
    );

    // A chunked client body, split at awkward places (inside a multi-byte character), arrives
    // as the same bytes.
    let bytes = body.as_bytes();
    let splits = [0, 1, 7, 33, 44, bytes.len()];
    let mut request = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        proxy.addr.port()
    )
    .into_bytes();
    for pair in splits.windows(2) {
        let piece = &bytes[pair[0]..pair[1]];
        request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let response = raw::exchange(proxy.addr, &request, LIMIT).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(&requests[1].body[..], body.as_bytes());
    assert!(values(&requests[1], "transfer-encoding")
        .iter()
        .all(|v| !v.contains("gzip")));
    proxy.shutdown().await;
}

#[tokio::test]
async fn allowed_headers_arrive_unchanged() {
    let (mock, proxy) = setup(&[]).await;
    let allowed = [
        ("session-id", "0199a2f1-7c3e-7d10-8c1a-5e4d3c2b1a09"),
        ("session_id", "0199a2f1-7c3e-7d10-8c1a-5e4d3c2b1a0a"),
        (
            "x-codex-turn-metadata",
            r#"{"turn_id":"t-1","sandbox":"seatbelt","cwd":"/tmp/a b"}"#,
        ),
        ("originator", "codex_cli_rs"),
        ("openai-beta", "responses=experimental"),
        ("x-client-request-id", "req-client-42"),
        ("accept", "application/json"),
        ("user-agent", "codex_cli_rs/0.50.0 (Linux; x86_64)"),
    ];
    let response = post(&proxy, "/v1/responses", BODY, &allowed).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let recorded = only_request(&mock);
    for (name, value) in allowed {
        assert_eq!(values(&recorded, name), vec![value], "{name}");
    }
    assert_eq!(values(&recorded, "content-type"), vec!["application/json"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_credentials_billing_forwarding_and_hop_by_hop_headers_never_reach_the_upstream() {
    let (mock, proxy) = setup(&[]).await;
    let dropped = [
        ("authorization", "Bearer sk-client-secret-AAAA"),
        ("authorization", "Basic Y2xpZW50OnNlY3JldA=="),
        ("x-api-key", "sk-client-secret-BBBB"),
        ("cookie", "session=client-secret-CCCC"),
        ("openai-organization", "org-client"),
        ("openai-project", "proj-client"),
        ("proxy-authorization", "Basic client-secret-DDDD"),
        ("proxy-connection", "keep-alive"),
        ("forwarded", "for=203.0.113.7;host=evil.example"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("x-real-ip", "203.0.113.7"),
        ("via", "1.1 evil"),
        ("connection", "keep-alive, x-secret-hop"),
        ("x-secret-hop", "client-secret-EEEE"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("accept-encoding", "gzip, br, zstd"),
    ];
    let mut headers = dropped.to_vec();
    headers.push(("session-id", "s-control"));
    let response = post(&proxy, "/v1/responses", BODY, &headers).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let recorded = only_request(&mock);

    for name in [
        "x-api-key",
        "cookie",
        "openai-organization",
        "openai-project",
        "proxy-authorization",
        "proxy-connection",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "via",
        "x-secret-hop",
        "keep-alive",
        "te",
    ] {
        assert_eq!(
            values(&recorded, name),
            Vec::<&str>::new(),
            "{name} reached the upstream"
        );
    }
    assert_eq!(
        values(&recorded, "authorization"),
        vec![format!("Bearer {CANARY_KEY}").as_str()]
    );
    assert_eq!(values(&recorded, "accept-encoding"), vec!["identity"]);
    for (name, value) in recorded.headers.iter() {
        let value = value.to_str().unwrap();
        assert!(
            !value.contains("client") && !value.contains("evil") && !value.contains("203.0.113.7"),
            "a client value arrived upstream as {name}: {value}"
        );
    }
    // Control: an allowlisted header on the same request arrives.
    assert_eq!(values(&recorded, "session-id"), vec!["s-control"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn exactly_one_authorization_header_with_the_key_goes_upstream() {
    let (mock, proxy) = setup(&[]).await;
    let expected = format!("Bearer {CANARY_KEY}");
    for headers in [
        vec![],
        vec![("authorization", "Bearer sk-client")],
        vec![
            ("authorization", "Bearer a"),
            ("authorization", "Bearer b"),
            ("Authorization", "Bearer c"),
        ],
        vec![("x-api-key", "sk-client")],
    ] {
        let response = post(&proxy, "/v1/responses", BODY, &headers).await;
        assert_eq!(response.status, 200, "{headers:?}: {}", response.text());
        let recorded = mock.requests().pop().unwrap();
        assert_eq!(
            values(&recorded, "authorization"),
            vec![expected.as_str()],
            "{headers:?}"
        );
        assert_eq!(
            values(&recorded, "accept-encoding"),
            vec!["identity"],
            "{headers:?}"
        );
    }
    assert_eq!(mock.count(), 4);
    proxy.shutdown().await;
}

#[tokio::test]
async fn organization_and_project_flags_replace_the_clients_values() {
    let (mock, proxy) = setup(&[
        "--openai-organization",
        "org-1",
        "--openai-project",
        "proj-1",
    ])
    .await;
    let response = post(
        &proxy,
        "/v1/responses",
        BODY,
        &[
            ("openai-organization", "org-client"),
            ("OpenAI-Project", "proj-client"),
        ],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let recorded = only_request(&mock);
    assert_eq!(values(&recorded, "openai-organization"), vec!["org-1"]);
    assert_eq!(values(&recorded, "openai-project"), vec!["proj-1"]);

    // Without client values the flags' values still go.
    let response = post(&proxy, "/v1/responses", BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let recorded = mock.requests().pop().unwrap();
    assert_eq!(values(&recorded, "openai-organization"), vec!["org-1"]);
    assert_eq!(values(&recorded, "openai-project"), vec!["proj-1"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn response_headers_are_mirrored_except_set_cookie() {
    let (mock, proxy) = setup(&[]).await;
    let answer = responses_json(TEXT);
    for status in [200u16, 429] {
        mock.push(Script::Respond {
            status,
            headers: vec![
                ("content-type", "application/json".into()),
                ("x-request-id", format!("req_{status}")),
                ("x-codex-primary-used-percent", "42".into()),
                ("x-ratelimit-remaining-requests", "99".into()),
                ("openai-processing-ms", "17".into()),
                (
                    "set-cookie",
                    "__cf_bm=upstream-cookie; path=/; HttpOnly".into(),
                ),
                ("set-cookie", "_cfuvid=another; path=/".into()),
            ],
            chunks: vec![(Duration::ZERO, Bytes::from(answer.clone()))],
        });
        let response = post(&proxy, "/v1/responses", BODY, &[]).await;
        assert_eq!(response.status, status, "{}", response.text());
        let expected_request_id = format!("req_{status}");
        assert_eq!(
            response.header("x-request-id"),
            Some(expected_request_id.as_str())
        );
        assert_eq!(response.header("x-codex-primary-used-percent"), Some("42"));
        assert_eq!(
            response.header("x-ratelimit-remaining-requests"),
            Some("99")
        );
        assert_eq!(response.header("openai-processing-ms"), Some("17"));
        assert_eq!(response.header("x-codex-proxy-attempts"), Some("1"));
        assert_eq!(
            response.header("set-cookie"),
            None,
            "{status}: {:?}",
            response.headers
        );
        assert!(!response
            .headers
            .iter()
            .any(|(_, v)| v.contains("upstream-cookie")));
        assert_eq!(response.json(), default_answer());
    }
    assert_eq!(mock.count(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn compact_requests_reach_the_compact_endpoint() {
    let (mock, proxy) = setup(&[]).await;
    let body =
        r#"{"model":"m","input":[{"role":"user","content":"a long conversation"}],"stream":true}"#;
    let compacted = r#"{"output":[{"type":"compaction","encrypted_content":"abc"}]}"#;
    mock.push(Script::json(200, compacted));
    let response = post(
        &proxy,
        "/v1/responses/compact",
        body,
        &[("session-id", "s1")],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json(),
        serde_json::from_str::<Value>(compacted).unwrap()
    );
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("1"));
    let recorded = only_request(&mock);
    assert_eq!(
        (recorded.method.as_str(), recorded.target.as_str()),
        ("POST", "/v1/responses/compact")
    );
    assert_eq!(&recorded.body[..], body.as_bytes());
    assert_eq!(values(&recorded, "session-id"), vec!["s1"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_azure_style_upstream_url_keeps_its_path_and_query() {
    let mock = MockUpstream::start(TEXT).await;
    let url = format!(
        "http://127.0.0.1:{}/openai/deployments/d/responses?api-version=2025-04-01-preview",
        mock.addr.port()
    );
    let proxy = TestProxy::start(&url, &[]).await;
    let response = post(&proxy, "/v1/responses", BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), default_answer());
    let response = post(&proxy, "/v1/responses/compact", BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let targets: Vec<String> = mock.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        vec![
            "/openai/deployments/d/responses?api-version=2025-04-01-preview".to_string(),
            "/openai/deployments/d/responses/compact?api-version=2025-04-01-preview".to_string(),
        ]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_upstream_401_that_echoes_the_key_is_redacted() {
    let (mock, proxy) = setup(&[]).await;
    let prefix = &CANARY_KEY[..12];
    let suffix = &CANARY_KEY[CANARY_KEY.len() - 8..];
    let masked_join = format!("{}****...{suffix}", &CANARY_KEY[..11]);
    let masked_one = format!(
        "{}{}{suffix}",
        &CANARY_KEY[..11],
        "*".repeat(CANARY_KEY.len() - 19)
    );
    let masked_openai = format!(
        "sk-test-{}{}",
        "*".repeat(30),
        &CANARY_KEY[CANARY_KEY.len() - 4..]
    );
    let upstream_body = json!({
        "error": {
            "message": format!("Incorrect API key provided: {masked_join}. You can find your API key at https://platform.openai.com/account/api-keys."),
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_api_key",
            "key": CANARY_KEY,
            "bearer": format!("Bearer {CANARY_KEY}"),
            "masked": masked_one,
            "masked_openai": masked_openai,
            "prefix": prefix,
            "suffix": suffix,
        }
    })
    .to_string();
    assert!(
        upstream_body.contains(CANARY_KEY),
        "harness check: the mock echoes the key"
    );
    mock.push(Script::Respond {
        status: 401,
        headers: vec![
            ("content-type", "application/json".into()),
            ("content-length", upstream_body.len().to_string()),
            ("x-request-id", "req_401".into()),
        ],
        chunks: vec![(Duration::ZERO, Bytes::from(upstream_body))],
    });
    let response = post(&proxy, "/v1/responses", BODY, &[]).await;
    assert_eq!(response.status, 401, "{}", response.text());
    assert!(response.complete, "{response:?}");
    let text = response.text();
    for secret in [CANARY_KEY, prefix, suffix] {
        assert!(
            !text.contains(secret),
            "{secret:?} reached the client: {text}"
        );
    }
    assert!(text.contains("[REDACTED]"), "{text}");
    let body = response.json();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    for field in ["key", "masked", "masked_openai", "prefix", "suffix"] {
        assert_eq!(body["error"][field], "[REDACTED]", "{field}");
    }
    assert_eq!(body["error"]["bearer"], "Bearer [REDACTED]");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Incorrect API key provided: [REDACTED]"),
        "{message}"
    );
    assert!(
        message.ends_with("https://platform.openai.com/account/api-keys."),
        "{message}"
    );
    assert_eq!(response.header("x-request-id"), Some("req_401"));
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("1"));
    assert_eq!(mock.count(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_upstream_redirect_is_relayed_and_not_followed() {
    let (mock, proxy) = setup(&[]).await;
    let location = format!("http://127.0.0.1:{}/v1/elsewhere", mock.addr.port());
    mock.push(Script::Respond {
        status: 302,
        headers: vec![
            ("location", location.clone()),
            ("x-request-id", "req_302".into()),
        ],
        chunks: vec![],
    });
    let response = post(&proxy, "/v1/responses", BODY, &[]).await;
    assert_eq!(response.status, 302, "{}", response.text());
    assert_eq!(response.header("location"), Some(location.as_str()));
    assert_eq!(response.header("x-request-id"), Some("req_302"));
    // Nothing follows the redirect: the upstream's request count stays at one.
    assert!(!mock.wait_requests(2, Duration::from_millis(300)).await);
    let recorded = only_request(&mock);
    assert_eq!(recorded.target, "/v1/responses");
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_invalid_json_body_is_400_and_never_forwarded() {
    let (mock, proxy) = setup(&[]).await;
    let expected = json!({"error": {
        "message": "The request body is not a valid JSON object.",
        "type": "invalid_request_error",
        "param": null,
        "code": "invalid_json",
    }});
    for body in [
        "not json",
        "[1,2]",
        r#"{"model":"#,
        "\"zqxMarker7q\"",
        "{\"a\":1}}",
    ] {
        for path in ["/v1/responses", "/v1/responses/compact"] {
            let response = post(&proxy, path, body, &[]).await;
            assert_eq!(response.status, 400, "{path} {body}: {}", response.text());
            assert_eq!(response.json(), expected, "{path} {body}");
        }
    }
    // An empty body is not a JSON object either.
    let empty = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-length: 0\r\n\r\n",
        proxy.addr.port()
    );
    let response = raw::exchange(proxy.addr, empty.as_bytes(), LIMIT).await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(response.json(), expected);
    assert_eq!(mock.count(), 0);

    // Control: a valid body on the same proxy is forwarded.
    let response = post(&proxy, "/v1/responses", BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(mock.count(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_streamed_request_keeps_its_body_and_headers_too() {
    let (mock, proxy) = setup(&[]).await;
    let body = r#"{"model":"m", "stream":true, "input":"stre\u00e4m"}"#;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(&raw::post(
            proxy.addr,
            "/v1/responses",
            body,
            &[("session-id", "s-stream")],
        ))
        .await
        .unwrap();
    let response = raw::read_response(&mut stream, LIMIT).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.complete);
    assert!(
        response.text().contains("response.completed"),
        "{}",
        response.text()
    );
    let recorded = only_request(&mock);
    assert_eq!(&recorded.body[..], body.as_bytes());
    assert_eq!(values(&recorded, "session-id"), vec!["s-stream"]);
    assert_eq!(
        values(&recorded, "authorization"),
        vec![format!("Bearer {CANARY_KEY}").as_str()]
    );
    proxy.shutdown().await;
}

/// A request whose body is given as raw bytes, with extra headers.
fn post_bytes(proxy: &TestProxy, body: &[u8], headers: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        proxy.addr.port(),
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[tokio::test]
async fn a_zstd_body_is_read_for_its_stream_flag_and_forwarded_byte_for_byte() {
    let (mock, proxy) = setup(&[]).await;
    let json = br#"{"model":"gpt-5","stream":true,"input":"compressed"}"#;
    let compressed = zstd::encode_all(&json[..], 3).unwrap();
    let request = post_bytes(&proxy, &compressed, &[("content-encoding", "zstd")]);
    let response = raw::exchange(proxy.addr, &request, Duration::from_secs(10)).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/event-stream"),
        "decided by the decoded body"
    );
    assert!(response.text().contains("response.completed"));
    let recorded = only_request(&mock);
    assert_eq!(recorded.body, Bytes::from(compressed));
    assert_eq!(values(&recorded, "content-encoding"), vec!["zstd"]);
}

#[tokio::test]
async fn the_stream_flag_of_a_zstd_body_decides_the_timeouts() {
    // Streaming requests wait for upstream headers only --header-timeout; non-streaming ones
    // are bounded by --request-timeout instead. Which one fires shows what the proxy read.
    let (mock, proxy) = setup(&[
        "--header-timeout",
        "0.3",
        "--request-timeout",
        "1.5",
        "--max-attempts",
        "1",
    ])
    .await;
    for (json, code) in [
        (
            &br#"{"model":"gpt-5","stream":true}"#[..],
            "upstream_header_timeout",
        ),
        (
            &br#"{"model":"gpt-5","stream":false}"#[..],
            "request_timeout",
        ),
    ] {
        mock.push(Script::HangBeforeHeaders);
        let compressed = zstd::encode_all(json, 3).unwrap();
        let started = tokio::time::Instant::now();
        let request = post_bytes(&proxy, &compressed, &[("content-encoding", "zstd")]);
        let response = raw::exchange(proxy.addr, &request, Duration::from_secs(10)).await;
        assert_eq!(response.status, 504);
        assert_eq!(response.json()["error"]["code"], code);
        let took = started.elapsed();
        if code == "upstream_header_timeout" {
            assert!(took < Duration::from_millis(1200), "{took:?}");
        } else {
            assert!(took >= Duration::from_millis(1400), "{took:?}");
        }
    }
}

#[tokio::test]
async fn a_compressed_body_that_expands_past_the_limit_is_413_and_never_forwarded() {
    let (mock, proxy) = setup(&["--max-body-bytes", "100000"]).await;
    let bomb = zstd::encode_all(&vec![b' '; 5_000_000][..], 19).unwrap();
    assert!(bomb.len() < 1000);
    let response = raw::exchange(
        proxy.addr,
        &post_bytes(&proxy, &bomb, &[("content-encoding", "zstd")]),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["error"]["code"], "request_too_large");
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn unknown_or_corrupt_content_encodings_are_refused_and_never_forwarded() {
    let (mock, proxy) = setup(&[]).await;
    let json = br#"{"model":"gpt-5"}"#;
    let br = raw::exchange(
        proxy.addr,
        &post_bytes(&proxy, json, &[("content-encoding", "br")]),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(br.status, 415);
    let corrupt = raw::exchange(
        proxy.addr,
        &post_bytes(&proxy, json, &[("content-encoding", "gzip")]),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(corrupt.status, 400);
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn an_upstream_error_body_over_4_mib_is_a_502_with_a_body_in_the_clients_dialect() {
    let (mock, proxy) = setup(&["--max-attempts", "1"]).await;
    // One byte over the 4 MiB the proxy reads (kept small: the suite runs tests in parallel).
    let huge = format!(
        r#"{{"error":{{"message":"{}","type":"invalid_request_error","param":null,"code":"x"}}}}"#,
        "e".repeat(4 * 1024 * 1024)
    );
    for (path, body) in [
        ("/v1/responses", r#"{"model":"gpt-5.4","input":"hi"}"#),
        (
            "/v1/responses",
            r#"{"model":"gpt-5.4","input":"hi","stream":true}"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"gpt-5.4","messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            "/v1/messages",
            r#"{"model":"gpt-5.4","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#,
        ),
    ] {
        mock.push(Script::json(400, &huge));
        let response = post(&proxy, path, body, &[]).await;
        assert_eq!(response.status, 502, "{path} {body}");
        assert_eq!(response.header("x-should-retry"), Some("false"), "{path}");
        let json = response.json();
        if path == "/v1/messages" {
            assert_eq!(json["type"], "error", "{json}");
            assert_eq!(json["error"]["type"], "api_error", "{json}");
        } else {
            assert_eq!(json["error"]["code"], "upstream_error_too_large", "{json}");
        }
    }
    proxy.shutdown().await;
}
