#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! The diagnostics commands against a real local mesh (netns mode): seed 000 with STRICT mTLS,
//! deny-all and allow-frontend, a frontend request (200) and an intruder's (403), then
//! `proxy-status`, `proxy-config secret|listeners|clusters|policies` for the backend pod, and
//! `edges`; then `check` and `analyze` without `-f` (against the running control plane) beside
//! the same commands on the seed's manifests, before and after `meshward apply` of a DENY.
//!
//! Needs root, `ip`, `iptables`, `setpriv`, `curl` and the `meshward-proxy` binary (`cargo build
//! -p meshward-proxy`); without them the test says so and passes. Meshes are global to the
//! machine, so tests take turns (`support::Mesh`).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Mesh, seeds};

fn json(mesh: &Mesh, args: &[&str]) -> Value {
    let out = mesh.cmd(args);
    assert!(
        out.status.success(),
        "meshward {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "meshward {args:?}: not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn text(mesh: &Mesh, args: &[&str]) -> String {
    let out = mesh.cmd(args);
    assert!(
        out.status.success(),
        "meshward {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `proxy-status -o json` once every listed proxy is connected and synced (ACKs follow
/// readiness by a few milliseconds), or the last answer after a few seconds.
fn synced_proxies(mesh: &Mesh) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let proxies = json(mesh, &["proxy-status", "-o", "json"]);
        let list = proxies.as_array().unwrap().clone();
        let settled = !list.is_empty()
            && list
                .iter()
                .all(|p| p["status"] == "CONNECTED" && p["config"] == "SYNCED");
        if settled || Instant::now() > deadline {
            return list;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_connected_and_synced(proxies: &[Value]) {
    let now = jiff::Timestamp::now();
    for p in proxies {
        assert_eq!(p["status"], "CONNECTED", "{p}");
        assert_eq!(p["config"], "SYNCED", "{p}");
        assert_eq!(p["versionSent"], p["versionAcked"], "{p}");
        assert!(p["lastAckAt"].is_string(), "{p}");
        let expiry: jiff::Timestamp = p["certificate"]["notAfter"]
            .as_str()
            .unwrap_or_else(|| panic!("no certificate expiry: {p}"))
            .parse()
            .unwrap();
        assert!(expiry > now, "the certificate has expired: {p}");
    }
}

/// Times, serials, fingerprints and versions change from run to run: `[TIME]`, `[HEX]`, `[N]`.
fn redact(output: &str) -> String {
    let is_time = |w: &str| {
        w.len() >= 20
            && w.ends_with('Z')
            && w.as_bytes().get(4) == Some(&b'-')
            && w.as_bytes().get(10) == Some(&b'T')
    };
    let is_hex = |w: &str| w.len() >= 12 && w.chars().all(|c| c.is_ascii_hexdigit());
    let mut out = String::new();
    let mut previous = String::new();
    for piece in output.split_inclusive([' ', '\n']) {
        let word = piece.trim_end_matches([' ', '\n']);
        let separator = &piece[word.len()..];
        let core = word.trim_matches(|c| matches!(c, '"' | '(' | ')' | ',' | ';'));
        let replacement = if is_time(core) {
            Some("[TIME]")
        } else if is_hex(core) {
            Some("[HEX]")
        } else if !core.is_empty()
            && core.chars().all(|c| c.is_ascii_digit())
            && matches!(
                previous.as_str(),
                "version" | "state" | "proxy:" | "controlPlane:"
            )
        {
            Some("[N]")
        } else {
            None
        };
        match replacement {
            Some(r) => out.push_str(&word.replace(core, r)),
            None => out.push_str(word),
        }
        out.push_str(separator);
        if !word.is_empty() {
            previous = core.to_owned();
        }
    }
    out
}

/// A snapshot of `output` redacted, with the repository's path (where the seed manifests given
/// to `up` live) as `[REPO]`.
fn redacted(name: &str, output: &str) {
    let repo = std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .unwrap()
        .display()
        .to_string();
    let output = output.replace(&repo, "[REPO]");
    insta::with_settings!({prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, redact(&output));
    });
}

#[test]
fn seed_000_proxy_status_proxy_config_and_edges() {
    let Some(mesh) = Mesh::new() else { return };
    let dir = seeds().join("000-frontend-backend-mtls-authz");
    mesh.up(std::slice::from_ref(&dir));

    // Every proxy: connected, synced, and holding a certificate that has not expired.
    let proxies = synced_proxies(&mesh);
    let names: Vec<&str> = proxies
        .iter()
        .map(|p| p["workload"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["backend-0", "frontend-0"], "{proxies:?}");
    assert_connected_and_synced(&proxies);
    let table = text(&mesh, &["proxy-status"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("default/backend-0"), "{table}");

    // Traffic: the frontend is allowed, the intruder (sidecar, service account default) is not.
    let c = mesh.curl(&["exec", "deploy/frontend"], "http://backend/", &[]);
    assert_eq!((c.exit, c.http.as_str()), (Some(0), "200"), "{c:?}");
    let c = mesh.curl(&["run", "test", "-n", "default"], "http://backend", &[]);
    assert_eq!(
        (c.http.as_str(), c.body.as_str()),
        ("403", "RBAC: access denied"),
        "{c:?}"
    );

    // The long-running proxies are still connected and synced.
    let proxies = synced_proxies(&mesh);
    let running: Vec<Value> = proxies
        .into_iter()
        .filter(|p| p["workload"] == "backend-0" || p["workload"] == "frontend-0")
        .collect();
    assert_eq!(running.len(), 2, "{running:?}");
    assert_connected_and_synced(&running);

    // What the backend's proxy enforces, read from its admin endpoint.
    let backend = ["deploy/backend", "-n", "default"];
    let section = |name: &str, format: &str| {
        let mut args = vec!["proxy-config", name];
        args.extend(backend);
        args.extend(["-o", format]);
        text(&mesh, &args)
    };
    redacted("live-proxy-config-secret", &section("secret", "yaml"));
    redacted(
        "live-proxy-config-listeners",
        &section("listeners", "table"),
    );
    redacted("live-proxy-config-clusters", &section("clusters", "table"));
    redacted("live-proxy-config-policies", &section("policies", "table"));
    let secret = json(
        &mesh,
        &["proxy-config", "secret", "deploy/backend", "-o", "json"],
    );
    assert_eq!(
        secret["identity"],
        "spiffe://cluster.local/ns/default/sa/backend-sa"
    );

    // Edges, from the deciding (inbound) side.
    let edges = json(&mesh, &["edges", "-n", "default", "-o", "json"]);
    let edge = |source: &str| {
        edges
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                e["source"].as_str().unwrap().starts_with(source)
                    && e["destination"] == "default/backend-0"
            })
            .unwrap_or_else(|| panic!("no edge {source} → backend in {edges}"))
            .clone()
    };
    let allowed = edge("default/frontend");
    assert!(allowed["allowed"].as_u64().unwrap() >= 1, "{allowed}");
    assert!(allowed["requests"].as_u64().unwrap() >= 1, "{allowed}");
    assert_eq!(allowed["security"], "mutual_tls", "{allowed}");
    assert_eq!(
        allowed["sourcePrincipals"],
        serde_json::json!(["spiffe://cluster.local/ns/default/sa/frontend-sa"]),
        "{allowed}"
    );
    assert_eq!(
        allowed["destinationPrincipals"],
        serde_json::json!(["spiffe://cluster.local/ns/default/sa/backend-sa"]),
        "{allowed}"
    );
    let denied = edge("default/test");
    assert!(denied["denied"].as_u64().unwrap() >= 1, "{denied}");
    assert_eq!(denied["security"], "mutual_tls", "{denied}");
    assert_eq!(
        denied["sourcePrincipals"],
        serde_json::json!(["spiffe://cluster.local/ns/default/sa/default"]),
        "{denied}"
    );
    let table = text(&mesh, &["edges"]);
    assert!(table.contains("default/frontend-0"), "{table}");

    saved_answers_read_as_live(&mesh);
    check_and_analyze_live(&mesh, &dir);

    mesh.down();
    mesh.assert_clean();
}

/// `-f`: proxy-config, edges and proxy-status read from saved admin answers (taken inside the
/// pods with `exec … curl`, and from the control plane) say what they say live.
fn saved_answers_read_as_live(mesh: &Mesh) {
    let saved = tempfile::tempdir().unwrap();
    let save = |name: &str, body: String| {
        let path = saved.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let admin = |pod: &str, path: &str| {
        text(
            mesh,
            &[
                "exec",
                pod,
                "--",
                "curl",
                "-sf",
                &format!("http://localhost:15000{path}"),
            ],
        )
    };
    let dump = save("dump.json", admin("deploy/backend", "/config_dump"));
    let certs = save("certs.json", admin("deploy/backend", "/certs"));
    for section in ["listeners", "clusters", "policies"] {
        let live = json(
            mesh,
            &["proxy-config", section, "deploy/backend", "-o", "json"],
        );
        let offline = json(mesh, &["proxy-config", section, "-f", &dump, "-o", "json"]);
        assert_eq!(live, offline, "proxy-config {section}");
    }
    let live = json(
        mesh,
        &["proxy-config", "secret", "deploy/backend", "-o", "json"],
    );
    let offline = json(
        mesh,
        &[
            "proxy-config",
            "secret",
            "backend-0",
            "-f",
            &certs,
            "-o",
            "json",
        ],
    );
    assert_eq!(live, offline, "proxy-config secret");
    // The wrong saved answer for the section is refused, naming the file.
    let out = mesh.cmd(&["proxy-config", "secret", "-f", &dump]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&dump) && err.contains("ROOTCA"), "{err}");

    let scrapes = [
        save(
            "frontend.prom",
            admin("deploy/frontend", "/stats/prometheus"),
        ),
        save("backend.prom", admin("deploy/backend", "/stats/prometheus")),
    ];
    let live = json(mesh, &["edges", "-o", "json"]);
    let offline = json(
        mesh,
        &["edges", "-o", "json", "-f", &scrapes[0], &scrapes[1]],
    );
    assert_eq!(live, offline, "edges");
    let out = mesh.cmd(&["edges", "-f", &dump]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{dump}:1:")), "{err}");

    let proxies = save(
        "proxies.json",
        support::run("curl", &["-sf", "http://127.0.0.1:15014/api/v1/proxies"]),
    );
    let live = json(mesh, &["proxy-status", "-o", "json"]);
    let offline = json(mesh, &["proxy-status", "-f", &proxies, "-o", "json"]);
    assert_eq!(live, offline, "proxy-status");
}

/// The seed's manifests: what `up` gives the control plane (its PolicyTests declare test cases,
/// which `up` does not load).
fn manifests(seed: &Path) -> Vec<String> {
    [
        "00-apps.yaml",
        "01-peer-authentication.yaml",
        "02-deny-all.yaml",
        "03-backend-allow-frontend.yaml",
    ]
    .iter()
    .map(|f| seed.join(f).display().to_string())
    .collect()
}

/// `meshward check ARGS -o json`, live (no `-f`) or on `files`.
fn check(mesh: &Mesh, args: &[&str], files: Option<&[String]>) -> Value {
    let mut all: Vec<&str> = vec!["check", "-o", "json"];
    all.extend(args);
    if let Some(files) = files {
        all.push("-f");
        all.extend(files.iter().map(String::as_str));
    }
    json(mesh, &all)
}

/// What must not depend on where the configuration was read: the verdict, why, and the trace
/// policy by policy and rule by rule (origins aside: the running mesh loaded the seed through
/// `up`'s generated configuration, so its `file:line` are there).
fn decision(v: &Value) -> Value {
    let mut policies = v["policies"].clone();
    for p in policies.as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("origin");
        for r in p["rules"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("origin");
        }
    }
    serde_json::json!({
        "verdict": v["verdict"],
        "reason": v["reason"],
        "deciding_policy": v["deciding_policy"],
        "transport": v["transport"],
        "server_mtls": v["server_mtls"],
        "response": v["response"],
        "policies": policies,
    })
}

/// Live `check` once the destination's sidecar has ACKed the configuration (pods come and go
/// in this test, and each change is pushed), or the last answer after a few seconds.
fn check_synced(mesh: &Mesh, args: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = check(mesh, args, None);
        if v["live"]["sidecar"]["state"] == "SYNCED" || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A DENY of POST to the backend's port, and an ALLOW whose selector matches no pod: what the
/// live tests apply to a running control plane.
const APPLIED: &str = include_str!("data/diagnostics/applied-live.yaml");

/// (code, level, resource, message) of each finding of an `analyze -o json` answer.
fn findings(v: &Value) -> Vec<(String, String, String, String)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (s("code"), s("level"), s("resource"), s("message"))
        })
        .collect()
}

/// A table answer of `analyze` with its findings (a line and its `fix:` line) sorted as text:
/// the command sorts them by file, and the files are in temporary folders of random names.
fn findings_sorted(table: &str) -> String {
    let mut blocks: Vec<String> = Vec::new();
    let mut summary = String::new();
    for line in table.lines() {
        if line.starts_with("    ") {
            if let Some(last) = blocks.last_mut() {
                last.push_str(&format!("{line}\n"));
            }
        } else if line.contains(" error(s), ") {
            summary = format!("{line}\n");
        } else {
            blocks.push(format!("{line}\n"));
        }
    }
    blocks.sort();
    blocks.concat() + &summary
}

/// [`findings`] of an offline answer about seed 000, with each Deployment named as the running
/// mesh names it: by its one pod.
fn findings_as_pods(v: &Value) -> Vec<(String, String, String, String)> {
    findings(v)
        .into_iter()
        .map(|(code, level, resource, message)| {
            let message = message
                .replace("default/frontend ", "default/frontend-0 ")
                .replace("default/backend ", "default/backend-0 ");
            (code, level, resource, message)
        })
        .collect()
}

fn check_and_analyze_live(mesh: &Mesh, seed: &Path) {
    let files = manifests(seed);
    let home = mesh.home.path().display().to_string();

    // An allowed and a denied request: the same decision as the manifests give offline, and
    // the backend's sidecar enforces what the answer was computed on.
    let allowed: &[&str] = &["--from", "default/frontend", "--to", "svc/backend:80"];
    let denied: &[&str] = &[
        "--principal",
        "cluster.local/ns/default/sa/default",
        "--to",
        "svc/backend:80",
    ];
    for (args, verdict) in [(allowed, "ALLOW"), (denied, "DENY")] {
        let live = check_synced(mesh, args);
        let offline = check(mesh, args, Some(&files));
        assert_eq!(live["verdict"], verdict, "{live}");
        assert_eq!(
            decision(&live),
            decision(&offline),
            "live {live}\noffline {offline}"
        );
        // The running mesh knows the pods; the manifests, the Deployment.
        assert_eq!(live["destination"], "default/backend-0", "{live}");
        assert_eq!(offline["destination"], "default/backend", "{offline}");
        let sidecar = &live["live"]["sidecar"];
        assert_eq!(sidecar["state"], "SYNCED", "{live}");
        assert_eq!(sidecar["warning"], Value::Null, "{live}");
        assert_eq!(sidecar["proxies"][0]["status"], "CONNECTED", "{live}");
    }
    let mut args = vec!["check"];
    args.extend(allowed);
    let table = text(mesh, &args);
    assert!(!table.contains("WARNING"), "{table}");
    redacted(
        "live-check-allowed-seed-000",
        &table.replace(&home, "[HOME]"),
    );

    // Analyze: the running mesh reports what the manifests report. The files know the
    // Deployment (`default/frontend`), the running mesh its pod (`default/frontend-0`).
    let live = json(mesh, &["analyze", "-o", "json"]);
    let mut args = vec!["analyze", "-o", "json", "-f"];
    args.extend(files.iter().map(String::as_str));
    let offline = json(mesh, &args);
    assert_eq!(
        findings(&live),
        findings_as_pods(&offline),
        "{live}\n{offline}"
    );

    // Applied: live check reflects the DENY at once, and the sidecar enforces it once SYNCED.
    let scratch = tempfile::tempdir().unwrap();
    let applied: PathBuf = scratch.path().join("applied.yaml");
    std::fs::write(&applied, APPLIED).unwrap();
    mesh.apply(std::slice::from_ref(&applied));
    let applied = applied.display().to_string();
    let post: &[&str] = &[
        "--from",
        "default/frontend",
        "--to",
        "svc/backend:80",
        "--method",
        "POST",
    ];
    let live = check_synced(mesh, post);
    assert_eq!(live["verdict"], "DENY", "{live}");
    assert_eq!(
        live["deciding_policy"], "default/deny-post rule 0",
        "{live}"
    );
    assert_eq!(
        live["policies"][0]["origin"],
        format!("{applied}:1 via meshward apply"),
        "{live}"
    );
    assert_eq!(live["live"]["sidecar"]["state"], "SYNCED", "{live}");
    let mut with_applied = files.clone();
    with_applied.push(applied.clone());
    let offline = check(mesh, post, Some(&with_applied));
    assert_eq!(
        decision(&live),
        decision(&offline),
        "live {live}\noffline {offline}"
    );
    // The push follows the store by milliseconds; the answer above may have come first.
    let mut last = None;
    let enforced = support::eventually(Duration::from_secs(5), || {
        let c = mesh.curl(
            &["exec", "deploy/frontend"],
            "http://backend/",
            &["-X", "POST"],
        );
        let denied = (c.http.as_str(), c.body.as_str()) == ("403", "RBAC: access denied");
        last = Some(c);
        denied
    });
    assert!(enforced, "the sidecar enforces what check said: {last:?}");
    let mut args = vec!["check"];
    args.extend(post);
    let table = text(mesh, &args).replace(&home, "[HOME]");
    redacted(
        "live-check-applied-deny-seed-000",
        &table.replace(&scratch.path().display().to_string(), "[DIR]"),
    );

    // Analyze again: what the files report offline, and the selector that matches no running
    // pod, on the applied policy.
    let out = mesh.cmd(&["analyze", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "warnings only");
    let live: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut args = vec!["analyze", "-o", "json", "-f"];
    args.extend(with_applied.iter().map(String::as_str));
    let offline = json(mesh, &args);
    let live_findings = findings(&live);
    for f in findings_as_pods(&offline) {
        assert!(live_findings.contains(&f), "{f:?} missing live: {live}");
    }
    let ghost = live["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "IST0127")
        .unwrap_or_else(|| panic!("no IST0127 for the selector matching nothing: {live}"));
    assert_eq!(ghost["resource"], "AuthorizationPolicy default/allow-ghost");
    assert_eq!(ghost["file"], applied.as_str());
    assert_eq!(ghost["source"], "applied");
    let table = text(mesh, &["analyze"]);
    redacted(
        "live-analyze-applied-seed-000",
        &findings_sorted(
            &table
                .replace(&scratch.path().display().to_string(), "[DIR]")
                .replace(&home, "[HOME]"),
        ),
    );
}
