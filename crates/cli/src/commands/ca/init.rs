//! `meshward ca init`: generate a self-signed root (§1.7 "self-signed mode") or validate and
//! install an organisation's `cacerts` files (§1.7 "plug-in CA"). An existing CA is shown, never
//! replaced: its root is what every issued certificate chains to.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use meshward_identity::ca::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT};
use meshward_identity::{CaDir, CertificateAuthority};
use serde::Serialize;

use super::{CaLocation, CertSummary, KeyAlg, display_subject, duration, emit};
use crate::output::{Format, print_table, table};

/// `meshward ca init` arguments.
#[derive(Debug, clap::Args)]
pub(super) struct InitArgs {
    #[command(flatten)]
    location: CaLocation,
    /// Key algorithm of a generated root.
    #[arg(long, value_enum, default_value_t)]
    key_algorithm: KeyAlg,
    /// Lifetime of a generated root: a number followed by s, m, h or d (Istio's self-signed
    /// root lives 10 years).
    #[arg(long, value_name = "DURATION", default_value = "3650d", value_parser = duration::parse)]
    root_lifetime: Duration,
    /// Install this Istio `cacerts` directory (ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem) instead of generating a root.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["key_algorithm", "root_lifetime"])]
    plugin_certs: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Format,
}

/// Longer root lifetimes are refused: X.509 dates end in the year 9999, and a root that outlives
/// everyone who could rotate it is a liability rather than a convenience.
const MAX_ROOT_LIFETIME: Duration = Duration::from_secs(36_500 * 24 * 3600);

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Created,
    Installed,
    Exists,
}

#[derive(Debug, Serialize)]
struct InitView {
    status: Status,
    ca_dir: String,
    trust_domain: String,
    /// `self-signed root` or `intermediate`.
    kind: &'static str,
    signing_certificate: CertSummary,
    roots: usize,
    files: [&'static str; 4],
}

pub(super) fn run(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let dir = args.location.ca_dir()?;
    let trust_domain = args.location.trust_domain.clone();
    let (ca, status) = if let Some(plugin) = &args.plugin_certs {
        // Unlike a plain `init`, the user asked for *these* certificates; quietly keeping the old
        // CA would leave them issuing from a root they did not mean to use.
        if [CA_CERT, CA_KEY]
            .iter()
            .any(|f| dir.path().join(f).exists())
        {
            eprintln!(
                "error: {} already holds a CA; refusing to install the plug-in certificates from {} over it (remove that CA first or choose another --ca-dir)",
                dir.path().display(),
                plugin.display()
            );
            return Ok(ExitCode::from(1));
        }
        let created = create_private_dir(dir.path())?;
        let ca = undo_on_error(
            created,
            dir.path(),
            dir.install_plugin(plugin, trust_domain),
        )
        .with_context(|| format!("cannot install the plug-in CA from {}", plugin.display()))?;
        (ca, Status::Installed)
    } else if dir.exists() {
        let ca = dir
            .load(trust_domain)
            .with_context(|| format!("cannot load the existing CA in {}", dir.path().display()))?;
        (ca, Status::Exists)
    } else {
        if args.root_lifetime.is_zero() {
            anyhow::bail!("--root-lifetime must be longer than 0s");
        }
        if args.root_lifetime > MAX_ROOT_LIFETIME {
            anyhow::bail!("--root-lifetime must be at most 36500d (100 years)");
        }
        let created = create_private_dir(dir.path())?;
        let ca = undo_on_error(
            created,
            dir.path(),
            dir.init_self_signed(trust_domain, args.key_algorithm.into(), args.root_lifetime),
        )?;
        (ca, Status::Created)
    };
    let view = view(&dir, &ca, status);
    emit(&view, args.output, |v| {
        print_human(v, args.plugin_certs.as_deref())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Creates the CA directory readable only by its owner: it holds the CA's private key. Returns
/// whether it was created.
fn create_private_dir(path: &Path) -> anyhow::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(true)
}

/// Removes the CA directory again if this run created it and then failed, so a failed `init`
/// leaves nothing behind. `remove_dir` only removes an empty directory: nothing written is lost.
fn undo_on_error<T, E>(created: bool, path: &Path, result: Result<T, E>) -> Result<T, E> {
    if result.is_err() && created {
        let _ = std::fs::remove_dir(path);
    }
    result
}

fn view(dir: &CaDir, ca: &CertificateAuthority, status: Status) -> InitView {
    let signing = ca.signing_cert();
    InitView {
        status,
        ca_dir: dir.path().display().to_string(),
        trust_domain: ca.trust_domain().to_string(),
        kind: if signing.subject == signing.issuer {
            "self-signed root"
        } else {
            "intermediate"
        },
        signing_certificate: CertSummary::new(signing),
        roots: ca.trust_bundle().len(),
        files: [CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT],
    }
}

fn print_human(v: &InitView, plugin: Option<&Path>) {
    match (v.status, plugin) {
        (Status::Created, _) => println!("Created a self-signed root CA in {}", v.ca_dir),
        (Status::Installed, Some(p)) => {
            println!(
                "Installed the plug-in CA from {} into {}",
                p.display(),
                v.ca_dir
            );
        }
        (Status::Installed, None) => println!("Installed a plug-in CA into {}", v.ca_dir),
        (Status::Exists, _) => println!("A CA already exists in {}; left unchanged", v.ca_dir),
    }
    let cert = &v.signing_certificate;
    let mut t = table();
    t.add_row(vec!["CA directory", &v.ca_dir]);
    t.add_row(vec!["trust domain", &v.trust_domain]);
    t.add_row(vec!["signing certificate", display_subject(&cert.subject)]);
    t.add_row(vec!["kind", v.kind]);
    if v.kind != "self-signed root" {
        t.add_row(vec!["issued by", display_subject(&cert.issuer)]);
    }
    t.add_row(vec!["key algorithm", &cert.key_algorithm]);
    t.add_row(vec!["validity".to_owned(), cert.validity()]);
    t.add_row(vec!["roots".to_owned(), v.roots.to_string()]);
    t.add_row(vec!["files".to_owned(), v.files.join(", ")]);
    print_table(&mut t, "  ");
}
