//! Errors of this crate: reading a dump, reading hints, building.

/// A dump could not be read: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// Line number, from 1 (the line after the last for truncated input).
    pub line: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What is wrong with a dump. Sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// Region lines are nested under an alias; QEMU aliases have no
    /// subregions.
    #[error("alias {alias:?} has subregion lines; aliases cannot have subregions")]
    AliasWithChildren {
        /// The alias's name.
        alias: String,
    },
    /// An alias's printed window is not as long as its printed range.
    #[error("alias window {offset:#x}-{last:#x} is not as long as the alias's range {start:#x}-{end:#x}")]
    AliasWindowMismatch {
        /// Printed first address of the alias.
        start: u64,
        /// Printed last address of the alias.
        end: u64,
        /// Printed first offset in the target.
        offset: u64,
        /// Printed last offset in the target.
        last: u64,
    },
    /// Several different regions could be the alias's target and the dump
    /// does not say which (see the `targets` module for the rules).
    #[error("alias target {target:?} is ambiguous: {candidates} different regions have that name")]
    AmbiguousAliasTarget {
        /// The name after `@`.
        target: String,
        /// How many distinct regions it could be.
        candidates: usize,
    },
    /// An address is not 16 lower-case hexadecimal digits.
    #[error("bad address {text:?}: expected 16 lower-case hex digits")]
    BadAddress {
        /// The offending text.
        text: String,
    },
    /// A region line is indented by an odd number of spaces.
    #[error("bad indentation: {spaces} spaces (QEMU indents by two per level)")]
    BadIndent {
        /// Leading spaces.
        spaces: usize,
    },
    /// The type column is not one QEMU prints.
    #[error("unknown region type {text:?} (expected [nv-]ram, rom, romd, ramd or i/o)")]
    BadKind {
        /// The offending text.
        text: String,
    },
    /// The priority is not a 32-bit decimal integer.
    #[error("bad priority {text:?}")]
    BadPriority {
        /// The offending text.
        text: String,
    },
    /// A subregion line starts before its parent line. QEMU prints that
    /// only when parent start plus offset passes 2^64 and wraps, which no
    /// machine does; reading it as such would turn a corrupt line into a
    /// far-away region without a word, so it is refused.
    #[error("subregion starts at {child:#x}, before its parent's start {parent:#x}")]
    ChildBeforeParent {
        /// The subregion's printed start.
        child: u64,
        /// The parent's printed start.
        parent: u64,
    },
    /// Regions and aliases form a loop: a region would contain or show
    /// itself, so it could never be rendered.
    #[error("region {region:?} contains or shows itself through aliases")]
    Cycle {
        /// A region on the loop.
        region: String,
    },
    /// A region, or an alias's window in its target, ends past 2^64.
    #[error("{what} at {start:#x} with size {size:#x} ends past 2^64")]
    EndsPast2_64 {
        /// `"region"` or `"alias window"`.
        what: &'static str,
        /// Its start, relative to its parent (or the target).
        start: u64,
        /// Its size.
        size: u128,
    },
    /// A header has no tree under it (the input may be truncated).
    #[error("{header:?} has no region tree under it")]
    HeaderWithoutTree {
        /// The header line.
        header: String,
    },
    /// An alias line does not read `alias NAME @TARGET OFFSET-LAST`.
    #[error("malformed alias {text:?}: expected `alias NAME @TARGET OFFSET-LAST`")]
    MalformedAlias {
        /// The text after the type column.
        text: String,
    },
    /// A region line does not read `START-END (prio P, TYPE): NAME`.
    #[error("malformed region line: expected {expected}")]
    MalformedLine {
        /// What was expected where the line went wrong.
        expected: &'static str,
    },
    /// Region lines are nested deeper than this crate accepts.
    #[error("region lines nested deeper than {max} levels")]
    NestingTooDeep {
        /// The limit.
        max: usize,
    },
    /// A region line comes before any header.
    #[error("region line outside any `address-space:` or `memory-region:` block")]
    RegionOutsideBlock,
    /// Nesting plus alias hops go deeper than this crate renders safely.
    #[error("region {region:?} renders through more than {max} levels of subregions and aliases")]
    RenderTooDeep {
        /// The region where the limit was passed.
        region: String,
        /// The limit.
        max: usize,
    },
    /// A block has more than one line at the top level.
    #[error("second top-level region in one block; a block has a single root")]
    SecondRoot,
    /// A line is indented more than one level deeper than the line above.
    #[error("indentation jumps from level {previous} to level {level}")]
    SkippedLevel {
        /// The line's level.
        level: usize,
        /// The level of the line above.
        previous: usize,
    },
    /// A line is neither a header, a region line nor blank.
    #[error("unexpected line {text:?}")]
    UnexpectedLine {
        /// The line.
        text: String,
    },
    /// No region in the dump has the alias target's name.
    #[error("alias target {target:?} is not a region in the dump")]
    UnknownAliasTarget {
        /// The name after `@`.
        target: String,
    },
}

impl ParseError {
    pub(crate) fn at(line: usize, kind: ParseErrorKind) -> ParseError {
        ParseError { line, kind }
    }
}

/// A dump that parsed could not be turned into a
/// [`Memory`](addrspace_core::Memory). Sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The commit that renders the views failed (listeners are not
    /// registered during a build, so this means a core bug).
    #[error("commit failed: {source}")]
    Commit {
        /// The core's error.
        source: addrspace_core::Error,
    },
    /// The core refused an operation for the region (or address space) of
    /// this line, e.g. host memory for a huge RAM region could not be
    /// mapped.
    #[error("line {line}: {name:?}: {source}")]
    Core {
        /// The dump line the operation was for.
        line: usize,
        /// The region's or address space's name.
        name: String,
        /// The core's error.
        source: addrspace_core::Error,
    },
}

/// Hints could not be read from an `info mtree -f` text. Sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HintsError {
    /// The text has no `FlatView #n` block: it is not `info mtree -f`
    /// output.
    #[error("no `FlatView #` block found: not `info mtree -f` output")]
    NoFlatViews,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_line_and_cause() {
        let err = ParseError::at(
            7,
            ParseErrorKind::BadAddress {
                text: "00zz".into(),
            },
        );
        assert_eq!(
            err.to_string(),
            "line 7: bad address \"00zz\": expected 16 lower-case hex digits"
        );
    }

    #[test]
    fn build_error_names_line_region_and_core_cause() {
        let err = BuildError::Core {
            line: 3,
            name: "pc.ram".into(),
            source: addrspace_core::Error::BackingAllocation { size: 1 << 64 },
        };
        assert!(err
            .to_string()
            .starts_with("line 3: \"pc.ram\": cannot map"));
    }
}
