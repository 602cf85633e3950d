//! The state directory: a change is on disk when the store answers, a reopened store is the
//! store that was recorded, and a damaged state file stops the start with the file named.

use std::path::Path;

use super::super::tests::{ALLOW, INVALID, MESH, file};
use super::super::{Action, Source, Store, StoreError, StoreKey};
use super::*;

fn key(kind: &str, namespace: &str, name: &str) -> StoreKey {
    StoreKey {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// What a store serves, comparably: every entry's key, writer and source document, and the
/// version.
fn served(store: &Store) -> (u64, Vec<(StoreKey, Source, Document)>) {
    let current = store.current();
    let entries = current
        .entries
        .iter()
        .map(|e| (e.key.clone(), e.source.clone(), e.document.clone()))
        .collect();
    (current.version, entries)
}

/// A state file with a correct header over `body`.
fn write_state(dir: &Path, body: &str) {
    let text = format!("{HEADER}{}\n{body}", sha256_hex(body.as_bytes()));
    std::fs::write(dir.join(STATE_FILE), text).unwrap();
}

fn open_error(dir: &Path) -> StateDirError {
    Store::open(dir).map(|_| ()).unwrap_err()
}

#[test]
fn a_reopened_store_serves_exactly_what_was_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: a\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: b\n";
    let recorded = {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.current().version, 0);
        store
            .replace_source(
                Source::Path("mesh/".into()),
                &[file("mesh/pods.yaml", MESH)],
            )
            .unwrap();
        store
            .apply(
                Source::Api,
                &[file("allow.yaml", ALLOW), file("list.yaml", list)],
            )
            .unwrap();
        store.delete(&[key("Namespace", "", "a")]).unwrap();
        served(&store)
    };
    assert_eq!(recorded.0, 3);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(served(&store), recorded);
    assert!(
        store
            .current()
            .mesh
            .inventory
            .workload("foo", "httpbin")
            .is_some()
    );
    // Versions go on from the recorded one.
    let next = store
        .apply(
            Source::Api,
            &[file("allow.yaml", &ALLOW.replace("[GET]", "[PUT]"))],
        )
        .unwrap();
    assert_eq!(next.version, 4);
    assert_eq!(next.changes[0].1, Action::Configured);
}

#[test]
fn a_restart_does_not_let_an_untouched_file_undo_an_apply_or_a_delete() {
    let dir = tempfile::tempdir().unwrap();
    let folder = Source::Path("mesh/".into());
    let files = [file("mesh/pods.yaml", MESH), file("mesh/allow.yaml", ALLOW)];
    {
        let store = Store::open(dir.path()).unwrap();
        store.replace_source(folder.clone(), &files).unwrap();
        store
            .delete(&[key("AuthorizationPolicy", "foo", "allow-get")])
            .unwrap();
        store
            .apply(
                Source::Api,
                &[file("extra.yaml", &ALLOW.replace("allow-get", "extra"))],
            )
            .unwrap();
    }
    // A restarted control plane restores the store, then loads its (unchanged) folder.
    let store = Store::open(dir.path()).unwrap();
    let before = served(&store);
    store.replace_source(folder, &files).unwrap();
    assert_eq!(served(&store), before);
    let names: Vec<String> = store
        .current()
        .entries
        .iter()
        .map(|e| e.key.name.clone())
        .collect();
    assert_eq!(names, ["foo", "httpbin", "extra"]);
}

#[test]
fn a_change_that_cannot_be_recorded_is_not_made() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .apply(Source::Api, &[file("mesh.yaml", MESH)])
        .unwrap();
    // The temporary file's name taken by a directory: the write fails like a full disk would.
    std::fs::create_dir(dir.path().join(format!("{STATE_FILE}.tmp"))).unwrap();
    let err = store
        .apply(Source::Api, &[file("allow.yaml", ALLOW)])
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unrecorded(StateDirError::Write { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("store.json.tmp"), "{err}");
    assert_eq!(store.current().version, 1, "nothing was published");
    assert_eq!(store.current().entries.len(), 2);
    drop(store);
    // And the state on disk is the last acknowledged one.
    let reopened = Store::open(dir.path()).unwrap();
    assert_eq!(reopened.current().version, 1);
}

#[test]
fn one_control_plane_per_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    let err = open_error(dir.path());
    assert!(matches!(err, StateDirError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("in use by another control plane"),
        "{err}"
    );
    drop(first);
    Store::open(dir.path()).unwrap();
}

#[test]
fn an_interrupted_write_leaves_the_last_acknowledged_state() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .apply(Source::Api, &[file("mesh.yaml", MESH)])
            .unwrap();
    }
    // A crash between the write of the temporary file and its rename.
    std::fs::write(dir.path().join(format!("{STATE_FILE}.tmp")), "half a fi").unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.current().version, 1);
    assert!(!dir.path().join(format!("{STATE_FILE}.tmp")).exists());
}

/// Damages the state file of a store holding MESH and ALLOW with `damage`, and returns the
/// error of the next start.
fn damaged(damage: impl FnOnce(&Path, Vec<u8>)) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .apply(
                Source::Api,
                &[file("mesh.yaml", MESH), file("allow.yaml", ALLOW)],
            )
            .unwrap();
    }
    let path = dir.path().join(STATE_FILE);
    let bytes = std::fs::read(&path).unwrap();
    damage(&path, bytes);
    let err = open_error(dir.path()).to_string();
    assert!(
        err.contains(&path.display().to_string()),
        "the file is named: {err}"
    );
    (dir, err)
}

#[test]
fn a_corrupt_state_file_stops_the_start_and_says_what_is_wrong() {
    let (_, err) = damaged(|path, mut bytes| {
        // One flipped bit in a policy: still valid JSON, a different policy.
        let at = bytes.windows(3).position(|w| w == b"GET").unwrap();
        bytes[at] = b'P';
        std::fs::write(path, bytes).unwrap();
    });
    assert!(err.contains("is corrupt"), "{err}");
    assert!(err.contains("does not match its sha256 digest"), "{err}");
    assert!(err.contains("move it away"), "how to recover: {err}");

    let (_, err) = damaged(|path, bytes| {
        std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert!(
        err.contains("does not match its sha256 digest"),
        "truncated: {err}"
    );

    let (_, err) = damaged(|path, _| std::fs::write(path, "").unwrap());
    assert!(err.contains("the file is empty"), "{err}");

    let (_, err) = damaged(|path, _| std::fs::write(path, "{\"version\": 3}\n").unwrap());
    assert!(
        err.contains("not a meshward control-plane state file"),
        "{err}"
    );

    let (_, err) = damaged(|path, _| {
        write_state(path.parent().unwrap(), "{\"version\": 3, \"entries\": [}\n");
    });
    assert!(
        err.contains("line 2, column"),
        "the line, counting the header: {err}"
    );
}

#[test]
fn a_state_file_whose_resources_no_longer_load_stops_the_start_naming_the_resource() {
    let dir = tempfile::tempdir().unwrap();
    let entry = StoredEntry {
        key: key("AuthorizationPolicy", "foo", "broken"),
        source: Source::Api,
        origin: "broken.yaml".into(),
        first_line: 1,
        item: String::new(),
        text: INVALID.into(),
    };
    let snapshot = Snapshot {
        version: 7,
        entries: vec![entry],
        files: vec![],
    };
    write_state(dir.path(), &serde_json::to_string(&snapshot).unwrap());
    let err = open_error(dir.path());
    assert!(matches!(err, StateDirError::Unloadable { .. }), "{err}");
    let err = err.to_string();
    assert!(err.contains("AuthorizationPolicy foo/broken"), "{err}");
    assert!(
        err.contains("broken.yaml:7:"),
        "the loader's own message: {err}"
    );
    assert!(
        err.contains(&dir.path().join(STATE_FILE).display().to_string()),
        "{err}"
    );

    // A recorded key its document does not hold is damage, not a validation change.
    let mut snapshot = snapshot;
    snapshot.entries[0].text = ALLOW.into();
    write_state(dir.path(), &serde_json::to_string(&snapshot).unwrap());
    let err = open_error(dir.path()).to_string();
    assert!(err.contains("does not contain that resource"), "{err}");
}

#[test]
fn a_recorded_policytest_with_cases_is_dropped_on_restore_with_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let test = StoredEntry {
        key: key("PolicyTest", "default", "step-1"),
        source: Source::Api,
        origin: "policytest.yaml".into(),
        first_line: 1,
        item: String::new(),
        text: super::super::tests::TEST_WITH_CASES.into(),
    };
    let allow = StoredEntry {
        key: key("AuthorizationPolicy", "foo", "allow-get"),
        source: Source::Api,
        origin: "allow.yaml".into(),
        first_line: 1,
        item: String::new(),
        text: ALLOW.into(),
    };
    let snapshot = Snapshot {
        version: 7,
        entries: vec![test, allow],
        files: vec![],
    };
    write_state(dir.path(), &serde_json::to_string(&snapshot).unwrap());
    {
        let store = Store::open(dir.path()).unwrap();
        let (version, entries) = served(&store);
        assert_eq!(version, 8, "what is served changed");
        let keys: Vec<&StoreKey> = entries.iter().map(|(k, _, _)| k).collect();
        assert_eq!(keys, [&key("AuthorizationPolicy", "foo", "allow-get")]);
        assert!(store.current().mesh.inventory.workloads.is_empty());
    }
    // Recorded: the next start serves the same version.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(served(&store).0, 8);
}
