//! The grammar of one region line, both ways:
//!
//! ```text
//! START-END (prio P, [nv-]TYPE): NAME[ [disabled]]
//! START-END (prio P, [nv-]TYPE): alias NAME @TARGET OFFSET-LAST[ [disabled]]
//! ```
//!
//! Addresses are 16 lower-case hex digits (QEMU's `%016" PRIx64 "`). Names
//! may contain spaces and `@`; an alias line is split at its first ` @`,
//! so an alias whose own name contains ` @` is misread (QEMU prints such
//! names without any escaping, so no reader can do better).

use std::fmt;

use crate::dump::{AliasOf, Kind};
use crate::error::ParseErrorKind;
use crate::region_type::RegionType;

const DISABLED: &str = " [disabled]";
const ALIAS: &str = "alias ";

/// The fields of one region line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegionLine {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) priority: i32,
    pub(crate) kind: Kind,
    pub(crate) name: String,
    pub(crate) alias: Option<AliasOf>,
    pub(crate) disabled: bool,
}

/// Reads 16 lower-case hex digits.
pub(crate) fn parse_hex16(text: &str) -> Result<u64, ParseErrorKind> {
    let ok = text.len() == 16
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
        .ok_or_else(|| ParseErrorKind::BadAddress {
            text: text.to_owned(),
        })
}

/// Reads `START-END` (two 16-digit addresses).
pub(crate) fn parse_range(text: &str) -> Result<(u64, u64), ParseErrorKind> {
    let (a, b) = text.split_once('-').ok_or(ParseErrorKind::MalformedLine {
        expected: "`START-END` addresses",
    })?;
    Ok((parse_hex16(a)?, parse_hex16(b)?))
}

fn parse_priority(text: &str) -> Result<i32, ParseErrorKind> {
    // `%d` never prints a plus sign; refusing it keeps printing faithful.
    let parsed = if text.starts_with('+') {
        None
    } else {
        text.parse().ok()
    };
    parsed.ok_or_else(|| ParseErrorKind::BadPriority {
        text: text.to_owned(),
    })
}

fn parse_kind(text: &str) -> Result<Kind, ParseErrorKind> {
    let (nonvolatile, rest) = match text.strip_prefix("nv-") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let ty = RegionType::from_text(rest).ok_or_else(|| ParseErrorKind::BadKind {
        text: text.to_owned(),
    })?;
    Ok(Kind { nonvolatile, ty })
}

fn parse_alias(text: &str) -> Result<(String, AliasOf), ParseErrorKind> {
    let malformed = || ParseErrorKind::MalformedAlias {
        text: text.to_owned(),
    };
    let body = text.strip_prefix(ALIAS).ok_or_else(malformed)?;
    let (head, window) = body.rsplit_once(' ').ok_or_else(malformed)?;
    let (name, target) = head.split_once(" @").ok_or_else(malformed)?;
    let (offset, last) = parse_range(window)?;
    Ok((
        name.to_owned(),
        AliasOf {
            target: target.to_owned(),
            offset,
            last,
        },
    ))
}

/// Reads a region line with its indentation already removed.
pub(crate) fn parse_region_line(text: &str) -> Result<RegionLine, ParseErrorKind> {
    let (range, rest) = text.split_once(' ').ok_or(ParseErrorKind::MalformedLine {
        expected: "`START-END (prio P, TYPE): NAME`",
    })?;
    let (start, end) = parse_range(range)?;
    let rest = rest
        .strip_prefix("(prio ")
        .ok_or(ParseErrorKind::MalformedLine {
            expected: "`(prio ` after the address range",
        })?;
    let (priority, rest) = rest.split_once(", ").ok_or(ParseErrorKind::MalformedLine {
        expected: "`, ` after the priority",
    })?;
    let (kind, rest) = rest
        .split_once("): ")
        .ok_or(ParseErrorKind::MalformedLine {
            expected: "`): ` after the region type",
        })?;
    let priority = parse_priority(priority)?;
    let kind = parse_kind(kind)?;
    let (rest, disabled) = match rest.strip_suffix(DISABLED) {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let (name, alias) = if rest.starts_with(ALIAS) {
        let (name, alias) = parse_alias(rest)?;
        (name, Some(alias))
    } else {
        (rest.to_owned(), None)
    };
    Ok(RegionLine {
        start,
        end,
        priority,
        kind,
        name,
        alias,
        disabled,
    })
}

/// `START-END` as QEMU prints it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range(pub(crate) u64, pub(crate) u64);

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{:016x}", self.0, self.1)
    }
}

/// The last address QEMU prints for `size` bytes from `start` (its
/// `MR_SIZE`: `size - 1`, or 0 for an empty region; modulo 2^64).
pub(crate) fn printed_end(start: u64, size: u128) -> u64 {
    start.wrapping_add(size.saturating_sub(1) as u64)
}

/// One region line to print, without indentation or newline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PrintedLine<'a> {
    pub(crate) start: u64,
    pub(crate) size: u128,
    pub(crate) priority: i32,
    pub(crate) kind: Kind,
    pub(crate) name: &'a str,
    /// Target name and offset.
    pub(crate) alias: Option<(&'a str, u64)>,
    pub(crate) disabled: bool,
}

impl fmt::Display for PrintedLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = printed_end(self.start, self.size);
        write!(
            f,
            "{} (prio {}, {}): ",
            Range(self.start, end),
            self.priority,
            self.kind
        )?;
        match self.alias {
            Some((target, offset)) => {
                let last = printed_end(offset, self.size);
                write!(f, "{ALIAS}{} @{target} {}", self.name, Range(offset, last))?;
            }
            None => f.write_str(self.name)?,
        }
        if self.disabled {
            f.write_str(DISABLED)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_region_line() {
        let l =
            parse_region_line("00000000000c0000-00000000000dffff (prio 1, rom): pc.rom").unwrap();
        assert_eq!((l.start, l.end, l.priority), (0xc0000, 0xdffff, 1));
        assert_eq!(l.kind.ty, RegionType::Rom);
        assert_eq!(l.name, "pc.rom");
        assert!(l.alias.is_none() && !l.disabled);
    }

    #[test]
    fn reads_disabled_alias_with_at_sign_in_target_and_spaces_in_name() {
        let text = "0000000000000000-ffffffffffffffff (prio 0, i/o): alias bus master \
                    @pci@800000020000001.iommu-root 0000000000000000-ffffffffffffffff [disabled]";
        let l = parse_region_line(text).unwrap();
        assert_eq!(l.name, "bus master");
        let alias = l.alias.unwrap();
        assert_eq!(alias.target, "pci@800000020000001.iommu-root");
        assert_eq!((alias.offset, alias.last), (0, u64::MAX));
        assert!(l.disabled);
    }

    #[test]
    fn reads_negative_priority_and_nv_prefix() {
        let l = parse_region_line("0000000000000000-0000000000000fff (prio -1000, nv-ram): nvdimm")
            .unwrap();
        assert_eq!(l.priority, -1000);
        assert!(l.kind.nonvolatile);
        assert_eq!(l.kind.ty, RegionType::Ram);
    }

    #[test]
    fn refuses_upper_case_and_short_addresses() {
        for bad in ["00000000000000AB", "0000000000ab", "000000000000000g"] {
            assert!(matches!(
                parse_hex16(bad),
                Err(ParseErrorKind::BadAddress { .. })
            ));
        }
    }

    #[test]
    fn refuses_unknown_type() {
        let err =
            parse_region_line("0000000000000000-0000000000000fff (prio 0, mmio): x").unwrap_err();
        assert_eq!(
            err,
            ParseErrorKind::BadKind {
                text: "mmio".into()
            }
        );
    }

    #[test]
    fn refuses_plus_sign_and_overflowing_priority() {
        for p in ["+1", "2147483648", "x"] {
            let text = format!("0000000000000000-0000000000000fff (prio {p}, i/o): x");
            assert!(matches!(
                parse_region_line(&text),
                Err(ParseErrorKind::BadPriority { .. })
            ));
        }
    }

    #[test]
    fn refuses_alias_without_window() {
        let err = parse_region_line("0000000000000000-0000000000000fff (prio 0, ram): alias a @b")
            .unwrap_err();
        assert!(matches!(
            err,
            ParseErrorKind::BadAddress { .. } | ParseErrorKind::MalformedAlias { .. }
        ));
    }

    #[test]
    fn truncated_line_is_malformed_not_a_panic() {
        for cut in [
            "0000000000000000-0000000000000fff",
            "0000000000000000-0000000000000fff (prio 0",
            "é",
        ] {
            assert!(parse_region_line(cut).is_err());
        }
    }

    #[test]
    fn printed_line_reads_back_identically() {
        let text = "0000000000000000-0000000007ffffff (prio 0, ram): alias ram-below-4g \
                    @pc.ram 0000000000000000-0000000007ffffff [disabled]";
        let l = parse_region_line(text).unwrap();
        let alias = l.alias.as_ref().unwrap();
        let printed = PrintedLine {
            start: l.start,
            size: 0x800_0000,
            priority: l.priority,
            kind: l.kind,
            name: &l.name,
            alias: Some((&alias.target, alias.offset)),
            disabled: l.disabled,
        };
        assert_eq!(printed.to_string(), text);
    }

    #[test]
    fn empty_region_prints_start_as_end() {
        assert_eq!(printed_end(0x800_0000, 0), 0x800_0000);
        assert_eq!(printed_end(0, 1 << 64), u64::MAX);
    }
}
