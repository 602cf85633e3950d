//! `meshward live-client` (hidden): what `meshward test --live` runs inside a pod's network
//! namespace. It reads a JSON array of probes on stdin, makes each connection from there (so a
//! sidecar's capture applies, or the pod's source address), and prints a JSON array of results.
//! One process per client pod and document keeps the cost per case at one connection.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;

use crate::policytest::live::client;
use crate::policytest::live::wire::Probe;

/// `meshward live-client`.
#[derive(Debug, clap::Args)]
pub(crate) struct LiveClientArgs {}

/// `meshward live-client`.
pub(crate) fn run(_args: &LiveClientArgs) -> anyhow::Result<ExitCode> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the probes from stdin")?;
    let probes: Vec<Probe> = serde_json::from_str(&input).context("the probes are not valid")?;
    let results = client::run_batch(&probes)?;
    println!("{}", serde_json::to_string(&results)?);
    Ok(ExitCode::SUCCESS)
}
