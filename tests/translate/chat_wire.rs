//! The chat wire read through the hub: fixture chat streams (text, think tags, reasoning
//! fields, tool calls, usage, length, in-band errors, cuts, one-JSON-body answers) decoded by
//! `ChatWireDecoder` into Responses events and replayed through `StreamPipeline::over_wire`
//! for Responses, Chat and Anthropic clients, split at every byte boundary, and through
//! `AggregatePipeline::over_wire` for non-streaming clients.

use std::collections::HashSet;

use codex_proxy::translate::hub::chat::{
    decode_body, map_request, ChatWireDecoder, ChatWireOptions,
};
use codex_proxy::translate::think::ThinkMode;
use codex_proxy::translate::tool_names::ToolNameMap;
use codex_proxy::translate::{
    anthropic, chat, responses, AggregatePipeline, Dialect, ResponseContext, StreamPipeline,
};
use serde_json::{json, Value};

const MODEL: &str = "qwen3-coder";

/// One chat chunk as a `data:` event.
fn chunk(delta: Value, finish: Option<&str>) -> String {
    let body = json!({"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,
        "model":"upstream-name","choices":[{"index":0,"delta":delta,"finish_reason":finish}]});
    format!("data: {body}\n\n")
}

fn usage_chunk(prompt: u64, completion: u64) -> String {
    let body = json!({"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,
        "model":"upstream-name","choices":[],
        "usage":{"prompt_tokens":prompt,"completion_tokens":completion,"total_tokens":prompt+completion,
                 "prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":1}}});
    format!("data: {body}\n\n")
}

const DONE: &str = "data: [DONE]\n\n";

fn content(pieces: &[&str]) -> Vec<String> {
    let mut events = vec![chunk(json!({"role":"assistant","content":""}), None)];
    events.extend(pieces.iter().map(|p| chunk(json!({"content":p}), None)));
    events
}

fn finished(mut events: Vec<String>, reason: &str) -> String {
    events.push(chunk(json!({}), Some(reason)));
    events.push(usage_chunk(12, 5));
    events.push(DONE.to_owned());
    events.concat()
}

// --- fixtures ---

fn text_stream() -> String {
    finished(content(&["Hel", "lo, wörld 😀"]), "stop")
}

fn think_stream() -> String {
    finished(
        content(&["<thi", "nk>plan é", "</th", "ink>\n", "\nAns", "wer"]),
        "stop",
    )
}

fn reasoning_content_stream() -> String {
    let mut events = vec![chunk(
        json!({"role":"assistant","content":null,"reasoning_content":"Let me "}),
        None,
    )];
    events.push(chunk(json!({"reasoning_content":"think."}), None));
    events.push(chunk(json!({"content":"Done."}), None));
    finished(events, "stop")
}

/// Ollama's field name, and a server that sends both names with the same text.
fn reasoning_field_stream() -> String {
    let mut events = vec![chunk(
        json!({"role":"assistant","reasoning":"Let me "}),
        None,
    )];
    events.push(chunk(
        json!({"reasoning":"think.","reasoning_content":"think."}),
        None,
    ));
    events.push(chunk(json!({"content":"Done."}), None));
    finished(events, "stop")
}

fn tool_stream() -> String {
    let call = |index: u64, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut function = json!({"arguments": args});
        if let Some(n) = name {
            function["name"] = json!(n);
        }
        let mut c = json!({"index": index, "function": function});
        if let Some(id) = id {
            c["id"] = json!(id);
            c["type"] = json!("function");
        }
        chunk(json!({"tool_calls":[c]}), None)
    };
    let events = vec![
        chunk(json!({"role":"assistant","content":"Checking."}), None),
        call(0, Some("call_A"), Some("shell"), ""),
        call(0, None, None, "{\"cmd\":"),
        call(1, Some("call_B"), Some("read_file"), "{\"path\""),
        call(0, None, None, "\"ls\"}"),
        call(1, None, None, ":\"a.txt\"}"),
    ];
    finished(events, "tool_calls")
}

fn length_stream() -> String {
    finished(content(&["cut sh"]), "length")
}

fn error_stream() -> String {
    let mut events = content(&["partial"]);
    events.push(format!(
        "data: {}\n\n",
        json!({"error":{"message":"model crashed","type":"server_error","code":500}})
    ));
    events.concat()
}

fn cut_stream() -> String {
    content(&["no finish ", "reason"]).concat()
}

fn no_done_stream() -> String {
    let mut events = content(&["fine"]);
    events.push(chunk(json!({}), Some("stop")));
    events.concat()
}

fn fixtures() -> Vec<(&'static str, String)> {
    vec![
        ("text", text_stream()),
        ("think", think_stream()),
        ("reasoning_content", reasoning_content_stream()),
        ("reasoning", reasoning_field_stream()),
        ("tools", tool_stream()),
        ("length", length_stream()),
        ("error", error_stream()),
        ("cut", cut_stream()),
        ("no_done", no_done_stream()),
    ]
}

// --- plumbing ---

fn decoder(think: ThinkMode) -> Box<ChatWireDecoder> {
    Box::new(ChatWireDecoder::new(
        MODEL,
        think,
        ToolNameMap::default(),
        HashSet::new(),
    ))
}

fn contexts() -> Vec<ResponseContext> {
    vec![
        responses::context(MODEL),
        ResponseContext::new(Dialect::Chat, MODEL, &chat::PARTS),
        ResponseContext::new(Dialect::Anthropic, MODEL, &anthropic::WITH_THINKING),
    ]
}

/// The client's bytes for `wire` fed in the given pieces.
fn stream(ctx: &ResponseContext, think: ThinkMode, pieces: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut pipeline = StreamPipeline::new(ctx).over_wire(decoder(think));
    let mut out = Vec::new();
    for piece in pieces {
        pipeline.push(piece, &mut out);
    }
    pipeline.finish(None, &mut out);
    (out, pipeline.saw_terminal())
}

/// The non-streaming answer in `ctx`'s dialect, as JSON, with its status.
fn aggregate(ctx: &ResponseContext, think: ThinkMode, wire: &str) -> (u16, Value) {
    let mut pipeline = AggregatePipeline::new(ctx).over_wire(decoder(think));
    pipeline.push(wire.as_bytes());
    let rendered = pipeline.finish(None);
    (
        rendered.status,
        serde_json::from_slice(&rendered.body).unwrap(),
    )
}

/// Chat and Anthropic answers carry ids and timestamps made per response: compare the rest.
fn scrub(out: &[u8]) -> String {
    let text = String::from_utf8(out.to_vec()).unwrap();
    let mut scrubbed = String::new();
    for event in text.split_inclusive("\n\n") {
        let mut line_out = Vec::new();
        for line in event.lines() {
            match line
                .strip_prefix("data: ")
                .map(serde_json::from_str::<Value>)
            {
                Some(Ok(mut v)) => {
                    for key in ["created", "created_at"] {
                        if let Some(o) = v.as_object_mut() {
                            o.remove(key);
                        }
                    }
                    line_out.push(format!("data: {v}"));
                }
                _ => line_out.push(line.to_owned()),
            }
        }
        scrubbed.push_str(&line_out.join("\n"));
        scrubbed.push_str("\n\n");
    }
    scrubbed
}

// --- every fixture, every dialect, every split ---

#[test]
fn every_fixture_reads_the_same_split_at_every_byte_boundary_in_every_dialect() {
    for (name, wire) in fixtures() {
        let bytes = wire.as_bytes();
        for ctx in contexts() {
            let modes: &[ThinkMode] = match name {
                "think" => &[ThinkMode::Off, ThinkMode::Strip, ThinkMode::Reasoning],
                _ => &[ThinkMode::Reasoning],
            };
            for &think in modes {
                let (whole, terminal) = stream(&ctx, think, &[bytes]);
                assert_eq!(
                    terminal,
                    !matches!(name, "cut"),
                    "{name} {:?} {think:?}",
                    ctx.dialect
                );
                for cut in 0..=bytes.len() {
                    let (out, _) = stream(&ctx, think, &[&bytes[..cut], &bytes[cut..]]);
                    assert!(
                        out == whole,
                        "{name} {:?} {think:?} cut at {cut}",
                        ctx.dialect
                    );
                }
                let singles: Vec<&[u8]> = bytes.chunks(1).collect();
                let (out, _) = stream(&ctx, think, &singles);
                assert_eq!(
                    scrub(&out),
                    scrub(&whole),
                    "{name} {:?} {think:?} byte by byte",
                    ctx.dialect
                );
            }
        }
    }
}

// --- what each fixture says, per dialect ---

#[test]
fn text_is_a_completed_message_with_usage() {
    let [r, c, a] = answers(ThinkMode::Off, &text_stream());
    assert_eq!(r.0, 200);
    assert_eq!(r.1["status"], "completed");
    assert_eq!(r.1["id"], "resp_abc");
    assert_eq!(r.1["model"], MODEL);
    assert_eq!(r.1["output"][0]["content"][0]["text"], "Hello, wörld 😀");
    assert_eq!(
        r.1["usage"],
        json!({"input_tokens":12,"input_tokens_details":{"cached_tokens":3},"output_tokens":5,
               "output_tokens_details":{"reasoning_tokens":1},"total_tokens":17})
    );
    assert_eq!(c.1["choices"][0]["message"]["content"], "Hello, wörld 😀");
    assert_eq!(c.1["choices"][0]["finish_reason"], "stop");
    assert_eq!(c.1["usage"]["prompt_tokens"], 12);
    assert_eq!(
        a.1["content"],
        json!([{"type":"text","text":"Hello, wörld 😀"}])
    );
    assert_eq!(a.1["stop_reason"], "end_turn");
    assert_eq!(a.1["usage"]["output_tokens"], 5);
}

/// The non-streaming answers for Responses, Chat and Anthropic clients.
fn answers(think: ThinkMode, wire: &str) -> [(u16, Value); 3] {
    let c = contexts();
    [
        aggregate(&c[0], think, wire),
        aggregate(&c[1], think, wire),
        aggregate(&c[2], think, wire),
    ]
}

#[test]
fn think_tags_follow_the_models_rule() {
    let [r, c, a] = answers(ThinkMode::Strip, &think_stream());
    assert_eq!(r.1["output"].as_array().unwrap().len(), 1);
    assert_eq!(r.1["output"][0]["content"][0]["text"], "Answer");
    assert_eq!(c.1["choices"][0]["message"]["content"], "Answer");
    assert_eq!(a.1["content"], json!([{"type":"text","text":"Answer"}]));

    let [r, c, a] = answers(ThinkMode::Reasoning, &think_stream());
    assert_eq!(r.1["output"][0]["type"], "reasoning");
    assert_eq!(r.1["output"][0]["content"][0]["text"], "plan é");
    assert_eq!(r.1["output"][1]["content"][0]["text"], "\n\nAnswer");
    assert_eq!(c.1["choices"][0]["message"]["reasoning_content"], "plan é");
    assert_eq!(c.1["choices"][0]["message"]["content"], "\n\nAnswer");
    assert_eq!(a.1["content"][0]["type"], "thinking");
    assert_eq!(a.1["content"][0]["thinking"], "plan é");
    assert_eq!(a.1["content"][1]["text"], "\n\nAnswer");

    let [r, ..] = answers(ThinkMode::Off, &think_stream());
    assert_eq!(
        r.1["output"][0]["content"][0]["text"],
        "<think>plan é</think>\n\nAnswer"
    );
}

#[test]
fn think_tags_split_anywhere_in_the_content() {
    let text = "<think>ré\nflexion</think> \n Réponse <b>ok</b>";
    let cuts: Vec<usize> = (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect();
    for &a in &cuts {
        for &b in cuts.iter().filter(|&&b| b >= a) {
            let wire = finished(content(&[&text[..a], &text[a..b], &text[b..]]), "stop");
            let ctx = responses::context(MODEL);
            let (_, strip) = aggregate(&ctx, ThinkMode::Strip, &wire);
            let out = strip["output"].as_array().unwrap();
            assert_eq!(out.len(), 1, "{a} {b}");
            assert_eq!(out[0]["content"][0]["text"], "Réponse <b>ok</b>", "{a} {b}");
            let (_, reasoning) = aggregate(&ctx, ThinkMode::Reasoning, &wire);
            assert_eq!(
                reasoning["output"][0]["content"][0]["text"], "ré\nflexion",
                "{a} {b}"
            );
            assert_eq!(
                reasoning["output"][1]["content"][0]["text"], " \n Réponse <b>ok</b>",
                "{a} {b}"
            );
        }
    }
}

#[test]
fn reasoning_fields_become_a_reasoning_item_before_the_message() {
    for wire in [reasoning_content_stream(), reasoning_field_stream()] {
        let [r, c, a] = answers(ThinkMode::Off, &wire);
        assert_eq!(r.1["output"][0]["type"], "reasoning");
        assert_eq!(
            r.1["output"][0]["content"],
            json!([{"type":"reasoning_text","text":"Let me think."}])
        );
        assert_eq!(r.1["output"][1]["content"][0]["text"], "Done.");
        assert_eq!(
            c.1["choices"][0]["message"]["reasoning_content"],
            "Let me think."
        );
        assert_eq!(c.1["choices"][0]["message"]["content"], "Done.");
        assert_eq!(a.1["content"][0]["thinking"], "Let me think.");
        assert_eq!(a.1["content"][1]["text"], "Done.");
    }
}

#[test]
fn tool_call_deltas_keyed_by_index_become_function_calls() {
    let [r, c, a] = answers(ThinkMode::Off, &tool_stream());
    assert_eq!(r.1["status"], "completed");
    let out = r.1["output"].as_array().unwrap();
    assert_eq!(out[0]["content"][0]["text"], "Checking.");
    assert_eq!(
        (
            &out[1]["type"],
            &out[1]["call_id"],
            &out[1]["name"],
            &out[1]["arguments"]
        ),
        (
            &json!("function_call"),
            &json!("call_A"),
            &json!("shell"),
            &json!("{\"cmd\":\"ls\"}")
        )
    );
    assert_eq!(
        (&out[2]["call_id"], &out[2]["name"], &out[2]["arguments"]),
        (
            &json!("call_B"),
            &json!("read_file"),
            &json!("{\"path\":\"a.txt\"}")
        )
    );
    let calls = &c.1["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls[0]["id"], "call_A");
    assert_eq!(calls[1]["function"]["arguments"], "{\"path\":\"a.txt\"}");
    assert_eq!(c.1["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(a.1["stop_reason"], "tool_use");
    assert_eq!(
        a.1["content"][1],
        json!({"type":"tool_use","id":"call_A","name":"shell","input":{"cmd":"ls"}})
    );
    assert_eq!(a.1["content"][2]["input"], json!({"path":"a.txt"}));
}

#[test]
fn tool_arguments_stream_as_they_arrive() {
    let (out, _) = stream(
        &responses::context(MODEL),
        ThinkMode::Off,
        &[tool_stream().as_bytes()],
    );
    let text = String::from_utf8(out).unwrap();
    let deltas: Vec<Value> = text
        .split("\n\n")
        .filter(|e| e.contains("response.function_call_arguments.delta"))
        .map(|e| serde_json::from_str(e.split("data: ").nth(1).unwrap()).unwrap())
        .collect();
    let got: Vec<(&str, &str)> = deltas
        .iter()
        .map(|d| (d["item_id"].as_str().unwrap(), d["delta"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("fc_abc_1", "{\"cmd\":"),
            ("fc_abc_2", "{\"path\""),
            ("fc_abc_1", "\"ls\"}"),
            ("fc_abc_2", ":\"a.txt\"}"),
        ]
    );
}

#[test]
fn long_tool_names_come_back_as_the_client_sent_them_and_custom_tools_as_custom_calls() {
    let long = format!("mcp__files__{}", "read_".repeat(20));
    let request = map_request(
        &json!({"model":MODEL,"input":"x","tools":[{"type":"function","name":long},
                 {"type":"custom","name":"apply_patch"}]}),
        &ChatWireOptions::default(),
    )
    .unwrap();
    let short = request.body["tools"][0]["function"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(short, long);
    let call = |index: u64, id: &str, name: &str, args: &str| {
        chunk(
            json!({"tool_calls":[{"index":index,"id":id,"type":"function",
            "function":{"name":name,"arguments":args}}]}),
            None,
        )
    };
    let wire = finished(
        vec![
            call(0, "c1", &short, "{}"),
            call(1, "c2", "apply_patch", "{\"input\":\"*** Begin Patch\"}"),
        ],
        "tool_calls",
    );
    let mut pipeline = AggregatePipeline::new(&responses::context(MODEL))
        .over_wire(Box::new(request.decoder(MODEL, ThinkMode::Off)));
    pipeline.push(wire.as_bytes());
    let body: Value = serde_json::from_slice(&pipeline.finish(None).body).unwrap();
    assert_eq!(body["output"][0]["name"], json!(long));
    assert_eq!(body["output"][1]["type"], "custom_tool_call");
    assert_eq!(body["output"][1]["name"], "apply_patch");
    assert_eq!(body["output"][1]["input"], "*** Begin Patch");
}

#[test]
fn length_and_content_filter_are_incomplete() {
    let [r, c, a] = answers(ThinkMode::Off, &length_stream());
    assert_eq!(r.1["status"], "incomplete");
    assert_eq!(r.1["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(c.1["choices"][0]["finish_reason"], "length");
    assert_eq!(a.1["stop_reason"], "max_tokens");
    let [r, c, _] = answers(
        ThinkMode::Off,
        &finished(content(&["no"]), "content_filter"),
    );
    assert_eq!(r.1["incomplete_details"]["reason"], "content_filter");
    assert_eq!(c.1["choices"][0]["finish_reason"], "content_filter");
}

#[test]
fn an_in_band_error_fails_the_response_with_a_known_code() {
    let [r, c, a] = answers(ThinkMode::Off, &error_stream());
    assert_eq!(r.0, 502);
    assert_eq!(r.1["error"]["code"], "server_error");
    assert_eq!(r.1["error"]["message"], "model crashed");
    assert_eq!(c.0, 502);
    assert_eq!(a.1["type"], "error");
    for (error, code, status) in [
        (
            json!({"message":"slow down","type":"rate_limit_exceeded"}),
            "rate_limit_exceeded",
            429,
        ),
        (
            json!({"message":"too long","type":"exceed_context_size_error","code":400}),
            "context_length_exceeded",
            400,
        ),
        (
            json!({"message":"busy","code":503}),
            "server_is_overloaded",
            503,
        ),
        (json!("plain text error"), "server_error", 502),
    ] {
        let wire = format!("data: {}\n\n", json!({ "error": error }));
        let (status_got, body) = aggregate(&responses::context(MODEL), ThinkMode::Off, &wire);
        assert_eq!(
            (status_got, body["error"]["code"].as_str().unwrap()),
            (status, code),
            "{error}"
        );
    }
    // Streaming: the error event in each dialect, never a clean end.
    for ctx in contexts() {
        let (out, terminal) = stream(&ctx, ThinkMode::Off, &[error_stream().as_bytes()]);
        let text = String::from_utf8(out).unwrap();
        assert!(terminal);
        assert!(text.contains("model crashed"), "{text}");
        assert!(
            !text.contains("[DONE]") && !text.contains("message_stop"),
            "{text}"
        );
    }
}

#[test]
fn a_stream_cut_before_finish_reason_ends_in_the_clients_error_event() {
    for wire in [cut_stream(), content(&["x"]).concat() + DONE] {
        for ctx in contexts() {
            let (out, terminal) = stream(&ctx, ThinkMode::Off, &[wire.as_bytes()]);
            let text = String::from_utf8(out).unwrap();
            assert!(!terminal, "{:?}", ctx.dialect);
            assert!(
                text.contains("upstream_stream_truncated") || text.contains("ended before"),
                "{text}"
            );
            assert!(!text.contains("[DONE]"), "{text}");
            assert!(!text.contains("message_stop"), "{text}");
            assert!(!text.contains("response.completed"), "{text}");
        }
        let (status, _) = aggregate(&responses::context(MODEL), ThinkMode::Off, &wire);
        assert_eq!(status, 502);
    }
}

#[test]
fn a_missing_done_after_finish_reason_is_tolerated() {
    let [r, c, a] = answers(ThinkMode::Off, &no_done_stream());
    assert_eq!(r.1["status"], "completed");
    assert_eq!(c.1["choices"][0]["message"]["content"], "fine");
    assert_eq!(a.1["stop_reason"], "end_turn");
    let (out, terminal) = stream(
        &ResponseContext::new(Dialect::Chat, MODEL, &chat::PARTS),
        ThinkMode::Off,
        &[no_done_stream().as_bytes()],
    );
    assert!(terminal);
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("data: [DONE]\n\n"));
}

#[test]
fn a_one_json_body_answer_reads_as_the_same_events() {
    let body = json!({"id":"chatcmpl-abc","object":"chat.completion","created":1700000000,"model":"x",
        "choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant",
            "content":"<think>hmm</think>Calling.","tool_calls":[{"id":"c1","type":"function",
            "function":{"name":"shell","arguments":"{\"cmd\":\"ls\"}"}}]}}],
        "usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}});
    let mut body_decoder = ChatWireDecoder::new(
        MODEL,
        ThinkMode::Reasoning,
        ToolNameMap::default(),
        HashSet::new(),
    );
    let mut events: Vec<(String, Value)> = Vec::new();
    decode_body(
        &mut body_decoder,
        body.to_string().as_bytes(),
        &mut |kind: &str, data: &[u8]| {
            events.push((kind.to_owned(), serde_json::from_slice(data).unwrap()))
        },
    );
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], "hmm");
    assert_eq!(done["output"][1]["content"][0]["text"], "Calling.");
    assert_eq!(done["output"][2]["arguments"], "{\"cmd\":\"ls\"}");
    assert_eq!(done["usage"]["total_tokens"], 6);
    // The same body read as the one chunk of a stream gives the same events.
    let wire = format!("data: {body}\n\n{DONE}");
    let mut pipeline =
        StreamPipeline::new(&responses::context(MODEL)).over_wire(decoder(ThinkMode::Reasoning));
    let mut out = Vec::new();
    pipeline.push(wire.as_bytes(), &mut out);
    pipeline.finish(None, &mut out);
    let streamed: Vec<String> = String::from_utf8(out)
        .unwrap()
        .split_terminator("\n\n")
        .map(|e| {
            e.lines()
                .next()
                .unwrap()
                .trim_start_matches("event: ")
                .to_owned()
        })
        .collect();
    assert_eq!(streamed, kinds);
}

#[test]
fn a_call_named_in_a_later_fragment_and_without_an_id_is_still_one_call() {
    let wire = finished(
        vec![
            chunk(
                json!({"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}),
                None,
            ),
            chunk(
                json!({"tool_calls":[{"index":0,"function":{"name":"late","arguments":":1}"}}]}),
                None,
            ),
            chunk(json!({"content":"after"}), None),
        ],
        "tool_calls",
    );
    let [r, c, a] = answers(ThinkMode::Off, &wire);
    let out = r.1["output"].as_array().unwrap();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        (&out[0]["name"], &out[0]["arguments"], &out[0]["call_id"]),
        (&json!("late"), &json!("{\"a\":1}"), &json!("call_abc_0"))
    );
    assert_eq!(out[1]["content"][0]["text"], "after");
    assert_eq!(
        c.1["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "late"
    );
    assert_eq!(a.1["content"][0]["input"], json!({"a":1}));
}

#[test]
fn whole_calls_that_all_say_index_0_stay_separate_calls() {
    let call = |id: &str, name: &str, args: &str| {
        chunk(
            json!({"tool_calls":[{"index":0,"id":id,"type":"function",
            "function":{"name":name,"arguments":args}}]}),
            None,
        )
    };
    let wire = finished(
        vec![call("a", "one", "{\"x\":1}"), call("b", "two", "{\"y\":2}")],
        "tool_calls",
    );
    let [r, ..] = answers(ThinkMode::Off, &wire);
    let out = r.1["output"].as_array().unwrap();
    let calls: Vec<(&str, &str, &str)> = out
        .iter()
        .map(|c| {
            (
                c["call_id"].as_str().unwrap(),
                c["name"].as_str().unwrap(),
                c["arguments"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [("a", "one", "{\"x\":1}"), ("b", "two", "{\"y\":2}")]
    );
}

#[test]
fn decoded_events_are_numbered_in_order_as_a_responses_upstream_numbers_them() {
    let (out, _) = stream(
        &responses::context(MODEL),
        ThinkMode::Reasoning,
        &[think_stream().as_bytes()],
    );
    let text = String::from_utf8(out).unwrap();
    let numbers: Vec<u64> = text
        .split_terminator("\n\n")
        .map(|e| {
            let data = e.split("data: ").nth(1).unwrap();
            serde_json::from_str::<Value>(data).unwrap()["sequence_number"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(numbers.len() > 5);
    assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>());
}
