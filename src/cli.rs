//! Command-line flags. Each doc comment is the `--help` text; `config.rs` validates them.
//!
//! No environment variable configures anything (the only environment input is `SUDO_UID`, the
//! default of `--info-owner`), and no flag carries a secret: credentials come from stdin.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// `--help`'s description, after the one-line `about` (Cargo.toml's `description`).
const LONG_ABOUT: &str = "\
Hardened local proxy that lends OpenAI API keys and ChatGPT (Codex) logins to local clients \
(Codex, Claude Code, OpenAI and Anthropic SDKs) without letting them read the credentials.

Credentials come on standard input, read to EOF, never as arguments or environment \
variables: one API key per line (several lines form a pool), a Codex auth.json, or ChatGPT \
account objects (one JSON object, an array, or JSON lines). The proxy locks them in memory, \
makes itself non-dumpable, and serves these routes on 127.0.0.1 only:
  POST /v1/responses, /v1/responses/compact     Responses API (Codex, OpenAI SDKs)
  POST /v1/chat/completions                     Chat Completions, translated
  POST /v1/messages, /v1/messages/count_tokens  Anthropic Messages, translated
  GET  /v1/models, /health                      answered locally
  GET  /usage, /metrics                         tokens per local user; Prometheus metrics
  GET|POST /shutdown                            only with --http-shutdown";

/// Printed after the flags by `--help`.
const AFTER_HELP: &str = "\
Example:
  sudo cat /root/openai.key | sudo codex-proxy --server-info ~/cp.json --http-shutdown
  PORT=$(jq .port ~/cp.json)
  codex exec --skip-git-repo-check -c openai_base_url=http://127.0.0.1:$PORT/v1 'hello'
  curl --fail -s http://127.0.0.1:$PORT/shutdown

Exit codes: 0 stopped cleanly, 2 bad configuration, 3 bad stdin, 4 bind or server-info, \
5 hardening, 6 privilege drop, 1 other.
The README (README.md in the source tree) explains setup, every client, credentials, routes \
and limits; `man codex-proxy` where the man page is installed.";

/// The command line (see [`LONG_ABOUT`]).
#[derive(Debug, Parser)]
#[command(
    name = "codex-proxy",
    version,
    about,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
pub struct Args {
    /// Port on 127.0.0.1 to listen on [default: an ephemeral port].
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,

    /// Write {"port","pid","version","base_url"} (plus "token" with --client-token) as one JSON
    /// line to FILE, atomically, after binding. Removed on exit where permitted.
    #[arg(long, value_name = "FILE")]
    pub server_info: Option<PathBuf>,

    /// Enable GET/POST /shutdown (stops the proxy gracefully).
    #[arg(long)]
    pub http_shutdown: bool,

    /// Upstream API base URL. A URL whose path ends in /responses means its parent, and its
    /// query string (e.g. Azure's api-version) is kept on every upstream request. Plain http://
    /// is allowed only for loopback addresses.
    #[arg(long, value_name = "URL", default_value = "https://api.openai.com/v1")]
    pub upstream_url: String,

    /// Extra PEM trust anchors for the upstream, added to the OS trust store.
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,

    /// Reach the upstream through a proxy: http://host:port (HTTP CONNECT) or
    /// socks5://host:port (SOCKS5, names resolved locally) / socks5h://host:port (by the proxy).
    #[arg(long, value_name = "URL")]
    pub upstream_proxy: Option<String>,

    /// OpenAI-Organization header sent upstream (client values are always dropped).
    #[arg(long, value_name = "ID")]
    pub openai_organization: Option<String>,

    /// OpenAI-Project header sent upstream (client values are always dropped).
    #[arg(long, value_name = "ID")]
    pub openai_project: Option<String>,

    /// Codex backend for ChatGPT accounts ({base}/responses). Plain http:// only for loopback.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://chatgpt.com/backend-api/codex"
    )]
    pub chatgpt_base_url: String,

    /// OAuth token endpoint used to refresh ChatGPT account tokens. Plain http:// only for
    /// loopback.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://auth.openai.com/oauth/token"
    )]
    pub oauth_token_url: String,

    /// Directory of account files (auth.json or account objects, *.json), owned by the user the
    /// proxy runs as and not accessible by group or others. Watched for changes; rotated tokens
    /// are written back atomically under an advisory lock. Allows empty stdin.
    #[arg(long, value_name = "DIR")]
    pub auth_dir: Option<PathBuf>,

    /// How often --auth-dir is rescanned for new, changed and removed files.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub auth_dir_interval: f64,

    /// Model aliases, default reasoning effort and forced per-model parameters (JSON; see the
    /// README). Read once at start-up.
    #[arg(long, value_name = "FILE")]
    pub models: Option<PathBuf>,

    /// Providers, models, aliases and per-user policy (TOML; see the README). [providers.NAME]:
    /// `kind` ("openai", "chatgpt", "anthropic", or "chat" for Chat Completions servers such
    /// as llama.cpp, vLLM and Ollama), `base_url` (the kind's default when absent, required
    /// for "chat"; plain http:// only for loopback, or for a "chat" provider with
    /// `keyless = true` and `allow_plain_http = true`), `keyless = true` ("chat": no key, no
    /// Authorization sent), `reasoning_effort = true` and `max_completion_tokens = true`
    /// ("chat": fields its server takes), `models` (globs), `default = true` (serves
    /// every model no other provider matches; at most one), `headers` (fixed extra request
    /// headers; no credential or hop-by-hop ones). The file's providers are tried in file
    /// order, then the implicit "openai" (--upstream-url) and "chatgpt" (--chatgpt-base-url)
    /// unless the file names one. [models."NAME"] and [aliases]: the --models file's keys.
    /// [users.NAME] and [users."*"]: `models` (globs the model sent upstream must match, else
    /// 403 model_not_allowed), `max_concurrent` (requests in flight, else 429
    /// user_concurrency_limit) and `token_budget` with `budget_window` ("1h", "1d", "7d",
    /// "30d"; input + output tokens per window, else 429 user_budget_exhausted; kept in
    /// memory, or in --state-dir). Read once at start-up; unknown keys are errors (exit 2, naming the line and
    /// the key). Cannot be combined with --models.
    #[arg(long, value_name = "FILE", conflicts_with = "models")]
    pub config: Option<PathBuf>,

    /// Drop privileges to this user after binding and writing the server-info file. Needs root
    /// (or CAP_SETUID and CAP_SETGID).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Require a random per-launch token (written to the server-info file, which is then 0600
    /// and owned by the info owner) as "Authorization: Bearer" or "x-api-key" on every route.
    /// Needs --server-info.
    #[arg(long)]
    pub client_token: bool,

    /// A local user (name or uid) who may use the port; repeat for more. The kernel says who
    /// owns each connection (looked up once per connection); anyone else gets 403
    /// user_not_allowed, and a connection whose owner cannot be determined is refused. Names are
    /// resolved at start. [default: every local user]
    #[arg(long = "allow-user", value_name = "USER")]
    pub allow_users: Vec<String>,

    /// Keep usage counters and token-budget windows in DIR across restarts (written at most a
    /// second after a change and at shutdown, atomically). DIR must exist, belong to the user
    /// the proxy runs as (after --user) and be closed to group and others; it is not followed
    /// through symbolic links. A state file that cannot be read is an error, never reset.
    /// [default: kept in memory only]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Owner (name or uid) of the server-info file when it holds a token [default: SUDO_UID,
    /// else the proxy's own uid].
    #[arg(long, value_name = "USER")]
    pub info_owner: Option<String>,

    /// Not shown by --help: for scripts/bench only. Skips the connection-owner lookup and the
    /// usage accounting (no user in logs, /usage and /metrics count nothing per user), so the
    /// bench can measure what they cost in the same run. Refused with --allow-user, --config and
    /// --state-dir, which need them.
    #[arg(long, hide = true, conflicts_with_all = ["allow_users", "config", "state_dir"])]
    pub bench_accounting_off: bool,

    /// Seconds to connect to the upstream (TCP, proxy and TLS).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub connect_timeout: f64,

    /// Seconds to wait for upstream response headers of a streaming request (per attempt).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub header_timeout: f64,

    /// Seconds of upstream silence tolerated between chunks of a response.
    #[arg(long, value_name = "SECS", default_value = "270", value_parser = parse_seconds)]
    pub idle_timeout: f64,

    /// Seconds for a whole non-streaming request, retries included.
    #[arg(long, value_name = "SECS", default_value = "600", value_parser = parse_seconds)]
    pub request_timeout: f64,

    /// Upstream attempts per request, failovers to other accounts included.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub max_attempts: u32,

    /// Largest request body accepted, in bytes (larger: 413).
    #[arg(long, value_name = "N", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Bytes buffered across all requests at once: request bodies, held stream starts,
    /// aggregated answers, partial translated events (beyond it: 503, or an error event).
    #[arg(long, value_name = "N", default_value_t = 256 * 1024 * 1024)]
    pub max_buffered_bytes: usize,

    /// Concurrent client connections (beyond it: 503 and close).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_connections: usize,

    /// Largest credential input accepted on stdin, in bytes.
    #[arg(long, value_name = "N", default_value_t = 4 * 1024 * 1024)]
    pub max_stdin_bytes: usize,

    /// Seconds shutdown waits for in-flight requests before ending them with an error.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_seconds)]
    pub drain_timeout: f64,

    /// Log level on stderr.
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Seconds as a non-negative decimal number (fractions allowed, e.g. `0.5`).
fn parse_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 * 7.0 => Ok(secs),
        _ => Err("expected a number of seconds greater than 0 (at most a week)".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_interface_contract() {
        let args = Args::try_parse_from(["codex-proxy"]).unwrap();
        assert_eq!(args.upstream_url, "https://api.openai.com/v1");
        assert_eq!(args.connect_timeout, 10.0);
        assert_eq!(args.header_timeout, 10.0);
        assert_eq!(args.idle_timeout, 270.0);
        assert_eq!(args.request_timeout, 600.0);
        assert_eq!(args.drain_timeout, 30.0);
        assert_eq!(args.max_attempts, 3);
        assert_eq!(args.max_body_bytes, 32 << 20);
        assert_eq!(args.max_buffered_bytes, 256 << 20);
        assert_eq!(args.max_connections, 1024);
        assert_eq!(args.max_stdin_bytes, 4 << 20);
        assert!(!args.http_shutdown && !args.client_token);
    }

    #[test]
    fn the_bench_switch_is_hidden_and_refused_with_what_needs_accounting() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        assert!(help.contains("--state-dir"));
        assert!(!help.contains("bench-accounting-off"));
        assert!(Args::try_parse_from(["codex-proxy", "--bench-accounting-off"]).is_ok());
        for other in [
            ["--allow-user", "root"],
            ["--config", "users.toml"],
            ["--state-dir", "/var/lib/codex-proxy"],
        ] {
            let mut argv = vec!["codex-proxy", "--bench-accounting-off"];
            argv.extend(other);
            assert!(Args::try_parse_from(argv).is_err(), "{other:?}");
        }
    }

    #[test]
    fn seconds_accept_fractions_and_refuse_nonsense() {
        assert_eq!(parse_seconds("0.25"), Ok(0.25));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("NaN").is_err());
        assert!(parse_seconds("ten").is_err());
    }
}
