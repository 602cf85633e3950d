//! Truth tables of authorization.md §3, §4 and §6, driven through real YAML.

use std::collections::BTreeMap;
use std::net::IpAddr;

use meshward_api::{Resource, load_text};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use test_case::test_case;

use super::{AuthzIndex, AuthzReason, WorkloadAuthz, WorkloadSelectorView};
use crate::attributes::{Attributes, HttpAttributes};
use crate::mesh::MeshSettings;

const FOO: &str = "spiffe://cluster.local/ns/foo/sa/sleep";
const BAR: &str = "spiffe://cluster.local/ns/bar/sa/sleep";

fn policies(yaml: &str) -> WorkloadAuthz {
    policies_with(yaml, &MeshSettings::default())
}

fn policies_with(yaml: &str, mesh: &MeshSettings) -> WorkloadAuthz {
    let report = load_text(yaml, "test.yaml", None);
    let errors: Vec<String> = report.errors().map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let aps: Vec<_> = report
        .resources
        .iter()
        .filter_map(|r| match &r.resource {
            Resource::AuthorizationPolicy(p) => Some(p),
            _ => None,
        })
        .collect();
    let index = AuthzIndex::build(aps, mesh);
    let labels = BTreeMap::from([("app".to_owned(), "httpbin".to_owned())]);
    index.for_workload(WorkloadSelectorView {
        namespace: "foo",
        labels: &labels,
    })
}

fn allow_rule(rule: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: foo}}\nspec:\n  rules:\n  - {rule}\n"
    )
}

struct Req {
    peer: Option<&'static str>,
    jwt: Option<Map<String, Value>>,
    headers: Vec<(String, String)>,
    method: &'static str,
    path: &'static str,
    http: bool,
    port: u16,
}

impl Default for Req {
    fn default() -> Self {
        Req {
            peer: None,
            jwt: None,
            headers: Vec::new(),
            method: "GET",
            path: "/",
            http: true,
            port: 8080,
        }
    }
}

fn decide(authz: &WorkloadAuthz, req: &Req) -> (bool, AuthzReason) {
    let ip: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let headers = crate::attributes::borrow_headers(&req.headers);
    let attrs = Attributes {
        src_ip: ip,
        remote_ip: ip,
        dst_ip: ip,
        dst_port: req.port,
        peer: req.peer,
        sni: "",
        http: req.http.then(|| HttpAttributes {
            method: req.method,
            authority: "httpbin",
            path: req.path,
            headers: &headers,
            jwt: req.jwt.as_ref(),
        }),
    };
    let d = authz.evaluate(&attrs);
    (d.allowed, d.reason)
}

fn allowed(rule: &str, req: &Req) -> bool {
    decide(&policies(&allow_rule(rule)), req).0
}

// authorization.md §4.1 truth table, source fields × (mTLS from foo, mTLS from bar, plaintext).
#[test_case("{from: [{source: {namespaces: [foo]}}]}", true, false, false; "namespaces foo")]
#[test_case("{from: [{source: {notNamespaces: [foo]}}]}", false, true, true; "notNamespaces foo matches plaintext")]
#[test_case("{from: [{source: {namespaces: ['*']}}]}", true, true, false; "namespaces star needs identity")]
#[test_case("{from: [{source: {notNamespaces: ['*']}}]}", false, false, true; "notNamespaces star is plaintext only")]
#[test_case("{from: [{source: {principals: ['*']}}]}", true, true, false; "principals star")]
#[test_case("{from: [{source: {notPrincipals: ['*']}}]}", false, false, true; "notPrincipals star")]
#[test_case("{when: [{key: source.namespace, notValues: [foo]}]}", false, true, true; "source namespace notValues")]
fn source_truth_table(rule: &str, from_foo: bool, from_bar: bool, plaintext: bool) {
    let with_peer = |peer| Req {
        peer,
        ..Req::default()
    };
    assert_eq!(
        allowed(rule, &with_peer(Some(FOO))),
        from_foo,
        "mTLS from foo"
    );
    assert_eq!(
        allowed(rule, &with_peer(Some(BAR))),
        from_bar,
        "mTLS from bar"
    );
    assert_eq!(allowed(rule, &with_peer(None)), plaintext, "plaintext");
}

fn jwt(iss: &str, sub: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("iss".into(), json!(iss));
    m.insert("sub".into(), json!(sub));
    m.insert("groups".into(), json!(["g1", "g2"]));
    m.insert("admin".into(), json!(true));
    m
}

// §4.1 JWT table: (valid JWT iss=i, sub=s) × (no JWT).
#[test_case("{from: [{source: {requestPrincipals: [i/s]}}]}", true, false; "requestPrincipals exact")]
#[test_case("{from: [{source: {requestPrincipals: ['*']}}]}", true, false; "requestPrincipals star")]
#[test_case("{from: [{source: {notRequestPrincipals: ['*']}}]}", false, true; "notRequestPrincipals star")]
#[test_case("{from: [{source: {notRequestPrincipals: [i/s]}}]}", false, true; "notRequestPrincipals exact")]
#[test_case("{when: [{key: 'request.auth.claims[groups]', notValues: [g1]}]}", false, true; "claims notValues")]
#[test_case("{when: [{key: 'request.auth.claims[groups]', values: [g2]}]}", true, false; "list claim any element")]
#[test_case("{when: [{key: 'request.auth.claims[admin]', values: ['true']}]}", false, false; "boolean claim never matches")]
fn jwt_truth_table(rule: &str, with_jwt: bool, without: bool) {
    let r = Req {
        jwt: Some(jwt("i", "s")),
        ..Req::default()
    };
    assert_eq!(allowed(rule, &r), with_jwt, "valid JWT");
    assert_eq!(allowed(rule, &Req::default()), without, "no JWT");
}

#[test_case("{to: [{operation: {paths: ['/deny*'], notPaths: [/deny/allow]}}]}", "/deny/x", true; "paths and notPaths are anded")]
#[test_case("{to: [{operation: {paths: ['/deny*'], notPaths: [/deny/allow]}}]}", "/deny/allow", false; "notPaths excludes")]
#[test_case("{to: [{operation: {paths: [/allow]}}]}", "/allow?param=value", true; "query is not part of the path")]
#[test_case("{to: [{operation: {paths: [/admin]}}]}", "/ADMIN", false; "paths are case sensitive")]
#[test_case("{to: [{operation: {paths: ['*']}}]}", "/", true; "path presence")]
#[test_case("{to: [{operation: {paths: ['/allow/admin/{**}']}}]}", "/allow/admin/x/y", true; "template")]
#[test_case("{to: [{operation: {paths: ['/allow/admin/{**}']}}]}", "/allow/admin", false; "template needs the slash")]
fn path_matching(rule: &str, path: &'static str, expected: bool) {
    let r = Req {
        path,
        ..Req::default()
    };
    assert_eq!(allowed(rule, &r), expected);
}

#[test]
fn missing_header_matches_not_values_only() {
    let rule = "{when: [{key: 'request.headers[x-token]', notValues: [bad]}]}";
    assert!(
        allowed(rule, &Req::default()),
        "absent header satisfies notValues"
    );
    let present = "{when: [{key: 'request.headers[x-token]', values: ['*']}]}";
    assert!(
        !allowed(present, &Req::default()),
        "presence needs the header"
    );
    let r = Req {
        headers: vec![("x-token".into(), String::new())],
        ..Req::default()
    };
    assert!(allowed(present, &r), "`*` accepts a present empty header");
}

#[test]
fn repeated_header_matches_any_line() {
    let rule = "{when: [{key: 'request.headers[x-v]', values: [b]}]}";
    let r = Req {
        headers: vec![("x-v".into(), "a".into()), ("x-v".into(), "b".into())],
        ..Req::default()
    };
    assert!(allowed(rule, &r));
}

#[test]
fn quoted_header_name_never_matches() {
    let rule = "{when: [{key: 'request.headers[\"x-api\"]', values: [v1]}]}";
    let r = Req {
        headers: vec![("x-api".into(), "v1".into())],
        ..Req::default()
    };
    assert!(!allowed(rule, &r));
}

const DENY_ALL: &str = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: foo}\nspec: {action: DENY, rules: [{}]}\n";
const ALLOW_NOTHING: &str = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: foo}\nspec: {}\n";
const ALLOW_ALL: &str = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-all, namespace: foo}\nspec: {rules: [{}]}\n";

// §3 evaluation order and §2.1 degenerate specs.
#[test]
fn precedence() {
    assert!(decide(&policies(""), &Req::default()).0, "no policy: allow");
    assert_eq!(
        decide(&policies(ALLOW_NOTHING), &Req::default()),
        (false, AuthzReason::NoAllowMatched),
        "spec: {{}} denies everything"
    );
    let both = format!("{ALLOW_NOTHING}{ALLOW_ALL}");
    assert!(
        decide(&policies(&both), &Req::default()).0,
        "any ALLOW match allows"
    );
    let deny = format!("{DENY_ALL}{ALLOW_ALL}");
    let (ok, reason) = decide(&policies(&deny), &Req::default());
    assert!(!ok, "DENY is evaluated before ALLOW");
    assert!(
        matches!(reason, AuthzReason::DeniedBy(r) if &*r.policy.name == "deny-all" && r.rule == 0)
    );
}

#[test]
fn dry_run_never_decides() {
    let dry = DENY_ALL.replace(
        "namespace: foo}",
        "namespace: foo, annotations: {istio.io/dry-run: \"true\"}}",
    );
    let authz = policies(&dry);
    let ip: IpAddr = [10, 0, 0, 1].into();
    let attrs = Attributes {
        src_ip: ip,
        remote_ip: ip,
        dst_ip: ip,
        dst_port: 80,
        peer: None,
        sni: "",
        http: None,
    };
    let d = authz.evaluate(&attrs);
    assert!(d.allowed);
    assert_eq!(d.shadow.len(), 1);
    assert!(
        !d.shadow.first().is_some_and(|s| s.allowed),
        "the shadow DENY engine denies"
    );
}

#[test]
fn deciding_rule_follows_envoy_policy_name_order() {
    // Envoy reports the first matching policy in name order: `rule[10]` sorts before `rule[2]`.
    let rules: String = (0..11).map(|_| "  - {}\n").collect();
    let yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: a, namespace: foo}}\nspec:\n  action: DENY\n  rules:\n{rules}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: b, namespace: foo}}\nspec: {{action: DENY, rules: [{{}}]}}\n"
    );
    let (_, reason) = decide(&policies(&yaml), &Req::default());
    assert!(matches!(reason, AuthzReason::DeniedBy(r) if &*r.policy.name == "a" && r.rule == 0));
}

// §6: HTTP-only fields on a TCP chain.
#[test]
fn tcp_chain_drops_allow_rules_and_widens_deny_rules() {
    let tcp = Req {
        http: false,
        port: 9000,
        peer: Some(FOO),
        ..Req::default()
    };
    let allow = allow_rule("{to: [{operation: {methods: [GET], ports: ['9000']}}]}");
    assert_eq!(
        decide(&policies(&allow), &tcp),
        (false, AuthzReason::NoAllowMatched)
    );
    let deny = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: d, namespace: foo}\nspec:\n  action: DENY\n  rules:\n  - to: [{operation: {methods: [GET], ports: ['9001']}}]\n";
    assert!(
        decide(&policies(deny), &tcp).0,
        "port 9000 is outside the widened rule"
    );
    let on_9001 = Req { port: 9001, ..tcp };
    assert!(
        !decide(&policies(deny), &on_9001).0,
        "methods dropped: every connection to 9001 is denied"
    );
}

#[test]
fn trust_domain_aliases_rewrite_principals() {
    let mesh = MeshSettings {
        trust_domain: "td1".into(),
        trust_domain_aliases: vec!["foobar".into()],
        ..MeshSettings::default()
    };
    let authz = policies_with(
        &allow_rule("{from: [{source: {principals: [cluster.local/ns/foo/sa/sleep]}}]}"),
        &mesh,
    );
    let from = |peer| Req {
        peer: Some(peer),
        ..Req::default()
    };
    assert!(decide(&authz, &from("spiffe://td1/ns/foo/sa/sleep")).0);
    assert!(decide(&authz, &from("spiffe://foobar/ns/foo/sa/sleep")).0);
    assert!(
        !decide(&authz, &from(FOO)).0,
        "cluster.local itself is replaced"
    );
}

fn rule_yaml(action: &str, ns_value: &str, method: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p-{action}-{ns_value}-{method}, namespace: foo}}\nspec:\n  action: {action}\n  rules:\n  - from: [{{source: {{namespaces: [{ns_value}]}}}}]\n    to: [{{operation: {{methods: [{method}]}}}}]\n"
    )
}

proptest! {
    /// "if any policy in D matches -> DENY": whatever ALLOW policies exist, a matching DENY wins;
    /// and without DENY policies the result is allow iff no ALLOW exists or one matches.
    #[test]
    fn deny_always_wins(
        specs in prop::collection::vec((prop::bool::ANY, prop::sample::select(vec!["foo", "bar", "'*'"]), prop::sample::select(vec!["GET", "POST", "'*'"])), 0..8),
        from_foo in prop::bool::ANY,
        get in prop::bool::ANY,
    ) {
        let yaml: String = specs
            .iter()
            .map(|(deny, ns, m)| rule_yaml(if *deny { "DENY" } else { "ALLOW" }, ns, m))
            .collect();
        let req = Req {
            peer: Some(if from_foo { FOO } else { BAR }),
            method: if get { "GET" } else { "POST" },
            ..Req::default()
        };
        let ns = if from_foo { "foo" } else { "bar" };
        let method = req.method;
        let matches = |(_, n, m): &(bool, &str, &str)| (*n == ns || *n == "'*'") && (*m == method || *m == "'*'");
        let deny_matches = specs.iter().any(|s| s.0 && matches(s));
        let allows = specs.iter().filter(|s| !s.0).count();
        let allow_matches = specs.iter().any(|s| !s.0 && matches(s));
        let (ok, _) = decide(&policies(&yaml), &req);
        prop_assert_eq!(ok, !deny_matches && (allows == 0 || allow_matches));
    }
}
