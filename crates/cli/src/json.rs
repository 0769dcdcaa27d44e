//! What `--json` prints: plain records, addresses as `0x` hex strings
//! (JSON numbers cannot hold every 64-bit address exactly).

use std::io::Write;

use addrspace::describe::RangeInfo;
use serde::Serialize;

use crate::error::CliError;

/// A flat range.
#[derive(Debug, Serialize)]
pub struct Range {
    /// First address.
    pub start: String,
    /// Last address (inclusive).
    pub last: String,
    /// Terminating region.
    pub region: String,
    /// `ram`, `rom`, `mmio`, ...
    pub kind: &'static str,
    /// Offset of `start` in the region.
    pub offset: String,
    /// Read-only.
    pub readonly: bool,
    /// Non-volatile.
    pub nonvolatile: bool,
    /// ROM device in ROMD mode.
    pub romd_mode: bool,
    /// The alias the range is seen through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_alias: Option<String>,
}

/// `0x` and lower-case hex.
pub fn hex(v: u64) -> String {
    format!("{v:#x}")
}

impl From<&RangeInfo> for Range {
    fn from(r: &RangeInfo) -> Range {
        Range {
            start: hex(r.start),
            last: hex(r.last),
            region: r.region.clone(),
            kind: r.kind.as_str(),
            offset: hex(r.offset),
            readonly: r.readonly,
            nonvolatile: r.nonvolatile,
            romd_mode: r.romd_mode,
            via_alias: r.via_alias.clone(),
        }
    }
}

/// Writes one pretty-printed JSON document and a newline.
pub fn emit(out: &mut dyn Write, value: &impl Serialize) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value)
        .map_err(|e| CliError::Write(std::io::Error::other(e)))?;
    writeln!(out).map_err(CliError::Write)
}
