//! `meshward analyze [-f FILE|DIR...]`: Istio's analyzer codes and meshward's traps. With `-f`,
//! offline against files; without, against the running control plane's store: every resource
//! it holds, Istio's and the inventory (pods, services, namespaces) alike, so references and
//! selectors are judged against the pods that really run.
//!
//! The analyzers are `meshward_policy::analyze`, on the same load report either way (see
//! [`super::config_source`]); this module fetches and prints. A finding names the file and line
//! the control plane loaded the resource from, and says when `meshward apply` wrote it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use meshward_policy::analyze::{Finding, Level, analyze};
use serde::Serialize;

use super::config_source::{APPLIED, Configuration};
use super::control_api::ControlPlaneUrl;
use crate::output::{Format, paint, print_structured};

/// `meshward analyze` arguments.
#[derive(Debug, Args)]
pub(crate) struct AnalyzeArgs {
    /// Files or folders of YAML manifests; without, the running control plane's configuration
    /// is analyzed.
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Format,
    #[command(flatten)]
    control_plane: ControlPlaneUrl,
}

#[derive(Serialize)]
struct Report<'a> {
    /// The control plane's store version analyzed (live only).
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    errors: usize,
    warnings: usize,
    infos: usize,
    findings: Vec<FindingView<'a>>,
}

#[derive(Serialize)]
struct FindingView<'a> {
    level: &'static str,
    code: &'static str,
    name: &'static str,
    resource: Option<String>,
    file: &'a str,
    line: Option<usize>,
    column: Option<usize>,
    field: &'a str,
    message: &'a str,
    fix: &'a str,
    /// The PolicyTests (tutorial stages) whose configuration shows the problem, when the files
    /// as a whole do not.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stages: &'a [String],
    /// Live only: who wrote the resource, `watched` (a file the control plane loads) or
    /// `applied` (`meshward apply`).
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
}

impl<'a> FindingView<'a> {
    fn new(f: &'a Finding, config: &Configuration) -> Self {
        let source = config.live.as_ref().map(|_| {
            if f.resource.as_ref().is_some_and(|id| config.applied(id)) {
                "applied"
            } else {
                "watched"
            }
        });
        FindingView {
            level: f.level.as_str(),
            code: f.code,
            name: f.name,
            resource: f.resource.as_ref().map(ToString::to_string),
            file: &f.file,
            line: f.location.map(|l| l.line),
            column: f.location.map(|l| l.column),
            field: f.field.as_str(),
            message: &f.message,
            fix: &f.fix,
            stages: &f.stages,
            source,
        }
    }
}

fn colored_level(level: Level) -> String {
    let code = match level {
        Level::Error => "31",
        Level::Warning => "33",
        Level::Info => "36",
    };
    paint(level.as_str(), code)
}

/// `istioctl analyze`'s line, `Level [CODE] (Kind ns/name file:line) message`, with
/// `via meshward apply` after the location of an applied resource.
fn finding_line(f: &Finding, applied: bool) -> String {
    let mut place = String::new();
    if let Some(id) = &f.resource {
        place.push_str(&format!("{id} "));
    }
    place.push_str(&f.file);
    if let Some(location) = f.location {
        place.push_str(&format!(":{}", location.line));
    }
    if applied {
        place.push_str(&format!(" via {APPLIED}"));
    }
    place.push_str(&f.stages_text());
    format!(
        "{} [{}] ({place}) {}",
        colored_level(f.level),
        f.code,
        f.message
    )
}

pub(crate) fn run(args: &AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let config = if args.files.is_empty() {
        Configuration::live(&args.control_plane, false)?
    } else {
        Configuration::files(&args.files)?
    };
    let findings = analyze(&config.report);
    let count = |l: Level| findings.iter().filter(|f| f.level == l).count();
    let (errors, warnings, infos) = (
        count(Level::Error),
        count(Level::Warning),
        count(Level::Info),
    );
    match args.output {
        Format::Table => {
            if findings.is_empty() {
                match config.version() {
                    Some(v) => println!(
                        "✔ No validation issues found when analyzing the running mesh (control plane version {v})."
                    ),
                    None => println!("✔ No validation issues found when analyzing the files."),
                }
            }
            for f in &findings {
                let applied = f.resource.as_ref().is_some_and(|id| config.applied(id));
                println!("{}", finding_line(f, applied));
                println!("    fix: {}", f.fix);
            }
            if !findings.is_empty() {
                println!("{errors} error(s), {warnings} warning(s), {infos} info(s)");
            }
        }
        _ => print_structured(
            &Report {
                version: config.version(),
                errors,
                warnings,
                infos,
                findings: findings
                    .iter()
                    .map(|f| FindingView::new(f, &config))
                    .collect(),
            },
            args.output,
        )?,
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
