//! The examples and the asset generator, run as a user runs them: `cargo run --example`.
//!
//! - every example answers `--help` with its usage on stdout and exit 0 (no panic);
//! - `gen_assets DIR` writes a man page that names every flag of `codex-proxy` and bash, zsh
//!   and fish completions that know them;
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

/// Every long flag of `codex-proxy`, from its clap definition.
fn flags() -> Vec<String> {
    Args::command()
        .get_arguments()
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

// === mock_upstream --wire chat ===

/// `mock_upstream --wire chat` serves a keyless Chat Completions server in the asked style
/// (the demo and the end-to-end scripts point a `chat` provider at it).
#[test]
fn mock_upstream_serves_the_chat_wire() {
    use std::io::{BufRead, Read, Write};
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
        .args([
            "--wire",
            "chat",
            "--style",
            "think",
            "--text",
            "Hi from chat",
        ])
        .args(["--deltas", "1"])
        .arg("--exit-on-stdin-eof")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
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
