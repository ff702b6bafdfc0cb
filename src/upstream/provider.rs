//! Provider kinds: the one place that knows what differs between the upstream APIs the proxy
//! can front. A closed enum, so that every `match` on it shows each place a new kind must be
//! handled.
//!
//! | kind | wire | credential on the wire | default base | quota headers | compaction | `count_tokens` |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | `openai` | Responses | `Authorization: Bearer` | `https://api.openai.com/v1` | `x-ratelimit-*` | yes | local estimate |
//! | `chatgpt` | Responses (Codex backend profile) | Bearer + `chatgpt-account-id` | `https://chatgpt.com/backend-api/codex` | `x-codex-*` | yes | local estimate |
//! | `anthropic` | Anthropic Messages | `x-api-key` (+ `anthropic-version`) | `https://api.anthropic.com/v1` | `anthropic-ratelimit-*` | no | forwarded |
//! | `chat` | Chat Completions | `Authorization: Bearer`, or none when `keyless` | none (required) | none | no | local estimate |
//!
//! Per wire, the commit point's event classes ([`ProviderKind::event_class`]) and the shape
//! of the failure event written after commit ([`ProviderKind::wire`], through
//! `translate::write_error_event`) follow the wire. Error statuses and in-band failures
//! classify through one table (`classify`, `translate::error`): Anthropic's 429
//! `rate_limit_error` with `retry-after` cools the key down, and a 529 or an in-band
//! `overloaded_error` is the server's (a soft cooldown and a failover to another key of the
//! provider). The Anthropic wire is described in `docs/anthropic-wire.md`.
//!
//! The Chat wire (`docs/chat-wire.md`) has no event types: a chunk is classed by what it
//! carries ([`crate::translate::sse`]): content, tool calls or reasoning commit; a role-only
//! or empty chunk is bootstrap; a `finish_reason`, an in-band `{"error":…}`, and `[DONE]`
//! after a finish are terminal. A keyless chat provider has one credential-less account, so
//! pool, cooldowns and failover work for it as for any other.
//!
//! Routing ([`route`], DESIGN §9): the model after aliases and suffixes goes to the first
//! provider whose globs match, else the `default` one, else nowhere (`model_not_found`).
//! Without a config file (every provider implicit) every model goes to the implicit
//! providers together, as it always did.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::UpstreamBase;
use crate::glob::Glob;
use crate::pool::{AccountKind, Pool, ProviderSlot, Target};
use crate::translate::models::ModelTable;
use crate::translate::sse::EventClass;
use crate::translate::Dialect;

pub use crate::pool::AuthForm;

/// The `anthropic-version` sent when the client names none (`docs/anthropic-wire.md`).
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// The names of the providers that exist without a config file (`--upstream-url` and
/// `--chatgpt-base-url`).
pub const IMPLICIT_OPENAI: &str = "openai";
pub const IMPLICIT_CHATGPT: &str = "chatgpt";

/// One provider as configured: a name, a kind, where it is, and which models it serves.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The user's name for it (a `[providers.NAME]` key, or `openai`/`chatgpt`).
    pub name: String,
    pub kind: ProviderKind,
    pub base: UpstreamBase,
    /// Model-name globs it serves, in file order.
    pub models: Vec<Glob>,
    /// Serves every model no provider's globs match.
    pub default: bool,
    /// Fixed extra request headers (e.g. OpenRouter's `HTTP-Referer`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// One of the two providers that exist without a file. Without `--config` they serve
    /// every model; with one, the models DESIGN §9 gives them.
    pub implicit: bool,
    /// A `chat` provider without a key (`keyless = true`): no credential header goes
    /// upstream, and it needs no credential on stdin.
    pub keyless: bool,
    /// What a `chat` provider's server accepts beyond the fields every chat server knows.
    pub chat: ChatServer,
}

/// Request fields a Chat Completions server may or may not accept; the hub sends them only
/// when the provider says so (`reasoning_effort = true`, `max_completion_tokens = true`),
/// because some servers refuse fields they do not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatServer {
    /// `reasoning.effort` goes on as `reasoning_effort`.
    pub reasoning_effort: bool,
    /// `max_output_tokens` goes on as `max_completion_tokens` instead of `max_tokens`.
    pub max_completion_tokens: bool,
}

/// The kind of an upstream API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// OpenAI's API or any server that speaks the Responses API with a Bearer key.
    Openai,
    /// ChatGPT accounts on the Codex backend.
    Chatgpt,
    /// Anthropic's Messages API with an API key.
    Anthropic,
    /// A Chat Completions server (llama.cpp, vLLM, Ollama, LM Studio, DeepSeek, OpenRouter,
    /// Groq), with a Bearer key or none.
    Chat,
}

impl ProviderKind {
    /// Every kind, in the order the config file documents them.
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Openai,
        ProviderKind::Chatgpt,
        ProviderKind::Anthropic,
        ProviderKind::Chat,
    ];

    /// The name used in the config file's `kind` key.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Chatgpt => "chatgpt",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Chat => "chat",
        }
    }

    /// The kind a config file's `kind` names.
    pub fn from_name(name: &str) -> Option<ProviderKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The API base used when the provider names none (`None`: `base_url` is required).
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Chatgpt => Some("https://chatgpt.com/backend-api/codex"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com/v1"),
            ProviderKind::Chat => None,
        }
    }

    /// The dialect the provider's API speaks.
    pub fn wire(self) -> Dialect {
        match self {
            ProviderKind::Openai | ProviderKind::Chatgpt => Dialect::Responses,
            ProviderKind::Anthropic => Dialect::Anthropic,
            ProviderKind::Chat => Dialect::Chat,
        }
    }

    /// How the credential goes on the wire.
    pub fn auth_form(self) -> AuthForm {
        match self {
            ProviderKind::Openai | ProviderKind::Chatgpt | ProviderKind::Chat => AuthForm::Bearer,
            ProviderKind::Anthropic => AuthForm::XApiKey,
        }
    }

    /// The kind of credential its accounts hold (and `/health`'s `kind`).
    pub fn credential(self) -> AccountKind {
        match self {
            ProviderKind::Openai | ProviderKind::Anthropic | ProviderKind::Chat => {
                AccountKind::ApiKey
            }
            ProviderKind::Chatgpt => AccountKind::Chatgpt,
        }
    }

    /// What an event of this provider's stream means for the commit point.
    pub fn event_class(self, event_type: &str) -> EventClass {
        EventClass::of_wire(self.wire(), event_type)
    }

    /// Remaining quota from a response's headers, as a fraction (`None`: not said).
    pub fn remaining_quota(self, headers: &HeaderMap) -> Option<f64> {
        match self {
            ProviderKind::Openai | ProviderKind::Chatgpt => crate::pool::quota::remaining(headers),
            ProviderKind::Anthropic => crate::pool::quota::anthropic_remaining(headers),
            // Chat servers send no common quota headers.
            ProviderKind::Chat => None,
        }
    }

    /// Its tokens expire and are refreshed (a 401 triggers one refresh and a retry).
    pub fn refreshes(self) -> bool {
        match self {
            ProviderKind::Chatgpt => true,
            ProviderKind::Openai | ProviderKind::Anthropic | ProviderKind::Chat => false,
        }
    }

    /// True for the terminal event types of its stream that report a failure (classified
    /// like an error status before commit, `classify::classify_in_band`). Chat chunks have
    /// no type: see [`ProviderKind::is_failure_chunk`].
    pub fn is_failure_event(self, event_type: &str) -> bool {
        match self.wire() {
            Dialect::Responses => matches!(event_type, "response.failed" | "error"),
            Dialect::Anthropic => event_type == "error",
            Dialect::Chat => false,
        }
    }

    /// True when a terminal event's JSON reports a failure: by its type, or on the Chat wire
    /// by a top-level `error` (an in-band error chunk).
    pub fn is_failure_chunk(self, event: &serde_json::Value) -> bool {
        match self.wire() {
            Dialect::Chat => event.get("error").is_some_and(|e| !e.is_null()),
            Dialect::Responses | Dialect::Anthropic => event
                .get("type")
                .and_then(|t| t.as_str())
                .is_some_and(|t| self.is_failure_event(t)),
        }
    }

    /// Serves `/v1/responses/compact` (the others answer 400 `unsupported_on_provider`).
    pub fn compacts(self) -> bool {
        match self {
            ProviderKind::Openai | ProviderKind::Chatgpt => true,
            ProviderKind::Anthropic | ProviderKind::Chat => false,
        }
    }

    /// Where it counts tokens itself (`/v1/messages/count_tokens` is forwarded there);
    /// `None`: the proxy estimates them.
    pub fn count_tokens_endpoint(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai | ProviderKind::Chatgpt | ProviderKind::Chat => None,
            ProviderKind::Anthropic => Some("/messages/count_tokens"),
        }
    }

    /// The upstream endpoint (below the base URL) for a request in the provider's wire.
    pub fn endpoint(self, compact: bool) -> &'static str {
        match (self, compact) {
            (ProviderKind::Openai | ProviderKind::Chatgpt, false) => "/responses",
            (ProviderKind::Openai | ProviderKind::Chatgpt, true) => "/responses/compact",
            (ProviderKind::Anthropic, _) => "/messages",
            (ProviderKind::Chat, _) => "/chat/completions",
        }
    }
}

impl ProviderConfig {
    /// What the pool needs of this provider. The name is made `'static` once (see
    /// [`ProviderSlot::name`]): providers are fixed at start.
    pub fn slot(&self) -> ProviderSlot {
        ProviderSlot {
            name: intern_name(&self.name),
            form: self.kind.auth_form(),
            takes: self.kind.credential(),
            implicit: self.implicit,
            keyless: self.keyless,
        }
    }
}

/// `name` as a `&'static str`, leaked once per distinct name for the process's life. Provider
/// names are few and fixed at start (the config file's, and those read back from the state
/// file), and metric labels and log fields want them `'static`.
pub fn intern_name(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = names.iter().find(|known| **known == name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.push(leaked);
    leaked
}

/// Model names the implicit providers serve when a config file defines others (DESIGN §9).
const IMPLICIT_GLOBS: [&str; 3] = ["gpt-*", "o[0-9]*", "codex-*"];

/// True when an implicit provider serves `model` beside a config file's providers: the
/// OpenAI families and the known model table.
fn implicit_serves(model: &str, models: &ModelTable) -> bool {
    static GLOBS: std::sync::LazyLock<Vec<Glob>> = std::sync::LazyLock::new(|| {
        IMPLICIT_GLOBS
            .iter()
            .filter_map(|g| Glob::new(g).ok())
            .collect()
    });
    models.is_known_model(model) || GLOBS.iter().any(|g| g.matches(model))
}

/// Where a request for `model` goes (see the module docs); `None`: no provider serves it.
/// `model` is the name as the client sent it; aliases and suffixes are resolved here.
pub fn route(
    providers: &[ProviderConfig],
    pool: &Pool,
    models: &ModelTable,
    model: Option<&str>,
) -> Option<Target> {
    if providers.iter().all(|p| p.implicit) {
        return Some(Target::Implicit);
    }
    // An implicit provider exists only while it has credentials.
    let present = |i: usize| !providers[i].implicit || pool.has_accounts(i);
    let resolved = model.map(|m| match models.resolve(m) {
        Ok(r) => r.upstream_model,
        Err(_) => m.to_owned(),
    });
    if let Some(name) = resolved.as_deref() {
        let matched = providers.iter().enumerate().position(|(i, p)| {
            present(i)
                && if p.implicit {
                    implicit_serves(name, models)
                } else {
                    p.models.iter().any(|g| g.matches(name))
                }
        });
        if let Some(i) = matched {
            return Some(Target::Provider(i));
        }
    }
    providers
        .iter()
        .enumerate()
        .position(|(i, p)| p.default && present(i))
        .map(Target::Provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    fn config(name: &str, kind: ProviderKind, globs: &[&str], implicit: bool) -> ProviderConfig {
        ProviderConfig {
            name: name.to_string(),
            kind,
            base: UpstreamBase::parse(
                kind.default_base_url()
                    .unwrap_or("http://127.0.0.1:8080/v1"),
            )
            .unwrap(),
            models: globs.iter().map(|g| Glob::new(g).unwrap()).collect(),
            default: false,
            headers: Vec::new(),
            implicit,
            keyless: false,
            chat: ChatServer::default(),
        }
    }

    /// A pool of `providers` holding `input` (credentials in any stdin form).
    fn pool(providers: &[ProviderConfig], input: &[u8]) -> Pool {
        let mut intake = crate::secret::IntakeBuffer::new(1 << 20).unwrap();
        intake.read_slice(input).unwrap();
        Pool::with_providers(
            intake.into_credentials().unwrap(),
            Arc::new(crate::upstream::inject::KeyInjector::new()),
            providers.iter().map(ProviderConfig::slot).collect(),
        )
        .unwrap()
    }

    fn implicit() -> Vec<ProviderConfig> {
        vec![
            config("openai", ProviderKind::Openai, &[], true),
            config("chatgpt", ProviderKind::Chatgpt, &[], true),
        ]
    }

    #[test]
    fn without_a_config_file_every_model_goes_to_the_implicit_providers() {
        let providers = implicit();
        let pool = pool(&providers, b"sk-1\n");
        let models = ModelTable::builtin();
        for model in [
            Some("gpt-5"),
            Some("claude-sonnet-4-5"),
            Some("llama"),
            None,
        ] {
            assert_eq!(
                route(&providers, &pool, &models, model),
                Some(Target::Implicit)
            );
        }
    }

    #[test]
    fn globs_in_order_then_the_implicit_families_then_the_default_else_nowhere() {
        let mut providers = vec![
            config("claude", ProviderKind::Anthropic, &["claude-*"], false),
            config(
                "local",
                ProviderKind::Openai,
                &["qwen3-*", "claude-local"],
                false,
            ),
        ];
        providers.extend(implicit());
        let input = b"{\"provider\":\"claude\",\"api_key\":\"k1\"}\n{\"provider\":\"local\",\"api_key\":\"k2\"}\n{\"api_key\":\"k3\"}\n";
        let pool = pool(&providers, input);
        let models =
            ModelTable::from_json(br#"{"aliases":{"claude-opus-4-8":"gpt-5.4-high"}}"#).unwrap();
        let to = |m: &str| route(&providers, &pool, &models, Some(m));
        assert_eq!(to("claude-sonnet-4-5"), Some(Target::Provider(0)));
        assert_eq!(to("claude-local"), Some(Target::Provider(0)), "file order");
        assert_eq!(to("qwen3-coder"), Some(Target::Provider(1)));
        // The implicit `openai` has a key: OpenAI families and the known table.
        for m in ["gpt-5.4", "gpt-5.4-high", "o3", "codex-mini-latest"] {
            assert_eq!(to(m), Some(Target::Provider(2)), "{m}");
        }
        // An alias is resolved first: this one names an OpenAI model.
        assert_eq!(to("claude-opus-4-8"), Some(Target::Provider(2)));
        assert_eq!(to("llama-3"), None);
        assert_eq!(route(&providers, &pool, &models, None), None);
        let mut providers = providers.clone();
        providers[1].default = true;
        assert_eq!(
            route(&providers, &pool, &models, Some("llama-3")),
            Some(Target::Provider(1))
        );
    }

    #[test]
    fn an_implicit_provider_without_credentials_serves_nothing_beside_a_file() {
        let mut providers = vec![config(
            "claude",
            ProviderKind::Anthropic,
            &["claude-*"],
            false,
        )];
        providers.extend(implicit());
        let pool = pool(&providers, b"{\"provider\":\"claude\",\"api_key\":\"k1\"}");
        let models = ModelTable::builtin();
        assert_eq!(route(&providers, &pool, &models, Some("gpt-5")), None);
        assert_eq!(
            route(&providers, &pool, &models, Some("claude-x")),
            Some(Target::Provider(0))
        );
    }

    #[test]
    fn each_kind_says_its_credential_form_endpoint_and_commit_classes() {
        use crate::translate::sse::EventClass;
        assert_eq!(ProviderKind::Anthropic.auth_form(), AuthForm::XApiKey);
        assert_eq!(ProviderKind::Openai.auth_form(), AuthForm::Bearer);
        assert_eq!(ProviderKind::Anthropic.endpoint(false), "/messages");
        assert_eq!(ProviderKind::Chatgpt.endpoint(true), "/responses/compact");
        assert!(!ProviderKind::Anthropic.compacts());
        assert_eq!(
            ProviderKind::Anthropic.count_tokens_endpoint(),
            Some("/messages/count_tokens")
        );
        let anthropic = |t| ProviderKind::Anthropic.event_class(t);
        assert_eq!(anthropic("message_start"), EventClass::Bootstrap);
        assert_eq!(anthropic("ping"), EventClass::Bootstrap);
        assert_eq!(anthropic("content_block_start"), EventClass::Content);
        assert_eq!(anthropic("message_stop"), EventClass::Terminal);
        assert_eq!(anthropic("error"), EventClass::Terminal);
        assert_eq!(
            ProviderKind::Openai.event_class("response.created"),
            EventClass::Bootstrap
        );
        assert!(ProviderKind::Anthropic.is_failure_event("error"));
        assert!(!ProviderKind::Anthropic.is_failure_event("response.failed"));
        assert!(ProviderKind::Chatgpt.refreshes() && !ProviderKind::Anthropic.refreshes());
    }

    #[test]
    fn every_kind_is_found_by_its_name_and_nothing_else_is() {
        for kind in ProviderKind::ALL {
            assert_eq!(ProviderKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(ProviderKind::from_name("chat"), Some(ProviderKind::Chat));
        assert_eq!(ProviderKind::from_name("Chat"), None);
        assert_eq!(ProviderKind::from_name("OpenAI"), None);
    }
}
