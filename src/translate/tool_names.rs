//! Tool names over the upstream's 64-character limit, shortened and mapped back; call ids
//! sanitised to the upstream's character set.
//!
//! Rules (`docs/translation.md`, "Tool names"): a name of at most 64 characters is kept. A longer
//! `mcp__…` name becomes `mcp__` plus its last `__`-separated segment; any other becomes its
//! first 64 characters. A collision (with a kept name or an earlier short name) gets `_1`,
//! `_2`, … with the base cut so the whole stays within 64. The map is built from the
//! **request's** tool list (register every name first with [`ToolNameMap::from_names`] so a
//! kept name always wins over a shortened one), and every output path restores the
//! originals with [`ToolNameMap::original`].

use std::borrow::Cow;
use std::collections::HashMap;

/// The upstream's limit on tool names and call ids.
pub const MAX_NAME_LEN: usize = 64;

/// Shortened → original tool names for one request.
#[derive(Clone, Debug, Default)]
pub struct ToolNameMap {
    /// short → original, only for names that were changed.
    to_original: HashMap<String, String>,
    /// original → short, only for names that were changed.
    to_short: HashMap<String, String>,
    /// Every name used upstream (kept or shortened), for collision checks.
    used: std::collections::HashSet<String>,
}

impl ToolNameMap {
    /// A map for a request whose tools have these names. Names that fit are reserved first,
    /// so a shortened name never takes a name the client uses as is.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let names: Vec<&str> = names.into_iter().collect();
        let mut map = ToolNameMap::default();
        for name in &names {
            if name.chars().count() <= MAX_NAME_LEN {
                map.used.insert((*name).to_owned());
            }
        }
        for name in names {
            map.shorten(name);
        }
        map
    }

    /// The upstream name for `name`: itself if it fits, else its (stable) short form.
    pub fn shorten(&mut self, name: &str) -> String {
        if name.chars().count() <= MAX_NAME_LEN {
            self.used.insert(name.to_owned());
            return name.to_owned();
        }
        if let Some(short) = self.to_short.get(name) {
            return short.clone();
        }
        let base = match name.strip_prefix("mcp__") {
            Some(rest) => {
                let last = rest.rsplit("__").next().unwrap_or(rest);
                format!("mcp__{}", take_chars(last, MAX_NAME_LEN - 5))
            }
            None => take_chars(name, MAX_NAME_LEN).to_owned(),
        };
        let mut short = base.clone();
        let mut n = 1u32;
        while self.used.contains(&short) {
            let suffix = format!("_{n}");
            short = format!("{}{suffix}", take_chars(&base, MAX_NAME_LEN - suffix.len()));
            n += 1;
        }
        self.used.insert(short.clone());
        self.to_short.insert(name.to_owned(), short.clone());
        self.to_original.insert(short.clone(), name.to_owned());
        short
    }

    /// The short name already assigned to `name`, without assigning one (for checks such as
    /// "does `tool_choice` name a declared tool").
    pub fn lookup<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        if let Some(short) = self.to_short.get(name) {
            return Some(short);
        }
        self.used.contains(name).then_some(name)
    }

    /// The client's name for an upstream name (the name itself when it was not shortened).
    pub fn original<'a>(&'a self, name: &'a str) -> &'a str {
        self.to_original.get(name).map_or(name, String::as_str)
    }

    /// True when no name was shortened (the common case: mapping back is the identity).
    pub fn is_identity(&self) -> bool {
        self.to_original.is_empty()
    }
}

fn take_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A call id the upstream accepts (`^[a-zA-Z0-9_-]{1,64}$`): valid ids are kept; others have
/// every other character replaced by `_` and, when that is not enough (too long, or the
/// replacement could collide), keep a prefix plus a 32-hex-digit hash of the **original** id.
/// Deterministic, so an id the client echoes back maps to the same upstream id.
pub fn sanitize_call_id(id: &str) -> Cow<'_, str> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !id.is_empty() && id.len() <= MAX_NAME_LEN && id.chars().all(valid_char) {
        return Cow::Borrowed(id);
    }
    let cleaned: String = id
        .chars()
        .map(|c| if valid_char(c) { c } else { '_' })
        .collect();
    let hash = format!(
        "{:016x}{:016x}",
        stable_hash64(id.as_bytes(), 0),
        stable_hash64(id.as_bytes(), 1)
    );
    // Replaced characters lose information ("a.b" and "a:b" both clean to "a_b"), so the
    // hash is always appended when anything changed.
    let keep = MAX_NAME_LEN - hash.len() - 1;
    Cow::Owned(format!("{}_{hash}", take_chars(&cleaned, keep)))
}

/// FNV-1a (64-bit) with a seed byte: a stable, dependency-free hash for ids and cache keys.
/// Not cryptographic; only determinism and spread matter here.
pub fn stable_hash64(bytes: &[u8], seed: u8) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in std::iter::once(&seed).chain(bytes) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        let mut map = ToolNameMap::default();
        assert_eq!(map.shorten("get_weather"), "get_weather");
        assert_eq!(map.original("get_weather"), "get_weather");
        assert!(map.is_identity());
    }

    #[test]
    fn long_mcp_names_keep_their_last_segment_and_map_back() {
        let long = format!("mcp__{}__read_file", "server".repeat(12));
        let mut map = ToolNameMap::default();
        let short = map.shorten(&long);
        assert_eq!(short, "mcp__read_file");
        assert_eq!(map.original(&short), long);
        assert_eq!(map.shorten(&long), short, "stable");
    }

    #[test]
    fn long_names_are_cut_and_collisions_numbered_within_64() {
        let a = format!("{}a", "x".repeat(70));
        let b = format!("{}b", "x".repeat(70));
        let kept = "x".repeat(64);
        let map = ToolNameMap::from_names([a.as_str(), b.as_str(), kept.as_str()]);
        let sa = map.lookup(&a).unwrap().to_owned();
        let sb = map.lookup(&b).unwrap().to_owned();
        assert_eq!(
            map.lookup(&kept),
            Some(kept.as_str()),
            "the fitting name wins"
        );
        assert_eq!(sa, format!("{}_1", "x".repeat(62)));
        assert_eq!(sb, format!("{}_2", "x".repeat(62)));
        assert!(sa.len() <= 64 && sb.len() <= 64);
        assert_eq!(map.original(&sa), a);
        assert_eq!(map.original(&sb), b);
        assert_eq!(map.original(&kept), kept);
    }

    #[test]
    fn call_ids_are_sanitised_deterministically() {
        assert_eq!(sanitize_call_id("call_abc-1"), "call_abc-1");
        let a = sanitize_call_id("toolu.01:x y");
        let b = sanitize_call_id("toolu_01_x_y");
        assert_ne!(a, b);
        assert!(a.starts_with("toolu_01_x_y_"));
        assert_eq!(a, sanitize_call_id("toolu.01:x y"));
        let long = "a".repeat(100);
        let s = sanitize_call_id(&long);
        assert_eq!(s.len(), 64);
        assert!(s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        assert_eq!(sanitize_call_id("").len(), 33);
    }
}
