//! Limits: body size (413), bytes buffered across requests (503), connection count (503 and
//! close), many idle connections, the slow-sender header timeout, and the open-connection gauge
//! returning to zero once clients are gone.

use std::future::Future;
use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use codex_proxy::server::HEADER_READ_TIMEOUT;

use crate::mock::{responses_json, MockUpstream};
use crate::proxy::TestProxy;
use crate::raw::{self, RawResponse};

const LIMIT: Duration = Duration::from_secs(5);
const TEXT: &str = "limits ok";

async fn setup(flags: &[&str]) -> (MockUpstream, TestProxy) {
    let mock = MockUpstream::start(TEXT).await;
    let proxy = TestProxy::start(&mock.base_url, flags).await;
    (mock, proxy)
}

/// A JSON request body of exactly `len` bytes.
fn json_body(len: usize) -> String {
    let head = r#"{"model":"m","input":""#;
    let tail = r#""}"#;
    assert!(len >= head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()))
}

/// A request head for POST /v1/responses with a Content-Length.
fn head_with_length(proxy: &TestProxy, len: usize) -> Vec<u8> {
    format!(
        "POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n",
        proxy.addr.port()
    )
    .into_bytes()
}

/// A request head for POST /v1/responses with a chunked body.
fn head_chunked(proxy: &TestProxy) -> Vec<u8> {
    format!(
        "POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        proxy.addr.port()
    )
    .into_bytes()
}

/// `data` as one chunk of a chunked body.
fn chunk(data: &[u8]) -> Vec<u8> {
    [format!("{:x}\r\n", data.len()).as_bytes(), data, b"\r\n"].concat()
}

/// `body` as a complete chunked body, in pieces of at most `piece` bytes.
fn chunked(body: &str, piece: usize) -> Vec<u8> {
    let mut out: Vec<u8> = body.as_bytes().chunks(piece).flat_map(chunk).collect();
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

async fn exchange(proxy: &TestProxy, bytes: &[u8]) -> RawResponse {
    raw::exchange(proxy.addr, bytes, LIMIT).await
}

/// Polls `condition` every few milliseconds until it holds or `limit` passes; true if it held.
async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Asserts the proxy's open-connection gauge drops to zero soon after the clients are gone.
async fn assert_connections_drain(proxy: &TestProxy) {
    assert!(
        wait_until(LIMIT, || proxy.state.open_connections() == 0).await,
        "open connections stuck at {}",
        proxy.state.open_connections()
    );
}

fn error_body(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn too_large(max: usize) -> Value {
    error_body(
        &format!("Request body is larger than the limit of {max} bytes."),
        "invalid_request_error",
        "request_too_large",
    )
}

fn overloaded() -> Value {
    error_body(
        "Too many request bytes are buffered right now; try again shortly.",
        "server_error",
        "proxy_overloaded",
    )
}

fn default_answer() -> Value {
    serde_json::from_str(&responses_json(TEXT)).unwrap()
}

#[track_caller]
fn assert_ok(response: &RawResponse) {
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), default_answer());
}

/// Runs `future` and returns its output with how long it took.
async fn timed<T>(future: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = future.await;
    (out, started.elapsed())
}

#[tokio::test]
async fn a_body_over_max_body_bytes_by_content_length_is_413_and_one_at_the_limit_is_forwarded() {
    let (mock, proxy) = setup(&["--max-body-bytes", "1000"]).await;
    let over = json_body(1001);
    let response = exchange(
        &proxy,
        &[head_with_length(&proxy, 1001), over.into_bytes()].concat(),
    )
    .await;
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.json(), too_large(1000));

    // A declared length over the limit is refused before any body byte is sent.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(&head_with_length(&proxy, 50_000_000))
        .await
        .unwrap();
    let (response, took) = timed(raw::read_response(&mut stream, LIMIT)).await;
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.json(), too_large(1000));
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(mock.count(), 0);

    // Control: exactly at the limit.
    let at = json_body(1000);
    let response = exchange(
        &proxy,
        &[head_with_length(&proxy, 1000), at.clone().into_bytes()].concat(),
    )
    .await;
    assert_ok(&response);
    assert_eq!(mock.count(), 1);
    assert_eq!(&mock.requests()[0].body[..], at.as_bytes());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_chunked_body_growing_over_max_body_bytes_is_413_and_one_at_the_limit_is_forwarded() {
    let (mock, proxy) = setup(&["--max-body-bytes", "1000"]).await;
    for (over, piece) in [
        (json_body(1001), 250),
        (json_body(1200), 300),
        (json_body(4000), 4000),
    ] {
        let request = [head_chunked(&proxy), chunked(&over, piece)].concat();
        let response = exchange(&proxy, &request).await;
        assert_eq!(
            response.status,
            413,
            "{} in {piece}: {}",
            over.len(),
            response.text()
        );
        assert_eq!(response.json(), too_large(1000));
    }
    assert_eq!(mock.count(), 0);

    // Control: exactly at the limit, in pieces.
    let at = json_body(1000);
    let response = exchange(&proxy, &[head_chunked(&proxy), chunked(&at, 250)].concat()).await;
    assert_ok(&response);
    assert_eq!(mock.count(), 1);
    assert_eq!(&mock.requests()[0].body[..], at.as_bytes());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_second_body_over_max_buffered_bytes_is_503_while_the_first_is_held() {
    let (mock, proxy) = setup(&["--max-body-bytes", "1000", "--max-buffered-bytes", "1500"]).await;
    let first = json_body(1000);
    // The first request declares 1000 bytes and sends 900: what arrived is reserved (never
    // the declared length: see the eight-trickler test below).
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(&head_with_length(&proxy, 1000))
        .await
        .unwrap();
    slow.write_all(&first.as_bytes()[..900]).await.unwrap();
    assert!(
        wait_until(LIMIT, || proxy.state.budget.used() == 900).await,
        "reservation not taken: {}",
        proxy.state.budget.used()
    );

    let second = json_body(1000);
    let request = [head_with_length(&proxy, 1000), second.clone().into_bytes()].concat();
    let response = exchange(&proxy, &request).await;
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(response.header("x-should-retry"), Some("false"));
    assert_eq!(response.json(), overloaded());
    assert_eq!(mock.count(), 0);

    // Control: a body that fits beside the held bytes is served meanwhile.
    let small = json_body(400);
    let response = exchange(
        &proxy,
        &[head_with_length(&proxy, 400), small.into_bytes()].concat(),
    )
    .await;
    assert_ok(&response);
    assert_eq!(mock.count(), 1);

    // The first request completes, its reservation returns, and the second now fits.
    slow.write_all(&first.as_bytes()[900..]).await.unwrap();
    assert_ok(&raw::read_response(&mut slow, LIMIT).await);
    drop(slow);
    assert!(wait_until(LIMIT, || proxy.state.budget.used() == 0).await);
    assert_ok(&exchange(&proxy, &request).await);
    let bodies: Vec<usize> = mock.requests().iter().map(|r| r.body.len()).collect();
    assert_eq!(bodies, vec![400, 1000, 1000]);
    assert_connections_drain(&proxy).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn chunked_bodies_count_against_max_buffered_bytes_as_they_arrive() {
    let (mock, proxy) = setup(&["--max-body-bytes", "1000", "--max-buffered-bytes", "1500"]).await;
    let first = json_body(1000);
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(&head_chunked(&proxy)).await.unwrap();
    slow.write_all(&chunk(&first.as_bytes()[..900]))
        .await
        .unwrap();
    assert!(
        wait_until(LIMIT, || proxy.state.budget.used() == 900).await,
        "chunk not reserved: {}",
        proxy.state.budget.used()
    );

    let second = json_body(700);
    let response = exchange(
        &proxy,
        &[head_chunked(&proxy), chunked(&second, 700)].concat(),
    )
    .await;
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(response.json(), overloaded());
    assert_eq!(mock.count(), 0);

    let mut rest = chunk(&first.as_bytes()[900..]);
    rest.extend_from_slice(b"0\r\n\r\n");
    slow.write_all(&rest).await.unwrap();
    assert_ok(&raw::read_response(&mut slow, LIMIT).await);
    drop(slow);
    assert!(wait_until(LIMIT, || proxy.state.budget.used() == 0).await);
    // Control: the same second request once the first is done.
    assert_ok(
        &exchange(
            &proxy,
            &[head_chunked(&proxy), chunked(&second, 700)].concat(),
        )
        .await,
    );
    let bodies: Vec<usize> = mock.requests().iter().map(|r| r.body.len()).collect();
    assert_eq!(bodies, vec![1000, 700]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connection_over_max_connections_gets_503_and_close_until_one_is_freed() {
    let (mock, proxy) = setup(&["--max-connections", "4"]).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    assert!(wait_until(LIMIT, || proxy.state.open_connections() == 4).await);

    // The fifth is answered without being read.
    let mut fifth = TcpStream::connect(proxy.addr).await.unwrap();
    let response = raw::read_response(&mut fifth, LIMIT).await;
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.header("x-should-retry"), Some("false"));
    assert_eq!(
        response.json(),
        error_body(
            "Too many connections to the proxy.",
            "server_error",
            "too_many_connections"
        )
    );
    let (rest, closed) = raw::read_to_close(&mut fifth, LIMIT).await;
    assert!(
        closed && rest.is_empty(),
        "not closed after the 503: {rest:?}"
    );
    assert_eq!(proxy.state.open_connections(), 4);
    assert_eq!(mock.count(), 0);

    // Control: with one closed, a new connection is served.
    drop(idle.pop());
    assert!(wait_until(LIMIT, || proxy.state.open_connections() == 3).await);
    let body = r#"{"model":"m","input":"hi"}"#;
    assert_ok(&exchange(&proxy, &raw::post(proxy.addr, "/v1/responses", body, &[])).await);
    assert_eq!(mock.count(), 1);

    // A connection that was kept busy works too (it was never refused).
    let mut first = idle.remove(0);
    first
        .write_all(&raw::post(proxy.addr, "/v1/responses", body, &[]))
        .await
        .unwrap();
    assert_ok(&raw::read_response(&mut first, LIMIT).await);
    drop(first);
    drop(idle);
    assert_connections_drain(&proxy).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn two_hundred_idle_connections_do_not_delay_a_real_request() {
    let (mock, proxy) = setup(&[]).await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    assert!(
        wait_until(LIMIT, || proxy.state.open_connections() == 200).await,
        "only {} accepted",
        proxy.state.open_connections()
    );
    let body = r#"{"model":"m","input":"hi"}"#;
    let request = raw::post(proxy.addr, "/v1/responses", body, &[]);
    let (response, took) = timed(exchange(&proxy, &request)).await;
    assert_ok(&response);
    assert!(
        took < Duration::from_secs(2),
        "a real request took {took:?}"
    );
    // Some idle connections can still be used.
    for stream in idle.iter_mut().step_by(50) {
        stream.write_all(&request).await.unwrap();
        assert_ok(&raw::read_response(stream, LIMIT).await);
    }
    assert_eq!(mock.count(), 5);
    drop(idle);
    assert_connections_drain(&proxy).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_slow_sender_is_disconnected_at_the_header_read_timeout() {
    let (mock, proxy) = setup(&[]).await;
    let head = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\ncontent-length: 26\r\n\r\n",
        proxy.addr.port()
    );
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    // One header byte per second: the head would take ~100 s.
    let trickle = tokio::spawn(async move {
        for byte in head.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    // Control meanwhile: a normal-speed client is served.
    let body = r#"{"model":"m","input":"hi"}"#;
    assert_ok(&exchange(&proxy, &raw::post(proxy.addr, "/v1/responses", body, &[])).await);

    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(HEADER_READ_TIMEOUT + Duration::from_secs(5), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let took = started.elapsed();
    trickle.abort();
    assert!(closed.is_ok(), "slow sender still connected after {took:?}");
    assert!(
        took >= HEADER_READ_TIMEOUT - Duration::from_secs(1),
        "closed after only {took:?}"
    );
    let text = String::from_utf8_lossy(&received);
    assert!(
        received.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert_eq!(mock.count(), 1, "the slow request reached the upstream");
    assert_connections_drain(&proxy).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn eight_trickling_32_mib_bodies_block_no_other_request_and_end_with_408_at_the_body_deadline(
) {
    // Defaults: --max-body-bytes 32 MiB, --max-buffered-bytes 256 MiB = eight declared bodies.
    const DEADLINE: Duration = Duration::from_secs(2);
    let mock = MockUpstream::start(TEXT).await;
    let proxy = TestProxy::start_tweaked(
        &mock.base_url,
        &[],
        format!("{}\n", crate::proxy::CANARY_KEY).as_bytes(),
        |config| config.timeouts.body_read = DEADLINE,
    )
    .await;
    let started = Instant::now();
    let mut tricklers = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream
            .write_all(&head_with_length(&proxy, 32 * 1024 * 1024))
            .await
            .unwrap();
        stream.write_all(b"{").await.unwrap();
        tricklers.push(stream);
    }
    // One byte per socket every 100 ms: never the 30 s chunk pause, always alive.
    let trickle = tokio::spawn(async move {
        let mut answers = Vec::new();
        let mut open: Vec<Option<TcpStream>> = tricklers.into_iter().map(Some).collect();
        while open.iter().any(Option::is_some) && Instant::now() < started + LIMIT * 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for slot in open.iter_mut() {
                let Some(stream) = slot else { continue };
                if stream.write_all(b" ").await.is_err() {
                    let mut stream = slot.take().unwrap();
                    answers.push((
                        raw::read_response(&mut stream, LIMIT).await,
                        started.elapsed(),
                    ));
                    continue;
                }
                let mut probe = [0u8; 1];
                // Has an answer arrived? (Peek without waiting.)
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut probe)).await
                {
                    if n > 0 {
                        let mut stream = slot.take().unwrap();
                        answers.push((
                            raw::read_response(&mut stream, LIMIT).await,
                            started.elapsed(),
                        ));
                    }
                }
            }
        }
        answers
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Meanwhile a normal POST is served, not refused with 503.
    let body = json_body(1000);
    let (response, took) = timed(exchange(
        &proxy,
        &[head_with_length(&proxy, 1000), body.into_bytes()].concat(),
    ))
    .await;
    assert_ok(&response);
    assert!(took < Duration::from_secs(1), "served in {took:?}");
    assert!(
        proxy.state.budget.used() < 1024 * 1024,
        "only bytes that arrived are reserved: {}",
        proxy.state.budget.used()
    );

    let answers = trickle.await.unwrap();
    assert_eq!(answers.len(), 8, "every trickling body got an answer");
    for (response, at) in &answers {
        assert_eq!(response.status, 408, "{}", response.text());
        assert_eq!(
            response.json(),
            error_body(
                "The request body arrived too slowly.",
                "invalid_request_error",
                "request_body_timeout"
            )
        );
        assert!(
            *at >= DEADLINE && *at < DEADLINE + Duration::from_secs(2),
            "answered at {at:?}"
        );
    }
    assert_eq!(
        mock.count(),
        1,
        "only the normal request reached the upstream"
    );
    assert!(wait_until(LIMIT, || proxy.state.budget.used() == 0).await);
    assert_connections_drain(&proxy).await;
    proxy.shutdown().await;
}
