//! A canary key piped in never comes back out: not in logs (at trace level), responses,
//! error bodies or the server-info file — while the upstream does receive it.

use std::time::Duration;

use crate::mock::{responses_stream, MockUpstream, Script};
use crate::raw::{exchange, get, post, RawResponse};
use crate::spawn::{canary, start, temp_dir, Launch};

fn leaks<'a>(haystack: &str, key: &'a str) -> Option<&'a str> {
    // The key itself, a long prefix and suffix of it (freed chunks keep partial tails), and a
    // masked echo's visible ends.
    let needles = [key, &key[..16], &key[key.len() - 12..]];
    needles.into_iter().find(|n| haystack.contains(n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_key_never_appears_in_logs_responses_or_server_info() {
    let key = canary();
    let mock = MockUpstream::start("canary test answer").await;
    let masked = format!("{}****{}", &key[..8], &key[key.len() - 4..]);
    mock.push(Script::sse(
        &responses_stream("streamed", 3),
        Duration::ZERO,
    ));
    mock.push(Script::json(200, &crate::mock::responses_json("plain")));
    mock.push(Script::CutAfter {
        status: 200,
        headers: vec![("content-type", "text/event-stream".into())],
        chunks: vec![(
            Duration::ZERO,
            bytes::Bytes::from(responses_stream("cut", 2)[2].clone()),
        )],
    });
    mock.push(Script::json(
        401,
        &format!(r#"{{"error":{{"message":"Incorrect API key provided: {key}. Also {masked}.","type":"invalid_request_error","code":"invalid_api_key"}}}}"#),
    ));
    let dir = temp_dir("canary");
    let proxy = start(
        Launch {
            args: vec![
                "--upstream-url".into(),
                mock.base_url.clone(),
                "--log-level".into(),
                "trace".into(),
                "--http-shutdown".into(),
                "--max-body-bytes".into(),
                "1000".into(),
            ],
            stdin: format!("{key}\n").as_bytes(),
            as_uid: None,
            env: vec![],
        },
        &dir,
    );
    let addr = proxy.addr;
    let limit = Duration::from_secs(10);
    let client_auth = [
        ("authorization", "Bearer client-supplied-value"),
        ("x-api-key", "client-key"),
    ];
    let requests: Vec<Vec<u8>> = vec![
        post(
            addr,
            "/v1/responses",
            r#"{"model":"m","stream":true,"input":"hi"}"#,
            &client_auth,
        ),
        post(addr, "/v1/responses", r#"{"model":"m","input":"hi"}"#, &[]),
        post(
            addr,
            "/v1/responses",
            r#"{"model":"m","stream":true,"input":"cut"}"#,
            &[],
        ),
        post(
            addr,
            "/v1/responses",
            r#"{"model":"m","input":"bad key"}"#,
            &[],
        ),
        post(addr, "/v1/responses", &"x".repeat(2000), &[]),
        post(addr, "/v1/responses", "not json", &[]),
        post(addr, "/v1/responses?x=1", "{}", &[]),
        post(addr, "/v1/unknown", "{}", &[]),
        get(addr, "/health", &[]),
    ];
    let mut responses: Vec<RawResponse> = Vec::new();
    for request in &requests {
        responses.push(exchange(addr, request, limit).await);
    }
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    // The 401 comes last among the forwarded ones: it disables the only key (an API key has
    // nothing to refresh).
    assert_eq!(statuses, vec![200, 200, 200, 401, 413, 400, 403, 404, 200]);
    assert!(
        responses[3].text().contains("[REDACTED]"),
        "{}",
        responses[3].text()
    );

    // Control: the upstream did receive the key, once per forwarded request.
    let auth: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| {
            r.headers
                .get("authorization")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(auth, vec![format!("Bearer {key}"); 4]);

    let info = proxy.info_text.clone();
    let info_path = proxy.info_path.clone();
    let shutdown = exchange(addr, &get(addr, "/shutdown", &[]), limit).await;
    assert_eq!(shutdown.status, 200);
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{status}: {logs}");
    assert!(!info_path.exists(), "server-info removed on exit");
    assert!(logs.contains("request"), "request lines are logged: {logs}");

    for (what, text) in std::iter::once(("logs", logs.clone()))
        .chain(std::iter::once(("server-info", info)))
        .chain(
            responses
                .iter()
                .map(|r| ("response", format!("{:?}{}", r.headers, r.text()))),
        )
    {
        assert_eq!(leaks(&text, &key), None, "canary leaked in {what}: {text}");
        assert!(!text.contains("Bearer sk-"), "bearer value in {what}");
        assert!(
            !text.contains("client-supplied-value"),
            "client header value in {what}"
        );
    }
}

#[test]
fn harness_check_a_planted_canary_is_found() {
    let key = canary();
    let planted = format!("some log line with {}…", &key[..20]);
    assert!(leaks(&planted, &key).is_some());
}

/// Reads `/proc/PID/FILE` as the test's user (root in CI).
fn proc_file(pid: u32, file: &str) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default())
        .into_owned()
}

#[test]
fn a_key_left_in_the_environment_by_the_launcher_is_wiped_from_proc_environ() {
    if !crate::spawn::is_root() {
        eprintln!("skipped: /proc/PID/environ of a non-dumpable process is readable only by root");
        return;
    }
    let key = canary();
    // Control: an ordinary process started the same way shows the variable.
    let mut control = std::process::Command::new("sleep")
        .arg("30")
        .env("OPENAI_API_KEY", &key)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        proc_file(control.id(), "environ").contains(&key),
        "harness check: environ shows the key"
    );
    let _ = control.kill();
    let _ = control.wait();

    let dir = temp_dir("environ");
    let proxy = start(
        Launch {
            args: vec![],
            stdin: format!("{key}\n").as_bytes(),
            as_uid: None,
            env: vec![
                ("OPENAI_API_KEY", key.clone()),
                ("LD_PRELOAD", String::new()),
            ],
        },
        &dir,
    );
    let environ = proc_file(proxy.pid, "environ");
    assert!(!environ.is_empty(), "root can read it");
    assert!(
        !environ.contains(&key[8..]),
        "the key is wiped from the initial environment block"
    );
    assert!(!proc_file(proxy.pid, "cmdline").contains(&key[8..]));
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{status}: {logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_request_fields() {
    let mock = MockUpstream::start("json logs").await;
    let dir = temp_dir("json-logs");
    let launch = Launch {
        args: vec![
            "--upstream-url".into(),
            mock.base_url.clone(),
            "--log-format".into(),
            "json".into(),
        ],
        stdin: b"sk-json-log-test\n",
        as_uid: None,
        env: vec![],
    };
    let proxy = start(launch, &dir);
    let body = r#"{"model":"m","input":"hi"}"#;
    let response = exchange(
        proxy.addr,
        &post(proxy.addr, "/v1/responses", body, &[]),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(response.status, 200);
    let (status, logs) = proxy.terminate();
    assert!(status.success());
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let request = lines
        .iter()
        .find(|l| l["message"] == "request")
        .expect("a request line");
    assert_eq!(request["route"], "responses");
    assert_eq!(request["status"], 200);
    assert_eq!(request["upstream_status"], 200);
    assert_eq!(request["attempts"], 1);
    assert_eq!(request["bytes_in"], body.len());
    assert!(request["duration_ms"].as_f64().is_some());
}
