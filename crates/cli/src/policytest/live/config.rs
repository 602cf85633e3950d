//! Configuration-only cases (`expect.mtlsMode`, `expect.clientTls`) judged on the running
//! proxies, not the engine (`shared/spec/policy-tests.md`, "Cases about configuration only").
//!
//! - `mtlsMode` on the workload, or on a port it declares: the destination sidecar's
//!   `/config_dump` — `peer_authentication.mode` (the workload-level mode every port without a
//!   port-level setting enforces) or that port's `ports[].mtls` — read from the state its inbound
//!   listener consults for every connection.
//! - `mtlsMode` on a port the workload does not declare: there is no per-port entry to read,
//!   so the port is tried. Istio's capture sends every inbound port through the sidecar, and
//!   port-level settings reach such ports too (authentication.md §2.3: "plus an extra per-port
//!   passthrough chain for listed ports that no Service … declares"). The app listens there too
//!   (a container may serve a port its pod spec does not list), and the client pod sends one
//!   plaintext and one mesh-mTLS request. The mode is what the sidecar accepts (§2.4: "No chain
//!   matched (plaintext to STRICT, mTLS to DISABLE …): Envoy closes the connection
//!   immediately"): STRICT closes the plaintext one, DISABLE the mTLS one, PERMISSIVE neither.
//!   Any HTTP answer — the app's, or the sidecar's 403 or 401 — means the transport was
//!   accepted, since authorization and JWT run only after it.
//! - `clientTls`: the client sidecar's `/config_dump`, whose routes are built by the resolver its
//!   outbound listeners use: for `to.service`, the `clusters` entry of that service port and the
//!   endpoint the case resolves to; for `to.workload`, the `workload_routes` entry of that pod
//!   port. The value is the endpoint's `tls_mode`.

use serde_json::Value;

use super::wire::Observed;

/// Which route of the client's `/config_dump` a `clientTls` case reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RouteKey {
    /// A service port (`clusters`) and the endpoint workload `ns/name` the case resolves to.
    Service {
        /// The service FQDN.
        service: String,
        /// The service port.
        port: u16,
        /// The endpoint workload.
        endpoint: String,
    },
    /// A workload port reached at the pod's address (`workload_routes`).
    Workload {
        /// The workload `ns/name`.
        workload: String,
        /// Its (target) port.
        port: u16,
    },
}

/// What one `/config_dump` read checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DumpCheck {
    /// The effective PeerAuthentication mode of the workload (`None`) or of a declared port.
    MtlsMode {
        /// The port.
        port: Option<u16>,
    },
    /// The TLS mode the client sidecar originates on a route.
    ClientTls {
        /// The route.
        route: RouteKey,
    },
}

impl DumpCheck {
    /// What the check is called in results (`mtlsMode`, `clientTls`).
    pub(crate) fn field(&self) -> &'static str {
        match self {
            DumpCheck::MtlsMode { .. } => "mtlsMode",
            DumpCheck::ClientTls { .. } => "clientTls",
        }
    }

    /// The value `/config_dump` (`body`) holds for this check, or what is missing.
    pub(crate) fn read(&self, body: &str) -> Result<String, String> {
        let dump: Value =
            serde_json::from_str(body).map_err(|e| format!("/config_dump is not JSON: {e}"))?;
        match self {
            DumpCheck::MtlsMode { port: None } => dump
                .pointer("/peer_authentication/mode")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| "/config_dump has no `peer_authentication.mode`".to_owned()),
            DumpCheck::MtlsMode { port: Some(port) } => array(&dump, "ports")
                .find(|p| p["port"].as_u64() == Some(u64::from(*port)))
                .and_then(|p| p["mtls"].as_str())
                .map(str::to_owned)
                .ok_or_else(|| format!("/config_dump lists no mode for port {port}")),
            DumpCheck::ClientTls { route } => client_tls(&dump, route),
        }
    }
}

fn array<'a>(dump: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    dump[key].as_array().into_iter().flatten()
}

fn client_tls(dump: &Value, route: &RouteKey) -> Result<String, String> {
    let (entry, endpoint, what) = match route {
        RouteKey::Service {
            service,
            port,
            endpoint,
        } => (
            array(dump, "clusters").find(|c| {
                c["service"].as_str() == Some(service)
                    && c["port"].as_u64() == Some(u64::from(*port))
            }),
            endpoint,
            format!("cluster for {service}:{port}"),
        ),
        RouteKey::Workload { workload, port } => (
            array(dump, "workload_routes").find(|r| {
                r["workload"].as_str() == Some(workload)
                    && r["target_port"].as_u64() == Some(u64::from(*port))
            }),
            workload,
            format!("route to {workload} port {port}"),
        ),
    };
    let entry = entry.ok_or_else(|| format!("/config_dump has no {what}"))?;
    if let Some(error) = entry["error"].as_str() {
        return Err(format!("/config_dump: {what}: {error}"));
    }
    let found = array(entry, "endpoints")
        .find(|e| e["workload"].as_str() == Some(endpoint))
        .ok_or_else(|| format!("/config_dump: the {what} has no endpoint {endpoint}"))?;
    found["tls_mode"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("/config_dump: endpoint {endpoint} of the {what} has no `tls_mode`"))
}

/// Whether a request reached past the sidecar's transport stage: any HTTP answer does.
fn accepted(observed: &Observed) -> Option<bool> {
    match observed {
        Observed::Response { .. } | Observed::Echoed => Some(true),
        Observed::Closed { .. } => Some(false),
        Observed::ConnectFailed { .. } => None,
    }
}

/// The PeerAuthentication mode shown by a plaintext and an mTLS request to one port
/// (authentication.md §2.4's filter chains).
pub(crate) fn port_mode(plaintext: &Observed, mtls: &Observed) -> Result<&'static str, String> {
    match (accepted(plaintext), accepted(mtls)) {
        (Some(true), Some(true)) => Ok("PERMISSIVE"),
        (Some(false), Some(true)) => Ok("STRICT"),
        (Some(true), Some(false)) => Ok("DISABLE"),
        _ => Err("the sidecar accepted neither plaintext nor mTLS".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn dump() -> String {
        json!({
            "ports": [{"port": 9080, "protocol": "HTTP", "mtls": "STRICT"}],
            "peer_authentication": {"mode": "PERMISSIVE", "ports": {"9080": "STRICT", "8080": "DISABLE"}},
            "clusters": [
                {"name": "outbound|80||a.foo.svc.cluster.local", "service": "a.foo.svc.cluster.local", "port": 80,
                 "endpoints": [
                    {"workload": "foo/a-0", "tls": "DISABLE", "tls_mode": "DISABLE"},
                    {"workload": "foo/a-1", "tls": "REFUSED", "tls_mode": "SIMPLE"}]},
                {"name": "outbound|81||b.foo.svc.cluster.local", "service": "b.foo.svc.cluster.local", "port": 81,
                 "error": "ambiguous"}
            ],
            "workload_routes": [
                {"workload": "foo/a-0", "target_port": 8080, "endpoints": [{"workload": "foo/a-0", "tls_mode": "ISTIO_MUTUAL"}]}
            ],
        })
        .to_string()
    }

    #[test]
    fn modes_are_read_from_the_server_dump() {
        let body = dump();
        assert_eq!(
            DumpCheck::MtlsMode { port: None }.read(&body),
            Ok("PERMISSIVE".to_owned())
        );
        assert_eq!(
            DumpCheck::MtlsMode { port: Some(9080) }.read(&body),
            Ok("STRICT".to_owned())
        );
        assert!(
            DumpCheck::MtlsMode { port: Some(1) }
                .read(&body)
                .unwrap_err()
                .contains("port 1")
        );
        assert!(DumpCheck::MtlsMode { port: None }.read("<html>").is_err());
    }

    #[test]
    fn client_tls_is_the_endpoints_decided_mode() {
        let body = dump();
        let service = |endpoint: &str, port| DumpCheck::ClientTls {
            route: RouteKey::Service {
                service: "a.foo.svc.cluster.local".to_owned(),
                port,
                endpoint: endpoint.to_owned(),
            },
        };
        assert_eq!(service("foo/a-0", 80).read(&body), Ok("DISABLE".to_owned()));
        // A mode the sidecar refuses to originate is still the mode it decided.
        assert_eq!(service("foo/a-1", 80).read(&body), Ok("SIMPLE".to_owned()));
        assert!(service("foo/a-2", 80).read(&body).is_err());
        assert!(service("foo/a-0", 90).read(&body).is_err());
        let workload = DumpCheck::ClientTls {
            route: RouteKey::Workload {
                workload: "foo/a-0".to_owned(),
                port: 8080,
            },
        };
        assert_eq!(workload.read(&body), Ok("ISTIO_MUTUAL".to_owned()));
        let errored = DumpCheck::ClientTls {
            route: RouteKey::Service {
                service: "b.foo.svc.cluster.local".to_owned(),
                port: 81,
                endpoint: "foo/b-0".to_owned(),
            },
        };
        assert!(errored.read(&body).unwrap_err().contains("ambiguous"));
    }

    #[test]
    fn a_ports_mode_is_what_its_sidecar_accepts() {
        let answer = Observed::Response {
            status: 200,
            from_app: true,
            grpc_status: None,
            body: String::new(),
        };
        let denied = Observed::Response {
            status: 403,
            from_app: false,
            grpc_status: None,
            body: "RBAC: access denied".to_owned(),
        };
        let closed = Observed::Closed {
            detail: "reset".to_owned(),
        };
        assert_eq!(port_mode(&answer, &denied), Ok("PERMISSIVE"));
        assert_eq!(port_mode(&closed, &answer), Ok("STRICT"));
        assert_eq!(port_mode(&answer, &closed), Ok("DISABLE"));
        assert!(port_mode(&closed, &closed).is_err());
        let failed = Observed::ConnectFailed {
            detail: "refused".to_owned(),
        };
        assert!(port_mode(&failed, &answer).is_err());
    }
}
