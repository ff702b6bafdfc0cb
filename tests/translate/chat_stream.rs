//! The Chat stream's promises, checked directly on small event sequences.

use codex_proxy::translate::models::ModelTable;
use codex_proxy::translate::{map_request, Dialect, Interruption, ResponseContext};
use serde_json::{json, Value};

use crate::goldens::stream;

fn ctx(tools: &[&str], include_usage: bool) -> ResponseContext {
    let tools: Vec<Value> = tools
        .iter()
        .map(|n| json!({"type":"function","function":{"name":n}}))
        .collect();
    let body = json!({"model":"gpt-5.4","stream":true,"stream_options":{"include_usage":include_usage},
        "messages":[{"role":"user","content":"x"}],"tools":tools});
    map_request(
        Dialect::Chat,
        &serde_json::to_vec(&body).unwrap(),
        &ModelTable::builtin(),
    )
    .unwrap()
    .context
}

fn sse(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.extend_from_slice(
            format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()).as_bytes(),
        );
    }
    out
}

/// The data of every client event (`[DONE]` as a string).
fn chunks(out: &[u8]) -> Vec<Value> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .split_terminator("\n\n")
        .map(|e| {
            let d = e.strip_prefix("data: ").unwrap();
            serde_json::from_str(d).unwrap_or(Value::String(d.to_owned()))
        })
        .collect()
}

fn call(id: &str, call_id: &str, name: &str, index: u64) -> Value {
    json!({"type":"response.output_item.added","output_index":index,
        "item":{"id":id,"type":"function_call","call_id":call_id,"name":name,"arguments":""}})
}

fn args(id: &str, delta: &str) -> Value {
    json!({"type":"response.function_call_arguments.delta","item_id":id,"delta":delta})
}

fn completed() -> Value {
    json!({"type":"response.completed","response":{"id":"resp_1","status":"completed","output":[],
        "usage":{"input_tokens":5,"output_tokens":7,"total_tokens":12}}})
}

#[test]
fn interleaved_parallel_calls_get_dense_indices_by_item_id() {
    let long = format!("mcp__server__{}", "x".repeat(70));
    let ctx = ctx(&["a", &long], false);
    let short = ctx.tool_names.lookup(&long).unwrap().to_owned();
    let upstream = sse(&[
        json!({"type":"response.created","response":{"id":"resp_1","created_at":10}}),
        json!({"type":"response.output_item.added","output_index":0,"item":{"id":"rs","type":"reasoning","summary":[]}}),
        call("fc_a", "call_a", "a", 1),
        call("fc_b", "call_b", &short, 2),
        args("fc_b", "{\"q\":"),
        args("fc_a", "{\"p\":"),
        args("fc_b", "2}"),
        args("fc_a", "1}"),
        json!({"type":"response.function_call_arguments.done","item_id":"fc_a","arguments":"{\"p\":1}"}),
        json!({"type":"response.output_item.done","output_index":2,"item":{"id":"fc_b","type":"function_call","call_id":"call_b","name":short,"arguments":"{\"q\":2}"}}),
        completed(),
    ]);
    let out = chunks(&stream(&ctx, &upstream, &[]));
    let calls: Vec<&Value> = out
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0"))
        .collect();
    assert_eq!(
        calls,
        vec![
            &json!({"index":0,"id":"call_a","type":"function","function":{"name":"a","arguments":""}}),
            &json!({"index":1,"id":"call_b","type":"function","function":{"name":long,"arguments":""}}),
            &json!({"index":1,"function":{"arguments":"{\"q\":"}}),
            &json!({"index":0,"function":{"arguments":"{\"p\":"}}),
            &json!({"index":1,"function":{"arguments":"2}"}}),
            &json!({"index":0,"function":{"arguments":"1}"}}),
        ]
    );
    assert_eq!(out[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(out[1..]
        .iter()
        .all(|c| c.pointer("/choices/0/delta/role").is_none()));
    assert_eq!(
        out[out.len() - 2]["choices"][0]["finish_reason"],
        "tool_calls"
    );
    assert_eq!(out[out.len() - 1], "[DONE]");
}

#[test]
fn arguments_only_in_done_events_are_sent_once() {
    let ctx = ctx(&["f", "g", "h"], false);
    let upstream = sse(&[
        call("fc_1", "call_1", "f", 0),
        json!({"type":"response.function_call_arguments.done","item_id":"fc_1","arguments":"{\"a\":1}"}),
        json!({"type":"response.output_item.done","output_index":0,"item":{"id":"fc_1","type":"function_call","call_id":"call_1","name":"f","arguments":"{\"a\":1}"}}),
        // Never announced: only its done item.
        json!({"type":"response.output_item.done","output_index":1,"item":{"id":"fc_2","type":"function_call","call_id":"call_2","name":"g","arguments":"{}"}}),
        // Only in the terminal output.
        json!({"type":"response.completed","response":{"id":"resp_1","output":[
            {"id":"fc_1","type":"function_call","call_id":"call_1","name":"f","arguments":"{\"a\":1}"},
            {"id":"fc_3","type":"function_call","call_id":"call_3","name":"h","arguments":"{\"c\":3}"}]}}),
    ]);
    let out = chunks(&stream(&ctx, &upstream, &[]));
    let calls: Vec<&Value> = out
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0"))
        .collect();
    assert_eq!(
        calls,
        vec![
            &json!({"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}),
            &json!({"index":0,"function":{"arguments":"{\"a\":1}"}}),
            &json!({"index":1,"id":"call_2","type":"function","function":{"name":"g","arguments":"{}"}}),
            &json!({"index":2,"id":"call_3","type":"function","function":{"name":"h","arguments":"{\"c\":3}"}}),
        ]
    );
}

#[test]
fn failure_after_content_is_an_error_chunk_never_done_or_stop() {
    let ctx = ctx(&[], true);
    let text = json!({"type":"response.output_text.delta","item_id":"m","delta":"Hi"});
    for tail in [
        Some(
            json!({"type":"response.failed","response":{"error":{"code":"server_is_overloaded","message":"busy"}}}),
        ),
        Some(json!({"type":"error","code":"rate_limit_exceeded","message":"slow"})),
        None,
    ] {
        let mut events = vec![text.clone()];
        events.extend(tail);
        let out = String::from_utf8(stream(&ctx, &sse(&events), &[])).unwrap();
        assert!(out.contains("\"content\":\"Hi\""));
        assert!(
            out.ends_with("}}\n\n") && out.contains("data: {\"error\":"),
            "{out}"
        );
        assert!(
            !out.contains("[DONE]") && !out.contains("\"finish_reason\":\"stop\""),
            "{out}"
        );
    }
}

#[test]
fn nothing_is_written_before_output_and_transport_errors_after_completion_are_ignored() {
    let ctx = ctx(&[], false);
    let mut p = codex_proxy::translate::StreamPipeline::new(&ctx);
    let mut out = Vec::new();
    p.push(
        &sse(&[
            json!({"type":"response.created","response":{"id":"resp_1"}}),
            json!({"type":"response.in_progress","response":{"id":"resp_1"}}),
            json!({"type":"codex.rate_limits","rate_limits":{}}),
        ]),
        &mut out,
    );
    assert!(out.is_empty(), "handshake events produce no client bytes");
    p.push(&sse(&[completed()]), &mut out);
    assert!(p.saw_terminal());
    let before = out.len();
    p.finish(Some(Interruption::UpstreamError), &mut out);
    assert_eq!(out.len(), before);
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("data: [DONE]\n\n"));
}

#[test]
fn include_usage_adds_one_chunk_with_empty_choices() {
    for include in [true, false] {
        let out = chunks(&stream(&ctx(&[], include), &sse(&[completed()]), &[]));
        let usage: Vec<&Value> = out.iter().filter(|c| c.get("usage").is_some()).collect();
        if include {
            assert_eq!(usage.len(), 1);
            assert_eq!(usage[0]["choices"], json!([]));
            assert_eq!(
                usage[0]["usage"],
                json!({"prompt_tokens":5,"completion_tokens":7,"total_tokens":12})
            );
            assert_eq!(out[out.len() - 2], *usage[0]);
        } else {
            assert!(usage.is_empty());
        }
    }
}
