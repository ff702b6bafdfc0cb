//! In-process integration tests: codex-proxy on 127.0.0.1:0 against a mock upstream on
//! 127.0.0.1:0, driven over real sockets.
//!
//! - `streaming`: events flushed to the client as they arrive; the bootstrap hold-back.
//! - `surface`: the route gate — every refusal, and that the upstream saw nothing.
//! - `passthrough`: bodies and headers byte for byte, the header policy, redaction.
//! - `echoes`: echoes of a key masked in headers, success bodies and streams on every route.
//! - `limits`: body size, buffered bytes, connection count, slow senders, idle connections.
//! - `resilience`: pre-header retries, timeouts, cut streams, client disconnects.
//! - `lifecycle`: client token, /health, /shutdown and draining.
//! - `tls`: an https upstream with a test CA over h2 and HTTP/1.1.
//! - `proxying`: the upstream through an HTTP CONNECT or SOCKS5 proxy.
//! - `pool`: several keys: failover, cooldowns, affinity, quota bias, give-up answers.
//! - `chatgpt`: ChatGPT accounts: the Codex backend profile, token refresh, `--auth-dir`.
//! - `translation`: Chat Completions and Anthropic Messages clients end to end, local routes.
//! - `diagnostics`: `/health` reports a failing upstream, and why, until it answers again.
//! - `upstream_caps`: caps on what an upstream answer makes the proxy buffer.
//! - `users`: `--allow-user`: who is served, in which dialect others are refused, with the token.
//! - `policy`: `--config` `[users]`: models allowlist and concurrency limit, another user unaffected.
//! - `providers`: several providers routed by model; Anthropic passthrough with x-api-key.
//! - `hub`: Responses and Chat clients over an Anthropic provider, through the Responses hub.
//! - `usage`: tokens counted from what the upstream reported; `GET /usage`, `GET /metrics`.
//! - `chat_wire`: the Chat Completions mock over a socket, read by the chat wire's pieces.
//! - `chat_provider`: `kind = "chat"` providers: passthrough, keyless, failover, cut streams.
//! - `chaos`: 300 concurrent streams over 3 accounts with random upstream faults.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/as_user.rs"]
mod as_user;
#[path = "../common/chat_mock.rs"]
mod chat_mock;
#[path = "../common/mock.rs"]
mod mock;
#[path = "../common/proxy.rs"]
mod proxy;
#[path = "../common/raw.rs"]
mod raw;

mod chaos;
mod chat_provider;
mod chat_wire;
mod chatgpt;
mod diagnostics;
mod echoes;
mod hub;
mod lifecycle;
mod limits;
mod passthrough;
mod policy;
mod pool;
mod providers;
mod proxying;
mod resilience;
mod streaming;
mod surface;
mod tls;
mod translation;
mod upstream_caps;
mod usage;
mod users;
