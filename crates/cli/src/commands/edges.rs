//! `meshward edges [-n NS] [-o table|json|yaml]`: who talked to whom in the local mesh. One
//! line per pair of workloads seen in traffic (source → destination): HTTP requests, TCP
//! connections, whether they were mutual TLS and with which identities, and how many were
//! allowed, denied by authorization, or rejected before it (plaintext into STRICT, an invalid
//! token).
//!
//! Built from every sidecar's `/stats/prometheus`, reading only the destination side
//! (`reporter="destination"`): the server's proxy is the one that authenticates the peer and
//! decides. Requests and connections come from Istio's `istio_requests_total` and
//! `istio_tcp_connections_opened_total`; the decisions from meshward's
//! `meshward_authz_edge_decisions_total`, which carries the same labels plus the decision,
//! because a 403 in Istio's metrics may be the application's own.
//!
//! With `-f FILE...` it reads saved scrapes instead of the running mesh: the Prometheus text
//! of sidecars' `/stats/prometheus` (from inside a pod:
//! `meshward exec POD -- curl -s localhost:15000/stats/prometheus > POD.prom`). Scrapes of
//! Istio's own sidecars work too; they carry no decision counter, so allowed and denied stay 0.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use serde::Serialize;

use super::proxy_status::{structured, table_text};
use crate::mesh::pod_admin;
use crate::mesh::state::alive;
use crate::output::{Format, table};

/// `meshward edges`.
#[derive(Debug, clap::Args)]
pub(crate) struct EdgesArgs {
    /// Only edges from or to workloads of this namespace (default: every namespace).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Saved scrapes of sidecars' `/stats/prometheus` to read instead of the running mesh.
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Format,
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// Metric name, e.g. `istio_requests_total`.
    pub(crate) name: String,
    /// Labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// Value.
    pub(crate) value: f64,
}

/// Traffic between two workloads, as the destination's proxy saw it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Edge {
    /// `namespace/workload` of the client, `unknown` when it is not a mesh workload.
    source: String,
    /// `namespace/workload` of the server.
    destination: String,
    /// HTTP and gRPC requests.
    requests: u64,
    /// TCP connections (on TCP ports).
    connections: u64,
    /// `mutual_tls`, `none`, or `mixed` when both were seen.
    security: String,
    /// Client identities seen (`unknown` over plaintext).
    source_principals: BTreeSet<String>,
    /// Server identities seen.
    destination_principals: BTreeSet<String>,
    /// Allowed by authorization (including AUDIT matches).
    allowed: u64,
    /// Denied by authorization.
    denied: u64,
    /// Refused before authorization: plaintext into STRICT, an invalid token.
    rejected: u64,
    /// Policies that denied, `namespace/name` (`none`: no ALLOW policy matched).
    denied_by: BTreeSet<String>,
    #[serde(skip)]
    securities: BTreeSet<String>,
}

/// `meshward edges`.
pub(crate) fn run(args: &EdgesArgs) -> anyhow::Result<ExitCode> {
    let pages = if args.files.is_empty() {
        live_pages()?
    } else {
        args.files
            .iter()
            .map(|f| saved_page(f))
            .collect::<anyhow::Result<_>>()?
    };
    let pages: Vec<&str> = pages.iter().map(String::as_str).collect();
    let edges = edges(&pages, args.namespace.as_deref());
    if edges.is_empty() && args.output == Format::Table {
        eprintln!("No traffic seen yet.");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&edges, args.output)?);
    Ok(ExitCode::SUCCESS)
}

/// A saved scrape; every line must be a comment or a sample, so a file of something else is
/// refused where it goes wrong instead of read as "no traffic".
fn saved_page(file: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.is_empty() && !line.starts_with('#') && parse_line(line).is_none() {
            anyhow::bail!(
                "{}:{}: expected a Prometheus text-format sample (`name{{label=\"value\",…}} value`), as a sidecar's /stats/prometheus answers",
                file.display(),
                i + 1
            );
        }
    }
    Ok(text)
}

/// Every running sidecar's scrape.
fn live_pages() -> anyhow::Result<Vec<String>> {
    let state = pod_admin::running_mesh()?;
    let mut pages = Vec::new();
    for pod in &state.pods {
        if !pod.plan.sidecar || !pod.proxy_pid.is_some_and(alive) {
            continue;
        }
        match pod_admin::fetch(pod, "/stats/prometheus") {
            Ok(text) => pages.push(text),
            // A pod may be going away while we read; the others still tell their story.
            Err(e) => eprintln!("warning: {e:#}"),
        }
    }
    Ok(pages)
}

/// The edges in the metrics pages of every proxy, sorted by source and destination; with
/// `namespace`, only those from or to it.
pub(crate) fn edges(pages: &[&str], namespace: Option<&str>) -> Vec<Edge> {
    let mut edges: BTreeMap<(String, String), Edge> = BTreeMap::new();
    for sample in pages.iter().flat_map(|page| parse(page)) {
        let label = |name: &str| sample.labels.get(name).map_or("unknown", String::as_str);
        if label("reporter") != "destination" {
            continue;
        }
        let family = sample.name.as_str();
        if !matches!(
            family,
            "istio_requests_total"
                | "istio_tcp_connections_opened_total"
                | "meshward_authz_edge_decisions_total"
        ) {
            continue;
        }
        let workload = |ns: &str, name: &str| match (label(ns), label(name)) {
            ("unknown", "unknown") => "unknown".to_owned(),
            (ns, name) => format!("{ns}/{name}"),
        };
        let source = workload("source_workload_namespace", "source_workload");
        let destination = workload("destination_workload_namespace", "destination_workload");
        let edge = edges
            .entry((source.clone(), destination.clone()))
            .or_insert_with(|| Edge {
                source,
                destination,
                ..Edge::default()
            });
        edge.source_principals
            .insert(label("source_principal").to_owned());
        edge.destination_principals
            .insert(label("destination_principal").to_owned());
        edge.securities
            .insert(label("connection_security_policy").to_owned());
        // Counters are integers; the text format may still write them as floats.
        let count = sample.value.max(0.0).round() as u64;
        match family {
            "istio_requests_total" => edge.requests += count,
            "istio_tcp_connections_opened_total" => edge.connections += count,
            _ => match label("decision") {
                "allow" | "audit" => edge.allowed += count,
                "deny" => {
                    edge.denied += count;
                    edge.denied_by.insert(label("policy").to_owned());
                }
                _ => edge.rejected += count,
            },
        }
    }
    edges
        .into_values()
        .filter(|e| {
            namespace.is_none_or(|ns| {
                let in_ns = |w: &str| w.split_once('/').is_some_and(|(n, _)| n == ns);
                in_ns(&e.source) || in_ns(&e.destination)
            })
        })
        .map(|mut e| {
            e.security = match e.securities.len() {
                1 => e.securities.iter().next().cloned().unwrap_or_default(),
                _ => "mixed".to_owned(),
            };
            e
        })
        .collect()
}

/// The edges in `format`.
pub(crate) fn render(edges: &[Edge], format: Format) -> anyhow::Result<String> {
    if format != Format::Table {
        return structured(&edges, format);
    }
    let mut t = table();
    t.set_header([
        "SOURCE",
        "DESTINATION",
        "REQUESTS",
        "CONNECTIONS",
        "SECURITY",
        "SOURCE PRINCIPAL",
        "DESTINATION PRINCIPAL",
        "ALLOWED",
        "DENIED",
        "REJECTED",
    ]);
    let join = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
    for e in edges {
        t.add_row([
            e.source.clone(),
            e.destination.clone(),
            e.requests.to_string(),
            e.connections.to_string(),
            match e.security.as_str() {
                "mutual_tls" => "mTLS".to_owned(),
                "none" => "plaintext".to_owned(),
                other => other.to_owned(),
            },
            join(&e.source_principals),
            join(&e.destination_principals),
            e.allowed.to_string(),
            e.denied.to_string(),
            e.rejected.to_string(),
        ]);
    }
    Ok(table_text(&mut t))
}

/// The samples of a Prometheus or OpenMetrics text page (comments and malformed lines are
/// skipped).
pub(crate) fn parse(page: &str) -> Vec<Sample> {
    page.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, rest) = parse_labels(line.get(open + 1..)?)?;
            (line.get(..open)?, labels, rest)
        }
        None => {
            let (name, rest) = line.split_once(char::is_whitespace)?;
            (name, BTreeMap::new(), rest)
        }
    };
    // The value, then an optional timestamp.
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `name="value",…}` → the labels and what follows the `}`. Values may hold `\\`, `\"` and
/// `\n` escapes.
fn parse_labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (name, rest) = text.split_once('=')?;
        let rest = rest.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()? {
                    (_, 'n') => value.push('\n'),
                    (_, c) => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.trim().to_owned(), value);
        text = rest.get(end + 1..)?;
    }
}

#[cfg(test)]
mod tests;
