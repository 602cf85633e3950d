//! Service names for a pod: `/etc/netns/<netns>/hosts`, which `ip netns exec` bind-mounts over
//! `/etc/hosts` for every process it starts in that namespace (iproute2 does this for each file
//! under `/etc/netns/<name>/`). There is no DNS server: the glibc and musl resolvers read
//! `/etc/hosts` first, which is all `curl http://backend` needs.
//!
//! A service is listed as `svc.ns`, `svc.ns.svc` and `svc.ns.svc.cluster.local`, and as the
//! short `svc` only in pods of its own namespace, as Kubernetes DNS search paths resolve them.

use std::path::PathBuf;

use super::plan::ServicePlan;
use super::state::{StateError, write_atomic};

/// The directory iproute2 reads per-namespace `/etc` files from.
pub(crate) const ETC_NETNS: &str = "/etc/netns";

/// The hosts file of a pod.
pub(crate) fn hosts_file(
    pod_namespace: &str,
    pod_name: &str,
    pod_ip: std::net::Ipv4Addr,
    services: &[ServicePlan],
) -> String {
    let mut out = String::from(
        "# Written by meshward up for this pod; removed by meshward down.\n\
         127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    out.push_str(&format!("{pod_ip}\t{pod_name}\n"));
    for s in services {
        let mut names = Vec::new();
        if s.namespace == pod_namespace {
            names.push(s.name.clone());
        }
        names.push(format!("{}.{}", s.name, s.namespace));
        names.push(format!("{}.{}.svc", s.name, s.namespace));
        names.push(format!("{}.{}.svc.cluster.local", s.name, s.namespace));
        out.push_str(&format!("{}\t{}\n", s.ip, names.join(" ")));
    }
    out
}

/// The directory of a namespace's `/etc` overrides.
pub(crate) fn netns_etc(netns: &str) -> PathBuf {
    PathBuf::from(ETC_NETNS).join(netns)
}

/// Writes the hosts file of `netns`.
pub(crate) fn write(netns: &str, content: &str) -> Result<(), StateError> {
    write_atomic(&netns_etc(netns).join("hosts"), content.as_bytes())
}

/// Removes the `/etc` overrides of `netns`.
pub(crate) fn remove(netns: &str) {
    let _ = std::fs::remove_dir_all(netns_etc(netns));
}

/// Every `/etc/netns/mw-*` directory.
pub(crate) fn list() -> Vec<PathBuf> {
    std::fs::read_dir(ETC_NETNS)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(super::netns::PREFIX))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn short_names_only_in_the_own_namespace() {
        let svc = |name: &str, ns: &str, last: u8| ServicePlan {
            namespace: ns.into(),
            name: name.into(),
            selector: None,
            ports: vec![],
            ip: Ipv4Addr::new(10, 96, 0, last),
        };
        let hosts = hosts_file(
            "default",
            "frontend-0",
            Ipv4Addr::new(10, 244, 0, 2),
            &[
                svc("backend", "default", 10),
                svc("reviews", "bookinfo", 11),
            ],
        );
        assert!(hosts.contains("10.244.0.2\tfrontend-0\n"));
        assert!(hosts.contains(
            "10.96.0.10\tbackend backend.default backend.default.svc backend.default.svc.cluster.local\n"
        ));
        assert!(hosts.contains(
            "10.96.0.11\treviews.bookinfo reviews.bookinfo.svc reviews.bookinfo.svc.cluster.local\n"
        ));
    }
}
