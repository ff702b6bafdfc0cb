//! Usage accounting and metrics: what each local user spent, `GET /usage` and `GET /metrics`.
//!
//! Tokens are counted from what the upstream reported for each answer (see
//! [`crate::translate::usage`]), attributed to (user, provider, model, account index) when the
//! request's log line is emitted, i.e. when its response body is done with. The ledger is one
//! mutex'd map; the metrics are `prometheus-client` families (atomics behind a read lock).
//!
//! Label values are bounded and never hold a secret, an email or an account id: `user` is the
//! local user's name (or uid), `account` is the account's index, `provider` its provider's name,
//! `route` the log's route name, and `model` the model the upstream reported, kept only when
//! it is short plain text ([`model_label`]) and only for the first [`MAX_MODEL_LABELS`]
//! distinct models; the rest count under `other` (`docs/usage.md`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::peer::Caller;
use crate::translate::usage::Reported;

/// Distinct model labels kept; later ones count as `other`.
pub const MAX_MODEL_LABELS: usize = 64;
/// Longest model name kept as a label.
pub const MAX_MODEL_LABEL_BYTES: usize = 64;

/// The `&'static` provider label named `label` (a label read back from the `--state-dir`
/// file): any plain provider name (the config file's rule), so usage counted for a provider
/// since removed from the config stays on the books. Each distinct name is made `'static`
/// once, through the same interner the configured providers use.
pub fn provider_label(label: &str) -> Option<&'static str> {
    (label == "none" || crate::config::file::plain_name(label))
        .then(|| crate::upstream::provider::intern_name(label))
}

/// The model as a label: itself when it is at most [`MAX_MODEL_LABEL_BYTES`] of
/// `[A-Za-z0-9._:/@+-]`, else `other`; `unknown` when the upstream named none.
pub fn model_label(model: Option<&str>) -> &str {
    match model {
        None => "unknown",
        Some(m)
            if !m.is_empty()
                && m.len() <= MAX_MODEL_LABEL_BYTES
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:/@+-".contains(&b)) =>
        {
            m
        }
        Some(_) => "other",
    }
}

/// The `user` label: the name, else the uid, else `unknown`.
pub fn user_label(caller: Option<&Caller>) -> String {
    match caller {
        Some(Caller {
            name: Some(name), ..
        }) => name.to_string(),
        Some(c) => c.uid.to_string(),
        None => "unknown".to_string(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
    provider: &'static str,
    user: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: &'static str,
    model: String,
    user: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    provider: &'static str,
    account: usize,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabels {
    provider: &'static str,
    state: &'static str,
}

type Histograms = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 10 ms to about 11 minutes (the longest request deadline is 600 s).
    Histogram::new(exponential_buckets(0.01, 2.0, 17))
}

fn first_byte_histogram() -> Histogram {
    // 5 ms to about 80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// One user's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub input: u64,
    pub cached: u64,
    pub output: u64,
    pub reasoning: u64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input = self.input.saturating_add(other.input);
        self.cached = self.cached.saturating_add(other.cached);
        self.output = self.output.saturating_add(other.output);
        self.reasoning = self.reasoning.saturating_add(other.reasoning);
    }
}

/// What the ledger keys on: (uid, provider, model label's index, account index).
type LedgerKey = (Option<u32>, &'static str, u16, usize);

/// One ledger row, with the token counters of its (provider, model, user) label set.
struct Row {
    totals: Totals,
    /// input, cached_input, output, reasoning.
    tokens: [Counter; 4],
}

/// The metric handles a request needs, found once per label set and then kept, so a
/// finished request costs a map lookup and a few atomic adds, not label hashing and
/// allocation in every family.
#[derive(Default)]
struct Handles {
    requests: HashMap<(&'static str, u16, &'static str, Option<u32>), Counter>,
    routes: HashMap<(&'static str, &'static str), (Histogram, Histogram)>,
}

#[derive(Default)]
struct Ledger {
    rows: BTreeMap<LedgerKey, Row>,
    /// Each uid's user name (as resolved for its last request).
    names: BTreeMap<u32, Option<std::sync::Arc<str>>>,
    /// Model labels in first-seen order, and their index.
    models: Vec<String>,
    model_index: HashMap<String, u16>,
    handles: Handles,
}

impl Ledger {
    /// The index of `model`'s label, within the cap on distinct models.
    fn model(&mut self, model: Option<&str>) -> u16 {
        let label = model_label(model);
        if let Some(i) = self.model_index.get(label) {
            return *i;
        }
        let label = if self.models.len() >= MAX_MODEL_LABELS {
            "other"
        } else {
            label
        };
        if let Some(i) = self.model_index.get(label) {
            return *i;
        }
        let i = u16::try_from(self.models.len()).unwrap_or(u16::MAX);
        self.models.push(label.to_string());
        self.model_index.insert(label.to_string(), i);
        i
    }
}

/// One finished request, as the accounting needs it.
pub struct Finished<'a> {
    pub route: &'static str,
    pub status: u16,
    pub caller: Option<&'a Caller>,
    /// The account that answered, with its provider's name (`None`: no account did).
    pub account: Option<(&'static str, usize)>,
    pub usage: Option<&'a Reported>,
    pub duration: Duration,
    pub first_byte: Option<Duration>,
}

/// The ledger and the metrics (see the module docs).
pub struct Accounting {
    ledger: Mutex<Ledger>,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    duration: Histograms,
    first_byte: Histograms,
    accounts: Family<AccountLabels, Gauge>,
    connections: Gauge,
    /// Held while a scrape rebuilds the gauges and encodes, so two scrapes never interleave.
    scrape: Mutex<()>,
}

impl Default for Accounting {
    fn default() -> Self {
        Self::new()
    }
}

impl Accounting {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let tokens = Family::<TokenLabels, Counter>::default();
        let attempts = Family::<AttemptLabels, Counter>::default();
        let duration: Histograms = Family::new_with_constructor(duration_histogram);
        let first_byte: Histograms = Family::new_with_constructor(first_byte_histogram);
        let accounts = Family::<AccountLabels, Gauge>::default();
        let connections = Gauge::default();
        registry.register(
            "codex_proxy_requests",
            "Requests answered, by route, status, provider and local user",
            requests.clone(),
        );
        registry.register(
            "codex_proxy_tokens",
            "Tokens the upstream reported, by provider, model, local user and kind",
            tokens.clone(),
        );
        registry.register(
            "codex_proxy_upstream_attempts",
            "Upstream attempts, by provider, account index and outcome",
            attempts.clone(),
        );
        registry.register(
            "codex_proxy_request_duration_seconds",
            "Time from a request's arrival to the end of its response body",
            duration.clone(),
        );
        registry.register(
            "codex_proxy_time_to_first_byte_seconds",
            "Time from a request's arrival to the first response body bytes",
            first_byte.clone(),
        );
        registry.register(
            "codex_proxy_accounts",
            "Upstream accounts, by provider and state",
            accounts.clone(),
        );
        registry.register(
            "codex_proxy_connections",
            "Open client connections",
            connections.clone(),
        );
        Accounting {
            ledger: Mutex::new(Ledger::default()),
            registry,
            requests,
            tokens,
            attempts,
            duration,
            first_byte,
            accounts,
            connections,
            scrape: Mutex::new(()),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A ledger row at zero, with the token counters of its label set.
    fn new_row(&self, provider: &'static str, model: &str, user: String) -> Row {
        let counter = |kind: &'static str| {
            self.tokens
                .get_or_create(&TokenLabels {
                    provider,
                    model: model.to_string(),
                    user: user.clone(),
                    kind,
                })
                .clone()
        };
        Row {
            totals: Totals::default(),
            tokens: [
                counter("input"),
                counter("cached_input"),
                counter("output"),
                counter("reasoning"),
            ],
        }
    }

    /// Counts one finished request (and the tokens it reported).
    pub fn finished(&self, done: &Finished<'_>) {
        let provider_label = done.account.map_or("none", |(provider, _)| provider);
        let uid = done.caller.map(|c| c.uid);
        let mut guard = self.ledger();
        let ledger = &mut *guard;
        let handles = &mut ledger.handles;
        handles
            .requests
            .entry((done.route, done.status, provider_label, uid))
            .or_insert_with(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        route: done.route,
                        status: done.status,
                        provider: provider_label,
                        user: user_label(done.caller),
                    })
                    .clone()
            })
            .inc();
        let (duration, first_byte) = handles
            .routes
            .entry((done.route, provider_label))
            .or_insert_with(|| {
                let labels = RouteLabels {
                    route: done.route,
                    provider: provider_label,
                };
                (
                    self.duration.get_or_create(&labels).clone(),
                    self.first_byte.get_or_create(&labels).clone(),
                )
            });
        duration.observe(done.duration.as_secs_f64());
        if let Some(first) = done.first_byte {
            first_byte.observe(first.as_secs_f64());
        }
        // Only requests an account answered are attributed in the ledger.
        let Some((kind, account)) = done.account else {
            return;
        };
        let reported = done.usage;
        let model = ledger.model(reported.and_then(|u| u.model.as_deref()));
        if let Some(caller) = done.caller {
            if ledger.names.get(&caller.uid) != Some(&caller.name) {
                ledger.names.insert(caller.uid, caller.name.clone());
            }
        }
        let model_label = &ledger.models[usize::from(model)];
        let key = (uid, kind, model, account);
        let row = match ledger.rows.entry(key) {
            std::collections::btree_map::Entry::Occupied(row) => row.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(self.new_row(kind, model_label, user_label(done.caller)))
            }
        };
        row.totals.requests = row.totals.requests.saturating_add(1);
        let Some(usage) = reported else {
            return;
        };
        row.totals.add(&Totals {
            requests: 0,
            input: usage.input,
            cached: usage.cached,
            output: usage.output,
            reasoning: usage.reasoning,
        });
        for (counter, n) in
            row.tokens
                .iter()
                .zip([usage.input, usage.cached, usage.output, usage.reasoning])
        {
            counter.inc_by(n);
        }
    }

    /// Counts one upstream attempt on account `index` and how it ended.
    pub fn attempt(&self, provider: &'static str, index: usize, outcome: &'static str) {
        self.attempts
            .get_or_create(&AttemptLabels {
                provider,
                account: index,
                outcome,
            })
            .inc();
    }

    /// The ledger as `--state-dir` keeps it, one record per row.
    pub fn records(&self) -> Vec<super::state_dir::UsageRecord> {
        let ledger = self.ledger();
        ledger
            .rows
            .iter()
            .map(
                |((uid, provider, model, account), row)| super::state_dir::UsageRecord {
                    uid: *uid,
                    user: uid
                        .and_then(|u| ledger.names.get(&u).cloned().flatten())
                        .map(|name| name.to_string()),
                    provider: (*provider).to_string(),
                    model: ledger.models[usize::from(*model)].clone(),
                    account: *account,
                    requests: row.totals.requests,
                    input_tokens: row.totals.input,
                    cached_input_tokens: row.totals.cached,
                    output_tokens: row.totals.output,
                    reasoning_tokens: row.totals.reasoning,
                },
            )
            .collect()
    }

    /// Adds `records` (read back from `--state-dir`) to the ledger and the token counters, as
    /// if their requests had been counted in this run. A record whose provider label is not a
    /// provider name is skipped (the state file's reader refuses those already).
    pub fn restore(&self, records: &[super::state_dir::UsageRecord]) {
        let mut guard = self.ledger();
        let ledger = &mut *guard;
        for record in records {
            let Some(provider) = provider_label(&record.provider) else {
                continue;
            };
            let model = ledger.model(Some(&record.model));
            let name: Option<std::sync::Arc<str>> = record.user.as_deref().map(Into::into);
            if let Some(uid) = record.uid {
                ledger.names.insert(uid, name.clone());
            }
            let caller = record.uid.map(|uid| Caller { uid, name });
            let model_label = &ledger.models[usize::from(model)];
            let row = ledger
                .rows
                .entry((record.uid, provider, model, record.account))
                .or_insert_with(|| {
                    self.new_row(provider, model_label, user_label(caller.as_ref()))
                });
            let totals = Totals {
                requests: record.requests,
                input: record.input_tokens,
                cached: record.cached_input_tokens,
                output: record.output_tokens,
                reasoning: record.reasoning_tokens,
            };
            row.totals.add(&totals);
            for (counter, n) in row.tokens.iter().zip([
                totals.input,
                totals.cached,
                totals.output,
                totals.reasoning,
            ]) {
                counter.inc_by(n);
            }
        }
    }

    /// Each uid's totals (`None`: connections whose owner was not determined), with its name.
    pub fn totals(&self) -> Vec<(Option<u32>, Option<std::sync::Arc<str>>, Totals)> {
        let ledger = self.ledger();
        let mut per_user: BTreeMap<Option<u32>, Totals> = BTreeMap::new();
        for ((uid, ..), row) in &ledger.rows {
            per_user.entry(*uid).or_default().add(&row.totals);
        }
        per_user
            .into_iter()
            .map(|(uid, totals)| {
                let name = uid.and_then(|u| ledger.names.get(&u).cloned().flatten());
                (uid, name, totals)
            })
            .collect()
    }

    /// The `GET /usage` document for `caller`: its own row, or every row for root and the
    /// info owner (`admin`). A caller with nothing counted yet sees a row of zeros.
    pub fn usage_document(&self, caller: Option<&Caller>, admin: bool) -> UsageDocument {
        let mut users: Vec<UsageRow> = self
            .totals()
            .into_iter()
            .filter_map(|(uid, name, totals)| {
                let uid = uid?;
                (admin || caller.is_some_and(|c| c.uid == uid))
                    .then(|| UsageRow::new(uid, name, &totals))
            })
            .collect();
        if let Some(c) = caller {
            if !users.iter().any(|row| row.uid == c.uid) {
                users.push(UsageRow::new(c.uid, c.name.clone(), &Totals::default()));
                users.sort_by_key(|row| row.uid);
            }
        }
        UsageDocument { users }
    }

    /// The Prometheus text exposition, with the gauges read now.
    pub fn exposition(
        &self,
        accounts: &[crate::pool::AccountHealth],
        open_connections: usize,
    ) -> String {
        let _scrape = self
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.accounts.clear();
        for account in accounts {
            self.accounts
                .get_or_create(&AccountLabels {
                    provider: account.provider,
                    state: account.state,
                })
                .inc();
        }
        self.connections
            .set(i64::try_from(open_connections).unwrap_or(i64::MAX));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl crate::upstream::forward::AttemptObserver for Accounting {
    fn attempt(&self, provider: &'static str, index: usize, outcome: &'static str) {
        Accounting::attempt(self, provider, index, outcome);
    }
}

/// `GET /usage`.
#[derive(Debug, Serialize)]
pub struct UsageDocument {
    pub users: Vec<UsageRow>,
}

/// One user's row of `GET /usage`. The budget fields are `null` for a user without a
/// `token_budget`; the route fills them from the policy.
#[derive(Debug, Serialize)]
pub struct UsageRow {
    pub user: Option<String>,
    pub uid: u32,
    pub requests: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub budget: Option<u64>,
    pub remaining: Option<u64>,
    pub window_ends_at: Option<String>,
}

impl UsageRow {
    fn new(uid: u32, user: Option<std::sync::Arc<str>>, totals: &Totals) -> Self {
        UsageRow {
            user: user.map(|u| u.to_string()),
            uid,
            requests: totals.requests,
            input_tokens: totals.input,
            cached_input_tokens: totals.cached,
            output_tokens: totals.output,
            reasoning_tokens: totals.reasoning,
            budget: None,
            remaining: None,
            window_ends_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, name: Option<&str>) -> Caller {
        Caller {
            uid,
            name: name.map(std::sync::Arc::from),
        }
    }

    fn finished<'a>(
        caller: Option<&'a Caller>,
        account: Option<(&'static str, usize)>,
        usage: Option<&'a Reported>,
    ) -> Finished<'a> {
        Finished {
            route: "responses",
            status: 200,
            caller,
            account,
            usage,
            duration: Duration::from_millis(5),
            first_byte: Some(Duration::from_millis(1)),
        }
    }

    #[test]
    fn model_labels_are_short_plain_text() {
        assert_eq!(model_label(Some("gpt-5.4-codex")), "gpt-5.4-codex");
        assert_eq!(model_label(Some("org/model:tag")), "org/model:tag");
        assert_eq!(model_label(Some("a b")), "other");
        assert_eq!(model_label(Some("x\"}")), "other");
        assert_eq!(model_label(Some(&"m".repeat(65))), "other");
        assert_eq!(model_label(Some("")), "other");
        assert_eq!(model_label(None), "unknown");
    }

    #[test]
    fn distinct_models_are_capped() {
        let accounting = Accounting::new();
        let alice = caller(1000, Some("alice"));
        for i in 0..MAX_MODEL_LABELS + 10 {
            let usage = Reported {
                input: 1,
                model: Some(format!("m{i}")),
                ..Default::default()
            };
            accounting.finished(&finished(Some(&alice), Some(("openai", 0)), Some(&usage)));
        }
        let text = accounting.exposition(&[], 0);
        assert!(text.contains("model=\"other\""));
        assert!(!text.contains(&format!("model=\"m{}\"", MAX_MODEL_LABELS)));
        // The first MAX_MODEL_LABELS models, and `other` for the rest.
        assert_eq!(accounting.ledger().models.len(), MAX_MODEL_LABELS + 1);
    }

    #[test]
    fn usage_is_attributed_per_user_and_shown_to_its_owner_or_an_admin() {
        let accounting = Accounting::new();
        let alice = caller(1000, Some("alice"));
        let bob = caller(1001, None);
        let usage = Reported {
            input: 10,
            cached: 4,
            output: 7,
            reasoning: 3,
            model: Some("gpt-5".into()),
        };
        accounting.finished(&finished(Some(&alice), Some(("openai", 0)), Some(&usage)));
        accounting.finished(&finished(Some(&alice), Some(("chatgpt", 1)), Some(&usage)));
        // A request no account answered is not a row; one without a report counts zero tokens.
        accounting.finished(&finished(Some(&bob), None, None));
        accounting.finished(&finished(Some(&bob), Some(("openai", 0)), None));

        let own = accounting.usage_document(Some(&alice), false);
        assert_eq!(own.users.len(), 1);
        let row = &own.users[0];
        assert_eq!(
            (row.uid, row.user.as_deref(), row.requests, row.input_tokens),
            (1000, Some("alice"), 2, 20)
        );
        assert_eq!(
            (
                row.cached_input_tokens,
                row.output_tokens,
                row.reasoning_tokens
            ),
            (8, 14, 6)
        );
        let all = accounting.usage_document(Some(&caller(0, Some("root"))), true);
        let uids: Vec<u32> = all.users.iter().map(|r| r.uid).collect();
        assert_eq!(uids, vec![0, 1000, 1001]);
        assert_eq!(all.users[2].requests, 1);
        assert_eq!(all.users[2].input_tokens, 0);
        let fresh = accounting.usage_document(Some(&caller(2000, None)), false);
        assert_eq!(fresh.users.len(), 1);
        assert_eq!((fresh.users[0].uid, fresh.users[0].requests), (2000, 0));

        let text = accounting.exposition(&[], 3);
        assert!(text.contains(
            "codex_proxy_tokens_total{provider=\"openai\",model=\"gpt-5\",user=\"alice\",kind=\"input\"} 10"
        ));
        assert!(text.contains(
            "codex_proxy_tokens_total{provider=\"chatgpt\",model=\"gpt-5\",user=\"alice\",kind=\"reasoning\"} 3"
        ));
        assert!(text.contains("codex_proxy_connections 3"));
        assert!(text.contains(
            "codex_proxy_requests_total{route=\"responses\",status=\"200\",provider=\"none\",user=\"1001\"} 1"
        ));
    }
}
