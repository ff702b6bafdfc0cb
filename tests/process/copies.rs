//! Copies of the key in the running process's memory (root only; skipped otherwise).
//!
//! As root, every readable mapping is read through /proc/PID/mem and the canary counted.
//! The locked arena holds the one intended copy (in a `lo dd` mapping: locked, not dumped).

use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::mock::MockUpstream;
use crate::raw::{exchange, post};
use crate::spawn::{canary, is_root, start, temp_dir, Launch};

/// Where each copy of `needle` lives: the mapping's address range and its smaps VmFlags.
pub fn find_copies(pid: u32, needle: &[u8]) -> Vec<(String, String)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let finder = memchr::memmem::Finder::new(needle);
    let mut found = Vec::new();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let range = parts.next().unwrap();
        let perms = parts.next().unwrap();
        if !perms.starts_with('r') || line.contains("[vvar") || line.contains("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let (start, end) = (
            u64::from_str_radix(start, 16).unwrap(),
            u64::from_str_radix(end, 16).unwrap(),
        );
        let mut buf = vec![0u8; (end - start) as usize];
        let mut read = 0;
        while read < buf.len() {
            match mem.read_at(&mut buf[read..], start + read as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
        let flags = smaps
            .split(&format!("{range} "))
            .nth(1)
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmFlags:")))
            .unwrap_or("")
            .trim()
            .to_string();
        for _ in finder.find_iter(&buf[..read]) {
            found.push((range.to_string(), flags.clone()));
        }
    }
    found
}

/// Sends `n` requests through the proxy, streaming and not, alternating; each must succeed.
async fn drive(addr: std::net::SocketAddr, n: usize) {
    for i in 0..n {
        let body = if i % 2 == 0 {
            r#"{"model":"m","stream":true,"input":"x"}"#
        } else {
            r#"{"model":"m","input":"x"}"#
        };
        let r = exchange(
            addr,
            &post(addr, "/v1/responses", body, &[]),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_locked_copy_of_the_key_after_two_hundred_requests() {
    if !is_root() {
        eprintln!("skipped: needs root to read another process's memory");
        return;
    }
    let key = canary();
    let mock = MockUpstream::start("copies").await;
    let dir = temp_dir("copies");
    let proxy = start(
        Launch {
            args: vec!["--upstream-url".into(), mock.base_url.clone()],
            stdin: format!("{key}\n").as_bytes(),
            as_uid: None,
            env: vec![],
        },
        &dir,
    );
    let at_start = find_copies(proxy.pid, key.as_bytes());
    assert_eq!(at_start.len(), 1, "after start-up: {at_start:?}");
    assert!(
        at_start[0].1.contains("lo") && at_start[0].1.contains("dd"),
        "the copy is locked and not dumped: {at_start:?}"
    );

    drive(proxy.addr, 200).await;
    let after = find_copies(proxy.pid, key.as_bytes());
    eprintln!(
        "copies of the key after 200 requests: {} {after:?}",
        after.len()
    );
    assert_eq!(after.len(), 1, "after 200 requests: {after:?}");
    assert!(after[0].1.contains("lo"), "{after:?}");
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_and_h2_the_upstream_gets_the_real_key_and_one_copy_remains() {
    if !is_root() {
        eprintln!("skipped: needs root to read another process's memory");
        return;
    }
    let key = canary();
    let ca = crate::mock::TestCa::new();
    let dir = temp_dir("copies-h2");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &ca.ca_pem).unwrap();
    for (alpn, version) in [
        (&[&b"h2"[..], b"http/1.1"][..], http::Version::HTTP_2),
        (&[&b"http/1.1"[..]][..], http::Version::HTTP_11),
    ] {
        let mock = MockUpstream::start_with("tls copies", Some(ca.with_alpn(alpn))).await;
        let proxy = start(
            Launch {
                args: vec![
                    "--upstream-url".into(),
                    mock.base_url.clone(),
                    "--upstream-ca".into(),
                    ca_path.display().to_string(),
                ],
                stdin: format!("{key}\n").as_bytes(),
                as_uid: None,
                env: vec![],
            },
            &temp_dir("copies-h2-info"),
        );
        drive(proxy.addr, 100).await;
        let recorded = mock.requests();
        assert_eq!(recorded.len(), 100);
        for r in &recorded {
            assert_eq!(r.version, version);
            let auth: Vec<_> = r.headers.get_all("authorization").iter().collect();
            assert_eq!(auth.len(), 1);
            assert_eq!(
                auth[0].to_str().unwrap(),
                format!("Bearer {key}"),
                "the upstream receives the real key"
            );
        }
        let after = find_copies(proxy.pid, key.as_bytes());
        eprintln!(
            "{version:?}: copies of the key after 100 requests: {} {after:?}",
            after.len()
        );
        assert_eq!(after.len(), 1, "{version:?}: {after:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_locked_copy_of_the_key_after_a_hundred_upstream_echoes_are_masked() {
    if !is_root() {
        eprintln!("skipped: needs root to read another process's memory");
        return;
    }
    let key = canary();
    let mock = MockUpstream::start("copies-echo").await;
    let dir = temp_dir("copies-echo");
    let proxy = start(
        Launch {
            args: vec!["--upstream-url".into(), mock.base_url.clone()],
            stdin: format!("{key}\n").as_bytes(),
            as_uid: None,
            env: vec![],
        },
        &dir,
    );
    let last4 = &key[key.len() - 4..];
    for i in 0..100 {
        let stream = i % 2 == 0;
        let echo = format!("echo {key} and sk-****{last4}");
        let (content_type, body) = if stream {
            let events = crate::mock::responses_stream(&echo, 4);
            ("text/event-stream", events.concat())
        } else {
            (
                "application/json",
                serde_json::json!({"id":"resp_1","output":[],"echo":echo}).to_string(),
            )
        };
        // The echo also arrives split inside the key, across two chunks.
        let cut = body.find(&key).unwrap() + 10;
        mock.push(crate::mock::Script::Respond {
            status: 200,
            headers: vec![
                ("content-type", content_type.into()),
                ("www-authenticate", format!("Bearer realm=\"{key}\"")),
            ],
            chunks: vec![
                (Duration::ZERO, bytes::Bytes::from(body[..cut].to_string())),
                (
                    Duration::from_millis(1),
                    bytes::Bytes::from(body[cut..].to_string()),
                ),
            ],
        });
        let request = if stream {
            r#"{"model":"m","stream":true,"input":"x"}"#
        } else {
            r#"{"model":"m","input":"x"}"#
        };
        let r = exchange(
            proxy.addr,
            &post(proxy.addr, "/v1/responses", request, &[]),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = format!("{:?}{}", r.headers, r.text());
        assert!(!seen.contains(&key), "the echo reached the client: {seen}");
        assert!(
            !seen.contains(last4),
            "a masked echo reached the client: {seen}"
        );
        assert!(seen.contains("[REDACTED]"), "{seen}");
    }
    let after = find_copies(proxy.pid, key.as_bytes());
    eprintln!(
        "copies of the key after 100 masked echoes: {} {after:?}",
        after.len()
    );
    assert_eq!(after.len(), 1, "after 100 masked echoes: {after:?}");
    assert!(after[0].1.contains("lo"), "{after:?}");
    drop(proxy);
}

/// An Anthropic key (`x-api-key`) over h2 and over HTTP/1.1: the upstream gets the real key
/// in every request and one locked copy remains after 200 requests (streamed and not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_key_over_h2_and_http1_keeps_one_locked_copy_after_two_hundred_requests() {
    if !is_root() {
        eprintln!("skipped: needs root to read another process's memory");
        return;
    }
    let key = canary().replace("sk-test-", "sk-ant-test-");
    let ca = crate::mock::TestCa::new();
    let dir = temp_dir("copies-anthropic");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &ca.ca_pem).unwrap();
    for (alpn, version) in [
        (&[&b"h2"[..], b"http/1.1"][..], http::Version::HTTP_2),
        (&[&b"http/1.1"[..]][..], http::Version::HTTP_11),
    ] {
        let mock = MockUpstream::start_anthropic_with(
            &[key.as_str()],
            "anthropic copies",
            Some(ca.with_alpn(alpn)),
        )
        .await;
        let config = dir.join("providers.toml");
        std::fs::write(
            &config,
            format!(
                "[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{}\"\nmodels = [\"claude-*\"]\n",
                mock.base_url
            ),
        )
        .unwrap();
        let stdin = format!("{{\"provider\":\"claude\",\"api_key\":\"{key}\"}}\n");
        let proxy = start(
            Launch {
                args: vec![
                    "--config".into(),
                    config.display().to_string(),
                    "--upstream-ca".into(),
                    ca_path.display().to_string(),
                ],
                stdin: stdin.as_bytes(),
                as_uid: None,
                env: vec![],
            },
            &temp_dir("copies-anthropic-info"),
        );
        for i in 0..200 {
            let body = if i % 2 == 0 {
                r#"{"model":"claude-sonnet-4-5","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"x"}]}"#
            } else {
                r#"{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"x"}]}"#
            };
            let r = exchange(
                proxy.addr,
                &post(proxy.addr, "/v1/messages", body, &[]),
                Duration::from_secs(10),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let recorded = mock.requests();
        assert_eq!(recorded.len(), 200);
        for r in &recorded {
            assert_eq!(r.version, version);
            let keys: Vec<_> = r.headers.get_all("x-api-key").iter().collect();
            assert_eq!(keys.len(), 1);
            assert_eq!(keys[0].to_str().unwrap(), key, "the real key");
            assert!(r.headers.get("authorization").is_none());
        }
        let after = find_copies(proxy.pid, key.as_bytes());
        eprintln!(
            "{version:?}: copies of the Anthropic key after 200 requests: {} {after:?}",
            after.len()
        );
        assert_eq!(after.len(), 1, "{version:?}: {after:?}");
        assert!(after[0].1.contains("lo"), "{after:?}");
    }
}
