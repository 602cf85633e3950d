#![allow(clippy::expect_used, clippy::unwrap_used)]
//! The local mesh end to end (netns mode): `meshward up -d` on the seed tutorials, their curl
//! commands through `meshward exec` / `meshward run`, and `meshward down` leaving nothing behind.
//!
//! Needs root, `ip`, `iptables`, `setpriv` and `curl` (Debian: iproute2, iptables, util-linux,
//! curl; `.ci/run` installs them) and the `meshward-proxy` binary (built by `cargo test
//! --workspace`, or `cargo build -p meshward-proxy`). Without them the tests say so and pass.
//! Meshes are global to the machine, so the tests take turns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

static ONE_MESH_AT_A_TIME: Mutex<()> = Mutex::new(());

fn seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seeds")
}

fn proxy_binary() -> Option<PathBuf> {
    let meshward = PathBuf::from(env!("CARGO_BIN_EXE_meshward"));
    let candidate = meshward.parent()?.join("meshward-proxy");
    candidate.is_file().then_some(candidate)
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Why the mesh cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if !cfg!(target_os = "linux") || !is_root() {
        return Some("not root on Linux".to_owned());
    }
    let missing: Vec<&str> = ["ip", "iptables", "setpriv", "curl"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        return Some(format!("missing tools: {}", missing.join(", ")));
    }
    if proxy_binary().is_none() {
        return Some("meshward-proxy is not built (cargo build -p meshward-proxy)".to_owned());
    }
    None
}

/// A mesh home in a temporary directory; dropping it runs `meshward down`, so a failing test
/// still removes everything.
struct Mesh {
    home: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Mesh {
    fn new() -> Option<Self> {
        if let Some(why) = skip_reason() {
            eprintln!("SKIPPED: the local mesh test needs root, iproute2, iptables, curl: {why}");
            return None;
        }
        let turn = ONE_MESH_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mesh = Self {
            home: tempfile::tempdir().unwrap(),
            _turn: turn,
        };
        // A mesh left by an earlier, killed run would make `up` refuse.
        mesh.down_quietly();
        Some(mesh)
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_meshward"))
            .args(args)
            .env("MESHWARD_HOME", self.home.path())
            .env("MESHWARD_PROXY", proxy_binary().unwrap())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn up(&self, files: &[PathBuf]) {
        let mut args = vec!["up".to_owned(), "-d".to_owned(), "-f".to_owned()];
        args.extend(files.iter().map(|f| f.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.cmd(&args);
        assert!(
            out.status.success(),
            "meshward up failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn down(&self) {
        let out = self.cmd(&["down"]);
        assert!(
            out.status.success(),
            "meshward down failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn down_quietly(&self) {
        let _ = self.cmd(&["down"]);
    }

    /// `curl` inside a pod (`exec` target or `run` one-off pod args): exit code, HTTP code and
    /// body.
    fn curl(&self, how: &[&str], url: &str, extra: &[&str]) -> Curl {
        let mut args: Vec<&str> = how.to_vec();
        args.extend(["--", "curl", "-sS", "-m", "10", "-w", "\n%{http_code}"]);
        args.extend(extra);
        args.push(url);
        let out = self.cmd(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        Curl {
            exit: out.status.code(),
            http: code.trim().to_owned(),
            body: body.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Everything `down` must remove is gone.
    fn assert_clean(&self) {
        let netns = run("ip", &["netns", "list"]);
        assert!(
            !netns.lines().any(|l| l.starts_with("mw-")),
            "namespaces left: {netns}"
        );
        let links = run("ip", &["-o", "link", "show"]);
        assert!(
            !links
                .lines()
                .filter_map(|l| l.split(':').nth(1))
                .any(|n| n.trim() == "mw0" || n.trim().starts_with("mw-")),
            "links left: {links}"
        );
        for table in ["filter", "nat"] {
            let rules = run("iptables", &["-t", table, "-S"]);
            assert!(!rules.contains("meshward"), "host rules left: {rules}");
        }
        let etc: Vec<_> = std::fs::read_dir("/etc/netns")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("mw-"))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        assert!(etc.is_empty(), "/etc/netns entries left: {etc:?}");
        // Every process of the mesh had the home directory on its command line.
        let home = self.home.path().to_string_lossy().into_owned();
        let procs: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter_map(|e| {
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let zombie = stat
                    .rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
                (!zombie && cmdline.contains(&home)).then_some(cmdline)
            })
            .collect();
        assert!(procs.is_empty(), "processes left: {procs:?}");
        let files: Vec<String> = std::fs::read_dir(self.home.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            files.iter().all(|f| f == "ca"),
            "only the mesh CA may stay in the mesh home: {files:?}"
        );
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.down_quietly();
    }
}

#[derive(Debug)]
struct Curl {
    exit: Option<i32>,
    http: String,
    body: String,
    stderr: String,
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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
