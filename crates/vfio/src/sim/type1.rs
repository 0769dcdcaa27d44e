//! The Type1 IOMMU backend (`vfio_iommu_type1.c`), kept small.
//!
//! Covered: MAP and UNMAP of iova ranges at the IOMMU's 4 KiB granule
//! (`EINVAL` for a short `argsz`, unknown flags, no permission, a zero or
//! misaligned size, iova or vaddr, a range that wraps; `EEXIST` overlapping
//! a mapping; `ENOSPC` past the 65535-mapping limit; `ENOMEM` over the
//! locked-memory limit), v1 versus v2 unmap semantics, `UNMAP_FLAG_ALL`,
//! and the reported unmapped size. Mappings go away with the last group.
//!
//! Not covered: `VFIO_DMA_MAP_FLAG_VADDR` and `UNMAP_FLAG_VADDR` (vaddr
//! update for live update; `EINVAL` here), dirty-page tracking (the
//! bitmap flag is `EINVAL`, as in mainline while tracking is off),
//! reserved IOVA ranges, `GET_INFO` and the per-domain page-size bitmap.

use std::collections::BTreeMap;

use crate::args::{
    DmaMap, DmaUnmap, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_VADDR, VFIO_DMA_MAP_FLAG_WRITE,
    VFIO_DMA_UNMAP_FLAG_ALL, VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, VFIO_DMA_UNMAP_FLAG_VADDR,
    VFIO_TYPE1V2_IOMMU, VFIO_TYPE1_IOMMU, VFIO_UNMAP_ALL,
};
use crate::errno::Errno;
use crate::handle::IommuGroupId;
use crate::sim::env::Env;
use crate::sim::observe::{TcePerms, Type1Mapping, Type1Snapshot};

/// The IOMMU's smallest page: the granule of every Type1 address.
const IOMMU_PAGE: u64 = 4096;
/// Default `dma_entry_limit` module parameter.
const DMA_ENTRY_LIMIT: usize = 65535;

/// A Type1 container's backend state (`struct vfio_iommu`).
#[derive(Clone, Debug)]
pub(crate) struct Type1Backend {
    v2: bool,
    pub(crate) groups: Vec<IommuGroupId>,
    /// Mappings by iova; they never overlap.
    mappings: BTreeMap<u64, Type1Mapping>,
}

impl Type1Backend {
    /// Whether `iommu_type` names this backend, and which flavour.
    pub(crate) fn flavour(iommu_type: u32) -> Option<bool> {
        match iommu_type {
            VFIO_TYPE1_IOMMU => Some(false),
            VFIO_TYPE1V2_IOMMU => Some(true),
            _ => None,
        }
    }

    /// `CHECK_EXTENSION` as this backend answers it.
    pub(crate) fn check_extension(extension: u32) -> i32 {
        i32::from(Self::flavour(extension).is_some() || extension == VFIO_UNMAP_ALL)
    }

    /// A fresh backend.
    pub(crate) fn new(v2: bool) -> Self {
        Self {
            v2,
            groups: Vec::new(),
            mappings: BTreeMap::new(),
        }
    }

    /// Type1v2 rather than Type1.
    pub(crate) fn is_v2(&self) -> bool {
        self.v2
    }

    /// Attaches a group; the simulated IOMMU accepts any real group.
    pub(crate) fn attach_group(&mut self, id: IommuGroupId) {
        self.groups.push(id);
    }

    /// Detaches a group. Mappings stay while any group is left; the
    /// release that follows the last group removes them.
    pub(crate) fn detach_group(&mut self, id: IommuGroupId) {
        self.groups.retain(|&g| g != id);
    }

    /// Removes every mapping and returns its locked memory.
    pub(crate) fn release(mut self, env: &mut Env<'_>) {
        let all: Vec<u64> = self.mappings.keys().copied().collect();
        for iova in all {
            self.remove(env, iova);
        }
    }

    fn remove(&mut self, env: &mut Env<'_>, iova: u64) -> u64 {
        let mapping = self.mappings.remove(&iova).expect("caller found it");
        let pages = mapping.locked_bytes >> env.limits.host_page_shift;
        env.mm(mapping.process).refund(pages);
        mapping.size
    }

    /// Mappings that overlap `[first, last]`, ascending.
    fn overlapping(&self, first: u64, last: u64) -> Vec<Type1Mapping> {
        let before = self
            .mappings
            .range(..first)
            .next_back()
            .map(|(_, m)| *m)
            .filter(|m| m.iova + (m.size - 1) >= first);
        before
            .into_iter()
            .chain(self.mappings.range(first..=last).map(|(_, m)| *m))
            .collect()
    }

    /// `IOMMU_MAP_DMA` with Type1 semantics (see the module docs).
    pub(crate) fn map_dma(&mut self, env: &mut Env<'_>, map: &DmaMap) -> Result<i32, Errno> {
        let known = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE | VFIO_DMA_MAP_FLAG_VADDR;
        if map.argsz < DmaMap::ARGSZ || map.flags & !known != 0 {
            return Err(Errno::EINVAL);
        }
        if map.flags & VFIO_DMA_MAP_FLAG_VADDR != 0 {
            return Err(Errno::EINVAL);
        }
        let perms = TcePerms::from_map_flags(map.flags).ok_or(Errno::EINVAL)?;
        if map.size == 0 || (map.size | map.iova | map.vaddr) & (IOMMU_PAGE - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        let last = map.iova.checked_add(map.size - 1).ok_or(Errno::EINVAL)?;
        let vaddr_end = map.vaddr.checked_add(map.size - 1).ok_or(Errno::EINVAL)?;
        if !self.overlapping(map.iova, last).is_empty() {
            return Err(Errno::EEXIST);
        }
        if self.mappings.len() >= DMA_ENTRY_LIMIT {
            return Err(Errno::ENOSPC);
        }
        let shift = env.limits.host_page_shift;
        let pages = (vaddr_end >> shift) - (map.vaddr >> shift) + 1;
        let limits = env.limits;
        env.mm(env.current).charge(pages, limits)?;
        self.mappings.insert(
            map.iova,
            Type1Mapping {
                iova: map.iova,
                size: map.size,
                vaddr: map.vaddr,
                perms,
                process: env.current,
                locked_bytes: pages << shift,
            },
        );
        Ok(0)
    }

    /// `IOMMU_UNMAP_DMA` with Type1 semantics. v2: the range must not cut
    /// a mapping (`EINVAL`), and unmaps every mapping inside it. v1: from
    /// the first mapping the range reaches, whole mappings are unmapped,
    /// even past the range's end; a range starting inside a mapping
    /// unmaps nothing and succeeds. `unmap.size` reports the bytes
    /// unmapped.
    pub(crate) fn unmap_dma(
        &mut self,
        env: &mut Env<'_>,
        unmap: &mut DmaUnmap,
    ) -> Result<i32, Errno> {
        let known = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
            | VFIO_DMA_UNMAP_FLAG_ALL
            | VFIO_DMA_UNMAP_FLAG_VADDR;
        if unmap.argsz < DmaUnmap::ARGSZ || unmap.flags & !known != 0 {
            return Err(Errno::EINVAL);
        }
        if unmap.flags & (VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_VADDR) != 0 {
            return Err(Errno::EINVAL);
        }
        if unmap.iova & (IOMMU_PAGE - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        let all = unmap.flags & VFIO_DMA_UNMAP_FLAG_ALL != 0;
        let (first, last) = if all {
            if unmap.iova != 0 || unmap.size != 0 {
                return Err(Errno::EINVAL);
            }
            (0, u64::MAX)
        } else {
            if unmap.size == 0 || unmap.size & (IOMMU_PAGE - 1) != 0 {
                return Err(Errno::EINVAL);
            }
            let last = unmap
                .iova
                .checked_add(unmap.size - 1)
                .ok_or(Errno::EINVAL)?;
            (unmap.iova, last)
        };
        let hit = self.overlapping(first, last);
        if self.v2 && !all {
            let cuts_start = hit.first().is_some_and(|m| m.iova < first);
            let cuts_end = hit.last().is_some_and(|m| m.iova + (m.size - 1) > last);
            if cuts_start || cuts_end {
                return Err(Errno::EINVAL);
            }
        }
        let mut unmapped = 0;
        for mapping in hit {
            if !self.v2 && mapping.iova < first {
                break;
            }
            unmapped += self.remove(env, mapping.iova);
        }
        unmap.size = unmapped;
        Ok(0)
    }

    /// What a test may see of this backend.
    pub(crate) fn snapshot(&self) -> Type1Snapshot {
        Type1Snapshot {
            v2: self.v2,
            mappings: self.mappings.values().copied().collect(),
        }
    }
}
