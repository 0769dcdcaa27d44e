//! Typed handles for the three kinds of VFIO file descriptor, and the
//! IOMMU group number that names a group's device node.
//!
//! A handle is the file descriptor number the backend handed out; the
//! types keep a group fd from being passed where a container fd belongs.
//! Each backend owns the descriptors it returns and closes them through
//! the matching `close_*` method of [`VfioKernel`](crate::VfioKernel).

use std::fmt;

macro_rules! fd_handle {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(i32);

        impl $name {
            #[doc = concat!("Wraps a raw ", $what, " descriptor number. A number the backend")]
            /// did not hand out makes every call fail with `EBADF`.
            pub const fn from_raw(fd: i32) -> Self {
                Self(fd)
            }

            /// The raw descriptor number.
            pub const fn raw(self) -> i32 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
    };
}

fd_handle!(
    /// A container: `/dev/vfio/vfio` opened once; holds the IOMMU backend.
    ContainerFd,
    "container"
);
fd_handle!(
    /// A group: `/dev/vfio/<N>` opened; attaches to a container.
    GroupFd,
    "group"
);
fd_handle!(
    /// A device, obtained from its group with `GROUP_GET_DEVICE_FD`.
    DeviceFd,
    "device"
);

/// An IOMMU group number: the `N` of `/dev/vfio/N`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IommuGroupId(pub u32);

impl fmt::Debug for IommuGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IommuGroupId({})", self.0)
    }
}

impl fmt::Display for IommuGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_their_raw_number() {
        assert_eq!(ContainerFd::from_raw(7).raw(), 7);
        assert_eq!(GroupFd::from_raw(8).raw(), 8);
        assert_eq!(DeviceFd::from_raw(9).raw(), 9);
    }

    #[test]
    fn debug_names_the_handle_kind() {
        assert_eq!(format!("{:?}", GroupFd::from_raw(3)), "GroupFd(3)");
        assert_eq!(format!("{:?}", IommuGroupId(26)), "IommuGroupId(26)");
    }
}
