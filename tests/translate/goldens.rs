//! Golden fixtures: see the crate docs. Layout per case `<name>` in a dialect directory:
//! `<name>.request.json` (client request), optional `<name>.models.json` (`--models` file),
//! then either `<name>.error.json` (`{"status","code"}` of the expected refusal) or
//! `<name>.upstream.json` (the expected Responses request); optional `<name>.upstream.sse`
//! (an upstream transcript) with `<name>.expected.sse` (the client stream) and
//! `<name>.expected.json` (`{"status","body"}` of the non-stream answer).
//!
//! `TRANSLATE_BLESS=1` writes goldens that do not exist yet (never overwrites): review them
//! before committing.

use std::path::{Path, PathBuf};

use codex_proxy::translate::models::ModelTable;
use codex_proxy::translate::{
    map_request, AggregatePipeline, Dialect, ResponseContext, StreamPipeline,
};
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use crate::props::assert_valid_sse;

fn dir(dialect: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/translate")
        .join(dialect)
}

fn bless() -> bool {
    std::env::var_os("TRANSLATE_BLESS").is_some()
}

/// Compares with a golden file, or writes it in bless mode when it is missing.
pub fn golden(path: &Path, actual: &[u8], json: bool) {
    if !path.exists() {
        assert!(
            bless(),
            "missing golden {} (run with TRANSLATE_BLESS=1 to create)",
            path.display()
        );
        let bytes = if json {
            let mut v =
                serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(actual).unwrap())
                    .unwrap();
            v.push(b'\n');
            v
        } else {
            actual.to_vec()
        };
        std::fs::write(path, bytes).unwrap();
        return;
    }
    let expected = std::fs::read(path).unwrap();
    if json {
        let e: Value = serde_json::from_slice(&expected).unwrap();
        let a: Value = serde_json::from_slice(actual).unwrap();
        assert_eq!(a, e, "{}", path.display());
    } else {
        assert_eq!(
            String::from_utf8_lossy(actual),
            String::from_utf8_lossy(&expected),
            "{}",
            path.display()
        );
    }
}

/// The client stream for `upstream` fed in pieces cut at `splits`.
pub fn stream(ctx: &ResponseContext, upstream: &[u8], splits: &[usize]) -> Vec<u8> {
    let mut p = StreamPipeline::new(ctx);
    let mut out = Vec::new();
    let mut start = 0;
    for &end in splits.iter().chain(std::iter::once(&upstream.len())) {
        p.push(&upstream[start..end], &mut out);
        start = end;
    }
    p.finish(None, &mut out);
    out
}

fn aggregate(ctx: &ResponseContext, upstream: &[u8], splits: &[usize]) -> Value {
    let mut p = AggregatePipeline::new(ctx);
    let mut start = 0;
    for &end in splits.iter().chain(std::iter::once(&upstream.len())) {
        p.push(&upstream[start..end]);
        start = end;
    }
    let r = p.finish(None);
    json!({"status": r.status, "body": serde_json::from_slice::<Value>(&r.body).unwrap()})
}

/// Split points: all of them for short transcripts, else a 1 KiB window at each end.
pub fn split_points(len: usize) -> Vec<usize> {
    if len <= 4096 {
        (0..=len).collect()
    } else {
        (0..1024).chain(len - 1024..=len).collect()
    }
}

fn replay(name: &str, ctx: &ResponseContext, upstream: &[u8]) -> (Vec<u8>, Value) {
    let whole = stream(ctx, upstream, &[]);
    let whole_agg = aggregate(ctx, upstream, &[]);
    for i in split_points(upstream.len()) {
        assert_eq!(
            stream(ctx, upstream, &[i]),
            whole,
            "{name}: stream split at {i}"
        );
    }
    for i in split_points(upstream.len()).into_iter().step_by(7) {
        assert_eq!(
            aggregate(ctx, upstream, &[i]),
            whole_agg,
            "{name}: aggregate split at {i}"
        );
    }
    let bytes: Vec<usize> = (1..upstream.len()).collect();
    assert_eq!(
        stream(ctx, upstream, &bytes),
        whole,
        "{name}: stream byte by byte"
    );
    assert_eq!(
        aggregate(ctx, upstream, &bytes),
        whole_agg,
        "{name}: aggregate byte by byte"
    );
    (whole, whole_agg)
}

fn run_dialect(dialect: Dialect, name: &str) -> usize {
    let dir = dir(name);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let f = e.unwrap().file_name().into_string().unwrap();
            f.strip_suffix(".request.json").map(str::to_owned)
        })
        .collect();
    names.sort();
    for case in &names {
        let file = |ext: &str| dir.join(format!("{case}.{ext}"));
        let models = match std::fs::read(file("models.json")) {
            Ok(bytes) => ModelTable::from_json(&bytes).unwrap(),
            Err(_) => ModelTable::builtin(),
        };
        let request = std::fs::read(file("request.json")).unwrap();
        let mapped = map_request(dialect, &request, &models);
        if file("error.json").exists() || (bless() && mapped.is_err()) {
            let e = mapped.expect_err(case);
            let actual = json!({"status": e.status, "code": e.code});
            golden(
                &file("error.json"),
                &serde_json::to_vec(&actual).unwrap(),
                true,
            );
            continue;
        }
        let mapped = mapped.unwrap_or_else(|e| panic!("{case}: {e}"));
        golden(
            &file("upstream.json"),
            &serde_json::to_vec(&mapped.body).unwrap(),
            true,
        );
        assert_eq!(
            mapped.body["stream"], true,
            "{case}: upstream always streams"
        );
        let Ok(upstream) = std::fs::read(file("upstream.sse")) else {
            continue;
        };
        let (client, rendered) = replay(case, &mapped.context, &upstream);
        assert_valid_sse(&client);
        golden(&file("expected.sse"), &client, false);
        golden(
            &file("expected.json"),
            &serde_json::to_vec(&rendered).unwrap(),
            true,
        );
    }
    names.len()
}

#[test]
fn chat_goldens() {
    assert!(run_dialect(Dialect::Chat, "chat") >= 20);
}

#[test]
fn responses_goldens() {
    assert!(run_dialect(Dialect::Responses, "responses") >= 3);
}
