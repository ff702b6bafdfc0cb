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
async fn main() {
    let mut port: u16 = 0;
    let mut text =
        String::from("Hello from the offline mock upstream, streamed through codex-proxy.");
    let mut deltas = 8usize;
    let mut gap_ms = 0u64;
    let mut exit_on_eof = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().and_then(|v| v.parse().ok()).expect("--port N"),
            "--text" => text = args.next().expect("--text TEXT"),
            "--deltas" => {
                deltas = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--deltas N")
            }
            "--gap-ms" => {
                gap_ms = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--gap-ms N")
            }
            "--exit-on-stdin-eof" => exit_on_eof = true,
            other => panic!("mock_upstream: unknown argument {other}"),
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
}
