//! Exit codes and messages for problems found at start-up (README.md, "Exit codes").

use crate::spawn::{run_to_exit, temp_dir, Launch};

fn exit(args: &[&str], stdin: &[u8]) -> (i32, String) {
    let (status, stderr) = run_to_exit(Launch {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin,
        as_uid: None,
        env: vec![],
    });
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn help_and_version_exit_zero() {
    let (status, _) = run_to_exit(Launch {
        args: vec!["--version".into()],
        stdin: b"",
        as_uid: None,
        env: vec![],
    });
    assert_eq!(status.code(), Some(0));
    let out = std::process::Command::new(crate::spawn::BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--port",
        "--server-info",
        "--http-shutdown",
        "--upstream-url",
        "--upstream-ca",
        "--upstream-proxy",
        "--openai-organization",
        "--openai-project",
        "--user",
        "--client-token",
        "--info-owner",
        "--connect-timeout",
        "--header-timeout",
        "--idle-timeout",
        "--request-timeout",
        "--max-attempts",
        "--max-body-bytes",
        "--max-buffered-bytes",
        "--max-connections",
        "--max-stdin-bytes",
        "--drain-timeout",
        "--log-level",
        "--log-format",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn configuration_errors_exit_2() {
    for args in [
        vec!["--no-such-flag"],
        vec!["--upstream-url", "http://api.openai.com/v1"],
        vec!["--upstream-url", "not a url"],
        vec!["--client-token"],
        vec!["--user", "no-such-user-for-codex-proxy"],
        vec!["--upstream-ca", "/nonexistent/ca.pem"],
        vec!["--max-attempts", "0"],
        vec!["--header-timeout", "-1"],
        vec!["--models", "/nonexistent/models.json"],
        vec![
            "--chatgpt-base-url",
            "http://chatgpt.example/backend-api/codex",
        ],
        vec!["--oauth-token-url", "ftp://auth.example/token"],
        // World-writable: never a place for account files.
        vec!["--auth-dir", "/tmp"],
        vec!["--auth-dir", "/nonexistent/accounts"],
    ] {
        let (code, stderr) = exit(&args, b"sk-valid\n");
        assert_eq!(code, 2, "{args:?}: {stderr}");
    }
}

#[test]
fn bad_stdin_exits_3_and_never_echoes_the_bytes() {
    let cases: [(&[u8], &str); 7] = [
        (b"", "no credentials"),
        (b"\n\n", "no credentials"),
        (b"sk-secret value-SHOULDNOTECHO\n", "invalid character"),
        (b"sk-one\nsk-bad key\n", "line 2: invalid character"),
        (
            b"{\"OPENAI_API_KEY\":\"sk-SHOULDNOTECHO\",\"tokens\":{\"access_token\":12345}}",
            "account 1 (line 1, column",
        ),
        (
            b"[{\"email\":\"SHOULDNOTECHO@example.com\"}]",
            "account 1: no credential",
        ),
        (
            b"{\"OPENAI_API_KEY\":\"sk bad SHOULDNOTECHO\"}",
            "OPENAI_API_KEY",
        ),
    ];
    for (input, expected) in cases {
        let (code, stderr) = exit(&[], input);
        assert_eq!(code, 3, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            !stderr.contains("SHOULDNOTECHO") && !stderr.contains("sk-"),
            "{stderr}"
        );
    }
    let big = vec![b'a'; 5000];
    let (code, stderr) = exit(&["--max-stdin-bytes", "4096"], &big);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("larger than --max-stdin-bytes"), "{stderr}");
}

#[test]
fn unwritable_server_info_and_busy_port_exit_4() {
    let (code, stderr) = exit(
        &["--server-info", "/nonexistent-dir/info.json"],
        b"sk-valid\n",
    );
    assert_eq!(code, 4, "{stderr}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let (code, stderr) = exit(&["--port", &port], b"sk-valid\n");
    assert_eq!(code, 4, "{stderr}");
    drop(temp_dir("unused"));
}

#[test]
fn sigterm_right_after_the_server_info_appears_still_exits_0_and_removes_the_file() {
    for round in 0..10 {
        let dir = temp_dir("early-term");
        let proxy = crate::spawn::start(
            Launch::with_stdin(
                b"sk-valid
",
            ),
            &dir,
        );
        let info = proxy.info_path.clone();
        let (status, logs) = proxy.terminate();
        assert_eq!(status.code(), Some(0), "round {round}: {logs}");
        assert!(!info.exists(), "round {round}: server-info removed");
    }
}

#[test]
fn the_listener_is_bound_to_loopback_only() {
    let dir = temp_dir("loopback");
    let proxy = crate::spawn::start(
        Launch::with_stdin(
            b"sk-valid
",
        ),
        &dir,
    );
    let port = format!(":{:04X}", proxy.addr.port());
    let listening: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, and state 0A = LISTEN
            (fields.len() > 3 && fields[1].ends_with(&port) && fields[3] == "0A")
                .then(|| fields[1].to_string())
        })
        .collect();
    assert_eq!(
        listening,
        vec![format!("0100007F{port}")],
        "only 127.0.0.1 listens on the port"
    );
    // Control: the port answers on 127.0.0.1 ...
    assert!(std::net::TcpStream::connect(proxy.addr).is_ok());
    let (status, _) = proxy.terminate();
    assert!(status.success());
}

#[test]
fn a_server_info_file_holding_the_token_is_0600_and_owned_by_the_info_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !crate::spawn::is_root() {
        eprintln!("skipped: needs root to give the file to another user");
        return;
    }
    for (args, env) in [
        (vec!["--client-token", "--info-owner", "nobody"], vec![]),
        (
            vec!["--client-token"],
            vec![("SUDO_UID", "65534".to_string())],
        ),
    ] {
        let dir = temp_dir("token-owner");
        let launch = Launch {
            args: args.iter().map(|s| s.to_string()).collect(),
            stdin: b"sk-valid\n",
            as_uid: None,
            env,
        };
        let proxy = crate::spawn::start(launch, &dir);
        let meta = std::fs::metadata(&proxy.info_path).unwrap();
        assert_eq!(meta.uid(), 65534, "{args:?}");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{args:?}");
        let info: serde_json::Value = serde_json::from_str(&proxy.info_text).unwrap();
        assert_eq!(info["token"].as_str().map(str::len), Some(64));
        let (status, _) = proxy.terminate();
        assert!(status.success());
    }
    // Control: without a token the file is 0644 and stays the proxy's own.
    let dir = temp_dir("no-token-owner");
    let proxy = crate::spawn::start(Launch::with_stdin(b"sk-valid\n"), &dir);
    let meta = std::fs::metadata(&proxy.info_path).unwrap();
    assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (0, 0o644));
    assert!(!proxy.info_text.contains("token"));
    let _ = proxy.terminate();
}
