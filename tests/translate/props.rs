//! Property tests: the SSE decoder and the Chat state machine on arbitrary input.

use codex_proxy::translate::codec::Decoder;
use codex_proxy::translate::models::ModelTable;
use codex_proxy::translate::{map_request, Dialect, Interruption, StreamPipeline};
use proptest::prelude::*;
use serde_json::Value;

/// Asserts `out` is whole SSE events (`data:` lines, optional `event:` lines, comments, a
/// blank line after each event) whose data is JSON or `[DONE]`.
pub fn assert_valid_sse(out: &[u8]) {
    let text = std::str::from_utf8(out).expect("client output is UTF-8");
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "output ends with a whole event: {text:?}"
    );
    for event in text.split_terminator("\n\n") {
        let mut data = Vec::new();
        for line in event.split('\n') {
            if let Some(d) = line.strip_prefix("data: ") {
                data.push(d);
            } else {
                assert!(
                    line.starts_with("event: ") || line.starts_with(':'),
                    "unexpected line {line:?} in {text:?}"
                );
            }
        }
        if data.is_empty() {
            continue;
        }
        let data = data.join("\n");
        if data != "[DONE]" {
            serde_json::from_str::<Value>(&data)
                .unwrap_or_else(|e| panic!("data is not JSON ({e}): {data:?}"));
        }
    }
}

fn config() -> ProptestConfig {
    // `ProptestConfig::default()` reads PROPTEST_CASES from the environment.
    ProptestConfig::default()
}

/// Fragments upstream streams are made of, to make interesting inputs likely.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    let types = prop::sample::select(vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.refusal.delta",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.custom_tool_call_input.delta",
        "response.completed",
        "response.incomplete",
        "response.failed",
        "error",
        "codex.rate_limits",
    ]);
    let item_kind = prop::sample::select(vec![
        "message",
        "function_call",
        "custom_tool_call",
        "reasoning",
        "web_search_call",
    ]);
    let s = "[a-z<>/{}\":\\\\ \u{e9}\u{1F600}\n]{0,12}";
    prop_oneof![
        4 => (types, prop::option::of("[a-c]"), prop::option::of(0u64..3), s, item_kind, prop::option::of("[a-z_]{1,70}")).prop_map(
            |(t, item, idx, text, kind, name)| {
                let mut v = serde_json::json!({"type": t, "delta": text, "text": text, "arguments": text,
                    "summary_index": idx, "output_index": idx, "content_index": idx});
                if let Some(item) = item {
                    v["item_id"] = item.clone().into();
                    v["item"] = serde_json::json!({"id": item, "type": kind, "call_id": format!("call_{text}"),
                        "name": name, "arguments": text, "content": [{"type":"output_text","text":text}],
                        "summary": [{"type":"summary_text","text":text}]});
                }
                v["response"] = serde_json::json!({"id":"resp_1","created_at":1,
                    "usage":{"input_tokens":idx,"output_tokens":1},
                    "incomplete_details":{"reason":"max_output_tokens"},
                    "error":{"code":"server_error","message":text}, "output": []});
                format!("event: {t}\ndata: {v}\n\n").into_bytes()
            }
        ),
        1 => prop::collection::vec(any::<u8>(), 0..24),
        1 => prop::sample::select(vec![
            b"\r\n".to_vec(), b"\r".to_vec(), b"\n\n".to_vec(), b"data: [DONE]\n\n".to_vec(),
            b": comment\n".to_vec(), b"data: {\"type\":".to_vec(), "\u{feff}".as_bytes().to_vec(),
            b"data: {}\n\n".to_vec(), b"data:\n\n".to_vec(),
        ]),
    ]
}

fn stream_input() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    prop::collection::vec(fragment(), 0..24).prop_flat_map(|frags| {
        let bytes: Vec<u8> = frags.concat();
        let len = bytes.len();
        (Just(bytes), prop::collection::vec(0..=len, 0..6))
    })
}

fn chat_context(include_usage: bool, think: bool) -> codex_proxy::translate::ResponseContext {
    let models = if think {
        ModelTable::from_json(br#"{"models":{"gpt-5.4":{"think_tags":"reasoning"}}}"#).unwrap()
    } else {
        ModelTable::builtin()
    };
    let body = serde_json::json!({"model":"gpt-5.4","stream":true,
        "stream_options":{"include_usage":include_usage},
        "messages":[{"role":"user","content":"x"}],
        "tools":[{"type":"function","function":{"name": "t".repeat(70)}}]});
    map_request(Dialect::Chat, &serde_json::to_vec(&body).unwrap(), &models)
        .unwrap()
        .context
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decoder_never_panics_and_is_split_invariant((bytes, mut splits) in stream_input()) {
        splits.sort_unstable();
        let decode = |cuts: &[usize]| {
            let mut d = Decoder::new();
            let mut events = Vec::new();
            let mut start = 0;
            for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
                d.push(&bytes[start..end], |e| events.push((e.name.map(str::to_owned), e.data.to_vec()))).unwrap();
                start = end;
            }
            (events, d.finish())
        };
        prop_assert_eq!(decode(&splits), decode(&[]));
    }

    #[test]
    fn chat_stream_emits_only_whole_json_events(
        (bytes, mut splits) in stream_input(),
        include_usage in any::<bool>(),
        think in any::<bool>(),
        failure in prop::option::of(prop::sample::select(vec![
            Interruption::Idle,
            Interruption::Truncated,
            Interruption::UpstreamError,
            Interruption::Deadline,
            Interruption::Shutdown,
        ])),
    ) {
        splits.sort_unstable();
        let ctx = chat_context(include_usage, think);
        let mut p = StreamPipeline::new(&ctx);
        let mut out = Vec::new();
        let mut start = 0;
        for &end in splits.iter().chain(std::iter::once(&bytes.len())) {
            p.push(&bytes[start..end], &mut out);
            assert_valid_sse(&out);
            start = end;
        }
        p.finish(failure, &mut out);
        assert_valid_sse(&out);
        let text = String::from_utf8(out).unwrap();
        // Exactly one ending: `[DONE]` after a terminal event, or an error event; never both.
        let done = text.matches("data: [DONE]\n\n").count();
        let errors = text.matches("data: {\"error\":").count();
        prop_assert_eq!(done + errors, 1, "{}", text);
    }

    #[test]
    fn aggregate_never_panics((bytes, _splits) in stream_input(), dialect in prop::sample::select(vec![Dialect::Chat, Dialect::Responses])) {
        let ctx = match dialect {
            Dialect::Chat => chat_context(false, true),
            _ => codex_proxy::translate::responses::context("gpt-5.4"),
        };
        let mut p = codex_proxy::translate::AggregatePipeline::new(&ctx);
        p.push(&bytes);
        let r = p.finish(None);
        prop_assert!(serde_json::from_slice::<Value>(&r.body).is_ok());
        prop_assert!((200..600).contains(&r.status));
    }
}
