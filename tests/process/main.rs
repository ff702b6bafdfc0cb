//! Process-level tests: the real `codex-proxy` binary, spawned with a key on stdin, against a
//! mock upstream running in this (separate) test process.
//!
//! - `secrets`: a canary key never appears in logs, responses or the server-info file.
//! - `startup`: exit codes and messages for bad configuration, stdin, bind and server-info.
//! - `config_file`: `--config` providers, models and aliases: exit 2 naming the line and the
//!   key (plain http off the host only for a keyless chat provider that allows it); a valid
//!   file with every section starts and each part applies; a keyless chat provider starts
//!   with nothing on stdin.
//! - `hardening`: non-dumpable, core limit, locked memory, no_new_privs; the `--user` drop;
//!   probes as another process of the same uid, each paired with a control that shows the
//!   probe works (root only: skipped with a message otherwise).
//! - `diagnostics`: log lines and messages an operator reads (connect failures, bytes_out,
//!   shutdown cuts, the start-up line, a key as an argument, `--user` without root).
//! - `caps`: an upstream sending far more than each buffer cap; the proxy's peak RSS.
//! - `soak` (ignored; `scripts/soak`): minutes of mixed traffic with faults, then leak checks.
//! - `copies`: how many copies of the key the process memory holds after many requests.
//! - `flood`: refusals a local user can provoke are summarised in the log, not one line each.
//! - `refusals`: the log line of a refused request (method, path, reason; never the query).
//! - `users`: `--allow-user` with clients running as several local users; attribution of
//!   1,000 connections (root only).
//! - `usage`: `GET /usage` as several local users: own row, every row for root and the info
//!   owner (root only).
//! - `state`: `--state-dir`: usage and an exhausted budget survive a restart; a corrupt state
//!   file, an open, foreign or symlinked directory are refused (exit 2); after `--user nobody`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// These tests drive real processes in real time, outside tokio: std time is the right clock.
#![allow(clippy::disallowed_types)]

#[path = "../common/as_user.rs"]
mod as_user;
#[path = "../common/chat_mock.rs"]
mod chat_mock;
#[path = "../common/mock.rs"]
mod mock;
#[path = "../common/raw.rs"]
mod raw;

mod caps;
mod config_file;
mod copies;
mod diagnostics;
mod flood;
mod hardening;
mod refusals;
mod secrets;
mod soak;
mod spawn;
mod startup;
mod state;
mod usage;
mod users;
