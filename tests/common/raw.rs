//! A tiny raw HTTP/1.1 client over `TcpStream`: it sends exactly the bytes given (client
//! libraries normalise targets and framing, which would hide what the proxy does) and reads
//! the response incrementally.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed response head plus whatever body bytes were read.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Lower-cased names, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes as received (chunked encoding decoded when `complete`).
    pub body: Vec<u8>,
    /// The body ended cleanly (content-length reached, or the final chunk arrived).
    pub complete: bool,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// `POST path` with a JSON body and the right Host, plus extra header lines.
pub fn post(addr: SocketAddr, path: &str, body: &str, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        addr.port(),
        body.len()
    );
    for (k, v) in extra_headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// `GET path` with the right Host, plus extra header lines.
pub fn get(addr: SocketAddr, path: &str, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n", addr.port());
    for (k, v) in extra_headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Sends `request` on a new connection and reads one response (at most `limit` in total).
pub async fn exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_response(&mut stream, limit).await
}

/// Reads one response from `stream`: the head, then the body by content-length or chunks,
/// until it is complete, the peer closes, or `limit` passes.
pub async fn read_response(stream: &mut TcpStream, limit: Duration) -> RawResponse {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos + 4;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => {
                return RawResponse {
                    status: 0,
                    headers: vec![],
                    body: buf,
                    complete: false,
                };
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let (status, headers) = parse_head(&head);
    let mut raw_body = buf[head_end..].to_vec();
    let Framing {
        content_length,
        chunked,
        no_body,
    } = framing(status, &headers);
    loop {
        if no_body {
            return RawResponse {
                status,
                headers,
                body: Vec::new(),
                complete: true,
            };
        }
        if let Some(len) = content_length {
            if raw_body.len() >= len {
                raw_body.truncate(len);
                return RawResponse {
                    status,
                    headers,
                    body: raw_body,
                    complete: true,
                };
            }
        } else if chunked {
            if let Some(decoded) = decode_chunked(&raw_body) {
                return RawResponse {
                    status,
                    headers,
                    body: decoded,
                    complete: true,
                };
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => raw_body.extend_from_slice(&chunk[..n]),
            _ => {
                // Closed or out of time before a clean end: return what arrived, decoded
                // as far as it goes.
                let body = if chunked {
                    decode_chunked_partial(&raw_body)
                } else {
                    raw_body
                };
                let complete = content_length.is_none() && !chunked;
                return RawResponse {
                    status,
                    headers,
                    body,
                    complete,
                };
            }
        }
    }
}

/// How a response body is delimited.
struct Framing {
    content_length: Option<usize>,
    chunked: bool,
    /// 1xx, 204 and 304 responses have no body.
    no_body: bool,
}

fn framing(status: u16, headers: &[(String, String)]) -> Framing {
    Framing {
        content_length: headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok()),
        chunked: headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked")),
        no_body: status == 204 || status == 304 || (100..200).contains(&status),
    }
}

/// The status code and the (lower-cased) headers of a response head.
fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a complete chunked body; `None` until the final chunk has arrived.
fn decode_chunked(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return find(data, b"\r\n").map(|_| out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Decodes as many whole chunks as have arrived.
pub fn decode_chunked_partial(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = find(data, b"\r\n") {
        let Some(size) = std::str::from_utf8(&data[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
        else {
            break;
        };
        data = &data[line_end + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// Reads from `stream` into `buf` until `buf` contains `needle`, the peer closes, or `limit`
/// passes; true when found. For watching a response arrive piece by piece.
pub async fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    needle: &[u8],
    limit: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if find(buf, needle).is_some() {
            return true;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
}

/// Reads whatever arrives on `stream` within `window` into `buf`; returns how many bytes came.
pub async fn read_for(stream: &mut TcpStream, buf: &mut Vec<u8>, window: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + window;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut total = 0;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        total += n;
    }
    total
}

/// Parses response bytes read so far (head and body as on the wire). `complete` is true only
/// when the framing (content-length or the final chunk) says the body ended cleanly.
pub fn parse_response(raw: &[u8]) -> RawResponse {
    let Some(head_end) = find(raw, b"\r\n\r\n").map(|p| p + 4) else {
        return RawResponse {
            status: 0,
            headers: vec![],
            body: raw.to_vec(),
            complete: false,
        };
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let (status, headers) = parse_head(&head);
    let raw_body = &raw[head_end..];
    let Framing {
        content_length,
        chunked,
        no_body,
    } = framing(status, &headers);
    if no_body {
        return RawResponse {
            status,
            headers,
            body: Vec::new(),
            complete: true,
        };
    }
    if let Some(len) = content_length {
        let complete = raw_body.len() >= len;
        let body = raw_body[..len.min(raw_body.len())].to_vec();
        return RawResponse {
            status,
            headers,
            body,
            complete,
        };
    }
    if chunked {
        return match decode_chunked(raw_body) {
            Some(body) => RawResponse {
                status,
                headers,
                body,
                complete: true,
            },
            None => RawResponse {
                status,
                headers,
                body: decode_chunked_partial(raw_body),
                complete: false,
            },
        };
    }
    RawResponse {
        status,
        headers,
        body: raw_body.to_vec(),
        complete: false,
    }
}

/// Continues reading a response whose first bytes are already in `buf`, until it is complete,
/// the peer closes, or `limit` passes; then parses it (see [`parse_response`]).
pub async fn read_rest(stream: &mut TcpStream, mut buf: Vec<u8>, limit: Duration) -> RawResponse {
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let parsed = parse_response(&buf);
        if parsed.complete {
            return parsed;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return parsed,
        }
    }
}

/// Reads from `stream` until the peer closes, an error, or `limit` passes. Returns every byte
/// read and whether the peer closed (EOF or reset) within the limit.
pub async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (buf, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (buf, false),
        }
    }
}

/// Splits `data` into the complete responses it holds, in order (pipelined answers read from
/// one connection). Parsing stops at the first incomplete or unparsable response.
pub fn parse_responses(mut data: &[u8]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    while let Some((response, used)) = parse_one(data) {
        out.push(response);
        data = &data[used..];
    }
    out
}

/// One complete response at the start of `data` and the number of bytes it took.
fn parse_one(data: &[u8]) -> Option<(RawResponse, usize)> {
    let head_end = find(data, b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&data[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &data[head_end..];
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let (body, used) = if status == 204 || status == 304 || (100..200).contains(&status) {
        (Vec::new(), 0)
    } else if chunked {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let line_end = at + find(&rest[at..], b"\r\n")?;
            let size_text = std::str::from_utf8(&rest[at..line_end]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                // No trailers expected: the last chunk is followed by an empty line.
                at += find(&rest[at..], b"\r\n")? + 2;
                break;
            }
            if rest.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
        (body, at)
    } else {
        let len: usize = header("content-length").map_or(Some(0), |v| v.parse().ok())?;
        if rest.len() < len {
            return None;
        }
        (rest[..len].to_vec(), len)
    };
    Some((
        RawResponse {
            status,
            headers,
            body,
            complete: true,
        },
        head_end + used,
    ))
}
