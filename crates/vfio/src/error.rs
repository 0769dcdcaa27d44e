//! [`VfioError`]: why a kernel backend could not be set up.
//!
//! Calls on a working backend fail with an [`Errno`](crate::Errno); this
//! enum is for what comes before, such as a host without VFIO.

use std::path::PathBuf;

/// Setting up a VFIO kernel backend failed.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    /// The VFIO container device node does not exist: the `vfio` module is
    /// not loaded, or this is not a Linux host with an IOMMU.
    #[error("VFIO is not available: {} does not exist", path.display())]
    DeviceMissing {
        /// The missing device node.
        path: PathBuf,
    },
    /// The VFIO container device node exists but cannot be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The device node.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_missing_names_the_path() {
        let err = VfioError::DeviceMissing {
            path: PathBuf::from("/dev/vfio/vfio"),
        };
        assert_eq!(
            err.to_string(),
            "VFIO is not available: /dev/vfio/vfio does not exist"
        );
    }
}
