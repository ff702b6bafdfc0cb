//! A pool of API keys: failover, cooldowns, affinity and the proxy's own give-up answers.
//! The mock tells accounts apart by the `Authorization` each request carries.

use std::time::Duration;

use crate::mock::event::{created, delta, in_progress};
use crate::mock::{responses_stream, sse_event, MockUpstream, Script};
use crate::proxy::TestProxy;
use crate::raw::{self, RawResponse};

const LIMIT: Duration = Duration::from_secs(10);
const KEYS: [&str; 3] = [
    "sk-test-pool-AAAA",
    "sk-test-pool-BBBB",
    "sk-test-pool-CCCC",
];
const JSON_BODY: &str = r#"{"model":"m","input":"hi"}"#;
const STREAM_BODY: &str = r#"{"model":"m","stream":true,"input":"hi"}"#;

fn bearer(i: usize) -> String {
    format!("Bearer {}", KEYS[i])
}

async fn pool(n: usize, flags: &[&str]) -> (MockUpstream, TestProxy) {
    let mock = MockUpstream::start("pool answer").await;
    let proxy = TestProxy::start_with_key(&mock.base_url, flags, &KEYS[..n].join("\n")).await;
    (mock, proxy)
}

async fn send(proxy: &TestProxy, body: &str, headers: &[(&str, &str)]) -> RawResponse {
    raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, "/v1/responses", body, headers),
        LIMIT,
    )
    .await
}

fn health(proxy: &TestProxy) -> serde_json::Value {
    serde_json::to_value(
        proxy
            .state
            .upstream
            .pool
            .health(tokio::time::Instant::now()),
    )
    .unwrap()
}

fn rate_limited(retry_after: &str) -> Script {
    Script::Respond {
        status: 429,
        headers: vec![
            ("content-type", "application/json".into()),
            ("retry-after", retry_after.into()),
        ],
        chunks: vec![(
            Duration::ZERO,
            bytes::Bytes::from(
                r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
            ),
        )],
    }
}

#[tokio::test]
async fn requests_without_a_session_are_spread_round_robin() {
    let (mock, proxy) = pool(3, &[]).await;
    for _ in 0..6 {
        assert_eq!(send(&proxy, JSON_BODY, &[]).await.status, 200);
    }
    let mut used = mock.authorizations();
    used.sort();
    let expected: Vec<String> = (0..3).flat_map(|i| [bearer(i), bearer(i)]).collect();
    assert_eq!(used, expected);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_429_with_retry_after_fails_over_and_cools_the_account_for_that_long() {
    let (mock, proxy) = pool(2, &[]).await;
    // A fresh pool starts with account 0.
    mock.push_for(&bearer(0), rate_limited("30"));
    let response = send(&proxy, JSON_BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("2"));
    let used = mock.authorizations();
    assert_eq!(
        used,
        vec![bearer(0), bearer(1)],
        "failed over to the other account"
    );
    let cooled = 0;
    let h = health(&proxy);
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["accounts"][cooled]["state"], "cooling_down");
    assert_eq!(h["accounts"][cooled]["reason"], "rate_limited");
    assert_eq!(h["accounts"][cooled]["cooldown_remaining_s"], 30);
    assert_eq!(h["accounts"][1 - cooled]["state"], "active");
    // While it cools, only the other account is used.
    for _ in 0..4 {
        assert_eq!(send(&proxy, JSON_BODY, &[]).await.status, 200);
    }
    assert!(
        mock.authorizations()[2..].iter().all(|a| *a == used[1]),
        "no request on the cooling account"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn when_every_account_cools_down_the_answer_is_a_fast_429_with_retry_after() {
    let (mock, proxy) = pool(2, &[]).await;
    mock.push_for(&bearer(0), rate_limited("20"));
    mock.push_for(&bearer(1), rate_limited("12"));
    let first = send(&proxy, JSON_BODY, &[]).await;
    assert_eq!(first.status, 429, "the last upstream 429 is relayed");
    assert_eq!(first.header("retry-after"), Some("12"));
    assert_eq!(
        first.header("x-should-retry"),
        None,
        "a 429 with Retry-After leaves the client free to wait and retry"
    );
    assert_eq!(mock.count(), 2);

    let started = tokio::time::Instant::now();
    let response = send(&proxy, JSON_BODY, &[]).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered at once"
    );
    assert_eq!(response.status, 429);
    assert_eq!(response.json()["error"]["code"], "pool_exhausted");
    assert_eq!(
        response.header("retry-after"),
        Some("12"),
        "the earliest reset"
    );
    assert_eq!(
        response.header("x-should-retry"),
        None,
        "the client's own wait-and-retry is what works"
    );
    assert_eq!(
        response.header("x-codex-proxy-attempts"),
        None,
        "no upstream contact"
    );
    assert_eq!(mock.count(), 2);
    assert_eq!(health(&proxy)["status"], "unavailable");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_wait_over_a_minute_is_not_advertised() {
    let (mock, proxy) = pool(1, &[]).await;
    mock.push(Script::json(
        429,
        r#"{"error":{"type":"usage_limit_reached","message":"The usage limit has been reached","resets_in_seconds":3600}}"#,
    ));
    assert_eq!(send(&proxy, JSON_BODY, &[]).await.status, 429);
    let response = send(&proxy, JSON_BODY, &[]).await;
    assert_eq!(response.status, 429);
    assert_eq!(response.json()["error"]["code"], "pool_exhausted");
    assert_eq!(response.header("retry-after"), None);
    assert_eq!(
        response.header("x-should-retry"),
        Some("false"),
        "without a wait to honour, an immediate retry cannot help"
    );
    assert_eq!(health(&proxy)["accounts"][0]["reason"], "usage_limit");
    assert_eq!(health(&proxy)["accounts"][0]["cooldown_remaining_s"], 3600);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_401_disables_the_key_and_the_request_is_served_by_another() {
    let (mock, proxy) = pool(2, &[]).await;
    let unauthorized = r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","code":"invalid_api_key"}}"#;
    mock.push_for(&bearer(0), Script::json(401, unauthorized));
    let response = send(&proxy, JSON_BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(mock.authorizations(), vec![bearer(0), bearer(1)]);
    let disabled = 0;
    let h = health(&proxy);
    assert_eq!(h["accounts"][disabled]["state"], "disabled");
    assert_eq!(h["accounts"][disabled]["reason"], "unauthorized");
    assert_eq!(h["accounts"][disabled]["last_status"], 401);
    proxy.shutdown().await;
}

#[tokio::test]
async fn with_every_key_disabled_the_answer_is_503_without_an_upstream_call() {
    let (mock, proxy) = pool(2, &[]).await;
    let unauthorized =
        r#"{"error":{"message":"Incorrect API key provided.","code":"invalid_api_key"}}"#;
    mock.push_for(&bearer(0), Script::json(401, unauthorized));
    mock.push_for(&bearer(1), Script::json(401, unauthorized));
    let first = send(&proxy, JSON_BODY, &[]).await;
    assert_eq!(first.status, 401, "the last upstream 401 is relayed");
    let response = send(&proxy, JSON_BODY, &[]).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.json()["error"]["code"], "pool_unavailable");
    assert_eq!(response.header("x-should-retry"), Some("false"));
    assert_eq!(mock.count(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_header_timeout_on_one_account_fails_over_without_penalty() {
    let (mock, proxy) = pool(2, &["--header-timeout", "0.3"]).await;
    mock.push_for(&bearer(0), Script::HangBeforeHeaders);
    let response = send(&proxy, STREAM_BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.text().contains("response.completed"));
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("2"));
    let used = mock.authorizations();
    assert_ne!(used[0], used[1]);
    assert_eq!(
        health(&proxy)["status"],
        "ok",
        "the network's fault: both accounts stay active"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_in_band_failure_before_output_fails_over_invisibly() {
    let (mock, proxy) = pool(2, &[]).await;
    let failed = sse_event(
        "response.failed",
        serde_json::json!({"response":{"id":"r","status":"failed","error":{"code":"rate_limit_exceeded","message":"Rate limit reached. Please try again in 30s."}}}),
    );
    let failing = || {
        Script::sse(
            &[created(), in_progress(), failed.clone()],
            Duration::from_millis(10),
        )
    };
    mock.push_for(&bearer(0), failing());
    let response = send(&proxy, STREAM_BODY, &[]).await;
    assert_eq!(response.status, 200);
    assert!(response.complete);
    let text = response.text();
    assert!(!text.contains("response.failed"), "{text}");
    assert_eq!(
        text.matches("event: response.created").count(),
        1,
        "one clean stream: {text}"
    );
    assert!(text.contains("response.completed"));
    let h = health(&proxy);
    let cooled: Vec<_> = (0..2)
        .filter(|i| h["accounts"][*i]["state"] == "cooling_down")
        .collect();
    assert_eq!(cooled.len(), 1, "{h}");
    assert_eq!(
        h["accounts"][cooled[0]]["cooldown_remaining_s"], 30,
        "the in-band hint: {h}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_stream_cut_after_output_ends_with_an_error_event_and_is_not_retried() {
    let (mock, proxy) = pool(2, &[]).await;
    let cut = || Script::CutAfter {
        status: 200,
        headers: vec![("content-type", "text/event-stream".into())],
        chunks: vec![(
            Duration::ZERO,
            bytes::Bytes::from([created(), delta("partial")].concat()),
        )],
    };
    mock.push_for(&bearer(0), cut());
    mock.push_for(&bearer(1), cut());
    let response = send(&proxy, STREAM_BODY, &[]).await;
    assert_eq!(response.status, 200);
    assert!(!response.complete);
    assert!(response.text().contains("partial") && response.text().contains("event: error"));
    assert_eq!(mock.count(), 1, "no retry after commit");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_session_stays_on_one_account_across_requests() {
    let (mock, proxy) = pool(3, &[]).await;
    for session in ["thread-a", "thread-b"] {
        let body = format!(r#"{{"model":"m","input":"x","prompt_cache_key":"{session}"}}"#);
        let before = mock.count();
        for _ in 0..5 {
            assert_eq!(send(&proxy, &body, &[]).await.status, 200);
        }
        let used = &mock.authorizations()[before..];
        assert!(used.iter().all(|a| *a == used[0]), "{session}: {used:?}");
    }
    // The session header works as well as the body's prompt_cache_key.
    let before = mock.count();
    for _ in 0..4 {
        assert_eq!(
            send(&proxy, JSON_BODY, &[("session-id", "codex-session-1")])
                .await
                .status,
            200
        );
    }
    let used = &mock.authorizations()[before..];
    assert!(used.iter().all(|a| *a == used[0]), "{used:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_session_moves_when_its_account_cools_down_and_stays_there() {
    let (mock, proxy) = pool(2, &[]).await;
    let body = r#"{"model":"m","input":"x","prompt_cache_key":"moving"}"#;
    assert_eq!(send(&proxy, body, &[]).await.status, 200);
    let home = mock.authorizations()[0].clone();
    mock.push_for(&home, rate_limited("60"));
    assert_eq!(send(&proxy, body, &[]).await.status, 200);
    let new_home = mock.authorizations()[2].clone();
    assert_ne!(new_home, home);
    for _ in 0..3 {
        assert_eq!(send(&proxy, body, &[]).await.status, 200);
    }
    assert!(mock.authorizations()[3..].iter().all(|a| *a == new_home));
    proxy.shutdown().await;
}

#[tokio::test]
async fn load_drifts_away_from_an_account_low_on_quota() {
    let (mock, proxy) = pool(2, &[]).await;
    let low = Script::Respond {
        status: 200,
        headers: vec![
            ("content-type", "application/json".into()),
            ("x-ratelimit-remaining-requests", "5".into()),
            ("x-ratelimit-limit-requests", "100".into()),
        ],
        chunks: vec![(
            Duration::ZERO,
            bytes::Bytes::from(crate::mock::responses_json("low")),
        )],
    };
    mock.push_for(&bearer(0), low);
    // Send until account A has answered once (and reported 5% left).
    let mut sent = 0;
    while !mock.authorizations().contains(&bearer(0)) {
        assert_eq!(send(&proxy, JSON_BODY, &[]).await.status, 200);
        sent += 1;
        assert!(sent < 5);
    }
    let before = mock.count();
    for _ in 0..8 {
        assert_eq!(send(&proxy, JSON_BODY, &[]).await.status, 200);
    }
    assert!(
        mock.authorizations()[before..]
            .iter()
            .all(|a| *a == bearer(1)),
        "A rests while B has more headroom"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_streaming_answer_of_the_second_account_is_byte_identical() {
    let (mock, proxy) = pool(2, &[]).await;
    let events = responses_stream("second account text", 3);
    mock.push_for(&bearer(0), rate_limited("5"));
    mock.push_for(&bearer(1), Script::sse(&events, Duration::ZERO));
    let response = send(&proxy, STREAM_BODY, &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), events.concat());
    proxy.shutdown().await;
}

/// Polls `/health` until account `index` is in `state`, at most two seconds.
async fn wait_for_state(proxy: &TestProxy, index: usize, state: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while health(proxy)["accounts"][index]["state"] != state {
        assert!(
            tokio::time::Instant::now() < deadline,
            "account {index} never became {state}: {}",
            health(proxy)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_single_key_pool_after_a_retry_after_1_429_serves_the_next_request_after_waiting() {
    let (mock, proxy) = pool(1, &[]).await;
    mock.push(rate_limited("1"));
    let addr = proxy.addr;
    let first = tokio::spawn(async move {
        raw::exchange(
            addr,
            &raw::post(addr, "/v1/responses", JSON_BODY, &[]),
            LIMIT,
        )
        .await
    });
    wait_for_state(&proxy, 0, "cooling_down").await;
    let started = tokio::time::Instant::now();
    let second = send(&proxy, STREAM_BODY, &[]).await;
    let waited = started.elapsed();
    assert_eq!(second.status, 200, "{}", second.text());
    assert!(second.complete);
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
        "served after waiting for the cooldown, took {waited:?}"
    );
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-codex-proxy-attempts"), Some("2"));
    assert_eq!(mock.count(), 3, "the 429, the first's retry, the second");
    let requests = mock.requests();
    assert!(
        requests[1].at - requests[0].at >= Duration::from_millis(900)
            && requests[2].at - requests[0].at >= Duration::from_millis(900),
        "nothing went upstream before the second was over"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_cooldown_longer_than_the_short_wait_or_the_deadline_gets_the_429_at_once() {
    // Over 10 s: no wait.
    let (mock, proxy) = pool(1, &["--max-attempts", "1"]).await;
    mock.push(rate_limited("11"));
    assert_eq!(send(&proxy, JSON_BODY, &[]).await.status, 429);
    let started = tokio::time::Instant::now();
    let response = send(&proxy, STREAM_BODY, &[]).await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(response.status, 429);
    assert_eq!(response.json()["error"]["code"], "pool_exhausted");
    assert_eq!(response.header("retry-after"), Some("11"));
    assert_eq!(mock.count(), 1);
    proxy.shutdown().await;

    // Within 10 s but past the request's own deadline: no wait either.
    let (mock, proxy) = pool(1, &["--max-attempts", "1", "--request-timeout", "2"]).await;
    mock.push(rate_limited("4"));
    assert_eq!(send(&proxy, JSON_BODY, &[]).await.status, 429);
    let started = tokio::time::Instant::now();
    let response = send(&proxy, JSON_BODY, &[]).await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(response.json()["error"]["code"], "pool_exhausted");
    assert_eq!(mock.count(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_400_that_calls_itself_a_server_error_goes_back_at_once_without_penalty() {
    let (mock, proxy) = pool(3, &[]).await;
    let error = r#"{"error":{"message":"Invalid 'input': bad.","type":"server_error","param":null,"code":null}}"#;
    // A fresh pool starts with account 0; the others would answer too if asked.
    for i in 0..3 {
        mock.push_for(&bearer(i), Script::json(400, error));
    }
    let response = send(&proxy, JSON_BODY, &[]).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.text(), error);
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("1"));
    assert_eq!(response.header("x-should-retry"), None);
    assert_eq!(mock.count(), 1, "not failed over to every account");
    assert_eq!(health(&proxy)["status"], "ok", "no account penalised");
    proxy.shutdown().await;

    // An account-level code still overrides the status: that one fails over.
    let (mock, proxy) = pool(2, &[]).await;
    mock.push_for(
        &bearer(0),
        Script::json(
            400,
            r#"{"error":{"message":"The usage limit has been reached","type":"server_error","code":"usage_limit_reached"}}"#,
        ),
    );
    let response = send(&proxy, JSON_BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("2"));
    assert_eq!(health(&proxy)["accounts"][0]["reason"], "usage_limit");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connection_cut_before_headers_fails_over_without_penalty() {
    let (mock, proxy) = pool(2, &[]).await;
    mock.push_for(&bearer(0), Script::Abort);
    let response = send(&proxy, STREAM_BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("2"));
    assert_eq!(mock.authorizations(), vec![bearer(0), bearer(1)]);
    assert_eq!(health(&proxy)["status"], "ok");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_cooldown_ends_at_its_reset_and_the_next_request_probes_the_account() {
    let (mock, proxy) = pool(2, &[]).await;
    // The 429 also says the window is used up: that reading ends with the window.
    mock.push_for(
        &bearer(0),
        Script::Respond {
            status: 429,
            headers: vec![
                ("content-type", "application/json".into()),
                ("retry-after", "1".into()),
                ("x-ratelimit-remaining-requests", "0".into()),
                ("x-ratelimit-limit-requests", "100".into()),
            ],
            chunks: vec![(
                Duration::ZERO,
                bytes::Bytes::from(
                    r#"{"error":{"message":"Rate limit reached","code":"rate_limit_exceeded"}}"#,
                ),
            )],
        },
    );
    assert_eq!(send(&proxy, JSON_BODY, &[]).await.status, 200);
    assert_eq!(health(&proxy)["accounts"][0]["state"], "cooling_down");
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let h = health(&proxy);
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["accounts"][0]["state"], "active", "{h}");
    assert_eq!(
        h["accounts"][0]["cooldown_remaining_s"],
        serde_json::Value::Null
    );
    let before = mock.count();
    for _ in 0..4 {
        assert_eq!(send(&proxy, JSON_BODY, &[]).await.status, 200);
    }
    assert!(
        mock.authorizations()[before..].contains(&bearer(0)),
        "the account is probed again after its reset: {:?}",
        &mock.authorizations()[before..]
    );
    proxy.shutdown().await;
}
