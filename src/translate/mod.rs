//! Protocol knowledge: the Responses API as the hub, and the client dialects translated to and
//! from it. Depends on nothing else in the crate.
//!
//! * [`sse`]: the scanner the relay uses to find a Responses stream's commit point.
//! * [`codec`]: the incremental SSE decoder and encoder the translators use.
//! * [`models`]: model names, suffixes, `--models`, the `/v1/models` lists.
//! * [`schema`], [`tool_names`], [`think`]: tool-schema repair, long tool names, `<think>` tags.
//! * [`events`]: the Responses stream's events as borrowed structs, read by every translator.
//! * [`aggregate`]: Responses events → one Response object (non-streaming clients).
//! * [`hub`]: what a provider wire other than Responses implements to join the hub.
//! * [`chat`]: Chat Completions; [`responses`]: the Responses dialect's own response side (a
//!   verbatim relay, and the Response object for non-streaming clients of a stream-only
//!   upstream).
//!
//! Each client dialect has a request mapper (client JSON → a Responses request that always
//! streams), a [`StreamTranslator`] fed one upstream event at a time, and a renderer for the
//! [`aggregate::Aggregate`] of a whole stream. The response side is reached through the
//! [`DialectParts`] carried by the [`ResponseContext`] that the request mapper built, so the
//! pipelines need no per-dialect dispatch.

pub mod aggregate;
pub mod anthropic;
pub mod chat;
pub mod codec;
pub mod error;
pub(crate) mod events;
pub mod hub;
pub mod models;
pub mod responses;
pub mod schema;
pub mod sse;
pub mod think;
pub mod tool_names;
pub mod usage;

use std::borrow::Cow;

use serde::Deserialize;

pub use error::{Interruption, TranslateError};

use aggregate::{Aggregate, Aggregator};
use codec::{DecodeError, Decoder};

/// A client's API dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI Responses (`/v1/responses`): the upstream's own dialect.
    Responses,
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    Chat,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
}

/// A client request translated for the upstream.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// The Responses request to send upstream; always `"stream": true`.
    pub body: serde_json::Value,
    /// The client asked for a stream.
    pub client_stream: bool,
    /// Affinity key: Chat `prompt_cache_key` (else `user`); Anthropic `metadata.user_id`.
    pub session: Option<String>,
    /// What the response side needs.
    pub context: ResponseContext,
}

/// What translating the response needs to know about the request.
#[derive(Clone, Debug)]
pub struct ResponseContext {
    /// The client's dialect.
    pub dialect: Dialect,
    /// The model name the client asked for (echoed back in responses, stream and not).
    pub model: String,
    /// Shortened → original tool names.
    pub tool_names: tool_names::ToolNameMap,
    /// Chat `stream_options.include_usage`: one extra chunk with `choices:[]` and `usage`
    /// before `[DONE]`.
    pub include_usage: bool,
    /// Inline `<think>` tag handling for this model.
    pub think: think::ThinkMode,
    /// Call ids whose upstream form differs from the client's (upstream → client), for
    /// dialects whose ids the mapper had to sanitise (Anthropic).
    pub call_ids: Vec<(String, String)>,
    /// The dialect's response side.
    pub parts: &'static dyn DialectParts,
}

impl ResponseContext {
    /// A context with defaults (no shortened names, no usage chunk, think tags off).
    pub fn new(
        dialect: Dialect,
        model: impl Into<String>,
        parts: &'static dyn DialectParts,
    ) -> Self {
        ResponseContext {
            dialect,
            model: model.into(),
            tool_names: Default::default(),
            include_usage: false,
            think: Default::default(),
            call_ids: Vec::new(),
            parts,
        }
    }

    /// The client's id for an upstream call id.
    pub fn client_call_id<'a>(&'a self, upstream: &'a str) -> &'a str {
        self.call_ids
            .iter()
            .find(|(u, _)| u == upstream)
            .map_or(upstream, |(_, c)| c.as_str())
    }
}

/// One dialect's response side: how to translate a stream, how to render an aggregate.
pub trait DialectParts: Sync + std::fmt::Debug {
    /// A fresh stream translator for one response.
    fn stream(&self, ctx: &ResponseContext) -> Box<dyn StreamTranslator>;
    /// The non-streaming answer for an aggregated stream.
    fn render(&self, ctx: &ResponseContext, aggregate: Aggregate) -> Rendered;
}

/// Fed one upstream SSE event at a time; appends client bytes (whole SSE events) to `out`.
pub trait StreamTranslator: Send {
    /// `event_type` is the JSON `type` of the event (or the `event:` line when the JSON has
    /// none); `data` is the raw JSON of its `data:` field.
    fn event(&mut self, event_type: &str, data: &[u8], out: &mut Vec<u8>);
    /// The upstream stream ended. [`StreamEnd::Clean`] when it closed after a terminal event;
    /// otherwise the translator closes any open blocks as the dialect requires and ends with
    /// the dialect's error event (never a fake success such as `[DONE]` or `message_stop`
    /// after a failure).
    fn finish(&mut self, end: StreamEnd, out: &mut Vec<u8>);
}

/// How an upstream stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// After a terminal event.
    Clean,
    /// Without one (a timeout, a transport error, a truncated stream, an undecodable event).
    Failed {
        /// What stopped it: the error event's code and type.
        cause: Interruption,
        /// For the client's error event.
        message: String,
    },
}

/// A non-streaming answer: a JSON body (`content-type: application/json`) and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Vec<u8>,
}

// === Dispatch ===

/// Maps a client request body (decoded, uncompressed JSON bytes) in `dialect` to the streaming
/// Responses request to send upstream, plus what the response side needs.
///
/// The response side needs no dispatch: the [`ResponseContext`] built here carries its
/// dialect's [`DialectParts`], which [`StreamPipeline::new`] and [`AggregatePipeline::new`]
/// use. This `match` is the only per-dialect switch in the module.
pub fn map_request(
    dialect: Dialect,
    body: &[u8],
    models: &models::ModelTable,
) -> Result<Mapped, TranslateError> {
    match dialect {
        Dialect::Chat => chat::map_request(body, models),
        Dialect::Responses => responses::map_request(body, models),
        Dialect::Anthropic => anthropic::map_request(body, models),
    }
}

// === Event types ===

/// True for the events after which a Responses stream says nothing more.
pub fn is_terminal(event_type: &str) -> bool {
    matches!(
        event_type,
        "response.completed" | "response.incomplete" | "response.failed" | "error"
    )
}

/// The `type` of an event: the JSON `type` field, else the `event:` name. Responses events put
/// `type` first, so the common case is read without parsing the whole event.
fn event_type<'a>(name: Option<&'a str>, data: &'a [u8]) -> Cow<'a, str> {
    const PREFIX: &[u8] = b"{\"type\":\"";
    if let Some(rest) = data.strip_prefix(PREFIX) {
        if let Some(end) = memchr::memchr2(b'"', b'\\', rest) {
            if rest[end] == b'"' {
                if let Ok(t) = std::str::from_utf8(&rest[..end]) {
                    return Cow::Borrowed(t);
                }
            }
        }
    }
    #[derive(Deserialize)]
    struct TypeOnly<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<Cow<'a, str>>,
    }
    match serde_json::from_slice::<TypeOnly>(data) {
        Ok(TypeOnly { kind: Some(kind) }) => kind,
        _ => Cow::Borrowed(name.unwrap_or("")),
    }
}

// === Pipelines ===

/// Upstream bytes in, client bytes out: [`codec::Decoder`] plus the dialect's
/// [`StreamTranslator`]. No client bytes come out before the first event that carries output,
/// so a caller that has sent nothing yet can still answer a failure with an HTTP error.
pub struct StreamPipeline {
    decoder: Decoder,
    /// The provider wire's decoder when the upstream does not speak Responses.
    wire: Option<Box<dyn hub::WireDecoder>>,
    translator: Box<dyn StreamTranslator>,
    saw_terminal: bool,
    ended: bool,
}

impl StreamPipeline {
    /// A pipeline for one response in `ctx`'s dialect.
    pub fn new(ctx: &ResponseContext) -> Self {
        Self::with_translator(ctx.parts.stream(ctx))
    }

    /// A pipeline around a given translator.
    pub fn with_translator(translator: Box<dyn StreamTranslator>) -> Self {
        StreamPipeline {
            decoder: Decoder::new(),
            wire: None,
            translator,
            saw_terminal: false,
            ended: false,
        }
    }

    /// Reads the upstream through `wire`: its events are decoded to Responses events first.
    pub fn over_wire(mut self, wire: Box<dyn hub::WireDecoder>) -> Self {
        self.wire = Some(wire);
        self
    }

    /// Feeds upstream bytes, split anywhere; appends whole client events to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let translator = &mut self.translator;
        let saw_terminal = &mut self.saw_terminal;
        let mut deliver = |kind: &str, data: &[u8]| {
            if is_terminal(kind) {
                *saw_terminal = true;
            }
            translator.event(kind, data, out);
        };
        let wire = &mut self.wire;
        let result = self.decoder.push(chunk, |event| match wire {
            Some(wire) => wire.event(event.name, event.data, &mut deliver),
            None if event.data == b"[DONE]" => {}
            None => deliver(&event_type(event.name, event.data), event.data),
        });
        if let Err(e) = result {
            self.end(Some(decode_message(e)), out);
        }
    }

    /// The upstream ended: `failure` says what stopped it (`None` = it closed). Without a
    /// terminal event the stream counts as truncated and the client gets the dialect's error
    /// event, with the failure's code. Idempotent.
    pub fn finish(&mut self, failure: Option<Interruption>, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let truncated = self.decoder.finish().err().map(decode_message);
        if let (Some(wire), None, None) = (&mut self.wire, &failure, &truncated) {
            let translator = &mut self.translator;
            let saw_terminal = &mut self.saw_terminal;
            wire.finish(&mut |kind: &str, data: &[u8]| {
                if is_terminal(kind) {
                    *saw_terminal = true;
                }
                translator.event(kind, data, out);
            });
        }
        let failure = failure.map(|i| (i, i.message().to_owned()));
        self.end(failure.or(truncated), out);
    }

    fn end(&mut self, failure: Option<(Interruption, String)>, out: &mut Vec<u8>) {
        self.ended = true;
        let end = if self.saw_terminal {
            StreamEnd::Clean
        } else {
            let (cause, message) =
                failure.unwrap_or((Interruption::Truncated, TRUNCATED.to_owned()));
            StreamEnd::Failed { cause, message }
        };
        self.translator.finish(end, out);
    }

    /// True once a terminal event went through.
    pub fn saw_terminal(&self) -> bool {
        self.saw_terminal
    }

    /// Bytes of a partial upstream event held until its end arrives.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }
}

const TRUNCATED: &str = "The upstream stream ended before the response was complete.";

/// A decoding failure as an interruption (a truncated stream) with its own message.
fn decode_message(e: DecodeError) -> (Interruption, String) {
    let message = match e {
        DecodeError::Truncated => TRUNCATED,
        DecodeError::TooLarge => "The upstream sent an event over the size limit.",
    };
    (Interruption::Truncated, message.to_owned())
}

/// Non-stream: the same upstream bytes aggregated, rendered in the client's dialect.
pub struct AggregatePipeline {
    decoder: Decoder,
    /// The provider wire's decoder when the upstream does not speak Responses.
    wire: Option<Box<dyn hub::WireDecoder>>,
    aggregator: Aggregator,
    context: ResponseContext,
    failure: Option<(Interruption, String)>,
}

impl AggregatePipeline {
    /// A pipeline for one response in `ctx`'s dialect.
    pub fn new(ctx: &ResponseContext) -> Self {
        AggregatePipeline {
            decoder: Decoder::new(),
            wire: None,
            aggregator: Aggregator::new(),
            context: ctx.clone(),
            failure: None,
        }
    }

    /// Reads the upstream through `wire`: its events are decoded to Responses events first.
    pub fn over_wire(mut self, wire: Box<dyn hub::WireDecoder>) -> Self {
        self.wire = Some(wire);
        self
    }

    /// Feeds upstream bytes, split anywhere.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.failure.is_some() {
            return;
        }
        let aggregator = &mut self.aggregator;
        let wire = &mut self.wire;
        let result = self.decoder.push(chunk, |event| match wire {
            Some(wire) => wire.event(event.name, event.data, &mut |kind: &str, data: &[u8]| {
                aggregator.event(kind, data)
            }),
            None if event.data == b"[DONE]" => {}
            None => aggregator.event(&event_type(event.name, event.data), event.data),
        });
        if let Err(e) = result {
            self.failure = Some(decode_message(e));
        }
    }

    /// True once a terminal event was seen.
    pub fn saw_terminal(&self) -> bool {
        self.aggregator.saw_terminal()
    }

    /// The upstream ended (`failure` = what stopped it, `None` = it closed): the answer in
    /// the client's dialect. `response.failed`, `error` and an interruption become the
    /// dialect's error body with a fitting status (504 for the timeouts);
    /// `response.incomplete` is a 200 with its stop reason.
    pub fn finish(mut self, failure: Option<Interruption>) -> Rendered {
        let truncated = self.decoder.finish().err().map(decode_message);
        if let (Some(wire), None, None, None) =
            (&mut self.wire, &self.failure, &failure, &truncated)
        {
            let aggregator = &mut self.aggregator;
            wire.finish(&mut |kind: &str, data: &[u8]| aggregator.event(kind, data));
        }
        let failure = self
            .failure
            .take()
            .or(failure.map(|i| (i, i.message().to_owned())))
            .or(truncated);
        let aggregate = self
            .aggregator
            .finish(failure.as_ref().map(|(i, m)| (*i, m.as_str())));
        self.context.parts.render(&self.context, aggregate)
    }
}

// === Errors in each dialect ===

/// The OpenAI `error.type` for a status.
fn openai_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

/// The Anthropic `error.type` for a status.
pub fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

fn push_json_field(out: &mut Vec<u8>, key: &str, value: &str) {
    codec::write_json_str(out, key);
    out.push(b':');
    codec::write_json_str(out, value);
}

/// An error response body in the dialect: OpenAI `{"error":{"message","type","param","code"}}`
/// for Responses and Chat; Anthropic `{"type":"error","error":{"type","message"}}`.
pub fn error_body(dialect: Dialect, status: u16, code: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + message.len());
    match dialect {
        Dialect::Responses | Dialect::Chat => {
            out.extend_from_slice(b"{\"error\":{");
            push_json_field(&mut out, "message", message);
            out.push(b',');
            push_json_field(&mut out, "type", openai_error_type(status));
            out.extend_from_slice(b",\"param\":null,");
            push_json_field(&mut out, "code", code);
            out.extend_from_slice(b"}}");
        }
        Dialect::Anthropic => {
            out.extend_from_slice(b"{\"type\":\"error\",\"error\":{");
            push_json_field(&mut out, "type", anthropic_error_type(status));
            out.push(b',');
            push_json_field(&mut out, "message", message);
            out.extend_from_slice(b"}}");
        }
    }
    out
}

/// One whole SSE error event in the dialect, for a failure after the stream started: Chat
/// `data: {"error":{"message","type","code"}}`; Anthropic `event: error` with
/// `{"type":"error","error":{"type","message"}}`; Responses `event: error` with
/// `{"type":"error","code","message","param":null}`. The type follows the code's status.
pub fn error_event(dialect: Dialect, code: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + message.len());
    write_error_event(&mut out, dialect, code, message);
    out
}

/// [`error_event`], appended to `out`.
pub fn write_error_event(out: &mut Vec<u8>, dialect: Dialect, code: &str, message: &str) {
    let status = error::status_for_upstream_code(code);
    match dialect {
        Dialect::Chat => {
            out.extend_from_slice(b"data: {\"error\":{");
            push_json_field(out, "message", message);
            out.push(b',');
            push_json_field(out, "type", openai_error_type(status));
            out.push(b',');
            push_json_field(out, "code", code);
            out.extend_from_slice(b"}}\n\n");
        }
        Dialect::Anthropic => {
            out.extend_from_slice(b"event: error\ndata: {\"type\":\"error\",\"error\":{");
            push_json_field(out, "type", anthropic_error_type(status));
            out.push(b',');
            push_json_field(out, "message", message);
            out.extend_from_slice(b"}}\n\n");
        }
        Dialect::Responses => {
            out.extend_from_slice(b"event: error\ndata: {\"type\":\"error\",");
            push_json_field(out, "code", code);
            out.push(b',');
            push_json_field(out, "message", message);
            out.extend_from_slice(b",\"param\":null}\n\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn error_bodies_in_each_dialect() {
        assert_eq!(
            parse(&error_body(
                Dialect::Chat,
                400,
                "invalid_request",
                "Bad \"x\"."
            )),
            json!({"error":{"message":"Bad \"x\".","type":"invalid_request_error","param":null,"code":"invalid_request"}})
        );
        assert_eq!(
            parse(&error_body(
                Dialect::Responses,
                429,
                "rate_limit_exceeded",
                "m"
            )),
            json!({"error":{"message":"m","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}})
        );
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (504, "timeout_error"),
            (529, "overloaded_error"),
        ] {
            assert_eq!(
                parse(&error_body(Dialect::Anthropic, status, "c", "m")),
                json!({"type":"error","error":{"type":kind,"message":"m"}})
            );
        }
    }

    #[test]
    fn error_events_in_each_dialect() {
        assert_eq!(
            error_event(Dialect::Chat, "server_is_overloaded", "busy"),
            b"data: {\"error\":{\"message\":\"busy\",\"type\":\"server_error\",\"code\":\"server_is_overloaded\"}}\n\n"
        );
        assert_eq!(
            error_event(Dialect::Anthropic, "server_is_overloaded", "busy"),
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n"
        );
        assert_eq!(
            error_event(Dialect::Responses, "upstream_error", "line1\nline2"),
            b"event: error\ndata: {\"type\":\"error\",\"code\":\"upstream_error\",\"message\":\"line1\\nline2\",\"param\":null}\n\n"
        );
    }

    #[test]
    fn event_type_prefers_the_json_type() {
        assert_eq!(
            event_type(Some("x"), br#"{"type":"response.created","a":1}"#),
            "response.created"
        );
        assert_eq!(event_type(Some("x"), br#"{"a":1,"type":"error"}"#), "error");
        assert_eq!(event_type(Some("x"), br#"{"type":"a\"b"}"#), "a\"b");
        assert_eq!(event_type(Some("named"), br#"{"a":1}"#), "named");
        assert_eq!(event_type(None, b"garbage"), "");
    }
}
