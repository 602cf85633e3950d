//! One connection (and request) through the mesh, as Istio decides it: the client sidecar's
//! TLS, the server's PeerAuthentication and certificate checks, JWT, then authorization.
//! This is what `meshward check` and `meshward test` run; the proxy runs the server half.

use std::net::{IpAddr, Ipv4Addr};

use meshward_api::resources::Resource;
use meshward_api::resources::networking::TlsMode;

use crate::attributes::borrow_headers;
use crate::authz::{AuthzDecision, AuthzIndex, PolicyTrace};
use crate::client_tls::{ClientTls, ClientTlsInput, DestinationRuleIndex, decide_client_tls};
use crate::inbound::{HttpVerdict, InboundConnection, InboundPolicy, InboundRequest};
use crate::inventory::{Inventory, ResolveError, ServiceDef, Workload};
use crate::mesh::MeshSettings;
use crate::path::PathRejection;
use crate::peer_authn::{EffectiveMtls, PeerAuthnIndex};
use crate::request_authn::RequestAuthnIndex;

/// The documentation address used for clients outside the mesh (TEST-NET-1).
pub const DEFAULT_CLIENT_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// The whole mesh, compiled: everything a decision reads.
#[derive(Debug, Clone, Default)]
pub struct Mesh {
    /// MeshConfig.
    pub settings: MeshSettings,
    /// Workloads and services.
    pub inventory: Inventory,
    /// AuthorizationPolicies.
    pub authz: AuthzIndex,
    /// PeerAuthentications.
    pub peer_authn: PeerAuthnIndex,
    /// DestinationRules.
    pub destination_rules: DestinationRuleIndex,
    /// RequestAuthentications.
    pub request_authn: RequestAuthnIndex,
}

impl Mesh {
    /// Compiles the security resources; the inventory is given (built from Kubernetes kinds
    /// and/or declared workloads).
    pub fn new(settings: MeshSettings, inventory: Inventory, resources: &[&Resource]) -> Self {
        let authz = AuthzIndex::build(
            resources.iter().filter_map(|r| match r {
                Resource::AuthorizationPolicy(p) => Some(p),
                _ => None,
            }),
            &settings,
        );
        let peer_authn = PeerAuthnIndex::build(
            resources.iter().filter_map(|r| match r {
                Resource::PeerAuthentication(p) => Some(p),
                _ => None,
            }),
            &settings.root_namespace,
        );
        let destination_rules =
            DestinationRuleIndex::build(resources.iter().filter_map(|r| match r {
                Resource::DestinationRule(d) => Some(d),
                _ => None,
            }));
        let request_authn = RequestAuthnIndex::build(
            resources.iter().filter_map(|r| match r {
                Resource::RequestAuthentication(p) => Some(p),
                _ => None,
            }),
            &settings.root_namespace,
        );
        Mesh {
            settings,
            inventory,
            authz,
            peer_authn,
            destination_rules,
            request_authn,
        }
    }
}

/// Who opens the connection.
#[derive(Debug, Clone)]
pub enum Client {
    /// A workload of the inventory (`ns/name`); its sidecar, if any, applies.
    Workload(String),
    /// A peer presenting a mesh certificate with this principal (`td/ns/x/sa/y`).
    Principal {
        /// The principal, without `spiffe://`.
        principal: String,
        /// False: the certificate comes from a CA the mesh does not trust.
        trusted_ca: bool,
    },
    /// A client outside the mesh.
    Plaintext,
}

/// Where the connection goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A workload and container port.
    Workload {
        /// `ns/name`.
        workload: String,
        /// Container port.
        port: u16,
    },
    /// A service host name and service port.
    Service {
        /// `name`, `name.ns`, `name.ns.svc.cluster.local`.
        host: String,
        /// Service port.
        port: u16,
    },
}

/// One HTTP request, raw (before normalization).
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// Method (default GET).
    pub method: Option<String>,
    /// Path with query (default `/`).
    pub path: Option<String>,
    /// `:authority` (default: the service host or the workload name).
    pub host: Option<String>,
    /// Headers, names lower-cased; a repeated header once per line.
    pub headers: Vec<(String, String)>,
}

/// A connection to decide.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// Who.
    pub client: Client,
    /// Source address override.
    pub source_address: Option<IpAddr>,
    /// Where.
    pub target: Target,
    /// The request, on HTTP ports; `None` means the connection only (on an HTTP port, `GET /`).
    pub request: Option<HttpRequest>,
    /// TLS SNI override for `connection.sni`.
    pub sni: Option<String>,
    /// Current time, unix seconds (JWT `exp`/`nbf`).
    pub now_unix: i64,
}

/// The final verdict, in PolicyTest terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Reaches the application.
    Allow,
    /// Authorization refused it (403 / closed TCP).
    Deny,
    /// Refused below HTTP (mTLS mode, certificate checks).
    Reject,
    /// RequestAuthentication refused a present, invalid token (401; 403 for audiences).
    Unauthenticated,
    /// The request is malformed for Envoy's HTTP connection manager (400).
    BadRequest,
}

impl Verdict {
    /// PolicyTest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "ALLOW",
            Verdict::Deny => "DENY",
            Verdict::Reject => "REJECT",
            Verdict::Unauthenticated => "UNAUTHENTICATED",
            Verdict::BadRequest => "BAD_REQUEST",
        }
    }
}

/// How the bytes travel between the sidecars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Istio mTLS; the client's SPIFFE ID.
    Mtls {
        /// `spiffe://…`.
        peer: String,
    },
    /// TLS that is not Istio mTLS (DestinationRule SIMPLE or MUTUAL).
    OtherTls(TlsMode),
    /// Plaintext.
    Plaintext,
}

/// A JWT step result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtStep {
    /// `no token`, `verified`, or the rejection message.
    pub summary: String,
    /// `iss/sub` of a verified token.
    pub principal: Option<String>,
    /// HTTP status of a rejection.
    pub status: Option<u16>,
}

/// Everything that happened to one connection, step by step.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// Why, in one sentence.
    pub reason: String,
    /// The destination workload `ns/name`.
    pub destination: String,
    /// Its container port.
    pub port: u16,
    /// Whether the port takes the HTTP chain.
    pub is_http: bool,
    /// The client sidecar's TLS decision (clients with a sidecar only).
    pub client_tls: Option<ClientTls>,
    /// What was sent.
    pub transport: Transport,
    /// The server's effective mode on the port (`None`: no sidecar, or a gateway).
    pub server_mtls: Option<EffectiveMtls>,
    /// The JWT step, when RequestAuthentication applies and the port is HTTP.
    pub jwt: Option<JwtStep>,
    /// The authorization decision, when authorization ran.
    pub authz: Option<AuthzDecision>,
    /// The per-policy trace, when asked for.
    pub trace: Vec<PolicyTrace>,
}

/// A connection that cannot be evaluated: the case names something that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrafficError {
    /// Unknown workload.
    #[error("no workload `{0}`")]
    NoWorkload(String),
    /// Service resolution failed.
    #[error(transparent)]
    Service(#[from] ResolveError),
    /// The service has no such port.
    #[error("service {service} has no port {port}")]
    NoServicePort {
        /// `ns/name`.
        service: String,
        /// The port asked for.
        port: u16,
    },
    /// The service selects no workload.
    #[error("service {0} has no endpoints")]
    NoEndpoints(String),
}

/// The destination resolved to an endpoint.
struct Resolved<'m> {
    endpoint: &'m Workload,
    endpoint_port: u16,
    service: Option<&'m ServiceDef>,
    service_port: u16,
    default_authority: String,
}

impl Mesh {
    fn client_workload(&self, client: &Client) -> Result<Option<&Workload>, TrafficError> {
        match client {
            Client::Workload(key) => self
                .find_workload(key, None)
                .map(Some)
                .ok_or_else(|| TrafficError::NoWorkload(key.clone())),
            _ => Ok(None),
        }
    }

    /// `ns/name`, or `name` in `default_namespace`.
    pub fn find_workload(&self, key: &str, default_namespace: Option<&str>) -> Option<&Workload> {
        match key.split_once('/') {
            Some((ns, name)) => self.inventory.workload(ns, name),
            None => {
                let ns = default_namespace.unwrap_or("default");
                self.inventory.workload(ns, key).or_else(|| {
                    let mut all = self.inventory.workloads.iter().filter(|w| w.name == key);
                    match (all.next(), all.next()) {
                        (Some(one), None) => Some(one),
                        _ => None,
                    }
                })
            }
        }
    }

    fn client_namespace(&self, client: &Client) -> Option<String> {
        match client {
            Client::Workload(key) => self.find_workload(key, None).map(|w| w.namespace.clone()),
            Client::Principal { principal, .. } => {
                let parts: Vec<&str> = principal.split('/').collect();
                match parts.as_slice() {
                    [_, "ns", ns, "sa", _] => Some((*ns).to_owned()),
                    _ => None,
                }
            }
            Client::Plaintext => None,
        }
    }

    fn resolve(&self, traffic: &Traffic) -> Result<Resolved<'_>, TrafficError> {
        match &traffic.target {
            Target::Workload { workload, port } => {
                let ns = self.client_namespace(&traffic.client);
                let endpoint = self
                    .find_workload(workload, ns.as_deref())
                    .ok_or_else(|| TrafficError::NoWorkload(workload.clone()))?;
                // "a sidecar client treats the workload as a mesh endpoint: auto mTLS and its
                // DestinationRules apply as for a service selecting it".
                let via = self.inventory.services_of(endpoint).find_map(|s| {
                    s.ports
                        .iter()
                        .find(|p| self.inventory.target_port(p, endpoint) == Some(*port))
                        .map(|p| (s, p.port))
                });
                Ok(Resolved {
                    endpoint,
                    endpoint_port: *port,
                    service: via.map(|(s, _)| s),
                    service_port: via.map(|(_, p)| p).unwrap_or(*port),
                    default_authority: endpoint.name.clone(),
                })
            }
            Target::Service { host, port } => {
                let ns = self.client_namespace(&traffic.client);
                let service = self.inventory.resolve_service(host, ns.as_deref())?;
                let service_port =
                    service
                        .ports
                        .iter()
                        .find(|p| p.port == *port)
                        .ok_or_else(|| TrafficError::NoServicePort {
                            service: format!("{}/{}", service.namespace, service.name),
                            port: *port,
                        })?;
                let endpoint = self.inventory.endpoints(service).next().ok_or_else(|| {
                    TrafficError::NoEndpoints(format!("{}/{}", service.namespace, service.name))
                })?;
                let endpoint_port = self
                    .inventory
                    .target_port(service_port, endpoint)
                    .unwrap_or(*port);
                Ok(Resolved {
                    endpoint,
                    endpoint_port,
                    service: Some(service),
                    service_port: *port,
                    default_authority: host.clone(),
                })
            }
        }
    }

    /// The client sidecar's TLS towards a destination (configuration-only `clientTls` cases).
    pub fn client_tls(
        &self,
        client: &str,
        target: &Target,
    ) -> Result<Option<ClientTls>, TrafficError> {
        let traffic = Traffic {
            client: Client::Workload(client.to_owned()),
            source_address: None,
            target: target.clone(),
            request: None,
            sni: None,
            now_unix: 0,
        };
        let Some(client) = self.client_workload(&traffic.client)? else {
            return Ok(None);
        };
        let r = self.resolve(&traffic)?;
        Ok(client.sidecar.then(|| self.decide_client_tls(client, &r)))
    }

    fn decide_client_tls(&self, client: &Workload, r: &Resolved<'_>) -> ClientTls {
        let td = &self.settings.trust_domain;
        let mut identities: Vec<String> = match r.service {
            Some(s) => self
                .inventory
                .endpoints(s)
                .map(|w| w.spiffe_id(td))
                .collect(),
            None => vec![r.endpoint.spiffe_id(td)],
        };
        identities.sort();
        identities.dedup();
        decide_client_tls(
            &ClientTlsInput {
                client,
                service: r.service,
                service_port: r.service_port,
                endpoint: r.endpoint,
                endpoint_port: r.endpoint_port,
                service_identities: identities,
            },
            &self.destination_rules,
            &self.peer_authn,
            &self.settings,
        )
    }

    /// Decides one connection. With `explain`, the outcome carries the per-policy trace.
    pub fn evaluate(&self, traffic: &Traffic, explain: bool) -> Result<Outcome, TrafficError> {
        let client = self.client_workload(&traffic.client)?;
        let r = self.resolve(traffic)?;
        let td = self.settings.trust_domain.clone();
        let endpoint = r.endpoint;
        let is_http = endpoint.protocol(r.endpoint_port).is_http();
        let mut out = Outcome {
            verdict: Verdict::Allow,
            reason: String::new(),
            destination: endpoint.key(),
            port: r.endpoint_port,
            is_http,
            client_tls: None,
            transport: Transport::Plaintext,
            server_mtls: None,
            jwt: None,
            authz: None,
            trace: Vec::new(),
        };
        let mut sni = traffic.sni.clone().unwrap_or_default();
        let mut trusted_ca = true;
        // --- client side ---
        match (&traffic.client, client) {
            (Client::Workload(_), Some(c)) if c.sidecar => {
                let tls = self.decide_client_tls(c, &r);
                out.transport = match tls.mode {
                    TlsMode::IstioMutual => Transport::Mtls {
                        peer: c.spiffe_id(&td),
                    },
                    TlsMode::Disable => Transport::Plaintext,
                    other => Transport::OtherTls(other),
                };
                if traffic.sni.is_none() {
                    sni = tls.sni.clone().unwrap_or_default();
                }
                out.client_tls = Some(tls);
            }
            (
                Client::Principal {
                    principal,
                    trusted_ca: ca,
                },
                _,
            ) => {
                out.transport = Transport::Mtls {
                    peer: format!("spiffe://{principal}"),
                };
                trusted_ca = *ca;
            }
            _ => {}
        }
        // --- server side: transport ---
        if !endpoint.sidecar {
            if out.transport != Transport::Plaintext {
                return Ok(out.reject(format!(
                    "{} has no sidecar: the TLS handshake reaches the application and fails (503 UF)",
                    endpoint.key()
                )));
            }
            out.reason = format!("{} has no sidecar: nothing is enforced", endpoint.key());
            return Ok(out);
        }
        let gateway = endpoint.is_gateway();
        if !gateway {
            let mode = self
                .peer_authn
                .resolve(endpoint.selector_view())
                .for_port(r.endpoint_port);
            out.server_mtls = Some(mode);
            if let Some(reason) = self.check_transport(&out.transport, mode, is_http, trusted_ca) {
                return Ok(out.reject(reason));
            }
        } else if !trusted_ca {
            return Ok(out.reject("the client certificate is not signed by the mesh CA".to_owned()));
        }
        // Secure naming: the client checks the server's identity (§1.8 client step 3).
        let naming_failure = match (&out.client_tls, &out.transport) {
            (Some(tls), Transport::Mtls { .. }) => {
                let server = endpoint.spiffe_id(&td);
                (!tls.skip_verify
                    && !tls.expected_sans.is_empty()
                    && !tls.expected_sans.contains(&server))
                .then(|| {
                    format!(
                        "secure naming: the server presents {server}, the client expects one of {}",
                        tls.expected_sans.join(", ")
                    )
                })
            }
            _ => None,
        };
        if let Some(reason) = naming_failure {
            return Ok(out.reject(reason));
        }
        let peer = match &out.transport {
            Transport::Mtls { peer } => Some(peer.clone()),
            _ => None,
        };
        let src_ip = traffic
            .source_address
            .or(client.map(|c| c.address))
            .unwrap_or(DEFAULT_CLIENT_ADDRESS);
        // The server side runs exactly what the endpoint's sidecar runs.
        let inbound = InboundPolicy::new(self, endpoint);
        let conn = InboundConnection {
            source_ip: src_ip,
            destination_ip: endpoint.address,
            destination_port: r.endpoint_port,
            peer: peer.as_deref(),
            sni: &sni,
        };
        if !is_http {
            let decision = inbound.authorize_tcp(&conn);
            if explain {
                out.trace = inbound.explain_tcp(&conn);
            }
            return Ok(out.authorized(decision));
        }
        // --- HTTP ---
        let req = traffic.request.clone().unwrap_or_default();
        let method = req.method.clone().unwrap_or_else(|| "GET".to_owned());
        let raw_path = req.path.clone().unwrap_or_else(|| "/".to_owned());
        let authority = req.host.clone().unwrap_or(r.default_authority.clone());
        let headers = borrow_headers(&req.headers);
        let decision = inbound.authorize_http(
            &conn,
            InboundRequest {
                method: &method,
                path: &raw_path,
                authority: &authority,
                headers: &headers,
                now_unix: traffic.now_unix,
            },
            explain,
        );
        out.jwt = decision.jwt;
        out.trace = decision.trace;
        Ok(match decision.verdict {
            HttpVerdict::Forward { decision, .. } | HttpVerdict::Deny { decision } => {
                out.authorized(decision)
            }
            HttpVerdict::Unauthenticated(rejection) => {
                out.verdict = Verdict::Unauthenticated;
                out.reason = format!(
                    "RequestAuthentication rejected the token: {} (HTTP {})",
                    rejection.message, rejection.status
                );
                out
            }
            HttpVerdict::BadRequest(rejection) => out.bad_request(&rejection),
        })
    }

    /// authentication.md §2.4: which transports find a filter chain under each mode, and the
    /// certificate checks of §1.8 (server side).
    fn check_transport(
        &self,
        transport: &Transport,
        mode: EffectiveMtls,
        is_http: bool,
        trusted_ca: bool,
    ) -> Option<String> {
        match (transport, mode) {
            (Transport::Plaintext, EffectiveMtls::Strict) => Some(
                "plaintext into a STRICT port: no filter chain matches, the connection is closed (NR filter_chain_not_found)"
                    .to_owned(),
            ),
            (Transport::Plaintext, _) => None,
            (Transport::Mtls { .. } | Transport::OtherTls(_), EffectiveMtls::Disable) => Some(
                "TLS into a DISABLE port: no filter chain matches, the connection is closed".to_owned(),
            ),
            (Transport::OtherTls(m), EffectiveMtls::Strict) => Some(format!(
                "{} TLS is not Istio mTLS: the STRICT port requires a mesh client certificate",
                m.as_str()
            )),
            (Transport::OtherTls(m), EffectiveMtls::Permissive) => is_http.then(|| {
                format!(
                    "{} TLS without Istio ALPN finds no chain on a PERMISSIVE HTTP port",
                    m.as_str()
                )
            }),
            (Transport::Mtls { peer }, _) => {
                if !trusted_ca {
                    return Some("the client certificate is not signed by the mesh CA (unknown issuer)".to_owned());
                }
                // §1.8 server step 3: at least one SAN must prefix-match `spiffe://<td>/` for
                // some td of [trustDomain] ∪ trustDomainAliases.
                let accepted = self.settings.accepted_trust_domains();
                let ok = accepted.iter().any(|td| peer.starts_with(&format!("spiffe://{td}/")));
                (!ok).then(|| {
                    format!(
                        "client identity {peer} is not in an accepted trust domain ({})",
                        accepted.join(", ")
                    )
                })
            }
        }
    }
}

impl Outcome {
    fn reject(mut self, reason: String) -> Outcome {
        self.verdict = Verdict::Reject;
        self.reason = reason;
        self
    }

    fn bad_request(mut self, rejection: &PathRejection) -> Outcome {
        self.verdict = Verdict::BadRequest;
        self.reason = format!("HTTP 400: {rejection}");
        self
    }

    fn authorized(mut self, decision: AuthzDecision) -> Outcome {
        self.verdict = if decision.allowed {
            Verdict::Allow
        } else {
            Verdict::Deny
        };
        self.reason = crate::decision::describe(&decision);
        self.authz = Some(decision);
        self
    }
}
