//! Starts codex-proxy in-process on 127.0.0.1:0 against a given upstream, the way `main`
//! does after hardening (which tests cannot apply to the test process).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use codex_proxy::cli::Args;
use codex_proxy::config::Config;
use codex_proxy::secret::IntakeBuffer;
use codex_proxy::server::token::ClientToken;
use codex_proxy::server::State;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A canary key: obviously fake, unique enough to grep for.
pub const CANARY_KEY: &str = "sk-test-CANARYk3yQ7zX9pL2mN5vB8cR4tY6wA1sD0fG";

pub struct TestProxy {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    /// The client token, with `--client-token`.
    pub token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
}

impl TestProxy {
    /// Starts the proxy with `key` on stdin and these extra flags.
    pub async fn start(upstream_url: &str, extra: &[&str]) -> TestProxy {
        Self::start_with_key(upstream_url, extra, CANARY_KEY).await
    }

    pub async fn start_with_key(upstream_url: &str, extra: &[&str], key: &str) -> TestProxy {
        Self::start_with_input(upstream_url, extra, format!("{key}\n").as_bytes()).await
    }

    /// Starts the proxy with `input` as all of stdin (credentials in any format; empty is
    /// allowed with `--auth-dir`).
    pub async fn start_with_input(upstream_url: &str, extra: &[&str], input: &[u8]) -> TestProxy {
        Self::start_tweaked(upstream_url, extra, input, |_| {}).await
    }

    /// Like [`TestProxy::start_with_input`], with `tweak` applied to the validated
    /// configuration first (fixed limits that have no flag, shortened for a test).
    pub async fn start_tweaked(
        upstream_url: &str,
        extra: &[&str],
        input: &[u8],
        tweak: impl FnOnce(&mut Config),
    ) -> TestProxy {
        let mut argv = vec!["codex-proxy", "--upstream-url", upstream_url];
        argv.extend_from_slice(extra);
        let wants_token = argv.contains(&"--client-token");
        if wants_token && !argv.contains(&"--server-info") {
            argv.extend_from_slice(&["--server-info", "/nonexistent/unused.json"]);
        }
        let mut config = Config::from_args(Args::try_parse_from(argv).unwrap(), None).unwrap();
        tweak(&mut config);
        let mut intake = IntakeBuffer::new(config.limits.max_stdin_bytes).unwrap();
        intake.read_slice(input).unwrap();
        let credentials = match intake.into_credentials() {
            Ok(credentials) => credentials,
            Err(codex_proxy::secret::IntakeError::Empty)
                if codex_proxy::empty_stdin_allowed(&config) =>
            {
                codex_proxy::secret::Credentials::empty().unwrap()
            }
            Err(e) => panic!("credentials: {e}"),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = wants_token.then(|| ClientToken::generate().unwrap());
        let token_text = token.as_ref().map(|t| t.expose().to_string());
        let state = codex_proxy::build_state(&config, credentials, addr.port(), token).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(codex_proxy::run(listener, Arc::clone(&state), async {
            let _ = stopped.await;
        }));
        TestProxy {
            addr,
            state,
            token: token_text,
            stop: Some(stop),
            task,
        }
    }

    /// Waits up to `limit` until the proxy counts exactly `n` open client connections.
    pub async fn wait_open_connections(&self, n: usize, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.state.open_connections() == n {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Asks the proxy to shut down (like SIGTERM) and waits for `run` to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}
