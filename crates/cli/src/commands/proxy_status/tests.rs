//! Golden outputs of `proxy-status` from a captured `GET /api/v1/proxies` answer.

use super::*;

const PROXIES: &str = include_str!("../../../tests/data/diagnostics/proxies.json");

/// A moment shortly after the answer was captured.
fn now() -> Timestamp {
    NOW.trim().parse().unwrap()
}

const NOW: &str = include_str!("../../../tests/data/diagnostics/captured-at.txt");

fn golden(name: &str, output: &str) {
    insta::with_settings!({
        snapshot_path => "../../../tests/snapshots",
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!(name, output);
    });
}

fn proxies() -> Vec<ProxyView> {
    views(&serde_json::from_str(PROXIES).unwrap(), None).unwrap()
}

#[test]
fn table() {
    golden(
        "proxy-status-table",
        &render(&proxies(), Format::Table, now()).unwrap(),
    );
}

#[test]
fn json() {
    golden(
        "proxy-status-json",
        &render(&proxies(), Format::Json, now()).unwrap(),
    );
}

#[test]
fn yaml() {
    golden(
        "proxy-status-yaml",
        &render(&proxies(), Format::Yaml, now()).unwrap(),
    );
}

#[test]
fn a_reconnected_proxy_is_shown_once_with_its_newest_stream() {
    let body = serde_json::json!({"proxies": [
        {"id": 1, "namespace": "foo", "workload": "w", "identity": "spiffe://td/ns/foo/sa/w",
         "podAddress": "10.244.0.2", "connected": false, "versionSent": 3, "ackedVersion": 3},
        {"id": 2, "namespace": "foo", "workload": "w", "identity": "spiffe://td/ns/foo/sa/w",
         "podAddress": "10.244.0.2", "connected": true, "versionSent": 5, "ackedVersion": 4,
         "lastNack": {"version": 5, "error": "x.yaml:3:1: bad", "at": "2026-01-01T00:00:00Z"}},
        {"id": 3, "namespace": "bar", "workload": "v", "identity": "spiffe://td/ns/bar/sa/v",
         "podAddress": "10.244.0.3", "connected": true},
    ]});
    let all = views(&body, None).unwrap();
    let shown: Vec<(&str, &str, SyncStatus)> = all
        .iter()
        .map(|v| (v.workload.as_str(), v.status, v.config))
        .collect();
    assert_eq!(
        shown,
        [
            ("v", "CONNECTED", SyncStatus::Waiting),
            ("w", "CONNECTED", SyncStatus::Nacked)
        ]
    );
    assert_eq!(views(&body, Some("foo")).unwrap().len(), 1);
    let table = render(&all, Format::Table, "2026-01-01T00:00:10Z".parse().unwrap()).unwrap();
    assert!(
        table.contains("foo/w refused version 5:\nx.yaml:3:1: bad"),
        "{table}"
    );
}

#[test]
fn ages() {
    let at = |s: &str| s.parse::<Timestamp>().unwrap();
    let t0 = at("2026-01-01T00:00:00Z");
    assert_eq!(age(at("2026-01-01T00:00:07Z"), t0), "7s");
    assert_eq!(age(at("2026-01-01T00:02:07Z"), t0), "2m 7s");
    assert_eq!(age(at("2026-01-01T03:02:07Z"), t0), "3h 2m");
    assert_eq!(age(at("2026-01-03T03:02:07Z"), t0), "2d 3h");
    assert_eq!(age(t0, at("2026-01-01T00:00:07Z")), "0s");
}
