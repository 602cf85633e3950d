//! Output formats shared by every command: `-o table|json|yaml`.

use std::io::IsTerminal;

use clap::ValueEnum;
use serde::Serialize;

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
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml | Format::Table => print!("{}", serde_saphyr::to_string(value)?),
    }
    Ok(())
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
