//! The `meshward` binary end to end: exit codes, located errors, PolicyTest runs, `check`.

// A test binary: a failed expectation is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn meshward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshward"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run meshward")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn validate_names_file_line_column_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n  rules:\n  - to:\n    - operation:\n        ports: [\"99999\"]\n",
    )
    .expect("write");
    let out = meshward(&["validate", "-f", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("bad.yaml:8:"), "line of the port value: {t}");
    assert!(t.contains("spec.rules[0].to[0].operation.ports[0]"), "{t}");
    assert!(t.contains("AuthorizationPolicy foo/p"), "{t}");
}

#[test]
fn validate_reports_unknown_fields_and_wrong_types() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("typo.yaml");
    std::fs::write(
        &file,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: d, namespace: foo}\nspec:\n  mtls:\n    mod: STRICT\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n  rules:\n  - from:\n    - source: {principals: [true]}\n",
    )
    .expect("write");
    let out = meshward(&["validate", "-f", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("typo.yaml:6:5") && t.contains("unknown field `mod`"),
        "{t}"
    );
    assert!(
        t.contains("typo.yaml:14:29") && t.contains("expected a string"),
        "{t}"
    );
}

#[test]
fn unknown_kinds_are_reported_as_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gw.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: foo}\nspec: {}\n",
    )
    .expect("write");
    let out = meshward(&["validate", "-f", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out).contains("skipped Gateway foo/gw"),
        "{}",
        text(&out)
    );
}

#[test]
fn seed_examples_pass_and_a_wrong_expectation_fails() {
    let seeds = repo().join("examples/seeds");
    let out = meshward(&["test", seeds.to_str().expect("utf-8 path")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.lines().any(|l| l.ends_with(" passed, 0 failed")), "{t}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wrong.yaml");
    std::fs::write(
        &file,
        "apiVersion: meshward.dev/v1alpha1\nkind: PolicyTest\nmetadata: {name: wrong}\nspec:\n  workloads:\n  - {name: web, namespace: foo, ports: [{port: 8080}]}\n  resources:\n  - apiVersion: security.istio.io/v1\n    kind: AuthorizationPolicy\n    metadata: {name: allow-nothing, namespace: foo}\n    spec: {}\n  cases:\n  - name: expects the wrong thing\n    from: {plaintext: true}\n    to: {workload: foo/web, port: 8080}\n    expect: ALLOW\n",
    )
    .expect("write");
    let out = meshward(&["test", file.to_str().expect("utf-8 path")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FAILED") && t.contains("expected ALLOW, got DENY"),
        "{t}"
    );
    assert!(t.lines().any(|l| l == "0 passed, 1 failed"), "{t}");
}

#[test]
fn policytest_unknown_field_is_an_error_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("t.yaml");
    std::fs::write(
        &file,
        "apiVersion: meshward.dev/v1alpha1\nkind: PolicyTest\nmetadata: {name: t}\nspec:\n  cases:\n  - name: c\n    form: {plaintext: true}\n    expect: ALLOW\n",
    )
    .expect("write");
    let out = meshward(&["test", file.to_str().expect("utf-8 path")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("t.yaml:7:5") && t.contains("unknown field `form`"),
        "{t}"
    );
}

#[test]
fn check_explains_a_denial() {
    let quickstart = repo().join("examples/quickstart");
    let q = quickstart.to_str().expect("utf-8 path");
    let out = meshward(&[
        "check",
        "-f",
        q,
        "--from",
        "shop/frontend",
        "--to",
        "svc/orders.shop:80",
        "--method",
        "POST",
        "--path",
        "/orders/1",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["verdict"], "DENY");
    assert_eq!(v["server_mtls"], "STRICT");
    let rules = &v["policies"][1]["rules"][0];
    assert_eq!(rules["result"], "no match");
    assert!(
        rules["detail"]
            .as_str()
            .is_some_and(|d| d.contains("methods")),
        "{v}"
    );

    let out = meshward(&[
        "check",
        "-f",
        q,
        "--from",
        "legacy/batch",
        "--to",
        "svc/orders.shop:80",
    ]);
    let t = text(&out);
    assert!(t.starts_with("REJECT: plaintext into a STRICT port"), "{t}");
}

/// Runs `meshward args` with stdout a pipe whose reader is already gone (as after `| head -1`
/// has read its line and exited), so its first write fails with EPIPE.
fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_meshward"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(writer)
        .output()
        .expect("run meshward")
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let conformance = repo().join("../shared/conformance");
    let conformance = conformance.to_str().expect("utf-8 path");
    let quickstart = repo().join("examples/quickstart");
    let quickstart = quickstart.to_str().expect("utf-8 path");
    for args in [
        // JSON and YAML through `print_structured`.
        &["validate", "-f", conformance, "-o", "json"][..],
        &["validate", "-f", conformance, "-o", "yaml"][..],
        // A table through `print_table`.
        &[
            "describe", "pod", "frontend", "-n", "shop", "-f", quickstart,
        ][..],
        // Plain `println!` lines.
        &["test", conformance][..],
    ] {
        let out = into_closed_pipe(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: nothing to say: {stderr}");
        // 128 + SIGPIPE, as a shell reports a tool killed by SIGPIPE.
        assert_eq!(out.status.code(), Some(141), "{args:?}");
    }
}
