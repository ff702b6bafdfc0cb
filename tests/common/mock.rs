//! A scriptable mock upstream: a real hyper server on 127.0.0.1:0 (plain, or TLS with h2 and
//! HTTP/1.1 by ALPN) that records every request and answers from a queue of scripts.
//!
//! Shared by the in-process integration tests, the process-level tests, `scripts/demo`,
//! `scripts/bench` and `scripts/e2e-clients` (through `examples/mock_upstream.rs`). Its
//! Anthropic Messages answers come from `mock_messages.rs` (the `messages` module).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

#[path = "mock_messages.rs"]
pub mod messages;

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When the request arrived.
    pub at: tokio::time::Instant,
    /// What answered it (see `Script::label`), filled in once the script is chosen.
    pub label: String,
    pub method: String,
    pub target: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How to answer one request.
pub enum Script {
    /// Status, headers, then body chunks, each sent after its delay.
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        chunks: Vec<(Duration, Bytes)>,
    },
    /// Like `Respond`, but the body ends with an error after the chunks (a cut connection).
    CutAfter {
        status: u16,
        headers: Vec<(&'static str, String)>,
        chunks: Vec<(Duration, Bytes)>,
    },
    /// Status and headers now; chunks come from the test through the sender.
    Gated {
        status: u16,
        headers: Vec<(&'static str, String)>,
        chunks: mpsc::UnboundedReceiver<Bytes>,
    },
    /// Never send response headers (until the connection goes away).
    HangBeforeHeaders,
    /// Wait, then answer like `Respond`.
    DelayHeaders(Duration, Box<Script>),
    /// Close the connection without any response (a FIN after the request was read).
    Reset,
    /// Abort the connection without any response (an RST after the request was read).
    Abort,
}

impl Script {
    /// A short name for what this script does: the status, or `cut`, `gated`, `hang`, `reset`.
    pub fn label(&self) -> String {
        match self {
            Script::Respond { status, .. } => status.to_string(),
            Script::CutAfter { .. } => "cut".into(),
            Script::Gated { .. } => "gated".into(),
            Script::HangBeforeHeaders => "hang".into(),
            Script::DelayHeaders(_, inner) => inner.label(),
            Script::Reset => "reset".into(),
            Script::Abort => "abort".into(),
        }
    }

    /// A 200 JSON answer.
    pub fn json(status: u16, body: &str) -> Script {
        Script::Respond {
            status,
            headers: vec![("content-type", "application/json".into())],
            chunks: vec![(Duration::ZERO, Bytes::from(body.to_string()))],
        }
    }

    /// A 200 event stream of `events` (already framed), each after `gap`.
    pub fn sse(events: &[String], gap: Duration) -> Script {
        Script::Respond {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            chunks: events
                .iter()
                .map(|e| (gap, Bytes::from(e.clone())))
                .collect(),
        }
    }

    /// A gated 200 event stream and the sender that releases its chunks.
    pub fn gated_sse() -> (Script, mpsc::UnboundedSender<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Script::Gated {
                status: 200,
                headers: vec![("content-type", "text/event-stream".into())],
                chunks: rx,
            },
            tx,
        )
    }
}

/// One framed SSE event with an `event:` line.
pub fn sse_event(kind: &str, data: serde_json::Value) -> String {
    let mut data = data;
    data["type"] = serde_json::Value::String(kind.to_string());
    format!("event: {kind}\ndata: {data}\n\n")
}

/// Single events for hand-built streams (response id `resp_t`).
pub mod event {
    use super::sse_event;

    pub fn created() -> String {
        sse_event(
            "response.created",
            serde_json::json!({"response":{"id":"resp_t","status":"in_progress","output":[]}}),
        )
    }

    pub fn in_progress() -> String {
        sse_event(
            "response.in_progress",
            serde_json::json!({"response":{"id":"resp_t","status":"in_progress","output":[]}}),
        )
    }

    pub fn delta(text: &str) -> String {
        sse_event(
            "response.output_text.delta",
            serde_json::json!({"item_id":"msg_1","output_index":0,"content_index":0,"delta":text}),
        )
    }

    pub fn completed() -> String {
        sse_event(
            "response.completed",
            serde_json::json!({"response":{"id":"resp_t","status":"completed","output":[]}}),
        )
    }
}

/// A complete, minimal Responses stream that says `text` in `deltas` pieces.
pub fn responses_stream(text: &str, deltas: usize) -> Vec<String> {
    let id = "resp_mock_1";
    let mut events = vec![
        sse_event(
            "response.created",
            serde_json::json!({"response":{"id":id,"object":"response","status":"in_progress","model":"mock-model","output":[]}}),
        ),
        sse_event(
            "response.in_progress",
            serde_json::json!({"response":{"id":id,"object":"response","status":"in_progress","model":"mock-model","output":[]}}),
        ),
        sse_event(
            "response.output_item.added",
            serde_json::json!({"output_index":0,"item":{"id":"msg_1","type":"message","role":"assistant","status":"in_progress","content":[]}}),
        ),
        sse_event(
            "response.content_part.added",
            serde_json::json!({"item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}}),
        ),
    ];
    let chars: Vec<char> = text.chars().collect();
    let per = chars.len().div_ceil(deltas.max(1)).max(1);
    for piece in chars.chunks(per) {
        let delta: String = piece.iter().collect();
        events.push(sse_event(
            "response.output_text.delta",
            serde_json::json!({"item_id":"msg_1","output_index":0,"content_index":0,"delta":delta}),
        ));
    }
    let message = serde_json::json!({"id":"msg_1","type":"message","role":"assistant","status":"completed","content":[{"type":"output_text","text":text,"annotations":[]}]});
    events.push(sse_event(
        "response.output_text.done",
        serde_json::json!({"item_id":"msg_1","output_index":0,"content_index":0,"text":text}),
    ));
    events.push(sse_event(
        "response.output_item.done",
        serde_json::json!({"output_index":0,"item":message}),
    ));
    events.push(sse_event("response.completed", serde_json::json!({"response":{"id":id,"object":"response","status":"completed","model":"mock-model","output":[message],"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":0},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":15}}})));
    events
}

/// A non-streaming Responses JSON body saying `text`.
pub fn responses_json(text: &str) -> String {
    serde_json::json!({"id":"resp_mock_1","object":"response","status":"completed","model":"mock-model","output":[{"id":"msg_1","type":"message","role":"assistant","status":"completed","content":[{"type":"output_text","text":text,"annotations":[]}]}],"usage":{"input_tokens":10,"output_tokens":5,"total_tokens":15}}).to_string()
}

/// The canned Anthropic Messages stream saying `text` in `deltas` pieces, with usage
/// (`input_tokens` 12, cache reads 3, cache writes 2, `output_tokens` 7).
pub fn anthropic_stream(text: &str, deltas: usize) -> Vec<String> {
    messages::events(&messages::canned(text), deltas)
}

/// The canned non-streaming Anthropic Messages answer saying `text`.
pub fn anthropic_json(text: &str) -> String {
    messages::json(&messages::canned(text))
}

/// An Anthropic error body.
pub fn anthropic_error(kind: &str, message: &str) -> String {
    messages::error_body(kind, message)
}

/// What the mock answers when its queue is empty.
#[derive(Clone)]
pub enum Fallback {
    /// Stream or JSON (by the request's `stream` field) saying this text, in this many
    /// deltas, this far apart.
    Echo(String, usize, Duration),
    /// An Anthropic Messages API (`mock_messages.rs`): every request must carry `x-api-key`
    /// equal to one of the keys (else 401 `authentication_error`) and an `anthropic-version`
    /// (else 400); then scripts, else the configured answer.
    Anthropic(messages::MessagesConfig),
}

struct Shared {
    recorded: Mutex<Vec<Recorded>>,
    scripts: Mutex<VecDeque<Script>>,
    /// Scripts for requests carrying one `Authorization` value, used before the shared queue.
    scripts_by_auth: Mutex<std::collections::HashMap<String, VecDeque<Script>>>,
    default: Fallback,
    open_connections: AtomicUsize,
    closed_connections: AtomicUsize,
    changed: Notify,
    /// Where every request and the answer the mock chose for it go, one JSON line each.
    journal: Mutex<Option<std::fs::File>>,
}

/// A running mock upstream.
#[derive(Clone)]
pub struct MockUpstream {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT/v1` or `https://…`.
    pub base_url: String,
    shared: Arc<Shared>,
}

/// TLS material for an https mock: a CA and a leaf for 127.0.0.1/localhost signed by it.
pub struct TestCa {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "codex-proxy test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf_params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        let leaf = leaf_params.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let mut server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca_cert.der().clone()], key)
        .unwrap();
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TestCa {
            ca_pem: ca_cert.pem(),
            server_config: Arc::new(server_config),
        }
    }

    /// The same CA, serving only the given ALPN protocols (e.g. just `http/1.1`).
    pub fn with_alpn(&self, protocols: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let mut config = (*self.server_config).clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl MockUpstream {
    /// A plain-HTTP mock answering `text` by default.
    pub async fn start(text: &str) -> MockUpstream {
        Self::start_with(text, None).await
    }

    /// A mock on TLS when `tls` is given.
    pub async fn start_with(text: &str, tls: Option<Arc<rustls::ServerConfig>>) -> MockUpstream {
        Self::start_full(0, Fallback::Echo(text.to_string(), 4, Duration::ZERO), tls).await
    }

    /// A plain-HTTP Anthropic Messages mock that takes `key` (see [`Fallback::Anthropic`]).
    pub async fn start_anthropic(key: &str, text: &str) -> MockUpstream {
        Self::start_anthropic_with(&[key], text, None).await
    }

    /// An Anthropic Messages mock taking any of `keys`, on TLS when `tls` is given.
    pub async fn start_anthropic_with(
        keys: &[&str],
        text: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> MockUpstream {
        let config = messages::MessagesConfig {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            text: text.to_string(),
            deltas: 3,
            gap: Duration::ZERO,
            answers: messages::Answers::Canned,
        };
        Self::start_full(0, Fallback::Anthropic(config), tls).await
    }

    /// A plain Anthropic Messages mock on `port` (0: ephemeral) configured in full.
    pub async fn start_messages(port: u16, config: messages::MessagesConfig) -> MockUpstream {
        Self::start_full(port, Fallback::Anthropic(config), None).await
    }

    /// A plain mock on `port` (0: ephemeral) whose default stream has `deltas` deltas `gap` apart.
    pub async fn start_on(port: u16, text: &str, deltas: usize, gap: Duration) -> MockUpstream {
        Self::start_full(port, Fallback::Echo(text.to_string(), deltas, gap), None).await
    }

    async fn start_full(
        port: u16,
        default: Fallback,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> MockUpstream {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let shared = Arc::new(Shared {
            recorded: Mutex::new(Vec::new()),
            scripts: Mutex::new(VecDeque::new()),
            scripts_by_auth: Mutex::new(std::collections::HashMap::new()),
            default,
            open_connections: AtomicUsize::new(0),
            closed_connections: AtomicUsize::new(0),
            changed: Notify::new(),
            journal: Mutex::new(None),
        });
        let mock = MockUpstream {
            addr,
            base_url: format!("{scheme}://127.0.0.1:{}/v1", addr.port()),
            shared: Arc::clone(&shared),
        };
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // Small answers go out as several writes (headers, chunk, end of chunks): without
                // this, Nagle plus the client's delayed ACK adds ~40 ms per keep-alive request.
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                let acceptor = acceptor.clone();
                // A second handle on the socket, so `Script::Abort` can set a zero linger.
                let Ok((stream, socket)) = duplicate(stream) else {
                    continue;
                };
                tokio::spawn(async move {
                    shared.open_connections.fetch_add(1, Ordering::SeqCst);
                    let conn = Arc::new(Conn {
                        kill: Notify::new(),
                        socket: Mutex::new(Some(socket)),
                    });
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                serve(TokioIo::new(tls), Arc::clone(&shared), Arc::clone(&conn))
                                    .await;
                            }
                        }
                        None => {
                            serve(TokioIo::new(stream), Arc::clone(&shared), Arc::clone(&conn))
                                .await
                        }
                    }
                    // The socket closes when its last handle does.
                    conn.socket.lock().unwrap().take();
                    shared.open_connections.fetch_sub(1, Ordering::SeqCst);
                    shared.closed_connections.fetch_add(1, Ordering::SeqCst);
                    shared.changed.notify_waiters();
                });
            }
        });
        mock
    }

    /// From now on, appends one JSON line per request to `path`: `method`, `path` (with any
    /// query), `headers` (`[name, value]` pairs), `body` (the JSON, else a string), `raw_body`
    /// (the bytes as received, a string), the answer's `status` and `answer`, the exact body
    /// bytes it sends (a string; both null for an answer that is not a plain status and body,
    /// such as a cut or a hang). Written when the request arrives, before the answer goes out.
    pub fn journal_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        *self.shared.journal.lock().unwrap() = Some(file);
        Ok(())
    }

    /// Queues the answer for a future request (answered in order).
    pub fn push(&self, script: Script) {
        self.shared.scripts.lock().unwrap().push_back(script);
    }

    /// Queues the answer for a future request sent with this `Authorization` value.
    pub fn push_for(&self, authorization: &str, script: Script) {
        self.shared
            .scripts_by_auth
            .lock()
            .unwrap()
            .entry(authorization.to_string())
            .or_default()
            .push_back(script);
    }

    /// The `Authorization` value of every request so far, in order.
    pub fn authorizations(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| {
                r.headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.shared.recorded.lock().unwrap().len()
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::SeqCst)
    }

    /// Connections that have ended.
    pub fn closed_connections(&self) -> usize {
        self.shared.closed_connections.load(Ordering::SeqCst)
    }

    /// Waits until `closed_connections() >= n`, at most `limit`; true if reached.
    pub async fn wait_closed(&self, n: usize, limit: Duration) -> bool {
        self.wait_until(|m| m.closed_connections() >= n, limit)
            .await
    }

    /// Waits until `count() >= n`, at most `limit`; true if reached.
    pub async fn wait_requests(&self, n: usize, limit: Duration) -> bool {
        self.wait_until(|m| m.count() >= n, limit).await
    }

    /// Waits until `done` holds (re-checked whenever a request or connection changes).
    async fn wait_until(&self, done: impl Fn(&Self) -> bool, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.changed.notified();
                if done(self) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

type MockBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// One accepted connection: how a script ends it early.
struct Conn {
    /// Ends the connection (its task drops the socket).
    kill: Notify,
    /// A second handle on the socket (dropped when the connection ends).
    socket: Mutex<Option<std::net::TcpStream>>,
}

/// The stream, and a second handle on its socket.
fn duplicate(
    stream: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let other = std_stream.try_clone()?;
    Ok((tokio::net::TcpStream::from_std(std_stream)?, other))
}

async fn serve<I>(io: I, shared: Arc<Shared>, conn: Arc<Conn>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service_conn = Arc::clone(&conn);
    let service = service_fn(move |request: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        let conn = Arc::clone(&service_conn);
        async move { Ok::<_, Infallible>(answer(request, shared, conn).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(io, service);
    tokio::select! {
        _ = connection => {}
        _ = conn.kill.notified() => {}
    }
}

async fn answer(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    conn: Arc<Conn>,
) -> Response<MockBody> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    // Like a real upstream, read a zstd body decoded.
    // Scripts are keyed by the credential: `authorization`, else `x-api-key`.
    let auth = parts
        .headers
        .get("authorization")
        .or_else(|| parts.headers.get("x-api-key"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let anthropic_refusal = match &shared.default {
        Fallback::Anthropic(config) => messages::refusal(config, &parts.headers),
        Fallback::Echo(..) => None,
    };
    let decoded = match parts.headers.get("content-encoding").map(|v| v.as_bytes()) {
        Some(b"zstd") => zstd::decode_all(&body[..]).unwrap_or_default(),
        _ => body.to_vec(),
    };
    let streaming = serde_json::from_slice::<serde_json::Value>(&decoded)
        .ok()
        .and_then(|v| v.get("stream").and_then(|s| s.as_bool()))
        .unwrap_or(false);
    let slot = {
        let mut recorded = shared.recorded.lock().unwrap();
        recorded.push(Recorded {
            at: tokio::time::Instant::now(),
            label: String::new(),
            method: parts.method.to_string(),
            target: parts.uri.to_string(),
            version: parts.version,
            headers: parts.headers,
            body,
        });
        recorded.len() - 1
    };
    shared.changed.notify_waiters();
    let script = anthropic_refusal.or_else(|| {
        shared
            .scripts_by_auth
            .lock()
            .unwrap()
            .get_mut(&auth)
            .and_then(|q| q.pop_front())
            .or_else(|| shared.scripts.lock().unwrap().pop_front())
    });
    let script = script.unwrap_or_else(|| match &shared.default {
        Fallback::Echo(text, deltas, gap) if streaming => {
            Script::sse(&responses_stream(text, *deltas), *gap)
        }
        Fallback::Echo(text, _, _) => Script::json(200, &responses_json(text)),
        Fallback::Anthropic(config) => {
            messages::respond(config, parts.method.as_str(), parts.uri.path(), &decoded)
        }
    });
    {
        let mut recorded = shared.recorded.lock().unwrap();
        recorded[slot].label = script.label();
        journal(&shared, &recorded[slot], &script);
    }
    run_script(script, conn).await
}

/// One line of the journal (see `MockUpstream::journal_to`), if one is kept.
fn journal(shared: &Shared, request: &Recorded, script: &Script) {
    use std::io::Write;
    let mut journal = shared.journal.lock().unwrap();
    let Some(file) = journal.as_mut() else {
        return;
    };
    let headers: Vec<serde_json::Value> = request
        .headers
        .iter()
        .map(|(k, v)| serde_json::json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    let body = serde_json::from_slice(&request.body).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&request.body).into_owned())
    });
    let (status, answer) = match script {
        Script::Respond { status, chunks, .. } => {
            let bytes: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.to_vec()).collect();
            (
                serde_json::json!(status),
                serde_json::json!(String::from_utf8_lossy(&bytes)),
            )
        }
        _ => (serde_json::Value::Null, serde_json::Value::Null),
    };
    let raw_body = String::from_utf8_lossy(&request.body);
    let line = serde_json::json!({"method": request.method, "path": request.target, "headers": headers,
        "body": body, "raw_body": raw_body, "status": status, "answer": answer});
    let _ = writeln!(file, "{line}");
    let _ = file.flush();
}

fn run_script(
    script: Script,
    conn: Arc<Conn>,
) -> Pin<Box<dyn std::future::Future<Output = Response<MockBody>> + Send>> {
    Box::pin(async move {
        match script {
            Script::Respond {
                status,
                headers,
                chunks,
            } => respond(status, headers, timed(chunks, false)),
            Script::CutAfter {
                status,
                headers,
                chunks,
            } => respond(status, headers, timed(chunks, true)),
            Script::Gated {
                status,
                headers,
                chunks,
            } => respond(status, headers, ChannelBody { rx: chunks }.boxed()),
            Script::HangBeforeHeaders => std::future::pending().await,
            Script::DelayHeaders(delay, inner) => {
                tokio::time::sleep(delay).await;
                run_script(*inner, conn).await
            }
            Script::Reset => {
                conn.kill.notify_one();
                std::future::pending().await
            }
            Script::Abort => {
                // A zero linger turns the close into an RST.
                let socket = conn.socket.lock().unwrap().take();
                if let Some(socket) = socket {
                    let socket = tokio::net::TcpStream::from_std(socket).unwrap();
                    socket.set_zero_linger().unwrap();
                }
                conn.kill.notify_one();
                std::future::pending().await
            }
        }
    })
}

fn respond(
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: MockBody,
) -> Response<MockBody> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response.headers_mut().append(name, value.parse().unwrap());
    }
    response
}

/// Chunks after delays; optionally an error at the end (a cut connection).
fn timed(chunks: Vec<(Duration, Bytes)>, cut: bool) -> MockBody {
    let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    tokio::spawn(async move {
        for (delay, chunk) in chunks {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Ok(chunk)).is_err() {
                return;
            }
        }
        if cut {
            // Let hyper flush the chunks first: a failing body drops unflushed bytes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(Err(std::io::Error::other("cut by the mock")));
        }
    });
    ResultChannelBody { rx }.boxed()
}

struct ChannelBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

struct ResultChannelBody {
    rx: mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>,
}

impl Body for ResultChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|r| r.map(Frame::data)))
    }
}
