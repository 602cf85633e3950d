//! A candidate index over the rules of one action on one chain, so that a decision looks only
//! at the rules that can match the request instead of scanning all of them.
//!
//! Each rule is filed under one *necessary condition*: a set of keys over one attribute such
//! that the rule can only match when the attribute has one of the keys (exact value, prefix or
//! suffix). It comes from a `when` condition, or from a field that every `from` (or every
//! `to`) clause constrains with positive values, since "`field(X, notX)` ⇔ (X empty ∨ ∃ v∈X :
//! m(v, attr)) ∧ …" (authorization.md §4.1). Rules without such a condition stay in a residual
//! list that is always scanned. A decision probes the attribute values of the request, scans
//! the posting lists it finds (each sorted by Envoy order) and keeps the smallest position that
//! matches, so the result is the same first match as a scan of every rule in Envoy order. The
//! index narrows the candidates only; every candidate is still decided by
//! [`CompiledRule::matches`]. Nothing is allocated per decision.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use meshward_api::resources::security::AuthorizationPolicy;

use super::compile::{Clause, CompiledRule, FieldMatcher};
use super::identity::{PrincipalMatch, namespace_glob};
use super::matchers::Matcher;
use crate::attributes::Attributes;
use crate::matcher::{Glob, StringMatch};

/// Prefix and suffix keys shorter than this select nearly every request (`/*`); such values
/// are not used as keys.
const MIN_AFFIX: usize = 2;

/// Positions of rules in the action's Envoy-ordered list, ascending.
type Postings = Box<[usize]>;

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Posting lists by key value.
type KeyMap = FastMap<Box<[u8]>, Postings>;

/// The Fx hash (rustc's): fast on short keys. Keys come from policies; request values are only
/// looked up, so collisions cannot be forced into the tables by traffic.
#[derive(Debug, Clone, Copy, Default)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// The attribute a key reads; each probe below reads it exactly as [`Matcher::matches`] does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Dim {
    /// `paths`: `url_path()` of the request.
    Path,
    /// `principals`, `source.principal`: the peer's URI SAN.
    Peer,
    /// `namespaces`, `source.namespace` without wildcards: the segment after a `/ns/` of the
    /// peer's URI SAN.
    Namespace,
    /// `request.headers[name]`: each line, trimmed.
    Header(Box<str>),
    /// `ports`, `destination.port`.
    Port,
    /// `methods`.
    Method,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Form {
    Exact,
    Prefix,
    Suffix,
}

/// "The attribute equals / starts with / ends with `value`."
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    dim: Dim,
    form: Form,
    value: Box<[u8]>,
}

fn string_key(dim: Dim, m: &StringMatch) -> Option<Key> {
    let (form, value) = match m {
        StringMatch::Presence => return None,
        StringMatch::Exact(v) => (Form::Exact, v),
        StringMatch::Prefix(v) if v.len() >= MIN_AFFIX => (Form::Prefix, v),
        StringMatch::Suffix(v) if v.len() >= MIN_AFFIX => (Form::Suffix, v),
        StringMatch::Prefix(_) | StringMatch::Suffix(_) => return None,
    };
    Some(Key {
        dim,
        form,
        value: value.as_bytes().into(),
    })
}

/// Namespace values of one rule without `*` or `/`, with their compiled globs: a `namespaces`
/// matcher equal to `namespace_glob(v)` matches only peers containing `/ns/<v>/`. Read from the
/// policy source only when the rule has a `namespaces` matcher.
struct NamespaceValues<'a> {
    policy: &'a AuthorizationPolicy,
    index: usize,
    globs: OnceCell<Vec<(Glob, &'a str)>>,
}

impl<'a> NamespaceValues<'a> {
    fn of_rule(policy: &'a AuthorizationPolicy, index: usize) -> Self {
        NamespaceValues {
            policy,
            index,
            globs: OnceCell::new(),
        }
    }

    fn globs(&self) -> &[(Glob, &'a str)] {
        self.globs.get_or_init(|| {
            let mut values: Vec<&'a str> = Vec::new();
            let rule = self
                .policy
                .spec
                .rules
                .as_ref()
                .and_then(|r| r.get(self.index));
            if let Some(Some(rule)) = rule {
                for source in rule.from.iter().flatten().flatten() {
                    if let Some(s) = &source.source {
                        values.extend(s.namespaces.iter().flatten().map(String::as_str));
                    }
                }
                for c in rule.when.iter().flatten().flatten() {
                    if c.key.as_deref() == Some("source.namespace") {
                        values.extend(c.values.iter().flatten().map(String::as_str));
                    }
                }
            }
            values
                .into_iter()
                .filter(|v| !v.contains(['*', '/']))
                .map(|v| (namespace_glob(v), v))
                .collect()
        })
    }

    fn key(&self, glob: &Glob) -> Option<Key> {
        self.globs()
            .iter()
            .find(|(g, _)| g == glob)
            .map(|(_, v)| Key {
                dim: Dim::Namespace,
                form: Form::Exact,
                value: v.as_bytes().into(),
            })
    }
}

/// The key a compiled value requires, if it can be indexed.
fn matcher_key(m: &Matcher, namespaces: &NamespaceValues<'_>) -> Option<Key> {
    match m {
        Matcher::Path(s) => string_key(Dim::Path, s),
        Matcher::Method(s) => string_key(Dim::Method, s),
        // `Form(Suffix(s))` is regex `spiffe://.*s`, which implies "ends with `s`".
        Matcher::Principal(PrincipalMatch::Form(s)) => string_key(Dim::Peer, s),
        Matcher::Namespace(glob) => namespaces.key(glob),
        Matcher::DestinationPort(port) => Some(Key {
            dim: Dim::Port,
            form: Form::Exact,
            value: port.to_be_bytes().into(),
        }),
        Matcher::Header(name, s) => string_key(Dim::Header(name.clone()), s),
        _ => None,
    }
}

/// Keys of a field whose positive values all index on one attribute: the field matches only if
/// one of them holds.
fn field_keys(f: &FieldMatcher, namespaces: &NamespaceValues<'_>) -> Option<Vec<Key>> {
    if f.values.is_empty() {
        return None;
    }
    let keys = f
        .values
        .iter()
        .map(|m| matcher_key(m, namespaces))
        .collect::<Option<Vec<Key>>>()?;
    let dim = &keys.first()?.dim;
    keys.iter().all(|k| &k.dim == dim).then_some(keys)
}

/// Necessary conditions of a non-empty clause list (`from` or `to`, any one clause must match):
/// per attribute constrained by every clause, the union of their keys.
fn clauses_options(clauses: &[Clause], namespaces: &NamespaceValues<'_>) -> Vec<Vec<Key>> {
    let per_clause: Vec<Vec<Vec<Key>>> = clauses
        .iter()
        .map(|c| {
            c.fields
                .iter()
                .filter_map(|f| field_keys(f, namespaces))
                .collect()
        })
        .collect();
    let Some((first, others)) = per_clause.split_first() else {
        return Vec::new();
    };
    let mut options = Vec::new();
    for keys in first {
        let Some(dim) = keys.first().map(|k| &k.dim) else {
            continue;
        };
        let mut union = keys.clone();
        let complete = others.iter().all(|fields| {
            match fields
                .iter()
                .find(|ks| ks.first().is_some_and(|k| &k.dim == dim))
            {
                Some(ks) => {
                    union.extend(ks.iter().cloned());
                    true
                }
                None => false,
            }
        });
        if complete {
            options.push(union);
        }
    }
    options
}

/// Every necessary condition the index could file `rule` under.
fn rule_options(rule: &CompiledRule, namespaces: &NamespaceValues<'_>) -> Vec<Vec<Key>> {
    let mut options: Vec<Vec<Key>> = rule
        .when
        .iter()
        .filter_map(|c| field_keys(c, namespaces))
        .collect();
    options.extend(clauses_options(&rule.from, namespaces));
    options.extend(clauses_options(&rule.to, namespaces));
    for keys in &mut options {
        keys.sort_by(|a, b| (a.form as u8, &a.value).cmp(&(b.form as u8, &b.value)));
        keys.dedup();
    }
    options
}

/// Posting lists of one string attribute: exact values, and prefixes and suffixes by length.
#[derive(Debug, Clone, Default)]
struct StrIndex {
    exact: KeyMap,
    /// By ascending length.
    prefix: Vec<(usize, KeyMap)>,
    /// By ascending length.
    suffix: Vec<(usize, KeyMap)>,
}

impl StrIndex {
    fn probe(&self, value: &[u8], scan: &mut impl FnMut(&[usize])) {
        if let Some(p) = self.exact.get(value) {
            scan(p);
        }
        for (len, map) in &self.prefix {
            let Some(head) = value.get(..*len) else {
                break;
            };
            if let Some(p) = map.get(head) {
                scan(p);
            }
        }
        for (len, map) in &self.suffix {
            let Some(tail) = value.len().checked_sub(*len).and_then(|s| value.get(s..)) else {
                break;
            };
            if let Some(p) = map.get(tail) {
                scan(p);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty() && self.suffix.is_empty()
    }
}

/// The candidate index of one action on one chain.
#[derive(Debug, Clone, Default)]
pub(super) struct RuleIndex {
    /// Rules without an indexable necessary condition.
    residual: Postings,
    path: StrIndex,
    peer: StrIndex,
    namespace: KeyMap,
    headers: Vec<(Box<str>, StrIndex)>,
    port: FastMap<u16, Postings>,
    method: StrIndex,
}

/// Builder: posting lists per key, filled in ascending position order.
#[derive(Default)]
struct Lists {
    residual: Vec<usize>,
    keys: FastMap<Key, Vec<usize>>,
}

impl RuleIndex {
    /// Indexes `rules`, given in Envoy order; the position of a rule in `rules` is what
    /// [`RuleIndex::first_match`] reports. `None` entries are never candidates.
    pub(super) fn build<'a>(
        rules: impl IntoIterator<Item = Option<(&'a CompiledRule, &'a AuthorizationPolicy)>>,
    ) -> Self {
        let options: Vec<Option<Vec<Vec<Key>>>> = rules
            .into_iter()
            .map(|entry| {
                entry.map(|(rule, policy)| {
                    rule_options(rule, &NamespaceValues::of_rule(policy, rule.index))
                })
            })
            .collect();
        // How many rules could be filed under each key: a key shared by many rules selects
        // poorly (e.g. `methods: [GET]`).
        let mut frequency: FastMap<&Key, usize> = FastMap::default();
        for rule_options in options.iter().flatten() {
            let mut keys: Vec<&Key> = rule_options.iter().flatten().collect();
            keys.sort_by(|a, b| {
                (&a.dim, a.form as u8, &a.value).cmp(&(&b.dim, b.form as u8, &b.value))
            });
            keys.dedup();
            for key in keys {
                *frequency.entry(key).or_default() += 1;
            }
        }
        let mut lists = Lists::default();
        for (position, rule_options) in options.iter().enumerate() {
            let Some(rule_options) = rule_options else {
                continue;
            };
            let best = rule_options.iter().min_by_key(|keys| {
                let cost: usize = keys
                    .iter()
                    .map(|k| frequency.get(k).copied().unwrap_or_default())
                    .sum();
                (cost, keys.first().map(|k| k.dim.clone()))
            });
            match best {
                Some(keys) => {
                    for key in keys {
                        let list = lists.keys.entry(key.clone()).or_default();
                        if list.last() != Some(&position) {
                            list.push(position);
                        }
                    }
                }
                None => lists.residual.push(position),
            }
        }
        let mut index = RuleIndex {
            residual: lists.residual.into(),
            ..RuleIndex::default()
        };
        let mut by_str: FastMap<Dim, StrBuilder> = FastMap::default();
        for (key, postings) in lists.keys {
            let postings: Postings = postings.into();
            match key.dim {
                Dim::Namespace => {
                    index.namespace.insert(key.value, postings);
                }
                Dim::Port => {
                    if let [hi, lo] = *key.value {
                        index.port.insert(u16::from_be_bytes([hi, lo]), postings);
                    }
                }
                dim => by_str
                    .entry(dim)
                    .or_default()
                    .add(key.form, key.value, postings),
            }
        }
        let mut headers = Vec::new();
        for (dim, builder) in by_str {
            let built = builder.finish();
            match dim {
                Dim::Path => index.path = built,
                Dim::Peer => index.peer = built,
                Dim::Method => index.method = built,
                Dim::Header(name) => headers.push((name, built)),
                Dim::Namespace | Dim::Port => {}
            }
        }
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        index.headers = headers;
        index
    }

    /// The smallest position whose rule is a candidate for `a` and for which `matches` holds,
    /// i.e. the first match in Envoy order.
    pub(super) fn first_match(
        &self,
        a: &Attributes<'_>,
        matches: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut best = usize::MAX;
        let mut scan = |postings: &[usize]| {
            for &position in postings {
                if position >= best {
                    break;
                }
                if matches(position) {
                    best = position;
                    break;
                }
            }
        };
        scan(&self.residual);
        if let Some(peer) = a.peer {
            if !self.peer.is_empty() {
                self.peer.probe(peer.as_bytes(), &mut scan);
            }
            if !self.namespace.is_empty() {
                for namespace in peer_namespaces(peer.as_bytes()) {
                    if let Some(p) = self.namespace.get(namespace) {
                        scan(p);
                    }
                }
            }
        }
        if let Some(http) = &a.http {
            if !self.path.is_empty() {
                self.path.probe(http.url_path().as_bytes(), &mut scan);
            }
            if !self.method.is_empty() {
                self.method.probe(http.method.as_bytes(), &mut scan);
            }
            for (name, index) in &self.headers {
                for line in http.header_values(name) {
                    index.probe(line.trim().as_bytes(), &mut scan);
                }
            }
        }
        if let Some(p) = self.port.get(&a.dst_port) {
            scan(p);
        }
        (best != usize::MAX).then_some(best)
    }
}

#[derive(Default)]
struct StrBuilder {
    exact: KeyMap,
    prefix: FastMap<usize, KeyMap>,
    suffix: FastMap<usize, KeyMap>,
}

impl StrBuilder {
    fn add(&mut self, form: Form, value: Box<[u8]>, postings: Postings) {
        let len = value.len();
        let map = match form {
            Form::Exact => &mut self.exact,
            Form::Prefix => self.prefix.entry(len).or_default(),
            Form::Suffix => self.suffix.entry(len).or_default(),
        };
        map.insert(value, postings);
    }

    fn finish(self) -> StrIndex {
        let by_len = |m: FastMap<usize, KeyMap>| {
            let mut v: Vec<_> = m.into_iter().collect();
            v.sort_by_key(|(len, _)| *len);
            v
        };
        StrIndex {
            exact: self.exact,
            prefix: by_len(self.prefix),
            suffix: by_len(self.suffix),
        }
    }
}

/// Every `<v>` such that the SAN contains `/ns/<v>/` with no `/` in `<v>`: the values a
/// `namespaces` glob `.*/ns/<v>/.*` can match (overlapping occurrences included).
fn peer_namespaces(peer: &[u8]) -> impl Iterator<Item = &[u8]> {
    const MARKER: &[u8] = b"/ns/";
    (0..peer.len()).filter_map(move |at| {
        let rest = peer.get(at..)?.strip_prefix(MARKER)?;
        let end = rest.iter().position(|&b| b == b'/')?;
        rest.get(..end)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_namespaces_finds_every_segment() {
        let found: Vec<&[u8]> = peer_namespaces(b"spiffe://td/ns/ns/x/sa/y/ns/z").collect();
        assert_eq!(found, vec![&b"ns"[..], &b"x"[..]]);
        assert_eq!(peer_namespaces(b"spiffe://td/ns/a").count(), 0);
    }

    #[test]
    fn namespace_key_is_equivalent_to_the_glob() {
        for (value, peer) in [
            ("foo", "spiffe://cluster.local/ns/foo/sa/bar"),
            ("foo", "spiffe://cluster.local/ns/foobar/sa/bar"),
            ("foo", "spiffe://cluster.local/ns/x/ns/foo/sa/bar"),
            ("sa", "spiffe://cluster.local/ns/ns/sa/sa/"),
            ("foo", "spiffe://cluster.local/ns/foo"),
        ] {
            let glob = namespace_glob(value);
            let via_key = peer_namespaces(peer.as_bytes()).any(|v| v == value.as_bytes());
            assert_eq!(glob.matches(peer), via_key, "{value} {peer}");
        }
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }

        /// 0 to 2 values, or none at all.
        fn values(&mut self, from: &[&str]) -> Option<serde_json::Value> {
            match self.below(4) {
                0 => None,
                n => Some((0..n - 1).map(|_| self.pick(from)).collect()),
            }
        }
    }

    const PATHS: &[&str] = &[
        "/a", "/a/b", "/a/*", "/ab*", "*.json", "*/b", "/*", "*", "/a/{*}", "/x/b",
    ];
    const METHODS: &[&str] = &["GET", "POST", "G*", "*T", "*"];
    const PRINCIPALS: &[&str] = &[
        "cluster.local/ns/a/sa/x",
        "cluster.local/ns/a/*",
        "*/sa/x",
        "*",
        "cluster.local/ns/b/sa/y",
        "td/ns/a/ns/b/sa/x",
    ];
    const NAMESPACES: &[&str] = &["a", "b", "a*", "*", "n/s", "ab"];
    const PORTS: &[&str] = &["80", "8080"];
    const HEADER_VALUES: &[&str] = &["v", "v*", "*1", "*", "w"];

    fn object(fields: Vec<(&str, Option<serde_json::Value>)>) -> serde_json::Value {
        serde_json::Value::Object(
            fields
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                .collect(),
        )
    }

    fn random_rule(rng: &mut Rng) -> serde_json::Value {
        let from: Vec<serde_json::Value> = (0..rng.below(3))
            .map(|_| {
                serde_json::json!({ "source": object(vec![
                    ("principals", rng.values(PRINCIPALS)),
                    ("notPrincipals", rng.values(PRINCIPALS)),
                    ("namespaces", rng.values(NAMESPACES)),
                    ("notNamespaces", rng.values(NAMESPACES)),
                ]) })
            })
            .collect();
        let to: Vec<serde_json::Value> = (0..rng.below(3))
            .map(|_| {
                serde_json::json!({ "operation": object(vec![
                    ("paths", rng.values(PATHS)),
                    ("notPaths", rng.values(PATHS)),
                    ("methods", rng.values(METHODS)),
                    ("ports", rng.values(PORTS)),
                ]) })
            })
            .collect();
        let when: Vec<serde_json::Value> = (0..rng.below(3))
            .filter_map(|_| {
                let (key, pool) = match rng.below(4) {
                    0 => ("request.headers[x-t]", HEADER_VALUES),
                    1 => ("source.namespace", NAMESPACES),
                    2 => ("destination.port", PORTS),
                    _ => ("source.principal", PRINCIPALS),
                };
                let values = rng.values(pool);
                let not_values = rng.values(pool);
                (values.is_some() || not_values.is_some()).then(|| {
                    object(vec![
                        ("key", Some(key.into())),
                        ("values", values),
                        ("notValues", not_values),
                    ])
                })
            })
            .collect();
        object(vec![
            ("from", (!from.is_empty()).then(|| from.into())),
            ("to", (!to.is_empty()).then(|| to.into())),
            ("when", (!when.is_empty()).then(|| when.into())),
        ])
    }

    /// The index finds the same first match as a scan of every rule in order.
    #[test]
    fn same_first_match_as_a_full_scan() {
        use std::net::{IpAddr, Ipv4Addr};
        use std::sync::Arc;

        use crate::attributes::HttpAttributes;
        use crate::authz::compile::compile_policy;
        use crate::authz::identity::TrustDomainBundle;

        let bundle = TrustDomainBundle::new("cluster.local", &[]);
        let peers = [
            None,
            Some("spiffe://cluster.local/ns/a/sa/x"),
            Some("spiffe://cluster.local/ns/b/sa/y"),
            Some("spiffe://td/ns/a/ns/b/sa/x"),
            Some("spiffe://cluster.local/ns/ab/sa/x"),
            Some("spiffe://cluster.local/ns/n/s/sa/x"),
        ];
        let paths = [
            "/a",
            "/a/b",
            "/ab/c.json",
            "/x/b",
            "/",
            "/a?x=1",
            "/a/b?q=.json",
        ];
        let header_sets: Vec<Vec<(String, String)>> = [
            vec![],
            vec![("x-t", " v ")],
            vec![("x-t", "v1"), ("x-t", "w")],
            vec![("x-t", "")],
        ]
        .into_iter()
        .map(|h| {
            h.into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect()
        })
        .collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut matched = 0;
        for _ in 0..300 {
            let policies: Vec<_> = (0..1 + rng.below(12))
                .map(|i| {
                    let rules: Vec<serde_json::Value> = (0..1 + rng.below(3))
                        .map(|_| random_rule(&mut rng))
                        .collect();
                    let action = if rng.below(2) == 0 { "ALLOW" } else { "DENY" };
                    let policy: AuthorizationPolicy = serde_json::from_value(serde_json::json!({
                        "apiVersion": "security.istio.io/v1",
                        "kind": "AuthorizationPolicy",
                        "metadata": { "name": format!("p{i}"), "namespace": "a" },
                        "spec": { "action": action, "rules": rules },
                    }))
                    .unwrap();
                    compile_policy(Arc::new(policy), &bundle)
                })
                .collect();
            for is_http in [true, false] {
                let rules: Vec<(&CompiledRule, &AuthorizationPolicy)> = policies
                    .iter()
                    .flat_map(|p| p.chain(is_http).rules.iter().map(|r| (r, &*p.source)))
                    .collect();
                let index = RuleIndex::build(rules.iter().map(|&e| Some(e)));
                for _ in 0..40 {
                    let headers = &crate::attributes::borrow_headers(
                        &header_sets[rng.below(header_sets.len())],
                    );
                    let a = Attributes {
                        src_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                        remote_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                        dst_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                        dst_port: [80, 8080, 9090][rng.below(3)],
                        peer: peers[rng.below(peers.len())],
                        sni: "",
                        http: is_http.then(|| HttpAttributes {
                            method: ["GET", "POST", "PUT"][rng.below(3)],
                            authority: "example.com",
                            path: paths[rng.below(paths.len())],
                            headers,
                            jwt: None,
                        }),
                    };
                    let expected = rules.iter().position(|(r, _)| r.matches(&a));
                    let found = index.first_match(&a, |p| rules[p].0.matches(&a));
                    assert_eq!(found, expected, "{a:?}\n{rules:#?}");
                    matched += usize::from(expected.is_some());
                }
            }
        }
        // The generator must exercise both outcomes.
        assert!(matched > 1000, "{matched}");
    }
}
