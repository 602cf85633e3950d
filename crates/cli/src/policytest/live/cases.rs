//! A case as live traffic: where it is sent from, to which address, over which protocol, with
//! which certificate — or why it cannot be sent, which makes it a skip with that reason.
//!
//! The destination is what the engine resolves (`to.service` short names, endpoints, target
//! ports), so both runs talk about the same workload and port. A sidecar client sends to the
//! service VIP (or the workload's address) and lets its sidecar do the rest; every other client
//! goes straight to the destination's inbound port, as a peer outside the sidecar would.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use meshward_api::SpiffeId;
use meshward_api::policytest::{PortProtocol, TestCase};
use meshward_policy::Mesh;
use meshward_policy::flow::DEFAULT_CLIENT_ADDRESS;

use super::pods::Spot;
use super::session::Session;
use super::wire::{HttpSpec, Probe, TlsSpec, WireProtocol};
use crate::mesh::plan::DeclaredPlan;
use crate::policytest::compare::{describe_outcome, traffic_of};

/// What to do with one case.
#[derive(Debug, Clone)]
pub(crate) enum CaseAction {
    /// Cannot be expressed live; the reason is reported.
    Skip(String),
    /// The case itself is broken (the engine cannot evaluate it either).
    Fail(String),
    /// Real traffic.
    Traffic(TrafficCase),
    /// Ask the destination's proxy for its effective mTLS mode on a port.
    MtlsMode {
        /// The workload's pod, where the admin port listens.
        spot: Spot,
        /// A GET of `/config_dump` on the proxy's loopback admin port.
        probe: Probe,
        /// The port.
        port: u16,
        /// The expected mode.
        expected: String,
    },
}

/// One connection or request to send, and where to read about it afterwards.
#[derive(Debug, Clone)]
pub(crate) struct TrafficCase {
    /// Where it leaves from.
    pub(crate) spot: Spot,
    /// What the client does.
    pub(crate) probe: Probe,
    /// Whether it has a sidecar (an access log to read).
    pub(crate) destination_sidecar: bool,
    /// The client's sidecar pod, when the traffic goes through one (a TCP connection is then
    /// found in the destination's log through the client sidecar's upstream address).
    pub(crate) via: Option<String>,
    /// The `x-request-id` of an HTTP request.
    pub(crate) request_id: Option<String>,
    /// What the engine says, for the report.
    pub(crate) offline: String,
}

/// Builds the action of each case of document number `doc`.
pub(crate) fn plan_cases(
    session: &mut Session,
    mesh: &Mesh,
    declared: &DeclaredPlan,
    cases: &[TestCase],
    doc: usize,
    now: i64,
) -> Vec<CaseAction> {
    let mut certs: BTreeMap<(String, bool), TlsSpec> = BTreeMap::new();
    cases
        .iter()
        .enumerate()
        .map(
            |(i, case)| match plan_case(session, mesh, declared, case, doc, i, now, &mut certs) {
                Ok(action) => action,
                Err(e) => CaseAction::Fail(format!("{e:#}")),
            },
        )
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn plan_case(
    session: &mut Session,
    mesh: &Mesh,
    declared: &DeclaredPlan,
    case: &TestCase,
    doc: usize,
    index: usize,
    now: i64,
    certs: &mut BTreeMap<(String, bool), TlsSpec>,
) -> anyhow::Result<CaseAction> {
    let expect = &case.expect;
    if let Some(mode) = &expect.mtls_mode {
        return Ok(mtls_mode(mesh, case, mode, index));
    }
    if expect.client_tls.is_some() {
        return Ok(CaseAction::Skip(
            "offline only: the client sidecar's TLS choice is not observable from outside (its /config_dump has no per-destination TLS)".to_owned(),
        ));
    }
    if expect.decision.is_none() && expect.policy.is_none() && expect.rule.is_none() {
        anyhow::bail!("`expect` states nothing to check");
    }
    let traffic = traffic_of(case, now)?;
    let outcome = mesh.evaluate(&traffic, false)?;
    let (dest_ns, dest_name) = outcome
        .destination
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("destination `{}`", outcome.destination))?;
    let dest = mesh
        .inventory
        .workload(dest_ns, dest_name)
        .ok_or_else(|| anyhow::anyhow!("no workload {}", outcome.destination))?;
    let protocol = if !outcome.is_http {
        WireProtocol::Tcp
    } else {
        match dest.protocol(outcome.port) {
            PortProtocol::Http => WireProtocol::Http1,
            PortProtocol::Http2 => WireProtocol::Http2,
            PortProtocol::Grpc => WireProtocol::Grpc,
            PortProtocol::Tcp => WireProtocol::Tcp,
        }
    };
    let from = case
        .from
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("case needs `from`"))?;
    let to = case
        .to
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("case needs `to`"))?;
    let direct = format!("{}:{}", dest.address, outcome.port);
    let request_id = format!("mwlive-{doc}-{index}");
    let mut request = None;
    let mut used_id = None;
    if protocol != WireProtocol::Tcp {
        let r = case.request.clone().unwrap_or_default();
        let mut headers: Vec<(String, String)> = Vec::new();
        for (name, values) in &r.headers {
            for v in values.values() {
                headers.push((name.to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let id = match headers.iter().find(|(n, _)| n == "x-request-id") {
            Some((_, v)) => v.clone(),
            None => {
                headers.push(("x-request-id".to_owned(), request_id.clone()));
                request_id.clone()
            }
        };
        used_id = Some(id);
        let default_host = match (&to.service, &to.workload) {
            (Some(s), _) => s.clone(),
            (None, Some(w)) => w.rsplit('/').next().unwrap_or(w).to_owned(),
            (None, None) => dest.name.clone(),
        };
        request = Some(HttpSpec {
            method: r.method.unwrap_or_else(|| "GET".to_owned()),
            path: r.path.unwrap_or_else(|| "/".to_owned()),
            host: r.host.unwrap_or(default_host),
            headers,
        });
    }
    let mut probe = Probe {
        id: index,
        connect: direct.clone(),
        bind: None,
        tls: None,
        protocol,
        request,
    };
    let mut via = None;
    let spot = if let Some(w) = &from.workload {
        let client = mesh
            .find_workload(w, None)
            .ok_or_else(|| anyhow::anyhow!("no workload `{w}`"))?;
        if let Some(a) = &from.address
            && a.parse::<IpAddr>().ok() != Some(client.address)
        {
            return Ok(CaseAction::Skip(format!(
                "`from.address` {a} is not the address of {}: a pod's traffic leaves from its own address",
                client.key()
            )));
        }
        if client.sidecar {
            if case.sni.is_some() {
                return Ok(CaseAction::Skip(
                    "`sni` with a sidecar client: the sidecar chooses the SNI itself".to_owned(),
                ));
            }
            probe.connect = match &to.service {
                Some(host) => {
                    let svc = mesh
                        .inventory
                        .resolve_service(host, Some(&client.namespace))
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    let vip = declared
                        .plan
                        .services
                        .iter()
                        .find(|s| s.namespace == svc.namespace && s.name == svc.name)
                        .map(|s| s.ip)
                        .ok_or_else(|| anyhow::anyhow!("service {host} has no VIP"))?;
                    format!("{vip}:{}", to.port)
                }
                None => format!("{}:{}", dest.address, to.port),
            };
            via = Some(client.key());
        }
        Spot::Pod {
            key: client.key(),
            as_proxy: false,
        }
    } else {
        if let Some(p) = &from.principal {
            let Ok(id) = SpiffeId::parse(&format!("spiffe://{p}")) else {
                return Ok(CaseAction::Skip(format!(
                    "principal `{p}` is not a SPIFFE identity: no certificate can carry it"
                )));
            };
            let trusted = from.trusted_ca.unwrap_or(true);
            let key = (p.clone(), trusted);
            let mut tls = match certs.get(&key) {
                Some(t) => t.clone(),
                None => {
                    let (cert, roots) = session.issue(&id, trusted)?;
                    let t = TlsSpec {
                        key_pem: cert.key_pem(),
                        chain_pem: cert.chain_pem(),
                        roots_pem: roots,
                        sni: String::new(),
                    };
                    certs.insert(key, t.clone());
                    t
                }
            };
            tls.sni = case.sni.clone().unwrap_or_default();
            probe.tls = Some(tls);
        } else if case.sni.is_some() {
            return Ok(CaseAction::Skip(
                "`sni` on a plaintext connection: there is no TLS to carry it".to_owned(),
            ));
        }
        let source = match &from.address {
            Some(a) => a
                .parse::<IpAddr>()
                .map_err(|_| anyhow::anyhow!("`from.address` {a} is not an IP address"))?,
            None => DEFAULT_CLIENT_ADDRESS,
        };
        let IpAddr::V4(source) = source else {
            return Ok(CaseAction::Skip(format!(
                "source address {source}: the local mesh is IPv4 only"
            )));
        };
        source_spot(mesh, source, &mut probe)
    };
    Ok(CaseAction::Traffic(TrafficCase {
        spot,
        probe,
        destination_sidecar: dest.sidecar,
        via,
        request_id: used_id,
        offline: describe_outcome(&outcome),
    }))
}

/// The pod that owns `source` sends (as the proxy's uid, past its capture), or the client pod
/// binds it.
fn source_spot(mesh: &Mesh, source: Ipv4Addr, probe: &mut Probe) -> Spot {
    match mesh
        .inventory
        .workloads
        .iter()
        .find(|w| w.address == IpAddr::V4(source))
    {
        Some(w) => Spot::Pod {
            key: w.key(),
            as_proxy: w.sidecar,
        },
        None => {
            probe.bind = Some(source.to_string());
            Spot::Outside
        }
    }
}

fn mtls_mode(mesh: &Mesh, case: &TestCase, mode: &str, index: usize) -> CaseAction {
    let Some(key) = case.workload.as_deref() else {
        return CaseAction::Fail("`expect.mtlsMode` needs `workload`".to_owned());
    };
    let Some(w) = mesh.find_workload(key, None) else {
        return CaseAction::Fail(format!("no workload `{key}`"));
    };
    if !w.sidecar {
        return CaseAction::Skip(format!(
            "{} has no sidecar: there is no proxy to ask for its mode",
            w.key()
        ));
    }
    let Some(port) = case.port else {
        return CaseAction::Skip(
            "offline only: the proxy's /config_dump reports the mode per port, and the case names no port".to_owned(),
        );
    };
    if !w.ports.iter().any(|p| p.port == port) {
        return CaseAction::Skip(format!(
            "offline only: port {port} is not a declared port of {}, and /config_dump lists declared ports",
            w.key()
        ));
    }
    CaseAction::MtlsMode {
        spot: Spot::Pod {
            key: w.key(),
            as_proxy: false,
        },
        probe: Probe {
            id: index,
            connect: format!("127.0.0.1:{}", crate::mesh::capture::ADMIN_PORT),
            bind: None,
            tls: None,
            protocol: WireProtocol::Http1,
            request: Some(HttpSpec {
                method: "GET".to_owned(),
                path: "/config_dump".to_owned(),
                host: "localhost".to_owned(),
                headers: Vec::new(),
            }),
        },
        port,
        expected: mode.to_owned(),
    }
}
