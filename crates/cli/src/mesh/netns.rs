//! Pod networking with iproute2: a bridge `mw0` on the host holding 10.244.0.1/16, and per pod a
//! network namespace `mw-<ns>-<pod>` joined to the bridge by a veth pair (host end `mw-v<n>`,
//! pod end `eth0`).
//!
//! Pods get a route to the pod range (on-link) and one to the service range via the bridge, and
//! no default route: nothing leaves the machine. The host keeps `ip_forward` as it is; pod to pod
//! traffic is bridged, not routed. Where `br_netfilter` makes bridged frames traverse the host's
//! iptables FORWARD chain (Docker sets its policy to DROP), one rule tagged with the comment
//! `meshward` accepts traffic between bridge ports; `down` removes every rule with that comment.
//!
//! Everything is done with the `ip` and `iptables` commands (the workspace forbids unsafe code,
//! so no netlink syscalls), and every name starts with `mw` so that `down` can sweep exactly what
//! `up` created, even after a crash.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::plan::{BRIDGE_IP, POD_NET, SERVICE_NET};

/// The bridge.
pub(crate) const BRIDGE: &str = "mw0";
/// The prefix of every namespace and link name meshward creates.
pub(crate) const PREFIX: &str = "mw-";
/// The comment on host iptables rules.
pub(crate) const RULE_COMMENT: &str = "meshward";

/// A command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetError {
    /// It could not be started.
    #[error(
        "cannot run `{command}`: {source} (is it installed? Debian: apt-get install iproute2 iptables)"
    )]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It exited with an error.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it printed.
        stderr: String,
    },
}

/// Runs a command, returning its stdout.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, NetError> {
    run_with_input(program, args, None)
}

/// Runs a command with `input` on stdin, returning its stdout.
pub(crate) fn run_with_input(
    program: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, NetError> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        stdin
            .write_all(text.as_bytes())
            .map_err(|source| NetError::Spawn {
                command: command.clone(),
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| NetError::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Whether the tools netns mode needs are installed.
pub(crate) fn missing_tools() -> Vec<&'static str> {
    ["ip", "iptables", "iptables-restore", "setpriv"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect()
}

/// The namespace name of a pod: `mw-<ns>-<pod>`, shortened with a hash when it would not fit a
/// file name comfortably.
pub(crate) fn netns_name(namespace: &str, pod: &str) -> String {
    let name = format!("{PREFIX}{namespace}-{pod}");
    if name.len() <= 200 {
        return name;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}-{hash:016x}", &name[..180])
}

/// The host end of the `n`th veth pair (interface names have at most 15 bytes).
pub(crate) fn veth_name(n: u32) -> String {
    format!("{PREFIX}v{n:x}")
}

/// Creates the bridge (if absent) with the gateway address, and the FORWARD rule.
pub(crate) fn create_bridge() -> Result<(), NetError> {
    if run("ip", &["link", "show", BRIDGE]).is_err() {
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        let cidr = format!("{BRIDGE_IP}/{}", POD_NET.1);
        run("ip", &["addr", "add", &cidr, "dev", BRIDGE])?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
    }
    let rule = forward_rule();
    if run("iptables", &[&["-C"], rule.as_slice()].concat()).is_err() {
        run("iptables", &[&["-I"], rule.as_slice()].concat())?;
    }
    Ok(())
}

fn forward_rule() -> Vec<&'static str> {
    vec![
        "FORWARD",
        "-i",
        BRIDGE,
        "-o",
        BRIDGE,
        "-m",
        "comment",
        "--comment",
        RULE_COMMENT,
        "-j",
        "ACCEPT",
    ]
}

/// Creates a pod's namespace and plugs it into the bridge with address `ip`.
pub(crate) fn create_pod_network(netns: &str, veth: &str, ip: Ipv4Addr) -> Result<(), NetError> {
    run("ip", &["netns", "add", netns])?;
    // The pod end is created directly inside the namespace, so it never exists on the host
    // under a name that could clash with the host's own eth0.
    run(
        "ip",
        &[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns,
        ],
    )?;
    run("ip", &["link", "set", veth, "master", BRIDGE, "up"])?;
    let cidr = format!("{ip}/{}", POD_NET.1);
    run("ip", &["-n", netns, "addr", "add", &cidr, "dev", "eth0"])?;
    run("ip", &["-n", netns, "link", "set", "eth0", "up"])?;
    run("ip", &["-n", netns, "link", "set", "lo", "up"])?;
    let services = format!("{}/{}", SERVICE_NET.0, SERVICE_NET.1);
    let gateway = BRIDGE_IP.to_string();
    run(
        "ip",
        &[
            "-n", netns, "route", "add", &services, "via", &gateway, "dev", "eth0",
        ],
    )?;
    Ok(())
}

/// Removes a pod's namespace and veth (deleting either end deletes the pair).
pub(crate) fn delete_pod_network(netns: &str, veth: &str) {
    if !veth.is_empty() {
        let _ = run("ip", &["link", "del", veth]);
    }
    let _ = run("ip", &["netns", "del", netns]);
}

/// The pids of every process in `netns`.
pub(crate) fn netns_pids(netns: &str) -> Vec<u32> {
    run("ip", &["netns", "pids", netns])
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Every namespace meshward created (`mw-*`).
pub(crate) fn list_netns() -> Vec<String> {
    run("ip", &["netns", "list"])
        .map(|out| {
            out.lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with(PREFIX))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Every link meshward created (`mw0`, `mw-*`).
pub(crate) fn list_links() -> Vec<String> {
    run("ip", &["-o", "link", "show"])
        .map(|out| {
            out.lines()
                .filter_map(|l| l.split(':').nth(1))
                .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
                .filter(|n| n == BRIDGE || n.starts_with(PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

/// Host iptables rules carrying meshward's comment, as `iptables -S` prints them.
pub(crate) fn list_host_rules() -> Vec<String> {
    let mut rules = Vec::new();
    for table in ["filter", "nat"] {
        if let Ok(out) = run("iptables", &["-t", table, "-S"]) {
            rules.extend(
                out.lines()
                    .filter(|l| l.starts_with("-A ") && l.contains(RULE_COMMENT))
                    .map(|l| format!("-t {table} {l}")),
            );
        }
    }
    rules
}

/// Deletes host rules found by [`list_host_rules`].
pub(crate) fn delete_host_rules() {
    for rule in list_host_rules() {
        // `-t T -A CHAIN args…` → `-t T -D CHAIN args…`; the comment never contains spaces or
        // quotes, so splitting on whitespace gives back the original arguments.
        let args: Vec<String> = rule
            .split_whitespace()
            .map(|a| {
                if a == "-A" {
                    "-D".to_owned()
                } else {
                    a.to_owned()
                }
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _ = run("iptables", &args);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_fit_interface_limits() {
        assert_eq!(netns_name("default", "backend-0"), "mw-default-backend-0");
        assert!(veth_name(u32::MAX).len() <= 15);
        assert!(veth_name(7).starts_with(PREFIX));
        let long = netns_name(&"n".repeat(63), &"p".repeat(253));
        assert!(long.len() <= 200 && long.starts_with(PREFIX));
    }
}
