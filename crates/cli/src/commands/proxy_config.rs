//! `meshward proxy-config secret|listeners|clusters|policies POD [-n NS] [-o table|json|yaml]`:
//! what one sidecar of the local mesh enforces now, read from its own admin endpoint
//! (`/certs`, `/config_dump`) inside the pod's network namespace, like `istioctl proxy-config`
//! reads Envoy's.
//!
//! - `secret`: the workload certificate chain (identity, serial, validity, issuer) and the
//!   trust bundle's roots with their SHA-256 fingerprints;
//! - `listeners`: inbound listeners with each port's protocol and PeerAuthentication mode, and
//!   the outbound capture and HTTP proxy listeners;
//! - `clusters`: every service port the sidecar can route to, each endpoint with the TLS the
//!   sidecar originates towards it (ISTIO_MUTUAL or DISABLE) and the SNI;
//! - `policies`: the AuthorizationPolicies, PeerAuthentications and RequestAuthentications
//!   compiled into the proxy, with the configuration version in force.
//!
//! With `-f FILE` it reads a saved answer instead of a live pod, as `istioctl proxy-config -f`
//! reads a saved Envoy config dump: `/certs` for `secret`, `/config_dump` for the others (from
//! inside a pod: `meshward exec POD -- curl -s localhost:15000/config_dump > dump.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::proxy_status::{age, structured, table_text};
use crate::mesh::pod_admin;
use crate::output::{Format, table};

/// What to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Section {
    /// The workload certificate chain and the trust bundle.
    #[value(alias = "secrets")]
    Secret,
    /// Inbound and outbound listeners.
    #[value(alias = "listener")]
    Listeners,
    /// Outbound destinations and the TLS originated towards each endpoint.
    #[value(alias = "cluster")]
    Clusters,
    /// Authorization, PeerAuthentication and RequestAuthentication in force.
    #[value(alias = "policy")]
    Policies,
}

/// `meshward proxy-config`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProxyConfigArgs {
    /// What to show.
    #[arg(value_enum)]
    section: Section,
    /// The pod: its name, or `deploy/NAME` for a replica of a Deployment. With `-f`, only the
    /// name shown (default: the workload a config dump names, else the file's name).
    #[arg(required_unless_present = "file")]
    pod: Option<String>,
    /// Its namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// A saved admin answer to read instead of the pod's proxy: the JSON of `/certs` for
    /// `secret`, of `/config_dump` for the other sections.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Format,
}

/// `meshward proxy-config`.
pub(crate) fn run(args: &ProxyConfigArgs) -> anyhow::Result<ExitCode> {
    if let Some(file) = &args.file {
        let answer = saved_answer(file, args.section)?;
        // A config dump names its workload; a `/certs` answer does not.
        let name = match (&args.pod, answer.get("workload").and_then(|w| w.as_str())) {
            (Some(pod), _) => format!("{}/{pod}", args.namespace),
            (None, Some(workload)) => workload.to_owned(),
            (None, None) => file.display().to_string(),
        };
        print!(
            "{}",
            render(args.section, &name, &answer, args.output, Timestamp::now())
                .with_context(|| format!("{}", file.display()))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(pod) = &args.pod else {
        anyhow::bail!("name a pod, or give a saved admin answer with -f FILE");
    };
    let state = pod_admin::running_mesh()?;
    let pod = pod_admin::sidecar_pod(&state, &args.namespace, pod)?;
    let path = match args.section {
        Section::Secret => "/certs",
        _ => "/config_dump",
    };
    let answer = pod_admin::fetch_json(pod, path)?;
    print!(
        "{}",
        render(
            args.section,
            &pod.plan.key(),
            &answer,
            args.output,
            Timestamp::now()
        )?
    );
    Ok(ExitCode::SUCCESS)
}

/// The JSON saved in `file`: the admin answer `section` is read from.
fn saved_answer(file: &Path, section: Section) -> anyhow::Result<serde_json::Value> {
    let expected = match section {
        Section::Secret => "the JSON a sidecar's admin endpoint answers on /certs",
        _ => "the JSON a sidecar's admin endpoint answers on /config_dump",
    };
    super::saved::read_json(file, expected)
}

/// `section` of pod `pod` from its admin answer (`/certs` for `secret`, else `/config_dump`).
pub(crate) fn render(
    section: Section,
    pod: &str,
    answer: &serde_json::Value,
    format: Format,
    now: Timestamp,
) -> anyhow::Result<String> {
    match section {
        Section::Secret => {
            let certs: CertsDump = serde_json::from_value(answer.clone())
                .context("the proxy's /certs answer has an unexpected shape")?;
            secret(pod, &certs, format, now)
        }
        _ => {
            let dump: ConfigDump = serde_json::from_value(answer.clone())
                .context("the proxy's /config_dump answer has an unexpected shape")?;
            match section {
                Section::Listeners => listeners(pod, &dump, format),
                Section::Clusters => clusters(pod, &dump, format),
                _ => policies(pod, &dump, format),
            }
        }
    }
}

// === /certs ===

/// The proxy's `/certs` answer.
#[derive(Debug, Deserialize)]
struct CertsDump {
    default: Option<WorkloadCert>,
    /// Always present in a `/certs` answer; requiring it refuses a config dump given by mistake.
    #[serde(rename = "ROOTCA")]
    roots: Vec<CertInfo>,
}

#[derive(Debug, Deserialize)]
struct WorkloadCert {
    identity: String,
    leaf: CertInfo,
    /// Absent from proxies that list only the leaf.
    #[serde(default)]
    chain: Vec<CertInfo>,
}

/// `meshward-identity`'s `CertInfo` as serialized.
#[derive(Debug, Clone, Deserialize)]
struct CertInfo {
    serial: String,
    #[serde(default)]
    subject: String,
    issuer: String,
    not_before: Timestamp,
    not_after: Timestamp,
    #[serde(default)]
    uri_sans: Vec<String>,
    #[serde(default)]
    is_ca: bool,
    sha256: String,
}

/// One certificate as shown.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretCert {
    resource: &'static str,
    kind: &'static str,
    subject: String,
    identity: Option<String>,
    serial: String,
    issuer: String,
    not_before: Timestamp,
    not_after: Timestamp,
    sha256: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretView<'a> {
    pod: &'a str,
    identity: Option<&'a str>,
    certificates: Vec<SecretCert>,
}

fn secret(pod: &str, certs: &CertsDump, format: Format, now: Timestamp) -> anyhow::Result<String> {
    let shown = |resource, kind, c: &CertInfo| SecretCert {
        resource,
        kind,
        subject: c.subject.clone(),
        identity: c.uri_sans.first().cloned(),
        serial: c.serial.clone(),
        issuer: c.issuer.clone(),
        not_before: c.not_before,
        not_after: c.not_after,
        sha256: c.sha256.clone(),
    };
    let mut certificates = Vec::new();
    if let Some(cert) = &certs.default {
        let chain = if cert.chain.is_empty() {
            std::slice::from_ref(&cert.leaf)
        } else {
            cert.chain.as_slice()
        };
        for (i, c) in chain.iter().enumerate() {
            let kind = match (i, c.is_ca && c.subject == c.issuer) {
                (0, _) => "leaf",
                (_, true) => "root",
                _ => "intermediate",
            };
            certificates.push(shown("default", kind, c));
        }
    }
    for root in &certs.roots {
        certificates.push(shown("ROOTCA", "root", root));
    }
    let identity = certs.default.as_ref().map(|c| c.identity.as_str());
    if format != Format::Table {
        return structured(
            &SecretView {
                pod,
                identity,
                certificates,
            },
            format,
        );
    }
    let mut t = table();
    t.set_header([
        "RESOURCE NAME",
        "TYPE",
        "VALID",
        "SERIAL NUMBER",
        "NOT BEFORE",
        "NOT AFTER",
        "EXPIRES IN",
        "ISSUER",
    ]);
    for c in &certificates {
        let valid = c.not_before <= now && now <= c.not_after;
        t.add_row([
            c.resource.to_owned(),
            c.kind.to_owned(),
            valid.to_string(),
            c.serial.clone(),
            c.not_before.to_string(),
            c.not_after.to_string(),
            if c.not_after > now {
                age(c.not_after, now)
            } else {
                "expired".to_owned()
            },
            or_dash(&c.issuer),
        ]);
    }
    let mut out = format!(
        "pod {pod}: {}\n",
        identity.unwrap_or("no workload certificate")
    );
    out.push_str(&table_text(&mut t));
    for root in certificates.iter().filter(|c| c.resource == "ROOTCA") {
        out.push_str(&format!(
            "root {} SHA-256 fingerprint: {}\n",
            or_dash(&root.subject),
            root.sha256
        ));
    }
    Ok(out)
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

// === /config_dump ===

/// The parts of the proxy's `/config_dump` answer shown here.
#[derive(Debug, Deserialize)]
struct ConfigDump {
    version: u64,
    #[serde(default)]
    control_plane: Option<ControlPlane>,
    workload: String,
    identity: String,
    #[serde(default)]
    listeners: Listeners,
    #[serde(default)]
    clusters: Vec<Cluster>,
    #[serde(default)]
    peer_authentication: Option<PeerAuthentication>,
    #[serde(default)]
    authorization_policies: Vec<AuthorizationPolicy>,
    #[serde(default)]
    request_authentications: Option<RequestAuthentications>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct ControlPlane {
    connected: bool,
    version: Option<u64>,
    #[serde(default)]
    last_nack: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Listeners {
    #[serde(default)]
    inbound: Vec<InboundListener>,
    #[serde(default)]
    outbound: Vec<OutboundListener>,
}

#[derive(Debug, Deserialize)]
struct InboundListener {
    name: String,
    address: String,
    #[serde(default)]
    ports: Vec<ListenerPort>,
    #[serde(default)]
    default_mtls: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ListenerPort {
    port: u16,
    protocol: String,
    mtls: String,
}

#[derive(Debug, Deserialize)]
struct OutboundListener {
    name: String,
    address: String,
    mode: String,
}

#[derive(Debug, Deserialize)]
struct Cluster {
    name: String,
    service: String,
    port: u16,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    endpoints: Vec<ClusterEndpoint>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ClusterEndpoint {
    workload: String,
    address: String,
    tls: String,
    sni: Option<String>,
    #[serde(default)]
    expected_identities: Vec<String>,
    #[serde(default)]
    tls_source: String,
    #[serde(default)]
    refused: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct PeerAuthentication {
    mode: String,
    #[serde(default)]
    ports: BTreeMap<String, String>,
    #[serde(default)]
    applied: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all(serialize = "camelCase"))]
struct AuthorizationPolicy {
    name: String,
    action: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    rules: usize,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct RequestAuthentications {
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    providers: Vec<JwtProvider>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all(serialize = "camelCase"))]
struct JwtProvider {
    issuer: String,
    #[serde(default)]
    has_keys: bool,
    #[serde(default)]
    awaiting_keys: bool,
    #[serde(default)]
    jwks_error: Option<String>,
}

/// One listener port as shown.
#[derive(Debug, Serialize)]
struct ListenerRow {
    name: String,
    direction: &'static str,
    address: String,
    /// A port number, `*` for ports the workload does not declare, `-` for outbound.
    port: String,
    protocol: String,
    mtls: String,
}

#[derive(Debug, Serialize)]
struct SectionView<'a, T: Serialize> {
    pod: &'a str,
    workload: &'a str,
    identity: &'a str,
    #[serde(flatten)]
    body: T,
}

fn listeners(pod: &str, dump: &ConfigDump, format: Format) -> anyhow::Result<String> {
    let mut rows = Vec::new();
    for l in &dump.listeners.inbound {
        for p in &l.ports {
            rows.push(ListenerRow {
                name: l.name.clone(),
                direction: "inbound",
                address: l.address.clone(),
                port: p.port.to_string(),
                protocol: p.protocol.clone(),
                mtls: p.mtls.clone(),
            });
        }
        if let Some(mode) = &l.default_mtls {
            rows.push(ListenerRow {
                name: l.name.clone(),
                direction: "inbound",
                address: l.address.clone(),
                port: "*".to_owned(),
                protocol: "-".to_owned(),
                mtls: mode.clone(),
            });
        }
    }
    for l in &dump.listeners.outbound {
        rows.push(ListenerRow {
            name: l.name.clone(),
            direction: "outbound",
            address: l.address.clone(),
            port: "-".to_owned(),
            protocol: l.mode.clone(),
            mtls: "-".to_owned(),
        });
    }
    if format != Format::Table {
        #[derive(Serialize)]
        struct Body {
            listeners: Vec<ListenerRow>,
        }
        return structured(&view(pod, dump, Body { listeners: rows }), format);
    }
    let mut t = table();
    t.set_header(["NAME", "DIRECTION", "ADDRESS", "PORT", "PROTOCOL", "MTLS"]);
    for r in rows {
        t.add_row([
            r.name,
            r.direction.to_owned(),
            r.address,
            r.port,
            r.protocol,
            r.mtls,
        ]);
    }
    Ok(table_text(&mut t))
}

fn view<'a, T: Serialize>(pod: &'a str, dump: &'a ConfigDump, body: T) -> SectionView<'a, T> {
    SectionView {
        pod,
        workload: &dump.workload,
        identity: &dump.identity,
        body,
    }
}

/// One endpoint of one cluster as shown.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterRow {
    cluster: String,
    service: String,
    port: u16,
    protocol: String,
    endpoint: Option<String>,
    workload: Option<String>,
    tls: Option<String>,
    sni: Option<String>,
    expected_identities: Vec<String>,
    tls_source: Option<String>,
    error: Option<String>,
}

fn clusters(pod: &str, dump: &ConfigDump, format: Format) -> anyhow::Result<String> {
    let mut rows = Vec::new();
    for c in &dump.clusters {
        let base = || ClusterRow {
            cluster: c.name.clone(),
            service: c.service.clone(),
            port: c.port,
            protocol: c.protocol.clone().unwrap_or_else(|| "-".to_owned()),
            endpoint: None,
            workload: None,
            tls: None,
            sni: None,
            expected_identities: Vec::new(),
            tls_source: None,
            error: c.error.clone(),
        };
        if c.endpoints.is_empty() {
            rows.push(base());
        }
        for e in &c.endpoints {
            rows.push(ClusterRow {
                endpoint: Some(e.address.clone()),
                workload: Some(e.workload.clone()),
                tls: Some(e.tls.clone()),
                sni: e.sni.clone(),
                expected_identities: e.expected_identities.clone(),
                tls_source: Some(e.tls_source.clone()),
                error: e.refused.clone().or_else(|| c.error.clone()),
                ..base()
            });
        }
    }
    if format != Format::Table {
        #[derive(Serialize)]
        struct Body {
            clusters: Vec<ClusterRow>,
        }
        return structured(&view(pod, dump, Body { clusters: rows }), format);
    }
    let mut t = table();
    t.set_header([
        "SERVICE", "PROTOCOL", "ENDPOINT", "WORKLOAD", "TLS", "SNI", "WHY",
    ]);
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    for r in &rows {
        t.add_row([
            format!("{}:{}", r.service, r.port),
            r.protocol.clone(),
            r.endpoint
                .clone()
                .unwrap_or_else(|| "(no endpoints)".to_owned()),
            dash(&r.workload),
            dash(&r.tls),
            dash(&r.sni),
            r.error
                .clone()
                .or_else(|| r.tls_source.clone())
                .unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    Ok(table_text(&mut t))
}

/// The configuration version in force.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Versions {
    /// The proxy's own state version (grows with every configuration it accepted).
    proxy: u64,
    /// The control plane's snapshot version in force, in control-plane mode.
    control_plane: Option<u64>,
    /// Whether the config stream is up.
    control_plane_connected: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PoliciesBody<'a> {
    version: Versions,
    authorization_policies: &'a [AuthorizationPolicy],
    peer_authentication: Option<&'a PeerAuthentication>,
    request_authentications: Option<&'a RequestAuthentications>,
}

fn policies(pod: &str, dump: &ConfigDump, format: Format) -> anyhow::Result<String> {
    let versions = Versions {
        proxy: dump.version,
        control_plane: dump.control_plane.as_ref().and_then(|c| c.version),
        control_plane_connected: dump.control_plane.as_ref().map(|c| c.connected),
    };
    if format != Format::Table {
        let body = PoliciesBody {
            version: versions,
            authorization_policies: &dump.authorization_policies,
            peer_authentication: dump.peer_authentication.as_ref(),
            request_authentications: dump.request_authentications.as_ref(),
        };
        return structured(&view(pod, dump, body), format);
    }
    let mut out = match versions.control_plane {
        Some(v) => format!(
            "pod {pod}: control plane version {v} in force (proxy state {})\n",
            versions.proxy
        ),
        None => format!("pod {pod}: configuration version {}\n", versions.proxy),
    };
    let mut t = table();
    t.set_header(["KIND", "NAME", "DETAIL"]);
    for p in &dump.authorization_policies {
        let mut detail = format!(
            "{}, {} rule{}",
            p.action,
            p.rules,
            if p.rules == 1 { "" } else { "s" }
        );
        if let Some(provider) = &p.provider {
            detail.push_str(&format!(", provider {provider}"));
        }
        if p.dry_run {
            detail.push_str(", dry run");
        }
        t.add_row(["AuthorizationPolicy".to_owned(), p.name.clone(), detail]);
    }
    if let Some(pa) = &dump.peer_authentication {
        for name in &pa.applied {
            t.add_row([
                "PeerAuthentication".to_owned(),
                name.clone(),
                "applies".to_owned(),
            ]);
        }
        let mut detail = format!("mode {}", pa.mode);
        for (port, mode) in &pa.ports {
            detail.push_str(&format!(", port {port}: {mode}"));
        }
        t.add_row([
            "PeerAuthentication".to_owned(),
            "(effective)".to_owned(),
            detail,
        ]);
    }
    if let Some(ra) = &dump.request_authentications {
        for name in &ra.policies {
            t.add_row([
                "RequestAuthentication".to_owned(),
                name.clone(),
                "applies".to_owned(),
            ]);
        }
        for p in &ra.providers {
            let detail = match (&p.jwks_error, p.has_keys, p.awaiting_keys) {
                (Some(e), _, _) => format!("JWKS error: {e}"),
                (None, true, _) => "keys loaded".to_owned(),
                (None, false, true) => "awaiting keys".to_owned(),
                (None, false, false) => "no keys".to_owned(),
            };
            t.add_row(["JWT issuer".to_owned(), p.issuer.clone(), detail]);
        }
    }
    out.push_str(&table_text(&mut t));
    if let Some(nack) = dump
        .control_plane
        .as_ref()
        .and_then(|c| c.last_nack.as_ref())
    {
        out.push_str(&format!(
            "last refused snapshot: version {}: {}\n",
            nack["version"],
            nack["error"].as_str().unwrap_or_default()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
