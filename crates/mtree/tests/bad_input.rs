//! Every malformed `info mtree` dump, flat dump and unbuildable tree gets a
//! typed error naming the line and the bad value.
//!
//! Reading holds no state, so "nothing changed" means: the same text gives
//! the same error every time, and a good dump read afterwards reads as it
//! did before. Building makes a new `Memory` or nothing.

use addrspace_mtree::{
    build, parse, BuildError, Hints, HintsError, ParseError, ParseErrorKind, MAX_DEPTH,
    MAX_RENDER_DEPTH,
};

/// A good dump, read before and after each refusal.
const GOOD: &str = "\
address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000000000-0000000000000fff (prio 0, ram): ram

";

/// Checks that `text` is refused at `line` with `kind`, that the message
/// starts with the line and names `names`, and that reading is unaffected.
fn refused(text: &str, line: usize, kind: ParseErrorKind, names: &str) {
    let good = format!("{:?}", parse(GOOD).unwrap());
    let err = parse(text).expect_err("the dump must be refused");
    assert_eq!(err, ParseError { line, kind });
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("line {line}: ")) && message.contains(names),
        "message {message:?} does not name line {line} and {names:?}"
    );
    assert_eq!(
        parse(text).unwrap_err(),
        err,
        "the same text, another error"
    );
    assert_eq!(
        format!("{:?}", parse(GOOD).unwrap()),
        good,
        "a good dump reads differently"
    );
}

/// A block `m` with a full-size root and the given lines under it.
fn under_root(lines: &str) -> String {
    format!("address-space: m\n  0000000000000000-ffffffffffffffff (prio 0, i/o): root\n{lines}\n")
}

#[test]
fn address_with_upper_case_digits() {
    refused(
        "address-space: m\n  0000000000000000-000000000000FFFF (prio 0, i/o): io\n",
        2,
        ParseErrorKind::BadAddress {
            text: "000000000000FFFF".into(),
        },
        "\"000000000000FFFF\"",
    );
}

#[test]
fn address_with_too_few_digits() {
    refused(
        "address-space: m\n  0-000000000000ffff (prio 0, i/o): io\n",
        2,
        ParseErrorKind::BadAddress { text: "0".into() },
        "\"0\"",
    );
}

#[test]
fn odd_indentation() {
    refused(
        "address-space: m\n   0000000000000000-000000000000ffff (prio 0, i/o): io\n",
        2,
        ParseErrorKind::BadIndent { spaces: 3 },
        "3 spaces",
    );
}

#[test]
fn unknown_region_type() {
    refused(
        "address-space: m\n  0000000000000000-000000000000ffff (prio 0, rum): io\n",
        2,
        ParseErrorKind::BadKind { text: "rum".into() },
        "\"rum\"",
    );
}

#[test]
fn priority_that_is_not_a_number() {
    refused(
        "address-space: m\n  0000000000000000-000000000000ffff (prio high, i/o): io\n",
        2,
        ParseErrorKind::BadPriority {
            text: "high".into(),
        },
        "\"high\"",
    );
}

#[test]
fn priority_with_a_plus_sign() {
    refused(
        "address-space: m\n  0000000000000000-000000000000ffff (prio +1, i/o): io\n",
        2,
        ParseErrorKind::BadPriority { text: "+1".into() },
        "\"+1\"",
    );
}

#[test]
fn region_line_without_a_priority() {
    refused(
        "address-space: m\n  0000000000000000-000000000000ffff i/o: io\n",
        2,
        ParseErrorKind::MalformedLine {
            expected: "`(prio ` after the address range",
        },
        "(prio",
    );
}

#[test]
fn region_line_without_a_range() {
    refused(
        "address-space: m\n  io\n",
        2,
        ParseErrorKind::MalformedLine {
            expected: "`START-END (prio P, TYPE): NAME`",
        },
        "START-END",
    );
}

#[test]
fn alias_without_a_target() {
    refused(
        &under_root(
            "    0000000000000000-0000000000000fff (prio 0, i/o): alias a 0000000000000000-0000000000000fff",
        ),
        3,
        ParseErrorKind::MalformedAlias {
            text: "alias a 0000000000000000-0000000000000fff".into(),
        },
        "\"alias a 0000000000000000-0000000000000fff\"",
    );
}

#[test]
fn alias_window_of_another_length() {
    refused(
        &under_root(
            "    0000000000000000-00000000000000ff (prio 0, i/o): alias a @root 0000000000001000-0000000000001fff",
        ),
        3,
        ParseErrorKind::AliasWindowMismatch {
            start: 0,
            end: 0xff,
            offset: 0x1000,
            last: 0x1fff,
        },
        "0x1000-0x1fff",
    );
}

#[test]
fn lines_under_an_alias() {
    refused(
        &under_root(
            "    0000000000000000-0000000000000fff (prio 0, i/o): alias a @root 0000000000000000-0000000000000fff\n      \
             0000000000000000-00000000000000ff (prio 0, i/o): c",
        ),
        4,
        ParseErrorKind::AliasWithChildren { alias: "a".into() },
        "\"a\"",
    );
}

#[test]
fn alias_of_a_region_that_is_not_there() {
    refused(
        &under_root(
            "    0000000000000000-0000000000000fff (prio 0, i/o): alias a @nowhere 0000000000000000-0000000000000fff",
        ),
        3,
        ParseErrorKind::UnknownAliasTarget {
            target: "nowhere".into(),
        },
        "\"nowhere\"",
    );
}

#[test]
fn alias_of_a_name_two_regions_share() {
    refused(
        &under_root(
            "    0000000000000000-0000000000000fff (prio 0, i/o): dev\n    \
             0000000000001000-0000000000002fff (prio 0, i/o): dev\n    \
             0000000000010000-0000000000010fff (prio 0, i/o): alias a @dev 0000000000000000-0000000000000fff",
        ),
        5,
        ParseErrorKind::AmbiguousAliasTarget {
            target: "dev".into(),
            candidates: 2,
        },
        "\"dev\"",
    );
}

#[test]
fn subregion_before_its_parent() {
    refused(
        "address-space: m\n  0000000000001000-0000000000001fff (prio 0, i/o): p\n    \
         0000000000000000-00000000000000ff (prio 0, i/o): c\n",
        3,
        ParseErrorKind::ChildBeforeParent {
            child: 0,
            parent: 0x1000,
        },
        "0x1000",
    );
}

#[test]
fn region_that_wraps_past_2_64() {
    refused(
        "address-space: m\n  0000000000001000-0000000000000fff (prio 0, i/o): p\n",
        2,
        ParseErrorKind::EndsPast2_64 {
            what: "region",
            start: 0x1000,
            size: 1 << 64,
        },
        "0x1000",
    );
}

#[test]
fn alias_window_that_wraps_past_2_64() {
    refused(
        &under_root(
            "    0000000000000000-0000000000000fff (prio 0, i/o): alias a @root fffffffffffff800-00000000000007ff",
        ),
        3,
        ParseErrorKind::EndsPast2_64 {
            what: "alias window",
            start: 0xffff_ffff_ffff_f800,
            size: 0x1000,
        },
        "alias window at 0xfffffffffffff800",
    );
}

#[test]
fn alias_showing_its_own_parent() {
    refused(
        &under_root(
            "    0000000000000000-0000000000000fff (prio 0, i/o): alias loop @root 0000000000000000-0000000000000fff",
        ),
        3,
        ParseErrorKind::Cycle {
            region: "root".into(),
        },
        "\"root\"",
    );
}

#[test]
fn header_without_a_tree() {
    refused(
        "address-space: memory\n\n",
        2,
        ParseErrorKind::HeaderWithoutTree {
            header: "address-space: memory".into(),
        },
        "\"address-space: memory\"",
    );
}

#[test]
fn nesting_deeper_than_the_limit() {
    let mut text = String::from("address-space: m\n");
    for level in 1..=MAX_DEPTH + 1 {
        text.push_str(&"  ".repeat(level));
        text.push_str("0000000000000000-0000000000000fff (prio 0, i/o): r\n");
    }
    refused(
        &text,
        MAX_DEPTH + 2,
        ParseErrorKind::NestingTooDeep { max: MAX_DEPTH },
        "64 levels",
    );
}

#[test]
fn region_line_before_any_header() {
    refused(
        "  0000000000000000-0000000000000fff (prio 0, i/o): p\n",
        1,
        ParseErrorKind::RegionOutsideBlock,
        "outside any",
    );
}

#[test]
fn alias_chain_deeper_than_the_render_limit() {
    let mut lines = String::new();
    let n = MAX_RENDER_DEPTH + 1;
    for i in 0..n {
        lines.push_str(&format!(
            "    0000000000000000-0000000000000fff (prio 0, i/o): alias a{i} @a{} 0000000000000000-0000000000000fff\n",
            i + 1
        ));
    }
    lines.push_str(&format!(
        "    0000000000000000-0000000000000fff (prio 0, i/o): a{n}"
    ));
    let err = parse(&under_root(&lines)).unwrap_err();
    assert!(
        matches!(&err.kind, ParseErrorKind::RenderTooDeep { region, max } if region.starts_with('a') && *max == MAX_RENDER_DEPTH),
        "{err:?}"
    );
    refused(
        &under_root(&lines),
        err.line,
        err.kind.clone(),
        &format!("more than {MAX_RENDER_DEPTH} levels"),
    );
}

#[test]
fn second_root_in_one_block() {
    refused(
        "address-space: m\n  0000000000000000-000000000000ffff (prio 0, i/o): a\n  \
         0000000000000000-000000000000ffff (prio 0, i/o): b\n",
        3,
        ParseErrorKind::SecondRoot,
        "second top-level region",
    );
}

#[test]
fn indentation_that_skips_a_level() {
    refused(
        "address-space: m\n  0000000000000000-000000000000ffff (prio 0, i/o): io\n      \
         0000000000000000-0000000000000007 (prio 0, i/o): dma\n",
        3,
        ParseErrorKind::SkippedLevel {
            level: 3,
            previous: 1,
        },
        "from level 1 to level 3",
    );
}

#[test]
fn stray_text() {
    refused(
        "FlatView #0\n",
        1,
        ParseErrorKind::UnexpectedLine {
            text: "FlatView #0".into(),
        },
        "\"FlatView #0\"",
    );
}

#[test]
fn hints_from_text_that_is_not_a_flat_dump() {
    let err = Hints::from_flat(GOOD).unwrap_err();
    assert_eq!(err, HintsError::NoFlatViews);
    assert!(err.to_string().contains("FlatView #"));
    assert_eq!(Hints::from_flat(GOOD).unwrap_err(), err);
}

#[test]
fn build_of_ram_larger_than_the_host_can_map() {
    // 2^64 bytes of RAM: the dump is well formed, the host cannot back it.
    // The error names the line and the region; no `Memory` is returned.
    let text = "address-space: memory\n  0000000000000000-ffffffffffffffff (prio 0, ram): huge\n\n";
    let dump = parse(text).unwrap();
    let err = build(&dump, &Hints::new()).map(drop).unwrap_err();
    assert!(
        matches!(
            &err,
            BuildError::Core { line: 2, name, source: addrspace_core::Error::BackingAllocation { size } }
                if name == "huge" && *size == 1 << 64
        ),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .starts_with("line 2: \"huge\": cannot map 0x10000000000000000"));
    assert!(build(&parse(GOOD).unwrap(), &Hints::new()).is_ok());
}
