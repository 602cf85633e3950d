//! The local mesh runtime behind `meshward up`, `down`, `get pods`, `exec`, `run` and `logs`:
//! ordinary manifests become local pods, each a Linux network namespace with its own IP on a
//! bridge, service VIPs and names, and Istio's iptables capture around a `meshward-proxy`
//! sidecar (netns mode, root on Linux).
//!
//! One module per job: [`plan`] (manifests → pods, services, addresses), [`netns`] (namespaces,
//! veths, the bridge), [`control`] (the control plane process), [`capture`] (iptables rules), [`hosts`] (service names), [`config`] (the
//! proxies' generated configuration), [`supervisor`] (processes, readiness, stopping),
//! [`restart`] (restarting what exits, with back-off), [`mirror`] (the control plane's store,
//! kept for its restart), [`state`] (`~/.meshward/`), [`echo`] (the built-in app) and
//! [`runtime`] (bringing pods up and sweeping them away).
//!
//! `up` also runs the control plane ([`control`]): it watches the generated configuration,
//! serves the pods' sidecars their configuration and certificates over the bridge, and takes
//! `meshward apply|get|delete` on loopback. Not yet: loopback mode for non-root users.

pub(crate) mod capture;
pub(crate) mod config;
pub(crate) mod control;
pub(crate) mod echo;
pub(crate) mod hosts;
pub(crate) mod mirror;
pub(crate) mod netns;
pub(crate) mod plan;
pub(crate) mod pod_admin;
pub(crate) mod restart;
pub(crate) mod runtime;
pub(crate) mod state;
pub(crate) mod supervisor;
