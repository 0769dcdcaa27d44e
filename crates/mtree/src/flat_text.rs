//! Reading `info mtree -f` text, as loosely as the reference comparison
//! (`compare-flat.py`) does: only `FlatView #` headers, `AS "NAME", root:`
//! lines and range lines count; trailing white space and ` KVM` markers
//! are ignored.

/// One `FlatView #n` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FlatBlock<'a> {
    /// The address spaces that share the view.
    pub(crate) spaces: Vec<&'a str>,
    /// Range lines, without indentation or trailing markers.
    pub(crate) ranges: Vec<&'a str>,
}

/// The blocks of a flat dump, plus whether any `FlatView #` header was
/// seen (lines before the first header form a block of their own, as in
/// the reference script).
pub(crate) fn flat_blocks(text: &str) -> (Vec<FlatBlock<'_>>, bool) {
    let mut blocks = vec![FlatBlock::default()];
    let mut headers = false;
    for raw in text.lines() {
        let line = raw.trim_end();
        let line = line.strip_suffix(" KVM").unwrap_or(line);
        if line.starts_with("FlatView #") {
            headers = true;
            blocks.push(FlatBlock::default());
        } else if let Some(name) = space_name(line) {
            blocks.last_mut().expect("never empty").spaces.push(name);
        } else if is_range_line(line) {
            blocks
                .last_mut()
                .expect("never empty")
                .ranges
                .push(line.trim());
        }
    }
    (blocks, headers)
}

/// The name in ` AS "NAME", root: ROOT` (the last `", root: ` ends it, as
/// with the reference script's greedy match).
fn space_name(line: &str) -> Option<&str> {
    let rest = line.strip_prefix(" AS \"")?;
    let (name, _root) = rest.rsplit_once("\", root: ")?;
    Some(name)
}

/// `  START-END ` with 16-digit lower-case addresses.
fn is_range_line(line: &str) -> bool {
    let hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    match line.as_bytes() {
        [b' ', b' ', rest @ ..] if rest.len() >= 34 => {
            hex(&rest[..16]) && rest[16] == b'-' && hex(&rest[17..33]) && rest[33] == b' '
        }
        _ => false,
    }
}

/// The region name of a range line: after `): `, without ` @OFFSET`.
pub(crate) fn range_region_name(range: &str) -> Option<&str> {
    let (_, name) = range.split_once("): ")?;
    match name.rsplit_once(" @") {
        Some((head, offset))
            if offset.len() == 16 && offset.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Some(head)
        }
        _ => Some(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAT: &str = "\
FlatView #0
 AS \"memory\", root: system
 AS \"cpu-memory-0\", root: system
 Root memory region: system
  0000000000000000-00000000000bffff (prio 0, ram): pc.ram KVM
  00000000000e0000-00000000000fffff (prio 0, rom): pc.bios @0000000000020000   

FlatView #1
 AS \"mch\", root: bus master container
 Root memory region: (none)
  No rendered FlatView

";

    #[test]
    fn groups_spaces_and_ranges_by_view() {
        let (blocks, headers) = flat_blocks(FLAT);
        assert!(headers);
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[1].spaces, ["memory", "cpu-memory-0"]);
        assert_eq!(
            blocks[1].ranges,
            [
                "0000000000000000-00000000000bffff (prio 0, ram): pc.ram",
                "00000000000e0000-00000000000fffff (prio 0, rom): pc.bios @0000000000020000"
            ]
        );
        assert_eq!(blocks[2].spaces, ["mch"]);
        assert!(blocks[2].ranges.is_empty());
    }

    #[test]
    fn range_names_drop_the_offset() {
        let (blocks, _) = flat_blocks(FLAT);
        let names: Vec<&str> = blocks[1]
            .ranges
            .iter()
            .filter_map(|r| range_region_name(r))
            .collect();
        assert_eq!(names, ["pc.ram", "pc.bios"]);
    }

    #[test]
    fn names_with_spaces_and_at_signs_survive() {
        assert_eq!(
            range_region_name(
                "0000000000000000-0000000000000fff (prio 0, i/o): vga ioports remapped"
            ),
            Some("vga ioports remapped")
        );
        assert_eq!(
            range_region_name(
                "0000000000000000-0000000000000fff (prio 0, i/o): msi @ pci@800000020000000"
            ),
            Some("msi @ pci@800000020000000")
        );
    }

    #[test]
    fn text_without_headers_is_flagged() {
        let (_, headers) = flat_blocks("address-space: memory\n");
        assert!(!headers);
    }
}
