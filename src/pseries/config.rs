//! What a [`Machine`](super::Machine) is built from ([`MachineConfig`],
//! [`HostGroup`]) and what a hot-plugged VFIO device is ([`DeviceSpec`]).

use std::fmt;

use addrspace_spapr::PhbConfig;
use addrspace_vfio::{IommuType, SimMode};

/// A machine's shape: guest RAM, PHBs, the simulated host's IOMMU groups.
///
/// [`MachineConfig::new`] gives 256 MiB of RAM backed by 16 MiB huge
/// pages, PHB 0 with QEMU's defaults, host groups 1 to 4 (one device each,
/// dynamic windows supported) and a simulated kernel in strict mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    /// Guest RAM in bytes, from guest address 0; a non-zero multiple of
    /// the RAM page size.
    pub ram_size: u64,
    /// log2 of the host pages backing guest RAM: 16 for plain 64 KiB
    /// pages, 24 for 16 MiB huge pages. The host can map no IOMMU page
    /// larger than this, so the machine also takes larger sizes out of
    /// every PHB's page-size set.
    pub ram_page_shift: u32,
    /// The PHBs, built in this order.
    pub phbs: Vec<PhbConfig>,
    /// The host's IOMMU groups that devices can be passed through from.
    pub groups: Vec<HostGroup>,
    /// Faithful or strict simulated kernel; tests of the machine use
    /// strict, so that every quirk the real kernel would hide fails.
    pub sim_mode: SimMode,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl MachineConfig {
    /// The default guest RAM size: 256 MiB.
    pub const DEFAULT_RAM_SIZE: u64 = 0x1000_0000;
    /// The default RAM page: 16 MiB huge pages.
    pub const DEFAULT_RAM_PAGE_SHIFT: u32 = 24;
    /// The host page shift of the simulated POWER host (64 KiB pages).
    pub const HOST_PAGE_SHIFT: u32 = 16;

    /// The default machine (see the type's docs).
    pub fn new() -> Self {
        Self {
            ram_size: Self::DEFAULT_RAM_SIZE,
            ram_page_shift: Self::DEFAULT_RAM_PAGE_SHIFT,
            phbs: vec![PhbConfig::new(0)],
            groups: (1..=4).map(HostGroup::new).collect(),
            sim_mode: SimMode::Strict,
        }
    }

    /// Sets the guest RAM size.
    pub fn ram_size(mut self, bytes: u64) -> Self {
        self.ram_size = bytes;
        self
    }

    /// Sets the RAM page shift (see the field's docs).
    pub fn ram_page_shift(mut self, shift: u32) -> Self {
        self.ram_page_shift = shift;
        self
    }

    /// Adds a PHB.
    pub fn phb(mut self, phb: PhbConfig) -> Self {
        self.phbs.push(phb);
        self
    }

    /// Replaces the PHBs.
    pub fn phbs(mut self, phbs: Vec<PhbConfig>) -> Self {
        self.phbs = phbs;
        self
    }

    /// Adds a host group (replacing one with the same number).
    pub fn group(mut self, group: HostGroup) -> Self {
        self.groups.retain(|g| g.number != group.number);
        self.groups.push(group);
        self
    }

    /// Chooses the simulated kernel's mode.
    pub fn sim_mode(mut self, mode: SimMode) -> Self {
        self.sim_mode = mode;
        self
    }

    /// Checks what the machine cannot be built without.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if !(Self::HOST_PAGE_SHIFT..=30).contains(&self.ram_page_shift) {
            return Err("RAM page shift must be between the host page shift (16) and 30");
        }
        let page = 1u64 << self.ram_page_shift;
        if self.ram_size == 0 || !self.ram_size.is_multiple_of(page) {
            return Err("RAM size must be a non-zero multiple of the RAM page size");
        }
        let mut numbers: Vec<u32> = self.groups.iter().map(|g| g.number).collect();
        numbers.sort_unstable();
        numbers.dedup();
        if numbers.len() != self.groups.len() {
            return Err("two host groups share a number");
        }
        Ok(())
    }
}

/// An IOMMU group of the simulated host, with the one device the machine
/// passes through from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGroup {
    /// The group number (`/dev/vfio/<number>`).
    pub number: u32,
    /// The device's name (`GROUP_GET_DEVICE_FD`).
    pub device: String,
    /// Whether the group's PE supports dynamic DMA windows (an sPAPR v2
    /// container accepts only groups that do).
    pub ddw: bool,
}

impl HostGroup {
    /// Group `number` with device `0000:<number>:00.0`, dynamic windows
    /// supported.
    pub fn new(number: u32) -> Self {
        Self {
            number,
            device: format!("0000:{number:02x}:00.0"),
            ddw: true,
        }
    }

    /// Sets dynamic-window support.
    pub fn ddw(mut self, supported: bool) -> Self {
        self.ddw = supported;
        self
    }
}

/// Which container a hot-plugged device's group goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerChoice {
    /// A container of its own, plugged into the machine for this device.
    New,
    /// The first container of the same IOMMU type on the same PHB that
    /// accepts the group (as QEMU reuses a container of the address
    /// space), else a new one.
    Shared,
}

/// A VFIO device to hot-plug: which host group, behind which PHB, and
/// with which IOMMU backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceSpec {
    /// The host group number.
    pub group: u32,
    /// The PHB index the device sits behind (sPAPR); `None` for Type1,
    /// which maps guest RAM directly and ignores the guest IOMMU.
    pub phb: Option<u32>,
    /// The IOMMU backend of its container.
    pub iommu_type: IommuType,
    /// Own or shared container.
    pub container: ContainerChoice,
}

impl DeviceSpec {
    /// Group `group` behind PHB `phb`, in a new sPAPR v2 container.
    pub fn spapr(group: u32, phb: u32) -> Self {
        Self {
            group,
            phb: Some(phb),
            iommu_type: IommuType::SpaprV2,
            container: ContainerChoice::New,
        }
    }

    /// Group `group` behind PHB `phb`, in a new sPAPR v1 container (one
    /// fixed 32-bit window).
    pub fn spapr_v1(group: u32, phb: u32) -> Self {
        Self {
            iommu_type: IommuType::SpaprV1,
            ..Self::spapr(group, phb)
        }
    }

    /// Group `group` in a new Type1v2 container.
    pub fn type1(group: u32) -> Self {
        Self {
            group,
            phb: None,
            iommu_type: IommuType::Type1V2,
            container: ContainerChoice::New,
        }
    }

    /// The same device, joining a compatible container if there is one.
    pub fn shared(mut self) -> Self {
        self.container = ContainerChoice::Shared;
        self
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {} ({:?}", self.group, self.iommu_type)?;
        if let Some(phb) = self.phb {
            write!(f, " behind PHB {phb}")?;
        }
        if self.container == ContainerChoice::Shared {
            f.write_str(", shared container")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_strict() {
        let config = MachineConfig::new();
        assert_eq!(config.check(), Ok(()));
        assert_eq!(config.sim_mode, SimMode::Strict);
        assert_eq!(config.groups.len(), 4);
    }

    #[test]
    fn ram_not_made_of_whole_pages_is_refused() {
        let config = MachineConfig::new().ram_size(0x100_8000);
        assert!(config.check().is_err());
        assert!(MachineConfig::new().ram_page_shift(12).check().is_err());
    }

    #[test]
    fn adding_a_group_with_a_known_number_replaces_it() {
        let config = MachineConfig::new().group(HostGroup::new(2).ddw(false));
        assert_eq!(config.groups.len(), 4);
        assert!(!config.groups.iter().find(|g| g.number == 2).unwrap().ddw);
    }

    #[test]
    fn device_specs_name_their_backend() {
        let v1 = DeviceSpec::spapr_v1(3, 0).shared();
        assert_eq!(v1.iommu_type, IommuType::SpaprV1);
        assert_eq!(
            v1.to_string(),
            "group 3 (SpaprV1 behind PHB 0, shared container)"
        );
        assert_eq!(DeviceSpec::type1(4).phb, None);
    }
}
