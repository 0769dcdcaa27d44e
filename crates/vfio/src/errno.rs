//! [`Errno`]: the error number a VFIO ioctl fails with.
//!
//! Both backends report failures as the same values the Linux kernel
//! returns (`-errno` from the ioctl, `errno` in userspace), so a consumer
//! tested against the simulator sees exactly what it would see on a host.

use std::fmt;

/// A Linux error number, as returned by a failed VFIO ioctl.
///
/// A newtype rather than an enum: the Linux backend may see any value,
/// and the simulator uses the named constants below. `Display` names the
/// errno (`EINVAL (22): invalid argument`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(i32);

/// Name and description of every errno this crate names.
const NAMES: &[(i32, &str, &str)] = &[
    (1, "EPERM", "operation not permitted"),
    (2, "ENOENT", "no such file or directory"),
    (5, "EIO", "input/output error"),
    (6, "ENXIO", "no such device or address"),
    (9, "EBADF", "bad file descriptor"),
    (12, "ENOMEM", "cannot allocate memory"),
    (13, "EACCES", "permission denied"),
    (14, "EFAULT", "bad address"),
    (16, "EBUSY", "device or resource busy"),
    (17, "EEXIST", "file exists"),
    (19, "ENODEV", "no such device"),
    (22, "EINVAL", "invalid argument"),
    (25, "ENOTTY", "inappropriate ioctl for device"),
    (28, "ENOSPC", "no space left on device"),
    (77, "EBADFD", "file descriptor in bad state"),
];

impl Errno {
    /// Operation not permitted (1): wrong process, IOMMU not enabled,
    /// mixing no-IOMMU and real groups, incompatible groups.
    pub const EPERM: Errno = Errno(1);
    /// No such entry (2): unknown group number, unregistering memory that
    /// was never registered.
    pub const ENOENT: Errno = Errno(2);
    /// Input/output error (5).
    pub const EIO: Errno = Errno(5);
    /// No such device or address (6): no group attached, address in no
    /// DMA window.
    pub const ENXIO: Errno = Errno(6);
    /// Bad file descriptor (9): a closed or unknown handle.
    pub const EBADF: Errno = Errno(9);
    /// Out of memory (12): over the locked-memory limit.
    pub const ENOMEM: Errno = Errno(12);
    /// Permission denied (13): opening a device node.
    pub const EACCES: Errno = Errno(13);
    /// Bad address (14).
    pub const EFAULT: Errno = Errno(14);
    /// Busy (16): already enabled, already registered, device fds open,
    /// group already opened or owned by a kernel driver.
    pub const EBUSY: Errno = Errno(16);
    /// Exists (17): a Type1 mapping overlaps an existing one.
    pub const EEXIST: Errno = Errno(17);
    /// No such device (19): unknown IOMMU type, unknown device name,
    /// enabling without a group.
    pub const ENODEV: Errno = Errno(19);
    /// Invalid argument (22): the catch-all of the VFIO ioctls.
    pub const EINVAL: Errno = Errno(22);
    /// Inappropriate ioctl (25): an ioctl of the other IOMMU flavour.
    pub const ENOTTY: Errno = Errno(25);
    /// No space (28): no free DMA window slot, Type1 mapping limit.
    pub const ENOSPC: Errno = Errno(28);
    /// File descriptor in bad state (77).
    pub const EBADFD: Errno = Errno(77);

    /// Wraps a raw error number.
    pub const fn new(raw: i32) -> Self {
        Errno(raw)
    }

    /// The raw error number.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// The symbolic name (`"EINVAL"`), if this crate knows it.
    pub fn name(self) -> Option<&'static str> {
        NAMES
            .iter()
            .find(|(raw, _, _)| *raw == self.0)
            .map(|(_, name, _)| *name)
    }

    /// The errno of the last failed system call on this thread.
    pub fn last_os_error() -> Self {
        Self::from(std::io::Error::last_os_error())
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match NAMES.iter().find(|(raw, _, _)| *raw == self.0) {
            Some((raw, name, text)) => write!(f, "{name} ({raw}): {text}"),
            None => write!(f, "errno {}", self.0),
        }
    }
}

impl std::error::Error for Errno {}

impl From<std::io::Error> for Errno {
    /// Takes the OS error number; an error without one becomes `EIO`.
    fn from(err: std::io::Error) -> Self {
        Errno(err.raw_os_error().unwrap_or(Errno::EIO.0))
    }
}

impl From<Errno> for std::io::Error {
    fn from(errno: Errno) -> Self {
        std::io::Error::from_raw_os_error(errno.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_carry_linux_values() {
        let pairs = [
            (Errno::EPERM, 1),
            (Errno::ENOENT, 2),
            (Errno::ENXIO, 6),
            (Errno::EBADF, 9),
            (Errno::ENOMEM, 12),
            (Errno::EBUSY, 16),
            (Errno::EEXIST, 17),
            (Errno::ENODEV, 19),
            (Errno::EINVAL, 22),
            (Errno::ENOTTY, 25),
            (Errno::ENOSPC, 28),
        ];
        for (errno, raw) in pairs {
            assert_eq!(errno.raw(), raw, "{errno:?}");
        }
    }

    #[test]
    fn display_names_the_errno_and_its_value() {
        assert_eq!(Errno::EINVAL.to_string(), "EINVAL (22): invalid argument");
        assert_eq!(Errno::new(4242).to_string(), "errno 4242");
    }

    #[test]
    fn debug_prints_the_symbolic_name() {
        assert_eq!(format!("{:?}", Errno::ENOSPC), "ENOSPC");
        assert_eq!(format!("{:?}", Errno::new(200)), "Errno(200)");
    }

    #[test]
    fn converts_to_and_from_io_error() {
        let io: std::io::Error = Errno::ENOTTY.into();
        assert_eq!(io.raw_os_error(), Some(25));
        assert_eq!(Errno::from(io), Errno::ENOTTY);
        let no_code = std::io::Error::other("no code");
        assert_eq!(Errno::from(no_code), Errno::EIO);
    }
}
