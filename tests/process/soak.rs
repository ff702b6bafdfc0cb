//! Soak (not in the default run: `#[ignore]`; `scripts/soak` runs it on the release build):
//! mixed traffic over every route for `SOAK_SECONDS` (default 600) against a mock upstream with
//! random faults (429, 500, cuts after output, stalls past the idle timeout, hangs before
//! headers), from normal, slow-reading and vanishing clients. Afterwards:
//! - every request of a client that stayed ended complete or with a visible error (an error
//!   status with a JSON body, or an SSE error event and an aborted transfer);
//! - the proxy's resident size is back near its level after warm-up;
//! - no file descriptor leaked: beyond the warm-up count, the proxy holds only the pooled
//!   upstream connections the mock still sees open;
//! - each key has one copy in the process's memory (root only, as in `copies`).
//!
//! Prints `N passed, N failed` last (requests plus the four checks).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::copies::find_copies;
use crate::mock::event::{created, delta};
use crate::mock::{responses_stream, MockUpstream, Script};
use crate::raw::{self, get, post, RawResponse};
use crate::spawn::{canary, is_root, start, temp_dir, Launch, Running};

const WORKERS: usize = 16;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn fault(rng: &mut Rng) -> Script {
    let json = |status: u16, body: &str| Script::json(status, body);
    match rng.below(100) {
        0..=1 => Script::Respond {
            status: 429,
            headers: vec![
                ("content-type", "application/json".into()),
                ("retry-after", "1".into()),
            ],
            chunks: vec![(
                Duration::ZERO,
                Bytes::from_static(
                    br#"{"error":{"message":"slow down","code":"rate_limit_exceeded"}}"#,
                ),
            )],
        },
        2..=9 => json(500, r#"{"error":{"message":"boom","type":"server_error"}}"#),
        16..=21 => Script::CutAfter {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            chunks: vec![(
                Duration::ZERO,
                Bytes::from([created(), delta("cut")].concat()),
            )],
        },
        22..=25 => Script::Respond {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            chunks: vec![
                (
                    Duration::ZERO,
                    Bytes::from([created(), delta("stall")].concat()),
                ),
                (Duration::from_secs(3), Bytes::from(delta("too late"))),
            ],
        },
        26..=28 => Script::HangBeforeHeaders,
        _ => Script::sse(
            &responses_stream("soak ok", 4),
            Duration::from_millis(rng.below(5)),
        ),
    }
}

/// One request of the mix: method and path, body (POST), and whether the answer streams.
fn request(addr: std::net::SocketAddr, pick: u64, close: bool) -> Vec<u8> {
    let chat = |stream: bool| {
        format!(
            r#"{{"model":"gpt-5.4","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        )
    };
    let messages = |stream: bool| {
        format!(
            r#"{{"model":"gpt-5.4","max_tokens":64,"stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        )
    };
    let extra: &[(&str, &str)] = if close {
        &[("connection", "close")]
    } else {
        &[]
    };
    match pick % 10 {
        0 => post(
            addr,
            "/v1/responses",
            r#"{"model":"m","stream":true,"input":"x"}"#,
            extra,
        ),
        1 => post(addr, "/v1/responses", r#"{"model":"m","input":"x"}"#, extra),
        2 => post(
            addr,
            "/v1/responses/compact",
            r#"{"model":"m","input":"x"}"#,
            extra,
        ),
        3 => post(addr, "/v1/chat/completions", &chat(true), extra),
        4 => post(addr, "/v1/chat/completions", &chat(false), extra),
        5 => post(addr, "/v1/messages", &messages(true), extra),
        6 => post(addr, "/v1/messages", &messages(false), extra),
        7 => post(addr, "/v1/messages/count_tokens", &messages(false), extra),
        8 => get(addr, "/v1/models", extra),
        _ => get(addr, "/health", extra),
    }
}

/// Complete, or a visible error.
fn ended_visibly(r: &RawResponse) -> bool {
    match r.status {
        200 if r.complete => true,
        200 => {
            let text = r.text();
            text.contains("error")
        }
        s if s >= 400 => serde_json::from_slice::<serde_json::Value>(&r.body).is_ok(),
        _ => false,
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn launch(keys: &str, mock: &MockUpstream) -> Running {
    start(
        Launch {
            args: vec![
                "--upstream-url".into(),
                mock.base_url.clone(),
                "--header-timeout".into(),
                "1".into(),
                "--idle-timeout".into(),
                "2".into(),
                "--request-timeout".into(),
                "5".into(),
                "--log-level".into(),
                "warn".into(),
            ],
            stdin: keys.as_bytes(),
            as_uid: None,
            env: vec![],
        },
        &temp_dir("soak"),
    )
}

#[derive(Default)]
struct Tally {
    passed: AtomicUsize,
    failed: AtomicUsize,
    vanished: AtomicUsize,
    slow: AtomicUsize,
}

async fn worker(
    addr: std::net::SocketAddr,
    mock: Arc<MockUpstream>,
    seed: u64,
    until: Instant,
    tally: Arc<Tally>,
) {
    let mut rng = Rng(seed | 1);
    while Instant::now() < until {
        mock.push(fault(&mut rng));
        let pick = rng.below(10);
        match rng.below(100) {
            // Vanishing client: sends, reads a little, goes away.
            0..=11 => {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let _ = stream.write_all(&request(addr, pick, false)).await;
                let mut buf = Vec::new();
                raw::read_for(&mut stream, &mut buf, Duration::from_millis(rng.below(80))).await;
                tally.vanished.fetch_add(1, Ordering::Relaxed);
            }
            // Slow reader: small reads with pauses, to the close.
            12..=23 => {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let _ = stream.write_all(&request(addr, pick, true)).await;
                let mut buf = Vec::new();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                let mut piece = [0u8; 512];
                loop {
                    match tokio::time::timeout_at(deadline, stream.read(&mut piece)).await {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                        Ok(Ok(n)) => buf.extend_from_slice(&piece[..n]),
                    }
                    if raw::parse_response(&buf).complete {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let r = raw::parse_response(&buf);
                tally.slow.fetch_add(1, Ordering::Relaxed);
                if ended_visibly(&r) {
                    tally.passed.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!(
                        "slow client, request {pick}: status {} complete {}: {}",
                        r.status,
                        r.complete,
                        r.text()
                    );
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                let r =
                    raw::exchange(addr, &request(addr, pick, false), Duration::from_secs(30)).await;
                if ended_visibly(&r) {
                    tally.passed.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!(
                        "request {pick}: status {} complete {}: {}",
                        r.status,
                        r.complete,
                        r.text()
                    );
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by scripts/soak"]
async fn soak() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let keys = [canary(), canary(), canary()];
    let mock = Arc::new(MockUpstream::start("soak").await);
    let proxy = launch(&format!("{}\n", keys.join("\n")), &mock);

    // Warm-up: every route once per worker, then the idle figures.
    for pick in 0..(WORKERS as u64 * 10) {
        raw::exchange(
            proxy.addr,
            &request(proxy.addr, pick, false),
            Duration::from_secs(10),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = status_kib(proxy.pid, "VmRSS:");
    let idle_fds = fd_count(proxy.pid);
    let idle_upstream = mock.open_connections();
    eprintln!("idle: RSS {idle_rss} KiB, {idle_fds} fds, {idle_upstream} upstream connections");

    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tally = Arc::new(Tally::default());
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        workers.spawn(worker(
            proxy.addr,
            Arc::clone(&mock),
            0x9e37_79b9_7f4a_7c15 ^ ((w as u64 + 1) * 0x1000_0001),
            until,
            Arc::clone(&tally),
        ));
    }
    while workers.join_next().await.is_some() {}
    let peak = status_kib(proxy.pid, "VmHWM:");

    // Let the last streams and connections finish, then compare with the idle figures.
    let mut checks_passed = 0;
    let mut checks_failed = 0;
    let mut check = |ok: bool, what: String| {
        eprintln!("{} {what}", if ok { "ok  " } else { "FAIL" });
        if ok {
            checks_passed += 1;
        } else {
            checks_failed += 1;
        }
    };
    let settle = Instant::now() + Duration::from_secs(15);
    let (rss, fds, upstream) = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = status_kib(proxy.pid, "VmRSS:");
        let fds = fd_count(proxy.pid);
        let upstream = mock.open_connections();
        let leaked = fds.saturating_sub(idle_fds) > upstream.saturating_sub(idle_upstream);
        if (!leaked && rss <= idle_rss + 32 * 1024) || Instant::now() > settle {
            break (rss, fds, upstream);
        }
    };
    check(
        rss <= idle_rss + 32 * 1024,
        format!("RSS back near idle: {rss} KiB after, {idle_rss} KiB idle, peak {peak} KiB"),
    );
    check(
        fds.saturating_sub(idle_fds) <= upstream.saturating_sub(idle_upstream),
        format!(
            "no fd leaked: {fds} fds after ({idle_fds} idle); pooled upstream connections {upstream} ({idle_upstream} idle)"
        ),
    );
    if is_root() {
        for (i, key) in keys.iter().enumerate() {
            let copies = find_copies(proxy.pid, key.as_bytes());
            check(
                copies.len() == 1,
                format!("key {i}: {} copy in memory {copies:?}", copies.len()),
            );
        }
    } else {
        eprintln!("skipped: the copy count needs root");
    }
    let alive = raw::exchange(
        proxy.addr,
        &get(proxy.addr, "/health", &[]),
        Duration::from_secs(5),
    )
    .await;
    check(
        alive.status == 200,
        format!("still serving: /health {}", alive.status),
    );

    let requests_passed = tally.passed.load(Ordering::Relaxed);
    let requests_failed = tally.failed.load(Ordering::Relaxed);
    eprintln!(
        "{seconds} s: {} requests ended visibly ({} from slow readers), {} failed, {} clients vanished; upstream saw {} requests",
        requests_passed,
        tally.slow.load(Ordering::Relaxed),
        requests_failed,
        tally.vanished.load(Ordering::Relaxed),
        mock.count()
    );
    let passed = requests_passed + checks_passed;
    let failed = requests_failed + checks_failed;
    println!("{passed} passed, {failed} failed");
    assert_eq!(failed, 0, "{passed} passed, {failed} failed");
}
