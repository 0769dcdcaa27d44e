//! Reading `info mtree -D` text: blocks, indentation, absolute addresses
//! made relative, then the resolution of which lines are the same region
//! (see [`Plan`]).

use std::str::FromStr;

use crate::dump::{AddressSpaceBlock, Dump, Node, RegionSection};
use crate::error::{ParseError, ParseErrorKind};
use crate::line::parse_region_line;
use crate::plan::Plan;

/// The deepest nesting of region lines accepted. QEMU machines stay under
/// ten levels; the limit keeps every later walk's stack small.
pub const MAX_DEPTH: usize = 64;

const ADDRESS_SPACE: &str = "address-space: ";
const MEMORY_REGION: &str = "memory-region: ";

/// Reads an `info mtree -D` dump (QEMU 7.2 format).
///
/// Lenient about blank lines (any number separates blocks, the last one
/// may be missing) and carriage returns, and strict about everything QEMU prints one way only
/// (16 lower-case hex digits, two spaces per level, one root per block).
///
/// Printed addresses are absolute; each line also gets its offset in its
/// parent line ([`Node::addr`]), and a subregion may not start before its
/// parent (see [`ParseErrorKind::ChildBeforeParent`]). A region may stick
/// out of its parent, as in QEMU, but must end by 2^64 within it. Sizes
/// follow [`Node::size`] (`start-start` is one byte unless disabled).
///
/// Besides the syntax, every alias target is resolved and the dump is
/// checked to be buildable (no loops, bounded depth), so that
/// [`build`](crate::build) fails only where the core refuses something
/// (such as host memory for a huge RAM region). Never panics.
pub fn parse(text: &str) -> Result<Dump, ParseError> {
    let mut reader = Reader::default();
    let mut lines = text.split('\n').enumerate().peekable();
    let mut last_line = 0;
    while let Some((i, line)) = lines.next() {
        if line.is_empty() && lines.peek().is_none() {
            // The empty piece after the final newline.
            break;
        }
        last_line = i + 1;
        // Monitor captures may keep carriage returns; QEMU prints none.
        let line = line.strip_suffix('\r').unwrap_or(line);
        reader
            .line(i + 1, line)
            .map_err(|kind| ParseError::at(i + 1, kind))?;
    }
    reader.finish(last_line + 1)?;
    let plan = Plan::new(&reader.blocks, &reader.sections)?;
    Ok(Dump {
        blocks: reader.blocks,
        sections: reader.sections,
        plan,
    })
}

impl FromStr for Dump {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Dump, ParseError> {
        parse(text)
    }
}

/// The header(s) the tree being read belongs to.
#[derive(Debug, Default)]
enum Header {
    #[default]
    None,
    Spaces(Vec<(usize, String)>),
    Section(usize, String),
}

impl Header {
    fn text(&self) -> String {
        match self {
            Header::None => String::new(),
            Header::Spaces(names) => names
                .last()
                .map(|(_, n)| format!("{ADDRESS_SPACE}{n}"))
                .unwrap_or_default(),
            Header::Section(_, n) => format!("{MEMORY_REGION}{n}"),
        }
    }
}

#[derive(Debug, Default)]
struct Reader {
    blocks: Vec<AddressSpaceBlock>,
    sections: Vec<RegionSection>,
    header: Header,
    /// Open region lines: `stack[i]` is at level `i + 1`.
    stack: Vec<Node>,
}

impl Reader {
    fn line(&mut self, number: usize, line: &str) -> Result<(), ParseErrorKind> {
        if line.is_empty() {
            return self.end_block();
        }
        if let Some(name) = line.strip_prefix(ADDRESS_SPACE) {
            self.close_tree();
            match &mut self.header {
                Header::Spaces(names) => names.push((number, name.to_owned())),
                Header::None => self.header = Header::Spaces(vec![(number, name.to_owned())]),
                Header::Section(..) => return Err(self.headless()),
            }
            return Ok(());
        }
        if let Some(name) = line.strip_prefix(MEMORY_REGION) {
            self.close_tree();
            if !matches!(self.header, Header::None) {
                return Err(self.headless());
            }
            self.header = Header::Section(number, name.to_owned());
            return Ok(());
        }
        if line.starts_with(' ') {
            return self.region(number, line);
        }
        Err(ParseErrorKind::UnexpectedLine {
            text: line.to_owned(),
        })
    }

    fn headless(&self) -> ParseErrorKind {
        ParseErrorKind::HeaderWithoutTree {
            header: self.header.text(),
        }
    }

    /// A blank line: the tree (if any) is complete; a header must not be
    /// left without one.
    fn end_block(&mut self) -> Result<(), ParseErrorKind> {
        if self.stack.is_empty() && !matches!(self.header, Header::None) {
            return Err(self.headless());
        }
        self.close_tree();
        Ok(())
    }

    fn region(&mut self, number: usize, line: &str) -> Result<(), ParseErrorKind> {
        if matches!(self.header, Header::None) {
            return Err(ParseErrorKind::RegionOutsideBlock);
        }
        let spaces = line.len() - line.trim_start_matches(' ').len();
        if !spaces.is_multiple_of(2) {
            return Err(ParseErrorKind::BadIndent { spaces });
        }
        let level = spaces / 2;
        if level > MAX_DEPTH {
            return Err(ParseErrorKind::NestingTooDeep { max: MAX_DEPTH });
        }
        let previous = self.stack.len();
        if level == 1 && previous > 0 {
            return Err(ParseErrorKind::SecondRoot);
        }
        if level > previous + 1 {
            return Err(ParseErrorKind::SkippedLevel { level, previous });
        }
        let fields = parse_region_line(&line[spaces..])?;
        while self.stack.len() >= level {
            self.pop();
        }
        let mut node = Node {
            line: number,
            start: fields.start,
            end: fields.end,
            addr: fields.start,
            priority: fields.priority,
            kind: fields.kind,
            name: fields.name,
            alias: fields.alias,
            disabled: fields.disabled,
            children: Vec::new(),
        };
        if let Some(parent) = self.stack.last() {
            if parent.alias.is_some() {
                return Err(ParseErrorKind::AliasWithChildren {
                    alias: parent.name.clone(),
                });
            }
            node.addr =
                node.start
                    .checked_sub(parent.start)
                    .ok_or(ParseErrorKind::ChildBeforeParent {
                        child: node.start,
                        parent: parent.start,
                    })?;
        }
        check_extent(&node)?;
        self.stack.push(node);
        Ok(())
    }

    /// Closes the deepest open line into its parent (or completes the
    /// tree when it is the root).
    fn pop(&mut self) {
        let Some(node) = self.stack.pop() else { return };
        match self.stack.last_mut() {
            Some(parent) => parent.children.push(node),
            None => self.store(node),
        }
    }

    fn close_tree(&mut self) {
        while !self.stack.is_empty() {
            self.pop();
        }
    }

    fn store(&mut self, root: Node) {
        match std::mem::take(&mut self.header) {
            Header::Spaces(names) => self.blocks.push(AddressSpaceBlock { names, root }),
            Header::Section(line, name) => self.sections.push(RegionSection { line, name, root }),
            // Region lines are refused before any header.
            Header::None => {}
        }
    }

    fn finish(&mut self, eof_line: usize) -> Result<(), ParseError> {
        if self.stack.is_empty() && !matches!(self.header, Header::None) {
            return Err(ParseError::at(eof_line, self.headless()));
        }
        self.close_tree();
        Ok(())
    }
}

/// A region must fit below 2^64 in its parent, an alias's window in its
/// target, and an alias's printed window must be as long as its range.
fn check_extent(node: &Node) -> Result<(), ParseErrorKind> {
    let size = node.size();
    if node.addr as u128 + size > 1 << 64 {
        return Err(ParseErrorKind::EndsPast2_64 {
            what: "region",
            start: node.addr,
            size,
        });
    }
    if let Some(alias) = &node.alias {
        if alias.last.wrapping_sub(alias.offset) != node.end.wrapping_sub(node.start) {
            return Err(ParseErrorKind::AliasWindowMismatch {
                start: node.start,
                end: node.end,
                offset: alias.offset,
                last: alias.last,
            });
        }
        if alias.offset as u128 + size > 1 << 64 {
            return Err(ParseErrorKind::EndsPast2_64 {
                what: "alias window",
                start: alias.offset,
                size,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q35_IO: &str = "\
address-space: I/O
  0000000000000000-000000000000ffff (prio 0, i/o): io
    0000000000000070-0000000000000071 (prio 0, i/o): rtc
      0000000000000070-0000000000000070 (prio 0, i/o): rtc-index
    0000000000000cf8-0000000000000cfb (prio 0, i/o): pci-conf-idx

";

    fn err(text: &str) -> ParseError {
        parse(text).unwrap_err()
    }

    #[test]
    fn nests_lines_by_indentation() {
        let dump = parse(Q35_IO).unwrap();
        let root = &dump.blocks()[0].root;
        assert_eq!(root.name, "io");
        assert_eq!(root.children.len(), 2);
        assert_eq!(root.children[0].children[0].name, "rtc-index");
    }

    #[test]
    fn makes_child_addresses_relative_to_the_parent_line() {
        let text = "\
memory-region: pci
  0000000000001000-0000000000001fff (prio 0, i/o): pci
    0000000000001800-00000000000018ff (prio 0, i/o): bar
";
        let dump = parse(text).unwrap();
        let root = &dump.sections()[0].root;
        assert_eq!(root.addr, 0x1000);
        assert_eq!(root.children[0].addr, 0x800);
    }

    #[test]
    fn consecutive_headers_share_the_tree() {
        let text = "address-space: cpu-memory-0\naddress-space: memory\n  \
                    0000000000000000-ffffffffffffffff (prio 0, i/o): system\n\n";
        let dump = parse(text).unwrap();
        let names: Vec<&str> = dump.address_spaces().map(|(n, _)| n).collect();
        assert_eq!(names, ["cpu-memory-0", "memory"]);
        assert_eq!(dump.blocks().len(), 1);
    }

    #[test]
    fn empty_text_is_an_empty_dump() {
        let dump = parse("").unwrap();
        assert!(dump.blocks().is_empty() && dump.sections().is_empty());
    }

    #[test]
    fn missing_final_blank_line_is_accepted() {
        assert!(parse(Q35_IO.trim_end()).is_ok());
    }

    #[test]
    fn carriage_returns_are_ignored() {
        let dump = parse(&Q35_IO.replace('\n', "\r\n")).unwrap();
        assert_eq!(dump.blocks()[0].root.children[1].name, "pci-conf-idx");
    }

    #[test]
    fn header_at_end_of_input_is_truncation() {
        let e = err("address-space: memory\n");
        assert_eq!(e.line, 2);
        assert!(matches!(e.kind, ParseErrorKind::HeaderWithoutTree { .. }));
    }

    #[test]
    fn header_followed_by_blank_line_has_no_tree() {
        let e = err("address-space: memory\n\n");
        assert_eq!(e.line, 2);
        assert!(matches!(e.kind, ParseErrorKind::HeaderWithoutTree { .. }));
    }

    #[test]
    fn odd_indentation_is_refused_with_its_line() {
        let e = err(
            "address-space: I/O\n  0000000000000000-000000000000ffff (prio 0, i/o): io\n   \
                     0000000000000000-0000000000000007 (prio 0, i/o): dma\n",
        );
        assert_eq!(
            e,
            ParseError::at(3, ParseErrorKind::BadIndent { spaces: 3 })
        );
    }

    #[test]
    fn skipped_level_is_refused() {
        let e = err(
            "address-space: I/O\n  0000000000000000-000000000000ffff (prio 0, i/o): io\n      \
                     0000000000000000-0000000000000007 (prio 0, i/o): dma\n",
        );
        assert_eq!(
            e.kind,
            ParseErrorKind::SkippedLevel {
                level: 3,
                previous: 1
            }
        );
    }

    #[test]
    fn second_root_in_a_block_is_refused() {
        let e = err(
            "address-space: I/O\n  0000000000000000-000000000000ffff (prio 0, i/o): io\n  \
                     0000000000000000-000000000000ffff (prio 0, i/o): io2\n",
        );
        assert_eq!(e, ParseError::at(3, ParseErrorKind::SecondRoot));
    }

    #[test]
    fn child_before_parent_is_refused() {
        let e = err(
            "address-space: m\n  0000000000001000-0000000000001fff (prio 0, i/o): p\n    \
                     0000000000000000-00000000000000ff (prio 0, i/o): c\n",
        );
        assert_eq!(
            e.kind,
            ParseErrorKind::ChildBeforeParent {
                child: 0,
                parent: 0x1000
            }
        );
    }

    #[test]
    fn child_may_stick_out_of_its_parent() {
        let text = "address-space: m\n  0000000000000000-0000000000000fff (prio 0, i/o): p\n    \
                    0000000000000800-00000000000017ff (prio 0, i/o): c\n";
        assert!(parse(text).is_ok());
    }

    #[test]
    fn root_wrapping_past_2_64_is_refused() {
        let e = err("address-space: m\n  0000000000001000-0000000000000fff (prio 0, i/o): p\n");
        assert!(matches!(
            e.kind,
            ParseErrorKind::EndsPast2_64 { what: "region", .. }
        ));
    }

    #[test]
    fn alias_window_length_must_match() {
        let e = err("address-space: m\n  0000000000000000-0000000000000fff (prio 0, i/o): p\n    \
                     0000000000000000-00000000000000ff (prio 0, i/o): alias a @p 0000000000000000-0000000000000fff\n");
        assert!(matches!(e.kind, ParseErrorKind::AliasWindowMismatch { .. }));
    }

    #[test]
    fn lines_under_an_alias_are_refused() {
        let e = err("address-space: m\n  0000000000000000-0000000000000fff (prio 0, i/o): alias a @p \
                     0000000000000000-0000000000000fff\n    0000000000000000-00000000000000ff (prio 0, i/o): c\n");
        assert_eq!(e.line, 3);
        assert!(matches!(e.kind, ParseErrorKind::AliasWithChildren { .. }));
    }

    #[test]
    fn region_line_before_any_header_is_refused() {
        let e = err("  0000000000000000-0000000000000fff (prio 0, i/o): p\n");
        assert_eq!(e, ParseError::at(1, ParseErrorKind::RegionOutsideBlock));
    }

    #[test]
    fn stray_text_is_refused() {
        let e = err("FlatView #0\n");
        assert!(matches!(e.kind, ParseErrorKind::UnexpectedLine { .. }));
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused() {
        let mut text = String::from("address-space: m\n");
        for level in 1..=MAX_DEPTH + 1 {
            text.push_str(&"  ".repeat(level));
            text.push_str("0000000000000000-0000000000000fff (prio 0, i/o): r\n");
        }
        assert_eq!(
            err(&text).kind,
            ParseErrorKind::NestingTooDeep { max: MAX_DEPTH }
        );
    }

    #[test]
    fn dump_reads_through_from_str() {
        let dump: Dump = Q35_IO.parse().unwrap();
        assert_eq!(dump.nodes().count(), 4);
    }
}
