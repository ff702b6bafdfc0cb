//! Responses events → one Response object, for clients that did not ask for a stream.
//!
//! The upstream is always asked for a stream; a non-streaming client gets this aggregate,
//! rendered in its dialect. `response.completed.response.output` can be `[]` even though the
//! stream carried text and tool calls (`docs/upstream-contract.md`, "Codex backend: answers"),
//! so the output is rebuilt
//! from the events: each item is taken from its `output_item.done` (the reliable source),
//! else from the terminal `output` entry with the same id, else rebuilt from
//! `output_item.added` plus the deltas seen for it (every content part, every summary part).
//! Items that appear only in the terminal `output` are appended. Items without an id get one.
//!
//! Delta events are parsed into borrowed structs and appended to strings: no
//! `serde_json::Value` is built per delta.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{status_for_upstream_code, Interruption};
use super::events::{Delta, Failed};

/// How the upstream stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `response.completed`.
    Completed,
    /// `response.incomplete`, with `incomplete_details.reason` (`max_output_tokens`,
    /// `content_filter`, …).
    Incomplete {
        /// The upstream's reason, if it gave one.
        reason: Option<String>,
    },
    /// `response.failed` or an `error` event.
    Failed(Failure),
    /// The stream ended (or broke, or went silent) before a terminal event.
    Truncated {
        /// What stopped it: the answer's status and code.
        cause: Interruption,
        /// What happened, for the client's error message.
        message: String,
    },
}

/// An upstream failure, with the HTTP status it maps to (`docs/upstream-contract.md`, "Errors and
/// the statuses they map to").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The status to answer with when nothing was sent yet.
    pub status: u16,
    /// The upstream's error code (or type), `upstream_error` when it gave none.
    pub code: String,
    /// The upstream's message.
    pub message: String,
}

/// The aggregated answer: the Response object (with `output` rebuilt) and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// A Responses `response` object: the last snapshot the stream carried, with `output`
    /// rebuilt from the events.
    pub response: Value,
    /// How the stream ended.
    pub outcome: Outcome,
}

impl Aggregate {
    /// The rebuilt output items.
    pub fn output(&self) -> &[Value] {
        self.response
            .get("output")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The terminal event's usage, if any.
    pub fn usage(&self) -> Option<&Value> {
        self.response.get("usage").filter(|u| u.is_object())
    }
}

/// Reads the failure in a `response.failed` or `error` event's data.
pub fn failure_of(event_type: &str, data: &[u8]) -> Failure {
    let parsed: Option<Failed> = serde_json::from_slice(data).ok();
    let (code, message, explicit) = match parsed {
        Some(f) => {
            let object = f.response.and_then(|r| r.error).or(f.error);
            match object {
                Some(e) => {
                    let kind = e.kind.filter(|k| k != "error");
                    (
                        e.code.or(kind).or(f.code),
                        e.message.or(f.message),
                        e.status_code.or(e.status).or(f.status_code),
                    )
                }
                None => (f.code, f.message, f.status_code),
            }
        }
        None => (None, None, None),
    };
    let code = code.map_or_else(|| "upstream_error".to_owned(), Cow::into_owned);
    let message = message.map_or_else(
        || {
            if event_type == "error" {
                "The upstream reported an error.".to_owned()
            } else {
                "The upstream response failed.".to_owned()
            }
        },
        Cow::into_owned,
    );
    let status = explicit
        .filter(|s| (400..=599).contains(s))
        .unwrap_or_else(|| status_for_upstream_code(&code));
    Failure {
        status,
        code,
        message,
    }
}

#[derive(Debug, Default)]
struct ItemAcc {
    id: Option<String>,
    output_index: Option<u64>,
    added: Option<Value>,
    done: Option<Value>,
    text: BTreeMap<u64, String>,
    text_done: BTreeMap<u64, String>,
    refusal: BTreeMap<u64, String>,
    summary: BTreeMap<u64, String>,
    summary_done: BTreeMap<u64, String>,
    reasoning_text: BTreeMap<u64, String>,
    arguments: String,
    arguments_done: Option<String>,
}

/// Feeds on Responses events; see the module docs.
#[derive(Debug, Default)]
pub struct Aggregator {
    response: Option<Map<String, Value>>,
    items: Vec<ItemAcc>,
    outcome: Option<Outcome>,
}

#[derive(Deserialize)]
struct ItemEvent {
    output_index: Option<u64>,
    item: Option<Value>,
}

#[derive(Deserialize)]
struct ResponseEvent {
    response: Option<Map<String, Value>>,
}

impl Aggregator {
    /// An aggregator at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once a terminal event was seen (later events are ignored).
    pub fn saw_terminal(&self) -> bool {
        self.outcome.is_some()
    }

    fn acc(&mut self, id: Option<&str>, output_index: Option<u64>) -> &mut ItemAcc {
        let pos = self.items.iter().position(|it| match (id, &it.id) {
            (Some(id), Some(have)) => id == have,
            (Some(_), None) | (None, _) => {
                output_index.is_some() && it.output_index == output_index
            }
        });
        let pos = match pos {
            Some(p) => p,
            None => {
                self.items.push(ItemAcc {
                    id: id.map(str::to_owned),
                    output_index,
                    ..Default::default()
                });
                self.items.len() - 1
            }
        };
        let it = &mut self.items[pos];
        if it.id.is_none() {
            it.id = id.map(str::to_owned);
        }
        if it.output_index.is_none() {
            it.output_index = output_index;
        }
        it
    }

    /// Takes the fields of a `response` snapshot, keeping earlier fields a later snapshot
    /// leaves out (a terminal event without `created_at` keeps the one from `created`).
    fn snapshot(&mut self, data: &[u8]) {
        if let Ok(ResponseEvent { response: Some(r) }) = serde_json::from_slice(data) {
            match &mut self.response {
                Some(have) => have.extend(r),
                None => self.response = Some(r),
            }
        }
    }

    /// Feeds one event: its `type` and the raw JSON of its data.
    pub fn event(&mut self, event_type: &str, data: &[u8]) {
        if self.outcome.is_some() {
            return;
        }
        match event_type {
            "response.created" | "response.in_progress" => self.snapshot(data),
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.snapshot(data);
                self.outcome = Some(match event_type {
                    "response.completed" => Outcome::Completed,
                    "response.incomplete" => Outcome::Incomplete {
                        reason: self
                            .response
                            .as_ref()
                            .and_then(|r| r.get("incomplete_details"))
                            .and_then(|d| d.get("reason"))
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    },
                    _ => Outcome::Failed(failure_of(event_type, data)),
                });
            }
            "error" => self.outcome = Some(Outcome::Failed(failure_of(event_type, data))),
            "response.output_item.added" | "response.output_item.done" => {
                let Ok(ItemEvent {
                    output_index,
                    item: Some(item),
                }) = serde_json::from_slice(data)
                else {
                    return;
                };
                let id = item.get("id").and_then(Value::as_str).map(str::to_owned);
                let acc = self.acc(id.as_deref(), output_index);
                if event_type.ends_with("added") {
                    acc.added = Some(item);
                } else {
                    acc.done = Some(item);
                }
            }
            _ => self.delta(event_type, data),
        }
    }

    fn delta(&mut self, event_type: &str, data: &[u8]) {
        let Some(kind) = event_type.strip_prefix("response.") else {
            return;
        };
        if !matches!(
            kind,
            "output_text.delta"
                | "output_text.done"
                | "refusal.delta"
                | "refusal.done"
                | "reasoning_summary_text.delta"
                | "reasoning_summary_text.done"
                | "reasoning_text.delta"
                | "reasoning_text.done"
                | "function_call_arguments.delta"
                | "function_call_arguments.done"
                | "custom_tool_call_input.delta"
                | "custom_tool_call_input.done"
        ) {
            return;
        }
        let Ok(d) = serde_json::from_slice::<Delta>(data) else {
            return;
        };
        let content = d.content_index.unwrap_or(0);
        let summary = d.summary_index.unwrap_or(0);
        let acc = self.acc(d.item_id.as_deref(), d.output_index);
        let delta = d.delta.as_deref().unwrap_or("");
        match kind {
            "output_text.delta" => acc.text.entry(content).or_default().push_str(delta),
            "output_text.done" => {
                if let Some(t) = d.text {
                    acc.text_done.insert(content, t.into_owned());
                }
            }
            "refusal.delta" => acc.refusal.entry(content).or_default().push_str(delta),
            "refusal.done" => {
                if let Some(r) = d.refusal {
                    acc.refusal.insert(content, r.into_owned());
                }
            }
            "reasoning_summary_text.delta" => {
                acc.summary.entry(summary).or_default().push_str(delta)
            }
            "reasoning_summary_text.done" => {
                if let Some(t) = d.text {
                    acc.summary_done.insert(summary, t.into_owned());
                }
            }
            "reasoning_text.delta" => acc
                .reasoning_text
                .entry(content)
                .or_default()
                .push_str(delta),
            "reasoning_text.done" => {
                if let Some(t) = d.text {
                    acc.reasoning_text.insert(content, t.into_owned());
                }
            }
            "function_call_arguments.delta" | "custom_tool_call_input.delta" => {
                acc.arguments.push_str(delta)
            }
            "function_call_arguments.done" => {
                acc.arguments_done = d.arguments.map(Cow::into_owned);
            }
            "custom_tool_call_input.done" => acc.arguments_done = d.input.map(Cow::into_owned),
            _ => {}
        }
    }

    /// The stream ended. `failure` is what stopped it and the client's message; it only
    /// counts when no terminal event was seen.
    pub fn finish(self, failure: Option<(Interruption, &str)>) -> Aggregate {
        let (cause, message) = failure.unwrap_or((
            Interruption::Truncated,
            "The upstream stream ended before the response was complete.",
        ));
        let outcome = self.outcome.clone().unwrap_or_else(|| Outcome::Truncated {
            cause,
            message: message.to_owned(),
        });
        let mut response = self.response.clone().unwrap_or_default();
        let terminal_output: Vec<Value> = response
            .get("output")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut output = Vec::with_capacity(self.items.len().max(terminal_output.len()));
        let mut used_terminal = vec![false; terminal_output.len()];
        for acc in self.items {
            let from_terminal = acc.id.as_deref().and_then(|id| {
                terminal_output
                    .iter()
                    .position(|t| t.get("id").and_then(Value::as_str) == Some(id))
            });
            if let Some(i) = from_terminal {
                used_terminal[i] = true;
            }
            let item = match (acc.done.is_some(), from_terminal) {
                (true, _) => acc.done,
                (false, Some(i)) => terminal_output.get(i).cloned(),
                (false, None) => rebuild(acc).map(|mut item| {
                    // Rebuilt from `added`, which says `in_progress`: the item ended with the
                    // response.
                    if item.get("status").and_then(Value::as_str) == Some("in_progress") {
                        let status = match outcome {
                            Outcome::Completed => "completed",
                            _ => "incomplete",
                        };
                        item["status"] = Value::String(status.into());
                    }
                    item
                }),
            };
            output.extend(item);
        }
        for (i, item) in terminal_output.into_iter().enumerate() {
            if !used_terminal[i] {
                output.push(item);
            }
        }
        for (n, item) in output.iter_mut().enumerate() {
            if let Some(obj) = item.as_object_mut() {
                if !obj.get("id").is_some_and(Value::is_string) {
                    obj.insert("id".into(), Value::String(format!("item_{n}")));
                }
            }
        }
        response.insert("output".into(), Value::Array(output));
        Aggregate {
            response: Value::Object(response),
            outcome,
        }
    }
}

/// An item from `output_item.added` (if seen) and the deltas for it.
fn rebuild(acc: ItemAcc) -> Option<Value> {
    let mut item = match acc.added {
        Some(Value::Object(m)) => m,
        _ => {
            // No `added` either: infer the type from what the deltas were.
            let mut m = Map::new();
            let kind =
                if !acc.text.is_empty() || !acc.text_done.is_empty() || !acc.refusal.is_empty() {
                    m.insert("role".into(), "assistant".into());
                    "message"
                } else if !acc.summary.is_empty() || !acc.reasoning_text.is_empty() {
                    "reasoning"
                } else if !acc.arguments.is_empty() || acc.arguments_done.is_some() {
                    "function_call"
                } else {
                    return None;
                };
            m.insert("type".into(), kind.into());
            if let Some(id) = &acc.id {
                m.insert("id".into(), id.as_str().into());
            }
            m
        }
    };
    match item.get("type").and_then(Value::as_str) {
        Some("message") => {
            let mut parts: BTreeMap<u64, Value> = BTreeMap::new();
            let mut text = acc.text;
            text.extend(acc.text_done);
            for (i, t) in text {
                parts.insert(
                    i,
                    serde_json::json!({"type":"output_text","text":t,"annotations":[]}),
                );
            }
            for (i, r) in acc.refusal {
                parts.insert(i, serde_json::json!({"type":"refusal","refusal":r}));
            }
            if !parts.is_empty() || !item.contains_key("content") {
                item.insert(
                    "content".into(),
                    Value::Array(parts.into_values().collect()),
                );
            }
        }
        Some("reasoning") => {
            let mut summary = acc.summary;
            summary.extend(acc.summary_done);
            if !summary.is_empty() || !item.contains_key("summary") {
                let parts = summary
                    .into_values()
                    .map(|t| serde_json::json!({"type":"summary_text","text":t}))
                    .collect();
                item.insert("summary".into(), Value::Array(parts));
            }
            if !acc.reasoning_text.is_empty() {
                let parts = acc
                    .reasoning_text
                    .into_values()
                    .map(|t| serde_json::json!({"type":"reasoning_text","text":t}))
                    .collect();
                item.insert("content".into(), Value::Array(parts));
            }
        }
        Some("function_call") => {
            let args = acc.arguments_done.unwrap_or(acc.arguments);
            if !args.is_empty() || !item.contains_key("arguments") {
                item.insert("arguments".into(), Value::String(args));
            }
        }
        Some("custom_tool_call") => {
            let input = acc.arguments_done.unwrap_or(acc.arguments);
            if !input.is_empty() || !item.contains_key("input") {
                item.insert("input".into(), Value::String(input));
            }
        }
        _ => {}
    }
    Some(Value::Object(item))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn feed(events: &[(&str, Value)], failure: Option<(Interruption, &str)>) -> Aggregate {
        let mut agg = Aggregator::new();
        for (t, v) in events {
            agg.event(t, &serde_json::to_vec(v).unwrap());
        }
        agg.finish(failure)
    }

    #[test]
    fn empty_completed_output_is_rebuilt_from_events() {
        let agg = feed(
            &[
                (
                    "response.created",
                    json!({"response":{"id":"r1","model":"gpt-5.4","status":"in_progress","output":[]}}),
                ),
                (
                    "response.output_item.added",
                    json!({"output_index":0,"item":{"id":"rs1","type":"reasoning","summary":[]}}),
                ),
                (
                    "response.reasoning_summary_text.delta",
                    json!({"item_id":"rs1","summary_index":0,"delta":"Plan"}),
                ),
                (
                    "response.reasoning_summary_text.delta",
                    json!({"item_id":"rs1","summary_index":1,"delta":"More"}),
                ),
                (
                    "response.output_item.added",
                    json!({"output_index":1,"item":{"id":"m1","type":"message","role":"assistant","content":[]}}),
                ),
                (
                    "response.output_text.delta",
                    json!({"item_id":"m1","content_index":0,"delta":"Hel"}),
                ),
                (
                    "response.output_text.delta",
                    json!({"item_id":"m1","content_index":0,"delta":"lo"}),
                ),
                (
                    "response.output_text.delta",
                    json!({"item_id":"m1","content_index":1,"delta":" again"}),
                ),
                (
                    "response.output_item.added",
                    json!({"output_index":2,"item":{"id":"fc1","type":"function_call","call_id":"call_1","name":"f","arguments":""}}),
                ),
                (
                    "response.function_call_arguments.delta",
                    json!({"item_id":"fc1","delta":"{\"a\":"}),
                ),
                (
                    "response.function_call_arguments.delta",
                    json!({"item_id":"fc1","delta":"1}"}),
                ),
                (
                    "response.completed",
                    json!({"response":{"id":"r1","model":"gpt-5.4","status":"completed","output":[],"usage":{"input_tokens":3}}}),
                ),
            ],
            None,
        );
        assert_eq!(agg.outcome, Outcome::Completed);
        assert_eq!(
            agg.response,
            json!({"id":"r1","model":"gpt-5.4","status":"completed","usage":{"input_tokens":3},"output":[
                {"id":"rs1","type":"reasoning","summary":[{"type":"summary_text","text":"Plan"},{"type":"summary_text","text":"More"}]},
                {"id":"m1","type":"message","role":"assistant","content":[
                    {"type":"output_text","text":"Hello","annotations":[]},
                    {"type":"output_text","text":" again","annotations":[]}]},
                {"id":"fc1","type":"function_call","call_id":"call_1","name":"f","arguments":"{\"a\":1}"}
            ]})
        );
    }

    #[test]
    fn done_items_win_and_terminal_only_items_are_appended() {
        let agg = feed(
            &[
                (
                    "response.output_text.delta",
                    json!({"item_id":"m1","output_index":0,"delta":"partial"}),
                ),
                (
                    "response.output_item.done",
                    json!({"output_index":0,"item":{"id":"m1","type":"message","role":"assistant","content":[{"type":"output_text","text":"full"}]}}),
                ),
                (
                    "response.completed",
                    json!({"response":{"id":"r","output":[
                    {"id":"m1","type":"message","content":[]},
                    {"type":"web_search_call","status":"completed"}]}}),
                ),
            ],
            None,
        );
        assert_eq!(
            agg.output(),
            &[
                json!({"id":"m1","type":"message","role":"assistant","content":[{"type":"output_text","text":"full"}]}),
                json!({"id":"item_1","type":"web_search_call","status":"completed"}),
            ]
        );
    }

    #[test]
    fn incomplete_failed_error_and_truncated() {
        let agg = feed(
            &[(
                "response.incomplete",
                json!({"response":{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"}}}),
            )],
            None,
        );
        assert_eq!(
            agg.outcome,
            Outcome::Incomplete {
                reason: Some("max_output_tokens".into())
            }
        );
        let agg = feed(
            &[(
                "response.failed",
                json!({"response":{"status":"failed","error":{"code":"rate_limit_exceeded","message":"slow down"}}}),
            )],
            None,
        );
        assert_eq!(
            agg.outcome,
            Outcome::Failed(Failure {
                status: 429,
                code: "rate_limit_exceeded".into(),
                message: "slow down".into()
            })
        );
        let agg = feed(
            &[(
                "error",
                json!({"type":"error","code":"context_length_exceeded","message":"too long","param":null}),
            )],
            None,
        );
        assert_eq!(
            agg.outcome,
            Outcome::Failed(Failure {
                status: 400,
                code: "context_length_exceeded".into(),
                message: "too long".into()
            })
        );
        let agg = feed(
            &[(
                "error",
                json!({"type":"error","error":{"type":"server_error","message":"boom"}}),
            )],
            None,
        );
        assert_eq!(
            agg.outcome,
            Outcome::Failed(Failure {
                status: 502,
                code: "server_error".into(),
                message: "boom".into()
            })
        );
        let agg = feed(
            &[(
                "response.output_text.delta",
                json!({"item_id":"m","delta":"x"}),
            )],
            Some((Interruption::UpstreamError, "connection reset")),
        );
        assert_eq!(
            agg.outcome,
            Outcome::Truncated {
                cause: Interruption::UpstreamError,
                message: "connection reset".into()
            }
        );
        assert_eq!(agg.output()[0]["content"][0]["text"], "x");
    }

    #[test]
    fn failure_of_tolerates_garbage() {
        let f = failure_of("response.failed", b"not json");
        assert_eq!((f.status, f.code.as_str()), (502, "upstream_error"));
        let f = failure_of(
            "error",
            br#"{"type":"error","code":"x","message":"m","status_code":503}"#,
        );
        assert_eq!(f.status, 503);
    }

    #[test]
    fn events_after_the_terminal_are_ignored() {
        let agg = feed(
            &[
                (
                    "response.completed",
                    json!({"response":{"id":"r","output":[]}}),
                ),
                (
                    "response.output_text.delta",
                    json!({"item_id":"m","delta":"late"}),
                ),
            ],
            Some((Interruption::Idle, "ignored")),
        );
        assert_eq!(agg.outcome, Outcome::Completed);
        assert!(agg.output().is_empty());
    }
}
