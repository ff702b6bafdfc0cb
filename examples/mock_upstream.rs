//! A standalone mock upstream on 127.0.0.1, for `scripts/demo`, `scripts/bench` and the
//! end-to-end tests. Offline.
//!
//! Usage: mock_upstream [--port N] [--text TEXT] [--deltas N] [--gap-ms N]
//!                      [--wire responses|anthropic] [--api-key KEY] [--record FILE]
//!                      [--exit-on-stdin-eof]
//! Prints `PORT` (one line) on stdout once listening; runs until killed or stdin closes if
//! `--exit-on-stdin-eof` is given.
//!
//! `--wire responses` (the default): answers POST /v1/responses with an event stream (when the
//! body says `"stream": true`) or JSON, saying TEXT in N deltas, GAP milliseconds apart; no
//! credentials checked.
//!
//! `--wire anthropic`: the Anthropic Messages API (`tests/common/mock_messages.rs`):
//! POST /v1/messages (streamed or not, a `tool_use` when the request's tools are asked for)
//! and /v1/messages/count_tokens; 401 `authentication_error` unless `x-api-key` is the
//! `--api-key` given (required with this wire), 400 unless `anthropic-version` is sent.
//!
//! `--record FILE` appends one JSON line per request: what arrived (`method`, `path`,
//! `headers`, `body`) and the exact bytes answered (`status`, `answer`), so an end-to-end test
//! can compare what its client received with what the mock sent (`MockUpstream::journal_to`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mock.rs"]
mod mock;

use std::time::Duration;

use mock::messages::{Answers, MessagesConfig};
use mock::MockUpstream;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::process::ExitCode {
    const USAGE: &str = "usage: mock_upstream [--port N] [--text TEXT] [--deltas N] [--gap-ms N] \
                         [--wire responses|anthropic] [--api-key KEY] [--record FILE] \
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
    let mut anthropic = false;
    let mut api_key: Option<String> = None;
    let mut record: Option<std::path::PathBuf> = None;
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
            "--wire" => match args.next().as_deref() {
                Some("responses") => anthropic = false,
                Some("anthropic") => anthropic = true,
                _ => return usage_error("--wire needs `responses` or `anthropic`"),
            },
            "--api-key" => match args.next() {
                Some(k) if !k.is_empty() => api_key = Some(k),
                _ => return usage_error("--api-key needs a value"),
            },
            "--record" => match args.next() {
                Some(path) => record = Some(path.into()),
                None => return usage_error("--record needs a file"),
            },
            other => return usage_error(&format!("unknown argument {other}")),
        }
    }
    let gap = Duration::from_millis(gap_ms);
    let mock = if anthropic {
        let Some(api_key) = api_key else {
            return usage_error("--wire anthropic needs --api-key (the x-api-key it accepts)");
        };
        let config = MessagesConfig {
            keys: vec![api_key],
            text,
            deltas,
            gap,
            answers: Answers::Decided,
        };
        MockUpstream::start_messages(port, config).await
    } else {
        if api_key.is_some() {
            return usage_error("--api-key is for --wire anthropic");
        }
        MockUpstream::start_on(port, &text, deltas, gap).await
    };
    if let Some(path) = record {
        if let Err(e) = mock.journal_to(&path) {
            eprintln!("mock_upstream: --record {}: {e}", path.display());
            return std::process::ExitCode::from(2);
        }
    }
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
