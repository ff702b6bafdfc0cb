//! Local users: `--allow-user` decided from the uid the kernel reports for each connection.
//! In-process, every connection is this test's own uid; "another user" is a uid on the list
//! that is not ours. Several users over real processes are in tests/process/users.rs.

use std::time::Duration;

use serde_json::json;

use crate::mock::MockUpstream;
use crate::proxy::TestProxy;
use crate::raw::{self, RawResponse};

const JSON_BODY: &str = r#"{"model":"mock-model","input":"say something"}"#;
const MESSAGES_BODY: &str =
    r#"{"model":"claude-sonnet-4","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
const LIMIT: Duration = Duration::from_secs(10);

fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A uid that is not ours.
fn other_uid() -> String {
    (if my_uid() == 65534 { 65533 } else { 65534 }).to_string()
}

async fn send(proxy: &TestProxy, request: Vec<u8>) -> RawResponse {
    raw::exchange(proxy.addr, &request, LIMIT).await
}

fn assert_user_not_allowed_openai(response: &RawResponse) {
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(response.header("x-should-retry"), Some("false"));
    assert_eq!(
        response.json(),
        json!({"error": {"message": "This local user may not use this proxy (--allow-user).",
            "type": "permission_error", "param": null, "code": "user_not_allowed"}})
    );
}

#[tokio::test]
async fn a_user_not_on_the_list_is_refused_on_every_route_in_its_dialect_and_upstream_sees_nothing()
{
    let mock = MockUpstream::start("never").await;
    let other = other_uid();
    let proxy = TestProxy::start(&mock.base_url, &["--allow-user", &other]).await;

    let response = send(
        &proxy,
        raw::post(proxy.addr, "/v1/responses", JSON_BODY, &[]),
    )
    .await;
    assert_user_not_allowed_openai(&response);
    let response = send(
        &proxy,
        raw::post(proxy.addr, "/v1/chat/completions", JSON_BODY, &[]),
    )
    .await;
    assert_user_not_allowed_openai(&response);
    let response = send(&proxy, raw::get(proxy.addr, "/health", &[])).await;
    assert_user_not_allowed_openai(&response);
    // An unknown route is refused the same way: nothing else about the proxy is told.
    let response = send(&proxy, raw::get(proxy.addr, "/v1/nope", &[])).await;
    assert_user_not_allowed_openai(&response);

    let response = send(
        &proxy,
        raw::post(
            proxy.addr,
            "/v1/messages",
            MESSAGES_BODY,
            &[("anthropic-version", "2023-06-01")],
        ),
    )
    .await;
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(response.header("x-should-retry"), Some("false"));
    assert_eq!(
        response.json(),
        json!({"type": "error", "error": {"type": "permission_error",
            "message": "user_not_allowed: This local user may not use this proxy (--allow-user)."}})
    );

    // The bare probe is not exempt: a user who may not use the port learns nothing from it.
    let probe = send(
        &proxy,
        format!(
            "HEAD / HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nconnection: close\r\n\r\n",
            proxy.addr.port()
        )
        .into_bytes(),
    )
    .await;
    assert_eq!(probe.status, 403);
    assert_eq!(mock.count(), 0, "the upstream must see nothing");
}

#[tokio::test]
async fn a_user_on_the_list_by_uid_or_name_is_served() {
    let mock = MockUpstream::start("served").await;
    let me = my_uid().to_string();
    let other = other_uid();
    let proxy = TestProxy::start(
        &mock.base_url,
        &["--allow-user", &other, "--allow-user", &me],
    )
    .await;
    let response = send(
        &proxy,
        raw::post(proxy.addr, "/v1/responses", JSON_BODY, &[]),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(mock.count(), 1);

    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::geteuid()) {
        let by_name = TestProxy::start(&mock.base_url, &["--allow-user", &user.name]).await;
        let response = send(&by_name, raw::get(by_name.addr, "/health", &[])).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

#[tokio::test]
async fn with_client_token_both_the_user_and_the_token_must_hold() {
    let mock = MockUpstream::start("both").await;
    let me = my_uid().to_string();
    let allowed = TestProxy::start(&mock.base_url, &["--allow-user", &me, "--client-token"]).await;
    let token = allowed.token.clone().unwrap();
    let bearer = format!("Bearer {token}");

    let response = send(
        &allowed,
        raw::post(allowed.addr, "/v1/responses", JSON_BODY, &[]),
    )
    .await;
    assert_eq!(response.status, 401, "allowed user without the token");
    let response = send(
        &allowed,
        raw::post(
            allowed.addr,
            "/v1/responses",
            JSON_BODY,
            &[("authorization", &bearer)],
        ),
    )
    .await;
    assert_eq!(response.status, 200, "allowed user with the token");

    let other = other_uid();
    let refused =
        TestProxy::start(&mock.base_url, &["--allow-user", &other, "--client-token"]).await;
    let token = refused.token.clone().unwrap();
    let bearer = format!("Bearer {token}");
    let response = send(
        &refused,
        raw::post(
            refused.addr,
            "/v1/responses",
            JSON_BODY,
            &[("authorization", &bearer)],
        ),
    )
    .await;
    assert_user_not_allowed_openai(&response);
    assert_eq!(
        mock.count(),
        1,
        "only the allowed user's request went upstream"
    );
}
