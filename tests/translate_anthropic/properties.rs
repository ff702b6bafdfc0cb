//! Property tests of the stream state machine. Case counts come from `PROPTEST_CASES`
//! (proptest reads it), so a long run is `PROPTEST_CASES=100000 cargo test --test
//! translate_anthropic properties`.

use codex_proxy::translate::anthropic::{self, MessagesStream};
use codex_proxy::translate::models::ModelTable;
use codex_proxy::translate::{
    Interruption, ResponseContext, StreamEnd, StreamPipeline, StreamTranslator,
};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::grammar::{self, Ending};

const TYPES: &[&str] = &[
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_text.delta",
    "response.output_text.done",
    "response.refusal.delta",
    "response.refusal.done",
    "response.reasoning_summary_part.added",
    "response.reasoning_summary_text.delta",
    "response.reasoning_summary_text.done",
    "response.reasoning_text.delta",
    "response.reasoning_text.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
    "codex.rate_limits",
    "response.something_new",
];

fn context() -> ResponseContext {
    let long = "mcp__server__".to_owned() + &"x".repeat(70);
    let body = json!({
        "model": "gpt-5.4",
        "max_tokens": 10,
        "tools": [{"name": "get"}, {"name": long}],
        "messages": [{"role": "user", "content": "q"}],
    });
    anthropic::map_request(&body, &ModelTable::builtin())
        .unwrap()
        .context
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("<think>".to_owned()),
        Just("</think>".to_owned()),
        Just("{\"a\":".to_owned()),
        prop::collection::vec(prop::char::any(), 0..6).prop_map(|c| c.into_iter().collect()),
    ]
}

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![Just(None), s.prop_map(Some)].boxed()
}

fn item() -> impl Strategy<Value = Value> {
    (
        opt(prop::sample::select(vec![
            "message",
            "reasoning",
            "function_call",
            "web_search_call",
        ])),
        opt(prop::sample::select(vec!["a", "b", "c", ""])),
        opt(prop::sample::select(vec!["call_1", "call_2", ""])),
        opt(prop::sample::select(vec!["get", "mcp__x", "unknown"])),
        opt(text()),
        opt(prop::sample::select(vec!["gAAAAx", ""])),
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(|(kind, id, call_id, name, arguments, enc, parts)| {
            let mut item = json!({});
            let mut set = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    item[k] = v;
                }
            };
            set("type", kind.map(Value::from));
            set("id", id.map(Value::from));
            set("call_id", call_id.map(Value::from));
            set("name", name.map(Value::from));
            set("arguments", arguments.map(Value::from));
            set("encrypted_content", enc.map(Value::from));
            let texts: Vec<Value> = parts
                .iter()
                .map(|t| json!({"type": "output_text", "text": t}))
                .collect();
            item["content"] = Value::Array(texts.clone());
            item["summary"] = Value::Array(texts);
            item
        })
}

fn event() -> impl Strategy<Value = (String, Vec<u8>)> {
    let fields = (
        opt(prop::sample::select(vec!["a", "b", "c", ""])),
        opt(0u64..4),
        opt(0u64..3),
        opt(text()),
        opt(text()),
        opt(item()),
        opt(prop::collection::vec(item(), 0..3)),
        opt(prop::sample::select(vec![
            "max_output_tokens",
            "content_filter",
            "x",
        ])),
        opt(prop::sample::select(vec![
            "rate_limit_exceeded",
            "server_is_overloaded",
            "??",
        ])),
    );
    let structured = (prop::sample::select(TYPES), fields).prop_map(
        |(kind, (item_id, index, sub, delta, full, item, output, reason, code))| {
            let mut ev = json!({"type": kind});
            if let Some(v) = item_id {
                ev["item_id"] = json!(v);
            }
            if let Some(v) = index {
                ev["output_index"] = json!(v);
            }
            if let Some(v) = sub {
                ev["content_index"] = json!(v);
                ev["summary_index"] = json!(v);
            }
            if let Some(v) = delta {
                ev["delta"] = json!(v);
            }
            if let Some(v) = full {
                ev["text"] = json!(v);
                ev["arguments"] = json!(v);
                ev["refusal"] = json!(v);
            }
            if let Some(v) = item {
                ev["item"] = v;
            }
            let mut response = json!({"id": "resp_p", "usage": {"input_tokens": 9, "output_tokens": 3, "input_tokens_details": {"cached_tokens": 4}}});
            if let Some(v) = output {
                response["output"] = Value::Array(v);
            }
            if let Some(v) = reason {
                response["incomplete_details"] = json!({"reason": v});
            }
            if let Some(v) = code {
                response["error"] = json!({"code": v, "message": "m"});
                ev["code"] = json!(v);
                ev["message"] = json!("m");
            }
            ev["response"] = response;
            (kind.to_owned(), serde_json::to_vec(&ev).unwrap())
        },
    );
    prop_oneof![
        8 => structured,
        1 => (prop::sample::select(TYPES), prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(k, data)| (k.to_owned(), data)),
    ]
}

proptest! {
    #[test]
    fn any_event_sequence_gives_a_well_formed_stream(
        events in prop::collection::vec(event(), 0..40),
        thinking in any::<bool>(),
        clean in any::<bool>(),
    ) {
        let ctx = context();
        let mut t = MessagesStream::new(&ctx, thinking);
        let mut out = Vec::new();
        for (kind, data) in &events {
            t.event(kind, data, &mut out);
            // Every prefix is whole, valid events in a valid order.
            let parsed = grammar::parse(&out);
            grammar::check(&parsed);
        }
        let end = if clean {
            StreamEnd::Clean
        } else {
            StreamEnd::Failed { cause: Interruption::Idle, message: "boom \"x\"\n".into() }
        };
        t.finish(end, &mut out);
        let parsed = grammar::parse(&out);
        prop_assert_ne!(grammar::check(&parsed), Ending::Open);
        // Nothing after the end, even if more events and another finish arrive.
        let len = out.len();
        t.event("response.output_text.delta", br#"{"item_id":"a","delta":"late"}"#, &mut out);
        t.finish(StreamEnd::Clean, &mut out);
        prop_assert_eq!(out.len(), len);
    }

    #[test]
    fn arbitrary_upstream_bytes_never_break_the_pipeline(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
    ) {
        let ctx = context();
        let mut pipeline = StreamPipeline::new(&ctx);
        let mut out = Vec::new();
        for c in &chunks {
            pipeline.push(c, &mut out);
        }
        pipeline.finish(None, &mut out);
        let parsed = grammar::parse(&out);
        prop_assert_ne!(grammar::check(&parsed), Ending::Open);
    }
}
