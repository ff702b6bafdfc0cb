//! Inline `<think>…</think>` tags in output text (open models behind Responses-compatible
//! upstreams put their reasoning there).
//!
//! [`ThinkFilter`] is fed the output text as it streams. With [`ThinkMode::Strip`] the tagged
//! parts are dropped; with [`ThinkMode::Reasoning`] they come out as
//! [`ThinkPiece::Reasoning`] (the translators send them as `reasoning_content` or `thinking`
//! blocks); with [`ThinkMode::Off`] text passes through untouched. Tags may be split across
//! pushes anywhere: the filter holds back only a trailing piece that could still become a tag
//! (at most `</think>`'s length minus one bytes), and since tags are ASCII the pieces it emits
//! always end on character boundaries. In [`ThinkMode::Strip`] the whitespace right after a
//! closing tag goes too (models put a blank line between their reasoning and the answer), even
//! when it arrives in later pushes.

use serde::Deserialize;

/// What to do with inline think tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThinkMode {
    /// Leave the text alone.
    #[default]
    Off,
    /// Drop the tags and what they enclose.
    Strip,
    /// Turn what they enclose into reasoning.
    Reasoning,
}

/// A piece of filtered text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkPiece<'a> {
    /// Ordinary output text.
    Text(&'a str),
    /// Text that was inside think tags (only in [`ThinkMode::Reasoning`]).
    Reasoning(&'a str),
}

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// The streaming tag filter; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct ThinkFilter {
    mode: ThinkMode,
    inside: bool,
    /// Strip mode just closed a tag: leading whitespace of the text that follows is dropped.
    after_close: bool,
    /// A held-back tail that may be the start of a tag (always shorter than `</think>`).
    held: String,
    /// Scratch space for joining `held` with the next push, kept to avoid reallocating.
    scratch: String,
}

impl ThinkFilter {
    /// A filter at the start of a text.
    pub fn new(mode: ThinkMode) -> Self {
        ThinkFilter {
            mode,
            ..Default::default()
        }
    }

    /// The mode this filter was built with.
    pub fn mode(&self) -> ThinkMode {
        self.mode
    }

    /// True when text without a `<` would pass through unchanged: outside a section, nothing
    /// held back, no whitespace to drop.
    pub fn is_idle(&self) -> bool {
        self.mode == ThinkMode::Off || (!self.inside && self.held.is_empty() && !self.after_close)
    }

    /// Filters the next piece of text; calls `on` for every non-empty piece ready to go out.
    pub fn push(&mut self, text: &str, mut on: impl FnMut(ThinkPiece<'_>)) {
        if self.mode == ThinkMode::Off {
            if !text.is_empty() {
                on(ThinkPiece::Text(text));
            }
            return;
        }
        if self.held.is_empty() {
            self.run(text, &mut on);
        } else {
            let mut joined = std::mem::take(&mut self.scratch);
            joined.clear();
            joined.push_str(&self.held);
            joined.push_str(text);
            self.held.clear();
            self.run(&joined, &mut on);
            self.scratch = joined;
        }
    }

    /// The text ended: releases a held-back tail (it never became a tag) as what it was.
    pub fn finish(&mut self, mut on: impl FnMut(ThinkPiece<'_>)) {
        let held = std::mem::take(&mut self.held);
        self.emit(&held, &mut on);
    }

    fn run(&mut self, mut text: &str, on: &mut impl FnMut(ThinkPiece<'_>)) {
        loop {
            let tag = if self.inside { CLOSE } else { OPEN };
            if let Some(at) = text.find(tag) {
                self.emit(&text[..at], on);
                self.after_close = self.inside && self.mode == ThinkMode::Strip;
                self.inside = !self.inside;
                text = &text[at + tag.len()..];
                continue;
            }
            let keep = partial_tag_suffix(text, tag);
            self.emit(&text[..text.len() - keep], on);
            self.held.push_str(&text[text.len() - keep..]);
            return;
        }
    }

    fn emit(&mut self, mut text: &str, on: &mut impl FnMut(ThinkPiece<'_>)) {
        if self.after_close && !self.inside {
            text = text.trim_start();
            self.after_close = text.is_empty();
        }
        if text.is_empty() {
            return;
        }
        match (self.inside, self.mode) {
            (false, _) => on(ThinkPiece::Text(text)),
            (true, ThinkMode::Reasoning) => on(ThinkPiece::Reasoning(text)),
            (true, _) => {}
        }
    }
}

/// The length of the longest proper suffix of `text` that is a prefix of `tag`.
fn partial_tag_suffix(text: &str, tag: &str) -> usize {
    let bytes = text.as_bytes();
    (1..tag.len().min(bytes.len() + 1))
        .rev()
        .find(|&n| bytes[bytes.len() - n..] == tag.as_bytes()[..n])
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: ThinkMode, pieces: &[&str]) -> (String, String) {
        let mut f = ThinkFilter::new(mode);
        let (mut text, mut reasoning) = (String::new(), String::new());
        let mut on = |p: ThinkPiece<'_>| match p {
            ThinkPiece::Text(t) => text.push_str(t),
            ThinkPiece::Reasoning(r) => reasoning.push_str(r),
        };
        for p in pieces {
            f.push(p, &mut on);
        }
        f.finish(&mut on);
        (text, reasoning)
    }

    /// Every way of cutting `s` into two or three pieces on character boundaries.
    fn splits(s: &str) -> Vec<Vec<&str>> {
        let cuts: Vec<usize> = (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect();
        let mut out = Vec::new();
        for &a in &cuts {
            for &b in cuts.iter().filter(|&&b| b >= a) {
                out.push(vec![&s[..a], &s[a..b], &s[b..]]);
            }
        }
        out
    }

    #[test]
    fn strip_and_reasoning_survive_every_split() {
        let s = "<think>plan é😀 <b></think>Answer: 1 < 2 <thin";
        for pieces in splits(s) {
            assert_eq!(
                run(ThinkMode::Strip, &pieces),
                ("Answer: 1 < 2 <thin".to_owned(), String::new()),
                "{pieces:?}"
            );
            assert_eq!(
                run(ThinkMode::Reasoning, &pieces),
                ("Answer: 1 < 2 <thin".to_owned(), "plan é😀 <b>".to_owned()),
                "{pieces:?}"
            );
            assert_eq!(run(ThinkMode::Off, &pieces), (s.to_owned(), String::new()));
        }
    }

    #[test]
    fn holds_back_at_most_a_partial_tag() {
        let mut f = ThinkFilter::new(ThinkMode::Strip);
        let mut out = String::new();
        f.push("hello <thi", |p| {
            if let ThinkPiece::Text(t) = p {
                out.push_str(t)
            }
        });
        assert_eq!(out, "hello ");
        assert_eq!(f.held, "<thi");
        f.push("s is not a tag", |p| {
            if let ThinkPiece::Text(t) = p {
                out.push_str(t)
            }
        });
        assert_eq!(out, "hello <this is not a tag");
        assert!(f.held.is_empty());
        assert_eq!(partial_tag_suffix("abc</think", CLOSE), 7);
        assert_eq!(partial_tag_suffix("abc", CLOSE), 0);
    }

    #[test]
    fn strip_drops_the_whitespace_right_after_the_closing_tag_in_every_split() {
        let s = "<think>plan</think>\n \n\tAnswer  </think> x";
        for pieces in splits(s) {
            assert_eq!(
                run(ThinkMode::Strip, &pieces),
                ("Answer  </think> x".to_owned(), String::new()),
                "{pieces:?}"
            );
            // Reasoning mode keeps what follows the tag as it is.
            assert_eq!(
                run(ThinkMode::Reasoning, &pieces),
                ("\n \n\tAnswer  </think> x".to_owned(), "plan".to_owned()),
                "{pieces:?}"
            );
        }
        assert_eq!(
            run(ThinkMode::Strip, &["a <think>b</think>", "  ", "", "\n"]),
            ("a ".to_owned(), String::new())
        );
    }

    #[test]
    fn unclosed_think_at_the_end_stays_reasoning() {
        assert_eq!(
            run(ThinkMode::Reasoning, &["<think>still thinking </thi"]),
            (String::new(), "still thinking </thi".to_owned())
        );
        assert_eq!(
            run(ThinkMode::Strip, &["a<think>b"]),
            ("a".to_owned(), String::new())
        );
    }
}
