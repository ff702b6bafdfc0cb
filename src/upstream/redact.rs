//! Removing echoes of a secret from upstream error bodies.
//!
//! OpenAI's 401 says "Incorrect API key provided: sk-abc1****…wxyz" (short keys in full). Any
//! token of key-like characters (`A-Za-z0-9_-` and the `*` mask) that contains the key, is a
//! long piece of it, or is a masked form sharing its first or last characters, is replaced
//! by `[REDACTED]`.
//!
//! [`EchoMatcher`] and [`EchoFilter`] do the same for response headers, success bodies and
//! event streams, where a body cannot be read whole first: they find the full secret and its
//! masked tails as the bytes stream, and mask them in place.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use bytes::Bytes;

const REDACTED: &[u8] = b"[REDACTED]";

/// Prefix or suffix length that identifies a masked echo.
const MASK_PREFIX: usize = 3;
const MASK_SUFFIX: usize = 4;
/// A bare (unmasked) fragment this long of the key is itself redacted.
const FRAGMENT: usize = 8;

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'*'
}

fn is_echo(token: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() || token.len() < MASK_SUFFIX {
        return false;
    }
    if memchr::memmem::find(token, secret).is_some() {
        return true;
    }
    if token.len() >= FRAGMENT.min(secret.len()) && memchr::memmem::find(secret, token).is_some() {
        return true;
    }
    if token.contains(&b'*') {
        let prefix = MASK_PREFIX.min(secret.len());
        let suffix = MASK_SUFFIX.min(secret.len());
        return token.starts_with(&secret[..prefix])
            || token.ends_with(&secret[secret.len() - suffix..]);
    }
    false
}

/// Returns the body with every echo of any secret replaced, or `None` when there is none.
pub fn redact<'a>(body: &[u8], secrets: impl Iterator<Item = &'a [u8]> + Clone) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    let mut copied = 0;
    while i < body.len() {
        if !is_token_byte(body[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < body.len() && is_token_byte(body[i]) {
            i += 1;
        }
        let token = &body[start..i];
        if secrets.clone().any(|s| is_echo(token, s)) {
            let buf = out.get_or_insert_with(|| Vec::with_capacity(body.len()));
            buf.extend_from_slice(&body[copied..start]);
            buf.extend_from_slice(REDACTED);
            copied = i;
        }
    }
    let mut buf = out?;
    buf.extend_from_slice(&body[copied..]);
    Some(buf)
}

// === Echoes in headers, bodies and streams ===

/// The secret bytes an [`EchoMatcher`] looks for, read in place from their owner's locked
/// memory (no copy is made).
pub trait SecretBytes: Send + Sync {
    /// The secret, if there is one right now.
    fn secret_bytes(&self) -> Option<&[u8]>;
}

impl SecretBytes for crate::pool::Token {
    fn secret_bytes(&self) -> Option<&[u8]> {
        self.secret()
    }
}

/// Longest key prefix used as a search anchor (never more than half a secret).
const ANCHOR: usize = 8;
/// Secrets shorter than this get no masked-tail patterns (their last four bytes would be
/// too large a share of them to keep outside locked memory).
const MIN_MASKED_SECRET: usize = 12;
/// The masks that precede a key's last characters in a masked echo: `sk-…wxyz`, `sk-****wxyz`.
const MASK_MARKS: [&[u8]; 2] = [b"*", "\u{2026}".as_bytes()];
/// A partial key this long left over at the end of a body is masked too.
const TAIL_FRAGMENT: usize = 8;

/// What a search anchor stands for.
enum Target {
    /// The anchor is the first bytes of secret `i`; the rest is compared with its locked bytes.
    KeyStart(usize),
    /// The anchor is the whole pattern (a masked tail: a mask mark and the last 4 bytes).
    Whole,
}

/// Finds echoes of every secret in the pool: the full secret, and the masked tails
/// `*wxyz` and `…wxyz` (a mask mark followed by the secret's last four characters, which is
/// how OpenAI and others print a key they refuse: `sk-proj-****wxyz`, `sk-…wxyz`).
///
/// The search automaton holds only anchors, never a whole secret: the first
/// `min(8, len/2)` bytes of each secret (for `sk-proj-` keys and JWTs that is their public
/// prefix) and the masked tails. A hit on a key anchor is confirmed against the secret's bytes
/// in locked memory, so the process keeps one copy of each key (see SECURITY.md §6).
pub struct EchoMatcher {
    secrets: Vec<Arc<dyn SecretBytes>>,
    automaton: Option<AhoCorasick>,
    /// Per anchor (pattern id): what it stands for.
    targets: Vec<Vec<Target>>,
    /// Every proper prefix of every anchor, to know when a body's last bytes could start one.
    anchor_prefixes: HashSet<Vec<u8>>,
    /// First bytes of the anchors (a quick filter before the prefix lookup).
    first_bytes: [bool; 256],
    longest_anchor: usize,
    /// The longest pattern: the bound on what a stream may hold back.
    longest: usize,
}

impl EchoMatcher {
    /// A matcher for the secrets of `sources` (sources without a secret are skipped).
    pub fn new(sources: Vec<Arc<dyn SecretBytes>>) -> Self {
        let mut anchors: Vec<Vec<u8>> = Vec::new();
        let mut targets: Vec<Vec<Target>> = Vec::new();
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut add = |anchor: Vec<u8>, target: Target| {
            let id = *index.entry(anchor.clone()).or_insert_with(|| {
                anchors.push(anchor);
                targets.push(Vec::new());
                targets.len() - 1
            });
            targets[id].push(target);
        };
        let mut secrets = Vec::new();
        let mut longest = 0;
        for source in sources {
            let Some(secret) = source.secret_bytes().filter(|s| !s.is_empty()) else {
                continue;
            };
            let i = secrets.len();
            let anchor_len = ANCHOR.min(secret.len() / 2).max(1);
            add(secret[..anchor_len].to_vec(), Target::KeyStart(i));
            longest = longest.max(secret.len());
            if secret.len() >= MIN_MASKED_SECRET {
                let tail = &secret[secret.len() - MASK_SUFFIX..];
                for mark in MASK_MARKS {
                    let mut pattern = mark.to_vec();
                    pattern.extend_from_slice(tail);
                    longest = longest.max(pattern.len());
                    add(pattern, Target::Whole);
                }
            }
            secrets.push(source);
        }
        let mut anchor_prefixes = HashSet::new();
        let mut first_bytes = [false; 256];
        let mut longest_anchor = 0;
        for anchor in &anchors {
            first_bytes[usize::from(anchor[0])] = true;
            longest_anchor = longest_anchor.max(anchor.len());
            for n in 1..anchor.len() {
                anchor_prefixes.insert(anchor[..n].to_vec());
            }
        }
        let automaton = (!anchors.is_empty())
            .then(|| AhoCorasick::new(&anchors).ok())
            .flatten();
        EchoMatcher {
            secrets,
            automaton,
            targets,
            anchor_prefixes,
            first_bytes,
            longest_anchor,
            longest,
        }
    }

    /// The longest pattern's length: a stream never holds back more than this minus one.
    pub fn longest_pattern(&self) -> usize {
        self.longest
    }

    /// Finds the echoes in `data`: the byte ranges to mask (possibly overlapping, in no
    /// particular order) and, when the last bytes could be the start of an echo that the
    /// next bytes complete, where that possible start is.
    fn scan(&self, data: &[u8], ranges: &mut Vec<(usize, usize)>) -> Option<usize> {
        let automaton = self.automaton.as_ref()?;
        let mut hold: Option<usize> = None;
        let mut hold_at = |p: usize| hold = Some(hold.map_or(p, |h: usize| h.min(p)));
        for hit in automaton.find_overlapping_iter(data) {
            let start = hit.start();
            for target in &self.targets[hit.pattern().as_usize()] {
                match target {
                    Target::Whole => ranges.push((start, hit.end())),
                    Target::KeyStart(i) => {
                        let Some(secret) = self.secrets[*i].secret_bytes() else {
                            continue;
                        };
                        let rest = &data[start..];
                        if rest.len() >= secret.len() {
                            if &rest[..secret.len()] == secret {
                                ranges.push((start, start + secret.len()));
                            }
                        } else if secret.starts_with(rest) {
                            hold_at(start);
                        }
                    }
                }
            }
        }
        let from = data
            .len()
            .saturating_sub(self.longest_anchor.saturating_sub(1));
        for start in from..data.len() {
            if self.first_bytes[usize::from(data[start])]
                && self.anchor_prefixes.contains(&data[start..])
            {
                hold_at(start);
                break;
            }
        }
        hold
    }

    /// Masks every echo in a complete buffer (a header value, a whole body), keeping its
    /// length; a partial key of at least 8 bytes at its very end is masked too. True when
    /// anything was masked.
    pub fn redact_whole(&self, buf: &mut [u8]) -> bool {
        let mut ranges = Vec::new();
        if let Some(start) = self.scan(buf, &mut ranges) {
            if buf.len() - start >= TAIL_FRAGMENT {
                ranges.push((start, buf.len()));
            }
        }
        mask_ranges(buf, &mut ranges)
    }

    /// Masks echoes in every header value (any status); true when any was masked.
    pub fn redact_headers(&self, headers: &mut http::HeaderMap) -> bool {
        let mut found = false;
        if self.automaton.is_none() {
            return found;
        }
        let mut ranges = Vec::new();
        for value in headers.values_mut() {
            // Scan in place first: most values hold no echo and are not copied.
            ranges.clear();
            let len = value.len();
            let hold = self.scan(value.as_bytes(), &mut ranges);
            if ranges.is_empty() && hold.is_none_or(|start| len - start < TAIL_FRAGMENT) {
                continue;
            }
            let mut bytes = value.as_bytes().to_vec();
            if self.redact_whole(&mut bytes) {
                found = true;
                let sensitive = value.is_sensitive();
                if let Ok(mut masked) = http::HeaderValue::from_bytes(&bytes) {
                    masked.set_sensitive(sensitive);
                    *value = masked;
                }
            }
        }
        found
    }
}

/// Overwrites each range (merged where they overlap) with a mask of the same length:
/// `[REDACTED]` padded with `*`, or only `*` when shorter. True when there was any range.
fn mask_ranges(buf: &mut [u8], ranges: &mut [(usize, usize)]) -> bool {
    if ranges.is_empty() {
        return false;
    }
    ranges.sort_unstable();
    let mut current: Option<(usize, usize)> = None;
    for &(start, end) in ranges.iter() {
        match current {
            Some((s, e)) if start <= e => current = Some((s, e.max(end))),
            Some(done) => {
                mask(&mut buf[done.0..done.1]);
                current = Some((start, end));
            }
            None => current = Some((start, end)),
        }
    }
    if let Some((s, e)) = current {
        mask(&mut buf[s..e]);
    }
    true
}

fn mask(span: &mut [u8]) {
    if span.len() >= REDACTED.len() {
        span[..REDACTED.len()].copy_from_slice(REDACTED);
        span[REDACTED.len()..].fill(b'*');
    } else {
        span.fill(b'*');
    }
}

/// Redacts one response body as it streams (see [`EchoMatcher`]). Every chunk comes out at
/// once, masked, except a tail that could be the start of an echo the next chunk completes:
/// that tail (shorter than the longest pattern) waits for the next chunk. Lengths are kept,
/// so a `content-length` stays true.
pub struct EchoFilter {
    matcher: Arc<EchoMatcher>,
    held: Vec<u8>,
    ranges: Vec<(usize, usize)>,
    /// Something was masked since the last [`EchoFilter::take_found`].
    found: bool,
}

impl EchoFilter {
    pub fn new(matcher: Arc<EchoMatcher>) -> Self {
        EchoFilter {
            matcher,
            held: Vec::new(),
            ranges: Vec::new(),
            found: false,
        }
    }

    /// True (once) when an echo was masked since the last call.
    pub fn take_found(&mut self) -> bool {
        std::mem::take(&mut self.found)
    }

    /// The next upstream bytes in; what may go to the client now out (possibly empty).
    pub fn push(&mut self, data: Bytes) -> Bytes {
        self.ranges.clear();
        if self.held.is_empty() {
            let hold = self.matcher.scan(&data, &mut self.ranges);
            if self.ranges.is_empty() && hold.is_none() {
                return data;
            }
            let mut buf = data.to_vec();
            return self.finish_chunk(&mut buf, hold);
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(&data);
        let hold = self.matcher.scan(&buf, &mut self.ranges);
        self.finish_chunk(&mut buf, hold)
    }

    fn finish_chunk(&mut self, buf: &mut Vec<u8>, hold: Option<usize>) -> Bytes {
        self.found |= mask_ranges(buf, &mut self.ranges);
        if let Some(start) = hold {
            self.held = buf.split_off(start);
        }
        Bytes::from(std::mem::take(buf))
    }

    /// The matcher this filter uses.
    pub fn matcher(&self) -> Arc<EchoMatcher> {
        Arc::clone(&self.matcher)
    }

    /// Bytes held back, if any.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The body ended: the held tail, masked when it is a partial key of 8 bytes or more.
    pub fn finish(&mut self) -> Bytes {
        let mut tail = std::mem::take(&mut self.held);
        if tail.len() >= TAIL_FRAGMENT {
            mask(&mut tail);
            self.found = true;
        }
        Bytes::from(tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"sk-proj-CANARYabcdefghijklmnopqrstuvwxyz0123";

    fn run(body: &str) -> String {
        match redact(body.as_bytes(), std::iter::once(KEY)) {
            Some(b) => String::from_utf8(b).unwrap(),
            None => body.to_string(),
        }
    }

    #[test]
    fn full_key_masked_forms_and_fragments_are_redacted() {
        let full = format!(
            "Incorrect API key provided: {}.",
            std::str::from_utf8(KEY).unwrap()
        );
        assert_eq!(run(&full), "Incorrect API key provided: [REDACTED].");
        assert_eq!(
            run("key sk-proj-************************0123 bad"),
            "key [REDACTED] bad"
        );
        assert_eq!(run("key sk-p****0123"), "key [REDACTED]");
        assert_eq!(run("\"CANARYabcdefgh\""), "\"[REDACTED]\"");
        assert_eq!(
            run("{\"k\":\"Bearer sk-proj-CANARYabcdefghijklmnopqrstuvwxyz0123\"}"),
            "{\"k\":\"Bearer [REDACTED]\"}"
        );
    }

    #[test]
    fn unrelated_text_is_untouched() {
        let body = r#"{"error":{"message":"Rate limit reached for gpt-5 in organization org-abc","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(redact(body.as_bytes(), std::iter::once(KEY)), None);
        assert_eq!(
            run("**** masked other-key wxyz"),
            "**** masked other-key wxyz"
        );
    }

    struct Plain(Vec<u8>);

    impl SecretBytes for Plain {
        fn secret_bytes(&self) -> Option<&[u8]> {
            Some(&self.0)
        }
    }

    fn matcher(keys: &[&[u8]]) -> Arc<EchoMatcher> {
        let sources: Vec<Arc<dyn SecretBytes>> = keys
            .iter()
            .map(|k| Arc::new(Plain(k.to_vec())) as Arc<dyn SecretBytes>)
            .collect();
        Arc::new(EchoMatcher::new(sources))
    }

    /// Streams `input` through a filter in the given pieces; returns the output and the most
    /// bytes ever held back.
    fn stream(m: &Arc<EchoMatcher>, input: &[u8], splits: &[usize]) -> (Vec<u8>, usize) {
        let mut filter = EchoFilter::new(Arc::clone(m));
        let mut out = Vec::new();
        let mut most_held = 0;
        let mut start = 0;
        for &end in splits.iter().chain(std::iter::once(&input.len())) {
            out.extend_from_slice(&filter.push(Bytes::copy_from_slice(&input[start..end])));
            most_held = most_held.max(filter.held());
            start = end;
        }
        out.extend_from_slice(&filter.finish());
        (out, most_held)
    }

    fn echo_body() -> Vec<u8> {
        let key = std::str::from_utf8(KEY).unwrap();
        format!(
            "event: response.output_text.delta\ndata: {{\"delta\":\"{key} and sk-proj-****0123, sk-\u{2026}0123 *\"}}\n\n"
        )
        .into_bytes()
    }

    #[test]
    fn a_stream_is_masked_the_same_at_every_split_point_and_holds_back_less_than_a_key() {
        let m = matcher(&[KEY, b"sk-other-KEYzzzzzzzzzzzzzzzzzzzzzzzzzzz9876"]);
        let input = echo_body();
        let (whole, _) = stream(&m, &input, &[]);
        let text = String::from_utf8(whole.clone()).unwrap();
        assert_eq!(whole.len(), input.len(), "lengths are kept");
        assert!(!text.contains("CANARY") && !text.contains("0123"), "{text}");
        assert!(text.contains("[REDACTED]"), "{text}");
        assert!(text.contains("sk-proj-********, sk-******* *"), "{text}");
        for a in 0..=input.len() {
            let (out, held) = stream(&m, &input, &[a]);
            assert_eq!(out, whole, "split at {a}");
            assert!(held < m.longest_pattern(), "split at {a}: held {held}");
        }
        let every: Vec<usize> = (1..input.len()).collect();
        let (out, held) = stream(&m, &input, &every);
        assert_eq!(out, whole, "split at every byte");
        assert!(held < m.longest_pattern());
    }

    #[test]
    fn chunks_that_cannot_start_an_echo_pass_through_untouched_and_uncopied() {
        let m = matcher(&[KEY]);
        let mut filter = EchoFilter::new(Arc::clone(&m));
        let chunk = Bytes::from_static(b"event: x\ndata: {\"delta\":\"sk-proj is a prefix\"}\n\n");
        let out = filter.push(chunk.clone());
        assert_eq!(out.as_ptr(), chunk.as_ptr(), "no copy");
        assert_eq!(filter.held(), 0);
        // A chunk ending in what could start the key waits for the next one, and only that.
        let out = filter.push(Bytes::from_static(b"data: sk-pr"));
        assert_eq!(&out[..], b"data: ");
        assert_eq!(filter.held(), 5);
        let out = filter.push(Bytes::from_static(b"ose\n\n"));
        assert_eq!(&out[..], b"sk-prose\n\n");
        assert_eq!(filter.held(), 0);
    }

    #[test]
    fn a_key_cut_off_at_the_end_of_a_body_is_masked() {
        let m = matcher(&[KEY]);
        let (out, _) = stream(&m, &KEY[..20], &[3]);
        assert_eq!(out, b"[REDACTED]**********");
        let mut header = b"Bearer realm=\"sk-proj-CANARYabcdefghijklmnopqrstuvwxyz0123\"".to_vec();
        assert!(m.redact_whole(&mut header));
        assert_eq!(
            String::from_utf8(header).unwrap(),
            "Bearer realm=\"[REDACTED]**********************************\""
        );
    }

    #[test]
    fn the_automaton_never_holds_a_whole_key() {
        let m = matcher(&[KEY]);
        assert!(m.longest_pattern() == KEY.len());
        assert!(m.anchor_prefixes.iter().all(|p| p.len() < ANCHOR));
        assert!(m
            .automaton
            .as_ref()
            .is_some_and(|a| a.patterns_len() == 1 + MASK_MARKS.len()));
    }
}
