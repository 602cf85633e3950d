//! IST0106 SchemaValidationError and IST0133 SchemaWarning.
//!
//! authorization.md §8.3: "IST0106 / IST0133 | SchemaValidationError / SchemaWarning | any §8.2
//! error / warning". The rules themselves (CRD schema §8.1, webhook §8.2, authentication.md §2.1,
//! §3.1, §5.1) are checked by `meshward_api` while loading; this analyzer reports what loading
//! found, under Istio's codes. A resource with an error is not loaded, so no other analyzer sees
//! it: that is what the API server does too.

use meshward_api::{Diagnostic, Severity};

use super::{Context, Finding, IST0106, IST0133, Level};

pub(super) fn analyze(cx: &Context<'_>, out: &mut Vec<Finding>) {
    out.extend(cx.report.diagnostics.iter().map(from_diagnostic));
}

fn from_diagnostic(d: &Diagnostic) -> Finding {
    let what = if d.field.is_root() {
        d.message.clone()
    } else {
        format!("{}: {}", d.field, d.message)
    };
    let (code, level, message, fix) = match d.severity {
        Severity::Error => (
            IST0106,
            Level::Error,
            format!("Schema validation error: {what}"),
            "Correct the field: Istio refuses this resource, so `kubectl apply` fails and nothing of it takes effect",
        ),
        Severity::Warning => (
            IST0133,
            Level::Warning,
            format!("Schema validation warning: {what}"),
            "Istio accepts this but warns that it is probably not what was meant; change the field or confirm the intent",
        ),
    };
    Finding {
        level,
        code: code.0,
        name: code.1,
        resource: d.resource.clone(),
        file: d.file.clone(),
        location: d.location,
        field: d.field.clone(),
        message,
        fix: fix.to_owned(),
        stages: Vec::new(),
        workloads: Vec::new(),
    }
}
