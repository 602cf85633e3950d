//! `meshward ca inspect FILE`: what a PEM certificate file holds, in the spirit of
//! `istioctl proxy-config secret` (authentication.md §1.4 "Observable", §7.2): per certificate
//! its place in the chain, identity, serial and validity window; for the file, whether each
//! certificate is issued by the next one and whether all are valid now.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use jiff::Timestamp;
use meshward_identity::{CertInfo, pem};
use serde::Serialize;

use super::{display_subject, duration, emit};
use crate::output::{Format, paint, print_table, table, verdict_cell};

/// `meshward ca inspect` arguments.
#[derive(Debug, clap::Args)]
pub(super) struct InspectArgs {
    /// A PEM file with one or more certificates, e.g. cert-chain.pem or root-cert.pem.
    file: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Format,
}

/// Where a certificate sits in a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Position {
    /// Not a CA: a workload certificate.
    Leaf,
    /// A CA issued by another CA.
    Intermediate,
    /// A self-issued CA (issuer = subject): a trust anchor.
    Root,
}

impl Position {
    fn of(info: &CertInfo) -> Self {
        if !info.is_ca {
            Self::Leaf
        } else if info.subject == info.issuer {
            Self::Root
        } else {
            Self::Intermediate
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Leaf => "leaf",
            Self::Intermediate => "intermediate",
            Self::Root => "root",
        }
    }
}

#[derive(Debug, Serialize)]
struct InspectView {
    file: String,
    certificates: Vec<CertView>,
    /// Every certificate's issuer is the next certificate's subject.
    chain_linked: bool,
    /// Every certificate is inside its validity window now.
    valid_now: bool,
    /// What breaks the chain or the validity, one sentence each.
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct CertView {
    /// Position in the file, from 1.
    index: usize,
    position: Position,
    subject: String,
    spiffe_id: Option<String>,
    uri_sans: Vec<String>,
    dns_sans: Vec<String>,
    issuer: String,
    serial: String,
    key_algorithm: String,
    is_ca: bool,
    not_before: Timestamp,
    not_after: Timestamp,
    expires_in: String,
    /// Negative once expired.
    seconds_to_expiry: i64,
    valid_now: bool,
    sha256: String,
}

pub(super) fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let name = args.file.display().to_string();
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {name}"))?;
    let ders = pem::certificates(&bytes, &name)?;
    let infos = ders
        .iter()
        .enumerate()
        .map(|(i, der)| {
            CertInfo::parse(der).with_context(|| format!("{name}: certificate {}", i + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let view = inspect(name, &infos, Timestamp::now());
    emit(&view, args.output, print_human)?;
    Ok(ExitCode::SUCCESS)
}

fn inspect(file: String, infos: &[CertInfo], now: Timestamp) -> InspectView {
    let certificates: Vec<CertView> = infos
        .iter()
        .enumerate()
        .map(|(i, info)| CertView {
            index: i + 1,
            position: Position::of(info),
            subject: info.subject.clone(),
            spiffe_id: info.spiffe_id().map(|id| id.uri()),
            uri_sans: info.uri_sans.clone(),
            dns_sans: info.dns_sans.clone(),
            issuer: info.issuer.clone(),
            serial: info.serial.clone(),
            key_algorithm: info.key_algorithm.clone(),
            is_ca: info.is_ca,
            not_before: info.not_before,
            not_after: info.not_after,
            expires_in: duration::until(info.not_after, now),
            seconds_to_expiry: info.not_after.as_second() - now.as_second(),
            valid_now: info.is_valid_at(now),
            sha256: info.sha256.clone(),
        })
        .collect();
    let mut problems = Vec::new();
    let mut chain_linked = true;
    for pair in certificates.windows(2) {
        let [cert, next] = pair else { continue };
        if cert.issuer == next.subject {
            continue;
        }
        chain_linked = false;
        problems.push(
            if cert.position == Position::Root && next.position == Position::Root {
                format!(
                    "certificates {} and {} are both roots: a trust bundle, not a chain",
                    cert.index, next.index
                )
            } else {
                format!(
                    "certificate {} ({}) is issued by {:?}, but certificate {} is {:?}",
                    cert.index,
                    cert.position.as_str(),
                    cert.issuer,
                    next.index,
                    display_subject(&next.subject)
                )
            },
        );
    }
    for cert in certificates.iter().filter(|c| !c.valid_now) {
        problems.push(if cert.seconds_to_expiry < 0 {
            format!(
                "certificate {} ({}) expired at {}",
                cert.index,
                cert.position.as_str(),
                cert.not_after
            )
        } else {
            format!(
                "certificate {} ({}) is not valid before {}",
                cert.index,
                cert.position.as_str(),
                cert.not_before
            )
        });
    }
    InspectView {
        file,
        valid_now: certificates.iter().all(|c| c.valid_now),
        certificates,
        chain_linked,
        problems,
    }
}

fn print_human(v: &InspectView) {
    let count = v.certificates.len();
    println!(
        "{}: {count} certificate{}",
        v.file,
        if count == 1 { "" } else { "s" }
    );
    // The columns of `istioctl proxy-config secret`, one row per certificate.
    let mut summary = table();
    summary.set_header(vec![
        "#",
        "POSITION",
        "VALID CERT",
        "SERIAL NUMBER",
        "NOT AFTER",
        "NOT BEFORE",
        "EXPIRES IN",
    ]);
    for c in &v.certificates {
        summary.add_row(vec![
            comfy_table::Cell::new(c.index),
            comfy_table::Cell::new(c.position.as_str()),
            verdict_cell(if c.valid_now { "true" } else { "false" }, c.valid_now),
            comfy_table::Cell::new(&c.serial),
            comfy_table::Cell::new(c.not_after),
            comfy_table::Cell::new(c.not_before),
            comfy_table::Cell::new(&c.expires_in),
        ]);
    }
    print_table(&mut summary, "");
    for c in &v.certificates {
        println!();
        println!("Certificate {} ({})", c.index, c.position.as_str());
        let list = |items: &[String]| {
            if items.is_empty() {
                "(none)".to_owned()
            } else {
                items.join(", ")
            }
        };
        let mut t = table();
        t.add_row(vec!["subject", display_subject(&c.subject)]);
        t.add_row(vec![
            "SPIFFE identity",
            c.spiffe_id.as_deref().unwrap_or("(none)"),
        ]);
        t.add_row(vec!["URI SANs".to_owned(), list(&c.uri_sans)]);
        t.add_row(vec!["DNS SANs".to_owned(), list(&c.dns_sans)]);
        t.add_row(vec!["issuer", display_subject(&c.issuer)]);
        t.add_row(vec!["key algorithm", &c.key_algorithm]);
        t.add_row(vec!["SHA-256", &c.sha256]);
        print_table(&mut t, "  ");
    }
    println!();
    let path = v
        .certificates
        .iter()
        .map(|c| c.position.as_str())
        .collect::<Vec<_>>()
        .join(" → ");
    let chain = if v.chain_linked {
        paint("linked", "32")
    } else {
        paint("broken", "31")
    };
    println!("chain:      {chain} ({path})");
    let valid = if v.valid_now {
        paint("yes", "32")
    } else {
        paint("no", "31")
    };
    println!("valid now:  {valid}");
    for p in &v.problems {
        println!("problem:    {p}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cert(subject: &str, issuer: &str, is_ca: bool, not_after: i64) -> CertInfo {
        CertInfo {
            serial: "01".to_owned(),
            subject: subject.to_owned(),
            issuer: issuer.to_owned(),
            not_before: Timestamp::from_second(0).unwrap(),
            not_after: Timestamp::from_second(not_after).unwrap(),
            uri_sans: vec!["spiffe://cluster.local/ns/foo/sa/bar".to_owned()],
            dns_sans: Vec::new(),
            is_ca,
            key_algorithm: "ECDSA P-256".to_owned(),
            sha256: "00".to_owned(),
        }
    }

    #[test]
    fn positions_and_links() {
        let now = Timestamp::from_second(100).unwrap();
        let chain = [
            cert("", "CN=int", false, 1000),
            cert("CN=int", "CN=root", true, 1000),
            cert("CN=root", "CN=root", true, 1000),
        ];
        let v = inspect("f".to_owned(), &chain, now);
        let positions: Vec<_> = v.certificates.iter().map(|c| c.position).collect();
        assert_eq!(
            positions,
            [Position::Leaf, Position::Intermediate, Position::Root]
        );
        assert!(v.chain_linked && v.valid_now && v.problems.is_empty());
        assert_eq!(
            v.certificates[0].spiffe_id.as_deref(),
            Some("spiffe://cluster.local/ns/foo/sa/bar")
        );
    }

    #[test]
    fn reports_breaks_and_expiry() {
        let now = Timestamp::from_second(100).unwrap();
        let chain = [
            cert("", "CN=other", false, 50),
            cert("CN=root", "CN=root", true, 1000),
        ];
        let v = inspect("f".to_owned(), &chain, now);
        assert!(!v.chain_linked && !v.valid_now);
        assert_eq!(v.problems.len(), 2, "{:?}", v.problems);
        assert!(
            v.problems[0].contains("issued by \"CN=other\""),
            "{:?}",
            v.problems
        );
        assert!(v.problems[1].contains("expired"), "{:?}", v.problems);
        assert!(v.certificates[0].expires_in.starts_with("expired"));
    }
}
