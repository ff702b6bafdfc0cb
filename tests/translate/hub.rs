//! The Anthropic Messages wire in the Responses hub (`src/translate/hub/anthropic`).
//!
//! Every case under `tests/fixtures/translate/hub_anthropic/` is a Messages stream
//! (`<name>.wire.sse`, optionally with the Responses request that asked for it,
//! `<name>.request.json`, whose freeform tools the decoder must know) replayed through
//! `StreamPipeline::over_wire` and `AggregatePipeline::over_wire` for a Responses client and a
//! Chat client (with `include_usage`): whole, split at every byte boundary, and one byte at a
//! time, with the same output each time. Goldens: `<name>.responses.sse`, `<name>.chat.sse`
//! (client streams) and `<name>.responses.json`, `<name>.chat.json` (non-streaming answers,
//! `{"status","body"}`). Timestamps are zeroed before comparing (the hub stamps `created_at`
//! with the time of the response). `TRANSLATE_BLESS=1` writes missing goldens.
//!
//! Also: the thinking signature round trip (decoded items sent back as the next request's
//! input reach Anthropic as the same signed blocks), `<name>.request.json` →
//! `<name>.messages.json` request goldens, every fixture cut at every byte (never a success),
//! and a proptest property over arbitrary Messages-like input (whole events, one ending).

use std::path::{Path, PathBuf};

use codex_proxy::translate::hub::anthropic::{map_request, MessagesDecoder};
use codex_proxy::translate::{
    chat, responses, AggregatePipeline, Dialect, ResponseContext, StreamPipeline,
};
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use crate::goldens::{golden, split_points};
use crate::props::assert_valid_sse;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/translate/hub_anthropic")
}

/// Replaces the digits after `"created_at":` and `"created":` with `0`.
fn zero_times(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    loop {
        let next = ["\"created_at\":", "\"created\":"]
            .iter()
            .filter_map(|k| rest.find(k).map(|i| (i, k.len())))
            .min();
        let Some((at, len)) = next else {
            out.push_str(rest);
            return out.into_bytes();
        };
        out.push_str(&rest[..at + len]);
        rest = &rest[at + len..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            out.push('0');
            rest = &rest[digits..];
        }
    }
}

fn decoder(custom: &[String]) -> Box<MessagesDecoder> {
    Box::new(MessagesDecoder::new(custom.to_vec()))
}

fn stream(ctx: &ResponseContext, custom: &[String], wire: &[u8], splits: &[usize]) -> Vec<u8> {
    let mut p = StreamPipeline::new(ctx).over_wire(decoder(custom));
    let mut out = Vec::new();
    let mut start = 0;
    for &end in splits.iter().chain(std::iter::once(&wire.len())) {
        p.push(&wire[start..end], &mut out);
        start = end;
    }
    p.finish(None, &mut out);
    zero_times(&out)
}

fn aggregate(ctx: &ResponseContext, custom: &[String], wire: &[u8], splits: &[usize]) -> Value {
    let mut p = AggregatePipeline::new(ctx).over_wire(decoder(custom));
    let mut start = 0;
    for &end in splits.iter().chain(std::iter::once(&wire.len())) {
        p.push(&wire[start..end]);
        start = end;
    }
    let r = p.finish(None);
    let body: Value = serde_json::from_slice(&zero_times(&r.body)).unwrap();
    json!({"status": r.status, "body": body})
}

fn replay(name: &str, ctx: &ResponseContext, custom: &[String], wire: &[u8]) -> (Vec<u8>, Value) {
    let whole = stream(ctx, custom, wire, &[]);
    let whole_agg = aggregate(ctx, custom, wire, &[]);
    for i in split_points(wire.len()) {
        assert_eq!(
            String::from_utf8_lossy(&stream(ctx, custom, wire, &[i])),
            String::from_utf8_lossy(&whole),
            "{name}: stream split at {i}"
        );
        assert_eq!(
            aggregate(ctx, custom, wire, &[i]),
            whole_agg,
            "{name}: aggregate split at {i}"
        );
    }
    let bytes: Vec<usize> = (1..wire.len()).collect();
    assert_eq!(
        stream(ctx, custom, wire, &bytes),
        whole,
        "{name}: byte by byte"
    );
    assert_eq!(
        aggregate(ctx, custom, wire, &bytes),
        whole_agg,
        "{name}: byte by byte"
    );
    (whole, whole_agg)
}

fn contexts() -> [(&'static str, ResponseContext); 2] {
    let mut chat = ResponseContext::new(Dialect::Chat, "claude-sonnet-4-5", &chat::PARTS);
    chat.include_usage = true;
    [
        ("responses", responses::context("claude-sonnet-4-5")),
        ("chat", chat),
    ]
}

fn cases(suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| {
            let f = e.unwrap().file_name().into_string().unwrap();
            f.strip_suffix(suffix).map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn anthropic_wire_goldens_for_responses_and_chat_clients() {
    let names = cases(".wire.sse");
    assert!(names.len() >= 12, "{names:?}");
    for case in &names {
        let file = |ext: &str| dir().join(format!("{case}.{ext}"));
        let custom = match std::fs::read(file("request.json")) {
            Ok(bytes) => {
                let request: Value = serde_json::from_slice(&bytes).unwrap();
                map_request(&request).unwrap().custom_tools().to_vec()
            }
            Err(_) => Vec::new(),
        };
        let wire = std::fs::read(file("wire.sse")).unwrap();
        for (client, ctx) in contexts() {
            let (out, rendered) = replay(&format!("{case} ({client})"), &ctx, &custom, &wire);
            assert_valid_sse(&out);
            golden(&file(&format!("{client}.sse")), &out, false);
            golden(
                &file(&format!("{client}.json")),
                &serde_json::to_vec(&rendered).unwrap(),
                true,
            );
        }
    }
}

#[test]
fn anthropic_request_goldens() {
    let names = cases(".request.json");
    assert!(!names.is_empty());
    for case in &names {
        let file = |ext: &str| dir().join(format!("{case}.{ext}"));
        let request: Value =
            serde_json::from_slice(&std::fs::read(file("request.json")).unwrap()).unwrap();
        let mapped = map_request(&request).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(mapped.body["stream"], true, "{case}");
        golden(
            &file("messages.json"),
            &serde_json::to_vec(&mapped.body).unwrap(),
            true,
        );
    }
}

/// What a Responses client (Codex) sends back after a turn: the output items of the decoded
/// response, then its tool's output.
#[test]
fn thinking_signatures_round_trip_through_a_responses_client() {
    let wire = std::fs::read(dir().join("thinking_signature.wire.sse")).unwrap();
    let ctx = responses::context("claude-sonnet-4-5");
    let mut p = AggregatePipeline::new(&ctx).over_wire(decoder(&[]));
    p.push(&wire);
    let r = p.finish(None);
    assert_eq!(r.status, 200);
    let response: Value = serde_json::from_slice(&r.body).unwrap();
    let mut input = vec![json!({"role": "user", "content": "where am I?"})];
    input.extend(response["output"].as_array().unwrap().iter().cloned());
    input.push(json!({"type": "function_call_output", "call_id": "toolu_01C", "output": "/home"}));
    let next = json!({"model": "claude-sonnet-4-5", "stream": true, "input": input,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object"}}]});
    let body = map_request(&next).unwrap().body;
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "where am I?"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Let me think step by step.",
                 "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxsig=="},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
                {"type": "text", "text": "Answer."},
                {"type": "tool_use", "id": "toolu_01C", "name": "shell", "input": {"cmd": "pwd"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01C", "content": "/home"},
            ]},
        ])
    );
    // The signed block leads the tool loop, so thinking stays on.
    assert_eq!(
        body["thinking"],
        json!({"type": "enabled", "budget_tokens": 8192})
    );
}

/// The same for a Chat client, which returns no reasoning: the tool loop goes on without
/// thinking rather than being refused by Anthropic.
#[test]
fn a_chat_tool_loop_over_the_hub_maps_to_a_valid_messages_request() {
    let chat_request = json!({"model": "claude-sonnet-4-5", "stream": false, "reasoning_effort": "high",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "where am I?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_01C", "type": "function",
                "function": {"name": "shell", "arguments": "{\"cmd\":\"pwd\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_01C", "content": "/home"},
        ],
        "tools": [{"type": "function", "function": {"name": "shell", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}}]});
    let mapped = codex_proxy::translate::map_request(
        Dialect::Chat,
        &serde_json::to_vec(&chat_request).unwrap(),
        &codex_proxy::translate::models::ModelTable::builtin(),
    )
    .unwrap();
    assert!(!mapped.client_stream);
    let body = map_request(&mapped.body).unwrap().body;
    // The Chat mapper always derives a stable prompt_cache_key, so the breakpoints are set.
    let ephemeral = json!({"type": "ephemeral"});
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": "Be brief.", "cache_control": ephemeral}])
    );
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "where am I?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_01C", "name": "shell", "input": {"cmd": "pwd"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01C", "content": "/home",
                 "cache_control": ephemeral}]},
        ])
    );
    assert!(body.get("thinking").is_none());
    assert_eq!(body["tools"][0]["name"], "shell");
}

/// Every fixture cut at every byte: the client never sees a success for a stream that ended
/// before `message_stop` (no `response.completed` for Responses, no `[DONE]` for Chat), its
/// output is whole SSE events, and it always ends with an end the client can read.
#[test]
fn a_wire_stream_cut_anywhere_before_message_stop_never_completes() {
    for case in cases(".wire.sse") {
        let wire = std::fs::read(dir().join(format!("{case}.wire.sse"))).unwrap();
        let complete_at = find(&wire, b"message_stop\"}")
            .map(|i| i + b"message_stop\"}".len())
            .unwrap_or(usize::MAX);
        for cut in 0..=wire.len() {
            for (client, ctx) in contexts() {
                let out = stream(&ctx, &[], &wire[..cut], &[]);
                assert_valid_sse(&out);
                let text = String::from_utf8_lossy(&out);
                let completed = text.contains("response.completed")
                    || text.contains("response.incomplete")
                    || text.contains("[DONE]");
                if cut < complete_at {
                    assert!(!completed, "{case} ({client}) cut at {cut}: {text}");
                    assert!(
                        text.contains("\"error\"") || text.contains("response.failed"),
                        "{case} ({client}) cut at {cut}: no error event: {text}"
                    );
                }
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Fragments of Messages streams, to make interesting inputs likely: every event type, blocks
/// opened, fed and closed in any order, stop reasons, errors, and raw bytes.
fn wire_fragment() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let block = prop::sample::select(vec![
        "text",
        "thinking",
        "redacted_thinking",
        "tool_use",
        "server_tool_use",
    ]);
    let delta = prop::sample::select(vec![
        ("text_delta", "text"),
        ("thinking_delta", "thinking"),
        ("input_json_delta", "partial_json"),
        ("signature_delta", "signature"),
        ("citations_delta", "citation"),
    ]);
    let reason = prop::sample::select(vec![
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "tool_use",
        "pause_turn",
        "refusal",
        "model_context_window_exceeded",
        "something_new",
    ]);
    let s = "[a-z{}\":\\\\ \u{e9}\u{1F600}\n]{0,10}";
    let event = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n").into_bytes();
    prop_oneof![
        1 => Just(event("message_start", json!({"type":"message_start","message":{"id":"msg_p","model":"m","usage":{"input_tokens":3,"cache_read_input_tokens":1}}}))),
        3 => (0u64..3, block, s).prop_map(move |(i, kind, text)| event("content_block_start",
            json!({"type":"content_block_start","index":i,"content_block":{"type":kind,"text":text,"thinking":"","id":"toolu_p","name":"apply_patch","input":{},"data":text}}))),
        6 => (0u64..3, delta, s).prop_map(move |(i, (kind, field), text)| {
            let mut d = json!({"type": kind});
            d[field] = text.into();
            event("content_block_delta", json!({"type":"content_block_delta","index":i,"delta":d}))
        }),
        2 => (0u64..3).prop_map(move |i| event("content_block_stop", json!({"type":"content_block_stop","index":i}))),
        1 => (reason, 0u64..9).prop_map(move |(r, n)| event("message_delta", json!({"type":"message_delta","delta":{"stop_reason":r},"usage":{"output_tokens":n}}))),
        1 => Just(event("message_stop", json!({"type":"message_stop"}))),
        1 => Just(event("ping", json!({"type":"ping"}))),
        1 => Just(event("error", json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}))),
        1 => prop::collection::vec(any::<u8>(), 0..16),
        1 => prop::sample::select(vec![b"\r\n".to_vec(), b"\n\n".to_vec(), b": c\n".to_vec(), b"data: {\"type\":".to_vec()]),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::default())]

    /// Whatever the wire sends, split anywhere: whole SSE events out, and exactly one ending
    /// for a Chat client (`[DONE]` after a terminal, or an error event).
    #[test]
    fn any_wire_input_gives_whole_events_and_one_ending(
        frags in proptest::collection::vec(wire_fragment(), 0..24),
        cut in proptest::prelude::any::<proptest::sample::Index>(),
    ) {
        let wire = frags.concat();
        let cut = cut.index(wire.len() + 1);
        let custom = ["apply_patch".to_owned()];
        for (client, ctx) in contexts() {
            let out = stream(&ctx, &custom, &wire, &[cut]);
            assert_valid_sse(&out);
            let text = String::from_utf8(out).unwrap();
            if client == "chat" {
                let done = text.matches("data: [DONE]\n\n").count();
                let errors = text.matches("data: {\"error\":").count();
                proptest::prop_assert_eq!(done + errors, 1, "{}", text);
            }
            let agg = aggregate(&ctx, &custom, &wire, &[cut]);
            proptest::prop_assert!((200..600).contains(&agg["status"].as_u64().unwrap()));
        }
    }
}
