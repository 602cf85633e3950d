//! Identity matchers: `principals`, `namespaces`, `serviceAccounts`, `trustDomains`,
//! `requestPrincipals` and trust-domain alias expansion (authorization.md §4.3–§4.5).

use serde_json::{Map, Value};

use crate::matcher::{Glob, StringMatch};

const SPIFFE: &str = "spiffe://";

/// `principals` / `source.principal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalMatch {
    /// `*` ⇒ regex `.+`: any non-empty principal.
    Any,
    /// §4.2 form over `"spiffe://" + value`.
    Form(StringMatch),
}

impl PrincipalMatch {
    /// authorization.md §4.3: "Value `v` ≠ `*` is matched against `"spiffe://"+v` using the
    /// §4.2 form (suffix `*x` → regex `spiffe://.*x`, prefix `x*` → prefix `spiffe://x`)."
    pub fn parse(value: &str) -> PrincipalMatch {
        if value == "*" {
            return PrincipalMatch::Any;
        }
        match StringMatch::parse(value) {
            StringMatch::Suffix(s) => PrincipalMatch::Form(StringMatch::Suffix(s)),
            StringMatch::Prefix(p) => {
                PrincipalMatch::Form(StringMatch::Prefix(format!("{SPIFFE}{p}").into()))
            }
            StringMatch::Exact(e) => {
                PrincipalMatch::Form(StringMatch::Exact(format!("{SPIFFE}{e}").into()))
            }
            StringMatch::Presence => PrincipalMatch::Any,
        }
    }

    /// Matches the peer's URI SAN.
    pub fn matches(&self, peer: &str) -> bool {
        match self {
            PrincipalMatch::Any => !peer.is_empty(),
            // regex `spiffe://.*x`: the SAN starts with `spiffe://` and ends with `x` after it.
            PrincipalMatch::Form(StringMatch::Suffix(s)) => peer
                .strip_prefix(SPIFFE)
                .is_some_and(|rest| rest.ends_with(&**s)),
            PrincipalMatch::Form(form) => form.matches(peer),
        }
    }
}

/// `namespaces` / `source.namespace`: regex full match of `.*/ns/<V>/.*` where every `*` of
/// `V` becomes `.*` (authorization.md §4.3; wildcards allowed anywhere).
pub fn namespace_glob(value: &str) -> Glob {
    Glob::new(&format!("*/ns/{value}/*"))
}

/// `serviceAccounts` / `source.serviceAccount` (authorization.md §4.3): regex full match of
/// `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountMatch {
    namespace: Box<str>,
    name: Box<str>,
}

impl ServiceAccountMatch {
    /// `ns/sa`, or a bare `sa` in the policy's namespace.
    pub fn parse(value: &str, policy_namespace: &str) -> ServiceAccountMatch {
        match value.split_once('/') {
            Some((ns, sa)) => ServiceAccountMatch {
                namespace: ns.into(),
                name: sa.into(),
            },
            None => ServiceAccountMatch {
                namespace: policy_namespace.into(),
                name: value.into(),
            },
        }
    }

    /// Matches the peer's URI SAN.
    pub fn matches(&self, peer: &str) -> bool {
        let Some(rest) = peer.strip_prefix(SPIFFE) else {
            return false;
        };
        let marker = format!("/ns/{}/", self.namespace);
        // `.+` before `/ns/`: try every occurrence after at least one character.
        let mut search_from = 1;
        while let Some(found) = rest.get(search_from..).and_then(|s| s.find(&marker)) {
            let at = search_from + found;
            if let Some(tail) = rest.get(at + marker.len()..)
                && self.tail_matches(tail)
            {
                return true;
            }
            search_from = at + 1;
        }
        false
    }

    /// `(.+/|)sa/<sa>(/.+)?` over what follows `/ns/<ns>/`.
    fn tail_matches(&self, tail: &str) -> bool {
        let sa = format!("sa/{}", self.name);
        let ends_ok = |after: &str| {
            after.is_empty() || after.strip_prefix('/').is_some_and(|r| !r.is_empty())
        };
        if let Some(after) = tail.strip_prefix(&sa)
            && ends_ok(after)
        {
            return true;
        }
        let needle = format!("/{sa}");
        let mut from = 1;
        while let Some(found) = tail.get(from..).and_then(|s| s.find(&needle)) {
            let at = from + found;
            if let Some(after) = tail.get(at + needle.len()..)
                && ends_ok(after)
            {
                return true;
            }
            from = at + 1;
        }
        false
    }
}

/// `trustDomains` / `source.trustDomain` (authorization.md §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustDomainMatch {
    /// `*` ⇒ the SAN starts with `spiffe://`.
    Any,
    /// `td` ⇒ starts with `spiffe://td/`.
    Exact(Box<str>),
    /// `a*` ⇒ `spiffe://a[^/]*/.*`.
    Prefix(Box<str>),
    /// `*b` ⇒ `spiffe://[^/]*b/.*`.
    Suffix(Box<str>),
}

impl TrustDomainMatch {
    /// Compiles one value.
    pub fn parse(value: &str) -> TrustDomainMatch {
        if value == "*" {
            TrustDomainMatch::Any
        } else if let Some(rest) = value.strip_prefix('*') {
            TrustDomainMatch::Suffix(rest.into())
        } else if let Some(rest) = value.strip_suffix('*') {
            TrustDomainMatch::Prefix(rest.into())
        } else {
            TrustDomainMatch::Exact(value.into())
        }
    }

    /// Matches the peer's URI SAN.
    pub fn matches(&self, peer: &str) -> bool {
        let Some(rest) = peer.strip_prefix(SPIFFE) else {
            return false;
        };
        if let TrustDomainMatch::Any = self {
            return true;
        }
        let Some((td, _)) = rest.split_once('/') else {
            return false;
        };
        match self {
            TrustDomainMatch::Any => true,
            TrustDomainMatch::Exact(e) => td == &**e,
            TrustDomainMatch::Prefix(p) => td.starts_with(&**p),
            TrustDomainMatch::Suffix(s) => td.ends_with(&**s),
        }
    }
}

/// The mesh trust domain and its aliases, used to rewrite principal values (§4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustDomainBundle {
    members: Vec<String>,
}

impl TrustDomainBundle {
    /// `[trustDomain] + trustDomainAliases`, deduplicated.
    pub fn new(trust_domain: &str, aliases: &[String]) -> Self {
        let mut members: Vec<String> = Vec::new();
        for td in std::iter::once(trust_domain).chain(aliases.iter().map(String::as_str)) {
            if !td.is_empty() && !members.iter().any(|m| m == td) {
                members.push(td.to_owned());
            }
        }
        TrustDomainBundle { members }
    }

    fn contains(&self, td: &str) -> bool {
        self.members.iter().any(|m| wildcard_td_match(td, m))
    }

    /// authorization.md §4.5: "For each principal value with exactly 5 `/`-separated parts whose
    /// first part is not `*`: if its trust domain is in the bundle (wildcard-aware) or equals
    /// `cluster.local`, replace it by one copy per bundle member (dedup; a `*`-prefixed td that
    /// matches a member is kept as-is). Otherwise keep unchanged."
    pub fn expand_principal(&self, principal: &str) -> Vec<String> {
        let parts: Vec<&str> = principal.split('/').collect();
        let Some(td) = parts.first().copied() else {
            return vec![principal.to_owned()];
        };
        if parts.len() != 5 || td == "*" {
            return vec![principal.to_owned()];
        }
        if !(self.contains(td) || td == "cluster.local") {
            return vec![principal.to_owned()];
        }
        let rest = principal.get(td.len()..).unwrap_or_default();
        let mut out: Vec<String> = Vec::new();
        for member in &self.members {
            let rewritten = if td.starts_with('*') && wildcard_td_match(td, member) {
                principal.to_owned()
            } else {
                format!("{member}{rest}")
            };
            if !out.contains(&rewritten) {
                out.push(rewritten);
            }
        }
        out
    }

    /// `trustDomains` values equal to a member expand to every member (§4.3).
    pub fn expand_trust_domain(&self, value: &str) -> Vec<String> {
        if self.members.iter().any(|m| m == value) {
            self.members.clone()
        } else {
            vec![value.to_owned()]
        }
    }
}

/// `pattern` (possibly `*`-prefixed or suffixed) against a concrete trust domain.
fn wildcard_td_match(pattern: &str, td: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(rest) = pattern.strip_prefix('*') {
        td.ends_with(rest)
    } else if let Some(rest) = pattern.strip_suffix('*') {
        td.starts_with(rest)
    } else {
        pattern == td
    }
}

/// One side (issuer or subject) of a request principal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClaimPart {
    /// Regex `.+`.
    NonEmpty,
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
}

impl ClaimPart {
    fn matches(&self, value: &str) -> bool {
        match self {
            ClaimPart::NonEmpty => !value.is_empty(),
            ClaimPart::Exact(e) => value == &**e,
            ClaimPart::Prefix(p) => value.starts_with(&**p),
            ClaimPart::Suffix(s) => value.ends_with(&**s),
        }
    }
}

/// `requestPrincipals` / `request.auth.principal`, compiled into an issuer and a subject matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPrincipalMatch {
    issuer: ClaimPart,
    subject: ClaimPart,
}

impl RequestPrincipalMatch {
    /// authorization.md §4.4, the current istiod algorithm:
    /// ```text
    /// idx = last index of '/' in v;  iss,sub = (v[..idx], v[idx+1..]) if found else (v, "")
    /// v == "*"                      -> iss ~ .+ , sub ~ .+
    /// v starts with "*":  found     -> iss = (iss=="*" ? .+ : suffix(iss[1..])) , sub exact
    ///                     not found -> iss .+ , sub suffix(v[1..])
    /// v ends with "*":    found     -> iss exact , sub = (sub=="*" ? .+ : prefix(sub minus '*'))
    ///                     not found -> iss prefix(v minus '*') , sub .+
    /// otherwise                     -> iss exact , sub exact
    /// ```
    pub fn parse(value: &str) -> RequestPrincipalMatch {
        let split = value.rfind('/').map(|i| {
            (
                value.get(..i).unwrap_or_default(),
                value.get(i + 1..).unwrap_or_default(),
            )
        });
        let exact = |s: &str| ClaimPart::Exact(s.into());
        if value == "*" {
            return RequestPrincipalMatch {
                issuer: ClaimPart::NonEmpty,
                subject: ClaimPart::NonEmpty,
            };
        }
        if let Some(rest) = value.strip_prefix('*') {
            return match split {
                Some((iss, sub)) => RequestPrincipalMatch {
                    issuer: if iss == "*" {
                        ClaimPart::NonEmpty
                    } else {
                        ClaimPart::Suffix(iss.get(1..).unwrap_or_default().into())
                    },
                    subject: exact(sub),
                },
                None => RequestPrincipalMatch {
                    issuer: ClaimPart::NonEmpty,
                    subject: ClaimPart::Suffix(rest.into()),
                },
            };
        }
        if let Some(rest) = value.strip_suffix('*') {
            return match split {
                Some((iss, sub)) => RequestPrincipalMatch {
                    issuer: exact(iss),
                    subject: if sub == "*" {
                        ClaimPart::NonEmpty
                    } else {
                        ClaimPart::Prefix(sub.strip_suffix('*').unwrap_or(sub).into())
                    },
                },
                None => RequestPrincipalMatch {
                    issuer: ClaimPart::Prefix(rest.into()),
                    subject: ClaimPart::NonEmpty,
                },
            };
        }
        match split {
            Some((iss, sub)) => RequestPrincipalMatch {
                issuer: exact(iss),
                subject: exact(sub),
            },
            None => RequestPrincipalMatch {
                issuer: exact(value),
                subject: exact(""),
            },
        }
    }

    /// "Claims compared as strings; a missing claim never matches."
    pub fn matches(&self, jwt: &Map<String, Value>) -> bool {
        let (Some(Value::String(iss)), Some(Value::String(sub))) = (jwt.get("iss"), jwt.get("sub"))
        else {
            return false;
        };
        self.issuer.matches(iss) && self.subject.matches(sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use test_case::test_case;

    const FOO_SLEEP: &str = "spiffe://cluster.local/ns/foo/sa/sleep";

    #[test_case("cluster.local/ns/foo/sa/sleep", FOO_SLEEP, true; "exact")]
    #[test_case("spiffe://cluster.local/ns/foo/sa/sleep", FOO_SLEEP, false; "spiffe prefix never matches")]
    #[test_case("cluster.local/ns/*/sa/sleep", FOO_SLEEP, false; "inner star is literal")]
    #[test_case("*/sa/sleep", FOO_SLEEP, true; "suffix")]
    #[test_case("cluster.local/ns/foo/*", FOO_SLEEP, true; "prefix")]
    #[test_case("*", FOO_SLEEP, true; "any")]
    #[test_case("*", "", false; "any needs a principal")]
    fn principals(value: &str, peer: &str, expected: bool) {
        assert_eq!(PrincipalMatch::parse(value).matches(peer), expected);
    }

    #[test_case("foo/sleep", "x", "sleep", FOO_SLEEP, true; "ns and sa")]
    #[test_case("sleep", "foo", "sleep", FOO_SLEEP, true; "bare name uses policy namespace")]
    #[test_case("sleep", "bar", "sleep", FOO_SLEEP, false; "bare name in other namespace")]
    #[test_case("foo/slee", "x", "", FOO_SLEEP, false; "no partial sa")]
    fn service_accounts(value: &str, policy_ns: &str, _sa: &str, peer: &str, expected: bool) {
        assert_eq!(
            ServiceAccountMatch::parse(value, policy_ns).matches(peer),
            expected
        );
    }

    #[test]
    fn service_account_with_extra_segments() {
        let m = ServiceAccountMatch::parse("foo/sleep", "x");
        assert!(m.matches("spiffe://td/ns/foo/x/sa/sleep/extra"));
        assert!(!m.matches("spiffe://td/ns/foo/sa/sleep/"));
        assert!(
            !m.matches("spiffe:///ns/foo/sa/sleep"),
            ".+ needs a trust domain"
        );
    }

    #[test_case("cluster.local", true)]
    #[test_case("cluster.*", true)]
    #[test_case("*.local", true)]
    #[test_case("*", true)]
    #[test_case("other", false)]
    #[test_case("cluster", false)]
    fn trust_domains(value: &str, expected: bool) {
        assert_eq!(TrustDomainMatch::parse(value).matches(FOO_SLEEP), expected);
    }

    #[test]
    fn alias_expansion() {
        let bundle = TrustDomainBundle::new("td1", &["foobar".to_owned()]);
        assert_eq!(
            bundle.expand_principal("cluster.local/ns/foo/sa/x"),
            vec!["td1/ns/foo/sa/x", "foobar/ns/foo/sa/x"]
        );
        assert_eq!(
            bundle.expand_principal("foobar/ns/foo/sa/x"),
            vec!["td1/ns/foo/sa/x", "foobar/ns/foo/sa/x"]
        );
        assert_eq!(
            bundle.expand_principal("other/ns/foo/sa/x"),
            vec!["other/ns/foo/sa/x"]
        );
        assert_eq!(
            bundle.expand_principal("*/ns/foo/sa/x"),
            vec!["*/ns/foo/sa/x"]
        );
        assert_eq!(bundle.expand_principal("td1/ns/foo"), vec!["td1/ns/foo"]);
        let default = TrustDomainBundle::new("cluster.local", &[]);
        assert_eq!(
            default.expand_principal("cluster.local/ns/a/sa/b"),
            vec!["cluster.local/ns/a/sa/b"]
        );
    }

    #[test_case("*", "i", "s", true; "star needs both")]
    #[test_case("*", "i", "", false; "star needs sub")]
    #[test_case("i/s", "i", "s", true; "exact pair")]
    #[test_case("*@example.com", "whatever", "me@example.com", true; "star at suffix constrains sub")]
    #[test_case("*@example.com", "x@example.com", "other", false; "not the issuer")]
    #[test_case("https://acc*", "https://accounts.example.com", "s", false; "split at the last slash")]
    #[test_case("i/*", "i", "anything", true; "issuer any subject")]
    #[test_case("*/s", "anything", "s", true; "any issuer subject")]
    #[test_case("i", "i", "s", false; "no slash needs empty sub")]
    #[test_case("pre*", "prefix-iss", "s", true; "no slash trailing star is issuer prefix")]
    fn request_principals(value: &str, iss: &str, sub: &str, expected: bool) {
        let jwt = json!({"iss": iss, "sub": sub});
        let jwt = jwt.as_object().unwrap();
        assert_eq!(RequestPrincipalMatch::parse(value).matches(jwt), expected);
    }

    #[test]
    fn request_principal_missing_claims_never_match() {
        let jwt = json!({"iss": "i"});
        assert!(!RequestPrincipalMatch::parse("*").matches(jwt.as_object().unwrap()));
        let jwt = json!({"iss": "i", "sub": 5});
        assert!(!RequestPrincipalMatch::parse("i/*").matches(jwt.as_object().unwrap()));
    }
}
