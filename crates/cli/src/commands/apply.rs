//! `meshward apply -f FILE|DIR...` and `meshward delete -f FILE|DIR...`: change the running
//! control plane's configuration, as `kubectl apply|delete -f` changes a cluster's.
//!
//! Every file is sent in one request and the control plane takes all of it or none of it: an
//! invalid document refuses the whole change with `file:line:column` errors, and the
//! configuration in force does not change (exit 1).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::control_api::{ControlPlaneUrl, error_text};

/// `meshward apply`.
#[derive(Debug, clap::Args)]
pub(crate) struct ApplyArgs {
    /// Files or folders of YAML manifests (folders recursively).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    control_plane: ControlPlaneUrl,
}

/// `meshward delete`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeleteArgs {
    /// Files or folders naming the resources to delete (kind, namespace and name are read).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    control_plane: ControlPlaneUrl,
}

fn read_files(paths: &[PathBuf]) -> anyhow::Result<Value> {
    let mut files = Vec::new();
    for path in paths {
        for file in meshward_api::load::manifest_files(path)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            files.push(json!({ "name": file.display().to_string(), "text": text }));
        }
    }
    Ok(json!({ "files": files }))
}

/// Prints `kind ns/name action` lines, kubectl style.
fn print_changes(body: &Value) {
    for change in body["changes"].as_array().into_iter().flatten() {
        let kind = change["kind"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let ns = change["namespace"].as_str().unwrap_or_default();
        let name = change["name"].as_str().unwrap_or_default();
        let action = change["action"].as_str().unwrap_or_default();
        if ns.is_empty() {
            println!("{kind}/{name} {action}");
        } else {
            println!("{kind}/{name} -n {ns} {action}");
        }
    }
    for warning in body["warnings"].as_array().into_iter().flatten() {
        eprintln!("{}", warning.as_str().unwrap_or_default());
    }
    for skipped in body["skipped"].as_array().into_iter().flatten() {
        eprintln!(
            "skipped (kind not used by meshward): {}",
            skipped.as_str().unwrap_or_default()
        );
    }
}

fn send(url: &ControlPlaneUrl, path: &str, body: &Value) -> anyhow::Result<ExitCode> {
    let answer = url.request("POST", path, Some(body))?;
    if answer.status == 422 {
        eprintln!("{}", error_text(&answer));
        eprintln!("refused: nothing was changed");
        return Ok(ExitCode::from(1));
    }
    if !(200..300).contains(&answer.status) {
        anyhow::bail!("{}", error_text(&answer));
    }
    print_changes(&answer.body);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn apply(args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let body = read_files(&args.files)?;
    send(&args.control_plane, "/api/v1/apply", &body)
}

pub(crate) fn delete(args: &DeleteArgs) -> anyhow::Result<ExitCode> {
    let body = read_files(&args.files)?;
    send(&args.control_plane, "/api/v1/delete", &body)
}
