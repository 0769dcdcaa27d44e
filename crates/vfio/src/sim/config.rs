//! Configuration of a [`SimKernel`](super::SimKernel): the host it
//! pretends to be and the IOMMU groups that exist on it.

use std::collections::BTreeMap;

use crate::handle::IommuGroupId;

/// How the simulator treats mainline's quirks (marked QUIRK in the spec).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SimMode {
    /// Reproduce mainline, quirks included: a misaligned iova makes MAP and
    /// UNMAP return 1, only the first page of a MAP/UNMAP is checked
    /// against the window end, and unregistering mapped memory succeeds
    /// and leaves it pinned.
    #[default]
    Faithful,
    /// Turn every quirk into an error (`EINVAL`, `EINVAL`, `EBUSY`), so a
    /// consumer bug the real kernel would hide fails a test.
    Strict,
}

/// One IOMMU group of the simulated host (a PowerNV PE, for sPAPR).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    pub(crate) id: IommuGroupId,
    pub(crate) devices: Vec<String>,
    pub(crate) ddw: bool,
    pub(crate) no_iommu: bool,
    pub(crate) compat_class: u32,
    pub(crate) viable: bool,
}

impl GroupConfig {
    /// Group `/dev/vfio/<number>`: no devices, dynamic windows supported,
    /// a real IOMMU, compatibility class 0, viable.
    pub fn new(number: u32) -> Self {
        Self {
            id: IommuGroupId(number),
            devices: Vec::new(),
            ddw: true,
            no_iommu: false,
            compat_class: 0,
            viable: true,
        }
    }

    /// Adds a device (a name for `GROUP_GET_DEVICE_FD`, e.g. `0000:01:00.0`).
    pub fn device(mut self, name: impl Into<String>) -> Self {
        self.devices.push(name.into());
        self
    }

    /// Whether the PE supports dynamic DMA windows. A v2 container accepts
    /// only groups that do; `GET_INFO` reports them only for such groups.
    pub fn ddw(mut self, supported: bool) -> Self {
        self.ddw = supported;
        self
    }

    /// Marks the group as a no-IOMMU group (`/dev/vfio/noiommu-N`): it
    /// cannot share a container with real groups and needs the
    /// [`VFIO_NOIOMMU_IOMMU`](crate::VFIO_NOIOMMU_IOMMU) backend.
    pub fn no_iommu(mut self, no_iommu: bool) -> Self {
        self.no_iommu = no_iommu;
        self
    }

    /// Compatibility class: groups whose table operations differ (different
    /// PHB types) cannot share a v2 container; those of one class can.
    pub fn compat_class(mut self, class: u32) -> Self {
        self.compat_class = class;
        self
    }

    /// Whether the group is viable (no device bound to a host driver that
    /// claims DMA ownership). A non-viable group cannot join a container.
    pub fn viable(mut self, viable: bool) -> Self {
        self.viable = viable;
        self
    }
}

/// The simulated host. Build one with [`SimKernel::builder`](super::SimKernel::builder)
/// or [`SimConfig::new`] and [`SimConfig::build`].
///
/// Defaults: a POWER8 PowerNV IODA2 host with 64 KiB pages, a 2 GiB 32-bit
/// window per PE (the usual `m32_pci_base`), no locked-memory limit, the
/// sPAPR backend only, faithful mode, and no groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    pub(crate) mode: SimMode,
    pub(crate) groups: BTreeMap<IommuGroupId, GroupConfig>,
    pub(crate) host_page_shift: u32,
    pub(crate) locked_memory_limit: u64,
    pub(crate) power8: bool,
    pub(crate) dma32_window_size: u32,
    pub(crate) spapr: bool,
    pub(crate) type1: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SimConfig {
    /// The default host (see the type's docs).
    pub fn new() -> Self {
        Self {
            mode: SimMode::Faithful,
            groups: BTreeMap::new(),
            host_page_shift: 16,
            locked_memory_limit: u64::MAX,
            power8: true,
            dma32_window_size: 0x8000_0000,
            spapr: true,
            type1: false,
        }
    }

    /// Faithful or strict (see [`SimMode`]).
    pub fn mode(mut self, mode: SimMode) -> Self {
        self.mode = mode;
        self
    }

    /// Adds a group; a group with the same number is replaced.
    pub fn group(mut self, group: GroupConfig) -> Self {
        self.groups.insert(group.id, group);
        self
    }

    /// The host's page shift (`PAGE_SHIFT`): 16 (64 KiB) by default, 12 for
    /// a 4 KiB-page host. It sets the alignment of memory registration and
    /// the unit of locked-memory accounting.
    ///
    /// # Panics
    ///
    /// If `shift` is outside 12..=30 (no Linux host has such pages).
    pub fn host_page_shift(mut self, shift: u32) -> Self {
        assert!((12..=30).contains(&shift), "host page shift {shift}");
        self.host_page_shift = shift;
        self
    }

    /// The locked-memory limit in bytes (`RLIMIT_MEMLOCK`), the same for
    /// every simulated process; `u64::MAX` (the default) is unlimited.
    pub fn locked_memory_limit(mut self, bytes: u64) -> Self {
        self.locked_memory_limit = bytes;
        self
    }

    /// Whether the host is a POWER8 (IOMMU page sizes 4K|64K|16M|256M) or a
    /// later CPU (4K|64K).
    pub fn power8(mut self, power8: bool) -> Self {
        self.power8 = power8;
        self
    }

    /// Size of each PE's 32-bit window (`tce32_size`), reported by
    /// `GET_INFO`, charged by v1 `ENABLE`, and the size of the default
    /// window. 0 means the PE has none.
    pub fn dma32_window_size(mut self, bytes: u32) -> Self {
        self.dma32_window_size = bytes;
        self
    }

    /// Whether the sPAPR TCE backend (v1 and v2) is present (default yes).
    pub fn spapr(mut self, present: bool) -> Self {
        self.spapr = present;
        self
    }

    /// Whether the Type1 backend (v1 and v2) is present (default no).
    pub fn type1(mut self, present: bool) -> Self {
        self.type1 = present;
        self
    }

    /// Builds the simulated kernel.
    pub fn build(self) -> super::SimKernel {
        super::SimKernel::new(self)
    }

    /// The IOMMU page sizes the host's PEs support, as a bitmap.
    pub(crate) fn page_size_mask(&self) -> u64 {
        let base = (1u64 << 12) | (1 << 16);
        if self.power8 {
            base | (1 << 24) | (1 << 28)
        } else {
            base
        }
    }

    /// Whether the no-IOMMU backend is loaded: the module parameter that
    /// enables it is on exactly when some group is a no-IOMMU group.
    pub(crate) fn noiommu_enabled(&self) -> bool {
        self.groups.values().any(|g| g.no_iommu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power8_offers_huge_iommu_pages_and_later_cpus_do_not() {
        let p8 = SimConfig::new().power8(true).page_size_mask();
        let p9 = SimConfig::new().power8(false).page_size_mask();
        assert_eq!(p8, (1 << 12) | (1 << 16) | (1 << 24) | (1 << 28));
        assert_eq!(p9, (1 << 12) | (1 << 16));
    }

    #[test]
    fn a_no_iommu_group_enables_the_no_iommu_backend() {
        let plain = SimConfig::new().group(GroupConfig::new(1));
        let unsafe_mode = plain.clone().group(GroupConfig::new(2).no_iommu(true));
        assert!(!plain.noiommu_enabled());
        assert!(unsafe_mode.noiommu_enabled());
    }

    #[test]
    #[should_panic(expected = "host page shift")]
    fn host_page_shift_rejects_impossible_pages() {
        let _ = SimConfig::new().host_page_shift(40);
    }
}
