//! iptables rules inside a pod's namespace, loaded with one `iptables-restore --noflush`.
//!
//! Pods with a sidecar get the rules of Istio's init container (istio-iptables, REDIRECT mode):
//!
//! - inbound: `PREROUTING -p tcp -j ISTIO_INBOUND`; the proxy's own ports (15008, 15090, 15021,
//!   15020, and meshward's admin 15000) return, everything else goes to `ISTIO_IN_REDIRECT`,
//!   a REDIRECT to 15006;
//! - outbound: `OUTPUT -p tcp -j ISTIO_OUTPUT`, where traffic of the proxy (uid and gid 1337)
//!   and to 127.0.0.1 returns, the proxy's loopback calls to the pod's own IP go back through
//!   inbound, and everything else goes to `ISTIO_REDIRECT`, a REDIRECT to 15001.
//!
//! Every pod also gets what kube-proxy gives it on a node: service VIPs DNAT-ed to an endpoint
//! (spread at random, like kube-proxy's `statistic` rules), and a TCP reset for service ports
//! without endpoints. In a sidecar pod these come after the capture rules, so they only see what
//! the sidecar does not capture (the proxy's own traffic); the app's connections to a VIP are
//! redirected to the proxy, which receives the VIP as the original destination and resolves it
//! itself.
//!
//! The rules live in the pod's namespace, so deleting the namespace deletes them.

use std::net::Ipv4Addr;

use super::netns::{NetError, run_with_input};

/// The uid and gid the proxy runs as (Istio's `istio-proxy` user).
pub(crate) const PROXY_UID: u32 = 1337;
/// Istio's inbound capture port.
pub(crate) const INBOUND_PORT: u16 = 15006;
/// Istio's outbound capture port.
pub(crate) const OUTBOUND_PORT: u16 = 15001;
/// The proxy's admin port (loopback only).
pub(crate) const ADMIN_PORT: u16 = 15000;
/// Ports that are never captured inbound: HBONE, Prometheus, health, merged metrics, admin.
const INBOUND_EXCLUDED: [u16; 5] = [15008, 15090, 15021, 15020, ADMIN_PORT];

/// The sidecar capture rules (iptables-restore input).
pub(crate) fn sidecar_rules() -> String {
    let mut r = String::from("*nat\n");
    for chain in [
        "ISTIO_INBOUND",
        "ISTIO_REDIRECT",
        "ISTIO_IN_REDIRECT",
        "ISTIO_OUTPUT",
    ] {
        r.push_str(&format!(":{chain} - [0:0]\n"));
    }
    let uid = PROXY_UID;
    let lines = [
        format!("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}"),
        format!("-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}"),
        "-A PREROUTING -p tcp -j ISTIO_INBOUND".to_owned(),
    ];
    for l in lines {
        r.push_str(&l);
        r.push('\n');
    }
    for port in INBOUND_EXCLUDED {
        r.push_str(&format!(
            "-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN\n"
        ));
    }
    let lines = [
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".to_owned(),
        "-A OUTPUT -p tcp -j ISTIO_OUTPUT".to_owned(),
        // Envoy's inbound passthrough source address.
        "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN".to_owned(),
        // The proxy calling its own pod IP over loopback: that is inbound traffic.
        format!(
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner {uid} -j ISTIO_IN_REDIRECT"
        ),
        format!("-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN"),
        // The proxy's own traffic is never captured (this is what makes it a sidecar).
        format!("-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN"),
        format!(
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --gid-owner {uid} -j ISTIO_IN_REDIRECT"
        ),
        format!("-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {uid} -j RETURN"),
        format!("-A ISTIO_OUTPUT -m owner --gid-owner {uid} -j RETURN"),
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN".to_owned(),
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT".to_owned(),
        "COMMIT".to_owned(),
    ];
    for l in lines {
        r.push_str(&l);
        r.push('\n');
    }
    r
}

/// One service port as kube-proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VipPort {
    /// The VIP.
    pub(crate) vip: Ipv4Addr,
    /// The service port.
    pub(crate) port: u16,
    /// Endpoints: pod IP and target port.
    pub(crate) endpoints: Vec<(Ipv4Addr, u16)>,
}

/// kube-proxy-like rules (iptables-restore input); `None` when
/// there are no services.
pub(crate) fn service_rules(vips: &[VipPort]) -> Option<String> {
    if vips.is_empty() {
        return None;
    }
    let mut nat =
        String::from("*nat\n:MESHWARD-SERVICES - [0:0]\n-A OUTPUT -j MESHWARD-SERVICES\n");
    let mut filter = String::from("*filter\n");
    for v in vips {
        let n = v.endpoints.len();
        if n == 0 {
            filter.push_str(&format!(
                "-A OUTPUT -d {}/32 -p tcp --dport {} -j REJECT --reject-with tcp-reset\n",
                v.vip, v.port
            ));
            continue;
        }
        for (i, (ip, port)) in v.endpoints.iter().enumerate() {
            // kube-proxy: the i-th of n endpoints takes 1/(n-i) of what the earlier ones left.
            let remaining = n - i;
            let statistic = if remaining > 1 {
                format!(
                    "-m statistic --mode random --probability {:.5} ",
                    1.0 / remaining as f64
                )
            } else {
                String::new()
            };
            nat.push_str(&format!(
                "-A MESHWARD-SERVICES -d {}/32 -p tcp --dport {} {statistic}-j DNAT --to-destination {ip}:{port}\n",
                v.vip, v.port
            ));
        }
    }
    nat.push_str("COMMIT\n");
    filter.push_str("COMMIT\n");
    Some(nat + &filter)
}

/// Loads rules into `netns`.
pub(crate) fn apply(netns: &str, rules: &str) -> Result<(), NetError> {
    run_with_input(
        "ip",
        &["netns", "exec", netns, "iptables-restore", "--noflush"],
        Some(rules),
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_rules_follow_istio_iptables() {
        let r = sidecar_rules();
        assert!(r.starts_with("*nat\n:ISTIO_INBOUND - [0:0]\n"));
        assert!(r.contains("-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006\n"));
        assert!(r.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n"));
        assert!(r.contains("-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN\n"));
        assert!(r.contains("-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN\n"));
        // Order matters: the proxy's exclusion comes before the catch-all redirect.
        let exclude = r.find("--uid-owner 1337 -j RETURN").unwrap();
        let redirect = r.find("-A ISTIO_OUTPUT -j ISTIO_REDIRECT").unwrap();
        assert!(exclude < redirect);
        assert!(r.ends_with("COMMIT\n"));
    }

    #[test]
    fn service_rules_spread_over_endpoints_and_reset_without_any() {
        let vip = Ipv4Addr::new(10, 96, 0, 10);
        let r = service_rules(&[
            VipPort {
                vip,
                port: 80,
                endpoints: vec![
                    (Ipv4Addr::new(10, 244, 0, 2), 5678),
                    (Ipv4Addr::new(10, 244, 0, 3), 5678),
                ],
            },
            VipPort {
                vip,
                port: 81,
                endpoints: vec![],
            },
        ])
        .unwrap();
        assert!(r.contains("--dport 80 -m statistic --mode random --probability 0.50000 -j DNAT --to-destination 10.244.0.2:5678\n"));
        assert!(r.contains("--dport 80 -j DNAT --to-destination 10.244.0.3:5678\n"));
        assert!(r.contains("-A OUTPUT -d 10.96.0.10/32 -p tcp --dport 81 -j REJECT"));
        assert!(service_rules(&[]).is_none());
    }
}
