//! A standalone mock Responses upstream on 127.0.0.1, for `scripts/demo`, `scripts/bench` and
//! the Codex CLI end-to-end test. Offline; no credentials checked.
//!
//! Usage: mock_upstream [--port N] [--text TEXT] [--deltas N] [--gap-ms N]
//! Prints `PORT` (one line) on stdout once listening; runs until killed or stdin closes if
//! `--exit-on-stdin-eof` is given.
//!
//! Answers POST /v1/responses with an event stream (when the body says `"stream": true`) or
//! JSON, saying TEXT in N deltas, GAP milliseconds apart.
//!
//! `--wire chat [--style llama.cpp|vllm|ollama|think] [--key-file FILE]` serves a Chat
//! Completions server instead (`tests/common/chat_mock.rs`): POST /v1/chat/completions,
//! reasoning in the style's place, then TEXT; keyless (any `Authorization` is refused) unless
//! `--key-file` names a file whose first line is the Bearer key to require.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/chat_mock.rs"]
mod chat_mock;
#[path = "../tests/common/mock.rs"]
mod mock;

use std::time::Duration;

use mock::MockUpstream;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::process::ExitCode {
    const USAGE: &str = "usage: mock_upstream [--port N] [--text TEXT] [--deltas N] [--gap-ms N] \
                         [--exit-on-stdin-eof] [--wire responses|chat] \
                         [--style llama.cpp|vllm|ollama|think] [--key-file FILE]";
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
    let mut chat = ChatOptions::default();
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
            "--wire" | "--style" | "--key-file" => {
                if let Err(problem) = chat.arg(&arg, args.next()) {
                    return usage_error(&problem);
                }
            }
            other => return usage_error(&format!("unknown argument {other}")),
        }
    }
    let gap = Duration::from_millis(gap_ms);
    // Either mock stays alive until the end of `main`.
    let (_responses, _chat, bound) = match chat.wire_chat {
        false => {
            let mock = MockUpstream::start_on(port, &text, deltas, gap).await;
            let bound = mock.addr.port();
            (Some(mock), None, bound)
        }
        true => {
            let mock = chat.start(port, &text, deltas, gap).await;
            let bound = mock.addr.port();
            (None, Some(mock), bound)
        }
    };
    println!("{bound}");
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

// === The Chat Completions wire (`--wire chat`) ===

/// The `--wire`, `--style` and `--key-file` flags.
#[derive(Default)]
struct ChatOptions {
    wire_chat: bool,
    style: Option<chat_mock::ChatStyle>,
    key: Option<String>,
}

impl ChatOptions {
    fn arg(&mut self, flag: &str, value: Option<String>) -> Result<(), String> {
        let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
        match flag {
            "--wire" => match value.as_str() {
                "chat" => self.wire_chat = true,
                "responses" => self.wire_chat = false,
                _ => return Err("--wire is responses or chat".into()),
            },
            "--style" => {
                self.style = Some(
                    chat_mock::ChatStyle::parse(&value)
                        .ok_or("--style is llama.cpp, vllm, ollama or think")?,
                )
            }
            _ => {
                let key = std::fs::read_to_string(&value)
                    .map_err(|_| "--key-file cannot be read".to_owned())?;
                let key = key.lines().next().unwrap_or("").trim().to_owned();
                if key.is_empty() {
                    return Err("--key-file holds no key".into());
                }
                self.key = Some(key);
            }
        }
        Ok(())
    }

    async fn start(
        &self,
        port: u16,
        text: &str,
        deltas: usize,
        gap: Duration,
    ) -> chat_mock::ChatMock {
        let auth = match &self.key {
            Some(key) => chat_mock::ChatAuth::Bearer(key.clone()),
            None => chat_mock::ChatAuth::Keyless,
        };
        let mut answer = chat_mock::ChatAnswer::text(text);
        answer.deltas = deltas;
        let style = self.style.unwrap_or(chat_mock::ChatStyle::LlamaCpp);
        chat_mock::ChatMock::start_on(port, auth, style, answer, gap).await
    }
}
