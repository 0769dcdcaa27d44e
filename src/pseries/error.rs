//! [`MachineError`]: why the machine could not be built or could not do
//! what its owner (not the guest) asked.
//!
//! Guest calls keep their own errors ([`HcallError`](addrspace_spapr::HcallError),
//! [`RtasError`](addrspace_spapr::RtasError)): those are answers the guest
//! sees, not failures of the machine.

use std::fmt;

use addrspace_core::AccessError;
use addrspace_spapr::SetupError;
use addrspace_vfio::VfioError;

use super::DeviceId;

/// Something the machine could not do. Sorted by name.
#[derive(Debug)]
pub enum MachineError {
    /// The configuration cannot make a machine.
    BadConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// The device spec does not fit its IOMMU type (an sPAPR device needs
    /// a PHB, a Type1 device takes none).
    BadDeviceSpec {
        /// What is wrong.
        reason: &'static str,
    },
    /// A guest-memory write failed (e.g. outside guest RAM).
    GuestMemory {
        /// The guest address.
        addr: u64,
        /// Bytes to write.
        len: usize,
        /// Why it failed.
        source: AccessError,
    },
    /// The group is already passed through, to another device.
    GroupInUse {
        /// The group number.
        group: u32,
        /// The device using it.
        device: DeviceId,
    },
    /// The memory map refused an operation.
    Memory(addrspace_core::Error),
    /// Building a PHB failed.
    Setup(SetupError),
    /// No plugged device has this id.
    UnknownDevice {
        /// The id asked for.
        device: DeviceId,
    },
    /// The simulated host has no group with this number.
    UnknownGroup {
        /// The group number.
        group: u32,
    },
    /// The machine has no PHB with this index.
    UnknownPhb {
        /// The index asked for.
        index: u32,
    },
    /// VFIO (container, group or listener) refused.
    Vfio(VfioError),
}

impl fmt::Display for MachineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MachineError::BadConfig { reason } => write!(f, "bad machine config: {reason}"),
            MachineError::BadDeviceSpec { reason } => write!(f, "bad device spec: {reason}"),
            MachineError::GuestMemory { addr, len, source } => {
                write!(
                    f,
                    "writing {len} bytes of guest memory at {addr:#x}: {source}"
                )
            }
            MachineError::GroupInUse { group, device } => {
                write!(f, "group {group} is already passed through to {device}")
            }
            MachineError::Memory(e) => write!(f, "memory map: {e}"),
            MachineError::Setup(e) => write!(f, "PHB setup: {e}"),
            MachineError::UnknownDevice { device } => write!(f, "no plugged device {device}"),
            MachineError::UnknownGroup { group } => write!(f, "the host has no group {group}"),
            MachineError::UnknownPhb { index } => write!(f, "the machine has no PHB {index}"),
            MachineError::Vfio(e) => write!(f, "VFIO: {e}"),
        }
    }
}

impl std::error::Error for MachineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MachineError::GuestMemory { source, .. } => Some(source),
            MachineError::Memory(e) => Some(e),
            MachineError::Setup(e) => Some(e),
            MachineError::Vfio(e) => Some(e),
            _ => None,
        }
    }
}

impl From<addrspace_core::Error> for MachineError {
    fn from(e: addrspace_core::Error) -> Self {
        MachineError::Memory(e)
    }
}

impl From<SetupError> for MachineError {
    fn from(e: SetupError) -> Self {
        MachineError::Setup(e)
    }
}

impl From<VfioError> for MachineError {
    fn from(e: VfioError) -> Self {
        MachineError::Vfio(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_offending_values() {
        let e = MachineError::GroupInUse {
            group: 3,
            device: DeviceId(7),
        };
        assert_eq!(
            e.to_string(),
            "group 3 is already passed through to device#7"
        );
        let e = MachineError::from(VfioError::NotPlugged);
        assert!(std::error::Error::source(&e).is_some());
    }
}
