//! `--from` / `--to` names: a Deployment stands for its first pod in a running mesh, a pod for
//! its Deployment in files, and anything else is left for the engine to judge.

use meshward_api::load_text;
use meshward_policy::declared::mesh_from_report;

use super::resolve_workload;

/// What a running mesh knows: pods `backend-0`, `backend-1` (and a `backend-canary` that is
/// not a replica).
const PODS: &str = "apiVersion: v1
kind: Pod
metadata: {name: backend-1, namespace: shop, labels: {app: backend}}
spec: {containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: backend-0, namespace: shop, labels: {app: backend}}
spec: {containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: backend-canary, namespace: shop, labels: {app: backend}}
spec: {containers: [{name: app}]}
";

/// What files know: the Deployment.
const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: backend, namespace: shop}
spec:
  template:
    metadata: {labels: {app: backend}}
    spec: {containers: [{name: app}]}
";

fn resolve(yaml: &str, key: &str) -> (String, Option<String>) {
    let report = load_text(yaml, "mesh.yaml", None);
    assert!(!report.has_errors(), "{:?}", report.diagnostics);
    let mesh = mesh_from_report(&report).unwrap();
    resolve_workload(&mesh, &report, key)
}

#[test]
fn a_deployment_name_stands_for_its_first_replica() {
    let (key, note) = resolve(PODS, "shop/backend");
    assert_eq!(key, "shop/backend-0");
    assert!(note.unwrap().contains("stands for its pod shop/backend-0"));
}

#[test]
fn a_replica_name_stands_for_its_deployment() {
    let (key, note) = resolve(DEPLOYMENT, "shop/backend-5c5944c58c-k8x2c");
    assert_eq!(key, "shop/backend");
    assert_eq!(
        note.as_deref(),
        Some("shop/backend-5c5944c58c-k8x2c stands for its Deployment shop/backend")
    );
}

#[test]
fn existing_and_unknown_names_are_left_alone() {
    assert_eq!(
        resolve(PODS, "shop/backend-canary"),
        ("shop/backend-canary".to_owned(), None)
    );
    assert_eq!(
        resolve(PODS, "shop/frontend"),
        ("shop/frontend".to_owned(), None)
    );
    assert_eq!(
        resolve(PODS, "other/backend"),
        ("other/backend".to_owned(), None)
    );
    // Only a Deployment owns replicas: a pod named like one stays what it is.
    assert_eq!(
        resolve(PODS, "shop/backend-canary-1"),
        ("shop/backend-canary-1".to_owned(), None)
    );
    // Without a namespace the engine's own lookup applies.
    assert_eq!(resolve(PODS, "backend"), ("backend".to_owned(), None));
}
