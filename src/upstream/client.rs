//! The HTTPS client: hyper-rustls (HTTP/1.1 and h2 by ALPN) with the OS trust store plus
//! `--upstream-ca`, an optional HTTP CONNECT or SOCKS5 proxy, and a connect timeout that
//! covers TCP, the proxy handshake and TLS together, under the connections kept for reuse
//! ([`connections`](super::connections)). Redirects are never followed (hyper does not
//! follow them).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use super::connections::Connections;
use super::inject::{Injecting, KeyInjector};
use crate::config::{Config, UpstreamProxy};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client every upstream request goes through.
pub type HttpClient = Arc<Connections<TimeoutConnector<HttpsConnector<ProxyConnector>>>>;

/// How long an idle pooled upstream connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--upstream-ca: certificate rejected: {0}")]
    BadCa(rustls::Error),
    #[error("TLS configuration: {0}")]
    Tls(rustls::Error),
    #[error("cannot prepare the key injector: {0}")]
    Secrets(crate::secret::ArenaError),
    #[error("the credential placeholder is not a valid header value")]
    Placeholder,
}

/// Builds the client. Loads the OS trust store (missing stores are not fatal: `--upstream-ca`
/// may be all that is needed).
pub fn build(config: &Config, injector: Arc<KeyInjector>) -> Result<HttpClient, ClientError> {
    build_with(config, injector, true)
}

/// A client that keeps no idle connection: each request's buffers are freed (and so wiped
/// by the wiping allocator) when it ends. For the token endpoint, whose request and response
/// bodies carry refresh tokens.
pub fn build_unpooled(config: &Config) -> Result<HttpClient, ClientError> {
    build_with(config, Arc::new(KeyInjector::new()), false)
}

fn build_with(
    config: &Config,
    injector: Arc<KeyInjector>,
    pooled: bool,
) -> Result<HttpClient, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    for ca in &config.upstream_ca {
        roots
            .add(ca.clone())
            .map_err(|e| ClientError::BadCa(rustls::Error::General(e.to_string())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.timeouts.connect));
    let proxy = match &config.upstream_proxy {
        None => ProxyConnector::Direct(http),
        Some(UpstreamProxy::Connect(uri)) => ProxyConnector::Tunnel(Tunnel::new(uri.clone(), http)),
        Some(UpstreamProxy::Socks5 { uri, remote_dns }) => {
            ProxyConnector::Socks(SocksV5::new(uri.clone(), http).local_dns(!remote_dns))
        }
    };
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(proxy);
    let connector = TimeoutConnector {
        inner: https,
        timeout: config.timeouts.connect,
        injector,
    };
    Ok(Connections::new(connector, pooled, POOL_IDLE_TIMEOUT))
}

/// TCP, directly or through a proxy.
#[derive(Clone)]
pub enum ProxyConnector {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>),
    Socks(SocksV5<HttpConnector>),
}

type ConnectFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl Service<Uri> for ProxyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = ConnectFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            ProxyConnector::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            ProxyConnector::Tunnel(c) => c.poll_ready(cx).map_err(Into::into),
            ProxyConnector::Socks(c) => c.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            ProxyConnector::Direct(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            ProxyConnector::Tunnel(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            ProxyConnector::Socks(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
        }
    }
}

/// The whole connection set-up (TCP, proxy, TLS) took longer than `--connect-timeout`.
#[derive(Debug, thiserror::Error)]
#[error("connecting to the upstream timed out")]
pub struct ConnectTimedOut;

/// Bounds the whole connect (not just TCP) by one timeout, and wraps the connection so the
/// key is injected on the way out (see [`inject`](super::inject)).
#[derive(Clone)]
pub struct TimeoutConnector<C> {
    inner: C,
    timeout: Duration,
    injector: Arc<KeyInjector>,
}

impl<C> Service<Uri> for TimeoutConnector<C>
where
    C: Service<Uri, Response = MaybeHttpsStream<TokioIo<TcpStream>>> + Send,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = Injecting<C::Response>;
    type Error = BoxError;
    type Future = ConnectFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let timeout = self.timeout;
        let injector = Arc::clone(&self.injector);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(stream)) => Ok(Injecting::new(stream, injector)),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(Box::new(ConnectTimedOut) as BoxError),
            }
        })
    }
}

/// True when an error chain contains a connect timeout (ours or the TCP connector's).
pub fn is_connect_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<ConnectTimedOut>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        current = e.source();
    }
    false
}
