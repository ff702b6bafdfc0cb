//! `codex-proxy`: harden → parse args → secrets → bind → server-info → drop → runtime → serve.
//!
//! Each step runs before the next, and the first that fails ends the process with the exit
//! code the README lists ("Exit codes"): 2 configuration, 3 stdin, 4 bind or server-info,
//! 5 hardening, 6 privilege drop, 1 anything else.

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
        Err(e) => return usage_error(e),
    };
    let config = match Config::from_args(args, kept.sudo_uid) {
        Ok(config) => config,
        Err(e) => return fail(2, e),
    };
    // Found before stdin is read: a drop that cannot work is a configuration error.
    if let Some(target) = &config.drop_to {
        if !hardening::may_change_ids() {
            return fail(
                2,
                format!(
                    "--user {} needs root (or CAP_SETUID and CAP_SETGID) to drop privileges; \
                     start codex-proxy with sudo, or leave out --user",
                    target.name
                ),
            );
        }
    }
    codex_proxy::init_logging(config.log_level, config.log_format);

    let credentials = match secret::intake::read_stdin(config.limits.max_stdin_bytes)
        .and_then(|i| i.into_credentials())
    {
        Ok(credentials) => credentials,
        // With --auth-dir, accounts may all come from files; keyless providers need none.
        Err(secret::IntakeError::Empty) if codex_proxy::empty_stdin_allowed(&config) => {
            match secret::Credentials::empty() {
                Ok(credentials) => credentials,
                Err(e) => return fail(5, e),
            }
        }
        Err(e) if e.is_hardening_failure() => return fail(5, e),
        Err(e) => return fail(3, e),
    };
    if let Err(e) = codex_proxy::check_credentials(&config, &credentials) {
        return fail(3, e);
    }
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

    // One thread runs the runtime: a request's client side and upstream side are served by
    // the same thread, with no cross-thread wake-ups (see README, Performance). Log lines
    // written on it go out when it is about to wait for I/O.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(codex_proxy::log_batch::flush)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(1, format!("cannot start the runtime: {e}")),
    };
    // Buffered log lines are written when main returns, or unwinds.
    let _flush = codex_proxy::log_batch::FlushOnDrop;
    codex_proxy::log_batch::batch_this_thread();
    let served = runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| format!("listener: {e}"))?;
        let state = codex_proxy::build_state(&config, credentials, port, token)
            .map_err(|e| e.to_string())?;
        let stop = shutdown_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
        hardening::release_termination_signals()
            .map_err(|e| format!("cannot unblock signals: {e}"))?;
        let upstreams = state.upstream.in_use(&config.oauth_token_url.to_string());
        tracing::info!(port, upstreams = %upstreams, "listening on 127.0.0.1");
        codex_proxy::run(listener, state, stop).await;
        Ok::<_, String>(())
    });
    // From here lines go out at once again, in order with `fail`'s message.
    codex_proxy::log_batch::stop_batching_this_thread();
    if let Some(written) = written {
        if let Err(e) = written.remove() {
            tracing::warn!(
                path = %written.path().display(),
                error = %e,
                "server-info file not removed (remove it by hand: no proxy listens on its port)"
            );
        }
    }
    match served {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, e),
    }
}

/// Reports a command-line error (exit 2), or prints `--help`/`--version` (exit 0).
///
/// clap's own message quotes the argument it did not expect. An argument that is not a flag
/// is most likely a key pasted on the command line, where every local user can read it in
/// `/proc/PID/cmdline`: it is never echoed, and the message says where keys go. An unknown
/// flag is named without any `=value`, and an invalid value is not shown either.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        let flag = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(flag)) => flag.clone(),
            _ => "a flag".to_string(),
        };
        let missing = matches!(e.get(ContextKind::InvalidValue), Some(ContextValue::String(v)) if v.is_empty());
        if missing {
            return fail(2, format!("{flag} needs a value (see codex-proxy --help)"));
        }
        let why = match (
            e.get(ContextKind::ValidValue),
            std::error::Error::source(&e),
        ) {
            (Some(ContextValue::Strings(valid)), _) if !valid.is_empty() => {
                format!("possible values: {}", valid.join(", "))
            }
            (_, Some(source)) => source.to_string(),
            _ => "see codex-proxy --help".to_string(),
        };
        return fail(2, format!("invalid value for {flag} (not shown): {why}"));
    }
    let unexpected = match (e.kind(), e.get(ContextKind::InvalidArg)) {
        (ErrorKind::UnknownArgument, Some(ContextValue::String(arg))) => Some(arg.as_str()),
        _ => None,
    };
    match unexpected {
        Some(arg) if arg.starts_with('-') => {
            let name = arg.split('=').next().unwrap_or_default();
            let hint = match e.get(ContextKind::SuggestedArg) {
                Some(ContextValue::String(similar)) => format!("; did you mean {similar}?"),
                _ => String::new(),
            };
            fail(
                2,
                format!("unknown flag {name}{hint} (see codex-proxy --help)"),
            )
        }
        Some(_) => fail(
            2,
            "unexpected argument (not shown). codex-proxy takes no arguments besides flags: \
             keys and tokens go on standard input, never on the command line, e.g. \
             `sudo cat /root/openai.key | sudo codex-proxy --server-info ~/cp.json` \
             (see codex-proxy --help)",
        ),
        None => {
            let _ = e.print();
            ExitCode::from(2)
        }
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
