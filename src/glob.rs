//! Shell-style globs for model names (`[users.*] models` in `--config`).
//!
//! `*` matches any run of characters (none included), `?` exactly one, `[abc]`, `[a-z]` one
//! of a set (`[!a-z]` or `[^a-z]`: one not in it; a `]` first in the set is literal). Every
//! other character matches itself, case-sensitively (model names are case-sensitive upstream).
//! There is no path separator: a model name is one string. A pattern is checked when the
//! configuration is read, so a malformed one (an unclosed `[`) is a start-up error.

/// One piece of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Any,
    /// `[...]`: inclusive ranges (a single character is a range of one), and whether negated.
    Set {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
}

/// Why a pattern is not a glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("unclosed `[` in pattern `{0}`")]
    UnclosedSet(String),
    #[error("empty pattern")]
    Empty,
}

// === impl Glob ===

impl Glob {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    // `**` is the same as `*`; keeping one makes matching linear.
                    if tokens.last() != Some(&Token::Any) {
                        tokens.push(Token::Any);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::One);
                    i += 1;
                }
                '[' => {
                    let (token, next) = parse_set(&chars, i + 1)
                        .ok_or_else(|| GlobError::UnclosedSet(pattern.to_string()))?;
                    tokens.push(token);
                    i = next;
                }
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Ok(Glob {
            source: pattern.to_string(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `text` matches the whole pattern.
    ///
    /// The classic backtracking walk that remembers only the last `*`: linear in practice and
    /// at worst `O(pattern × text)`, never exponential.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let (mut p, mut t) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.tokens.get(p) {
                Some(Token::Any) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(token) if token.matches_one(text[t]) => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        self.tokens[p..].iter().all(|t| *t == Token::Any)
    }
}

/// Parses a set starting after its `[`; returns the token and the index after its `]`.
fn parse_set(chars: &[char], mut i: usize) -> Option<(Token, usize)> {
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Token::Set { negated, ranges }, i + 1));
        }
        first = false;
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&e| e != ']') {
            let end = chars[i + 2];
            ranges.push((c, end));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
}

// === impl Token ===

impl Token {
    fn matches_one(&self, c: char) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::One => true,
            Token::Any => false,
            Token::Set { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        Glob::new(pattern).unwrap().matches(text)
    }

    #[test]
    fn literals_match_exactly_and_case_sensitively() {
        assert!(m("gpt-5", "gpt-5"));
        assert!(!m("gpt-5", "gpt-5.1"));
        assert!(!m("gpt-5", "gpt-"));
        assert!(!m("gpt-5", "GPT-5"));
        assert!(!m("a", ""));
    }

    #[test]
    fn star_matches_any_run_including_none() {
        assert!(m("gpt-*", "gpt-"));
        assert!(m("gpt-*", "gpt-5.4-high"));
        assert!(!m("gpt-*", "o3"));
        assert!(m("*", ""));
        assert!(m("*", "anything/at all"));
        assert!(m("*-mini", "gpt-5-mini"));
        assert!(!m("*-mini", "gpt-5-mini-x"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("a**b", "ab"));
        // Backtracking past an earlier partial match.
        assert!(m("*ab", "aab"));
        assert!(m("*aab", "aaab"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(m("o?", "o3"));
        assert!(!m("o?", "o"));
        assert!(!m("o?", "o3x"));
        assert!(m("gpt-?", "gpt-é"));
    }

    #[test]
    fn sets_ranges_and_negation() {
        assert!(m("o[0-9]*", "o3-mini"));
        assert!(m("o[0-9]*", "o4"));
        assert!(!m("o[0-9]*", "ox"));
        assert!(m("gpt-[45]", "gpt-4"));
        assert!(!m("gpt-[45]", "gpt-3"));
        assert!(m("x[!0-9]", "xa"));
        assert!(!m("x[!0-9]", "x1"));
        assert!(m("x[^0-9]", "xa"));
        assert!(m("x[]]", "x]"));
        assert!(m("x[a-]", "x-"));
        assert!(m("x[-a]", "x-"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        assert_eq!(
            Glob::new("gpt-[45"),
            Err(GlobError::UnclosedSet("gpt-[45".into()))
        );
        assert_eq!(Glob::new("x[]"), Err(GlobError::UnclosedSet("x[]".into())));
        assert_eq!(Glob::new(""), Err(GlobError::Empty));
    }

    #[test]
    fn long_adversarial_input_stays_fast() {
        // Exponential backtracking would not finish this; the walk here is O(pattern × text).
        let pattern = "*a*a*a*a*a*a*a*a*b";
        let text = "a".repeat(10_000);
        assert!(!m(pattern, &text));
    }
}
