//! What the real binary tells its operator, asserted on its own log lines and messages: why and
//! where an upstream connection failed, bytes actually sent to the client, a stream cut by
//! shutdown, the upstreams named at start-up, a key given as an argument (never echoed),
//! `--user` without root, a server-info file left behind after a privilege drop.

use std::time::Duration;

use crate::mock::{event, MockUpstream, Script};
use crate::raw::{exchange, get, post, RawResponse};
use crate::spawn::{canary, is_root, run_to_exit, start, temp_dir, Launch, Running};

const LIMIT: Duration = Duration::from_secs(10);

fn launch(args: &[&str], stdin: &[u8]) -> Launch<'static> {
    Launch {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: Box::leak(stdin.to_vec().into_boxed_slice()),
        as_uid: None,
        env: vec![],
    }
}

/// The JSON log lines (`--log-format json`) whose message is `message`.
fn log_lines(stderr: &str, message: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == message)
        .collect()
}

/// Waits until the proxy has logged `n` request lines (each is written when its body ends).
async fn request_lines(proxy: &Running, n: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let lines = log_lines(&proxy.stderr(), "request");
        if lines.len() >= n || tokio::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_connect_failure_is_logged_with_its_host_and_error_never_the_key() {
    let key = canary();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = temp_dir("connect-failure");
    let upstream = format!("http://127.0.0.1:{port}/v1");
    let proxy = start(
        launch(
            &["--upstream-url", &upstream, "--log-format", "json"],
            format!("{key}\n").as_bytes(),
        ),
        &dir,
    );
    let response = exchange(
        proxy.addr,
        &post(
            proxy.addr,
            "/v1/responses",
            r#"{"model":"m","input":"hi"}"#,
            &[],
        ),
        LIMIT,
    )
    .await;
    assert_eq!(response.status, 502, "{}", response.text());
    let (status, stderr) = proxy.terminate();
    assert!(status.success(), "{stderr}");
    let failures = log_lines(&stderr, "upstream connection failed to connect");
    assert!(!failures.is_empty(), "{stderr}");
    for line in &failures {
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["host"], format!("127.0.0.1:{port}"), "{line}");
        let error = line["error"].as_str().unwrap_or_default();
        assert!(error.contains("Connection refused"), "{line}");
    }
    assert!(!stderr.contains(&key[8..]), "the key leaked: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_out_counts_what_the_client_received() {
    let mock = MockUpstream::start("counted").await;
    // 1: an upstream error relayed as it is.
    mock.push(Script::json(
        400,
        r#"{"error":{"message":"bad request","type":"invalid_request_error","param":null,"code":"bad"}}"#,
    ));
    // 2 and 3 use the mock's default answers: a JSON response, then an event stream that a
    // Chat Completions client gets aggregated into one JSON answer.
    let dir = temp_dir("bytes-out");
    let proxy = start(
        launch(
            &["--upstream-url", &mock.base_url, "--log-format", "json"],
            b"sk-valid\n",
        ),
        &dir,
    );
    let addr = proxy.addr;
    let mut responses: Vec<RawResponse> = Vec::new();
    for request in [
        post(addr, "/v1/responses", r#"{"model":"m","input":"hi"}"#, &[]),
        post(
            addr,
            "/v1/responses",
            r#"{"model":"m","input":"hi","stream":true}"#,
            &[],
        ),
        post(
            addr,
            "/v1/chat/completions",
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            &[],
        ),
        get(addr, "/health", &[]),
    ] {
        let response = exchange(addr, &request, LIMIT).await;
        assert!(response.complete, "{}", response.text());
        responses.push(response);
    }
    assert_eq!(responses[0].status, 400);
    let lines = request_lines(&proxy, responses.len()).await;
    assert_eq!(lines.len(), responses.len(), "{}", proxy.stderr());
    for (line, response) in lines.iter().zip(&responses) {
        assert_eq!(line["status"], response.status, "{line}");
        assert_eq!(
            line["bytes_out"],
            response.body.len(),
            "{line} for {}",
            response.text()
        );
    }
    // Each line names the provider of the account that answered (none for /health).
    let providers: Vec<&serde_json::Value> = lines.iter().map(|l| &l["provider"]).collect();
    assert_eq!(
        providers,
        [
            &serde_json::json!("openai"),
            &serde_json::json!("openai"),
            &serde_json::json!("openai"),
            &serde_json::Value::Null
        ],
        "{}",
        proxy.stderr()
    );
    let _ = proxy.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_by_shutdown_is_logged_as_a_warning() {
    let mock = MockUpstream::start("unused").await;
    let (script, gate) = Script::gated_sse();
    mock.push(script);
    let dir = temp_dir("shutdown-cut");
    let proxy = start(
        launch(
            &[
                "--upstream-url",
                &mock.base_url,
                "--log-format",
                "json",
                "--drain-timeout",
                "0.3",
            ],
            b"sk-valid\n",
        ),
        &dir,
    );
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(&post(
            proxy.addr,
            "/v1/responses",
            r#"{"model":"m","input":"hi","stream":true}"#,
            &[],
        ))
        .await
        .unwrap();
    gate.send(event::created().into()).unwrap();
    gate.send(event::delta("first words").into()).unwrap();
    let mut seen = Vec::new();
    assert!(crate::raw::read_until(&mut stream, &mut seen, b"first words", LIMIT).await);
    let (status, stderr) = proxy.terminate();
    assert!(status.success(), "{stderr}");
    let lines = log_lines(&stderr, "request");
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(lines[0]["level"], "WARN", "{stderr}");
    assert_eq!(lines[0]["failure"], "Shutdown", "{stderr}");
    drop(gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_startup_line_names_every_upstream_the_accounts_use() {
    // One auth.json: an API key and a ChatGPT login, so both upstreams are in use.
    let auth = br#"{"OPENAI_API_KEY":"sk-valid-key","tokens":{"access_token":"at-test","refresh_token":"rt-test","account_id":"acct-1"}}"#;
    let dir = temp_dir("startup-line");
    let proxy = start(
        launch(
            &[
                "--upstream-url",
                "http://127.0.0.1:9/v1",
                "--chatgpt-base-url",
                "http://127.0.0.1:9/backend-api/codex",
                "--oauth-token-url",
                "http://127.0.0.1:9/oauth/token",
                "--log-format",
                "json",
            ],
            auth,
        ),
        &dir,
    );
    let (status, stderr) = proxy.terminate();
    assert!(status.success(), "{stderr}");
    let lines = log_lines(&stderr, "listening on 127.0.0.1");
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(
        lines[0]["upstreams"],
        "http://127.0.0.1:9/v1 (1 API key), http://127.0.0.1:9/backend-api/codex \
         (1 ChatGPT account; token refresh at http://127.0.0.1:9/oauth/token)",
        "{stderr}"
    );
    for secret in ["sk-valid-key", "at-test", "rt-test", "acct-1"] {
        assert!(!stderr.contains(secret), "{secret} leaked: {stderr}");
    }
}

#[test]
fn a_key_given_as_an_argument_is_refused_and_never_echoed() {
    for shape in ["{key}", "--api-key={key}", "--port={key}"] {
        let key = canary();
        let arg = shape.replace("{key}", &key);
        let out = std::process::Command::new(crate::spawn::BIN)
            .arg(&arg)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{arg}: {stderr}");
        let tail = &key[key.len() - 12..];
        assert!(
            !stdout.contains(tail) && !stderr.contains(tail),
            "{shape} echoed: {stdout}{stderr}"
        );
        if shape == "{key}" {
            assert!(stderr.contains("standard input"), "{stderr}");
        }
    }
}

#[test]
fn user_without_root_says_root_is_needed_before_reading_stdin() {
    if !is_root() {
        eprintln!("skipped: needs root to start the proxy as another user");
        return;
    }
    let (status, stderr) = run_to_exit(Launch {
        args: vec!["--user".into(), "nobody".into()],
        stdin: b"",
        as_uid: Some(65534),
        env: vec![],
    });
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--user nobody needs root"), "{stderr}");
    // Control: the same launch without --user gets as far as stdin (empty: exit 3).
    let (status, stderr) = run_to_exit(Launch {
        args: vec![],
        stdin: b"",
        as_uid: Some(65534),
        env: vec![],
    });
    assert_eq!(status.code(), Some(3), "{stderr}");
}

#[test]
fn a_server_info_file_left_behind_after_the_drop_is_logged() {
    if !is_root() {
        eprintln!("skipped: needs root to drop privileges");
        return;
    }
    // The directory is root's (0755): after --user nobody the proxy cannot remove the file.
    let dir = temp_dir("info-left");
    let proxy = start(
        launch(&["--user", "nobody", "--log-format", "json"], b"sk-valid\n"),
        &dir,
    );
    let info_path = proxy.info_path.clone();
    let (status, stderr) = proxy.terminate();
    assert!(status.success(), "{stderr}");
    assert!(info_path.exists());
    let lines = log_lines(
        &stderr,
        "server-info file not removed (remove it by hand: no proxy listens on its port)",
    );
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(lines[0]["level"], "WARN");
    assert_eq!(lines[0]["path"], info_path.display().to_string());
    assert!(lines[0]["error"]
        .as_str()
        .unwrap_or_default()
        .contains("Permission denied"));
    // Control: without the drop the file is removed, and nothing is said about it.
    let dir = temp_dir("info-removed");
    let proxy = start(launch(&["--log-format", "json"], b"sk-valid\n"), &dir);
    let info_path = proxy.info_path.clone();
    let (_, stderr) = proxy.terminate();
    assert!(!info_path.exists());
    assert!(!stderr.contains("server-info file not removed"), "{stderr}");
}

#[test]
fn help_names_the_credential_formats_the_routes_and_the_readme() {
    let help = crate::spawn::help_text();
    for needle in [
        "standard input",
        "one API key per line",
        "auth.json",
        "JSON lines",
        "/v1/responses",
        "/v1/responses/compact",
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/models",
        "/health",
        "/shutdown",
        "README",
        "openai_base_url",
        "--skip-git-repo-check",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}
