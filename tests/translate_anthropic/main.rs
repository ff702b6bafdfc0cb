//! The Anthropic Messages translator, end to end through the public pipelines.
//!
//! - `golden`: every case directory under `tests/fixtures/translate/anthropic/` holds a client
//!   request (`request.json`) and the expected upstream request (`upstream_request.json`, with
//!   `client_stream` and `session`) or the expected refusal (`expected_error.json`). Cases with
//!   an upstream transcript (`upstream.sse`) also hold the expected client stream
//!   (`expected.sse`) and non-stream answer (`expected.json`: status and body). Streams are
//!   compared event by event as whole JSON values, replayed with the upstream bytes split at
//!   every offset (and one byte at a time), and checked against the Messages stream grammar.
//!   `BLESS=1` rewrites the expected files from the actual output (review the diff!).
//! - `requests`: request-mapping rules that are clearer as code than as fixtures (the effort
//!   table, refusals, `count_tokens`).
//! - `properties`: the stream state machine on arbitrary event sequences and payloads never
//!   panics and always emits well-formed SSE with valid JSON and a valid block structure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod golden;
mod grammar;
mod properties;
mod requests;
