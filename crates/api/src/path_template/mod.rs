//! Path templates in AuthorizationPolicy `paths`/`notPaths`: `{*}` and `{**}`.
//!
//! authorization.md §7.2: "If a path value contains `{*}` or `{**}` it becomes an Envoy URI
//! template (query/fragment stripped, full match)". Istio validates the value in its webhook
//! (`security.CheckValidPathTemplate`), then rewrites `{*}` → `*` and `{**}` → `**` and hands it
//! to Envoy's `envoy.path.match.uri_template` matcher, which compiles it to a regex. This module
//! does both: [`PathTemplate::parse`] applies the webhook rules (plus the two shapes the webhook
//! lets through but Envoy refuses) and [`PathTemplate::matches`] matches like Envoy's regex,
//! without a regex engine and without allocating.
//!
//! Pure, no I/O, no `unsafe`, never panics.

use std::fmt;

use thiserror::Error;

/// `{*}`: one path segment.
const MATCH_ONE: &str = "{*}";
/// `{**}`: any number of segments.
const MATCH_ANY: &str = "{**}";

/// A validated `{*}`/`{**}` path template, ready to match normalised URL paths.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathTemplate {
    /// The value as written in the policy.
    source: String,
    /// Everything before `{**}` (the whole template when there is none).
    head: Vec<Piece>,
    /// The literal text after `{**}`, which the path must end with; `None` without `{**}`.
    tail: Option<String>,
}

/// Why a path value is not a usable template.
///
/// [`PathTemplateError::is_webhook_error`] tells Istio's webhook errors apart from the shapes
/// the webhook accepts but Envoy refuses when the listener is pushed (a NACK: the policy is
/// never enforced).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PathTemplateError {
    /// The value has no `{*}` or `{**}`: it is a plain path, not a template.
    #[error("path `{value}` contains no `{{*}}` or `{{**}}` operator")]
    NoOperator {
        /// The path value.
        value: String,
    },
    /// A `{*}` or second `{**}` after a `{**}`.
    #[error("invalid path template `{value}`: `{{**}}` must be the last operator")]
    OperatorAfterMatchAny {
        /// The path value.
        value: String,
    },
    /// `{` or `}` outside a whole-segment operator (`/a{*}`, `/{*}.txt`, `/{x}`).
    #[error(
        "invalid path template `{value}`: segment `{segment}` has `{{` or `}}` outside a \
         `{{*}}` or `{{**}}` operator, which must fill the whole segment"
    )]
    StrayBrace {
        /// The path value.
        value: String,
        /// The offending segment.
        segment: String,
    },
    /// A literal segment with a character that is not a pchar (`*`, space, `?`, `#`, …).
    #[error(
        "invalid path template `{value}`: segment `{segment}` may only contain \
         `A-Za-z0-9-._~%!$&'()+,;:@=`"
    )]
    InvalidLiteral {
        /// The path value.
        value: String,
        /// The offending segment.
        segment: String,
    },
    /// An empty segment between two slashes (`/a//{*}`).
    #[error("invalid path template `{value}`: empty segment (`//`)")]
    EmptySegment {
        /// The path value.
        value: String,
    },
    /// Does not start with `/`. Istio's webhook accepts this; Envoy refuses the template.
    #[error("invalid path template `{value}`: must start with `/` (Envoy rejects it)")]
    NotAbsolute {
        /// The path value.
        value: String,
    },
    /// Starts or ends with `//`. Istio's webhook trims these slashes before checking; Envoy
    /// refuses the template ("Double slashes (/) detected in uri_template").
    #[error("invalid path template `{value}`: starts or ends with `//` (Envoy rejects it)")]
    EdgeDoubleSlash {
        /// The path value.
        value: String,
    },
}

/// A run of the template before `{**}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Piece {
    /// Literal text, slashes included, matched byte for byte.
    Text(String),
    /// `{*}`: one or more pchars, no `/`.
    Segment,
}

// === impl PathTemplate ===

impl PathTemplate {
    /// Whether a `paths`/`notPaths` value is a template: it contains `{*}` or `{**}`
    /// (Istio's `ContainsPathTemplate`). Other values use the §4.2 exact/prefix/suffix forms.
    pub fn is_template(value: &str) -> bool {
        value.contains(MATCH_ONE) || value.contains(MATCH_ANY)
    }

    /// Validates a template like Istio's webhook (authorization.md §8.2 item 8: "path templates
    /// valid (§7.2)") and Envoy's template parser, and prepares it for matching.
    pub fn parse(value: &str) -> Result<PathTemplate, PathTemplateError> {
        if !Self::is_template(value) {
            return Err(PathTemplateError::NoOperator {
                value: value.to_owned(),
            });
        }
        check_like_istio_webhook(value)?;

        // Envoy's `parsePathPatternSyntax`: the pattern must match `^/[[:graph:]]*$` and must
        // not contain `//`. The webhook trims every leading and trailing '/' before its checks,
        // so these two shapes get past it.
        if !value.starts_with('/') {
            return Err(PathTemplateError::NotAbsolute {
                value: value.to_owned(),
            });
        }
        if value.starts_with("//") || value.ends_with("//") {
            return Err(PathTemplateError::EdgeDoubleSlash {
                value: value.to_owned(),
            });
        }

        // INVARIANT (checked above): `value` is '/' + segments joined by '/' + an optional
        // trailing '/'; every segment is non-empty and is `{*}`, `{**}` or a pchar literal; at
        // most one `{**}` and no operator after it.
        let body = value.strip_prefix('/').unwrap_or(value);
        let (body, trailing_slash) = match body.strip_suffix('/') {
            Some(body) => (body, true),
            None => (body, false),
        };
        let mut head = Vec::new();
        let mut tail: Option<String> = None;
        let mut text = String::from("/");
        for (index, segment) in body.split('/').enumerate() {
            if index > 0 {
                text.push('/');
            }
            match segment {
                MATCH_ONE => {
                    head.push(Piece::Text(std::mem::take(&mut text)));
                    head.push(Piece::Segment);
                }
                MATCH_ANY => {
                    head.push(Piece::Text(std::mem::take(&mut text)));
                    tail = Some(String::new());
                }
                literal => text.push_str(literal),
            }
        }
        if trailing_slash {
            text.push('/');
        }
        match tail.as_mut() {
            Some(tail) => *tail = text,
            None => head.push(Piece::Text(text)),
        }
        head.retain(|piece| !matches!(piece, Piece::Text(text) if text.is_empty()));

        Ok(PathTemplate {
            source: value.to_owned(),
            head,
            tail,
        })
    }

    /// Whether `url_path` (already normalised, query and fragment already stripped) matches the
    /// whole template, exactly like the regex Envoy builds from it.
    ///
    /// authorization.md §7.2: "`{*}` → one segment of ≥1 chars from
    /// `[A-Za-z0-9-._~%!$&'()+,;:@=]`. `{**}` → zero or more chars from that set plus `/`".
    /// Literal text is compared byte for byte (case-sensitive). A `?` or `#` left in the input
    /// never matches an operator.
    pub fn matches(&self, url_path: &str) -> bool {
        let mut rest = url_path.as_bytes();
        for piece in &self.head {
            match piece {
                Piece::Text(text) => match rest.strip_prefix(text.as_bytes()) {
                    Some(after) => rest = after,
                    None => return false,
                },
                Piece::Segment => {
                    // `[pchar]+` cannot cross a '/', and whatever follows `{*}` in a template
                    // starts with '/' (or is the end), so consuming greedily is exact.
                    let taken = rest.iter().take_while(|&&b| is_pchar(b)).count();
                    match rest.get(taken..) {
                        Some(after) if taken > 0 => rest = after,
                        _ => return false,
                    }
                }
            }
        }
        match &self.tail {
            None => rest.is_empty(),
            // `{**}` is followed only by fixed text, so it must cover exactly what lies between
            // the head and that suffix: no backtracking needed.
            Some(tail) => rest
                .strip_suffix(tail.as_bytes())
                .is_some_and(|middle| middle.iter().all(|&b| b == b'/' || is_pchar(b))),
        }
    }

    /// The template as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

// === impl PathTemplateError ===

impl PathTemplateError {
    /// Whether Istio's validating webhook refuses the value. `false` for the shapes only Envoy
    /// refuses ([`NotAbsolute`](Self::NotAbsolute), [`EdgeDoubleSlash`](Self::EdgeDoubleSlash))
    /// and for [`NoOperator`](Self::NoOperator), which is not a template at all.
    pub fn is_webhook_error(&self) -> bool {
        match self {
            PathTemplateError::OperatorAfterMatchAny { .. }
            | PathTemplateError::StrayBrace { .. }
            | PathTemplateError::InvalidLiteral { .. }
            | PathTemplateError::EmptySegment { .. } => true,
            PathTemplateError::NoOperator { .. }
            | PathTemplateError::NotAbsolute { .. }
            | PathTemplateError::EdgeDoubleSlash { .. } => false,
        }
    }
}

/// Istio's `security.CheckValidPathTemplate` for one value that contains an operator.
fn check_like_istio_webhook(value: &str) -> Result<(), PathTemplateError> {
    let mut seen_match_any = false;
    // "Strip leading and trailing slashes if they exist", then check each '/'-separated glob.
    for segment in value.trim_matches('/').split('/') {
        match segment {
            // authorization.md §7.2: "`{**}` … must be the last operator".
            MATCH_ONE | MATCH_ANY if seen_match_any => {
                return Err(PathTemplateError::OperatorAfterMatchAny {
                    value: value.to_owned(),
                });
            }
            MATCH_ONE => {}
            MATCH_ANY => seen_match_any = true,
            // authorization.md §7.2: "`*`, `{`, `}` outside an operator, or text sharing a
            // segment with an operator, are webhook errors".
            _ if segment.contains(['{', '}']) => {
                return Err(PathTemplateError::StrayBrace {
                    value: value.to_owned(),
                    segment: segment.to_owned(),
                });
            }
            // Istio's literal regex is `^[…]+$`: an empty segment fails it too.
            "" => {
                return Err(PathTemplateError::EmptySegment {
                    value: value.to_owned(),
                });
            }
            // authorization.md §7.2: "Literal segments must be pchars".
            _ if !segment.bytes().all(is_pchar) => {
                return Err(PathTemplateError::InvalidLiteral {
                    value: value.to_owned(),
                    segment: segment.to_owned(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// RFC 3986 pchar as Istio and Envoy spell it: `[A-Za-z0-9-._~%!$&'()+,;:@=]` (`*` excluded,
/// `%` accepted on its own).
const fn is_pchar(byte: u8) -> bool {
    matches!(
        byte,
        b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'%'
            | b'!'
            | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'+'
            | b','
            | b';'
            | b':'
            | b'@'
            | b'='
    )
}

#[cfg(test)]
mod tests;
