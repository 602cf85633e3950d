//! Saved answers read with `-f` in place of a live endpoint (`proxy-config`, `proxy-status`):
//! the file's JSON, or an error naming the file and what it should have held.

use std::path::Path;

use anyhow::Context;

/// The JSON in `file`, which should hold `expected` (said in the error when it does not parse).
pub(crate) fn read_json(file: &Path, expected: &str) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not {expected}", file.display()))
}
