//! SPIFFE identities and trust domains, the names every workload certificate carries.
//!
//! authentication.md §1.1: "Format: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//! Parse rule (both implementations): must start with `spiffe://`; the remainder split on `/` must
//! give **exactly 5** segments; segment 1 must be `ns`, segment 3 must be `sa`. Empty namespace/SA
//! segments parse […] but istiod refuses to *generate* one with an empty ns or SA."
//!
//! These types live in the API crate because the decision engine, the CA, the proxy and the
//! control plane all name identities; `meshward-identity` re-exports them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The URI scheme prefix of every SPIFFE ID.
pub const SCHEME: &str = "spiffe://";

/// Istio's default trust domain (`MeshConfig.trustDomain`), authentication.md §1.1.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Why a string is not a SPIFFE identity or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The string does not start with `spiffe://`.
    #[error("{input:?} is not a SPIFFE ID: expected it to start with \"spiffe://\"")]
    MissingScheme {
        /// The string that was parsed.
        input: String,
    },
    /// The path does not have the Istio shape.
    #[error(
        "{input:?} is not an Istio SPIFFE ID: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account> ({problem})"
    )]
    WrongShape {
        /// The string that was parsed.
        input: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The trust domain is empty or uses characters SPIFFE does not allow.
    #[error(
        "invalid trust domain {trust_domain:?}: {problem} (allowed: lowercase letters, digits, '.', '-', '_')"
    )]
    InvalidTrustDomain {
        /// The rejected trust domain.
        trust_domain: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A namespace or service account is empty where an identity is being created.
    #[error("cannot create an identity with an empty {field}")]
    EmptyName {
        /// `namespace` or `service account`.
        field: &'static str,
    },
}

/// A SPIFFE trust domain, such as `cluster.local`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Validates a trust domain name per the SPIFFE ID specification (§2.1: lowercase letters,
    /// digits, dots, dashes and underscores).
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        let invalid = |problem| SpiffeIdError::InvalidTrustDomain {
            trust_domain: name.to_owned(),
            problem,
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > 255 {
            return Err(invalid("it is longer than 255 bytes"));
        }
        if !name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        }) {
            return Err(invalid("it contains a character SPIFFE does not allow"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The trust domain istiod would use for a configured name: §1.1 "istiod replaces every `@`
    /// in the trust domain with `.` when generating (`sanitizeTrustDomain`)."
    pub fn sanitized(name: &str) -> Result<Self, SpiffeIdError> {
        Self::new(&name.replace('@', "."))
    }

    /// The name, for example `cluster.local`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TrustDomain {
    fn default() -> Self {
        Self(DEFAULT_TRUST_DOMAIN.to_owned())
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// An Istio workload identity: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// The identity of service account `service_account` in `namespace`. Refuses empty names,
    /// as istiod does when it generates an identity (§1.1).
    pub fn new(
        trust_domain: TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        if namespace.is_empty() {
            return Err(SpiffeIdError::EmptyName { field: "namespace" });
        }
        if service_account.is_empty() {
            return Err(SpiffeIdError::EmptyName {
                field: "service account",
            });
        }
        for name in [namespace, service_account] {
            if name.contains('/') {
                return Err(SpiffeIdError::WrongShape {
                    input: format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"),
                    problem: "a name contains '/'",
                });
            }
        }
        Ok(Self {
            trust_domain,
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    /// Parses a URI SAN. Follows §1.1's parse rule, including accepting empty namespace and
    /// service-account segments (they can never equal a generated identity).
    pub fn parse(uri: &str) -> Result<Self, SpiffeIdError> {
        let Some(rest) = uri.strip_prefix(SCHEME) else {
            return Err(SpiffeIdError::MissingScheme {
                input: uri.to_owned(),
            });
        };
        let shape = |problem| SpiffeIdError::WrongShape {
            input: uri.to_owned(),
            problem,
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let [td, ns_key, ns, sa_key, sa] = segments.as_slice() else {
            return Err(shape(
                "the path must have exactly the segments ns/<namespace>/sa/<sa>",
            ));
        };
        if *ns_key != "ns" {
            return Err(shape("the first path segment must be \"ns\""));
        }
        if *sa_key != "sa" {
            return Err(shape("the third path segment must be \"sa\""));
        }
        Ok(Self {
            trust_domain: TrustDomain::new(td).map_err(|_| {
                shape(
                    "the trust domain must be non-empty lowercase letters, digits, '.', '-' or '_'",
                )
            })?,
            namespace: (*ns).to_owned(),
            service_account: (*sa).to_owned(),
        })
    }

    /// Parses the policy principal form, without `spiffe://` (§1.3): `td/ns/foo/sa/bar`.
    pub fn from_principal(principal: &str) -> Result<Self, SpiffeIdError> {
        if principal.starts_with(SCHEME) {
            return Err(SpiffeIdError::WrongShape {
                input: principal.to_owned(),
                problem: "a principal is written without \"spiffe://\"",
            });
        }
        Self::parse(&format!("{SCHEME}{principal}"))
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The URI form, as it appears in a certificate SAN: `spiffe://td/ns/foo/sa/bar`.
    pub fn uri(&self) -> String {
        self.to_string()
    }

    /// The principal form used by AuthorizationPolicy `principals` and `source.principal`
    /// (§1.3): the URI without `spiffe://`.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// The same namespace and service account in another trust domain.
    pub fn with_trust_domain(&self, trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            ..self.clone()
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// The mesh's trust domain and its aliases (`meshConfig.trustDomainAliases`).
///
/// §1.2: "identities in any alias trust domain are treated as equivalent to the same ns/sa in
/// `trustDomain`."
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustDomains {
    primary: TrustDomain,
    aliases: Vec<TrustDomain>,
}

impl TrustDomains {
    /// The mesh trust domain with its aliases; duplicates and the primary itself are dropped from
    /// the aliases (§1.2 "deduplicated").
    pub fn new(primary: TrustDomain, aliases: impl IntoIterator<Item = TrustDomain>) -> Self {
        let mut kept: Vec<TrustDomain> = Vec::new();
        for alias in aliases {
            if alias != primary && !kept.contains(&alias) {
                kept.push(alias);
            }
        }
        Self {
            primary,
            aliases: kept,
        }
    }

    /// The mesh's own trust domain.
    pub fn primary(&self) -> &TrustDomain {
        &self.primary
    }

    /// The aliases, without the primary.
    pub fn aliases(&self) -> &[TrustDomain] {
        &self.aliases
    }

    /// Every accepted trust domain, primary first.
    pub fn all(&self) -> impl Iterator<Item = &TrustDomain> {
        std::iter::once(&self.primary).chain(&self.aliases)
    }

    /// Server side, §1.2: "the list of acceptable client trust domains is `[trustDomain] ∪
    /// trustDomainAliases`".
    pub fn accepts(&self, trust_domain: &TrustDomain) -> bool {
        self.all().any(|td| td == trust_domain)
    }

    /// Client side, §1.2: "the expected server identities of a service are expanded with every
    /// alias (`ExpandWithTrustDomains`)". An identity in any accepted trust domain yields itself
    /// plus the same ns/sa in every other accepted trust domain; others are returned unchanged.
    pub fn expand(&self, identity: &SpiffeId) -> Vec<SpiffeId> {
        if !self.accepts(identity.trust_domain()) {
            return vec![identity.clone()];
        }
        let mut out = vec![identity.clone()];
        for td in self.all() {
            if td != identity.trust_domain() {
                out.push(identity.with_trust_domain(td.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn td(s: &str) -> TrustDomain {
        TrustDomain::new(s).unwrap()
    }

    #[test]
    fn parses_and_prints_the_istio_form() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/foo/sa/sleep").unwrap();
        assert_eq!(id.trust_domain().as_str(), "cluster.local");
        assert_eq!(id.namespace(), "foo");
        assert_eq!(id.service_account(), "sleep");
        assert_eq!(id.uri(), "spiffe://cluster.local/ns/foo/sa/sleep");
        assert_eq!(id.principal(), "cluster.local/ns/foo/sa/sleep");
        assert_eq!(SpiffeId::from_principal(&id.principal()).unwrap(), id);
    }

    #[test_case("cluster.local/ns/foo/sa/bar"; "no scheme")]
    #[test_case("spiffe://cluster.local/ns/foo/sa/bar/"; "trailing slash")]
    #[test_case("spiffe://cluster.local/ns/foo/sa/bar/x"; "extra segment")]
    #[test_case("spiffe://cluster.local/ns/foo"; "too short")]
    #[test_case("spiffe://cluster.local/namespace/foo/sa/bar"; "ns key")]
    #[test_case("spiffe://cluster.local/ns/foo/serviceaccount/bar"; "sa key")]
    #[test_case("spiffe://Cluster.Local/ns/foo/sa/bar"; "uppercase trust domain")]
    #[test_case("spiffe:///ns/foo/sa/bar"; "empty trust domain")]
    fn refuses_what_is_not_an_istio_identity(input: &str) {
        let err = SpiffeId::parse(input).unwrap_err();
        assert!(err.to_string().contains(input), "{err}");
    }

    #[test]
    fn empty_segments_parse_but_cannot_be_created() {
        // §1.1: accepted by the parser, refused when generating.
        assert!(SpiffeId::parse("spiffe://td/ns//sa/").is_ok());
        assert_eq!(
            SpiffeId::new(td("td"), "", "sa"),
            Err(SpiffeIdError::EmptyName { field: "namespace" })
        );
        assert!(SpiffeId::new(td("td"), "ns", "").is_err());
        assert!(SpiffeId::new(td("td"), "a/b", "sa").is_err());
    }

    #[test]
    fn principal_form_refuses_the_scheme() {
        let err = SpiffeId::from_principal("spiffe://td/ns/a/sa/b").unwrap_err();
        assert!(err.to_string().contains("without \"spiffe://\""), "{err}");
    }

    #[test]
    fn sanitizes_at_signs_like_istiod() {
        assert_eq!(
            TrustDomain::sanitized("foo@bar.com").unwrap(),
            td("foo.bar.com")
        );
    }

    #[test]
    fn aliases_accept_and_expand() {
        let tds = TrustDomains::new(td("new.td"), [td("old.td"), td("new.td"), td("old.td")]);
        assert_eq!(tds.aliases(), &[td("old.td")]);
        assert!(tds.accepts(&td("old.td")));
        assert!(!tds.accepts(&td("evil.td")));
        let id = SpiffeId::parse("spiffe://new.td/ns/a/sa/b").unwrap();
        let expanded: Vec<String> = tds.expand(&id).iter().map(SpiffeId::uri).collect();
        assert_eq!(
            expanded,
            ["spiffe://new.td/ns/a/sa/b", "spiffe://old.td/ns/a/sa/b"]
        );
        let foreign = SpiffeId::parse("spiffe://other/ns/a/sa/b").unwrap();
        assert_eq!(tds.expand(&foreign), vec![foreign.clone()]);
    }

    #[test]
    fn serde_round_trip() {
        let id = SpiffeId::parse("spiffe://td/ns/a/sa/b").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"spiffe://td/ns/a/sa/b\"");
        assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SpiffeId>("\"td/ns/a/sa/b\"").is_err());
    }
}
