use proptest::prelude::*;
use test_case::test_case;

use super::*;

use PathNormalization::{Base, DecodeAndMergeSlashes, MergeSlashes, None as NoNormalization};

const ALL_MODES: [PathNormalization; 4] =
    [NoNormalization, Base, MergeSlashes, DecodeAndMergeSlashes];

fn ok(path: &str) -> Result<String, PathRejection> {
    Ok(path.to_owned())
}

/// What an AuthorizationPolicy `paths` value is compared with (authorization.md §4.7).
fn authz_path(raw: &str, mode: PathNormalization) -> Option<String> {
    normalize_path(raw, mode)
        .ok()
        .map(|p| url_path(&p).to_owned())
}

// --- BASE: dot segments, backslashes, percent-decoding (authorization.md §7.1) ---

#[test_case("/", "/" ; "root")]
#[test_case("/xyz", "/xyz" ; "already normal")]
#[test_case("/x/y/z", "/x/y/z" ; "already normal nested")]
#[test_case("/a/b/../c", "/a/c" ; "parent segment")]
#[test_case("/a/b/./c", "/a/b/c" ; "current segment")]
#[test_case("/a/./b/.", "/a/b/" ; "trailing current segment keeps the slash")]
#[test_case("/a/b/..", "/a/" ; "trailing parent segment keeps the slash")]
#[test_case("/a/..", "/" ; "parent back to root")]
#[test_case("/..", "/" ; "parent of root is root")]
#[test_case("/../a", "/a" ; "parent above root is dropped")]
#[test_case("/a/b/../../../../c", "/c" ; "more parents than segments")]
#[test_case("/a/..//b", "//b" ; "empty segment survives parent removal")]
#[test_case("/a//../b", "/a/b" ; "parent removes an empty segment")]
#[test_case("/a\\b\\c", "/a/b/c" ; "backslashes become slashes")]
#[test_case("/a/..\\c", "/c" ; "parent followed by backslash")]
#[test_case("/a/b\\..\\c", "/a/c" ; "parent between backslashes")]
#[test_case("/a/b/%2E%2E/c", "/a/c" ; "encoded parent uppercase")]
#[test_case("/a/b/%2e%2e/c", "/a/c" ; "encoded parent lowercase")]
#[test_case("/a/b/.%2e/c", "/a/c" ; "half encoded parent")]
#[test_case("/a/%2e/b", "/a/b" ; "encoded current segment")]
#[test_case("/a%2eb", "/a.b" ; "encoded dot inside a segment is decoded")]
#[test_case("/a/.../b", "/a/.../b" ; "three dots are a name")]
#[test_case("/a/..b/c", "/a/..b/c" ; "dot dot prefix is a name")]
#[test_case("/a/b../c", "/a/b../c" ; "dot dot suffix is a name")]
#[test_case("/a/.b", "/a/.b" ; "hidden file name")]
#[test_case("/a/..%2Fb", "/a/..%2Fb" ; "encoded slash does not end a dot segment")]
#[test_case("/%41%5A%61%7a%30%39%2D%5f%7E", "/AZaz09-_~" ; "unreserved characters are decoded")]
#[test_case("/%4a%4A", "/JJ" ; "hex is case insensitive")]
#[test_case("/%2541", "/%2541" ; "decoded only once")]
#[test_case("/a%2Fb", "/a%2Fb" ; "encoded slash kept")]
#[test_case("/a%2fb", "/a%2fb" ; "encoded slash keeps its case")]
#[test_case("/a%5Cb", "/a%5Cb" ; "encoded backslash kept")]
#[test_case("/%5c%25", "/%5c%25" ; "reserved escapes kept as written")]
#[test_case("/%c0%af", "/%c0%af" ; "non ascii escapes kept")]
#[test_case("/%21%2a%3d%3F%23%20%7B", "/%21%2a%3d%3F%23%20%7B" ; "escapes of non unreserved kept")]
#[test_case("/a b", "/a%20b" ; "raw space is escaped")]
#[test_case("/\"<>^`{|}", "/%22%3C%3E%5E%60%7B%7C%7D" ; "raw unsafe ascii is escaped")]
#[test_case("/\t\u{1}\u{7f}", "/%09%01%7F" ; "raw control characters are escaped")]
#[test_case("/é", "/%C3%A9" ; "raw non ascii is escaped as utf8 bytes")]
#[test_case("/!$&'()*+,;=:@[]", "/!$&'()*+,;=:@[]" ; "sub delims and brackets pass")]
#[test_case("/%", "/%" ; "lone percent kept")]
#[test_case("/a%2", "/a%2" ; "truncated escape kept")]
#[test_case("/%zz%g1%%", "/%zz%g1%%" ; "invalid escapes kept")]
#[test_case("/%%30%30", "/%2500" ; "nested escape cannot form an escape")]
#[test_case("/%%300", "/%2500" ; "nested escape with raw digit")]
#[test_case("/%%34%31", "/%2541" ; "nested escape of a letter")]
#[test_case("/%4%31", "/%2541" ; "raw digit then decoded digit")]
#[test_case("/%%32%65", "/%252e" ; "nested escape cannot form an encoded dot")]
#[test_case("/xx%/../abcd%32", "/abcd2" ; "invalid percent forgotten once its segment is removed")]
#[test_case("/data//secret", "/data//secret" ; "double slash kept")]
#[test_case("//", "//" ; "only slashes kept")]
#[test_case("/ADMIN", "/ADMIN" ; "case kept")]
fn base_normalizes(raw: &str, expected: &str) {
    assert_eq!(normalize_path(raw, Base), ok(expected));
}

// --- BASE: path parameters on dot segments (Envoy's CVE-2026-73551 fix, default on) ---

#[test_case("/xyz/..;foo=bar/abc", "/abc" ; "parent with parameters in the middle")]
#[test_case("/..;foo=bar/abc", "/abc" ; "parent with parameters first")]
#[test_case("/xyz/..;foo=bar", "/" ; "parent with parameters last")]
#[test_case("/xyz/.;foo=bar/abc", "/xyz/abc" ; "current with parameters in the middle")]
#[test_case("/.;foo=bar/abc", "/abc" ; "current with parameters first")]
#[test_case("/xyz/.;foo=bar", "/xyz/" ; "current with parameters last")]
#[test_case("/xyz/..;foo=bar/.;fff=zzz?blah=woops", "/?blah=woops" ; "mixed with query")]
#[test_case("/xyz/..;a/.;b/remain;c?q;r", "/remain;c?q;r" ; "other parameters stay")]
#[test_case("/a;x/..;y/b", "/b" ; "parameters on the removed segment do not matter")]
#[test_case("/xyz/...;foo", "/xyz/...;foo" ; "three dots with parameters is a name")]
#[test_case("/xyz?param=/..;foo", "/xyz?param=/..;foo" ; "query is not touched")]
#[test_case("/a/%2e%2e;x/b", "/a/..;x/b" ; "encoded dots are not stripped")]
#[test_case("/a\\..;x\\b", "/a/..;x/b" ; "backslash separated segment is not stripped")]
fn base_strips_parameters_from_dot_segments(raw: &str, expected: &str) {
    assert_eq!(normalize_path(raw, Base), ok(expected));
}

#[test]
fn base_is_not_idempotent_on_encoded_dot_segments_with_parameters() {
    // Envoy quirk reproduced on purpose: the first pass decodes `%2e%2e;x` to `..;x` after the
    // parameter stripping ran, so a second pass (e.g. a backend normalising again) resolves it.
    let once = normalize_path("/a/%2e%2e;x/b", Base);
    assert_eq!(once, ok("/a/..;x/b"));
    assert_eq!(normalize_path("/a/..;x/b", Base), ok("/b"));
}

// --- every mode: query and fragment (authorization.md §7.1) ---

#[test_case("/a/../b?x=/../%41&y=%2F", Base, "/b?x=/../%41&y=%2F" ; "query kept under base")]
#[test_case("/a//b?x=//y", MergeSlashes, "/a/b?x=//y" ; "query kept under merge")]
#[test_case("/a%2Fb?x=%2F%5C", DecodeAndMergeSlashes, "/a/b?x=%2F%5C" ; "query kept under decode")]
#[test_case("/a b?c d", Base, "/a%20b?c d" ; "query is not escaped")]
#[test_case("/?é", Base, "/?é" ; "non ascii query kept")]
#[test_case("/a?", Base, "/a?" ; "empty query kept")]
#[test_case("/a??b", Base, "/a??b" ; "second question mark is query")]
#[test_case("/a?x=%00", Base, "/a?x=%00" ; "encoded nul in query is accepted")]
#[test_case("/a/../b#frag", Base, "/b" ; "fragment stripped under base")]
#[test_case("/a#b", NoNormalization, "/a" ; "fragment stripped under none")]
#[test_case("/a?x=1#f?g", Base, "/a?x=1" ; "fragment inside query stripped")]
#[test_case("/a#b?c", MergeSlashes, "/a" ; "question mark after fragment is fragment")]
#[test_case("/#", DecodeAndMergeSlashes, "/" ; "empty fragment stripped")]
#[test_case("/a#%00", Base, "/a" ; "encoded nul in fragment is dropped")]
fn query_and_fragment(raw: &str, mode: PathNormalization, expected: &str) {
    assert_eq!(normalize_path(raw, mode), ok(expected));
}

// --- NONE (authorization.md §7.1: "nothing") ---

#[test_case("/a/../b" ; "parent segment")]
#[test_case("/a/./b" ; "current segment")]
#[test_case("/a//b" ; "double slash")]
#[test_case("/a\\b" ; "backslash")]
#[test_case("/%41%2e" ; "unreserved escapes")]
#[test_case("/a%2Fb" ; "encoded slash")]
#[test_case("/a b" ; "raw space")]
#[test_case("/xyz/..;foo=bar/abc" ; "dot segment parameters")]
#[test_case("/a%00b" ; "encoded nul is not canonicalised so not rejected")]
fn none_keeps_the_path(raw: &str) {
    assert_eq!(normalize_path(raw, NoNormalization), ok(raw));
}

// --- MERGE_SLASHES (authorization.md §7.1: "BASE then merge `//+` → `/`") ---

#[test_case("/data//secret", "/data/secret" ; "double slash in the middle")]
#[test_case("//a/b/c", "/a/b/c" ; "double slash first")]
#[test_case("/a/b/c//", "/a/b/c/" ; "double slash last")]
#[test_case("/a////b", "/a/b" ; "many slashes")]
#[test_case("/a//b?a=///c", "/a/b?a=///c" ; "slashes in query kept")]
#[test_case("/a//b?", "/a/b?" ; "empty query")]
#[test_case("//a/?b", "/a/?b" ; "trailing slash before query")]
#[test_case("//", "//" ; "only slashes stay two slashes")]
#[test_case("///", "//" ; "three slashes become two")]
#[test_case("/a//../b", "/a/b" ; "dot segments resolved before merging")]
#[test_case("/a/..//b", "/b" ; "merge after parent removal")]
#[test_case("/a\\\\b", "/a/b" ; "backslashes then merge")]
#[test_case("/a/b/../c", "/a/c" ; "base still applies")]
#[test_case("/a%2F%2Fb", "/a%2F%2Fb" ; "encoded slashes kept")]
fn merge_slashes_mode(raw: &str, expected: &str) {
    assert_eq!(normalize_path(raw, MergeSlashes), ok(expected));
}

// --- DECODE_AND_MERGE_SLASHES (authorization.md §7.1: "decode `%2F %2f %5C %5c` first, then
// BASE, then merge slashes") ---

#[test_case("/a%2fb", "/a/b" ; "lowercase encoded slash")]
#[test_case("/a%2Fb", "/a/b" ; "uppercase encoded slash")]
#[test_case("/a%5Cb", "/a/b" ; "uppercase encoded backslash")]
#[test_case("/a%5cb", "/a/b" ; "lowercase encoded backslash")]
#[test_case("/a%2F%2Fb", "/a/b" ; "encoded double slash merged")]
#[test_case("/%2F", "//" ; "encoded slash only stays two slashes")]
#[test_case("/a/b%2F..%2Fc", "/a/c" ; "encoded slashes form a parent segment")]
#[test_case("/a/..%5C..%5Cb", "/b" ; "encoded backslashes form parent segments")]
#[test_case("/x/%2E%2e/z%2f%2Fabc%5C../def", "/z/def" ; "envoy unescape example")]
#[test_case("/a/..%2f..;x%2fb", "/b" ; "decoded slashes expose dot segment parameters")]
#[test_case("/a%252Fb", "/a%252Fb" ; "decoded only once")]
#[test_case("/%%2fa", "/%/a" ; "percent before encoded slash")]
#[test_case("/%2%2fa", "/%2/a" ; "truncated escape before encoded slash")]
#[test_case("/a%2Eb%2Dc", "/a.b-c" ; "unreserved still decoded")]
fn decode_and_merge_slashes_mode(raw: &str, expected: &str) {
    assert_eq!(normalize_path(raw, DecodeAndMergeSlashes), ok(expected));
}

// --- rejections ---

#[test_case("", PathRejection::MissingPath, 404 ; "empty")]
#[test_case("a/b", PathRejection::NotRelative, 404 ; "relative reference")]
#[test_case("*", PathRejection::NotRelative, 404 ; "asterisk form")]
#[test_case("http://h/a", PathRejection::NotRelative, 404 ; "absolute uri")]
#[test_case("\\a", PathRejection::NotRelative, 404 ; "leading backslash")]
#[test_case("#f", PathRejection::NotRelative, 404 ; "fragment only")]
#[test_case("?q", PathRejection::NotRelative, 404 ; "query only")]
#[test_case(" /a", PathRejection::NotRelative, 404 ; "leading space")]
#[test_case("/a\0b", PathRejection::ForbiddenByte { byte: 0 }, 400 ; "raw nul")]
#[test_case("/a\rb", PathRejection::ForbiddenByte { byte: b'\r' }, 400 ; "raw cr")]
#[test_case("/a\nb", PathRejection::ForbiddenByte { byte: b'\n' }, 400 ; "raw lf")]
#[test_case("/a?x=\n", PathRejection::ForbiddenByte { byte: b'\n' }, 400 ; "raw lf in query")]
#[test_case("\0", PathRejection::ForbiddenByte { byte: 0 }, 400 ; "codec check comes first")]
fn rejected_in_every_mode(raw: &str, rejection: PathRejection, status: u16) {
    for mode in ALL_MODES {
        assert_eq!(normalize_path(raw, mode), Err(rejection), "{mode:?}");
    }
    assert_eq!(rejection.status(), status);
}

#[test_case("/a%00b", Base ; "base")]
#[test_case("/%00", MergeSlashes ; "merge slashes")]
#[test_case("/a%00", DecodeAndMergeSlashes ; "decode and merge slashes")]
#[test_case("/xyz/.%00../abc", Base ; "nul inside dots")]
#[test_case("/xyz/%00.%00./abc", Base ; "nul between dots")]
#[test_case("/xyz/AAAAA%%0000/abc", Base ; "nul after invalid escape")]
fn encoded_nul_rejected_when_normalizing(raw: &str, mode: PathNormalization) {
    assert_eq!(normalize_path(raw, mode), Err(PathRejection::EncodedNul));
    assert_eq!(PathRejection::EncodedNul.status(), 400);
}

#[test]
fn rejection_messages_name_the_problem() {
    assert_eq!(
        PathRejection::ForbiddenByte { byte: b'\n' }.to_string(),
        "the `:path` contains the forbidden byte 0x0a"
    );
    assert_eq!(
        PathRejection::EncodedNul.to_string(),
        "the `:path` contains the percent-encoded NUL `%00`"
    );
}

#[test]
fn default_mode_is_base() {
    // authorization.md §7.1: "`DEFAULT` (unset) = `BASE`".
    assert_eq!(PathNormalization::default(), Base);
}

// --- bypass pitfalls (authorization.md §7.1), seen through `paths` matching ---

#[test_case(NoNormalization ; "none")]
#[test_case(Base ; "base")]
#[test_case(MergeSlashes ; "merge slashes")]
#[test_case(DecodeAndMergeSlashes ; "decode and merge slashes")]
fn pitfall_case_is_never_folded(mode: PathNormalization) {
    assert_eq!(authz_path("/ADMIN", mode).as_deref(), Some("/ADMIN"));
    assert_ne!(authz_path("/ADMIN", mode).as_deref(), Some("/admin"));
}

#[test_case(NoNormalization, "/data//secret" ; "none keeps it")]
#[test_case(Base, "/data//secret" ; "base keeps it")]
#[test_case(MergeSlashes, "/data/secret" ; "merge slashes merges")]
#[test_case(DecodeAndMergeSlashes, "/data/secret" ; "decode merges")]
fn pitfall_double_slash(mode: PathNormalization, seen: &str) {
    assert_eq!(authz_path("/data//secret", mode).as_deref(), Some(seen));
}

#[test_case(NoNormalization, "/data%2Fsecret" ; "none keeps it")]
#[test_case(Base, "/data%2Fsecret" ; "base keeps it")]
#[test_case(MergeSlashes, "/data%2Fsecret" ; "merge slashes keeps it")]
#[test_case(DecodeAndMergeSlashes, "/data/secret" ; "decode decodes")]
fn pitfall_encoded_slash(mode: PathNormalization, seen: &str) {
    assert_eq!(authz_path("/data%2Fsecret", mode).as_deref(), Some(seen));
}

#[test_case(NoNormalization, "/public/../admin" ; "none keeps it")]
#[test_case(Base, "/admin" ; "base resolves it")]
#[test_case(MergeSlashes, "/admin" ; "merge slashes resolves it")]
#[test_case(DecodeAndMergeSlashes, "/admin" ; "decode resolves it")]
fn pitfall_dot_dot(mode: PathNormalization, seen: &str) {
    let path = authz_path("/public/../admin", mode);
    assert_eq!(path.as_deref(), Some(seen));
    // A prefix ALLOW on `/public/*` is only bypassable when nothing resolves the `..`.
    let prefix_matches = path.is_some_and(|p| p.starts_with("/public/"));
    assert_eq!(prefix_matches, mode == NoNormalization);
}

#[test]
fn pitfall_query_does_not_take_part() {
    // authorization.md §7.1: "`/allow?param=value` matches `paths: ["/allow"]`".
    assert_eq!(
        authz_path("/allow?param=value", Base).as_deref(),
        Some("/allow")
    );
    assert_eq!(
        authz_path("/allow#frag", NoNormalization).as_deref(),
        Some("/allow")
    );
}

// --- url_path (Envoy `PathUtil::removeQueryAndFragment`) ---

#[test_case("", "" ; "empty")]
#[test_case("/abc", "/abc" ; "no query")]
#[test_case("/abc?", "/abc" ; "empty query")]
#[test_case("/abc?param=value", "/abc" ; "query")]
#[test_case("/abc??param=value", "/abc" ; "double question mark")]
#[test_case("/abc#", "/abc" ; "empty fragment")]
#[test_case("/abc#fragment?param=value", "/abc" ; "fragment first")]
#[test_case("/abc?param=value#fragment", "/abc" ; "query then fragment")]
#[test_case("/abc?#", "/abc" ; "both empty")]
#[test_case("/é?x", "/é" ; "non ascii")]
fn url_path_strips_query_and_fragment(path: &str, expected: &str) {
    assert_eq!(url_path(path), expected);
}

// --- properties ---

fn any_mode() -> impl Strategy<Value = PathNormalization> {
    prop_oneof![
        Just(NoNormalization),
        Just(Base),
        Just(MergeSlashes),
        Just(DecodeAndMergeSlashes),
    ]
}

/// Paths dense in the characters normalisation cares about.
fn path_like() -> impl Strategy<Value = String> {
    "/[/\\\\.%0-9a-fA-F;?#xX é]{0,40}"
}

/// The one known exception to idempotence: a `.`/`..` segment with parameters that only
/// appears after decoding (see `base_is_not_idempotent_on_encoded_dot_segments_with_parameters`).
fn has_dot_segment_with_parameters(normalized: &str) -> bool {
    let path = url_path(normalized);
    path.contains("/.;") || path.contains("/..;")
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_input(
        raw in prop_oneof![any::<String>(), any::<String>().prop_map(|s| format!("/{s}"))],
        mode in any_mode(),
    ) {
        if let Ok(normalized) = normalize_path(&raw, mode) {
            prop_assert!(url_path(&normalized).starts_with('/'));
        }
    }

    #[test]
    fn never_panics_on_path_like_input(raw in path_like(), mode in any_mode()) {
        let _ = normalize_path(&raw, mode);
    }

    #[test]
    fn normalization_is_idempotent(raw in path_like(), mode in any_mode()) {
        if let Ok(once) = normalize_path(&raw, mode) {
            prop_assume!(!has_dot_segment_with_parameters(&once));
            prop_assert_eq!(normalize_path(&once, mode), Ok(once.clone()));
        }
    }

    #[test]
    fn normalized_paths_have_no_dot_segments_or_backslashes(
        raw in path_like(),
        mode in prop_oneof![Just(Base), Just(MergeSlashes), Just(DecodeAndMergeSlashes)],
    ) {
        if let Ok(normalized) = normalize_path(&raw, mode) {
            let path = url_path(&normalized);
            prop_assert!(!path.contains('\\'));
            prop_assert!(path.split('/').all(|segment| segment != "." && segment != ".."));
        }
    }

    #[test]
    fn merge_slashes_leaves_no_double_slash_except_all_slashes(raw in path_like()) {
        if let Ok(normalized) = normalize_path(&raw, MergeSlashes) {
            let path = url_path(&normalized);
            prop_assert!(!path.contains("//") || path == "//");
        }
    }
}
