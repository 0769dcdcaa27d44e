//! [`Env`]: the parts of the simulated kernel an IOMMU backend may touch
//! besides its own container (groups' PEs, processes' memory, the host's
//! configuration).

use std::collections::BTreeMap;

use crate::handle::IommuGroupId;
use crate::sim::config::{SimConfig, SimMode};
use crate::sim::group::GroupState;
use crate::sim::memory::{Limits, Mm, ProcessId};

/// Borrowed kernel state handed to a backend for one operation.
#[derive(Debug)]
pub(crate) struct Env<'a> {
    pub(crate) cfg: &'a SimConfig,
    pub(crate) limits: Limits,
    /// The process making the call (`current->mm`).
    pub(crate) current: ProcessId,
    pub(crate) groups: &'a mut BTreeMap<IommuGroupId, GroupState>,
    pub(crate) mms: &'a mut BTreeMap<ProcessId, Mm>,
}

impl Env<'_> {
    /// Whether quirks become errors.
    pub(crate) fn strict(&self) -> bool {
        self.cfg.mode == SimMode::Strict
    }

    /// The memory state of a process, created on first use.
    pub(crate) fn mm(&mut self, process: ProcessId) -> &mut Mm {
        self.mms.entry(process).or_default()
    }

    /// A configured group.
    pub(crate) fn group(&self, id: IommuGroupId) -> &GroupState {
        &self.groups[&id]
    }

    /// A configured group, mutably.
    pub(crate) fn group_mut(&mut self, id: IommuGroupId) -> &mut GroupState {
        self.groups
            .get_mut(&id)
            .expect("attached groups are configured groups")
    }
}
