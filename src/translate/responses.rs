//! The Responses dialect's response side.
//!
//! Streaming `/v1/responses` clients are served by the relay (bytes verbatim), so
//! [`Relay`] exists for completeness: it re-encodes each event unchanged. The part that
//! matters is [`render`]: a non-streaming client of a stream-only upstream gets the Response
//! object built from the events (never `response.completed.output` alone, which can be `[]`).

use serde_json::Value;

use super::aggregate::{Aggregate, Outcome};
use super::models::ModelTable;
use super::{
    codec, error_body, write_error_event, Dialect, DialectParts, Rendered, ResponseContext,
    StreamEnd, StreamTranslator,
};
use super::{Mapped, TranslateError};

/// The Responses dialect's [`DialectParts`].
#[derive(Debug)]
pub struct ResponsesParts;

/// The one instance, for [`ResponseContext::parts`].
pub static PARTS: ResponsesParts = ResponsesParts;

impl DialectParts for ResponsesParts {
    fn stream(&self, _ctx: &ResponseContext) -> Box<dyn StreamTranslator> {
        Box::new(Relay::default())
    }

    fn render(&self, _ctx: &ResponseContext, aggregate: Aggregate) -> Rendered {
        render(aggregate)
    }
}

/// A context for a Responses client (model echo is the upstream's own).
pub fn context(model: impl Into<String>) -> ResponseContext {
    ResponseContext::new(Dialect::Responses, model, &PARTS)
}

/// A `/v1/responses` body for a client that may not stream, on an upstream that must: the
/// model resolved (suffix, alias, defaults, overrides) and `stream` forced on. `client_stream`
/// is the body's own `stream`. Everything else is the upstream profile's business.
pub fn map_request(body: &[u8], models: &ModelTable) -> Result<Mapped, TranslateError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|_| {
        TranslateError::bad_request("invalid_json", "The request body is not valid JSON.")
    })?;
    let Some(obj) = value.as_object() else {
        return Err(TranslateError::invalid("body", "a JSON object"));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(TranslateError::invalid("model", "a non-empty string")),
    };
    let client_stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let session = obj
        .get("prompt_cache_key")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let think = models.resolve(&model)?.think;
    models.rewrite_responses(&mut value)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("stream".into(), Value::Bool(true));
    }
    let mut context = context(model);
    context.think = think;
    Ok(Mapped {
        body: value,
        client_stream,
        session,
        context,
    })
}

/// Re-encodes every event as `event: <type>` plus its data, unchanged.
#[derive(Debug, Default)]
pub struct Relay {
    done: bool,
}

impl StreamTranslator for Relay {
    fn event(&mut self, event_type: &str, data: &[u8], out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let name = (!event_type.is_empty()).then_some(event_type);
        codec::write_event(out, name, data);
        self.done = super::is_terminal(event_type);
    }

    fn finish(&mut self, end: StreamEnd, out: &mut Vec<u8>) {
        if let StreamEnd::Failed { cause, message } = end {
            if !self.done {
                write_error_event(out, Dialect::Responses, cause.code(), &message);
            }
        }
        self.done = true;
    }
}

/// The Response object (200) for a completed or incomplete stream; the OpenAI error shape
/// with the failure's status otherwise (an interrupted stream: its interruption's status and
/// code).
pub fn render(aggregate: Aggregate) -> Rendered {
    match aggregate.outcome {
        Outcome::Completed | Outcome::Incomplete { .. } => Rendered {
            status: 200,
            body: serde_json::to_vec(&aggregate.response).unwrap_or_default(),
        },
        Outcome::Failed(f) => Rendered {
            status: f.status,
            body: error_body(Dialect::Responses, f.status, &f.code, &f.message),
        },
        Outcome::Truncated { cause, message } => Rendered {
            status: cause.status(),
            body: error_body(Dialect::Responses, cause.status(), cause.code(), &message),
        },
    }
}
