#![allow(clippy::expect_used, clippy::unwrap_used)]
//! The local mesh end to end (netns mode): `meshward up -d` on the seed tutorials, their curl
//! commands through `meshward exec` / `meshward run`, and `meshward down` leaving nothing behind.
//!
//! Needs root, `ip`, `iptables`, `setpriv` and `curl` (Debian: iproute2, iptables, util-linux,
//! curl; `.ci/run` installs them) and the `meshward-proxy` binary (built by `cargo test
//! --workspace`, or `cargo build -p meshward-proxy`). Without them the tests say so and pass.
//! Meshes are global to the machine, so the tests take turns (`support::Mesh`).

mod support;

use std::path::Path;

use support::{Mesh, seeds};
#[test]
fn seed_000_frontend_backend_mtls_and_authorization() {
    let Some(mesh) = Mesh::new() else { return };
    let dir = seeds().join("000-frontend-backend-mtls-authz");
    let apps = dir.join("00-apps.yaml");
    let strict = dir.join("01-peer-authentication.yaml");
    let deny_all = dir.join("02-deny-all.yaml");

    // Step 2: mesh-wide STRICT.
    mesh.up(&[apps.clone(), strict.clone()]);
    let pods = mesh.cmd(&["get", "pods", "-o", "json"]);
    let pods: serde_json::Value = serde_json::from_slice(&pods.stdout).unwrap();
    let names: Vec<&str> = pods
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["frontend-0", "backend-0"]);
    assert!(
        pods.as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "Running" && p["ready"] == "2/2"),
        "{pods}"
    );
    // S000-7: the sidecar client is served, over mTLS with its own identity.
    let c = mesh.curl(
        &["exec", "deploy/frontend", "-n", "default"],
        "http://backend/",
        &[],
    );
    assert_eq!((c.exit, c.http.as_str()), (Some(0), "200"), "{c:?}");
    assert!(
        c.body
            .contains("identity: spiffe://cluster.local/ns/default/sa/frontend-sa"),
        "{c:?}"
    );
    assert!(c.body.contains("pod: default/backend-0"), "{c:?}");
    // S000-4: a client without a sidecar is reset under STRICT (curl exit 56), never a 403.
    let c = mesh.curl(
        &["run", "plain", "-n", "outside", "--no-sidecar"],
        "http://backend.default/",
        &[],
    );
    assert_eq!(c.exit, Some(56), "{c:?}");
    assert!(c.stderr.contains("reset"), "{c:?}");
    let log = mesh.cmd(&["logs", "deploy/backend", "-c", "proxy"]);
    assert!(
        String::from_utf8_lossy(&log.stdout).contains("STRICT"),
        "the backend proxy logs why it closed the plaintext connection"
    );
    mesh.down();
    mesh.assert_clean();

    // Step 5: deny-all alone (an ALLOW policy without rules) closes backend to frontend too.
    mesh.up(&[apps.clone(), strict.clone(), deny_all]);
    let c = mesh.curl(&["exec", "deploy/frontend"], "http://backend/", &[]);
    assert_eq!(c.http, "403", "{c:?}");
    assert_eq!(c.body, "RBAC: access denied", "{c:?}");
    mesh.down();

    // Step 7, the whole folder: only frontend-sa may call backend.
    mesh.up(std::slice::from_ref(&dir));
    // S000-1.
    let c = mesh.curl(&["exec", "deploy/frontend"], "http://backend/", &[]);
    assert_eq!((c.exit, c.http.as_str()), (Some(0), "200"), "{c:?}");
    // S000-2: the intruder `kubectl run test` (sidecar, service account default) gets 403.
    let c = mesh.curl(&["run", "test", "-n", "default"], "http://backend", &[]);
    assert_eq!(c.http, "403", "{c:?}");
    assert_eq!(c.body, "RBAC: access denied", "{c:?}");
    // S000-4 again, with every policy in place.
    let c = mesh.curl(
        &["run", "test", "-n", "outside", "--no-sidecar"],
        "http://backend.default",
        &[],
    );
    assert_eq!(c.exit, Some(56), "{c:?}");
    // S000-5: the namespace allow-nothing still closes frontend.
    let c = mesh.curl(&["exec", "deploy/backend"], "http://frontend", &[]);
    assert_eq!(c.http, "403", "{c:?}");
    // One-off pods are gone once their command ends.
    let pods = mesh.cmd(&["get", "pods", "-o", "json"]);
    let pods: serde_json::Value = serde_json::from_slice(&pods.stdout).unwrap();
    assert_eq!(pods.as_array().unwrap().len(), 2, "{pods}");
    mesh.down();
    mesh.assert_clean();
}

#[test]
fn down_without_a_mesh_is_harmless() {
    let Some(mesh) = Mesh::new() else { return };
    mesh.down();
    mesh.assert_clean();
}

/// The pre-signed test tokens of seed 004's policytest: the valid one (exp 2100) comes first,
/// the post's expired one (exp 2023-05-31) is the other.
fn seed_004_tokens(dir: &Path) -> (String, String) {
    let text = std::fs::read_to_string(dir.join("policytest.yaml")).unwrap();
    let tokens: Vec<&str> = text
        .split("Bearer ")
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
                .next()
                .unwrap()
        })
        .collect();
    let valid = tokens[0];
    let expired = tokens.iter().find(|t| **t != valid).unwrap();
    (
        format!("Authorization: Bearer {valid}"),
        format!("Authorization: Bearer {expired}"),
    )
}

#[test]
fn seed_004_online_boutique_mtls_jwt_and_header_rule() {
    let Some(mesh) = Mesh::new() else { return };
    let dir = seeds().join("004-online-boutique-mtls-jwt-authz");
    let (valid, expired) = seed_004_tokens(&dir);
    let from_proxy = ["exec", "deploy/productcatalogservice", "-c", "proxy"];
    let from_app = ["exec", "deploy/productcatalogservice"];

    // Before mtls-ns.yaml: PERMISSIVE, the post's curl from the istio-proxy container (plaintext,
    // not captured) is served (S004-1).
    mesh.up(&[dir.join("00-apps.yaml")]);
    let c = mesh.curl(&from_proxy, "http://frontend:80/", &[]);
    assert_eq!((c.exit, c.http.as_str()), (Some(0), "200"), "{c:?}");
    assert!(c.body.contains("identity: none (plaintext)"), "{c:?}");
    mesh.down();

    // STRICT + RequestAuthentication.
    mesh.up(&[
        dir.join("00-apps.yaml"),
        dir.join("01-mtls-ns.yaml"),
        dir.join("02-jwt.yaml"),
    ]);
    // S004-2 / S004-7: as run in the post, plaintext into STRICT: reset (curl exit 56).
    let c = mesh.curl(&from_proxy, "http://frontend:80/", &[]);
    assert_eq!(c.exit, Some(56), "{c:?}");
    // S004-8: through the sidecar without a token: 200 (a RequestAuthentication alone never
    // requires one).
    let c = mesh.curl(&from_app, "http://frontend:80/", &[]);
    assert_eq!(c.http, "200", "{c:?}");
    // S004-9: a valid token: 200, and the token is forwarded (forwardOriginalToken).
    let c = mesh.curl(&from_app, "http://frontend:80/", &["-H", &valid]);
    assert_eq!(c.http, "200", "{c:?}");
    assert!(c.body.contains("authorization: Bearer"), "{c:?}");
    // S004-10: the post's expired token: 401.
    let c = mesh.curl(&from_app, "http://frontend:80/", &["-H", &expired]);
    assert_eq!(c.http, "401", "{c:?}");
    assert_eq!(c.body, "Jwt is expired", "{c:?}");
    mesh.down();

    // Everything: require-jwt asks for the issuer claim and `hello: world`.
    mesh.up(std::slice::from_ref(&dir));
    // S004-11.
    let c = mesh.curl(&from_app, "http://frontend:80/", &[]);
    assert_eq!(c.http, "403", "{c:?}");
    // S004-12.
    let c = mesh.curl(
        &from_app,
        "http://frontend:80/",
        &["-H", &valid, "-H", "hello:world"],
    );
    assert_eq!(c.http, "200", "{c:?}");
    // S004-13.
    let c = mesh.curl(
        &from_app,
        "http://frontend:80/",
        &["-H", &valid, "-H", "hello:test"],
    );
    assert_eq!(
        (c.http.as_str(), c.body.as_str()),
        ("403", "RBAC: access denied"),
        "{c:?}"
    );
    // S004-14.
    let c = mesh.curl(&from_app, "http://frontend:80/", &["-H", &valid]);
    assert_eq!(c.http, "403", "{c:?}");
    // S004-15: as run in the post, even with token and header: reset.
    let c = mesh.curl(
        &from_proxy,
        "http://frontend:80/",
        &["-H", &valid, "-H", "hello:world"],
    );
    assert_eq!(c.exit, Some(56), "{c:?}");
    // S004-16: cartservice has no policy: allowed.
    let c = mesh.curl(
        &from_app,
        "http://cartservice:7070/",
        &["-H", &valid, "-H", "hello:world"],
    );
    assert_eq!(c.http, "200", "{c:?}");
    mesh.down();
    mesh.assert_clean();
}
