//! One compiled value of a rule field, and how it reads the request attributes.

use std::net::IpAddr;

use ipnet::IpNet;
use meshward_api::path_template::PathTemplate;
use serde_json::Value;

use super::identity::{
    PrincipalMatch, RequestPrincipalMatch, ServiceAccountMatch, TrustDomainMatch,
};
use crate::attributes::Attributes;
use crate::matcher::{Glob, StringMatch};

/// A compiled value. Every variant knows which attribute it reads; a missing attribute never
/// matches (authorization.md §4.1: "`m(v, attr)` when the attribute is missing … is false for
/// every form, including presence `*`").
#[derive(Debug, Clone)]
pub enum Matcher {
    /// `principals`, `source.principal`.
    Principal(PrincipalMatch),
    /// `namespaces`, `source.namespace`.
    Namespace(Glob),
    /// `serviceAccounts`, `source.serviceAccount`.
    ServiceAccount(ServiceAccountMatch),
    /// `trustDomains`, `source.trustDomain`.
    TrustDomain(TrustDomainMatch),
    /// `requestPrincipals`, `request.auth.principal`.
    RequestPrincipal(RequestPrincipalMatch),
    /// `ipBlocks`, `source.ip`.
    SourceIp(IpNet),
    /// `remoteIpBlocks`, `remote.ip`.
    RemoteIp(IpNet),
    /// `destination.ip`.
    DestinationIp(IpNet),
    /// `ports`, `destination.port`.
    DestinationPort(u16),
    /// `hosts` (case-insensitive).
    Host(StringMatch),
    /// `methods`.
    Method(StringMatch),
    /// `paths` in the §4.2 forms.
    Path(StringMatch),
    /// `paths` with `{*}`/`{**}` (§7.2).
    PathTemplate(PathTemplate),
    /// `request.headers[name]`.
    Header(Box<str>, StringMatch),
    /// `request.auth.audiences` (claim `aud`).
    Audience(StringMatch),
    /// `request.auth.presenter` (claim `azp`).
    Presenter(StringMatch),
    /// `request.auth.claims[a][b]…`.
    Claim(Box<[String]>, StringMatch),
    /// `connection.sni`.
    Sni(StringMatch),
}

impl Matcher {
    /// Does the attribute this matcher reads match?
    pub fn matches(&self, a: &Attributes<'_>) -> bool {
        match self {
            Matcher::Principal(m) => a.peer.is_some_and(|p| m.matches(p)),
            Matcher::Namespace(g) => a.peer.is_some_and(|p| g.matches(p)),
            Matcher::ServiceAccount(m) => a.peer.is_some_and(|p| m.matches(p)),
            Matcher::TrustDomain(m) => a.peer.is_some_and(|p| m.matches(p)),
            Matcher::SourceIp(net) => contains(net, a.src_ip),
            Matcher::RemoteIp(net) => contains(net, a.remote_ip),
            Matcher::DestinationIp(net) => contains(net, a.dst_ip),
            Matcher::DestinationPort(p) => a.dst_port == *p,
            // connection.sni: "plaintext ⇒ empty ⇒ only `notValues` can match".
            Matcher::Sni(m) => !a.sni.is_empty() && m.matches(a.sni),
            Matcher::RequestPrincipal(m) => a
                .http
                .as_ref()
                .and_then(|h| h.jwt)
                .is_some_and(|jwt| m.matches(jwt)),
            Matcher::Host(m) => a
                .http
                .as_ref()
                .is_some_and(|h| host_matches(m, h.authority)),
            Matcher::Method(m) => a.http.as_ref().is_some_and(|h| m.matches(h.method)),
            Matcher::Path(m) => a.http.as_ref().is_some_and(|h| m.matches(h.url_path())),
            Matcher::PathTemplate(t) => a.http.as_ref().is_some_and(|h| t.matches(h.url_path())),
            // A repeated header matches if any one line matches (authorization.md §1).
            Matcher::Header(name, m) => a
                .http
                .as_ref()
                .is_some_and(|h| h.header_values(name).any(|v| m.matches_header(v.trim()))),
            Matcher::Audience(m) => a
                .http
                .as_ref()
                .and_then(|h| h.jwt)
                .and_then(|jwt| jwt.get("aud"))
                .is_some_and(|v| claim_matches(m, v)),
            Matcher::Presenter(m) => a
                .http
                .as_ref()
                .and_then(|h| h.jwt)
                .and_then(|jwt| jwt.get("azp"))
                .is_some_and(|v| claim_matches(m, v)),
            Matcher::Claim(path, m) => a
                .http
                .as_ref()
                .and_then(|h| h.claim(path))
                .is_some_and(|v| claim_matches(m, v)),
        }
    }
}

/// `hosts`: "`*` = header present"; otherwise case-insensitive forms.
fn host_matches(m: &StringMatch, authority: &str) -> bool {
    match m {
        StringMatch::Presence => true,
        _ => m.matches_ignore_case(authority),
    }
}

/// authorization.md §5: "value matches if the claim is a string matching, or a **list of
/// strings** with ≥1 matching element. Numbers/booleans/objects never match."
fn claim_matches(m: &StringMatch, value: &Value) -> bool {
    match value {
        Value::String(s) => m.matches(s),
        Value::Array(items) => items
            .iter()
            .any(|item| item.as_str().is_some_and(|s| m.matches(s))),
        _ => false,
    }
}

/// "CIDR host bits are ignored (prefix compare)"; IPv4-mapped IPv6 peers compare as IPv4.
fn contains(net: &IpNet, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    net.trunc().contains(&ip)
}
