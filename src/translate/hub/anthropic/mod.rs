//! The Anthropic Messages wire in the Responses hub: how a Responses or Chat client reaches an
//! `anthropic` provider (`docs/hub.md`).
//!
//! * [`request`]: a Responses request → a Messages request ([`map_request`]); the mapping
//!   table and the documented refusals are there.
//! * [`decode`]: Messages stream events → Responses events ([`MessagesDecoder`], a
//!   [`super::WireDecoder`]); the event table is there.
//!
//! The upstream is always asked to stream; a non-streaming client gets the aggregate of the
//! decoded events (`AggregatePipeline::over_wire`). A signed thinking block travels to the
//! client as a `reasoning` item whose `encrypted_content` is the signature (a redacted one as
//! [`request::REDACTED_PREFIX`] + its data), and comes back to Anthropic from that item.

pub mod decode;
pub mod request;

pub use decode::MessagesDecoder;
pub use request::{map_request, MessagesRequest};
