//! Local users through the real binary: clients running as different uids (a throwaway user
//! made with `useradd`, `nobody`, root), `--allow-user` by name and by uid, after `--user
//! nobody`, together with `--client-token`, and attribution of 1,000 connections from two
//! users. Root only (creating users and running clients as them): skipped with a message
//! otherwise.

use std::process::Command;
use std::time::Duration;

use crate::mock::MockUpstream;
use crate::spawn::{is_root, start, temp_dir, Launch, Running};

const NOBODY: u32 = 65534;

/// A user made for one test and removed when dropped.
pub(crate) struct ThrowawayUser {
    pub(crate) name: String,
    pub(crate) uid: u32,
}

impl ThrowawayUser {
    pub(crate) fn create() -> ThrowawayUser {
        let mut raw = [0u8; 4];
        getrandom::fill(&mut raw).unwrap();
        let name = format!("cpu{:08x}", u32::from_ne_bytes(raw));
        // useradd takes a lock on the passwd files; tests running in parallel may meet it.
        for _ in 0..50 {
            let status = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(&name)
                .status()
                .unwrap();
            if status.success() {
                let user = nix::unistd::User::from_name(&name).unwrap().unwrap();
                return ThrowawayUser {
                    name,
                    uid: user.uid.as_raw(),
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("useradd {name} kept failing");
    }
}

impl Drop for ThrowawayUser {
    fn drop(&mut self) {
        for _ in 0..50 {
            if Command::new("userdel")
                .arg(&self.name)
                .status()
                .is_ok_and(|s| s.success())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The client: `n` requests, each on a new connection; prints their statuses as JSON.
const CLIENT: &str = r#"
import http.client, json, sys
port, n, method, path, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
body = '{"model":"mock-model","input":"hi"}' if method == "POST" else None
headers = {"content-type": "application/json"}
if token:
    headers["authorization"] = "Bearer " + token
statuses = []
for _ in range(n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    c.request(method, path, body, headers)
    r = c.getresponse()
    r.read()
    statuses.append(r.status)
    c.close()
print(json.dumps(statuses))
"#;

/// Runs the client as `uid` (`None`: as this test's user, root) and returns its statuses.
pub(crate) async fn requests_as(
    uid: Option<u32>,
    proxy: &Running,
    n: usize,
    method: &str,
    path: &str,
    token: &str,
) -> Vec<u16> {
    let mut cmd = crate::as_user::command_as(uid, "/usr/bin/python3");
    cmd.args(["-c", CLIENT])
        .arg(proxy.addr.port().to_string())
        .arg(n.to_string())
        .args([method, path, token])
        .current_dir("/");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "client as {uid:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(crate) fn launch(mock: &MockUpstream, extra: &[&str]) -> Launch<'static> {
    let mut args = vec![
        "--upstream-url".to_string(),
        mock.base_url.clone(),
        "--log-format".into(),
        "json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Launch {
        args,
        stdin: b"sk-users-test-key\n",
        as_uid: None,
        env: vec![],
    }
}

fn json_lines(logs: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The uids named by "local user not allowed" lines.
fn refused_uids(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["message"] == "request refused: local user not allowed")
        .map(|l| l["uid"].as_str().unwrap_or_default().to_string())
        .collect()
}

pub(crate) fn skip_unless_root() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root to create users and run clients as them");
        return true;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_allowed_user_is_served_by_name_or_uid_and_the_upstream_sees_nothing_from_others()
{
    if skip_unless_root() {
        return;
    }
    let user = ThrowawayUser::create();
    for (round, allow) in [user.name.clone(), user.uid.to_string()]
        .into_iter()
        .enumerate()
    {
        let mock = MockUpstream::start("allowed").await;
        let dir = temp_dir("allow-user");
        let proxy = start(launch(&mock, &["--allow-user", &allow]), &dir);
        let served = requests_as(Some(user.uid), &proxy, 2, "POST", "/v1/responses", "").await;
        assert_eq!(served, [200, 200], "round {round}");
        let other = requests_as(Some(NOBODY), &proxy, 1, "POST", "/v1/responses", "").await;
        assert_eq!(other, [403], "round {round}: nobody");
        let root = requests_as(None, &proxy, 1, "POST", "/v1/responses", "").await;
        assert_eq!(root, [403], "round {round}: root");
        let root_probe = requests_as(None, &proxy, 1, "HEAD", "/", "").await;
        assert_eq!(root_probe, [403], "round {round}: root's probe");
        assert_eq!(
            mock.count(),
            2,
            "round {round}: only the allowed user's requests"
        );
        let (status, logs) = proxy.terminate();
        assert!(status.success(), "{status}: {logs}");
        let lines = json_lines(&logs);
        assert_eq!(refused_uids(&lines), ["65534", "0", "0"], "{logs}");
        let served_lines = lines
            .iter()
            .filter(|l| {
                l["message"] == "request" && l["route"] == "responses" && l["status"] == 200
            })
            .filter(|l| l["user"] == user.name.as_str())
            .count();
        assert_eq!(served_lines, 2, "request lines name the user: {logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_dropping_to_nobody_the_owner_lookup_still_works() {
    if skip_unless_root() {
        return;
    }
    let user = ThrowawayUser::create();
    let mock = MockUpstream::start("dropped").await;
    let dir = temp_dir("allow-user-drop");
    let proxy = start(
        launch(
            &mock,
            &[
                "--user",
                "nobody",
                "--allow-user",
                &user.name,
                "--log-level",
                "debug",
            ],
        ),
        &dir,
    );
    let served = requests_as(Some(user.uid), &proxy, 3, "POST", "/v1/responses", "").await;
    assert_eq!(served, [200, 200, 200]);
    let root = requests_as(None, &proxy, 1, "POST", "/v1/responses", "").await;
    assert_eq!(root, [403]);
    // The proxy's own uid is no passport either.
    let nobody = requests_as(Some(NOBODY), &proxy, 1, "GET", "/health", "").await;
    assert_eq!(nobody, [403]);
    assert_eq!(mock.count(), 3);
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{status}: {logs}");
    assert_eq!(refused_uids(&json_lines(&logs)), ["0", "65534"], "{logs}");
    // Answered by sock_diag itself, not the /proc fallback.
    assert!(!logs.contains("sock_diag lookup failed"), "{logs}");
    assert!(!logs.contains("could not be determined"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_token_the_allowed_user_needs_the_token_and_others_are_refused_with_it() {
    if skip_unless_root() {
        return;
    }
    let user = ThrowawayUser::create();
    let mock = MockUpstream::start("token").await;
    let dir = temp_dir("allow-user-token");
    let proxy = start(
        launch(&mock, &["--client-token", "--allow-user", &user.name]),
        &dir,
    );
    let info: serde_json::Value = serde_json::from_str(&proxy.info_text).unwrap();
    let token = info["token"].as_str().unwrap().to_string();
    let with = requests_as(Some(user.uid), &proxy, 1, "POST", "/v1/responses", &token).await;
    assert_eq!(with, [200]);
    let without = requests_as(Some(user.uid), &proxy, 1, "POST", "/v1/responses", "").await;
    assert_eq!(without, [401]);
    let root = requests_as(None, &proxy, 1, "POST", "/v1/responses", &token).await;
    assert_eq!(root, [403], "the token does not stand in for the user");
    assert_eq!(mock.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_from_two_users_are_each_attributed_to_their_owner() {
    if skip_unless_root() {
        return;
    }
    let user = ThrowawayUser::create();
    let mock = MockUpstream::start("load").await;
    let dir = temp_dir("attribution");
    let proxy = start(
        launch(
            &mock,
            &["--allow-user", &user.name, "--allow-user", "nobody"],
        ),
        &dir,
    );
    const EACH: usize = 500;
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(
        requests_as(Some(user.uid), &proxy, EACH, "GET", "/health", ""),
        requests_as(Some(NOBODY), &proxy, EACH, "GET", "/health", ""),
    );
    eprintln!(
        "{} connections from two users in {:?}",
        2 * EACH,
        started.elapsed()
    );
    assert!(a.iter().all(|s| *s == 200) && a.len() == EACH, "{a:?}");
    assert!(b.iter().all(|s| *s == 200) && b.len() == EACH, "{b:?}");
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{status}");
    let lines = json_lines(&logs);
    let health: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "request" && l["route"] == "health")
        .collect();
    assert_eq!(health.len(), 2 * EACH);
    let of = |name: &str| health.iter().filter(|l| l["user"] == name).count();
    assert_eq!(
        (of(&user.name), of("nobody")),
        (EACH, EACH),
        "every connection attributed to its owner"
    );
    assert!(refused_uids(&lines).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_config_section_by_name_restricts_that_user_only_after_dropping_to_nobody() {
    if skip_unless_root() {
        return;
    }
    let user = ThrowawayUser::create();
    let mock = MockUpstream::start("policy").await;
    let dir = temp_dir("policy");
    let config = dir.join("policy.toml");
    // The client's model is `mock-model`: outside the throwaway user's globs.
    std::fs::write(
        &config,
        format!(
            "[users.{}]\nmodels = [\"gpt-*\"]\nmax_concurrent = 1\n",
            user.name
        ),
    )
    .unwrap();
    let proxy = start(
        launch(
            &mock,
            &["--config", config.to_str().unwrap(), "--user", "nobody"],
        ),
        &dir,
    );
    let refused = requests_as(Some(user.uid), &proxy, 2, "POST", "/v1/responses", "").await;
    assert_eq!(refused, [403, 403]);
    let root = requests_as(None, &proxy, 1, "POST", "/v1/responses", "").await;
    assert_eq!(root, [200], "root has no section");
    let other = requests_as(Some(NOBODY), &proxy, 1, "POST", "/v1/responses", "").await;
    assert_eq!(other, [200], "nobody has no section");
    assert_eq!(
        mock.count(),
        2,
        "the refused user's requests never went upstream"
    );
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{status}: {logs}");
    let uid = user.uid.to_string();
    let policy_lines: Vec<_> = json_lines(&logs)
        .into_iter()
        .filter(|l| l["message"] == "request refused by the user's policy")
        .collect();
    assert_eq!(policy_lines.len(), 2, "{logs}");
    for line in policy_lines {
        assert_eq!(line["uid"].as_str(), Some(uid.as_str()), "{logs}");
        assert_eq!(line["reason"], "model_not_allowed", "{logs}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
