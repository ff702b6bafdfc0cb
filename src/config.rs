//! Raw [`Args`] turned into a validated [`Config`]. Every error here is exit code 2.

pub mod file;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use nix::unistd::{Uid, User};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::cli::{Args, LogFormat, LogLevel};
use crate::hardening::DropTarget;

/// A configuration problem found before binding (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--upstream-url: {0}")]
    UpstreamUrl(String),
    #[error("--upstream-proxy: {0}")]
    UpstreamProxy(String),
    #[error("--upstream-ca {path}: {reason}")]
    UpstreamCa { path: PathBuf, reason: String },
    #[error("--{flag}: not a valid header value")]
    HeaderValue { flag: &'static str },
    #[error("--user {0}: no such user")]
    UnknownUser(String),
    #[error("--info-owner {0}: no such user")]
    UnknownInfoOwner(String),
    #[error("--allow-user {0}: no such user")]
    UnknownAllowUser(String),
    #[error("SUDO_UID is not a number")]
    BadSudoUid,
    #[error("--client-token needs --server-info (the token is handed over in that file)")]
    TokenWithoutServerInfo,
    #[error("--chatgpt-base-url: {0}")]
    ChatgptBaseUrl(String),
    #[error("--oauth-token-url: {0}")]
    OauthTokenUrl(String),
    #[error("--models {path}: {reason}")]
    Models { path: PathBuf, reason: String },
    #[error("--config {path}{}: {reason}", .line.map(|l| format!(": line {l}")).unwrap_or_default())]
    ConfigFile {
        path: PathBuf,
        line: Option<usize>,
        reason: String,
    },
    #[error("--auth-dir {path}: {reason}")]
    AuthDir { path: PathBuf, reason: String },
    #[error("--state-dir {path}: {reason}")]
    StateDir { path: PathBuf, reason: String },
    #[error("--{flag} must be at least 1")]
    Zero { flag: &'static str },
    #[error("--{flag} is too large")]
    TooLarge { flag: &'static str },
}

/// Where upstream requests go: `{scheme}://{authority}{base_path}{endpoint}?{query}`.
#[derive(Debug, Clone)]
pub struct UpstreamBase {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix without a trailing slash (e.g. `/v1`), possibly empty.
    pub base_path: String,
    /// Query string of the configured URL, kept on every request (Azure's `api-version`).
    pub query: Option<String>,
    /// The URIs of `/responses` and `/responses/compact`, built once: every forwarded request
    /// needs one, and a clone of a built `Uri` shares its bytes instead of allocating.
    built: [Uri; 5],
}

impl UpstreamBase {
    /// Parses `--upstream-url`: http(s) only, plain http only for loopback hosts, and a path
    /// ending in `/responses` means its parent.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        Self::parse_stripping(url, "/responses")
    }

    /// [`UpstreamBase::parse`] for an API whose main endpoint is `endpoint` (`/responses`,
    /// `/messages`): a path ending in it means its parent.
    pub fn parse_stripping(url: &str, endpoint: &str) -> Result<Self, ConfigError> {
        Self::parse_for(url, endpoint, false)
    }

    /// [`UpstreamBase::parse_stripping`]; `plain_http_anywhere` lifts the loopback rule for
    /// plain `http://` (a keyless provider that says `allow_plain_http = true`: no credential
    /// travels on it).
    pub fn parse_for(
        url: &str,
        endpoint: &str,
        plain_http_anywhere: bool,
    ) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::UpstreamUrl(why.to_string());
        let uri: Uri = url.parse().map_err(|_| bad("not a valid URL"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| bad("needs http:// or https://"))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("needs a host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not allowed"));
        }
        if scheme == Scheme::HTTP {
            if !plain_http_anywhere && !is_loopback_host(authority.host()) {
                return Err(bad(
                    "plain http:// is allowed only for loopback hosts; use https://",
                ));
            }
        } else if scheme != Scheme::HTTPS {
            return Err(bad("needs http:// or https://"));
        }
        let mut path = uri.path().trim_end_matches('/').to_string();
        if let Some(parent) = path.strip_suffix(endpoint) {
            path = parent.to_string();
        }
        let mut base = UpstreamBase {
            scheme,
            authority,
            base_path: path,
            query: uri.query().map(str::to_string),
            built: Default::default(),
        };
        base.built = BUILT_ENDPOINTS.map(|endpoint| base.build(endpoint));
        Ok(base)
    }

    /// The base URL as configured (without a `/responses` suffix), for the log.
    pub fn display(&self) -> String {
        let query = self
            .query
            .as_ref()
            .map_or(String::new(), |q| format!("?{q}"));
        format!(
            "{}://{}{}{query}",
            self.scheme, self.authority, self.base_path
        )
    }

    /// The full upstream URI for an endpoint such as `/responses`.
    pub fn uri(&self, endpoint: &str) -> Uri {
        match BUILT_ENDPOINTS.iter().position(|e| *e == endpoint) {
            Some(i) => self.built[i].clone(),
            None => self.build(endpoint),
        }
    }

    fn build(&self, endpoint: &str) -> Uri {
        let mut s = format!(
            "{}://{}{}{}",
            self.scheme, self.authority, self.base_path, endpoint
        );
        if let Some(q) = &self.query {
            s.push('?');
            s.push_str(q);
        }
        // Every part was validated by `parse`, and endpoints are fixed strings.
        s.parse()
            .unwrap_or_else(|_| Uri::from_static("http://127.0.0.1:9/invalid"))
    }
}

/// The endpoints whose URIs `UpstreamBase` builds once (see `UpstreamBase::uri`).
const BUILT_ENDPOINTS: [&str; 5] = [
    "/responses",
    "/responses/compact",
    "/messages",
    "/messages/count_tokens",
    "/chat/completions",
];

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// How to reach the upstream through a proxy.
#[derive(Debug, Clone)]
pub enum UpstreamProxy {
    /// HTTP CONNECT tunnel through this proxy.
    Connect(Uri),
    /// SOCKS5; `remote_dns` lets the proxy resolve names (`socks5h://`).
    Socks5 { uri: Uri, remote_dns: bool },
}

impl UpstreamProxy {
    fn parse(url: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::UpstreamProxy(why.to_string());
        let uri: Uri = url.parse().map_err(|_| bad("not a valid URL"))?;
        if uri.authority().is_none() {
            return Err(bad("needs a host and port"));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(bad(
                "credentials in the URL are not supported (they would be visible in argv)",
            ));
        }
        match uri.scheme_str() {
            Some("http") => Ok(UpstreamProxy::Connect(uri)),
            Some("socks5") => Ok(UpstreamProxy::Socks5 {
                uri,
                remote_dns: false,
            }),
            Some("socks5h") => Ok(UpstreamProxy::Socks5 {
                uri,
                remote_dns: true,
            }),
            _ => Err(bad("needs http://, socks5:// or socks5h://")),
        }
    }
}

/// Timeouts, all as durations.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub header: Duration,
    pub idle: Duration,
    pub request: Duration,
    pub drain: Duration,
    /// Whole request body read bound: always [`BODY_READ_TIMEOUT`] (no flag); a field so
    /// tests can shorten it.
    pub body_read: Duration,
}

/// Longest time a whole request body may take to arrive (then 408): a fixed limit, listed
/// in the README's "Fixed limits", so a trickling sender cannot hold its connection and
/// buffered bytes for as long as it likes.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Size, count and attempt limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_attempts: u32,
    pub max_body_bytes: usize,
    pub max_buffered_bytes: usize,
    pub max_connections: usize,
    pub max_stdin_bytes: usize,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// 0 means an ephemeral port.
    pub port: u16,
    pub server_info: Option<PathBuf>,
    pub http_shutdown: bool,
    pub upstream: UpstreamBase,
    /// Extra trust anchors from `--upstream-ca`.
    pub upstream_ca: Vec<CertificateDer<'static>>,
    pub upstream_proxy: Option<UpstreamProxy>,
    pub openai_organization: Option<HeaderValue>,
    pub openai_project: Option<HeaderValue>,
    pub drop_to: Option<DropTarget>,
    /// The Codex backend for ChatGPT accounts.
    pub chatgpt: UpstreamBase,
    /// The providers in routing order: the config file's, then the implicit `openai`
    /// (`--upstream-url`) and `chatgpt` (`--chatgpt-base-url`) unless the file replaced them.
    pub providers: Vec<crate::upstream::provider::ProviderConfig>,
    /// The OAuth token endpoint (full URL).
    pub oauth_token_url: Uri,
    pub auth_dir: Option<PathBuf>,
    pub auth_dir_interval: Duration,
    /// Known models, `--models` aliases, defaults and overrides.
    pub models: crate::translate::models::ModelTable,
    pub client_token: bool,
    /// Owner of a server-info file that holds a token.
    pub info_owner: Uid,
    /// Who may use the port (`--allow-user`, resolved to uids).
    pub access: crate::server::users::Access,
    /// Per-user policy from `--config` (resolved to uids).
    pub policies: crate::server::policy::PolicyTable,
    /// `--state-dir`, checked and read (usage and budgets to restore, and where to save them).
    pub state_dir: Option<std::sync::Arc<crate::server::state_dir::StateDir>>,
    /// The connection-owner lookup and usage accounting run (off only for scripts/bench).
    pub accounting: bool,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
}

/// The two providers that exist without a config file.
fn implicit_providers(
    upstream: &UpstreamBase,
    chatgpt: &UpstreamBase,
) -> Vec<crate::upstream::provider::ProviderConfig> {
    use crate::upstream::provider::{
        ProviderConfig, ProviderKind, IMPLICIT_CHATGPT, IMPLICIT_OPENAI,
    };
    let implicit = |name: &str, kind, base: &UpstreamBase| ProviderConfig {
        name: name.to_owned(),
        kind,
        base: base.clone(),
        models: Vec::new(),
        default: false,
        headers: Vec::new(),
        implicit: true,
        keyless: false,
        chat: Default::default(),
    };
    vec![
        implicit(IMPLICIT_OPENAI, ProviderKind::Openai, upstream),
        implicit(IMPLICIT_CHATGPT, ProviderKind::Chatgpt, chatgpt),
    ]
}

/// The file's providers, then each implicit one the file did not replace (by name).
fn in_routing_order(
    mut file: Vec<crate::upstream::provider::ProviderConfig>,
    implicit: Vec<crate::upstream::provider::ProviderConfig>,
) -> Vec<crate::upstream::provider::ProviderConfig> {
    for provider in implicit {
        if !file.iter().any(|p| p.name == provider.name) {
            file.push(provider);
        }
    }
    file
}

impl Config {
    /// Validates `args`. `sudo_uid` is the value of `SUDO_UID`, passed in so tests need no
    /// environment.
    pub fn from_args(args: Args, sudo_uid: Option<String>) -> Result<Self, ConfigError> {
        let upstream = UpstreamBase::parse(&args.upstream_url)?;
        let upstream_ca = match &args.upstream_ca {
            Some(path) => load_ca(path)?,
            None => Vec::new(),
        };
        let upstream_proxy = args
            .upstream_proxy
            .as_deref()
            .map(UpstreamProxy::parse)
            .transpose()?;
        let header = |flag: &'static str, v: &Option<String>| {
            v.as_deref()
                .map(|s| HeaderValue::from_str(s).map_err(|_| ConfigError::HeaderValue { flag }))
                .transpose()
        };
        let openai_organization = header("openai-organization", &args.openai_organization)?;
        let openai_project = header("openai-project", &args.openai_project)?;
        let drop_to = args.user.as_deref().map(resolve_drop_target).transpose()?;
        let chatgpt = UpstreamBase::parse(&args.chatgpt_base_url).map_err(|e| match e {
            ConfigError::UpstreamUrl(why) => ConfigError::ChatgptBaseUrl(why),
            other => other,
        })?;
        let oauth_token_url = match UpstreamBase::parse(&args.oauth_token_url) {
            Ok(_) => args
                .oauth_token_url
                .parse::<Uri>()
                .map_err(|_| ConfigError::OauthTokenUrl("not a valid URL".into()))?,
            Err(ConfigError::UpstreamUrl(why)) => return Err(ConfigError::OauthTokenUrl(why)),
            Err(other) => return Err(other),
        };
        let config_file = match &args.config {
            Some(path) => Some(load_config_file(path)?),
            None => None,
        };
        let models = match &args.models {
            // clap refuses --models with --config, so a file's table never meets --models.
            None => config_file.as_ref().map_or_else(
                crate::translate::models::ModelTable::builtin,
                |(_, file)| file.models.clone(),
            ),
            Some(path) => {
                let err = |reason: String| ConfigError::Models {
                    path: path.clone(),
                    reason,
                };
                let bytes = std::fs::read(path).map_err(|e| err(e.kind().to_string()))?;
                crate::translate::models::ModelTable::from_json(&bytes).map_err(err)?
            }
        };
        if let Some(dir) = &args.auth_dir {
            let owner = drop_to
                .as_ref()
                .map_or_else(crate::hardening::current_uid, |t| t.uid);
            crate::pool::auth_dir::check_dir(dir, owner).map_err(|reason| {
                ConfigError::AuthDir {
                    path: dir.clone(),
                    reason,
                }
            })?;
        }
        let state_dir = match &args.state_dir {
            None => None,
            Some(dir) => {
                let owner = drop_to
                    .as_ref()
                    .map_or_else(crate::hardening::current_uid, |t| t.uid);
                let opened =
                    crate::server::state_dir::StateDir::open(dir, owner).map_err(|reason| {
                        ConfigError::StateDir {
                            path: dir.clone(),
                            reason,
                        }
                    })?;
                Some(std::sync::Arc::new(opened))
            }
        };
        if args.client_token && args.server_info.is_none() {
            return Err(ConfigError::TokenWithoutServerInfo);
        }
        let info_owner = match (&args.info_owner, sudo_uid) {
            (Some(owner), _) => {
                resolve_uid(owner).ok_or_else(|| ConfigError::UnknownInfoOwner(owner.clone()))?
            }
            (None, Some(sudo)) => {
                Uid::from_raw(sudo.trim().parse().map_err(|_| ConfigError::BadSudoUid)?)
            }
            (None, None) => crate::hardening::current_uid(),
        };
        let access = if args.allow_users.is_empty() {
            crate::server::users::Access::everyone()
        } else {
            let uids = args
                .allow_users
                .iter()
                .map(|user| {
                    resolve_uid(user)
                        .map(Uid::as_raw)
                        .ok_or_else(|| ConfigError::UnknownAllowUser(user.clone()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            crate::server::users::Access::only(uids)
        };
        let (policies, file_providers) = match config_file {
            Some((policies, file)) => (policies, file.providers),
            None => Default::default(),
        };
        for (flag, value) in [
            ("max-body-bytes", args.max_body_bytes),
            ("max-buffered-bytes", args.max_buffered_bytes),
            ("max-connections", args.max_connections),
            ("max-stdin-bytes", args.max_stdin_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { flag });
            }
        }
        if args.max_stdin_bytes > 1 << 30 {
            return Err(ConfigError::TooLarge {
                flag: "max-stdin-bytes",
            });
        }
        let providers = in_routing_order(file_providers, implicit_providers(&upstream, &chatgpt));
        let secs = Duration::from_secs_f64;
        Ok(Config {
            port: args.port.unwrap_or(0),
            server_info: args.server_info,
            http_shutdown: args.http_shutdown,
            upstream,
            upstream_ca,
            upstream_proxy,
            openai_organization,
            openai_project,
            drop_to,
            chatgpt,
            providers,
            oauth_token_url,
            auth_dir: args.auth_dir,
            auth_dir_interval: Duration::from_secs_f64(args.auth_dir_interval.max(0.05)),
            models,
            client_token: args.client_token,
            info_owner,
            access,
            policies,
            state_dir,
            accounting: !args.bench_accounting_off,
            timeouts: Timeouts {
                connect: secs(args.connect_timeout),
                header: secs(args.header_timeout),
                idle: secs(args.idle_timeout),
                request: secs(args.request_timeout),
                drain: secs(args.drain_timeout),
                body_read: BODY_READ_TIMEOUT,
            },
            limits: Limits {
                max_attempts: args.max_attempts,
                max_body_bytes: args.max_body_bytes,
                max_buffered_bytes: args.max_buffered_bytes,
                max_connections: args.max_connections,
                max_stdin_bytes: args.max_stdin_bytes,
            },
            log_level: args.log_level,
            log_format: args.log_format,
        })
    }
}

fn load_ca(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let err = |reason: String| ConfigError::UpstreamCa {
        path: path.clone(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.kind().to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| err("not a valid PEM certificate file".to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate found".to_string()));
    }
    // Parse each as a trust anchor now, so a bad one is a configuration error (exit 2).
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots
            .add(cert.clone())
            .map_err(|e| err(format!("not usable as a trust anchor: {e}")))?;
    }
    Ok(certs)
}

/// Reads the `--config` file and resolves its `[users]` sections to uids (names at start: a
/// user deleted later keeps the uid it had).
fn load_config_file(
    path: &PathBuf,
) -> Result<(crate::server::policy::PolicyTable, file::ConfigFile), ConfigError> {
    let err = |line: Option<usize>, reason: String| ConfigError::ConfigFile {
        path: path.clone(),
        line,
        reason,
    };
    let bytes = read_bounded(path, file::MAX_CONFIG_BYTES).map_err(|reason| err(None, reason))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| err(None, "not UTF-8 text".into()))?;
    let parsed = file::parse(text).map_err(|e| err(e.line, e.reason))?;
    let mut table = crate::server::policy::PolicyTable::default();
    for section in &parsed.users {
        let uid = if section.name == "*" {
            None
        } else {
            Some(resolve_uid(&section.name).map(Uid::as_raw).ok_or_else(|| {
                err(
                    Some(section.line),
                    format!("[users.{}]: no such user", section.name),
                )
            })?)
        };
        if table.contains(uid) {
            return Err(err(
                Some(section.line),
                format!(
                    "[users.{}]: another section already names this user (by name or uid)",
                    section.name
                ),
            ));
        }
        table.insert(uid, section.policy.clone());
    }
    Ok((table, parsed))
}

/// Reads at most `max` bytes of `path` (more: an error, not a truncated read).
fn read_bounded(path: &PathBuf, max: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.kind().to_string())?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.kind().to_string())?;
    if bytes.len() > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(bytes)
}

fn resolve_drop_target(name: &str) -> Result<DropTarget, ConfigError> {
    match User::from_name(name) {
        Ok(Some(user)) => Ok(DropTarget {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
        }),
        _ => Err(ConfigError::UnknownUser(name.to_string())),
    }
}

/// A user name or a numeric uid.
fn resolve_uid(user: &str) -> Option<Uid> {
    if let Ok(raw) = user.parse::<u32>() {
        return Some(Uid::from_raw(raw));
    }
    User::from_name(user).ok().flatten().map(|u| u.uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["codex-proxy"];
        argv.extend_from_slice(extra);
        Config::from_args(Args::try_parse_from(argv).unwrap(), None)
    }

    #[test]
    fn responses_url_means_its_parent_and_keeps_the_query() {
        let base = UpstreamBase::parse(
            "https://x.openai.azure.com/openai/deployments/d/responses?api-version=2025-04-01-preview",
        )
        .unwrap();
        assert_eq!(
            base.uri("/responses").to_string(),
            "https://x.openai.azure.com/openai/deployments/d/responses?api-version=2025-04-01-preview"
        );
        assert_eq!(
            base.uri("/responses/compact").to_string(),
            "https://x.openai.azure.com/openai/deployments/d/responses/compact?api-version=2025-04-01-preview"
        );
        let base = UpstreamBase::parse("https://api.openai.com/v1/").unwrap();
        assert_eq!(
            base.uri("/responses").to_string(),
            "https://api.openai.com/v1/responses"
        );
    }

    #[test]
    fn plain_http_only_for_loopback() {
        assert!(UpstreamBase::parse("http://127.0.0.1:8080/v1").is_ok());
        assert!(UpstreamBase::parse("http://127.5.5.5/v1").is_ok());
        assert!(UpstreamBase::parse("http://localhost:1/v1").is_ok());
        assert!(UpstreamBase::parse("http://[::1]:1/v1").is_ok());
        assert!(UpstreamBase::parse("http://api.openai.com/v1").is_err());
        assert!(UpstreamBase::parse("http://10.0.0.1/v1").is_err());
        assert!(UpstreamBase::parse("ftp://127.0.0.1/v1").is_err());
        assert!(UpstreamBase::parse("https://user:pw@api.openai.com/v1").is_err());
    }

    #[test]
    fn client_token_needs_server_info() {
        assert!(matches!(
            config(&["--client-token"]),
            Err(ConfigError::TokenWithoutServerInfo)
        ));
        assert!(config(&["--client-token", "--server-info", "/tmp/x.json"]).is_ok());
    }

    #[test]
    fn unknown_user_and_unreadable_ca_are_config_errors() {
        assert!(matches!(
            config(&["--user", "no-such-user-xyz"]),
            Err(ConfigError::UnknownUser(_))
        ));
        assert!(matches!(
            config(&["--upstream-ca", "/nonexistent/ca.pem"]),
            Err(ConfigError::UpstreamCa { .. })
        ));
    }

    #[test]
    fn allow_user_takes_names_and_uids_and_refuses_unknown_names() {
        use crate::server::peer::Caller;
        let c = config(&["--allow-user", "root", "--allow-user", "4242"]).unwrap();
        let caller = |uid| Caller { uid, name: None };
        assert!(c.access.admits(Some(&caller(0))).is_ok());
        assert!(c.access.admits(Some(&caller(4242))).is_ok());
        assert!(c.access.admits(Some(&caller(4243))).is_err());
        assert!(c.access.admits(None).is_err());
        assert!(!config(&[]).unwrap().access.is_restricted());
        assert!(matches!(
            config(&["--allow-user", "root", "--allow-user", "no-such-user-xyz"]),
            Err(ConfigError::UnknownAllowUser(name)) if name == "no-such-user-xyz"
        ));
    }

    /// Writes `text` to a fresh file under the temp dir and returns its path.
    fn config_file(tag: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "codex-proxy-config-{tag}-{}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn config_users_resolve_names_and_uids_and_star_covers_the_rest() {
        use crate::server::peer::Caller;
        let path = config_file(
            "ok",
            "[users.root]\nmodels = [\"gpt-5*\"]\n[users.4242]\nmax_concurrent = 1\n\
             [users.\"*\"]\nmax_concurrent = 9\n",
        );
        let c = config(&["--config", path.to_str().unwrap()]).unwrap();
        let caller = |uid| Caller { uid, name: None };
        let root = c.policies.for_caller(Some(&caller(0))).unwrap();
        assert!(root.allows_model(Some("gpt-5.4")) && !root.allows_model(Some("o3")));
        assert_eq!(root.max_concurrent, None);
        let uid = c.policies.for_caller(Some(&caller(4242))).unwrap();
        assert_eq!(uid.max_concurrent, Some(1));
        let rest = c.policies.for_caller(Some(&caller(4243))).unwrap();
        assert_eq!(rest.max_concurrent, Some(9));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn config_errors_name_the_file_and_line() {
        let path = config_file("unknown-user", "\n[users.no-such-user-xyz]\nmodels = []\n");
        let e = config(&["--config", path.to_str().unwrap()]).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "--config {}: line 2: [users.no-such-user-xyz]: no such user",
                path.display()
            )
        );
        std::fs::write(&path, "[users.root]\nmax_concurrent = 1\n[users.0]\n").unwrap();
        let e = config(&["--config", path.to_str().unwrap()]).err().unwrap();
        assert!(
            e.to_string().contains("line 3: [users.0]: another section"),
            "{e}"
        );
        std::fs::write(&path, "[users.root]\nmodel = [\"x\"]\n").unwrap();
        let e = config(&["--config", path.to_str().unwrap()]).err().unwrap();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("--config {}: line 2: ", path.display())),
            "{text}"
        );
        assert!(text.contains("unknown field `model`"), "{text}");
        std::fs::remove_file(&path).unwrap();
        let e = config(&["--config", "/nonexistent/policy.toml"])
            .err()
            .unwrap();
        assert!(
            matches!(e, ConfigError::ConfigFile { line: None, .. }),
            "{e}"
        );
    }

    #[test]
    fn file_providers_come_first_and_replace_implicit_ones_of_their_name() {
        let names = |c: &Config| {
            c.providers
                .iter()
                .map(|p| (p.name.clone(), p.kind.name(), p.implicit, p.base.display()))
                .collect::<Vec<_>>()
        };
        let plain = config(&["--upstream-url", "http://127.0.0.1:9/v1"]).unwrap();
        assert_eq!(
            names(&plain),
            [
                (
                    "openai".into(),
                    "openai",
                    true,
                    "http://127.0.0.1:9/v1".into()
                ),
                (
                    "chatgpt".into(),
                    "chatgpt",
                    true,
                    "https://chatgpt.com/backend-api/codex".into()
                )
            ]
        );
        let path = config_file(
            "providers",
            "[providers.claude]\nkind = \"anthropic\"\nmodels = [\"claude-*\"]\n\n\
             [providers.openai]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:7/v1\"\n\
             models = [\"gpt-*\"]\n\n[aliases]\n\"fast\" = \"gpt-5.4-low\"\n",
        );
        let c = config(&[
            "--upstream-url",
            "http://127.0.0.1:9/v1",
            "--config",
            path.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(
            names(&c),
            [
                (
                    "claude".into(),
                    "anthropic",
                    false,
                    "https://api.anthropic.com/v1".into()
                ),
                (
                    "openai".into(),
                    "openai",
                    false,
                    "http://127.0.0.1:7/v1".into()
                ),
                (
                    "chatgpt".into(),
                    "chatgpt",
                    true,
                    "https://chatgpt.com/backend-api/codex".into()
                )
            ]
        );
        assert_eq!(c.models.resolve("fast").unwrap().upstream_model, "gpt-5.4");
        assert!(plain.models.resolve("fast").unwrap().effort.is_none());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn config_and_models_together_are_a_usage_error() {
        let e = Args::try_parse_from(["codex-proxy", "--config", "a.toml", "--models", "m.json"])
            .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn proxy_urls_are_parsed_by_scheme() {
        assert!(matches!(
            config(&["--upstream-proxy", "http://127.0.0.1:3128"])
                .unwrap()
                .upstream_proxy,
            Some(UpstreamProxy::Connect(_))
        ));
        assert!(matches!(
            config(&["--upstream-proxy", "socks5h://127.0.0.1:1080"])
                .unwrap()
                .upstream_proxy,
            Some(UpstreamProxy::Socks5 {
                remote_dns: true,
                ..
            })
        ));
        assert!(config(&["--upstream-proxy", "https://p:1"]).is_err());
    }

    #[test]
    fn info_owner_defaults_to_sudo_uid() {
        let args = Args::try_parse_from(["codex-proxy"]).unwrap();
        let config = Config::from_args(args, Some("1234".into())).unwrap();
        assert_eq!(config.info_owner, Uid::from_raw(1234));
    }
}
