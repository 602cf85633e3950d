#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Golden tests of `meshward analyze`: every seed example, and one crafted file per finding
//! (`tests/data/analyze/<CODE>-trap.yaml`) with its correct form (`<CODE>-ok.yaml`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `meshward analyze` from the workspace root (so paths in the output are stable), without
/// colour; returns stdout and the exit code.
fn analyze(args: &[&str]) -> (String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshward"))
        .arg("analyze")
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("run meshward");
    (
        String::from_utf8(out.stdout).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

fn snapshot_name(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .trim_end_matches(".yaml")
        .to_owned()
}

#[test]
fn seeds() {
    let mut dirs: Vec<_> = std::fs::read_dir(root().join("examples/seeds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 5);
    for dir in dirs {
        let rel = format!(
            "examples/seeds/{}",
            dir.file_name().unwrap().to_str().unwrap()
        );
        let (out, code) = analyze(&["-f", &rel]);
        assert_eq!(
            code, 0,
            "{rel}: the seeds are real tutorials, no errors\n{out}"
        );
        insta::assert_snapshot!(format!("seed-{}", snapshot_name(&rel)), out);
    }
}

#[test]
fn all_seeds_together_have_no_errors() {
    let (out, code) = analyze(&["-f", "examples/seeds/", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["errors"], 0);
    let findings = v["findings"].as_array().unwrap();
    let found = |code: &str, file_end: &str, stage: Option<&str>| {
        findings.iter().any(|f| {
            f["code"] == code
                && f["file"].as_str().unwrap().ends_with(file_end)
                && match stage {
                    Some(s) => f["stages"]
                        .as_array()
                        .is_some_and(|st| st.iter().any(|x| x == s)),
                    None => f.get("stages").is_none(),
                }
        })
    };
    // The traps the seed documents contain (their policytests' notes), each where it lives:
    // quoted condition keys (001), a client-address rule behind a gateway (001), a DENY on a
    // namespace that does not exist (002), and deny-all leaving workloads with no ALLOW rule
    // (000, 002) in the files as a whole;
    assert!(
        found("MW0007", "08-authz-frontend-backend.yaml", None),
        "{out}"
    );
    assert!(
        found(
            "MW0012",
            "001-production-mtls-rbac-jwt/10-authz-rbac.yaml",
            None
        ),
        "{out}"
    );
    assert!(found("IST0101", "04-authz-deny.yaml", None), "{out}");
    assert!(
        found("MW0013", "08-zero-trust-deny-all.yaml", None),
        "{out}"
    );
    // and in the tutorial stages: principal rules while mTLS is PERMISSIVE (002's exercise), a
    // RequestAuthentication nothing requires yet (004), and the real DENY deny-all that no
    // ALLOW can override (000's variant).
    assert!(
        found(
            "MW0003",
            "09-zero-trust-allow-frontend.yaml",
            Some("seed-002-exercise-permissive-with-zero-trust")
        ),
        "{out}"
    );
    assert!(
        found(
            "MW0004",
            "02-jwt.yaml",
            Some("seed-004-request-authentication")
        ),
        "{out}"
    );
    assert!(
        found(
            "MW0009",
            "03-backend-allow-frontend.yaml",
            Some("seed-000-variant-real-deny-all")
        ),
        "{out}"
    );
    // A finding of the files as a whole is reported once, not again for each stage that
    // includes the same file.
    let quoted = findings
        .iter()
        .filter(|f| {
            f["code"] == "MW0007"
                && f["file"]
                    .as_str()
                    .unwrap()
                    .ends_with("08-authz-frontend-backend.yaml")
        })
        .count();
    assert_eq!(quoted, 1, "{out}");
}

fn crafted() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("crates/cli/tests/data/analyze"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_owned())
        .collect();
    files.sort();
    files
}

#[test]
fn crafted_files() {
    let files = crafted();
    assert!(files.len() >= 30, "{files:?}");
    for file in files {
        let rel = format!("crates/cli/tests/data/analyze/{file}");
        let (out, code) = analyze(&["-f", &rel]);
        let wanted = file.split('-').next().unwrap();
        if file.ends_with("-trap.yaml") {
            assert!(
                out.contains(&format!("[{wanted}]")),
                "{file} must report {wanted}:\n{out}"
            );
        } else {
            assert!(
                out.starts_with("✔ No validation issues"),
                "{file} is the correct form and must be quiet:\n{out}"
            );
        }
        // Exit non-zero on errors only.
        assert_eq!(
            code,
            i32::from(out.contains("\nError [") || out.starts_with("Error [")),
            "{file}"
        );
        insta::assert_snapshot!(snapshot_name(&rel), out);
    }
}

#[test]
fn json_and_yaml_output() {
    let (json, code) = analyze(&[
        "-f",
        "crates/cli/tests/data/analyze/IST0106-trap.yaml",
        "-o",
        "json",
    ]);
    assert_eq!(code, 1);
    insta::assert_snapshot!("IST0106-trap-json", json);
    let (yaml, code) = analyze(&[
        "-f",
        "crates/cli/tests/data/analyze/MW0007-trap.yaml",
        "-o",
        "yaml",
    ]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("MW0007-trap-yaml", yaml);
}
