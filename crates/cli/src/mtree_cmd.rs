//! `addrspace mtree`: QEMU `info mtree` dumps.

use std::io::Write;
use std::path::{Path, PathBuf};

use addrspace::mtree::{build, parse, print_flat, print_tree, Built, Hints};
use clap::Subcommand;

use addrspace::describe::RangeInfo;

use crate::error::CliError;
use crate::json;

/// The `mtree` subcommands.
#[derive(Debug, Subcommand)]
pub enum MtreeCommand {
    /// Build an `info mtree -D` dump and print its flat views as
    /// `info mtree -f` does.
    #[command(after_help = "EXAMPLES:
  addrspace mtree flat tests/data/conformance/qemu-7.2/x86_64-q35-S.tree \\
      --hints tests/data/conformance/qemu-7.2/x86_64-q35-S.flat
  addrspace mtree flat tests/data/conformance/qemu-7.2/x86_64-q35-S.tree --json")]
    Flat {
        /// The `info mtree -D` text.
        tree: PathBuf,
        /// An `info mtree -f` text of the same machine: which `i/o` regions
        /// map their own MMIO is taken from it (nothing else is).
        #[arg(long, value_name = "FLAT")]
        hints: Option<PathBuf>,
        /// An alias name whose aliases are read-only (QEMU's PAM aliases
        /// are `pam-rom`); repeatable.
        #[arg(long = "readonly-alias", value_name = "NAME")]
        readonly_aliases: Vec<String>,
        /// Print one JSON document: every address space with its ranges
        /// (region, kind, offset, attributes, the alias it is seen
        /// through; addresses as hex strings).
        #[arg(long)]
        json: bool,
    },
    /// Build an `info mtree -D` dump and print its tree back.
    #[command(after_help = "EXAMPLES:
  addrspace mtree tree tests/data/conformance/qemu-7.2/x86_64-q35-S.tree")]
    Tree {
        /// The `info mtree -D` text.
        tree: PathBuf,
    },
    /// What a listener would hear going from the machine of dump A to the
    /// machine of dump B.
    ///
    /// Both dumps are built; per address space (paired by name) their flat
    /// views are compared as the dispatcher compares an old view with a
    /// new one: a range identical in both is a region_nop, every other
    /// range of A a region_del and every other range of B a region_add
    /// (deletions first, in address order). The dumps are separate
    /// machines, so regions are matched by name and kind. Address spaces
    /// in only one dump are named as such.
    #[command(after_help = "EXAMPLES:
  # The q35 machine from reset (-S) to a booted guest:
  addrspace mtree diff tests/data/conformance/qemu-7.2/x86_64-q35-S.tree \\
      tests/data/conformance/qemu-7.2/x86_64-q35-booted.tree --as memory
  # The same, for a program:
  addrspace mtree diff A.tree B.tree --hints-a A.flat --hints-b B.flat --json")]
    Diff {
        /// The `info mtree -D` text of the machine before.
        a: PathBuf,
        /// The `info mtree -D` text of the machine after.
        b: PathBuf,
        /// `info mtree -f` text of A (see `mtree flat --hints`).
        #[arg(long, value_name = "FLAT")]
        hints_a: Option<PathBuf>,
        /// `info mtree -f` text of B.
        #[arg(long, value_name = "FLAT")]
        hints_b: Option<PathBuf>,
        /// Read-only alias names, for both dumps (repeatable).
        #[arg(long = "readonly-alias", value_name = "NAME")]
        readonly_aliases: Vec<String>,
        /// Only this address space.
        #[arg(long = "as", value_name = "NAME")]
        space: Option<String>,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

impl MtreeCommand {
    /// Runs the command, writing to `out`.
    pub fn run(self, out: &mut dyn Write) -> Result<(), CliError> {
        match self {
            MtreeCommand::Flat {
                tree,
                hints,
                readonly_aliases,
                json,
            } => {
                let h = load_hints(hints.as_deref(), readonly_aliases)?;
                let built = load(&tree, &h)?;
                if json {
                    flat_json(out, &built)
                } else {
                    emit(out, &print_flat(built.memory(), &built.space_ids())?)
                }
            }
            MtreeCommand::Diff {
                a,
                b,
                hints_a,
                hints_b,
                readonly_aliases,
                space,
                json,
            } => {
                let ha = load_hints(hints_a.as_deref(), readonly_aliases.clone())?;
                let hb = load_hints(hints_b.as_deref(), readonly_aliases)?;
                let (a, b) = (load(&a, &ha)?, load(&b, &hb)?);
                let diffs = crate::diff::diff(&a, &b, space.as_deref())?;
                if json {
                    crate::diff::print_json(out, &diffs)
                } else {
                    crate::diff::print(out, &diffs)
                }
            }
            MtreeCommand::Tree { tree } => {
                let built = load(&tree, &Hints::new())?;
                emit(out, &print_tree(built.memory(), &built.space_ids())?)
            }
        }
    }
}

/// Reads a file, naming it in the error.
pub(crate) fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The hints from an optional flat file plus read-only alias names.
pub(crate) fn load_hints(
    flat: Option<&Path>,
    readonly_aliases: Vec<String>,
) -> Result<Hints, CliError> {
    let mut h = match flat {
        Some(path) => Hints::from_flat(&read(path)?).map_err(|source| CliError::Hints {
            path: path.to_owned(),
            source,
        })?,
        None => Hints::new(),
    };
    for name in readonly_aliases {
        h.add_readonly_alias(name);
    }
    Ok(h)
}

/// `mtree flat --json`: `{"address_spaces": [{"name", "ranges"}]}`.
fn flat_json(out: &mut dyn Write, built: &Built) -> Result<(), CliError> {
    let mem = built.memory();
    let mut spaces = Vec::new();
    for (name, id) in built.address_spaces() {
        let view = mem.view(*id)?;
        let ranges = view
            .ranges
            .iter()
            .map(|r| Ok(json::Range::from(&RangeInfo::of(mem, *id, r)?)))
            .collect::<Result<Vec<_>, addrspace::Error>>()?;
        spaces.push(serde_json::json!({ "name": name, "ranges": ranges }));
    }
    json::emit(out, &serde_json::json!({ "address_spaces": spaces }))
}

/// Reads, parses and builds a tree file.
pub(crate) fn load(path: &Path, hints: &Hints) -> Result<Built, CliError> {
    let dump = parse(&read(path)?).map_err(|e| CliError::parse(path, e))?;
    build(&dump, hints).map_err(|source| CliError::Build {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

fn emit(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    out.write_all(text.as_bytes()).map_err(CliError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` in a file `name` in a fresh directory, and the directory,
    /// which removes both when dropped.
    fn temp_file(name: &str, text: &str) -> (PathBuf, tempfile::TempDir) {
        let dir = tempfile::Builder::new()
            .prefix("addrspace-cli-")
            .tempdir()
            .unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (path, dir)
    }

    const TREE: &str = "address-space: memory\n  0000000000000000-ffffffffffffffff (prio 0, i/o): system\n    \
                        0000000000000000-0000000000000fff (prio 0, ram): ram\n    \
                        0000000000001000-0000000000001fff (prio 0, ram): alias ro @ram 0000000000000000-0000000000000fff\n\n\
                        memory-region: ram\n  0000000000000000-0000000000000fff (prio 0, ram): ram\n\n";

    #[test]
    fn tree_prints_the_dump_back() {
        let (path, _dir) = temp_file("back.tree", TREE);
        let mut out = Vec::new();
        MtreeCommand::Tree { tree: path }.run(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), TREE);
    }

    #[test]
    fn flat_applies_readonly_aliases() {
        let (path, _dir) = temp_file("ro.tree", TREE);
        let mut out = Vec::new();
        let cmd = MtreeCommand::Flat {
            tree: path,
            hints: None,
            readonly_aliases: vec!["ro".into()],
            json: false,
        };
        cmd.run(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("  0000000000001000-0000000000001fff (prio 0, rom): ram\n"),
            "{text}"
        );
    }

    #[test]
    fn missing_file_is_a_read_error_naming_it() {
        let err = MtreeCommand::Tree {
            tree: "/nonexistent/x.tree".into(),
        }
        .run(&mut Vec::new())
        .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("cannot read /nonexistent/x.tree: "));
    }

    #[test]
    fn hints_that_are_not_a_flat_dump_are_refused() {
        let (tree, _dir) = temp_file("h.tree", TREE);
        let err = MtreeCommand::Flat {
            tree: tree.clone(),
            hints: Some(tree),
            readonly_aliases: Vec::new(),
            json: false,
        }
        .run(&mut Vec::new())
        .unwrap_err();
        assert!(matches!(err, CliError::Hints { .. }));
    }
}
