use std::path::Path;

use test_case::test_case;

use super::testutil::{assert_clean, assert_error, assert_warning};
use super::*;
use crate::diag::Diagnostic;
use crate::load::{LoadedTest, load_paths};

// === value parsers ===

#[test_case("10.0.0.1", true; "ipv4")]
#[test_case("10.0.0.0/8", true; "ipv4 cidr")]
#[test_case("10.1.2.3/8", true; "host bits are allowed")]
#[test_case("0.0.0.0/0", true; "everything")]
#[test_case("2001:db8::1", true; "ipv6")]
#[test_case("2001:db8::/32", true; "ipv6 cidr")]
#[test_case("fe80::1%eth0", true; "ipv6 with zone")]
#[test_case("::ffff:1.2.3.4/120", true; "mapped cidr")]
#[test_case("10.0.0.256", false; "octet out of range")]
#[test_case("010.0.0.1", false; "leading zero octet")]
#[test_case("10.0.0", false; "three octets")]
#[test_case("10.0.0.0/33", false; "prefix too long")]
#[test_case("10.0.0.0/08", false; "prefix leading zero")]
#[test_case("10.0.0.0/+8", false; "prefix sign")]
#[test_case("10.0.0.0/", false; "empty prefix")]
#[test_case("fe80::1%eth0/64", false; "zone in prefix")]
#[test_case("fe80::1%", false; "empty zone")]
#[test_case("1.2.3.4%eth0", false; "ipv4 with zone")]
#[test_case("*", false; "wildcard")]
#[test_case("example.com", false; "hostname")]
fn ip_or_cidr(value: &str, ok: bool) {
    assert_eq!(check_ip_or_cidr(value).is_ok(), ok, "{value}");
}

#[test_case("80", Some(80); "plain")]
#[test_case("0", Some(0); "zero")]
#[test_case("65535", Some(65535); "max")]
#[test_case("0080", Some(80); "leading zeros")]
#[test_case("65536", None; "too big")]
#[test_case("+80", None; "sign")]
#[test_case("-1", None; "negative")]
#[test_case("8_0", None; "underscore")]
#[test_case("80-90", None; "range")]
#[test_case("*", None; "wildcard")]
#[test_case("", None; "empty")]
#[test_case("99999999999999999999999", None; "overflow")]
fn ports(value: &str, expected: Option<u16>) {
    assert_eq!(check_port(value).ok(), expected, "{value}");
}

#[test_case("5s", Some(5_000_000_000); "seconds")]
#[test_case("0.5s", Some(500_000_000); "fraction")]
#[test_case("1.000000001s", Some(1_000_000_001); "nanos")]
#[test_case("-1s", Some(-1_000_000_000); "negative")]
#[test_case("5", None; "no unit")]
#[test_case("5m", None; "minutes are not proto json")]
#[test_case("100ms", None; "milliseconds are not proto json")]
#[test_case("1.s", None; "dot without fraction")]
#[test_case(".5s", None; "no integer part")]
#[test_case("1.0000000001s", None; "ten fraction digits")]
#[test_case("+1s", None; "plus sign")]
fn proto_durations(value: &str, expected: Option<i128>) {
    assert_eq!(parse_proto_duration(value).ok(), expected, "{value}");
}

#[test_case("1ms", false; "not proto json")]
#[test_case("0.001s", true; "one millisecond")]
#[test_case("0.0005s", false; "below a millisecond")]
#[test_case("1.0005s", false; "sub millisecond precision")]
#[test_case("0s", false; "zero")]
#[test_case("30s", true; "thirty seconds")]
fn millisecond_durations(value: &str, ok: bool) {
    assert_eq!(check_duration_ms(value).is_ok(), ok, "{value}");
}

#[test_case("reviews", true; "short name")]
#[test_case("reviews.default.svc.cluster.local", true; "fqdn")]
#[test_case("*.example.com", true; "wildcard")]
#[test_case("*", true; "star")]
#[test_case("*-foo.example.com", true; "star dash prefix")]
#[test_case("istio.io.", true; "trailing dot")]
#[test_case("a.*.com", false; "inner wildcard")]
#[test_case("10.0.0.1", false; "numeric top level domain")]
#[test_case("bad_name.com", false; "underscore")]
#[test_case("a..b", false; "empty label")]
#[test_case("", false; "empty")]
fn wildcard_domains(value: &str, ok: bool) {
    assert_eq!(check_wildcard_domain(value).is_ok(), ok, "{value}");
}

#[test_case("version", true; "plain")]
#[test_case("app.kubernetes.io/name", true; "prefixed")]
#[test_case("-bad", false; "leading dash")]
#[test_case("a/b/c", false; "two slashes")]
#[test_case("", false; "empty")]
fn label_keys(value: &str, ok: bool) {
    assert_eq!(check_label_key(value).is_ok(), ok, "{value}");
}

#[test]
fn go_booleans() {
    for v in ["1", "t", "T", "TRUE", "true", "True"] {
        assert_eq!(parse_go_bool(v), Some(true), "{v}");
    }
    for v in ["0", "f", "F", "FALSE", "false", "False"] {
        assert_eq!(parse_go_bool(v), Some(false), "{v}");
    }
    for v in ["yes", "tRuE", "", "2"] {
        assert_eq!(parse_go_bool(v), None, "{v}");
    }
}

// === selectors and target references, through a PeerAuthentication / AuthorizationPolicy ===

const PA_HEAD: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: p, namespace: foo}
spec:
";

#[test_case("  selector:\n    matchLabels:\n      \"\": x # <-\n", "empty key is not supported"; "empty key")]
#[test_case("  selector:\n    matchLabels:\n      ap*: x # <-\n", "wildcard not allowed in label key match"; "wildcard key")]
#[test_case("  selector:\n    matchLabels:\n      app: \"x*\" # <-\n", "wildcard not allowed in label value match"; "wildcard value")]
#[test_case(
    "  selector:\n    matchLabels:\n      app: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa # <-\n",
    "must be no more than 63";
    "long value"
)]
fn selector_errors(body: &str, needle: &str) {
    assert_error(&format!("{PA_HEAD}{body}"), needle);
}

#[test]
fn selector_without_labels_warns() {
    assert_warning(
        &format!("{PA_HEAD}  selector: {{}} # <-\n"),
        "workload selector specified without labels",
    );
    assert_warning(
        &format!("{PA_HEAD}  selector:\n    matchLabels: {{}} # <-\n"),
        "workload selector specified without labels",
    );
    assert_clean(&format!(
        "{PA_HEAD}  selector:\n    matchLabels: {{app: x}}\n"
    ));
}

const AP_HEAD: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: foo}
spec:
";

#[test_case(
    "  selector: {matchLabels: {app: x}}\n  targetRefs: # <-\n  - {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n",
    "only one of targetRefs or selector can be set";
    "selector and targetRefs"
)]
#[test_case(
    "  targetRef: {kind: Service, name: a}\n  targetRefs: # <-\n  - {kind: Service, name: b}\n",
    "only one of targetRefs or selector can be set";
    "targetRef and targetRefs"
)]
#[test_case(
    "  targetRefs:\n  - kind: Service\n    name: a\n    namespace: bar # <-\n",
    "targetRef namespace must not be set";
    "namespace"
)]
#[test_case("  targetRefs:\n  - kind: Service # <-\n", "targetRef name must be set"; "no name")]
#[test_case(
    "  targetRefs:\n  - kind: Deployment # <-\n    name: a\n",
    "targetRef must be to one of";
    "bad kind"
)]
#[test_case(
    "  targetRefs:\n  - kind: Gateway\n    group: networking.istio.io # <-\n    name: a\n",
    "but was `networking.istio.io/Gateway`";
    "bad group"
)]
#[test_case(
    "  targetRef:\n    kind: Service\n    name: \"\" # <-\n",
    "targetRef name must be set";
    "single target ref"
)]
fn target_ref_errors(body: &str, needle: &str) {
    assert_error(&format!("{AP_HEAD}{body}"), needle);
}

#[test_case("  targetRefs:\n  - {kind: Service, name: a}\n"; "service")]
#[test_case("  targetRefs:\n  - {kind: Service, group: core, name: a}\n"; "service core group")]
#[test_case("  targetRefs:\n  - {kind: ServiceEntry, group: networking.istio.io, name: a}\n"; "service entry")]
#[test_case("  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: a}\n"; "gateway")]
#[test_case("  targetRefs:\n  - {kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}\n"; "gateway class")]
fn target_refs_accepted(body: &str) {
    assert_clean(&format!("{AP_HEAD}{body}"));
}

#[test]
fn too_many_target_refs() {
    let mut body = String::from("  targetRefs: # <-\n");
    for i in 0..17 {
        body.push_str(&format!("  - {{kind: Service, name: s{i}}}\n"));
    }
    assert_error(&format!("{AP_HEAD}{body}"), "must have at most 16");
}

#[test_case("internal.istio.io/webhook-always-reject"; "always reject")]
#[test_case("internal.istio.io/parents"; "parents")]
#[test_case("internal.istio.io/parent-namespace"; "parent namespace")]
fn internal_annotations_refused(key: &str) {
    let yaml = format!(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: p
  annotations:
    {key}: x # <-
spec: {{}}
"
    );
    assert_error(&yaml, key);
}

// === the conformance corpus ===

/// Loads every file of the shared conformance corpus: every PolicyTest's diagnostics hold exactly
/// its `expectErrors` (warnings aside), and nothing else fails to load.
#[test]
fn conformance_corpus_loads() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance"
    ));
    if !dir.is_dir() {
        println!("skipped: no conformance corpus at {}", dir.display());
        return;
    }
    let report = load_paths(&[dir]);
    assert!(report.is_ok(), "cannot read the corpus: {report:?}");
    let Ok(report) = report else {
        return;
    };
    let stray: Vec<String> = report.errors().map(Diagnostic::to_string).collect();
    assert!(
        stray.is_empty(),
        "errors outside PolicyTests:\n{}",
        stray.join("\n")
    );
    assert!(!report.tests.is_empty(), "no PolicyTest in the corpus");
    for d in report
        .tests
        .iter()
        .flat_map(|t| &t.diagnostics)
        .filter(|d| !d.is_error())
    {
        println!("{d}");
    }
    let failures: Vec<String> = report.tests.iter().filter_map(mismatch).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// What is wrong with a test's diagnostics, if anything.
fn mismatch(test: &LoadedTest) -> Option<String> {
    let mut errors: Vec<&Diagnostic> = test.diagnostics.iter().filter(|d| d.is_error()).collect();
    let expected = test.test.spec.expect_errors.clone().unwrap_or_default();
    let mut missing = Vec::new();
    for want in &expected {
        let found = errors.iter().position(|d| {
            d.resource
                .as_ref()
                .is_some_and(|r| r.key() == want.resource)
                && d.message.contains(&want.contains)
        });
        match found {
            Some(i) => {
                errors.remove(i);
            }
            None => missing.push(format!("{}: {}", want.resource, want.contains)),
        }
    }
    if missing.is_empty() && errors.is_empty() {
        return None;
    }
    Some(format!(
        "{} ({}): missing expected errors {missing:?}; unexpected errors:\n{}",
        test.test.metadata.name(),
        test.origin.file,
        errors
            .iter()
            .map(|d| format!("  {d}"))
            .collect::<Vec<_>>()
            .join("\n")
    ))
}
