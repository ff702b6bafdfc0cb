//! A standalone mock upstream on 127.0.0.1, for `scripts/demo`, `scripts/bench` and the
//! end-to-end tests. Offline.
//!
//! Usage: mock_upstream [--port N] [--text TEXT] [--deltas N] [--gap-ms N]
//!                      [--wire responses|anthropic|chat] [--api-key KEY] [--record FILE]
//!                      [--style llama.cpp|vllm|ollama|think] [--key-file FILE] [--tools]
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
//! `--wire chat [--style llama.cpp|vllm|ollama|think] [--key-file FILE]`: a Chat Completions
//! server (`tests/common/chat_mock.rs`): POST /v1/chat/completions, reasoning in the style's
//! place, then TEXT; keyless (any `Authorization` is refused) unless `--key-file` names a file
//! whose first line is the Bearer key to require. With `--tools` it answers like an agent's
//! model: a call of the tool the prompt names (a `command` argument gets a shell command that
//! prints `tool-ran-42`), then `The tool returned: …` after the tool's result.
//!
//! `--record FILE` appends one JSON line per request: what arrived (`method`, `path`,
//! `headers`, `body`) and the exact bytes answered (`status`, `answer`), so an end-to-end test
//! can compare what its client received with what the mock sent (`MockUpstream::journal_to`;
//! the Responses and Anthropic wires).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/chat_mock.rs"]
mod chat_mock;
#[path = "../tests/common/mock.rs"]
mod mock;

use std::time::Duration;

use mock::messages::{Answers, MessagesConfig};
use mock::MockUpstream;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::process::ExitCode {
    const USAGE: &str = "usage: mock_upstream [--port N] [--text TEXT] [--deltas N] [--gap-ms N] \
                         [--wire responses|anthropic|chat] [--api-key KEY] [--record FILE] \
                         [--style llama.cpp|vllm|ollama|think] [--key-file FILE] [--tools] \
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
    let mut chat = ChatOptions::default();
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
                Some("responses") => (anthropic, chat.wire_chat) = (false, false),
                Some("anthropic") => (anthropic, chat.wire_chat) = (true, false),
                Some("chat") => (anthropic, chat.wire_chat) = (false, true),
                _ => return usage_error("--wire needs `responses`, `anthropic` or `chat`"),
            },
            "--api-key" => match args.next() {
                Some(k) if !k.is_empty() => api_key = Some(k),
                _ => return usage_error("--api-key needs a value"),
            },
            "--tools" => chat.tools = true,
            "--style" | "--key-file" => {
                if let Err(problem) = chat.arg(&arg, args.next()) {
                    return usage_error(&problem);
                }
            }
            "--record" => match args.next() {
                Some(path) => record = Some(path.into()),
                None => return usage_error("--record needs a file"),
            },
            other => return usage_error(&format!("unknown argument {other}")),
        }
    }
    let gap = Duration::from_millis(gap_ms);
    if api_key.is_some() && !anthropic {
        return usage_error("--api-key is for --wire anthropic");
    }
    if chat.wire_chat {
        if record.is_some() {
            return usage_error("--record is for the responses and anthropic wires");
        }
        // The chat mock stays alive until the end of `main`.
        let mock = chat.start(port, &text, deltas, gap).await;
        println!("{}", mock.addr.port());
        return serve_until_done(exit_on_eof, mock).await;
    }
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
        MockUpstream::start_on(port, &text, deltas, gap).await
    };
    if let Some(path) = record {
        if let Err(e) = mock.journal_to(&path) {
            eprintln!("mock_upstream: --record {}: {e}", path.display());
            return std::process::ExitCode::from(2);
        }
    }
    println!("{}", mock.addr.port());
    serve_until_done(exit_on_eof, mock).await
}

/// Keeps `mock` serving until stdin closes (`--exit-on-stdin-eof`) or the process is killed.
async fn serve_until_done<M>(exit_on_eof: bool, mock: M) -> std::process::ExitCode {
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
    drop(mock);
    std::process::ExitCode::SUCCESS
}

// === The Chat Completions wire (`--wire chat`) ===

/// The `--wire`, `--style` and `--key-file` flags.
#[derive(Default)]
struct ChatOptions {
    wire_chat: bool,
    style: Option<chat_mock::ChatStyle>,
    key: Option<String>,
    /// The default answer follows tools and tool results.
    tools: bool,
}

impl ChatOptions {
    fn arg(&mut self, flag: &str, value: Option<String>) -> Result<(), String> {
        let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
        match flag {
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
        let mock = chat_mock::ChatMock::start_on(port, auth, style, answer, gap).await;
        mock.answer_tools(self.tools);
        mock
    }
}
