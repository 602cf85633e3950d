//! `meshward ca issue`: a workload certificate for `spiffe://TD/ns/N/sa/S`, written as the three
//! files an Istio proxy mounts (`key.pem`, `cert-chain.pem`, `root-cert.pem`).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use meshward_identity::{SpiffeId, WorkloadCertificate};
use serde::Serialize;

use super::{CaLocation, CertSummary, KeyAlg, duration, emit};
use crate::output::{Format, print_table, table};

/// `meshward ca issue` arguments.
#[derive(Debug, clap::Args)]
pub(super) struct IssueArgs {
    #[command(flatten)]
    location: CaLocation,
    /// The workload's namespace.
    #[arg(long, short = 'n')]
    namespace: String,
    /// The workload's service account.
    #[arg(long)]
    service_account: String,
    /// Directory to write key.pem, cert-chain.pem and root-cert.pem into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Certificate lifetime: a number followed by s, m, h or d [default: the CA's, 24h; at most
    /// 90d].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    ttl: Option<Duration>,
    /// Key algorithm of the workload key.
    #[arg(long, value_enum, default_value_t)]
    key_algorithm: KeyAlg,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Format,
}

#[derive(Debug, Serialize)]
struct IssueView {
    identity: String,
    certificate: CertSummary,
    chain_length: usize,
    files: Files,
}

#[derive(Debug, Serialize)]
struct Files {
    key: String,
    cert_chain: String,
    root_cert: String,
}

pub(super) fn run(args: &IssueArgs) -> anyhow::Result<ExitCode> {
    let dir = args.location.ca_dir()?;
    if !dir.exists() {
        anyhow::bail!(
            "no CA in {}: run `meshward ca init` first (or pass --ca-dir)",
            dir.path().display()
        );
    }
    let identity = SpiffeId::new(
        args.location.trust_domain.clone(),
        &args.namespace,
        &args.service_account,
    )?;
    let ca = dir
        .load(args.location.trust_domain.clone())
        .with_context(|| format!("cannot load the CA in {}", dir.path().display()))?;
    // Issue before touching --out, so a refused request (TTL above the maximum, expired CA)
    // leaves no half-written files behind.
    let cert = ca
        .issue(&identity, args.key_algorithm.into(), args.ttl)
        .with_context(|| format!("cannot issue a certificate for {}", identity.uri()))?;
    let files = write_files(&args.out, &cert)?;
    let view = IssueView {
        identity: identity.uri(),
        certificate: CertSummary::new(cert.leaf()),
        chain_length: cert.chain().len(),
        files,
    };
    emit(&view, args.output, print_human)?;
    Ok(ExitCode::SUCCESS)
}

fn write_files(out: &Path, cert: &WorkloadCertificate) -> anyhow::Result<Files> {
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let key = out.join("key.pem");
    let chain = out.join("cert-chain.pem");
    let roots = out.join("root-cert.pem");
    write_private(&key, cert.key_pem().as_bytes())?;
    fs::write(&chain, cert.chain_pem())
        .with_context(|| format!("cannot write {}", chain.display()))?;
    fs::write(&roots, cert.roots().to_pem())
        .with_context(|| format!("cannot write {}", roots.display()))?;
    Ok(Files {
        key: key.display().to_string(),
        cert_chain: chain.display().to_string(),
        root_cert: roots.display().to_string(),
    })
}

/// Writes a private key readable only by its owner. The mode is set at creation (never briefly
/// world-readable) and again afterwards, because an existing file keeps its old mode on open.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let context = || format!("cannot write {}", path.display());
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(context)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(context)?;
    }
    file.write_all(bytes).with_context(context)?;
    file.sync_all().with_context(context)
}

fn print_human(v: &IssueView) {
    println!("Issued {}", v.identity);
    let cert = &v.certificate;
    let mut t = table();
    t.add_row(vec!["serial", &cert.serial]);
    t.add_row(vec!["key algorithm", &cert.key_algorithm]);
    t.add_row(vec!["not before", &cert.not_before.to_string()]);
    t.add_row(vec![
        "not after".to_owned(),
        format!("{} ({})", cert.not_after, cert.expires_in),
    ]);
    t.add_row(vec!["issuer", &cert.issuer]);
    t.add_row(vec![
        "chain".to_owned(),
        format!("{} certificates, leaf first, root last", v.chain_length),
    ]);
    t.add_row(vec![
        "wrote".to_owned(),
        format!("{} (mode 0600)", v.files.key),
    ]);
    t.add_row(vec!["", &v.files.cert_chain]);
    t.add_row(vec!["", &v.files.root_cert]);
    print_table(&mut t, "  ");
}
