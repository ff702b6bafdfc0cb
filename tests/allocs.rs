//! Heap allocations on the request path, counted rather than timed (a count does not depend on
//! how busy the machine is). Each test runs one piece of per-request work on its own thread
//! and compares the number of allocations it made with a bound; the bounds are what the code
//! needs, so a change that brings back per-byte or per-request allocations fails here.
//!
//! The counting allocator is this test binary's own (the product installs the wiping
//! allocator, which counts nothing): it forwards every call to `System` and counts, per
//! thread, the calls that hand out a block.
#![allow(unsafe_code)] // the counting `GlobalAlloc` below; test-only, forwards to `System`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use codex_proxy::pool::{Pick, Pool, Target};
use codex_proxy::secret::{IntakeBuffer, SecretArena};
use codex_proxy::translate::usage::TopLevelUsage;
use codex_proxy::upstream::inject::{AuthForm, Injecting, KeyInjector};
use hyper::rt::Write as _;
use hyper_util::client::legacy::connect::{Connected, Connection};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: a thread being torn down has no counter left; nothing to count there.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The allocations `work` makes on this thread.
fn allocations<T>(work: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = work();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

/// A Responses JSON answer of about 1 KiB, as a plain (non-streamed) request gets it.
fn responses_body() -> Vec<u8> {
    let text = "lorem ipsum dolor sit amet ".repeat(30);
    format!(
        r#"{{"id":"resp_1","object":"response","created_at":1700000000,"status":"completed","model":"gpt-5.1-codex","output":[{{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{{"type":"output_text","annotations":[],"text":"{text}"}}]}}],"parallel_tool_calls":true,"reasoning":{{"effort":"medium","summary":null}},"usage":{{"input_tokens":1200,"input_tokens_details":{{"cached_tokens":1024}},"output_tokens":310,"output_tokens_details":{{"reasoning_tokens":64}},"total_tokens":1510}},"user":null,"metadata":{{}}}}"#
    )
    .into_bytes()
}

#[test]
fn following_a_json_answer_for_its_usage_allocates_per_kept_value_not_per_byte() {
    let body = responses_body();
    for split in [body.len(), 100, 7, 1] {
        let (n, reported) = allocations(|| {
            let mut usage = TopLevelUsage::new();
            for chunk in body.chunks(split) {
                usage.feed(chunk);
            }
            usage.finish()
        });
        let reported = reported.expect("the usage is read");
        assert_eq!((reported.input, reported.output), (1200, 310));
        assert_eq!(reported.model.as_deref(), Some("gpt-5.1-codex"));
        // One buffer per kept value (`model`, `usage`) and the model's string.
        assert!(
            n <= 3,
            "{n} allocations to follow a {} byte body in {split}-byte chunks",
            body.len()
        );
    }
}

/// A transport that keeps what is written (all of it, vectored writes too).
struct Sink(Vec<u8>);

impl hyper::rt::Write for Sink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let mut n = 0;
        for buf in bufs {
            self.0.extend_from_slice(buf);
            n += buf.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Connection for Sink {
    /// With an extra, as the TCP connector's (its socket addresses).
    fn connected(&self) -> Connected {
        Connected::new().extra(std::net::SocketAddr::from(([127, 0, 0, 1], 1)))
    }
}

#[test]
fn swapping_the_key_into_a_request_head_allocates_nothing() {
    const KEY: &[u8] = b"sk-allocs-test-0123456789abcdefghijklmnopqrstuvwxyz";
    let mut arena = SecretArena::with_capacity(KEY.len()).expect("locked arena");
    let range = arena.push_concat(&[KEY]).expect("fits");
    let injector = KeyInjector::new();
    let (_, placeholder) = injector
        .register_forms(&Arc::new(arena), &[(range, AuthForm::Bearer)])
        .expect("registered")
        .remove(0);
    let body = responses_body();
    let mut request = Vec::new();
    request.extend_from_slice(
        b"POST /v1/responses HTTP/1.1\r\ncontent-type: application/json\r\nauthorization: ",
    );
    request.extend_from_slice(placeholder.as_bytes());
    request.extend_from_slice(
        format!(
            "\r\naccept-encoding: identity\r\nhost: 127.0.0.1:1\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    request.extend_from_slice(&body);
    let mut io = Injecting::new(Sink(Vec::with_capacity(64 * 1024)), Arc::new(injector));
    let mut cx = Context::from_waker(Waker::noop());
    for round in 0..3 {
        // What hyper does per request on a kept-alive connection: one write of head and body.
        let (n, written) = allocations(|| Pin::new(&mut io).poll_write(&mut cx, &request));
        assert!(matches!(written, Poll::Ready(Ok(len)) if len == request.len()));
        assert_eq!(n, 0, "{n} allocations to write request {round}");
    }
}

#[test]
fn choosing_an_account_among_a_few_allocates_nothing() {
    let input: Vec<u8> = (0..3)
        .flat_map(|i| format!("sk-allocs-account-{i}-0123456789abcdef\n").into_bytes())
        .collect();
    let mut intake = IntakeBuffer::new(input.len() + 1).expect("intake");
    intake.read_slice(&input).expect("read");
    let pool = Pool::new(
        intake.into_credentials().expect("credentials"),
        Arc::new(KeyInjector::new()),
    )
    .expect("pool");
    let now = tokio::time::Instant::now();
    for session in [None, Some(7)] {
        let (n, pick) = allocations(|| pool.pick_for(Target::Implicit, session, &[], now));
        assert!(matches!(pick, Pick::Account(_)));
        // Session affinity is recorded after an answer, not here: nothing to allocate.
        assert_eq!(n, 0, "{n} allocations to choose among 3 accounts");
    }
}

#[test]
fn upstream_connections_carry_no_extras_into_each_response() {
    // The pool copies a connection's extras into the extensions of every response on it
    // (a map and a box per response) and into every connection capture: the injecting
    // transport keeps only what the client acts on.
    let io = Injecting::new(Sink(Vec::new()), Arc::new(KeyInjector::new()));
    let connected = io.connected();
    let mut extensions = http::Extensions::new();
    let (n, ()) = allocations(|| connected.get_extras(&mut extensions));
    assert!(extensions.is_empty());
    assert_eq!(n, 0, "{n} allocations to set a response's extras");
}
