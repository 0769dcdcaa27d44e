//! Errors of the `addrspace` command, each naming the file (and line)
//! it is about.

use std::io;
use std::path::PathBuf;

use addrspace::mtree::{BuildError, HintsError, ParseError};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A dump parsed but could not be built.
    #[error("{}{}", .path.display(), build_detail(.source))]
    Build {
        /// The tree file.
        path: PathBuf,
        /// What went wrong (boxed: the core's errors are large).
        source: Box<BuildError>,
    },
    /// The demo's invariant checker found violations.
    #[error("the demo found {0} invariant violation(s)")]
    DemoViolations(usize),
    /// The `--hints` file is not `info mtree -f` output.
    #[error("{}: {source}", .path.display())]
    Hints {
        /// The flat file.
        path: PathBuf,
        /// What went wrong.
        source: HintsError,
    },
    /// A dump could not be parsed.
    #[error("{}:{}: {}", .path.display(), .source.line, .source.kind)]
    Parse {
        /// The tree file.
        path: PathBuf,
        /// Where and what.
        source: ParseError,
    },
    /// No region of that name in the dump.
    #[error("{}: no region named {name:?}", .path.display())]
    NoSuchRegion {
        /// The tree file.
        path: PathBuf,
        /// The name asked for.
        name: String,
    },
    /// The memory map refused an operation (when printing, a core bug:
    /// every handle comes from the build).
    #[error("memory map: {0}")]
    Memory(#[from] addrspace::Error),
    /// A file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The demo failed to run.
    #[error("demo: {0}")]
    Demo(String),
    /// A replay script could not be read.
    #[error("{0}")]
    Script(#[from] addrspace::replay::ScriptError),
    /// A replay stopped: a bad command, a refusal, a failed expectation.
    #[error("{0}")]
    Replay(#[from] addrspace::replay::ReplayError),
    /// The command line asks for something that does not exist.
    #[error("{0}")]
    Usage(String),
    /// Output could not be written.
    #[error("writing output: {0}")]
    Write(io::Error),
}

/// `:LINE: ...` for errors tied to a line, `: ...` otherwise.
fn build_detail(err: &BuildError) -> String {
    match err {
        BuildError::Core { line, name, source } => format!(":{line}: region {name:?}: {source}"),
        other => format!(": {other}"),
    }
}

impl CliError {
    /// The exit status: 2 for the user's mistakes (a missing or malformed
    /// file, an unknown name, a bad script line), 1 when the work itself
    /// failed (a refused change, a failed expectation, violations).
    pub fn exit_code(&self) -> u8 {
        use addrspace::replay::ReplayError;
        match self {
            CliError::Build { .. }
            | CliError::Hints { .. }
            | CliError::Parse { .. }
            | CliError::NoSuchRegion { .. }
            | CliError::Read { .. }
            | CliError::Script(_)
            | CliError::Usage(_)
            | CliError::Replay(ReplayError::Usage { .. }) => 2,
            CliError::DemoViolations(_)
            | CliError::Memory(_)
            | CliError::Demo(_)
            | CliError::Replay(_)
            | CliError::Write(_) => 1,
        }
    }

    /// A parse error in `path`.
    pub fn parse(path: impl Into<PathBuf>, source: ParseError) -> CliError {
        CliError::Parse {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use addrspace::mtree::ParseErrorKind;

    use super::*;

    #[test]
    fn parse_errors_read_like_compiler_messages() {
        let err = CliError::parse(
            "q35.tree",
            ParseError {
                line: 4,
                kind: ParseErrorKind::SecondRoot,
            },
        );
        assert_eq!(
            err.to_string(),
            "q35.tree:4: second top-level region in one block; a block has a single root"
        );
    }

    #[test]
    fn build_errors_name_file_line_and_region() {
        let err = CliError::Build {
            path: "big.tree".into(),
            source: Box::new(BuildError::Core {
                line: 2,
                name: "ram".into(),
                source: addrspace::Error::BackingAllocation { size: 1 << 64 },
            }),
        };
        assert!(err
            .to_string()
            .starts_with("big.tree:2: region \"ram\": cannot map"));
    }
}
