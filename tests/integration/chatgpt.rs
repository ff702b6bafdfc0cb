//! ChatGPT accounts: the Codex backend and its body profile, token refresh against a mock
//! token endpoint (single-flight, after a 401, permanent failures), and `--auth-dir`
//! (write-back before reuse, rescans, files never touched on failure).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::mock::{responses_stream, MockUpstream, Recorded, Script};
use crate::proxy::TestProxy;
use crate::raw::{self, RawResponse};

const LIMIT: Duration = Duration::from_secs(15);
const STREAM_BODY: &str = r#"{"model":"gpt-5","stream":true,"input":"hi"}"#;

/// Base64url without padding, as JWT segments are written (shared with `upstream_caps`).
pub(crate) fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut acc = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            acc |= u32::from(*b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(A[((acc >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An unsigned access token (the Codex client reads these claims unverified too).
fn jwt(tag: &str, expires_in: i64) -> String {
    let claims = json!({
        "exp": unix_now() + expires_in,
        "https://api.openai.com/auth": {"chatgpt_account_id": "acct-from-claims"},
        "tag": tag,
    });
    format!(
        "{}.{}.sig-{tag}",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    )
}

fn account(access: &str, refresh: &str) -> String {
    json!({"access_token": access, "refresh_token": refresh, "account_id": "acct-test-1", "email": "someone@example.com"})
        .to_string()
}

fn token_answer(access: &str, refresh: &str) -> Script {
    Script::json(
        200,
        &json!({"access_token": access, "refresh_token": refresh, "expires_in": 3600}).to_string(),
    )
}

struct Setup {
    upstream: MockUpstream,
    tokens: MockUpstream,
    proxy: TestProxy,
}

async fn setup(stdin: &str, extra: &[&str]) -> Setup {
    let upstream = MockUpstream::start("from the codex backend").await;
    let tokens = MockUpstream::start("unused").await;
    let backend = format!("http://{}/backend-api/codex", upstream.addr);
    let token_url = format!("http://{}/oauth/token", tokens.addr);
    let mut flags = vec![
        "--chatgpt-base-url",
        &backend,
        "--oauth-token-url",
        &token_url,
    ];
    flags.extend_from_slice(extra);
    let proxy = TestProxy::start_with_input(&upstream.base_url, &flags, stdin.as_bytes()).await;
    Setup {
        upstream,
        tokens,
        proxy,
    }
}

async fn send(proxy: &TestProxy, body: &str) -> RawResponse {
    raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, "/v1/responses", body, &[]),
        LIMIT,
    )
    .await
}

fn header<'a>(r: &'a Recorded, name: &str) -> Option<&'a str> {
    r.headers.get(name).map(|v| v.to_str().unwrap())
}

fn health(proxy: &TestProxy) -> Value {
    serde_json::to_value(
        proxy
            .state
            .upstream
            .pool
            .health(tokio::time::Instant::now()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_chatgpt_account_goes_to_the_codex_backend_with_its_account_id_and_profile() {
    let access = jwt("a", 3600);
    let s = setup(&account(&access, "rt-1"), &[]).await;
    let body = r#"{"model":"gpt-5","stream":true,"temperature":0.3,"max_output_tokens":99,
                   "input":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#;
    let response = send(&s.proxy, body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.text().contains("response.completed"));
    let recorded = s.upstream.requests();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(r.target, "/backend-api/codex/responses");
    assert_eq!(
        header(r, "authorization"),
        Some(format!("Bearer {access}").as_str())
    );
    assert_eq!(header(r, "chatgpt-account-id"), Some("acct-test-1"));
    let sent: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        sent,
        json!({"model":"gpt-5","stream":true,"store":false,"instructions":"",
               "input":[{"role":"developer","content":"be brief"},{"role":"user","content":"hi"}]})
    );
    assert_eq!(s.tokens.count(), 0, "a fresh token needs no refresh");
    let h = health(&s.proxy);
    assert_eq!(h["accounts"][0]["kind"], "chatgpt");
    for secret in [
        access.as_str(),
        "rt-1",
        "acct-test-1",
        "someone@example.com",
    ] {
        assert!(!h.to_string().contains(secret));
    }
}

#[tokio::test]
async fn a_zstd_body_that_already_fits_goes_to_the_backend_byte_for_byte() {
    let s = setup(&account(&jwt("z", 3600), "rt-z"), &[]).await;
    let json = br#"{"model":"gpt-5","stream":true,"store":false,"instructions":"","input":"hi"}"#;
    let compressed = zstd::encode_all(&json[..], 3).unwrap();
    let mut request = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-encoding: zstd\r\ncontent-length: {}\r\n\r\n",
        s.proxy.addr,
        compressed.len()
    )
    .into_bytes();
    request.extend_from_slice(&compressed);
    let response = raw::exchange(s.proxy.addr, &request, LIMIT).await;
    assert_eq!(response.status, 200);
    let r = &s.upstream.requests()[0];
    assert_eq!(r.body, Bytes::from(compressed));
    assert_eq!(header(r, "content-encoding"), Some("zstd"));

    // One that needs fitting is decoded, fitted and sent uncompressed.
    let json = br#"{"model":"gpt-5","stream":true,"temperature":1,"input":"hi"}"#;
    let compressed = zstd::encode_all(&json[..], 3).unwrap();
    let mut request = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-encoding: zstd\r\ncontent-length: {}\r\n\r\n",
        s.proxy.addr,
        compressed.len()
    )
    .into_bytes();
    request.extend_from_slice(&compressed);
    assert_eq!(
        raw::exchange(s.proxy.addr, &request, LIMIT).await.status,
        200
    );
    let r = &s.upstream.requests()[1];
    assert_eq!(header(r, "content-encoding"), None);
    let sent: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        sent,
        json!({"model":"gpt-5","stream":true,"store":false,"instructions":"","input":"hi"})
    );
}

#[tokio::test]
async fn a_401_refreshes_the_token_and_retries_on_the_same_account() {
    let old = jwt("old", 3600);
    let new = jwt("new", 3600);
    let s = setup(&account(&old, "rt-old"), &[]).await;
    s.upstream.push_for(
        &format!("Bearer {old}"),
        Script::json(
            401,
            r#"{"error":{"message":"token expired","code":"token_expired"}}"#,
        ),
    );
    s.tokens.push(token_answer(&new, "rt-new"));
    let response = send(&s.proxy, STREAM_BODY).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("2"));
    assert_eq!(
        s.upstream.authorizations(),
        vec![format!("Bearer {old}"), format!("Bearer {new}")]
    );
    let refresh = &s.tokens.requests()[0];
    assert_eq!(refresh.target, "/oauth/token");
    let sent: Value = serde_json::from_slice(&refresh.body).unwrap();
    assert_eq!(sent["grant_type"], "refresh_token");
    assert_eq!(sent["refresh_token"], "rt-old");
    assert_eq!(sent["client_id"], "app_EMoamEEZ73f0CkXaXp7hrann");
    assert_eq!(health(&s.proxy)["accounts"][0]["state"], "active");

    // The rotated refresh token is the one used next time.
    s.upstream.push_for(
        &format!("Bearer {new}"),
        Script::json(401, r#"{"error":{"message":"expired again"}}"#),
    );
    s.tokens.push(token_answer(&jwt("third", 3600), ""));
    assert_eq!(send(&s.proxy, STREAM_BODY).await.status, 200);
    let sent: Value = serde_json::from_slice(&s.tokens.requests()[1].body).unwrap();
    assert_eq!(sent["refresh_token"], "rt-new");
}

#[tokio::test]
async fn a_second_401_after_a_refresh_disables_the_account() {
    let old = jwt("old", 3600);
    let new = jwt("new", 3600);
    let s = setup(&account(&old, "rt-old"), &[]).await;
    for token in [&old, &new] {
        s.upstream.push_for(
            &format!("Bearer {token}"),
            Script::json(401, r#"{"error":{"message":"no"}}"#),
        );
    }
    s.tokens.push(token_answer(&new, "rt-new"));
    let response = send(&s.proxy, STREAM_BODY).await;
    assert_eq!(response.status, 401);
    let h = health(&s.proxy);
    assert_eq!(h["accounts"][0]["state"], "disabled");
    assert_eq!(h["accounts"][0]["reason"], "unauthorized");
    assert_eq!(s.tokens.count(), 1, "refreshed once, not again");
}

#[tokio::test]
async fn fifty_concurrent_requests_on_an_expiring_account_cause_exactly_one_refresh() {
    let old = jwt("expiring", 30);
    let new = jwt("fresh", 3600);
    let s = setup(&account(&old, "rt-once"), &[]).await;
    s.tokens.push(Script::DelayHeaders(
        Duration::from_millis(300),
        Box::new(token_answer(&new, "rt-rotated")),
    ));
    let proxy = &s.proxy;
    let results = futures_join(proxy, 50).await;
    assert!(
        results.iter().all(|r| r.status == 200),
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(s.tokens.count(), 1);
    let authorizations = s.upstream.authorizations();
    assert_eq!(authorizations.len(), 50);
    assert!(
        authorizations.iter().all(|a| *a == format!("Bearer {new}")),
        "no request used the expiring token"
    );
}

async fn futures_join(proxy: &TestProxy, n: usize) -> Vec<RawResponse> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            raw::exchange(
                addr,
                &raw::post(addr, "/v1/responses", STREAM_BODY, &[]),
                LIMIT,
            )
            .await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// A private directory for `--auth-dir`, removed afterwards.
struct AuthDir(PathBuf);

impl AuthDir {
    fn new() -> AuthDir {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).unwrap();
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let path = std::env::temp_dir().join(format!("cp-it-auth-{name}"));
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        AuthDir(path)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        let temp = self.0.join(format!(".{name}.writing"));
        std::fs::write(&temp, text).unwrap();
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&temp, &path).unwrap();
        path
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for AuthDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn a_rotated_token_is_persisted_in_the_auth_dir_before_it_is_used() {
    let dir = AuthDir::new();
    let old = jwt("file-old", 30);
    let new = jwt("file-new", 3600);
    let file = dir.write(
        "codex-auth.json",
        &json!({"OPENAI_API_KEY": null, "tokens": {"access_token": old, "refresh_token": "rt-file-old", "id_token": "x.y.z", "account_id": "acct-file"}, "last_refresh": "2026-01-01T00:00:00Z"}).to_string(),
    );
    let s = setup("", &["--auth-dir", dir.path()]).await;
    s.tokens.push(token_answer(&new, "rt-file-new"));
    let (gated, release) = Script::gated_sse();
    s.upstream.push(gated);
    let addr = s.proxy.addr;
    let request = tokio::spawn(async move {
        raw::exchange(
            addr,
            &raw::post(addr, "/v1/responses", STREAM_BODY, &[]),
            LIMIT,
        )
        .await
    });
    assert!(s.upstream.wait_requests(1, LIMIT).await);
    // The upstream holds the first request that uses the new token: the file has it already.
    let doc = read_json(&file);
    assert_eq!(doc["tokens"]["access_token"], new.as_str());
    assert_eq!(doc["tokens"]["refresh_token"], "rt-file-new");
    assert_eq!(doc["tokens"]["id_token"], "x.y.z", "other fields are kept");
    assert_eq!(doc["tokens"]["account_id"], "acct-file");
    assert_ne!(doc["last_refresh"], "2026-01-01T00:00:00Z");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(s.upstream.authorizations(), vec![format!("Bearer {new}")]);
    assert_eq!(
        header(&s.upstream.requests()[0], "chatgpt-account-id"),
        Some("acct-file")
    );
    for chunk in responses_stream("ok", 1) {
        release.send(Bytes::from(chunk)).unwrap();
    }
    drop(release);
    assert_eq!(request.await.unwrap().status, 200);
    assert_eq!(
        std::fs::read_dir(&dir.0)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| !e
                .file_name()
                .to_string_lossy()
                .starts_with(".codex-proxy.lock"))
            .count(),
        1,
        "no temporary file left, nothing renamed away"
    );
}

#[tokio::test]
async fn a_permanent_refresh_failure_disables_the_account_without_touching_its_file() {
    let dir = AuthDir::new();
    let text = json!({"access_token": jwt("doomed", 30), "refresh_token": "rt-reused", "account_id": "acct-d"}).to_string();
    let file = dir.write("doomed.json", &text);
    let before = std::fs::metadata(&file).unwrap();
    let s = setup("", &["--auth-dir", dir.path()]).await;
    s.tokens.push(Script::json(
        400,
        r#"{"error":{"message":"Your refresh token has already been used to generate a new access token. Please try signing in again.","code":"refresh_token_reused"}}"#,
    ));
    let response = send(&s.proxy, STREAM_BODY).await;
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(response.json()["error"]["code"], "pool_unavailable");
    assert_eq!(s.upstream.count(), 0);
    let h = health(&s.proxy);
    assert_eq!(h["status"], "unavailable");
    assert_eq!(h["accounts"][0]["state"], "disabled");
    assert_eq!(h["accounts"][0]["reason"], "refresh_failed");
    let after = std::fs::metadata(&file).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (after.ino(), after.mtime_nsec()),
        (before.ino(), before.mtime_nsec())
    );

    // A second request does not ask the token endpoint again.
    assert_eq!(send(&s.proxy, STREAM_BODY).await.status, 503);
    assert_eq!(s.tokens.count(), 1);
}

async fn wait_accounts(proxy: &TestProxy, n: usize) -> bool {
    for _ in 0..100 {
        if health(proxy)["accounts"].as_array().unwrap().len() == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn auth_dir_files_added_changed_and_removed_are_picked_up() {
    let dir = AuthDir::new();
    let s = setup(
        "sk-test-stdin-key",
        &["--auth-dir", dir.path(), "--auth-dir-interval", "0.1"],
    )
    .await;
    assert_eq!(health(&s.proxy)["accounts"].as_array().unwrap().len(), 1);
    let first = jwt("added", 3600);
    let file = dir.write("a.json", &account(&first, "rt-a"));
    // A file open to others is refused (and logged), not loaded.
    let open = dir.0.join("open.json");
    std::fs::write(&open, account(&jwt("open", 3600), "rt-open")).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(wait_accounts(&s.proxy, 2).await, "{}", health(&s.proxy));
    let h = health(&s.proxy);
    assert_eq!(h["accounts"][1]["kind"], "chatgpt");
    assert_eq!(h["accounts"][1]["index"], 1);

    // A changed file replaces the account's tokens in place.
    let second = jwt("changed", 3600);
    dir.write("a.json", &account(&second, "rt-b"));
    let mut replaced = false;
    for _ in 0..100 {
        let token = s.proxy.state.upstream.pool.account(1).unwrap().token();
        if token.secret() == Some(second.as_bytes()) {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(replaced);

    std::fs::remove_file(&file).unwrap();
    assert!(wait_accounts(&s.proxy, 1).await, "{}", health(&s.proxy));
    assert_eq!(health(&s.proxy)["accounts"][0]["kind"], "api_key");
}

#[tokio::test]
async fn invalid_encrypted_content_is_retried_once_on_the_same_account_without_the_ciphertext() {
    let mock = MockUpstream::start("after stripping").await;
    let proxy =
        TestProxy::start_with_key(&mock.base_url, &[], "sk-test-enc-A\nsk-test-enc-B").await;
    let body = r#"{"model":"gpt-5","stream":true,"input":[{"type":"reasoning","summary":[],"encrypted_content":"gAAAA-minted-elsewhere"},{"role":"user","content":"hi"}]}"#;
    mock.push(Script::json(
        400,
        r#"{"error":{"message":"The encrypted content could not be verified.","type":"invalid_request_error","code":"invalid_encrypted_content"}}"#,
    ));
    let response = send(&proxy, body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        header(&requests[0], "authorization"),
        header(&requests[1], "authorization"),
        "never another account"
    );
    let retried: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(retried["input"], json!([{"role":"user","content":"hi"}]));
    // Nothing against the account.
    assert_eq!(health(&proxy)["status"], "ok");

    // A second invalid_encrypted_content is relayed.
    mock.push(Script::json(
        400,
        r#"{"error":{"message":"bad","code":"invalid_encrypted_content"}}"#,
    ));
    mock.push(Script::json(
        400,
        r#"{"error":{"message":"bad","code":"invalid_encrypted_content"}}"#,
    ));
    let response = send(&proxy, body).await;
    assert_eq!(response.status, 400);
    assert_eq!(mock.count(), 4);
}

#[tokio::test]
async fn an_aggregated_chatgpt_answer_is_counted_under_provider_chatgpt_without_its_id_or_email() {
    let access = jwt("a", 3600);
    let s = setup(&account(&access, "rt-1"), &[]).await;
    // Not streamed by the client; the backend only streams: the proxy aggregates.
    let response = send(&s.proxy, r#"{"model":"gpt-5","input":"hi"}"#).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["usage"]["input_tokens"], 10);
    let line = "codex_proxy_tokens_total{provider=\"chatgpt\",model=\"mock-model\"";
    let mut text = String::new();
    for _ in 0..100 {
        let metrics = raw::exchange(
            s.proxy.addr,
            &raw::get(s.proxy.addr, "/metrics", &[]),
            LIMIT,
        )
        .await;
        text = metrics.text();
        if text.contains(line) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counted: Vec<&str> = text.lines().filter(|l| l.starts_with(line)).collect();
    assert_eq!(counted.len(), 4, "{text}");
    assert!(
        counted
            .iter()
            .any(|l| l.contains("kind=\"input\"") && l.ends_with(" 10")),
        "{text}"
    );
    assert!(
        counted
            .iter()
            .any(|l| l.contains("kind=\"output\"") && l.ends_with(" 5")),
        "{text}"
    );
    assert!(text.contains(
        "codex_proxy_upstream_attempts_total{provider=\"chatgpt\",account=\"0\",outcome=\"served\"} 1"
    ));
    for secret in [
        "acct-test-1",
        "acct-from-claims",
        "someone@example.com",
        "rt-1",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(!text.contains(&access));
}
