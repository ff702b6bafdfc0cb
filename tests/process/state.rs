//! `--state-dir` through the real binary: usage counters and a token budget survive a restart
//! (the budget exhausted before it is still exhausted after); the state is written within a
//! second of a change, not only at shutdown; a corrupt state file and an unsafe directory
//! (open to the group, owned by another user, reached through a symbolic link) are refused
//! with exit 2 naming the problem; and it all works after `--user nobody`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::mock::MockUpstream;
use crate::spawn::{is_root, run_to_exit, start, temp_dir, Launch, Running};
use crate::users::{launch, requests_as};

const NOBODY: u32 = 65534;
const STATE_FILE: &str = "usage.json";

/// A private state directory inside `parent`, owned by `owner` (`None`: this test's user).
fn state_dir(parent: &Path, owner: Option<u32>) -> PathBuf {
    let dir = parent.join("state");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    if let Some(uid) = owner {
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
    }
    dir
}

/// A `--config` that gives every local user 20 tokens a day (the mock's JSON answer reports 10
/// input and 5 output tokens: two requests spend 30).
fn budget_config(parent: &Path) -> String {
    let file = parent.join("users.toml");
    std::fs::write(
        &file,
        "[users.\"*\"]\ntoken_budget = 20\nbudget_window = \"1d\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    file.display().to_string()
}

async fn usage(proxy: &Running) -> Value {
    let request = crate::raw::get(proxy.addr, "/usage", &[]);
    let response = crate::raw::exchange(proxy.addr, &request, Duration::from_secs(10)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

fn own_row(document: &Value) -> Value {
    let uid = nix::unistd::geteuid().as_raw();
    document["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["uid"] == uid)
        .cloned()
        .unwrap_or_else(|| panic!("no row for {uid}: {document}"))
}

fn read_state(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).unwrap()).unwrap()
}

/// Waits until the state file exists and satisfies `ready` (the saver writes within a second).
async fn wait_state(dir: &Path, ready: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..60 {
        if let Ok(bytes) = std::fs::read(dir.join(STATE_FILE)) {
            if let Ok(state) = serde_json::from_slice::<Value>(&bytes) {
                if ready(&state) {
                    return state;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the state file never showed the change: {:?}",
        std::fs::read_to_string(dir.join(STATE_FILE))
    );
}

fn requests_in(state: &Value) -> u64 {
    state["usage"].as_array().map_or(0, |rows| {
        rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_an_exhausted_budget_survive_a_restart() {
    let mock = MockUpstream::start("state").await;
    let dir = temp_dir("state-restart");
    let state = state_dir(&dir, None);
    let config = budget_config(&dir);
    let args = [
        "--config",
        config.as_str(),
        "--state-dir",
        state.to_str().unwrap(),
    ];

    let proxy = start(launch(&mock, &args), &dir);
    // 15 tokens each: the second request starts under the budget and is counted; the third
    // finds it spent.
    let statuses = requests_as(None, &proxy, 3, "POST", "/v1/responses", "").await;
    assert_eq!(statuses, [200, 200, 429]);
    // Written within a second of the change, while the proxy still runs.
    let saved = wait_state(&state, |s| requests_in(s) == 2).await;
    assert_eq!(saved["version"], 1, "{saved}");
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{status}: {logs}");

    let saved = read_state(&state);
    let row = &saved["usage"][0];
    assert_eq!(
        (
            &row["provider"],
            &row["model"],
            &row["account"],
            &row["input_tokens"],
            &row["output_tokens"]
        ),
        (
            &Value::from("openai"),
            &Value::from("mock-model"),
            &Value::from(0),
            &Value::from(20),
            &Value::from(10)
        ),
        "{saved}"
    );
    assert_eq!(saved["budgets"][0]["tokens"], 30, "{saved}");
    assert_eq!(saved["budgets"][0]["window"], "1d", "{saved}");
    let text = std::fs::read_to_string(state.join(STATE_FILE)).unwrap();
    assert!(!text.contains("sk-users-test-key"), "no key in the state");
    let meta = std::fs::metadata(state.join(STATE_FILE)).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        1,
        "no temp file left behind"
    );

    // Restarted on the same directory: the budget is still spent, the counters carry on.
    let proxy = start(launch(&mock, &args), &dir);
    let statuses = requests_as(None, &proxy, 1, "POST", "/v1/responses", "").await;
    assert_eq!(
        statuses,
        [429],
        "the budget spent before the restart still refuses"
    );
    assert_eq!(
        mock.count(),
        2,
        "the upstream saw only the two served requests"
    );
    let row = own_row(&usage(&proxy).await);
    assert_eq!(
        (
            &row["requests"],
            &row["input_tokens"],
            &row["output_tokens"],
            &row["budget"],
            &row["remaining"]
        ),
        (
            &Value::from(2),
            &Value::from(20),
            &Value::from(10),
            &Value::from(20),
            &Value::from(0)
        ),
        "{row}"
    );
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{status}: {logs}");
}

fn refused(args: &[&str]) -> (i32, String) {
    let (status, stderr) = run_to_exit(Launch {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: b"sk-state-test-key\n",
        as_uid: None,
        env: vec![],
    });
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_corrupt_state_file_is_refused_with_exit_2_and_left_as_it_was() {
    let dir = temp_dir("state-corrupt");
    let state = state_dir(&dir, None);
    let file = state.join(STATE_FILE);
    for (bytes, expect) in [
        (&b"{\"version\":1,\"usage\":[{\"uid\":"[..], "corrupt"),
        (b"\x00\x01garbage", "corrupt"),
        (
            b"{\"version\":9,\"usage\":[],\"budgets\":[]}",
            "format version 9",
        ),
    ] {
        std::fs::write(&file, bytes).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (code, stderr) = refused(&["--state-dir", state.to_str().unwrap()]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("--state-dir"), "{stderr}");
        assert!(stderr.contains(expect), "{stderr}");
        assert_eq!(std::fs::read(&file).unwrap(), bytes, "never reset");
    }
    // A state file others may read is refused too.
    std::fs::write(&file, b"{\"version\":1,\"usage\":[],\"budgets\":[]}").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = refused(&["--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("accessible by group or others"), "{stderr}");
}

#[test]
fn an_open_foreign_symlinked_or_missing_state_dir_is_refused_with_exit_2() {
    let dir = temp_dir("state-unsafe");
    let state = state_dir(&dir, None);
    let path = state.to_str().unwrap().to_string();

    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o770)).unwrap();
    let (code, stderr) = refused(&["--state-dir", &path]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("accessible by group or others"), "{stderr}");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();

    let link = dir.join("state-link");
    std::os::unix::fs::symlink(&state, &link).unwrap();
    let (code, stderr) = refused(&["--state-dir", link.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");

    let (code, stderr) = refused(&["--state-dir", dir.join("missing").to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--state-dir"), "{stderr}");

    if is_root() {
        // Owned by another user than the one the proxy runs as (root here, nobody after a
        // drop).
        std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
        let (code, stderr) = refused(&["--state-dir", &path]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("owned by uid 65534"), "{stderr}");
        std::os::unix::fs::chown(&state, Some(0), Some(0)).unwrap();
        let (code, stderr) = refused(&["--state-dir", &path, "--user", "nobody"]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("not by uid 65534"), "{stderr}");
    }
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_dropping_to_nobody_the_state_is_written_and_read_back() {
    if !is_root() {
        eprintln!("skipped: needs root to drop privileges");
        return;
    }
    let mock = MockUpstream::start("state-nobody").await;
    let dir = temp_dir("state-nobody");
    let state = state_dir(&dir, Some(NOBODY));
    let args = ["--state-dir", state.to_str().unwrap(), "--user", "nobody"];

    let proxy = start(launch(&mock, &args), &dir);
    let statuses = requests_as(None, &proxy, 2, "POST", "/v1/responses", "").await;
    assert_eq!(statuses, [200, 200]);
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{status}: {logs}");
    let meta = std::fs::metadata(state.join(STATE_FILE)).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (NOBODY, 0o600));
    assert_eq!(requests_in(&read_state(&state)), 2);

    // (A fresh server-info directory: after the drop the first file could not be removed.)
    let proxy = start(launch(&mock, &args), &temp_dir("state-nobody-2"));
    let statuses = requests_as(None, &proxy, 1, "POST", "/v1/responses", "").await;
    assert_eq!(statuses, [200]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let row = own_row(&usage(&proxy).await);
    assert_eq!(
        (&row["requests"], &row["input_tokens"]),
        (&Value::from(3), &Value::from(30))
    );
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{status}: {logs}");
    assert_eq!(requests_in(&read_state(&state)), 3);
}
