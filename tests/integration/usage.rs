//! Usage accounting, `GET /usage` and `GET /metrics`: tokens counted from what the mock
//! upstream reported, on streamed, non-streamed, translated and aggregated answers, and
//! nothing for a stream cut before its terminal event.

use std::time::Duration;

use serde_json::{json, Value};

use crate::mock::{event, sse_event, MockUpstream, Script};
use crate::proxy::TestProxy;
use crate::raw::{self, RawResponse};

const LIMIT: Duration = Duration::from_secs(10);

fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

async fn send(proxy: &TestProxy, request: Vec<u8>) -> RawResponse {
    raw::exchange(proxy.addr, &request, LIMIT).await
}

fn usage(input: u64, cached: u64, output: u64, reasoning: u64) -> Value {
    json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output, "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input + output})
}

/// A short stream ending in `response.completed` with `usage` from `model`.
fn stream_with(model: &str, usage: Value) -> Script {
    Script::sse(
        &[
            event::created(),
            event::delta("hi"),
            sse_event(
                "response.completed",
                json!({"response": {"id": "resp_t", "status": "completed", "model": model,
                    "output": [{"id": "msg_1", "type": "message", "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": "hi", "annotations": []}]}],
                    "usage": usage}}),
            ),
        ],
        Duration::ZERO,
    )
}

fn json_with(model: &str, usage: Value) -> Script {
    Script::json(
        200,
        &json!({"id": "resp_j", "object": "response", "status": "completed", "model": model,
            "output": [{"id": "msg_1", "type": "message", "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "ok", "annotations": []}]}],
            "usage": usage, "metadata": {}})
        .to_string(),
    )
}

/// The value of the sample `name{labels}` in a text exposition (labels exactly as written).
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `/metrics` until `ready` holds (a request is counted when its body is done with,
/// which is just after the client has read it).
async fn metrics_when(proxy: &TestProxy, ready: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let response = send(proxy, raw::get(proxy.addr, "/metrics", &[])).await;
        assert_eq!(response.status, 200, "{}", response.text());
        let text = response.text();
        if ready(&text) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The tokens a run of [`drive`] makes the mock report, in total: (input, cached, output,
/// reasoning), one term per answer that reported usage.
#[allow(clippy::identity_op)]
const DRIVEN: (u64, u64, u64, u64) = (
    100 + 21 + 7 + 5 + 3,
    40 + 1 + 0 + 2 + 1,
    30 + 8 + 3 + 4 + 2,
    12 + 2 + 0 + 1 + 1,
);

/// One POST on a fresh connection.
async fn post(proxy: &TestProxy, path: &str, body: &str, headers: &[(&str, &str)]) -> RawResponse {
    send(proxy, raw::post(proxy.addr, path, body, headers)).await
}

/// Six answered requests on every kind of path; one of them cut before its terminal event.
async fn drive(proxy: &TestProxy, mock: &MockUpstream) {
    // Streamed passthrough.
    mock.push(stream_with("gpt-5.4", usage(100, 40, 30, 12)));
    let r = post(
        proxy,
        "/v1/responses",
        r#"{"model":"gpt-5.4","input":"x","stream":true}"#,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Non-streamed passthrough (a JSON body's top-level usage).
    mock.push(json_with("gpt-5.4", usage(21, 1, 8, 2)));
    let r = post(
        proxy,
        "/v1/responses",
        r#"{"model":"gpt-5.4","input":"x"}"#,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Chat Completions, streamed and translated.
    mock.push(stream_with("gpt-5.4-mini", usage(7, 0, 3, 0)));
    let r = post(
        proxy,
        "/v1/chat/completions",
        r#"{"model":"gpt-5.4-mini","stream":true,"messages":[{"role":"user","content":"x"}]}"#,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Anthropic Messages, not streamed: the upstream's events are aggregated.
    mock.push(stream_with("gpt-5.4", usage(5, 2, 4, 1)));
    let r = post(
        proxy,
        "/v1/messages",
        r#"{"model":"gpt-5.4","max_tokens":16,"messages":[{"role":"user","content":"x"}]}"#,
        &[("anthropic-version", "2023-06-01")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Cut after output, before the terminal event: nothing was reported, nothing counted.
    mock.push(Script::CutAfter {
        status: 200,
        headers: vec![("content-type", "text/event-stream".into())],
        chunks: vec![
            (Duration::ZERO, event::created().into()),
            (Duration::ZERO, event::delta("partial").into()),
        ],
    });
    let r = post(
        proxy,
        "/v1/responses",
        r#"{"model":"gpt-5.4","input":"x","stream":true}"#,
        &[],
    )
    .await;
    assert!(r.text().contains("error"), "{}", r.text());
    // Cut after the terminal event: what was reported counts.
    let completed = sse_event(
        "response.completed",
        json!({"response": {"id": "resp_c", "status": "completed", "model": "gpt-5.4",
            "output": [], "usage": usage(3, 1, 2, 1)}}),
    );
    mock.push(Script::CutAfter {
        status: 200,
        headers: vec![("content-type", "text/event-stream".into())],
        chunks: vec![
            (Duration::ZERO, event::created().into()),
            (Duration::ZERO, event::delta("all").into()),
            (Duration::ZERO, completed.into()),
        ],
    });
    let _ = post(
        proxy,
        "/v1/responses",
        r#"{"model":"gpt-5.4","input":"x","stream":true}"#,
        &[],
    )
    .await;
}

fn answered(text: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with("codex_proxy_requests_total{") && !l.contains("provider=\"none\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn usage_counts_what_the_upstream_reported_on_every_path_and_shows_the_caller_its_row() {
    let mock = MockUpstream::start("fallback").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    drive(&proxy, &mock).await;
    let _ = metrics_when(&proxy, |t| answered(t) >= 6.0).await;

    let response = send(&proxy, raw::get(proxy.addr, "/usage", &[])).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let document = response.json();
    let rows = document["users"].as_array().expect("users");
    let mine: Vec<&Value> = rows.iter().filter(|r| r["uid"] == my_uid()).collect();
    assert_eq!(mine.len(), 1, "{document}");
    let row = mine[0];
    let (input, cached, output, reasoning) = DRIVEN;
    assert_eq!(row["requests"], 6, "{document}");
    assert_eq!(row["input_tokens"], input, "{document}");
    assert_eq!(row["cached_input_tokens"], cached, "{document}");
    assert_eq!(row["output_tokens"], output, "{document}");
    assert_eq!(row["reasoning_tokens"], reasoning, "{document}");
    for budget_field in ["budget", "remaining", "window_ends_at"] {
        assert_eq!(row[budget_field], Value::Null, "{document}");
    }
    let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 10, "{document}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn metrics_counters_equal_the_usage_the_mock_reported() {
    let mock = MockUpstream::start("fallback").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    drive(&proxy, &mock).await;
    let text = metrics_when(&proxy, |t| answered(t) >= 6.0).await;

    let response = send(&proxy, raw::get(proxy.addr, "/metrics", &[])).await;
    assert!(response
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/openmetrics-text; version=1.0.0")));
    let user = {
        let doc = send(&proxy, raw::get(proxy.addr, "/usage", &[]))
            .await
            .json();
        let row = doc["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["uid"] == my_uid())
            .cloned()
            .unwrap();
        row["user"]
            .as_str()
            .map_or_else(|| my_uid().to_string(), str::to_string)
    };
    let tokens = |model: &str, kind: &str| {
        sample(
            &text,
            &format!(
                "codex_proxy_tokens_total{{provider=\"openai\",model=\"{model}\",user=\"{user}\",kind=\"{kind}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    let (input, cached, output, reasoning) = DRIVEN;
    for (kind, want) in [
        ("input", input),
        ("cached_input", cached),
        ("output", output),
        ("reasoning", reasoning),
    ] {
        let got = tokens("gpt-5.4", kind) + tokens("gpt-5.4-mini", kind);
        assert_eq!(got, want as f64, "{kind}\n{text}");
    }
    assert_eq!(tokens("gpt-5.4-mini", "input"), 7.0, "{text}");
    assert_eq!(
        sample(
            &text,
            &format!(
                "codex_proxy_requests_total{{route=\"chat\",status=\"200\",provider=\"openai\",user=\"{user}\"}}"
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "codex_proxy_upstream_attempts_total{provider=\"openai\",account=\"0\",outcome=\"served\"}"
        ),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "codex_proxy_accounts{provider=\"openai\",state=\"active\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "codex_proxy_connections").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "codex_proxy_request_duration_seconds_count{route=\"responses\",provider=\"openai\"}"
        ) == Some(4.0),
        "{text}"
    );
    assert!(
        text.contains("codex_proxy_time_to_first_byte_seconds_bucket{le=\"+Inf\",route=\"messages\",provider=\"openai\"} 1")
            || text.contains("codex_proxy_time_to_first_byte_seconds_bucket{route=\"messages\",provider=\"openai\",le=\"+Inf\"} 1"),
        "{text}"
    );
    // Never the key, never an account id or email.
    assert!(!text.contains("sk-"), "{text}");

    parse_with_prometheus_client(&text, &user);
    proxy.shutdown().await;
}

/// The venv's Python (scripts/install-clients python), if installed: `CODEX_PROXY_PYTHON`,
/// else `.clients/venv/bin/python`. `CODEX_PROXY_REQUIRE_PYTHON=1` (scripts/e2e-clients)
/// makes its absence a failure.
fn python() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("CODEX_PROXY_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".clients/venv/bin/python")
        });
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CODEX_PROXY_REQUIRE_PYTHON").is_none(),
        "no Python at {} (run scripts/install-clients python)",
        path.display()
    );
    eprintln!(
        "note: {} missing: /metrics not checked with prometheus_client",
        path.display()
    );
    None
}

/// Parses the exposition with the Python `prometheus_client` OpenMetrics parser (the
/// reference implementation; strict: a malformed line, a missing `# EOF` or a sample outside
/// its family fails it) and checks its token counters against the usage the mock reported.
fn parse_with_prometheus_client(text: &str, user: &str) {
    let Some(python) = python() else { return };
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {"type": family.type, "samples": [
        {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples]}
print(json.dumps(families))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (family, kind) in [
        ("codex_proxy_requests", "counter"),
        ("codex_proxy_tokens", "counter"),
        ("codex_proxy_upstream_attempts", "counter"),
        ("codex_proxy_request_duration_seconds", "histogram"),
        ("codex_proxy_time_to_first_byte_seconds", "histogram"),
        ("codex_proxy_accounts", "gauge"),
        ("codex_proxy_connections", "gauge"),
    ] {
        assert_eq!(families[family]["type"], kind, "{family}: {families}");
    }
    let (input, cached, output, reasoning) = DRIVEN;
    for (kind, want) in [
        ("input", input),
        ("cached_input", cached),
        ("output", output),
        ("reasoning", reasoning),
    ] {
        let got: f64 = families["codex_proxy_tokens"]["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| {
                s["name"] == "codex_proxy_tokens_total"
                    && s["labels"]["kind"] == kind
                    && s["labels"]["user"] == user
                    && s["labels"]["provider"] == "openai"
            })
            .map(|s| s["value"].as_f64().unwrap())
            .sum();
        assert_eq!(got, want as f64, "{kind}: {families}");
    }
}

#[tokio::test]
async fn usage_and_metrics_need_the_client_token_like_every_route() {
    let mock = MockUpstream::start("never").await;
    let proxy = TestProxy::start(&mock.base_url, &["--client-token"]).await;
    for path in ["/usage", "/metrics"] {
        let response = send(&proxy, raw::get(proxy.addr, path, &[])).await;
        assert_eq!(response.status, 401, "{path}: {}", response.text());
        let response = send(&proxy, raw::post(proxy.addr, path, "{}", &[])).await;
        assert!(
            response.status == 401 || response.status == 405,
            "{path}: {}",
            response.status
        );
    }
    assert_eq!(mock.count(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn usage_and_metrics_refuse_a_user_not_on_the_list() {
    let mock = MockUpstream::start("never").await;
    let other = (if my_uid() == 65534 { 65533 } else { 65534 }).to_string();
    let proxy = TestProxy::start(&mock.base_url, &["--allow-user", &other]).await;
    for path in ["/usage", "/metrics"] {
        let response = send(&proxy, raw::get(proxy.addr, path, &[])).await;
        assert_eq!(response.status, 403, "{path}: {}", response.text());
        assert_eq!(response.json()["error"]["code"], "user_not_allowed");
    }
    proxy.shutdown().await;
}

/// `--bench-accounting-off` (scripts/bench's "off" figure) is a real off: the same traffic
/// leaves no caller and no count anywhere, so the bench compares against no lookup and no
/// accounting at all.
#[tokio::test]
async fn the_bench_switch_turns_the_lookup_and_the_accounting_off() {
    let mock = MockUpstream::start("fallback").await;
    let proxy = TestProxy::start(&mock.base_url, &["--bench-accounting-off"]).await;
    drive(&proxy, &mock).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = send(&proxy, raw::get(proxy.addr, "/metrics", &[]))
        .await
        .text();
    assert!(!text.contains("codex_proxy_tokens_total{"), "{text}");
    assert!(
        !text.contains("codex_proxy_upstream_attempts_total{"),
        "{text}"
    );
    assert_eq!(answered(&text), 0.0, "{text}");
    let doc = send(&proxy, raw::get(proxy.addr, "/usage", &[]))
        .await
        .json();
    assert_eq!(
        doc,
        json!({"users": []}),
        "no caller: not even this one's row"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_json_answer_with_a_content_length_is_counted_too() {
    // An upstream that states the length: the client's body is complete with its last
    // bytes (hyper asks for nothing after them), and its usage still counts.
    let mock = MockUpstream::start("fallback").await;
    let proxy = TestProxy::start(&mock.base_url, &[]).await;
    let Script::Respond {
        status,
        mut headers,
        chunks,
    } = json_with("gpt-5.4", usage(13, 0, 5, 0))
    else {
        unreachable!("json_with makes a Respond script");
    };
    let length: usize = chunks.iter().map(|(_, c)| c.len()).sum();
    headers.push(("content-length", length.to_string()));
    mock.push(Script::Respond {
        status,
        headers,
        chunks,
    });
    let r = post(
        &proxy,
        "/v1/responses",
        r#"{"model":"gpt-5.4","input":"x"}"#,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-length"),
        Some(length.to_string().as_str())
    );
    let text = metrics_when(&proxy, |t| answered(t) >= 1.0).await;
    let input: f64 = text
        .lines()
        .filter(|l| l.starts_with("codex_proxy_tokens_total{") && l.contains("kind=\"input\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(input, 13.0, "{text}");
    proxy.shutdown().await;
}
