#![allow(clippy::expect_used, clippy::unwrap_used)]
//! `meshward ca init|issue|inspect` end to end: the real binary, temporary CA directories, and the
//! issued files read back with `meshward-identity`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use meshward_identity::{CertificateAuthority, KeyAlgorithm, TrustDomain, WorkloadCertificate};
use serde_json::Value;

fn meshward(args: &[&str]) -> Output {
    command(args).output().expect("run meshward")
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshward"));
    cmd.args(args).env("NO_COLOR", "1");
    cmd
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> Output {
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    o
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .map_err(|e| format!("{e}: {}", text(o)))
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

fn init(ca: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["ca", "init", "--ca-dir", s(ca)];
    args.extend_from_slice(extra);
    meshward(&args)
}

fn issue(ca: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "ca",
        "issue",
        "--ca-dir",
        s(ca),
        "--namespace",
        "foo",
        "--service-account",
        "bar",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    meshward(&args)
}

fn inspect_json(file: &Path) -> Value {
    json(&ok(meshward(&["ca", "inspect", s(file), "-o", "json"])))
}

/// Reads `key.pem`, `cert-chain.pem` and `root-cert.pem` back as a workload would.
fn load_workload(out: &Path) -> WorkloadCertificate {
    let read = |name: &str| std::fs::read(out.join(name)).expect(name);
    WorkloadCertificate::from_pem(
        &read("key.pem"),
        &read("cert-chain.pem"),
        &read("root-cert.pem"),
    )
    .expect("issued files form usable credentials")
}

fn positions(inspected: &Value) -> Vec<&str> {
    inspected["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .map(|c| c["position"].as_str().expect("position"))
        .collect()
}

#[test]
fn init_creates_the_four_files_with_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = ok(init(&ca, &[]));
    let t = text(&out);
    assert!(t.starts_with("Created a self-signed root CA in "), "{t}");
    assert!(
        t.contains("cluster.local") && t.contains("ECDSA P-256"),
        "{t}"
    );
    for file in [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
    ] {
        assert!(ca.join(file).is_file(), "{file} missing");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&ca.join("ca-key.pem")), 0o600);
        assert_eq!(mode(&ca), 0o700);
    }
}

#[test]
fn second_init_keeps_the_existing_root() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let first = json(&ok(init(&ca, &["-o", "json"])));
    assert_eq!(first["status"], "created");
    assert_eq!(first["roots"], 1);
    assert_eq!(first["kind"], "self-signed root");
    let root = std::fs::read(ca.join("root-cert.pem")).unwrap();

    let again = ok(init(&ca, &["--key-algorithm", "rsa-2048"]));
    let t = text(&again);
    assert!(t.contains("already exists"), "{t}");
    assert!(t.contains("ECDSA P-256"), "the existing CA is shown: {t}");
    assert_eq!(std::fs::read(ca.join("root-cert.pem")).unwrap(), root);

    let again = json(&ok(init(&ca, &["-o", "json"])));
    assert_eq!(again["status"], "exists");
    assert_eq!(
        again["signing_certificate"]["sha256"],
        first["signing_certificate"]["sha256"]
    );
}

#[test]
fn default_ca_dir_is_under_home() {
    let home = tempfile::tempdir().unwrap();
    let out = ok(command(&["ca", "init", "-o", "yaml"])
        .env("HOME", home.path())
        .output()
        .unwrap());
    assert!(text(&out).contains("status: created"), "{}", text(&out));
    let ca = home.path().join(".meshward/ca");
    assert!(ca.join("ca-cert.pem").is_file());

    let out = command(&["ca", "init"])
        .env_remove("HOME")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("$HOME is not set"), "{}", text(&out));
}

#[test]
fn issue_writes_a_usable_workload_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, out) = (dir.path().join("ca"), dir.path().join("work/foo"));
    ok(init(&ca, &[]));
    let issued = json(&ok(issue(&ca, &out, &["-o", "json"])));
    assert_eq!(issued["identity"], "spiffe://cluster.local/ns/foo/sa/bar");
    assert_eq!(issued["chain_length"], 2);
    for file in ["key.pem", "cert-chain.pem", "root-cert.pem"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    #[cfg(unix)]
    assert_eq!(mode(&out.join("key.pem")), 0o600);

    let v = inspect_json(&out.join("cert-chain.pem"));
    assert_eq!(positions(&v), ["leaf", "root"]);
    let leaf = &v["certificates"][0];
    assert_eq!(
        leaf["uri_sans"],
        serde_json::json!(["spiffe://cluster.local/ns/foo/sa/bar"])
    );
    assert_eq!(leaf["spiffe_id"], "spiffe://cluster.local/ns/foo/sa/bar");
    assert_eq!(leaf["subject"], "");
    assert_eq!(leaf["serial"], issued["certificate"]["serial"]);
    assert_eq!(v["chain_linked"], true);
    assert_eq!(v["valid_now"], true);
    assert_eq!(v["problems"], serde_json::json!([]));
    let left = leaf["seconds_to_expiry"].as_i64().unwrap();
    assert!((24 * 3600 - 120..=24 * 3600).contains(&left), "{left}");

    let workload = load_workload(&out);
    assert_eq!(
        workload.identity().uri(),
        "spiffe://cluster.local/ns/foo/sa/bar"
    );
    assert_eq!(workload.chain().len(), 2);
    assert_eq!(
        std::fs::read(out.join("root-cert.pem")).unwrap(),
        std::fs::read(ca.join("root-cert.pem")).unwrap()
    );
}

#[cfg(unix)]
#[test]
fn reissuing_tightens_a_loose_key_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (ca, out) = (dir.path().join("ca"), dir.path().join("out"));
    ok(init(&ca, &[]));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("key.pem"), "old").unwrap();
    std::fs::set_permissions(out.join("key.pem"), std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(issue(&ca, &out, &[]));
    assert_eq!(mode(&out.join("key.pem")), 0o600);
    load_workload(&out);
}

#[test]
fn issue_table_and_inspect_table() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, out) = (dir.path().join("ca"), dir.path().join("out"));
    ok(init(&ca, &["--trust-domain", "example.org"]));
    let t = text(&ok(issue(
        &ca,
        &out,
        &["--trust-domain", "example.org", "--ttl", "90m"],
    )));
    assert!(
        t.starts_with("Issued spiffe://example.org/ns/foo/sa/bar\n"),
        "{t}"
    );
    assert!(t.contains("key.pem (mode 0600)"), "{t}");

    let t = text(&ok(meshward(&[
        "ca",
        "inspect",
        s(&out.join("cert-chain.pem")),
    ])));
    assert!(t.contains("2 certificates"), "{t}");
    assert!(
        t.contains("VALID CERT") && t.contains("SERIAL NUMBER"),
        "{t}"
    );
    assert!(t.contains("subject          (empty)"), "{t}");
    assert!(
        t.contains("SPIFFE identity  spiffe://example.org/ns/foo/sa/bar"),
        "{t}"
    );
    assert!(t.contains("1h 30m") || t.contains("1h 29m"), "{t}");
    assert!(t.contains("chain:      linked (leaf → root)"), "{t}");
    assert!(t.contains("valid now:  yes"), "{t}");
    assert!(!t.contains('\x1b'), "NO_COLOR: {t}");
}

#[test]
fn issue_without_a_ca_says_to_run_init() {
    let dir = tempfile::tempdir().unwrap();
    let out = issue(&dir.path().join("none"), &dir.path().join("out"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("run `meshward ca init`"),
        "{}",
        text(&out)
    );
}

#[test]
fn over_long_ttl_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, out) = (dir.path().join("ca"), dir.path().join("out"));
    ok(init(&ca, &[]));
    let refused = issue(&ca, &out, &["--ttl", "100d"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("max allowed TTL"),
        "{}",
        text(&refused)
    );
    assert!(!out.exists(), "nothing written for a refused request");

    // 90 days is the cap itself, so it is allowed.
    ok(issue(&ca, &out, &["--ttl", "90d"]));
}

#[test]
fn bad_durations_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, out) = (dir.path().join("ca"), dir.path().join("out"));
    let refused = issue(&ca, &out, &["--ttl", "1x"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused)
            .contains("invalid duration \"1x\": expected a number followed by s, m, h or d"),
        "{}",
        text(&refused)
    );
    let refused = init(&ca, &["--root-lifetime", "10y"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused).contains("invalid duration \"10y\""));
    // Past the year 9999 no X.509 date can express the end of validity.
    let refused = init(&ca, &["--root-lifetime", "99999999d"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused).contains("at most 36500d"),
        "{}",
        text(&refused)
    );
    assert!(!ca.exists());
}

#[test]
fn short_root_lifetime_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let v = json(&ok(init(&ca, &["--root-lifetime", "30d", "-o", "json"])));
    assert!(
        v["signing_certificate"]["expires_in"]
            .as_str()
            .is_some_and(|e| e.starts_with("29d 23h") || e.starts_with("30d 0h")),
        "{v}"
    );
}

fn write_plugin_dir(dir: &Path) {
    let root = CertificateAuthority::generate_root(
        TrustDomain::default(),
        KeyAlgorithm::EcdsaP256,
        Duration::from_secs(3650 * 24 * 3600),
    )
    .unwrap();
    let files = root
        .issue_intermediate(
            "cluster1 intermediate",
            KeyAlgorithm::EcdsaP256,
            Duration::from_secs(365 * 24 * 3600),
        )
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca-cert.pem"), files.ca_cert).unwrap();
    std::fs::write(dir.join("ca-key.pem"), files.ca_key).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), files.cert_chain).unwrap();
    std::fs::write(dir.join("root-cert.pem"), files.root_cert).unwrap();
}

#[test]
fn plugin_ca_issues_three_certificate_chains() {
    let dir = tempfile::tempdir().unwrap();
    let (plugin, ca, out) = (
        dir.path().join("cacerts"),
        dir.path().join("ca"),
        dir.path().join("out"),
    );
    write_plugin_dir(&plugin);
    let installed = json(&ok(init(
        &ca,
        &["--plugin-certs", s(&plugin), "-o", "json"],
    )));
    assert_eq!(installed["status"], "installed");
    assert_eq!(installed["kind"], "intermediate");
    assert!(
        installed["signing_certificate"]["subject"]
            .as_str()
            .is_some_and(|s| s.contains("cluster1 intermediate")),
        "{installed}"
    );
    #[cfg(unix)]
    assert_eq!(mode(&ca.join("ca-key.pem")), 0o600);

    ok(issue(&ca, &out, &[]));
    let v = inspect_json(&out.join("cert-chain.pem"));
    assert_eq!(positions(&v), ["leaf", "intermediate", "root"]);
    assert_eq!(v["chain_linked"], true);
    assert_eq!(load_workload(&out).chain().len(), 3);

    // A plain init shows the installed CA; installing again over it is refused.
    let t = text(&ok(init(&ca, &[])));
    assert!(
        t.contains("already exists") && t.contains("intermediate"),
        "{t}"
    );
    let refused = init(&ca, &["--plugin-certs", s(&plugin)]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("already holds a CA"),
        "{}",
        text(&refused)
    );
}

#[test]
fn plugin_dir_with_missing_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (plugin, ca) = (dir.path().join("cacerts"), dir.path().join("ca"));
    write_plugin_dir(&plugin);
    std::fs::remove_file(plugin.join("ca-key.pem")).unwrap();
    let refused = init(&ca, &["--plugin-certs", s(&plugin)]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused).contains("missing ca-key.pem"),
        "{}",
        text(&refused)
    );
    assert!(!ca.exists(), "a failed install leaves no directory behind");
}

#[test]
fn inspect_of_a_non_pem_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "not a certificate\n").unwrap();
    let out = meshward(&["ca", "inspect", s(&file)]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(t.contains(s(&file)) && t.contains("CERTIFICATE"), "{t}");

    let missing = dir.path().join("missing.pem");
    let out = meshward(&["ca", "inspect", s(&missing)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("missing.pem"), "{}", text(&out));
}

#[test]
fn inspect_of_a_root_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ok(init(&ca, &[]));
    let v = inspect_json(&ca.join("root-cert.pem"));
    assert_eq!(positions(&v), ["root"]);
    assert_eq!(v["certificates"][0]["is_ca"], true);
    assert_eq!(v["chain_linked"], true);
}

#[test]
fn rsa_2048_works() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, out) = (dir.path().join("ca"), dir.path().join("out"));
    let v = json(&ok(init(
        &ca,
        &["--key-algorithm", "rsa-2048", "-o", "json"],
    )));
    assert_eq!(v["signing_certificate"]["key_algorithm"], "RSA 2048");
    ok(issue(&ca, &out, &["--key-algorithm", "rsa-2048"]));
    let v = inspect_json(&out.join("cert-chain.pem"));
    assert_eq!(v["certificates"][0]["key_algorithm"], "RSA 2048");
    assert_eq!(v["certificates"][1]["key_algorithm"], "RSA 2048");
    assert_eq!(
        load_workload(&out).identity().uri(),
        "spiffe://cluster.local/ns/foo/sa/bar"
    );
}
