//! The control plane's store, mirrored by the supervisor so that a restarted control plane
//! starts where the dead one stopped.
//!
//! The store lives in the control plane's memory: `config/` holds only what `up` was given,
//! and everything `meshward apply|delete` changed since would be lost with the process. Losing
//! it would be a security regression (a deny policy applied live would silently disappear on
//! restart), so a thread of the supervisor follows the store: it polls the admin API's version
//! and, when it changes, copies `GET /api/v1/resources` (kept in memory, and in `mirror.json`
//! for people and tests to see how far it got). Before a restart the supervisor writes that
//! copy back:
//!
//! - `config/resources.json` keeps the resources of `up`'s manifests that are still in the
//!   store (a `meshward delete` of one of them stays deleted);
//! - `restore/applied.json` holds every resource some other writer (`meshward apply`, or the
//!   previous restore) put there, in store order.
//!
//! The control plane loads both before it accepts its first proxy. A change accepted less than
//! one polling interval before the control plane died may be missing from the copy.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::control;
use super::state::{Home, StateError, write_atomic};

/// How often the store's version is checked: a status request on loopback, cheap enough to
/// keep the window of changes a crash can lose short.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The file of `restore/`.
const RESTORE_FILE: &str = "applied.json";

/// The last copy of the store: `(control plane pid, store version, items)`.
type Copy = Option<(u32, u64, Vec<Value>)>;

/// The mirror, shared between the polling thread and the supervisor.
#[derive(Debug, Clone, Default)]
pub(crate) struct Mirror {
    copy: Arc<Mutex<Copy>>,
    /// The control plane now running; 0 while none is.
    pid: Arc<AtomicU32>,
}

impl Mirror {
    /// Starts following the control plane `pid` until `stop` is set; join the thread before
    /// removing the mesh's files, so that it writes nothing after them.
    pub(crate) fn follow(
        home: &Home,
        pid: u32,
        stop: Arc<AtomicBool>,
    ) -> (Self, std::thread::JoinHandle<()>) {
        let mirror = Self::default();
        mirror.pid.store(pid, Ordering::SeqCst);
        let thread = mirror.clone();
        let file = home.mirror_file();
        let handle = std::thread::spawn(move || thread.poll(&file, &stop));
        (mirror, handle)
    }

    /// The control plane is now `pid` (0: none).
    pub(crate) fn set_pid(&self, pid: u32) {
        self.pid.store(pid, Ordering::SeqCst);
    }

    fn poll(&self, file: &Path, stop: &AtomicBool) {
        let api = control::admin();
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(POLL_INTERVAL);
            let pid = self.pid.load(Ordering::SeqCst);
            if pid == 0 {
                continue;
            }
            let Some(version) = api
                .get("/api/v1/status")
                .ok()
                .and_then(|s| s["version"].as_u64())
            else {
                continue;
            };
            let known = self
                .lock()
                .as_ref()
                .is_some_and(|(p, v, _)| *p == pid && *v == version);
            if known {
                continue;
            }
            let Ok(body) = api.get("/api/v1/resources") else {
                continue;
            };
            let (Some(version), Some(items)) = (body["version"].as_u64(), body["items"].as_array())
            else {
                continue;
            };
            // A control plane that died between the two requests answered neither.
            if self.pid.load(Ordering::SeqCst) == pid && !stop.load(Ordering::SeqCst) {
                *self.lock() = Some((pid, version, items.clone()));
                let copy = json!({"controlPlanePid": pid, "version": version, "items": items});
                let text = serde_json::to_string_pretty(&copy).unwrap_or_default();
                if let Err(e) = write_atomic(file, text.as_bytes()) {
                    eprintln!("warning: {e}");
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Copy> {
        // The copy is replaced whole, so a panic elsewhere cannot leave half of one.
        self.copy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the copy back for the next control plane (see the module docs); returns whether
    /// `restore/` should be loaded. Without a copy (the control plane died before the first
    /// poll) nothing is written and the next one starts from `config/` alone.
    pub(crate) fn write_restore(&self, home: &Home) -> Result<bool, StateError> {
        let Some((_, _, items)) = self.lock().clone() else {
            return Ok(home.restore_dir().join(RESTORE_FILE).is_file());
        };
        let resources = control::resources_file(home);
        let inventory = control::inventory_file(home);
        let (config, applied) = split(&items, &resources, &inventory);
        write_list(&resources, config)?;
        write_list(&home.restore_dir().join(RESTORE_FILE), applied)?;
        Ok(true)
    }
}

/// The store's items as `(from config/resources.json, from anywhere else)`, each in store
/// order. Items of `config/inventory.json` are in neither: the supervisor and `meshward run`
/// keep that file current themselves.
fn split<'a>(
    items: &'a [Value],
    resources: &Path,
    inventory: &Path,
) -> (Vec<&'a Value>, Vec<&'a Value>) {
    let source = |path: &Path| json!({ "path": path.display().to_string() });
    let (resources, inventory) = (source(resources), source(inventory));
    let mut from_resources = Vec::new();
    let mut other = Vec::new();
    for item in items {
        let object = &item["object"];
        if object.is_null() || item["source"] == inventory {
            continue;
        }
        if item["source"] == resources {
            from_resources.push(object);
        } else {
            other.push(object);
        }
    }
    (from_resources, other)
}

fn write_list(path: &Path, items: Vec<&Value>) -> Result<(), StateError> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    let text = serde_json::to_string_pretty(&list).unwrap_or_default();
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_resources_go_to_restore_and_deleted_ones_stay_deleted() {
        let item = |name: &str, source: Value, origin: &str| {
            json!({
                "kind": "AuthorizationPolicy", "namespace": "default", "name": name,
                "origin": origin, "source": source,
                "object": {"kind": "AuthorizationPolicy", "metadata": {"name": name}},
            })
        };
        let items = vec![
            item(
                "from-up",
                json!({"path": "/m/config/resources.json"}),
                "/m/config/resources.json",
            ),
            json!({"kind": "Pod", "name": "p", "origin": "/m/config/inventory.json",
                   "source": {"path": "/m/config/inventory.json"}, "object": {"kind": "Pod"}}),
            item("applied", json!("api"), "deny.yaml"),
            item(
                "restored",
                json!({"path": "/m/restore"}),
                "/m/restore/applied.json",
            ),
        ];
        let (from_config, other) = split(
            &items,
            Path::new("/m/config/resources.json"),
            Path::new("/m/config/inventory.json"),
        );
        let names = |v: &[&Value]| -> Vec<String> {
            v.iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap_or("-").to_owned())
                .collect()
        };
        assert_eq!(names(&from_config), ["from-up"]);
        assert_eq!(names(&other), ["applied", "restored"]);
    }

    #[test]
    fn without_a_copy_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        assert!(!Mirror::default().write_restore(&home).unwrap());
        assert!(!home.config_dir().exists());
    }
}
