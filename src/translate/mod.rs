//! Protocol knowledge shared by the streaming code. Depends on nothing else in the crate.
//!
//! Today: the SSE scanner that finds the commit point of a Responses stream. The Chat
//! Completions and Anthropic Messages translators will live here too.

pub mod sse;
