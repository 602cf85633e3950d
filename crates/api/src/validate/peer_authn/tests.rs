//! PeerAuthentication rules (authentication.md §2.1).

use test_case::test_case;

use crate::validate::common::testutil::{assert_clean, assert_error, diagnostics};

const HEAD: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: p
  namespace: foo";

fn policy(body: &str) -> String {
    format!("{HEAD}\nspec:{body}")
}

#[test_case(
    "\n  mtls: {mode: STRICT}\n  portLevelMtls: # <-\n    8080: {mode: DISABLE}",
    "mesh/namespace peer authentication cannot have port level mTLS";
    "no selector"
)]
#[test_case(
    "\n  selector: {}\n  portLevelMtls: # <-\n    8080: {mode: DISABLE}",
    "cannot have port level mTLS";
    "selector without labels"
)]
#[test_case(
    "\n  selector:\n    matchLabels: {app: x}\n  portLevelMtls: {} # <-",
    "port level mTLS, if defined, must have at least one element";
    "empty port map"
)]
#[test_case(
    "\n  selector:\n    matchLabels: {app: x}\n  portLevelMtls:\n    0: {mode: DISABLE} # <-",
    "port must be in range 1..65535, found `0`";
    "port zero"
)]
#[test_case(
    "\n  selector:\n    matchLabels: {app: x}\n  portLevelMtls:\n    65536: {mode: DISABLE} # <-",
    "port must be in range 1..65535, found `65536`";
    "port too big"
)]
#[test_case(
    "\n  selector:\n    matchLabels: {app: x}\n  portLevelMtls:\n    8080: {mode: STRICT}\n    http: {mode: DISABLE} # <-",
    "port must be in range 1..65535, found `http`";
    "port not a number"
)]
#[test_case(
    "\n  selector:\n    matchLabels: {app: x}\n  portLevelMtls:\n    \"-80\": {mode: DISABLE} # <-",
    "found `-80`";
    "negative port"
)]
#[test_case(
    "\n  selector:\n    matchLabels:\n      app: \"*\" # <-",
    "wildcard not allowed in label value match";
    "wildcard selector"
)]
fn refused(body: &str, needle: &str) {
    assert_error(&policy(body), needle);
}

#[test_case(" {}"; "empty spec")]
#[test_case("\n  mtls: {mode: STRICT}"; "namespace strict")]
#[test_case(
    "\n  selector:\n    matchLabels: {app: x}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    1: {mode: DISABLE}\n    \"65535\": {mode: PERMISSIVE}";
    "workload port level"
)]
fn accepted(body: &str) {
    assert_clean(&policy(body));
}

#[test]
fn port_key_error_names_the_key() {
    let yaml = policy(
        "\n  selector:\n    matchLabels: {app: x}\n  portLevelMtls:\n    99999: {mode: DISABLE}",
    );
    let fields: Vec<String> = diagnostics(&yaml)
        .iter()
        .map(|d| d.field.as_str().to_owned())
        .collect();
    assert_eq!(fields, ["spec.portLevelMtls.99999"]);
}

#[test]
fn dry_run_annotation_refused() {
    let yaml = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: p
  annotations:
    istio.io/dry-run: \"true\" # <-
spec: {}
";
    assert_error(yaml, "unsupported annotation istio.io/dry-run");
}
