#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Golden tests of `meshward describe`: one or two interesting workloads of every seed example,
//! as text and as JSON, and the live mesh of seed 000 described by its control plane, which
//! must say what the files say.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `meshward describe` from the workspace root (so paths in the output are stable),
/// without colour; returns stdout, failing on a non-zero exit.
fn describe(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_meshward"))
        .arg("describe")
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env("MESHWARD_CONTROL_PLANE", "http://127.0.0.1:1")
        .output()
        .expect("run meshward");
    assert!(
        out.status.success(),
        "meshward describe {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `describe pod NAME -n NS -f <seed files> [extra]`.
fn describe_seed(seed: &str, name: &str, namespace: &str, extra: &[&str]) -> String {
    let files = support::seed_files(seed);
    let mut args = vec!["pod", name, "-n", namespace, "-f"];
    args.extend(files.iter().map(String::as_str));
    args.extend(extra);
    describe(&args)
}

const SEEDS: &[(&str, &str, &str)] = &[
    ("000-frontend-backend-mtls-authz", "backend", "default"),
    ("001-production-mtls-rbac-jwt", "backend", "production"),
    ("002-bookinfo-mtls-zero-trust", "ratings", "bookinfo"),
    ("002-bookinfo-mtls-zero-trust", "frontend", "bookinfo"),
    ("003-demo-mtls-and-rbac", "backend-v1", "demo"),
    ("004-online-boutique-mtls-jwt-authz", "frontend", "default"),
    (
        "004-online-boutique-mtls-jwt-authz",
        "productcatalogservice",
        "default",
    ),
];

#[test]
fn seeds_as_text() {
    for (seed, name, namespace) in SEEDS {
        let out = describe_seed(seed, name, namespace, &[]);
        let number = seed.split('-').next().unwrap();
        insta::assert_snapshot!(format!("seed-{number}-{name}"), out);
    }
}

#[test]
fn seeds_as_json() {
    for (seed, name, namespace) in SEEDS {
        let out = describe_seed(seed, name, namespace, &["-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["workload"]["namespace"], *namespace, "{seed}");
        let number = seed.split('-').next().unwrap();
        if *number == *"001" {
            insta::assert_snapshot!(format!("seed-{number}-{name}-json"), out);
        }
    }
}

#[test]
fn yaml_output_reads_back_like_json() {
    let files = support::seed_files("000-frontend-backend-mtls-authz");
    let mut args = vec!["workload", "frontend", "-f"];
    args.extend(files.iter().map(String::as_str));
    let json = describe(&[args.as_slice(), &["-o", "json"]].concat());
    let yaml = describe(&[args.as_slice(), &["-o", "yaml"]].concat());
    assert!(
        yaml.contains("identity: spiffe://cluster.local/ns/default/sa/frontend-sa"),
        "{yaml}"
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["authorization"]["policies"][0]["policy"],
        "default/deny-all"
    );
}

#[test]
fn a_replica_name_and_an_unknown_name() {
    let files = support::seed_files("000-frontend-backend-mtls-authz");
    let mut args = vec!["pod", "backend-5c5944c58c-k8x2c", "-f"];
    args.extend(files.iter().map(String::as_str));
    let out = describe(&args);
    assert!(
        out.contains("Resolved: pod backend-5c5944c58c-k8x2c is a replica of Deployment backend"),
        "{out}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_meshward"))
        .args(["describe", "workload", "nope", "-f"])
        .args(&files)
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no workload `nope` in namespace `default`; workloads there:"),
        "{stderr}"
    );
}

#[test]
fn without_files_it_asks_the_control_plane() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshward"))
        .args(["describe", "pod", "backend"])
        .env("MESHWARD_CONTROL_PLANE", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the control plane"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lines of a description that must not depend on where the resources came from: the
/// identity, the effective modes, the policies and their rules, the verdict — without
/// `(file:line)` suffixes, which name the mesh's generated files when live.
fn essential(description: &str) -> Vec<String> {
    let keep = [
        "Service account:",
        "Identity:",
        "Sidecar:",
        "Workload mTLS mode:",
        "ALLOW ",
        "DENY ",
        "rule ",
        "- ",
        "Client TLS",
    ];
    description
        .lines()
        .map(str::trim)
        .filter(|l| keep.iter().any(|k| l.starts_with(k)))
        .map(|l| match l.rfind("  (") {
            Some(at) if l.ends_with(')') => l[..at].to_owned(),
            _ => l.to_owned(),
        })
        // Live pods carry the injection decision pinned as an annotation by `meshward up`;
        // whether there is a sidecar must agree, not why.
        .map(|l| match l.strip_prefix("Sidecar:") {
            Some(rest) => format!("Sidecar: {}", rest.trim().split(' ').next().unwrap()),
            None => l,
        })
        .collect()
}

#[test]
fn live_mesh_matches_the_files() {
    let Some(mesh) = support::Mesh::new() else {
        return;
    };
    let dir = support::seeds().join("000-frontend-backend-mtls-authz");
    mesh.up(std::slice::from_ref(&dir));
    let live = mesh.cmd(&["describe", "pod", "backend-0", "-n", "default"]);
    assert!(
        live.status.success(),
        "{}",
        String::from_utf8_lossy(&live.stderr)
    );
    let live = String::from_utf8(live.stdout).unwrap();
    // Policies are located in the files given to `up`, not in the copy it generated.
    assert!(
        live.contains(
            "examples/seeds/000-frontend-backend-mtls-authz/03-backend-allow-frontend.yaml:9)"
        ) && !live.contains("resources.json"),
        "{live}"
    );
    // The Deployment name works too: the running mesh knows its pods.
    let by_deployment = mesh.cmd(&["describe", "pod", "backend", "-n", "default"]);
    assert!(by_deployment.status.success());
    let by_deployment = String::from_utf8(by_deployment.stdout).unwrap();
    assert!(
        by_deployment.contains("Resolved: Deployment backend runs 1 pod(s); describing backend-0"),
        "{by_deployment}"
    );
    mesh.down();
    mesh.assert_clean();
    let offline = describe_seed("000-frontend-backend-mtls-authz", "backend", "default", &[]);
    let (live, offline) = (essential(&live), essential(&offline));
    assert!(live.len() >= 8, "{live:#?}");
    assert_eq!(live, offline);
}
