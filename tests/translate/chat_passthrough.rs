//! Chat clients → a chat provider: the request rewrite and the streaming passthrough stage
//! (same bytes unless the think-tag rule or the extra usage chunk applies), split at every
//! byte boundary, plus a property test over random tag placement and random splits.

use codex_proxy::translate::codec::DecodeError;
use codex_proxy::translate::hub::chat::{completion_as_stream, rewrite_request, ChatPassthrough};
use codex_proxy::translate::think::ThinkMode;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let body = json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",
        "choices":[{"index":0,"delta":delta,"finish_reason":finish}]});
    format!("data: {body}\n\n")
}

const USAGE: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n";
const DONE: &str = "data: [DONE]\n\n";

fn stream_of(pieces: &[&str]) -> String {
    let mut s = chunk(json!({"role":"assistant","content":""}), None);
    for p in pieces {
        s.push_str(&chunk(json!({ "content": p }), None));
    }
    s.push_str(&chunk(json!({}), Some("stop")));
    s.push_str(USAGE);
    s.push_str(DONE);
    s
}

fn run(
    mode: ThinkMode,
    client_usage: bool,
    pieces: &[&[u8]],
) -> (Vec<u8>, Result<(), DecodeError>, ChatPassthrough) {
    let mut stage = ChatPassthrough::new(mode, client_usage);
    let mut out = Vec::new();
    for p in pieces {
        stage.push(p, &mut out).unwrap();
    }
    let end = stage.finish(&mut out);
    (out, end, stage)
}

/// Joined `content` and `reasoning_content` of the chunks in a client stream.
fn said(out: &[u8]) -> (String, String) {
    let text = String::from_utf8(out.to_vec()).unwrap();
    let (mut content, mut reasoning) = (String::new(), String::new());
    for event in text.split("\n\n") {
        let Some(data) = event.strip_prefix("data: ") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        let delta = &v["choices"][0]["delta"];
        content.push_str(delta["content"].as_str().unwrap_or(""));
        reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or(""));
    }
    (content, reasoning)
}

/// What the rule makes of a whole text: (content, reasoning).
fn reference(mode: ThinkMode, text: &str) -> (String, String) {
    let (mut content, mut reasoning) = (String::new(), String::new());
    let mut rest = text;
    let mut trim = false;
    loop {
        let Some(open) = rest.find("<think>") else {
            let tail = if trim { rest.trim_start() } else { rest };
            content.push_str(tail);
            break;
        };
        let before = if trim {
            rest[..open].trim_start()
        } else {
            &rest[..open]
        };
        content.push_str(before);
        let inner = &rest[open + 7..];
        match inner.find("</think>") {
            Some(close) => {
                reasoning.push_str(&inner[..close]);
                rest = &inner[close + 8..];
                trim = mode == ThinkMode::Strip;
            }
            None => {
                reasoning.push_str(inner);
                break;
            }
        }
    }
    match mode {
        ThinkMode::Strip => (content, String::new()),
        _ => (content, reasoning),
    }
}

#[test]
fn an_unchanged_stream_is_relayed_as_the_same_bytes_split_anywhere() {
    // CRLF endings, a comment, an id line, a tool call, the usage chunk the client asked for.
    let wire = concat!(
        ": keep-alive\r\n\r\n",
        "id: 1\r\ndata: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"h\u{e9}llo\"},\"finish_reason\":null}]}\r\n\r\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"timings\":{\"n\":1}}\r\r",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n",
        "data: [DONE]\n\n",
    )
    .as_bytes();
    for mode in [ThinkMode::Off, ThinkMode::Strip, ThinkMode::Reasoning] {
        for cut in 0..=wire.len() {
            let (out, end, stage) = run(mode, true, &[&wire[..cut], &wire[cut..]]);
            assert!(
                out == wire,
                "{mode:?} cut at {cut}: {}",
                String::from_utf8_lossy(&out)
            );
            assert_eq!(end, Ok(()));
            assert_eq!(stage.usage().unwrap().completion_tokens, Some(2));
        }
    }
}

#[test]
fn the_usage_chunk_the_client_did_not_ask_for_is_dropped_but_counted() {
    let wire = stream_of(&["Hi"]);
    let (out, end, stage) = run(ThinkMode::Off, false, &[wire.as_bytes()]);
    assert_eq!(String::from_utf8(out).unwrap(), wire.replace(USAGE, ""));
    assert_eq!(end, Ok(()));
    let usage = stage.usage().unwrap().reported(None);
    assert_eq!((usage.input, usage.output), (9, 4));
}

#[test]
fn strip_and_reasoning_rewrite_only_the_chunks_that_hold_tags_split_anywhere() {
    let pieces = ["<thi", "nk>plan ", "é</think", ">\n\n", "Answer ", "<b>"];
    let wire = stream_of(&pieces);
    let bytes = wire.as_bytes();
    for (mode, expected) in [
        (ThinkMode::Strip, ("Answer <b>".to_owned(), String::new())),
        (
            ThinkMode::Reasoning,
            ("\n\nAnswer <b>".to_owned(), "plan é".to_owned()),
        ),
    ] {
        let (whole, end, _) = run(mode, true, &[bytes]);
        assert_eq!(end, Ok(()));
        assert_eq!(said(&whole), expected, "{mode:?}");
        let text = String::from_utf8(whole.clone()).unwrap();
        // The role chunk and the chunks without tags keep their bytes.
        assert!(text.starts_with(&chunk(json!({"role":"assistant","content":""}), None)));
        assert!(
            text.contains(&chunk(json!({"content":"Answer "}), None)),
            "{text}"
        );
        assert!(text.ends_with(&format!("{USAGE}{DONE}")));
        for cut in 0..=bytes.len() {
            let (out, _, _) = run(mode, true, &[&bytes[..cut], &bytes[cut..]]);
            assert!(out == whole, "{mode:?} cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert!(run(mode, true, &singles).0 == whole);
    }
}

#[test]
fn tags_escaped_as_go_writes_them_are_found_too() {
    // Go's JSON encoder (Ollama) writes `<` and `>` as `\u003c` and `\u003e`.
    let escaped = |s: &str| s.replace('<', "\\u003c").replace('>', "\\u003e");
    let wire = escaped(&stream_of(&["<think>hid", "den</think>\n", "Shown"]));
    assert!(wire.contains("\\u003cthink\\u003e") && !wire.contains('<'));
    let (out, end, _) = run(ThinkMode::Strip, true, &[wire.as_bytes()]);
    assert_eq!(end, Ok(()));
    assert_eq!(said(&out), ("Shown".to_owned(), String::new()));
}

#[test]
fn at_most_a_partial_tag_is_held_back_and_the_finish_chunk_releases_it() {
    let wire = stream_of(&["hello <thi"]);
    let (out, _, _) = run(ThinkMode::Strip, true, &[wire.as_bytes()]);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(
        text.contains(&chunk(json!({"content":"hello "}), None)),
        "{text}"
    );
    assert!(text.contains("\"content\":\"<thi\""), "{text}");
    assert!(text.contains("\"finish_reason\":\"stop\""), "{text}");
    assert_eq!(said(&out).0, "hello <thi");
}

#[test]
fn a_cut_stream_is_truncated_and_a_missing_done_is_supplied() {
    let cut = chunk(json!({"content":"partial"}), None);
    assert_eq!(
        run(ThinkMode::Off, true, &[cut.as_bytes()]).1,
        Err(DecodeError::Truncated)
    );
    let mid_event = format!("{cut}data: {{\"id\"");
    let (out, end, _) = run(ThinkMode::Off, true, &[mid_event.as_bytes()]);
    assert_eq!(end, Err(DecodeError::Truncated));
    assert_eq!(
        out,
        cut.as_bytes(),
        "a partial event never reaches the client"
    );
    let no_done = format!("{cut}{}", chunk(json!({}), Some("stop")));
    let (out, end, _) = run(ThinkMode::Off, true, &[no_done.as_bytes()]);
    assert_eq!(end, Ok(()));
    assert_eq!(String::from_utf8(out).unwrap(), format!("{no_done}{DONE}"));
}

#[test]
fn an_event_over_the_size_limit_is_an_error() {
    let mut stage = ChatPassthrough::new(ThinkMode::Off, true);
    let mut out = Vec::new();
    let big = vec![b'x'; 1 << 20];
    let mut result = Ok(());
    for _ in 0..17 {
        result = stage.push(&big, &mut out);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(DecodeError::TooLarge));
    assert!(out.is_empty());
    assert!(stage.buffered() <= 16 << 20);
}

#[test]
fn a_one_body_answer_becomes_the_stream_a_streaming_server_sends() {
    let body = json!({"id":"chatcmpl-9","object":"chat.completion","created":5,"model":"m",
        "choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant",
            "content":"<think>hidden</think>\n\nVisible","tool_calls":[{"id":"c1","type":"function",
            "function":{"name":"f","arguments":"{}"}}]}}],
        "usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}})
    .to_string();
    let (out, usage) = completion_as_stream(body.as_bytes(), ThinkMode::Strip, false).unwrap();
    assert_eq!(usage.unwrap().total_tokens, Some(5));
    assert_eq!(said(&out), ("Visible".to_owned(), String::new()));
    let text = String::from_utf8(out).unwrap();
    let events: Vec<Value> = text
        .split_terminator("\n\n")
        .map(|e| e.strip_prefix("data: ").unwrap())
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    assert_eq!(events[0]["object"], "chat.completion.chunk");
    assert_eq!(events[0]["id"], "chatcmpl-9");
    assert_eq!(
        events[0]["choices"][0]["delta"]["tool_calls"][0],
        json!({"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}})
    );
    assert_eq!(events[1]["choices"][0]["finish_reason"], "tool_calls");
    assert!(text.ends_with(DONE));

    let (out, _) = completion_as_stream(body.as_bytes(), ThinkMode::Off, true).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("\"choices\":[]") && text.contains("\"usage\""),
        "{text}"
    );
    assert!(text.contains("<think>hidden</think>"), "{text}");

    let error = br#"{"error":{"message":"no","type":"server_error"}}"#;
    assert!(completion_as_stream(error, ThinkMode::Off, true).is_none());
    assert!(completion_as_stream(b"not json", ThinkMode::Off, true).is_none());
}

#[test]
fn request_rewrite_changes_only_what_a_rule_says() {
    let none = Map::new();
    let plain = br#"{"model":"qwen3","messages":[{"role":"user","content":"hi"}]}"#;
    let r = rewrite_request(plain, Some("qwen3"), &none).unwrap();
    assert_eq!((r.body, r.stream, r.client_usage), (None, false, false));

    let asked =
        br#"{"model":"qwen3","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let r = rewrite_request(asked, None, &none).unwrap();
    assert_eq!((r.body, r.stream, r.client_usage), (None, true, true));

    let streaming = br#"{"model":"alias","stream":true,"stream_options":{"x":1},"temperature":1,"messages":[]}"#;
    let mut params = Map::new();
    params.insert("temperature".into(), json!(0.6));
    params.insert("top_k".into(), json!(20));
    let r = rewrite_request(streaming, Some("qwen3-coder"), &params).unwrap();
    assert!(r.stream && !r.client_usage);
    let body: Value = serde_json::from_slice(&r.body.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"model":"qwen3-coder","stream":true,"stream_options":{"x":1,"include_usage":true},
               "temperature":0.6,"top_k":20,"messages":[]})
    );
    assert_eq!(
        rewrite_request(b"[1]", None, &none).unwrap_err().status,
        400
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)))]

    /// Random words with think sections at random places, cut into random content pieces,
    /// the bytes cut at random places: the client reads what the rule makes of the whole text.
    #[test]
    fn think_rules_hold_for_random_tags_and_random_splits(
        words in prop::collection::vec(prop_oneof![
            Just("<think>"), Just("</think>"), Just(" "), Just("\n"), Just("é😀"), Just("<"),
            Just("a"), Just("</thi"), Just("nk>"), Just("<th"), Just("word"),
        ], 0..24),
        content_cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        byte_cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        reasoning_mode in any::<bool>(),
    ) {
        let text: String = words.concat();
        let mut cuts: Vec<usize> = content_cuts.iter().map(|i| i.index(text.len() + 1)).collect();
        cuts.retain(|&c| text.is_char_boundary(c));
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([text.len()]) {
            pieces.push(&text[at..c]);
            at = c;
        }
        let wire = stream_of(&pieces);
        let bytes = wire.as_bytes();
        let mut splits: Vec<usize> = byte_cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        splits.sort_unstable();
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut at = 0;
        for s in splits.into_iter().chain([bytes.len()]) {
            parts.push(&bytes[at..s]);
            at = s;
        }
        let mode = if reasoning_mode { ThinkMode::Reasoning } else { ThinkMode::Strip };
        let (out, end, _) = run(mode, false, &parts);
        prop_assert_eq!(end, Ok(()));
        prop_assert_eq!(said(&out), reference(mode, &text));
        prop_assert!(!String::from_utf8(out).unwrap().contains("\"usage\""));
    }
}
