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
/// trailing padding is dropped.
pub(crate) fn print_table(table: &mut comfy_table::Table, indent: &str) {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    for line in table.lines() {
        println!("{indent}{}", line.trim_end());
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
