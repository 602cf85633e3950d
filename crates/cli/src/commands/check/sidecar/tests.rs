//! The destination's state is the worst of its connected proxies', and every state but SYNCED
//! (or no sidecar) warns.

use serde_json::json;

use super::*;

fn proxy(status: &str, config: &str, sent: u64, acked: Option<u64>) -> ProxySync {
    serde_json::from_value(json!({
        "namespace": "default",
        "workload": "backend-0",
        "podAddress": format!("10.244.0.{sent}"),
        "identity": "spiffe://cluster.local/ns/default/sa/backend",
        "status": status,
        "config": config,
        "versionSent": sent,
        "versionAcked": acked,
        "lastNack": (config == "NACKED").then(|| json!({
            "version": sent,
            "error": "a.yaml:3:1: spec.action: unknown\nmore",
            "at": "2026-01-01T00:00:00Z",
        })),
    }))
    .unwrap()
}

#[test]
fn synced_says_nothing_more() {
    let s = judge(
        "default/backend-0",
        true,
        vec![proxy("CONNECTED", "SYNCED", 3, Some(3))],
    );
    assert_eq!(s.state, SyncState::Synced);
    assert_eq!(s.warning, None);
    assert_eq!(s.summary(), "the sidecar of default/backend-0 is SYNCED");
}

#[test]
fn the_worst_connected_proxy_decides_and_closed_streams_are_ignored() {
    let s = judge(
        "default/backend-0",
        true,
        vec![
            proxy("CONNECTED", "SYNCED", 3, Some(3)),
            proxy("CONNECTED", "STALE", 4, Some(3)),
            proxy("DISCONNECTED", "NACKED", 2, Some(1)),
        ],
    );
    assert_eq!(s.state, SyncState::Stale);
    let warning = s.warning.unwrap();
    assert!(warning.contains("has not ACKed version 4"), "{warning}");

    let s = judge(
        "default/backend-0",
        true,
        vec![proxy("CONNECTED", "NACKED", 5, Some(4))],
    );
    assert_eq!(s.state, SyncState::Nacked);
    let warning = s.warning.unwrap();
    assert!(
        warning.contains("refused version 5 (a.yaml:3:1: spec.action: unknown)"),
        "{warning}"
    );
}

#[test]
fn no_live_stream_is_disconnected_or_not_connected() {
    let s = judge(
        "default/backend-0",
        true,
        vec![proxy("DISCONNECTED", "SYNCED", 3, Some(3))],
    );
    assert_eq!(s.state, SyncState::Disconnected);
    assert!(s.warning.unwrap().contains("DISCONNECTED"));

    let s = judge("default/backend-0", true, Vec::new());
    assert_eq!(s.state, SyncState::NotConnected);
    assert!(s.warning.is_some());
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["state"], "NOT_CONNECTED");
}

#[test]
fn a_destination_without_a_sidecar_has_nothing_to_sync() {
    let s = judge("legacy/batch", false, Vec::new());
    assert_eq!(s.state, SyncState::NoSidecar);
    assert_eq!(s.warning, None);
    assert_eq!(s.summary(), "legacy/batch has no sidecar");
}
