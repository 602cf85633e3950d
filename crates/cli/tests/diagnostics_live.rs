#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! The diagnostics commands against a real local mesh (netns mode): seed 000 with STRICT mTLS,
//! deny-all and allow-frontend, a frontend request (200) and an intruder's (403), then
//! `proxy-status`, `proxy-config secret|listeners|clusters|policies` for the backend pod, and
//! `edges`.
//!
//! Needs root, `ip`, `iptables`, `setpriv`, `curl` and the `meshward-proxy` binary (`cargo build
//! -p meshward-proxy`); without them the test says so and passes. Meshes are global to the
//! machine, so tests take turns (`support::Mesh`).

mod support;

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
        let core = word.trim_matches(|c| matches!(c, '"' | '(' | ')' | ','));
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

fn redacted(name: &str, output: &str) {
    insta::with_settings!({prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, redact(output));
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

    mesh.down();
    mesh.assert_clean();
}
