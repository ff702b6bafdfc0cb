//! The route gate over raw sockets (SECURITY.md guarantees G10–G18): every refusal has its
//! status and a small fixed OpenAI-shaped body that never echoes the request, the upstream sees
//! nothing, and each refusal is paired with an allowed request on the same proxy.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::mock::{responses_json, MockUpstream};
use crate::proxy::TestProxy;
use crate::raw::{self, RawResponse};

/// Upper bound for any single exchange.
const LIMIT: Duration = Duration::from_secs(5);
/// A valid non-streaming Responses request body.
const BODY: &str = r#"{"model":"m","input":"hi"}"#;
/// Put into refused requests; no refusal body may contain it.
const MARKER: &str = "zqxMarker7q";
/// What the mock says by default.
const TEXT: &str = "surface ok";

const MSG_TARGET: &str = "Only origin-form request targets are accepted.";
const MSG_QUERY: &str = "Query strings are not accepted on this route.";
const MSG_HOST: &str = "The Host header must name this loopback listener.";
const MSG_BROWSER: &str =
    "Requests from web pages (Origin, Sec-Fetch-Site or Sec-Fetch-Dest headers) are refused.";
const MSG_UPGRADE: &str =
    "Protocol upgrades (WebSocket, h2c) are not supported; use plain HTTP/1.1.";
const MSG_PATH: &str = "Paths must match a route exactly.";

async fn setup(flags: &[&str]) -> (MockUpstream, TestProxy) {
    let mock = MockUpstream::start(TEXT).await;
    let proxy = TestProxy::start(&mock.base_url, flags).await;
    (mock, proxy)
}

fn error_body(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn forbidden(message: &str) -> Value {
    error_body(message, "permission_error", "forbidden")
}

fn not_found() -> Value {
    error_body("Unknown route.", "not_found_error", "not_found")
}

/// A request with exactly this request line, these header lines and this body (a
/// `content-length` line is added when the body is not empty).
fn request(line: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut text = format!("{line}\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        text.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text.into_bytes()
}

fn host(proxy: &TestProxy) -> String {
    format!("127.0.0.1:{}", proxy.addr.port())
}

async fn send(proxy: &TestProxy, bytes: &[u8]) -> RawResponse {
    raw::exchange(proxy.addr, bytes, LIMIT).await
}

/// Asserts a complete refusal with `status` and exactly `expected` as its JSON body, which does
/// not contain [`MARKER`].
#[track_caller]
fn assert_refusal(response: &RawResponse, status: u16, expected: &Value, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.text());
    assert!(
        response.complete,
        "{what}: incomplete body {:?}",
        response.text()
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    assert!(
        !response.text().contains(MARKER),
        "{what}: refusal echoes the request: {}",
        response.text()
    );
    assert_eq!(&response.json(), expected, "{what}");
    // A refusal will not change on a retry; SDKs retry a 401 or 403 unless told not to.
    if matches!(status, 401 | 403) {
        assert_eq!(response.header("x-should-retry"), Some("false"), "{what}");
    }
}

/// The control: an allowed POST /v1/responses on a new connection reaches the upstream and its
/// answer comes back. `before` is the upstream's request count so far.
async fn assert_allowed_request_works(proxy: &TestProxy, mock: &MockUpstream, before: usize) {
    let response = send(proxy, &raw::post(proxy.addr, "/v1/responses", BODY, &[])).await;
    assert_eq!(response.status, 200, "control request: {}", response.text());
    let expected: Value = serde_json::from_str(&responses_json(TEXT)).unwrap();
    assert_eq!(response.json(), expected);
    assert_eq!(
        mock.count(),
        before + 1,
        "control request did not reach the upstream once"
    );
}

#[tokio::test]
async fn unknown_paths_are_404_without_echoing_the_path() {
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    let marked = format!("/{MARKER}");
    let marked_nested = format!("/v1/{MARKER}/responses");
    for path in [
        "/",
        "/v2/responses",
        "/v1/engines",
        "/healthz",
        "/v1/responsesx",
        &marked,
        &marked_nested,
    ] {
        for (method, body) in [("POST", BODY), ("GET", "")] {
            let bytes = request(&format!("{method} {path} HTTP/1.1"), &[("host", &h)], body);
            assert_refusal(
                &send(&proxy, &bytes).await,
                404,
                &not_found(),
                &format!("{method} {path}"),
            );
        }
    }
    assert_eq!(mock.count(), 0);
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_doubled_v1_is_a_403_that_says_to_drop_v1_from_the_base_url() {
    // `ANTHROPIC_BASE_URL=http://127.0.0.1:PORT/v1` makes Claude Code send this.
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    let port = proxy.addr.port();
    let query_marker = format!("/v1/v1/messages?beta=true&{MARKER}=1");
    let anthropic = |served: &str| {
        json!({"type": "error", "error": {"type": "permission_error", "message": format!(
            "wrong_base_url: Wrong base URL: the path has /v1 twice (this proxy serves {served}). \
             Did you mean base URL http://127.0.0.1:{port} without /v1?"
        )}})
    };
    for (target, expected) in [
        ("/v1/v1/messages?beta=true", anthropic("/v1/messages")),
        (query_marker.as_str(), anthropic("/v1/messages")),
        (
            "/v1/v1/messages/count_tokens?beta=true",
            anthropic("/v1/messages/count_tokens"),
        ),
        (
            "/v1/v1/responses",
            error_body(
                &format!(
                    "Wrong base URL: the path has /v1 twice (this proxy serves /v1/responses). \
                     Did you mean base URL http://127.0.0.1:{port} without /v1?"
                ),
                "permission_error",
                "wrong_base_url",
            ),
        ),
    ] {
        let bytes = request(&format!("POST {target} HTTP/1.1"), &[("host", &h)], BODY);
        assert_refusal(&send(&proxy, &bytes).await, 403, &expected, target);
    }
    assert_eq!(mock.count(), 0);
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_missing_v1_is_a_403_that_says_to_add_v1_to_the_base_url() {
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    let port = proxy.addr.port();
    for (method, path, served) in [
        ("POST", "/responses", "/v1/responses"),
        ("POST", "/responses/compact", "/v1/responses/compact"),
        ("POST", "/chat/completions", "/v1/chat/completions"),
        ("GET", "/models", "/v1/models"),
    ] {
        let bytes = request(&format!("{method} {path} HTTP/1.1"), &[("host", &h)], "");
        let expected = error_body(
            &format!(
                "Wrong base URL: the path lacks /v1 (this proxy serves {served}). \
                 Did you mean base URL http://127.0.0.1:{port}/v1 with /v1?"
            ),
            "permission_error",
            "wrong_base_url",
        );
        assert_refusal(&send(&proxy, &bytes).await, 403, &expected, path);
    }
    let bytes = request("POST /messages HTTP/1.1", &[("host", &h)], BODY);
    let response = send(&proxy, &bytes).await;
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(response.header("x-should-retry"), Some("false"));
    assert_eq!(response.json()["type"], "error", "Anthropic's shape");
    assert_eq!(
        response.json()["error"]["message"],
        format!(
            "wrong_base_url: Wrong base URL: the path lacks /v1 (this proxy serves /v1/messages). \
             Did you mean base URL http://127.0.0.1:{port}/v1 with /v1?"
        )
    );
    assert_eq!(mock.count(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn head_slash_is_a_plain_200_without_a_body_even_with_a_client_token() {
    // Claude Code's connectivity probe; it carries no token.
    let (mock, proxy) = setup(&["--client-token"]).await;
    let h = host(&proxy);
    let response = send(&proxy, &request("HEAD / HTTP/1.1", &[("host", &h)], "")).await;
    assert_eq!(response.status, 200, "{:?}", response.headers);
    assert!(response.complete);
    assert!(response.body.is_empty(), "{}", response.text());
    assert_eq!(response.header("content-type"), None);
    assert_eq!(response.header("content-length"), Some("0"));
    // Only HEAD: other methods on / stay unknown, and a browser's HEAD is refused.
    let get = request("GET / HTTP/1.1", &[("host", &h)], "");
    assert_refusal(&send(&proxy, &get).await, 404, &not_found(), "GET /");
    let browser = request(
        "HEAD / HTTP/1.1",
        &[("host", &h), ("sec-fetch-site", "cross-site")],
        "",
    );
    // (A HEAD answer has a content-length but no body: read the head only.)
    let refused = raw::exchange(proxy.addr, &browser, Duration::from_millis(300)).await;
    assert_eq!(refused.status, 403);
    assert_eq!(mock.count(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn known_paths_with_another_method_are_405_with_an_allow_header() {
    let (mock, proxy) = setup(&["--http-shutdown"]).await;
    let h = host(&proxy);
    let expected = error_body(
        "Method not allowed on this route.",
        "invalid_request_error",
        "method_not_allowed",
    );
    for (method, path, allow) in [
        ("GET", "/v1/responses", "POST"),
        ("PUT", "/v1/responses", "POST"),
        ("DELETE", "/v1/responses", "POST"),
        ("OPTIONS", "/v1/responses", "POST"),
        ("PATCH", "/v1/responses/compact", "POST"),
        ("GET", "/v1/responses/compact", "POST"),
        ("POST", "/health", "GET"),
        ("DELETE", "/health", "GET"),
        ("PUT", "/shutdown", "GET, POST"),
        ("DELETE", "/shutdown", "GET, POST"),
    ] {
        let body = if method == "GET" || method == "DELETE" {
            ""
        } else {
            BODY
        };
        let bytes = request(
            &format!("{method} {path} HTTP/1.1"),
            &[("host", &h), ("x-probe", MARKER)],
            body,
        );
        let response = send(&proxy, &bytes).await;
        let what = format!("{method} {path}");
        assert_refusal(&response, 405, &expected, &what);
        assert_eq!(response.header("allow"), Some(allow), "{what}");
    }
    assert_eq!(mock.count(), 0);
    assert!(!proxy.state.shutdown_requested.is_cancelled());
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn path_variants_of_known_routes_are_403() {
    let (mock, proxy) = setup(&["--http-shutdown"]).await;
    let h = host(&proxy);
    for path in [
        "/v1/responses/",
        "/v1/responses/.",
        "/v1/./responses",
        "/v1/responses/../responses",
        "/v1/%72esponses",
        "/v1/responses%2f..%2fresponses",
        "/v1/responses%2Fcompact",
        "//v1/responses",
        "/v1//responses",
        "/V1/responses",
        "/v1/RESPONSES",
        "/v1/Responses/compact",
        "/v1/responses/compact/",
        "/%2576%2531/responses",
        "/health/",
        "/%68ealth",
        "/Shutdown",
    ] {
        let method = if path.contains("ealth") {
            "GET"
        } else {
            "POST"
        };
        let body = if method == "GET" { "" } else { BODY };
        let bytes = request(
            &format!("{method} {path} HTTP/1.1"),
            &[("host", &h), ("x-probe", MARKER)],
            body,
        );
        assert_refusal(&send(&proxy, &bytes).await, 403, &forbidden(MSG_PATH), path);
    }
    assert_eq!(mock.count(), 0);
    assert!(!proxy.state.shutdown_requested.is_cancelled());
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn traversal_variants_that_leave_the_route_table_are_403() {
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    let marked = format!("/v1/responses%2f..%2f{MARKER}");
    for path in [
        "/v1/responses%2f..%2fx",
        "/v1/responses/../x",
        "/v1/responses/%2e%2e/x",
        &marked,
    ] {
        let bytes = request(&format!("POST {path} HTTP/1.1"), &[("host", &h)], BODY);
        assert_refusal(&send(&proxy, &bytes).await, 403, &forbidden(MSG_PATH), path);
    }
    assert_eq!(mock.count(), 0);
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn any_query_string_is_403() {
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    let marked = format!("/v1/responses?{MARKER}=1");
    for (method, target) in [
        ("POST", "/v1/responses?x=1"),
        ("POST", "/v1/responses?"),
        (
            "POST",
            "/v1/responses/compact?api-version=2025-04-01-preview",
        ),
        ("POST", "/v1/responses?stream=true"),
        ("GET", "/health?verbose"),
        ("POST", marked.as_str()),
    ] {
        let body = if method == "GET" { "" } else { BODY };
        let bytes = request(
            &format!("{method} {target} HTTP/1.1"),
            &[("host", &h)],
            body,
        );
        assert_refusal(
            &send(&proxy, &bytes).await,
            403,
            &forbidden(MSG_QUERY),
            target,
        );
    }
    assert_eq!(mock.count(), 0);
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn absolute_form_targets_are_403() {
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    let to_self = format!("http://{h}/v1/responses");
    let marked = format!("http://{MARKER}.example/v1/responses");
    for target in [
        "http://evil.example/v1/responses",
        "https://evil.example/v1/responses",
        &to_self,
        &marked,
    ] {
        let bytes = request(&format!("POST {target} HTTP/1.1"), &[("host", &h)], BODY);
        assert_refusal(
            &send(&proxy, &bytes).await,
            403,
            &forbidden(MSG_TARGET),
            target,
        );
    }
    assert_eq!(mock.count(), 0);
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn connect_is_never_answered_with_2xx() {
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    for host_header in ["evil.example:443", h.as_str()] {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let bytes = request(
            "CONNECT evil.example:443 HTTP/1.1",
            &[("host", host_header)],
            "",
        );
        stream.write_all(&bytes).await.unwrap();
        let response = raw::read_response(&mut stream, LIMIT).await;
        assert_refusal(&response, 403, &forbidden(MSG_TARGET), host_header);
        // Not a tunnel: what follows is parsed as HTTP again, or the connection is closed.
        let before = mock.count();
        let follow = raw::post(proxy.addr, "/v1/responses", BODY, &[]);
        if stream.write_all(&follow).await.is_ok() {
            let next = raw::read_response(&mut stream, LIMIT).await;
            assert!(
                next.status == 0 || next.status == 200,
                "after CONNECT: {next:?}"
            );
            assert_eq!(mock.count(), before + usize::from(next.status == 200));
        }
    }
    for recorded in mock.requests() {
        assert_eq!(
            (recorded.target.as_str(), &recorded.body[..]),
            ("/v1/responses", BODY.as_bytes())
        );
    }
    let before = mock.count();
    assert_allowed_request_works(&proxy, &mock, before).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn options_asterisk_is_403() {
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    let bytes = request(
        "OPTIONS * HTTP/1.1",
        &[("host", &h), ("x-probe", MARKER)],
        "",
    );
    assert_refusal(
        &send(&proxy, &bytes).await,
        403,
        &forbidden(MSG_TARGET),
        "OPTIONS *",
    );
    assert_eq!(mock.count(), 0);
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn host_must_name_this_loopback_listener() {
    let (mock, proxy) = setup(&[]).await;
    let port = proxy.addr.port();
    let other_port = format!("127.0.0.1:{}", port.wrapping_add(1).max(1));
    let evil_with_port = format!("evil.example:{port}");
    let suffixed = format!("127.0.0.1:{port}.evil.example");
    let marked = format!("{MARKER}.example");
    let line = "POST /v1/responses HTTP/1.1";
    for bad in [
        "evil.example",
        "127.0.0.1",
        "localhost",
        &other_port,
        &evil_with_port,
        &suffixed,
        &marked,
    ] {
        let bytes = request(
            line,
            &[("host", bad), ("content-type", "application/json")],
            BODY,
        );
        assert_refusal(&send(&proxy, &bytes).await, 403, &forbidden(MSG_HOST), bad);
    }
    let missing = request(line, &[("content-type", "application/json")], BODY);
    assert_refusal(
        &send(&proxy, &missing).await,
        403,
        &forbidden(MSG_HOST),
        "no Host",
    );
    let good = format!("127.0.0.1:{port}");
    let twice = request(line, &[("host", &good), ("host", &good)], BODY);
    assert_refusal(
        &send(&proxy, &twice).await,
        403,
        &forbidden(MSG_HOST),
        "two Hosts",
    );
    assert_eq!(mock.count(), 0);

    let expected: Value = serde_json::from_str(&responses_json(TEXT)).unwrap();
    for (n, ok) in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
    ]
    .iter()
    .enumerate()
    {
        let bytes = request(
            line,
            &[("host", ok), ("content-type", "application/json")],
            BODY,
        );
        let response = send(&proxy, &bytes).await;
        assert_eq!(response.status, 200, "{ok}: {}", response.text());
        assert_eq!(response.json(), expected, "{ok}");
        assert_eq!(mock.count(), n + 1, "{ok}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn browser_requests_with_origin_or_sec_fetch_site_or_dest_are_403() {
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    let marked_origin = format!("http://{MARKER}.example");
    let headers: [(&str, &str); 6] = [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("origin", &marked_origin),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("sec-fetch-dest", "image"),
    ];
    for (name, value) in headers {
        let what = format!("{name}: {value}");
        // Mode and User ride along as a browser sends them; Site, Dest or Origin decide.
        let post = request(
            "POST /v1/responses HTTP/1.1",
            &[
                ("host", &h),
                ("sec-fetch-mode", "no-cors"),
                ("sec-fetch-user", "?1"),
                (name, value),
            ],
            BODY,
        );
        assert_refusal(
            &send(&proxy, &post).await,
            403,
            &forbidden(MSG_BROWSER),
            &what,
        );
        let get = request("GET /health HTTP/1.1", &[("host", &h), (name, value)], "");
        assert_refusal(
            &send(&proxy, &get).await,
            403,
            &forbidden(MSG_BROWSER),
            &what,
        );
    }
    assert_eq!(mock.count(), 0);
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn node_fetch_with_a_lone_sec_fetch_mode_is_served() {
    // Exactly the headers Node's built-in fetch (undici) adds to an SDK's request.
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    let bytes = request(
        "POST /v1/responses HTTP/1.1",
        &[
            ("host", &h),
            ("content-type", "application/json"),
            ("accept", "*/*"),
            ("accept-language", "*"),
            ("sec-fetch-mode", "cors"),
            ("user-agent", "node"),
            ("accept-encoding", "gzip, deflate"),
        ],
        BODY,
    );
    let response = send(&proxy, &bytes).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let expected: Value = serde_json::from_str(&responses_json(TEXT)).unwrap();
    assert_eq!(response.json(), expected);
    assert_eq!(mock.count(), 1);
    let get = request(
        "GET /v1/models HTTP/1.1",
        &[("host", &h), ("sec-fetch-mode", "cors")],
        "",
    );
    let response = send(&proxy, &get).await;
    assert_eq!(response.status, 200, "{}", response.text());
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_from_a_browser_is_403_and_the_proxy_keeps_running() {
    let (mock, proxy) = setup(&["--http-shutdown"]).await;
    let h = host(&proxy);
    for (method, name, value) in [
        ("GET", "origin", "http://evil.example"),
        ("GET", "origin", "null"),
        ("POST", "origin", "http://evil.example"),
        ("GET", "sec-fetch-dest", "image"),
        ("GET", "sec-fetch-site", "cross-site"),
        ("POST", "sec-fetch-site", "cross-site"),
        ("POST", "sec-fetch-dest", "empty"),
    ] {
        let bytes = request(
            &format!("{method} /shutdown HTTP/1.1"),
            &[("host", &h), (name, value)],
            "",
        );
        let what = format!("{method} /shutdown with {name}");
        assert_refusal(
            &send(&proxy, &bytes).await,
            403,
            &forbidden(MSG_BROWSER),
            &what,
        );
        assert!(
            !proxy.state.shutdown_requested.is_cancelled(),
            "{what} shut the proxy down"
        );
    }
    let health = send(&proxy, &raw::get(proxy.addr, "/health", &[])).await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(mock.count(), 0);
    assert_allowed_request_works(&proxy, &mock, 0).await;

    // Control: the same request without the browser header does shut the proxy down.
    let response = send(&proxy, &raw::get(proxy.addr, "/shutdown", &[])).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!({"status": "shutting_down"}));
    assert!(proxy.state.shutdown_requested.is_cancelled());
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_is_404_without_the_http_shutdown_flag() {
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    for method in ["GET", "POST"] {
        let bytes = request(&format!("{method} /shutdown HTTP/1.1"), &[("host", &h)], "");
        assert_refusal(&send(&proxy, &bytes).await, 404, &not_found(), method);
    }
    assert!(!proxy.state.shutdown_requested.is_cancelled());
    assert_eq!(mock.count(), 0);
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrade_is_refused_at_once_with_426() {
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    for path in ["/v1/responses", "/v1/responses/compact"] {
        let bytes = request(
            &format!("GET {path} HTTP/1.1"),
            &[
                ("host", &h),
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-version", "13"),
                ("openai-beta", "responses_websockets=2026-02-06"),
                ("x-probe", MARKER),
            ],
            "",
        );
        let started = Instant::now();
        let response = send(&proxy, &bytes).await;
        let took = started.elapsed();
        let expected = error_body(
            "WebSocket is not supported; send the request as a plain HTTP/1.1 POST.",
            "invalid_request_error",
            "websocket_not_supported",
        );
        assert_refusal(&response, 426, &expected, path);
        assert_eq!(response.header("upgrade"), Some("HTTP/1.1"));
        assert!(
            took < Duration::from_millis(500),
            "{path}: refusal took {took:?}"
        );
    }
    assert_eq!(mock.count(), 0);
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn h2c_upgrade_is_403() {
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    let upgrade = [
        ("host", h.as_str()),
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
    ];
    let post = request("POST /v1/responses HTTP/1.1", &upgrade, BODY);
    assert_refusal(
        &send(&proxy, &post).await,
        403,
        &forbidden(MSG_UPGRADE),
        "POST h2c",
    );
    let get = request("GET /health HTTP/1.1", &upgrade, "");
    assert_refusal(
        &send(&proxy, &get).await,
        403,
        &forbidden(MSG_UPGRADE),
        "GET h2c",
    );
    let settings_only = request(
        "POST /v1/responses HTTP/1.1",
        &[upgrade[0], upgrade[3]],
        BODY,
    );
    assert_refusal(
        &send(&proxy, &settings_only).await,
        403,
        &forbidden(MSG_UPGRADE),
        "HTTP2-Settings alone",
    );
    assert_eq!(mock.count(), 0);
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn http2_prior_knowledge_preface_is_refused() {
    let (mock, proxy) = setup(&[]).await;
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // An empty SETTINGS frame, as a real h2 client sends right after the preface.
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let (data, closed) = raw::read_to_close(&mut stream, LIMIT).await;
    assert!(closed, "connection left open after an HTTP/2 preface");
    if !data.is_empty() {
        let responses = raw::parse_responses(&data);
        assert_eq!(responses.len(), 1, "{:?}", String::from_utf8_lossy(&data));
        assert!(
            (400..600).contains(&responses[0].status),
            "{:?}",
            responses[0]
        );
    }
    assert_eq!(mock.count(), 0);
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

/// Sends `bytes` and asserts the answer is a 400 or a closed connection.
async fn assert_bad_request_or_closed(proxy: &TestProxy, bytes: &[u8], what: &str) {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // The proxy may close before reading everything; a failed write is a refusal too.
    if stream.write_all(bytes).await.is_err() {
        return;
    }
    let (data, closed) = raw::read_to_close(&mut stream, LIMIT).await;
    assert!(closed, "{what}: connection left open");
    let responses = raw::parse_responses(&data);
    assert!(
        responses.len() <= 1,
        "{what}: {:?}",
        String::from_utf8_lossy(&data)
    );
    if let Some(response) = responses.first() {
        assert_eq!(
            response.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&data)
        );
        assert!(!response.text().contains(MARKER), "{what}");
    }
}

#[tokio::test]
async fn ambiguous_framing_is_400_or_closed_and_never_forwarded() {
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    let line = "POST /v1/responses HTTP/1.1";
    let two_lengths = format!(
        "{line}\r\nhost: {h}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len(),
        BODY.len() + 1
    );
    assert_bad_request_or_closed(&proxy, two_lengths.as_bytes(), "two Content-Lengths").await;
    let gzip = format!(
        "{line}\r\nhost: {h}\r\ncontent-type: application/json\r\ntransfer-encoding: gzip\r\n\r\n{BODY}"
    );
    assert_bad_request_or_closed(&proxy, gzip.as_bytes(), "Transfer-Encoding: gzip").await;
    let gzip_then_chunked_last_not = format!(
        "{line}\r\nhost: {h}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked, gzip\r\n\r\n{:x}\r\n{BODY}\r\n0\r\n\r\n",
        BODY.len()
    );
    assert_bad_request_or_closed(
        &proxy,
        gzip_then_chunked_last_not.as_bytes(),
        "Transfer-Encoding: chunked, gzip",
    )
    .await;
    let te_on_http10 = format!(
        "POST /v1/responses HTTP/1.0\r\nhost: {h}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{BODY}\r\n0\r\n\r\n",
        BODY.len()
    );
    assert_bad_request_or_closed(&proxy, te_on_http10.as_bytes(), "TE on HTTP/1.0").await;
    assert_eq!(mock.count(), 0);

    // Control: repeated equal Content-Lengths are one length.
    let equal = format!(
        "{line}\r\nhost: {h}\r\ncontent-type: application/json\r\ncontent-length: {0}\r\ncontent-length: {0}\r\n\r\n{BODY}",
        BODY.len()
    );
    let response = send(&proxy, equal.as_bytes()).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(mock.count(), 1);
    assert_allowed_request_works(&proxy, &mock, 1).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_501_and_never_forwarded() {
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    let gzipped = {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(BODY.as_bytes()).unwrap();
        encoder.finish().unwrap()
    };
    for (path, te) in [
        ("/v1/responses", "gzip, chunked"),
        ("/v1/responses", "GZIP,chunked"),
        ("/v1/chat/completions", "deflate, chunked"),
        ("/v1/messages", "identity, chunked"),
        ("/v1/responses", "chunked, chunked"),
    ] {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: {h}\r\ncontent-type: application/json\r\ntransfer-encoding: {te}\r\n\r\n{:x}\r\n",
            gzipped.len()
        )
        .into_bytes();
        request.extend_from_slice(&gzipped);
        request.extend_from_slice(b"\r\n0\r\n\r\n");
        let response = send(&proxy, &request).await;
        assert_eq!(response.status, 501, "{te}: {}", response.text());
        let json = response.json();
        if path.starts_with("/v1/messages") {
            assert_eq!(json["type"], "error", "{te}: {json}");
        } else {
            assert_eq!(
                json["error"]["code"], "unsupported_transfer_encoding",
                "{te}: {json}"
            );
        }
    }
    assert_eq!(mock.count(), 0, "the upstream is never contacted");
    // Control: plain chunked (any case) is accepted and forwarded.
    let chunked = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: {h}\r\ncontent-type: application/json\r\ntransfer-encoding: Chunked\r\n\r\n{:x}\r\n{BODY}\r\n0\r\n\r\n",
        BODY.len()
    );
    let response = send(&proxy, chunked.as_bytes()).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(mock.count(), 1);
    proxy.shutdown().await;
}

/// Content-Length and chunked together, the chunked body followed by a second, smuggled
/// request in the same bytes.
fn smuggling_request(h: &str) -> Vec<u8> {
    let smuggled = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: {h}\r\ncontent-type: application/json\r\ncontent-length: 29\r\n\r\n{{\"model\":\"m\",\"input\":\"smug\"}}"
    );
    format!(
        "POST /v1/responses HTTP/1.1\r\nhost: {h}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{BODY}\r\n0\r\n\r\n{smuggled}",
        BODY.len(),
        BODY.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn content_length_with_chunked_closes_the_connection_and_a_smuggled_request_is_never_served()
{
    let (mock, proxy) = setup(&[]).await;
    let h = host(&proxy);
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(&smuggling_request(&h)).await.unwrap();
    let (data, closed) = raw::read_to_close(&mut stream, LIMIT).await;
    assert!(
        closed,
        "keep-alive stayed on after Content-Length with chunked"
    );
    let responses = raw::parse_responses(&data);
    assert!(
        responses.len() <= 1,
        "more than one answer: {}",
        String::from_utf8_lossy(&data)
    );
    assert!(
        mock.requests()
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("smug")),
        "the smuggled request reached the upstream"
    );
    let before = mock.count();
    assert!(before <= 1);
    assert_allowed_request_works(&proxy, &mock, before).await;
    proxy.shutdown().await;
}

/// Sends `bytes` and asserts the answer is a 431 or a closed connection.
async fn assert_too_large_or_closed(proxy: &TestProxy, bytes: &[u8], what: &str) {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // The proxy may close before reading everything; a failed write is a refusal too.
    match tokio::time::timeout(LIMIT, stream.write_all(bytes)).await {
        Ok(Err(_)) => return,
        Ok(Ok(())) => {}
        Err(_) => panic!("{what}: the proxy neither read nor refused the request"),
    }
    let response = raw::read_response(&mut stream, LIMIT).await;
    assert!(
        response.status == 431 || response.status == 0,
        "{what}: {response:?}"
    );
}

/// `n` distinct header lines.
fn header_lines(prefix: &str, n: usize, value: &str) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("{prefix}-{i}"), value.to_string()))
        .collect()
}

fn as_pairs(lines: &[(String, String)]) -> Vec<(&str, &str)> {
    lines
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[tokio::test]
async fn more_than_100_headers_are_431_or_closed() {
    let (mock, proxy) = setup(&[]).await;
    // `raw::post` adds host, content-type and content-length: 98 more make 101.
    let lines = header_lines("x-h", 98, "v");
    let post = raw::post(proxy.addr, "/v1/responses", BODY, &as_pairs(&lines));
    assert_too_large_or_closed(&proxy, &post, "POST with 101 headers").await;
    // `raw::get` adds host: 100 more make 101.
    let lines = header_lines("x-h", 100, "v");
    let get = raw::get(proxy.addr, "/health", &as_pairs(&lines));
    assert_too_large_or_closed(&proxy, &get, "GET with 101 headers").await;
    assert_eq!(mock.count(), 0);

    // Control: exactly 100 headers are accepted (on /health: forwarding would add more).
    let lines = header_lines("x-h", 99, "v");
    let response = send(&proxy, &raw::get(proxy.addr, "/health", &as_pairs(&lines))).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_very_large_header_section_is_431_or_closed() {
    let (mock, proxy) = setup(&[]).await;
    let big = "a".repeat(500 * 1024);
    let one = raw::post(proxy.addr, "/v1/responses", BODY, &[("x-big", &big)]);
    assert_too_large_or_closed(&proxy, &one, "one 500 KiB header").await;
    let lines = header_lines("x-s", 90, &"b".repeat(4 * 1024));
    let spread = raw::post(proxy.addr, "/v1/responses", BODY, &as_pairs(&lines));
    assert_too_large_or_closed(&proxy, &spread, "360 KiB over 90 headers").await;
    assert_eq!(mock.count(), 0);

    // Control: 60 KiB of headers is fine, and the headers arrive upstream.
    let lines = header_lines("x-s", 15, &"c".repeat(4 * 1024));
    let response = send(
        &proxy,
        &raw::post(proxy.addr, "/v1/responses", BODY, &as_pairs(&lines)),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(mock.count(), 1);
    assert_eq!(
        mock.requests()[0].headers.get("x-s-14").unwrap(),
        &"c".repeat(4 * 1024)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_header_section_over_64_kib_is_431_or_closed() {
    let (mock, proxy) = setup(&[]).await;
    let big = "a".repeat(70 * 1024);
    let one = raw::post(proxy.addr, "/v1/responses", BODY, &[("x-big", &big)]);
    assert_too_large_or_closed(&proxy, &one, "one 70 KiB header").await;
    let lines = header_lines("x-s", 20, &"b".repeat(4 * 1024));
    let spread = raw::post(proxy.addr, "/v1/responses", BODY, &as_pairs(&lines));
    assert_too_large_or_closed(&proxy, &spread, "80 KiB over 20 headers").await;
    assert_eq!(
        mock.count(),
        0,
        "an over-64-KiB header section was forwarded"
    );
    assert_allowed_request_works(&proxy, &mock, 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn two_pipelined_requests_on_one_keep_alive_connection_are_both_served() {
    let (mock, proxy) = setup(&[]).await;
    let first = raw::post(
        proxy.addr,
        "/v1/responses",
        r#"{"model":"m","input":"first"}"#,
        &[],
    );
    let second = raw::post(
        proxy.addr,
        "/v1/responses",
        r#"{"model":"m","input":"second"}"#,
        &[("connection", "close")],
    );
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(&[first, second].concat()).await.unwrap();
    let (data, closed) = raw::read_to_close(&mut stream, LIMIT).await;
    assert!(
        closed,
        "the connection was not closed after `connection: close`"
    );
    let responses = raw::parse_responses(&data);
    assert_eq!(responses.len(), 2, "{}", String::from_utf8_lossy(&data));
    let expected: Value = serde_json::from_str(&responses_json(TEXT)).unwrap();
    for response in &responses {
        assert_eq!(response.status, 200);
        assert_eq!(response.json(), expected);
    }
    let bodies: Vec<Value> = mock
        .requests()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(
        bodies,
        vec![
            json!({"model":"m","input":"first"}),
            json!({"model":"m","input":"second"})
        ]
    );
    proxy.shutdown().await;
}
