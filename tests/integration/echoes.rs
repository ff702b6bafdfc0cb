//! Echoes of a secret in upstream answers: masked in every response header (any status), in
//! success bodies, and in event streams on every route, wherever the upstream's chunks split
//! the echo (issue 9, defect 2).

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::mock::event::{completed, created, in_progress};
use crate::mock::{sse_event, MockUpstream, Script};
use crate::proxy::{TestProxy, CANARY_KEY};
use crate::raw::{exchange, post, RawResponse};

const LIMIT: Duration = Duration::from_secs(15);

fn last4() -> &'static str {
    &CANARY_KEY[CANARY_KEY.len() - 4..]
}

/// Text carrying the key in full and in the two masked forms upstreams print.
fn echo_text() -> String {
    format!(
        "key {CANARY_KEY} masked sk-test-****{} and sk-\u{2026}{} end",
        last4(),
        last4()
    )
}

/// Fails when `text` shows the key, its masked tails, or a long piece of it.
fn assert_no_echo(text: &str, context: &str) {
    assert!(!text.contains(CANARY_KEY), "{context}: full key in {text}");
    assert!(
        !text.contains(&CANARY_KEY[8..20]),
        "{context}: a piece of the key in {text}"
    );
    assert!(
        !text.contains(last4()),
        "{context}: the key's last four in {text}"
    );
}

async fn send(proxy: &TestProxy, path: &str, body: &serde_json::Value) -> RawResponse {
    exchange(
        proxy.addr,
        &post(proxy.addr, path, &body.to_string(), &[]),
        LIMIT,
    )
    .await
}

fn headers_text(r: &RawResponse) -> String {
    r.headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect()
}

#[tokio::test]
async fn a_header_echoing_the_key_is_masked_on_every_status() {
    for (status, stream) in [
        (200, false),
        (200, true),
        (401, false),
        (429, false),
        (500, false),
    ] {
        // A fresh proxy each time: a 401 disables the key, a 429 cools it down.
        let mock = MockUpstream::start("unused").await;
        let proxy = TestProxy::start(&mock.base_url, &["--max-attempts", "1"]).await;
        let body = if stream {
            [created(), in_progress(), completed()].concat()
        } else if status == 200 {
            json!({"id":"resp_1","output":[]}).to_string()
        } else {
            json!({"error":{"message":"no","type":"x","code":"x"}}).to_string()
        };
        let content_type = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        mock.push(Script::Respond {
            status,
            headers: vec![
                ("content-type", content_type.into()),
                (
                    "www-authenticate",
                    format!("Bearer realm=\"{CANARY_KEY}\", error=\"invalid_token\""),
                ),
                ("x-echo-masked", format!("sk-test-****{}", last4())),
                ("x-echo-ellipsis", format!("sk-\u{2026}{}", last4())),
            ],
            chunks: vec![(Duration::ZERO, Bytes::from(body))],
        });
        let r = send(
            &proxy,
            "/v1/responses",
            &json!({"model":"m","stream":stream,"input":"x"}),
        )
        .await;
        assert_eq!(r.status, status, "{}", r.text());
        let headers = headers_text(&r);
        assert!(
            headers.contains("www-authenticate: Bearer realm=\"[REDACTED]"),
            "{status}: {headers}"
        );
        assert_no_echo(&headers, &format!("headers of a {status}"));
    }
}

#[tokio::test]
async fn a_success_body_echoing_the_key_is_masked_and_keeps_its_length() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    let body = json!({"id":"resp_1","output":[{"type":"message","content":[{"type":"output_text","text":echo_text()}]}]}).to_string();
    // The echo arrives split across two chunks, inside the key.
    let cut = body.find(CANARY_KEY).unwrap() + 13;
    mock.push(Script::Respond {
        status: 200,
        headers: vec![
            ("content-type", "application/json".into()),
            ("content-length", body.len().to_string()),
        ],
        chunks: vec![
            (Duration::ZERO, Bytes::from(body[..cut].to_string())),
            (
                Duration::from_millis(20),
                Bytes::from(body[cut..].to_string()),
            ),
        ],
    });
    let r = send(&proxy, "/v1/responses", &json!({"model":"m","input":"x"})).await;
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(r.body.len(), body.len(), "same length");
    assert_eq!(
        r.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    let text = r.text();
    assert_no_echo(&text, "2xx body");
    assert!(text.contains("key [REDACTED]"), "{text}");
    // Still the same JSON document, only the echo masked.
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["id"], "resp_1");
}

/// A stream whose one content event carries the echo, that event split in two at `split`.
fn split_stream(split: usize) -> (Script, usize) {
    let event = sse_event(
        "response.output_text.delta",
        json!({"item_id":"msg_1","output_index":0,"content_index":0,"delta":echo_text()}),
    );
    let len = event.len();
    let split = split.min(len);
    let head = [created(), in_progress()].concat();
    let tail = [
        sse_event(
            "response.output_text.done",
            json!({"item_id":"msg_1","output_index":0,"content_index":0,"text":echo_text()}),
        ),
        completed(),
    ]
    .concat();
    let gap = Duration::from_millis(2);
    let script = Script::Respond {
        status: 200,
        headers: vec![("content-type", "text/event-stream".into())],
        chunks: vec![
            (Duration::ZERO, Bytes::from(head)),
            (gap, Bytes::copy_from_slice(&event.as_bytes()[..split])),
            (gap, Bytes::copy_from_slice(&event.as_bytes()[split..])),
            (gap, Bytes::from(tail)),
        ],
    };
    (script, len)
}

async fn stream_at_every_split(path: &str, body: serde_json::Value) {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    let (_, len) = split_stream(0);
    for split in 1..len {
        let (script, _) = split_stream(split);
        mock.push(script);
        let r = send(&proxy, path, &body).await;
        assert_eq!(r.status, 200, "{path} split at {split}: {}", r.text());
        assert!(r.complete, "{path} split at {split}: {}", r.text());
        let text = r.text();
        assert_no_echo(&text, &format!("{path} split at {split}"));
        assert!(
            text.contains("[REDACTED]"),
            "{path} split at {split}: {text}"
        );
    }
}

#[tokio::test]
async fn a_responses_stream_echoing_the_key_is_masked_at_every_split_point() {
    stream_at_every_split(
        "/v1/responses",
        json!({"model":"m","stream":true,"input":"x"}),
    )
    .await;
}

#[tokio::test]
async fn a_chat_stream_echoing_the_key_is_masked_at_every_split_point() {
    stream_at_every_split(
        "/v1/chat/completions",
        json!({"model":"gpt-5.4","stream":true,"messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
}

#[tokio::test]
async fn a_messages_stream_echoing_the_key_is_masked_at_every_split_point() {
    stream_at_every_split(
        "/v1/messages",
        json!({"model":"gpt-5.4","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
}

#[tokio::test]
async fn aggregated_chat_and_messages_answers_echoing_the_key_are_masked() {
    let mock = MockUpstream::start("unused").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model":"gpt-5.4","messages":[{"role":"user","content":"hi"}]}),
        ),
        (
            "/v1/messages",
            json!({"model":"gpt-5.4","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}),
        ),
    ] {
        // The key reaches the aggregate in two deltas: only the joined text shows it.
        let half = CANARY_KEY.len() / 2;
        let delta = |t: &str| {
            sse_event(
                "response.output_text.delta",
                json!({"item_id":"msg_1","output_index":0,"content_index":0,"delta":t}),
            )
        };
        mock.push(Script::sse(
            &[
                created(),
                delta(&format!("key {}", &CANARY_KEY[..half])),
                delta(&format!("{} end", &CANARY_KEY[half..])),
                completed(),
            ],
            Duration::from_millis(1),
        ));
        let r = send(&proxy, path, &body).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let text = r.text();
        assert_no_echo(&text, path);
        assert!(text.contains("key [REDACTED]"), "{path}: {text}");
    }
}
