//! `--upstream-proxy`: the upstream reached through an HTTP CONNECT proxy or a SOCKS5 proxy,
//! each a small real server here that counts the tunnels it opened.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::mock::MockUpstream;
use crate::proxy::{TestProxy, CANARY_KEY};
use crate::raw;

const LIMIT: Duration = Duration::from_secs(10);

/// Reads bytes until the end of an HTTP head.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// An HTTP CONNECT proxy; returns its address and the targets it tunnelled to.
async fn connect_proxy() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&targets);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let head = read_head(&mut client).await;
                let target = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                assert!(head.starts_with("CONNECT "), "{head}");
                seen.lock().unwrap().push(target.clone());
                let mut upstream = TcpStream::connect(&target).await.unwrap();
                client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, targets)
}

/// A SOCKS5 proxy (no authentication, CONNECT with IPv4 or a domain name); counts tunnels.
async fn socks5_proxy() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tunnels = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&tunnels);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut greeting = [0u8; 2];
                client.read_exact(&mut greeting).await.unwrap();
                let mut methods = vec![0u8; greeting[1] as usize];
                client.read_exact(&mut methods).await.unwrap();
                assert_eq!(greeting[0], 5);
                assert!(methods.contains(&0), "no-auth offered");
                client.write_all(&[5, 0]).await.unwrap();
                let mut request = [0u8; 4];
                client.read_exact(&mut request).await.unwrap();
                assert_eq!(&request[..3], &[5, 1, 0], "CONNECT");
                let host = match request[3] {
                    1 => {
                        let mut ip = [0u8; 4];
                        client.read_exact(&mut ip).await.unwrap();
                        std::net::Ipv4Addr::from(ip).to_string()
                    }
                    3 => {
                        let mut len = [0u8; 1];
                        client.read_exact(&mut len).await.unwrap();
                        let mut name = vec![0u8; len[0] as usize];
                        client.read_exact(&mut name).await.unwrap();
                        String::from_utf8(name).unwrap()
                    }
                    other => panic!("address type {other}"),
                };
                let mut port = [0u8; 2];
                client.read_exact(&mut port).await.unwrap();
                let mut upstream = TcpStream::connect((host.as_str(), u16::from_be_bytes(port)))
                    .await
                    .unwrap();
                client
                    .write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])
                    .await
                    .unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, tunnels)
}

async fn one_request(proxy: &TestProxy) -> raw::RawResponse {
    let body = r#"{"model":"m","stream":true,"input":"via a proxy"}"#;
    raw::exchange(
        proxy.addr,
        &raw::post(proxy.addr, "/v1/responses", body, &[]),
        LIMIT,
    )
    .await
}

#[tokio::test]
async fn an_http_connect_proxy_carries_the_upstream_connection() {
    let mock = MockUpstream::start("through connect").await;
    let (proxy_addr, targets) = connect_proxy().await;
    let flag = format!("http://{proxy_addr}");
    let proxy = TestProxy::start(&mock.base_url, &["--upstream-proxy", &flag]).await;
    let response = one_request(&proxy).await;
    assert_eq!(response.status, 200);
    assert!(response.text().contains("through connect"));
    assert_eq!(
        *targets.lock().unwrap(),
        vec![format!("127.0.0.1:{}", mock.addr.port())]
    );
    let recorded = mock.requests();
    assert_eq!(
        recorded[0].headers["authorization"],
        format!("Bearer {CANARY_KEY}")
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_socks5_proxy_carries_the_upstream_connection() {
    for scheme in ["socks5", "socks5h"] {
        let mock = MockUpstream::start("through socks").await;
        let (proxy_addr, tunnels) = socks5_proxy().await;
        let flag = format!("{scheme}://{proxy_addr}");
        let proxy = TestProxy::start(&mock.base_url, &["--upstream-proxy", &flag]).await;
        let response = one_request(&proxy).await;
        assert_eq!(response.status, 200, "{scheme}");
        assert!(response.text().contains("through socks"), "{scheme}");
        assert_eq!(tunnels.load(Ordering::SeqCst), 1, "{scheme}");
        assert_eq!(mock.count(), 1);
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn an_unreachable_upstream_proxy_is_a_502_connect_failure() {
    let mock = MockUpstream::start("never").await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flag = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let proxy = TestProxy::start(
        &mock.base_url,
        &["--upstream-proxy", &flag, "--max-attempts", "2"],
    )
    .await;
    let response = one_request(&proxy).await;
    assert_eq!(response.status, 502);
    assert_eq!(response.json()["error"]["code"], "upstream_connect_failed");
    assert_eq!(response.header("x-codex-proxy-attempts"), Some("2"));
    assert_eq!(mock.count(), 0);
    proxy.shutdown().await;
}
