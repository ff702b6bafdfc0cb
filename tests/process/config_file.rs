//! The `--config` file's `[providers.*]`, `[models.*]` and `[aliases]` sections, as the real
//! binary reads them: every problem is exit 2 naming the file, the line and the key, and a
//! valid file with providers, models, aliases and users starts and serves.

use std::os::unix::fs::MetadataExt;

use crate::spawn::{run_to_exit, temp_dir, Launch};

fn exit(args: &[&str]) -> (i32, String) {
    let (status, stderr) = run_to_exit(Launch {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: b"sk-valid\n",
        as_uid: None,
        env: vec![],
    });
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn provider_model_and_alias_problems_exit_2_naming_the_file_the_line_and_the_key() {
    let dir = temp_dir("config-providers");
    let file = dir.join("providers.toml");
    let path = file.to_str().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "[providers.claude]\nkind = \"anthropic\"\nmodels = [\"claude-*\"]\nbase = \"x\"\n",
            &["line 4", "unknown field `base`"],
        ),
        (
            "[providers.claude]\nkind = \"claude\"\nmodels = [\"claude-*\"]\n",
            &["line 2", "providers.claude.kind", "unknown kind"],
        ),
        (
            "[users.root]\nmax_concurrent = 1\n\n[providers.local]\nkind = \"chat\"\n\
             models = [\"q*\"]\nbase_url = \"http://192.168.1.20:8080/v1\"\n",
            &["line 7", "providers.local.base_url", "loopback"],
        ),
        (
            "[providers.lan]\nkind = \"chat\"\nkeyless = true\nmodels = [\"q*\"]\n\
             base_url = \"http://192.168.1.20:8080/v1\"\n",
            &[
                "line 5",
                "providers.lan.base_url",
                "allow_plain_http = true",
            ],
        ),
        (
            "[providers.lan]\nkind = \"chat\"\nallow_plain_http = true\nmodels = [\"q*\"]\n\
             base_url = \"http://192.168.1.20:8080/v1\"\n",
            &[
                "line 3",
                "providers.lan.allow_plain_http",
                "only with keyless = true",
            ],
        ),
        (
            "[providers.local]\nkind = \"openai\"\nmodels = [\"q*\"]\nkeyless = true\n",
            &[
                "line 4",
                "providers.local.keyless",
                "only for kind = \"chat\"",
            ],
        ),
        (
            "[providers.claude]\nkind = \"anthropic\"\nmodels = [\"claude-[\"]\n",
            &["line 3", "providers.claude.models", "unclosed"],
        ),
        (
            "[providers.claude]\nkind = \"anthropic\"\nmodels = [\"claude-*\"]\n\
             base_url = \"http://api.anthropic.com/v1\"\n",
            &["line 4", "providers.claude.base_url", "loopback"],
        ),
        (
            "[providers.claude]\nkind = \"anthropic\"\nmodels = [\"claude-*\"]\n\
             headers = { \"x-api-key\" = \"sk-ant-in-a-file\" }\n",
            &[
                "line 4",
                "providers.claude.headers.x-api-key",
                "not allowed",
            ],
        ),
        (
            "[providers.a]\nkind = \"openai\"\ndefault = true\n[providers.b]\nkind = \"openai\"\n\
             default = true\n",
            &["line 6", "providers.b.default", "only one provider"],
        ),
        (
            "[providers.a]\nkind = \"openai\"\n",
            &["line 1", "providers.a: serves no model"],
        ),
        (
            "[models.\"qwen3-coder\"]\nthink_tags = \"reasoning\"\ntop_k = 20\n",
            &["line 3", "unknown field `top_k`"],
        ),
        (
            "[models.\"gpt-5.4\"]\ndefault_effort = \"huge\"\n",
            &["line 1", "models.gpt-5.4.default_effort"],
        ),
        (
            "[aliases]\n\"claude-opus-4-8\" = \"gpt-5.4-high\"\n\"gpt-5.4\" = \"gpt-5\"\n",
            &["line 3", "[aliases]", "\"gpt-5.4\" hides a known model"],
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&file, text).unwrap();
        let (code, stderr) = exit(&["--config", path]);
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(
            stderr.contains(&format!("--config {path}: ")),
            "{text}: {stderr}"
        );
        for needle in *expected {
            assert!(stderr.contains(needle), "{text}: lacks {needle}: {stderr}");
        }
        // A header value in the file is no credential the proxy holds, but is never repeated.
        assert!(!stderr.contains("sk-ant-in-a-file"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A file with a provider, a model section, an alias and a `[users]` section for the test's
/// own uid: the proxy starts, the alias and the model's forced params reach the upstream, and
/// the user's `models` globs still refuse what they do not match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_providers_models_aliases_and_users_starts_and_each_part_applies() {
    let dir = temp_dir("config-all");
    let uid = std::fs::metadata(&dir).unwrap().uid();
    let mock = crate::mock::MockUpstream::start("configured").await;
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        format!(
            "[providers.openai]\nkind = \"openai\"\nbase_url = \"{base}\"\n\
             models = [\"gpt-*\"]\n\n\
             [models.\"gpt-5.4\"]\nparams = {{ temperature = 0.25 }}\n\n\
             [aliases]\n\"house-model\" = \"gpt-5.4-high\"\n\n\
             [users.{uid}]\nmodels = [\"gpt-5*\"]\n",
            base = mock.base_url
        ),
    )
    .unwrap();
    let proxy = crate::spawn::start(
        Launch {
            args: vec![
                "--upstream-url".into(),
                mock.base_url.clone(),
                "--config".into(),
                file.display().to_string(),
            ],
            stdin: b"sk-valid\n",
            as_uid: None,
            env: vec![],
        },
        &dir,
    );
    let limit = std::time::Duration::from_secs(10);
    let body = r#"{"model":"house-model","input":"hi"}"#;
    let response = crate::raw::exchange(
        proxy.addr,
        &crate::raw::post(proxy.addr, "/v1/responses", body, &[]),
        limit,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let sent: serde_json::Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(
        sent,
        serde_json::json!({"model":"gpt-5.4","input":"hi","reasoning":{"effort":"high"},
            "temperature":0.25})
    );
    // Served by the provider's globs, refused by the user's.
    let body = r#"{"model":"gpt-4.1","input":"hi"}"#;
    let response = crate::raw::exchange(
        proxy.addr,
        &crate::raw::post(proxy.addr, "/v1/responses", body, &[]),
        limit,
    )
    .await;
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(response.json()["error"]["code"], "model_not_allowed");
    assert_eq!(mock.count(), 1);
    let (status, logs) = proxy.terminate();
    assert_eq!(status.code(), Some(0), "{logs}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A keyless chat provider needs nothing on stdin and may reach a LAN host over plain
/// http when it says so; a keyed one still needs its key (exit 3, naming the provider).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_chat_provider_starts_without_credentials_and_serves_without_authorization() {
    use crate::chat_mock::{ChatAnswer, ChatAuth, ChatMock, ChatStyle};
    let dir = temp_dir("config-chat");
    let mock = ChatMock::start(
        ChatAuth::Keyless,
        ChatStyle::Vllm,
        ChatAnswer::text("from the local model"),
    )
    .await;
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        format!(
            "[providers.local]\nkind = \"chat\"\nbase_url = \"{}\"\nkeyless = true\n\
             models = [\"qwen3-*\"]\n\n\
             [providers.lan]\nkind = \"chat\"\nbase_url = \"http://192.168.1.20:8080/v1\"\n\
             keyless = true\nallow_plain_http = true\nmodels = [\"llama*\"]\n",
            mock.base_url
        ),
    )
    .unwrap();
    let proxy = crate::spawn::start(
        Launch {
            args: vec!["--config".into(), file.display().to_string()],
            stdin: b"",
            as_uid: None,
            env: vec![],
        },
        &dir,
    );
    let body =
        r#"{"model":"qwen3-coder","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let response = crate::raw::exchange(
        proxy.addr,
        &crate::raw::post(
            proxy.addr,
            "/v1/chat/completions",
            body,
            &[("authorization", "Bearer from-the-client")],
        ),
        std::time::Duration::from_secs(10),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), mock.answer("qwen3-coder", false));
    assert!(mock.requests()[0].headers.get("authorization").is_none());
    let (status, logs) = proxy.terminate();
    assert_eq!(status.code(), Some(0), "{logs}");

    // The same provider with a key: it needs one.
    std::fs::write(
        &file,
        format!(
            "[providers.local]\nkind = \"chat\"\nbase_url = \"{}\"\nmodels = [\"qwen3-*\"]\n",
            mock.base_url
        ),
    )
    .unwrap();
    let (status, stderr) = run_to_exit(Launch {
        args: vec!["--config".into(), file.display().to_string()],
        stdin: b"sk-for-the-implicit-openai\n",
        as_uid: None,
        env: vec![],
    });
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("provider `local` has no credential"),
        "{stderr}"
    );
    assert!(!stderr.contains("sk-for-the-implicit-openai"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
