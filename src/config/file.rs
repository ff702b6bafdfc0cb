//! The `--config` file (TOML): read once at start, every unknown key an error naming the file,
//! the line and the key (exit 2).
//!
//! | section | keys |
//! | --- | --- |
//! | `[providers.NAME]` | `kind` (`openai`, `chatgpt`, `anthropic`, `chat`), `base_url`, `models` (globs), `default`, `headers`; for `chat`: `keyless`, `allow_plain_http`, `reasoning_effort`, `max_completion_tokens` |
//! | `[models."NAME"]` | the `--models` JSON file's per-model keys ([`crate::translate::models`]) |
//! | `[aliases]` | `"requested" = "target"`, as in the `--models` file |
//! | `[users.NAME]`, `[users."*"]` | `models` (globs), `max_concurrent`, `token_budget` with `budget_window` |
//!
//! Providers keep file order (routing tries them in that order). A provider's `base_url` is
//! checked like `--upstream-url` (plain `http://` only for a loopback host, so a key never
//! travels in plaintext off the machine); a path ending in the kind's main endpoint
//! (`/responses`, or `/messages` for `anthropic`) means its parent. `headers` are fixed extra
//! request headers; credential, hop-by-hop and framing headers, and any header the proxy
//! sets itself, are refused, since a fixed header must never carry a secret in a file or
//! change how a request is framed.
//!
//! The `chat` kind (Chat Completions servers) has no default `base_url` (it is required; a
//! path ending in `/chat/completions` means its parent). `keyless = true` makes a provider
//! that takes no credential and sends no `Authorization`; `allow_plain_http = true` lets a
//! keyless provider use plain `http://` to a host other than loopback (a model server on the
//! LAN). Both keys belong to the `chat` kind only, and `allow_plain_http` needs `keyless`: a
//! key never travels in plaintext off the machine.

use std::collections::BTreeMap;
use std::ops::Range;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use toml::Spanned;

use super::UpstreamBase;
use crate::glob::Glob;
use crate::server::policy::{Budget, BudgetWindow, UserPolicy};
use crate::translate::models::{ModelSpec, ModelTable, ModelsSpec, SpecKey};
use crate::upstream::provider::{ProviderConfig, ProviderKind};

/// The largest `--config` file read, in bytes (a policy file is a few lines).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// The longest provider name: it appears in log lines, metric labels and `/health`.
const MAX_PROVIDER_NAME: usize = 64;

/// Fixed headers refused besides those a client could not send either
/// ([`crate::upstream::headers::forward_request_header`]): other APIs' credential headers
/// (Azure's `api-key`, Google's `x-goog-api-key`), the ChatGPT account selector, and the
/// body's framing, which the proxy sets.
const REFUSED_FIXED_HEADERS: &[&str] = &[
    "api-key",
    "x-goog-api-key",
    "chatgpt-account-id",
    "content-type",
    "content-encoding",
];

/// A problem with the file's contents: what, and on which line (1-based) if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub line: Option<usize>,
    pub reason: String,
}

/// One `[users.NAME]` section as written: the name (a user name, a uid, or `*`), its line,
/// and its policy.
#[derive(Debug, Clone)]
pub struct UserSection {
    pub name: String,
    pub line: usize,
    pub policy: UserPolicy,
}

/// The file's contents, validated.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// In file order.
    pub users: Vec<UserSection>,
    /// `[providers.*]` in file order (routing order).
    pub providers: Vec<ProviderConfig>,
    /// The built-in model table plus `[models.*]` and `[aliases]`.
    pub models: ModelTable,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    users: BTreeMap<String, Spanned<RawUser>>,
    #[serde(default)]
    providers: BTreeMap<String, Spanned<RawProvider>>,
    #[serde(default)]
    models: BTreeMap<String, Spanned<ModelSpec>>,
    #[serde(default)]
    aliases: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    models: Option<Vec<Spanned<String>>>,
    max_concurrent: Option<Spanned<u32>>,
    token_budget: Option<Spanned<u64>>,
    budget_window: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    kind: Spanned<String>,
    base_url: Option<Spanned<String>>,
    models: Option<Vec<Spanned<String>>>,
    default: Option<Spanned<bool>>,
    headers: Option<BTreeMap<String, Spanned<String>>>,
    // Keys of the `chat` kind only.
    keyless: Option<Spanned<bool>>,
    allow_plain_http: Option<Spanned<bool>>,
    reasoning_effort: Option<Spanned<bool>>,
    max_completion_tokens: Option<Spanned<bool>>,
}

/// Parses and validates the text of a `--config` file.
pub fn parse(text: &str) -> Result<ConfigFile, FileError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| FileError {
        line: e.span().map(|s| line_at(text, s.start)),
        reason: e.message().trim().to_string(),
    })?;
    let providers = parse_providers(text, raw.providers)?;
    let models = parse_models(text, raw.models, raw.aliases)?;
    let users = parse_users(text, raw.users)?;
    Ok(ConfigFile {
        users,
        providers,
        models,
    })
}

fn parse_users(
    text: &str,
    sections: BTreeMap<String, Spanned<RawUser>>,
) -> Result<Vec<UserSection>, FileError> {
    let line_of = |span: Range<usize>| line_at(text, span.start);
    let mut users = Vec::with_capacity(sections.len());
    for (name, section) in sections {
        let line = line_of(section.span());
        let raw = section.into_inner();
        if name.is_empty() {
            return Err(FileError {
                line: Some(line),
                reason: "[users.\"\"]: a user name, a uid or \"*\" is needed".into(),
            });
        }
        let models = raw
            .models
            .map(|patterns| {
                patterns
                    .into_iter()
                    .map(|p| {
                        let span = p.span();
                        Glob::new(p.get_ref()).map_err(|e| FileError {
                            line: Some(line_of(span)),
                            reason: format!("users.{name}.models: {e}"),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let max_concurrent = match raw.max_concurrent {
            Some(n) if *n.get_ref() == 0 => {
                return Err(FileError {
                    line: Some(line_of(n.span())),
                    reason: format!("users.{name}.max_concurrent must be at least 1"),
                })
            }
            Some(n) => Some(n.into_inner()),
            None => None,
        };
        let budget = match (raw.token_budget, raw.budget_window) {
            (None, None) => None,
            (Some(tokens), None) => {
                return Err(FileError {
                    line: Some(line_of(tokens.span())),
                    reason: format!(
                        "users.{name}: `token_budget` needs `budget_window` (\"1h\", \"1d\", \
                         \"7d\" or \"30d\")"
                    ),
                })
            }
            (None, Some(window)) => {
                return Err(FileError {
                    line: Some(line_of(window.span())),
                    reason: format!("users.{name}: `budget_window` needs `token_budget`"),
                })
            }
            (Some(tokens), Some(window)) => {
                if *tokens.get_ref() == 0 {
                    return Err(FileError {
                        line: Some(line_of(tokens.span())),
                        reason: format!("users.{name}.token_budget must be at least 1"),
                    });
                }
                let span = window.span();
                let Some(window) = BudgetWindow::parse(window.get_ref()) else {
                    return Err(FileError {
                        line: Some(line_of(span)),
                        reason: format!(
                            "users.{name}.budget_window must be \"1h\", \"1d\", \"7d\" or \
                             \"30d\""
                        ),
                    });
                };
                Some(Budget {
                    tokens: tokens.into_inner(),
                    window,
                })
            }
        };
        users.push(UserSection {
            name,
            line,
            policy: UserPolicy {
                models,
                max_concurrent,
                budget,
            },
        });
    }
    // File order, so a later duplicate is the one reported.
    users.sort_by_key(|u| u.line);
    Ok(users)
}

/// Whether `name` is usable as a provider name: it is shown in logs, metric labels, `/health`
/// and named by credentials on stdin, so it is short and plain.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PROVIDER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn parse_providers(
    text: &str,
    sections: BTreeMap<String, Spanned<RawProvider>>,
) -> Result<Vec<ProviderConfig>, FileError> {
    let line_of = |span: Range<usize>| line_at(text, span.start);
    let mut sections: Vec<_> = sections.into_iter().collect();
    sections.sort_by_key(|(_, section)| section.span().start);
    let mut providers = Vec::with_capacity(sections.len());
    // The provider that has `default = true`, if any.
    let mut default: Option<String> = None;
    for (name, section) in sections {
        let section_line = line_of(section.span());
        let raw = section.into_inner();
        let at = |span: Range<usize>, key: &str, reason: String| FileError {
            line: Some(line_of(span)),
            reason: format!("providers.{name}.{key}: {reason}"),
        };
        if !plain_name(&name) {
            return Err(FileError {
                line: Some(section_line),
                reason: format!(
                    "[providers.\"{}\"]: a provider name is 1 to {MAX_PROVIDER_NAME} letters, \
                     digits, `-`, `_` or `.`",
                    name.escape_default()
                ),
            });
        }
        let kind = ProviderKind::from_name(raw.kind.get_ref()).ok_or_else(|| {
            at(
                raw.kind.span(),
                "kind",
                format!(
                    "unknown kind {:?}; one of \"openai\", \"chatgpt\", \"anthropic\", \"chat\"",
                    raw.kind.get_ref().escape_default().to_string()
                ),
            )
        })?;
        if kind != ProviderKind::Chat {
            for (key, span) in [
                ("keyless", raw.keyless.as_ref().map(Spanned::span)),
                (
                    "allow_plain_http",
                    raw.allow_plain_http.as_ref().map(Spanned::span),
                ),
                (
                    "reasoning_effort",
                    raw.reasoning_effort.as_ref().map(Spanned::span),
                ),
                (
                    "max_completion_tokens",
                    raw.max_completion_tokens.as_ref().map(Spanned::span),
                ),
            ] {
                if let Some(span) = span {
                    return Err(at(
                        span,
                        key,
                        format!("only for kind = \"chat\", not \"{}\"", kind.name()),
                    ));
                }
            }
        }
        let keyless = raw.keyless.as_ref().is_some_and(|k| *k.get_ref());
        let plain_http =
            match &raw.allow_plain_http {
                Some(flag) if *flag.get_ref() && !keyless => return Err(at(
                    flag.span(),
                    "allow_plain_http",
                    "only with keyless = true: a key never travels in plaintext off the machine"
                        .into(),
                )),
                Some(flag) => *flag.get_ref(),
                None => false,
            };
        let base = match (&raw.base_url, kind.default_base_url()) {
            (Some(url), _) => {
                UpstreamBase::parse_for(url.get_ref(), main_endpoint(kind), plain_http).map_err(
                    |e| {
                        let why = match e {
                            super::ConfigError::UpstreamUrl(why) if !plain_http && !keyless => why,
                            super::ConfigError::UpstreamUrl(why) => why.replace(
                                "; use https://",
                                "; use https://, or allow_plain_http = true on a keyless provider",
                            ),
                            other => other.to_string(),
                        };
                        at(url.span(), "base_url", why)
                    },
                )?
            }
            (None, Some(default)) => UpstreamBase::parse(default).map_err(|e| FileError {
                line: Some(section_line),
                reason: format!("providers.{name}: the default base URL: {e}"),
            })?,
            (None, None) => {
                return Err(FileError {
                    line: Some(section_line),
                    reason: format!(
                        "providers.{name}: kind = \"{}\" needs a base_url (e.g. \
                         \"http://127.0.0.1:8080/v1\")",
                        kind.name()
                    ),
                })
            }
        };
        let models = raw
            .models
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let span = p.span();
                Glob::new(p.get_ref()).map_err(|e| at(span, "models", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let is_default = raw.default.as_ref().is_some_and(|d| *d.get_ref());
        if let (Some(flag), true) = (&raw.default, is_default) {
            if let Some(first) = &default {
                return Err(at(
                    flag.span(),
                    "default",
                    format!("only one provider can be the default, and providers.{first} is"),
                ));
            }
            default = Some(name.clone());
        }
        if models.is_empty() && !is_default {
            return Err(FileError {
                line: Some(section_line),
                reason: format!(
                    "providers.{name}: serves no model; give it `models` globs or `default = true`"
                ),
            });
        }
        let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
        for (header, value) in raw.headers.unwrap_or_default() {
            let span = value.span();
            let key = format!("headers.{header}");
            let header_name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| at(span.clone(), &key, "not a valid header name".into()))?;
            if refused_fixed_header(&header_name) {
                return Err(at(
                    span,
                    &key,
                    "not allowed as a fixed header (credentials, hop-by-hop and framing \
                     headers, and those the proxy sets, are refused)"
                        .into(),
                ));
            }
            if headers.iter().any(|(n, _)| *n == header_name) {
                return Err(at(
                    span,
                    &key,
                    "given twice (header names ignore case)".into(),
                ));
            }
            let header_value = HeaderValue::from_str(value.get_ref())
                .map_err(|_| at(span, &key, "not a valid header value".into()))?;
            headers.push((header_name, header_value));
        }
        providers.push(ProviderConfig {
            name,
            kind,
            base,
            models,
            default: is_default,
            headers,
            implicit: false,
            keyless,
            chat: crate::upstream::provider::ChatServer {
                reasoning_effort: raw.reasoning_effort.as_ref().is_some_and(|f| *f.get_ref()),
                max_completion_tokens: raw
                    .max_completion_tokens
                    .as_ref()
                    .is_some_and(|f| *f.get_ref()),
            },
        });
    }
    Ok(providers)
}

/// The endpoint a kind's requests end in, so a `base_url` written with it means its parent.
fn main_endpoint(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai | ProviderKind::Chatgpt => "/responses",
        ProviderKind::Anthropic => "/messages",
        ProviderKind::Chat => "/chat/completions",
    }
}

/// Whether `value` holds a TOML date or time (which serde hands over as a marked object).
fn has_datetime(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Object(map) => {
            map.contains_key("$__toml_private_datetime") || map.values().any(has_datetime)
        }
        serde_json::Value::Array(items) => items.iter().any(has_datetime),
        _ => false,
    }
}

/// Whether `name` may not be a provider's fixed header.
fn refused_fixed_header(name: &HeaderName) -> bool {
    !crate::upstream::headers::forward_request_header(&HeaderMap::new(), name)
        || REFUSED_FIXED_HEADERS.contains(&name.as_str())
}

/// `[models.*]` and `[aliases]` through the same checks as a `--models` file.
fn parse_models(
    text: &str,
    models: BTreeMap<String, Spanned<ModelSpec>>,
    aliases: BTreeMap<String, Spanned<String>>,
) -> Result<ModelTable, FileError> {
    let mut lines: BTreeMap<String, usize> = BTreeMap::new();
    let mut alias_lines: BTreeMap<String, usize> = BTreeMap::new();
    let mut spec = ModelsSpec::default();
    for (name, model) in models {
        let line = line_at(text, model.span().start);
        if let Some(key) = model
            .get_ref()
            .params
            .iter()
            .find_map(|(key, value)| has_datetime(value).then_some(key))
        {
            return Err(FileError {
                line: Some(line),
                reason: format!(
                    "[models.{name:?}]: models.{name}.params.{key}: a TOML date or time has no \
                     JSON form; write it as a string"
                ),
            });
        }
        lines.insert(name.clone(), line);
        spec.models.insert(name, model.into_inner());
    }
    for (alias, target) in aliases {
        alias_lines.insert(alias.clone(), line_at(text, target.span().start));
        spec.aliases.insert(alias, target.into_inner());
    }
    ModelTable::from_spec(spec).map_err(|e| {
        let (line, prefix) = match &e.key {
            SpecKey::Model(name) => (lines.get(name), format!("[models.{name:?}]")),
            SpecKey::Alias(alias) => (alias_lines.get(alias), "[aliases]".to_owned()),
        };
        FileError {
            line: line.copied(),
            reason: format!("{prefix}: {}", e.reason),
        }
    })
}

/// The 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> FileError {
        parse(text).expect_err("should be refused")
    }

    #[test]
    fn users_sections_with_models_and_max_concurrent_are_read() {
        let file = parse(
            "[users.alice]\nmodels = [\"gpt-5*\", \"o[0-9]*\"]\nmax_concurrent = 2\n\n\
             [users.\"*\"]\nmax_concurrent = 4\n\n[users.1001]\n",
        )
        .unwrap();
        let names: Vec<_> = file.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["alice", "*", "1001"]);
        let alice = &file.users[0];
        assert_eq!(alice.line, 1);
        assert_eq!(alice.policy.max_concurrent, Some(2));
        let globs: Vec<_> = alice
            .policy
            .models
            .as_ref()
            .unwrap()
            .iter()
            .map(|g| g.as_str())
            .collect();
        assert_eq!(globs, ["gpt-5*", "o[0-9]*"]);
        assert_eq!(file.users[1].policy.max_concurrent, Some(4));
        assert!(file.users[1].policy.models.is_none());
        assert!(
            file.users[2].policy.models.is_none() && file.users[2].policy.max_concurrent.is_none()
        );
        assert!(parse("").unwrap().users.is_empty());
    }

    #[test]
    fn an_unknown_key_names_its_line_and_the_key() {
        let e = err("[users.alice]\nmodels = [\"gpt-5\"]\nmax_concurent = 2\n");
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("max_concurent"), "{}", e.reason);
        let e = err("# policy\n\nlisten = 1\n");
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("listen"), "{}", e.reason);
    }

    /// One provider as (name, kind, base, globs, default, headers).
    type Shown = (String, &'static str, String, Vec<String>, bool, Vec<String>);

    /// The providers of `text`, shown.
    fn providers(text: &str) -> Vec<Shown> {
        parse(text)
            .unwrap()
            .providers
            .iter()
            .map(|p| {
                assert!(!p.implicit);
                (
                    p.name.clone(),
                    p.kind.name(),
                    p.base.display(),
                    p.models.iter().map(|g| g.as_str().to_owned()).collect(),
                    p.default,
                    p.headers
                        .iter()
                        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn providers_are_read_in_file_order_with_their_kind_base_globs_default_and_headers() {
        let got = providers(
            "[providers.openai]\nkind = \"openai\"\nmodels = [\"gpt-*\", \"o[0-9]*\"]\n\n\
             [providers.claude]\nkind = \"anthropic\"\nmodels = [\"claude-*\"]\n\n\
             [providers.router]\nkind = \"openai\"\nbase_url = \"https://openrouter.ai/api/v1/\"\n\
             models = [\"*/*\"]\nheaders = { \"HTTP-Referer\" = \"https://example.org\", \
             \"X-Title\" = \"codex-proxy\" }\n\n\
             [providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:11434/v1/responses\"\n\
             default = true\n\n\
             [providers.team]\nkind = \"chatgpt\"\nmodels = [\"gpt-5-codex*\"]\n",
        );
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                (
                    "openai".into(),
                    "openai",
                    "https://api.openai.com/v1".into(),
                    strings(&["gpt-*", "o[0-9]*"]),
                    false,
                    vec![]
                ),
                (
                    "claude".into(),
                    "anthropic",
                    "https://api.anthropic.com/v1".into(),
                    strings(&["claude-*"]),
                    false,
                    vec![]
                ),
                (
                    "router".into(),
                    "openai",
                    "https://openrouter.ai/api/v1".into(),
                    strings(&["*/*"]),
                    false,
                    strings(&["http-referer: https://example.org", "x-title: codex-proxy"])
                ),
                (
                    "local".into(),
                    "openai",
                    "http://127.0.0.1:11434/v1".into(),
                    vec![],
                    true,
                    vec![]
                ),
                (
                    "team".into(),
                    "chatgpt",
                    "https://chatgpt.com/backend-api/codex".into(),
                    strings(&["gpt-5-codex*"]),
                    false,
                    vec![]
                ),
            ]
        );
        // An Anthropic base written with its endpoint means its parent; the query is kept.
        let got = providers(
            "[providers.c]\nkind = \"anthropic\"\nbase_url = \"http://localhost:9/v1/messages?x=1\"\n\
             models = [\"claude-*\"]\n",
        );
        assert_eq!(got[0].2, "http://localhost:9/v1?x=1");
        assert!(parse("").unwrap().providers.is_empty());
    }

    /// The README's provider example: the first TOML block after "## Providers".
    fn readme_providers_example() -> String {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let section = &readme[readme.find("\n## Providers\n").unwrap()..];
        let block = &section[section.find("```toml\n").unwrap() + "```toml\n".len()..];
        block[..block.find("```").unwrap()].to_owned()
    }

    #[test]
    fn the_readme_providers_example_is_read_as_it_says() {
        let example = readme_providers_example();
        let got = providers(&example);
        let shown: Vec<_> = got
            .iter()
            .map(|(name, kind, base, globs, default, _)| {
                (
                    name.as_str(),
                    *kind,
                    base.as_str(),
                    globs.join(" "),
                    *default,
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "openai",
                    "openai",
                    "https://api.openai.com/v1",
                    "gpt-* o[0-9]* codex-*".to_owned(),
                    false
                ),
                (
                    "claude",
                    "anthropic",
                    "https://api.anthropic.com/v1",
                    "claude-*".to_owned(),
                    false
                ),
                (
                    "local",
                    "openai",
                    "http://127.0.0.1:11434/v1",
                    "qwen3-coder*".to_owned(),
                    false
                ),
            ]
        );
        // The section's key lines name exactly these providers, and its Codex settings reach
        // the proxy's base URL over the Responses wire.
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let section = &readme[readme.find("\n## Providers\n").unwrap()..];
        let section = &section[..section[1..].find("\n## ").unwrap() + 1];
        let named: Vec<String> = section
            .lines()
            .filter(|l| l.starts_with("{\"provider\""))
            .map(|l| {
                let account: serde_json::Value = serde_json::from_str(l).unwrap();
                assert!(account["api_key"].is_string(), "{l}");
                account["provider"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(named, ["openai", "claude", "local"]);
        let codex = &section[section.find("model_provider = ").unwrap()..];
        let codex: toml::Table = toml::from_str(&codex[..codex.find("```").unwrap()]).unwrap();
        assert_eq!(codex["model_provider"].as_str(), Some("proxy"));
        let proxy = &codex["model_providers"]["proxy"];
        assert_eq!(proxy["base_url"].as_str(), Some("http://127.0.0.1:8787/v1"));
        assert_eq!(proxy["wire_api"].as_str(), Some("responses"));
        assert!(section.contains("ANTHROPIC_BASE_URL=http://127.0.0.1:8787 "));

        let models = parse(&example).unwrap().models;
        let local = models.resolve("local-coder").unwrap();
        assert_eq!(local.upstream_model, "qwen3-coder");
        assert_eq!(local.think, crate::translate::think::ThinkMode::Strip);
        assert_eq!(local.params["temperature"], 0.7);
    }

    #[test]
    fn the_readme_local_models_example_is_read_as_it_says() {
        use crate::translate::think::ThinkMode;
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let section = &readme[readme.find("\n## Local models\n").unwrap()..];
        let section = &section[..section[1..].find("\n## ").unwrap() + 1];
        let block = &section[section.find("```toml\n").unwrap() + "```toml\n".len()..];
        let file = parse(&block[..block.find("```").unwrap()]).unwrap();
        let shown: Vec<_> = file
            .providers
            .iter()
            .map(|p| (p.name.as_str(), p.kind, p.base.display(), p.keyless))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "llamacpp",
                    ProviderKind::Chat,
                    "http://127.0.0.1:8080/v1".to_owned(),
                    true
                ),
                (
                    "vllm",
                    ProviderKind::Chat,
                    "http://127.0.0.1:8000/v1".to_owned(),
                    true
                ),
                (
                    "ollama",
                    ProviderKind::Chat,
                    "http://192.168.1.20:11434/v1".to_owned(),
                    true
                ),
            ]
        );
        let serves =
            |i: usize, model: &str| file.providers[i].models.iter().any(|g| g.matches(model));
        assert!(serves(0, "qwen3-coder") && serves(1, "Qwen/Qwen3-32B"));
        assert!(serves(2, "deepseek-r1:32b") && serves(2, "llama3.3"));
        let r1 = file.models.resolve("deepseek-r1:32b").unwrap();
        assert_eq!(r1.think, ThinkMode::Reasoning);
        assert_eq!(
            serde_json::Value::Object(r1.params),
            serde_json::json!({"temperature": 0.6, "top_p": 0.95, "top_k": 20})
        );
        // Claude Code's models and the short name reach the llama.cpp server.
        for alias in ["local-coder", "claude-sonnet-4-5", "claude-haiku-4-5"] {
            let resolved = file.models.resolve(alias).unwrap();
            assert_eq!(resolved.upstream_model, "qwen3-coder", "{alias}");
        }
        // The section's start line names the file, with nothing on stdin.
        assert!(section.contains("--config /etc/codex-proxy/local.toml"));
        assert!(section.contains("ANTHROPIC_BASE_URL=http://127.0.0.1:8787 "));
    }

    #[test]
    fn what_a_chat_server_takes_is_read_and_belongs_to_the_chat_kind_only() {
        let file = parse(
            "[providers.local]\nkind = \"chat\"\nbase_url = \"http://127.0.0.1:8000/v1\"\n\
             keyless = true\nreasoning_effort = true\nmax_completion_tokens = true\n\
             models = [\"qwen3-*\"]\n",
        )
        .unwrap();
        let chat = file.providers[0].chat;
        assert!(chat.reasoning_effort && chat.max_completion_tokens);
        for key in ["reasoning_effort", "max_completion_tokens"] {
            let err = parse(&format!(
                "[providers.claude]\nkind = \"anthropic\"\n{key} = true\nmodels = [\"claude-*\"]\n"
            ))
            .unwrap_err();
            assert_eq!(err.line, Some(3), "{err:?}");
            assert!(
                err.reason.contains(key) && err.reason.contains("only for kind = \"chat\""),
                "{err:?}"
            );
        }
    }

    #[test]
    fn the_chat_kind_takes_a_required_base_url_keyless_and_plain_http_on_a_keyless_one() {
        let file = parse(
            "[providers.local]\nkind = \"chat\"\nbase_url = \"http://127.0.0.1:8080/v1/chat/completions\"\n\
             keyless = true\nmodels = [\"qwen3-*\"]\n\n\
             [providers.lan]\nkind = \"chat\"\nbase_url = \"http://192.168.1.20:11434/v1\"\n\
             keyless = true\nallow_plain_http = true\nmodels = [\"llama*\"]\n\n\
             [providers.deepseek]\nkind = \"chat\"\nbase_url = \"https://api.deepseek.com/v1\"\n\
             models = [\"deepseek-*\"]\n",
        )
        .unwrap();
        let shown: Vec<_> = file
            .providers
            .iter()
            .map(|p| (p.name.as_str(), p.kind, p.base.display(), p.keyless))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "local",
                    ProviderKind::Chat,
                    "http://127.0.0.1:8080/v1".to_owned(),
                    true
                ),
                (
                    "lan",
                    ProviderKind::Chat,
                    "http://192.168.1.20:11434/v1".to_owned(),
                    true
                ),
                (
                    "deepseek",
                    ProviderKind::Chat,
                    "https://api.deepseek.com/v1".to_owned(),
                    false
                ),
            ]
        );
        assert_eq!(
            file.providers[0].base.uri("/chat/completions").to_string(),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
    }

    #[test]
    fn a_key_never_travels_in_plaintext_off_the_host() {
        for (text, line, needles) in [
            // A keyed chat provider on plain http to another host.
            (
                "[providers.a]\nkind = \"chat\"\nmodels = [\"*\"]\nbase_url = \"http://10.0.0.5:8080/v1\"\n",
                4,
                &["providers.a.base_url", "loopback"][..],
            ),
            // Keyless, but without the opt-in: the message names it.
            (
                "[providers.a]\nkind = \"chat\"\nkeyless = true\nmodels = [\"*\"]\n\
                 base_url = \"http://10.0.0.5:8080/v1\"\n",
                5,
                &["providers.a.base_url", "allow_plain_http = true"][..],
            ),
            // The opt-in without keyless.
            (
                "[providers.a]\nkind = \"chat\"\nallow_plain_http = true\nmodels = [\"*\"]\n\
                 base_url = \"http://10.0.0.5:8080/v1\"\n",
                3,
                &["providers.a.allow_plain_http", "only with keyless = true"][..],
            ),
            (
                "[providers.a]\nkind = \"chat\"\nkeyless = true\nmodels = [\"*\"]\n",
                1,
                &["providers.a: kind = \"chat\" needs a base_url"][..],
            ),
        ] {
            let e = err(text);
            assert_eq!(e.line, Some(line), "{text}: {}", e.reason);
            for needle in needles {
                assert!(e.reason.contains(needle), "{text}: lacks {needle}: {}", e.reason);
            }
        }
        for key in ["keyless", "allow_plain_http"] {
            let e = err(&format!(
                "[providers.local]\nkind = \"openai\"\nmodels = [\"q*\"]\n{key} = true\n"
            ));
            assert_eq!(e.line, Some(4));
            assert_eq!(
                e.reason,
                format!("providers.local.{key}: only for kind = \"chat\", not \"openai\"")
            );
        }
    }

    #[test]
    fn provider_errors_name_the_line_and_the_key() {
        for (text, line, needles) in [
            (
                "[providers.a]\nkind = \"opnai\"\nmodels = [\"*\"]\n",
                2,
                &["providers.a.kind", "unknown kind \"opnai\"", "\"chat\""][..],
            ),
            (
                "[providers.a]\nmodels = [\"*\"]\n",
                1,
                &["missing field `kind`"][..],
            ),
            (
                "[providers.a]\nkind = \"openai\"\nmodels = [\"*\"]\nbase = \"https://x/v1\"\n",
                4,
                &["unknown field `base`"][..],
            ),
            (
                "[providers.a]\nkind = \"openai\"\nmodels = [\"gpt-*\",\n  \"o[0-9\"]\n",
                4,
                &["providers.a.models", "unclosed"][..],
            ),
            (
                "[providers.a]\nkind = \"openai\"\nmodels = [\"\"]\n",
                3,
                &["providers.a.models", "empty pattern"][..],
            ),
            (
                "[providers.a]\nkind = \"openai\"\nmodels = [\"*\"]\nbase_url = \"http://10.0.0.1/v1\"\n",
                4,
                &["providers.a.base_url", "loopback"][..],
            ),
            (
                "[providers.a]\nkind = \"openai\"\nmodels = [\"*\"]\nbase_url = \"not a url\"\n",
                4,
                &["providers.a.base_url", "not a valid URL"][..],
            ),
            (
                "[providers.a]\nkind = \"anthropic\"\nmodels = [\"*\"]\n\
                 base_url = \"https://u:p@api.anthropic.com/v1\"\n",
                4,
                &["providers.a.base_url", "credentials in the URL"][..],
            ),
            (
                "[providers.a]\nkind = \"openai\"\ndefault = true\n\n[providers.b]\n\
                 kind = \"openai\"\ndefault = true\n",
                7,
                &["providers.b.default", "providers.a is"][..],
            ),
            (
                "[providers.a]\nkind = \"openai\"\ndefault = false\n",
                1,
                &["providers.a: serves no model"][..],
            ),
            (
                "[providers.\"my provider\"]\nkind = \"openai\"\ndefault = true\n",
                1,
                &["a provider name is"][..],
            ),
            (
                "[providers.a]\nkind = \"openai\"\ndefault = true\n\
                 headers = { \"x-ok\" = \"1\", \"bad name\" = \"v\" }\n",
                4,
                &["providers.a.headers.bad name", "not a valid header name"][..],
            ),
            (
                "[providers.a]\nkind = \"openai\"\ndefault = true\n\
                 headers = { \"x-ok\" = \"line\\nbreak\" }\n",
                4,
                &["providers.a.headers.x-ok", "not a valid header value"][..],
            ),
            (
                "[providers.a]\nkind = \"openai\"\ndefault = true\n\
                 headers = { \"X-Title\" = \"a\", \"x-title\" = \"b\" }\n",
                4,
                &["headers.x-title", "given twice"][..],
            ),
        ] {
            let e = err(text);
            assert_eq!(e.line, Some(line), "{text}: {}", e.reason);
            for needle in needles {
                assert!(e.reason.contains(needle), "{text}: lacks {needle}: {}", e.reason);
            }
        }
    }

    #[test]
    fn credential_hop_by_hop_and_framing_headers_cannot_be_fixed() {
        for name in [
            "Authorization",
            "x-api-key",
            "Cookie",
            "host",
            "Content-Length",
            "transfer-encoding",
            "connection",
            "keep-alive",
            "te",
            "upgrade",
            "proxy-authorization",
            "x-forwarded-for",
            "api-key",
            "x-goog-api-key",
            "chatgpt-account-id",
            "openai-organization",
            "content-type",
            "content-encoding",
            "accept-encoding",
        ] {
            let e = err(&format!(
                "[providers.a]\nkind = \"anthropic\"\nmodels = [\"claude-*\"]\n\n\
                 [providers.a.headers]\n\"{name}\" = \"value\"\n"
            ));
            assert_eq!(e.line, Some(6), "{name}");
            assert!(
                e.reason
                    .starts_with(&format!("providers.a.headers.{name}: not allowed")),
                "{name}: {}",
                e.reason
            );
        }
        let ok = providers(
            "[providers.a]\nkind = \"anthropic\"\nmodels = [\"claude-*\"]\n\
             [providers.a.headers]\n\"anthropic-beta\" = \"context-1m-2025-08-07\"\n",
        );
        assert_eq!(ok[0].5, ["anthropic-beta: context-1m-2025-08-07"]);
    }

    #[test]
    fn models_and_aliases_take_the_models_file_keys() {
        use crate::translate::think::ThinkMode;
        let file = parse(
            "[models.\"qwen3-coder\"]\nthink_tags = \"reasoning\"\n\
             params = { top_k = 20, temperature = 0.7 }\nefforts = [\"low\", \"high\"]\n\n\
             [models.\"gpt-5.4\"]\ndefault_effort = \"medium\"\nappend_to_last_user = \"Be brief.\"\n\n\
             [aliases]\n\"claude-opus-4-8\" = \"gpt-5.4-high\"\n",
        )
        .unwrap();
        let qwen = file.models.resolve("qwen3-coder-high").unwrap();
        assert_eq!(qwen.upstream_model, "qwen3-coder");
        assert_eq!(qwen.effort.as_deref(), Some("high"));
        assert_eq!(qwen.think, ThinkMode::Reasoning);
        assert_eq!(
            serde_json::Value::Object(qwen.params),
            serde_json::json!({"top_k": 20, "temperature": 0.7})
        );
        let aliased = file.models.resolve("claude-opus-4-8").unwrap();
        assert_eq!(
            (aliased.upstream_model.as_str(), aliased.effort.as_deref()),
            ("gpt-5.4", Some("high"))
        );
        assert_eq!(aliased.default_effort.as_deref(), Some("medium"));
        assert_eq!(aliased.append_to_last_user.as_deref(), Some("Be brief."));
        // Without the sections the table is the built-in one.
        let plain = parse("").unwrap().models;
        assert!(plain.resolve("claude-opus-4-8").unwrap().effort.is_none());
    }

    #[test]
    fn model_and_alias_errors_name_the_line_and_the_key() {
        for (text, line, needles) in [
            (
                "[models.\"qwen3\"]\nthink_tags = \"maybe\"\n",
                2,
                &["unknown variant `maybe`"][..],
            ),
            (
                "[models.\"qwen3\"]\nthink_tag = \"strip\"\n",
                2,
                &["unknown field `think_tag`"][..],
            ),
            (
                "\n[models.\"m\"]\ndefault_effort = \"huge\"\n",
                2,
                &["[models.\"m\"]", "models.m.default_effort must be one of"][..],
            ),
            (
                "[models.m]\nparams = { model = \"x\" }\n",
                1,
                &["models.m.params.model cannot be forced"][..],
            ),
            (
                "[aliases]\n\"a\" = \"gpt-5\"\n\"gpt-5.4\" = \"gpt-5\"\n",
                3,
                &["[aliases]", "alias \"gpt-5.4\" hides a known model"][..],
            ),
            (
                "[aliases]\n\"a\" = \"gpt-5-xhigh\"\n",
                2,
                &["alias \"a\": The model `gpt-5`"][..],
            ),
            ("[aliases]\n\"a\" = 5\n", 2, &["invalid type"][..]),
            (
                "[models.m]\nparams = { text = { at = [1979-05-27] } }\n",
                1,
                &["models.m.params.text", "date or time"][..],
            ),
        ] {
            let e = err(text);
            assert_eq!(e.line, Some(line), "{text}: {}", e.reason);
            for needle in needles {
                assert!(
                    e.reason.contains(needle),
                    "{text}: lacks {needle}: {}",
                    e.reason
                );
            }
        }
    }

    #[test]
    fn budgets_are_read_with_their_window() {
        let file = parse(
            "[users.alice]\ntoken_budget = 1000\nbudget_window = \"1h\"\n\n\
             [users.\"*\"]\nbudget_window = \"30d\"\ntoken_budget = 5000000\n\n[users.bob]\n",
        )
        .unwrap();
        let budgets: Vec<_> = file.users.iter().map(|u| u.policy.budget).collect();
        assert_eq!(
            budgets,
            [
                Some(Budget {
                    tokens: 1000,
                    window: BudgetWindow::Hour
                }),
                Some(Budget {
                    tokens: 5_000_000,
                    window: BudgetWindow::Days30
                }),
                None
            ]
        );
        for (window, parsed) in [
            ("1h", BudgetWindow::Hour),
            ("1d", BudgetWindow::Day),
            ("7d", BudgetWindow::Week),
            ("30d", BudgetWindow::Days30),
        ] {
            let file = parse(&format!(
                "[users.a]\ntoken_budget = 1\nbudget_window = \"{window}\"\n"
            ))
            .unwrap();
            assert_eq!(file.users[0].policy.budget.unwrap().window, parsed);
        }
    }

    #[test]
    fn a_budget_needs_both_keys_and_sane_values() {
        let e = err("[users.alice]\ntoken_budget = 1000\n");
        assert_eq!(e.line, Some(2));
        assert!(e.reason.contains("needs `budget_window`"), "{}", e.reason);
        let e = err("[users.\"*\"]\nmodels = [\"*\"]\nbudget_window = \"1d\"\n");
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("needs `token_budget`"), "{}", e.reason);
        let e = err("[users.a]\nbudget_window = \"1d\"\ntoken_budget = 0\n");
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("at least 1"), "{}", e.reason);
        let e = err("[users.a]\ntoken_budget = 10\nbudget_window = \"2h\"\n");
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("budget_window must be"), "{}", e.reason);
        assert_eq!(
            err("[users.a]\ntoken_budget = -5\nbudget_window = \"1h\"\n").line,
            Some(2)
        );
        assert_eq!(
            err("[users.a]\ntoken_budget = 5\nbudget_window = 1\n").line,
            Some(3)
        );
    }

    #[test]
    fn bad_values_are_refused_with_their_line() {
        let e = err("[users.a]\nmax_concurrent = 0\n");
        assert_eq!(e.line, Some(2));
        assert!(e.reason.contains("at least 1"));
        assert_eq!(err("[users.a]\nmax_concurrent = -1\n").line, Some(2));
        assert_eq!(err("[users.a]\nmodels = \"gpt-5\"\n").line, Some(2));
        let e = err("[users.a]\nmodels = [\"gpt-5\",\n  \"gpt-[45\"]\n");
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("unclosed"));
        assert_eq!(err("[users.a\n").line, Some(1));
        assert_eq!(err("[users.\"\"]\n").line, Some(1));
    }
}
