//! Caps on what an upstream can make the proxy buffer (issue 9, defect 3): a spawned proxy
//! against a mock that sends far more than each cap, with the proxy's peak memory read from
//! `/proc/PID/status` (`VmHWM`) afterwards.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::mock::{sse_event, MockUpstream, Script};
use crate::raw::{exchange, post, RawResponse};
use crate::spawn::{canary, start, temp_dir, Launch, Running};

/// What the upstream sends in each case.
const FLOOD: usize = 200 << 20;
/// The peak resident size the proxy must stay under while flooded.
const PEAK_LIMIT_KIB: u64 = 100 * 1024;
const LIMIT: Duration = Duration::from_secs(60);

fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `FLOOD` bytes as 1 MiB chunks of `unit` repeated (one shared buffer, cloned).
fn flood(unit: &str) -> Vec<(Duration, Bytes)> {
    flood_of(unit, FLOOD)
}

fn flood_of(unit: &str, total: usize) -> Vec<(Duration, Bytes)> {
    let per = (1 << 20) / unit.len();
    let chunk = Bytes::from(unit.repeat(per));
    (0..total / chunk.len())
        .map(|_| (Duration::ZERO, chunk.clone()))
        .collect()
}

fn stream_of(head: &[String], chunks: Vec<(Duration, Bytes)>) -> Script {
    let mut all = vec![(Duration::ZERO, Bytes::from(head.concat()))];
    all.extend(chunks);
    Script::Respond {
        status: 200,
        headers: vec![("content-type", "text/event-stream".into())],
        chunks: all,
    }
}

fn created() -> String {
    sse_event(
        "response.created",
        json!({"response":{"id":"resp_f","status":"in_progress","output":[]}}),
    )
}

fn delta(text: &str) -> String {
    sse_event(
        "response.output_text.delta",
        json!({"item_id":"msg_1","output_index":0,"content_index":0,"delta":text}),
    )
}

async fn send(proxy: &Running, path: &str, body: serde_json::Value) -> RawResponse {
    exchange(
        proxy.addr,
        &post(proxy.addr, path, &body.to_string(), &[]),
        LIMIT,
    )
    .await
}

fn assert_bounded(proxy: &Running, case: &str) {
    let peak = peak_kib(proxy.pid);
    eprintln!("{case}: proxy VmHWM {} MiB", peak / 1024);
    assert!(
        peak < PEAK_LIMIT_KIB,
        "{case}: peak RSS {} MiB",
        peak / 1024
    );
}

fn launch(key: &str, mock: &MockUpstream, extra: &[&str]) -> Running {
    let mut args = vec!["--upstream-url".to_string(), mock.base_url.clone()];
    args.extend(extra.iter().map(|s| s.to_string()));
    start(
        Launch {
            args,
            stdin: format!("{key}\n").as_bytes(),
            as_uid: None,
            env: vec![],
        },
        &temp_dir("caps"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_upstream_gets_errors_and_the_proxy_stays_under_100_mib() {
    let key = canary();
    let mock = MockUpstream::start("caps").await;
    // A fresh process per case, so each peak is that case's own.
    let fresh = || launch(&key, &mock, &["--max-attempts", "1"]);
    let chat = json!({"model":"gpt-5.4","messages":[{"role":"user","content":"hi"}]});
    let messages =
        json!({"model":"gpt-5.4","max_tokens":64,"messages":[{"role":"user","content":"hi"}]});
    let long_delta = delta(&"x".repeat(4000));

    // Non-streaming Chat and Messages: the aggregate stops at its cap, before any output.
    for (path, body, says) in [
        (
            "/v1/chat/completions",
            &chat,
            "\"code\":\"upstream_response_too_large\"",
        ),
        (
            "/v1/messages",
            &messages,
            "larger than the proxy aggregates",
        ),
    ] {
        let proxy = fresh();
        mock.push(stream_of(&[created()], flood(&long_delta)));
        let r = send(&proxy, path, body.clone()).await;
        assert_bounded(&proxy, path);
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        assert!(r.text().contains(says), "{path}: {}", r.text());
    }

    // One event that never ends, in a translated stream: the decoder's event cap ends it
    // with the dialect's error event.
    let proxy = fresh();
    mock.push(stream_of(
        &[created(), delta("hello")],
        [
            vec![(
                Duration::ZERO,
                Bytes::from_static(b"event: response.output_text.delta\ndata: {\"delta\":\""),
            )],
            flood("y"),
        ]
        .concat(),
    ));
    let mut stream_chat = chat.clone();
    stream_chat["stream"] = json!(true);
    let r = send(&proxy, "/v1/chat/completions", stream_chat).await;
    assert_eq!(r.status, 200);
    assert!(!r.complete, "an aborted transfer");
    assert!(r.text().contains("size limit"), "{}", r.text());
    assert_bounded(&proxy, "one huge event in a chat stream");

    // The same event relayed on /v1/responses: passed through as it comes, never buffered
    // (a smaller flood: the test's own client reads it all).
    let proxy = fresh();
    mock.push(stream_of(
        &[created(), delta("hello")],
        [
            vec![(
                Duration::ZERO,
                Bytes::from_static(b"event: response.output_text.delta\ndata: {\"delta\":\""),
            )],
            flood_of("y", 48 << 20),
            vec![(Duration::ZERO, Bytes::from_static(b"\"}\n\n"))],
            vec![(
                Duration::ZERO,
                Bytes::from(sse_event(
                    "response.completed",
                    json!({"response":{"id":"resp_f","status":"completed","output":[]}}),
                )),
            )],
        ]
        .concat(),
    ));
    let r = send(
        &proxy,
        "/v1/responses",
        json!({"model":"m","stream":true,"input":"x"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert!(r.body.len() > 48 << 20, "relayed whole: {}", r.body.len());
    assert_bounded(&proxy, "one huge event relayed on /v1/responses");

    // Bootstrap events without end: the hold-back cap answers 502 before anything was sent.
    let proxy = fresh();
    let rate_limits = sse_event(
        "codex.rate_limits",
        json!({"rate_limits":{"primary":{"used_percent":1.0}}}),
    );
    mock.push(stream_of(&[created()], flood(&rate_limits)));
    let r = send(
        &proxy,
        "/v1/responses",
        json!({"model":"m","stream":true,"input":"x"}),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_response_too_large");
    assert_bounded(&proxy, "endless bootstrap events");

    let r = send(&proxy, "/v1/chat/completions", chat.clone()).await;
    assert_eq!(r.status, 200, "still serving: {}", r.text());
}
