//! Refusals a local user can provoke at will are summarised in the log, not logged one by one.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use crate::spawn::{start, temp_dir, Launch};

#[test]
fn five_hundred_refused_connections_make_a_handful_of_warn_lines_with_the_total_count() {
    let dir = temp_dir("flood");
    let mut launch = Launch::with_stdin(b"sk-valid\n");
    launch.args = ["--max-connections", "2", "--log-format", "json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let proxy = start(launch, &dir);
    // Two idle connections take both slots (well within the 10 s head timeout).
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(proxy.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..500 {
        let mut refused = TcpStream::connect(proxy.addr).unwrap();
        refused
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = Vec::new();
        refused.read_to_end(&mut answer).unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 503"),
            "refusal {i}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    drop(held);
    let (status, logs) = proxy.terminate();
    assert_eq!(status.code(), Some(0), "{logs}");
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| l.contains("connection limit"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        !lines.is_empty() && lines.len() <= 5,
        "{} lines about the connection limit:\n{logs}",
        lines.len()
    );
    let total: u64 = lines
        .iter()
        .map(|l| {
            assert_eq!(l["level"], "WARN", "{l}");
            l["refused"].as_u64().unwrap_or(0)
        })
        .sum();
    assert_eq!(total, 500, "the lines count every refusal:\n{logs}");
}
