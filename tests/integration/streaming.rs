//! Passthrough of bodies, headers and events, flushed as they arrive.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::mock::{responses_stream, MockUpstream, Script};
use crate::proxy::TestProxy;

#[tokio::test]
async fn streamed_events_reach_the_client_as_they_arrive() {
    let mock = MockUpstream::start("hello world").await;
    let events = responses_stream("abcde", 5);
    mock.push(Script::sse(&events, Duration::from_millis(150)));
    let proxy = TestProxy::start(&mock.base_url, &[]).await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let body = r#"{"model":"m","stream":true,"input":"hi"}"#;
    let request = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        proxy.addr.port(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let start = Instant::now();
    let mut seen = String::new();
    let mut arrival_of_first_delta = None;
    let mut buf = vec![0u8; 65536];
    while !seen.contains("response.completed") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if arrival_of_first_delta.is_none() && seen.contains("output_text.delta") {
            arrival_of_first_delta = Some(start.elapsed());
        }
    }
    let total = start.elapsed();
    let first = arrival_of_first_delta.unwrap();
    // 12 events 150 ms apart: the first delta is event 5 (~750 ms), the end ~1.8 s.
    assert!(
        first < total - Duration::from_millis(600),
        "first delta at {first:?}, end at {total:?}: not streamed"
    );
    assert!(seen.starts_with("HTTP/1.1 200 OK\r\n"), "{seen}");
    for event in &events {
        assert!(
            seen.contains(event.as_str()),
            "event missing or altered: {event}"
        );
    }
    proxy.shutdown().await;
}
