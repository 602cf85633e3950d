//! The store: all-or-nothing changes, errors naming file, line and field, versions only on
//! change, sources owning their resources, the most recent write of a resource winning.

use super::*;

pub(super) fn file(name: &str, text: &str) -> InputFile {
    InputFile {
        name: name.to_owned(),
        text: text.to_owned(),
    }
}

pub(super) const MESH: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: foo
---
apiVersion: v1
kind: Pod
metadata:
  name: httpbin
  namespace: foo
  labels:
    app: httpbin
spec:
  serviceAccountName: httpbin
  containers:
  - name: app
    ports:
    - containerPort: 8000
";

pub(super) const ALLOW: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-get
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  rules:
  - to:
    - operation:
        methods: [GET]
";

pub(super) const INVALID: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: broken
  namespace: foo
spec:
  action: MAYBE
";

#[test]
fn a_valid_change_makes_a_new_version_and_an_identical_one_does_not() {
    let store = Store::new();
    let outcome = store
        .apply(
            Source::Api,
            &[file("mesh.yaml", MESH), file("allow.yaml", ALLOW)],
        )
        .unwrap();
    assert_eq!(outcome.version, 1);
    assert_eq!(outcome.changes.len(), 3);
    assert!(outcome.changes.iter().all(|(_, a)| *a == Action::Created));
    assert!(
        store
            .current()
            .mesh
            .inventory
            .workload("foo", "httpbin")
            .is_some()
    );

    let again = store
        .apply(Source::Api, &[file("allow.yaml", ALLOW)])
        .unwrap();
    assert_eq!(again.version, 1, "nothing changed");
    assert_eq!(again.changes[0].1, Action::Unchanged);

    let edited = ALLOW.replace("[GET]", "[GET, HEAD]");
    let changed = store
        .apply(Source::Api, &[file("allow.yaml", &edited)])
        .unwrap();
    assert_eq!(changed.version, 2);
    assert_eq!(changed.changes[0].1, Action::Configured);
    // A replaced resource keeps its place in the store order.
    let kinds: Vec<String> = store
        .current()
        .entries
        .iter()
        .map(|e| e.key.kind.clone())
        .collect();
    assert_eq!(kinds, ["Namespace", "Pod", "AuthorizationPolicy"]);
}

#[test]
fn an_invalid_change_is_refused_whole_with_file_line_and_field() {
    let store = Store::new();
    store
        .apply(Source::Api, &[file("mesh.yaml", MESH)])
        .unwrap();
    let err = store
        .apply(
            Source::Api,
            &[
                file("allow.yaml", ALLOW),
                file("policies/broken.yaml", INVALID),
            ],
        )
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("policies/broken.yaml:7:"), "{text}");
    assert!(text.contains("spec.action"), "{text}");
    assert!(text.contains("AuthorizationPolicy foo/broken"), "{text}");
    // Nothing of the change was taken, not even the valid file.
    let current = store.current();
    assert_eq!(current.version, 1);
    assert_eq!(current.entries.len(), 2);
}

#[test]
fn errors_in_a_later_document_name_the_line_in_the_whole_file() {
    let store = Store::new();
    let text = format!("{MESH}---\n{INVALID}");
    let err = store
        .apply(Source::Api, &[file("all.yaml", &text)])
        .unwrap_err();
    // MESH has 18 lines, then `---`; `action` is line 7 of INVALID.
    assert!(err.lines()[0].starts_with("all.yaml:26:"), "{err}");
}

#[test]
fn delete_by_file_and_by_key() {
    let store = Store::new();
    store
        .apply(
            Source::Api,
            &[file("mesh.yaml", MESH), file("allow.yaml", ALLOW)],
        )
        .unwrap();
    let outcome = store.delete_files(&[file("allow.yaml", ALLOW)]).unwrap();
    assert_eq!(outcome.version, 2);
    assert_eq!(outcome.changes.len(), 1);
    assert_eq!(outcome.changes[0].0.name, "allow-get");
    // Deleting something absent changes nothing.
    let again = store.delete_files(&[file("allow.yaml", ALLOW)]).unwrap();
    assert_eq!(again.version, 2);
    assert!(again.changes.is_empty());
    // An invalid document still names what to delete.
    store
        .apply(
            Source::Api,
            &[file("allow.yaml", &ALLOW.replace("allow-get", "broken"))],
        )
        .unwrap();
    let by_invalid = store.delete_files(&[file("broken.yaml", INVALID)]).unwrap();
    assert_eq!(by_invalid.changes.len(), 1);
}

#[test]
fn a_source_holds_exactly_what_its_files_contain() {
    let store = Store::new();
    let folder = Source::Path("mesh/".into());
    store
        .replace_source(
            folder.clone(),
            &[file("mesh/a.yaml", MESH), file("mesh/b.yaml", ALLOW)],
        )
        .unwrap();
    store
        .apply(
            Source::Api,
            &[file("extra.yaml", &ALLOW.replace("allow-get", "extra"))],
        )
        .unwrap();
    assert_eq!(store.current().entries.len(), 4);
    // b.yaml removed from the folder: its policy goes, the API's stays.
    let outcome = store
        .replace_source(folder, &[file("mesh/a.yaml", MESH)])
        .unwrap();
    let changed: Vec<_> = outcome
        .changes
        .into_iter()
        .filter(|(_, a)| *a != Action::Unchanged)
        .collect();
    assert_eq!(
        changed,
        vec![(
            StoreKey {
                kind: "AuthorizationPolicy".into(),
                namespace: "foo".into(),
                name: "allow-get".into()
            },
            Action::Deleted
        )]
    );
    let names: Vec<String> = store
        .current()
        .entries
        .iter()
        .map(|e| e.key.name.clone())
        .collect();
    assert_eq!(names, ["foo", "httpbin", "extra"]);
}

#[test]
fn list_items_are_stored_one_by_one_with_the_list_text() {
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: a\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: b\n";
    let store = Store::new();
    store
        .apply(Source::Api, &[file("list.yaml", list)])
        .unwrap();
    let current = store.current();
    let items: Vec<(&str, &str)> = current
        .entries
        .iter()
        .map(|e| (e.key.name.as_str(), e.document.item.as_str()))
        .collect();
    assert_eq!(items, [("a", "items[0]"), ("b", "items[1]")]);
    assert_eq!(current.entries[1].object["metadata"]["name"], "b");
}

#[test]
fn declarations_in_the_policytest_shape_are_stored() {
    let declared = "apiVersion: meshward.dev/v1alpha1\nkind: PolicyTest\nmetadata:\n  name: mesh\nspec:\n  workloads:\n  - name: web\n    namespace: foo\n    address: 127.0.0.5\n    ports:\n    - port: 8080\n";
    let store = Store::new();
    store
        .apply(Source::Api, &[file("declared.yaml", declared)])
        .unwrap();
    let current = store.current();
    assert_eq!(current.entries[0].key.kind, "PolicyTest");
    let web = current.mesh.inventory.workload("foo", "web").unwrap();
    assert_eq!(web.address.to_string(), "127.0.0.5");
}

/// One write in a precedence scenario.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// The watched folder reloaded, its policy file allowing these methods (`None`: the file
    /// no longer holds the policy).
    File(Option<&'static str>),
    /// The folder reloaded with the same policy, reformatted (comments, other lines).
    FileReformatted(&'static str),
    /// `meshward apply` of the policy allowing these methods.
    Apply(&'static str),
    /// `meshward delete` of the policy.
    Delete,
}

fn policy(methods: &str) -> String {
    ALLOW.replace("[GET]", methods)
}

fn run_write(store: &Store, write: Write) {
    let folder = Source::Path("mesh/".into());
    match write {
        Write::File(methods) => {
            let mut files = vec![file("mesh/a.yaml", MESH)];
            if let Some(m) = methods {
                files.push(file("mesh/b.yaml", &policy(m)));
            }
            store.replace_source(folder, &files).unwrap();
        }
        Write::FileReformatted(methods) => {
            let text = format!("# reviewed\n\n{}", policy(methods));
            store
                .replace_source(
                    folder,
                    &[file("mesh/a.yaml", MESH), file("mesh/b.yaml", &text)],
                )
                .unwrap();
        }
        Write::Apply(methods) => {
            store
                .apply(Source::Api, &[file("applied.yaml", &policy(methods))])
                .unwrap();
        }
        Write::Delete => {
            store.delete(&[allow_get_key()]).unwrap();
        }
    }
}

fn allow_get_key() -> StoreKey {
    StoreKey {
        kind: "AuthorizationPolicy".into(),
        namespace: "foo".into(),
        name: "allow-get".into(),
    }
}

/// Who holds the policy and what it allows, or `None` when it is not in the store.
fn policy_state(store: &Store) -> Option<(String, String)> {
    let current = store.current();
    let entry = current.entries.iter().find(|e| e.key == allow_get_key())?;
    let writer = match &entry.source {
        Source::Api => "api".to_owned(),
        Source::Path(p) => p.display().to_string(),
    };
    let methods = entry.object["spec"]["rules"][0]["to"][0]["operation"]["methods"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    Some((writer, methods))
}

use Write::{Apply, Delete, File, FileReformatted};

#[test_case::test_case(&[File(Some("[GET]")), Apply("[HEAD]"), File(Some("[GET]"))], Some(("api", "HEAD")); "an untouched file reload keeps an apply")]
#[test_case::test_case(&[File(Some("[GET]")), Delete, File(Some("[GET]"))], None; "an untouched file reload keeps a delete")]
#[test_case::test_case(&[File(Some("[GET]")), Apply("[HEAD]"), FileReformatted("[GET]")], Some(("api", "HEAD")); "a reformatted file keeps an apply")]
#[test_case::test_case(&[File(Some("[GET]")), Apply("[HEAD]"), File(Some("[POST]"))], Some(("mesh/", "POST")); "a file edit after an apply wins")]
#[test_case::test_case(&[File(Some("[GET]")), Delete, File(Some("[POST]"))], Some(("mesh/", "POST")); "a file edit after a delete creates it again")]
#[test_case::test_case(&[File(Some("[GET]")), File(Some("[POST]")), Apply("[HEAD]")], Some(("api", "HEAD")); "an apply after a file edit wins")]
#[test_case::test_case(&[Apply("[HEAD]"), File(Some("[GET]"))], Some(("mesh/", "GET")); "a file that adds the resource after an apply wins")]
#[test_case::test_case(&[File(Some("[GET]")), File(None)], None; "removing it from the file deletes what the file owns")]
#[test_case::test_case(&[File(Some("[GET]")), Apply("[HEAD]"), File(None)], Some(("api", "HEAD")); "removing it from the file leaves the applied one")]
#[test_case::test_case(&[File(Some("[GET]")), Apply("[HEAD]"), File(None), File(Some("[GET]"))], Some(("mesh/", "GET")); "adding it back to the file is a new write")]
#[test_case::test_case(&[File(Some("[GET]")), FileReformatted("[GET]")], Some(("mesh/", "GET")); "a file reload refreshes what the file owns")]
fn the_most_recent_write_of_a_resource_wins(writes: &[Write], expected: Option<(&str, &str)>) {
    let store = Store::new();
    for write in writes {
        run_write(&store, *write);
    }
    let expected = expected.map(|(w, m)| (w.to_owned(), m.to_owned()));
    assert_eq!(policy_state(&store), expected, "after {writes:?}");
    // The rest of the folder is untouched by all of it.
    assert!(
        store
            .current()
            .mesh
            .inventory
            .workload("foo", "httpbin")
            .is_some()
    );
}

#[test]
fn a_reformatted_file_points_its_resources_at_their_new_lines() {
    let store = Store::new();
    run_write(&store, File(Some("[GET]")));
    let before = store.current().version;
    run_write(&store, FileReformatted("[GET]"));
    let current = store.current();
    let entry = current
        .entries
        .iter()
        .find(|e| e.key == allow_get_key())
        .unwrap();
    assert!(entry.document.text.starts_with("# reviewed"), "{entry:?}");
    assert_eq!(current.version, before + 1, "proxies get the new lines");
}

/// A PolicyTest with cases, as the seed tutorials ship them beside their manifests: its
/// workloads run as other service accounts, its services select them, it embeds resources.
pub(super) const TEST_WITH_CASES: &str = "apiVersion: meshward.dev/v1alpha1
kind: PolicyTest
metadata:
  name: step-1
spec:
  workloads:
  - {name: httpbin, namespace: foo, labels: {app: httpbin}, ports: [{port: 8000}]}
  services:
  - {name: httpbin, namespace: foo, selector: {app: httpbin}, ports: [{port: 80, targetPort: 8000}]}
  resources:
  - apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: allow-nothing, namespace: foo}
    spec: {}
  cases:
  - name: plaintext is denied
    from: {plaintext: true}
    to: {workload: foo/httpbin, port: 8000}
    expect: DENY
";

#[test]
fn a_policytest_with_cases_is_ignored_with_a_warning_and_changes_nothing() {
    let store = Store::new();
    store
        .apply(
            Source::Api,
            &[file("mesh.yaml", MESH), file("allow.yaml", ALLOW)],
        )
        .unwrap();
    let before = store.current();
    // The whole folder, as `meshward apply -f DIR` sends it: the manifests again and the test.
    let outcome = store
        .apply(
            Source::Api,
            &[
                file("mesh.yaml", MESH),
                file("allow.yaml", ALLOW),
                file(
                    "policytest.yaml",
                    &format!("# a comment\n{TEST_WITH_CASES}"),
                ),
            ],
        )
        .unwrap();
    assert_eq!(outcome.version, before.version, "{outcome:?}");
    assert!(
        outcome
            .changes
            .iter()
            .all(|(k, a)| *a == Action::Unchanged && k.kind != "PolicyTest"),
        "{outcome:?}"
    );
    let [warning] = outcome.warnings.as_slice() else {
        panic!("one warning expected: {outcome:?}");
    };
    assert!(
        warning.starts_with("policytest.yaml:2:1: PolicyTest default/step-1 ignored")
            && warning.contains("`meshward test`"),
        "{warning}"
    );
    let after = store.current();
    assert_eq!(after.entries.len(), before.entries.len());
    // Nothing of the test reaches the mesh the proxies are served: no second httpbin workload
    // (service account `default`), no test service, no embedded policy.
    let workloads: Vec<String> = after
        .mesh
        .inventory
        .workloads
        .iter()
        .map(|w| format!("{}/{} {}", w.namespace, w.name, w.service_account))
        .collect();
    assert_eq!(workloads, ["foo/httpbin httpbin"]);
    assert!(after.mesh.inventory.services.is_empty());
    assert!(
        after
            .entries
            .iter()
            .all(|e| e.key.name != "allow-nothing" && e.key.kind != "PolicyTest")
    );

    // Alone, it is ignored too: accepted, no new version.
    let outcome = store
        .apply(Source::Api, &[file("policytest.yaml", TEST_WITH_CASES)])
        .unwrap();
    assert_eq!(outcome.version, before.version);
    assert!(outcome.changes.is_empty());
    assert_eq!(outcome.warnings.len(), 1);

    // The same from a watched folder.
    let outcome = store
        .replace_source(
            Source::Path("seed/".into()),
            &[file("seed/policytest.yaml", TEST_WITH_CASES)],
        )
        .unwrap();
    assert_eq!(outcome.version, before.version);
    assert_eq!(outcome.warnings.len(), 1);
    assert_eq!(store.current().entries.len(), before.entries.len());
}

/// What `meshward up` writes into its watched inventory: the running pod with its address, and
/// the Service with the virtual IP the mesh gave it.
const MESH_INVENTORY: &str = "apiVersion: v1
kind: Pod
metadata:
  name: httpbin-0
  namespace: foo
  labels: {app: httpbin}
spec:
  serviceAccountName: httpbin
  containers:
  - name: app
    ports:
    - containerPort: 8000
status:
  podIP: 10.44.0.2
---
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  namespace: foo
spec:
  clusterIP: 10.45.0.10
  selector: {app: httpbin}
  ports:
  - port: 8000
";

/// The tutorial's own manifests, as a user re-applies them with the folder.
const USER_MANIFESTS: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpbin
  namespace: foo
spec:
  replicas: 1
  selector:
    matchLabels: {app: httpbin}
  template:
    metadata:
      labels: {app: httpbin}
    spec:
      serviceAccountName: httpbin
      containers:
      - name: app
        ports:
        - containerPort: 8000
---
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  namespace: foo
spec:
  selector: {app: httpbin}
  ports:
  - port: 8000
";

fn workloads_and_services(store: &Store) -> (Vec<String>, Vec<String>) {
    let current = store.current();
    let inventory = &current.mesh.inventory;
    let workloads = inventory
        .workloads
        .iter()
        .map(|w| format!("{}/{} {}", w.namespace, w.name, w.address))
        .collect();
    let services = inventory
        .services
        .iter()
        .map(|s| format!("{}/{} {:?}", s.namespace, s.name, s.cluster_ip))
        .collect();
    (workloads, services)
}

#[test]
fn under_a_local_mesh_applied_deployments_pods_and_services_are_left_to_the_mesh() {
    let store = Store::new();
    store.set_pods_run_by_mesh(true);
    let inventory = Source::Path(PathBuf::from("/mesh/inventory.json"));
    store
        .replace_source(inventory, &[file("inventory.yaml", MESH_INVENTORY)])
        .unwrap();
    let before = workloads_and_services(&store);
    assert_eq!(
        before,
        (
            vec!["foo/httpbin-0 10.44.0.2".to_owned()],
            vec!["foo/httpbin Some(10.45.0.10)".to_owned()]
        )
    );
    let version = store.current().version;

    // The folder again, with a policy: the policy is applied, the rest left out by name.
    let outcome = store
        .apply(
            Source::Api,
            &[file("app.yaml", USER_MANIFESTS), file("allow.yaml", ALLOW)],
        )
        .unwrap();
    assert_eq!(outcome.version, version + 1, "{outcome:?}");
    assert_eq!(
        outcome.changes,
        [(allow_get_key(), Action::Created)],
        "{outcome:?}"
    );
    assert_eq!(outcome.warnings.len(), 2, "{outcome:?}");
    assert!(
        outcome.warnings[0].starts_with("app.yaml:1:1: Deployment foo/httpbin ignored: ")
            && outcome.warnings[0].contains("`meshward up` again"),
        "{outcome:?}"
    );
    assert!(
        outcome.warnings[1].starts_with("app.yaml:20:1: Service foo/httpbin ignored: "),
        "{outcome:?}"
    );
    // No pod without an address from the Deployment's template; the virtual IP stays.
    assert_eq!(workloads_and_services(&store), before);

    // Deleting them is left to the mesh too; the policy goes.
    let outcome = store
        .delete_files(&[file("app.yaml", USER_MANIFESTS), file("allow.yaml", ALLOW)])
        .unwrap();
    assert_eq!(outcome.changes, [(allow_get_key(), Action::Deleted)]);
    assert_eq!(outcome.warnings.len(), 2, "{outcome:?}");
    assert!(
        outcome.warnings[1].starts_with("Service foo/httpbin not deleted: "),
        "{outcome:?}"
    );
    assert_eq!(workloads_and_services(&store), before);

    // A control plane of its own (no local mesh) stores whatever it is given.
    let plain = Store::new();
    let outcome = plain
        .apply(Source::Api, &[file("app.yaml", USER_MANIFESTS)])
        .unwrap();
    assert_eq!(outcome.changes.len(), 2, "{outcome:?}");
    assert!(outcome.warnings.is_empty(), "{outcome:?}");
}
