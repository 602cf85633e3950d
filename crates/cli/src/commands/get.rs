//! `meshward get KIND [-n NS] [-o table|json|yaml]`: what the running control plane holds
//! (`authorizationpolicies`/`ap`, `peerauthentications`/`pa`, `requestauthentications`/`ra`,
//! `destinationrules`/`dr`, `services`/`svc`, `namespaces`/`ns`, `serviceaccounts`/`sa`,
//! `deployments`, `workloadentries`/`we`, `workloads`) and the proxies connected to it
//! (`proxies`: the version each was sent, ACKed or NACKed). `get pods` lists the local mesh's
//! running pods (`commands::pods`).
//!
//! `-o json|yaml` prints a Kubernetes `List` of the resources as they were applied.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::control_api::ControlPlaneUrl;
use crate::output::{Format, print_structured, print_table, table};

/// Options of every `get` kind served by the control plane.
#[derive(Debug, clap::Args)]
pub(crate) struct GetOptions {
    /// Only this namespace (default: every namespace).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Format,
    #[command(flatten)]
    control_plane: ControlPlaneUrl,
}

/// The kinds `get` reads from the control plane.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum GetResource {
    /// AuthorizationPolicies.
    #[command(visible_alias = "ap", alias = "authorizationpolicy")]
    Authorizationpolicies(GetOptions),
    /// PeerAuthentications.
    #[command(visible_alias = "pa", alias = "peerauthentication")]
    Peerauthentications(GetOptions),
    /// RequestAuthentications.
    #[command(visible_alias = "ra", alias = "requestauthentication")]
    Requestauthentications(GetOptions),
    /// DestinationRules.
    #[command(visible_alias = "dr", alias = "destinationrule")]
    Destinationrules(GetOptions),
    /// Services.
    #[command(visible_alias = "svc", alias = "service")]
    Services(GetOptions),
    /// Namespaces.
    #[command(visible_alias = "ns", alias = "namespace")]
    Namespaces(GetOptions),
    /// ServiceAccounts.
    #[command(visible_alias = "sa", alias = "serviceaccount")]
    Serviceaccounts(GetOptions),
    /// Deployments.
    #[command(visible_alias = "deploy", alias = "deployment")]
    Deployments(GetOptions),
    /// WorkloadEntries.
    #[command(visible_alias = "we", alias = "workloadentry")]
    Workloadentries(GetOptions),
    /// Every workload of the mesh as the control plane sees it (Pods, Deployments,
    /// WorkloadEntries, declared workloads): identity, address, labels.
    #[command(alias = "workload")]
    Workloads(GetOptions),
    /// Proxies connected to the control plane: versions sent and ACKed, last NACK.
    #[command(alias = "proxy")]
    Proxies(GetOptions),
}

pub(crate) fn run(what: &GetResource) -> anyhow::Result<ExitCode> {
    let (kind, options) = match what {
        GetResource::Authorizationpolicies(o) => ("AuthorizationPolicy", o),
        GetResource::Peerauthentications(o) => ("PeerAuthentication", o),
        GetResource::Requestauthentications(o) => ("RequestAuthentication", o),
        GetResource::Destinationrules(o) => ("DestinationRule", o),
        GetResource::Services(o) => ("Service", o),
        GetResource::Namespaces(o) => ("Namespace", o),
        GetResource::Serviceaccounts(o) => ("ServiceAccount", o),
        GetResource::Deployments(o) => ("Deployment", o),
        GetResource::Workloadentries(o) => ("WorkloadEntry", o),
        GetResource::Workloads(o) => return workloads(o),
        GetResource::Proxies(o) => return proxies(o),
    };
    resources(kind, options)
}

fn query(options: &GetOptions) -> String {
    options
        .namespace
        .as_deref()
        .map(|ns| format!("&namespace={}", encode(ns)))
        .unwrap_or_default()
}

/// Query-string encoding for the few characters a namespace or kind could hold.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn resources(kind: &str, options: &GetOptions) -> anyhow::Result<ExitCode> {
    let body = options
        .control_plane
        .get(&format!("/api/v1/resources?kind={kind}{}", query(options)))?;
    let items: Vec<Value> = body["items"].as_array().cloned().unwrap_or_default();
    match options.output {
        Format::Table => {
            if items.is_empty() {
                eprintln!("No resources found.");
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = table();
            t.set_header(["NAMESPACE", "NAME", "SOURCE"]);
            for item in &items {
                t.add_row([
                    item["namespace"].as_str().unwrap_or_default().to_owned(),
                    item["name"].as_str().unwrap_or_default().to_owned(),
                    format!(
                        "{}:{}",
                        item["origin"].as_str().unwrap_or_default(),
                        item["line"]
                    ),
                ]);
            }
            print_table(&mut t, "");
        }
        format => {
            let objects: Vec<Value> = items.iter().map(|i| i["object"].clone()).collect();
            print_structured(
                &json!({"apiVersion": "v1", "kind": "List", "items": objects}),
                format,
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn workloads(options: &GetOptions) -> anyhow::Result<ExitCode> {
    let body = options.control_plane.get(&format!(
        "/api/v1/workloads?{}",
        query(options).trim_start_matches('&')
    ))?;
    let items: Vec<Value> = body["workloads"].as_array().cloned().unwrap_or_default();
    match options.output {
        Format::Table => {
            if items.is_empty() {
                eprintln!("No workloads found.");
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = table();
            t.set_header(["NAMESPACE", "NAME", "IDENTITY", "ADDRESS", "SIDECAR"]);
            for w in &items {
                t.add_row([
                    w["namespace"].as_str().unwrap_or_default().to_owned(),
                    w["name"].as_str().unwrap_or_default().to_owned(),
                    w["identity"].as_str().unwrap_or_default().to_owned(),
                    w["address"].as_str().unwrap_or_default().to_owned(),
                    w["sidecar"].to_string(),
                ]);
            }
            print_table(&mut t, "");
        }
        format => print_structured(&items, format)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// SYNCED when the last version sent was ACKed, NACKED when it was refused, STALE while the
/// proxy has not answered, WAITING when nothing could be sent yet.
fn sync_status(p: &Value) -> &'static str {
    let sent = p["versionSent"].as_u64();
    if sent.is_none() {
        return "WAITING";
    }
    if p["ackedVersion"].as_u64() == sent {
        "SYNCED"
    } else if p["lastNack"]["version"].as_u64() == sent {
        "NACKED"
    } else {
        "STALE"
    }
}

fn proxies(options: &GetOptions) -> anyhow::Result<ExitCode> {
    let body = options.control_plane.get("/api/v1/proxies")?;
    let items: Vec<Value> = body["proxies"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            options
                .namespace
                .as_deref()
                .is_none_or(|ns| p["namespace"].as_str() == Some(ns))
        })
        .collect();
    match options.output {
        Format::Table => {
            if items.is_empty() {
                eprintln!("No proxies found.");
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = table();
            t.set_header([
                "NAMESPACE",
                "WORKLOAD",
                "CONNECTED",
                "SENT",
                "ACKED",
                "STATUS",
                "IDENTITY",
            ]);
            let version = |v: &Value| v.as_u64().map_or_else(|| "-".to_owned(), |v| v.to_string());
            for p in &items {
                t.add_row([
                    p["namespace"].as_str().unwrap_or_default().to_owned(),
                    p["workload"].as_str().unwrap_or_default().to_owned(),
                    p["connected"].to_string(),
                    version(&p["versionSent"]),
                    version(&p["ackedVersion"]),
                    sync_status(p).to_owned(),
                    p["identity"].as_str().unwrap_or_default().to_owned(),
                ]);
            }
            print_table(&mut t, "");
            for p in &items {
                if let Some(error) = p["lastNack"]["error"].as_str() {
                    println!(
                        "\n{}/{} refused version {}:\n{error}",
                        p["namespace"].as_str().unwrap_or_default(),
                        p["workload"].as_str().unwrap_or_default(),
                        p["lastNack"]["version"]
                    );
                }
            }
        }
        format => print_structured(&items, format)?,
    }
    Ok(ExitCode::SUCCESS)
}
