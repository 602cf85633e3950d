//! `meshward check`: one decision with its full trace — the answer to "why was my request
//! denied?".

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use meshward_api::load_paths;
use meshward_policy::authz::{PolicyTrace, RuleOutcome};
use meshward_policy::flow::Transport;
use meshward_policy::{Client, HttpRequest, Outcome, Target, Traffic, Verdict};
use serde::Serialize;

use crate::commands::validate::print_diagnostic;
use crate::output::{Format, paint, print_structured};

/// `meshward check` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// Files or folders of manifests (Istio resources, Kubernetes workloads, PolicyTests whose
    /// workloads and services join the inventory).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// The client workload, `NS/NAME`.
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

#[derive(Serialize)]
struct CheckView {
    verdict: &'static str,
    reason: String,
    destination: String,
    port: u16,
    protocol: &'static str,
    transport: String,
    client_tls: Option<String>,
    server_mtls: Option<&'static str>,
    jwt: Option<String>,
    deciding_policy: Option<String>,
    response: Option<String>,
    policies: Vec<PolicyView>,
}

#[derive(Serialize)]
struct PolicyView {
    policy: String,
    action: &'static str,
    dry_run: bool,
    rules: Vec<RuleView>,
    notes: Vec<String>,
}

#[derive(Serialize)]
struct RuleView {
    rule: usize,
    result: &'static str,
    detail: Option<String>,
}

fn view(o: &Outcome) -> CheckView {
    CheckView {
        verdict: o.verdict.as_str(),
        reason: o.reason.clone(),
        destination: o.destination.clone(),
        port: o.port,
        protocol: if o.is_http { "HTTP" } else { "TCP" },
        transport: match &o.transport {
            Transport::Mtls { peer } => format!("mTLS from {peer}"),
            Transport::OtherTls(m) => format!("{} TLS", m.as_str()),
            Transport::Plaintext => "plaintext".to_owned(),
        },
        client_tls: o
            .client_tls
            .as_ref()
            .map(|t| format!("{} ({:?})", t.mode.as_str(), t.source)),
        server_mtls: o.server_mtls.map(|m| m.as_str()),
        jwt: o.jwt.as_ref().map(|j| j.summary.clone()),
        deciding_policy: o.authz.as_ref().and_then(|a| match &a.reason {
            meshward_policy::authz::AuthzReason::DeniedBy(r)
            | meshward_policy::authz::AuthzReason::AllowedBy(r) => Some(r.to_string()),
            meshward_policy::authz::AuthzReason::CustomDenied { rule, .. } => {
                Some(rule.to_string())
            }
            _ => None,
        }),
        response: response_line(o),
        policies: o.trace.iter().map(policy_view).collect(),
    }
}

fn response_line(o: &Outcome) -> Option<String> {
    Some(match o.verdict {
        Verdict::Allow => return None,
        Verdict::Deny if o.is_http => "HTTP 403 `RBAC: access denied`".to_owned(),
        Verdict::Deny => "TCP connection closed without data".to_owned(),
        Verdict::Reject if o.client_tls.is_some() => {
            "the client sidecar answers 503 (upstream connect error or disconnect/reset before headers)"
                .to_owned()
        }
        Verdict::Reject => "connection reset by peer (curl exit 56)".to_owned(),
        Verdict::Unauthenticated => format!(
            "HTTP {} `{}`",
            o.jwt.as_ref().and_then(|j| j.status).unwrap_or(401),
            o.jwt
                .as_ref()
                .map(|j| j.summary.as_str())
                .unwrap_or_default()
        ),
        Verdict::BadRequest => "HTTP 400".to_owned(),
    })
}

fn policy_view(p: &PolicyTrace) -> PolicyView {
    PolicyView {
        policy: p.policy.to_string(),
        action: p.action.as_str(),
        dry_run: p.dry_run,
        rules: p
            .rules
            .iter()
            .map(|r| match &r.outcome {
                RuleOutcome::Matched => RuleView {
                    rule: r.index,
                    result: "matched",
                    detail: None,
                },
                RuleOutcome::NotMatched(why) => RuleView {
                    rule: r.index,
                    result: "no match",
                    detail: Some(why.clone()),
                },
                RuleOutcome::Skipped(why) => RuleView {
                    rule: r.index,
                    result: "skipped",
                    detail: Some(why.clone()),
                },
            })
            .collect(),
        notes: p.notes.clone(),
    }
}

fn print_table(v: &CheckView) {
    let verdict = match v.verdict {
        "ALLOW" => paint(v.verdict, "32"),
        _ => paint(v.verdict, "31"),
    };
    println!("{verdict}: {}", v.reason);
    println!(
        "  destination:  {} port {} ({})",
        v.destination, v.port, v.protocol
    );
    println!("  transport:    {}", v.transport);
    if let Some(t) = &v.client_tls {
        println!("  client TLS:   {t}");
    }
    if let Some(m) = v.server_mtls {
        println!("  server mTLS:  {m}");
    }
    if let Some(j) = &v.jwt {
        println!("  JWT:          {j}");
    }
    if let Some(r) = &v.response {
        println!("  response:     {r}");
    }
    if v.policies.is_empty() {
        println!("  policies:     none evaluated");
        return;
    }
    println!("  policies (evaluation order):");
    for p in &v.policies {
        let dry = if p.dry_run { " (dry-run)" } else { "" };
        println!("    {} {}{dry}", p.action, p.policy);
        if p.rules.is_empty() {
            println!("      (no rules: matches nothing)");
        }
        for r in &p.rules {
            match &r.detail {
                Some(d) => println!("      rule {}: {}: {d}", r.rule, r.result),
                None => println!("      rule {}: {}", r.rule, r.result),
            }
        }
        for n in &p.notes {
            println!("      note: {n}");
        }
    }
}

pub(crate) fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let report = load_paths(&args.files)?;
    for d in &report.diagnostics {
        print_diagnostic(d);
    }
    if report.has_errors() {
        anyhow::bail!("the configuration has errors; nothing was checked");
    }
    // Workloads and services declared in PolicyTests join the inventory, so a test file can be
    // explored case by case.
    let mesh = meshward_policy::declared::mesh_from_report(&report)?;
    let client = if let Some(w) = &args.from {
        Client::Workload(w.clone())
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
        target: parse_target(&args.to)?,
        request,
        sni: args.sni.clone(),
        now_unix: i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?,
    };
    let outcome = mesh.evaluate(&traffic, true)?;
    let v = view(&outcome);
    match args.output {
        Format::Table => print_table(&v),
        other => print_structured(&v, other)?,
    }
    Ok(ExitCode::SUCCESS)
}
