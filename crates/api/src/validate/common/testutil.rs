//! Test helpers: load a YAML text through the real loader and look for a diagnostic on the line
//! marked `# <-`.

use crate::diag::{Diagnostic, Severity};
use crate::load::load_text;

/// The marker that flags the line a diagnostic must point at.
pub(crate) const MARK: &str = "# <-";

/// Every diagnostic of loading `yaml`.
pub(crate) fn diagnostics(yaml: &str) -> Vec<Diagnostic> {
    load_text(yaml, "test.yaml", None).diagnostics
}

/// The 1-based line carrying [`MARK`].
fn marked_line(yaml: &str) -> usize {
    let found = yaml.lines().position(|l| l.contains(MARK));
    assert!(found.is_some(), "test YAML has no `{MARK}` marker:\n{yaml}");
    found.map_or(0, |i| i + 1)
}

fn render(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_found(yaml: &str, severity: Severity, needle: &str) {
    let line = marked_line(yaml);
    let diags = diagnostics(yaml);
    let hit = diags.iter().any(|d| {
        d.severity == severity
            && d.message.contains(needle)
            && d.location.map(|l| l.line) == Some(line)
    });
    assert!(
        hit,
        "expected a {severity:?} containing `{needle}` on line {line}; got:\n{}\nin:\n{yaml}",
        render(&diags)
    );
}

/// Asserts an error containing `needle` is reported on the marked line.
pub(crate) fn assert_error(yaml: &str, needle: &str) {
    assert_found(yaml, Severity::Error, needle);
}

/// Asserts a warning containing `needle` is reported on the marked line, and no error.
pub(crate) fn assert_warning(yaml: &str, needle: &str) {
    assert_found(yaml, Severity::Warning, needle);
    let diags = diagnostics(yaml);
    assert!(
        !diags.iter().any(Diagnostic::is_error),
        "expected no error; got:\n{}",
        render(&diags)
    );
}

/// Asserts loading `yaml` reports nothing at all.
pub(crate) fn assert_clean(yaml: &str) {
    let diags = diagnostics(yaml);
    assert!(
        diags.is_empty(),
        "expected no diagnostics; got:\n{}\nin:\n{yaml}",
        render(&diags)
    );
}

/// Asserts loading `yaml` reports no error (warnings allowed) and nothing containing `needle`.
pub(crate) fn assert_no_error(yaml: &str, needle: &str) {
    let diags = diagnostics(yaml);
    assert!(
        !diags
            .iter()
            .any(|d| d.is_error() || d.message.contains(needle)),
        "expected no error and nothing about `{needle}`; got:\n{}\nin:\n{yaml}",
        render(&diags)
    );
}
