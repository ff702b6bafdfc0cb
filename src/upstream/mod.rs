//! Everything between the front end and the upstream: the HTTPS client, the header policy,
//! redaction of echoed secrets, the attempt loop with its commit point, and the relay body.

pub mod classify;
pub mod client;
pub mod connections;
pub mod forward;
pub mod headers;
pub mod health;
pub mod inject;
pub mod profile;
pub mod provider;
pub mod redact;
pub mod refresh;
pub mod relay;
pub mod retry;

pub use forward::{GiveUp, Outbound, Reply, ReplyBody, Upstream};
