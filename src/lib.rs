//! codex-proxy: a hardened local sidecar that holds OpenAI credentials and serves a strict
//! allowlist of API routes on 127.0.0.1.
//!
//! Modules, with one-way dependencies (`translate` depends on nothing else; `pool` on
//! `secret`; `upstream` on `pool` and `translate`; `server` on everything but `hardening`;
//! only `main` calls `hardening` and installs the wiping allocator):
//! - [`cli`], [`config`]: flags, then a validated configuration.
//! - [`hardening`]: non-dumpable, no core, no `LD_*`, no_new_privs; the privilege drop.
//! - [`secret`]: stdin intake, the locked arena, the wiping allocator.
//! - [`pool`]: accounts and their health.
//! - [`translate`]: protocol knowledge (the SSE scanner today).
//! - [`upstream`]: the HTTPS client, header policy, attempts, the relay body.
//! - [`server`]: the route gate, limits, handlers, server-info, shutdown.
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod glob;
pub mod hardening;
pub mod log_batch;
pub mod pool;
pub mod secret;
pub mod server;
pub mod translate;
pub mod upstream;

use std::sync::Arc;

use secret::Credentials;
use tokio_util::sync::CancellationToken;

use config::Config;
use pool::Pool;
use server::limits::BufferBudget;
use server::routes::Gate;
use server::token::ClientToken;
use server::State;
use upstream::client::ClientError;
use upstream::inject::KeyInjector;
use upstream::Upstream;

pub use server::run;

/// Checks that every credential belongs to a provider that takes it (a keyless provider takes
/// none), and that every provider a config file defines has a credential unless it is keyless
/// (or `--auth-dir` may bring them later): DESIGN §9, exit 3 at start. The message names the
/// provider, never a value.
pub fn check_credentials(config: &Config, credentials: &Credentials) -> Result<(), String> {
    let slots: Vec<pool::ProviderSlot> = config.providers.iter().map(|p| p.slot()).collect();
    let placed = pool::place(&slots, &credentials.accounts).map_err(|e| e.to_string())?;
    if config.auth_dir.is_none() {
        for (index, provider) in config.providers.iter().enumerate() {
            if !provider.implicit && !provider.keyless && !placed.contains(&index) {
                return Err(format!(
                    "provider `{}` has no credential on standard input (give it an account \
                     object naming it: {{\"provider\":\"{}\",\"api_key\":…}})",
                    provider.name, provider.name
                ));
            }
        }
    }
    Ok(())
}

/// True when empty standard input is no error: `--auth-dir` may bring every account, or the
/// config file defines only keyless providers (which need none).
pub fn empty_stdin_allowed(config: &Config) -> bool {
    let defined = config.providers.iter().filter(|p| !p.implicit);
    config.auth_dir.is_some()
        || (defined.clone().count() > 0 && defined.into_iter().all(|p| p.keyless))
}

/// Builds the shared server state for a listener bound on `port`. Needs a tokio runtime.
pub fn build_state(
    config: &Config,
    credentials: Credentials,
    port: u16,
    token: Option<ClientToken>,
) -> Result<Arc<State>, ClientError> {
    let injector = Arc::new(KeyInjector::new());
    let slots = config.providers.iter().map(|p| p.slot()).collect();
    let pool = Pool::with_providers(
        credentials,
        Arc::clone(&injector) as Arc<dyn pool::Swaps>,
        slots,
    )
    .map_err(ClientError::Secrets)?;
    let client = upstream::client::build(config, Arc::clone(&injector))?;
    let pool = Arc::new(pool);
    let auth_dir = config.auth_dir.as_ref().map(|dir| {
        let auth_dir = Arc::new(pool::auth_dir::AuthDir::new(
            dir.clone(),
            hardening::current_uid(),
        ));
        auth_dir.rescan(&pool);
        auth_dir
    });
    let refresher = upstream::refresh::Refresher {
        client: upstream::client::build_unpooled(config)?,
        token_url: config.oauth_token_url.clone(),
        pool: Arc::clone(&pool),
        auth_dir,
        rescan_every: config.auth_dir_interval,
    };
    let buffers = BufferBudget::new(config.limits.max_buffered_bytes);
    let accounting = Arc::new(server::usage::Accounting::new());
    let policies = server::policy::Policies::new(config.policies.clone());
    if let Some(dir) = &config.state_dir {
        server::state_dir::restore(dir.loaded(), &accounting, &policies);
    }
    Ok(Arc::new(State {
        gate: Gate::new(port, config.http_shutdown),
        models: config.models.clone(),
        token,
        upstream: Upstream {
            client,
            providers: config.providers.clone(),
            refresher: Arc::new(refresher),
            pool,
            openai_organization: config.openai_organization.clone(),
            openai_project: config.openai_project.clone(),
            timeouts: config.timeouts,
            max_attempts: config.limits.max_attempts,
            budget: Default::default(),
            health: Default::default(),
            buffers: Some(Arc::clone(&buffers) as Arc<dyn upstream::relay::ByteBudget>),
            echo: Default::default(),
            attempts: config
                .accounting
                .then(|| Arc::clone(&accounting) as Arc<dyn upstream::forward::AttemptObserver>),
        },
        limits: config.limits,
        timeouts: config.timeouts,
        budget: buffers,
        shutdown_requested: CancellationToken::new(),
        abort: CancellationToken::new(),
        open_connections: Default::default(),
        session_hasher: Default::default(),
        access: config.access.clone(),
        policies,
        names: Default::default(),
        accounting,
        usage_admin: config.info_owner.as_raw(),
        state_dir: config.state_dir.clone(),
        accounting_on: config.accounting,
    }))
}

/// Logs go to stderr, as text or JSON lines, at the configured level.
pub fn init_logging(level: cli::LogLevel, format: cli::LogFormat) {
    use tracing::Level;
    let level = match level {
        cli::LogLevel::Error => Level::ERROR,
        cli::LogLevel::Warn => Level::WARN,
        cli::LogLevel::Info => Level::INFO,
        cli::LogLevel::Debug => Level::DEBUG,
        cli::LogLevel::Trace => Level::TRACE,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(log_batch::Stderr)
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false);
    let _ = match format {
        cli::LogFormat::Text => builder.try_init(),
        cli::LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
