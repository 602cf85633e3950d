//! A case as live traffic: where it is sent from, to which address, over which protocol, with
//! which certificate — or why it cannot be sent, which makes it a skip with that reason.
//! Configuration-only cases become reads of a proxy's `/config_dump`, or requests to the port
//! in question ([`super::config`]).
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

use super::config::{DumpCheck, RouteKey};
use super::pods::{CLIENT_NAMESPACE, Spot};
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
    /// Read a setting in a proxy's `/config_dump`.
    Dump(DumpCase),
    /// Try a port the workload does not declare with plaintext and with mTLS (boxed: two probes
    /// with a certificate, in a vector of mostly smaller actions).
    PortProbe(Box<PortProbe>),
}

impl CaseAction {
    /// The probes the action sends, each with where it leaves from.
    pub(crate) fn probes(&self) -> Vec<(&Spot, &Probe)> {
        match self {
            CaseAction::Skip(_) | CaseAction::Fail(_) => Vec::new(),
            CaseAction::Traffic(t) => vec![(&t.spot, &t.probe)],
            CaseAction::Dump(d) => vec![(&d.spot, &d.probe)],
            CaseAction::PortProbe(p) => vec![(&p.spot, &p.plaintext), (&p.spot, &p.mtls)],
        }
    }
}

/// A `/config_dump` read.
#[derive(Debug, Clone)]
pub(crate) struct DumpCase {
    /// The pod whose proxy is asked (its admin port listens on the pod's loopback).
    pub(crate) spot: Spot,
    /// A GET of `/config_dump` on the proxy's admin port.
    pub(crate) probe: Probe,
    /// What to read.
    pub(crate) check: DumpCheck,
    /// The expected value.
    pub(crate) expected: String,
    /// What the engine says, for the report.
    pub(crate) offline: String,
}

/// A port's mode, tried (see [`super::config`]).
#[derive(Debug, Clone)]
pub(crate) struct PortProbe {
    /// The client pod, outside the mesh.
    pub(crate) spot: Spot,
    /// The workload `ns/name` whose app must also listen on the port.
    pub(crate) workload: String,
    /// The port.
    pub(crate) port: u16,
    /// A plaintext request.
    pub(crate) plaintext: Probe,
    /// The same request over mesh mTLS.
    pub(crate) mtls: Probe,
    /// The expected mode.
    pub(crate) expected: String,
    /// What the engine says, for the report.
    pub(crate) offline: String,
}

/// Numbers the probes of one document (each result comes back with its probe's number).
#[derive(Debug, Default)]
pub(crate) struct ProbeIds(usize);

impl ProbeIds {
    fn next(&mut self) -> usize {
        self.0 += 1;
        self.0
    }
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
    let mut planner = Planner {
        session,
        certs: BTreeMap::new(),
        ids: ProbeIds::default(),
    };
    cases
        .iter()
        .enumerate()
        .map(
            |(i, case)| match planner.plan_case(mesh, declared, case, doc, i, now) {
                Ok(action) => action,
                Err(e) => CaseAction::Fail(format!("{e:#}")),
            },
        )
        .collect()
}

/// What planning the cases of a document shares: the session (to issue certificates), the
/// certificates issued (once per identity) and the probe numbers.
struct Planner<'a> {
    session: &'a mut Session,
    certs: BTreeMap<(String, bool), TlsSpec>,
    ids: ProbeIds,
}

impl Planner<'_> {
    fn plan_case(
        &mut self,
        mesh: &Mesh,
        declared: &DeclaredPlan,
        case: &TestCase,
        doc: usize,
        index: usize,
        now: i64,
    ) -> anyhow::Result<CaseAction> {
        let expect = &case.expect;
        let traffic_expected =
            expect.decision.is_some() || expect.policy.is_some() || expect.rule.is_some();
        let config_expected = expect.mtls_mode.is_some() || expect.client_tls.is_some();
        if config_expected && traffic_expected {
            let why = "a case expecting a decision and a configuration value at once: split it in two to run it live";
            return Ok(CaseAction::Skip(why.to_owned()));
        }
        if let Some(mode) = &expect.mtls_mode {
            if expect.client_tls.is_some() {
                let why = "a case expecting `mtlsMode` and `clientTls` at once: split it in two to run it live";
                return Ok(CaseAction::Skip(why.to_owned()));
            }
            return self.mtls_mode(mesh, case, mode);
        }
        if let Some(mode) = &expect.client_tls {
            return self.client_tls(mesh, case, mode, now);
        }
        if !traffic_expected {
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
            id: self.ids.next(),
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
                        "`sni` with a sidecar client: the sidecar chooses the SNI itself"
                            .to_owned(),
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
                let mut tls = self.certificate(&id, trusted)?;
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

    /// A certificate for `id` (from the mesh CA, or one the mesh does not trust), issued once per
    /// document.
    fn certificate(&mut self, id: &SpiffeId, trusted: bool) -> anyhow::Result<TlsSpec> {
        let key = (id.uri(), trusted);
        if let Some(t) = self.certs.get(&key) {
            return Ok(t.clone());
        }
        let (cert, roots) = self.session.issue(id, trusted)?;
        let t = TlsSpec {
            key_pem: cert.key_pem(),
            chain_pem: cert.chain_pem(),
            roots_pem: roots,
            sni: String::new(),
        };
        self.certs.insert(key, t.clone());
        Ok(t)
    }

    /// `expect.mtlsMode`: the destination sidecar's `/config_dump` for the workload or a port it
    /// declares; a port it does not declare is tried (see [`super::config`]).
    fn mtls_mode(
        &mut self,
        mesh: &Mesh,
        case: &TestCase,
        mode: &str,
    ) -> anyhow::Result<CaseAction> {
        let Some(key) = case.workload.as_deref() else {
            return Ok(CaseAction::Fail(
                "`expect.mtlsMode` needs `workload`".to_owned(),
            ));
        };
        let Some(w) = mesh.find_workload(key, None) else {
            return Ok(CaseAction::Fail(format!("no workload `{key}`")));
        };
        if !w.sidecar {
            return Ok(CaseAction::Skip(format!(
                "{} has no sidecar: there is no proxy whose mode could be observed",
                w.key()
            )));
        }
        let resolved = mesh.peer_authn.resolve(w.selector_view());
        let offline = match case.port {
            Some(p) => resolved.for_port(p),
            None => resolved.mode,
        };
        let offline = format!("mtlsMode {}", offline.as_str());
        let spot = Spot::Pod {
            key: w.key(),
            as_proxy: false,
        };
        match case.port {
            Some(port) if !w.ports.iter().any(|p| p.port == port) => {
                let IpAddr::V4(_) = w.address else {
                    return Ok(CaseAction::Skip(format!(
                        "{} has address {}: the local mesh is IPv4 only",
                        w.key(),
                        w.address
                    )));
                };
                // Any identity the mesh trusts: the transport is what is tried, and authorization,
                // which runs after it, answers with a 403 the judge counts as accepted.
                let id = SpiffeId::parse(&format!(
                    "spiffe://{}/ns/{CLIENT_NAMESPACE}/sa/default",
                    mesh.settings.trust_domain
                ))
                .map_err(|e| anyhow::anyhow!("the client pod's identity: {e}"))?;
                let tls = self.certificate(&id, true)?;
                // Undeclared ports take the HTTP chain (`Workload::protocol`).
                let request = HttpSpec {
                    method: "GET".to_owned(),
                    path: "/".to_owned(),
                    host: w.name.clone(),
                    headers: Vec::new(),
                };
                let plaintext = Probe {
                    id: self.ids.next(),
                    connect: format!("{}:{port}", w.address),
                    bind: None,
                    tls: None,
                    protocol: WireProtocol::Http1,
                    request: Some(request),
                };
                let mtls = Probe {
                    id: self.ids.next(),
                    tls: Some(tls),
                    ..plaintext.clone()
                };
                Ok(CaseAction::PortProbe(Box::new(PortProbe {
                    spot: Spot::Outside,
                    workload: w.key(),
                    port,
                    plaintext,
                    mtls,
                    expected: mode.to_owned(),
                    offline,
                })))
            }
            port => Ok(CaseAction::Dump(DumpCase {
                probe: self.dump_probe(),
                spot,
                check: DumpCheck::MtlsMode { port },
                expected: mode.to_owned(),
                offline,
            })),
        }
    }

    /// `expect.clientTls`: the client sidecar's `/config_dump`, at the route and endpoint the case
    /// resolves to (the engine's resolution, as for traffic).
    fn client_tls(
        &mut self,
        mesh: &Mesh,
        case: &TestCase,
        mode: &str,
        now: i64,
    ) -> anyhow::Result<CaseAction> {
        let Some(from) = case.from.as_ref().and_then(|f| f.workload.as_deref()) else {
            return Ok(CaseAction::Fail(
                "`expect.clientTls` needs `from.workload`".to_owned(),
            ));
        };
        let client = mesh
            .find_workload(from, None)
            .ok_or_else(|| anyhow::anyhow!("no workload `{from}`"))?;
        if !client.sidecar {
            return Ok(CaseAction::Skip(format!(
                "{} has no sidecar: there is no proxy whose TLS choice could be observed (its app's connections are plaintext)",
                client.key()
            )));
        }
        let traffic = traffic_of(case, now)?;
        let offline = match mesh.client_tls(from, &traffic.target)? {
            Some(tls) => format!("clientTls {}", tls.mode.as_str()),
            None => "clientTls DISABLE".to_owned(),
        };
        let outcome = mesh.evaluate(&traffic, false)?;
        let to = case
            .to
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("case needs `to`"))?;
        let route = match &to.service {
            Some(host) => {
                let service = mesh
                    .inventory
                    .resolve_service(host, Some(&client.namespace))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                RouteKey::Service {
                    service: service.fqdn(),
                    port: to.port,
                    endpoint: outcome.destination.clone(),
                }
            }
            None => RouteKey::Workload {
                workload: outcome.destination.clone(),
                port: outcome.port,
            },
        };
        Ok(CaseAction::Dump(DumpCase {
            probe: self.dump_probe(),
            spot: Spot::Pod {
                key: client.key(),
                as_proxy: false,
            },
            check: DumpCheck::ClientTls { route },
            expected: mode.to_owned(),
            offline,
        }))
    }

    /// A GET of `/config_dump` on the pod's proxy admin port (loopback, never captured).
    fn dump_probe(&mut self) -> Probe {
        Probe {
            id: self.ids.next(),
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
        }
    }
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
