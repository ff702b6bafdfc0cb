//! A standalone mock Responses upstream on 127.0.0.1, for `scripts/demo`, `scripts/bench` and
//! the Codex CLI end-to-end test. Offline; no credentials checked.
//!
//! Usage: mock_upstream [--port N] [--text TEXT] [--deltas N] [--gap-ms N]
//! Prints `PORT` (one line) on stdout once listening; runs until killed or stdin closes if
//! `--exit-on-stdin-eof` is given.
//!
//! Answers POST /v1/responses with an event stream (when the body says `"stream": true`) or
//! JSON, saying TEXT in N deltas, GAP milliseconds apart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mock.rs"]
mod mock;

use std::time::Duration;

use mock::MockUpstream;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::process::ExitCode {
    const USAGE: &str = "usage: mock_upstream [--port N] [--text TEXT] [--deltas N] [--gap-ms N] \
                         [--exit-on-stdin-eof]";
    let usage_error = |problem: &str| {
        eprintln!("mock_upstream: {problem}\n{USAGE}");
        std::process::ExitCode::from(2)
    };
    let mut port: u16 = 0;
    let mut text =
        String::from("Hello from the offline mock upstream, streamed through codex-proxy.");
    let mut deltas = 8usize;
    let mut gap_ms = 0u64;
    let mut exit_on_eof = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let number = |value: Option<String>| value.and_then(|v| v.parse::<u64>().ok());
        match arg.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                return std::process::ExitCode::SUCCESS;
            }
            "--port" => match number(args.next()).and_then(|n| u16::try_from(n).ok()) {
                Some(n) => port = n,
                None => return usage_error("--port needs a port number"),
            },
            "--text" => match args.next() {
                Some(t) => text = t,
                None => return usage_error("--text needs a value"),
            },
            "--deltas" => match number(args.next()) {
                Some(n) => deltas = n as usize,
                None => return usage_error("--deltas needs a count"),
            },
            "--gap-ms" => match number(args.next()) {
                Some(n) => gap_ms = n,
                None => return usage_error("--gap-ms needs a number of milliseconds"),
            },
            "--exit-on-stdin-eof" => exit_on_eof = true,
            other => return usage_error(&format!("unknown argument {other}")),
        }
    }
    let mock = MockUpstream::start_on(port, &text, deltas, Duration::from_millis(gap_ms)).await;
    println!("{}", mock.addr.port());
    let _ = std::io::Write::flush(&mut std::io::stdout());
    if exit_on_eof {
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await
        .ok();
    } else {
        std::future::pending::<()>().await;
    }
    std::process::ExitCode::SUCCESS
}
