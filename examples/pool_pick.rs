//! Times account selection (`Pool::pick`) with 1, 100 and 1,000 API-key accounts, a tenth of
//! them cooling down and requests split between session affinity and round robin.
//! Prints one JSON object; `scripts/bench` tabulates it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_types
)]

use std::time::{Duration, Instant};

use codex_proxy::pool::state::Verdict;
use codex_proxy::pool::{Pick, Pool};
use codex_proxy::secret::IntakeBuffer;

fn pool(n: usize) -> Pool {
    let input: Vec<u8> = (0..n)
        .flat_map(|i| format!("sk-bench-account-{i:05}-0123456789abcdef\n").into_bytes())
        .collect();
    let mut intake = IntakeBuffer::new(input.len() + 1).unwrap();
    intake.read_slice(&input).unwrap();
    let injector = std::sync::Arc::new(codex_proxy::upstream::inject::KeyInjector::new());
    Pool::new(intake.into_credentials().unwrap(), injector).unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("usage: pool_pick (no arguments; prints one JSON object of timings)");
        return;
    }
    let mut results = Vec::new();
    for n in [1usize, 100, 1000] {
        let pool = pool(n);
        let now = tokio::time::Instant::now();
        for i in (0..n).step_by(10).skip(1) {
            pool.record(
                i,
                Verdict::RateLimited {
                    retry_after: Some(Duration::from_secs(600)),
                },
                Some(429),
                None,
                None,
                now,
            );
        }
        let rounds = 200_000 / n.max(1) * 10;
        let started = Instant::now();
        let mut picked = 0usize;
        for r in 0..rounds {
            let session = (r % 2 == 0).then_some((r % 97) as u64);
            if let Pick::Account(i) = pool.pick(session, &[], now) {
                picked += i;
            }
        }
        let per_pick = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        std::hint::black_box(picked);
        results.push(format!("{{\"accounts\":{n},\"pick_us\":{per_pick:.3}}}"));
    }
    println!("[{}]", results.join(","));
}
