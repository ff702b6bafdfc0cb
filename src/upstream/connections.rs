//! Upstream connections, kept for reuse: per origin (scheme, host and port), a list of
//! HTTP/1.1 connections and at most one shared h2 connection.
//!
//! hyper-util's legacy client did this before, and cost more than the rest of the upstream
//! side of a request: it boxed a 4 KiB future per request, formatted the `Host` header each
//! time, and spawned a task per request that waited for the connection to be ready again and
//! then put it back, so every request went through three tasks. Here a request is handed to
//! its connection synchronously (hyper's `try_send_request`), the connection goes back on its
//! origin's list at once, still busy, and a checkout takes the first connection on the list
//! that is ready for a request. hyper reports an HTTP/1.1 connection ready once its previous
//! response has been read to the end, so one whose answer was dropped half-read (a client that
//! went away) is never ready again: it closes, and the checkout drops it.
//!
//! A connection that carried an echo of a secret is poisoned through its [`Lease`] and never
//! handed out again, so its read buffers are freed (and wiped) with it. Idle connections are
//! closed after [`POOL_IDLE_TIMEOUT`](super::client::POOL_IDLE_TIMEOUT).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Response, Uri, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = Full<Bytes>;

/// Idle connections are looked at this many times per idle timeout (every 15 s for 90 s).
const REAPS_PER_TIMEOUT: u32 = 6;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (TCP, proxy handshake, TLS, or the connect timeout):
    /// nothing was sent.
    #[error("cannot connect to the upstream")]
    Connect(#[source] BoxError),
    /// The connection failed after the request was handed to it, before a response head.
    #[error("the upstream connection failed")]
    Send(#[source] hyper::Error),
    /// The request has no scheme and authority to connect to.
    #[error("the upstream URL has no scheme or host")]
    NotAbsolute,
}

impl SendError {
    /// True when nothing reached the upstream: no connection was made.
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_) | SendError::NotAbsolute)
    }
}

/// The connection a response came on, to poison it (never reuse it again).
#[derive(Clone, Debug, Default)]
pub struct Lease {
    poisoned: Arc<AtomicBool>,
}

impl Lease {
    /// The connection is closed instead of being handed out again.
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Relaxed);
    }

    fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed)
    }
}

/// A kept connection: its sender, its lease, and the last time the reaper saw it busy (or
/// when it was made).
struct Kept<S> {
    sender: S,
    lease: Lease,
    last_busy: Instant,
}

impl<S> Kept<S> {
    fn new(sender: S, lease: &Lease) -> Self {
        Kept {
            sender,
            lease: lease.clone(),
            last_busy: Instant::now(),
        }
    }
}

struct Origin {
    scheme: Scheme,
    authority: Authority,
    /// `Host` for HTTP/1.1 requests: the host, and the port unless it is the scheme's default.
    host: HeaderValue,
    http1: VecDeque<Kept<http1::SendRequest<Body>>>,
    http2: Option<Kept<http2::SendRequest<Body>>>,
}

impl Origin {
    fn new(scheme: &Scheme, authority: &Authority) -> Option<Self> {
        let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => {
                HeaderValue::from_str(&format!("{}:{port}", authority.host()))
            }
            _ => HeaderValue::from_str(authority.host()),
        }
        .ok()?;
        Some(Origin {
            scheme: scheme.clone(),
            authority: authority.clone(),
            host,
            http1: VecDeque::new(),
            http2: None,
        })
    }

    fn serves(&self, scheme: &Scheme, authority: &Authority) -> bool {
        self.scheme == *scheme && self.authority == *authority
    }

    /// The first ready connection; closed and poisoned ones are dropped on the way.
    fn checkout(&mut self) -> Option<Ready> {
        if let Some(h2) = &mut self.http2 {
            if h2.sender.is_closed() || h2.lease.is_poisoned() {
                self.http2 = None;
            } else {
                h2.last_busy = Instant::now();
                return Some(Ready::Http2(h2.sender.clone(), h2.lease.clone()));
            }
        }
        for _ in 0..self.http1.len() {
            let conn = self.http1.pop_front()?;
            if conn.sender.is_closed() || conn.lease.is_poisoned() {
                continue;
            }
            if conn.sender.is_ready() {
                return Some(Ready::Http1(conn));
            }
            // Busy with a response: it goes to the back of the list.
            self.http1.push_back(conn);
        }
        None
    }

    /// Drops connections that closed, were poisoned, or have been idle for `idle_timeout`.
    fn reap(&mut self, now: Instant, idle_timeout: Duration) {
        let keep = |sender_closed: bool, ready: bool, lease: &Lease, last_busy: &mut Instant| {
            if sender_closed || lease.is_poisoned() {
                return false;
            }
            if !ready {
                *last_busy = now;
            }
            now.duration_since(*last_busy) < idle_timeout
        };
        self.http1.retain_mut(|c| {
            keep(
                c.sender.is_closed(),
                c.sender.is_ready(),
                &c.lease,
                &mut c.last_busy,
            )
        });
        if let Some(c) = &mut self.http2 {
            // An h2 connection is "busy" while any of its streams is open; hyper does not say,
            // so it is kept for as long as requests keep using it (checkouts refresh it).
            if !keep(c.sender.is_closed(), true, &c.lease, &mut c.last_busy) {
                self.http2 = None;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.http1.is_empty() && self.http2.is_none()
    }
}

enum Ready {
    Http1(Kept<http1::SendRequest<Body>>),
    Http2(http2::SendRequest<Body>, Lease),
}

/// The upstream client: a connector (TCP, proxy, TLS, key injection) and the connections it
/// made, kept per origin when `pooled`.
pub struct Connections<C> {
    connector: C,
    pooled: bool,
    idle_timeout: Duration,
    origins: Mutex<Vec<Origin>>,
    reaping: AtomicBool,
}

impl<C> Connections<C>
where
    C: Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Connection + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
{
    /// `pooled: false` keeps no connection after its request: each request's buffers are
    /// freed (and wiped) when it ends.
    pub fn new(connector: C, pooled: bool, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Connections {
            connector,
            pooled,
            idle_timeout,
            origins: Mutex::new(Vec::new()),
            reaping: AtomicBool::new(false),
        })
    }

    fn origins(&self) -> MutexGuard<'_, Vec<Origin>> {
        // Every change under the lock is a push or a pop: a panic elsewhere leaves it whole.
        self.origins.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `request` (an absolute URI) on a kept connection that is ready, else on a new
    /// one, and returns the response head with the connection's lease.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let uri = request.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(SendError::NotAbsolute);
        };
        let (host, mut ready) = {
            let mut origins = self.origins();
            let index = match origins.iter().position(|o| o.serves(scheme, authority)) {
                Some(index) => index,
                None => {
                    origins.push(Origin::new(scheme, authority).ok_or(SendError::NotAbsolute)?);
                    origins.len() - 1
                }
            };
            let origin = &mut origins[index];
            (origin.host.clone(), origin.checkout())
        };
        // Kept connections first. A request that one of them turns down unsent (it closed
        // just now) comes back and goes to the next.
        while let Some(conn) = ready.take() {
            match conn {
                Ready::Http1(mut conn) => {
                    let sent = conn
                        .sender
                        .try_send_request(http1_form(request, &host, &uri));
                    let lease = conn.lease.clone();
                    self.keep(scheme, authority, |o| o.http1.push_back(conn));
                    match sent.await {
                        Ok(response) => return Ok((response, lease)),
                        Err(mut e) => match e.take_message() {
                            Some(unsent) => request = restore(unsent, &uri),
                            None => return Err(SendError::Send(e.into_error())),
                        },
                    }
                    ready = self.checkout(scheme, authority);
                }
                Ready::Http2(mut sender, lease) => {
                    match sender.try_send_request(request).await {
                        Ok(response) => return Ok((response, lease)),
                        Err(mut e) => match e.take_message() {
                            Some(unsent) => request = unsent,
                            None => return Err(SendError::Send(e.into_error())),
                        },
                    }
                    ready = self.checkout(scheme, authority);
                }
            }
        }
        // Boxed: connecting (TCP, TLS, the h2 handshake) is most of this future's size, and
        // an unboxed one would be carried, and moved, by every request.
        Box::pin(self.send_on_new(request, &uri, &host, scheme, authority)).await
    }

    async fn send_on_new(
        self: &Arc<Self>,
        request: Request<Body>,
        uri: &Uri,
        host: &HeaderValue,
        scheme: &Scheme,
        authority: &Authority,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        let lease = Lease::default();
        if io.connected().is_negotiated_h2() {
            let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| SendError::Connect(e.into()))?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "upstream h2 connection ended with an error");
                }
            });
            let sent = sender.send_request(request);
            self.keep(scheme, authority, |o| {
                o.http2 = Some(Kept::new(sender, &lease));
            });
            return sent.await.map(|r| (r, lease)).map_err(SendError::Send);
        }
        let (mut sender, connection) = http1::handshake(io)
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        let sent = sender.send_request(http1_form(request, host, uri));
        self.keep(scheme, authority, |o| {
            o.http1.push_back(Kept::new(sender, &lease))
        });
        sent.await.map(|r| (r, lease)).map_err(SendError::Send)
    }

    /// `f` on the kept connections of `scheme://authority` (`None`: none were ever made).
    fn with_origin<R>(
        &self,
        scheme: &Scheme,
        authority: &Authority,
        f: impl FnOnce(&mut Origin) -> R,
    ) -> Option<R> {
        let mut origins = self.origins();
        origins
            .iter_mut()
            .find(|o| o.serves(scheme, authority))
            .map(f)
    }

    fn checkout(&self, scheme: &Scheme, authority: &Authority) -> Option<Ready> {
        self.with_origin(scheme, authority, Origin::checkout)
            .flatten()
    }

    /// Puts a connection (back) on its origin's list, unless connections are not kept.
    fn keep(
        self: &Arc<Self>,
        scheme: &Scheme,
        authority: &Authority,
        put: impl FnOnce(&mut Origin),
    ) {
        if !self.pooled {
            return;
        }
        self.with_origin(scheme, authority, put);
        if !self.reaping.swap(true, Ordering::Relaxed) {
            let every = self.idle_timeout / REAPS_PER_TIMEOUT;
            tokio::spawn(Self::reap(Arc::downgrade(self), every));
        }
    }

    /// Looks at the kept connections `every` so often until none is left (the next kept one
    /// starts it again) or the client is gone.
    async fn reap(connections: Weak<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            match connections.upgrade() {
                Some(c) if c.reap_once() => {}
                _ => return,
            }
        }
    }

    /// Drops what closed, was poisoned or sat idle too long; false once nothing is kept.
    fn reap_once(&self) -> bool {
        let now = Instant::now();
        let mut origins = self.origins();
        for origin in origins.iter_mut() {
            origin.reap(now, self.idle_timeout);
        }
        let any = origins.iter().any(|o| !o.is_empty());
        if !any {
            self.reaping.store(false, Ordering::Relaxed);
        }
        any
    }
}

/// An HTTP/1.1 request line names the path only (origin form), and `Host` names the origin.
fn http1_form(mut request: Request<Body>, host: &HeaderValue, uri: &Uri) -> Request<Body> {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::from(path);
    *request.version_mut() = Version::HTTP_11;
    request
        .headers_mut()
        .entry(header::HOST)
        .or_insert_with(|| host.clone());
    request
}

/// A request an HTTP/1.1 connection turned down unsent, made ready for any connection again.
fn restore(mut request: Request<Body>, uri: &Uri) -> Request<Body> {
    *request.uri_mut() = uri.clone();
    request.headers_mut().remove(header::HOST);
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    use http_body_util::BodyExt;
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioIo;

    /// An upstream on 127.0.0.1:0 that counts the connections it accepted and saw closed.
    /// `/big` answers 1 MiB, anything else a short body.
    struct Upstream {
        url: String,
        accepted: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
    }

    impl Upstream {
        /// Waits until the upstream has seen `n` connections close.
        async fn closed_reaches(&self, n: usize, what: &str) {
            eventually(what, || self.closed.load(Ordering::SeqCst) == n).await;
        }
    }

    async fn upstream() -> Upstream {
        upstream_closing_after(None).await
    }

    /// `close_after`: the upstream drops each connection that long after accepting it.
    async fn upstream_closing_after(close_after: Option<Duration>) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, c) = (Arc::clone(&accepted), Arc::clone(&closed));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                let c = Arc::clone(&c);
                tokio::spawn(async move {
                    let service = service_fn(|request: Request<Incoming>| async move {
                        let size = if request.uri().path() == "/big" {
                            1 << 20
                        } else {
                            2
                        };
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            vec![b'x'; size],
                        ))))
                    });
                    let serving =
                        server::Builder::new().serve_connection(TokioIo::new(stream), service);
                    match close_after {
                        Some(after) => drop(tokio::time::timeout(after, serving).await),
                        None => drop(serving.await),
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Upstream {
            url,
            accepted,
            closed,
        }
    }

    fn client(pooled: bool, idle_timeout: Duration) -> Arc<Connections<HttpConnector>> {
        Connections::new(HttpConnector::new(), pooled, idle_timeout)
    }

    fn get(url: &str, path: &str) -> Request<Body> {
        Request::get(format!("{url}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    /// One short answer, read to the end; its length.
    async fn fetch(client: &Arc<Connections<HttpConnector>>, url: &str) -> usize {
        read_all(client.send(get(url, "/")).await.unwrap().0).await
    }

    async fn read_all(response: Response<Incoming>) -> usize {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .len()
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        for _ in 0..200 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never: {what}");
    }

    #[tokio::test]
    async fn answers_read_to_the_end_leave_their_connection_for_the_next_request() {
        let up = upstream().await;
        let client = client(true, Duration::from_secs(90));
        for _ in 0..5 {
            let (response, _) = client.send(get(&up.url, "/")).await.unwrap();
            assert_eq!(read_all(response).await, 2);
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        // Two at once need two connections; both are kept.
        let (a, b) = tokio::join!(
            client.send(get(&up.url, "/")),
            client.send(get(&up.url, "/"))
        );
        let (a, b) = (a.unwrap().0, b.unwrap().0);
        assert_eq!(read_all(a).await + read_all(b).await, 4);
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        for _ in 0..4 {
            fetch(&client, &up.url).await;
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(up.closed.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_poisoned_connection_is_closed_and_never_handed_out_again() {
        let up = upstream().await;
        let client = client(true, Duration::from_secs(90));
        let (response, lease) = client.send(get(&up.url, "/")).await.unwrap();
        read_all(response).await;
        lease.poison();
        let (response, _) = client.send(get(&up.url, "/")).await.unwrap();
        read_all(response).await;
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        up.closed_reaches(1, "the poisoned connection closed").await;
    }

    #[tokio::test]
    async fn an_answer_dropped_half_read_closes_its_connection_and_the_next_request_gets_a_new_one()
    {
        let up = upstream().await;
        let client = client(true, Duration::from_secs(90));
        let (response, _) = client.send(get(&up.url, "/big")).await.unwrap();
        let mut body = response.into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        let (response, _) = client.send(get(&up.url, "/")).await.unwrap();
        assert_eq!(read_all(response).await, 2);
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        up.closed_reaches(1, "the half-read connection closed")
            .await;
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced_without_an_error() {
        let up = upstream_closing_after(Some(Duration::from_millis(100))).await;
        let client = client(true, Duration::from_secs(90));
        fetch(&client, &up.url).await;
        // The upstream ends the idle connection, as servers do after their keep-alive time.
        up.closed_reaches(1, "the upstream closed the connection")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        fetch(&client, &up.url).await;
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout_and_busy_ones_are_kept() {
        let up = upstream().await;
        let client = client(true, Duration::from_millis(300));
        fetch(&client, &up.url).await;
        up.closed_reaches(1, "the idle connection closed").await;
        assert!(client.origins()[0].is_empty());
        // The next request makes a new one (and starts the reaper again).
        fetch(&client, &up.url).await;
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        // An answer read slowly, for longer than the idle timeout, keeps its connection.
        let (response, _) = client.send(get(&up.url, "/big")).await.unwrap();
        let mut body = response.into_body();
        let mut read = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap()
            .len();
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(client.origins()[0].http1.len(), 1, "reaped while busy");
        while let Some(frame) = body.frame().await {
            read += frame.unwrap().into_data().unwrap().len();
        }
        assert_eq!(read, 1 << 20);
        // ... and serves the next request.
        fetch(&client, &up.url).await;
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unpooled_client_keeps_no_connection() {
        let up = upstream().await;
        let client = client(false, Duration::from_secs(90));
        for _ in 0..3 {
            fetch(&client, &up.url).await;
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
        up.closed_reaches(3, "every connection closed").await;
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error_and_a_relative_url_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = client(true, Duration::from_secs(90));
        let error = client.send(get(&url, "/")).await.unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        let relative = Request::get("/v1/responses")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert!(matches!(
            client.send(relative).await.unwrap_err(),
            SendError::NotAbsolute
        ));
    }

    #[tokio::test]
    async fn http1_requests_name_the_path_and_the_host_with_its_port() {
        let up = upstream().await;
        let port = up.url.rsplit(':').next().unwrap().to_string();
        let origin = Origin::new(
            &Scheme::HTTP,
            &Authority::try_from(format!("127.0.0.1:{port}")).unwrap(),
        )
        .unwrap();
        assert_eq!(origin.host, format!("127.0.0.1:{port}").as_str());
        let default = Origin::new(
            &Scheme::HTTPS,
            &Authority::from_static("api.openai.com:443"),
        )
        .unwrap();
        assert_eq!(default.host, "api.openai.com");
        let uri: Uri = format!("{}/v1/responses?x=1", up.url).parse().unwrap();
        let request = http1_form(get(&up.url, "/v1/responses?x=1"), &origin.host, &uri);
        assert_eq!(request.uri(), "/v1/responses?x=1");
        assert_eq!(
            request.headers()[header::HOST],
            format!("127.0.0.1:{port}").as_str()
        );
    }
}
