//! The examples and the asset generator, run as a user runs them: `cargo run --example`.
//!
//! - every example answers `--help` with its usage on stdout and exit 0 (no panic);
//! - `gen_assets DIR` writes a man page that names every flag of `codex-proxy` and bash, zsh
//!   and fish completions that know them.
//! - `mock_upstream --wire anthropic` speaks the Messages API (key and version checks, streamed
//!   and whole answers, a tool call, token counts); the default wire is still Responses.
//! - `mock_upstream --wire chat` answers a Chat Completions stream, and refuses an
//!   `Authorization` header as a keyless server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;
use codex_proxy::cli::Args;

/// `cargo run --example NAME -- ARGS` in this package.
fn run_example(name: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--quiet", "--locked", "--example", name, "--"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn examples() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    names
}

#[test]
fn every_example_answers_help_with_its_usage() {
    let names = examples();
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        let out = run_example(&name, &["--help"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name} --help: {stderr}");
        assert!(stdout.contains("usage:"), "{name} --help printed: {stdout}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

/// Every long flag `codex-proxy --help` shows, from its clap definition.
fn flags() -> Vec<String> {
    // Hidden flags (the bench-only switch) are left out of --help and so of the man page.
    Args::command()
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect()
}

fn temp_dir() -> PathBuf {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).unwrap();
    let dir = std::env::temp_dir().join(format!("cp-assets-{:016x}", u64::from_ne_bytes(raw)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn gen_assets_writes_a_man_page_naming_every_flag_and_completions() {
    let dir = temp_dir();
    let out = run_example("gen_assets", &[dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flags = flags();
    assert!(flags.len() >= 28, "{flags:?}");
    let man = std::fs::read_to_string(dir.join("man/codex-proxy.1")).unwrap();
    assert!(
        man.starts_with(".ie") || man.contains(".TH codex-proxy 1"),
        "{man}"
    );
    for flag in &flags {
        // roff escapes each '-' as '\-'.
        let escaped = flag.replace('-', "\\-");
        assert!(man.contains(&escaped), "the man page lacks {flag}");
    }
    for file in ["codex-proxy.bash", "_codex-proxy", "codex-proxy.fish"] {
        let text = std::fs::read_to_string(dir.join("completions").join(file)).unwrap();
        for flag in &flags {
            let name = flag.trim_start_matches('-');
            assert!(text.contains(name), "{file} lacks {flag}");
        }
    }
    // The bash completion loads in bash and registers itself.
    let bash = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p codex-proxy",
            dir.join("completions/codex-proxy.bash").display()
        ))
        .output()
        .unwrap();
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A `mock_upstream` started with `args` (and `--exit-on-stdin-eof`): the child, whose stdin
/// this test holds, and its port.
fn start_mock(args: &[&str]) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "--quiet",
            "--locked",
            "--example",
            "mock_upstream",
            "--",
        ])
        .args(args)
        .arg("--exit-on-stdin-eof")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().parse().unwrap())
}

/// One HTTP/1.1 POST on a fresh connection: the status and the body (the mock answers
/// streams chunked; the chunk framing is removed).
fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, mut rest) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, rest.to_owned());
    }
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    (status, body)
}

/// The `data:` of each event, in order, as JSON.
fn sse_events(stream: &str) -> Vec<serde_json::Value> {
    stream
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (kind, data) = e.split_once("\ndata: ").unwrap();
            let data: serde_json::Value = serde_json::from_str(data).unwrap();
            assert_eq!(kind, format!("event: {}", data["type"].as_str().unwrap()));
            data
        })
        .collect()
}

#[test]
fn the_mock_upstream_speaks_the_anthropic_messages_wire() {
    use serde_json::{json, Value};
    let (mut mock, port) = start_mock(&[
        "--wire",
        "anthropic",
        "--api-key",
        "sk-ant-mock",
        "--text",
        "Hello from Claude",
        "--deltas",
        "2",
    ]);
    let key = ("x-api-key", "sk-ant-mock");
    let version = ("anthropic-version", "2023-06-01");
    let hi = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
    let error =
        |kind: &str, message: &str| json!({"type":"error","error":{"type":kind,"message":message}});
    // The key: only the one given, only as x-api-key; then the version.
    for headers in [
        &[version][..],
        &[("x-api-key", "sk-ant-other"), version][..],
        &[("authorization", "Bearer sk-ant-mock"), version][..],
    ] {
        let (status, body) = post(port, "/v1/messages", headers, hi);
        assert_eq!(status, 401, "{headers:?}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body, error("authentication_error", "invalid x-api-key"));
    }
    let (status, body) = post(port, "/v1/messages", &[key], hi);
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        error(
            "invalid_request_error",
            "anthropic-version: header is required"
        )
    );
    let (status, _) = post(
        port,
        "/v1/messages",
        &[key, version],
        r#"{"model":"m","messages":[]}"#,
    );
    assert_eq!(status, 400, "max_tokens is required");

    // A whole message.
    let (status, body) = post(port, "/v1/messages", &[key, version], hi);
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["content"],
        json!([{"type":"text","text":"Hello from Claude"}])
    );
    assert_eq!(
        (&body["model"], &body["stop_reason"], &body["type"]),
        (
            &json!("claude-sonnet-4-5"),
            &json!("end_turn"),
            &json!("message")
        )
    );
    assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0);

    // The same streamed (with Claude Code's query string): the event sequence of the API.
    let streamed = hi.replacen('{', r#"{"stream":true,"#, 1);
    let (status, body) = post(port, "/v1/messages?beta=true", &[key, version], &streamed);
    assert_eq!(status, 200);
    let events = sse_events(&body);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let text: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello from Claude");
    assert_eq!(events[6]["delta"]["stop_reason"], "end_turn");
    assert_eq!(events[6]["usage"]["output_tokens"], 3);

    // Tools asked for: a tool_use with the schema's required fields; its result: quoted.
    let tools = r#""tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city"]}}]"#;
    let ask = format!(
        r#"{{"model":"claude-x","max_tokens":64,"stream":true,{tools},"messages":[{{"role":"user","content":"What does get_weather say?"}}]}}"#
    );
    let (status, body) = post(port, "/v1/messages", &[key, version], &ask);
    assert_eq!(status, 200);
    let events = sse_events(&body);
    assert_eq!(
        events[1]["content_block"],
        json!({"type":"tool_use","id":"toolu_mock_1","name":"get_weather","input":{}})
    );
    let input: String = events
        .iter()
        .filter_map(|e| e["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        json!({"city":"mock"})
    );
    assert_eq!(events[events.len() - 2]["delta"]["stop_reason"], "tool_use");
    let answer = format!(
        r#"{{"model":"claude-x","max_tokens":64,{tools},"messages":[{{"role":"user","content":"What does get_weather say?"}},{{"role":"assistant","content":[{{"type":"tool_use","id":"toolu_mock_1","name":"get_weather","input":{{"city":"mock"}}}}]}},{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_mock_1","content":[{{"type":"text","text":"sunny"}}]}}]}}]}}"#
    );
    let (status, body) = post(port, "/v1/messages", &[key, version], &answer);
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["content"],
        json!([{"type":"text","text":"The tool returned: sunny"}])
    );
    // Tools present but not asked for: text.
    let plain = ask.replace("What does get_weather say?", "hi");
    let (_, body) = post(port, "/v1/messages", &[key, version], &plain);
    let text: String = sse_events(&body)
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello from Claude");

    let (status, body) = post(port, "/v1/messages/count_tokens", &[key, version], hi);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"input_tokens": hi.len() / 4})
    );
    let (status, _) = post(port, "/v1/responses", &[key, version], hi);
    assert_eq!(status, 404);
    drop(mock.stdin.take());
    assert!(mock.wait().unwrap().success());

    // The default wire is unchanged: Responses, no key checked.
    let (mut mock, port) = start_mock(&["--text", "plain"]);
    let (status, body) = post(
        port,
        "/v1/responses",
        &[],
        r#"{"model":"gpt-5","input":"hi"}"#,
    );
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["output"][0]["content"][0]["text"], "plain");
    drop(mock.stdin.take());
    assert!(mock.wait().unwrap().success());
}

// === mock_upstream --wire chat ===

/// `mock_upstream --wire chat` serves a keyless Chat Completions server in the asked style
/// (the demo and the end-to-end scripts point a `chat` provider at it).
#[test]
fn mock_upstream_serves_the_chat_wire() {
    use std::io::{Read, Write};
    let (mut child, port) = start_mock(&[
        "--wire",
        "chat",
        "--style",
        "think",
        "--text",
        "Hi from chat",
        "--deltas",
        "1",
    ]);
    let ask = |auth: &str| {
        let body = r#"{"model":"qwen3","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             {auth}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let answer = ask("");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("<think>") && answer.contains("data: [DONE]"),
        "{answer}"
    );
    assert!(answer.contains("\"content\":\"Hi from chat\""), "{answer}");
    let refused = ask("authorization: Bearer x\r\n");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}
