//! String matching in Istio's value forms (authorization.md §4.2) and a small glob used for
//! the regex-based source fields (`namespaces`, `serviceAccounts`).

/// A compiled §4.2 value: `*` presence, `abc*` prefix, `*abc` suffix, anything else exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringMatch {
    /// `*`: the attribute is present and non-empty (for headers: present, even empty).
    Presence,
    /// Exact, case-sensitive unless built with [`StringMatch::ignore_case`].
    Exact(Box<str>),
    /// Prefix.
    Prefix(Box<str>),
    /// Suffix.
    Suffix(Box<str>),
}

impl StringMatch {
    /// authorization.md §4.2: "precedence is: `*` alone → presence; else leading `*` → suffix of
    /// the rest; else trailing `*` → prefix of the rest; else exact. Any other `*` is a literal
    /// character: `**` = suffix `*`, `*a*` = suffix `a*`, `a*b` = exact `a*b`."
    pub fn parse(value: &str) -> StringMatch {
        if value == "*" {
            StringMatch::Presence
        } else if let Some(rest) = value.strip_prefix('*') {
            StringMatch::Suffix(rest.into())
        } else if let Some(rest) = value.strip_suffix('*') {
            StringMatch::Prefix(rest.into())
        } else {
            StringMatch::Exact(value.into())
        }
    }

    /// The same form over ASCII-lowercased text, for `hosts` (case-insensitive).
    pub fn ignore_case(self) -> StringMatch {
        match self {
            StringMatch::Presence => StringMatch::Presence,
            StringMatch::Exact(s) => StringMatch::Exact(s.to_ascii_lowercase().into()),
            StringMatch::Prefix(s) => StringMatch::Prefix(s.to_ascii_lowercase().into()),
            StringMatch::Suffix(s) => StringMatch::Suffix(s.to_ascii_lowercase().into()),
        }
    }

    /// Matches a present value. `Presence` accepts any non-empty value; callers that treat an
    /// empty header as present use [`StringMatch::matches_header`].
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Presence => !value.is_empty(),
            StringMatch::Exact(s) => value == &**s,
            StringMatch::Prefix(s) => value.starts_with(&**s),
            StringMatch::Suffix(s) => value.ends_with(&**s),
        }
    }

    /// Header form: `*` means "header present", even with an empty value (§5, `request.headers`).
    pub fn matches_header(&self, value: &str) -> bool {
        match self {
            StringMatch::Presence => true,
            other => other.matches(value),
        }
    }

    /// Case-insensitive match (the matcher must come from [`StringMatch::ignore_case`]).
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            StringMatch::Presence => !value.is_empty(),
            StringMatch::Exact(s) => value.eq_ignore_ascii_case(s),
            StringMatch::Prefix(s) => value
                .get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s)),
            StringMatch::Suffix(s) => value
                .len()
                .checked_sub(s.len())
                .and_then(|start| value.get(start..))
                .is_some_and(|p| p.eq_ignore_ascii_case(s)),
        }
    }
}

/// A pattern whose `*` matches any run of characters (regex `.*`) and whose other characters
/// are literal; the whole input must match. This is what istiod's quoted regexes amount to for
/// `namespaces` (`.*/ns/<V>/.*` with `*` → `.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    parts: Vec<Box<str>>,
}

impl Glob {
    /// Compiles a pattern.
    pub fn new(pattern: &str) -> Glob {
        Glob {
            parts: pattern.split('*').map(Into::into).collect(),
        }
    }

    /// Full match of `text`.
    pub fn matches(&self, text: &str) -> bool {
        let mut parts = self.parts.iter();
        let Some(first) = parts.next() else {
            return text.is_empty();
        };
        let Some(mut rest) = text.strip_prefix(&**first) else {
            return false;
        };
        let remaining: Vec<&str> = parts.map(|p| &**p).collect();
        let Some((last, middle)) = remaining.split_last() else {
            // No `*` at all: exact.
            return rest.is_empty();
        };
        // Greedy-leftmost placement of the middle parts is optimal for `.*` separators.
        for part in middle {
            match rest.find(part) {
                Some(i) => rest = rest.get(i + part.len()..).unwrap_or_default(),
                None => return false,
            }
        }
        rest.ends_with(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("*", "x", true; "presence matches any value")]
    #[test_case("*", "", false; "presence needs non-empty")]
    #[test_case("abc*", "abc", true; "prefix includes equal")]
    #[test_case("abc*", "abcd", true; "prefix")]
    #[test_case("*abc", "xabc", true; "suffix")]
    #[test_case("**", "a*", true; "double star is suffix star")]
    #[test_case("**", "ab", false; "double star is not presence")]
    #[test_case("*a*", "xa*", true; "star a star is suffix a star")]
    #[test_case("*a*", "xab", false; "star a star is not contains")]
    #[test_case("a*b", "a*b", true; "inner star literal")]
    #[test_case("a*b", "axb", false; "inner star not wildcard")]
    #[test_case("GET", "get", false; "case sensitive")]
    fn value_forms(pattern: &str, value: &str, expected: bool) {
        assert_eq!(StringMatch::parse(pattern).matches(value), expected);
    }

    #[test]
    fn header_presence_accepts_empty() {
        assert!(StringMatch::parse("*").matches_header(""));
    }

    #[test]
    fn hosts_ignore_case() {
        let m = StringMatch::parse("*.Example.com").ignore_case();
        assert!(m.matches_ignore_case("WWW.EXAMPLE.COM"));
        assert!(!m.matches_ignore_case("example.org"));
        let p = StringMatch::parse("Example.com:*").ignore_case();
        assert!(p.matches_ignore_case("example.COM:8080"));
    }

    #[test_case("*/ns/foo/*", "spiffe://cluster.local/ns/foo/sa/x", true)]
    #[test_case("*/ns/foo/*", "spiffe://cluster.local/ns/foobar/sa/x", false)]
    #[test_case("*/ns/ns-*-prod/*", "spiffe://td/ns/ns-a-prod/sa/x", true)]
    #[test_case("*/ns/ns-*-prod/*", "spiffe://td/ns/ns-a-dev/sa/x", false)]
    #[test_case("*/ns/*/*", "spiffe://td/ns/a/sa/x", true)]
    #[test_case("abc", "abc", true)]
    #[test_case("abc", "abcd", false)]
    #[test_case("a*", "a", true)]
    #[test_case("*a*a", "aa", true)]
    #[test_case("*a*a", "a", false)]
    fn glob(pattern: &str, text: &str, expected: bool) {
        assert_eq!(Glob::new(pattern).matches(text), expected);
    }
}
