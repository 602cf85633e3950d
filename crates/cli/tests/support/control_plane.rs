#![allow(clippy::panic)]
//! `meshward control-plane` as a process on 127.0.0.1 (no root, no pods), and `meshward` run
//! against its admin API.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// The control plane process; killed (and waited for) when dropped.
pub(crate) struct ControlPlane {
    pub(crate) child: Child,
    /// Its admin API, as `MESHWARD_CONTROL_PLANE` takes it.
    pub(crate) url: String,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command that starts a control plane on ephemeral ports with its CA in `dir/ca`,
/// watching `config`, with `extra` arguments.
pub(crate) fn command(dir: &Path, config: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshward"));
    cmd.args([
        "control-plane",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--ca-dir",
    ])
    .arg(dir.join("ca"))
    .arg("--config")
    .arg(config)
    .args(extra)
    .env("RUST_LOG", "warn");
    cmd
}

/// Starts a control plane (see [`command`]) and reads its admin URL from its first line.
pub(crate) fn start(dir: &Path, config: &Path, extra: &[&str]) -> ControlPlane {
    let mut child = command(dir, config, extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the control plane");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the control plane's first line");
    let url = line
        .split("admin API on ")
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .trim()
        .to_owned();
    ControlPlane { child, url }
}

/// `meshward ARGS` against the control plane at `url`, without colour.
pub(crate) fn meshward(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshward"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("MESHWARD_CONTROL_PLANE", url)
        .output()
        .expect("run meshward")
}
