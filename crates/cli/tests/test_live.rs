#![allow(clippy::expect_used, clippy::unwrap_used)]
//! `meshward test --live` end to end: conformance PolicyTests run on a real local mesh must
//! agree with what they expect, and a wrong expectation must be reported as FAILED from what
//! the sidecars really did.
//!
//! Needs what the local mesh needs (root, iproute2, iptables, util-linux, the `meshward-proxy`
//! binary; see `support`), and the project's `shared/` folder beside the repository
//! (`MESHWARD_SHARED` overrides). Without them the tests say so and pass.

mod support;

use std::path::{Path, PathBuf};

use support::Mesh;

fn conformance() -> Option<PathBuf> {
    let shared = std::env::var_os("MESHWARD_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let dir = shared.join("conformance");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: no conformance corpus at {}", dir.display());
        None
    }
}

fn live(mesh: &Mesh, files: &[PathBuf]) -> (Option<i32>, String) {
    let mut args = vec!["test".to_owned(), "--live".to_owned()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = mesh.cmd(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// ALLOW, DENY, REJECT and UNAUTHENTICATED; TCP and HTTP (and gRPC); sidecar, principal and
/// plaintext sources, with and without a source address; policy and rule from the access log.
#[test]
fn conformance_files_agree_live() {
    let Some(dir) = conformance() else { return };
    let Some(mesh) = Mesh::new() else { return };
    let files: Vec<PathBuf> = [
        "authz-C05-tcp-allow-by-port.yaml",
        "authz-C14-ingress-ip-allow-list.yaml",
        "peerauthn-B-2-mesh-wide-strict.yaml",
        "jwt-D-3-expired-token-401.yaml",
        "seed-000-frontend-backend-mtls-authz.yaml",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    let (code, text) = live(&mesh, &files);
    assert_eq!(code, Some(0), "{text}");
    let summary = text
        .lines()
        .find(|l| l.ends_with("skipped (live)"))
        .expect("a summary line");
    assert!(summary.contains(" 0 failed"), "{text}");
    let passed: usize = summary.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 20, "{text}");
    mesh.assert_clean();
}

/// Every decision word was observed on the wire (verbose output says what happened).
#[test]
fn each_decision_is_observed_on_the_wire() {
    let Some(dir) = conformance() else { return };
    let Some(mesh) = Mesh::new() else { return };
    let files = [
        dir.join("authz-C05-tcp-allow-by-port.yaml"),
        dir.join("peerauthn-B-2-mesh-wide-strict.yaml"),
        dir.join("jwt-D-3-expired-token-401.yaml"),
    ];
    let mut args = vec!["test".to_owned(), "--live".to_owned(), "-v".to_owned()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = mesh.cmd(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    for seen in [
        "live: ALLOW (TCP data echoed)",
        "live: DENY (closed",
        "live: ALLOW (HTTP 200 from the app)",
        "live: REJECT",
        "live: UNAUTHENTICATED (HTTP 401",
    ] {
        assert!(text.contains(seen), "`{seen}` not observed:\n{text}");
    }
}

#[test]
fn a_wrong_expectation_fails_live() {
    let Some(mesh) = Mesh::new() else { return };
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/test_live/wrong-expectation.yaml");
    let (code, text) = live(&mesh, &[file]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("ok      live-wrong-expectation :: W1 the frontend may read"),
        "{text}"
    );
    assert!(
        text.contains(
            "FAILED  live-wrong-expectation :: W2 wrongly expects the admin path to be allowed"
        ),
        "{text}"
    );
    assert!(
        text.contains("expected ALLOW, got DENY; live: DENY (HTTP 403 `RBAC: access denied`); proxy: denied by DENY policy shop/deny-admin rule 0"),
        "{text}"
    );
    assert!(
        text.contains("1 passed, 1 failed, 0 skipped (live)"),
        "{text}"
    );
    mesh.assert_clean();
}

/// Configuration-only cases are judged on the proxies, right and wrong expectations alike: the
/// modes and client TLS from their `/config_dump`, an undeclared port's mode from the traffic
/// its sidecar accepts.
#[test]
fn configuration_cases_are_judged_on_the_proxies() {
    let Some(mesh) = Mesh::new() else { return };
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/test_live/configuration.yaml");
    let out = mesh.cmd(&["test", "--live", "-v", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("8 passed, 4 failed, 0 skipped (live)"),
        "{text}"
    );
    for line in [
        "live: mtlsMode PERMISSIVE (shop/backend proxy /config_dump)",
        "live: mtlsMode STRICT (shop/backend proxy /config_dump)",
        "live: mtlsMode DISABLE on undeclared port 9090 (plaintext: HTTP 200 from the app; mTLS: closed",
        "live: mtlsMode PERMISSIVE on undeclared port 7070 (plaintext: HTTP 200 from the app; mTLS: HTTP 200 from the app)",
        "live: mtlsMode STRICT on undeclared port 6060 (plaintext: closed",
        "live: clientTls ISTIO_MUTUAL (shop/frontend proxy /config_dump)",
        "live: clientTls DISABLE (shop/frontend proxy /config_dump)",
        "live: clientTls SIMPLE (shop/frontend proxy /config_dump)",
        "expected mtlsMode STRICT, got PERMISSIVE (shop/backend proxy /config_dump)",
        "expected mtlsMode STRICT, got DISABLE on undeclared port 9090",
        "expected clientTls DISABLE, got ISTIO_MUTUAL (shop/frontend proxy /config_dump)",
    ] {
        assert!(text.contains(line), "`{line}` not in:\n{text}");
    }
    mesh.assert_clean();
}

/// The whole corpus agrees live, configuration-only cases included, with nothing skipped
/// (about two and a half minutes on two cores).
#[test]
fn whole_conformance_corpus_agrees_live() {
    let Some(dir) = conformance() else { return };
    let Some(mesh) = Mesh::new() else { return };
    let (code, text) = live(&mesh, &[dir]);
    let summary = text
        .lines()
        .find(|l| l.ends_with("skipped (live)"))
        .expect("a summary line");
    assert_eq!(code, Some(0), "{text}");
    assert!(summary.contains(" 0 failed"), "{summary}");
    assert!(summary.contains(" 0 skipped"), "{summary}");
    mesh.assert_clean();
}
