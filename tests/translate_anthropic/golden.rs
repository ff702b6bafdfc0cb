//! Golden fixtures: see the crate docs for the layout of a case directory.

use std::path::{Path, PathBuf};

use codex_proxy::translate::anthropic;
use codex_proxy::translate::models::ModelTable;
use codex_proxy::translate::{AggregatePipeline, Mapped, ResponseContext, StreamPipeline};
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use crate::grammar::{self, Ending};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/translate/anthropic")
}

fn cases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 20,
        "fixture directories found: {}",
        dirs.len()
    );
    dirs
}

fn bless() -> bool {
    std::env::var_os("BLESS").is_some_and(|v| v == "1")
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write_json(path: &Path, value: &Value) {
    let mut text = serde_json::to_string_pretty(value).unwrap();
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn models(dir: &Path) -> ModelTable {
    let file = dir.join("models.json");
    if file.exists() {
        ModelTable::from_json(&std::fs::read(file).unwrap()).unwrap()
    } else {
        ModelTable::builtin()
    }
}

fn map(dir: &Path) -> Result<Mapped, codex_proxy::translate::TranslateError> {
    let request = read_json(&dir.join("request.json"));
    anthropic::map_request(&request, &models(dir))
}

/// Compares `actual` with the JSON in `file`, or writes it when blessing.
fn expect_json(file: &Path, actual: &Value) {
    if bless() {
        write_json(file, actual);
        return;
    }
    let expected = read_json(file);
    assert_eq!(&expected, actual, "{}", file.display());
}

#[test]
fn requests_map_to_the_expected_upstream_request() {
    for dir in cases() {
        let error_file = dir.join("expected_error.json");
        match map(&dir) {
            Ok(mapped) => {
                assert!(
                    !error_file.exists(),
                    "{}: expected a refusal",
                    dir.display()
                );
                assert_eq!(
                    mapped.body["stream"],
                    json!(true),
                    "always streams upstream"
                );
                let actual = json!({
                    "body": mapped.body,
                    "client_stream": mapped.client_stream,
                    "session": mapped.session,
                    "echoed_model": mapped.context.model,
                    "call_ids": mapped.context.call_ids,
                    "response_side": format!("{:?}", mapped.context.parts),
                });
                expect_json(&dir.join("upstream_request.json"), &actual);
            }
            Err(e) => {
                let actual = json!({"status": e.status, "code": e.code});
                assert!(
                    bless() || error_file.exists(),
                    "{}: unexpected refusal {e}",
                    dir.display()
                );
                expect_json(&error_file, &actual);
            }
        }
    }
}

fn stream_cases() -> Vec<(PathBuf, ResponseContext, Vec<u8>)> {
    cases()
        .into_iter()
        .filter(|d| d.join("upstream.sse").exists())
        .map(|d| {
            let ctx = map(&d).unwrap().context;
            let upstream = std::fs::read(d.join("upstream.sse")).unwrap();
            (d, ctx, upstream)
        })
        .collect()
}

/// The client bytes for the upstream bytes pushed in the given pieces.
fn run_stream(ctx: &ResponseContext, pieces: &[&[u8]]) -> Vec<u8> {
    let mut pipeline = StreamPipeline::new(ctx);
    let mut out = Vec::new();
    for piece in pieces {
        pipeline.push(piece, &mut out);
    }
    pipeline.finish(None, &mut out);
    out
}

fn events_json(out: &[u8]) -> Value {
    Value::Array(
        grammar::parse(out)
            .into_iter()
            .map(|e| json!({"event": e.name, "data": e.data}))
            .collect(),
    )
}

fn render_sse(events: &Value) -> String {
    let mut text = String::new();
    for e in events.as_array().unwrap() {
        text.push_str(&format!(
            "event: {}\ndata: {}\n\n",
            e["event"].as_str().unwrap(),
            serde_json::to_string(&e["data"]).unwrap()
        ));
    }
    text
}

#[test]
fn streams_translate_to_the_expected_client_stream() {
    let cases = stream_cases();
    assert!(cases.len() >= 15);
    for (dir, ctx, upstream) in cases {
        let out = run_stream(&ctx, &[&upstream]);
        let events = grammar::parse(&out);
        let ending = grammar::check(&events);
        assert_ne!(ending, Ending::Open, "{}: the stream ends", dir.display());
        let actual = events_json(&out);
        let file = dir.join("expected.sse");
        if bless() {
            std::fs::write(&file, render_sse(&actual)).unwrap();
            continue;
        }
        let expected = events_json(&std::fs::read(&file).unwrap());
        assert_eq!(expected, actual, "{}", dir.display());
    }
}

#[test]
fn streams_are_identical_at_every_split() {
    for (dir, ctx, upstream) in stream_cases() {
        let whole = run_stream(&ctx, &[&upstream]);
        for at in 0..=upstream.len() {
            let (a, b) = upstream.split_at(at);
            let split = run_stream(&ctx, &[a, b]);
            assert!(
                split == whole,
                "{}: split at byte {at} changes the output",
                dir.display()
            );
        }
        let bytes: Vec<&[u8]> = upstream.chunks(1).collect();
        assert!(
            run_stream(&ctx, &bytes) == whole,
            "{}: one byte at a time",
            dir.display()
        );
    }
}

#[test]
fn non_stream_renders_the_expected_message() {
    for (dir, ctx, upstream) in stream_cases() {
        let mut pipeline = AggregatePipeline::new(&ctx);
        pipeline.push(&upstream);
        let rendered = pipeline.finish(None);
        let body: Value = serde_json::from_slice(&rendered.body).unwrap();
        let actual = json!({"status": rendered.status, "body": body});
        expect_json(&dir.join("expected.json"), &actual);
    }
}

/// What the stream says and what the non-stream answer says agree: same content blocks, stop
/// reason and usage (rebuilt from the stream's events).
#[test]
fn stream_and_non_stream_agree() {
    for (dir, ctx, upstream) in stream_cases() {
        let events = grammar::parse(&run_stream(&ctx, &[&upstream]));
        let mut pipeline = AggregatePipeline::new(&ctx);
        pipeline.push(&upstream);
        let rendered = pipeline.finish(None);
        let body: Value = serde_json::from_slice(&rendered.body).unwrap();
        if grammar::check(&events) == Ending::Error {
            assert_ne!(rendered.status, 200, "{}", dir.display());
            assert_eq!(body["type"], "error");
            let last = events.last().unwrap();
            assert_eq!(
                last.data["error"]["type"],
                body["error"]["type"],
                "{}: the same error type",
                dir.display()
            );
            continue;
        }
        assert_eq!(rendered.status, 200);
        let message = accumulate(&events);
        assert_eq!(message["content"], body["content"], "{}", dir.display());
        assert_eq!(message["stop_reason"], body["stop_reason"]);
        assert_eq!(message["usage"], body["usage"]);
        assert_eq!(message["model"], body["model"]);
        assert_eq!(message["id"], body["id"]);
    }
}

/// Builds the final message from a client stream, the way the Anthropic SDKs do.
fn accumulate(events: &[grammar::ClientEvent]) -> Value {
    let mut message = json!({});
    let mut partial_json = String::new();
    for e in events {
        let d = &e.data;
        match e.name.as_str() {
            "message_start" => message = d["message"].clone(),
            "content_block_start" => {
                let mut block = d["content_block"].clone();
                if block["type"] == "text" || block["type"] == "tool_use" {
                    // text blocks carry no signature; tool input is rebuilt below
                } else if block["type"] == "thinking" {
                    block["signature"] = json!("");
                }
                message["content"].as_array_mut().unwrap().push(block);
                partial_json.clear();
            }
            "content_block_delta" => {
                let i = d["index"].as_u64().unwrap() as usize;
                let block = &mut message["content"][i];
                let delta = &d["delta"];
                let append = |block: &mut Value, field: &str, add: &str| {
                    let s = block[field].as_str().unwrap_or("").to_owned() + add;
                    block[field] = json!(s);
                };
                match delta["type"].as_str().unwrap() {
                    "text_delta" => append(block, "text", delta["text"].as_str().unwrap()),
                    "thinking_delta" => {
                        append(block, "thinking", delta["thinking"].as_str().unwrap())
                    }
                    "signature_delta" => {
                        block["signature"] = delta["signature"].clone();
                    }
                    "input_json_delta" => {
                        partial_json.push_str(delta["partial_json"].as_str().unwrap());
                        if let Ok(v) = serde_json::from_str::<Value>(&partial_json) {
                            block["input"] = v;
                        }
                    }
                    other => panic!("{other}"),
                }
            }
            "message_delta" => {
                message["stop_reason"] = d["delta"]["stop_reason"].clone();
                message["stop_sequence"] = d["delta"]["stop_sequence"].clone();
                message["usage"] = d["usage"].clone();
            }
            _ => {}
        }
    }
    message
}
