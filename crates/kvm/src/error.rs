//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Renders a raw `errno` the way the C library does.
fn os(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// Everything that can go wrong talking to KVM. Sorted by name.
///
/// Listener callbacks hand these to the core boxed; a refused
/// `region_add` or `eventfd_add` then shows up in the commit's
/// [`addrspace_core::Error::ListenerRefused`] with this error's message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The KVM device speaks an API version other than the stable one (12).
    #[error("{} has KVM API version {version}, expected 12", path.display())]
    ApiVersion {
        /// The device opened.
        path: PathBuf,
        /// The version it reported.
        version: i32,
    },
    /// An ioeventfd's access size is one KVM cannot match (0, 1, 2, 4 or 8).
    #[error("ioeventfd at {addr:#x} has size {size}: KVM matches only 0, 1, 2, 4 or 8 bytes")]
    IoeventfdSize {
        /// Address in the address space.
        addr: u64,
        /// The size asked for.
        size: u64,
    },
    /// `KVM_IOEVENTFD` refused to assign an ioeventfd.
    #[error("KVM_IOEVENTFD refused {addr:#x} (len {len}, datamatch {datamatch:?}): {}", os(*errno))]
    IoeventfdRefused {
        /// Address in the address space.
        addr: u64,
        /// Access length (0: any).
        len: u32,
        /// The value matched, if any.
        datamatch: Option<u64>,
        /// The kernel's errno.
        errno: i32,
    },
    /// Another KVM ioctl failed.
    #[error("{op} failed: {}", os(*errno))]
    Kvm {
        /// The ioctl.
        op: &'static str,
        /// The kernel's errno.
        errno: i32,
    },
    /// A memory section's guest and host addresses sit at different
    /// offsets within a page, so no page of it can be put in a memory slot
    /// (KVM maps whole host pages to whole guest pages).
    #[error(
        "guest {guest_phys_addr:#x} and host {host_addr:#x} are at different offsets in a {page_size:#x}-byte page"
    )]
    Misaligned {
        /// First page-aligned guest address of the section.
        guest_phys_addr: u64,
        /// The host address that guest address would map to.
        host_addr: u64,
        /// The host page size.
        page_size: u64,
    },
    /// An ioeventfd's notifier is not backed by a file descriptor, so KVM
    /// cannot signal it (see [`EventFdNotifier`](crate::EventFdNotifier)).
    #[error("ioeventfd at {addr:#x} has no file descriptor to give KVM")]
    NoEventFd {
        /// Address in the address space.
        addr: u64,
    },
    /// The KVM device could not be opened: it does not exist (no KVM in
    /// this kernel or container) or this user may not open it.
    #[error("cannot open {}: {source}", path.display())]
    NoKvm {
        /// The device path tried.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// Every slot number below the limit is in use.
    #[error("all {limit} KVM memory slots are in use")]
    SlotLimit {
        /// The number of slots the pool hands out.
        limit: u32,
    },
    /// `KVM_SET_USER_MEMORY_REGION` refused to create a slot (for example
    /// `EEXIST`: it overlaps a slot someone else put in the VM).
    #[error(
        "KVM refused memory slot {slot} at {guest_phys_addr:#x} (size {memory_size:#x}, flags {flags:#x}): {}",
        os(*errno)
    )]
    SlotRefused {
        /// The slot number.
        slot: u32,
        /// Guest physical address.
        guest_phys_addr: u64,
        /// Size in bytes.
        memory_size: u64,
        /// `KVM_MEM_*` flags.
        flags: u32,
        /// The kernel's errno.
        errno: i32,
    },
}
