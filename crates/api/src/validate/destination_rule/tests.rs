//! DestinationRule rules (authentication.md §3.1 and istiod's `ValidateDestinationRule`).

use test_case::test_case;

use crate::validate::common::testutil::{assert_clean, assert_error, assert_warning, diagnostics};

const HEAD: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: dr
  namespace: foo
spec:";

/// A rule for `reviews` with `body` after the host.
fn rule(body: &str) -> String {
    format!("{HEAD}\n  host: reviews{body}")
}

/// A missing certificate or key is reported at the `tls` object that lacks it.
#[test_case("privateKey: /k.pem", "client certificate required for mutual tls"; "mutual without certificate")]
#[test_case("clientCertificate: /c.pem", "private key required for mutual tls"; "mutual without key")]
fn mutual_needs_files(present: &str, needle: &str) {
    let yaml = rule(&format!(
        "\n  trafficPolicy:\n    tls: # <-\n      mode: MUTUAL\n      {present}"
    ));
    assert_error(&yaml, needle);
}

/// A rule whose `trafficPolicy.tls` has `fields` (indented by 6 spaces).
fn tls(fields: &str) -> String {
    rule(&format!("\n  trafficPolicy:\n    tls:\n      {fields}"))
}

#[test_case(
    "mode: MUTUAL\n      credentialName: secret\n      clientCertificate: /c.pem # <-",
    "cannot specify client certificates or CA certificate or CA CRL if credentialName is set";
    "mutual credential with certificate"
)]
#[test_case(
    "mode: SIMPLE\n      credentialName: secret\n      caCertificates: /ca.pem # <-",
    "remove `caCertificates`";
    "simple credential with ca"
)]
#[test_case(
    "mode: SIMPLE\n      credentialName: secret\n      caCrl: /crl.pem # <-",
    "remove `caCrl`";
    "simple credential with crl"
)]
#[test_case(
    "mode: SIMPLE\n      insecureSkipVerify: true\n      caCertificates: /ca.pem # <-",
    "cannot specify `caCertificates` when insecureSkipVerify is set true";
    "skip verify with ca"
)]
#[test_case(
    "mode: SIMPLE\n      insecureSkipVerify: true\n      credentialName: secret # <-",
    "cannot specify `credentialName` when insecureSkipVerify is set true";
    "simple skip verify with credential"
)]
#[test_case(
    "mode: MUTUAL\n      insecureSkipVerify: true\n      clientCertificate: /c.pem\n      privateKey: /k.pem\n      subjectAltNames: [a] # <-",
    "cannot specify `subjectAltNames` when insecureSkipVerify is set true";
    "mutual skip verify with sans"
)]
#[test_case(
    "mode: SIMPLE\n      credentialName: configmap://bar/ca # <-",
    "namespace must match the configuration namespace `foo`";
    "configmap in another namespace"
)]
#[test_case(
    "mode: SIMPLE\n      credentialName: configmap://ca # <-",
    "expected namespace and name";
    "configmap without namespace"
)]
fn tls_refused(fields: &str, needle: &str) {
    assert_error(&tls(fields), needle);
}

#[test_case("mode: ISTIO_MUTUAL\n      clientCertificate: /ignored.pem\n      subjectAltNames: [spiffe://cluster.local/ns/foo/sa/reviews]"; "istio mutual")]
#[test_case("mode: MUTUAL\n      clientCertificate: /c.pem\n      privateKey: /k.pem\n      caCertificates: /ca.pem"; "mutual with files")]
#[test_case("mode: MUTUAL\n      credentialName: client-secret"; "mutual with credential")]
#[test_case("mode: MUTUAL\n      insecureSkipVerify: true\n      credentialName: client-secret"; "mutual skip verify with credential")]
#[test_case("mode: SIMPLE\n      insecureSkipVerify: true\n      sni: example.com"; "simple skip verify")]
#[test_case("mode: SIMPLE\n      credentialName: configmap://foo/ca"; "configmap in own namespace")]
#[test_case("mode: DISABLE"; "disable")]
fn tls_accepted(fields: &str) {
    assert_clean(&tls(fields));
}

#[test]
fn port_level_and_subset_tls_checked() {
    let port_level = rule(
        "\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 8443}\n      tls: # <-\n        mode: MUTUAL\n        privateKey: /k.pem",
    );
    assert_error(&port_level, "client certificate required for mutual tls");
    let subset = rule(
        "\n  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n      tls: # <-\n        mode: MUTUAL\n        clientCertificate: /c.pem",
    );
    assert_error(&subset, "private key required for mutual tls");
}

#[test_case("\n  trafficPolicy: {} # <-", "traffic policy must have at least one field"; "empty traffic policy")]
#[test_case(
    "\n  trafficPolicy:\n    tunnel: {targetHost: a, targetPort: 80}\n    proxyProtocol: {version: V1} # <-",
    "tunnel and proxyProtocol must not be set together";
    "tunnel and proxy protocol"
)]
#[test_case(
    "\n  trafficPolicy:\n    portLevelSettings:\n    - tls: {mode: ISTIO_MUTUAL} # <-",
    "portTrafficPolicy must have valid port";
    "port level without port"
)]
#[test_case(
    "\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 80} # <-",
    "port traffic policy must have at least one field";
    "port level without settings"
)]
#[test_case("\n  subsets:\n  - labels: {version: v1} # <-", "subset name cannot be empty"; "unnamed subset")]
#[test_case("\n  subsets:\n  - name: V_1 # <-", "subset name is invalid"; "bad subset name")]
#[test_case("\n  subsets:\n  - name: v1\n  - name: v1 # <-", "duplicate subset names: `v1`"; "duplicate subsets")]
#[test_case("\n  subsets:\n  - name: v1\n    labels:\n      -bad: x # <-", "invalid tag key: `-bad`"; "bad label key")]
#[test_case("\n  subsets:\n  - name: v1\n    labels:\n      version: \"v 1\" # <-", "invalid tag value: `v 1`"; "bad label value")]
#[test_case("\n  exportTo:\n  - foo\n  - \".\" # <-", "duplicate entries in exportTo: . and current namespace `foo`"; "dot and own namespace")]
#[test_case("\n  exportTo:\n  - bar\n  - bar # <-", "duplicate entries in exportTo for entry `bar`"; "duplicate export")]
#[test_case("\n  exportTo:\n  - \"~\" # <-", "exportTo ~ (none) is not allowed"; "export to none")]
#[test_case("\n  exportTo:\n  - Not_A_Namespace # <-", "only .,*, or a valid DNS 1123 label is allowed"; "bad export")]
#[test_case("\n  exportTo: # <-\n  - \"*\"\n  - bar", "cannot have both public (*) and non-public exportTo values"; "public and other")]
#[test_case(
    "\n  workloadSelector: {matchLabels: {app: x}}\n  exportTo: # <-\n  - bar",
    "cannot have exportTo beyond current namespace";
    "selector exported elsewhere"
)]
#[test_case(
    "\n  workloadSelector: {matchLabels: {app: x}}\n  exportTo: # <-\n  - \".\"\n  - bar",
    "cannot have multiple entries in exportTo";
    "selector exported twice"
)]
#[test_case("\n  workloadSelector:\n    matchLabels:\n      app: \"a*\" # <-", "wildcard not allowed in label value match"; "wildcard selector")]
fn refused(body: &str, needle: &str) {
    assert_error(&rule(body), needle);
}

#[test_case("\n  host: \"\" # <-", "`host` is required"; "empty host")]
#[test_case("\n  host: a.*.example.com # <-", "domain name `a.*.example.com` invalid (label `*` invalid)"; "inner wildcard")]
#[test_case("\n  host: 10.0.0.1 # <-", "cannot be all-numeric"; "ip host")]
#[test_case("\n  host: bad_host.example.com # <-", "label `bad_host` invalid"; "underscore")]
fn host_refused(body: &str, needle: &str) {
    assert_error(&format!("{HEAD}{body}"), needle);
}

#[test]
fn missing_host_refused_at_spec() {
    let yaml = format!("{HEAD} # <-\n  trafficPolicy:\n    tls: {{mode: ISTIO_MUTUAL}}");
    assert_error(&yaml, "`host` is required");
}

#[test_case("\n  host: \"*.example.com\""; "wildcard host")]
#[test_case("\n  host: reviews.foo.svc.cluster.local\n  exportTo: [\".\", bar]"; "export to two namespaces")]
#[test_case("\n  host: \"*\"\n  exportTo: [\"*\"]"; "public")]
#[test_case(
    "\n  host: reviews\n  workloadSelector: {matchLabels: {app: x}}\n  exportTo: [\".\"]\n  trafficPolicy:\n    tls: {mode: SIMPLE, credentialName: ca-secret}";
    "selector scoped to own namespace"
)]
#[test_case(
    "\n  host: reviews\n  subsets:\n  - name: v1\n    labels: {version: v1, app.kubernetes.io/name: reviews, empty: \"\"}\n  - name: v2";
    "subsets"
)]
#[test_case(
    "\n  host: reviews\n  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: 1}}\n    portLevelSettings:\n    - port: {number: 9080}\n      loadBalancer: {simple: ROUND_ROBIN}";
    "other traffic policy fields"
)]
fn accepted(body: &str) {
    assert_clean(&format!("{HEAD}{body}"));
}

#[test]
fn selector_without_labels_warns() {
    assert_warning(
        &rule("\n  workloadSelector: {} # <-"),
        "workload selector specified without labels",
    );
}

#[test]
fn errors_name_the_tls_field() {
    let yaml = tls("mode: MUTUAL");
    let fields: Vec<String> = diagnostics(&yaml)
        .iter()
        .map(|d| d.field.as_str().to_owned())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.trafficPolicy.tls.clientCertificate",
            "spec.trafficPolicy.tls.privateKey"
        ]
    );
}
