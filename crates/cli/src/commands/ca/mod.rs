//! `meshward ca`: a local certificate authority in Istio's `cacerts` layout (authentication.md
//! §1.7) and the workload certificates it issues (§1.4).
//!
//! `init` creates or installs the CA, `issue` writes a workload's `key.pem`, `cert-chain.pem` and
//! `root-cert.pem`, `inspect` explains any PEM certificate file the way
//! `istioctl proxy-config secret` does.

mod duration;
mod init;
mod inspect;
mod issue;

use std::path::PathBuf;
use std::process::ExitCode;

use meshward_identity::{CaDir, CertInfo, KeyAlgorithm, TrustDomain};
use serde::Serialize;

use crate::output::{Format, print_structured};

/// `meshward ca` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CaCommand {
    /// Create a self-signed root CA, or install an organisation's intermediate (`--plugin-certs`).
    Init(init::InitArgs),
    /// Issue a workload certificate: writes key.pem, cert-chain.pem and root-cert.pem.
    Issue(issue::IssueArgs),
    /// Show what a PEM certificate file holds: each certificate, its identity and validity, and
    /// whether the chain links up.
    Inspect(inspect::InspectArgs),
}

pub(crate) fn run(args: &CaArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        CaCommand::Init(a) => init::run(a),
        CaCommand::Issue(a) => issue::run(a),
        CaCommand::Inspect(a) => inspect::run(a),
    }
}

/// Where the CA lives and which trust domain it issues in; shared by `init` and `issue`.
#[derive(Debug, clap::Args)]
struct CaLocation {
    /// The CA directory (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem) [default:
    /// ~/.meshward/ca].
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// The trust domain identities are issued in.
    #[arg(long, value_name = "TD", default_value = meshward_api::spiffe::DEFAULT_TRUST_DOMAIN)]
    trust_domain: TrustDomain,
}

impl CaLocation {
    fn ca_dir(&self) -> anyhow::Result<CaDir> {
        if let Some(dir) = &self.ca_dir {
            return Ok(CaDir::new(dir));
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "cannot find the default CA directory ~/.meshward/ca: $HOME is not set; pass --ca-dir DIR"
                )
            })?;
        Ok(CaDir::new(PathBuf::from(home).join(".meshward").join("ca")))
    }
}

/// `--key-algorithm` values, named as on Istio's side (§1.4: ECDSA P-256 for ztunnel, RSA 2048
/// for sidecars).
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
enum KeyAlg {
    /// ECDSA P-256 with SHA-256.
    #[default]
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    /// RSA 2048 with SHA-256.
    #[value(name = "rsa-2048")]
    Rsa2048,
}

impl From<KeyAlg> for KeyAlgorithm {
    fn from(alg: KeyAlg) -> Self {
        match alg {
            KeyAlg::EcdsaP256 => KeyAlgorithm::EcdsaP256,
            KeyAlg::Rsa2048 => KeyAlgorithm::Rsa2048,
        }
    }
}

/// A certificate's facts as `init` and `issue` report them.
#[derive(Debug, Serialize)]
struct CertSummary {
    subject: String,
    issuer: String,
    serial: String,
    key_algorithm: String,
    not_before: jiff::Timestamp,
    not_after: jiff::Timestamp,
    expires_in: String,
    sha256: String,
}

impl CertSummary {
    fn new(info: &CertInfo) -> Self {
        Self {
            subject: info.subject.clone(),
            issuer: info.issuer.clone(),
            serial: info.serial.clone(),
            key_algorithm: info.key_algorithm.clone(),
            not_before: info.not_before,
            not_after: info.not_after,
            expires_in: duration::until(info.not_after, jiff::Timestamp::now()),
            sha256: info.sha256.clone(),
        }
    }

    /// `FROM to UNTIL (LEFT left)`.
    fn validity(&self) -> String {
        format!(
            "{} to {} ({})",
            self.not_before,
            self.not_after,
            if self.expires_in.starts_with("expired") {
                self.expires_in.clone()
            } else {
                format!("{} left", self.expires_in)
            }
        )
    }
}

/// Prints `value` as JSON/YAML, or calls `table` for the human form.
fn emit<T: Serialize>(value: &T, format: Format, table: impl FnOnce(&T)) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            table(value);
            Ok(())
        }
        other => print_structured(value, other),
    }
}

/// A subject for people: Istio workload certificates have an empty one (§1.4).
fn display_subject(subject: &str) -> &str {
    if subject.is_empty() {
        "(empty)"
    } else {
        subject
    }
}
