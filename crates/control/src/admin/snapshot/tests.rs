//! The snapshot reloads to the store's own resources, at their original lines, with who wrote
//! them, through JSON; fetched JWKS are inlined only into the enforced report.

use std::path::PathBuf;

use meshward_api::protocol::proto::{FetchedJwks, fetched_jwks};
use meshward_api::{FieldPath, Kind, Resource, ResourceId};

use super::*;
use crate::store::{InputFile, Source, Store};

const PODS: &str = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata:
    name: httpbin
    namespace: foo
    labels: {app: httpbin}
  spec:
    serviceAccountName: httpbin
    containers:
    - name: app
      ports:
      - containerPort: 8000
- apiVersion: v1
  kind: Namespace
  metadata:
    name: foo
";

const POLICY: &str = "# applied by hand
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-get
  namespace: foo
spec:
  selector:
    matchLabels: {app: httpbin}
  rules:
  - to:
    - operation:
        methods: [GET]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt
  namespace: foo
spec:
  jwtRules:
  - issuer: issuer-foo
    jwksUri: https://issuer.example/jwks
";

const JWKS: &str = r#"{"keys":[]}"#;

fn file(name: &str, text: &str) -> InputFile {
    InputFile {
        name: name.to_owned(),
        text: text.to_owned(),
    }
}

fn store() -> Store {
    let store = Store::new();
    store
        .replace_source(
            Source::Path(PathBuf::from("/mesh")),
            &[file("/mesh/pods.yaml", PODS)],
        )
        .unwrap();
    store
        .apply(Source::Api, &[file("policy.yaml", POLICY)])
        .unwrap();
    store
}

fn lookup(uri: &str) -> FetchedJwks {
    FetchedJwks {
        uri: uri.to_owned(),
        result: Some(fetched_jwks::Result::Document(JWKS.to_owned())),
    }
}

fn id(kind: Kind, namespace: &str, name: &str) -> ResourceId {
    ResourceId {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

#[test]
fn the_report_is_the_stores_own_and_survives_json() {
    let store = store();
    let state = store.current();
    let snapshot = StoreSnapshot::of(&state, &lookup);
    assert_eq!(snapshot.version, state.version);
    assert_eq!(snapshot.documents.len(), 4);

    let wire = serde_json::to_string(&snapshot).unwrap();
    let back: StoreSnapshot = serde_json::from_str(&wire).unwrap();
    assert_eq!(back, snapshot);

    // The same resources, located in the same files at the same lines, as the store's report
    // (the one its mesh and `describe` are built from).
    let report = back.report();
    assert_eq!(report.resources, state.report().resources);
    assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
    let policy = report
        .resources
        .iter()
        .find(|r| r.resource.id() == id(Kind::AuthorizationPolicy, "foo", "allow-get"))
        .unwrap();
    assert_eq!(&*policy.origin.file, "policy.yaml");
    let methods = FieldPath::root()
        .key("spec")
        .key("rules")
        .index(0)
        .key("to")
        .index(0)
        .key("operation")
        .key("methods");
    assert_eq!(policy.origin.locate(&methods).unwrap().line, 13);
    let pod = report
        .resources
        .iter()
        .find(|r| r.resource.id() == id(Kind::Pod, "foo", "httpbin"))
        .unwrap();
    assert_eq!(&*pod.origin.file, "/mesh/pods.yaml");
    assert_eq!(pod.origin.start().unwrap().line, 4);
}

#[test]
fn each_resource_names_its_writer() {
    let snapshot = StoreSnapshot::of(&store().current(), &lookup);
    assert_eq!(
        snapshot.written_by(&id(Kind::AuthorizationPolicy, "foo", "allow-get")),
        Some(&WrittenBy::Apply)
    );
    assert_eq!(
        snapshot.written_by(&id(Kind::Namespace, "", "foo")),
        Some(&WrittenBy::Watched {
            path: "/mesh".to_owned()
        })
    );
    assert_eq!(
        snapshot.written_by(&id(Kind::AuthorizationPolicy, "foo", "missing")),
        None
    );
    let wire = serde_json::to_value(&snapshot).unwrap();
    assert_eq!(wire["documents"][0]["writtenBy"]["by"], "watched");
}

#[test]
fn fetched_jwks_are_inlined_only_where_proxies_inline_them() {
    let snapshot = StoreSnapshot::of(&store().current(), &lookup);
    assert_eq!(
        snapshot.jwks,
        [SnapshotJwks {
            uri: "https://issuer.example/jwks".to_owned(),
            document: Some(JWKS.to_owned()),
            error: None,
        }]
    );
    let jwks_of = |report: &meshward_api::LoadReport| {
        report.resources.iter().find_map(|r| match &r.resource {
            Resource::RequestAuthentication(ra) => ra
                .spec
                .jwt_rules
                .iter()
                .flatten()
                .flatten()
                .next()
                .and_then(|rule| rule.jwks.clone()),
            _ => None,
        })
    };
    assert_eq!(jwks_of(&snapshot.report()), None, "stored as written");
    assert_eq!(
        jwks_of(&snapshot.enforced_report()).as_deref(),
        Some(JWKS),
        "enforced as the proxies have it"
    );
}
