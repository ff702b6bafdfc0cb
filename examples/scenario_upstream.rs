//! An offline mock Responses upstream that answers like a tiny scripted model, for the real-client
//! end-to-end tests (`scripts/e2e-clients`). It validates what it is sent the way the public API
//! does for the cases a translating proxy gets wrong, records every request, and answers with the
//! full public event sequence (every event with `sequence_number`), or the JSON Response object
//! when the request does not ask for a stream.
//!
//! Usage: scenario_upstream [--port N] [--record FILE] [--gap-ms N] [--exit-on-stdin-eof]
//! Prints `PORT` (one line) on stdout once listening on 127.0.0.1. `--record FILE` appends one
//! JSON line per request: `{"method","path","headers":[[name,value]…],"body":<JSON, or the text
//! when it is not JSON>}`, written before the answer starts. `--gap-ms` waits between events.
//!
//! Routes (anything else: 404 with an OpenAI error body):
//!   POST /v1/responses, /responses                  the scenario below
//!   POST /v1/responses/compact, /responses/compact  `{"output":[…, compaction item]}`
//!   GET  /v1/models, /models                         a fixed list (OpenAI and Codex shapes)
//!
//! The scenario, decided from the input items after the last assistant output (assistant message
//! or `function_call`); that is the current turn:
//! * the turn holds `function_call_output` items: a text that quotes every output,
//!   `The tool returned: <output>` (outputs joined with "; "), so a test sees the round trip;
//! * the turn's prompt (its first user text that does not start with `<`, Claude Code's
//!   `<system-reminder>` blocks removed) mentions a function tool by name or the word "tool", or `tool_choice` is `required` or names
//!   a function: one `function_call` per tool named in the text when `parallel_tool_calls` is not
//!   false (else the first), or the first function tool. Arguments fill the schema's required
//!   fields (and a string `description`) with plausible values; a `command` string is
//!   `echo tool-ran-$((6*7))`, so only a shell that ran it produces `tool-ran-42`;
//! * `input` ends with `compaction_trigger`: one `compaction` item;
//! * otherwise a text: `Hello from the scenario upstream. You said: <prompt>` (the prompt cut at
//!   200 characters; longer when the prompt contains the word "long"), or, with
//!   `text.format` `json_schema` / `json_object`, a JSON text matching the schema.
//!
//! With `reasoning.effort` other than `none`, a `reasoning` item comes first. Like the real API,
//! its summary is streamed only when `reasoning.summary` is set, and it carries `encrypted_content`
//! (`gAAAAB…`) only when `include` has `reasoning.encrypted_content`.
//!
//! Each text delta is one "token" (a word and its trailing space). When `max_output_tokens` is
//! smaller than the text, the text is cut there and the response ends `incomplete`
//! (`max_output_tokens`). Usage: `input_tokens` is the body size / 4, a quarter of it cached;
//! `output_tokens` includes `reasoning_tokens`.
//!
//! Rejected with 400 (an `invalid_request_error` like the API's): a body that is not a JSON object;
//! no `model`; `max_output_tokens` below 16; a `function_call_output` with no earlier
//! `function_call` of the same `call_id`; a `function_call` with no later output; a `reasoning`
//! input item whose `encrypted_content` this mock did not issue; a content part type the API does
//! not know (e.g. Chat's `text`); a function tool name not matching `^[a-zA-Z0-9_-]{1,64}$`.

use std::convert::Infallible;
use std::io::Write as _;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The prefix of every `encrypted_content` this mock issues (a Fernet token starts `gAAAAB`).
const ENCRYPTED_PREFIX: &str = "gAAAABscenario-";
/// The Responses API's smallest accepted `max_output_tokens`.
const MIN_OUTPUT_TOKENS: u64 = 16;
/// The marker command: only a shell that ran it prints `tool-ran-42`.
const MARKER_COMMAND: &str = "echo tool-ran-$((6*7))";
/// Reasoning summary text (streamed in word deltas).
const SUMMARY: &str = "Thinking it over: the user wants a short, direct answer from the scenario.";
/// How many reasoning tokens a reasoning item is said to have used.
const REASONING_TOKENS: u64 = 24;

struct Options {
    port: u16,
    record: Option<String>,
    gap: Duration,
    exit_on_stdin_eof: bool,
}

struct State {
    record: Option<Mutex<std::fs::File>>,
    gap: Duration,
    /// Numbers response, item and call ids.
    next_id: AtomicU64,
}

type MockBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        port: 0,
        record: None,
        gap: Duration::ZERO,
        exit_on_stdin_eof: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--port" => {
                options.port = value("--port")?.parse().map_err(|_| "--port N")?;
            }
            "--record" => options.record = Some(value("--record")?),
            "--gap-ms" => {
                let ms: u64 = value("--gap-ms")?.parse().map_err(|_| "--gap-ms N")?;
                options.gap = Duration::from_millis(ms);
            }
            "--exit-on-stdin-eof" => options.exit_on_stdin_eof = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> ExitCode {
    const USAGE: &str =
        "usage: scenario_upstream [--port N] [--record FILE] [--gap-ms N] [--exit-on-stdin-eof]";
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("scenario_upstream: {message}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let record = match &options.record {
        None => None,
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => Some(Mutex::new(file)),
            Err(error) => {
                eprintln!("scenario_upstream: cannot open {path}: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    let listener = match TcpListener::bind(("127.0.0.1", options.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("scenario_upstream: cannot listen: {error}");
            return ExitCode::FAILURE;
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    println!("{port}");
    let _ = std::io::stdout().flush();
    let state = Arc::new(State {
        record,
        gap: options.gap,
        next_id: AtomicU64::new(1),
    });
    tokio::spawn(accept_loop(listener, state));
    if options.exit_on_stdin_eof {
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await;
    } else {
        std::future::pending::<()>().await;
    }
    ExitCode::SUCCESS
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Events go out as separate small writes: without this, Nagle delays them.
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(request, state).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

// === request handling ===

async fn handle(request: Request<Incoming>, state: Arc<State>) -> Response<MockBody> {
    let (parts, body) = request.into_parts();
    let raw = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let decoded = decode(parts.headers.get("content-encoding"), &raw);
    let parsed: Option<Value> = serde_json::from_slice(&decoded).ok();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    state.record_request(
        &parts.method,
        &path_and_query,
        &parts.headers,
        &decoded,
        &parsed,
    );

    match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/v1/responses" | "/responses") => match parsed {
            Some(Value::Object(body)) => match plan(&body, &state) {
                Ok(plan) if wants_stream(&body) => sse(plan.events(), state.gap),
                Ok(plan) => json_response(StatusCode::OK, &plan.response_object("completed")),
                Err(message) => invalid_request(&message),
            },
            _ => invalid_request("We could not parse the JSON body of your request."),
        },
        (&Method::POST, "/v1/responses/compact" | "/responses/compact") => {
            let id = state.id();
            let user = json!({"type":"message","role":"user","content":[{"type":"input_text","text":"(compacted conversation)"}]});
            let compaction = json!({"id":format!("cmp_scn_{id}"),"type":"compaction","encrypted_content":format!("{ENCRYPTED_PREFIX}cmp-{id}")});
            json_response(StatusCode::OK, &json!({"output":[user, compaction]}))
        }
        (&Method::GET, "/v1/models" | "/models") => json_response(
            StatusCode::OK,
            &json!({"object":"list","data":[
                {"id":"gpt-5.4","object":"model","created":1_767_225_600,"owned_by":"openai"},
                {"id":"gpt-5.4-mini","object":"model","created":1_767_225_600,"owned_by":"openai"}
            ],"models":[]}),
        ),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error":{"message":"Not found (scenario upstream).","type":"invalid_request_error","param":null,"code":"not_found"}}),
        ),
    }
}

/// The body as the upstream reads it: decoded when it came compressed.
fn decode(encoding: Option<&http::HeaderValue>, raw: &Bytes) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let ok = match encoding.map(|v| v.as_bytes()) {
        Some(b"zstd") => zstd::decode_all(&raw[..]).map(|v| out = v).is_ok(),
        Some(b"gzip") => flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .is_ok(),
        Some(b"deflate") => flate2::read::ZlibDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .is_ok(),
        _ => false,
    };
    if ok {
        out
    } else {
        raw.to_vec()
    }
}

fn wants_stream(body: &Map<String, Value>) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

impl State {
    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn record_request(
        &self,
        method: &Method,
        path: &str,
        headers: &http::HeaderMap,
        body: &[u8],
        parsed: &Option<Value>,
    ) {
        let Some(file) = &self.record else {
            return;
        };
        let headers: Vec<Value> = headers
            .iter()
            .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
            .collect();
        let body = parsed
            .clone()
            .unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into_owned()));
        let line = json!({"method":method.as_str(),"path":path,"headers":headers,"body":body});
        if let Ok(mut file) = file.lock() {
            let _ = writeln!(file, "{line}");
            let _ = file.flush();
        }
    }
}

// === the scenario ===

/// One output item this answer will produce.
enum Item {
    Reasoning {
        id: String,
        /// Streamed only when the request asked for a summary.
        summary: Option<String>,
        encrypted: Option<String>,
    },
    Message {
        id: String,
        /// The words (with their trailing spaces) actually sent; one delta each.
        pieces: Vec<String>,
        incomplete: bool,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
    Compaction {
        id: String,
        encrypted: String,
    },
}

struct Plan {
    id: String,
    model: String,
    created_at: u64,
    items: Vec<Item>,
    input_tokens: u64,
    /// Whether `max_output_tokens` cut the text.
    incomplete: bool,
    /// Fields of the request echoed in the Response object.
    echo: Map<String, Value>,
}

/// Decides the answer, or the 400 message for a request the API would reject.
fn plan(body: &Map<String, Value>, state: &State) -> Result<Plan, String> {
    let model = match body.get("model").and_then(Value::as_str) {
        Some(model) if !model.is_empty() => model.to_string(),
        _ => return Err("Missing required parameter: 'model'.".into()),
    };
    let max_output_tokens = body.get("max_output_tokens").and_then(Value::as_u64);
    if let Some(max) = max_output_tokens {
        if max < MIN_OUTPUT_TOKENS {
            return Err(format!("Invalid 'max_output_tokens': integer below minimum value. Expected a value >= {MIN_OUTPUT_TOKENS}, but got {max} instead."));
        }
    }
    let tools = function_tools(body)?;
    let items = input_items(body);
    validate_items(&items)?;

    let mut out = Vec::new();
    let effort = body
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str);
    if effort.is_some_and(|e| e != "none") {
        let summary_requested = body
            .get("reasoning")
            .and_then(|r| r.get("summary"))
            .and_then(Value::as_str)
            .is_some_and(|s| s != "none");
        let include_encrypted = body
            .get("include")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "reasoning.encrypted_content"));
        let n = state.id();
        out.push(Item::Reasoning {
            id: format!("rs_scn_{n}"),
            summary: summary_requested.then(|| SUMMARY.to_string()),
            encrypted: include_encrypted
                .then(|| format!("{ENCRYPTED_PREFIX}{n}-{}", "A".repeat(40))),
        });
    }

    let turn = current_turn(&items);
    let outputs: Vec<String> = turn
        .iter()
        .filter(|i| kind(i) == "function_call_output")
        .map(|i| output_text(i.get("output")))
        .collect();
    // The turn's first user text that is not injected context: Claude Code appends a reminder
    // message after the prompt; Codex puts `<environment_context>` and the like before it.
    let prompt = turn
        .iter()
        .filter(|i| kind(i) == "message" && i.get("role").and_then(Value::as_str) == Some("user"))
        .map(|i| prompt_text(i.get("content")))
        .find(|text| !text.is_empty() && !text.starts_with('<'))
        .unwrap_or_default();

    let mut incomplete = false;
    if items.last().map(kind) == Some("compaction_trigger") {
        let n = state.id();
        out.push(Item::Compaction {
            id: format!("cmp_scn_{n}"),
            encrypted: format!("{ENCRYPTED_PREFIX}cmp-{n}"),
        });
    } else if !outputs.is_empty() {
        let text = format!("The tool returned: {}", outputs.join("; "));
        incomplete = push_message(&mut out, &text, max_output_tokens, state);
    } else if let Some(chosen) = chosen_tools(body, &tools, &prompt) {
        for tool in chosen {
            let n = state.id();
            let arguments = example_arguments(tool.get("parameters"));
            out.push(Item::Call {
                id: format!("fc_scn_{n}"),
                call_id: format!("call_scn_{n}"),
                name: tool
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                arguments: arguments.to_string(),
            });
        }
    } else {
        let text = answer_text(body, &prompt);
        incomplete = push_message(&mut out, &text, max_output_tokens, state);
    }

    let mut echo = Map::new();
    for key in [
        "instructions",
        "max_output_tokens",
        "parallel_tool_calls",
        "previous_response_id",
        "reasoning",
        "service_tier",
        "store",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_p",
        "metadata",
        "prompt_cache_key",
    ] {
        if let Some(value) = body.get(key) {
            echo.insert(key.to_string(), value.clone());
        }
    }
    let body_len = serde_json::to_vec(body).map(|v| v.len()).unwrap_or(0) as u64;
    Ok(Plan {
        id: format!("resp_scn_{}", state.id()),
        model,
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        items: out,
        input_tokens: (body_len / 4).max(1),
        incomplete,
        echo,
    })
}

/// Adds a message saying `text`, cut at `max` tokens; true if it was cut.
fn push_message(out: &mut Vec<Item>, text: &str, max: Option<u64>, state: &State) -> bool {
    let mut pieces = words(text);
    let mut incomplete = false;
    if let Some(max) = max {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        if pieces.len() > max {
            pieces.truncate(max);
            incomplete = true;
        }
    }
    out.push(Item::Message {
        id: format!("msg_scn_{}", state.id()),
        pieces,
        incomplete,
    });
    incomplete
}

fn kind(item: &Value) -> &str {
    match item.get("type").and_then(Value::as_str) {
        Some(kind) => kind,
        // `{role, content}` without a type is a message (EasyInputMessage).
        None if item.get("role").is_some() => "message",
        None => "",
    }
}

/// `input` as a list of items (a string is one user message).
fn input_items(body: &Map<String, Value>) -> Vec<Value> {
    match body.get("input") {
        Some(Value::String(text)) => {
            vec![
                json!({"type":"message","role":"user","content":[{"type":"input_text","text":text}]}),
            ]
        }
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

/// The items after the last assistant output (assistant message or function call).
fn current_turn(items: &[Value]) -> &[Value] {
    let start = items
        .iter()
        .rposition(|i| {
            let k = kind(i);
            k == "function_call"
                || k == "custom_tool_call"
                || (k == "message" && i.get("role").and_then(Value::as_str) == Some("assistant"))
        })
        .map_or(0, |p| p + 1);
    &items[start..]
}

/// Rejects what the API rejects: unknown content parts, unpaired calls and outputs, foreign
/// encrypted reasoning.
fn validate_items(items: &[Value]) -> Result<(), String> {
    const PARTS: &[&str] = &[
        "input_text",
        "input_image",
        "input_file",
        "output_text",
        "refusal",
        "computer_screenshot",
        "summary_text",
    ];
    let mut calls: Vec<&str> = Vec::new();
    let mut answered: Vec<&str> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match kind(item) {
            "message" => {
                if let Some(Value::Array(parts)) = item.get("content") {
                    for (p, part) in parts.iter().enumerate() {
                        let part_type = part.get("type").and_then(Value::as_str).unwrap_or("");
                        if !PARTS.contains(&part_type) {
                            return Err(format!("Invalid value: '{part_type}'. Supported values are: 'input_text', 'input_image', 'output_text', 'refusal', 'input_file', 'computer_screenshot', and 'summary_text'. (input[{index}].content[{p}].type)"));
                        }
                    }
                }
            }
            "function_call" => {
                calls.push(item.get("call_id").and_then(Value::as_str).unwrap_or(""));
            }
            "function_call_output" => {
                let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or("");
                if !calls.contains(&call_id) {
                    return Err(format!(
                        "No tool call found for function call output with call_id {call_id}."
                    ));
                }
                answered.push(call_id);
            }
            "reasoning" => {
                if let Some(encrypted) = item.get("encrypted_content").and_then(Value::as_str) {
                    if !encrypted.starts_with(ENCRYPTED_PREFIX) {
                        let id = item.get("id").and_then(Value::as_str).unwrap_or("");
                        return Err(format!("The encrypted content for item {id} could not be verified. (invalid_encrypted_content)"));
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(open) = calls.iter().find(|c| !answered.contains(c)) {
        return Err(format!("No tool output found for function call {open}."));
    }
    Ok(())
}

/// The request's function tools; rejects names the API rejects.
fn function_tools(body: &Map<String, Value>) -> Result<Vec<&Value>, String> {
    let Some(Value::Array(tools)) = body.get("tools") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (index, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            continue;
        }
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(format!("Invalid 'tools[{index}].name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$' of at most 64 characters."));
        }
        out.push(tool);
    }
    Ok(out)
}

/// The tools to call this turn, or None for a text answer.
fn chosen_tools<'a>(
    body: &Map<String, Value>,
    tools: &[&'a Value],
    prompt: &str,
) -> Option<Vec<&'a Value>> {
    if tools.is_empty() {
        return None;
    }
    let name_of = |t: &Value| {
        t.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    match body.get("tool_choice") {
        Some(Value::String(choice)) if choice == "none" => return None,
        Some(Value::Object(choice)) => {
            if let Some(name) = choice.get("name").and_then(Value::as_str) {
                return tools.iter().find(|t| name_of(t) == name).map(|t| vec![*t]);
            }
        }
        _ => {}
    }
    let prompt_words: Vec<&str> = prompt
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter(|w| !w.is_empty())
        .collect();
    // Tools named in the prompt, in the order the prompt names them.
    let mut named: Vec<&Value> = Vec::new();
    for word in &prompt_words {
        if let Some(tool) = tools.iter().find(|t| name_of(t) == *word) {
            if !named.iter().any(|n| name_of(n) == *word) {
                named.push(tool);
            }
        }
    }
    let asks = !named.is_empty()
        || prompt_words
            .iter()
            .any(|w| w.eq_ignore_ascii_case("tool") || w.eq_ignore_ascii_case("tools"));
    let required = body.get("tool_choice").and_then(Value::as_str) == Some("required");
    if !asks && !required {
        return None;
    }
    let parallel = body
        .get("parallel_tool_calls")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if named.is_empty() {
        named.push(tools[0]);
    }
    if !parallel {
        named.truncate(1);
    }
    Some(named)
}

/// The text of a user message, without Claude Code's `<system-reminder>` blocks.
fn prompt_text(content: Option<&Value>) -> String {
    let texts: Vec<String> = match content {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    texts
        .iter()
        .map(|t| strip_reminders(t))
        .filter(|t| !t.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

fn strip_reminders(text: &str) -> String {
    let mut rest = text;
    let mut out = String::new();
    while let Some(start) = rest.find("<system-reminder>") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</system-reminder>") {
            Some(end) => rest = &rest[start + end + "</system-reminder>".len()..],
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

/// A function_call_output's output as text (a string, or the texts of its parts).
fn output_text(output: Option<&Value>) -> String {
    match output {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("input_text") | Some("output_text") => p
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                Some(other) => format!("[{other}]"),
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// The text answer to a prompt (JSON when `text.format` asks for it).
fn answer_text(body: &Map<String, Value>, prompt: &str) -> String {
    let format = body.get("text").and_then(|t| t.get("format"));
    match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("json_schema") => {
            example_value("answer", format.and_then(|f| f.get("schema")), true).to_string()
        }
        Some("json_object") => json!({"answer":"Hello from the scenario upstream."}).to_string(),
        _ => {
            let said: String = prompt.chars().take(200).collect();
            let mut text = format!("Hello from the scenario upstream. You said: {said}");
            if prompt
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| w.eq_ignore_ascii_case("long"))
            {
                for _ in 0..4 {
                    text.push_str(" This sentence is here to make the answer long enough to be cut by a small max_output_tokens.");
                }
            }
            text
        }
    }
}

/// Arguments for a tool: its schema's required fields (and a string `description`) filled in.
fn example_arguments(schema: Option<&Value>) -> Value {
    let mut value = example_value("arguments", schema, false);
    let has_description = schema
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.get("description"))
        .and_then(|d| d.get("type"))
        .and_then(Value::as_str)
        == Some("string");
    if let (Value::Object(map), true) = (&mut value, has_description) {
        map.entry("description")
            .or_insert_with(|| json!("Print a marker"));
    }
    value
}

/// A plausible value for a field named `name` with this JSON schema; objects get their required
/// properties (all properties when `all`).
fn example_value(name: &str, schema: Option<&Value>, all: bool) -> Value {
    let Some(schema) = schema else {
        return json!({});
    };
    if let Some(Value::Array(choices)) = schema.get("enum") {
        if let Some(first) = choices.first() {
            return first.clone();
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        // ["string", "null"]: the first non-null type.
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut map = Map::new();
            if let Some(properties) = properties {
                for (field, field_schema) in properties {
                    if all || required.contains(&field.as_str()) {
                        map.insert(field.clone(), example_value(field, Some(field_schema), all));
                    }
                }
            }
            Value::Object(map)
        }
        "array" => json!([example_value(name, schema.get("items"), all)]),
        "integer" => json!(1),
        "number" => json!(1.5),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => Value::String(example_string(name)),
    }
}

fn example_string(name: &str) -> String {
    match name {
        "command" | "cmd" => MARKER_COMMAND.to_string(),
        "description" => "Print a marker".to_string(),
        "location" | "city" => "Paris".to_string(),
        "file_path" | "path" | "filename" => "/etc/hostname".to_string(),
        "url" => "http://127.0.0.1/".to_string(),
        "query" | "pattern" | "prompt" => "scenario".to_string(),
        "unit" => "celsius".to_string(),
        other => format!("scenario-{other}"),
    }
}

/// `text` as word pieces (each with its trailing whitespace), one delta and one token each.
fn words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut in_space = false;
    for c in text.chars() {
        if in_space && !c.is_whitespace() {
            pieces.push(std::mem::take(&mut current));
        }
        in_space = c.is_whitespace();
        current.push(c);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// `s` in about `n` pieces, cut at character boundaries.
fn split_in(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let per = chars.len().div_ceil(n.max(1)).max(1);
    chars.chunks(per).map(|c| c.iter().collect()).collect()
}

// === the answer ===

impl Item {
    /// The complete item, as in `response.output_item.done` and `response.output`.
    fn done(&self) -> Value {
        match self {
            Item::Reasoning {
                id,
                summary,
                encrypted,
            } => {
                let summary: Vec<Value> = summary
                    .iter()
                    .map(|s| json!({"type":"summary_text","text":s}))
                    .collect();
                let mut item = json!({"id":id,"type":"reasoning","summary":summary});
                if let Some(encrypted) = encrypted {
                    item["encrypted_content"] = json!(encrypted);
                }
                item
            }
            Item::Message {
                id,
                pieces,
                incomplete,
            } => {
                let status = if *incomplete {
                    "incomplete"
                } else {
                    "completed"
                };
                json!({"id":id,"type":"message","role":"assistant","status":status,"content":[{"type":"output_text","text":pieces.concat(),"annotations":[],"logprobs":[]}]})
            }
            Item::Call {
                id,
                call_id,
                name,
                arguments,
            } => {
                json!({"id":id,"type":"function_call","status":"completed","call_id":call_id,"name":name,"arguments":arguments})
            }
            Item::Compaction { id, encrypted } => {
                json!({"id":id,"type":"compaction","encrypted_content":encrypted})
            }
        }
    }

    /// The item as `response.output_item.added` announces it.
    fn added(&self) -> Value {
        match self {
            Item::Reasoning { id, .. } => json!({"id":id,"type":"reasoning","summary":[]}),
            Item::Message { id, .. } => {
                json!({"id":id,"type":"message","role":"assistant","status":"in_progress","content":[]})
            }
            Item::Call {
                id, call_id, name, ..
            } => {
                json!({"id":id,"type":"function_call","status":"in_progress","call_id":call_id,"name":name,"arguments":""})
            }
            Item::Compaction { .. } => self.done(),
        }
    }

    fn output_tokens(&self) -> u64 {
        match self {
            Item::Reasoning { .. } => REASONING_TOKENS,
            Item::Message { pieces, .. } => pieces.len() as u64,
            Item::Call { arguments, .. } => (arguments.len() as u64 / 4).max(1),
            Item::Compaction { .. } => 8,
        }
    }
}

impl Plan {
    fn usage(&self) -> Value {
        let output: u64 = self.items.iter().map(Item::output_tokens).sum();
        let reasoning: u64 = self
            .items
            .iter()
            .filter(|i| matches!(i, Item::Reasoning { .. }))
            .map(Item::output_tokens)
            .sum();
        json!({
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.input_tokens / 4, "cache_write_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": self.input_tokens + output,
        })
    }

    /// The Response object with this status; output and usage only once finished.
    fn response_object(&self, status: &str) -> Value {
        let finished = status != "in_progress";
        // The fields the API always returns (the SDKs' Response type requires several), with its
        // defaults; the request's own values replace them below.
        let mut response = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": null,
            "max_output_tokens": null,
            "model": self.model,
            "output": [],
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "store": true,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": null,
            "metadata": {},
        });
        if finished {
            response["output"] = Value::Array(self.items.iter().map(Item::done).collect());
            response["usage"] = self.usage();
        }
        if status == "incomplete" {
            response["incomplete_details"] = json!({"reason":"max_output_tokens"});
        }
        if let Value::Object(map) = &mut response {
            for (k, v) in &self.echo {
                map.insert(k.clone(), v.clone());
            }
        }
        if self.incomplete && status == "completed" {
            response["status"] = json!("incomplete");
            response["incomplete_details"] = json!({"reason":"max_output_tokens"});
        }
        response
    }

    /// The full public-API event sequence, each event framed with an `event:` line.
    fn events(&self) -> Vec<String> {
        let mut events = Vec::new();
        let mut push = |kind: &str, mut data: Value| {
            data["type"] = json!(kind);
            data["sequence_number"] = json!(events.len());
            events.push(format!("event: {kind}\ndata: {data}\n\n"));
        };
        push(
            "response.created",
            json!({"response": self.response_object("in_progress")}),
        );
        push(
            "response.in_progress",
            json!({"response": self.response_object("in_progress")}),
        );
        for (index, item) in self.items.iter().enumerate() {
            push(
                "response.output_item.added",
                json!({"output_index":index,"item":item.added()}),
            );
            match item {
                Item::Reasoning {
                    id,
                    summary: Some(summary),
                    ..
                } => {
                    let part = json!({"type":"summary_text","text":""});
                    push(
                        "response.reasoning_summary_part.added",
                        json!({"item_id":id,"output_index":index,"summary_index":0,"part":part}),
                    );
                    for delta in words(summary) {
                        push(
                            "response.reasoning_summary_text.delta",
                            json!({"item_id":id,"output_index":index,"summary_index":0,"delta":delta}),
                        );
                    }
                    push(
                        "response.reasoning_summary_text.done",
                        json!({"item_id":id,"output_index":index,"summary_index":0,"text":summary}),
                    );
                    push(
                        "response.reasoning_summary_part.done",
                        json!({"item_id":id,"output_index":index,"summary_index":0,"part":{"type":"summary_text","text":summary}}),
                    );
                }
                Item::Message { id, pieces, .. } => {
                    let text = pieces.concat();
                    push(
                        "response.content_part.added",
                        json!({"item_id":id,"output_index":index,"content_index":0,"part":{"type":"output_text","text":"","annotations":[],"logprobs":[]}}),
                    );
                    for delta in pieces {
                        push(
                            "response.output_text.delta",
                            json!({"item_id":id,"output_index":index,"content_index":0,"delta":delta,"logprobs":[]}),
                        );
                    }
                    push(
                        "response.output_text.done",
                        json!({"item_id":id,"output_index":index,"content_index":0,"text":text,"logprobs":[]}),
                    );
                    push(
                        "response.content_part.done",
                        json!({"item_id":id,"output_index":index,"content_index":0,"part":{"type":"output_text","text":text,"annotations":[],"logprobs":[]}}),
                    );
                }
                Item::Call { id, arguments, .. } => {
                    for delta in split_in(arguments, 4) {
                        push(
                            "response.function_call_arguments.delta",
                            json!({"item_id":id,"output_index":index,"delta":delta}),
                        );
                    }
                    push(
                        "response.function_call_arguments.done",
                        json!({"item_id":id,"output_index":index,"arguments":arguments}),
                    );
                }
                Item::Reasoning { summary: None, .. } | Item::Compaction { .. } => {}
            }
            push(
                "response.output_item.done",
                json!({"output_index":index,"item":item.done()}),
            );
        }
        if self.incomplete {
            push(
                "response.incomplete",
                json!({"response": self.response_object("incomplete")}),
            );
        } else {
            push(
                "response.completed",
                json!({"response": self.response_object("completed")}),
            );
        }
        events
    }
}

// === responses ===

fn json_response(status: StatusCode, body: &Value) -> Response<MockBody> {
    let mut response = Response::new(
        http_body_util::Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn invalid_request(message: &str) -> Response<MockBody> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error":{"message":message,"type":"invalid_request_error","param":null,"code":null}}),
    )
}

/// An event stream sending one event per body frame, `gap` apart.
fn sse(events: Vec<String>, gap: Duration) -> Response<MockBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        for event in events {
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            if tx.send(Bytes::from(event)).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(ChannelBody { rx }.boxed());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    response
}

struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}
