//! Translation goldens and property tests (src/translate).
//!
//! * [`goldens`]: every case under `tests/fixtures/translate/{chat,responses}/`: client request →
//!   expected upstream request (or the expected 4xx); upstream SSE → expected client stream and
//!   expected non-stream answer. Every stream is replayed whole, split at every byte boundary
//!   (within a 1 KiB window for long transcripts), and one byte at a time; the output must be
//!   identical each time.
//! * [`hub`]: the Anthropic Messages wire in the Responses hub: Messages streams replayed
//!   through the hub's decoder for Responses and Chat clients, and the request mapping.
//! * [`chat_stream`]: properties of the Chat stream stated directly (dense indices, no
//!   duplicate announcements, no `[DONE]` after a failure), independent of the goldens.
//! * [`props`]: proptest properties of the SSE decoder and the Chat state machine: no panic,
//!   and the output is always whole SSE events whose data is JSON or `[DONE]`.
//!   `PROPTEST_CASES` sets the case count (`scripts/proptest` runs many).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod chat_passthrough;
mod chat_stream;
mod chat_wire;
mod goldens;
mod hub;
mod props;
