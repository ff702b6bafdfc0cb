//! In-process integration tests: codex-proxy on 127.0.0.1:0 against a mock upstream on
//! 127.0.0.1:0, driven over real sockets.
//!
//! - `streaming`: passthrough of bodies, headers and events, flushed as they arrive.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mock.rs"]
mod mock;
#[path = "../common/proxy.rs"]
mod proxy;

mod streaming;
