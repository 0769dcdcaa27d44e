//! Per-call counters of the simulated kernel.

use crate::errno::Errno;

/// A file operation or ioctl of [`VfioKernel`](crate::VfioKernel), for
/// counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ioctl {
    /// `open("/dev/vfio/vfio")`.
    OpenContainer,
    /// `close` of a container fd.
    CloseContainer,
    /// `open("/dev/vfio/N")`.
    OpenGroup,
    /// `close` of a group fd.
    CloseGroup,
    /// `VFIO_GET_API_VERSION`.
    GetApiVersion,
    /// `VFIO_CHECK_EXTENSION`.
    CheckExtension,
    /// `VFIO_SET_IOMMU`.
    SetIommu,
    /// `VFIO_GROUP_GET_STATUS`.
    GroupGetStatus,
    /// `VFIO_GROUP_SET_CONTAINER`.
    GroupSetContainer,
    /// `VFIO_GROUP_UNSET_CONTAINER`.
    GroupUnsetContainer,
    /// `VFIO_GROUP_GET_DEVICE_FD`.
    GroupGetDeviceFd,
    /// `close` of a device fd.
    CloseDevice,
    /// `VFIO_IOMMU_SPAPR_TCE_GET_INFO`.
    SpaprTceGetInfo,
    /// `VFIO_IOMMU_ENABLE`.
    IommuEnable,
    /// `VFIO_IOMMU_DISABLE`.
    IommuDisable,
    /// `VFIO_IOMMU_SPAPR_REGISTER_MEMORY`.
    SpaprRegisterMemory,
    /// `VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY`.
    SpaprUnregisterMemory,
    /// `VFIO_IOMMU_SPAPR_TCE_CREATE`.
    SpaprTceCreate,
    /// `VFIO_IOMMU_SPAPR_TCE_REMOVE`.
    SpaprTceRemove,
    /// `VFIO_IOMMU_MAP_DMA`.
    MapDma,
    /// `VFIO_IOMMU_UNMAP_DMA`.
    UnmapDma,
}

impl Ioctl {
    /// Every call, in declaration order.
    pub const ALL: [Ioctl; 21] = [
        Ioctl::OpenContainer,
        Ioctl::CloseContainer,
        Ioctl::OpenGroup,
        Ioctl::CloseGroup,
        Ioctl::GetApiVersion,
        Ioctl::CheckExtension,
        Ioctl::SetIommu,
        Ioctl::GroupGetStatus,
        Ioctl::GroupSetContainer,
        Ioctl::GroupUnsetContainer,
        Ioctl::GroupGetDeviceFd,
        Ioctl::CloseDevice,
        Ioctl::SpaprTceGetInfo,
        Ioctl::IommuEnable,
        Ioctl::IommuDisable,
        Ioctl::SpaprRegisterMemory,
        Ioctl::SpaprUnregisterMemory,
        Ioctl::SpaprTceCreate,
        Ioctl::SpaprTceRemove,
        Ioctl::MapDma,
        Ioctl::UnmapDma,
    ];
}

/// How often each call was made, failed, or returned a positive value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    calls: [u64; Ioctl::ALL.len()],
    failures: [u64; Ioctl::ALL.len()],
    positive: [u64; Ioctl::ALL.len()],
}

impl SimStats {
    /// Calls of `ioctl`, successful or not.
    pub fn count(&self, ioctl: Ioctl) -> u64 {
        self.calls[ioctl as usize]
    }

    /// Calls of `ioctl` that failed with an errno.
    pub fn failures(&self, ioctl: Ioctl) -> u64 {
        self.failures[ioctl as usize]
    }

    /// Calls of MAP/UNMAP that returned a positive value instead of 0 (the
    /// misaligned-iova QUIRK), and `CHECK_EXTENSION` calls that answered
    /// yes.
    pub fn positive(&self, ioctl: Ioctl) -> u64 {
        self.positive[ioctl as usize]
    }

    /// Calls of every kind.
    pub fn total(&self) -> u64 {
        self.calls.iter().sum()
    }

    /// Failed calls of every kind.
    pub fn total_failures(&self) -> u64 {
        self.failures.iter().sum()
    }

    pub(crate) fn record(&mut self, ioctl: Ioctl, outcome: Result<i32, Errno>) {
        let i = ioctl as usize;
        self.calls[i] += 1;
        match outcome {
            Err(_) => self.failures[i] += 1,
            Ok(value) if value > 0 => self.positive[i] += 1,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_calls_failures_and_positive_values_separately() {
        let mut stats = SimStats::default();
        stats.record(Ioctl::MapDma, Ok(0));
        stats.record(Ioctl::MapDma, Ok(1));
        stats.record(Ioctl::MapDma, Err(Errno::EINVAL));
        assert_eq!(stats.count(Ioctl::MapDma), 3);
        assert_eq!(stats.failures(Ioctl::MapDma), 1);
        assert_eq!(stats.positive(Ioctl::MapDma), 1);
        assert_eq!(stats.count(Ioctl::UnmapDma), 0);
        assert_eq!(stats.total(), 3);
        assert_eq!(stats.total_failures(), 1);
    }

    #[test]
    fn all_lists_every_variant_at_its_index() {
        for (i, ioctl) in Ioctl::ALL.iter().enumerate() {
            assert_eq!(*ioctl as usize, i);
        }
    }
}
