//! Resilience: pre-header retries, timeouts, cut and truncated streams, the bootstrap
//! hold-back, client disconnects, relayed upstream errors, awkward chunk boundaries.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::mock::event::{completed, created, delta, in_progress};
use crate::mock::{responses_stream, sse_event, MockUpstream, Script};
use crate::proxy::TestProxy;
use crate::raw::{self, RawResponse};

const STREAM_BODY: &str = r#"{"model":"mock-model","stream":true,"input":"say something"}"#;
const JSON_BODY: &str = r#"{"model":"mock-model","input":"say something"}"#;
/// Upper bound for any single wait in these tests.
const LIMIT: Duration = Duration::from_secs(10);

fn responses_post(proxy: &TestProxy, body: &str) -> Vec<u8> {
    raw::post(proxy.addr, "/v1/responses", body, &[])
}

/// Opens a connection and sends a `/v1/responses` request on it, without reading anything.
async fn send(proxy: &TestProxy, body: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(&responses_post(proxy, body))
        .await
        .unwrap();
    stream
}

/// The SSE events of an LF-framed body: (event name, parsed data) per block with fields.
fn events(text: &str) -> Vec<(String, serde_json::Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).unwrap_or(serde_json::Value::Null));
                }
            }
            (name.is_some() || data.is_some())
                .then(|| (name.unwrap_or_default(), data.unwrap_or_default()))
        })
        .collect()
}

/// Asserts: the body is `prefix`, then (possibly after nothing but SSE comments) one SSE
/// `error` event with this code, and the transfer did not end cleanly.
fn assert_prefix_then_error_event(response: &RawResponse, prefix: &str, code: &str) {
    let text = response.text();
    assert_eq!(response.status, 200, "{text}");
    assert!(
        text.starts_with(prefix),
        "relayed content altered or missing:\n{text}\n--- expected prefix:\n{prefix}"
    );
    let rest = &text[prefix.len()..];
    let tail = events(rest);
    assert_eq!(
        tail.len(),
        1,
        "expected exactly one event after the content, got: {rest:?}"
    );
    let (name, data) = &tail[0];
    assert_eq!(name, "error", "{rest:?}");
    assert_eq!(data["type"], "error", "{rest:?}");
    assert_eq!(data["code"], code, "{rest:?}");
    assert!(data["message"].is_string(), "{rest:?}");
    assert!(
        rest.ends_with("\n\n"),
        "error event not terminated: {rest:?}"
    );
    assert!(
        !response.complete,
        "the transfer ended cleanly (final chunk sent) after a failure"
    );
}

fn assert_openai_error(response: &RawResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert!(
        response.complete,
        "error response not complete: {response:?}"
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(
        body["error"]["type"],
        if status >= 500 {
            "server_error"
        } else {
            "invalid_request_error"
        },
        "{body}"
    );
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["param"].is_null(), "{body}");
}

fn event_stream_headers() -> Vec<(&'static str, String)> {
    vec![("content-type", "text/event-stream".into())]
}

/// A port that refuses connections: bound, then released.
fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_header_timeout_on_the_first_attempt_is_retried_and_the_second_attempt_streams_in_full() {
    let mock = MockUpstream::start("second time lucky").await;
    mock.push(Script::HangBeforeHeaders);
    let proxy = TestProxy::start(&mock.base_url, &["--header-timeout", "0.3"]).await;

    let start = Instant::now();
    let response = raw::exchange(proxy.addr, &responses_post(&proxy, STREAM_BODY), LIMIT).await;
    let elapsed = start.elapsed();

    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response.complete,
        "stream did not end cleanly: {}",
        response.text()
    );
    assert_eq!(
        response.text(),
        responses_stream("second time lucky", 4).concat()
    );
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("2"));
    assert!(
        elapsed >= Duration::from_millis(300),
        "answered before the header timeout: {elapsed:?}"
    );
    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "expected exactly two upstream attempts");
    assert_eq!(
        requests[0].body, requests[1].body,
        "the retry did not replay identical bytes"
    );
    assert_eq!(&requests[1].body[..], STREAM_BODY.as_bytes());
    assert_eq!(requests[0].target, requests[1].target);
    assert!(
        mock.wait_closed(1, Duration::from_secs(2)).await,
        "the abandoned first attempt's upstream connection was left open"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn when_every_attempt_times_out_before_headers_the_client_gets_504_upstream_header_timeout() {
    let mock = MockUpstream::start("never").await;
    for _ in 0..3 {
        mock.push(Script::HangBeforeHeaders);
    }
    let proxy = TestProxy::start(&mock.base_url, &["--header-timeout", "0.3"]).await;

    let start = Instant::now();
    let response = raw::exchange(proxy.addr, &responses_post(&proxy, STREAM_BODY), LIMIT).await;
    let elapsed = start.elapsed();

    assert_openai_error(&response, 504, "upstream_header_timeout");
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("3"));
    assert_eq!(response.header("x-should-retry"), Some("false"));
    assert!(
        elapsed >= Duration::from_millis(900),
        "three 0.3 s attempts took only {elapsed:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        mock.count(),
        3,
        "expected exactly --max-attempts (3) upstream attempts"
    );
    let requests = mock.requests();
    assert!(requests.iter().all(|r| r.body == requests[0].body));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_refused_connection_is_retried_up_to_max_attempts_then_answered_502_upstream_connect_failed(
) {
    let url = format!("http://127.0.0.1:{}/v1", refused_port());
    for (flags, attempts) in [
        (&[][..], "3"),
        (&["--max-attempts", "2"][..], "2"),
        (&["--max-attempts", "4"][..], "4"),
    ] {
        let proxy = TestProxy::start(&url, flags).await;
        for body in [STREAM_BODY, JSON_BODY] {
            let response = raw::exchange(proxy.addr, &responses_post(&proxy, body), LIMIT).await;
            assert_openai_error(&response, 502, "upstream_connect_failed");
            assert_eq!(
                response.header("x-codex-proxy-attempts"),
                Some(attempts),
                "flags {flags:?}, body {body}"
            );
            assert_eq!(response.header("x-should-retry"), Some("false"));
        }
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn with_max_attempts_1_there_is_exactly_one_attempt() {
    let mock = MockUpstream::start("unused").await;
    mock.push(Script::HangBeforeHeaders);
    mock.push(Script::HangBeforeHeaders);
    let proxy = TestProxy::start(
        &mock.base_url,
        &["--max-attempts", "1", "--header-timeout", "0.3"],
    )
    .await;

    let response = raw::exchange(proxy.addr, &responses_post(&proxy, STREAM_BODY), LIMIT).await;
    assert_openai_error(&response, 504, "upstream_header_timeout");
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("1"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mock.count(),
        1,
        "a second attempt was made with --max-attempts 1"
    );
    proxy.shutdown().await;

    let refused = format!("http://127.0.0.1:{}/v1", refused_port());
    let proxy = TestProxy::start(&refused, &["--max-attempts", "1"]).await;
    let response = raw::exchange(proxy.addr, &responses_post(&proxy, STREAM_BODY), LIMIT).await;
    assert_openai_error(&response, 502, "upstream_connect_failed");
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("1"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_upstream_cut_mid_stream_reaches_the_client_as_content_then_an_error_event_and_an_aborted_transfer(
) {
    let mock = MockUpstream::start("unused").await;
    let first = [created(), in_progress(), delta("partial ")].concat();
    let second = delta("answer");
    mock.push(Script::CutAfter {
        status: 200,
        headers: event_stream_headers(),
        chunks: vec![
            (Duration::ZERO, Bytes::from(first.clone())),
            (Duration::from_millis(100), Bytes::from(second.clone())),
            // Written just before the cut: the mock may lose it along with the connection.
            (
                Duration::from_millis(150),
                Bytes::from_static(b": the mock cuts the connection now\n\n"),
            ),
        ],
    });
    let proxy = TestProxy::start(&mock.base_url, &[]).await;

    let response = raw::exchange(proxy.addr, &responses_post(&proxy, STREAM_BODY), LIMIT).await;
    assert_prefix_then_error_event(
        &response,
        &format!("{first}{second}"),
        "upstream_connection_error",
    );
    assert_eq!(mock.count(), 1, "a committed stream must never be retried");
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_event_stream_that_ends_cleanly_without_a_terminal_event_ends_with_an_error_event_and_an_aborted_transfer(
) {
    let mock = MockUpstream::start("unused").await;
    let mut events = responses_stream("cut short", 3);
    let last = events.pop().unwrap();
    assert!(last.starts_with("event: response.completed"));
    mock.push(Script::sse(&events, Duration::ZERO));
    let proxy = TestProxy::start(&mock.base_url, &[]).await;

    let response = raw::exchange(proxy.addr, &responses_post(&proxy, STREAM_BODY), LIMIT).await;
    assert_prefix_then_error_event(&response, &events.concat(), "upstream_stream_truncated");
    assert_eq!(mock.count(), 1);

    // Ending inside an event: a blank line closes the fragment so the error event parses alone.
    let partial = "event: response.output_text.delta\ndata: {\"delta\":\"unfini";
    let mut cut = events.clone();
    cut.push(partial.to_string());
    mock.push(Script::sse(&cut, Duration::ZERO));
    let response = raw::exchange(proxy.addr, &responses_post(&proxy, STREAM_BODY), LIMIT).await;
    let prefix = cut.concat();
    assert_prefix_then_error_event(&response, &prefix, "upstream_stream_truncated");
    assert!(
        response.text()[prefix.len()..].starts_with("\n\nevent: error\n"),
        "{}",
        response.text()
    );
    assert_eq!(mock.count(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_upstream_silent_for_longer_than_the_idle_timeout_gets_an_upstream_idle_timeout_error_event(
) {
    let mock = MockUpstream::start("unused").await;
    let (script, tx) = Script::gated_sse();
    mock.push(script);
    let proxy = TestProxy::start(&mock.base_url, &["--idle-timeout", "0.5"]).await;

    let mut stream = send(&proxy, STREAM_BODY).await;
    assert!(mock.wait_requests(1, LIMIT).await);
    let content = [created(), delta("then silence")].concat();
    tx.send(Bytes::from(content.clone())).unwrap();
    let mut buf = Vec::new();
    assert!(
        raw::read_until(&mut stream, &mut buf, b"then silence", LIMIT).await,
        "content never arrived"
    );
    let content_seen = Instant::now();
    let response = raw::read_rest(&mut stream, buf, LIMIT).await;
    let silence = content_seen.elapsed();

    assert_prefix_then_error_event(&response, &content, "upstream_idle_timeout");
    assert!(
        silence >= Duration::from_millis(350) && silence < Duration::from_millis(2000),
        "idle error after {silence:?}, expected ~0.5 s"
    );
    drop(tx);
    proxy.shutdown().await;
}

#[tokio::test]
async fn bootstrap_events_are_held_back_with_the_status_line_until_the_first_content_event() {
    let mock = MockUpstream::start("unused").await;
    let (script, tx) = Script::gated_sse();
    mock.push(script);
    let proxy = TestProxy::start(&mock.base_url, &[]).await;

    let mut stream = send(&proxy, STREAM_BODY).await;
    assert!(mock.wait_requests(1, LIMIT).await);
    tx.send(Bytes::from(created())).unwrap();
    tx.send(Bytes::from(in_progress())).unwrap();
    let mut buf = Vec::new();
    let early = raw::read_for(&mut stream, &mut buf, Duration::from_millis(300)).await;
    assert_eq!(
        early,
        0,
        "the client received bytes before the commit point: {:?}",
        String::from_utf8_lossy(&buf)
    );

    tx.send(Bytes::from(delta("first words"))).unwrap();
    assert!(
        raw::read_until(&mut stream, &mut buf, b"first words", LIMIT).await,
        "nothing after the content event"
    );
    let so_far = raw::parse_response(&buf);
    assert_eq!(so_far.status, 200);
    assert_eq!(so_far.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        so_far.text(),
        [created(), in_progress(), delta("first words")].concat()
    );

    finish_stream(
        &mut stream,
        buf,
        tx,
        completed(),
        [created(), in_progress(), delta("first words"), completed()].concat(),
    )
    .await;
    proxy.shutdown().await;
}

/// Releases the rest of a gated stream, ends the upstream body, and expects the client's
/// stream to end cleanly with exactly `expected`.
async fn finish_stream(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::UnboundedSender<Bytes>,
    rest: impl Into<Bytes>,
    expected: String,
) {
    tx.send(rest.into()).unwrap();
    drop(tx); // the upstream ends its body
    let response = raw::read_rest(stream, buf, LIMIT).await;
    assert!(response.complete, "{}", response.text());
    assert_eq!(response.text(), expected);
}

#[tokio::test]
async fn the_hold_back_is_bounded_by_the_header_timeout_then_the_held_events_are_committed() {
    let mock = MockUpstream::start("unused").await;
    let (script, tx) = Script::gated_sse();
    mock.push(script);
    let proxy = TestProxy::start(&mock.base_url, &["--header-timeout", "0.5"]).await;

    let start = Instant::now();
    let mut stream = send(&proxy, STREAM_BODY).await;
    assert!(mock.wait_requests(1, LIMIT).await);
    tx.send(Bytes::from([created(), in_progress()].concat()))
        .unwrap();
    let mut buf = Vec::new();
    assert!(
        raw::read_until(&mut stream, &mut buf, b"response.in_progress", LIMIT).await,
        "held events never flushed"
    );
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_millis(2500),
        "held events committed after {elapsed:?}, expected ~0.5 s"
    );
    let so_far = raw::parse_response(&buf);
    assert_eq!(so_far.status, 200);
    assert_eq!(so_far.text(), [created(), in_progress()].concat());
    assert_eq!(
        mock.count(),
        1,
        "the hold-back timer must commit, not retry"
    );

    // After the commit the stream is relayed normally.
    finish_stream(
        &mut stream,
        buf,
        tx,
        [delta("late"), completed()].concat(),
        [created(), in_progress(), delta("late"), completed()].concat(),
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_early_in_band_response_failed_is_retried_invisibly() {
    let mock = MockUpstream::start("the second attempt").await;
    let failed = sse_event(
        "response.failed",
        serde_json::json!({"response":{"id":"resp_r","status":"failed","output":[],"error":{"code":"rate_limit_exceeded","message":"Rate limit reached. Please try again in 0.2s."}}}),
    );
    mock.push(Script::sse(
        &[created(), in_progress(), failed],
        Duration::from_millis(20),
    ));
    let proxy = TestProxy::start(&mock.base_url, &[]).await;

    let response = raw::exchange(proxy.addr, &responses_post(&proxy, STREAM_BODY), LIMIT).await;
    assert_eq!(response.status, 200);
    assert!(response.complete, "{}", response.text());
    let text = response.text();
    assert!(
        !text.contains("response.failed"),
        "the failed attempt never reached the client: {text}"
    );
    assert!(
        text.contains("the second attempt") && text.contains("response.completed"),
        "{text}"
    );
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("2"));
    assert_eq!(mock.count(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_early_in_band_failure_on_the_last_attempt_is_relayed_as_is() {
    let mock = MockUpstream::start("unused").await;
    let failed = sse_event(
        "response.failed",
        serde_json::json!({"response":{"id":"resp_r","status":"failed","output":[],"error":{"code":"server_error","message":"boom"}}}),
    );
    let events = vec![created(), in_progress(), failed];
    mock.push(Script::sse(&events, Duration::from_millis(20)));
    let proxy = TestProxy::start(&mock.base_url, &["--max-attempts", "1"]).await;
    let response = raw::exchange(proxy.addr, &responses_post(&proxy, STREAM_BODY), LIMIT).await;
    assert_eq!(response.status, 200);
    assert!(
        response.complete,
        "a terminal response.failed is a clean end: {}",
        response.text()
    );
    assert_eq!(response.text(), events.concat());
    assert_eq!(mock.count(), 1);
    proxy.shutdown().await;
}

/// Drops the client's connection, then expects the upstream connection closed and the
/// proxy's connection count back to zero; shuts the proxy down.
async fn assert_leaving_client_closes_upstream(
    stream: TcpStream,
    mock: &MockUpstream,
    proxy: TestProxy,
    what: &str,
) {
    drop(stream);
    assert!(mock.wait_closed(1, Duration::from_secs(2)).await, "{what}");
    assert!(
        proxy.wait_open_connections(0, Duration::from_secs(2)).await,
        "proxy still counts the client connection"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_disconnect_mid_stream_closes_the_upstream_connection() {
    let mock = MockUpstream::start("unused").await;
    let (script, tx) = Script::gated_sse();
    mock.push(script);
    let proxy = TestProxy::start(&mock.base_url, &[]).await;

    let mut stream = send(&proxy, STREAM_BODY).await;
    assert!(mock.wait_requests(1, LIMIT).await);
    tx.send(Bytes::from([created(), delta("you will leave")].concat()))
        .unwrap();
    let mut buf = Vec::new();
    assert!(raw::read_until(&mut stream, &mut buf, b"you will leave", LIMIT).await);
    assert_eq!(mock.closed_connections(), 0);
    assert_leaving_client_closes_upstream(
        stream,
        &mock,
        proxy,
        "upstream connection still open after the client left",
    )
    .await;
    drop(tx);
}

#[tokio::test]
async fn a_client_disconnect_during_the_hold_back_closes_the_upstream_connection() {
    let mock = MockUpstream::start("unused").await;
    let (script, tx) = Script::gated_sse();
    mock.push(script);
    let proxy = TestProxy::start(&mock.base_url, &[]).await;

    let mut stream = send(&proxy, STREAM_BODY).await;
    assert!(mock.wait_requests(1, LIMIT).await);
    tx.send(Bytes::from([created(), in_progress()].concat()))
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        raw::read_for(&mut stream, &mut buf, Duration::from_millis(300)).await,
        0,
        "not held back"
    );
    assert_eq!(mock.closed_connections(), 0);
    assert_leaving_client_closes_upstream(
        stream,
        &mock,
        proxy,
        "upstream connection still open after the client left during the hold-back",
    )
    .await;
    drop(tx);
}

#[tokio::test]
async fn a_non_streaming_request_past_the_request_timeout_gets_504_request_timeout() {
    let mock = MockUpstream::start("unused").await;
    mock.push(Script::HangBeforeHeaders);
    mock.push(Script::HangBeforeHeaders);
    let proxy = TestProxy::start(&mock.base_url, &["--request-timeout", "0.5"]).await;

    let start = Instant::now();
    let response = raw::exchange(proxy.addr, &responses_post(&proxy, JSON_BODY), LIMIT).await;
    let elapsed = start.elapsed();
    assert_openai_error(&response, 504, "request_timeout");
    assert_eq!(response.header("x-should-retry"), Some("false"));
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(1500),
        "answered after {elapsed:?}, expected ~0.5 s"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_upstream_500_is_retried_then_the_last_one_is_relayed() {
    let mock = MockUpstream::start("unused").await;
    let error = r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#;
    for (flags, attempts) in [(&["--max-attempts", "1"][..], 1usize), (&[][..], 3)] {
        let proxy = TestProxy::start(&mock.base_url, flags).await;
        for body in [JSON_BODY, STREAM_BODY] {
            let before = mock.count();
            for _ in 0..attempts {
                mock.push(Script::json(500, error));
            }
            let response = raw::exchange(proxy.addr, &responses_post(&proxy, body), LIMIT).await;
            assert_eq!(response.status, 500, "{}", response.text());
            assert!(response.complete);
            assert_eq!(response.text(), error);
            assert_eq!(response.header("content-type"), Some("application/json"));
            assert_eq!(
                response.header("x-codex-proxy-attempts"),
                Some(attempts.to_string().as_str())
            );
            assert_eq!(response.header("x-should-retry"), Some("false"));
            assert_eq!(mock.count() - before, attempts, "{flags:?}");
        }
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn an_upstream_400_is_relayed_at_once_without_retry_or_penalty() {
    let mock = MockUpstream::start("unused").await;
    let error = r#"{"error":{"message":"Invalid value for 'input'.","type":"invalid_request_error","param":"input","code":null}}"#;
    mock.push(Script::json(400, error));
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    let response = raw::exchange(proxy.addr, &responses_post(&proxy, JSON_BODY), LIMIT).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.text(), error);
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("1"));
    assert_eq!(
        response.header("x-should-retry"),
        None,
        "the SDK's own rules apply to a request error"
    );
    assert_eq!(mock.count(), 1);
    assert_eq!(
        proxy
            .state
            .upstream
            .pool
            .health(tokio::time::Instant::now())
            .status,
        "ok",
        "no penalty"
    );
    proxy.shutdown().await;
}

/// Byte offsets of `needle` in `haystack`.
fn offsets(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

fn split_at_points(bytes: &[u8], points: &[usize], gap: Duration) -> Vec<(Duration, Bytes)> {
    let mut points: Vec<usize> = points
        .iter()
        .copied()
        .filter(|&p| p > 0 && p < bytes.len())
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut chunks = Vec::new();
    let mut start = 0;
    for p in points.into_iter().chain([bytes.len()]) {
        chunks.push((gap, Bytes::copy_from_slice(&bytes[start..p])));
        start = p;
    }
    chunks
}

#[tokio::test]
async fn a_stream_split_at_awkward_byte_boundaries_reaches_the_client_byte_identical_with_a_clean_end(
) {
    let text = "héllo wörld ✓ 🎉 naïve façade — 日本語";
    let stream: String = responses_stream(text, 3).concat().replace('\n', "\r\n");
    let bytes = stream.as_bytes();
    let inside_crlf: Vec<usize> = offsets(bytes, b"\r\n").into_iter().map(|i| i + 1).collect();
    let inside_utf8: Vec<usize> = (0..bytes.len())
        .filter(|&i| (0x80..0xC0).contains(&bytes[i]))
        .collect();
    let inside_data: Vec<usize> = offsets(bytes, b"data:")
        .into_iter()
        .enumerate()
        .map(|(n, i)| i + 1 + n % 4)
        .collect();
    let inside_event: Vec<usize> = offsets(bytes, b"event:")
        .into_iter()
        .map(|i| i + 3)
        .collect();
    assert!(inside_crlf.len() > 20 && inside_utf8.len() > 20 && inside_data.len() > 8);

    let mut scenarios: Vec<(String, Vec<(Duration, Bytes)>)> = Vec::new();
    let gap = Duration::from_millis(1);
    // One awkward split at a time, early (before the commit point) and late.
    for (name, points) in [
        ("crlf", &inside_crlf),
        ("utf8", &inside_utf8),
        ("data", &inside_data),
    ] {
        for &p in [
            points[0],
            points[1],
            points[points.len() / 2],
            points[points.len() - 1],
        ]
        .iter()
        {
            scenarios.push((
                format!("{name} split at {p}"),
                split_at_points(bytes, &[p], Duration::ZERO),
            ));
        }
        scenarios.push((
            format!("every {name} split"),
            split_at_points(bytes, points, gap),
        ));
    }
    let all: Vec<usize> = [&inside_crlf, &inside_utf8, &inside_data, &inside_event]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    scenarios.push((
        "all awkward splits at once".into(),
        split_at_points(bytes, &all, gap),
    ));
    let every_byte: Vec<usize> = (1..bytes.len()).collect();
    scenarios.push((
        "one byte per chunk".into(),
        split_at_points(bytes, &every_byte, Duration::ZERO),
    ));

    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    for (name, chunks) in scenarios {
        assert_eq!(
            chunks.iter().map(|(_, c)| c.len()).sum::<usize>(),
            bytes.len()
        );
        mock.push(Script::Respond {
            status: 200,
            headers: event_stream_headers(),
            chunks,
        });
        let response = raw::exchange(proxy.addr, &responses_post(&proxy, STREAM_BODY), LIMIT).await;
        assert_eq!(response.status, 200, "{name}");
        assert!(
            response.complete,
            "{name}: the stream did not end cleanly: {:?}",
            response.text()
        );
        assert!(
            response.body == bytes,
            "{name}: bytes differ:\n{:?}\n--- expected:\n{stream:?}",
            response.text()
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_disconnect_while_waiting_for_upstream_headers_closes_the_upstream_connection() {
    let mock = MockUpstream::start("unused").await;
    mock.push(Script::HangBeforeHeaders);
    let proxy = TestProxy::start(&mock.base_url, &[]).await;

    let stream = send(&proxy, STREAM_BODY).await;
    assert!(mock.wait_requests(1, LIMIT).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(mock.closed_connections(), 0);
    drop(stream);

    assert!(
        mock.wait_closed(1, Duration::from_secs(2)).await,
        "upstream connection still open after the client left before any response"
    );
    assert!(proxy.wait_open_connections(0, Duration::from_secs(2)).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        mock.count(),
        1,
        "the proxy kept retrying for a client that had left"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connection_closed_or_reset_after_the_request_was_sent_is_retried_like_a_header_timeout()
{
    let mock = MockUpstream::start("after the cut").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    // A close (FIN) and an abort (RST), on a streaming and a non-streaming request each.
    for (script, body) in [
        (Script::Reset, STREAM_BODY),
        (Script::Abort, STREAM_BODY),
        (Script::Reset, JSON_BODY),
        (Script::Abort, JSON_BODY),
    ] {
        let label = script.label();
        let before = mock.count();
        mock.push(script);
        let response = raw::exchange(proxy.addr, &responses_post(&proxy, body), LIMIT).await;
        assert_eq!(response.status, 200, "{label}: {}", response.text());
        assert!(response.complete, "{label}");
        assert_eq!(
            response.header("x-codex-proxy-attempts"),
            Some("2"),
            "{label}"
        );
        let requests = mock.requests();
        assert_eq!(requests.len() - before, 2, "{label}");
        assert_eq!(requests[before].label, label);
        assert_eq!(
            requests[before].body,
            requests[before + 1].body,
            "{label}: the retry replays the same bytes"
        );
    }
    assert_eq!(
        proxy
            .state
            .upstream
            .pool
            .health(tokio::time::Instant::now())
            .status,
        "ok",
        "the network's fault, not the account's"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn when_every_attempt_is_cut_before_headers_the_client_gets_502_upstream_connection_failed() {
    let mock = MockUpstream::start("unused").await;
    mock.push(Script::Reset);
    mock.push(Script::Abort);
    mock.push(Script::Reset);
    let proxy = TestProxy::start(&mock.base_url, &[]).await;

    let response = raw::exchange(proxy.addr, &responses_post(&proxy, STREAM_BODY), LIMIT).await;
    assert_openai_error(&response, 502, "upstream_connection_failed");
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("3"));
    assert_eq!(response.header("x-should-retry"), Some("false"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(mock.count(), 3, "--max-attempts bounds the retries");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_non_streaming_body_that_stalls_past_the_request_timeout_is_aborted() {
    let mock = MockUpstream::start("unused").await;
    mock.push(Script::Respond {
        status: 200,
        headers: vec![
            ("content-type", "application/json".into()),
            ("content-length", "40".into()),
        ],
        chunks: vec![
            (
                Duration::ZERO,
                Bytes::from_static(b"{\"id\":\"resp_slow\","),
            ),
            (
                Duration::from_secs(5),
                Bytes::from_static(b"\"status\":\"completed\"}   "),
            ),
        ],
    });
    let proxy = TestProxy::start(&mock.base_url, &["--request-timeout", "0.5"]).await;

    let start = Instant::now();
    let response = raw::exchange(proxy.addr, &responses_post(&proxy, JSON_BODY), LIMIT).await;
    let elapsed = start.elapsed();
    assert_eq!(response.status, 200);
    assert!(
        !response.complete,
        "a body cut by the request timeout looked complete: {response:?}"
    );
    assert_eq!(response.text(), "{\"id\":\"resp_slow\",");
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(2000),
        "aborted after {elapsed:?}, expected ~0.5 s"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_non_streaming_request_is_bound_by_the_request_timeout_not_the_header_timeout() {
    let mock = MockUpstream::start("slow but fine").await;
    let answer = crate::mock::responses_json("slow but fine");
    mock.push(Script::DelayHeaders(
        Duration::from_millis(800),
        Box::new(Script::json(200, &answer)),
    ));
    let proxy = TestProxy::start(&mock.base_url, &["--header-timeout", "0.3"]).await;

    let response = raw::exchange(proxy.addr, &responses_post(&proxy, JSON_BODY), LIMIT).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.complete);
    assert_eq!(response.text(), answer);
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("1"));
    assert_eq!(mock.count(), 1);
    proxy.shutdown().await;
}
