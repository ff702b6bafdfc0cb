//! The Anthropic Messages stream grammar, as a checker for translator output.
//!
//! `message_start` once and first; `ping` anywhere after it; content blocks with dense indices
//! from 0, one open at a time, each `content_block_start` → deltas of its own kind →
//! `content_block_stop`; then `message_delta` and `message_stop`, or an `error` event that ends
//! the stream (possibly with a block still open). Nothing follows the end.

use serde_json::Value;

/// One client SSE event: its `event:` name and its JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientEvent {
    pub name: String,
    pub data: Value,
}

/// Splits translator output into events; panics unless every event is exactly
/// `event: <name>\ndata: <one line of valid JSON>\n\n` with a matching `type`.
pub fn parse(out: &[u8]) -> Vec<ClientEvent> {
    let text = std::str::from_utf8(out).expect("output is UTF-8");
    let mut events = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest
            .find("\n\n")
            .unwrap_or_else(|| panic!("unterminated event: {rest:?}"));
        let block = &rest[..end];
        rest = &rest[end + 2..];
        let mut lines = block.split('\n');
        let name = lines
            .next()
            .and_then(|l| l.strip_prefix("event: "))
            .unwrap_or_else(|| panic!("event line missing: {block:?}"));
        let data = lines
            .next()
            .and_then(|l| l.strip_prefix("data: "))
            .unwrap_or_else(|| panic!("data line missing: {block:?}"));
        assert!(lines.next().is_none(), "extra lines in {block:?}");
        assert!(!data.contains('\r'), "raw CR in data");
        let data: Value =
            serde_json::from_str(data).unwrap_or_else(|e| panic!("invalid JSON ({e}) in {data:?}"));
        assert_eq!(data["type"], name, "type matches the event name");
        events.push(ClientEvent {
            name: name.to_owned(),
            data,
        });
    }
    events
}

/// How the stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `message_stop`.
    Stop,
    /// `event: error`.
    Error,
    /// Neither (only acceptable before `finish`).
    Open,
}

/// Checks the grammar; returns how the stream ended.
pub fn check(events: &[ClientEvent]) -> Ending {
    let mut started = false;
    let mut open: Option<(u64, String)> = None;
    let mut next_index = 0u64;
    let mut saw_delta = false;
    // The open thinking block has had its signature: nothing more may go into it.
    let mut signed = false;
    let mut ending = Ending::Open;
    for (n, ev) in events.iter().enumerate() {
        assert_eq!(
            ending,
            Ending::Open,
            "event {n} ({}) after the end",
            ev.name
        );
        let d = &ev.data;
        if ev.name == "error" {
            assert!(d["error"]["type"].is_string() && d["error"]["message"].is_string());
            ending = Ending::Error;
            continue;
        }
        if ev.name == "message_start" {
            assert!(!started, "duplicate message_start");
            assert_eq!(n, 0, "message_start first");
            let m = &d["message"];
            assert_eq!(m["type"], "message");
            assert_eq!(m["role"], "assistant");
            assert_eq!(m["content"], serde_json::json!([]));
            assert!(m["id"].is_string() && m["model"].is_string());
            started = true;
            continue;
        }
        assert!(started, "{} before message_start", ev.name);
        match ev.name.as_str() {
            "ping" => {}
            "content_block_start" => {
                assert!(open.is_none(), "block started while another is open");
                assert!(!saw_delta, "content after message_delta");
                assert_eq!(d["index"], next_index, "dense block indices");
                let block = &d["content_block"];
                let kind = block["type"].as_str().expect("block type").to_owned();
                match kind.as_str() {
                    "text" => assert_eq!(block["text"], ""),
                    "thinking" => {
                        assert_eq!(block["thinking"], "");
                        assert_eq!(block["signature"], "");
                    }
                    "tool_use" => {
                        assert!(block["id"].as_str().is_some_and(|s| !s.is_empty()));
                        assert!(block["name"].is_string());
                        assert_eq!(block["input"], serde_json::json!({}));
                    }
                    other => panic!("unexpected block type {other}"),
                }
                open = Some((next_index, kind));
                signed = false;
            }
            "content_block_delta" => {
                let (index, kind) = open.as_ref().expect("delta outside a block");
                assert_eq!(d["index"], *index);
                let delta = &d["delta"];
                let (want, field) = match kind.as_str() {
                    "text" => ("text_delta", "text"),
                    "tool_use" => ("input_json_delta", "partial_json"),
                    _ => match delta["type"].as_str() {
                        Some("signature_delta") => ("signature_delta", "signature"),
                        _ => ("thinking_delta", "thinking"),
                    },
                };
                assert_eq!(delta["type"], want, "delta kind matches the block");
                assert!(delta[field].is_string());
                assert!(!signed, "nothing after a block's signature_delta");
                signed = want == "signature_delta";
            }
            "content_block_stop" => {
                let (index, _) = open.take().expect("stop outside a block");
                assert_eq!(d["index"], index);
                next_index += 1;
            }
            "message_delta" => {
                assert!(open.is_none(), "message_delta with a block open");
                assert!(!saw_delta, "one message_delta");
                saw_delta = true;
                let reason = d["delta"]["stop_reason"].as_str().expect("stop_reason");
                assert!(
                    [
                        "end_turn",
                        "tool_use",
                        "max_tokens",
                        "refusal",
                        "stop_sequence"
                    ]
                    .contains(&reason),
                    "{reason}"
                );
                for k in ["input_tokens", "output_tokens", "cache_read_input_tokens"] {
                    assert!(d["usage"][k].is_u64(), "usage.{k}");
                }
            }
            "message_stop" => {
                assert!(saw_delta, "message_stop without message_delta");
                ending = Ending::Stop;
            }
            other => panic!("unexpected event {other}"),
        }
    }
    ending
}
