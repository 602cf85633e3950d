//! The local mesh runtime behind `meshward up`, `down`, `get pods`, `exec`, `run` and `logs`:
//! ordinary manifests become local pods, in one of two [`mode`]s:
//!
//! - netns mode (root on Linux): each pod a Linux network namespace with its own IP on a
//!   bridge, service VIPs and names, and Istio's iptables capture around a `meshward-proxy`
//!   sidecar;
//! - loopback mode (anyone, [`loopback`]): each pod its own 127.x address, its sidecar an
//!   explicit HTTP proxy that clients are pointed at, ports below 1024 served at port + 10000.
//!
//! One module per job: [`mode`] (which one, and why), [`plan`] (manifests → pods, services,
//! addresses), [`netns`] (namespaces, veths, the bridge), [`capture`] (iptables rules),
//! [`hosts`] (service names), [`loopback`] (loopback mode's addresses, ports and processes),
//! [`control`] (the control plane process), [`config`] (the proxies' generated configuration),
//! [`supervisor`] (processes, readiness, stopping), [`restart`] (restarting what exits, with
//! back-off), [`ledger`] (loopback mode's record of its processes, so `down` stops exactly
//! those), [`state`] (`~/.meshward/`), [`echo`] (the built-in app) and [`runtime`] (bringing
//! pods up and sweeping them away).
//!
//! `up` also runs the control plane ([`control`]): it watches the generated configuration,
//! serves the pods' sidecars their configuration and certificates (over the bridge, or on
//! 127.0.0.1 in loopback mode), and takes `meshward apply|get|delete` on loopback.

pub(crate) mod capture;
pub(crate) mod config;
pub(crate) mod control;
pub(crate) mod echo;
pub(crate) mod hosts;
pub(crate) mod ledger;
pub(crate) mod loopback;
pub(crate) mod mode;
pub(crate) mod netns;
pub(crate) mod plan;
pub(crate) mod pod_admin;
pub(crate) mod restart;
pub(crate) mod runtime;
pub(crate) mod state;
pub(crate) mod supervisor;
