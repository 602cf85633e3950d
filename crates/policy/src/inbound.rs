//! One workload's inbound policy, compiled: what its sidecar enforces on every connection and
//! request it accepts. The proxy calls this on live traffic; `flow` (behind `meshward check` and
//! `meshward test`) calls the same code offline.

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::attributes::{Attributes, Header, HttpAttributes};
use crate::authz::{AuthzDecision, PolicyTrace, WorkloadAuthz};
use crate::flow::{JwtStep, Mesh};
use crate::inventory::Workload;
use crate::jwt::{HeaderMutations, JwtAuthenticator, JwtOutcome, JwtRejection, JwtRequest};
use crate::mesh::MeshSettings;
use crate::path::{PathRejection, normalize_path};
use crate::peer_authn::{EffectiveMtls, WorkloadMtls};
use crate::request_authn::JwtRuleError;

/// A connection as the server-side proxy sees it.
#[derive(Debug, Clone, Copy)]
pub struct InboundConnection<'a> {
    /// The client's address (`source.ip`).
    pub source_ip: IpAddr,
    /// The address the client connected to (the workload's IP).
    pub destination_ip: IpAddr,
    /// The port the client connected to.
    pub destination_port: u16,
    /// The client certificate's URI SAN (`spiffe://…`); `None` for plaintext.
    pub peer: Option<&'a str>,
    /// The TLS SNI, empty when none.
    pub sni: &'a str,
}

/// An HTTP request as received.
#[derive(Debug, Clone)]
pub struct InboundRequest<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path` as received, query included.
    pub path: &'a str,
    /// `:authority` / `Host`.
    pub authority: &'a str,
    /// Headers with lower-case names; a repeated header is several entries.
    pub headers: &'a [Header<'a>],
    /// Seconds since the Unix epoch (JWT expiry checks).
    pub now_unix: i64,
}

/// What the proxy does with an HTTP request.
#[derive(Debug, Clone)]
pub enum HttpVerdict {
    /// Forward it, with this path and JWT's header changes.
    Forward {
        /// What `jwt_authn` changes in the headers before they go upstream (authentication.md
        /// §5.1: `Authorization` removed unless `forwardOriginalToken`, output headers added).
        mutations: HeaderMutations,
        /// The `:path` to send upstream: normalized, and without a JWT query parameter the
        /// token came in when `forwardOriginalToken` is false.
        path: String,
        /// The authorization decision (dry-run/audit results included).
        decision: AuthzDecision,
    },
    /// authorization.md: HTTP 403 with body `RBAC: access denied`.
    Deny {
        /// The decision with its deciding policy.
        decision: AuthzDecision,
    },
    /// RequestAuthentication refused the token: a local reply with Envoy's status and message.
    Unauthenticated(JwtRejection),
    /// The path cannot be normalized: HTTP 400.
    BadRequest(PathRejection),
}

/// An HTTP decision and what led to it.
#[derive(Debug, Clone)]
pub struct HttpDecision {
    /// The verdict.
    pub verdict: HttpVerdict,
    /// The JWT step, when RequestAuthentication applies.
    pub jwt: Option<JwtStep>,
    /// The per-policy trace, when asked for.
    pub trace: Vec<PolicyTrace>,
}

/// The inbound policy of one workload.
#[derive(Debug, Clone)]
pub struct InboundPolicy {
    workload: Workload,
    settings: MeshSettings,
    mtls: WorkloadMtls,
    authz: WorkloadAuthz,
    jwt: JwtAuthenticator,
    jwt_errors: Vec<JwtRuleError>,
}

impl InboundPolicy {
    /// Compiles what applies to `workload` in `mesh`.
    pub fn new(mesh: &Mesh, workload: &Workload) -> Self {
        let view = workload.selector_view();
        let (jwt, jwt_errors) = mesh.request_authn.authenticator(view);
        Self {
            workload: workload.clone(),
            settings: mesh.settings.clone(),
            mtls: mesh.peer_authn.resolve(view),
            authz: mesh.authz.for_workload(view),
            jwt,
            jwt_errors,
        }
    }

    /// The workload.
    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    /// The mesh settings in force.
    pub fn settings(&self) -> &MeshSettings {
        &self.settings
    }

    /// The effective PeerAuthentication on `port` (authentication.md §2.3).
    pub fn mtls_mode(&self, port: u16) -> EffectiveMtls {
        self.mtls.for_port(port)
    }

    /// The per-port PeerAuthentication resolution.
    pub fn mtls(&self) -> &WorkloadMtls {
        &self.mtls
    }

    /// Whether `port` takes the HTTP chain (its protocol is HTTP, HTTP/2 or gRPC).
    pub fn is_http(&self, port: u16) -> bool {
        self.workload.protocol(port).is_http()
    }

    /// The AuthorizationPolicies that apply, compiled.
    pub fn authz(&self) -> &WorkloadAuthz {
        &self.authz
    }

    /// The JWT providers that apply.
    pub fn jwt(&self) -> &JwtAuthenticator {
        &self.jwt
    }

    /// JWT rules that could not be used (their issuers' tokens are rejected: fail closed).
    pub fn jwt_errors(&self) -> &[JwtRuleError] {
        &self.jwt_errors
    }

    /// A connection on a TCP port: L4 authorization only.
    pub fn authorize_tcp(&self, conn: &InboundConnection<'_>) -> AuthzDecision {
        self.authz.evaluate(&tcp_attributes(conn))
    }

    /// The per-policy trace of a TCP connection.
    pub fn explain_tcp(&self, conn: &InboundConnection<'_>) -> Vec<PolicyTrace> {
        self.authz.explain(&tcp_attributes(conn))
    }

    /// A request on an HTTP port: path normalization, JWT (`jwt_authn` runs before RBAC), then
    /// authorization, as Envoy's inbound HTTP filter chain orders them.
    pub fn authorize_http(
        &self,
        conn: &InboundConnection<'_>,
        request: InboundRequest<'_>,
        explain: bool,
    ) -> HttpDecision {
        let path = match normalize_path(request.path, self.settings.path_normalization) {
            Ok(p) => p,
            Err(rejection) => {
                return HttpDecision {
                    verdict: HttpVerdict::BadRequest(rejection),
                    jwt: None,
                    trace: Vec::new(),
                };
            }
        };
        // authorization.md §7.1: the HTTP connection manager normalizes `:path` before any filter
        // runs, so JWT, RBAC and the application all see the normalized path.
        let mut jwt = None;
        let mut payload: Option<Map<String, Value>> = None;
        let mut mutations = HeaderMutations::default();
        if !self.jwt.is_empty() {
            let outcome = self.jwt.authenticate(
                &JwtRequest {
                    method: request.method,
                    path: &path,
                    headers: request.headers,
                },
                request.now_unix,
            );
            match outcome {
                JwtOutcome::NoToken(changes) => {
                    mutations = changes;
                    jwt = Some(JwtStep {
                        summary: "no token in any configured location: continues unauthenticated"
                            .to_owned(),
                        principal: None,
                        status: None,
                    });
                }
                JwtOutcome::Rejected(rejection) => {
                    return HttpDecision {
                        verdict: HttpVerdict::Unauthenticated(rejection),
                        jwt: Some(JwtStep {
                            summary: rejection.message.to_owned(),
                            principal: None,
                            status: Some(rejection.status),
                        }),
                        trace: Vec::new(),
                    };
                }
                JwtOutcome::Verified(verified) => {
                    let claim = |k: &str| {
                        verified
                            .payload
                            .get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    jwt = Some(JwtStep {
                        summary: "token verified".to_owned(),
                        principal: Some(format!("{}/{}", claim("iss"), claim("sub"))),
                        status: None,
                    });
                    mutations = verified.headers;
                    payload = Some(verified.payload);
                }
            }
        }
        // RBAC sees the headers as `jwt_authn` left them; without changes, as received.
        let changed;
        let headers: &[Header<'_>] = if mutations.is_empty() {
            request.headers
        } else {
            changed = mutations.view(request.headers);
            &changed
        };
        let remote_ip = self.remote_ip(conn.source_ip, headers);
        let attrs = Attributes {
            src_ip: conn.source_ip,
            remote_ip,
            dst_ip: conn.destination_ip,
            dst_port: conn.destination_port,
            peer: conn.peer,
            sni: conn.sni,
            http: Some(HttpAttributes {
                method: request.method,
                authority: request.authority,
                path: &path,
                headers,
                jwt: payload.as_ref(),
            }),
        };
        let decision = self.authz.evaluate(&attrs);
        let trace = if explain {
            self.authz.explain(&attrs)
        } else {
            Vec::new()
        };
        let verdict = if decision.allowed {
            HttpVerdict::Forward {
                // The normalized path, minus a token query parameter `jwt_authn` removed.
                path: mutations.path.clone().unwrap_or(path),
                mutations,
                decision,
            }
        } else {
            HttpVerdict::Deny { decision }
        };
        HttpDecision {
            verdict,
            jwt,
            trace,
        }
    }

    /// authorization.md §4.6: gateways trust `numTrustedProxies` X-Forwarded-For hops; sidecars
    /// take the right-most X-Forwarded-For address when the header is present.
    fn remote_ip(&self, peer: IpAddr, headers: &[Header<'_>]) -> IpAddr {
        let xff: Vec<IpAddr> = headers
            .iter()
            .filter(|(n, _)| *n == "x-forwarded-for")
            .flat_map(|(_, v)| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        if self.workload.is_gateway() {
            let n = self.settings.num_trusted_proxies as usize;
            if n == 0 {
                return peer;
            }
            return xff
                .len()
                .checked_sub(n)
                .and_then(|i| xff.get(i))
                .copied()
                .unwrap_or(peer);
        }
        xff.last().copied().unwrap_or(peer)
    }
}

fn tcp_attributes<'a>(conn: &InboundConnection<'a>) -> Attributes<'a> {
    Attributes {
        src_ip: conn.source_ip,
        remote_ip: conn.source_ip,
        dst_ip: conn.destination_ip,
        dst_port: conn.destination_port,
        peer: conn.peer,
        sni: conn.sni,
        http: None,
    }
}
