//! AuthorizationPolicy rules (authorization.md §8): each fires on the bad form, on the line of
//! the offending field (marked `# <-`), and stays quiet on the good form.

use test_case::test_case;

use crate::validate::common::testutil::{
    assert_clean, assert_error, assert_no_error, assert_warning, diagnostics,
};

const HEAD: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: p
  namespace: foo";

/// A policy with `body` after `spec:`.
fn policy(body: &str) -> String {
    format!("{HEAD}\nspec:{body}")
}

/// A policy with `annotations` and `body`.
fn annotated(annotation: &str, body: &str) -> String {
    format!("{HEAD}\n  annotations:\n    istio.io/dry-run: {annotation} # <-\nspec:{body}")
}

// === rule 1: dry-run ===

#[test_case("\"yes\"", "\n  action: DENY\n  rules: [{}]", "with invalid value `yes`"; "not a go bool")]
#[test_case("\"true\"", "\n  action: AUDIT\n  rules: [{}]", "only supports action ALLOW/DENY, found action AUDIT"; "audit")]
#[test_case(
    "\"true\"",
    "\n  action: CUSTOM\n  provider: {name: ext}\n  rules: [{}]",
    "only supports action ALLOW/DENY, found action CUSTOM";
    "custom"
)]
fn dry_run_refused(value: &str, body: &str, needle: &str) {
    assert_error(&annotated(value, body), needle);
}

#[test_case("\"true\"", "\n  action: DENY\n  rules: [{}]"; "deny true")]
#[test_case("\"0\"", " {}"; "allow zero")]
#[test_case("\"False\"", "\n  action: ALLOW"; "allow capitalised")]
fn dry_run_accepted(value: &str, body: &str) {
    assert_clean(&annotated(value, body));
}

#[test]
fn selector_without_labels_warns() {
    assert_warning(
        &policy("\n  selector: {} # <-"),
        "workload selector specified without labels",
    );
}

// === rules 4 and 5: actions and providers ===

#[test_case("\n  action: CUSTOM # <-\n  provider: {name: ext}", "CUSTOM action without `rules`"; "custom without rules")]
#[test_case(
    "\n  action: CUSTOM\n  provider: {name: ext}\n  rules: [] # <-",
    "CUSTOM action without `rules`";
    "custom with empty rules"
)]
#[test_case(
    "\n  action: CUSTOM\n  provider:\n    name: \"\" # <-\n  rules: [{}]",
    "`provider.name` must not be empty";
    "custom without provider name"
)]
#[test_case(
    "\n  action: CUSTOM # <-\n  rules: [{}]",
    "`provider.name` must not be empty";
    "custom without provider"
)]
#[test_case(
    "\n  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - from:\n    - source:\n        principals: [a] # <-",
    "`principals` is currently not supported with CUSTOM action";
    "custom with principals"
)]
#[test_case(
    "\n  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - from:\n    - source:\n        notNamespaces: [a] # <-",
    "`notNamespaces` is currently not supported with CUSTOM action";
    "custom with not namespaces"
)]
#[test_case(
    "\n  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - when:\n    - key: request.auth.claims[iss] # <-\n      values: [x]",
    "`request.auth.claims[iss]` is currently not supported with CUSTOM action";
    "custom with jwt condition"
)]
#[test_case(
    "\n  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - when:\n    - key: source.principal # <-\n      values: [x]",
    "`source.principal` is currently not supported with CUSTOM action";
    "custom with principal condition"
)]
#[test_case(
    "\n  action: ALLOW\n  provider: {name: ext} # <-\n  rules: [{}]",
    "`provider` must not be with non CUSTOM action, found ALLOW";
    "provider with allow"
)]
#[test_case(
    "\n  provider: {name: ext} # <-",
    "`provider` must not be with non CUSTOM action, found ALLOW";
    "provider with default action"
)]
#[test_case("\n  action: DENY # <-", "DENY action without `rules` is meaningless"; "deny without rules")]
#[test_case("\n  action: DENY\n  rules: [] # <-", "DENY action without `rules` is meaningless"; "deny with empty rules")]
fn action_rules(body: &str, needle: &str) {
    assert_error(&policy(body), needle);
}

#[test_case(
    "\n  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - to:\n    - operation: {paths: [/admin]}\n    when:\n    - {key: \"request.headers[x-user]\", values: [a]}\n    from:\n    - source: {ipBlocks: [10.0.0.0/8]}";
    "custom with supported fields"
)]
#[test_case("\n  action: DENY\n  rules: [{}]"; "deny everything")]
#[test_case("\n  action: AUDIT"; "audit without rules")]
#[test_case(" {}"; "allow nothing")]
fn action_rules_accepted(body: &str) {
    assert_clean(&policy(body));
}

// === rule 6: null and empty structure ===

#[test_case("\n  rules:\n  - ~ # <-", "`rule` must not be null"; "null rule")]
#[test_case("\n  rules:\n  - from: [] # <-", "`from` must not be empty"; "empty from")]
#[test_case("\n  rules:\n  - to: [] # <-", "`to` must not be empty"; "empty to")]
#[test_case("\n  rules:\n  - from:\n    - ~ # <-", "`from` must not be null"; "null from item")]
#[test_case("\n  rules:\n  - to:\n    - ~ # <-", "`to` must not be null"; "null to item")]
#[test_case("\n  rules:\n  - from:\n    - {} # <-", "`from.source` must not be null"; "missing source")]
#[test_case("\n  rules:\n  - from:\n    - source: ~ # <-", "`from.source` must not be null"; "null source")]
#[test_case("\n  rules:\n  - to:\n    - operation: ~ # <-", "`to.operation` must not be null"; "null operation")]
#[test_case("\n  rules:\n  - from:\n    - source: {} # <-", "`from.source` must not be empty"; "empty source")]
#[test_case(
    "\n  rules:\n  - from:\n    - source: # <-\n        principals: []",
    "`from.source` must not be empty";
    "source with only empty lists"
)]
#[test_case("\n  rules:\n  - to:\n    - operation: {} # <-", "`to.operation` must not be empty"; "empty operation")]
fn structure(body: &str, needle: &str) {
    assert_error(&policy(body), needle);
}

// === rule 7: source values ===

#[test_case("principals", "\"\"", "empty value not allowed, found in `principals`"; "empty principal")]
#[test_case("notPrincipals", "\"\"", "empty value not allowed, found in `notPrincipals`"; "empty not principal")]
#[test_case("requestPrincipals", "\"\"", "empty value not allowed"; "empty request principal")]
#[test_case("notRequestPrincipals", "\"\"", "empty value not allowed"; "empty not request principal")]
#[test_case("namespaces", "\"\"", "empty value not allowed, found in `namespaces`"; "empty namespace")]
#[test_case("notNamespaces", "\"\"", "empty value not allowed"; "empty not namespace")]
#[test_case("ipBlocks", "\"\"", "empty value not allowed, found in `ipBlocks`"; "empty ip block")]
#[test_case("ipBlocks", "10.0.0.0/33", "bad CIDR range `10.0.0.0/33`"; "bad cidr")]
#[test_case("notIpBlocks", "1.2.3", "bad IP address `1.2.3`"; "bad ip")]
#[test_case("remoteIpBlocks", "\"*\"", "bad IP address `*`"; "wildcard remote ip")]
#[test_case("notRemoteIpBlocks", "a.b.c.d/8", "bad CIDR range"; "hostname cidr")]
#[test_case("serviceAccounts", "\"*\"", "wildcard not allowed in service account"; "wildcard service account")]
#[test_case("serviceAccounts", "a/b/c", "expected format 'serviceAccount' or 'namespace/serviceAccount'"; "two slashes")]
#[test_case("serviceAccounts", "/sa", "found empty namespace"; "empty namespace part")]
#[test_case("notServiceAccounts", "ns/", "found empty serviceAccount"; "empty sa part")]
#[test_case("serviceAccounts", "\"\"", "empty value not allowed, found in `serviceAccounts`"; "empty service account")]
#[test_case("trustDomains", "\"\"", "empty value not allowed, found in `trustDomains`"; "empty trust domain")]
#[test_case("trustDomains", "a*b", "wildcard is only allowed at the start or end"; "inner wildcard td")]
#[test_case("notTrustDomains", "\"*a*\"", "at most one wildcard is allowed"; "two wildcards td")]
#[test_case("trustDomains", "a/b", "trust domain must not contain '/'"; "slash td")]
fn source_values(field: &str, value: &str, needle: &str) {
    let body =
        format!("\n  rules:\n  - from:\n    - source:\n        {field}:\n        - {value} # <-");
    assert_error(&policy(&body), needle);
}

#[test]
fn long_service_account_refused() {
    let long = "a".repeat(321);
    let body = format!(
        "\n  rules:\n  - from:\n    - source:\n        serviceAccounts:\n        - {long} # <-"
    );
    assert_error(&policy(&body), "value cannot exceed 320 characters");
}

#[test]
fn too_many_service_accounts_refused() {
    let items: Vec<String> = (0..17).map(|i| format!("sa{i}")).collect();
    let body = format!(
        "\n  rules:\n  - from:\n    - source:\n        serviceAccounts: [{}] # <-",
        items.join(", ")
    );
    assert_error(&policy(&body), "may not have more than 16 values");
}

#[test_case("namespaces: [bar]\n        serviceAccounts: [bar/sa] # <-", "`serviceAccounts` is used with `namespaces`"; "with namespaces")]
#[test_case("notServiceAccounts: [sa] # <-\n        principals: [x]", "`notServiceAccounts` is used with `principals`"; "not with principals")]
#[test_case("serviceAccounts: [sa] # <-\n        notNamespaces: []", "cannot set serviceAccounts with namespaces or principals"; "present empty list counts")]
fn service_accounts_exclusive(fields: &str, needle: &str) {
    let body = format!("\n  rules:\n  - from:\n    - source:\n        {fields}");
    assert_error(&policy(&body), needle);
}

#[test]
fn valid_sources_accepted() {
    assert_clean(&policy(
        r#"
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/a/sa/b", "*", "spiffe://x", "a/*/b"]
        notPrincipals: ["*/ns/x/*"]
        requestPrincipals: ["iss/sub", "*"]
        namespaces: ["ns.*.prod", "*"]
        ipBlocks: [10.0.0.1, 10.0.0.0/8, "2001:db8::/32", "fe80::1%eth0"]
        notRemoteIpBlocks: [192.168.0.0/16]
    - source:
        serviceAccounts: [sa, ns/sa]
        notServiceAccounts: [other/sa]
        trustDomains: ["*", "*.local", "cluster.*", td.example]
        notTrustDomains: [old.example]
"#,
    ));
}

// === rule 8: operation values and path templates ===

#[test_case("ports", "abc", "bad port `abc`"; "port not a number")]
#[test_case("ports", "\"65536\"", "bad port `65536`"; "port too big")]
#[test_case("notPorts", "\"-1\"", "bad port `-1`"; "negative port")]
#[test_case("ports", "\"\"", "empty value not allowed, found in `ports`"; "empty port")]
#[test_case("methods", "\"\"", "empty value not allowed, found in `methods`"; "empty method")]
#[test_case("notMethods", "\"\"", "empty value not allowed"; "empty not method")]
#[test_case("hosts", "\"\"", "empty value not allowed, found in `hosts`"; "empty host")]
#[test_case("notHosts", "\"\"", "empty value not allowed"; "empty not host")]
#[test_case("paths", "\"\"", "empty value not allowed, found in `paths`"; "empty path")]
#[test_case("notPaths", "\"\"", "empty value not allowed"; "empty not path")]
#[test_case("paths", "/a/{*}x", "has `{` or `}` outside"; "text with operator")]
#[test_case("paths", "/a/{**}/{*}", "`{**}` must be the last operator"; "operator after match any")]
#[test_case("notPaths", "/a/{**}/b/{**}", "`{**}` must be the last operator"; "two match any")]
#[test_case("paths", "/a/{x}/{*}", "has `{` or `}` outside"; "unknown operator")]
#[test_case("paths", "/a/*/{*}", "may only contain"; "star literal in template")]
#[test_case("paths", "/a//{*}", "empty segment"; "double slash in template")]
#[test_case("paths", "/a{b}", "contains '{' or '}' beyond a supported path template"; "braces without template")]
fn operation_values(field: &str, value: &str, needle: &str) {
    let body =
        format!("\n  rules:\n  - to:\n    - operation:\n        {field}:\n        - {value} # <-");
    assert_error(&policy(&body), needle);
}

#[test_case("a/{*}", "must start with `/`"; "relative template")]
#[test_case("//a/{*}", "starts or ends with `//`"; "leading double slash")]
fn envoy_refused_templates_warn(value: &str, needle: &str) {
    let body =
        format!("\n  rules:\n  - to:\n    - operation:\n        paths:\n        - {value} # <-");
    assert_warning(&policy(&body), needle);
}

#[test]
fn valid_operations_accepted() {
    assert_clean(&policy(
        r#"
  rules:
  - to:
    - operation:
        hosts: ["example.com", "*.example.com", "example.com:*"]
        ports: ["80", "0", "65535", "0080"]
        notPorts: ["9000"]
        methods: [GET, "*"]
        paths: ["/a/{*}/b/{**}", "/store/{**}/cart", "/allow/admin/{**}", "/a*", "*", "*.txt", "/a/*/b"]
        notPaths: ["/healthz"]
"#,
    ));
}

// === rule 9: conditions ===

#[test_case("- values: [x] # <-", "`key` is required"; "missing key")]
#[test_case("- key: \"\" # <-\n      values: [x]", "`key` must not be empty"; "empty key")]
#[test_case("- key: source.ip # <-", "at least one of `values` or `notValues` must be set for key `source.ip`"; "no values")]
#[test_case(
    "- key: source.ip\n      values: [] # <-\n      notValues: []",
    "at least one of `values` or `notValues` must be set";
    "empty values"
)]
#[test_case("- ~ # <-", "`when` must not be null"; "null condition")]
#[test_case("- key: foo.bar # <-\n      values: [x]", "unknown attribute: foo.bar"; "unknown key")]
#[test_case("- key: source.user # <-\n      values: [x]", "unknown attribute"; "unknown source key")]
#[test_case("- key: destination.labels[app] # <-\n      values: [x]", "is replaced by the workload selector"; "destination labels")]
#[test_case("- key: destination.namespace # <-\n      values: [x]", "is replaced by the metadata.namespace"; "destination namespace")]
#[test_case("- key: destination.name # <-\n      values: [x]", "deprecated attribute destination.name"; "destination name")]
#[test_case("- key: destination.user # <-\n      values: [x]", "deprecated attribute destination.user"; "destination user")]
#[test_case("- key: request.headers # <-\n      values: [x]", "bad key `request.headers`: should have format a[b]"; "header without name")]
#[test_case("- key: request.headers[] # <-\n      values: [x]", "should have format a[b]"; "header empty name")]
#[test_case("- key: request.headers[x # <-\n      values: [x]", "should have format a[b]"; "header unclosed")]
#[test_case("- key: request.auth.claims[] # <-\n      values: [x]", "should have format a[b]"; "claim empty name")]
#[test_case("- key: request.auth.claims.iss # <-\n      values: [x]", "should have format a[b]"; "claim dotted")]
#[test_case("- key: experimental.envoy.filters.x # <-\n      values: [x]", "should have format a[b]"; "experimental without key")]
#[test_case("- key: source.ip\n      values:\n      - 10.0.0.1/40 # <-", "invalid `value` for `key` source.ip: bad CIDR range"; "source ip")]
#[test_case("- key: remote.ip\n      notValues:\n      - nope # <-", "invalid `notValue` for `key` remote.ip: bad IP address"; "remote ip")]
#[test_case("- key: destination.ip\n      values:\n      - 300.0.0.1 # <-", "bad IP address `300.0.0.1`"; "destination ip")]
#[test_case("- key: destination.port\n      values:\n      - http # <-", "invalid `value` for `key` destination.port: bad port `http`"; "destination port")]
#[test_case("- key: source.serviceAccount\n      values:\n      - a/b/c # <-", "expected format 'serviceAccount'"; "service account")]
#[test_case("- key: source.trustDomain\n      values:\n      - a*b # <-", "wildcard is only allowed at the start or end"; "trust domain")]
#[test_case("- key: connection.sni\n      values:\n      - \"\" # <-", "empty value not allowed, found in `values`"; "empty value")]
#[test_case("- key: request.auth.principal\n      values: [a]\n      notValues:\n      - \"\" # <-", "found in `notValues`"; "empty not value")]
fn conditions(condition: &str, needle: &str) {
    let body = format!("\n  rules:\n  - when:\n    {condition}");
    assert_error(&policy(&body), needle);
}

#[test]
fn too_many_condition_service_accounts_refused() {
    let items: Vec<String> = (0..17).map(|i| format!("sa{i}")).collect();
    let body = format!(
        "\n  rules:\n  - when:\n    - key: source.serviceAccount\n      values: [{}] # <-",
        items.join(", ")
    );
    assert_error(&policy(&body), "may not have more than 16 values");
}

#[test]
fn every_known_key_accepted() {
    assert_clean(&policy(
        r#"
  rules:
  - when:
    - {key: "request.headers[x-token]", values: [a, "*"]}
    - {key: "request.headers[:method]", notValues: [GET]}
    - {key: source.ip, values: [10.0.0.0/8, 10.1.2.3]}
    - {key: remote.ip, notValues: ["2001:db8::1"]}
    - {key: source.namespace, values: ["ns-*"]}
    - {key: source.principal, values: ["cluster.local/ns/a/sa/b"]}
    - {key: source.serviceAccount, values: [ns/sa, sa]}
    - {key: source.trustDomain, values: ["*.local", cluster.local]}
    - {key: request.auth.principal, values: ["iss/sub"]}
    - {key: request.auth.audiences, values: [aud]}
    - {key: request.auth.presenter, values: [azp]}
    - {key: "request.auth.claims[groups]", values: [admin]}
    - {key: "request.auth.claims[nested][key]", values: [x]}
    - {key: "request.auth.claims[\"role\"]", values: [x]}
    - {key: destination.ip, values: ["10.0.0.1"]}
    - {key: destination.port, values: ["8080"]}
    - {key: connection.sni, values: ["*.example.com"]}
    - {key: "experimental.envoy.filters.network.mysql_proxy[db.table]", values: ["[update]"]}
"#,
    ));
}

// === rule 10: DENY rules with only HTTP attributes (warning) ===

#[test_case("  - from: # <-\n    - source: {requestPrincipals: [\"*\"]}"; "from with only request principals")]
#[test_case("  - to: # <-\n    - operation: {methods: [GET]}"; "to with only methods")]
#[test_case("  - from: # <-\n    - source: {trustDomains: [td]}"; "trust domains do not count for istiod")]
#[test_case(
    "  - from: # <-\n    - source: {principals: [a]}\n    to:\n    - operation: {paths: [/x]}";
    "tcp from but http to"
)]
fn deny_http_only_warns(rule: &str) {
    let yaml = policy(&format!("\n  action: DENY\n  rules:\n{rule}"));
    assert_warning(&yaml, "will deny all traffic to TCP ports under its scope");
}

#[test_case("DENY", "  - to:\n    - operation: {methods: [GET], ports: [\"80\"]}"; "ports")]
#[test_case("DENY", "  - from:\n    - source: {principals: [a], requestPrincipals: [x]}"; "principals")]
#[test_case("DENY", "  - from:\n    - source: {notIpBlocks: [10.0.0.0/8]}"; "not ip blocks")]
#[test_case("DENY", "  - when:\n    - {key: \"request.headers[x]\", values: [a]}"; "only conditions")]
#[test_case("ALLOW", "  - to:\n    - operation: {methods: [GET]}"; "allow")]
fn deny_with_tcp_fields_quiet(action: &str, rule: &str) {
    let yaml = policy(&format!("\n  action: {action}\n  rules:\n{rule}"));
    assert_no_error(&yaml, "TCP ports");
}

// === list limits (authorization.md §8.1) ===

#[test]
fn too_many_rules_refused() {
    let rules = "  - {}\n".repeat(513);
    let yaml = policy(&format!("\n  rules: # <-\n{rules}"));
    assert_error(&yaml, "too many rules: 513, must have at most 512");
    let ok = policy(&format!("\n  rules:\n{}", "  - {}\n".repeat(512)));
    assert_clean(&ok);
}

#[test]
fn too_many_from_refused() {
    let from = "    - source: {namespaces: [a]}\n".repeat(513);
    let yaml = policy(&format!("\n  rules:\n  - from: # <-\n{from}"));
    assert_error(&yaml, "must have at most 512");
}

#[test]
fn errors_name_the_field_path() {
    let yaml = policy("\n  rules:\n  - from:\n    - source:\n        ipBlocks: [10.0.0.0/8, bad]");
    let diags = diagnostics(&yaml);
    let fields: Vec<&str> = diags.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["spec.rules[0].from[0].source.ipBlocks[1]"]);
}
