//! Local configuration: files become the enforced state; a bad change is refused and the last
//! good configuration stays.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use meshward_proxy::config::{load_mesh, watch};
use meshward_proxy::state::{ProxyState, StateHandle};

const WORKLOADS: &str = r#"
apiVersion: meshward.dev/v1alpha1
kind: PolicyTest
metadata:
  name: mesh
spec:
  workloads:
  - name: httpbin
    namespace: foo
    serviceAccount: httpbin
    labels: {app: httpbin}
    address: 127.0.0.1
    ports:
    - port: 8000
      protocol: HTTP
  cases: []
"#;

const DENY_ALL: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-all
  namespace: foo
spec: {}
"#;

const BROKEN: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-all
  namespace: foo
spec:
  actoin: DENY
"#;

async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..60 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_bad_change_is_refused_and_a_good_one_takes_effect() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), WORKLOADS).unwrap();
    let paths = vec![dir.path().to_owned()];
    let state = ProxyState::build(load_mesh(&paths).unwrap(), "foo", "httpbin", 1).unwrap();
    assert_eq!(
        state.identity.uri(),
        "spiffe://cluster.local/ns/foo/sa/httpbin"
    );
    assert!(state.inbound.authz().policies().is_empty());
    let handle = StateHandle::new(state);
    let watcher = watch(
        paths.clone(),
        "foo".into(),
        "httpbin".into(),
        handle.clone(),
    );

    // An invalid policy is refused; nothing changes.
    std::fs::write(dir.path().join("policy.yaml"), BROKEN).unwrap();
    let err = load_mesh(&paths).unwrap_err().to_string();
    assert!(
        err.contains("policy.yaml") && err.contains("actoin"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(handle.load().version, 1);

    // A valid one is installed.
    std::fs::write(dir.path().join("policy.yaml"), DENY_ALL).unwrap();
    assert!(eventually(|| handle.load().version == 2).await);
    assert_eq!(handle.load().inbound.authz().policies().len(), 1);
    watcher.abort();
}

#[test]
fn an_undeclared_workload_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), WORKLOADS).unwrap();
    let mesh = load_mesh(&[dir.path().to_owned()]).unwrap();
    let err = ProxyState::build(mesh, "foo", "nope", 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "workload foo/nope is not declared in the configuration"
    );
}
