//! `addrspace map`: an SVG picture of one address space's flat view.
//!
//! Address spaces are huge and sparse (2^64 bytes with a few KiB of
//! MMIO), so the picture is not to scale: every range gets a row, in
//! address order, whose height grows with the logarithm of its size, and
//! the holes between ranges get thin hatched rows marked "unassigned".
//! Each row shows its first and last address, the region's name and kind
//! (by colour), its size and offset, and the alias it is seen through.

use std::io::Write;
use std::path::PathBuf;

use addrspace::describe::{RangeInfo, RangeKind};
use clap::Args;

use crate::error::CliError;
use crate::mtree_cmd::{load, load_hints};
use crate::svg::{self, Doc};

/// The `--help` examples.
pub const EXAMPLES: &str = "EXAMPLES:
  addrspace map tests/data/conformance/qemu-7.2/x86_64-q35-S.tree \\
      --hints tests/data/conformance/qemu-7.2/x86_64-q35-S.flat --svg q35-memory.svg
  addrspace map tests/data/conformance/qemu-7.2/x86_64-q35-S.tree --as I/O --svg q35-io.svg";

/// Options of `addrspace map`.
#[derive(Debug, Args)]
pub struct MapArgs {
    /// The `info mtree -D` text.
    tree: PathBuf,
    /// Its `info mtree -f` text (see `mtree flat --hints`).
    #[arg(long, value_name = "FLAT")]
    hints: Option<PathBuf>,
    /// Read-only alias names (repeatable).
    #[arg(long = "readonly-alias", value_name = "NAME")]
    readonly_aliases: Vec<String>,
    /// The address space drawn.
    #[arg(long = "as", value_name = "NAME", default_value = "memory")]
    space: String,
    /// Where the SVG goes (`-` for standard output).
    #[arg(long, value_name = "OUT")]
    svg: PathBuf,
}

/// One row of the picture.
#[derive(Debug)]
enum Row {
    Range(RangeInfo),
    /// Unassigned addresses `start..=last`.
    Gap(u64, u64),
}

fn colour(kind: RangeKind) -> &'static str {
    match kind {
        RangeKind::Ram => "#66bb6a",
        RangeKind::RamDevice => "#aed581",
        RangeKind::Rom => "#ffb74d",
        RangeKind::RomDevice => "#ff8a65",
        RangeKind::Mmio => "#64b5f6",
        RangeKind::Reservation => "#b0bec5",
        RangeKind::Iommu => "#ba68c8",
    }
}

const LEGEND: [(RangeKind, &str); 7] = [
    (RangeKind::Ram, "RAM"),
    (RangeKind::RamDevice, "RAM device"),
    (RangeKind::Rom, "ROM"),
    (RangeKind::RomDevice, "ROM device"),
    (RangeKind::Mmio, "MMIO / I/O"),
    (RangeKind::Reservation, "reservation"),
    (RangeKind::Iommu, "IOMMU"),
];

const WIDTH: f64 = 1180.0;
const ADDR_X: f64 = 16.0;
const BOX_X: f64 = 300.0;
const BOX_W: f64 = 420.0;
const INFO_X: f64 = 736.0;
const GAP_H: f64 = 18.0;

/// Height of a range's row: 22 px for a page or less, growing with
/// log2(size) to 64 px for the largest.
fn row_height(size: u128) -> f64 {
    let log = 128 - size.leading_zeros() as i32 - 1; // floor(log2)
    (22.0 + f64::from((log - 12).max(0)) * 0.8).min(64.0)
}

/// The rows of a view: ranges and the gaps between them, up to `end`
/// (the root's last address).
fn rows(ranges: Vec<RangeInfo>, end: u64) -> Vec<Row> {
    let mut out = Vec::new();
    let mut next: Option<u64> = Some(0);
    for r in ranges {
        if let Some(n) = next {
            if r.start > n {
                out.push(Row::Gap(n, r.start - 1));
            }
        }
        next = r.last.checked_add(1);
        out.push(Row::Range(r));
    }
    if let Some(n) = next {
        if n <= end {
            out.push(Row::Gap(n, end));
        }
    }
    out
}

/// Draws `rows` of address space `space`; `title` names the source.
fn draw(space: &str, title: &str, rows: &[Row]) -> String {
    let mut doc = Doc::default();
    let ranges = rows.iter().filter(|r| matches!(r, Row::Range(_))).count();
    doc.text(
        ADDR_X,
        30.0,
        r##"class="title""##,
        &format!("address space \"{space}\" of {title}: {ranges} ranges"),
    );
    doc.text(
        ADDR_X,
        50.0,
        r##"class="note""##,
        "not to scale: row height grows with log2(size); hatched rows are unassigned addresses; \
         striped boxes are seen through an alias",
    );
    // Legend.
    let mut x = ADDR_X;
    let ly = 66.0;
    for (kind, label) in LEGEND {
        doc.rect(
            x,
            ly,
            16.0,
            14.0,
            &format!(r##"fill="{}" stroke="#37474f""##, colour(kind)),
        );
        doc.text(x + 22.0, ly + 12.0, r##"class="legend""##, label);
        x += 36.0 + 7.5 * label.len() as f64;
    }
    doc.rect(
        x,
        ly,
        16.0,
        14.0,
        r##"fill="#90caf9" stroke="#37474f" stroke-dasharray="3 2""##,
    );
    doc.rect(x, ly, 16.0, 14.0, r##"fill="url(#alias)""##);
    doc.text(x + 22.0, ly + 12.0, r##"class="legend""##, "via alias");
    x += 100.0;
    doc.rect(x, ly, 16.0, 14.0, r##"fill="url(#gap)" stroke="#b0bec5""##);
    doc.text(x + 22.0, ly + 12.0, r##"class="legend""##, "unassigned");

    // Column heads.
    let mut y = 104.0;
    doc.text(ADDR_X, y, r##"class="head""##, "first - last address");
    doc.text(BOX_X, y, r##"class="head""##, "region (kind)");
    doc.text(
        INFO_X,
        y,
        r##"class="head""##,
        "size, offset in region, attributes",
    );
    y += 8.0;

    for row in rows {
        match row {
            Row::Gap(start, last) => {
                doc.rect(
                    BOX_X,
                    y,
                    BOX_W,
                    GAP_H,
                    r##"fill="url(#gap)" stroke="#cfd8dc""##,
                );
                doc.text(
                    ADDR_X,
                    y + 13.0,
                    r##"class="addr gapaddr""##,
                    &format!("{start:016x}-{last:016x}"),
                );
                let size = u128::from(*last) - u128::from(*start) + 1;
                doc.text(
                    BOX_X + BOX_W / 2.0,
                    y + 13.0,
                    r##"class="gaplabel" text-anchor="middle""##,
                    &format!("unassigned, {}", svg::size(size)),
                );
                y += GAP_H;
            }
            Row::Range(r) => {
                // Two lines of notes need room.
                let h = if r.via_alias.is_some() {
                    row_height(r.size()).max(34.0)
                } else {
                    row_height(r.size())
                };
                let fill = colour(r.kind);
                let dashed = if r.via_alias.is_some() {
                    r##" stroke-dasharray="5 3""##
                } else {
                    ""
                };
                doc.rect(
                    BOX_X,
                    y,
                    BOX_W,
                    h,
                    &format!(r##"fill="{fill}" stroke="#263238"{dashed}"##),
                );
                if r.via_alias.is_some() {
                    doc.rect(BOX_X, y, BOX_W, h, r##"fill="url(#alias)""##);
                }
                let mid = y + h / 2.0 + 4.5;
                doc.text(
                    ADDR_X,
                    mid,
                    r##"class="addr""##,
                    &format!("{:016x}-{:016x}", r.start, r.last),
                );
                doc.text(
                    BOX_X + 8.0,
                    mid,
                    r##"class="name""##,
                    &format!("{} ({})", r.region, r.kind),
                );
                let mut info = format!("{}  @{:#x}", svg::size(r.size()), r.offset);
                if r.readonly {
                    info.push_str("  read-only");
                }
                if r.romd_mode && r.kind == RangeKind::RomDevice {
                    info.push_str("  romd");
                }
                if r.nonvolatile {
                    info.push_str("  non-volatile");
                }
                match &r.via_alias {
                    Some(alias) => {
                        doc.text(INFO_X, mid - 7.0, r##"class="info""##, &info);
                        doc.text(
                            INFO_X,
                            mid + 8.0,
                            r##"class="alias""##,
                            &format!("\u{21b3} via alias \"{alias}\" of \"{}\"", r.region),
                        );
                    }
                    None => doc.text(INFO_X, mid, r##"class="info""##, &info),
                }
                doc.line(BOX_X - 8.0, y, BOX_X, y, r##"stroke="#90a4ae""##);
                y += h;
            }
        }
    }
    let defs = r##"
<pattern id="gap" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
  <rect width="8" height="8" fill="#fafafa"/><line x1="0" y1="0" x2="0" y2="8" stroke="#cfd8dc" stroke-width="3"/>
</pattern>
<pattern id="alias" width="10" height="10" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)">
  <line x1="0" y1="0" x2="0" y2="10" stroke="white" stroke-opacity="0.45" stroke-width="4"/>
</pattern>
<style>
  text { font-family: 'DejaVu Sans', Arial, sans-serif; font-size: 13px; fill: #212121; }
  .title { font-size: 18px; font-weight: bold; }
  .note { font-size: 12px; fill: #546e7a; }
  .legend { font-size: 12px; }
  .head { font-size: 12px; font-weight: bold; fill: #455a64; }
  .addr { font-family: 'DejaVu Sans Mono', monospace; font-size: 12px; }
  .gapaddr { fill: #90a4ae; font-size: 11px; }
  .gaplabel { font-size: 11px; fill: #78909c; }
  .name { font-weight: bold; }
  .info { font-size: 12px; }
  .alias { font-size: 12px; font-style: italic; fill: #6a1b9a; }
</style>"##;
    doc.finish(WIDTH, y + 20.0, defs)
}

impl MapArgs {
    /// Builds the dump and writes the picture (`out` gets a one-line
    /// summary, or the SVG itself for `--svg -`).
    pub fn run(self, out: &mut dyn Write) -> Result<(), CliError> {
        let hints = load_hints(self.hints.as_deref(), self.readonly_aliases)?;
        let built = load(&self.tree, &hints)?;
        let id = built.address_space(&self.space).ok_or_else(|| {
            let names: Vec<&str> = built
                .address_spaces()
                .iter()
                .map(|(n, _)| n.as_str())
                .collect();
            CliError::Usage(format!(
                "{}: no address space named {:?} (it has: {})",
                self.tree.display(),
                self.space,
                names.join(", ")
            ))
        })?;
        let mem = built.memory();
        let view = mem.view(id)?;
        let ranges = view
            .ranges
            .iter()
            .map(|r| RangeInfo::of(mem, id, r))
            .collect::<Result<Vec<_>, _>>()?;
        let root_size = mem.region(mem.address_space_root(id)?)?.size();
        let end = u64::try_from(root_size.saturating_sub(1)).unwrap_or(u64::MAX);
        let n = ranges.len();
        let title = self.tree.file_name().map_or_else(
            || self.tree.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        let picture = draw(&self.space, &title, &rows(ranges, end));
        if self.svg.as_os_str() == "-" {
            return out.write_all(picture.as_bytes()).map_err(CliError::Write);
        }
        std::fs::write(&self.svg, picture).map_err(|e| {
            CliError::Write(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", self.svg.display()),
            ))
        })?;
        writeln!(
            out,
            "wrote {} ({n} ranges of address space {:?})",
            self.svg.display(),
            self.space
        )
        .map_err(CliError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, last: u64) -> RangeInfo {
        RangeInfo {
            start,
            last,
            region: "r".into(),
            kind: RangeKind::Ram,
            offset: 0,
            readonly: false,
            nonvolatile: false,
            romd_mode: false,
            via_alias: None,
        }
    }

    #[test]
    fn gaps_fill_the_holes_up_to_the_end() {
        let rows = rows(vec![r(0x1000, 0x1fff), r(0x2000, 0x2fff)], u64::MAX);
        assert!(matches!(rows[0], Row::Gap(0, 0xfff)));
        assert!(matches!(rows[3], Row::Gap(0x3000, u64::MAX)));
        assert_eq!(rows.len(), 4);
        // A range reaching the top leaves no gap after it.
        assert_eq!(super::rows(vec![r(0, u64::MAX)], u64::MAX).len(), 1);
    }

    #[test]
    fn rows_grow_with_size_within_bounds() {
        assert_eq!(row_height(1), 22.0);
        assert!(row_height(1 << 30) > row_height(1 << 20));
        assert!(row_height(1 << 64) <= 64.0);
    }
}
