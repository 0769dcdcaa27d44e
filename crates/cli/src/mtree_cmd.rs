//! `addrspace mtree`: QEMU `info mtree` dumps.

use std::io::Write;
use std::path::{Path, PathBuf};

use addrspace::mtree::{build, parse, print_flat, print_tree, Built, Hints};
use clap::Subcommand;

use crate::error::CliError;

/// The `mtree` subcommands.
#[derive(Debug, Subcommand)]
pub enum MtreeCommand {
    /// Build an `info mtree -D` dump and print its flat views as
    /// `info mtree -f` does.
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
    },
    /// Build an `info mtree -D` dump and print its tree back.
    Tree {
        /// The `info mtree -D` text.
        tree: PathBuf,
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
            } => {
                let h = load_hints(hints.as_deref(), readonly_aliases)?;
                let built = load(&tree, &h)?;
                emit(out, &print_flat(built.memory(), &built.space_ids())?)
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

/// Reads, parses and builds a tree file.
fn load(path: &Path, hints: &Hints) -> Result<Built, CliError> {
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

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("addrspace-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const TREE: &str = "address-space: memory\n  0000000000000000-ffffffffffffffff (prio 0, i/o): system\n    \
                        0000000000000000-0000000000000fff (prio 0, ram): ram\n    \
                        0000000000001000-0000000000001fff (prio 0, ram): alias ro @ram 0000000000000000-0000000000000fff\n\n\
                        memory-region: ram\n  0000000000000000-0000000000000fff (prio 0, ram): ram\n\n";

    #[test]
    fn tree_prints_the_dump_back() {
        let path = temp_file("back.tree", TREE);
        let mut out = Vec::new();
        MtreeCommand::Tree { tree: path }.run(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), TREE);
    }

    #[test]
    fn flat_applies_readonly_aliases() {
        let path = temp_file("ro.tree", TREE);
        let mut out = Vec::new();
        let cmd = MtreeCommand::Flat {
            tree: path,
            hints: None,
            readonly_aliases: vec!["ro".into()],
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
        let tree = temp_file("h.tree", TREE);
        let err = MtreeCommand::Flat {
            tree: tree.clone(),
            hints: Some(tree),
            readonly_aliases: Vec::new(),
        }
        .run(&mut Vec::new())
        .unwrap_err();
        assert!(matches!(err, CliError::Hints { .. }));
    }
}
