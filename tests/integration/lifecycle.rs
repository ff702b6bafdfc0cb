//! Lifecycle: `/health`, the client token, `/shutdown`, draining and the drain timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::mock::event::{completed, created, delta};
use crate::mock::{responses_stream, MockUpstream, Script};
use crate::proxy::{TestProxy, CANARY_KEY};
use crate::raw::{self, RawResponse};

const STREAM_BODY: &str = r#"{"model":"mock-model","stream":true,"input":"say something"}"#;
const JSON_BODY: &str = r#"{"model":"mock-model","input":"say something"}"#;
/// Upper bound for any single wait in these tests.
const LIMIT: Duration = Duration::from_secs(10);

/// `/health`'s `upstream` while every connection to it works.
static UPSTREAM_OK: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(
    || serde_json::json!({"status":"ok","host":null,"last_error":null,"failing_for_s":null,"failures":0}),
);

fn health_with(last_status: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"status":"ok","accounts":[{"index":0,"kind":"api_key","provider":"openai","state":"active","cooldown_remaining_s":null,"last_status":last_status,"reason":null}],"upstream":UPSTREAM_OK.clone()})
}

/// A `/health` document without its `providers` (whose `last_attempt_at` is a clock reading),
/// and each provider's (name, kind, last_attempt_ok, whether `last_attempt_at` is set).
fn without_providers(
    mut health: serde_json::Value,
) -> (
    serde_json::Value,
    Vec<(String, String, serde_json::Value, bool)>,
) {
    let providers = health
        .as_object_mut()
        .and_then(|o| o.remove("providers"))
        .unwrap_or_default();
    let shown = providers
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["kind"].as_str().unwrap_or_default().to_owned(),
                p["last_attempt_ok"].clone(),
                p["last_attempt_at"].is_string(),
            )
        })
        .collect();
    (health, shown)
}

async fn health(proxy: &TestProxy, extra: &[(&str, &str)]) -> RawResponse {
    raw::exchange(proxy.addr, &raw::get(proxy.addr, "/health", extra), LIMIT).await
}

fn assert_no_secret(response: &RawResponse) {
    let text = response.text();
    assert!(!text.contains(CANARY_KEY), "the key leaked: {text}");
    assert!(!text.contains("sk-"), "something key-like leaked: {text}");
    for (name, value) in &response.headers {
        assert!(
            !value.contains(CANARY_KEY),
            "the key leaked in header {name}"
        );
    }
}

#[tokio::test]
async fn health_reports_the_account_state_and_last_upstream_status_never_the_key() {
    let mock = MockUpstream::start("healthy").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;

    let response = health(&proxy, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.complete);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let (rest, providers) = without_providers(response.json());
    assert_eq!(rest, health_with(serde_json::Value::Null));
    let implicit = |openai: serde_json::Value| {
        vec![
            (
                "openai".to_owned(),
                "openai".to_owned(),
                openai.clone(),
                !openai.is_null(),
            ),
            (
                "chatgpt".to_owned(),
                "chatgpt".to_owned(),
                serde_json::Value::Null,
                false,
            ),
        ]
    };
    assert_eq!(providers, implicit(serde_json::Value::Null));
    assert_no_secret(&response);
    assert_eq!(mock.count(), 0, "/health must not contact the upstream");

    let forwarded = raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, "/v1/responses", JSON_BODY, &[]),
        LIMIT,
    )
    .await;
    assert_eq!(forwarded.status, 200, "{}", forwarded.text());
    let response = health(&proxy, &[]).await;
    assert_eq!(response.status, 200);
    let (rest, providers) = without_providers(response.json());
    assert_eq!(rest, health_with(200.into()));
    assert_eq!(providers, implicit(true.into()));
    assert_no_secret(&response);

    mock.push(Script::json(429, r#"{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}"#));
    let forwarded = raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, "/v1/responses", JSON_BODY, &[]),
        LIMIT,
    )
    .await;
    assert_eq!(forwarded.status, 429);
    assert_eq!(forwarded.header("x-should-retry"), Some("false"));
    // The only account now cools down (1 s: a 429 without a hint), so nothing is usable.
    let response = health(&proxy, &[]).await;
    let (rest, providers) = without_providers(response.json());
    assert_eq!(providers, implicit(false.into()));
    assert_eq!(
        rest,
        serde_json::json!({"status":"unavailable","accounts":[{"index":0,"kind":"api_key","provider":"openai","state":"cooling_down","cooldown_remaining_s":1,"last_status":429,"reason":"rate_limited"}],"upstream":UPSTREAM_OK.clone()})
    );
    assert_no_secret(&response);
    assert_eq!(
        mock.count(),
        2,
        "a 429 with no short hint and no other account is not retried"
    );
    proxy.shutdown().await;
}

fn assert_unauthorized(response: &RawResponse, what: &str) {
    assert_eq!(response.status, 401, "{what}: {}", response.text());
    assert!(response.complete, "{what}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    let body = response.json();
    assert_eq!(
        body["error"]["code"], "invalid_client_token",
        "{what}: {body}"
    );
    assert_eq!(
        body["error"]["type"], "authentication_error",
        "{what}: {body}"
    );
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
    assert!(body["error"]["param"].is_null(), "{what}: {body}");
    assert_eq!(response.header("x-should-retry"), Some("false"), "{what}");
}

#[tokio::test]
async fn a_missing_client_token_is_a_final_401_in_each_dialect() {
    // Claude Code and the SDKs retry a 401 for minutes unless the answer says not to.
    let mock = MockUpstream::start("authorized").await;
    let proxy = TestProxy::start(&mock.base_url, &["--client-token"]).await;
    let addr = proxy.addr;
    let messages =
        r#"{"model":"claude-x","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let chat = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let anthropic = raw::exchange(
        addr,
        &raw::post(
            addr,
            "/v1/messages?beta=true",
            messages,
            &[("x-api-key", "wrong")],
        ),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(anthropic.status, 401, "{}", anthropic.text());
    assert_eq!(anthropic.header("x-should-retry"), Some("false"));
    assert_eq!(anthropic.json()["type"], "error", "{}", anthropic.text());
    assert_eq!(
        anthropic.json()["error"]["type"],
        "authentication_error",
        "{}",
        anthropic.text()
    );
    let openai = raw::exchange(
        addr,
        &raw::post(addr, "/v1/chat/completions", chat, &[]),
        Duration::from_secs(5),
    )
    .await;
    assert_unauthorized(&openai, "chat completions without a token");
    assert_eq!(mock.count(), 0);
    proxy.shutdown().await;
}

/// Every route of a proxy started with `--client-token --http-shutdown`, with these headers.
fn every_route(proxy: &TestProxy, headers: &[(&str, &str)]) -> Vec<(&'static str, Vec<u8>)> {
    let addr = proxy.addr;
    vec![
        (
            "POST /v1/responses (stream)",
            raw::post(addr, "/v1/responses", STREAM_BODY, headers),
        ),
        (
            "POST /v1/responses",
            raw::post(addr, "/v1/responses", JSON_BODY, headers),
        ),
        (
            "POST /v1/responses/compact",
            raw::post(addr, "/v1/responses/compact", JSON_BODY, headers),
        ),
        ("GET /health", raw::get(addr, "/health", headers)),
        ("GET /shutdown", raw::get(addr, "/shutdown", headers)),
        ("POST /shutdown", raw::post(addr, "/shutdown", "", headers)),
    ]
}

#[tokio::test]
async fn with_a_client_token_every_route_needs_it_and_it_never_reaches_the_upstream() {
    let mock = MockUpstream::start("authorized").await;
    let mut proxy = TestProxy::start(&mock.base_url, &["--client-token", "--http-shutdown"]).await;
    let token = proxy.token.clone().unwrap();
    let bearer = format!("Bearer {token}");
    let wrong_bearer = format!("Bearer {}", "0".repeat(token.len()));
    let canary_bearer = format!("Bearer {CANARY_KEY}");
    let longer = format!("{token}0");

    let refused: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no token", vec![]),
        (
            "wrong bearer",
            vec![("authorization", wrong_bearer.as_str())],
        ),
        (
            "the upstream key as bearer",
            vec![("authorization", canary_bearer.as_str())],
        ),
        (
            "token without Bearer",
            vec![("authorization", token.as_str())],
        ),
        ("wrong x-api-key", vec![("x-api-key", longer.as_str())]),
        (
            "right bearer, wrong x-api-key",
            vec![
                ("authorization", bearer.as_str()),
                ("x-api-key", longer.as_str()),
            ],
        ),
        (
            "wrong bearer, right x-api-key",
            vec![
                ("authorization", wrong_bearer.as_str()),
                ("x-api-key", token.as_str()),
            ],
        ),
    ];
    for (case, headers) in &refused {
        for (route, request) in every_route(&proxy, headers) {
            let response = raw::exchange(proxy.addr, &request, LIMIT).await;
            assert_unauthorized(&response, &format!("{route} with {case}"));
            assert!(!response.text().contains(&token), "the token was echoed");
        }
    }
    assert_eq!(
        mock.count(),
        0,
        "an unauthorized request reached the upstream"
    );
    assert!(
        !proxy.state.shutdown_requested.is_cancelled(),
        "an unauthorized /shutdown was obeyed"
    );

    // With the token: forwarded routes and /health work, as Bearer or x-api-key or both.
    let accepted: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("bearer", vec![("authorization", bearer.as_str())]),
        ("x-api-key", vec![("x-api-key", token.as_str())]),
        (
            "both",
            vec![
                ("authorization", bearer.as_str()),
                ("x-api-key", token.as_str()),
            ],
        ),
    ];
    let mut forwarded = 0;
    for (case, headers) in &accepted {
        for (route, request) in every_route(&proxy, headers) {
            if route.contains("shutdown") {
                continue;
            }
            let response = raw::exchange(proxy.addr, &request, LIMIT).await;
            assert_eq!(
                response.status,
                200,
                "{route} with {case}: {}",
                response.text()
            );
            assert!(response.complete, "{route} with {case}");
            assert!(!response.text().contains(&token), "the token was echoed");
            if route.starts_with("POST") {
                forwarded += 1;
            }
        }
    }
    let stream = raw::exchange(
        proxy.addr,
        &raw::post(
            proxy.addr,
            "/v1/responses",
            STREAM_BODY,
            &[("x-api-key", &token)],
        ),
        LIMIT,
    )
    .await;
    assert_eq!(stream.text(), responses_stream("authorized", 4).concat());
    forwarded += 1;

    let requests = mock.requests();
    assert_eq!(requests.len(), forwarded);
    for request in &requests {
        let authorization: Vec<_> = request.headers.get_all("authorization").iter().collect();
        assert_eq!(
            authorization.len(),
            1,
            "{}: not exactly one Authorization upstream",
            request.target
        );
        assert_eq!(
            authorization[0].as_bytes(),
            canary_bearer.as_bytes(),
            "upstream Authorization is not the pool key"
        );
        assert!(
            request.headers.get("x-api-key").is_none(),
            "x-api-key reached the upstream"
        );
        for (name, value) in &request.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            assert!(
                !value.contains(&token),
                "the client token reached the upstream in {name}"
            );
        }
        assert!(!String::from_utf8_lossy(&request.body).contains(&token));
    }

    // Finally /shutdown with the token stops the proxy.
    let response = raw::exchange(
        proxy.addr,
        &raw::get(proxy.addr, "/shutdown", &[("authorization", &bearer)]),
        LIMIT,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        tokio::time::timeout(Duration::from_secs(5), &mut proxy.task)
            .await
            .is_ok(),
        "run did not return"
    );
}

async fn shutdown_over_http(method: &str) {
    let mock = MockUpstream::start("unused").await;
    let mut proxy = TestProxy::start(&mock.base_url, &["--http-shutdown"]).await;
    // A normal request first: the proxy works until told to stop.
    let ok = raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, "/v1/responses", JSON_BODY, &[]),
        LIMIT,
    )
    .await;
    assert_eq!(ok.status, 200);

    let request = match method {
        "GET" => raw::get(proxy.addr, "/shutdown", &[]),
        _ => raw::post(proxy.addr, "/shutdown", "", &[]),
    };
    let response = raw::exchange(proxy.addr, &request, LIMIT).await;
    assert_eq!(
        response.status,
        200,
        "{method} /shutdown: {}",
        response.text()
    );
    assert!(response.complete);
    assert_eq!(
        response.json(),
        serde_json::json!({"status":"shutting_down"})
    );
    assert!(proxy.state.shutdown_requested.is_cancelled());

    let start = Instant::now();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), &mut proxy.task)
            .await
            .is_ok(),
        "run did not return after {method} /shutdown"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "run took {:?} to return",
        start.elapsed()
    );
    assert!(
        TcpStream::connect(proxy.addr).await.is_err(),
        "the listener still accepts after /shutdown"
    );
    assert_eq!(proxy.state.open_connections(), 0);
    assert_eq!(mock.count(), 1);
}

#[tokio::test]
async fn get_shutdown_with_http_shutdown_stops_the_proxy_and_new_connections_are_refused() {
    shutdown_over_http("GET").await;
}

#[tokio::test]
async fn post_shutdown_with_http_shutdown_stops_the_proxy_and_new_connections_are_refused() {
    shutdown_over_http("POST").await;
}

/// Starts a gated stream through `proxy` and reads it up to its first delta (committed).
async fn committed_stream(
    proxy: &TestProxy,
    mock: &MockUpstream,
    tx: &tokio::sync::mpsc::UnboundedSender<Bytes>,
) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(&raw::post(proxy.addr, "/v1/responses", STREAM_BODY, &[]))
        .await
        .unwrap();
    assert!(mock.wait_requests(1, LIMIT).await);
    tx.send(Bytes::from([created(), delta("in flight")].concat()))
        .unwrap();
    let mut buf = Vec::new();
    assert!(
        raw::read_until(&mut stream, &mut buf, b"in flight", LIMIT).await,
        "stream never committed"
    );
    (stream, buf)
}

#[tokio::test]
async fn a_stream_in_flight_at_shutdown_completes_normally_within_the_drain_timeout() {
    let mock = MockUpstream::start("unused").await;
    let (script, tx) = Script::gated_sse();
    mock.push(script);
    let proxy = TestProxy::start(&mock.base_url, &["--drain-timeout", "5"]).await;
    let (mut stream, buf) = committed_stream(&proxy, &mock, &tx).await;
    let state = Arc::clone(&proxy.state);
    let addr = proxy.addr;

    let stopping = tokio::spawn(proxy.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !stopping.is_finished(),
        "run returned with a stream still in flight"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener still accepts while draining"
    );

    tx.send(Bytes::from(delta(" and done"))).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tx.send(Bytes::from(completed())).unwrap();
    drop(tx); // the upstream ends its body
    let response = raw::read_rest(&mut stream, buf, LIMIT).await;
    assert_eq!(response.status, 200);
    assert!(
        response.complete,
        "the drained stream did not end cleanly: {}",
        response.text()
    );
    assert_eq!(
        response.text(),
        [
            created(),
            delta("in flight"),
            delta(" and done"),
            completed()
        ]
        .concat()
    );

    assert!(
        tokio::time::timeout(Duration::from_secs(3), stopping)
            .await
            .is_ok(),
        "run did not return after the last stream finished"
    );
    assert_eq!(state.open_connections(), 0);
}

#[tokio::test]
async fn a_stream_still_running_at_the_drain_timeout_ends_with_a_proxy_shutting_down_error_event() {
    let mock = MockUpstream::start("unused").await;
    let (script, tx) = Script::gated_sse();
    mock.push(script);
    let proxy = TestProxy::start(&mock.base_url, &["--drain-timeout", "0.5"]).await;
    let (mut stream, buf) = committed_stream(&proxy, &mock, &tx).await;
    let state = Arc::clone(&proxy.state);

    let start = Instant::now();
    let stopping = tokio::spawn(proxy.shutdown());
    let response = raw::read_rest(&mut stream, buf, LIMIT).await;
    let ended = start.elapsed();
    let text = response.text();
    let prefix = [created(), delta("in flight")].concat();
    assert_eq!(response.status, 200);
    assert!(text.starts_with(&prefix), "{text}");
    let rest = &text[prefix.len()..];
    assert!(
        rest.starts_with("event: error\ndata: "),
        "no error event after the content: {rest:?}"
    );
    let data: serde_json::Value =
        serde_json::from_str(rest["event: error\ndata: ".len()..].trim_end()).unwrap();
    assert_eq!(data["type"], "error");
    assert_eq!(data["code"], "proxy_shutting_down");
    assert!(rest.ends_with("\n\n"));
    assert!(
        !response.complete,
        "the aborted stream ended with a clean final chunk"
    );
    assert!(
        ended >= Duration::from_millis(400),
        "stream ended after only {ended:?}, before the drain timeout"
    );

    assert!(
        tokio::time::timeout(
            Duration::from_secs(3).saturating_sub(start.elapsed()),
            stopping
        )
        .await
        .is_ok(),
        "run did not return within ~3 s of the shutdown"
    );
    assert_eq!(state.open_connections(), 0);
    assert!(
        mock.wait_closed(1, Duration::from_secs(2)).await,
        "the upstream stream was left open"
    );
    drop(tx);
}

#[tokio::test]
async fn after_shutdown_no_client_connection_is_left_open() {
    let mock = MockUpstream::start("bye").await;
    // Default drain timeout (30 s): idle connections must not hold shutdown up.
    let proxy = TestProxy::start(&mock.base_url, &[]).await;

    // Two kept-alive connections that each finished a request and now sit idle.
    let mut idle = Vec::new();
    for body in [JSON_BODY, STREAM_BODY] {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream
            .write_all(&raw::post(proxy.addr, "/v1/responses", body, &[]))
            .await
            .unwrap();
        let response = raw::read_response(&mut stream, LIMIT).await;
        assert_eq!(response.status, 200);
        assert!(response.complete);
        idle.push(stream);
    }
    assert!(proxy.wait_open_connections(2, Duration::from_secs(2)).await);
    let state = Arc::clone(&proxy.state);

    let start = Instant::now();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), proxy.shutdown())
            .await
            .is_ok(),
        "run did not return"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "idle connections held shutdown up for {:?}",
        start.elapsed()
    );
    assert_eq!(state.open_connections(), 0);
    for mut stream in idle {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "an idle client connection was not closed: {read:?}"
        );
    }
}

#[tokio::test]
async fn a_connection_that_never_sent_a_request_does_not_hold_shutdown_up() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(proxy.wait_open_connections(1, Duration::from_secs(2)).await);
    let state = Arc::clone(&proxy.state);

    let start = Instant::now();
    assert!(
        tokio::time::timeout(Duration::from_secs(15), proxy.shutdown())
            .await
            .is_ok(),
        "run did not return"
    );
    let took = start.elapsed();
    assert_eq!(state.open_connections(), 0);
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(1), silent.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the silent connection was not closed: {read:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "a connection that never sent a request held shutdown up for {took:?}"
    );
}

#[tokio::test]
async fn a_request_still_waiting_for_upstream_headers_at_the_drain_timeout_gets_503_proxy_shutting_down(
) {
    let mock = MockUpstream::start("unused").await;
    mock.push(Script::HangBeforeHeaders);
    let proxy = TestProxy::start(&mock.base_url, &["--drain-timeout", "0.5"]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(&raw::post(proxy.addr, "/v1/responses", STREAM_BODY, &[]))
        .await
        .unwrap();
    assert!(mock.wait_requests(1, LIMIT).await);
    let state = Arc::clone(&proxy.state);

    let start = Instant::now();
    let stopping = tokio::spawn(proxy.shutdown());
    let response = raw::read_response(&mut stream, LIMIT).await;
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(response.complete);
    let body = response.json();
    assert_eq!(body["error"]["code"], "proxy_shutting_down", "{body}");
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    assert_eq!(response.header("x-should-retry"), Some("false"));
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "answered before the drain timeout"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(3), stopping)
            .await
            .is_ok(),
        "run did not return"
    );
    assert_eq!(state.open_connections(), 0);
    assert!(
        mock.wait_closed(1, Duration::from_secs(2)).await,
        "the pending upstream request was left open"
    );
}
