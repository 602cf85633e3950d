//! HTTP `:path` normalisation exactly as Envoy's HTTP connection manager (HCM) performs it under
//! Istio's `meshConfig.pathNormalization.normalization` modes, and the `url_path` view that
//! AuthorizationPolicy `paths` match on.
//!
//! authorization.md §7.1: "Normalisation (HCM, before routing and authz; the backend sees the same
//! path)". The steps below follow Envoy's `ConnectionManagerUtility::maybeNormalizePath` in order:
//!
//! 1. the codec refuses NUL, CR and LF in any header value (400);
//! 2. the HCM answers 404 to an empty `:path` or one that does not start with `/`;
//! 3. the fragment (`#…`) is stripped (Istio sets `http_reject_path_with_fragment: false` in the
//!    bootstrap, so Envoy strips instead of rejecting);
//! 4. `DECODE_AND_MERGE_SLASHES` only: `%2F %2f %5C %5c` are unescaped
//!    (`path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD`);
//! 5. every mode but `NONE` (`normalize_path: true`): path parameters are stripped from `.` and `..`
//!    segments (`/..;x` → `/..`, Envoy's fix for CVE-2026-73551), then googleurl's
//!    `CanonicalizePath` runs on the part before `?`; a `%00` fails it (400);
//! 6. `MERGE_SLASHES` and `DECODE_AND_MERGE_SLASHES` (`merge_slashes: true`): `//+` → `/`.
//!
//! The query string is never modified. Pure, no I/O, no `unsafe`, never panics.
//!
//! Where this follows Envoy's code over the wording of authorization.md §7.1 ("Always: `%00` ⇒
//! request rejected 400"): Envoy only rejects `%00` inside the canonicalisation that `NONE`
//! switches off, so under `NONE` a `%00` is forwarded untouched. A `:path` that is empty or
//! does not start with `/` gets 404, not 400.

use std::borrow::Cow;

use thiserror::Error;

/// Istio's `meshConfig.pathNormalization.normalization`, i.e. which of Envoy's HCM path
/// normalisations run before routing and authorization.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PathNormalization {
    /// `NONE`: `normalize_path: false`. Only the fragment is stripped.
    None,
    /// `BASE` (also `DEFAULT`/unset): `normalize_path: true`.
    #[default]
    Base,
    /// `MERGE_SLASHES`: `BASE`, then `merge_slashes: true`.
    MergeSlashes,
    /// `DECODE_AND_MERGE_SLASHES`: unescape `%2F`/`%5C`, then `MERGE_SLASHES`.
    DecodeAndMergeSlashes,
}

/// Why Envoy refuses a request because of its `:path`, before any filter (authorization
/// included) sees it. [`PathRejection::status`] gives the HTTP status Envoy answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
pub enum PathRejection {
    /// `:path` is empty (Envoy: 404, details `missing_path_rejected`).
    #[error("the `:path` is empty")]
    MissingPath,
    /// `:path` does not start with `/`, e.g. `*` or an absolute URI the codec did not split
    /// (Envoy: 404, details `absolute_path_rejected`).
    #[error("the `:path` does not start with `/`")]
    NotRelative,
    /// A raw NUL, CR or LF, which Envoy's codecs refuse in every header value (400).
    #[error("the `:path` contains the forbidden byte {byte:#04x}")]
    ForbiddenByte {
        /// The offending byte (`0x00`, `0x0d` or `0x0a`).
        byte: u8,
    },
    /// `%00` in the path part while normalisation is on: googleurl's canonicalisation fails
    /// (Envoy: 400, details `path_normalization_failed`).
    #[error("the `:path` contains the percent-encoded NUL `%00`")]
    EncodedNul,
}

/// Normalizes the `:path` header (path and query) like Envoy's HCM does under `mode`.
///
/// Returns the path that routing, every filter and the backend see (fragment removed, query
/// untouched), or the reason Envoy answers with an error status instead.
pub fn normalize_path(raw: &str, mode: PathNormalization) -> Result<String, PathRejection> {
    // Envoy's header validation (all codecs) refuses NUL, CR and LF in header values; this
    // happens before the HCM looks at the path, whatever the normalisation mode.
    if let Some(byte) = raw.bytes().find(|b| matches!(b, b'\0' | b'\r' | b'\n')) {
        return Err(PathRejection::ForbiddenByte { byte });
    }
    // HCM `decodeHeaders`: "Currently we only support relative paths at the application
    // layer" — an empty path or one not starting with '/' gets a 404, in every mode.
    if raw.is_empty() {
        return Err(PathRejection::MissingPath);
    }
    if !raw.starts_with('/') {
        return Err(PathRejection::NotRelative);
    }

    // authorization.md §7.1: "Query and fragment never take part in `paths` matching". Istio's
    // bootstrap sets `http_reject_path_with_fragment: false` and leaves
    // `http_strip_fragment_from_path_unsafe_if_disabled` on, so Envoy cuts everything from the
    // first `#` (even one inside the query) before normalising, in every mode including NONE.
    let without_fragment = raw.split_once('#').map_or(raw, |(before, _)| before);

    // Every step below works on the part before the first '?' only; none of them can put a '?'
    // into the path part (googleurl keeps `%3F` escaped), so splitting once is equivalent.
    let (path, query) = match without_fragment.find('?') {
        Some(at) => without_fragment.split_at(at),
        None => (without_fragment, ""),
    };

    let mut path = Cow::Borrowed(path);
    if mode == PathNormalization::DecodeAndMergeSlashes {
        // authorization.md §7.1, DECODE_AND_MERGE_SLASHES: "decode `%2F %2f %5C %5c` first,
        // then BASE, then merge slashes".
        path = unescape_slashes(path);
    }
    if mode != PathNormalization::None {
        // authorization.md §7.1, BASE: "RFC 3986 dot-segment removal, `\` → `/`, percent-decode
        // unreserved chars once". `NONE`: "nothing".
        path = strip_dot_segment_parameters(path);
        path = Cow::Owned(canonicalize(&path)?);
    }
    if matches!(
        mode,
        PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
    ) {
        // authorization.md §7.1, MERGE_SLASHES: "BASE then merge `//+` → `/`".
        path = merge_slashes(path);
    }

    let mut normalized = path.into_owned();
    normalized.push_str(query);
    Ok(normalized)
}

/// The part of a `:path` that AuthorizationPolicy `paths` match on: everything before the first
/// `?` or `#` (Envoy's `PathUtil::removeQueryAndFragment`).
///
/// authorization.md §4.7: "Normalised path with query (`?…`) and fragment (`#…`) stripped
/// (Envoy `url_path`)".
pub fn url_path(path: &str) -> &str {
    path.find(['?', '#']).map_or(path, |at| path.split_at(at).0)
}

/// Envoy's `PathUtil::unescapeSlashes`: replaces `%2F`, `%2f` by `/` and `%5C`, `%5c` by `\`,
/// once, left to right (so `%252F` stays, and `%%2f` becomes `%/`).
fn unescape_slashes(path: Cow<'_, str>) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    if !bytes.contains(&b'%') {
        return path;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    let mut changed = false;
    while let Some((&first, tail)) = rest.split_first() {
        let replacement = match (first, tail) {
            (b'%', [b'2', b'f' | b'F', ..]) => Some(b'/'),
            (b'%', [b'5', b'c' | b'C', ..]) => Some(b'\\'),
            _ => None,
        };
        match (replacement, tail.get(2..)) {
            (Some(decoded), Some(after)) => {
                out.push(decoded);
                rest = after;
                changed = true;
            }
            _ => {
                out.push(first);
                rest = tail;
            }
        }
    }
    if !changed {
        return path;
    }
    // INVARIANT: only ASCII bytes were swapped for ASCII bytes, so `out` is still UTF-8.
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|e| lossy(e.as_bytes())))
}

/// Envoy's `PathUtil::stripParametersFromDotSegments` (runtime guard
/// `strip_dotdot_segments_with_parameters`, on by default since Envoy 1.38.4/1.39.1): a
/// `/`-separated segment starting with `..;` becomes `..` and one starting with `.;` becomes
/// `.`, so that canonicalisation removes it. Only literal dots and `/` count: `%2e%2e;x` and
/// `\..;x` are left alone (and survive as `..;x` segments).
fn strip_dot_segment_parameters(path: Cow<'_, str>) -> Cow<'_, str> {
    if !path.contains(".;") {
        return path;
    }
    let stripped = path
        .split('/')
        .map(|segment| {
            if segment.starts_with("..;") {
                ".."
            } else if segment.starts_with(".;") {
                "."
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    Cow::Owned(stripped)
}

/// Envoy's `PathUtil::mergeSlashes`: if the path part contains `//`, it becomes
/// `/` + its non-empty segments joined by `/` + `/` if it ended with `/`.
///
/// Faithful quirk: a path made only of slashes (`//`, `///`) becomes `//`, not `/`.
fn merge_slashes(path: Cow<'_, str>) -> Cow<'_, str> {
    if !path.contains("//") {
        return path;
    }
    let mut merged = String::with_capacity(path.len());
    if path.starts_with('/') {
        merged.push('/');
    }
    let mut first = true;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if !first {
            merged.push('/');
        }
        merged.push_str(segment);
        first = false;
    }
    if path.ends_with('/') {
        merged.push('/');
    }
    Cow::Owned(merged)
}

// === googleurl path canonicalisation ===
//
// A port of `url::CanonicalizePath` (url_canon_path.cc, `DoPath`/`DoPartialPathInternal`) for
// 8-bit input, in the version Envoy links: `%00` and a raw NUL still fail (Envoy's
// `PathUtilityTest.InvalidPaths`; envoyproxy/envoy#46547 only proposes to drop that).

/// Pass through unchanged, escaped or not.
const PASS: u8 = 0;
/// Needs handling in the slow path (dots, `%`, `\`, and everything escaped or invalid).
const SPECIAL: u8 = 1;
/// Must be percent-encoded in the output.
const ESCAPE_BIT: u8 = 2;
const ESCAPE: u8 = ESCAPE_BIT | SPECIAL;
/// `%XX` of this character is decoded; the raw character is copied.
const UNESCAPE: u8 = 4;
/// Disallowed: canonicalisation fails.
const INVALID_BIT: u8 = 8;
const INVALID: u8 = INVALID_BIT | SPECIAL;

/// googleurl's `kPathCharLookup`.
///
/// authorization.md §7.1: "percent-decode unreserved chars once (`%2e`→`.`, `%2d`, `%30-%39`,
/// `%41-%5a`, `%5f`, `%61-%7a`, `%7e`; case-insensitive hex). `%2F`/`%5C` kept encoded." The
/// UNESCAPE entries are exactly RFC 3986 unreserved (`.` is handled as a dot segment instead);
/// every other escape is copied with its original hex case.
const fn path_char_flags(byte: u8) -> u8 {
    match byte {
        0x00 => INVALID,
        0x01..=0x1f | 0x7f..=0xff => ESCAPE,
        b' ' | b'"' | b'#' | b'%' | b'<' | b'>' | b'?' | b'\\' | b'^' | b'`' | b'{' | b'|'
        | b'}' => ESCAPE,
        b'.' => SPECIAL,
        b'-' | b'_' | b'~' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' => UNESCAPE,
        // ! $ & ' ( ) * + , / : ; = @ [ ]
        _ => PASS,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// What a dot that follows a `/` in the output means (googleurl `DotDisposition`).
enum DotDisposition {
    /// Just part of a file name (`.x`, `..x`, `...`).
    NotDirectory,
    /// `.` — drop it, together with `consumed` following input bytes.
    Current { consumed: usize },
    /// `..` — go up one segment; `consumed` following input bytes belong to it.
    Up { consumed: usize },
}

/// googleurl `CanonicalizePath` on the path part (before `?`); `Err` when it reports failure.
///
/// authorization.md §7.1, "Always: `%00` ⇒ request rejected 400" — realised here, hence only
/// when normalisation is on (see the module docs).
fn canonicalize(path: &str) -> Result<String, PathRejection> {
    let spec = path.as_bytes();
    let end = spec.len();
    let mut out: Vec<u8> = Vec::with_capacity(end + 1);
    // `DoPath`: an empty path is "/", and one not starting with a slash gets one.
    if !spec.first().is_some_and(|&b| is_url_slash(b)) {
        out.push(b'/');
    }
    let path_begin = 0;
    let mut last_invalid_percent: Option<usize> = None;
    let mut success = true;

    let mut i = 0;
    while let Some(&ch) = spec.get(i) {
        let flags = path_char_flags(ch);
        if flags & SPECIAL == 0 {
            out.push(ch);
        } else if let Some(dot_len) = dot_len(spec, i) {
            // RFC 3986 §5.2.4 dot-segment removal, only for a dot right after a '/' in the
            // output; `%2e` counts as a dot and `\` as a slash.
            if out.len() > path_begin && out.last() == Some(&b'/') {
                match classify_after_dot(spec, i + dot_len) {
                    DotDisposition::NotDirectory => out.push(b'.'),
                    DotDisposition::Current { consumed } => i += consumed,
                    DotDisposition::Up { consumed } => {
                        // authorization.md §7.1: "`/a/../b`" → "/b"; `..` above the root stays
                        // at the root.
                        back_up_to_previous_slash(path_begin, &mut out);
                        if last_invalid_percent.is_some_and(|at| at >= out.len()) {
                            last_invalid_percent = None;
                        }
                        i += consumed;
                    }
                }
            } else {
                out.push(b'.');
            }
            i += dot_len - 1;
        } else if ch == b'\\' {
            // authorization.md §7.1: "`\` → `/`".
            out.push(b'/');
        } else if ch == b'%' {
            match decode_escaped(spec, i) {
                Some(value) => {
                    i += 2;
                    let value_flags = path_char_flags(value);
                    if value_flags & UNESCAPE != 0 {
                        // authorization.md §7.1: "percent-decode unreserved chars once".
                        out.push(value);
                        if let Some(at) = last_invalid_percent
                            && at + 3 >= out.len()
                        {
                            check_for_nested_escapes(spec, i + 1, at, &mut out);
                        }
                    } else {
                        // authorization.md §7.1: "`%2F`/`%5C` kept encoded" — as is every other
                        // escape, in its original hex case.
                        out.push(b'%');
                        out.extend(spec.get(i - 1..=i).unwrap_or_default());
                        if value_flags & INVALID_BIT != 0 {
                            success = false;
                        }
                    }
                }
                None => {
                    // A '%' not followed by two hex digits is copied; remember it so a later
                    // decode cannot complete it into a valid escape.
                    last_invalid_percent = Some(out.len());
                    out.push(b'%');
                }
            }
        } else if flags & INVALID_BIT != 0 {
            append_escaped(ch, &mut out);
            success = false;
        } else {
            // flags == ESCAPE
            append_escaped(ch, &mut out);
        }
        i += 1;
    }

    if !success {
        // INVALID only marks NUL; a raw NUL was already refused as a forbidden byte.
        return Err(PathRejection::EncodedNul);
    }
    // INVARIANT: `out` is ASCII — raw non-ASCII bytes are always percent-encoded and only
    // ASCII bytes are ever decoded.
    Ok(String::from_utf8(out).unwrap_or_else(|e| lossy(e.as_bytes())))
}

/// googleurl `IsURLSlash`.
const fn is_url_slash(byte: u8) -> bool {
    byte == b'/' || byte == b'\\'
}

/// googleurl `IsDot`: the length of a dot at `at` (`.` = 1, `%2e`/`%2E` = 3), if any.
fn dot_len(spec: &[u8], at: usize) -> Option<usize> {
    match spec.get(at..)? {
        [b'.', ..] => Some(1),
        [b'%', b'2', b'e' | b'E', ..] => Some(3),
        _ => None,
    }
}

/// googleurl `ClassifyAfterDot`: looks at what follows a dot that follows a slash.
fn classify_after_dot(spec: &[u8], after_dot: usize) -> DotDisposition {
    let Some(&next) = spec.get(after_dot) else {
        return DotDisposition::Current { consumed: 0 };
    };
    if is_url_slash(next) {
        return DotDisposition::Current { consumed: 1 };
    }
    if let Some(second) = dot_len(spec, after_dot) {
        let after_second = after_dot + second;
        match spec.get(after_second) {
            None => return DotDisposition::Up { consumed: second },
            Some(&b) if is_url_slash(b) => {
                return DotDisposition::Up {
                    consumed: second + 1,
                };
            }
            Some(_) => {}
        }
    }
    DotDisposition::NotDirectory
}

/// googleurl `BackUpToPreviousSlash`: the output ends with `/`; drop the last segment, but
/// never the first slash.
fn back_up_to_previous_slash(path_begin: usize, out: &mut Vec<u8>) {
    let Some(mut i) = out.len().checked_sub(1) else {
        return;
    };
    if i == path_begin {
        return;
    }
    loop {
        i -= 1;
        if out.get(i) == Some(&b'/') || i <= path_begin {
            break;
        }
    }
    out.truncate(i + 1);
}

/// googleurl `DecodeEscaped`: the byte encoded by `%XX` at `at` (`at` holds the `%`).
fn decode_escaped(spec: &[u8], at: usize) -> Option<u8> {
    match spec.get(at + 1..at + 3)? {
        &[high, low] => Some((hex_value(high)? << 4) | hex_value(low)?),
        _ => None,
    }
}

const fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// googleurl `AppendEscapedChar`: `%` + two uppercase hex digits.
fn append_escaped(byte: u8, out: &mut Vec<u8>) {
    out.push(b'%');
    out.extend(
        [byte >> 4, byte & 0x0f]
            .iter()
            .filter_map(|&nibble| HEX_UPPER.get(usize::from(nibble))),
    );
}

/// googleurl `CheckForNestedEscapes`: a `%` that did not start a valid escape in the input must
/// not start one in the output once the bytes after it were decoded (`%%30%30` must not become
/// `%00`); if it would, that `%` is written as `%25`. Called right after a decoded byte was
/// pushed within two bytes of the remembered `%` at `percent_at`.
fn check_for_nested_escapes(spec: &[u8], next_input: usize, percent_at: usize, out: &mut Vec<u8>) {
    let length = out.len();
    let Some(&last_unescaped) = out.last() else {
        return;
    };
    // If the output ends like "%c", try the next input byte as the second hex digit.
    let append_next = length.checked_sub(2) == Some(percent_at);
    if append_next {
        match spec.get(next_input) {
            Some(&next) if next < 0x80 => out.push(next),
            _ => return,
        }
    }
    if decode_escaped(out, percent_at).is_some() {
        if !append_next && let Some(&first_digit) = out.get(percent_at + 1) {
            out.push(first_digit);
        }
        for (offset, digit) in [(1, b'2'), (2, b'5')] {
            if let Some(slot) = out.get_mut(percent_at + offset) {
                *slot = digit;
            }
        }
        out.push(last_unescaped);
    } else if append_next {
        out.truncate(length);
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// === impl PathRejection ===

impl PathRejection {
    /// The HTTP status Envoy answers with.
    pub const fn status(self) -> u16 {
        match self {
            PathRejection::MissingPath | PathRejection::NotRelative => 404,
            PathRejection::ForbiddenByte { .. } | PathRejection::EncodedNul => 400,
        }
    }
}

#[cfg(test)]
mod tests;
