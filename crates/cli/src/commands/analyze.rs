//! `meshward analyze -f FILE|DIR...`: Istio's analyzer codes and meshward's traps, offline,
//! against files. The analyzers are `meshward_policy::analyze`; this module loads and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use meshward_api::load_paths;
use meshward_policy::analyze::{Finding, Level, analyze};
use serde::Serialize;

use crate::output::{Format, paint, print_structured};

/// `meshward analyze` arguments.
#[derive(Debug, Args)]
pub(crate) struct AnalyzeArgs {
    /// Files or folders of YAML manifests.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Format,
}

#[derive(Serialize)]
struct Report<'a> {
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
}

impl<'a> From<&'a Finding> for FindingView<'a> {
    fn from(f: &'a Finding) -> Self {
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

pub(crate) fn run(args: &AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let report = load_paths(&args.files)?;
    let findings = analyze(&report);
    let count = |l: Level| findings.iter().filter(|f| f.level == l).count();
    let (errors, warnings, infos) = (
        count(Level::Error),
        count(Level::Warning),
        count(Level::Info),
    );
    match args.output {
        Format::Table => {
            if findings.is_empty() {
                println!("✔ No validation issues found when analyzing the files.");
            }
            for f in &findings {
                let line = f.to_string();
                let rest = line.strip_prefix(f.level.as_str()).unwrap_or(&line);
                println!("{}{rest}", colored_level(f.level));
                println!("    fix: {}", f.fix);
            }
            if !findings.is_empty() {
                println!("{errors} error(s), {warnings} warning(s), {infos} info(s)");
            }
        }
        _ => print_structured(
            &Report {
                errors,
                warnings,
                infos,
                findings: findings.iter().map(FindingView::from).collect(),
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
