//! Provider kinds: the one place that knows what differs between the upstream APIs the proxy
//! can front. A closed enum, so that every `match` on it shows each place a new kind must be
//! handled.
//!
//! | kind | wire | credential on the wire | default base |
//! | --- | --- | --- | --- |
//! | `openai` | Responses | `Authorization: Bearer` | `https://api.openai.com/v1` |
//! | `chatgpt` | Responses (Codex backend profile) | Bearer + `chatgpt-account-id` | `https://chatgpt.com/backend-api/codex` |
//! | `anthropic` | Anthropic Messages | `x-api-key` | `https://api.anthropic.com/v1` |

use http::{HeaderName, HeaderValue};

use crate::config::UpstreamBase;
use crate::glob::Glob;
use crate::translate::Dialect;

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
}

/// How the credential travels upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthForm {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `x-api-key: <secret>`.
    XApiKey,
}

impl ProviderKind {
    /// Every kind, in the order the config file documents them.
    pub const ALL: [ProviderKind; 3] = [
        ProviderKind::Openai,
        ProviderKind::Chatgpt,
        ProviderKind::Anthropic,
    ];

    /// The name used in the config file's `kind` key.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Chatgpt => "chatgpt",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    /// The kind a config file's `kind` names.
    pub fn from_name(name: &str) -> Option<ProviderKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The API base used when the provider names none.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::Openai => "https://api.openai.com/v1",
            ProviderKind::Chatgpt => "https://chatgpt.com/backend-api/codex",
            ProviderKind::Anthropic => "https://api.anthropic.com/v1",
        }
    }

    /// The dialect the provider's API speaks.
    pub fn wire(self) -> Dialect {
        match self {
            ProviderKind::Openai | ProviderKind::Chatgpt => Dialect::Responses,
            ProviderKind::Anthropic => Dialect::Anthropic,
        }
    }

    /// How the credential goes on the wire.
    pub fn auth_form(self) -> AuthForm {
        match self {
            ProviderKind::Openai | ProviderKind::Chatgpt => AuthForm::Bearer,
            ProviderKind::Anthropic => AuthForm::XApiKey,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_found_by_its_name_and_nothing_else_is() {
        for kind in ProviderKind::ALL {
            assert_eq!(ProviderKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(ProviderKind::from_name("chat"), None);
        assert_eq!(ProviderKind::from_name("OpenAI"), None);
    }
}
