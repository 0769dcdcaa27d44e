//! QEMU conformance: every captured machine, rebuilt from its
//! `info mtree -D` tree, must render QEMU's own `info mtree -f` flat views
//! and print its tree back exactly.
//!
//! Cases are every `tests/data/conformance/*/NAME.tree` with a matching
//! `NAME.flat`, so new captures are picked up without touching this file.
//! Each case is built with the only two facts the tree text omits (see
//! `addrspace::mtree::Hints`):
//!
//! - which `i/o` regions terminate, taken from the case's flat file;
//! - which aliases are read-only: `pam-rom`. QEMU's x86 PAM registers map
//!   the BIOS area through per-segment aliases of RAM, and the `pam-rom`
//!   ones are read-only aliases (firmware shadowing after it copied
//!   itself). The tree prints them as `ram` (the type of their target);
//!   only the flat view shows `rom`. No other machine in the corpus has
//!   read-only aliases.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use addrspace::mtree::{build, compare_flat, parse, print_flat, print_tree, Hints};

/// Alias names that QEMU makes read-only (see the module docs).
const READONLY_ALIASES: &[&str] = &["pam-rom"];

/// Every (tree, flat) pair under `tests/data/conformance/*/`, sorted.
fn cases() -> Vec<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conformance");
    let mut found = Vec::new();
    let dirs = std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    for dir in dirs
        .filter_map(Result::ok)
        .map(|d| d.path())
        .filter(|p| p.is_dir())
    {
        let files = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for tree in files.filter_map(Result::ok).map(|f| f.path()) {
            let flat = tree.with_extension("flat");
            if tree.extension().is_some_and(|e| e == "tree") && flat.is_file() {
                found.push((tree, flat));
            }
        }
    }
    found.sort();
    assert!(
        !found.is_empty(),
        "no conformance cases under {}",
        root.display()
    );
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn case_name(tree: &Path) -> String {
    let dir = tree.parent().and_then(Path::file_name).unwrap_or_default();
    let stem = tree.file_stem().unwrap_or_default();
    format!("{}/{}", dir.to_string_lossy(), stem.to_string_lossy())
}

fn hints(flat: &str) -> Hints {
    let mut hints = Hints::from_flat(flat).expect("a flat dump");
    for name in READONLY_ALIASES {
        hints.add_readonly_alias(*name);
    }
    hints
}

/// Renders one case and compares; `Ok((matched, total))` or a report.
fn render_case(tree_path: &Path, flat_path: &Path) -> Result<(usize, usize), String> {
    let (tree, flat) = (read(tree_path), read(flat_path));
    let dump = parse(&tree).map_err(|e| format!("parse: {e}"))?;
    let built = build(&dump, &hints(&flat)).map_err(|e| format!("build: {e}"))?;
    let actual =
        print_flat(built.memory(), &built.space_ids()).map_err(|e| format!("print: {e}"))?;
    let cmp = compare_flat(&flat, &actual);
    if cmp.is_match() {
        Ok((cmp.matched, cmp.expected))
    } else {
        Err(cmp.to_string())
    }
}

#[test]
fn every_case_renders_qemus_flat_views() {
    let mut report = String::new();
    let (mut failed, mut matched, mut total) = (0, 0, 0);
    let cases = cases();
    for (tree, flat) in &cases {
        match render_case(tree, flat) {
            Ok((m, t)) => {
                matched += m;
                total += t;
                writeln!(report, "ok   {} ({m}/{t} address spaces)", case_name(tree)).unwrap();
            }
            Err(diff) => {
                failed += 1;
                writeln!(report, "FAIL {}\n{diff}", case_name(tree)).unwrap();
            }
        }
    }
    println!(
        "{report}{} cases, {failed} failed, {matched}/{total} address spaces",
        cases.len()
    );
    assert_eq!(failed, 0, "\n{report}");
}

/// The first line where two texts differ, for a readable failure.
fn first_difference(want: &str, got: &str) -> String {
    let pairs = want.lines().zip(got.lines()).enumerate();
    match pairs.into_iter().find(|(_, (w, g))| w != g) {
        Some((i, (w, g))) => format!("line {}:\n  want {w}\n  got  {g}", i + 1),
        None => format!(
            "one text is a prefix of the other ({} vs {} lines)",
            want.lines().count(),
            got.lines().count()
        ),
    }
}

#[test]
fn every_case_prints_its_tree_back_exactly() {
    let mut failures = Vec::new();
    for (tree_path, flat_path) in cases() {
        let tree = read(&tree_path);
        let outcome = parse(&tree)
            .map_err(|e| format!("parse: {e}"))
            .and_then(|dump| {
                build(&dump, &hints(&read(&flat_path))).map_err(|e| format!("build: {e}"))
            })
            .and_then(|built| {
                print_tree(built.memory(), &built.space_ids()).map_err(|e| format!("print: {e}"))
            });
        match outcome {
            Ok(printed) if printed == tree => {}
            Ok(printed) => failures.push(format!(
                "{}: {}",
                case_name(&tree_path),
                first_difference(&tree, &printed)
            )),
            Err(e) => failures.push(format!("{}: {e}", case_name(&tree_path))),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Takes every `stride`-th region that has a parent out of it and puts it
/// back (same address, same priority), one commit each, then compares
/// with QEMU again: the engine must patch its views back exactly. Putting
/// a region back makes it the most recent of its equal-priority siblings,
/// so only regions whose position among overlapping equals cannot matter
/// (no sibling at the same priority overlaps them) are moved.
fn churn_case(
    tree_path: &Path,
    flat_path: &Path,
    engine: addrspace::Engine,
    stride: usize,
) -> Result<usize, String> {
    let (tree, flat) = (read(tree_path), read(flat_path));
    let dump = parse(&tree).map_err(|e| format!("parse: {e}"))?;
    let mut built = build(&dump, &hints(&flat)).map_err(|e| format!("build: {e}"))?;
    let spaces = built.space_ids();
    let mem = built.memory_mut();
    mem.set_engine(engine);
    let movable: Vec<_> = mem
        .regions()
        .filter_map(|(id, r)| {
            let parent = r.parent()?;
            let end = r.addr() as u128 + r.size();
            let clash = mem.region(parent).ok()?.subregions().iter().any(|&s| {
                let o = mem.region(s).unwrap();
                s != id
                    && o.priority() == r.priority()
                    && (o.addr() as u128) < end
                    && (r.addr() as u128) < o.addr() as u128 + o.size()
            });
            (!clash).then_some((id, parent, r.addr(), r.priority()))
        })
        .collect();
    let mut moved = 0;
    for &(id, parent, addr, prio) in movable.iter().step_by(stride) {
        mem.del_subregion(parent, id).map_err(|e| e.to_string())?;
        mem.add_subregion_overlap(parent, addr, id, prio)
            .map_err(|e| e.to_string())?;
        moved += 1;
    }
    let actual = print_flat(mem, &spaces).map_err(|e| format!("print: {e}"))?;
    let cmp = compare_flat(&flat, &actual);
    if cmp.is_match() {
        Ok(moved)
    } else {
        Err(cmp.to_string())
    }
}

#[test]
fn every_case_survives_regions_taken_out_and_put_back_with_both_engines() {
    let mut report = String::new();
    let mut failed = 0;
    for (tree, flat) in &cases() {
        for engine in [addrspace::Engine::Incremental, addrspace::Engine::Reference] {
            // The reference engine re-renders everything per commit: sample
            // fewer regions there to keep the test quick.
            let stride = if engine == addrspace::Engine::Reference {
                23
            } else {
                1
            };
            match churn_case(tree, flat, engine, stride) {
                Ok(n) => writeln!(
                    report,
                    "ok   {} {} ({n} regions moved)",
                    case_name(tree),
                    engine.name()
                )
                .unwrap(),
                Err(diff) => {
                    failed += 1;
                    writeln!(report, "FAIL {} {}\n{diff}", case_name(tree), engine.name()).unwrap();
                }
            }
        }
    }
    println!("{report}");
    assert_eq!(failed, 0, "\n{report}");
}
