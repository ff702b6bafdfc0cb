//! `GET /usage` through the real binary, with clients running as different local users: each
//! user sees its own row only; root and the info owner see every user's row. Root only
//! (creating users and running clients as them): skipped with a message otherwise.

use serde_json::Value;

use crate::mock::MockUpstream;
use crate::spawn::{start, temp_dir};
use crate::users::{launch, requests_as, skip_unless_root, ThrowawayUser};

/// GETs `/usage` and prints the body.
const GET_USAGE: &str = r#"
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=20)
c.request("GET", "/usage")
r = c.getresponse()
body = r.read()
assert r.status == 200, (r.status, body)
sys.stdout.write(body.decode())
"#;

/// `/usage` as seen by `uid` (`None`: root, this test's user).
async fn usage_as(uid: Option<u32>, port: u16) -> Value {
    let mut cmd = crate::as_user::command_as(uid, "/usr/bin/python3");
    cmd.args(["-c", GET_USAGE])
        .arg(port.to_string())
        .current_dir("/");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "/usage as {uid:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn uids(document: &Value) -> Vec<u64> {
    document["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uid"].as_u64().unwrap())
        .collect()
}

fn row(document: &Value, uid: u32) -> Value {
    document["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["uid"] == uid)
        .cloned()
        .unwrap_or_else(|| panic!("no row for {uid}: {document}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_sees_its_own_usage_and_root_and_the_info_owner_see_everyone() {
    if skip_unless_root() {
        return;
    }
    let alice = ThrowawayUser::create();
    let owner = ThrowawayUser::create();
    let mock = MockUpstream::start("usage").await;
    let dir = temp_dir("usage-users");
    let proxy = start(launch(&mock, &["--info-owner", &owner.name]), &dir);
    let port = proxy.addr.port();

    // Not streamed: the mock's JSON answer reports 10 input and 5 output tokens each.
    let statuses = requests_as(Some(alice.uid), &proxy, 2, "POST", "/v1/responses", "").await;
    assert_eq!(statuses, vec![200, 200]);
    let statuses = requests_as(None, &proxy, 3, "POST", "/v1/responses", "").await;
    assert_eq!(statuses, vec![200, 200, 200]);
    // The last request is counted when its body is done with, just after the client read it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let mine = usage_as(Some(alice.uid), port).await;
    assert_eq!(uids(&mine), vec![u64::from(alice.uid)], "{mine}");
    let alice_row = row(&mine, alice.uid);
    assert_eq!(alice_row["user"], alice.name.as_str(), "{mine}");
    assert_eq!(alice_row["requests"], 2, "{mine}");
    assert_eq!(alice_row["input_tokens"], 20, "{mine}");
    assert_eq!(alice_row["output_tokens"], 10, "{mine}");
    assert_eq!(alice_row["budget"], Value::Null, "{mine}");

    // The info owner has made no request: it sees every row, its own (zeros) included.
    let everyone = usage_as(Some(owner.uid), port).await;
    let mut want = vec![0, u64::from(alice.uid), u64::from(owner.uid)];
    want.sort_unstable();
    assert_eq!(uids(&everyone), want, "{everyone}");
    assert_eq!(row(&everyone, owner.uid)["requests"], 0, "{everyone}");
    assert_eq!(row(&everyone, 0)["requests"], 3, "{everyone}");
    assert_eq!(row(&everyone, 0)["input_tokens"], 30, "{everyone}");

    let root = usage_as(None, port).await;
    assert_eq!(uids(&root), vec![0, u64::from(alice.uid)], "{root}");
    assert_eq!(row(&root, alice.uid)["requests"], 2, "{root}");
    assert_eq!(row(&root, 0)["user"], "root", "{root}");

    // `nobody`, who never called, sees only its own empty row.
    let nobody = usage_as(Some(65534), port).await;
    assert_eq!(uids(&nobody), vec![65534], "{nobody}");
    assert_eq!(row(&nobody, 65534)["requests"], 0, "{nobody}");
    drop(proxy);
}
