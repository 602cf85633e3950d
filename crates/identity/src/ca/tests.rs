use std::time::{Duration, SystemTime};

use meshward_api::{SpiffeId, TrustDomain};

use super::*;
use crate::tls::{Usage, verify_chain};
use crate::workload::CertificateRequest;

fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(td(), ns, sa).unwrap()
}

fn root(alg: KeyAlgorithm) -> CertificateAuthority {
    CertificateAuthority::generate_root(td(), alg, DEFAULT_ROOT_TTL).unwrap()
}

#[test]
fn issued_certificates_have_istio_shape() {
    let ca = root(KeyAlgorithm::EcdsaP256);
    let cert = ca
        .issue(&id("foo", "sleep"), KeyAlgorithm::EcdsaP256, None)
        .unwrap();
    let leaf = cert.leaf();
    assert_eq!(leaf.subject, "");
    assert_eq!(leaf.uri_sans, ["spiffe://cluster.local/ns/foo/sa/sleep"]);
    assert!(leaf.dns_sans.is_empty());
    assert!(!leaf.is_ca);
    // §1.4: NotBefore = now − 2 min, NotAfter = now + 24 h.
    let window = leaf.not_after.as_second() - leaf.not_before.as_second();
    assert!(
        (24 * 3600 + 120 - 2..=24 * 3600 + 120 + 2).contains(&window),
        "{window}"
    );
    // Leaf then root.
    assert_eq!(cert.chain().len(), 2);
    assert!(ca.trust_bundle().contains(&cert.chain()[1]));
    verify_chain(
        cert.chain(),
        ca.trust_bundle(),
        Usage::Client,
        SystemTime::now(),
    )
    .unwrap();
    verify_chain(
        cert.chain(),
        ca.trust_bundle(),
        Usage::Server,
        SystemTime::now(),
    )
    .unwrap();
}

#[test]
fn san_extension_is_critical() {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let ca = root(KeyAlgorithm::EcdsaP256);
    let cert = ca
        .issue(&id("a", "b"), KeyAlgorithm::EcdsaP256, None)
        .unwrap();
    let (_, parsed) = X509Certificate::from_der(cert.chain()[0].as_ref()).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical);
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let ku = parsed.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
}

#[test]
fn rsa_root_and_rsa_workloads() {
    let ca = root(KeyAlgorithm::Rsa2048);
    assert_eq!(ca.signing_cert().key_algorithm, "RSA 2048");
    let cert = ca
        .issue(&id("a", "b"), KeyAlgorithm::Rsa2048, None)
        .unwrap();
    assert_eq!(cert.leaf().key_algorithm, "RSA 2048");
    verify_chain(
        cert.chain(),
        ca.trust_bundle(),
        Usage::Client,
        SystemTime::now(),
    )
    .unwrap();
}

#[test]
fn csr_identity_is_ignored_in_favour_of_the_caller() {
    let ca = root(KeyAlgorithm::EcdsaP256);
    // The CSR asks for the admin identity; the caller is authenticated as foo/sleep.
    let request =
        CertificateRequest::generate(&id("istio-system", "admin"), KeyAlgorithm::EcdsaP256)
            .unwrap();
    let chain = ca
        .sign_csr(&request.csr_pem, &id("foo", "sleep"), None)
        .unwrap();
    let leaf = CertInfo::parse(&chain[0]).unwrap();
    assert_eq!(leaf.uri_sans, ["spiffe://cluster.local/ns/foo/sa/sleep"]);
    // The key in the certificate is the CSR's.
    let cert = WorkloadCertificate::new(request.key, chain, ca.trust_bundle().clone()).unwrap();
    assert_eq!(cert.identity(), &id("foo", "sleep"));
}

#[test]
fn csr_with_a_bad_signature_is_refused() {
    let ca = root(KeyAlgorithm::EcdsaP256);
    let a = CertificateRequest::generate(&id("a", "b"), KeyAlgorithm::EcdsaP256).unwrap();
    // Corrupt one byte inside the signature (the end of the DER).
    use base64::Engine as _;
    let body: String = a
        .csr_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let mut der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let last = der.len() - 3;
    der[last] ^= 0x55;
    let pem = crate::pem::encode("CERTIFICATE REQUEST", &der);
    let err = ca.sign_csr(&pem, &id("a", "b"), None).unwrap_err();
    assert!(matches!(err, CaError::Csr(CsrError::BadSignature)), "{err}");
    let err = ca.sign_csr("not a csr", &id("a", "b"), None).unwrap_err();
    assert!(err.to_string().contains("CERTIFICATE REQUEST"), "{err}");
}

#[test]
fn ttl_rules() {
    let ca = root(KeyAlgorithm::EcdsaP256).with_ttl_policy(TtlPolicy {
        default_ttl: Duration::from_secs(3600),
        max_ttl: Duration::from_secs(7200),
    });
    let cert = ca
        .issue(&id("a", "b"), KeyAlgorithm::EcdsaP256, Some(Duration::ZERO))
        .unwrap();
    let life = cert.leaf().not_after.as_second() - cert.leaf().not_before.as_second();
    assert!((3600 + 118..=3600 + 122).contains(&life), "{life}");
    let err = ca
        .issue(
            &id("a", "b"),
            KeyAlgorithm::EcdsaP256,
            Some(Duration::from_secs(7201)),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is greater than the max allowed TTL"),
        "{err}"
    );
}

#[test]
fn not_after_is_clamped_to_the_signing_certificate() {
    let ca = CertificateAuthority::generate_root(
        td(),
        KeyAlgorithm::EcdsaP256,
        Duration::from_secs(600),
    )
    .unwrap();
    let cert = ca
        .issue(&id("a", "b"), KeyAlgorithm::EcdsaP256, None)
        .unwrap();
    assert_eq!(cert.leaf().not_after, ca.signing_cert().not_after);
}

#[test]
fn refuses_identities_of_another_trust_domain() {
    let ca = root(KeyAlgorithm::EcdsaP256);
    let other = SpiffeId::new(TrustDomain::new("evil.td").unwrap(), "a", "b").unwrap();
    let err = ca.issue(&other, KeyAlgorithm::EcdsaP256, None).unwrap_err();
    assert!(matches!(err, CaError::ForeignTrustDomain { .. }), "{err}");
}

#[test]
fn plugin_intermediate_chain() {
    let org_root = root(KeyAlgorithm::EcdsaP256);
    let files = org_root
        .issue_intermediate(
            "cluster1 intermediate",
            KeyAlgorithm::EcdsaP256,
            DEFAULT_ROOT_TTL,
        )
        .unwrap();
    let ca = CertificateAuthority::from_pem(
        td(),
        files.ca_cert.as_bytes(),
        files.ca_key.as_bytes(),
        Some(files.cert_chain.as_bytes()),
        files.root_cert.as_bytes(),
    )
    .unwrap();
    assert!(ca.signing_cert().subject.contains("cluster1 intermediate"));
    let cert = ca
        .issue(&id("a", "b"), KeyAlgorithm::EcdsaP256, None)
        .unwrap();
    // Leaf, intermediate, root.
    assert_eq!(cert.chain().len(), 3);
    verify_chain(
        cert.chain(),
        org_root.trust_bundle(),
        Usage::Client,
        SystemTime::now(),
    )
    .unwrap();
}

#[test]
fn plugin_files_that_do_not_fit_together_are_refused() {
    let org_root = root(KeyAlgorithm::EcdsaP256);
    let other_root = root(KeyAlgorithm::EcdsaP256);
    let files = org_root
        .issue_intermediate("i", KeyAlgorithm::EcdsaP256, DEFAULT_ROOT_TTL)
        .unwrap();
    let other = other_root
        .issue_intermediate("j", KeyAlgorithm::EcdsaP256, DEFAULT_ROOT_TTL)
        .unwrap();
    // Key of another intermediate.
    let err = CertificateAuthority::from_pem(
        td(),
        files.ca_cert.as_bytes(),
        other.ca_key.as_bytes(),
        Some(files.cert_chain.as_bytes()),
        files.root_cert.as_bytes(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    // Roots of another organisation.
    let err = CertificateAuthority::from_pem(
        td(),
        files.ca_cert.as_bytes(),
        files.ca_key.as_bytes(),
        None,
        other.root_cert.as_bytes(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not in root-cert.pem"), "{err}");
}

#[test]
fn store_persists_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let store = CaDir::new(dir.path().join("ca"));
    let (ca, created) = store.load_or_init(td(), KeyAlgorithm::EcdsaP256).unwrap();
    assert!(created);
    let (again, created) = store.load_or_init(td(), KeyAlgorithm::EcdsaP256).unwrap();
    assert!(!created);
    assert_eq!(ca.signing_cert(), again.signing_cert());
    assert!(matches!(
        store.init_self_signed(td(), KeyAlgorithm::EcdsaP256, DEFAULT_ROOT_TTL),
        Err(StoreError::Exists { .. })
    ));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(store.path().join(CA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A self-signed CA directory is itself a valid plug-in directory.
    let copy = CaDir::new(dir.path().join("copy"));
    let plugged = copy.install_plugin(store.path(), td()).unwrap();
    assert_eq!(plugged.signing_cert(), ca.signing_cert());
}

#[test]
fn store_accepts_kubernetes_tls_secret_names() {
    let dir = tempfile::tempdir().unwrap();
    let org_root = root(KeyAlgorithm::EcdsaP256);
    let files = org_root
        .issue_intermediate("i", KeyAlgorithm::EcdsaP256, DEFAULT_ROOT_TTL)
        .unwrap();
    std::fs::write(dir.path().join("tls.crt"), &files.ca_cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), &files.ca_key).unwrap();
    std::fs::write(dir.path().join("ca.crt"), &files.root_cert).unwrap();
    let ca = CaDir::new(dir.path()).load(td()).unwrap();
    assert!(ca.signing_cert().subject.contains("CN=i"));
    let missing = CaDir::new(dir.path().join("nothing"))
        .load(td())
        .unwrap_err();
    assert!(
        missing.to_string().contains("missing ca-cert.pem"),
        "{missing}"
    );
}

#[test]
fn an_absurd_root_lifetime_is_clamped_not_a_panic() {
    let ca = CertificateAuthority::generate_root(
        td(),
        KeyAlgorithm::EcdsaP256,
        Duration::from_secs(u64::MAX / 4),
    )
    .unwrap();
    assert_eq!(
        ca.signing_cert().not_after.to_string(),
        "9999-12-30T00:00:00Z"
    );
}
