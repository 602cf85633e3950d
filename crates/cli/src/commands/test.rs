//! `meshward test FILE|DIR...`: runs PolicyTests and ends with `N passed, N failed`.
//! `--live` runs them on a real local mesh instead ([`crate::policytest::live`]); cases that
//! cannot be sent live are listed as skipped with the reason and counted apart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use meshward_api::load_paths;

use crate::commands::validate::print_diagnostic;
use crate::output::paint;
use crate::policytest::live::Status;
use crate::policytest::run_test;

/// `meshward test` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct TestArgs {
    /// PolicyTest files or folders.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Cases not to run: one per line, `CASE NAME :: evidence`; `#` starts a comment line.
    #[arg(long)]
    skip_file: Option<PathBuf>,
    /// Print what happened for passing cases too.
    #[arg(short, long)]
    verbose: bool,
    /// Evaluate JWT expiry at this unix time instead of now (offline only: live proxies use
    /// the clock).
    #[arg(long, conflicts_with = "live")]
    now: Option<i64>,
    /// Run each test on a real local mesh (netns mode, root on Linux) built from its workloads,
    /// sending every case as a real connection or request through the sidecars.
    #[arg(long)]
    live: bool,
}

fn read_skip_file(path: &PathBuf) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, evidence)) = line.split_once("::") else {
            anyhow::bail!(
                "{}:{}: expected `CASE NAME :: evidence`",
                path.display(),
                i + 1
            );
        };
        out.insert(name.trim().to_owned(), evidence.trim().to_owned());
    }
    Ok(out)
}

pub(crate) fn run(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let skips = match &args.skip_file {
        Some(p) => read_skip_file(p)?,
        None => BTreeMap::new(),
    };
    let now = match args.now {
        Some(n) => n,
        None => i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?,
    };
    let report = load_paths(&args.paths)?;
    // Documents that are not PolicyTests only matter through a test's `include`; but a broken
    // PolicyTest document must not vanish silently.
    let mut failed = 0usize;
    let mut passed = 0usize;
    let mut skipped = 0usize;
    for d in report.diagnostics.iter().filter(|d| d.is_error()) {
        print_diagnostic(d);
        failed += 1;
    }
    if report.tests.is_empty() && failed == 0 {
        anyhow::bail!("no PolicyTest found in the given paths");
    }
    if args.live {
        return run_live(args, &report.tests, &skips, now, failed);
    }
    for loaded in &report.tests {
        let test_name = loaded.test.metadata.name();
        for result in run_test(loaded, now) {
            if let Some(evidence) = skips.get(&result.name) {
                skipped += 1;
                println!(
                    "{}  {test_name} :: {} ({evidence})",
                    paint("skip  ", "33"),
                    result.name
                );
                continue;
            }
            if result.passed {
                passed += 1;
                println!("{}  {test_name} :: {}", paint("ok    ", "32"), result.name);
                if args.verbose {
                    println!("        {}", result.detail);
                }
            } else {
                failed += 1;
                println!("{}  {test_name} :: {}", paint("FAILED", "31"), result.name);
                println!("        {}", result.detail);
                if let Some(note) = &result.note {
                    println!("        note: {note}");
                }
            }
        }
    }
    if skipped > 0 {
        println!("{passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("{passed} passed, {failed} failed");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--live`: the same report, one document at a time as its mesh finishes.
fn run_live(
    args: &TestArgs,
    tests: &[meshward_api::LoadedTest],
    skips: &BTreeMap<String, String>,
    now: i64,
    mut failed: usize,
) -> anyhow::Result<ExitCode> {
    let mut passed = 0usize;
    let mut skipped = 0usize;
    let mut skipped_live = 0usize;
    crate::policytest::live::run(tests, now, |loaded, results| {
        let test_name = loaded.test.metadata.name();
        for result in results {
            if let Some(evidence) = skips.get(&result.name) {
                skipped += 1;
                println!(
                    "{}  {test_name} :: {} ({evidence})",
                    paint("skip  ", "33"),
                    result.name
                );
                continue;
            }
            match &result.status {
                Status::Passed => {
                    passed += 1;
                    println!("{}  {test_name} :: {}", paint("ok    ", "32"), result.name);
                    if args.verbose {
                        println!("        {}", result.detail);
                    }
                }
                Status::Skipped(reason) => {
                    skipped_live += 1;
                    println!(
                        "{}  {test_name} :: {} (not runnable live: {reason})",
                        paint("skip  ", "33"),
                        result.name
                    );
                }
                Status::Failed => {
                    failed += 1;
                    println!("{}  {test_name} :: {}", paint("FAILED", "31"), result.name);
                    println!("        {}", result.detail);
                    if let Some(note) = &result.note {
                        println!("        note: {note}");
                    }
                }
            }
        }
    })?;
    if skipped > 0 {
        println!(
            "{passed} passed, {failed} failed, {skipped_live} skipped (live), {skipped} skipped"
        );
    } else {
        println!("{passed} passed, {failed} failed, {skipped_live} skipped (live)");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
