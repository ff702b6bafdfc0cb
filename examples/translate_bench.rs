//! Translation cost: a 10,000-event upstream stream (created, reasoning summary deltas, a
//! message of many text deltas, a function call with argument deltas, completed with usage),
//! fed in 1,400-byte chunks through
//! * `scan`: the relay's passthrough scanner (`SseScanner`, what `/v1/responses` costs),
//! * `scan_redact`, `scan_redact_1000`: the scanner plus the key-echo filter every relayed
//!   byte passes (`EchoFilter`), with one key and with a pool of 1,000 keys,
//! * `decode`: the SSE decoder alone,
//! * `chat_stream`: the Chat `StreamPipeline` (decoder + state machine + chunk encoding),
//! * `chat_aggregate`: the Chat `AggregatePipeline` (non-stream clients),
//! * `hub_chat_stream`: an Anthropic Messages stream of the same shape (10,000 wire events)
//!   through the hub's `MessagesDecoder` and the Chat pipeline, against
//!   `hub_direct_chat_stream`: the Responses events that stream decodes to, fed to the Chat
//!   pipeline directly; the difference per wire event is the cost of the hub step,
//! * `chatwire_messages`: a 10,000-chunk Chat Completions stream (inline `<think>` reasoning,
//!   text, a tool call) read by the chat wire's hub decoder (think tags as reasoning) into the
//!   Anthropic `StreamPipeline`: the chat → Responses → Messages path,
//! * `chatwire_passthrough`: the same chunks through the chat passthrough stage (`strip`),
//!   and `chatwire_passthrough_off` without a think rule (the usage chunk dropped),
//!
//! and reports events/s and CPU µs per event (user + system time of the process, from
//! `getrusage(RUSAGE_SELF)`), plus the cost added over `scan`. Prints one JSON object last.
//! Run with `cargo run --release --example translate_bench [ITERATIONS]`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_types
)]

use std::time::{Duration, Instant};

use codex_proxy::translate::codec::{write_event, Decoder};
use codex_proxy::translate::hub::anthropic::MessagesDecoder;
use codex_proxy::translate::hub::chat::{ChatPassthrough, ChatWireDecoder};
use codex_proxy::translate::hub::WireDecoder;
use codex_proxy::translate::models::ModelTable;
use codex_proxy::translate::sse::SseScanner;
use codex_proxy::translate::think::ThinkMode;
use codex_proxy::translate::{
    map_request, AggregatePipeline, Dialect, ResponseContext, StreamPipeline,
};
use codex_proxy::upstream::redact::{EchoFilter, EchoMatcher, SecretBytes};
use nix::sys::resource::{getrusage, UsageWho};
use serde_json::json;
use std::sync::Arc;

const EVENTS: usize = 10_000;
const CHUNK: usize = 1400;

fn event(out: &mut String, v: serde_json::Value) {
    let t = v["type"].as_str().unwrap().to_owned();
    out.push_str(&format!("event: {t}\ndata: {v}\n\n"));
}

/// The upstream transcript and its event count.
fn transcript() -> (Vec<u8>, usize) {
    let mut s = String::new();
    let mut seq = 0usize;
    let mut ev = |s: &mut String, mut v: serde_json::Value| {
        v["sequence_number"] = seq.into();
        seq += 1;
        event(s, v);
        seq
    };
    let response = json!({"id":"resp_bench","object":"response","created_at":1760000000,"model":"gpt-5.4","status":"in_progress","output":[],"usage":null});
    ev(
        &mut s,
        json!({"type":"response.created","response":response}),
    );
    ev(
        &mut s,
        json!({"type":"response.in_progress","response":response}),
    );
    ev(
        &mut s,
        json!({"type":"response.output_item.added","output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}),
    );
    ev(
        &mut s,
        json!({"type":"response.reasoning_summary_part.added","item_id":"rs_1","output_index":0,"summary_index":0,"part":{"type":"summary_text","text":""}}),
    );
    for i in 0..300 {
        ev(
            &mut s,
            json!({"type":"response.reasoning_summary_text.delta","item_id":"rs_1","output_index":0,"summary_index":0,"delta":format!(" thought {i}")}),
        );
    }
    ev(
        &mut s,
        json!({"type":"response.output_item.done","output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[{"type":"summary_text","text":"…"}],"encrypted_content":"gAAAAB".repeat(200)}}),
    );
    ev(
        &mut s,
        json!({"type":"response.output_item.added","output_index":1,"item":{"id":"msg_1","type":"message","status":"in_progress","role":"assistant","content":[]}}),
    );
    ev(
        &mut s,
        json!({"type":"response.content_part.added","item_id":"msg_1","output_index":1,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}}),
    );
    let text_deltas = EVENTS - 300 - 400 - 16;
    let words = [
        "The",
        " quick",
        " brown",
        " fox",
        " jumps",
        " over",
        " the",
        " lazy",
        " dög",
        " — ",
        "\"quoted\"",
        "\n",
        " 😀",
    ];
    let mut full = String::new();
    for i in 0..text_deltas {
        let w = words[i % words.len()];
        full.push_str(w);
        ev(
            &mut s,
            json!({"type":"response.output_text.delta","item_id":"msg_1","output_index":1,"content_index":0,"delta":w,"logprobs":[]}),
        );
    }
    ev(
        &mut s,
        json!({"type":"response.output_text.done","item_id":"msg_1","output_index":1,"content_index":0,"text":full}),
    );
    ev(
        &mut s,
        json!({"type":"response.content_part.done","item_id":"msg_1","output_index":1,"content_index":0,"part":{"type":"output_text","text":full,"annotations":[]}}),
    );
    let message = json!({"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":full,"annotations":[]}]});
    ev(
        &mut s,
        json!({"type":"response.output_item.done","output_index":1,"item":message}),
    );
    ev(
        &mut s,
        json!({"type":"response.output_item.added","output_index":2,"item":{"id":"fc_1","type":"function_call","status":"in_progress","call_id":"call_1","name":"write_file","arguments":""}}),
    );
    let mut args = String::new();
    for i in 0..400 {
        let d = if i == 0 {
            "{\"content\":\"".to_owned()
        } else {
            format!("line {i}\\n")
        };
        args.push_str(&d);
        ev(
            &mut s,
            json!({"type":"response.function_call_arguments.delta","item_id":"fc_1","output_index":2,"delta":d}),
        );
    }
    args.push_str("\"}");
    ev(
        &mut s,
        json!({"type":"response.function_call_arguments.done","item_id":"fc_1","output_index":2,"arguments":args}),
    );
    let call = json!({"id":"fc_1","type":"function_call","status":"completed","call_id":"call_1","name":"write_file","arguments":args});
    let mut n = ev(
        &mut s,
        json!({"type":"response.output_item.done","output_index":2,"item":call}),
    );
    while n < EVENTS - 1 {
        n = ev(
            &mut s,
            json!({"type":"codex.rate_limits","rate_limits":{"primary":{"used_percent":1.0}}}),
        );
    }
    let done = json!({"id":"resp_bench","object":"response","created_at":1760000000,"model":"gpt-5.4","status":"completed",
        "output":[message, call],
        "usage":{"input_tokens":12000,"input_tokens_details":{"cached_tokens":8000},"output_tokens":9000,"output_tokens_details":{"reasoning_tokens":300},"total_tokens":21000}});
    let n = ev(&mut s, json!({"type":"response.completed","response":done}));
    (s.into_bytes(), n)
}

/// An Anthropic Messages transcript of the same shape (thinking deltas, many text deltas, a
/// tool call with argument deltas) and its event count.
fn wire_transcript() -> (Vec<u8>, usize) {
    let mut s = String::new();
    let mut n = 0usize;
    let mut ev = |s: &mut String, v: serde_json::Value| {
        n += 1;
        event(s, v);
        n
    };
    ev(
        &mut s,
        json!({"type":"message_start","message":{"id":"msg_bench","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":4000,"cache_creation_input_tokens":0,"cache_read_input_tokens":8000,"output_tokens":1}}}),
    );
    ev(&mut s, json!({"type":"ping"}));
    ev(
        &mut s,
        json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}),
    );
    for i in 0..300 {
        ev(
            &mut s,
            json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":format!(" thought {i}")}}),
        );
    }
    ev(
        &mut s,
        json!({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB".repeat(200)}}),
    );
    ev(&mut s, json!({"type":"content_block_stop","index":0}));
    ev(
        &mut s,
        json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
    );
    let words = [
        "The",
        " quick",
        " brown",
        " fox",
        " jumps",
        " over",
        " the",
        " lazy",
        " dög",
        " — ",
        "\"quoted\"",
        "\n",
        " 😀",
    ];
    let text_deltas = EVENTS - 300 - 400 - 12;
    for i in 0..text_deltas {
        ev(
            &mut s,
            json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":words[i % words.len()]}}),
        );
    }
    ev(&mut s, json!({"type":"content_block_stop","index":1}));
    ev(
        &mut s,
        json!({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_bench","name":"write_file","input":{}}}),
    );
    for i in 0..400 {
        let d = if i == 0 {
            "{\"content\":\"".to_owned()
        } else {
            format!("line {i}\\n")
        };
        ev(
            &mut s,
            json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":d}}),
        );
    }
    ev(
        &mut s,
        json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"\"}"}}),
    );
    ev(&mut s, json!({"type":"content_block_stop","index":2}));
    ev(
        &mut s,
        json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":9000}}),
    );
    let n = ev(&mut s, json!({"type":"message_stop"}));
    (s.into_bytes(), n)
}

/// The Responses stream a wire transcript decodes to.
fn decoded(wire: &[u8]) -> Vec<u8> {
    let mut decoder = Decoder::new();
    let mut hub = MessagesDecoder::new(Vec::new());
    let mut out = Vec::new();
    decoder
        .push(wire, |e| {
            hub.event(e.name, e.data, &mut |t: &str, d: &[u8]| {
                write_event(&mut out, Some(t), d)
            })
        })
        .unwrap();
    out
}

/// A key for the echo filter (the proxy's own come from the locked arena).
struct BenchKey(Vec<u8>);

impl SecretBytes for BenchKey {
    fn secret_bytes(&self) -> Option<&[u8]> {
        Some(&self.0)
    }
}

fn keys(n: usize) -> Arc<EchoMatcher> {
    let sources = (0..n)
        .map(|i| {
            let key = format!("sk-proj-bench{i:06}abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH");
            Arc::new(BenchKey(key.into_bytes())) as Arc<dyn SecretBytes>
        })
        .collect();
    Arc::new(EchoMatcher::new(sources))
}

/// A Chat Completions chunk stream of exactly [`EVENTS`] events: inline think tags, text
/// deltas, one tool call with argument deltas, the finish, the usage chunk, `[DONE]`.
fn chat_transcript() -> Vec<u8> {
    let mut s = String::new();
    let mut push = |delta: serde_json::Value, finish: Option<&str>| {
        let chunk = json!({"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1760000000,
            "model":"qwen3-coder","choices":[{"index":0,"delta":delta,"finish_reason":finish}]});
        s.push_str(&format!("data: {chunk}\n\n"));
    };
    let (reasoning, content) = (2000, 6000);
    let arguments = EVENTS - 7 - reasoning - content;
    push(json!({"role":"assistant","content":""}), None);
    push(json!({"content":"<think>"}), None);
    for i in 0..reasoning {
        push(json!({ "content": format!("step {i} of the plan ") }), None);
    }
    push(json!({"content":"</think>\n\n"}), None);
    for i in 0..content {
        push(json!({ "content": format!("word{i} ") }), None);
    }
    push(
        json!({"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"write_file","arguments":""}}]}),
        None,
    );
    for i in 0..arguments {
        push(
            json!({"tool_calls":[{"index":0,"function":{"arguments": format!("x{i}")}}]}),
            None,
        );
    }
    push(json!({}), Some("tool_calls"));
    s.push_str("data: {\"id\":\"chatcmpl-bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":9000,\"total_tokens\":9010}}\n\n");
    s.push_str("data: [DONE]\n\n");
    s.into_bytes()
}

fn cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

struct Measure {
    name: &'static str,
    cpu: Duration,
    wall: Duration,
    out_bytes: usize,
}

fn measure(name: &'static str, iterations: usize, mut run: impl FnMut() -> usize) -> Measure {
    run(); // warm-up
    let (c0, w0) = (cpu(), Instant::now());
    let mut out_bytes = 0;
    for _ in 0..iterations {
        out_bytes = std::hint::black_box(run());
    }
    Measure {
        name,
        cpu: cpu() - c0,
        wall: w0.elapsed(),
        out_bytes,
    }
}

fn main() -> std::process::ExitCode {
    const USAGE: &str = "usage: translate_bench [ITERATIONS] (default 50; prints JSON)";
    let iterations: usize = match std::env::args().nth(1).as_deref() {
        None => 50,
        Some("--help" | "-h") => {
            println!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        Some(n) => match n.parse() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("translate_bench: ITERATIONS is a count\n{USAGE}");
                return std::process::ExitCode::from(2);
            }
        },
    };
    let (upstream, events) = transcript();
    let body = json!({"model":"gpt-5.4","stream":true,"stream_options":{"include_usage":true},
        "messages":[{"role":"user","content":"go"}],
        "tools":[{"type":"function","function":{"name":"write_file","parameters":{"type":"object","properties":{"content":{"type":"string"}}}}}]});
    let ctx: ResponseContext = map_request(
        Dialect::Chat,
        &serde_json::to_vec(&body).unwrap(),
        &ModelTable::builtin(),
    )
    .unwrap()
    .context;

    let anthropic_body = json!({"model":"gpt-5.4","max_tokens":4096,"stream":true,
        "messages":[{"role":"user","content":"go"}],
        "tools":[{"name":"write_file","input_schema":{"type":"object","properties":{"content":{"type":"string"}}}}]});
    let anthropic: ResponseContext = map_request(
        Dialect::Anthropic,
        &serde_json::to_vec(&anthropic_body).unwrap(),
        &ModelTable::builtin(),
    )
    .unwrap()
    .context;

    let chat_upstream = chat_transcript();
    let chunks: Vec<bytes::Bytes> = upstream
        .chunks(CHUNK)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let one_key = keys(1);
    let many_keys = keys(1000);
    let redact = |matcher: &Arc<EchoMatcher>| {
        let mut scanner = SseScanner::new();
        let mut filter = EchoFilter::new(Arc::clone(matcher));
        let mut n = 0;
        let mut out = 0;
        for chunk in &chunks {
            scanner.feed(chunk, |_| n += 1);
            out += filter.push(chunk.clone()).len();
        }
        out += filter.finish().len();
        assert_eq!(n, events);
        assert_eq!(out, upstream.len());
        out
    };

    let results = [
        measure("scan", iterations, || {
            let mut scanner = SseScanner::new();
            let mut n = 0;
            for chunk in upstream.chunks(CHUNK) {
                scanner.feed(chunk, |_| n += 1);
            }
            assert_eq!(n, events);
            0
        }),
        measure("scan_redact", iterations, || redact(&one_key)),
        measure("scan_redact_1000", iterations, || redact(&many_keys)),
        measure("decode", iterations, || {
            let mut decoder = Decoder::new();
            let mut n = 0;
            for chunk in upstream.chunks(CHUNK) {
                decoder.push(chunk, |_| n += 1).unwrap();
            }
            decoder.finish().unwrap();
            assert_eq!(n, events);
            0
        }),
        measure("chat_stream", iterations, || {
            let mut p = StreamPipeline::new(&ctx);
            let mut out = Vec::with_capacity(1 << 20);
            for chunk in upstream.chunks(CHUNK) {
                p.push(chunk, &mut out);
            }
            p.finish(None, &mut out);
            assert!(out.ends_with(b"data: [DONE]\n\n"));
            out.len()
        }),
        measure("anthropic_stream", iterations, || {
            let mut p = StreamPipeline::new(&anthropic);
            let mut out = Vec::with_capacity(1 << 20);
            for chunk in upstream.chunks(CHUNK) {
                p.push(chunk, &mut out);
            }
            p.finish(None, &mut out);
            assert!(out.ends_with(b"data: {\"type\":\"message_stop\"}\n\n"));
            out.len()
        }),
        measure("anthropic_aggregate", iterations, || {
            let mut p = AggregatePipeline::new(&anthropic);
            for chunk in upstream.chunks(CHUNK) {
                p.push(chunk);
            }
            let r = p.finish(None);
            assert_eq!(r.status, 200);
            r.body.len()
        }),
        measure("chat_aggregate", iterations, || {
            let mut p = AggregatePipeline::new(&ctx);
            for chunk in upstream.chunks(CHUNK) {
                p.push(chunk);
            }
            let r = p.finish(None);
            assert_eq!(r.status, 200);
            r.body.len()
        }),
        measure("chatwire_messages", iterations, || {
            let decoder = ChatWireDecoder::new(
                "qwen3-coder",
                ThinkMode::Reasoning,
                Default::default(),
                Default::default(),
            );
            let mut p = StreamPipeline::new(&anthropic).over_wire(Box::new(decoder));
            let mut out = Vec::with_capacity(1 << 20);
            for chunk in chat_upstream.chunks(CHUNK) {
                p.push(chunk, &mut out);
            }
            p.finish(None, &mut out);
            assert!(out.ends_with(b"data: {\"type\":\"message_stop\"}\n\n"));
            out.len()
        }),
        measure("chatwire_passthrough_off", iterations, || {
            let mut stage = ChatPassthrough::new(ThinkMode::Off, false);
            let mut out = Vec::with_capacity(chat_upstream.len());
            for chunk in chat_upstream.chunks(CHUNK) {
                stage.push(chunk, &mut out).unwrap();
            }
            stage.finish(&mut out).unwrap();
            assert!(out.ends_with(b"data: [DONE]\n\n"));
            out.len()
        }),
        measure("chatwire_passthrough", iterations, || {
            let mut stage = ChatPassthrough::new(ThinkMode::Strip, false);
            let mut out = Vec::with_capacity(chat_upstream.len());
            for chunk in chat_upstream.chunks(CHUNK) {
                stage.push(chunk, &mut out).unwrap();
            }
            stage.finish(&mut out).unwrap();
            assert!(out.ends_with(b"data: [DONE]\n\n"));
            out.len()
        }),
    ];

    let (wire, wire_events) = wire_transcript();
    let direct = decoded(&wire);
    let hub_run = |upstream: &[u8], over_wire: bool| {
        let mut p = StreamPipeline::new(&ctx);
        if over_wire {
            p = p.over_wire(Box::new(MessagesDecoder::new(Vec::new())));
        }
        let mut out = Vec::with_capacity(1 << 20);
        for chunk in upstream.chunks(CHUNK) {
            p.push(chunk, &mut out);
        }
        p.finish(None, &mut out);
        assert!(out.ends_with(b"data: [DONE]\n\n"));
        out.len()
    };
    let hub_results = [
        measure("hub_chat_stream", iterations, || hub_run(&wire, true)),
        measure("hub_direct_chat_stream", iterations, || {
            hub_run(&direct, false)
        }),
    ];
    assert_eq!(hub_run(&wire, true), hub_run(&direct, false));

    let total = (events * iterations) as f64;
    let per_event = |m: &Measure| m.cpu.as_secs_f64() * 1e6 / total;
    let base = per_event(&results[0]);
    println!(
        "{events} events, {} upstream bytes, {iterations} iterations, {CHUNK}-byte chunks",
        upstream.len()
    );
    let mut json_rows = Vec::new();
    for m in &results {
        let us = per_event(m);
        let eps = total / m.wall.as_secs_f64();
        println!(
            "{:<15} {:>12.0} events/s  {:>7.3} µs CPU/event  (+{:.3} over scan)  out {} bytes",
            m.name,
            eps,
            us,
            us - base,
            m.out_bytes
        );
        json_rows.push(json!({"case": m.name, "events_per_s": eps.round(), "cpu_us_per_event": (us * 1000.0).round() / 1000.0,
            "added_cpu_us_per_event": ((us - base) * 1000.0).round() / 1000.0}));
    }
    let wire_total = (wire_events * iterations) as f64;
    let hub_us: Vec<f64> = hub_results
        .iter()
        .map(|m| m.cpu.as_secs_f64() * 1e6 / wire_total)
        .collect();
    for (m, us) in hub_results.iter().zip(&hub_us) {
        println!(
            "{:<22} {:>12.0} wire events/s  {:>7.3} µs CPU/wire event  out {} bytes",
            m.name,
            wire_total / m.wall.as_secs_f64(),
            us,
            m.out_bytes
        );
    }
    let hub_step = hub_us[0] - hub_us[1];
    println!("hub step (Messages → Responses): {hub_step:.3} µs CPU per wire event");
    let hub = json!({"wire_events": wire_events, "hub_chat_stream_cpu_us_per_event": (hub_us[0] * 1000.0).round() / 1000.0,
        "direct_chat_stream_cpu_us_per_event": (hub_us[1] * 1000.0).round() / 1000.0,
        "hub_step_cpu_us_per_event": (hub_step * 1000.0).round() / 1000.0});
    println!(
        "{}",
        json!({"events": events, "iterations": iterations, "results": json_rows, "hub": hub})
    );
    std::process::ExitCode::SUCCESS
}
