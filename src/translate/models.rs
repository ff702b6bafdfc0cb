//! Model names: the built-in table of known models and the effort suffixes each accepts, the
//! `--models FILE` configuration, and the `/v1/models` lists.
//!
//! # Suffixes
//!
//! A requested name is resolved in this order (`docs/translation.md`, "Model names"):
//! 1. An alias from `--models` is replaced by its target (one level; the target may itself
//!    carry suffixes).
//! 2. A name that is a known model is taken as is, so real names ending in a level-like word
//!    (`gpt-5.1-codex-max`) are never parsed.
//! 3. A name is parsed only when its last `-` segment is a suffix word: `-fast` (sets
//!    `service_tier:"priority"`), an effort word (`none`, `minimal`, `low`, `medium`, `high`,
//!    `xhigh`, `max`/`ultra` → `xhigh`, `auto` → no effort) or an integer budget above 100
//!    (≤1024 `low`, ≤8192 `medium`, ≤24576 `high`, more `xhigh`). Every other name
//!    (`gpt-5-mini`, `gpt-5-pro`, `gpt-5-chat-latest`, `gpt-5-2025-08-07`, `gpt-5.4-mini`, …)
//!    goes upstream unchanged and the upstream decides. Suffixes are stripped from the right,
//!    in any order, at most one of each kind, until a known model is reached.
//! 4. The effort must be one the base model's row accepts, else 400; two suffixes of one
//!    kind are a 400 too. Both messages name the model. When the base is not a known model,
//!    the name goes upstream unchanged (open models on Responses-compatible upstreams), except
//!    that the `gpt-5…` family is parsed so a newer `gpt-5.x-high` (or `gpt-5-mini-high`) works
//!    before the table learns it.
//!
//! A suffix effort **overrides** the body's `reasoning.effort`/`reasoning_effort` (and `auto`
//! removes them); a configured `default_effort` applies only when neither is given.
//!
//! # `--models FILE`
//!
//! ```json
//! {
//!   "aliases":  { "claude-opus-4-8": "gpt-5.4-high", "claude-haiku-4-5": "gpt-5.4-mini" },
//!   "models": {
//!     "gpt-5.4": { "default_effort": "medium", "params": { "temperature": 0.2 },
//!                  "append_to_last_user": "Answer briefly.", "think_tags": "strip" },
//!     "qwen3-coder": { "efforts": ["low", "high"], "think_tags": "reasoning" }
//!   }
//! }
//! ```
//!
//! * `aliases`: requested name → target (a model name, suffixes allowed). Targets are checked
//!   when the file is loaded. Aliases are listed by `/v1/models`.
//! * `models.<name>`: settings applied whenever the request resolves to `<name>` (the requested
//!   name, an alias's target, or the base model, first match wins). A name not in the
//!   built-in table becomes a known model (listed, suffix-checked against `efforts`, which
//!   defaults to none).
//!   * `default_effort`: effort when neither a suffix nor the body gives one.
//!   * `params`: top-level Responses fields forced on every request (`temperature`, `top_p`,
//!     `max_output_tokens`, `text`, …). `model`, `input`, `stream`, `tools` and
//!     `instructions` cannot be forced. The upstream profile still removes what the upstream
//!     rejects (e.g. `temperature` on the Codex backend).
//!   * `append_to_last_user`: text added as a last `input_text` part of the last user message.
//!   * `think_tags`: `off` (default), `strip` or `reasoning` (see [`super::think`]).
//!
//! Unknown keys are errors, so a typo does not silently do nothing. The `--config` file's
//! `[models."NAME"]` and `[aliases]` tables take exactly these keys: both files are read into
//! one [`ModelsSpec`] and checked by [`ModelTable::from_spec`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::TranslateError;
use super::think::ThinkMode;

/// Effort levels the Responses API takes.
const LEVELS: &[&str] = &["none", "minimal", "low", "medium", "high", "xhigh"];

/// The built-in table (`docs/translation.md`, "Model names"): base model, accepted effort
/// suffixes.
const BUILTIN: &[(&str, &[&str])] = &[
    ("gpt-5", &["low", "medium", "high", "auto"]),
    ("gpt-5-codex", &["low", "medium", "high", "auto"]),
    ("gpt-5-codex-mini", &["low", "medium", "high", "auto"]),
    ("gpt-5.1", &["low", "medium", "high", "none", "auto"]),
    ("gpt-5.1-codex", &["low", "medium", "high", "max", "auto"]),
    ("gpt-5.1-codex-mini", &["low", "medium", "high", "auto"]),
    (
        "gpt-5.1-codex-max",
        &["low", "medium", "high", "xhigh", "auto"],
    ),
    (
        "gpt-5.2",
        &["low", "medium", "high", "xhigh", "none", "auto"],
    ),
    ("gpt-5.2-codex", &["low", "medium", "high", "xhigh", "auto"]),
    (
        "gpt-5.3-codex",
        &["low", "medium", "high", "xhigh", "none", "auto"],
    ),
    (
        "gpt-5.4",
        &["low", "medium", "high", "xhigh", "none", "auto"],
    ),
];

/// Keys `params` may not force: they are the request itself.
const UNFORCEABLE: &[&str] = &["model", "input", "stream", "tools", "instructions"];

/// A fixed `created` for list entries (2025-01-01T00:00:00Z): the table has no real dates,
/// and a stable value keeps the answer cacheable and testable.
const LIST_CREATED: i64 = 1_735_689_600;
const LIST_CREATED_RFC3339: &str = "2025-01-01T00:00:00Z";

#[derive(Debug, Clone)]
struct Known {
    name: String,
    efforts: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Settings {
    default_effort: Option<String>,
    params: Map<String, Value>,
    append_to_last_user: Option<String>,
    think: ThinkMode,
}

/// Known models, aliases and per-model settings; see the module docs.
#[derive(Debug, Clone)]
pub struct ModelTable {
    known: Vec<Known>,
    aliases: BTreeMap<String, String>,
    settings: BTreeMap<String, Settings>,
}

/// What a requested model name means for the upstream request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resolved {
    /// The model to send upstream (alias and suffixes removed).
    pub upstream_model: String,
    /// The effort a suffix selected (`None` with [`Resolved::effort_from_suffix`] = `-auto`).
    pub effort: Option<String>,
    /// True when a suffix decided the effort: it overrides (or, for `auto`, removes) any
    /// effort in the body.
    pub effort_from_suffix: bool,
    /// The configured effort for when neither a suffix nor the body gives one.
    pub default_effort: Option<String>,
    /// `"priority"` for a `-fast` suffix.
    pub service_tier: Option<String>,
    /// Forced top-level fields.
    pub params: Map<String, Value>,
    /// Text added to the last user message.
    pub append_to_last_user: Option<String>,
    /// Inline think-tag handling for this model's output.
    pub think: ThinkMode,
}

/// The aliases and per-model settings as written, before they are checked: the one model of
/// the keys, read from the `--models` JSON file and from the `--config` file's `[models.*]`
/// and `[aliases]` tables alike.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsSpec {
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelSpec>,
}

/// One `models.<name>` entry as written (see the module docs for each key).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub default_effort: Option<String>,
    #[serde(default)]
    pub params: Map<String, Value>,
    pub append_to_last_user: Option<String>,
    #[serde(default)]
    pub think_tags: ThinkMode,
    pub efforts: Option<Vec<String>>,
}

/// Which entry of a [`ModelsSpec`] a [`SpecError`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecKey {
    /// `models.<name>`.
    Model(String),
    /// `aliases.<name>`.
    Alias(String),
}

/// Why a [`ModelsSpec`] was refused: the entry, and a reason that names the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub key: SpecKey,
    pub reason: String,
}

/// A parsed effort suffix: the suffix word (what the model row is checked against) and the
/// effort sent upstream (`None` for `auto`).
fn effort_suffix(segment: &str) -> Option<(String, Option<String>)> {
    let effort = match segment {
        "none" | "minimal" | "low" | "medium" | "high" | "xhigh" => Some(segment.to_owned()),
        "max" | "ultra" => Some("xhigh".to_owned()),
        "auto" => None,
        _ => {
            // A budget is written without leading zeros (`0317` is part of a date).
            if segment.starts_with('0') {
                return None;
            }
            let budget: u64 = segment.parse().ok().filter(|n| *n > 100)?;
            let level = budget_effort(budget.try_into().unwrap_or(i64::MAX));
            return Some((level.to_owned(), Some(level.to_owned())));
        }
    };
    Some((segment.to_owned(), effort))
}

/// The effort for a thinking budget in tokens (also used for Anthropic `budget_tokens`).
pub fn budget_effort(budget: i64) -> &'static str {
    match budget {
        i64::MIN..=0 => "none",
        1..=1024 => "low",
        1025..=8192 => "medium",
        8193..=24576 => "high",
        _ => "xhigh",
    }
}

/// Longest model name an error message repeats.
const MAX_LABEL_LEN: usize = 128;

/// A requested model name as an error message may show it: in backquotes when it is a short
/// name of model-name characters that does not look like a key, else a neutral phrase (an
/// error never carries arbitrary request bytes).
fn model_label(name: &str) -> String {
    let plausible = name.len() <= MAX_LABEL_LEN
        && !name.starts_with("sk-")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:/@+".contains(&b));
    if plausible {
        format!("`{name}`")
    } else {
        "(as requested)".to_owned()
    }
}

/// The 400 for an effort suffix the model's row does not accept: names the model and the
/// suffixes it takes (both from the table, not from the request).
fn unaccepted_effort(known: &Known, word: &str) -> TranslateError {
    let accepted: Vec<String> = known.efforts.iter().map(|e| format!("-{e}")).collect();
    let accepted = if accepted.is_empty() {
        "none".to_owned()
    } else {
        accepted.join(", ")
    };
    TranslateError::bad_request(
        "model_not_found",
        format!(
            "The model `{}` does not take reasoning effort `{word}` from a name suffix (its \
             suffixes: {accepted}; any model also takes -fast).",
            known.name
        ),
    )
}

impl Default for ModelTable {
    fn default() -> Self {
        Self::builtin()
    }
}

impl ModelTable {
    /// The built-in table, no aliases, no settings.
    pub fn builtin() -> ModelTable {
        ModelTable {
            known: BUILTIN
                .iter()
                .map(|(name, efforts)| Known {
                    name: (*name).to_owned(),
                    efforts: efforts.iter().map(|e| (*e).to_owned()).collect(),
                })
                .collect(),
            aliases: BTreeMap::new(),
            settings: BTreeMap::new(),
        }
    }

    /// The built-in table plus a `--models` file (see the module docs). The error names the
    /// problem and the offending key, never other content of the file.
    pub fn from_json(bytes: &[u8]) -> Result<ModelTable, String> {
        // Through a Value first: a derived struct would also accept a JSON array.
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("--models: not a valid models file: {e}"))?;
        if !value.is_object() {
            return Err("--models: not a valid models file: expected a JSON object".into());
        }
        let spec: ModelsSpec = serde_json::from_value(value)
            .map_err(|e| format!("--models: not a valid models file: {e}"))?;
        Self::from_spec(spec).map_err(|e| format!("--models: {}", e.reason))
    }

    /// The built-in table plus checked aliases and settings (whatever file they came from).
    pub fn from_spec(spec: ModelsSpec) -> Result<ModelTable, SpecError> {
        let mut table = ModelTable::builtin();
        for (name, model) in spec.models {
            let refuse = |reason: String| SpecError {
                key: SpecKey::Model(name.clone()),
                reason,
            };
            if name.is_empty() {
                return Err(refuse("an empty model name".into()));
            }
            if let Some(effort) = &model.default_effort {
                if !LEVELS.contains(&effort.as_str()) {
                    return Err(refuse(format!(
                        "models.{name}.default_effort must be one of {}",
                        LEVELS.join(", ")
                    )));
                }
            }
            if let Some(key) = model
                .params
                .keys()
                .find(|k| UNFORCEABLE.contains(&k.as_str()))
            {
                return Err(refuse(format!(
                    "models.{name}.params.{key} cannot be forced"
                )));
            }
            if let Some(efforts) = &model.efforts {
                if let Some(bad) = efforts.iter().find(|e| effort_suffix(e).is_none()) {
                    return Err(refuse(format!(
                        "models.{name}.efforts: unknown effort {bad:?}"
                    )));
                }
            }
            match table.known.iter_mut().find(|k| k.name == name) {
                Some(known) => {
                    if let Some(efforts) = model.efforts {
                        known.efforts = efforts;
                    }
                }
                None => table.known.push(Known {
                    name: name.clone(),
                    efforts: model.efforts.unwrap_or_default(),
                }),
            }
            table.settings.insert(
                name,
                Settings {
                    default_effort: model.default_effort,
                    params: model.params,
                    append_to_last_user: model.append_to_last_user,
                    think: model.think_tags,
                },
            );
        }
        for (alias, target) in &spec.aliases {
            let refuse = |reason: String| SpecError {
                key: SpecKey::Alias(alias.clone()),
                reason,
            };
            if alias.is_empty() || target.is_empty() {
                return Err(refuse("an empty alias or alias target".into()));
            }
            if table.is_known(alias) {
                return Err(refuse(format!("alias {alias:?} hides a known model")));
            }
            if spec.aliases.contains_key(target) {
                return Err(refuse(format!("alias {alias:?} points to another alias")));
            }
            table
                .resolve_name(target)
                .map_err(|e| refuse(format!("alias {alias:?}: {}", e.message)))?;
        }
        table.aliases = spec.aliases;
        Ok(table)
    }

    fn is_known(&self, name: &str) -> bool {
        self.known.iter().any(|k| k.name == name)
    }

    /// True when `name` is a model of the known table (not a suffix variant or an alias).
    pub fn is_known_model(&self, name: &str) -> bool {
        self.is_known(name)
    }

    /// The model an alias names, if `requested` is an alias.
    pub fn alias_of(&self, requested: &str) -> Option<&str> {
        self.aliases.get(requested).map(String::as_str)
    }

    /// Every alias, in name order.
    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.aliases.keys().map(String::as_str)
    }

    fn known(&self, name: &str) -> Option<&Known> {
        self.known.iter().find(|k| k.name == name)
    }

    /// Resolves a requested model name; see the module docs. Unknown suffixes on a known
    /// model (or a suffix the model's row does not accept) are a 400.
    pub fn resolve(&self, requested: &str) -> Result<Resolved, TranslateError> {
        let target = self
            .aliases
            .get(requested)
            .map_or(requested, String::as_str);
        let mut resolved = self.resolve_name(target)?;
        let settings = [requested, target, resolved.upstream_model.as_str()]
            .into_iter()
            .find_map(|n| self.settings.get(n));
        if let Some(s) = settings {
            resolved.default_effort = s.default_effort.clone();
            resolved.params = s.params.clone();
            resolved.append_to_last_user = s.append_to_last_user.clone();
            resolved.think = s.think;
        }
        Ok(resolved)
    }

    fn resolve_name(&self, name: &str) -> Result<Resolved, TranslateError> {
        let plain = Resolved {
            upstream_model: name.to_owned(),
            ..Default::default()
        };
        if name.is_empty() {
            return Err(TranslateError::invalid("model", "a non-empty string"));
        }
        if self.is_known(name) {
            return Ok(plain);
        }
        let mut base = name;
        let mut fast = false;
        let mut effort: Option<(String, Option<String>)> = None;
        // A suffix word seen twice (`-high-low`, `-fast-fast`).
        let mut repeated = false;
        while let Some((rest, last)) = base.rsplit_once('-') {
            if last == "fast" {
                repeated |= fast;
                fast = true;
            } else if let Some(e) = effort_suffix(last) {
                repeated |= effort.is_some();
                effort = Some(e);
            } else {
                // Not a suffix word: this (and everything left of it) is the model name.
                break;
            }
            base = rest;
            if repeated || self.is_known(base) {
                break;
            }
        }
        if base == name {
            // The last segment is no suffix word: the name is the upstream's to judge.
            return Ok(plain);
        }
        let known = self.known(base);
        // Unknown families go upstream untouched; gpt-5 names are parsed (module docs).
        if known.is_none() && !base.starts_with("gpt-5") {
            return Ok(plain);
        }
        if repeated {
            return Err(TranslateError::bad_request(
                "model_not_found",
                format!(
                    "The model name {} has two suffixes of one kind (at most one effort level \
                     and one -fast).",
                    model_label(name)
                ),
            ));
        }
        if let (Some(known), Some((word, _))) = (known, &effort) {
            if !known.efforts.iter().any(|e| e == word) {
                return Err(unaccepted_effort(known, word));
            }
        }
        Ok(Resolved {
            upstream_model: base.to_owned(),
            effort_from_suffix: effort.is_some(),
            effort: effort.and_then(|(_, e)| e),
            service_tier: fast.then(|| "priority".to_owned()),
            ..Default::default()
        })
    }

    /// Applies suffix, alias, default and overrides to a `/v1/responses` body; `Ok(true)` if
    /// anything changed (the caller then re-serialises the body instead of forwarding bytes).
    /// A body without a string `model` is left alone for the upstream to judge.
    pub fn rewrite_responses(&self, body: &mut Value) -> Result<bool, TranslateError> {
        let Some(model) = body.get("model").and_then(Value::as_str) else {
            return Ok(false);
        };
        let resolved = self.resolve(model)?;
        Ok(resolved.apply_tracked(body))
    }

    /// Every model id a client may send: each known model, its accepted suffix variants
    /// (each also with `-fast`), and the aliases. `anthropic` selects Anthropic's list shape.
    pub fn list(&self, anthropic: bool) -> Value {
        self.list_for(anthropic, true, &[])
    }

    /// Like [`ModelTable::list`], for the providers at hand: the known models and their
    /// variants only when `known` (a provider serves them), then the `exact` model names
    /// other providers serve (duplicates left out), then the aliases.
    pub fn list_for(&self, anthropic: bool, known: bool, exact: &[&str]) -> Value {
        let mut ids: Vec<String> = Vec::new();
        for known in self.known.iter().filter(|_| known) {
            let mut variants = vec![known.name.clone()];
            for effort in &known.efforts {
                variants.push(format!("{}-{effort}", known.name));
            }
            for v in variants {
                // A variant spelled like another real model (gpt-5.1-codex + max) resolves to
                // that model, so it is not advertised as a variant.
                if v != known.name && self.is_known(&v) {
                    continue;
                }
                let fast = format!("{v}-fast");
                ids.push(v);
                ids.push(fast);
            }
        }
        for name in exact {
            if !ids.iter().any(|id| id == name) {
                ids.push((*name).to_owned());
            }
        }
        ids.extend(self.aliases.keys().cloned());
        let data: Vec<Value> = ids
            .iter()
            .map(|id| {
                let mut m = Map::new();
                if anthropic {
                    m.insert("type".into(), "model".into());
                    m.insert("id".into(), id.as_str().into());
                    m.insert("display_name".into(), id.as_str().into());
                    m.insert("created_at".into(), LIST_CREATED_RFC3339.into());
                } else {
                    m.insert("id".into(), id.as_str().into());
                    m.insert("object".into(), "model".into());
                    m.insert("created".into(), LIST_CREATED.into());
                    m.insert("owned_by".into(), "openai".into());
                }
                Value::Object(m)
            })
            .collect();
        let mut list = Map::new();
        if anthropic {
            list.insert(
                "first_id".into(),
                ids.first().map_or(Value::Null, |s| s.as_str().into()),
            );
            list.insert(
                "last_id".into(),
                ids.last().map_or(Value::Null, |s| s.as_str().into()),
            );
            list.insert("has_more".into(), false.into());
            list.insert("data".into(), Value::Array(data));
        } else {
            list.insert("object".into(), "list".into());
            list.insert("data".into(), Value::Array(data));
        }
        Value::Object(list)
    }
}

impl Resolved {
    /// Applies this resolution to a Responses request body: the one place that does it, for
    /// translated and passthrough requests alike.
    pub fn apply(&self, responses_body: &mut Value) {
        self.apply_tracked(responses_body);
    }

    /// [`Resolved::apply`], returning whether the body changed.
    pub fn apply_tracked(&self, body: &mut Value) -> bool {
        let Some(obj) = body.as_object_mut() else {
            return false;
        };
        let mut changed = false;
        let mut set = |obj: &mut Map<String, Value>, key: &str, value: Value| {
            if obj.get(key) != Some(&value) {
                obj.insert(key.to_owned(), value);
                changed = true;
            }
        };
        set(obj, "model", Value::String(self.upstream_model.clone()));
        if let Some(tier) = &self.service_tier {
            set(obj, "service_tier", Value::String(tier.clone()));
        }
        for (k, v) in &self.params {
            set(obj, k, v.clone());
        }
        let mut changed_effort = false;
        let body_effort = obj.contains_key("reasoning_effort")
            || obj.get("reasoning").and_then(|r| r.get("effort")).is_some();
        let wanted = if self.effort_from_suffix {
            changed_effort |= obj.remove("reasoning_effort").is_some();
            Some(self.effort.clone())
        } else if !body_effort {
            self.default_effort.clone().map(Some)
        } else {
            None
        };
        if let Some(wanted) = wanted {
            match wanted {
                Some(effort) => {
                    let reasoning = obj
                        .entry("reasoning")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !reasoning.is_object() {
                        *reasoning = Value::Object(Map::new());
                    }
                    if let Some(r) = reasoning.as_object_mut() {
                        if r.get("effort").and_then(Value::as_str) != Some(effort.as_str()) {
                            r.insert("effort".into(), Value::String(effort));
                            changed_effort = true;
                        }
                    }
                }
                None => {
                    if let Some(r) = obj.get_mut("reasoning").and_then(Value::as_object_mut) {
                        changed_effort |= r.remove("effort").is_some();
                        // `-auto` leaves the effort to the upstream; an empty object says no
                        // more than its absence.
                        if r.is_empty() {
                            obj.remove("reasoning");
                        }
                    }
                }
            }
        }
        if let Some(text) = &self.append_to_last_user {
            changed |= append_to_last_user(obj, text);
        }
        changed || changed_effort
    }
}

/// Adds `text` as a last `input_text` part of the last user message (a string `input` gets it
/// after a blank line). Returns whether there was a user message to add it to.
fn append_to_last_user(body: &mut Map<String, Value>, text: &str) -> bool {
    match body.get_mut("input") {
        Some(Value::String(s)) => {
            s.push_str("\n\n");
            s.push_str(text);
            true
        }
        Some(Value::Array(items)) => {
            let last_user = items.iter_mut().rev().find(|item| {
                item.get("role").and_then(Value::as_str) == Some("user")
                    && item.get("type").is_none_or(|t| t == "message")
            });
            let Some(item) = last_user.and_then(Value::as_object_mut) else {
                return false;
            };
            let part = serde_json::json!({"type": "input_text", "text": text});
            match item.get_mut("content") {
                Some(Value::Array(parts)) => parts.push(part),
                Some(Value::String(s)) => {
                    let first = serde_json::json!({"type": "input_text", "text": s});
                    item.insert("content".into(), Value::Array(vec![first, part]));
                }
                _ => {
                    item.insert("content".into(), Value::Array(vec![part]));
                }
            }
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(table: &ModelTable, name: &str) -> Resolved {
        table.resolve(name).unwrap()
    }

    #[test]
    fn effort_matrix() {
        let t = ModelTable::builtin();
        for level in ["none", "low", "medium", "high", "xhigh"] {
            let got = r(&t, &format!("gpt-5.4-{level}"));
            assert_eq!(got.upstream_model, "gpt-5.4");
            assert_eq!(got.effort.as_deref(), Some(level));
            assert!(got.effort_from_suffix);
            assert_eq!(got.service_tier, None);
        }
        let got = r(&t, "gpt-5.4-xhigh-fast");
        assert_eq!(
            (got.effort.as_deref(), got.service_tier.as_deref()),
            (Some("xhigh"), Some("priority"))
        );
        let got = r(&t, "gpt-5.4-fast-high");
        assert_eq!(
            (got.effort.as_deref(), got.service_tier.as_deref()),
            (Some("high"), Some("priority"))
        );
        let got = r(&t, "gpt-5.4-fast");
        assert_eq!(
            (
                got.effort,
                got.effort_from_suffix,
                got.service_tier.as_deref()
            ),
            (None, false, Some("priority"))
        );
        let got = r(&t, "gpt-5.4-auto");
        assert_eq!((got.effort, got.effort_from_suffix), (None, true));
        let got = r(&t, "gpt-5.4");
        assert_eq!(
            got,
            Resolved {
                upstream_model: "gpt-5.4".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn real_names_ending_in_a_level_word_are_not_parsed() {
        let t = ModelTable::builtin();
        assert_eq!(
            r(&t, "gpt-5.1-codex-max").upstream_model,
            "gpt-5.1-codex-max"
        );
        assert!(!r(&t, "gpt-5.1-codex-max").effort_from_suffix);
        let got = r(&t, "gpt-5.1-codex-max-xhigh");
        assert_eq!(
            (got.upstream_model.as_str(), got.effort.as_deref()),
            ("gpt-5.1-codex-max", Some("xhigh"))
        );
        assert_eq!(
            r(&t, "gpt-5-codex-mini-high").upstream_model,
            "gpt-5-codex-mini"
        );
    }

    #[test]
    fn unaccepted_or_repeated_suffixes_on_known_models_are_400_naming_the_model() {
        let t = ModelTable::builtin();
        for (bad, names) in [
            ("gpt-5-none", "`gpt-5`"),
            ("gpt-5-xhigh", "`gpt-5`"),
            ("gpt-5-xhigh-fast", "`gpt-5`"),
            ("gpt-5-100000", "`gpt-5`"),
            ("gpt-5-minimal", "`gpt-5`"),
            ("gpt-5.1-codex-mini-xhigh", "`gpt-5.1-codex-mini`"),
            ("gpt-5.4-high-low", "`gpt-5.4-high-low`"),
            ("gpt-5.4-fast-fast", "`gpt-5.4-fast-fast`"),
            ("gpt-5.9-low-high", "`gpt-5.9-low-high`"),
        ] {
            let e = t.resolve(bad).unwrap_err();
            assert_eq!((e.status, e.code), (400, "model_not_found"), "{bad}");
            assert!(e.message.contains(names), "{bad}: {}", e.message);
        }
        let e = t.resolve("gpt-5-xhigh").unwrap_err();
        assert_eq!(
            e.message,
            "The model `gpt-5` does not take reasoning effort `xhigh` from a name suffix (its \
             suffixes: -low, -medium, -high, -auto; any model also takes -fast)."
        );
    }

    #[test]
    fn a_name_whose_last_segment_is_no_suffix_word_goes_upstream_unchanged() {
        let t = ModelTable::builtin();
        for name in [
            "gpt-5-mini",
            "gpt-5-nano",
            "gpt-5-pro",
            "gpt-5-chat-latest",
            "gpt-5-2025-08-07",
            "gpt-5.4-mini",
            "gpt-5.4-pro",
            "gpt-5.4-turbo",
            "gpt-5.1-codex-mini-2026-0317",
            "gpt-5-codex-preview",
        ] {
            assert_eq!(
                r(&t, name),
                Resolved {
                    upstream_model: name.into(),
                    ..Default::default()
                },
                "{name}"
            );
        }
    }

    #[test]
    fn suffixes_on_real_names_outside_the_table_are_parsed_in_the_gpt5_family() {
        let t = ModelTable::builtin();
        let got = r(&t, "gpt-5-mini-high");
        assert_eq!(
            (got.upstream_model.as_str(), got.effort.as_deref()),
            ("gpt-5-mini", Some("high"))
        );
        let got = r(&t, "gpt-5.4-mini-minimal-fast");
        assert_eq!(
            (
                got.upstream_model.as_str(),
                got.effort.as_deref(),
                got.service_tier.as_deref()
            ),
            ("gpt-5.4-mini", Some("minimal"), Some("priority"))
        );
    }

    #[test]
    fn error_messages_do_not_repeat_names_that_are_not_model_names() {
        let t = ModelTable::builtin();
        for bad in [
            "gpt-5 <script>-high-low".to_owned(),
            format!("gpt-5{}-high-low", "x".repeat(200)),
            "sk-secret-gpt-5-high-low".to_owned(),
        ] {
            // Only the gpt-5 family is parsed; the key-like one is an unknown family.
            if let Err(e) = t.resolve(&bad) {
                assert!(!e.message.contains(&bad), "echoed: {}", e.message);
                assert!(e.message.contains("(as requested)"), "{}", e.message);
            }
        }
        assert_eq!(model_label("sk-abc-high"), "(as requested)");
        assert_eq!(model_label("gpt-5.4-high-low"), "`gpt-5.4-high-low`");
    }

    #[test]
    fn a_readme_alias_to_a_real_name_outside_the_table_loads() {
        let t = ModelTable::from_json(
            br#"{"aliases":{"claude-haiku-4-5":"gpt-5.4-mini","fast-one":"gpt-5-mini-low"}}"#,
        )
        .unwrap();
        assert_eq!(r(&t, "claude-haiku-4-5").upstream_model, "gpt-5.4-mini");
        let got = r(&t, "fast-one");
        assert_eq!(
            (got.upstream_model.as_str(), got.effort.as_deref()),
            ("gpt-5-mini", Some("low"))
        );
    }

    #[test]
    fn budgets_map_to_levels() {
        assert_eq!(budget_effort(0), "none");
        assert_eq!(budget_effort(1024), "low");
        assert_eq!(budget_effort(1025), "medium");
        assert_eq!(budget_effort(8192), "medium");
        assert_eq!(budget_effort(24576), "high");
        assert_eq!(budget_effort(32768), "xhigh");
        assert_eq!(budget_effort(100_000), "xhigh");
        let t = ModelTable::builtin();
        assert_eq!(r(&t, "gpt-5-8192").effort.as_deref(), Some("medium"));
    }

    #[test]
    fn unknown_models_pass_and_newer_gpt5_names_parse() {
        let t = ModelTable::builtin();
        assert_eq!(
            r(&t, "gpt-4.1-mini"),
            Resolved {
                upstream_model: "gpt-4.1-mini".into(),
                ..Default::default()
            }
        );
        assert_eq!(r(&t, "qwen3-high").upstream_model, "qwen3-high");
        let got = r(&t, "gpt-5.9-high-fast");
        assert_eq!(
            (got.upstream_model.as_str(), got.effort.as_deref()),
            ("gpt-5.9", Some("high"))
        );
        assert!(t.resolve("").is_err());
    }

    const CONFIG: &str = r#"{
        "aliases": {"claude-opus-4-8": "gpt-5.4-high", "claude-haiku-4-5": "gpt-5.4-fast"},
        "models": {
            "gpt-5.4": {"default_effort": "medium", "params": {"temperature": 0.2, "top_p": 0.9},
                        "append_to_last_user": "Answer briefly.", "think_tags": "strip"},
            "qwen3": {"efforts": ["low", "high"], "think_tags": "reasoning"}
        }
    }"#;

    #[test]
    fn config_aliases_defaults_and_params() {
        let t = ModelTable::from_json(CONFIG.as_bytes()).unwrap();
        let got = r(&t, "claude-opus-4-8");
        assert_eq!(got.upstream_model, "gpt-5.4");
        assert_eq!(got.effort.as_deref(), Some("high"));
        assert_eq!(got.default_effort.as_deref(), Some("medium"));
        assert_eq!(got.think, ThinkMode::Strip);
        let got = r(&t, "qwen3-high");
        assert_eq!(
            (got.upstream_model.as_str(), got.think),
            ("qwen3", ThinkMode::Reasoning)
        );
        assert!(t.resolve("qwen3-medium").is_err());

        let mut body = json!({"model":"claude-opus-4-8","reasoning":{"effort":"low","summary":"auto"},
            "input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]},
                     {"type":"message","role":"assistant","content":[{"type":"output_text","text":"yo"}]}]});
        assert!(t.rewrite_responses(&mut body).unwrap());
        assert_eq!(
            body,
            json!({"model":"gpt-5.4","reasoning":{"effort":"high","summary":"auto"},
            "temperature":0.2,"top_p":0.9,
            "input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"},{"type":"input_text","text":"Answer briefly."}]},
                     {"type":"message","role":"assistant","content":[{"type":"output_text","text":"yo"}]}]})
        );

        // Default effort only when the body has none; a string input gets the text appended.
        let mut body = json!({"model":"gpt-5.4","input":"hi"});
        assert!(t.rewrite_responses(&mut body).unwrap());
        assert_eq!(
            body,
            json!({"model":"gpt-5.4","input":"hi\n\nAnswer briefly.","reasoning":{"effort":"medium"},"temperature":0.2,"top_p":0.9})
        );
        let mut body = json!({"model":"gpt-5.4","reasoning":{"effort":"low"},"input":[]});
        t.rewrite_responses(&mut body).unwrap();
        assert_eq!(body["reasoning"], json!({"effort":"low"}));
    }

    #[test]
    fn rewrite_reports_no_change_for_plain_known_models() {
        let t = ModelTable::builtin();
        let mut body = json!({"model":"gpt-5.4","input":[],"reasoning":{"effort":"high"}});
        assert!(!t.rewrite_responses(&mut body).unwrap());
        let mut body = json!({"input":[]});
        assert!(!t.rewrite_responses(&mut body).unwrap());
        let mut body =
            json!({"model":"gpt-5.4-auto","reasoning_effort":"high","reasoning":{"effort":"high"}});
        assert!(t.rewrite_responses(&mut body).unwrap());
        assert_eq!(body, json!({"model":"gpt-5.4"}));
    }

    #[test]
    fn bad_configs_are_rejected_with_the_key() {
        for (bad, needle) in [
            (
                r#"{"aliases":{"a":"gpt-5-xhigh"}}"#,
                "alias \"a\": The model `gpt-5`",
            ),
            (r#"{"aliases":{"gpt-5.4":"gpt-5"}}"#, "hides"),
            (r#"{"aliases":{"a":"b","b":"gpt-5"}}"#, "another alias"),
            (
                r#"{"models":{"m":{"default_effort":"huge"}}}"#,
                "default_effort",
            ),
            (
                r#"{"models":{"m":{"params":{"model":"x"}}}}"#,
                "params.model",
            ),
            (r#"{"models":{"m":{"tempreature":1}}}"#, "not a valid"),
            (r#"{"models":{"m":{"think_tags":"maybe"}}}"#, "not a valid"),
            ("[]", "not a valid"),
        ] {
            let e = ModelTable::from_json(bad.as_bytes()).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn lists_have_variants_and_aliases_in_both_shapes() {
        let t = ModelTable::from_json(CONFIG.as_bytes()).unwrap();
        let openai = t.list(false);
        let ids: Vec<&str> = openai["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        for id in [
            "gpt-5.4",
            "gpt-5.4-high",
            "gpt-5.4-xhigh-fast",
            "gpt-5.4-fast",
            "gpt-5.1-codex-max",
            "claude-opus-4-8",
            "qwen3-low",
        ] {
            assert!(ids.contains(&id), "{id}");
        }
        assert!(!ids.contains(&"gpt-5-xhigh"));
        assert_eq!(ids.iter().filter(|i| **i == "gpt-5.1-codex-max").count(), 1);
        for id in &ids {
            t.resolve(id)
                .unwrap_or_else(|_| panic!("listed id {id} must resolve"));
        }
        assert_eq!(openai["object"], "list");
        assert_eq!(
            openai["data"][0],
            json!({"id":"gpt-5","object":"model","created":LIST_CREATED,"owned_by":"openai"})
        );
        let anthropic = t.list(true);
        assert_eq!(
            anthropic["data"][0],
            json!({"type":"model","id":"gpt-5","display_name":"gpt-5","created_at":"2025-01-01T00:00:00Z"})
        );
        assert_eq!(anthropic["has_more"], false);
        assert_eq!(anthropic["first_id"], "gpt-5");
        assert_eq!(anthropic["last_id"], "claude-opus-4-8");
    }
}
