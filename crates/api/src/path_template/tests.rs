use test_case::test_case;

use super::*;

fn template(value: &str) -> PathTemplate {
    match PathTemplate::parse(value) {
        Ok(template) => template,
        Err(error) => unreachable!("`{value}` should parse: {error}"),
    }
}

// --- is_template ---

#[test_case("/a/{*}", true ; "match one")]
#[test_case("/a/{**}", true ; "match any")]
#[test_case("{*}", true ; "operator alone")]
#[test_case("/a{*}b", true ; "operator inside text still counts")]
#[test_case("/a/*", false ; "prefix form")]
#[test_case("*/a", false ; "suffix form")]
#[test_case("/a/{x}", false ; "named variable")]
#[test_case("/a/{***}", false ; "three stars")]
#[test_case("/a/{ * }", false ; "spaces inside braces")]
#[test_case("", false ; "empty")]
fn is_template(value: &str, expected: bool) {
    assert_eq!(PathTemplate::is_template(value), expected);
}

// --- matching: authorization.md §7.2 integration-test examples, exactly ---

#[test_case("/allow/admin/{**}", "/allow/admin/", true ; "match any may be empty")]
#[test_case("/allow/admin/{**}", "/allow/admin/foo/temp.txt", true ; "match any spans segments")]
#[test_case("/allow/admin/{**}", "/allow/admin", false ; "slash before match any is required")]
#[test_case("/store/{**}/cart", "/store//cart", true ; "empty match any between slashes")]
#[test_case("/store/{**}/cart", "/store/a/b/cart", true ; "match any in the middle")]
#[test_case("/store/{**}/cart", "/store/cart", false ; "both slashes around match any are required")]
#[test_case("/foo/{*}/bar/{**}", "/foo//bar/x", false ; "match one needs a character")]
fn spec_examples(value: &str, path: &str, expected: bool) {
    assert_eq!(template(value).matches(path), expected);
}

// --- matching: more cases ---

#[test_case("/foo/{*}", "/foo/bar", true ; "one segment")]
#[test_case("/foo/{*}", "/foo/", false ; "empty segment")]
#[test_case("/foo/{*}", "/foo", false ; "missing segment")]
#[test_case("/foo/{*}", "/foo/bar/baz", false ; "match one stops at a slash")]
#[test_case("/foo/{*}", "/foo/bar/", false ; "trailing slash is extra")]
#[test_case("/foo/{*}", "/foo/a%2Fb", true ; "encoded slash stays inside one segment")]
#[test_case("/foo/{*}", "/foo/a=b;c:d@e!$&'()+,~", true ; "every pchar")]
#[test_case("/foo/{*}", "/foo/a*b", false ; "star is not a pchar")]
#[test_case("/foo/{*}", "/foo/[x]", false ; "brackets are not pchars")]
#[test_case("/foo/{*}", "/foo/a b", false ; "space is not a pchar")]
#[test_case("/foo/{*}", "/foo/é", false ; "non ascii is not a pchar")]
#[test_case("/foo/{*}", "/foo/bar?x=1", false ; "query is not stripped by the matcher")]
#[test_case("/foo/{*}", "/FOO/bar", false ; "literals are case sensitive")]
#[test_case("/{*}", "/x", true ; "root segment")]
#[test_case("/{*}", "/", false ; "root segment needs a character")]
#[test_case("/a/{*}/", "/a/x/", true ; "trailing slash template")]
#[test_case("/a/{*}/", "/a/x", false ; "trailing slash required")]
#[test_case("/a/{*}/b/{*}", "/a/x/b/y", true ; "two match ones")]
#[test_case("/a/{*}/b/{*}", "/a/x/c/y", false ; "literal between match ones")]
#[test_case("/{*}/{*}", "/x/y", true ; "adjacent match ones")]
#[test_case("/{*}/{*}", "/x//y", false ; "adjacent match ones with empty segment")]
#[test_case("/{**}", "/", true ; "match any everything root")]
#[test_case("/{**}", "/a/b/c.d", true ; "match any everything deep")]
#[test_case("/{**}", "//", true ; "match any allows empty segments")]
#[test_case("/{**}", "", false ; "match any needs the leading slash")]
#[test_case("/{**}", "/a b", false ; "match any refuses non pchars")]
#[test_case("/{**}", "/a?b", false ; "match any refuses a query")]
#[test_case("/store/{**}/cart", "/store/x/cart/cart", true ; "suffix repeated inside")]
#[test_case("/store/{**}/cart", "/store/x/carts", false ; "suffix must end the path")]
#[test_case("/store/{**}/cart", "/store/a b/cart", false ; "middle must be pchars")]
#[test_case("/{**}/a.txt", "/x/y/a.txt", true ; "file suffix")]
#[test_case("/{**}/a.txt", "/a.txt", false ; "file suffix needs its slash")]
#[test_case("/{**}/a.txt", "//a.txt", true ; "file suffix after empty match any")]
#[test_case("/{*}/x/{**}/y/z", "/a/x/b/c/y/z", true ; "match one then match any then literals")]
#[test_case("/{*}/x/{**}/y/z", "/a/x/y/z", false ; "literal after match any needs its slash")]
#[test_case("/{*}/x/{**}/", "/a/x/b/", true ; "match any then trailing slash")]
#[test_case("/{*}/x/{**}/", "/a/x/b", false ; "trailing slash after match any required")]
fn matches(value: &str, path: &str, expected: bool) {
    assert_eq!(template(value).matches(path), expected);
}

#[test]
fn keeps_the_source() {
    let parsed = template("/a/{*}/{**}");
    assert_eq!(parsed.as_str(), "/a/{*}/{**}");
    assert_eq!(parsed.to_string(), "/a/{*}/{**}");
}

// --- invalid templates ---

fn error(value: &str) -> PathTemplateError {
    match PathTemplate::parse(value) {
        Ok(parsed) => unreachable!("`{value}` should not parse: {parsed:?}"),
        Err(error) => error,
    }
}

#[test_case("/{**}/{**}" ; "two match anys")]
#[test_case("/{**}/{*}" ; "match one after match any")]
#[test_case("/a/{**}/b/{*}" ; "match one after match any with literals between")]
fn operator_after_match_any(value: &str) {
    let error = error(value);
    assert_eq!(
        error,
        PathTemplateError::OperatorAfterMatchAny {
            value: value.to_owned()
        }
    );
    assert!(error.is_webhook_error());
}

#[test_case("/a{*}", "a{*}" ; "text before operator")]
#[test_case("/{*}b", "{*}b" ; "text after operator")]
#[test_case("/{*}.txt", "{*}.txt" ; "extension after operator")]
#[test_case("/a/{**}x", "{**}x" ; "text after match any")]
#[test_case("/a/{x}/{*}", "{x}" ; "named variable")]
#[test_case("/a/{x=*}/{*}", "{x=*}" ; "variable with pattern")]
#[test_case("/a/{{*}}", "{{*}}" ; "doubled braces")]
#[test_case("/a/{*}}", "{*}}" ; "stray closing brace")]
#[test_case("/{*}{**}", "{*}{**}" ; "two operators in one segment")]
fn stray_brace(value: &str, segment: &str) {
    let error = error(value);
    assert_eq!(
        error,
        PathTemplateError::StrayBrace {
            value: value.to_owned(),
            segment: segment.to_owned()
        }
    );
    assert!(error.is_webhook_error());
}

#[test_case("/a/*/{*}", "*" ; "bare star")]
#[test_case("/a*/{*}", "a*" ; "star in a literal")]
#[test_case("/a b/{*}", "a b" ; "space")]
#[test_case("/a?/{*}", "a?" ; "question mark")]
#[test_case("/{*}/a#b", "a#b" ; "hash")]
#[test_case("/é/{*}", "é" ; "non ascii")]
#[test_case("/a\\b/{*}", "a\\b" ; "backslash")]
#[test_case("/[x]/{*}", "[x]" ; "brackets")]
fn invalid_literal(value: &str, segment: &str) {
    let error = error(value);
    assert_eq!(
        error,
        PathTemplateError::InvalidLiteral {
            value: value.to_owned(),
            segment: segment.to_owned()
        }
    );
    assert!(error.is_webhook_error());
}

#[test_case("/a//{*}" ; "before operator")]
#[test_case("/{*}//a" ; "after operator")]
#[test_case("/{**}//a" ; "after match any")]
fn empty_segment(value: &str) {
    let error = error(value);
    assert_eq!(
        error,
        PathTemplateError::EmptySegment {
            value: value.to_owned()
        }
    );
    assert!(error.is_webhook_error());
}

#[test_case("{*}" ; "operator only")]
#[test_case("a/{*}" ; "relative")]
#[test_case("{**}/a" ; "match any first")]
fn not_absolute_passes_the_webhook_but_not_envoy(value: &str) {
    let error = error(value);
    assert_eq!(
        error,
        PathTemplateError::NotAbsolute {
            value: value.to_owned()
        }
    );
    assert!(!error.is_webhook_error());
}

#[test_case("//a/{*}" ; "leading")]
#[test_case("/a/{*}//" ; "trailing")]
#[test_case("//{**}" ; "leading before match any")]
fn edge_double_slash_passes_the_webhook_but_not_envoy(value: &str) {
    let error = error(value);
    assert_eq!(
        error,
        PathTemplateError::EdgeDoubleSlash {
            value: value.to_owned()
        }
    );
    assert!(!error.is_webhook_error());
}

#[test_case("/foo" ; "plain path")]
#[test_case("/foo/*" ; "prefix form")]
#[test_case("" ; "empty")]
fn no_operator(value: &str) {
    let error = error(value);
    assert_eq!(
        error,
        PathTemplateError::NoOperator {
            value: value.to_owned()
        }
    );
    assert!(!error.is_webhook_error());
}

#[test_case("/{*}" ; "root match one")]
#[test_case("/{**}" ; "root match any")]
#[test_case("/{*}/" ; "trailing slash")]
#[test_case("/a/{*}/b/{*}/{**}" ; "several operators")]
#[test_case("/v1/{*}/items/{**}/detail.json" ; "literals after match any")]
#[test_case("/a-b.c_d~e%41!$&'()+,;:@=/{*}" ; "every pchar in a literal")]
fn valid(value: &str) {
    assert_eq!(
        PathTemplate::parse(value).map(|t| t.as_str().to_owned()),
        Ok(value.to_owned())
    );
}

#[test]
fn error_messages_quote_the_value_and_segment() {
    assert_eq!(
        error("/a{*}").to_string(),
        "invalid path template `/a{*}`: segment `a{*}` has `{` or `}` outside a `{*}` or \
         `{**}` operator, which must fill the whole segment"
    );
    assert_eq!(
        error("/{**}/{*}").to_string(),
        "invalid path template `/{**}/{*}`: `{**}` must be the last operator"
    );
    assert_eq!(
        error("/a*/{*}").to_string(),
        "invalid path template `/a*/{*}`: segment `a*` may only contain \
         `A-Za-z0-9-._~%!$&'()+,;:@=`"
    );
}

// --- differential check against a literal reading of Envoy's regex ---

/// One token of the regex Envoy compiles after Istio rewrote `{*}` → `*` and `{**}` → `**`.
#[derive(Clone, Copy)]
enum Token {
    Byte(u8),
    /// `[pchar]+`
    PathGlob,
    /// `[pchar/]*`
    TextGlob,
}

fn reference_tokens(value: &str) -> Vec<Token> {
    let rewritten = value.replace("{**}", "\u{1}").replace("{*}", "\u{2}");
    rewritten
        .bytes()
        .map(|b| match b {
            1 => Token::TextGlob,
            2 => Token::PathGlob,
            b => Token::Byte(b),
        })
        .collect()
}

/// Full match by plain backtracking over every possible glob length.
fn reference_matches(tokens: &[Token], path: &[u8]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return path.is_empty();
    };
    match *first {
        Token::Byte(b) => path
            .split_first()
            .is_some_and(|(&c, tail)| c == b && reference_matches(rest, tail)),
        Token::PathGlob | Token::TextGlob => {
            let min = usize::from(matches!(first, Token::PathGlob));
            let allowed = |c: u8| is_pchar(c) || (matches!(first, Token::TextGlob) && c == b'/');
            let longest = path.iter().take_while(|&&c| allowed(c)).count();
            (min..=longest).any(|n| {
                path.get(n..)
                    .is_some_and(|tail| reference_matches(rest, tail))
            })
        }
    }
}

#[test]
fn matches_like_the_envoy_regex_on_every_short_path() {
    const ALPHABET: &[u8] = b"ab/.?";
    let templates = [
        "/{*}",
        "/{**}",
        "/{*}/",
        "/a/{*}",
        "/a/{**}",
        "/{*}/{*}",
        "/{*}/a/{**}",
        "/{**}/a",
        "/a/{**}/b/",
        "/{*}/{**}/a.b",
    ];
    let mut paths = vec![Vec::new()];
    let mut frontier = vec![Vec::new()];
    for _ in 0..7 {
        frontier = frontier
            .iter()
            .flat_map(|p: &Vec<u8>| {
                ALPHABET.iter().map(move |&c| {
                    let mut next = p.clone();
                    next.push(c);
                    next
                })
            })
            .collect();
        paths.extend(frontier.iter().cloned());
    }
    for value in templates {
        let parsed = template(value);
        let tokens = reference_tokens(value);
        for path in &paths {
            let path = String::from_utf8(path.clone()).unwrap_or_default();
            assert_eq!(
                parsed.matches(&path),
                reference_matches(&tokens, path.as_bytes()),
                "template `{value}`, path `{path}`"
            );
        }
    }
}
