//! `meshward check` and `meshward analyze` without `-f`, against `meshward control-plane` run as
//! a process on 127.0.0.1 (no root, no pods): the live answer is the offline answer for the same
//! files, resources applied with `meshward apply` are marked as such, a destination with no
//! connected sidecar is warned about, and analyze judges applied policies against the
//! control plane's workloads.

// A test binary: a failed expectation is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use serde_json::Value;

mod support;

use support::control_plane::{ControlPlane, meshward};

fn start(dir: &Path, config: &Path) -> ControlPlane {
    support::control_plane::start(dir, config, &[])
}

/// Stdout of a command that must succeed.
fn stdout(url: &str, args: &[&str]) -> String {
    let out = meshward(url, args);
    assert!(
        out.status.success(),
        "meshward {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(url: &str, args: &[&str]) -> Value {
    let text = stdout(url, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{text}"))
}

/// The seed 000 manifests (its PolicyTests left out, as `meshward up` leaves them out), copied
/// to `dir`.
fn seed_000(dir: &Path) {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/seeds/000-frontend-backend-mtls-authz");
    std::fs::create_dir(dir).unwrap();
    for name in [
        "00-apps.yaml",
        "01-peer-authentication.yaml",
        "02-deny-all.yaml",
        "03-backend-allow-frontend.yaml",
    ] {
        std::fs::copy(seed.join(name), dir.join(name)).unwrap();
    }
}

/// A DENY of POST to the backend's port, and an ALLOW whose selector matches no pod: what the
/// live tests apply to a running control plane.
const APPLIED: &str = include_str!("data/diagnostics/applied-live.yaml");

/// The answer without what only a live answer has.
fn without_live(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("live");
    v
}

/// Temporary paths vary from run to run.
fn redact(text: &str, dir: &Path) -> String {
    text.replace(&dir.display().to_string(), "[DIR]")
}

fn snapshot(name: &str, text: &str, dir: &Path) {
    insta::with_settings!({prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, redact(text, dir));
    });
}

#[test]
fn live_check_and_analyze_answer_what_the_files_answer() {
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("mesh");
    seed_000(&watched);
    let cp = start(dir.path(), &watched);
    let url = cp.url.as_str();
    let files = watched.to_str().unwrap();

    // Allowed and denied: the same verdict, deciding policy and trace, file:line included.
    let cases: [&[&str]; 2] = [
        &["--from", "default/frontend", "--to", "svc/backend:80"],
        &[
            "--principal",
            "cluster.local/ns/default/sa/default",
            "--to",
            "svc/backend:80",
        ],
    ];
    for (case, verdict) in cases.into_iter().zip(["ALLOW", "DENY"]) {
        let mut live_args = vec!["check", "-o", "json"];
        live_args.extend(case);
        let live = json(url, &live_args);
        let mut offline_args = live_args.clone();
        offline_args.extend(["-f", files]);
        let offline = json(url, &offline_args);
        assert_eq!(live["verdict"], verdict, "{live}");
        assert_eq!(live["live"]["version"], 1, "{live}");
        // No proxy ever connected to this control plane: the answer says nothing shows what
        // the destination enforces.
        assert_eq!(live["live"]["sidecar"]["state"], "NOT_CONNECTED", "{live}");
        assert!(offline.get("live").is_none(), "{offline}");
        assert_eq!(without_live(live), offline);
    }
    let denied = stdout(
        url,
        &[
            "check",
            "--principal",
            "cluster.local/ns/default/sa/default",
            "--to",
            "svc/backend:80",
        ],
    );
    snapshot("live-check-denied", &denied, dir.path());

    // Before anything is applied: only the information that deny-all leaves frontend (a pure
    // client in seed 000) without an ALLOW rule.
    let clean = stdout(url, &["analyze"]);
    snapshot("live-analyze-clean", &clean, dir.path());

    // Applied: the DENY decides at once, and says where it came from.
    let applied = dir.path().join("applied.yaml");
    std::fs::write(&applied, APPLIED).unwrap();
    let applied = applied.to_str().unwrap();
    stdout(url, &["apply", "-f", applied]);
    let post = [
        "--from",
        "default/frontend",
        "--to",
        "svc/backend:80",
        "--method",
        "POST",
    ];
    let mut live_args = vec!["check", "-o", "json"];
    live_args.extend(post);
    let live = json(url, &live_args);
    assert_eq!(live["verdict"], "DENY", "{live}");
    assert_eq!(
        live["deciding_policy"], "default/deny-post rule 0",
        "{live}"
    );
    assert_eq!(live["live"]["version"], 2, "{live}");
    assert_eq!(
        live["policies"][0]["origin"],
        format!("{applied}:1 via meshward apply"),
        "{live}"
    );
    // Offline, the same files decide the same, located in the same files.
    let mut offline_args = live_args.clone();
    offline_args.extend(["-f", files, applied]);
    let offline = json(url, &offline_args);
    let unmarked = without_live(live)
        .to_string()
        .replace(" via meshward apply", "");
    assert_eq!(unmarked, offline.to_string());
    let mut table_args = vec!["check"];
    table_args.extend(post);
    let table = stdout(url, &table_args);
    snapshot("live-check-applied-deny", &table, dir.path());

    // Analyze: what the files say offline, plus the source of each finding.
    let live = json(url, &["analyze", "-o", "json"]);
    let offline = json(url, &["analyze", "-o", "json", "-f", files, applied]);
    assert_eq!(live["version"], 2);
    let mut findings = live["findings"].as_array().unwrap().clone();
    for f in &mut findings {
        let applied_resource = f["resource"]
            .as_str()
            .is_some_and(|r| r.contains("deny-post") || r.contains("allow-ghost"));
        let source = f.as_object_mut().unwrap().remove("source").unwrap();
        assert_eq!(
            source,
            if applied_resource {
                "applied"
            } else {
                "watched"
            },
            "{f}"
        );
    }
    assert_eq!(Value::Array(findings), offline["findings"]);
    let ghost = live["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "IST0127")
        .unwrap_or_else(|| panic!("no IST0127 for the selector matching nothing: {live}"));
    assert_eq!(ghost["resource"], "AuthorizationPolicy default/allow-ghost");
    assert_eq!(ghost["file"], applied);
    assert_eq!(ghost["line"], 22);
    let table = stdout(url, &["analyze"]);
    snapshot("live-analyze-applied", &table, dir.path());

    // The applied file alone says nothing about pods, so offline analyze cannot judge its
    // selector; the control plane knows the pods, so the live answer can.
    let alone = json(url, &["analyze", "-o", "json", "-f", applied]);
    let codes: Vec<&Value> = alone["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["code"])
        .collect();
    assert!(!codes.contains(&&Value::from("IST0127")), "{alone}");
}

#[test]
fn without_a_control_plane_live_check_and_analyze_say_so() {
    for args in [
        &["check", "--plaintext", "--to", "svc/backend:80"][..],
        &["analyze"][..],
    ] {
        let out = meshward("http://127.0.0.1:9", args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cannot reach the control plane"), "{err}");
    }
}
