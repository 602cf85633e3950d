#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]
//! The local mesh for tests: a mesh home in a temporary directory, `meshward` run against it,
//! curl inside pods, and the check that `down` left nothing behind.
//!
//! [`Mesh::new`] is netns mode: it needs root, `ip`, `iptables`, `setpriv` and `curl` (Debian:
//! iproute2, iptables, util-linux, curl; `.ci/run` installs them). [`Mesh::loopback`] is
//! loopback mode, which must work without root: when the test runs as root (as in CI), every
//! `meshward` command runs as `nobody` (uid/gid 65534, through `setpriv`) with `HOME` in a
//! temporary directory that user owns, and the binaries copied there when `nobody` cannot run
//! them from `target/`; otherwise commands run as the test's own user. Both need the
//! `meshward-proxy` binary (built by `cargo test --workspace`, or `cargo build -p
//! meshward-proxy`). Without what they need, tests say so and pass.
//!
//! A mesh is global to the machine (one bridge or one loopback range, fixed ports), so every
//! test binary takes turns through one lock file, held by the test process itself.

pub(crate) mod control_plane;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

/// Tests in one binary take turns here …
static ONE_MESH_AT_A_TIME: Mutex<()> = Mutex::new(());

/// … and test binaries (and people running them side by side) take turns on this file.
const MACHINE_LOCK: &str = "/tmp/meshward-mesh-test.lock";

pub(crate) fn seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seeds")
}

/// The YAML files directly in a seed's folder, as paths relative to the workspace root
/// (`steps/` and `fixed/` hold earlier and corrected variants, not the tutorial's final
/// state), sorted as `kubectl apply -f` takes them.
pub(crate) fn seed_files(seed: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(seeds().join(seed))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            format!(
                "examples/seeds/{seed}/{}",
                p.file_name().unwrap().to_str().unwrap()
            )
        })
        .collect();
    files.sort();
    files
}

pub(crate) fn proxy_binary() -> Option<PathBuf> {
    let meshward = PathBuf::from(env!("CARGO_BIN_EXE_meshward"));
    let candidate = meshward.parent()?.join("meshward-proxy");
    candidate.is_file().then_some(candidate)
}

pub(crate) fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Why the mesh cannot run here, if it cannot.
pub(crate) fn skip_reason() -> Option<String> {
    if !cfg!(target_os = "linux") || !is_root() {
        return Some("not root on Linux".to_owned());
    }
    let missing: Vec<&str> = ["ip", "iptables", "setpriv", "curl"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        return Some(format!("missing tools: {}", missing.join(", ")));
    }
    if proxy_binary().is_none() {
        return Some("meshward-proxy is not built (cargo build -p meshward-proxy)".to_owned());
    }
    None
}

/// The unprivileged user loopback-mode tests run `meshward` as when they run as root.
const NOBODY: u32 = 65534;

/// A mesh home in a temporary directory; dropping it runs `meshward down`, so a failing test
/// still removes everything.
pub(crate) struct Mesh {
    /// Netns mode: the mesh home (`MESHWARD_HOME`). Loopback mode: the user's `HOME` (and the
    /// binaries, when copied); the mesh home is `HOME/.meshward`.
    pub(crate) home: tempfile::TempDir,
    /// Loopback mode: how `meshward` runs.
    loopback: Option<Loopback>,
    _turn: MutexGuard<'static, ()>,
    /// Held (flock) for the mesh's life; closing the file releases it.
    _machine_turn: File,
}

/// How a loopback-mode test runs `meshward`.
struct Loopback {
    /// `Some(65534)` when the test is root: commands switch to that user.
    uid: Option<u32>,
    meshward: PathBuf,
    proxy: PathBuf,
}

/// Takes this process's and the machine's turn (see the module docs).
fn take_turns() -> (MutexGuard<'static, ()>, File) {
    let turn = ONE_MESH_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let machine_turn = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(MACHINE_LOCK)
        .unwrap();
    machine_turn.lock().unwrap();
    (turn, machine_turn)
}

/// Whether `nobody` can run `binary` where it is.
fn nobody_can_run(binary: &Path) -> bool {
    Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .args(["--clear-groups", "--"])
        .arg(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Mesh {
    pub(crate) fn new() -> Option<Self> {
        if let Some(why) = skip_reason() {
            eprintln!("SKIPPED: the local mesh test needs root, iproute2, iptables, curl: {why}");
            return None;
        }
        let (turn, machine_turn) = take_turns();
        let mesh = Self {
            home: tempfile::tempdir().unwrap(),
            loopback: None,
            _turn: turn,
            _machine_turn: machine_turn,
        };
        // A mesh left by an earlier, killed run would make `up` refuse.
        mesh.down_quietly();
        Some(mesh)
    }

    /// A loopback-mode mesh, run without root (see the module docs).
    pub(crate) fn loopback() -> Option<Self> {
        let missing: Vec<&str> = ["curl", "sh"].into_iter().filter(|t| !have(t)).collect();
        let why = if !cfg!(target_os = "linux") {
            Some("not Linux".to_owned())
        } else if !missing.is_empty() {
            Some(format!("missing tools: {}", missing.join(", ")))
        } else if proxy_binary().is_none() {
            Some("meshward-proxy is not built (cargo build -p meshward-proxy)".to_owned())
        } else if is_root() && !have("setpriv") {
            Some("running as root without setpriv to drop privileges".to_owned())
        } else {
            None
        };
        if let Some(why) = why {
            eprintln!("SKIPPED: the loopback mesh test needs curl and meshward-proxy: {why}");
            return None;
        }
        let (turn, machine_turn) = take_turns();
        let home = tempfile::tempdir().unwrap();
        let meshward = PathBuf::from(env!("CARGO_BIN_EXE_meshward"));
        let proxy = proxy_binary().unwrap();
        let loopback = if is_root() {
            let dir = home.path();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
            let place = |binary: &Path| {
                if nobody_can_run(binary) {
                    return binary.to_owned();
                }
                let copy = dir.join(binary.file_name().unwrap());
                std::fs::copy(binary, &copy).unwrap();
                std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
                copy
            };
            Loopback {
                uid: Some(NOBODY),
                meshward: place(&meshward),
                proxy: place(&proxy),
            }
        } else {
            Loopback {
                uid: None,
                meshward,
                proxy,
            }
        };
        let mesh = Self {
            home,
            loopback: Some(loopback),
            _turn: turn,
            _machine_turn: machine_turn,
        };
        mesh.down_quietly();
        Some(mesh)
    }

    /// Where the mesh keeps its state.
    pub(crate) fn mesh_home(&self) -> PathBuf {
        match &self.loopback {
            Some(_) => self.home.path().join(".meshward"),
            None => self.home.path().to_owned(),
        }
    }

    /// `meshward ARGS...` for this mesh, not yet started.
    fn command(&self, args: &[&str]) -> Command {
        let Some(loopback) = &self.loopback else {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshward"));
            cmd.args(args)
                .env("MESHWARD_HOME", self.home.path())
                .env("MESHWARD_PROXY", proxy_binary().unwrap())
                .env("NO_COLOR", "1");
            return cmd;
        };
        let mut cmd = match loopback.uid {
            Some(uid) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .args(["--clear-groups", "--"])
                    .arg(&loopback.meshward);
                cmd
            }
            None => Command::new(&loopback.meshward),
        };
        // `HOME`, not `MESHWARD_HOME`: the default `~/.meshward` is what a user gets.
        cmd.args(args)
            .env("HOME", self.home.path())
            .env_remove("MESHWARD_HOME")
            .env("MESHWARD_PROXY", &loopback.proxy)
            .env("NO_COLOR", "1")
            .current_dir(self.home.path());
        cmd
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    pub(crate) fn up(&self, files: &[PathBuf]) {
        let mut args = vec!["up".to_owned(), "-d".to_owned(), "-f".to_owned()];
        args.extend(files.iter().map(|f| f.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.cmd(&args);
        assert!(
            out.status.success(),
            "meshward up failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `meshward apply -f FILE...`, which must succeed.
    pub(crate) fn apply(&self, files: &[PathBuf]) {
        let out = self.apply_output(files);
        assert!(
            out.status.success(),
            "meshward apply failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `meshward apply -f FILE...`, whatever its outcome.
    pub(crate) fn apply_output(&self, files: &[PathBuf]) -> Output {
        let mut args = vec!["apply".to_owned()];
        for f in files {
            args.push("-f".to_owned());
            args.push(f.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cmd(&args)
    }

    /// A `meshward` command that runs in the background (a client loop inside a pod).
    pub(crate) fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The mesh's state.json.
    pub(crate) fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.mesh_home().join("state.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// `meshward get pods -o json`.
    pub(crate) fn pods(&self) -> serde_json::Value {
        let out = self.cmd(&["get", "pods", "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `meshward get proxies -o json`, `None` while the control plane does not answer.
    pub(crate) fn proxies(&self) -> Option<serde_json::Value> {
        let out = self.cmd(&["get", "proxies", "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub(crate) fn down(&self) {
        let out = self.cmd(&["down"]);
        assert!(
            out.status.success(),
            "meshward down failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn down_quietly(&self) {
        let _ = self.cmd(&["down"]);
    }

    /// `curl` inside a pod (`exec` target or `run` one-off pod args): exit code, HTTP code and
    /// body.
    pub(crate) fn curl(&self, how: &[&str], url: &str, extra: &[&str]) -> Curl {
        let mut args: Vec<&str> = how.to_vec();
        args.extend(["--", "curl", "-sS", "-m", "10", "-w", "\n%{http_code}"]);
        args.extend(extra);
        args.push(url);
        let out = self.cmd(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        Curl {
            exit: out.status.code(),
            http: code.trim().to_owned(),
            body: body.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `down --purge` after `down`: the kept CA goes, and with it the mesh home.
    pub(crate) fn purge(&self) {
        assert!(self.mesh_home().join("ca").is_dir(), "the CA was kept");
        let out = self.cmd(&["down", "--purge"]);
        assert!(out.status.success(), "down --purge: {out:?}");
        assert!(
            !self.mesh_home().exists(),
            "nothing of meshward is left after --purge: {:?}",
            std::fs::read_dir(self.mesh_home()).map(|d| d.count())
        );
    }

    /// Everything `down` must remove is gone.
    pub(crate) fn assert_clean(&self) {
        let netns = run("ip", &["netns", "list"]);
        assert!(
            !netns.lines().any(|l| l.starts_with("mw-")),
            "namespaces left: {netns}"
        );
        let links = run("ip", &["-o", "link", "show"]);
        assert!(
            !links
                .lines()
                .filter_map(|l| l.split(':').nth(1))
                .any(|n| n.trim() == "mw0" || n.trim().starts_with("mw-")),
            "links left: {links}"
        );
        for table in ["filter", "nat"] {
            let rules = run("iptables", &["-t", table, "-S"]);
            assert!(!rules.contains("meshward"), "host rules left: {rules}");
        }
        let etc: Vec<_> = std::fs::read_dir("/etc/netns")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("mw-"))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        assert!(etc.is_empty(), "/etc/netns entries left: {etc:?}");
        // Every process of the mesh had the home directory on its command line.
        let home = self.home.path().to_string_lossy().into_owned();
        let procs: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter_map(|e| {
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let zombie = stat
                    .rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
                (!zombie && cmdline.contains(&home)).then_some(cmdline)
            })
            .collect();
        assert!(procs.is_empty(), "processes left: {procs:?}");
        let files: Vec<String> = std::fs::read_dir(self.home.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            files.iter().all(|f| f == "ca"),
            "only the mesh CA may stay in the mesh home: {files:?}"
        );
    }

    /// Everything `down` must remove in loopback mode is gone: no process started with this
    /// test's `HOME` (every process of the mesh inherits it), nothing listening in the loopback
    /// pod and app ranges, and only the CA left in `~/.meshward`.
    pub(crate) fn assert_clean_loopback(&self) {
        let marker = format!("HOME={}", self.home.path().display());
        let procs: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter_map(|e| {
                let environ = std::fs::read(e.path().join("environ")).ok()?;
                let ours = environ.split(|&b| b == 0).any(|v| v == marker.as_bytes());
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let zombie = stat
                    .rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                (ours && !zombie).then(|| String::from_utf8_lossy(&cmdline).replace('\0', " "))
            })
            .collect();
        assert!(procs.is_empty(), "processes left: {procs:?}");
        let listening = loopback_listeners();
        assert!(listening.is_empty(), "still listening: {listening:?}");
        let files: Vec<String> = std::fs::read_dir(self.mesh_home())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            files.iter().all(|f| f == "ca"),
            "only the mesh CA may stay in the mesh home: {files:?}"
        );
    }
}

/// Listening TCP sockets in 127.100.0.0/16 and 127.101.0.0/16 (`/proc/net/tcp`), as `ip:port`.
pub(crate) fn loopback_listeners() -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state) = (fields.get(1)?, fields.get(3)?);
            // 0A is LISTEN; addresses are the IPv4 bytes in host (little-endian) order.
            if *state != "0A" {
                return None;
            }
            let (ip, port) = local.split_once(':')?;
            let ip = u32::from_str_radix(ip, 16).ok()?.to_le_bytes();
            let port = u16::from_str_radix(port, 16).ok()?;
            (ip[0] == 127 && (ip[1] == 100 || ip[1] == 101))
                .then(|| format!("{}.{}.{}.{}:{port}", ip[0], ip[1], ip[2], ip[3]))
        })
        .collect()
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.down_quietly();
    }
}

#[derive(Debug)]
pub(crate) struct Curl {
    pub(crate) exit: Option<i32>,
    pub(crate) http: String,
    pub(crate) body: String,
    pub(crate) stderr: String,
}

/// Waits up to `timeout` for `check` to hold, polling every 50 ms; returns whether it did.
pub(crate) fn eventually(timeout: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The distinct `Bearer` tokens of a seed's policytest.yaml, in order of first appearance.
pub(crate) fn policytest_tokens(policytest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(policytest).unwrap();
    let mut tokens: Vec<String> = Vec::new();
    for rest in text.split("Bearer ").skip(1) {
        let token: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .collect();
        if !tokens.contains(&token) {
            tokens.push(token);
        }
    }
    tokens
}

/// The first inline `jwks: '...'` of a seed's policytest.yaml: the meshward test keys that
/// stand in for an issuer's `jwksUri`.
pub(crate) fn policytest_jwks(policytest: &Path) -> String {
    let text = std::fs::read_to_string(policytest).unwrap();
    let start = text.find("jwks: '").unwrap() + "jwks: '".len();
    let len = text[start..].find('\'').unwrap();
    text[start..start + len].to_owned()
}

pub(crate) fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
