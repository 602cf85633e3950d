//! Per-proxy snapshots: only what concerns the workload, so unrelated changes do not reach it.

use meshward_api::protocol::proto::fetched_jwks;

use super::*;
use crate::store::{InputFile, Source, Store};

fn file(name: &str, text: &str) -> InputFile {
    InputFile {
        name: name.to_owned(),
        text: text.to_owned(),
    }
}

fn pod(name: &str, sa: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: foo\n  labels:\n    app: {name}\nspec:\n  serviceAccountName: {sa}\n  containers:\n  - name: app\n    ports:\n    - containerPort: 8000\n"
    )
}

fn policy(name: &str, app: &str, method: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: foo\nspec:\n  selector:\n    matchLabels:\n      app: {app}\n  rules:\n  - to:\n    - operation:\n        methods: [{method}]\n"
    )
}

fn request_authn(name: &str, app: &str, uri: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: {name}\n  namespace: foo\nspec:\n  selector:\n    matchLabels:\n      app: {app}\n  jwtRules:\n  - issuer: issuer-{app}\n    jwksUri: {uri}\n"
    )
}

const STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: strict\n  namespace: foo\n  labels: {}\nspec:\n  selector:\n    matchLabels:\n      app: httpbin\n  mtls:\n    mode: STRICT\n";

fn lookup(uri: &str) -> FetchedJwks {
    FetchedJwks {
        uri: uri.to_owned(),
        result: Some(fetched_jwks::Result::Document(format!("jwks of {uri}"))),
    }
}

fn config(store: &Store, name: &str) -> ProxyConfig {
    proxy_config(&store.current(), "foo", name, &lookup).unwrap()
}

fn names(config: &ProxyConfig) -> Vec<String> {
    config
        .documents
        .iter()
        .map(|d| {
            d.text
                .lines()
                .find(|l| l.starts_with("  name:"))
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .collect()
}

fn store() -> Store {
    let store = Store::new();
    store
        .apply(
            Source::Api,
            &[
                file(
                    "pods.yaml",
                    &format!(
                        "{}---\n{}",
                        pod("httpbin", "httpbin"),
                        pod("sleep", "sleep")
                    ),
                ),
                file(
                    "httpbin-policy.yaml",
                    &policy("httpbin-get", "httpbin", "GET"),
                ),
                file("sleep-policy.yaml", &policy("sleep-get", "sleep", "GET")),
                file(
                    "ra.yaml",
                    &request_authn("httpbin-jwt", "httpbin", "https://issuer.test/jwks"),
                ),
                file("pa.yaml", STRICT),
            ],
        )
        .unwrap();
    store
}

#[test]
fn a_proxy_receives_its_own_policies_and_every_peer_authentication() {
    let store = store();
    let httpbin = config(&store, "httpbin");
    assert_eq!(
        names(&httpbin),
        [
            "name: httpbin",
            "name: sleep",
            "name: httpbin-get",
            "name: httpbin-jwt",
            "name: strict"
        ]
    );
    assert_eq!(httpbin.service_account, "httpbin");
    assert_eq!(httpbin.jwks, vec![lookup("https://issuer.test/jwks")]);
    let sleep = config(&store, "sleep");
    // The STRICT PeerAuthentication selects httpbin only, yet sleep needs it for auto mTLS.
    assert_eq!(
        names(&sleep),
        [
            "name: httpbin",
            "name: sleep",
            "name: sleep-get",
            "name: strict"
        ]
    );
    assert!(sleep.jwks.is_empty());
}

#[test]
fn a_change_to_another_workloads_policy_does_not_change_this_snapshot() {
    let store = store();
    let before = config(&store, "sleep");
    let httpbin_before = config(&store, "httpbin");
    store
        .apply(
            Source::Api,
            &[file(
                "httpbin-policy.yaml",
                &policy("httpbin-get", "httpbin", "POST"),
            )],
        )
        .unwrap();
    store
        .apply(
            Source::Api,
            &[file(
                "ra.yaml",
                &request_authn("httpbin-jwt", "httpbin", "https://other.test/jwks"),
            )],
        )
        .unwrap();
    assert_eq!(store.current().version, 3);
    assert_eq!(config(&store, "sleep"), before, "sleep is not affected");
    assert_ne!(config(&store, "httpbin"), httpbin_before);
}

#[test]
fn relabelling_a_workload_changes_what_selects_it() {
    let store = store();
    let relabelled = pod("sleep", "sleep").replace("app: sleep", "app: httpbin");
    store
        .apply(
            Source::Api,
            &[file(
                "pods.yaml",
                &format!("{}---\n{relabelled}", pod("httpbin", "httpbin")),
            )],
        )
        .unwrap();
    let sleep = config(&store, "sleep");
    assert!(names(&sleep).contains(&"name: httpbin-get".to_owned()));
    assert!(!names(&sleep).contains(&"name: sleep-get".to_owned()));
}

#[test]
fn an_unknown_workload_has_no_snapshot_yet() {
    let store = store();
    let err = proxy_config(&store.current(), "foo", "ghost", &lookup).unwrap_err();
    assert_eq!(err, NotReady::UnknownWorkload("foo/ghost".into()));
}

fn stream(identity: &str, remote: &str) -> ProxyStatus {
    let hello = Hello {
        namespace: "foo".into(),
        workload: "httpbin".into(),
        pod_address: String::new(),
        proxy_version: String::new(),
    };
    let id = SpiffeId::parse(identity).unwrap();
    status_for(&hello, &id, Some(remote.parse().unwrap()))
}

fn held(serial: &str, origin: CertificateOrigin) -> HeldCertificate {
    HeldCertificate {
        serial: serial.into(),
        not_before: Timestamp::UNIX_EPOCH,
        not_after: Timestamp::UNIX_EPOCH,
        origin,
        seen_at: Timestamp::UNIX_EPOCH,
    }
}

#[test]
fn a_renewal_reaches_the_stream_of_that_identity_at_that_address() {
    let registry = ProxyRegistry::default();
    let httpbin = "spiffe://cluster.local/ns/foo/sa/httpbin";
    let mut first = stream(httpbin, "10.244.0.2:40000");
    first.certificate = Some(held("01", CertificateOrigin::Presented));
    registry.register(first);
    registry.register(stream(
        "spiffe://cluster.local/ns/foo/sa/sleep",
        "10.244.0.3:40000",
    ));
    let renewed = held("02", CertificateOrigin::Renewed);
    // Another address, another identity: nothing changes.
    registry.certificate_issued(httpbin, "10.244.0.9".parse().unwrap(), renewed.clone());
    registry.certificate_issued(
        "spiffe://cluster.local/ns/foo/sa/other",
        "10.244.0.2".parse().unwrap(),
        renewed.clone(),
    );
    let certs: Vec<_> = registry.list().into_iter().map(|p| p.certificate).collect();
    assert_eq!(
        certs,
        [Some(held("01", CertificateOrigin::Presented)), None]
    );
    registry.certificate_issued(httpbin, "10.244.0.2".parse().unwrap(), renewed.clone());
    assert_eq!(registry.list()[0].certificate, Some(renewed));
}

#[test]
fn a_renewal_that_cannot_be_attributed_makes_the_certificate_unknown() {
    let registry = ProxyRegistry::default();
    let httpbin = "spiffe://cluster.local/ns/foo/sa/httpbin";
    for port in [40000, 40001] {
        let mut s = stream(httpbin, &format!("127.0.0.1:{port}"));
        s.certificate = Some(held("01", CertificateOrigin::Presented));
        registry.register(s);
    }
    registry.certificate_issued(
        httpbin,
        "127.0.0.1".parse().unwrap(),
        held("02", CertificateOrigin::Renewed),
    );
    assert!(registry.list().iter().all(|p| p.certificate.is_none()));
}
