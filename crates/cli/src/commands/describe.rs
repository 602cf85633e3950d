//! `meshward describe pod|workload NAME [-n NS] [-f FILE|DIR...] [-o table|json|yaml]`: every
//! thing that decides traffic to one workload — identity, services and the TLS clients
//! originate, the effective PeerAuthentication per port and where it comes from, the
//! AuthorizationPolicies in evaluation order, RequestAuthentications, and the analyzer's
//! findings about it.
//!
//! With `-f` the files are described offline; without, the running control plane describes its
//! own store (`GET /api/v1/describe`). Both run `meshward_policy::describe`, so they say the
//! same. This module fetches and prints; the text layout follows `istioctl x describe pod`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use meshward_api::load_paths;
use meshward_policy::describe::{
    AuthorizationView, Description, PeerAuthnView, PolicyView, Query, RequestAuthnView, Subject,
    describe,
};

use super::control_api::{ControlPlaneUrl, error_text};
use crate::commands::validate::print_diagnostic;
use crate::output::{Format, paint, print_structured, table, write_stdout};

/// `meshward describe`.
#[derive(Debug, Args)]
pub(crate) struct DescribeArgs {
    #[command(subcommand)]
    what: DescribeWhat,
}

#[derive(Debug, Subcommand)]
enum DescribeWhat {
    /// A pod: a Pod, a Deployment replica (`backend-0`, `backend-5c5944c58c-k8x2c`) or a
    /// Deployment (its first pod).
    #[command(alias = "po")]
    Pod(DescribeOptions),
    /// A workload by the name the policy inventory knows (Pod, Deployment, WorkloadEntry or
    /// PolicyTest workload).
    Workload(DescribeOptions),
}

/// Options of `describe pod` and `describe workload`.
#[derive(Debug, Args)]
pub(crate) struct DescribeOptions {
    /// The pod or workload name.
    name: String,
    /// Its namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Describe these files or folders offline instead of the running control plane.
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Format,
    #[command(flatten)]
    control_plane: ControlPlaneUrl,
}

pub(crate) fn run(args: &DescribeArgs) -> anyhow::Result<ExitCode> {
    let (subject, options) = match &args.what {
        DescribeWhat::Pod(o) => (Subject::Pod, o),
        DescribeWhat::Workload(o) => (Subject::Workload, o),
    };
    let query = Query {
        subject,
        namespace: options.namespace.clone(),
        name: options.name.clone(),
    };
    let description = if options.files.is_empty() {
        live(&options.control_plane, &query)?
    } else {
        offline(&options.files, &query)?
    };
    match options.output {
        Format::Table => write_stdout(&render(&description, subject))?,
        format => print_structured(&description, format)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn offline(files: &[PathBuf], query: &Query) -> anyhow::Result<Description> {
    let report = load_paths(files)?;
    for d in report.errors() {
        print_diagnostic(d);
    }
    if report.has_errors() {
        bail!("the files have errors; fix them first (`meshward validate -f …`)");
    }
    Ok(describe(&report, query)?)
}

fn live(control_plane: &ControlPlaneUrl, query: &Query) -> anyhow::Result<Description> {
    let path = format!(
        "/api/v1/describe?subject={}&namespace={}&name={}",
        query.subject,
        encode(&query.namespace),
        encode(&query.name)
    );
    let answer = control_plane.request("GET", &path, None)?;
    if !(200..300).contains(&answer.status) {
        bail!("{}", error_text(&answer));
    }
    Ok(serde_json::from_value(answer.body)?)
}

/// Query-string encoding for the characters a Kubernetes name cannot hold anyway.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const RULE: &str = "--------------------";

/// `println!` into the text being built.
macro_rules! out {
    ($out:expr, $($arg:tt)*) => {
        $out.line(format!($($arg)*))
    };
}

/// The text of a description, built whole and written at once: a reader that stops early
/// (`| head`) must not make the command fail.
#[derive(Default)]
struct Text(String);

impl Text {
    fn line(&mut self, line: impl AsRef<str>) {
        self.0.push_str(line.as_ref());
        self.0.push('\n');
    }

    /// A borderless table (`output::table`), columns two spaces apart, indented.
    fn table(&mut self, table: &mut comfy_table::Table, indent: &str) {
        for column in table.column_iter_mut() {
            column.set_padding((0, 2));
        }
        for line in table.lines() {
            self.line(format!("{indent}{}", line.trim_end()));
        }
    }
}

/// `STRICT` green, `PERMISSIVE` yellow, `DISABLE` red: how much plaintext a port accepts.
fn mode(text: &str) -> String {
    match text {
        "STRICT" | "ISTIO_MUTUAL" => paint(text, "32"),
        "PERMISSIVE" | "SIMPLE" | "MUTUAL" => paint(text, "33"),
        _ => paint(text, "31"),
    }
}

fn at(origin: Option<&String>) -> String {
    origin.map(|o| format!("  ({o})")).unwrap_or_default()
}

fn render(d: &Description, subject: Subject) -> String {
    let mut text = Text::default();
    let out = &mut text;
    write_workload(out, d, subject);
    out!(out, "{RULE}");
    write_services(out, d);
    out!(out, "{RULE}");
    write_peer_authn(out, &d.peer_authentication);
    out!(out, "{RULE}");
    write_authorization(out, &d.authorization);
    out!(out, "{RULE}");
    write_request_authn(out, &d.request_authentication);
    out!(out, "{RULE}");
    if d.findings.is_empty() {
        out!(out, "Findings: none");
    } else {
        out!(out, "Findings:");
        for f in &d.findings {
            let level = match f.level.as_str() {
                "Error" => paint(&f.level, "31"),
                "Warning" => paint(&f.level, "33"),
                _ => paint(&f.level, "36"),
            };
            let resource = f.resource.as_deref().unwrap_or("-");
            let origin = f.origin.as_deref().unwrap_or("-");
            out!(out, "   {level} [{}] ({resource} {origin})", f.code);
            out!(out, "      {}", f.message);
        }
    }
    text.0
}

fn write_workload(out: &mut Text, d: &Description, subject: Subject) {
    let w = &d.workload;
    let title = match subject {
        Subject::Pod => "Pod",
        Subject::Workload => "Workload",
    };
    out!(out, "{title}: {}", w.requested);
    if let Some(resolved) = &w.resolved {
        out!(out, "   Resolved: {resolved}");
    }
    let mut t = table();
    t.add_row(["Namespace:", &w.namespace]);
    t.add_row([
        "Declared by:",
        &format!("{} {}{}", w.kind, w.name, at(w.origin.as_ref())),
    ]);
    t.add_row(["Service account:", &w.service_account]);
    t.add_row(["Identity:", &w.identity]);
    let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    t.add_row(["Labels:", &labels.join(", ")]);
    let address = match &w.address_note {
        Some(note) => format!("{} ({note})", w.address),
        None => w.address.clone(),
    };
    t.add_row(["Address:", &address]);
    let sidecar = if w.sidecar { "yes" } else { "NO" };
    t.add_row(["Sidecar:", &format!("{sidecar} ({})", w.sidecar_reason)]);
    if w.gateway {
        t.add_row([
            "Gateway:",
            "yes (PeerAuthentication does not govern its listeners)",
        ]);
    }
    out.table(&mut t, "   ");
    if w.ports.is_empty() {
        out!(out, "   Pod Ports: none declared");
    } else {
        out!(out, "   Pod Ports:");
        let mut t = table();
        for p in &w.ports {
            let owner = match (&p.container, &p.name) {
                (Some(c), Some(n)) => format!("{c}, {n}"),
                (Some(c), None) => c.clone(),
                (None, Some(n)) => n.clone(),
                (None, None) => String::new(),
            };
            t.add_row([
                format!("{}/{}", p.port, p.protocol),
                owner,
                p.protocol_source.clone(),
            ]);
        }
        out.table(&mut t, "      ");
    }
    if !w.sidecar {
        out!(
            out,
            "WARNING: {} is not part of the mesh; no sidecar",
            w.requested
        );
    }
}

fn write_services(out: &mut Text, d: &Description) {
    if d.services.is_empty() {
        out!(out, "Warning: No Services select {}", d.workload.requested);
    }
    for s in &d.services {
        out!(
            out,
            "Service: {} ({}){}",
            s.name,
            s.host,
            at(s.origin.as_ref())
        );
        for p in &s.ports {
            let name = p
                .name
                .as_deref()
                .map(|n| format!("{n} "))
                .unwrap_or_default();
            let target = p
                .target_port
                .map_or_else(|| "an unresolved named port".to_owned(), |t| t.to_string());
            out!(
                out,
                "   Port: {name}{}/{} targets pod port {target}",
                p.port,
                p.protocol
            );
            for tls in &p.client_tls {
                out!(
                    out,
                    "      Client TLS from sidecars in {}: {} ({})",
                    tls.client_namespaces.join(", "),
                    mode(&tls.mode),
                    tls.source
                );
                if !tls.expected_identities.is_empty() {
                    out!(
                        out,
                        "         server identity checked against: {}",
                        tls.expected_identities.join(", ")
                    );
                }
            }
        }
    }
    for r in &d.destination_rules {
        out!(
            out,
            "DestinationRule: {}/{} for \"{}\"{}",
            r.namespace,
            r.name,
            r.host,
            at(r.origin.as_ref())
        );
        if !r.matching_subsets.is_empty() || !r.other_subsets.is_empty() {
            out!(out, "   Matching subsets: {}", r.matching_subsets.join(","));
            if !r.other_subsets.is_empty() {
                out!(
                    out,
                    "      (Non-matching subsets {})",
                    r.other_subsets.join(",")
                );
            }
            if r.matching_subsets.is_empty() {
                out!(
                    out,
                    "   WARNING POD DOES NOT MATCH ANY SUBSETS.  (Non matching subsets {})",
                    r.other_subsets.join(",")
                );
            }
        }
        match &r.tls_mode {
            Some(m) => out!(out, "   Traffic Policy TLS Mode: {}", mode(m)),
            None => out!(
                out,
                "   Traffic Policy TLS Mode: not set (auto mTLS decides)"
            ),
        }
        if !r.port_tls.is_empty() {
            out!(out, "   Port Level Settings:");
            for p in &r.port_tls {
                out!(out, "    {}:\n      TLS Mode: {}", p.port, mode(&p.mode));
            }
        }
    }
}

fn write_peer_authn(out: &mut Text, pa: &PeerAuthnView) {
    out!(out, "Effective PeerAuthentication:");
    if let Some(why) = &pa.not_enforced_reason {
        out!(out, "   Not enforced: {why}");
    }
    out!(out, "   Workload mTLS mode: {}", mode(&pa.mode));
    if !pa.ports.is_empty() {
        out!(out, "   Port Level mTLS mode:");
        let mut t = table();
        for p in &pa.ports {
            t.add_row([format!("{}:", p.port), p.mode.clone(), p.set_by.clone()]);
        }
        out.table(&mut t, "      ");
    }
    out!(out, "   Resolution (UNSET inherits the level above):");
    let mut t = table();
    for s in &pa.steps {
        t.add_row([
            s.level.clone(),
            s.policy.clone().unwrap_or_else(|| "-".to_owned()),
            s.written.clone(),
            format!("→ {}", s.result),
            s.effect.clone(),
            s.origin.clone().unwrap_or_default(),
        ]);
    }
    out.table(&mut t, "      ");
    let applied: Vec<String> = pa
        .steps
        .iter()
        .filter_map(|s| s.policy.as_deref())
        .map(|key| match key.split_once('/') {
            Some((ns, name)) => format!("{name}.{ns}"),
            None => key.to_owned(),
        })
        .collect();
    if applied.is_empty() {
        out!(out, "Applied PeerAuthentication: none");
    } else {
        out!(
            out,
            "Applied PeerAuthentication:\n   {}",
            applied.join(", ")
        );
    }
    for i in &pa.ignored {
        out!(
            out,
            "   Not applied: {}: {}{}",
            i.policy,
            i.reason,
            at(i.origin.as_ref())
        );
    }
}

fn write_policy(out: &mut Text, p: &PolicyView) {
    let action = match p.action.as_str() {
        "DENY" | "CUSTOM" => paint(&p.action, "31"),
        "ALLOW" => paint(&p.action, "32"),
        _ => paint(&p.action, "36"),
    };
    let provider = p
        .provider
        .as_deref()
        .map(|n| format!(" provider {n}"))
        .unwrap_or_default();
    out!(
        out,
        "   {action} {}{provider}: {}{}",
        p.policy,
        p.scope,
        at(p.origin.as_ref())
    );
    for r in &p.rules {
        out!(
            out,
            "      rule {}: {}{}",
            r.index,
            r.summary,
            at(r.origin.as_ref())
        );
    }
    for n in &p.notes {
        out!(out, "      note: {n}");
    }
}

fn write_authorization(out: &mut Text, a: &AuthorizationView) {
    if a.policies.is_empty() && a.dry_run.is_empty() {
        out!(out, "AuthorizationPolicies: none apply");
    } else {
        out!(
            out,
            "AuthorizationPolicies (evaluation order: CUSTOM, AUDIT, DENY, ALLOW):"
        );
        for p in &a.policies {
            write_policy(out, p);
        }
        if !a.dry_run.is_empty() {
            out!(out, "   Dry-run (shadow, never enforced):");
            for p in &a.dry_run {
                write_policy(out, p);
            }
        }
    }
    out!(out, "   Verdict:");
    for line in &a.verdict {
        out!(out, "      - {line}");
    }
    if !a.request_principal_rules.is_empty() {
        out!(
            out,
            "   Rules that need a verified JWT (requestPrincipals, request.auth.*):"
        );
        for line in &a.request_principal_rules {
            out!(out, "      - {line}");
        }
    }
}

fn write_request_authn(out: &mut Text, ra: &RequestAuthnView) {
    if ra.policies.is_empty() {
        out!(out, "RequestAuthentications: none apply");
    } else {
        out!(out, "RequestAuthentications:");
    }
    for p in &ra.policies {
        out!(out, "   {}: {}{}", p.policy, p.scope, at(p.origin.as_ref()));
        for r in &p.rules {
            out!(out, "      issuer {}: keys from {}", r.issuer, r.keys);
            let audiences = if r.audiences.is_empty() {
                "any (not checked)".to_owned()
            } else {
                r.audiences.join(", ")
            };
            out!(out, "         audiences: {audiences}");
            out!(
                out,
                "         token read from: {}",
                r.token_locations.join("; ")
            );
            if r.forward_original_token {
                out!(out, "         the token is forwarded to the application");
            }
            if let Some(h) = &r.output_payload_to_header {
                out!(out, "         payload copied to header {h}");
            }
            if let Some(e) = &r.error {
                out!(out, "         ERROR: {e}");
            }
        }
    }
    out!(out, "   Without a token: {}", ra.token_required);
}
