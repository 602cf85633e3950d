//! Output formats shared by every command (`-o table|json|yaml`), and how output ends when its
//! reader goes away.
//!
//! `meshward get ap -o json | head -1`: `head` exits after one line and the next write fails with
//! EPIPE. A C tool is killed by SIGPIPE there; Rust ignores SIGPIPE, so the write returns the
//! error and `println!` panics on it. Output written here ([`write_stdout`], and through it
//! [`print_structured`] and [`print_table`]) ends the process quietly instead, with the status a
//! shell reports for a process killed by SIGPIPE ([`EXIT_BROKEN_PIPE`]). The many `println!`s of
//! the commands are covered by [`end_quietly_on_broken_pipe`], installed first thing in `main`.

use std::io::{IsTerminal, Write};

use clap::ValueEnum;
use serde::Serialize;

/// The exit status when the reader of our output went away: 128 + SIGPIPE (13), what a shell
/// reports for `yes | head -1` under `set -o pipefail`, so scripts see what they see for any
/// other tool.
pub(crate) const EXIT_BROKEN_PIPE: i32 = 141;

/// `-o` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum Format {
    /// Human-readable text.
    #[default]
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Prints a serializable value as JSON or YAML.
pub(crate) fn print_structured<T: Serialize>(value: &T, format: Format) -> anyhow::Result<()> {
    let text = match format {
        Format::Json => {
            let mut json = serde_json::to_string_pretty(value)?;
            json.push('\n');
            json
        }
        Format::Yaml | Format::Table => serde_saphyr::to_string(value)?,
    };
    Ok(write_stdout(&text)?)
}

/// Writes `text` to stdout. If the reader went away, the process ends here, quietly, with
/// [`EXIT_BROKEN_PIPE`]: nothing more can be shown, and it is not an error of the command.
pub(crate) fn write_stdout(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(EXIT_BROKEN_PIPE)
        }
        result => result,
    }
}

/// Makes a `println!` or `eprintln!` whose reader went away end the process as
/// [`write_stdout`] does, instead of panicking with "failed printing to stdout: Broken pipe".
/// Every other panic is reported as before.
pub(crate) fn end_quietly_on_broken_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if is_broken_pipe_print(message) {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        report(info);
    }));
}

/// Whether `message` is the panic of `print!`/`eprint!` failing with EPIPE (std formats it as
/// `failed printing to stdout: <the io::Error>`).
fn is_broken_pipe_print(message: &str) -> bool {
    let epipe = std::io::Error::from_raw_os_error(rustix::io::Errno::PIPE.raw_os_error());
    let Some(error) = message
        .strip_prefix("failed printing to stdout: ")
        .or_else(|| message.strip_prefix("failed printing to stderr: "))
    else {
        return false;
    };
    error == epipe.to_string()
}

/// Colour only on a terminal and when NO_COLOR is unset.
pub(crate) fn color_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// Wraps `text` in an ANSI colour when colour is enabled.
pub(crate) fn paint(text: &str, code: &str) -> String {
    if color_enabled() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// A borderless table in `istioctl` style. Colour follows [`color_enabled`] rather than
/// comfy-table's own terminal check, so NO_COLOR and pipes behave as everywhere else.
pub(crate) fn table() -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled);
    if color_enabled() {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    table
}

/// Prints `table` with every line indented by `indent`; columns are separated by two spaces and
/// trailing padding is dropped. Ends the process like [`write_stdout`] when the reader went
/// away; any other write error ends it as `println!` would, but with an error message and
/// status 2 (main's), not a panic.
pub(crate) fn print_table(table: &mut comfy_table::Table, indent: &str) {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut text = String::new();
    for line in table.lines() {
        text.push_str(indent);
        text.push_str(line.trim_end());
        text.push('\n');
    }
    if let Err(e) = write_stdout(&text) {
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(2);
    }
}

/// A cell painted green when `good`, red otherwise.
pub(crate) fn verdict_cell(text: &str, good: bool) -> comfy_table::Cell {
    let color = if good {
        comfy_table::Color::Green
    } else {
        comfy_table::Color::Red
    };
    comfy_table::Cell::new(text).fg(color)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_broken_pipe_panic_of_print_is_recognised() {
        let epipe = std::io::Error::from_raw_os_error(rustix::io::Errno::PIPE.raw_os_error());
        assert!(is_broken_pipe_print(&format!(
            "failed printing to stdout: {epipe}"
        )));
        assert!(is_broken_pipe_print(&format!(
            "failed printing to stderr: {epipe}"
        )));
        let other = std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        assert!(!is_broken_pipe_print(&format!(
            "failed printing to stdout: {other}"
        )));
        assert!(!is_broken_pipe_print(&format!(
            "index out of bounds: {epipe}"
        )));
    }
}
