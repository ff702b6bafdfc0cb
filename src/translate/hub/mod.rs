//! The Responses hub, seen from a provider whose wire is not Responses.
//!
//! Every client dialect is already translated to and from Responses. A provider wire joins by
//! adding one request mapper (a Responses request → the wire's request) and one
//! [`WireDecoder`] (the wire's events → Responses events). The pipelines in the parent module
//! put the decoder in front of the client dialect's translator, so every client works over
//! every wire without a translator per pair.
//!
//! * [`chat`]: the Chat Completions wire (`chat` providers), and its passthrough pieces for
//!   Chat clients.

pub mod chat;

pub mod anthropic;

/// Where a decoder sends each Responses event it produces: its `type` and its JSON.
pub type Emit<'a> = dyn FnMut(&str, &[u8]) + 'a;

/// Decodes one response of a provider wire into Responses events, one wire event at a time.
///
/// A decoder emits Responses events in the order a Responses upstream would send them
/// (`response.created` first, a terminal `response.completed` / `response.incomplete` /
/// `response.failed` last). It emits no terminal for a wire stream that stops early: the
/// pipeline then ends the client's stream as truncated.
pub trait WireDecoder: Send {
    /// One wire event: its `event:` name, if it had one, and its `data:` (for Chat
    /// Completions also the literal `[DONE]`).
    fn event(&mut self, name: Option<&str>, data: &[u8], emit: &mut Emit<'_>);

    /// The wire stream closed. Emits what a complete wire response still owes (for example a
    /// terminal held back until the stream's end); nothing when the wire response was cut.
    fn finish(&mut self, emit: &mut Emit<'_>);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{chat, AggregatePipeline, Dialect, ResponseContext, StreamPipeline};

    /// A toy wire: `event: text` carries a delta, `event: end` completes, `event: fail` fails.
    struct ToyWire;

    impl WireDecoder for ToyWire {
        fn event(&mut self, name: Option<&str>, data: &[u8], emit: &mut Emit<'_>) {
            match name {
                Some("text") => {
                    let delta = String::from_utf8_lossy(data);
                    let json = serde_json::json!({
                        "type": "response.output_text.delta", "item_id": "m", "output_index": 0,
                        "content_index": 0, "delta": delta,
                    });
                    emit("response.output_text.delta", json.to_string().as_bytes());
                }
                Some("end") => emit("response.completed", RESPONSES_COMPLETED.as_bytes()),
                _ => {}
            }
        }

        fn finish(&mut self, _emit: &mut Emit<'_>) {}
    }

    const RESPONSES_COMPLETED: &str = r#"{"type":"response.completed","response":{"id":"r","status":"completed","output":[{"type":"message","id":"m","role":"assistant","content":[{"type":"output_text","text":"hello"}]}]}}"#;

    const WIRE: &str =
        "event: text\ndata: hel\n\nevent: text\ndata: lo\n\nevent: end\ndata: {}\n\n";

    fn responses_equivalent() -> String {
        let delta = |d: &str| {
            format!(
                "data: {{\"type\":\"response.output_text.delta\",\"item_id\":\"m\",\"output_index\":0,\"content_index\":0,\"delta\":\"{d}\"}}\n\n"
            )
        };
        format!(
            "{}{}data: {RESPONSES_COMPLETED}\n\n",
            delta("hel"),
            delta("lo")
        )
    }

    /// The client's Chat chunks without the per-response id and timestamp.
    fn chunks(out: &[u8]) -> Vec<serde_json::Value> {
        let text = String::from_utf8_lossy(out);
        text.split("\n\n")
            .filter_map(|event| event.strip_prefix("data: "))
            .map(
                |data| match serde_json::from_str::<serde_json::Value>(data) {
                    Ok(mut chunk) => {
                        if let Some(chunk) = chunk.as_object_mut() {
                            chunk.remove("id");
                            chunk.remove("created");
                        }
                        chunk
                    }
                    Err(_) => serde_json::Value::String(data.to_owned()),
                },
            )
            .collect()
    }

    fn chat_context() -> ResponseContext {
        ResponseContext::new(Dialect::Chat, "m", &chat::PARTS)
    }

    #[test]
    fn a_wire_stream_split_anywhere_reads_as_the_responses_stream_it_decodes_to() {
        let mut expected = Vec::new();
        let mut direct = StreamPipeline::new(&chat_context());
        direct.push(responses_equivalent().as_bytes(), &mut expected);
        direct.finish(None, &mut expected);
        assert!(!expected.is_empty());
        for cut in 0..=WIRE.len() {
            let mut pipeline = StreamPipeline::new(&chat_context()).over_wire(Box::new(ToyWire));
            let mut out = Vec::new();
            pipeline.push(&WIRE.as_bytes()[..cut], &mut out);
            pipeline.push(&WIRE.as_bytes()[cut..], &mut out);
            pipeline.finish(None, &mut out);
            assert!(pipeline.saw_terminal());
            assert_eq!(chunks(&out), chunks(&expected), "cut at {cut}");
        }
    }

    #[test]
    fn a_wire_stream_without_its_end_is_truncated_for_the_client() {
        let mut pipeline = StreamPipeline::new(&chat_context()).over_wire(Box::new(ToyWire));
        let mut out = Vec::new();
        pipeline.push(b"event: text\ndata: hel\n\n", &mut out);
        pipeline.finish(None, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(!pipeline.saw_terminal());
        assert!(text.contains("upstream_stream_truncated"), "{text}");
        assert!(!text.contains("[DONE]"), "{text}");
    }

    #[test]
    fn a_non_streaming_client_gets_the_aggregate_of_the_decoded_events() {
        let mut pipeline = AggregatePipeline::new(&chat_context()).over_wire(Box::new(ToyWire));
        pipeline.push(WIRE.as_bytes());
        assert!(pipeline.saw_terminal());
        let rendered = pipeline.finish(None);
        assert_eq!(rendered.status, 200);
        let body: serde_json::Value = serde_json::from_slice(&rendered.body).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "hello");
    }
}
