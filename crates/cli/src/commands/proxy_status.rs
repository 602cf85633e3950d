//! `meshward proxy-status [-n NS] [-o table|json|yaml]`: every proxy the control plane serves,
//! like `istioctl proxy-status`: connected or not, the configuration version sent and ACKed
//! (SYNCED, STALE, NACKED, WAITING), when it last ACKed, its last NACK, and when the workload
//! certificate it holds expires.
//!
//! Read from the control plane's admin API (`GET /api/v1/proxies`). A proxy that reconnected
//! has several streams there; the newest per workload and pod address is the proxy's state.
//! The certificate is the one the proxy presented on its stream, or a renewal the control
//! plane's CA issued to it since (`meshward-control`'s `push::certs`). With `-f FILE` it reads
//! a saved answer of that endpoint instead (a bug report, or a mesh out of reach).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::control_api::ControlPlaneUrl;
use crate::output::{Format, table};

/// `meshward proxy-status`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProxyStatusArgs {
    /// Only proxies of this namespace.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// A saved answer of the control plane's `GET /api/v1/proxies` to read instead of asking it.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Format,
    #[command(flatten)]
    control_plane: ControlPlaneUrl,
}

/// One stream as `GET /api/v1/proxies` lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stream {
    id: u64,
    namespace: String,
    workload: String,
    identity: String,
    #[serde(default)]
    pod_address: String,
    #[serde(default)]
    remote_address: Option<String>,
    connected: bool,
    #[serde(default)]
    version_sent: Option<u64>,
    #[serde(default)]
    acked_version: Option<u64>,
    #[serde(default)]
    last_ack_at: Option<Timestamp>,
    #[serde(default)]
    last_nack: Option<Nack>,
    #[serde(default)]
    waiting: Option<String>,
    #[serde(default)]
    certificate: Option<Certificate>,
}

/// A refused snapshot.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Nack {
    version: u64,
    error: String,
    at: Timestamp,
}

/// The certificate a proxy holds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Certificate {
    serial: String,
    not_before: Timestamp,
    not_after: Timestamp,
    origin: String,
}

/// Whether the proxy enforces what the control plane last sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum SyncStatus {
    /// The last version sent was ACKed.
    Synced,
    /// The last version sent was NACKed: the proxy keeps its previous configuration.
    Nacked,
    /// The proxy has not answered the last version yet.
    Stale,
    /// Nothing could be sent yet (the workload is not in the configuration).
    Waiting,
}

impl SyncStatus {
    fn of(sent: Option<u64>, acked: Option<u64>, nacked: Option<u64>) -> Self {
        match sent {
            None => SyncStatus::Waiting,
            Some(v) if acked == Some(v) => SyncStatus::Synced,
            Some(v) if nacked == Some(v) => SyncStatus::Nacked,
            Some(_) => SyncStatus::Stale,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Synced => "SYNCED",
            SyncStatus::Nacked => "NACKED",
            SyncStatus::Stale => "STALE",
            SyncStatus::Waiting => "WAITING",
        }
    }
}

/// One proxy as shown.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProxyView {
    namespace: String,
    workload: String,
    pod_address: String,
    identity: String,
    /// `CONNECTED` or `DISCONNECTED`.
    status: &'static str,
    config: SyncStatus,
    version_sent: Option<u64>,
    version_acked: Option<u64>,
    last_ack_at: Option<Timestamp>,
    last_nack: Option<Nack>,
    waiting: Option<String>,
    certificate: Option<Certificate>,
}

/// `meshward proxy-status`.
pub(crate) fn run(args: &ProxyStatusArgs) -> anyhow::Result<ExitCode> {
    let views = match &args.file {
        Some(file) => {
            let body = super::saved::read_json(
                file,
                "the JSON the control plane answers on /api/v1/proxies",
            )?;
            views(&body, args.namespace.as_deref()).with_context(|| file.display().to_string())?
        }
        None => {
            let body = args.control_plane.get("/api/v1/proxies")?;
            views(&body, args.namespace.as_deref())?
        }
    };
    if views.is_empty() && args.output == Format::Table {
        eprintln!("No proxies found.");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&views, args.output, Timestamp::now())?);
    Ok(ExitCode::SUCCESS)
}

/// The proxies of an `/api/v1/proxies` answer: the newest stream of each workload and pod
/// address, sorted by namespace and workload.
pub(crate) fn views(
    body: &serde_json::Value,
    namespace: Option<&str>,
) -> anyhow::Result<Vec<ProxyView>> {
    let streams: Vec<Stream> = serde_json::from_value(body["proxies"].clone())
        .context("the control plane's proxy list has an unexpected shape")?;
    let mut newest: BTreeMap<(String, String, String), Stream> = BTreeMap::new();
    for stream in streams {
        if namespace.is_some_and(|ns| ns != stream.namespace) {
            continue;
        }
        // The Hello's pod address identifies a pod; an older proxy may not send it, then the
        // stream's remote address does.
        let address = if stream.pod_address.is_empty() {
            stream
                .remote_address
                .as_deref()
                .and_then(|a| a.rsplit_once(':'))
                .map(|(host, _)| host.to_owned())
                .unwrap_or_default()
        } else {
            stream.pod_address.clone()
        };
        let key = (stream.namespace.clone(), stream.workload.clone(), address);
        match newest.get(&key) {
            Some(kept) if kept.id > stream.id => {}
            _ => {
                newest.insert(key, stream);
            }
        }
    }
    Ok(newest
        .into_iter()
        .map(|((_, _, address), s)| ProxyView {
            config: SyncStatus::of(
                s.version_sent,
                s.acked_version,
                s.last_nack.as_ref().map(|n| n.version),
            ),
            status: if s.connected {
                "CONNECTED"
            } else {
                "DISCONNECTED"
            },
            namespace: s.namespace,
            workload: s.workload,
            pod_address: address,
            identity: s.identity,
            version_sent: s.version_sent,
            version_acked: s.acked_version,
            last_ack_at: s.last_ack_at,
            last_nack: s.last_nack,
            waiting: s.waiting,
            certificate: s.certificate,
        })
        .collect())
}

/// The proxies in `format`; ages and time left are counted from `now`.
pub(crate) fn render(
    views: &[ProxyView],
    format: Format,
    now: Timestamp,
) -> anyhow::Result<String> {
    if format != Format::Table {
        return structured(&views, format);
    }
    let mut t = table();
    t.set_header([
        "NAME",
        "ADDRESS",
        "STATUS",
        "CONFIG",
        "SENT",
        "ACKED",
        "LAST ACK",
        "LAST NACK",
        "CERT EXPIRES",
    ]);
    let version = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    for v in views {
        t.add_row([
            format!("{}/{}", v.namespace, v.workload),
            v.pod_address.clone(),
            v.status.to_owned(),
            v.config.as_str().to_owned(),
            version(v.version_sent),
            version(v.version_acked),
            v.last_ack_at
                .map_or_else(|| "-".to_owned(), |at| format!("{} ago", age(now, at))),
            v.last_nack
                .as_ref()
                .map_or_else(|| "-".to_owned(), |n| format!("version {}", n.version)),
            v.certificate.as_ref().map_or_else(
                || "unknown".to_owned(),
                |c| {
                    if c.not_after <= now {
                        format!("{} (expired)", c.not_after)
                    } else {
                        format!("{} (in {})", c.not_after, age(c.not_after, now))
                    }
                },
            ),
        ]);
    }
    let mut out = table_text(&mut t);
    for v in views {
        if let Some(nack) = &v.last_nack {
            out.push_str(&format!(
                "\n{}/{} refused version {}:\n{}\n",
                v.namespace, v.workload, nack.version, nack.error
            ));
        }
        if let Some(why) = &v.waiting {
            out.push_str(&format!(
                "\n{}/{} is waiting: {why}\n",
                v.namespace, v.workload
            ));
        }
    }
    Ok(out)
}

/// `later - earlier` as `3d 4h`, `4h 5m`, `5m 6s` or `6s`.
pub(crate) fn age(later: Timestamp, earlier: Timestamp) -> String {
    let secs = later.as_second().saturating_sub(earlier.as_second()).max(0);
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// JSON or YAML text of `value`, ending with a newline.
pub(crate) fn structured<T: Serialize>(value: &T, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => format!("{}\n", serde_json::to_string_pretty(value)?),
        Format::Yaml | Format::Table => serde_saphyr::to_string(value)?,
    })
}

/// A table as `output::print_table` prints it: two spaces between columns, no trailing
/// padding.
pub(crate) fn table_text(table: &mut comfy_table::Table) -> String {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
        .lines()
        .map(|line| format!("{}\n", line.trim_end()))
        .collect()
}

#[cfg(test)]
mod tests;
