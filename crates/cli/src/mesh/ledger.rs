//! The processes a loopback-mode mesh started, and the proof that a process is still one of
//! them (`~/.meshward/processes.json`).
//!
//! Loopback mode has no network namespace to enumerate or delete, so `down` (and the
//! supervisor's own teardown) find the mesh's processes here, and signal only those it can prove
//! are its own — never a pid that an unrelated process reused after a crash or a reboot:
//!
//! - every process the mesh starts (supervisor, control plane, apps, sidecars, forwarders) is
//!   recorded with its pid and its start time (`/proc/<pid>/stat` field 22, clock ticks since
//!   boot), together with the boot's id: a recorded pid is ours only while a process with that
//!   pid exists *and* started at that tick of that boot;
//! - every process it starts also carries the mesh's random id in its environment
//!   (`MESHWARD_MESH_ID`), which its descendants inherit; a process whose initial environment
//!   holds this mesh's id was started by it (a shell's children of a `meshward.dev/run`
//!   command, a process that outlived its recorded parent).
//!
//! Apps, sidecars and forwarders run in process groups of their own (see
//! [`super::supervisor`]), and a proven group leader's whole group is signalled.
//!
//! Read-modify-write happens under the mesh home's lock (`Home::lock`), never inside
//! `Home::update`, which holds it already.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::state::{Home, StateError, write_atomic};

/// The environment variable carrying the mesh's id.
pub(crate) const MARKER: &str = "MESHWARD_MESH_ID";

/// `processes.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Ledger {
    /// This mesh's random id (the value of [`MARKER`]).
    mesh_id: String,
    /// The boot the start times belong to.
    boot_id: String,
    /// What was started, by pid.
    processes: BTreeMap<u32, Entry>,
}

/// One recorded process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// Start time in clock ticks since boot.
    start: u64,
    /// What it is (`control plane`, `default/backend-0 proxy`, …), for people reading the file.
    what: String,
    /// It leads a process group of its own, which is signalled with it.
    group: bool,
}

/// Whether a recorded process leads a process group of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    /// Started with `process_group(0)`: its group is signalled too.
    Own,
    /// Shares its parent's group: only it is signalled.
    Shared,
}

fn read(home: &Home) -> Result<Option<Ledger>, StateError> {
    let path = home.processes_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Io { path, source }),
    };
    // A damaged file proves nothing: nothing is signalled on its account.
    Ok(serde_json::from_str(&text).ok())
}

fn write(home: &Home, ledger: &Ledger) -> Result<(), StateError> {
    let text = serde_json::to_string_pretty(ledger).unwrap_or_default();
    write_atomic(&home.processes_file(), text.as_bytes())
}

/// The ledger's mesh id, creating the ledger with a fresh id when there is none. An existing
/// ledger is kept (its processes are still the home's, and `down` must still find them).
pub(crate) fn begin(home: &Home) -> Result<String, StateError> {
    let _lock = home.lock()?;
    if let Some(ledger) = read(home)? {
        return Ok(ledger.mesh_id);
    }
    let ledger = Ledger {
        mesh_id: fresh_id(),
        boot_id: boot_id().unwrap_or_default(),
        processes: BTreeMap::new(),
    };
    write(home, &ledger)?;
    Ok(ledger.mesh_id)
}

/// Marks `cmd` as started by the mesh `id`.
pub(crate) fn mark(cmd: &mut Command, id: &str) {
    cmd.env(MARKER, id);
}

/// Records the running process `pid`. A process that is already gone is not recorded (there is
/// nothing left to stop).
pub(crate) fn record(home: &Home, pid: u32, what: &str, group: Group) -> Result<(), StateError> {
    let Some(start) = start_time(pid) else {
        return Ok(());
    };
    let _lock = home.lock()?;
    let mut ledger = read(home)?.unwrap_or_else(|| Ledger {
        mesh_id: fresh_id(),
        boot_id: boot_id().unwrap_or_default(),
        processes: BTreeMap::new(),
    });
    ledger.processes.insert(
        pid,
        Entry {
            start,
            what: what.to_owned(),
            group: group == Group::Own,
        },
    );
    write(home, &ledger)
}

/// Forgets `pid` (it exited and was reaped).
pub(crate) fn forget(home: &Home, pid: u32) {
    let Ok(_lock) = home.lock() else { return };
    if let Ok(Some(mut ledger)) = read(home)
        && ledger.processes.remove(&pid).is_some()
    {
        let _ = write(home, &ledger);
    }
}

/// Whether `pid` is a process the ledger proves is the mesh's.
pub(crate) fn proves(home: &Home, pid: u32) -> bool {
    let Ok(Some(ledger)) = read(home) else {
        return false;
    };
    same_boot(&ledger)
        && ledger
            .processes
            .get(&pid)
            .is_some_and(|e| start_time(pid) == Some(e.start))
}

/// A process to stop, with what proves it.
#[derive(Debug, Clone, Copy)]
struct Target {
    pid: u32,
    start: u64,
    group: bool,
}

impl Target {
    fn still_ours(self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Stops every process the ledger proves is the mesh's, and every process carrying its id
/// (SIGTERM, `grace`, SIGKILL), except this process. Returns how many it signalled. Nothing
/// happens without a ledger.
pub(crate) fn sweep(home: &Home, grace: Duration) -> usize {
    let Ok(Some(ledger)) = read(home) else {
        return 0;
    };
    let me = std::process::id();
    let mut targets: BTreeMap<u32, Target> = BTreeMap::new();
    if same_boot(&ledger) {
        for (&pid, e) in &ledger.processes {
            if pid != me && start_time(pid) == Some(e.start) {
                targets.insert(
                    pid,
                    Target {
                        pid,
                        start: e.start,
                        group: e.group,
                    },
                );
            }
        }
    }
    let marked = || {
        carrying(&ledger.mesh_id)
            .into_iter()
            .filter(|&pid| pid != me)
            .filter_map(|pid| {
                start_time(pid).map(|start| Target {
                    pid,
                    start,
                    group: false,
                })
            })
            .collect::<Vec<_>>()
    };
    for t in marked() {
        targets.entry(t.pid).or_insert(t);
    }
    let count = targets.len();
    for t in targets.values() {
        signal(*t, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && targets.values().any(|t| t.still_ours()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Re-proved before the kill: a pid that changed hands during the grace period is left.
    for t in targets.values().filter(|t| t.still_ours()) {
        signal(*t, rustix::process::Signal::KILL);
    }
    // Whatever a dying process started meanwhile.
    for t in marked() {
        signal(t, rustix::process::Signal::KILL);
    }
    count
}

fn signal(target: Target, signal: rustix::process::Signal) {
    let Some(pid) = i32::try_from(target.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    if target.group {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
    let _ = rustix::process::kill_process(pid, signal);
}

fn same_boot(ledger: &Ledger) -> bool {
    boot_id().is_some_and(|b| b == ledger.boot_id)
}

/// This boot's id.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// A random id for a new mesh.
fn fresh_id() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/random/uuid") {
        Ok(uuid) if !uuid.trim().is_empty() => uuid.trim().to_owned(),
        // Unique enough where the kernel offers no uuid: nothing else on the machine uses it.
        _ => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            format!("{}-{nanos}", std::process::id())
        }
    }
}

/// The start time of `pid` (clock ticks since boot), `None` when there is no such process
/// or it is a zombie (it runs nothing any more).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of `/proc/<pid>/stat`; fields are counted after the parenthesised command name,
/// which may itself contain spaces and parentheses.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // Field 3 is the state.
    if fields.next()? == "Z" {
        return None;
    }
    // Fields 4..=21 come before the start time.
    fields.nth(18)?.parse().ok()
}

/// The pids whose initial environment carries `MARKER=id` (processes of other users are not
/// readable, and are not the mesh's).
fn carrying(id: &str) -> Vec<u32> {
    let needle = format!("{MARKER}={id}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| environ_has(&Path::new("/proc").join(pid.to_string()), &needle))
        .collect()
}

fn environ_has(proc_dir: &Path, needle: &str) -> bool {
    std::fs::read(proc_dir.join("environ"))
        .map(|env| {
            env.split(|&b| b == 0)
                .any(|entry| entry == needle.as_bytes())
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 120 0 0 0 1 2 0 0 20 0 1 0 987654 1234 56";
        assert_eq!(parse_start_time(stat), Some(987_654));
        let zombie = "4242 (x) Z 1 4242 4242 0 -1 4194560 120 0 0 0 1 2 0 0 20 0 1 0 987654 0 0";
        assert_eq!(parse_start_time(zombie), None);
        assert_eq!(parse_start_time("garbage"), None);
        assert!(start_time(std::process::id()).is_some());
    }

    #[test]
    fn only_proven_and_marked_processes_are_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let id = begin(&home).unwrap();
        assert_eq!(begin(&home).unwrap(), id, "an existing ledger keeps its id");

        // A recorded child, a marked grandchild it leaves behind, and an unmarked bystander.
        let mut recorded = Command::new("sh");
        recorded.args(["-c", "sleep 30 & sleep 30"]);
        mark(&mut recorded, &id);
        let mut recorded = recorded.spawn().unwrap();
        record(&home, recorded.id(), "test", Group::Shared).unwrap();
        assert!(proves(&home, recorded.id()));
        let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(!proves(&home, bystander.id()));
        // Let the shell start its children.
        std::thread::sleep(Duration::from_millis(200));
        let marked_before = carrying(&id);
        assert!(marked_before.len() >= 3, "{marked_before:?}");

        // A recorded pid whose start time no longer matches (a reused pid) proves nothing.
        {
            let _l = home.lock().unwrap();
            let mut ledger = read(&home).unwrap().unwrap();
            ledger.processes.insert(
                bystander.id(),
                Entry {
                    start: 1,
                    what: "reused".into(),
                    group: true,
                },
            );
            write(&home, &ledger).unwrap();
        }
        assert!(!proves(&home, bystander.id()));

        let stopped = sweep(&home, Duration::from_secs(2));
        assert!(stopped >= 3, "{stopped}");
        let _ = recorded.wait();
        assert!(carrying(&id).is_empty(), "marked processes left");
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "the bystander must survive"
        );
        let _ = bystander.kill();
        let _ = bystander.wait();
        forget(&home, recorded.id());
        assert!(!proves(&home, recorded.id()));
    }
}
