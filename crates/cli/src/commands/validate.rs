//! `meshward validate -f FILE|DIR...`.

use std::path::PathBuf;
use std::process::ExitCode;

use meshward_api::{Diagnostic, Severity, load_paths};
use serde::Serialize;

use crate::output::{Format, paint, print_structured};

#[derive(Serialize)]
struct Report<'a> {
    valid: bool,
    resources: Vec<String>,
    policy_tests: Vec<String>,
    skipped: Vec<String>,
    diagnostics: Vec<DiagnosticView<'a>>,
}

/// A diagnostic as JSON/YAML.
#[derive(Serialize)]
pub(crate) struct DiagnosticView<'a> {
    severity: &'static str,
    file: &'a str,
    line: Option<usize>,
    column: Option<usize>,
    resource: Option<String>,
    field: &'a str,
    message: &'a str,
}

impl<'a> From<&'a Diagnostic> for DiagnosticView<'a> {
    fn from(d: &'a Diagnostic) -> Self {
        DiagnosticView {
            severity: match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            },
            file: &d.file,
            line: d.location.map(|l| l.line),
            column: d.location.map(|l| l.column),
            resource: d.resource.as_ref().map(ToString::to_string),
            field: d.field.as_str(),
            message: &d.message,
        }
    }
}

/// Prints a diagnostic for people.
pub(crate) fn print_diagnostic(d: &Diagnostic) {
    let text = d.to_string();
    let text = match d.severity {
        Severity::Error => text.replacen(": error: ", &format!(": {}: ", paint("error", "31")), 1),
        Severity::Warning => {
            text.replacen(": warning: ", &format!(": {}: ", paint("warning", "33")), 1)
        }
    };
    eprintln!("{text}");
}

pub(crate) fn run(files: &[PathBuf], format: Format) -> anyhow::Result<ExitCode> {
    let report = load_paths(files)?;
    let mut diagnostics: Vec<&Diagnostic> = report.diagnostics.iter().collect();
    for t in &report.tests {
        diagnostics.extend(t.diagnostics.iter().filter(|d| {
            // Errors a PolicyTest expects are the point of that test, not a problem.
            !t.test
                .spec
                .expect_errors
                .iter()
                .flatten()
                .any(|e| e.matches(d))
        }));
    }
    // A manifest included by several PolicyTests is reported once.
    let mut seen = std::collections::HashSet::new();
    diagnostics.retain(|d| seen.insert(d.to_string()));
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    match format {
        Format::Table => {
            for d in &diagnostics {
                print_diagnostic(d);
            }
            for s in &report.skipped {
                let at = s.location.map(|l| format!(":{l}")).unwrap_or_default();
                println!(
                    "{}{at}: skipped {} {} ({}): not a kind meshward uses",
                    s.file, s.kind, s.name, s.api_version
                );
            }
            let warnings = diagnostics.len() - errors;
            println!(
                "{} resources, {} policy tests, {} skipped: {} error(s), {} warning(s)",
                report.resources.len(),
                report.tests.len(),
                report.skipped.len(),
                errors,
                warnings
            );
        }
        _ => print_structured(
            &Report {
                valid: errors == 0,
                resources: report
                    .resources
                    .iter()
                    .map(|r| r.resource.id().to_string())
                    .collect(),
                policy_tests: report
                    .tests
                    .iter()
                    .map(|t| t.test.metadata.name().to_owned())
                    .collect(),
                skipped: report
                    .skipped
                    .iter()
                    .map(|s| format!("{} {} ({})", s.kind, s.name, s.file))
                    .collect(),
                diagnostics: diagnostics
                    .iter()
                    .map(|d| DiagnosticView::from(*d))
                    .collect(),
            },
            format,
        )?,
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
