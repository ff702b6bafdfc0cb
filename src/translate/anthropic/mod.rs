//! Anthropic Messages ⇄ Responses API.
//!
//! A client speaking Anthropic Messages (`POST /v1/messages`, Claude Code, the Anthropic SDKs)
//! is served by a Responses upstream. The pieces, each in its own file:
//!
//! - [`request`]: the client's Messages request → the upstream Responses request
//!   ([`map_request`]).
//! - [`stream`]: the upstream Responses event stream → the client's Messages event stream
//!   ([`MessagesStream`], fed one upstream event at a time).
//! - [`render`]: the aggregated Response object → a non-streaming `message` body ([`render`]).
//! - [`count_tokens`]: `POST /v1/messages/count_tokens`, answered locally with an estimate.
//!
//! Error bodies and `event: error` events come from the shared
//! [`crate::translate::error_body`] / [`crate::translate::error_event`] (Anthropic types by
//! status, upstream codes by their status), so every path agrees on them.
//!
//! Shared choices (the stream and the non-stream renderer agree on all of them):
//!
//! - **Thinking blocks** are emitted only when the request asked for thinking
//!   (`thinking.type` `enabled`, `adaptive` or `auto`), as the real API does: clients that did
//!   not ask commonly read `content[0].text`. Each upstream reasoning item is one `thinking`
//!   block whose `signature` is the item's `encrypted_content`; request mapping turns such
//!   blocks back into reasoning items (the signature round trip).
//! - **Usage**: `input_tokens` excludes cached tokens, which are reported as
//!   `cache_read_input_tokens`; no cache-write counter is invented.
//! - **Stop reasons**: `refusal` (a refusal part, or `incomplete` for `content_filter`), else
//!   `tool_use` when a tool call was emitted, else `end_turn`; `incomplete` for any other reason
//!   is `max_tokens`. `stop_sequence` is never produced: stop sequences are not sent upstream
//!   (the Responses API has no such parameter; see [`request`]).
//! - **Model** echoed to the client: the name the client asked for.

pub mod count_tokens;
pub mod render;
pub mod request;
pub mod stream;

pub use count_tokens::count_tokens;
pub use request::map_request;
pub use stream::MessagesStream;

use std::borrow::Cow;

use serde_json::Value;

use crate::translate::aggregate::Aggregate;
use crate::translate::error::TranslateError;
use crate::translate::{DialectParts, Rendered, ResponseContext, StreamTranslator};

/// A request body as the caller has it: the decoded JSON bytes (what the dispatcher in
/// `translate::map_request` holds) or an already parsed value. [`map_request`] and
/// [`count_tokens()`] take either.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Raw JSON bytes (decoded, uncompressed).
    Bytes(&'a [u8]),
    /// A parsed JSON value.
    Json(&'a Value),
}

impl<'a> From<&'a [u8]> for Body<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Body::Bytes(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for Body<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        Body::Bytes(bytes)
    }
}

impl<'a> From<&'a Value> for Body<'a> {
    fn from(value: &'a Value) -> Self {
        Body::Json(value)
    }
}

impl<'a> Body<'a> {
    /// The parsed body; invalid JSON is a 400 that does not echo the bytes.
    pub(crate) fn parse(self) -> Result<Cow<'a, Value>, TranslateError> {
        match self {
            Body::Json(v) => Ok(Cow::Borrowed(v)),
            Body::Bytes(b) => serde_json::from_slice(b).map(Cow::Owned).map_err(|_| {
                TranslateError::bad_request("invalid_json", "The request body is not valid JSON.")
            }),
        }
    }
}

/// The Anthropic response side, reached through [`ResponseContext::parts`].
///
/// Whether the client asked for thinking is the one per-request fact the response side needs
/// beyond the shared context, so it rides here: the request mapper picks
/// [`WITH_THINKING`] or [`WITHOUT_THINKING`].
#[derive(Debug)]
pub struct AnthropicParts {
    /// Emit `thinking` blocks for reasoning.
    pub thinking: bool,
}

/// For requests that asked for thinking (`enabled`, `adaptive`, `auto`).
pub static WITH_THINKING: AnthropicParts = AnthropicParts { thinking: true };
/// For requests that did not.
pub static WITHOUT_THINKING: AnthropicParts = AnthropicParts { thinking: false };

/// The parts for a request that did (or did not) ask for thinking.
pub fn parts(thinking: bool) -> &'static AnthropicParts {
    if thinking {
        &WITH_THINKING
    } else {
        &WITHOUT_THINKING
    }
}

impl DialectParts for AnthropicParts {
    fn stream(&self, ctx: &ResponseContext) -> Box<dyn StreamTranslator> {
        Box::new(MessagesStream::new(ctx, self.thinking))
    }

    fn render(&self, ctx: &ResponseContext, aggregate: Aggregate) -> Rendered {
        render::render(ctx, aggregate, self.thinking)
    }
}

/// Token counts of an upstream `usage` object, in Anthropic's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Upstream `input_tokens` minus the cached part.
    pub input: u64,
    /// Upstream `input_tokens_details.cached_tokens`.
    pub cache_read: u64,
    /// Upstream `output_tokens` (reasoning included, as Anthropic counts thinking).
    pub output: u64,
}

impl Usage {
    /// From the upstream counters; `input_tokens` includes the cached tokens upstream, so the
    /// cached part is subtracted (reporting both would double-count).
    pub(crate) fn from_upstream(input: u64, cached: u64, output: u64) -> Usage {
        let cache_read = cached.min(input);
        Usage {
            input: input - cache_read,
            cache_read,
            output,
        }
    }
}

/// Why the message ended, from the terminal event and what the stream carried.
pub(crate) fn stop_reason(
    incomplete_reason: Option<&str>,
    saw_refusal: bool,
    saw_tool_use: bool,
) -> &'static str {
    match incomplete_reason {
        Some("content_filter") => "refusal",
        Some(_) => "max_tokens",
        None if saw_refusal => "refusal",
        None if saw_tool_use => "tool_use",
        None => "end_turn",
    }
}
