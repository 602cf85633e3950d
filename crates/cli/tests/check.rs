#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Golden tests of `meshward check` on the seed examples: one request per tutorial, as the
//! tutorial's manifests (the files directly in its folder) decide it, with the trace of every
//! policy and rule. Table output for each, JSON and YAML for one.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `meshward check -f <seed files> ARGS` from the workspace root, without colour: stdout.
fn check(seed: &str, args: &[&str]) -> String {
    // The PolicyTest is left out: its stages' resources would count as applied.
    let files: Vec<String> = support::seed_files(seed)
        .into_iter()
        .filter(|f| !f.ends_with("policytest.yaml"))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_meshward"))
        .arg("check")
        .arg("-f")
        .args(&files)
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("run meshward");
    assert!(
        out.status.success(),
        "meshward check {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn seed_000_frontend_is_allowed_and_another_identity_is_not() {
    let seed = "000-frontend-backend-mtls-authz";
    let allowed = check(
        seed,
        &["--from", "default/frontend", "--to", "svc/backend:80"],
    );
    assert!(allowed.starts_with("ALLOW: "), "{allowed}");
    insta::assert_snapshot!("check-seed-000-frontend", allowed);
    let denied = check(
        seed,
        &[
            "--principal",
            "cluster.local/ns/default/sa/default",
            "--to",
            "svc/backend:80",
        ],
    );
    assert!(denied.starts_with("DENY: "), "{denied}");
    insta::assert_snapshot!("check-seed-000-intruder", denied);
}

/// 001: the quoted header key never matches, so the request is allowed by the other policy's
/// rule; JSON and YAML carry the same trace.
#[test]
fn seed_001_quoted_header_key_never_matches() {
    let seed = "001-production-mtls-rbac-jwt";
    let args = [
        "--from",
        "production/frontend",
        "--to",
        "svc/backend.production:80",
        "--path",
        "/api/data",
        "--header",
        "x-api-version=v1",
    ];
    let table = check(seed, &args);
    assert!(
        table.starts_with("ALLOW: allowed by ALLOW policy production/backend-rbac rule 0"),
        "{table}"
    );
    insta::assert_snapshot!("check-seed-001-api-version", table);
    let mut json_args = args.to_vec();
    json_args.extend(["-o", "json"]);
    insta::assert_snapshot!("check-seed-001-api-version-json", check(seed, &json_args));
    let mut yaml_args = args.to_vec();
    yaml_args.extend(["-o", "yaml"]);
    insta::assert_snapshot!("check-seed-001-api-version-yaml", check(seed, &yaml_args));
}

/// 002: a pod without a sidecar is reset by STRICT, before any policy.
#[test]
fn seed_002_plaintext_client_is_reset_under_strict() {
    let out = check(
        "002-bookinfo-mtls-zero-trust",
        &[
            "--from",
            "legacy/sleep",
            "--to",
            "svc/reviews.bookinfo:9080",
        ],
    );
    assert!(
        out.starts_with("REJECT: plaintext into a STRICT port"),
        "{out}"
    );
    insta::assert_snapshot!("check-seed-002-legacy-sleep", out);
}

/// 003: `DELETE /api/users/42` from frontend: its policy lists `/api/users` exactly.
#[test]
fn seed_003_frontend_cannot_delete_a_user() {
    let out = check(
        "003-demo-mtls-and-rbac",
        &[
            "--from",
            "demo/frontend",
            "--to",
            "svc/backend.demo:3000",
            "--method",
            "DELETE",
            "--path",
            "/api/users/42",
        ],
    );
    assert!(out.starts_with("DENY: "), "{out}");
    insta::assert_snapshot!("check-seed-003-frontend-delete", out);
}

/// 004: `hello: world` without a token: the rule also needs the token's `iss` claim.
#[test]
fn seed_004_header_without_a_token_is_denied() {
    let out = check(
        "004-online-boutique-mtls-jwt-authz",
        &[
            "--from",
            "default/productcatalogservice",
            "--to",
            "svc/frontend:80",
            "--header",
            "hello=world",
        ],
    );
    assert!(out.starts_with("DENY: "), "{out}");
    insta::assert_snapshot!("check-seed-004-hello-without-token", out);
}
