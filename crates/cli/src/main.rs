//! `meshward`: validate, check and test Istio security configuration.

mod commands;
mod output;
mod policytest;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Format;

/// Istio's mesh security, rebuilt: validate, explain and test the policies you already write.
#[derive(Debug, Parser)]
#[command(name = "meshward", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and validate resources; errors name file, line, field and what was expected.
    Validate {
        /// Files or folders of YAML manifests.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Format,
    },
    /// Decide one connection or request and explain why, policy by policy and rule by rule.
    Check(commands::check::CheckArgs),
    /// Run PolicyTests (offline, with the decision engine).
    Test(commands::test::TestArgs),
    /// A local certificate authority: create it, issue workload certificates, inspect PEM files.
    Ca(commands::ca::CaArgs),
}

fn main() -> ExitCode {
    meshward_identity::crypto::install_default_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { files, output } => commands::validate::run(&files, output),
        Command::Check(args) => commands::check::run(&args),
        Command::Test(args) => commands::test::run(&args),
        Command::Ca(args) => commands::ca::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
