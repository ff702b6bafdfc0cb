//! Chaos: 300 concurrent streams over 3 accounts against an upstream that fails at random
//! (seeded, so a failure reproduces): rate limits with hints, 5xx, hangs before headers,
//! resets, in-band failures before output, cuts after output, and slow successes.
//!
//! Every request must end, within a bound, either as a complete stream or with an error its
//! client can see (an error status, or an SSE `error` event plus an aborted transfer); no
//! account may get a request during a cooldown it announced; and afterwards the proxy's own
//! gauges (open connections, requests in the retry budget) are back to zero.

use std::time::Duration;

use bytes::Bytes;

use crate::mock::event::{created, delta, in_progress};
use crate::mock::{responses_stream, sse_event, MockUpstream, Script};
use crate::proxy::TestProxy;
use crate::raw;

const KEYS: &str = "sk-test-chaos-AAAA\nsk-test-chaos-BBBB\nsk-test-chaos-CCCC";
const STREAMS: usize = 300;
/// A cooldown hint the mock gives with its 429s.
const HINT: Duration = Duration::from_secs(2);

/// A small deterministic generator (xorshift), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn script(rng: &mut Rng) -> Script {
    let events = || responses_stream("chaos ok", 3);
    match rng.below(100) {
        0..=9 => Script::Respond {
            status: 429,
            headers: vec![
                ("content-type", "application/json".into()),
                ("retry-after", HINT.as_secs().to_string()),
            ],
            chunks: vec![(
                Duration::ZERO,
                Bytes::from(
                    r#"{"error":{"message":"Rate limit reached","code":"rate_limit_exceeded"}}"#,
                ),
            )],
        },
        10..=17 => Script::json(
            503,
            r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        ),
        18..=22 => Script::HangBeforeHeaders,
        23..=27 => Script::Reset,
        28..=35 => Script::sse(
            &[
                created(),
                in_progress(),
                sse_event(
                    "response.failed",
                    serde_json::json!({"response":{"error":{"code":"server_error","message":"boom"}}}),
                ),
            ],
            Duration::ZERO,
        ),
        36..=42 => Script::CutAfter {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            chunks: vec![(
                Duration::ZERO,
                Bytes::from([created(), delta("cut soon")].concat()),
            )],
        },
        43..=55 => Script::sse(&events(), Duration::from_millis(rng.below(20))),
        _ => Script::sse(&events(), Duration::ZERO),
    }
}

/// How one client request ended.
#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum End {
    Completed,
    ErrorStatus(u16),
    ErrorEvent,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_streams_over_three_accounts_with_random_faults() {
    let mock = MockUpstream::start("chaos").await;
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    // More scripts than requests: retries take some too. Unscripted requests get a success.
    for _ in 0..(STREAMS * 2) {
        mock.push(script(&mut rng));
    }
    let proxy = TestProxy::start_with_key(&mock.base_url, &["--header-timeout", "0.5"], KEYS).await;

    let mut clients = tokio::task::JoinSet::new();
    for i in 0..STREAMS {
        let addr = proxy.addr;
        clients.spawn(async move {
            let body = format!(r#"{{"model":"m","stream":true,"input":"chaos {i}"}}"#);
            let response = raw::exchange(
                addr,
                &raw::post(addr, "/v1/responses", &body, &[]),
                Duration::from_secs(30),
            )
            .await;
            (i, response)
        });
    }
    let mut ends = std::collections::HashMap::<End, usize>::new();
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(joined) = clients.join_next().await {
            let (i, response) = joined.unwrap();
            let text = response.text();
            let end = match response.status {
                200 if response.complete && text.contains("response.completed") => End::Completed,
                // An in-band failure relayed on the last attempt is a clean, visible end too.
                200 if response.complete && text.contains("response.failed") => End::ErrorEvent,
                200 if !response.complete && text.contains("event: error") => End::ErrorEvent,
                s if s >= 400 => {
                    assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok(), "request {i}: error body is JSON: {text}");
                    End::ErrorStatus(s)
                }
                s => panic!("request {i}: neither completed nor a visible error (status {s}, complete {}): {text}", response.complete),
            };
            *ends.entry(end).or_default() += 1;
        }
    })
    .await;
    assert!(all.is_ok(), "some requests hung: {ends:?}");
    assert_eq!(ends.values().sum::<usize>(), STREAMS);
    // A sanity bound, not a quality bar: with 10 % rate limits all three accounts often cool
    // at once, and then the right answer is a fast 429. How many requests arrive inside those
    // windows depends on the machine's timing (a cold CI machine spreads them more: 73 of 300
    // completed there, 120 or more on a warm one), so the bound only says the pool serves.
    assert!(
        ends.get(&End::Completed).copied().unwrap_or(0) > STREAMS / 10,
        "many requests are served despite the faults: {ends:?}"
    );
    eprintln!("chaos: {ends:?}, {} upstream attempts", mock.count());

    // No account got a request during a cooldown it announced (a 429 with a 2 s hint), with
    // slack for requests already on their way: the mock records when a request arrived, not
    // when the proxy read the 429 and started the cooldown, and on a loaded two-core machine
    // both lag. A retry counts from 1 s after the 429 (retries picked just before the proxy
    // read it were seen arriving 515 ms after it, in a burst released together); a first
    // attempt, picked at the start with the 299 others, from 1.5 s. A pool that ignored the
    // cooldown would send many requests into the window that remains (up to 1.75 s). Each
    // intruder is listed with the earlier attempts of the same request.
    let requests = mock.requests();
    for limited in requests.iter().filter(|r| r.label == "429") {
        let auth = &limited.headers["authorization"];
        const FIRST_ATTEMPT_SLACK: Duration = Duration::from_millis(1500);
        let window = (
            limited.at + Duration::from_millis(1000),
            limited.at + HINT - Duration::from_millis(250),
        );
        let intruders: Vec<_> = requests
            .iter()
            .filter(|r| r.headers["authorization"] == auth && r.at > window.0 && r.at < window.1)
            .filter(|r| {
                let retry = requests.iter().any(|p| p.body == r.body && p.at < r.at);
                retry || r.at > limited.at + FIRST_ATTEMPT_SLACK
            })
            .map(|r| {
                let prior: Vec<_> = requests
                    .iter()
                    .filter(|p| p.body == r.body && p.at < r.at)
                    .map(|p| {
                        (
                            p.label.clone(),
                            p.headers["authorization"] == auth,
                            r.at - p.at,
                        )
                    })
                    .collect();
                (r.at - limited.at, r.label.clone(), prior)
            })
            .collect();
        assert!(
            intruders.is_empty(),
            "an account was used while cooling down: {intruders:?}"
        );
    }

    // The proxy's own gauges return to zero.
    let state = std::sync::Arc::clone(&proxy.state);
    assert!(
        proxy.wait_open_connections(0, Duration::from_secs(5)).await,
        "client connections left open"
    );
    assert_eq!(
        state.upstream.budget.retrying(),
        0,
        "requests left in the retry budget"
    );
    assert_eq!(
        state.upstream.budget.in_flight(),
        0,
        "requests left in flight"
    );
    assert_eq!(
        state.budget.used(),
        0,
        "buffered request bytes left reserved"
    );
    proxy.shutdown().await;
}
