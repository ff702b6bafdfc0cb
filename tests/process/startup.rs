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
    let help = crate::spawn::help_text();
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
        "--allow-user",
        "--config",
        "--state-dir",
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
        vec![
            "--allow-user",
            "root",
            "--allow-user",
            "no-such-user-for-codex-proxy",
        ],
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
fn config_file_problems_exit_2_naming_the_file_the_line_and_the_key() {
    let dir = temp_dir("config");
    let file = dir.join("policy.toml");
    let path = file.to_str().unwrap();
    let cases: [(&str, &[&str]); 8] = [
        (
            "[users.root]\nmodels = [\"gpt-5*\"]\nmax_concurrency = 2\n",
            &["line 3", "max_concurrency"],
        ),
        (
            "[users.root]\nmax_concurrent = 1\n\n[providers.local]\nkind = \"chat\"\n\
             keyless = true\ndefault = true\n",
            &[
                "line 4",
                "providers.local: kind = \"chat\" needs a base_url",
            ],
        ),
        (
            "[users.\"*\"]\nmax_concurrent = 2\ntoken_budget = 100000\n",
            &["line 3", "token_budget", "needs `budget_window`"],
        ),
        (
            "[users.root]\nbudget_window = \"1d\"\n",
            &["line 2", "budget_window", "needs `token_budget`"],
        ),
        (
            "[users.root]\ntoken_budget = 10\nbudget_window = \"1w\"\n",
            &["line 3", "budget_window must be"],
        ),
        (
            "[users.no-such-user-for-codex-proxy]\nmodels = [\"*\"]\n",
            &["line 1", "no-such-user-for-codex-proxy", "no such user"],
        ),
        (
            "[users.root]\nmodels = [\"gpt-[5\"]\n",
            &["line 2", "unclosed"],
        ),
        (
            "[aliases]\n\"a\" = \"b\"\n\"b\" = \"gpt-5\"\n",
            &["line 2", "[aliases]", "another alias"],
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&file, text).unwrap();
        let (code, stderr) = exit(&["--config", path], b"sk-valid\n");
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(
            stderr.contains(&format!("--config {path}: ")),
            "{text}: {stderr}"
        );
        for needle in expected {
            assert!(stderr.contains(needle), "{text}: lacks {needle}: {stderr}");
        }
    }
    // A valid file starts; together with --models it is a usage error.
    std::fs::write(&file, "[users.root]\nmax_concurrent = 1\n").unwrap();
    let (code, stderr) = exit(&["--config", path, "--models", path], b"sk-valid\n");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--models"), "{stderr}");
    let (code, stderr) = exit(&["--config", "/nonexistent/policy.toml"], b"sk-valid\n");
    assert_eq!(code, 2, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_stdin_exits_3_and_never_echoes_the_bytes() {
    let cases: [(&[u8], &str); 10] = [
        (
            b"{\"provider\":\"nowhere\",\"api_key\":\"sk-SHOULDNOTECHO\"}",
            "unknown provider `nowhere`",
        ),
        (
            b"{\"provider\":\"chatgpt\",\"api_key\":\"sk-SHOULDNOTECHO\"}",
            "provider `chatgpt` does not take this kind of credential",
        ),
        (
            b"{\"provider\":\"bad name SHOULDNOTECHO\",\"api_key\":\"k\"}",
            "field `provider` is not valid",
        ),
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

/// The `--models` example the README shows (the JSON block after "`--models FILE` adds").
fn readme_models_example() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = &readme[readme
        .find("`--models FILE` adds")
        .expect("README --models section")..];
    let block = &after[after.find("```json\n").unwrap() + "```json\n".len()..];
    block[..block.find("```").unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_models_example_loads_and_its_aliases_reach_the_upstream() {
    let example = readme_models_example();
    assert!(example.contains("gpt-5.4-mini"), "{example}");
    let dir = temp_dir("readme-models");
    let file = dir.join("models.json");
    std::fs::write(&file, &example).unwrap();
    let mock = crate::mock::MockUpstream::start("aliased").await;
    let proxy = crate::spawn::start(
        Launch {
            args: vec![
                "--upstream-url".into(),
                mock.base_url.clone(),
                "--models".into(),
                file.display().to_string(),
            ],
            stdin: b"sk-valid\n",
            as_uid: None,
            env: vec![],
        },
        &dir,
    );
    let body = r#"{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let response = crate::raw::exchange(
        proxy.addr,
        &crate::raw::post(proxy.addr, "/v1/messages", body, &[]),
        std::time::Duration::from_secs(10),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let sent: serde_json::Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(sent["model"], "gpt-5.4-mini");
    let (status, logs) = proxy.terminate();
    assert_eq!(status.code(), Some(0), "{logs}");
}

/// What identifies a file and what it holds: content, inode, mode, owner.
fn file_snapshot(path: &std::path::Path) -> Option<(Vec<u8>, u64, u32, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    let content = std::fs::read(path).ok()?;
    Some((content, meta.ino(), meta.mode(), meta.uid(), meta.gid()))
}

#[test]
fn a_symlinked_directory_in_the_server_info_path_is_exit_4_and_its_target_untouched() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};
    if !crate::spawn::is_root() {
        eprintln!("skipped: needs root to play the root launcher and a client user");
        return;
    }
    // The client (nobody) owns a home; root owns a directory with a file worth protecting.
    let home = temp_dir("client-home");
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let victim_dir = temp_dir("victim");
    let victim = victim_dir.join("cp.json");
    std::fs::write(&victim, b"root's precious file\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o640)).unwrap();
    // As the client: ~/.config -> the victim directory.
    let link = home.join(".config");
    std::os::unix::fs::symlink(&victim_dir, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let before = file_snapshot(&victim).unwrap();

    let info_path = link.join("cp.json");
    let mut child = std::process::Command::new(crate::spawn::BIN)
        .args(["--server-info", &info_path.display().to_string()])
        .args(["--client-token", "--info-owner", "nobody"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"sk-valid\n").unwrap();
    }
    // Watch the victim while the proxy starts (and, on a vulnerable build, runs).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut while_running = file_snapshot(&victim);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        while_running = file_snapshot(&victim);
        if while_running.as_ref() != Some(&before) || Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = status.unwrap_or_else(|| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        child.wait().unwrap()
    });
    let after = file_snapshot(&victim);
    let mut stderr = String::new();
    {
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
    }
    // (Compared whole, reported without the content: a replaced file would hold a token.)
    let shown =
        |s: &Option<(Vec<u8>, u64, u32, u32, u32)>| s.as_ref().map(|s| (s.1, s.2, s.3, s.4));
    assert!(
        while_running.as_ref() == Some(&before),
        "the victim file changed while the proxy ran: (inode, mode, uid, gid) {:?} -> {:?}",
        shown(&Some(before.clone())),
        shown(&while_running)
    );
    assert!(
        after.as_ref() == Some(&before),
        "the victim file changed by exit: (inode, mode, uid, gid) {:?} -> {:?}",
        shown(&Some(before.clone())),
        shown(&after)
    );
    let leftovers: Vec<_> = std::fs::read_dir(&victim_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("cp.json")]);
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert!(stderr.contains(".config"), "names the link: {stderr}");

    // Control: the same launch through a real directory of the client's works.
    let real = home.join(".config-real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::chown(&real, Some(65534), Some(65534)).unwrap();
    let launch = Launch {
        args: ["--client-token", "--info-owner", "nobody"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        stdin: b"sk-valid\n",
        as_uid: None,
        env: vec![],
    };
    let proxy = crate::spawn::start(launch, &real);
    let written = proxy.info_path.clone();
    let (status, logs) = proxy.terminate();
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(!written.exists(), "removed on exit");
}
