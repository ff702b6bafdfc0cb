//! A small closed-loop load generator for `scripts/bench`: POSTs a Responses request to one URL
//! from N concurrent keep-alive connections and prints one JSON object of results on stdout.
//!
//! Usage: loadgen --url URL [--mode json|stream] [--concurrency N]
//!                [--requests N | --duration SECS] [--warmup N] [--threads N] [--timeout SECS]
//!                [--connections keep-alive|per-request] [--wire responses|chat|anthropic]
//!                [--api-key KEY] [--model NAME]
//!
//! * `--wire chat`: a Chat Completions body (`messages`) instead of a Responses one (`input`);
//!   a stream's first delta is its first chunk with non-empty `content` (as the Responses one
//!   is its first `output_text.delta`, after any role-only or reasoning chunk), and a stream
//!   without `data: [DONE]` is an error. `--wire anthropic`: a Messages body, `x-api-key` from
//!   `--api-key`, the first `content_block_delta`, ended by `message_stop`. `--model` names the
//!   model (default `gpt-5`, `claude-bench` for Anthropic).
//! * `json`: `"stream": false`; latency is request start to the last body byte.
//! * `--connections per-request`: every request on a new connection (`Connection: close`), to
//!   measure what the proxy spends per accepted connection; default `keep-alive`.
//! * `stream`: `"stream": true`; also records the time to the first byte of the first
//!   `response.output_text.delta` event, and counts a stream without `response.completed` as an
//!   error.
//!
//! Warm-up requests (default 20 per connection slot) run first at the same concurrency and are
//! not measured; the output reports them so callers that sample a process's CPU around a run
//! know how many requests that process served. Any non-200 status, transport error,
//! incomplete stream or request slower than `--timeout` (default 10 s) is an error and is
//! excluded from the latency figures; errors are counted, never fatal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use memchr::memmem;
use tokio::time::Instant;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The API the requests speak.
#[derive(Clone, Copy, PartialEq)]
enum Wire {
    Responses,
    /// Chat Completions (the proxy's translation, or a chat server).
    Chat,
    Anthropic,
}

impl Wire {
    /// The bytes that mark a stream's first text delta.
    fn delta_event(self) -> &'static [u8] {
        match self {
            Wire::Responses => b"response.output_text.delta",
            // A chunk's content field; a role-only chunk's is empty (see `first_delta_in`).
            Wire::Chat => b"\"content\":\"",
            Wire::Anthropic => b"content_block_delta",
        }
    }

    /// True when `bytes` hold the stream's first text: a Chat chunk's `"content":"` with text
    /// after it (not a role-only chunk's empty content, which a proxy may hold back), else the
    /// wire's delta event.
    fn first_delta_in(self, bytes: &[u8]) -> bool {
        let needle = self.delta_event();
        match self {
            Wire::Chat => memmem::find_iter(bytes, needle)
                .any(|at| bytes.get(at + needle.len()).is_some_and(|b| *b != b'"')),
            Wire::Responses | Wire::Anthropic => memmem::find(bytes, needle).is_some(),
        }
    }

    /// The bytes that mark a complete stream.
    fn completed_event(self) -> &'static [u8] {
        match self {
            Wire::Responses => b"response.completed",
            Wire::Chat => b"data: [DONE]",
            Wire::Anthropic => b"message_stop",
        }
    }

    /// The model a request names when `--model` does not say.
    fn default_model(self) -> &'static str {
        match self {
            Wire::Responses | Wire::Chat => "gpt-5",
            Wire::Anthropic => "claude-bench",
        }
    }

    fn body(self, model: &str, stream: bool) -> Bytes {
        let model = serde_json::Value::String(model.to_owned());
        Bytes::from(match self {
            Wire::Responses => format!(r#"{{"model":{model},"stream":{stream},"input":"ping"}}"#),
            Wire::Chat => format!(
                r#"{{"model":{model},"stream":{stream},"messages":[{{"role":"user","content":"ping"}}]}}"#
            ),
            Wire::Anthropic => format!(
                r#"{{"model":{model},"max_tokens":64,"stream":{stream},"messages":[{{"role":"user","content":"ping"}}]}}"#
            ),
        })
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Json,
    Stream,
}

/// How long a run lasts.
#[derive(Clone, Copy)]
enum Budget {
    Requests(usize),
    Duration(Duration),
}

struct Options {
    url: Uri,
    mode: Mode,
    concurrency: usize,
    budget: Budget,
    warmup: Option<usize>,
    threads: usize,
    timeout: Duration,
    /// Every request on a new connection.
    per_request: bool,
    wire: Wire,
    /// Sent as `x-api-key` (Anthropic wire).
    api_key: Option<String>,
    /// The model requests name (else the wire's default).
    model: Option<String>,
}

/// One finished request.
struct Sample {
    total: Duration,
    first_delta: Option<Duration>,
}

const USAGE: &str = "usage: loadgen --url URL [--mode json|stream] [--concurrency N] \
                     [--requests N | --duration SECS] [--warmup N] [--threads N] [--timeout SECS] \
                     [--connections keep-alive|per-request] [--wire responses|chat|anthropic] \
                     [--api-key KEY] [--model NAME]";

fn parse_args() -> Result<Options, String> {
    let mut url = None;
    let mut mode = Mode::Json;
    let mut concurrency = 1usize;
    let mut budget = Budget::Requests(1000);
    let mut warmup = None;
    let mut threads = 1usize;
    let mut timeout = Duration::from_secs(10);
    let mut per_request = false;
    let mut wire = Wire::Responses;
    let mut api_key = None;
    let mut model = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let count = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag}: not a count"))
        };
        let seconds = || match value.parse::<f64>() {
            Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Duration::from_secs_f64(secs)),
            _ => Err(format!("{flag}: not a number of seconds")),
        };
        match flag.as_str() {
            "--url" => url = Some(value.parse::<Uri>().map_err(|_| "--url: not a URL")?),
            "--mode" => {
                mode = match value.as_str() {
                    "json" => Mode::Json,
                    "stream" => Mode::Stream,
                    _ => return Err("--mode is json or stream".into()),
                }
            }
            "--concurrency" => concurrency = count()?.max(1),
            "--requests" => budget = Budget::Requests(count()?),
            "--duration" => budget = Budget::Duration(seconds()?),
            "--warmup" => warmup = Some(count()?),
            "--threads" => threads = count()?.max(1),
            "--timeout" => timeout = seconds()?,
            "--connections" => {
                per_request = match value.as_str() {
                    "keep-alive" => false,
                    "per-request" => true,
                    _ => return Err("--connections is keep-alive or per-request".into()),
                }
            }
            "--wire" => {
                wire = match value.as_str() {
                    "responses" => Wire::Responses,
                    "chat" => Wire::Chat,
                    "anthropic" => Wire::Anthropic,
                    _ => return Err("--wire is responses, chat or anthropic".into()),
                }
            }
            "--api-key" => api_key = Some(value),
            "--model" => model = Some(value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Options {
        url: url.ok_or("--url is required")?,
        mode,
        concurrency,
        budget,
        warmup,
        threads,
        timeout,
        per_request,
        wire,
        api_key,
        model,
    })
}

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match parse_args() {
        Ok(options) => options,
        Err(problem) => {
            eprintln!("loadgen: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = if options.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let report = runtime.block_on(run(&options));
    println!("{report}");
    ExitCode::SUCCESS
}

async fn run(options: &Options) -> serde_json::Value {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector);
    let stream = options.mode == Mode::Stream;
    let model = options
        .model
        .as_deref()
        .unwrap_or(options.wire.default_model());
    let body = options.wire.body(model, stream);

    let warmup = options.warmup.unwrap_or(20 * options.concurrency);
    let (_, warmup_errors, _) = blast(options, &client, &body, Budget::Requests(warmup)).await;
    let (samples, errors, elapsed) = blast(options, &client, &body, options.budget).await;

    let mut totals: Vec<Duration> = samples.iter().map(|s| s.total).collect();
    let mut firsts: Vec<Duration> = samples.iter().filter_map(|s| s.first_delta).collect();
    let elapsed_s = elapsed.as_secs_f64();
    serde_json::json!({
        "url": options.url.to_string(),
        "mode": if stream { "stream" } else { "json" },
        "wire": match options.wire { Wire::Responses => "responses", Wire::Chat => "chat", Wire::Anthropic => "anthropic" },
        "concurrency": options.concurrency,
        "connections": if options.per_request { "per-request" } else { "keep-alive" },
        "warmup": warmup,
        "warmup_errors": warmup_errors,
        "requests": samples.len(),
        "errors": errors,
        "elapsed_s": elapsed_s,
        "rps": if elapsed_s > 0.0 { samples.len() as f64 / elapsed_s } else { 0.0 },
        "latency_ms": summary(&mut totals),
        "first_delta_ms": if stream { summary(&mut firsts) } else { serde_json::Value::Null },
    })
}

/// Runs `budget` worth of requests from `concurrency` loops; returns the successful samples,
/// the error count and the wall time.
async fn blast(
    options: &Options,
    client: &HttpClient,
    body: &Bytes,
    budget: Budget,
) -> (Vec<Sample>, usize, Duration) {
    let issued = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency {
        let client = client.clone();
        let url = options.url.clone();
        let body = body.clone();
        let issued = Arc::clone(&issued);
        let stream = options.mode == Mode::Stream;
        let timeout = options.timeout;
        let per_request = options.per_request;
        let wire = options.wire;
        let api_key = options.api_key.clone();
        loops.spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0usize;
            loop {
                let more = match budget {
                    Budget::Requests(n) => issued.fetch_add(1, Ordering::Relaxed) < n,
                    Budget::Duration(d) => started.elapsed() < d,
                };
                if !more {
                    break;
                }
                let how = How {
                    stream,
                    per_request,
                    wire,
                    api_key: api_key.as_deref(),
                };
                match tokio::time::timeout(timeout, one(&client, &url, &body, &how)).await {
                    Ok(Some(sample)) => samples.push(sample),
                    Ok(None) | Err(_) => errors += 1,
                }
            }
            (samples, errors)
        });
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    while let Some(done) = loops.join_next().await {
        let (mut s, e) = done.expect("load loop panicked");
        samples.append(&mut s);
        errors += e;
    }
    (samples, errors, started.elapsed())
}

/// How each request of a loop is sent.
struct How<'a> {
    stream: bool,
    per_request: bool,
    wire: Wire,
    api_key: Option<&'a str>,
}

/// One request, read to the end. `None` on any failure.
async fn one(client: &HttpClient, url: &Uri, body: &Bytes, how: &How<'_>) -> Option<Sample> {
    let How {
        stream,
        per_request,
        wire,
        api_key,
    } = *how;
    let accept = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, accept);
    if per_request {
        request = request.header(header::CONNECTION, "close");
    }
    if wire == Wire::Anthropic {
        request = request.header("anthropic-version", "2023-06-01");
        if let Some(key) = api_key {
            request = request.header("x-api-key", key);
        }
    }
    let request = request.body(Full::new(body.clone())).expect("request");
    let start = Instant::now();
    let response = client.request(request).await.ok()?;
    let ok = response.status() == StatusCode::OK;
    let mut incoming = response.into_body();
    let mut seen = Vec::new();
    let mut first_delta = None;
    while let Some(frame) = incoming.frame().await {
        let frame = frame.ok()?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        // Search only the new bytes plus enough of the old ones to catch a split needle.
        let from = seen.len().saturating_sub(wire.delta_event().len());
        seen.extend_from_slice(data);
        if stream && first_delta.is_none() && wire.first_delta_in(&seen[from..]) {
            first_delta = Some(start.elapsed());
        }
    }
    let total = start.elapsed();
    let complete =
        !stream || (first_delta.is_some() && memmem::find(&seen, wire.completed_event()).is_some());
    (ok && complete).then_some(Sample { total, first_delta })
}

/// Percentiles (nearest rank) and mean, in milliseconds.
fn summary(values: &mut [Duration]) -> serde_json::Value {
    if values.is_empty() {
        return serde_json::Value::Null;
    }
    values.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rank = |p: f64| {
        let index = ((p / 100.0) * values.len() as f64).ceil() as usize;
        ms(values[index.clamp(1, values.len()) - 1])
    };
    let mean = values.iter().map(|d| ms(*d)).sum::<f64>() / values.len() as f64;
    serde_json::json!({
        "p50": rank(50.0),
        "p90": rank(90.0),
        "p99": rank(99.0),
        "max": ms(values[values.len() - 1]),
        "mean": mean,
    })
}
