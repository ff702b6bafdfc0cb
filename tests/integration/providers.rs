//! Providers (DESIGN §9): several upstreams in one process, routed by model. An Anthropic
//! provider gets `/v1/messages` byte for byte with the stdin key as `x-api-key`; two
//! `openai`-kind providers on their own mocks keep affinity and failover inside themselves;
//! unknown models and routes a provider does not serve are refused before any upstream (Responses
//! and Chat clients over an Anthropic provider: `hub`).
//!
//! The providers are built as `Config.providers` directly (the config file's shape), file
//! providers first, then the implicit `openai`/`chatgpt`.

use std::time::Duration;

use bytes::Bytes;
use codex_proxy::config::{Config, UpstreamBase};
use codex_proxy::glob::Glob;
use codex_proxy::upstream::provider::{ProviderConfig, ProviderKind};
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use crate::mock::{
    anthropic_error, anthropic_json, anthropic_stream, sse_event, MockUpstream, Recorded, Script,
};
use crate::proxy::TestProxy;
use crate::raw::{self, RawResponse};

const LIMIT: Duration = Duration::from_secs(10);
const ANT_KEY: &str = "sk-ant-api03-TESTk3yQ7zX9pL2mN5vB8cR4tY6wA1sD0fG";
const ANT_KEY_2: &str = "sk-ant-api03-TESTsecondKEYq1w2e3r4t5y6u7i8o9p0";
const TEXT: &str = "hello from claude";
const STREAM_BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"h\u00e9 \"q\""}]}"#;
const JSON_BODY: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;

fn provider(name: &str, kind: ProviderKind, base_url: &str, globs: &[&str]) -> ProviderConfig {
    ProviderConfig {
        name: name.to_string(),
        kind,
        base: UpstreamBase::parse(base_url).unwrap(),
        models: globs.iter().map(|g| Glob::new(g).unwrap()).collect(),
        default: false,
        headers: Vec::new(),
        implicit: false,
        keyless: false,
        chat: Default::default(),
    }
}

/// A proxy whose config file would define `providers` (before the implicit ones), with
/// `input` on stdin and `tweak` applied to the rest of the configuration.
async fn start_with(
    providers: Vec<ProviderConfig>,
    input: &str,
    tweak: impl FnOnce(&mut Config),
) -> TestProxy {
    // The implicit `openai` points nowhere useful: no test routes to it.
    TestProxy::start_tweaked("http://127.0.0.1:9/v1", &[], input.as_bytes(), |config| {
        let implicit = std::mem::take(&mut config.providers);
        config.providers = providers;
        config.providers.extend(implicit);
        tweak(config);
    })
    .await
}

async fn start(providers: Vec<ProviderConfig>, input: &str) -> TestProxy {
    start_with(providers, input, |_| {}).await
}

fn key_line(provider: &str, key: &str) -> String {
    format!("{{\"provider\":\"{provider}\",\"api_key\":\"{key}\"}}\n")
}

async fn post(proxy: &TestProxy, path: &str, body: &str, headers: &[(&str, &str)]) -> RawResponse {
    raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, path, body, headers),
        LIMIT,
    )
    .await
}

fn header<'a>(recorded: &'a Recorded, name: &str) -> Option<&'a str> {
    recorded.headers.get(name).map(|v| v.to_str().unwrap())
}

/// The Anthropic mock and a proxy with one `claude` provider of `keys`.
async fn claude_setup(keys: &[&str]) -> (MockUpstream, TestProxy) {
    let mock = MockUpstream::start_anthropic_with(keys, TEXT, None).await;
    let input: String = keys.iter().map(|k| key_line("claude", k)).collect();
    let proxy = start(
        vec![provider(
            "claude",
            ProviderKind::Anthropic,
            &mock.base_url,
            &["claude-*"],
        )],
        &input,
    )
    .await;
    (mock, proxy)
}

fn event_stream(events: &[String]) -> Script {
    Script::sse(events, Duration::ZERO)
}

async fn health(proxy: &TestProxy) -> Value {
    raw::exchange(proxy.addr, &raw::get(proxy.addr, "/health", &[]), LIMIT)
        .await
        .json()
}

#[tokio::test]
async fn messages_pass_through_byte_for_byte_with_the_stdin_key_as_x_api_key() {
    let (mock, proxy) = claude_setup(&[ANT_KEY]).await;
    let response = post(
        &proxy,
        "/v1/messages?beta=true",
        STREAM_BODY,
        &[
            ("x-api-key", "client-key-must-not-travel"),
            ("authorization", "Bearer client-token-must-not-travel"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "interleaved-thinking-2025-05-14"),
        ],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.complete);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(response.text(), anthropic_stream(TEXT, 3).concat());
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("1"));

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let recorded = &requests[0];
    assert_eq!(recorded.target, "/v1/messages");
    assert_eq!(&recorded.body[..], STREAM_BODY.as_bytes(), "byte for byte");
    assert_eq!(header(recorded, "x-api-key"), Some(ANT_KEY));
    assert_eq!(recorded.headers.get_all("x-api-key").iter().count(), 1);
    assert_eq!(header(recorded, "authorization"), None);
    assert_eq!(header(recorded, "anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        header(recorded, "anthropic-beta"),
        Some("interleaved-thinking-2025-05-14")
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_json_answer_passes_through_and_anthropic_version_is_set_when_absent() {
    let (mock, proxy) = claude_setup(&[ANT_KEY]).await;
    let response = post(&proxy, "/v1/messages", JSON_BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), anthropic_json(TEXT));
    let recorded = &mock.requests()[0];
    assert_eq!(header(recorded, "anthropic-version"), Some("2023-06-01"));
    assert_eq!(header(recorded, "x-api-key"), Some(ANT_KEY));
    // A JSON answer's top-level usage counts, cache reads and writes added to the input.
    let metrics = metrics_with(&proxy, |m| {
        sample(m, "provider=\"claude\"", "kind=\"output\"") >= 7.0
    })
    .await;
    assert_eq!(
        sample(&metrics, "provider=\"claude\"", "kind=\"input\""),
        17.0
    );
    assert_eq!(
        sample(&metrics, "provider=\"claude\"", "kind=\"cached_input\""),
        3.0
    );
    // The answer says whose it is: the account and its provider, never the key.
    let health = health(&proxy).await;
    assert_eq!(health["accounts"][0]["provider"], "claude", "{health}");
    assert_eq!(health["accounts"][0]["kind"], "api_key", "{health}");
    assert!(!health.to_string().contains(ANT_KEY));
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_alias_rewrites_only_the_model_of_a_messages_body() {
    let mock = MockUpstream::start_anthropic(ANT_KEY, TEXT).await;
    let proxy = start_with(
        vec![provider(
            "claude",
            ProviderKind::Anthropic,
            &mock.base_url,
            &["claude-*"],
        )],
        &key_line("claude", ANT_KEY),
        |config| {
            config.models = codex_proxy::translate::models::ModelTable::from_json(
                br#"{"aliases":{"sonnet":"claude-sonnet-4-5"}}"#,
            )
            .unwrap();
        },
    )
    .await;
    let body = r#"{"max_tokens":64,"model":"sonnet","messages":[{"role":"user","content":"hi"}],"metadata":{"user_id":"u1"}}"#;
    let response = post(&proxy, "/v1/messages", body, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let sent: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    let mut expected: Value = serde_json::from_str(body).unwrap();
    expected["model"] = json!("claude-sonnet-4-5");
    assert_eq!(sent, expected);
    proxy.shutdown().await;
}

#[tokio::test]
async fn count_tokens_is_forwarded_to_an_anthropic_provider_for_the_exact_count() {
    let (mock, proxy) = claude_setup(&[ANT_KEY]).await;
    let body = r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"count me"}]}"#;
    let response = post(
        &proxy,
        "/v1/messages/count_tokens?beta=true",
        body,
        &[("x-api-key", "client-key")],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!({"input_tokens": 42}));
    let recorded = &mock.requests()[0];
    assert_eq!(recorded.target, "/v1/messages/count_tokens");
    assert_eq!(header(recorded, "x-api-key"), Some(ANT_KEY));
    assert_eq!(&recorded.body[..], body.as_bytes());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_model_no_provider_serves_is_400_model_not_found_in_each_dialect_upstream_untouched() {
    let (mock, proxy) = claude_setup(&[ANT_KEY]).await;
    let messages = post(
        &proxy,
        "/v1/messages",
        r#"{"model":"llama-3","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(messages.status, 400, "{}", messages.text());
    assert_eq!(
        messages.json(),
        json!({"type":"error","error":{"type":"not_found_error",
            "message":"model_not_found: No provider of this proxy serves the model `llama-3`."}})
    );
    for (path, body) in [
        ("/v1/responses", r#"{"model":"llama-3","input":"hi"}"#),
        (
            "/v1/chat/completions",
            r#"{"model":"llama-3","messages":[{"role":"user","content":"hi"}]}"#,
        ),
    ] {
        let response = post(&proxy, path, body, &[]).await;
        assert_eq!(response.status, 400, "{path}: {}", response.text());
        assert_eq!(
            response.json()["error"]["code"],
            "model_not_found",
            "{path}"
        );
        assert_eq!(
            response.json()["error"]["type"],
            "invalid_request_error",
            "{path}"
        );
    }
    assert_eq!(mock.count(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn compaction_on_an_anthropic_provider_is_400_unsupported_on_provider() {
    let (mock, proxy) = claude_setup(&[ANT_KEY]).await;
    let path = "/v1/responses/compact";
    let response = post(
        &proxy,
        path,
        r#"{"model":"claude-sonnet-4-5","input":"hi"}"#,
        &[],
    )
    .await;
    assert_eq!(response.status, 400, "{path}: {}", response.text());
    assert_eq!(
        response.json()["error"]["code"],
        "unsupported_on_provider",
        "{path}"
    );
    assert_eq!(mock.count(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_429_with_retry_after_fails_over_to_the_other_key_and_cools_the_first_down() {
    let (mock, proxy) = claude_setup(&[ANT_KEY, ANT_KEY_2]).await;
    mock.push(Script::Respond {
        status: 429,
        headers: vec![
            ("content-type", "application/json".into()),
            ("retry-after", "30".into()),
        ],
        chunks: vec![(
            Duration::ZERO,
            Bytes::from(anthropic_error("rate_limit_error", "slow down")),
        )],
    });
    let response = post(&proxy, "/v1/messages", STREAM_BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), anthropic_stream(TEXT, 3).concat());
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("2"));
    let keys: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| header(r, "x-api-key").unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1], "failed over to the other key");
    let health = health(&proxy).await;
    let cooling: Vec<&Value> = health["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "cooling_down")
        .collect();
    assert_eq!(cooling.len(), 1, "{health}");
    assert_eq!(cooling[0]["reason"], "rate_limited", "{health}");
    assert_eq!(cooling[0]["provider"], "claude", "{health}");
    assert!(cooling[0]["cooldown_remaining_s"].as_u64().unwrap() > 20);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_529_and_an_in_band_overloaded_error_before_content_fail_over_invisibly() {
    let overloaded = anthropic_error("overloaded_error", "Overloaded");
    for first in [
        Script::json(529, &overloaded),
        event_stream(&[
            anthropic_stream(TEXT, 3)[0].clone(),
            sse_event("ping", json!({})),
            sse_event(
                "error",
                json!({"error":{"type":"overloaded_error","message":"Overloaded"}}),
            ),
        ]),
    ] {
        let label = first.label();
        let (mock, proxy) = claude_setup(&[ANT_KEY, ANT_KEY_2]).await;
        mock.push(first);
        let response = post(&proxy, "/v1/messages", STREAM_BODY, &[]).await;
        assert_eq!(response.status, 200, "{label}: {}", response.text());
        assert_eq!(
            response.text(),
            anthropic_stream(TEXT, 3).concat(),
            "{label}: only the second attempt's bytes"
        );
        assert_eq!(response.header("x-codex-proxy-attempts"), Some("2"));
        let requests = mock.requests();
        assert_ne!(
            header(&requests[0], "x-api-key"),
            header(&requests[1], "x-api-key"),
            "{label}"
        );
        // The server's fault: a soft cooldown on that key.
        let health = health(&proxy).await;
        assert!(
            health["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["reason"] == "server_error"),
            "{label}: {health}"
        );
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn after_commit_a_cut_ends_the_stream_with_an_anthropic_error_event_and_an_upstream_error_event_passes_as_is(
) {
    let events = anthropic_stream(TEXT, 3);
    let committed: Vec<String> = events[..4].to_vec();
    // A cut: the bytes so far, then the proxy's Anthropic `error` event, then an abort.
    let (mock, proxy) = claude_setup(&[ANT_KEY]).await;
    mock.push(Script::CutAfter {
        status: 200,
        headers: vec![("content-type", "text/event-stream".into())],
        chunks: committed
            .iter()
            .map(|e| (Duration::ZERO, Bytes::from(e.clone())))
            .collect(),
    });
    let response = post(&proxy, "/v1/messages", STREAM_BODY, &[]).await;
    assert_eq!(response.status, 200);
    let text = response.text();
    let prefix = committed.concat();
    assert!(text.starts_with(&prefix), "{text}");
    let rest = &text[prefix.len()..];
    let data = rest
        .strip_prefix("event: error\ndata: ")
        .and_then(|r| r.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not one Anthropic error event: {rest:?}"));
    let error: Value = serde_json::from_str(data).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "api_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("upstream_"),
        "{error}"
    );
    assert_eq!(mock.count(), 1, "no retry after commit");
    proxy.shutdown().await;

    // The upstream's own error event after commit is its answer: relayed as it is.
    let (mock, proxy) = claude_setup(&[ANT_KEY]).await;
    let mut with_error = committed.clone();
    with_error.push(sse_event(
        "error",
        json!({"error":{"type":"overloaded_error","message":"Overloaded"}}),
    ));
    mock.push(event_stream(&with_error));
    let response = post(&proxy, "/v1/messages", STREAM_BODY, &[]).await;
    assert_eq!(response.text(), with_error.concat());
    assert_eq!(mock.count(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_stream_split_at_awkward_byte_boundaries_arrives_unchanged_and_its_usage_is_counted() {
    let text = "h\u{e9}llo \u{2713} \u{1F600}\r\n";
    let whole = anthropic_stream(text, 5).concat();
    let bytes = whole.as_bytes();
    let sizes = [1usize, 2, 3, 5, 7, 64];
    let (mock, proxy) = claude_setup(&[ANT_KEY]).await;
    for size in sizes {
        mock.push(Script::Respond {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            chunks: bytes
                .chunks(size)
                .map(|c| (Duration::ZERO, Bytes::copy_from_slice(c)))
                .collect(),
        });
        let response = post(&proxy, "/v1/messages", STREAM_BODY, &[]).await;
        assert_eq!(response.status, 200, "split {size}");
        assert!(response.complete, "split {size}");
        assert_eq!(response.text(), whole, "split {size}");
    }
    // Usage from message_start (input 12 + cache reads 3 + cache writes 2) and message_delta
    // (output 7), per request, under the provider's name.
    let n = sizes.len() as f64;
    let metrics = metrics_with(&proxy, |m| {
        sample(m, "provider=\"claude\"", "kind=\"input\"") >= 17.0 * n
    })
    .await;
    assert_eq!(
        sample(&metrics, "provider=\"claude\"", "kind=\"input\""),
        17.0 * n
    );
    assert_eq!(
        sample(&metrics, "provider=\"claude\"", "kind=\"cached_input\""),
        3.0 * n
    );
    assert_eq!(
        sample(&metrics, "provider=\"claude\"", "kind=\"output\""),
        7.0 * n
    );
    assert!(
        metrics.contains("codex_proxy_upstream_attempts_total{provider=\"claude\",account=\"0\",outcome=\"served\"}"),
        "{metrics}"
    );
    proxy.shutdown().await;
}

/// `/metrics` once `done` holds for it (requests are counted when their body ends), or after
/// the time limit.
async fn metrics_with(proxy: &TestProxy, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let metrics = raw::exchange(proxy.addr, &raw::get(proxy.addr, "/metrics", &[]), LIMIT)
            .await
            .text();
        if done(&metrics) || tokio::time::Instant::now() > deadline {
            return metrics;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of the `codex_proxy_tokens_total` samples whose labels contain both parts.
fn sample(metrics: &str, a: &str, b: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("codex_proxy_tokens_total{") && l.contains(a) && l.contains(b))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn three_providers_in_one_process_keep_affinity_and_failover_inside_each() {
    let a = MockUpstream::start("from a").await;
    let b = MockUpstream::start("from b").await;
    let claude = MockUpstream::start_anthropic(ANT_KEY, TEXT).await;
    let mut b_provider = provider("b", ProviderKind::Openai, &b.base_url, &["gpt-b*"]);
    b_provider.headers = vec![(
        http::HeaderName::from_static("http-referer"),
        http::HeaderValue::from_static("https://example.test/app"),
    )];
    let input = [
        key_line("a", "sk-a-one"),
        key_line("a", "sk-a-two"),
        key_line("b", "sk-b-one"),
        key_line("b", "sk-b-two"),
        key_line("claude", ANT_KEY),
    ]
    .concat();
    let proxy = start(
        vec![
            provider("a", ProviderKind::Openai, &a.base_url, &["gpt-a*"]),
            b_provider,
            provider(
                "claude",
                ProviderKind::Anthropic,
                &claude.base_url,
                &["claude-*"],
            ),
        ],
        &input,
    )
    .await;
    let responses = |model: &str, session: &str| {
        format!(r#"{{"model":"{model}","input":"hi","prompt_cache_key":"{session}"}}"#)
    };
    // Each model reaches its own provider only.
    for _ in 0..3 {
        let r = post(&proxy, "/v1/responses", &responses("gpt-a-1", "s-a"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = post(&proxy, "/v1/responses", &responses("gpt-b-1", "s-b"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = post(&proxy, "/v1/messages", JSON_BODY, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((a.count(), b.count(), claude.count()), (3, 3, 1));
    // Affinity: one conversation stays on one key of its provider.
    let a_keys: Vec<String> = a.authorizations();
    assert!(a_keys.iter().all(|k| k == &a_keys[0]), "{a_keys:?}");
    assert!(a_keys[0] == "Bearer sk-a-one" || a_keys[0] == "Bearer sk-a-two");
    let b_keys = b.authorizations();
    assert!(b_keys.iter().all(|k| k == &b_keys[0]), "{b_keys:?}");
    assert!(b_keys[0].starts_with("Bearer sk-b-"));
    // A provider's fixed headers go on its requests only.
    assert!(b
        .requests()
        .iter()
        .all(|r| header(r, "http-referer") == Some("https://example.test/app")));
    assert!(a
        .requests()
        .iter()
        .all(|r| header(r, "http-referer").is_none()));

    // Failover: a 429 on a's key moves to a's other key, never to b.
    a.push(Script::json(
        429,
        r#"{"error":{"message":"slow down","type":"rate_limit_exceeded","code":"rate_limit_exceeded"}}"#,
    ));
    let r = post(&proxy, "/v1/responses", &responses("gpt-a-1", "s-a"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-codex-proxy-attempts"), Some("2"));
    let a_keys = a.authorizations();
    assert_eq!(a_keys.len(), 5);
    assert_ne!(a_keys[3], a_keys[4]);
    assert!(a_keys[4].starts_with("Bearer sk-a-"));
    assert_eq!(b.count(), 3, "b never saw a's request");
    // /health names each account's provider.
    let providers: Vec<Value> = health(&proxy).await["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["provider"].clone())
        .collect();
    assert_eq!(
        providers,
        vec![
            json!("a"),
            json!("a"),
            json!("b"),
            json!("b"),
            json!("claude")
        ]
    );
    proxy.shutdown().await;
}

#[test]
fn credentials_for_an_unknown_provider_or_a_file_provider_without_any_are_refused_by_name() {
    use clap::Parser;
    let config = |providers: Vec<ProviderConfig>| {
        let args = codex_proxy::cli::Args::try_parse_from(["codex-proxy"]).unwrap();
        let mut config = Config::from_args(args, None).unwrap();
        let implicit = std::mem::take(&mut config.providers);
        config.providers = providers;
        config.providers.extend(implicit);
        config
    };
    let credentials = |input: &str| {
        let mut intake = codex_proxy::secret::IntakeBuffer::new(1 << 20).unwrap();
        intake.read_slice(input.as_bytes()).unwrap();
        intake.into_credentials().unwrap()
    };
    let claude = || {
        provider(
            "claude",
            ProviderKind::Anthropic,
            "https://api.anthropic.com/v1",
            &["claude-*"],
        )
    };
    // Key lines are the implicit openai's: fine without a file, and beside one.
    let lines = credentials("sk-plain-key\n");
    assert!(codex_proxy::check_credentials(&config(Vec::new()), &lines).is_ok());
    assert!(
        codex_proxy::check_credentials(
            &config(Vec::new()),
            &credentials(&key_line("openai", "sk-x"))
        )
        .is_ok(),
        "{{\"provider\":\"openai\",\"api_key\":…}} is valid"
    );
    let missing = codex_proxy::check_credentials(&config(vec![claude()]), &lines).unwrap_err();
    assert!(missing.contains("`claude`"), "{missing}");
    let unknown = codex_proxy::check_credentials(
        &config(vec![claude()]),
        &credentials(&key_line("nowhere", "sk-secret-value-1")),
    )
    .unwrap_err();
    assert!(unknown.contains("`nowhere`"), "{unknown}");
    assert!(!unknown.contains("sk-secret-value-1"), "{unknown}");
    // A ChatGPT login cannot be an Anthropic provider's credential.
    let wrong = codex_proxy::check_credentials(
        &config(vec![claude()]),
        &credentials(r#"{"provider":"claude","access_token":"at-secret-1"}"#),
    )
    .unwrap_err();
    assert!(
        wrong.contains("`claude`") && !wrong.contains("at-secret-1"),
        "{wrong}"
    );
    assert!(codex_proxy::check_credentials(
        &config(vec![claude()]),
        &credentials(&key_line("claude", ANT_KEY))
    )
    .is_ok());
}

#[tokio::test]
async fn models_lists_each_providers_exact_names_and_aliases_never_globs() {
    let mock = MockUpstream::start_anthropic(ANT_KEY, TEXT).await;
    let claude = provider(
        "claude",
        ProviderKind::Anthropic,
        &mock.base_url,
        &["claude-*", "claude-sonnet-4-5", "claude-opus-4-1"],
    );
    let ids = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let with_alias = |config: &mut Config| {
        config.models = codex_proxy::translate::models::ModelTable::from_json(
            br#"{"aliases":{"sonnet":"claude-sonnet-4-5"}}"#,
        )
        .unwrap();
    };
    // Only the Anthropic provider has keys: its names and the alias, no OpenAI table.
    let proxy = start_with(
        vec![claude.clone()],
        &key_line("claude", ANT_KEY),
        with_alias,
    )
    .await;
    let list = raw::exchange(
        proxy.addr,
        &raw::get(
            proxy.addr,
            "/v1/models",
            &[("anthropic-version", "2023-06-01")],
        ),
        LIMIT,
    )
    .await
    .json();
    assert_eq!(
        ids(&list),
        vec!["claude-sonnet-4-5", "claude-opus-4-1", "sonnet"]
    );
    assert_eq!(list["has_more"], false);
    proxy.shutdown().await;
    // With an OpenAI key too, the known table and its suffix variants come first.
    let input = format!(
        "{}{}",
        key_line("openai", "sk-openai-1"),
        key_line("claude", ANT_KEY)
    );
    let proxy = start_with(vec![claude], &input, with_alias).await;
    let list = raw::exchange(proxy.addr, &raw::get(proxy.addr, "/v1/models", &[]), LIMIT)
        .await
        .json();
    let all = ids(&list);
    let builtin = ids(&codex_proxy::translate::models::ModelTable::builtin().list(false));
    assert_eq!(&all[..builtin.len()], &builtin[..]);
    assert_eq!(
        &all[builtin.len()..],
        &["claude-sonnet-4-5", "claude-opus-4-1", "sonnet"]
    );
    assert!(all.iter().all(|id| !id.contains('*')));
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_auth_dir_account_object_may_name_its_provider() {
    use std::os::unix::fs::PermissionsExt;
    let mock = MockUpstream::start_anthropic(ANT_KEY, TEXT).await;
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).unwrap();
    let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("cp-it-providers-{name}"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = dir.join("claude.json");
    std::fs::write(&file, key_line("claude", ANT_KEY)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let claude = provider(
        "claude",
        ProviderKind::Anthropic,
        &mock.base_url,
        &["claude-*"],
    );
    let dir_arg = dir.to_str().unwrap().to_string();
    let proxy = TestProxy::start_tweaked(
        "http://127.0.0.1:9/v1",
        &["--auth-dir", &dir_arg],
        b"",
        |config| {
            let implicit = std::mem::take(&mut config.providers);
            config.providers = vec![claude];
            config.providers.extend(implicit);
        },
    )
    .await;
    let response = post(&proxy, "/v1/messages", JSON_BODY, &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(header(&mock.requests()[0], "x-api-key"), Some(ANT_KEY));
    assert_eq!(health(&proxy).await["accounts"][0]["provider"], "claude");
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
