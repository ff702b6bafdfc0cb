//! The Responses stream's events as the translators read them: one set of borrowed structs for
//! the aggregator and every client dialect's stream translator.
//!
//! Every string borrows from the event's JSON where it can (`Cow`), unknown fields are
//! skipped, and every field is optional: a translator takes what the event carries and
//! decides what is missing. No `serde_json::Value` is built, except where a caller asks for
//! one through a type parameter (the terminal response's `usage`).
//!
//! * [`Event`] is any event, the union of the fields below, for a translator that parses
//!   each event once whatever its type.
//! * [`Delta`] is a `*.delta` / `*.done` event; [`ItemEvent`] is `response.output_item.added`
//!   or `.done`; [`PartAdded`] is `response.content_part.added`.
//! * [`Envelope`] is an event whose payload is a `response` object ([`ResponseHead`] for
//!   `response.created` / `.in_progress`, [`Response`] for the terminal events).
//! * [`Failed`] is `response.failed` or `error`, as [`super::aggregate::failure_of`] reads it.

use std::borrow::Cow;

use serde::Deserialize;

/// Any event: the fields of [`Delta`] plus an item, a response, and the top-level error fields
/// that `error` events carry.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Event<'a> {
    #[serde(borrow)]
    pub(crate) item_id: Option<Cow<'a, str>>,
    pub(crate) output_index: Option<u64>,
    pub(crate) content_index: Option<u64>,
    pub(crate) summary_index: Option<u64>,
    #[serde(borrow)]
    pub(crate) delta: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) arguments: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) refusal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) item: Option<Item<'a>>,
    #[serde(borrow)]
    pub(crate) response: Option<Response<'a>>,
    /// `error` events carry these at the top level.
    #[serde(borrow)]
    pub(crate) code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) error: Option<ErrorBody<'a>>,
}

/// The fields of a delta-like event (`*.delta`, `*.done`) that the translators read.
///
/// A subset of [`Event`], kept apart on purpose: the aggregator and the Chat stream read every
/// delta as this small struct, and reading it as [`Event`] (which holds an item and a response
/// inline) cost about 0.08 µs more per event in `examples/translate_bench`.
#[derive(Deserialize)]
pub(crate) struct Delta<'a> {
    #[serde(borrow)]
    pub(crate) item_id: Option<Cow<'a, str>>,
    pub(crate) output_index: Option<u64>,
    pub(crate) content_index: Option<u64>,
    pub(crate) summary_index: Option<u64>,
    #[serde(borrow)]
    pub(crate) delta: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) arguments: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) input: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) refusal: Option<Cow<'a, str>>,
}

/// `response.output_item.added` / `.done`.
#[derive(Deserialize)]
pub(crate) struct ItemEvent<'a> {
    pub(crate) output_index: Option<u64>,
    #[serde(borrow)]
    pub(crate) item: Option<Item<'a>>,
}

/// An output item: a `message`, `reasoning`, `function_call` or `custom_tool_call`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Item<'a> {
    #[serde(rename = "type", borrow)]
    pub(crate) kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) call_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) name: Option<Cow<'a, str>>,
    /// A `function_call`'s arguments.
    #[serde(borrow)]
    pub(crate) arguments: Option<Cow<'a, str>>,
    /// A `custom_tool_call`'s input.
    #[serde(borrow)]
    pub(crate) input: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) encrypted_content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) summary: Option<Vec<Part<'a>>>,
    #[serde(borrow)]
    pub(crate) content: Option<Vec<Part<'a>>>,
}

impl<'a> Item<'a> {
    /// A `message`'s content parts (none when absent or `null`).
    pub(crate) fn content(&self) -> &[Part<'a>] {
        self.content.as_deref().unwrap_or_default()
    }

    /// A `reasoning` item's summary parts (none when absent or `null`).
    pub(crate) fn summary(&self) -> &[Part<'a>] {
        self.summary.as_deref().unwrap_or_default()
    }
}

/// A content or summary part.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Part<'a> {
    #[serde(rename = "type", borrow)]
    pub(crate) kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) refusal: Option<Cow<'a, str>>,
}

/// `response.content_part.added`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct PartAdded<'a> {
    #[serde(borrow)]
    pub(crate) part: Option<Part<'a>>,
}

/// An event whose payload is a `response` object.
#[derive(Deserialize)]
pub(crate) struct Envelope<R> {
    pub(crate) response: Option<R>,
}

/// The head of a `response` object (`response.created`, `response.in_progress`).
#[derive(Deserialize)]
pub(crate) struct ResponseHead<'a> {
    #[serde(borrow)]
    pub(crate) id: Option<Cow<'a, str>>,
    pub(crate) created_at: Option<f64>,
}

/// A `response` object as the terminal events carry it. `U` is how the caller reads `usage`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Response<'a, U = UpstreamUsage> {
    #[serde(borrow)]
    pub(crate) id: Option<Cow<'a, str>>,
    pub(crate) created_at: Option<f64>,
    pub(crate) usage: Option<U>,
    #[serde(borrow)]
    pub(crate) incomplete_details: Option<IncompleteDetails<'a>>,
    #[serde(borrow)]
    pub(crate) output: Option<Vec<Item<'a>>>,
    #[serde(borrow)]
    pub(crate) error: Option<ErrorBody<'a>>,
}

impl<'a, U> Response<'a, U> {
    /// The output items (none when absent or `null`).
    pub(crate) fn output(&self) -> &[Item<'a>] {
        self.output.as_deref().unwrap_or_default()
    }
}

/// A response's `usage`, typed.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct UpstreamUsage {
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    pub(crate) input_tokens_details: Option<InputDetails>,
}

/// `usage.input_tokens_details`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct InputDetails {
    pub(crate) cached_tokens: Option<u64>,
}

/// `response.incomplete_details`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct IncompleteDetails<'a> {
    #[serde(borrow)]
    pub(crate) reason: Option<Cow<'a, str>>,
}

/// An error object (`response.error`, an `error` event's `error`).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ErrorBody<'a> {
    #[serde(borrow)]
    pub(crate) code: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    pub(crate) kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) message: Option<Cow<'a, str>>,
    pub(crate) status_code: Option<u16>,
    pub(crate) status: Option<u16>,
}

/// `response.failed` or `error`: the error may sit in `response.error`, in `error`, or at the
/// top level.
#[derive(Deserialize)]
pub(crate) struct Failed<'a> {
    #[serde(borrow)]
    pub(crate) response: Option<FailedResponse<'a>>,
    #[serde(borrow)]
    pub(crate) error: Option<ErrorBody<'a>>,
    #[serde(borrow)]
    pub(crate) code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) message: Option<Cow<'a, str>>,
    pub(crate) status_code: Option<u16>,
}

/// The part of a failed `response` that [`Failed`] reads.
#[derive(Deserialize)]
pub(crate) struct FailedResponse<'a> {
    #[serde(borrow)]
    pub(crate) error: Option<ErrorBody<'a>>,
}
