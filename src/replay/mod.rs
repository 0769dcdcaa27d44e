//! Replay scripts: topology changes and guest actions written one per
//! line, run against a machine while a listener on every address space
//! writes down what it hears.
//!
//! The `addrspace replay` command runs them; the format is documented in
//! the book's CLI chapter. In short:
//!
//! ```text
//! # A comment. Blank lines are ignored; `#` starts a comment anywhere
//! # outside quotes. Names with spaces are quoted: "PCI ROM".
//! machine pseries ram=256M phbs=1   # optional, first: the pseries model
//!                                   # (without it: a tree from --tree)
//! disable e1000-mmio                # topology: enable/disable NAME,
//! move e1000-mmio 0xfebc0000        # move NAME ADDR, priority NAME N,
//! resize NAME SIZE                  # alias-offset NAME OFF,
//! readonly NAME on                  # del NAME, attach NAME in=P at=A,
//! add ram extra 64K in=system at=0x1_0000_0000 prio=1
//! add alias win 4K target=extra offset=0 in=system at=0xd0000
//! begin                             # one transaction until `commit`
//! commit
//! plug spapr 1 phb=0                # guest: plug, unplug N [detach],
//! put-tce page=0 target=16 perm=rw  # reset, put-tce, put-indirect,
//! create-window page-shift=16 window-shift=30   # stuff, query,
//! expect events 2 memory            # remove-window, reset-windows
//! expect map memory 0x0 ppc_spapr.ram
//! expect said H_SUCCESS
//! expect invariants
//! fail del system                   # the command must be refused
//! ```
//!
//! A region is named by its name when one region has it, else as
//! `NAME~K`, the K-th (from 1) region of that name in creation order.

mod parse;
mod run;

use std::fmt;

pub use run::{EventInfo, Replay, ReplayError, StepReport};

use crate::pseries::Action;

/// A parsed script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The name errors use (the file name).
    pub name: String,
    /// What the script runs on.
    pub target: Target,
    /// The commands, in order.
    pub steps: Vec<Step>,
}

/// What a script runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A machine given from outside (a tree loaded from a QEMU dump).
    Tree,
    /// The pseries model (`machine pseries`).
    Pseries {
        /// Guest RAM size, if not the default.
        ram: Option<u64>,
        /// Number of PHBs.
        phbs: u32,
    },
}

/// One command of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Its line number (from 1).
    pub line: usize,
    /// The line without its comment, for the log.
    pub text: String,
    /// What to do.
    pub command: Command,
    /// Written `fail ...`: the machine must refuse it.
    pub must_fail: bool,
}

/// What a new region is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewKind {
    /// RAM.
    Ram,
    /// ROM.
    Rom,
    /// MMIO that reads zero and ignores writes.
    Mmio,
    /// A container.
    Container,
    /// A reservation.
    Reservation,
    /// An alias of `target` from `offset`.
    Alias {
        /// The region shown.
        target: String,
        /// Where in it the alias starts.
        offset: u64,
    },
}

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create a region and add it under `parent`.
    Add {
        /// What it is.
        kind: NewKind,
        /// Its name.
        name: String,
        /// Its size (up to 2^64).
        size: u128,
        /// The container it goes in.
        parent: String,
        /// Its address in the container.
        addr: u64,
        /// Its priority among siblings.
        priority: i32,
    },
    /// Add a region that has no parent under `parent`.
    Attach {
        /// The region.
        name: String,
        /// The container.
        parent: String,
        /// Address in the container.
        addr: u64,
        /// Priority among siblings.
        priority: i32,
    },
    /// Take a region out of its parent (it lives on; `attach` puts it
    /// back).
    Del(String),
    /// Change a region's address in its parent.
    Move(String, u64),
    /// Enable (true) or disable a region.
    Enable(String, bool),
    /// Change a region's priority.
    Priority(String, i32),
    /// Change a region's size.
    Resize(String, u128),
    /// Change an alias's offset into its target.
    AliasOffset(String, u64),
    /// Set or clear a region's read-only flag.
    Readonly(String, bool),
    /// Open a transaction: changes up to `commit` reach listeners at once.
    Begin,
    /// Commit the open transaction.
    Commit,
    /// A guest or operator action on the pseries model.
    Guest(Action),
    /// Check something; a failed check stops the script.
    Expect(Expect),
}

/// What an `expect` line checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The previous command made this many `region_add` + `region_del`
    /// events, in the named address space or (`None`) over all of them.
    Events(usize, Option<String>),
    /// In the named address space, `addr` lies in a range of the named
    /// region (`None`: in no range).
    Map {
        /// Address-space name.
        space: String,
        /// Address looked up.
        addr: u64,
        /// Region expected.
        region: Option<String>,
    },
    /// The previous command's description contains this text (a guest's
    /// status such as `H_SUCCESS`).
    Said(String),
    /// The pseries model's invariants hold.
    Invariants,
}

/// A script that could not be read: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    /// The script's name.
    pub file: String,
    /// The line (from 1).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for ScriptError {}
