//! Real TLS handshakes over loopback sockets between meshward's rustls configurations:
//! authentication.md §1.8 case by case.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod harness;

use std::time::{Duration, SystemTime};

use harness::*;
use meshward_identity::ca::DEFAULT_ROOT_TTL;
use meshward_identity::{
    CertificateAuthority, Credentials, KeyAlgorithm, MeshTls, TrustBundle, Validity,
};

#[tokio::test]
async fn valid_mtls_both_sides_learn_the_peer_identity() {
    let ca = root_ca("cluster.local");
    let server = mesh(&ca, "foo", "httpbin", &[]);
    let client = mesh(&ca, "foo", "sleep", &[]);
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        client
            .client_config(&[id("cluster.local", "foo", "httpbin")], alpn_client())
            .unwrap(),
    )
    .await;
    assert_eq!(
        out.server.unwrap(),
        "spiffe://cluster.local/ns/foo/sa/sleep"
    );
    assert_eq!(
        out.client.unwrap(),
        "spiffe://cluster.local/ns/foo/sa/httpbin"
    );
}

#[tokio::test]
async fn rsa_and_ecdsa_workloads_interoperate() {
    // §9 #11: sidecars default to RSA-2048, ztunnel to ECDSA P-256; one mesh holds both.
    let ca = root_ca("cluster.local");
    let server = Credentials::with_certificate(
        ca.issue(
            &id("cluster.local", "foo", "httpbin"),
            KeyAlgorithm::Rsa2048,
            None,
        )
        .unwrap(),
    )
    .unwrap();
    let server = MeshTls::new(server, trust_domains("cluster.local", &[]));
    let client = mesh(&ca, "foo", "sleep", &[]);
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        client.client_config(&[], alpn_client()).unwrap(),
    )
    .await;
    assert_eq!(
        out.server.unwrap(),
        "spiffe://cluster.local/ns/foo/sa/sleep"
    );
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let ca = root_ca("cluster.local");
    let server = mesh(&ca, "foo", "httpbin", &[]);
    let now = SystemTime::now();
    let expired = ca
        .issue_with_validity(
            &id("cluster.local", "foo", "sleep"),
            KeyAlgorithm::EcdsaP256,
            Validity {
                not_before: now - Duration::from_secs(7200),
                not_after: now - Duration::from_secs(3600),
            },
        )
        .unwrap();
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        raw_client(&expired, ca.trust_bundle()),
    )
    .await;
    let err = out.server.unwrap_err();
    assert!(err.contains("certificate expired"), "{err}");
    assert!(out.client.is_err());
}

#[tokio::test]
async fn not_yet_valid_client_certificate_is_refused() {
    let ca = root_ca("cluster.local");
    let server = mesh(&ca, "foo", "httpbin", &[]);
    let now = SystemTime::now();
    let early = ca
        .issue_with_validity(
            &id("cluster.local", "foo", "sleep"),
            KeyAlgorithm::EcdsaP256,
            Validity {
                not_before: now + Duration::from_secs(3600),
                not_after: now + Duration::from_secs(7200),
            },
        )
        .unwrap();
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        raw_client(&early, ca.trust_bundle()),
    )
    .await;
    let err = out.server.unwrap_err();
    assert!(err.contains("certificate not valid yet"), "{err}");
}

#[tokio::test]
async fn client_of_another_ca_is_refused_as_unknown_issuer() {
    let ca = root_ca("cluster.local");
    let other = root_ca("cluster.local");
    let server = mesh(&ca, "foo", "httpbin", &[]);
    let intruder = other
        .issue(
            &id("cluster.local", "foo", "sleep"),
            KeyAlgorithm::EcdsaP256,
            None,
        )
        .unwrap();
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        raw_client(&intruder, ca.trust_bundle()),
    )
    .await;
    let err = out.server.unwrap_err();
    assert!(err.contains("unknown issuer"), "{err}");
}

#[tokio::test]
async fn server_of_another_ca_is_refused_by_the_client() {
    let ca = root_ca("cluster.local");
    let other = root_ca("cluster.local");
    let server = mesh(&other, "foo", "httpbin", &[]);
    let client = mesh(&ca, "foo", "sleep", &[]);
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        client.client_config(&[], alpn_client()).unwrap(),
    )
    .await;
    let err = out.client.unwrap_err();
    assert!(err.contains("unknown issuer"), "{err}");
}

#[tokio::test]
async fn foreign_trust_domain_is_refused() {
    // Another cluster shares the root but uses trust domain evil.td, which is not an alias.
    let ca = root_ca("cluster.local");
    let foreign = same_keys_other_trust_domain(&ca, "evil.td");
    let server = mesh(&ca, "foo", "httpbin", &[]);
    let client = mesh(&foreign, "foo", "sleep", &[]);
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        client.client_config(&[], alpn_client()).unwrap(),
    )
    .await;
    let err = out.server.unwrap_err();
    assert!(err.contains("wrong trust domain"), "{err}");
    assert!(err.contains("spiffe://evil.td/ns/foo/sa/sleep"), "{err}");
    assert!(err.contains("cluster.local"), "{err}");
}

#[tokio::test]
async fn alias_trust_domain_is_accepted() {
    // §1.2: identities in an alias trust domain are equivalent.
    let ca = root_ca("cluster.local");
    let old = same_keys_other_trust_domain(&ca, "old.td");
    let server = mesh(&ca, "foo", "httpbin", &["old.td"]);
    let client = mesh(&old, "foo", "sleep", &[]);
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        client.client_config(&[], alpn_client()).unwrap(),
    )
    .await;
    assert_eq!(out.server.unwrap(), "spiffe://old.td/ns/foo/sa/sleep");
}

#[tokio::test]
async fn secure_naming_accepts_the_alias_of_an_expected_identity() {
    // §1.2 client side: expected identities are expanded with every alias.
    let ca = root_ca("cluster.local");
    let old = same_keys_other_trust_domain(&ca, "old.td");
    let server = mesh(&old, "foo", "httpbin", &["cluster.local"]);
    let client = mesh(&ca, "foo", "sleep", &["old.td"]);
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        client
            .client_config(&[id("cluster.local", "foo", "httpbin")], alpn_client())
            .unwrap(),
    )
    .await;
    assert_eq!(out.client.unwrap(), "spiffe://old.td/ns/foo/sa/httpbin");
}

#[tokio::test]
async fn server_identity_mismatch_is_refused_naming_both_identities() {
    let ca = root_ca("cluster.local");
    let server = mesh(&ca, "foo", "impostor", &[]);
    let client = mesh(&ca, "foo", "sleep", &[]);
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        client
            .client_config(&[id("cluster.local", "foo", "httpbin")], alpn_client())
            .unwrap(),
    )
    .await;
    let err = out.client.unwrap_err();
    assert!(err.contains("server identity mismatch"), "{err}");
    assert!(
        err.contains("spiffe://cluster.local/ns/foo/sa/httpbin"),
        "{err}"
    );
    assert!(
        err.contains("spiffe://cluster.local/ns/foo/sa/impostor"),
        "{err}"
    );
}

#[tokio::test]
async fn empty_expected_list_checks_the_chain_only() {
    // §1.8 client step 3: "Empty list ⇒ no SAN check".
    let ca = root_ca("cluster.local");
    let server = mesh(&ca, "bar", "anything", &[]);
    let client = mesh(&ca, "foo", "sleep", &[]);
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        client.client_config(&[], alpn_client()).unwrap(),
    )
    .await;
    assert_eq!(
        out.client.unwrap(),
        "spiffe://cluster.local/ns/bar/sa/anything"
    );
}

#[tokio::test]
async fn client_without_a_certificate_is_refused() {
    let ca = root_ca("cluster.local");
    let server = mesh(&ca, "foo", "httpbin", &[]);
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        anonymous_client(ca.trust_bundle()),
    )
    .await;
    let err = out.server.unwrap_err();
    assert!(err.contains("no certificate"), "{err}");
}

#[tokio::test]
async fn plugin_ca_chain_is_accepted() {
    let org = root_ca("cluster.local");
    let files = org
        .issue_intermediate("cluster1", KeyAlgorithm::EcdsaP256, DEFAULT_ROOT_TTL)
        .unwrap();
    let plugged = CertificateAuthority::from_pem(
        td("cluster.local"),
        files.ca_cert.as_bytes(),
        files.ca_key.as_bytes(),
        Some(files.cert_chain.as_bytes()),
        files.root_cert.as_bytes(),
    )
    .unwrap();
    let server = mesh(&plugged, "foo", "httpbin", &[]);
    let client = mesh(&plugged, "foo", "sleep", &[]);
    assert_eq!(
        server
            .credentials()
            .certificate()
            .unwrap()
            .cert
            .chain()
            .len(),
        3,
        "leaf, intermediate, root"
    );
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        client
            .client_config(&[id("cluster.local", "foo", "httpbin")], alpn_client())
            .unwrap(),
    )
    .await;
    assert_eq!(
        out.server.unwrap(),
        "spiffe://cluster.local/ns/foo/sa/sleep"
    );
    assert_eq!(
        out.client.unwrap(),
        "spiffe://cluster.local/ns/foo/sa/httpbin"
    );
}

#[tokio::test]
async fn root_rotation_with_two_roots_in_the_bundle() {
    let old_root = root_ca("cluster.local");
    let new_root = root_ca("cluster.local");
    let both = old_root.trust_bundle().merged(new_root.trust_bundle());
    assert_eq!(both.len(), 2);

    // The server moved to the new root and trusts both during the overlap.
    let server_cert = new_root
        .issue(
            &id("cluster.local", "foo", "httpbin"),
            KeyAlgorithm::EcdsaP256,
            None,
        )
        .unwrap();
    let server_creds = Credentials::new(both.clone());
    server_creds.set_certificate(server_cert).unwrap();
    let server = MeshTls::new(server_creds.clone(), trust_domains("cluster.local", &[]));

    // A client still on the old root, trusting both, talks to it in both directions.
    let old_client_cert = old_root
        .issue(
            &id("cluster.local", "foo", "sleep"),
            KeyAlgorithm::EcdsaP256,
            None,
        )
        .unwrap();
    let old_creds = Credentials::new(both.clone());
    old_creds.set_certificate(old_client_cert).unwrap();
    let old_client = MeshTls::new(old_creds, trust_domains("cluster.local", &[]));
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        old_client
            .client_config(&[id("cluster.local", "foo", "httpbin")], alpn_client())
            .unwrap(),
    )
    .await;
    assert_eq!(
        out.server.unwrap(),
        "spiffe://cluster.local/ns/foo/sa/sleep"
    );
    assert!(out.client.is_ok());

    // A client already on the new root works too.
    let new_client = mesh(&new_root, "foo", "sleep", &[]);
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        new_client.client_config(&[], alpn_client()).unwrap(),
    )
    .await;
    assert!(out.server.is_ok());

    // The overlap ends: the old root leaves the bundle, and old-root clients are refused by the
    // same server configuration (no rebuild needed).
    let config = server.server_config(alpn_server()).unwrap();
    server_creds.set_roots(new_root.trust_bundle().clone());
    let out = exchange(
        config,
        old_client.client_config(&[], alpn_client()).unwrap(),
    )
    .await;
    assert!(out.server.unwrap_err().contains("unknown issuer"));
}

#[tokio::test]
async fn an_expired_own_certificate_fails_closed() {
    let ca = root_ca("cluster.local");
    let now = SystemTime::now();
    let expired = ca
        .issue_with_validity(
            &id("cluster.local", "foo", "httpbin"),
            KeyAlgorithm::EcdsaP256,
            Validity {
                not_before: now - Duration::from_secs(7200),
                not_after: now - Duration::from_secs(1),
            },
        )
        .unwrap();
    let server = MeshTls::new(
        Credentials::with_certificate(expired).unwrap(),
        trust_domains("cluster.local", &[]),
    );
    let client = mesh(&ca, "foo", "sleep", &[]);
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        client.client_config(&[], alpn_client()).unwrap(),
    )
    .await;
    let err = out.server.unwrap_err();
    assert!(err.contains("no server certificate"), "{err}");
    assert!(out.client.is_err());
}

#[tokio::test]
async fn no_certificate_yet_fails_closed() {
    let ca = root_ca("cluster.local");
    let server = MeshTls::new(
        Credentials::new(ca.trust_bundle().clone()),
        trust_domains("cluster.local", &[]),
    );
    let client = mesh(&ca, "foo", "sleep", &[]);
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        client.client_config(&[], alpn_client()).unwrap(),
    )
    .await;
    assert!(out.server.is_err());
    assert!(out.client.is_err());
}

#[tokio::test]
async fn an_empty_trust_bundle_trusts_nothing() {
    let ca = root_ca("cluster.local");
    let cert = ca
        .issue(
            &id("cluster.local", "foo", "httpbin"),
            KeyAlgorithm::EcdsaP256,
            None,
        )
        .unwrap();
    let creds = Credentials::new(TrustBundle::default());
    creds.set_certificate(cert).unwrap();
    let server = MeshTls::new(creds, trust_domains("cluster.local", &[]));
    let client = mesh(&ca, "foo", "sleep", &[]);
    let out = exchange(
        server.server_config(alpn_server()).unwrap(),
        client.client_config(&[], alpn_client()).unwrap(),
    )
    .await;
    assert!(out.server.unwrap_err().contains("unknown issuer"));
}

#[tokio::test]
async fn alpn_tells_mesh_traffic_apart() {
    // §4.2: an HTTP/1.1 client offers istio-http/1.1 first; the server picks by its own order.
    let ca = root_ca("cluster.local");
    let server = mesh(&ca, "foo", "httpbin", &[]);
    let client = mesh(&ca, "foo", "sleep", &[]);
    let config = client
        .client_config(&[], meshward_identity::tls::alpn::client_http1())
        .unwrap();
    let out = exchange(server.server_config(alpn_server()).unwrap(), config).await;
    assert_eq!(out.alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn sessions_resume_until_the_trust_bundle_changes() {
    let ca = root_ca("cluster.local");
    let server = mesh(&ca, "foo", "httpbin", &[]);
    let client = mesh(&ca, "foo", "sleep", &[]);
    let server_config = server.server_config(alpn_server()).unwrap();
    let client_config = client
        .client_config(&[id("cluster.local", "foo", "httpbin")], alpn_client())
        .unwrap();
    let first = exchange(server_config.clone(), client_config.clone()).await;
    assert!(!first.resumed, "nothing to resume yet");
    let second = exchange(server_config.clone(), client_config.clone()).await;
    assert!(second.resumed, "the ticket of the first handshake is used");
    assert_eq!(
        second.server.unwrap(),
        "spiffe://cluster.local/ns/foo/sa/sleep",
        "a resumed session keeps the client's identity"
    );
    // New roots on the server: tickets issued under the old ones no longer open, and the
    // client is verified again in a full handshake.
    server.credentials().set_roots(ca.trust_bundle().clone());
    let third = exchange(server_config, client_config).await;
    assert!(!third.resumed, "the trust bundle changed");
    assert_eq!(
        third.server.unwrap(),
        "spiffe://cluster.local/ns/foo/sa/sleep"
    );
}
