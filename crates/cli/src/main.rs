//! `meshward`: validate, check and test Istio security configuration.

mod commands;
mod mesh;
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
    /// Find Istio's analyzer problems and silent policy traps in manifests (`-f`), or in the
    /// running mesh's configuration.
    Analyze(commands::analyze::AnalyzeArgs),
    /// Everything that decides traffic to one pod or workload: identity, services and client
    /// TLS, mTLS per port, AuthorizationPolicies in evaluation order, JWT, findings.
    Describe(commands::describe::DescribeArgs),
    /// Decide one connection or request and explain why, policy by policy and rule by rule, on
    /// manifests (`-f`) or on the running mesh's configuration.
    Check(commands::check::CheckArgs),
    /// Run PolicyTests (offline, with the decision engine).
    Test(commands::test::TestArgs),
    /// A local certificate authority: create it, issue workload certificates, inspect PEM files.
    Ca(commands::ca::CaArgs),
    /// Run the control plane: config store, proxy config push, CA service, JWKS, admin API.
    ControlPlane(commands::control_plane::ControlPlaneArgs),
    /// Add or change resources in the running control plane (all or nothing).
    Apply(commands::apply::ApplyArgs),
    /// Remove resources from the running control plane.
    Delete(commands::apply::DeleteArgs),
    /// Start a local mesh of pods from manifests (netns mode as root on Linux, loopback mode
    /// otherwise).
    Up(commands::up::UpArgs),
    /// Stop the local mesh and remove every namespace, rule, process and file it created.
    Down(commands::down::DownArgs),
    /// List the local mesh's pods (`get pods`), and the control plane's resources and proxies
    /// (`get ap`, `get proxies`, …).
    Get(commands::pods::GetArgs),
    /// Run a command inside a pod of the local mesh (its traffic goes through the pod's sidecar
    /// like the app's).
    Exec(commands::exec::ExecArgs),
    /// Start a one-off pod, run a command in it, remove it; returns the command's exit code.
    Run(commands::run::RunArgs),
    /// Show the output of a pod's app or proxy.
    Logs(commands::logs::LogsArgs),
    /// Every proxy's configuration sync (sent / ACKed / NACKed) and certificate expiry.
    ProxyStatus(commands::proxy_status::ProxyStatusArgs),
    /// What one sidecar of the local mesh enforces now: secret, listeners, clusters, policies.
    ProxyConfig(commands::proxy_config::ProxyConfigArgs),
    /// Who talked to whom in the local mesh: requests, connections, mTLS, allowed and denied.
    Edges(commands::edges::EdgesArgs),
    /// The built-in echo app of local pods.
    #[command(hide = true)]
    Echo(commands::internal::EchoArgs),
    /// Readiness probe run inside a pod.
    #[command(hide = true)]
    Probe(commands::internal::ProbeArgs),
    /// GET from the proxy admin port, run inside a pod.
    #[command(hide = true)]
    AdminGet(commands::internal::AdminGetArgs),
    /// The client of `test --live`, run inside a pod: probes on stdin, results on stdout.
    #[command(hide = true)]
    LiveClient(commands::live_client::LiveClientArgs),
}

fn main() -> ExitCode {
    output::end_quietly_on_broken_pipe();
    meshward_identity::crypto::install_default_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { files, output } => commands::validate::run(&files, output),
        Command::Analyze(args) => commands::analyze::run(&args),
        Command::Describe(args) => commands::describe::run(&args),
        Command::Check(args) => commands::check::run(&args),
        Command::Test(args) => commands::test::run(&args),
        Command::Ca(args) => commands::ca::run(&args),
        Command::ControlPlane(args) => commands::control_plane::run(&args),
        Command::Apply(args) => commands::apply::apply(&args),
        Command::Delete(args) => commands::apply::delete(&args),
        Command::Up(args) => commands::up::run(&args),
        Command::Down(args) => commands::down::run(&args),
        Command::Get(args) => commands::pods::run(&args),
        Command::Exec(args) => commands::exec::run(&args),
        Command::Run(args) => commands::run::run(&args),
        Command::Logs(args) => commands::logs::run(&args),
        Command::ProxyStatus(args) => commands::proxy_status::run(&args),
        Command::ProxyConfig(args) => commands::proxy_config::run(&args),
        Command::Edges(args) => commands::edges::run(&args),
        Command::Echo(args) => commands::internal::echo(&args),
        Command::Probe(args) => commands::internal::probe(&args),
        Command::AdminGet(args) => commands::internal::admin_get(&args),
        Command::LiveClient(args) => commands::live_client::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
