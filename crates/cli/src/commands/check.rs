//! `meshward check`: one decision with its full trace — the answer to "why was my request
//! denied?".
//!
//! With `-f` it decides on files; without, on the running control plane's configuration (see
//! [`super::config_source`]). Both run `meshward_policy`'s [`Mesh::evaluate`] on the same kind
//! of load report, so the live answer is the offline answer for the configuration in force. A
//! live answer also says whether the destination's sidecar has ACKed that configuration
//! ([`sidecar`]): when it has not, the proxy may still enforce something else.

mod sidecar;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use meshward_api::{LoadReport, Resource};
use meshward_policy::{Client, HttpRequest, Mesh, Target, Traffic};

use super::config_source::Configuration;
use super::control_api::ControlPlaneUrl;
use crate::commands::validate::print_diagnostic;
use crate::output::{Format, print_structured};
use view::LiveView;

/// `meshward check` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// Files or folders of manifests (Istio resources, Kubernetes workloads, PolicyTests whose
    /// workloads and services join the inventory); without, the running control plane's
    /// configuration is checked.
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    files: Vec<PathBuf>,
    /// The client workload, `NS/NAME` (a Deployment or one of its pods).
    #[arg(long, group = "client")]
    from: Option<String>,
    /// A client presenting a mesh certificate with this principal (`td/ns/NS/sa/SA`).
    #[arg(long, group = "client")]
    principal: Option<String>,
    /// A client outside the mesh.
    #[arg(long, group = "client")]
    plaintext: bool,
    /// The destination: `NS/WORKLOAD:PORT` (container port) or `svc/HOST:PORT` (service port).
    #[arg(long)]
    to: String,
    /// Client source IP.
    #[arg(long)]
    source_ip: Option<String>,
    /// HTTP method.
    #[arg(long)]
    method: Option<String>,
    /// HTTP path (raw, with query).
    #[arg(long)]
    path: Option<String>,
    /// HTTP host / :authority.
    #[arg(long)]
    host: Option<String>,
    /// Request header `NAME=VALUE` (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// TLS SNI.
    #[arg(long)]
    sni: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Format,
    #[command(flatten)]
    control_plane: ControlPlaneUrl,
}

fn parse_target(to: &str) -> anyhow::Result<Target> {
    let (left, port) = to.rsplit_once(':').ok_or_else(|| {
        anyhow::anyhow!("--to `{to}`: expected NS/WORKLOAD:PORT or svc/HOST:PORT")
    })?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("--to `{to}`: `{port}` is not a port"))?;
    Ok(match left.strip_prefix("svc/") {
        Some(host) => Target::Service {
            host: host.to_owned(),
            port,
        },
        None => Target::Workload {
            workload: left.to_owned(),
            port,
        },
    })
}

/// The workload an `NS/NAME` given to `--from` or `--to` means, and how it was resolved when it
/// is not a workload's own name. Files know Deployments and a running mesh knows their pods, so
/// a name valid for one is accepted by the other, as `describe pod` accepts it: a Deployment
/// stands for its first replica `<name>-<n>`, and a replica `<deployment>-<suffix>` for its
/// Deployment (replicas share labels and identity, so the decision is the same).
fn resolve_workload(mesh: &Mesh, report: &LoadReport, key: &str) -> (String, Option<String>) {
    let Some((namespace, name)) = key.split_once('/') else {
        return (key.to_owned(), None);
    };
    let inventory = &mesh.inventory;
    if inventory.workload(namespace, name).is_some() {
        return (key.to_owned(), None);
    }
    let in_namespace = || {
        inventory
            .workloads
            .iter()
            .filter(|w| w.namespace == namespace)
    };
    let first_replica = in_namespace()
        .filter_map(|w| {
            let n: u32 = w.name.strip_prefix(name)?.strip_prefix('-')?.parse().ok()?;
            Some((n, w))
        })
        .min_by_key(|(n, _)| *n);
    if let Some((_, w)) = first_replica {
        let resolved = w.key();
        let note = format!(
            "{key} stands for its pod {resolved} (a Deployment's replicas share labels and identity)"
        );
        return (resolved, Some(note));
    }
    let owner = in_namespace()
        .filter(|w| {
            report.resources.iter().any(|r| {
                matches!(&r.resource, Resource::Deployment(d)
                    if d.metadata.namespace() == namespace && d.metadata.name() == w.name)
            })
        })
        .filter(|w| {
            name.strip_prefix(w.name.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|suffix| !suffix.is_empty())
        })
        .max_by_key(|w| w.name.len());
    match owner {
        Some(w) => {
            let resolved = w.key();
            let note = format!("{key} stands for its Deployment {resolved}");
            (resolved, Some(note))
        }
        None => (key.to_owned(), None),
    }
}

pub(crate) fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = if args.files.is_empty() {
        Configuration::live(&args.control_plane, true)?
    } else {
        Configuration::files(&args.files)?
    };
    let report = &config.report;
    for d in &report.diagnostics {
        print_diagnostic(d);
    }
    if report.has_errors() {
        anyhow::bail!("the configuration has errors; nothing was checked");
    }
    // Workloads and services declared in PolicyTests join the inventory, so a test file can be
    // explored case by case.
    let mesh = meshward_policy::declared::mesh_from_report(report)?;
    let mut resolved = Vec::new();
    let mut resolve = |key: &str| {
        let (key, note) = resolve_workload(&mesh, report, key);
        resolved.extend(note);
        key
    };
    let client = if let Some(w) = &args.from {
        Client::Workload(resolve(w))
    } else if let Some(p) = &args.principal {
        Client::Principal {
            principal: p.clone(),
            trusted_ca: true,
        }
    } else if args.plaintext {
        Client::Plaintext
    } else {
        anyhow::bail!("give the client: --from NS/WORKLOAD, --principal P or --plaintext");
    };
    let target = match parse_target(&args.to)? {
        Target::Workload { workload, port } => Target::Workload {
            workload: resolve(&workload),
            port,
        },
        service => service,
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--header `{h}`: expected NAME=VALUE"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let request = (args.method.is_some()
        || args.path.is_some()
        || args.host.is_some()
        || !headers.is_empty())
    .then(|| HttpRequest {
        method: args.method.clone(),
        path: args.path.clone(),
        host: args.host.clone(),
        headers,
    });
    let traffic = Traffic {
        client,
        source_address: args
            .source_ip
            .as_deref()
            .map(str::parse)
            .transpose()
            .context("--source-ip is not an IP address")?,
        target,
        request,
        sni: args.sni.clone(),
        now_unix: i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?,
    };
    let outcome = mesh.evaluate(&traffic, true)?;
    let mut v = view::view(&outcome, &config, resolved);
    if let Some(version) = config.version() {
        v.live = Some(LiveView {
            version,
            sidecar: sidecar::sidecar_sync(&args.control_plane, &mesh, &outcome.destination)?,
        });
    }
    match args.output {
        Format::Table => view::print_table(&v),
        other => print_structured(&v, other)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests;
