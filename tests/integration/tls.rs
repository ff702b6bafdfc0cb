//! An https upstream signed by a test CA given with `--upstream-ca`: HTTP/2 when the upstream
//! offers it by ALPN, HTTP/1.1 when it does not, and a 502 when the CA is not trusted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Version;
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use crate::mock::{responses_json, responses_stream, MockUpstream, TestCa};
use crate::proxy::{TestProxy, CANARY_KEY};
use crate::raw::{self, RawResponse};

const LIMIT: Duration = Duration::from_secs(10);
const TEXT: &str = "tls ok";

/// A PEM file in the temporary directory, removed on drop.
struct PemFile {
    path: PathBuf,
}

impl PemFile {
    fn write(pem: &str) -> PemFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "codex-proxy-test-ca-{}-{nanos}-{}.pem",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, pem).unwrap();
        PemFile { path }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PemFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn post(proxy: &TestProxy, body: &str) -> RawResponse {
    raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, "/v1/responses", body, &[]),
        LIMIT,
    )
    .await
}

/// A proxy trusting `ca` in front of `mock`.
async fn proxy_trusting(mock: &MockUpstream, ca: &PemFile) -> TestProxy {
    let ca_path = ca.path().to_str().unwrap();
    TestProxy::start(&mock.base_url, &["--upstream-ca", ca_path]).await
}

/// Sends a non-streaming and a streaming request and checks both answers and what the upstream
/// saw, including the HTTP version it was reached with.
async fn assert_both_kinds_work(proxy: &TestProxy, mock: &MockUpstream, version: Version) {
    let response = post(proxy, r#"{"model":"m","input":"hi"}"#).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json(),
        serde_json::from_str::<Value>(&responses_json(TEXT)).unwrap()
    );
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("1"));

    let response = post(proxy, r#"{"model":"m","input":"hi","stream":true}"#).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response.complete,
        "stream not complete: {}",
        response.text()
    );
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(response.text(), responses_stream(TEXT, 4).concat());

    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let expected_authorization = format!("Bearer {CANARY_KEY}");
    for recorded in &requests {
        assert_eq!(recorded.version, version);
        // HTTP/2 records the full URI (:scheme and :authority), HTTP/1.1 the origin form.
        let target: http::Uri = recorded.target.parse().unwrap();
        assert_eq!(target.path_and_query().unwrap().as_str(), "/v1/responses");
        let authorizations: Vec<&str> = recorded
            .headers
            .get_all("authorization")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(authorizations, vec![expected_authorization.as_str()]);
    }
}

#[tokio::test]
async fn an_https_upstream_offering_h2_is_reached_over_http2() {
    let ca = TestCa::new();
    let pem = PemFile::write(&ca.ca_pem);
    let mock = MockUpstream::start_with(TEXT, Some(ca.server_config.clone())).await;
    assert!(mock.base_url.starts_with("https://127.0.0.1:"));
    let proxy = proxy_trusting(&mock, &pem).await;
    assert_both_kinds_work(&proxy, &mock, Version::HTTP_2).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn requests_at_once_to_an_h2_upstream_share_one_connection_and_http1_ones_are_reused() {
    let ca = TestCa::new();
    let pem = PemFile::write(&ca.ca_pem);
    for (alpn, version) in [
        (None, Version::HTTP_2),
        (Some(&[b"http/1.1".as_slice()][..]), Version::HTTP_11),
    ] {
        let config = match alpn {
            None => ca.server_config.clone(),
            Some(protocols) => ca.with_alpn(protocols),
        };
        let mock = MockUpstream::start_with(TEXT, Some(config)).await;
        let proxy = proxy_trusting(&mock, &pem).await;
        // One first, so that the connection exists; then ten at once.
        assert_eq!(
            post(&proxy, r#"{"model":"m","input":"hi"}"#).await.status,
            200
        );
        let addr = proxy.addr;
        let at_once: Vec<_> = (0..10)
            .map(|_| {
                tokio::spawn(async move {
                    let body = r#"{"model":"m","input":"hi","stream":true}"#;
                    raw::exchange(addr, &raw::post(addr, "/v1/responses", body, &[]), LIMIT).await
                })
            })
            .collect();
        for answer in at_once {
            let answer = answer.await.unwrap();
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert!(answer.complete, "{}", answer.text());
        }
        // Then ten one after the other, on connections that are kept.
        let open = mock.open_connections();
        for _ in 0..10 {
            assert_eq!(
                post(&proxy, r#"{"model":"m","input":"hi"}"#).await.status,
                200
            );
        }
        assert!(mock.requests().iter().all(|r| r.version == version));
        if version == Version::HTTP_2 {
            assert_eq!(
                open, 1,
                "h2 requests at once opened more than one connection"
            );
        } else {
            assert!((1..=11).contains(&open), "{open} connections");
        }
        assert_eq!(
            mock.open_connections(),
            open,
            "requests one after the other opened new connections ({version:?})"
        );
        assert_eq!(mock.closed_connections(), 0, "{version:?}");
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn an_https_upstream_offering_only_http1_is_reached_over_http1() {
    let ca = TestCa::new();
    let pem = PemFile::write(&ca.ca_pem);
    let mock = MockUpstream::start_with(TEXT, Some(ca.with_alpn(&[b"http/1.1"]))).await;
    let proxy = proxy_trusting(&mock, &pem).await;
    assert_both_kinds_work(&proxy, &mock, Version::HTTP_11).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_https_upstream_without_alpn_is_reached_over_http1() {
    let ca = TestCa::new();
    let pem = PemFile::write(&ca.ca_pem);
    let mock = MockUpstream::start_with(TEXT, Some(ca.with_alpn(&[]))).await;
    let proxy = proxy_trusting(&mock, &pem).await;
    assert_both_kinds_work(&proxy, &mock, Version::HTTP_11).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_https_upstream_signed_by_an_unknown_ca_is_502() {
    let ca = TestCa::new();
    let mock = MockUpstream::start_with(TEXT, Some(ca.server_config.clone())).await;
    let untrusting = TestProxy::start(&mock.base_url, &[]).await;
    for body in [
        r#"{"model":"m","input":"hi"}"#,
        r#"{"model":"m","input":"hi","stream":true}"#,
    ] {
        let response = post(&untrusting, body).await;
        assert_eq!(response.status, 502, "{body}: {}", response.text());
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.header("x-should-retry"), Some("false"));
        assert_eq!(
            response.json(),
            json!({"error": {
                "message": "Could not connect to the upstream.",
                "type": "server_error",
                "param": null,
                "code": "upstream_connect_failed",
            }})
        );
    }
    assert_eq!(mock.count(), 0);
    untrusting.shutdown().await;

    // A different CA given with --upstream-ca does not help either.
    let other = TestCa::new();
    let other_pem = PemFile::write(&other.ca_pem);
    let wrong = proxy_trusting(&mock, &other_pem).await;
    let response = post(&wrong, r#"{"model":"m","input":"hi"}"#).await;
    assert_eq!(response.status, 502, "{}", response.text());
    assert_eq!(response.json()["error"]["code"], "upstream_connect_failed");
    assert_eq!(mock.count(), 0);
    wrong.shutdown().await;

    // Control: the same upstream with its CA trusted.
    let pem = PemFile::write(&ca.ca_pem);
    let trusting = proxy_trusting(&mock, &pem).await;
    let response = post(&trusting, r#"{"model":"m","input":"hi"}"#).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(mock.count(), 1);
    trusting.shutdown().await;
}
