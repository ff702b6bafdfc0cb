//! The front end's gate: exact route table and refusals. A pure function of the request head.
//!
//! | method    | path                    | route                                      |
//! |-----------|-------------------------|--------------------------------------------|
//! | POST      | `/v1/responses`         | Responses API, streaming or not            |
//! | POST      | `/v1/responses/compact` | Responses compaction (JSON)                |
//! | POST      | `/v1/chat/completions`  | Chat Completions, translated               |
//! | POST      | `/v1/messages`          | Anthropic Messages, translated (`?beta=true` allowed) |
//! | POST      | `/v1/messages/count_tokens` | local input-token estimate (`?beta=true` allowed) |
//! | GET       | `/v1/models`            | the models this proxy serves (local)       |
//! | GET       | `/health`               | liveness and account summary               |
//! | GET       | `/usage`                | tokens the calling local user spent (all users for root and the info owner) |
//! | GET       | `/metrics`              | Prometheus text exposition                 |
//! | GET, POST | `/shutdown`             | only with `--http-shutdown`                |
//! | HEAD      | `/`                     | connectivity probe (Claude Code): a bare 200 |
//!
//! Refused before anything else happens, never echoing input: a request target that is not a
//! plain origin-form path (absolute-form, authority-form, `*`), `CONNECT`, a
//! `Host` that is not this loopback listener, an `Origin`, `Sec-Fetch-Site` or `Sec-Fetch-Dest`
//! header (a web page in a browser; a lone `Sec-Fetch-Mode` is Node's fetch, not a browser),
//! and any non-WebSocket upgrade (h2c) — all 403; a query string other than the exact ones a
//! route allows — 403; a WebSocket upgrade — 426 at once (Codex
//! then falls back to HTTP without retrying); a path variant of a known route (case, `%`
//! escapes, dot segments, doubled or trailing slashes) or any non-canonical path — 403; a
//! known path with another method — 405; anything else — 404.
//!
//! The path is judged before the query, so a client whose base URL is off by `/v1` hears about
//! its path, not its `?beta=true`: a known route with `/v1` doubled (`/v1/v1/messages`) or
//! missing (`/responses`) is a 403 whose message names the base URL to use instead (a 403, not
//! a 404: Claude Code shows a 403's message, but reports any 404 on `/v1/messages` as "an
//! issue with the selected model").

use http::{header, HeaderMap, Method, Uri};

/// An accepted route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Responses,
    ResponsesCompact,
    ChatCompletions,
    Messages,
    CountTokens,
    Models,
    Health,
    /// `GET /usage`: what local users spent.
    Usage,
    /// `GET /metrics`: Prometheus text exposition.
    Metrics,
    Shutdown,
    /// `HEAD /`: Claude Code's connectivity probe. A bare 200, nothing else.
    Probe,
}

impl Route {
    /// Stable name for logs and the `route` label of the metrics (README, "Usage and metrics": scripts rely on them).
    pub fn name(self) -> &'static str {
        match self {
            Route::Responses => "responses",
            Route::ResponsesCompact => "compact",
            Route::ChatCompletions => "chat",
            Route::Messages => "messages",
            Route::CountTokens => "count_tokens",
            Route::Models => "models",
            Route::Health => "health",
            Route::Usage => "usage",
            Route::Metrics => "metrics",
            Route::Shutdown => "shutdown",
            Route::Probe => "probe",
        }
    }

    /// The upstream endpoint, relative to the configured base, for forwarded routes.
    pub fn upstream_endpoint(self) -> Option<&'static str> {
        match self {
            Route::Responses => Some("/responses"),
            Route::ResponsesCompact => Some("/responses/compact"),
            Route::ChatCompletions | Route::Messages => Some("/responses"),
            Route::CountTokens
            | Route::Models
            | Route::Health
            | Route::Usage
            | Route::Metrics
            | Route::Shutdown
            | Route::Probe => None,
        }
    }

    /// The route's path (`/` for the probe).
    pub fn path(self) -> &'static str {
        TABLE
            .iter()
            .find(|e| e.route == self)
            .map_or("/", |e| e.path)
    }

    /// True for the Anthropic-dialect routes (their errors use Anthropic's shape).
    pub fn is_anthropic(self) -> bool {
        matches!(self, Route::Messages | Route::CountTokens)
    }
}

/// Why a request is refused. Each maps to one fixed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 404: no such route.
    NotFound,
    /// 403: `route` with `/v1` doubled or missing: the client's base URL is off by `/v1`.
    WrongBaseUrl { route: Route, fix: BaseUrlFix },
    /// 405: the path exists with other methods (listed for the `Allow` header).
    MethodNotAllowed { allow: &'static str },
    /// 403: the request is of a kind this proxy never serves.
    Forbidden(Forbidden),
    /// 426: a WebSocket upgrade (Codex tries one first). Codex 0.169.0 falls back to HTTP at
    /// once on 426, but retries a 403 or 404 several times before it does.
    WebSocketUpgrade,
}

/// How a client's base URL should change to reach a route it missed by `/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseUrlFix {
    /// The path had `/v1` twice (`ANTHROPIC_BASE_URL=http://127.0.0.1:PORT/v1`).
    DropV1,
    /// The path had no `/v1` (an OpenAI SDK given `http://127.0.0.1:PORT`).
    AddV1,
}

impl Refusal {
    /// A stable name for the log line (no input in it).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::WrongBaseUrl {
                fix: BaseUrlFix::DropV1,
                ..
            } => "v1_doubled",
            Refusal::WrongBaseUrl {
                fix: BaseUrlFix::AddV1,
                ..
            } => "v1_missing",
            Refusal::MethodNotAllowed { .. } => "method_not_allowed",
            Refusal::WebSocketUpgrade => "websocket_upgrade",
            Refusal::Forbidden(kind) => kind.reason(),
        }
    }
}

/// The kinds of 403 refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    RequestTarget,
    QueryString,
    Host,
    BrowserRequest,
    Upgrade,
    PathVariant,
}

impl Forbidden {
    /// A stable name for the log line.
    pub fn reason(self) -> &'static str {
        match self {
            Forbidden::RequestTarget => "request_target",
            Forbidden::QueryString => "query_string",
            Forbidden::Host => "host",
            Forbidden::BrowserRequest => "browser",
            Forbidden::Upgrade => "upgrade",
            Forbidden::PathVariant => "path_variant",
        }
    }

    /// A fixed, input-free explanation.
    pub fn message(self) -> &'static str {
        match self {
            Forbidden::RequestTarget => "Only origin-form request targets are accepted.",
            Forbidden::QueryString => "Query strings are not accepted on this route.",
            Forbidden::Host => "The Host header must name this loopback listener.",
            Forbidden::BrowserRequest => {
                "Requests from web pages (Origin, Sec-Fetch-Site or Sec-Fetch-Dest headers) are refused."
            }
            Forbidden::Upgrade => {
                "Protocol upgrades (WebSocket, h2c) are not supported; use plain HTTP/1.1."
            }
            Forbidden::PathVariant => "Paths must match a route exactly.",
        }
    }
}

struct Entry {
    path: &'static str,
    methods: &'static [Method],
    allow: &'static str,
    route: Route,
    enabled: fn(&Gate) -> bool,
    /// The exact query strings the route accepts besides none (Claude Code sends
    /// `?beta=true`).
    queries: &'static [&'static str],
}

/// Anthropic SDKs add `?beta=true` to beta endpoints; it changes nothing here.
const BETA: &[&str] = &["beta=true"];

const TABLE: &[Entry] = &[
    Entry {
        path: "/v1/responses",
        methods: &[Method::POST],
        allow: "POST",
        route: Route::Responses,
        enabled: |_| true,
        queries: &[],
    },
    Entry {
        path: "/v1/responses/compact",
        methods: &[Method::POST],
        allow: "POST",
        route: Route::ResponsesCompact,
        enabled: |_| true,
        queries: &[],
    },
    Entry {
        path: "/v1/chat/completions",
        methods: &[Method::POST],
        allow: "POST",
        route: Route::ChatCompletions,
        enabled: |_| true,
        queries: &[],
    },
    Entry {
        path: "/v1/messages",
        methods: &[Method::POST],
        allow: "POST",
        route: Route::Messages,
        enabled: |_| true,
        queries: BETA,
    },
    Entry {
        path: "/v1/messages/count_tokens",
        methods: &[Method::POST],
        allow: "POST",
        route: Route::CountTokens,
        enabled: |_| true,
        queries: BETA,
    },
    Entry {
        path: "/v1/models",
        methods: &[Method::GET],
        allow: "GET",
        route: Route::Models,
        enabled: |_| true,
        queries: &[],
    },
    Entry {
        path: "/health",
        methods: &[Method::GET],
        allow: "GET",
        route: Route::Health,
        enabled: |_| true,
        queries: &[],
    },
    Entry {
        path: "/usage",
        methods: &[Method::GET],
        allow: "GET",
        route: Route::Usage,
        enabled: |_| true,
        queries: &[],
    },
    Entry {
        path: "/metrics",
        methods: &[Method::GET],
        allow: "GET",
        route: Route::Metrics,
        enabled: |_| true,
        queries: &[],
    },
    Entry {
        path: "/shutdown",
        methods: &[Method::GET, Method::POST],
        allow: "GET, POST",
        route: Route::Shutdown,
        enabled: |g| g.http_shutdown,
        queries: &[],
    },
];

/// What the gate needs to know about this listener.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The listener's port, for the `Host` check.
    pub port: u16,
    /// `--http-shutdown`.
    pub http_shutdown: bool,
    /// Accepted `Host` values, precomputed from the port.
    hosts: [String; 3],
}

impl Gate {
    pub fn new(port: u16, http_shutdown: bool) -> Self {
        Gate {
            port,
            http_shutdown,
            hosts: [
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
            ],
        }
    }

    /// Accepts or refuses a request head. Checks run from the most to the least suspicious.
    pub fn classify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Route, Refusal> {
        use Forbidden::*;
        let forbid = |f| Err(Refusal::Forbidden(f));
        if method == Method::CONNECT
            || uri.scheme().is_some()
            || uri.authority().is_some()
            || !uri.path().starts_with('/')
        {
            return forbid(RequestTarget);
        }
        if is_from_a_web_page(headers) {
            return forbid(BrowserRequest);
        }
        if is_websocket_upgrade(headers) {
            return Err(Refusal::WebSocketUpgrade);
        }
        if headers.contains_key(header::UPGRADE) || headers.contains_key("http2-settings") {
            return forbid(Upgrade);
        }
        if !self.host_is_loopback_listener(headers) {
            return forbid(Host);
        }
        // The path first: a wrong path is what the client must fix, whatever its query.
        let path = uri.path();
        if path == "/" && method == Method::HEAD {
            return match uri.query() {
                Some(_) => forbid(QueryString),
                None => Ok(Route::Probe),
            };
        }
        let Some(entry) = TABLE.iter().find(|e| e.path == path && (e.enabled)(self)) else {
            if self.is_variant_of_known_path(path) {
                return forbid(PathVariant);
            }
            return Err(match self.off_by_v1(path) {
                Some((route, fix)) => Refusal::WrongBaseUrl { route, fix },
                None => Refusal::NotFound,
            });
        };
        if let Some(query) = uri.query() {
            if !entry.queries.contains(&query) {
                return forbid(QueryString);
            }
        }
        if entry.methods.contains(method) {
            Ok(entry.route)
        } else {
            Err(Refusal::MethodNotAllowed { allow: entry.allow })
        }
    }

    /// The `/v1/…` route that `path` names with `/v1` doubled or missing, and the fix.
    fn off_by_v1(&self, path: &str) -> Option<(Route, BaseUrlFix)> {
        let api = || {
            TABLE
                .iter()
                .filter(|e| e.path.starts_with("/v1/") && (e.enabled)(self))
        };
        if let Some(rest) = path.strip_prefix("/v1") {
            return api()
                .find(|e| e.path == rest)
                .map(|e| (e.route, BaseUrlFix::DropV1));
        }
        api()
            .find(|e| e.path.strip_prefix("/v1") == Some(path))
            .map(|e| (e.route, BaseUrlFix::AddV1))
    }

    fn host_is_loopback_listener(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(header::HOST).iter();
        match (values.next(), values.next()) {
            (Some(host), None) => host
                .to_str()
                .map(|h| self.hosts.iter().any(|ok| ok.eq_ignore_ascii_case(h)))
                .unwrap_or(false),
            _ => false,
        }
    }

    /// True when `path` is not in canonical form (`%` escapes, dot segments, doubled or
    /// trailing slashes, backslashes) or differs from a route only by case. Such paths are
    /// refused as tampering (403) rather than reported as unknown (404).
    fn is_variant_of_known_path(&self, path: &str) -> bool {
        let non_canonical = path.contains('%')
            || path.contains("//")
            || path.contains('\\')
            || path.split('/').any(|seg| seg == "." || seg == "..")
            || (path.len() > 1 && path.ends_with('/'));
        let normalised = normalise_path(path);
        non_canonical
            || TABLE
                .iter()
                .any(|e| (e.enabled)(self) && e.path == normalised && e.path != path)
    }
}

/// True when a browser sent the request on behalf of a web page: it carries `Origin`,
/// `Sec-Fetch-Site` or `Sec-Fetch-Dest`. Browsers send Site and Dest on every request (`<img>`,
/// forms, navigations, fetch, WebSocket), so these catch a page even where it sends no
/// `Origin`. `Sec-Fetch-Mode` alone is not a browser: Node's built-in fetch (undici) sends
/// `sec-fetch-mode: cors` on every request, so every fetch-based SDK would be refused.
/// `Sec-Fetch-User` only ever comes next to Site and Dest, so it needs no rule of its own.
fn is_from_a_web_page(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN)
        || headers.contains_key("sec-fetch-site")
        || headers.contains_key("sec-fetch-dest")
}

/// The most of a path a log line shows, in bytes.
pub const LOG_PATH_MAX: usize = 160;

/// A method or path as a log line may show it: printable ASCII as it is except `"` and `\\`,
/// every other byte as `%XX`, cut at [`LOG_PATH_MAX`] bytes (then `…`). Callers never pass the
/// query.
pub fn log_safe(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len().min(LOG_PATH_MAX) + 3);
    for &b in text.as_bytes() {
        let plain = b.is_ascii_graphic() && !matches!(b, b'"' | b'\\');
        if out.len() + if plain { 1 } else { 3 } > LOG_PATH_MAX {
            out.push('…');
            break;
        }
        if plain {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// True for `Upgrade: websocket` (any case, any position in a list).
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(header::UPGRADE).iter().any(|v| {
        v.to_str()
            .map(|s| {
                s.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
            })
            .unwrap_or(false)
    })
}

/// Lower-cases, percent-decodes (repeatedly), resolves dot segments and drops empty segments.
fn normalise_path(path: &str) -> String {
    let mut current = path.to_ascii_lowercase();
    for _ in 0..3 {
        let decoded = percent_decode(&current).to_ascii_lowercase();
        if decoded == current {
            break;
        }
        current = decoded;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in current.split(['/', '\\']) {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn gate() -> Gate {
        Gate::new(4000, true)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:4000"));
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn check(
        method: Method,
        target: &str,
        extra: &[(&'static str, &'static str)],
    ) -> Result<Route, Refusal> {
        gate().classify(&method, &target.parse().unwrap(), &headers(extra))
    }

    #[test]
    fn serves_exactly_the_route_table() {
        assert_eq!(
            check(Method::POST, "/v1/responses", &[]),
            Ok(Route::Responses)
        );
        assert_eq!(
            check(Method::POST, "/v1/responses/compact", &[]),
            Ok(Route::ResponsesCompact)
        );
        assert_eq!(
            check(Method::POST, "/v1/chat/completions", &[]),
            Ok(Route::ChatCompletions)
        );
        assert_eq!(
            check(Method::POST, "/v1/messages", &[]),
            Ok(Route::Messages)
        );
        assert_eq!(
            check(Method::POST, "/v1/messages?beta=true", &[]),
            Ok(Route::Messages)
        );
        assert_eq!(
            check(Method::POST, "/v1/messages/count_tokens?beta=true", &[]),
            Ok(Route::CountTokens)
        );
        assert_eq!(check(Method::GET, "/v1/models", &[]), Ok(Route::Models));
        assert_eq!(check(Method::GET, "/health", &[]), Ok(Route::Health));
        assert_eq!(check(Method::GET, "/usage", &[]), Ok(Route::Usage));
        assert_eq!(check(Method::GET, "/metrics", &[]), Ok(Route::Metrics));
        assert_eq!(check(Method::GET, "/shutdown", &[]), Ok(Route::Shutdown));
        assert_eq!(check(Method::POST, "/shutdown", &[]), Ok(Route::Shutdown));
    }

    #[test]
    fn usage_and_metrics_are_get_only_without_a_query() {
        for path in ["/usage", "/metrics"] {
            assert_eq!(
                check(Method::POST, path, &[]),
                Err(Refusal::MethodNotAllowed { allow: "GET" })
            );
            assert_eq!(
                check(Method::GET, &format!("{path}?x=1"), &[]),
                Err(Refusal::Forbidden(Forbidden::QueryString))
            );
        }
        assert_eq!(Route::Usage.name(), "usage");
        assert_eq!(Route::Metrics.name(), "metrics");
        assert_eq!(Route::Usage.upstream_endpoint(), None);
    }

    #[test]
    fn shutdown_is_unknown_without_the_flag() {
        let gate = Gate::new(4000, false);
        assert_eq!(
            gate.classify(&Method::GET, &"/shutdown".parse().unwrap(), &headers(&[])),
            Err(Refusal::NotFound)
        );
    }

    #[test]
    fn other_methods_on_known_paths_are_405() {
        for m in [
            Method::GET,
            Method::PUT,
            Method::HEAD,
            Method::OPTIONS,
            Method::DELETE,
        ] {
            assert_eq!(
                check(m, "/v1/responses", &[]),
                Err(Refusal::MethodNotAllowed { allow: "POST" })
            );
        }
        assert_eq!(
            check(Method::POST, "/health", &[]),
            Err(Refusal::MethodNotAllowed { allow: "GET" })
        );
        assert_eq!(
            check(Method::DELETE, "/shutdown", &[]),
            Err(Refusal::MethodNotAllowed { allow: "GET, POST" })
        );
    }

    #[test]
    fn unknown_paths_are_404() {
        for p in [
            "/",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/messages/batches",
            "/v2/responses",
            "/healthz",
        ] {
            assert_eq!(check(Method::POST, p, &[]), Err(Refusal::NotFound), "{p}");
        }
    }

    #[test]
    fn path_variants_are_403() {
        for p in [
            "/v1/responses/",
            "/v1/responses/.",
            "/v1/responses/../responses",
            "/v1/./responses",
            "/v1/%72esponses",
            "/v1/responses%2f..%2fresponses",
            "//v1/responses",
            "/v1//responses",
            "/V1/responses",
            "/v1/Responses/compact",
            "/health/",
            "/%2568ealth",
        ] {
            assert_eq!(
                check(Method::POST, p, &[]),
                Err(Refusal::Forbidden(Forbidden::PathVariant)),
                "{p}"
            );
        }
    }

    #[test]
    fn non_canonical_paths_are_403_even_off_the_table() {
        for p in [
            "/v1/responses%2f..%2fx",
            "/v1/responses/../x",
            "/v1/responses/%2e%2e/x",
            "/x/",
            "/a//b",
            "/a\\b",
        ] {
            assert_eq!(
                check(Method::POST, p, &[]),
                Err(Refusal::Forbidden(Forbidden::PathVariant)),
                "{p}"
            );
        }
    }

    #[test]
    fn any_query_string_is_403() {
        for t in [
            "/v1/responses?x=1",
            "/v1/responses?",
            "/health?verbose",
            "/v1/responses?beta=true",
            "/v1/messages?beta=true&x=1",
            "/v1/messages?beta=false",
            "/v1/models?beta=true",
        ] {
            assert_eq!(
                check(Method::POST, t, &[]),
                Err(Refusal::Forbidden(Forbidden::QueryString)),
                "{t}"
            );
        }
    }

    #[test]
    fn the_path_is_checked_before_the_query() {
        assert_eq!(
            check(Method::POST, "/v1/v1/messages?beta=true", &[]),
            Err(Refusal::WrongBaseUrl {
                route: Route::Messages,
                fix: BaseUrlFix::DropV1
            })
        );
        assert_eq!(
            check(Method::POST, "/v1/embeddings?x=1", &[]),
            Err(Refusal::NotFound)
        );
        assert_eq!(
            check(Method::POST, "/v1/responses/?x=1", &[]),
            Err(Refusal::Forbidden(Forbidden::PathVariant))
        );
    }

    #[test]
    fn a_known_route_with_v1_doubled_or_missing_names_the_base_url_fix() {
        use BaseUrlFix::*;
        for (method, target, route, fix) in [
            (Method::POST, "/v1/v1/messages", Route::Messages, DropV1),
            (
                Method::POST,
                "/v1/v1/messages/count_tokens?beta=true",
                Route::CountTokens,
                DropV1,
            ),
            (Method::POST, "/v1/v1/responses", Route::Responses, DropV1),
            (
                Method::POST,
                "/v1/v1/chat/completions",
                Route::ChatCompletions,
                DropV1,
            ),
            (Method::GET, "/v1/v1/models", Route::Models, DropV1),
            (Method::POST, "/messages", Route::Messages, AddV1),
            (Method::POST, "/messages?beta=true", Route::Messages, AddV1),
            (Method::POST, "/responses", Route::Responses, AddV1),
            (
                Method::POST,
                "/responses/compact",
                Route::ResponsesCompact,
                AddV1,
            ),
            (
                Method::POST,
                "/chat/completions",
                Route::ChatCompletions,
                AddV1,
            ),
            (Method::GET, "/models", Route::Models, AddV1),
        ] {
            assert_eq!(
                check(method, target, &[]),
                Err(Refusal::WrongBaseUrl { route, fix }),
                "{target}"
            );
        }
        // Not a route with /v1 off by one: plain unknown paths.
        for p in [
            "/v1/v1/v1/responses",
            "/v1/health",
            "/v1/v1",
            "/v1/v1/embeddings",
            "/v2/responses",
        ] {
            assert_eq!(check(Method::POST, p, &[]), Err(Refusal::NotFound), "{p}");
        }
        // `/shutdown` is off the table without the flag, and never under /v1.
        let gate = Gate::new(4000, false);
        assert_eq!(
            gate.classify(
                &Method::GET,
                &"/v1/shutdown".parse().unwrap(),
                &headers(&[])
            ),
            Err(Refusal::NotFound)
        );
    }

    #[test]
    fn head_slash_is_the_connectivity_probe() {
        assert_eq!(check(Method::HEAD, "/", &[]), Ok(Route::Probe));
        for m in [Method::GET, Method::POST, Method::OPTIONS] {
            assert_eq!(check(m.clone(), "/", &[]), Err(Refusal::NotFound), "{m}");
        }
        assert_eq!(
            check(Method::HEAD, "/?x=1", &[]),
            Err(Refusal::Forbidden(Forbidden::QueryString))
        );
        assert_eq!(
            check(Method::HEAD, "/", &[("origin", "http://evil.example")]),
            Err(Refusal::Forbidden(Forbidden::BrowserRequest))
        );
    }

    #[test]
    fn log_safe_escapes_and_bounds_what_it_shows() {
        assert_eq!(log_safe("/v1/v1/messages"), "/v1/v1/messages");
        assert_eq!(
            log_safe("/a\"b\\c d\u{7f}\u{e9}"),
            "/a%22b%5Cc%20d%7F%C3%A9"
        );
        let long = "/x".repeat(200);
        let shown = log_safe(&long);
        assert_eq!(shown.len(), LOG_PATH_MAX + "…".len());
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn absolute_form_authority_form_asterisk_and_connect_are_403() {
        let f = Err(Refusal::Forbidden(Forbidden::RequestTarget));
        assert_eq!(
            check(Method::POST, "http://evil.example/v1/responses", &[]),
            f
        );
        assert_eq!(
            check(Method::POST, "http://127.0.0.1:4000/v1/responses", &[]),
            f
        );
        assert_eq!(check(Method::CONNECT, "evil.example:443", &[]), f);
        assert_eq!(check(Method::OPTIONS, "*", &[]), f);
    }

    #[test]
    fn host_must_name_this_loopback_listener() {
        let g = gate();
        let uri: Uri = "/health".parse().unwrap();
        for ok in [
            "127.0.0.1:4000",
            "localhost:4000",
            "LOCALHOST:4000",
            "[::1]:4000",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static(ok));
            assert_eq!(
                g.classify(&Method::GET, &uri, &h),
                Ok(Route::Health),
                "{ok}"
            );
        }
        for bad in [
            "evil.example",
            "127.0.0.1",
            "127.0.0.1:4001",
            "localhost",
            "evil.example:4000",
            "127.0.0.1:4000.evil",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static(bad));
            assert_eq!(
                g.classify(&Method::GET, &uri, &h),
                Err(Refusal::Forbidden(Forbidden::Host)),
                "{bad}"
            );
        }
        assert_eq!(
            g.classify(&Method::GET, &uri, &HeaderMap::new()),
            Err(Refusal::Forbidden(Forbidden::Host))
        );
        let mut two = headers(&[]);
        two.append(header::HOST, HeaderValue::from_static("127.0.0.1:4000"));
        assert_eq!(
            g.classify(&Method::GET, &uri, &two),
            Err(Refusal::Forbidden(Forbidden::Host))
        );
    }

    #[test]
    fn browser_requests_are_403_even_for_shutdown() {
        let f = Err(Refusal::Forbidden(Forbidden::BrowserRequest));
        assert_eq!(
            check(
                Method::GET,
                "/shutdown",
                &[("origin", "http://evil.example")]
            ),
            f
        );
        assert_eq!(check(Method::GET, "/shutdown", &[("origin", "null")]), f);
        assert_eq!(
            check(
                Method::GET,
                "/shutdown",
                &[("sec-fetch-mode", "no-cors"), ("sec-fetch-dest", "image")]
            ),
            f
        );
        assert_eq!(
            check(Method::GET, "/shutdown", &[("sec-fetch-dest", "image")]),
            f
        );
        assert_eq!(
            check(
                Method::POST,
                "/v1/responses",
                &[("sec-fetch-site", "cross-site")]
            ),
            f
        );
        assert_eq!(
            check(
                Method::POST,
                "/v1/responses",
                &[
                    ("sec-fetch-mode", "cors"),
                    ("sec-fetch-site", "same-origin")
                ]
            ),
            f
        );
    }

    #[test]
    fn a_lone_sec_fetch_mode_is_not_a_browser() {
        // Node's built-in fetch (undici) sends `sec-fetch-mode: cors` on every request and no
        // `Origin`, `Sec-Fetch-Site` or `Sec-Fetch-Dest`: every fetch-based SDK looks like this.
        for route in [
            (Method::POST, "/v1/responses", Route::Responses),
            (Method::POST, "/v1/chat/completions", Route::ChatCompletions),
            (Method::POST, "/v1/messages?beta=true", Route::Messages),
            (Method::GET, "/v1/models", Route::Models),
        ] {
            assert_eq!(
                check(route.0, route.1, &[("sec-fetch-mode", "cors")]),
                Ok(route.2),
                "{}",
                route.1
            );
        }
        // `Sec-Fetch-User` only ever comes with Site and Dest; alone it is no browser either.
        assert_eq!(
            check(
                Method::POST,
                "/v1/responses",
                &[("sec-fetch-mode", "navigate"), ("sec-fetch-user", "?1")]
            ),
            Ok(Route::Responses)
        );
    }

    #[test]
    fn websocket_upgrades_are_426_and_other_upgrades_403() {
        assert_eq!(
            check(
                Method::GET,
                "/v1/responses",
                &[("upgrade", "websocket"), ("connection", "upgrade")]
            ),
            Err(Refusal::WebSocketUpgrade)
        );
        assert_eq!(
            check(
                Method::GET,
                "/v1/responses",
                &[("upgrade", "WebSocket"), ("origin", "http://evil.example")]
            ),
            Err(Refusal::Forbidden(Forbidden::BrowserRequest)),
            "a web page's WebSocket is a browser request first"
        );
        let f = Err(Refusal::Forbidden(Forbidden::Upgrade));
        assert_eq!(
            check(
                Method::POST,
                "/v1/responses",
                &[("upgrade", "h2c"), ("http2-settings", "AAA")]
            ),
            f
        );
        assert_eq!(
            check(Method::POST, "/v1/responses", &[("http2-settings", "AAA")]),
            f
        );
    }
}
