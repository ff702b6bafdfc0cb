//! `codex-proxy`: harden → parse args → secrets → bind → server-info → drop → runtime → serve.
//!
//! Each step runs before the next, and the first that fails ends the process with the exit
//! code of DESIGN.md §8: 2 configuration, 3 stdin, 4 bind or server-info, 5 hardening,
//! 6 privilege drop, 1 anything else.

use std::process::ExitCode;

use clap::Parser;

use codex_proxy::cli::Args;
use codex_proxy::config::Config;
use codex_proxy::secret::wipe_alloc::WipingAllocator;
use codex_proxy::server::info::{self, ServerInfo};
use codex_proxy::server::token::ClientToken;
use codex_proxy::{hardening, secret};

/// Every freed heap block is wiped, so request buffers that carried the key leave no copy.
#[global_allocator]
static ALLOCATOR: WipingAllocator = WipingAllocator;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("codex-proxy: {message}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let kept = match hardening::harden_process() {
        Ok(kept) => kept,
        Err(e) => return fail(5, e),
    };
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let config = match Config::from_args(args, kept.sudo_uid) {
        Ok(config) => config,
        Err(e) => return fail(2, e),
    };
    codex_proxy::init_logging(config.log_level, config.log_format);

    let credentials = match secret::intake::read_stdin(config.limits.max_stdin_bytes)
        .and_then(|i| i.into_credentials())
    {
        Ok(credentials) => credentials,
        // With --auth-dir, accounts may all come from files.
        Err(secret::IntakeError::Empty) if config.auth_dir.is_some() => {
            match secret::Credentials::empty() {
                Ok(credentials) => credentials,
                Err(e) => return fail(5, e),
            }
        }
        Err(e) if e.is_hardening_failure() => return fail(5, e),
        Err(e) => return fail(3, e),
    };
    let token = match config.client_token.then(ClientToken::generate).transpose() {
        Ok(token) => token,
        Err(e) => return fail(1, format!("cannot generate the client token: {e}")),
    };

    let listener = match std::net::TcpListener::bind(("127.0.0.1", config.port)) {
        Ok(listener) => listener,
        Err(e) => return fail(4, format!("cannot bind 127.0.0.1:{}: {e}", config.port)),
    };
    let port = match listener
        .local_addr()
        .and_then(|a| listener.set_nonblocking(true).map(|_| a.port()))
    {
        Ok(port) => port,
        Err(e) => return fail(4, format!("cannot configure the listener: {e}")),
    };
    // From here on a stop request must find handlers, not the default action: hold SIGTERM
    // and SIGINT until the runtime has installed them.
    if let Err(e) = hardening::hold_termination_signals() {
        return fail(1, format!("cannot block signals: {e}"));
    }
    let written = match &config.server_info {
        None => None,
        Some(path) => {
            let contents = ServerInfo {
                port,
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION"),
                base_url: format!("http://127.0.0.1:{port}/v1"),
                token: token.as_ref().map(|t| t.expose()),
            };
            match info::write(path, &contents, config.info_owner) {
                Ok(written) => Some(written),
                Err(e) => return fail(4, e),
            }
        }
    };
    if let Some(target) = &config.drop_to {
        if let Err(e) = hardening::drop_privileges(target) {
            return fail(6, e);
        }
        tracing::info!(user = %target.name, "dropped privileges");
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(1, format!("cannot start the runtime: {e}")),
    };
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| format!("listener: {e}"))?;
        let state = codex_proxy::build_state(&config, credentials, port, token).map_err(|e| e.to_string())?;
        let stop = shutdown_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
        hardening::release_termination_signals().map_err(|e| format!("cannot unblock signals: {e}"))?;
        tracing::info!(port, upstream = %config.upstream.uri("/responses"), "listening on 127.0.0.1");
        codex_proxy::run(listener, state, stop).await;
        Ok::<_, String>(())
    });
    if let Some(written) = written {
        written.remove();
    }
    match served {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, e),
    }
}

/// Installs the SIGTERM and SIGINT handlers; the future resolves on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
