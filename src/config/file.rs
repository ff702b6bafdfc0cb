//! The `--config` file (TOML): read once at start, every unknown key an error naming the file,
//! the line and the key (exit 2).
//!
//! Today only `[users.NAME]` and `[users."*"]` sections are accepted: `models`
//! globs and `max_concurrent`. The other sections the file will hold (`[providers.*]`,
//! `[models.*]`, `[aliases]`) and the budget keys (`token_budget`, `budget_window`) are
//! refused as "not supported yet": the proxy never accepts a policy it does not enforce.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::glob::Glob;
use crate::server::policy::UserPolicy;

/// The largest `--config` file read, in bytes (a policy file is a few lines).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    users: BTreeMap<String, Spanned<RawUser>>,
    providers: Option<serde::de::IgnoredAny>,
    models: Option<serde::de::IgnoredAny>,
    aliases: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    models: Option<Vec<Spanned<String>>>,
    max_concurrent: Option<Spanned<u32>>,
    token_budget: Option<Spanned<toml::Value>>,
    budget_window: Option<Spanned<toml::Value>>,
}

/// Parses and validates the text of a `--config` file.
pub fn parse(text: &str) -> Result<ConfigFile, FileError> {
    let line_of = |span: Range<usize>| line_at(text, span.start);
    let raw: RawFile = toml::from_str(text).map_err(|e| FileError {
        line: e.span().map(|s| line_at(text, s.start)),
        reason: e.message().trim().to_string(),
    })?;
    for (section, value) in [
        ("providers", raw.providers.is_some()),
        ("models", raw.models.is_some()),
        ("aliases", raw.aliases.is_some()),
    ] {
        if value {
            return Err(FileError {
                line: section_line(text, section),
                reason: format!(
                    "[{section}] is not supported yet by this version (only [users] sections are)"
                ),
            });
        }
    }
    let mut users = Vec::with_capacity(raw.users.len());
    for (name, section) in raw.users {
        let line = line_of(section.span());
        let raw = section.into_inner();
        for (key, value) in [
            ("token_budget", &raw.token_budget),
            ("budget_window", &raw.budget_window),
        ] {
            if let Some(value) = value {
                return Err(FileError {
                    line: Some(line_of(value.span())),
                    reason: format!(
                        "users.{name}: `{key}` is not supported yet by this version (token \
                         budgets are not enforced, so they are refused rather than ignored)"
                    ),
                });
            }
        }
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
        users.push(UserSection {
            name,
            line,
            policy: UserPolicy {
                models,
                max_concurrent,
            },
        });
    }
    // File order, so a later duplicate is the one reported.
    users.sort_by_key(|u| u.line);
    Ok(ConfigFile { users })
}

/// The first line (1-based) that opens or sets top-level `section`: `[section…`,
/// `[[section…`, `section.…` or `section =` (toml's spans do not cover a dotted table).
fn section_line(text: &str, section: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start().trim_start_matches('[').trim_start();
            line.strip_prefix(section)
                .is_some_and(|rest| rest.trim_start().starts_with(['.', ']', '=']))
        })
        .map(|i| i + 1)
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

    #[test]
    fn other_sections_are_not_supported_yet_and_named() {
        for (text, section, line) in [
            (
                "[users.a]\n\n[providers.local]\nkind = \"chat\"\n",
                "[providers]",
                3,
            ),
            (
                "[models.\"qwen3\"]\nthink_tags = \"strip\"\n",
                "[models]",
                1,
            ),
            ("[aliases]\n\"a\" = \"b\"\n", "[aliases]", 1),
        ] {
            let e = err(text);
            assert!(e.reason.contains(section), "{}", e.reason);
            assert!(e.reason.contains("not supported yet"), "{}", e.reason);
            assert_eq!(e.line, Some(line), "{text}");
        }
    }

    #[test]
    fn budgets_are_refused_rather_than_ignored() {
        let e = err("[users.alice]\ntoken_budget = 1000\n");
        assert_eq!(e.line, Some(2));
        assert!(e.reason.contains("token_budget") && e.reason.contains("not supported yet"));
        let e = err("[users.\"*\"]\nmodels = [\"*\"]\nbudget_window = \"1d\"\n");
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("budget_window"));
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
