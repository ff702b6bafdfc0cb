//! The `--config` file (TOML): read once at start, every unknown key an error naming the file,
//! the line and the key (exit 2).
//!
//! Today only `[users.NAME]` and `[users."*"]` sections are accepted: `models`
//! globs, `max_concurrent`, and `token_budget` with `budget_window`. The other sections the
//! file will hold (`[providers.*]`, `[models.*]`, `[aliases]`) are refused as "not supported
//! yet": the proxy never accepts a policy it does not enforce.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::glob::Glob;
use crate::server::policy::{Budget, BudgetWindow, UserPolicy};

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
    token_budget: Option<Spanned<u64>>,
    budget_window: Option<Spanned<String>>,
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
