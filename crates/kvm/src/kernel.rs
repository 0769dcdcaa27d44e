//! The three VM ioctls the listener needs, behind a trait so that the
//! listener's bookkeeping can be unit-tested against a model of KVM's
//! memslot rules (`fake_kernel.rs`) as well as run on `/dev/kvm`.

use kvm_bindings::{kvm_ioeventfd, kvm_userspace_memory_region, KVMIO};
use kvm_ioctls::VmFd;
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

// kvm-ioctls' `register_ioevent` ties the access length to the datamatch
// type, so "4-byte writes, any value" cannot be said through it; the raw
// ioctl can.
ioctl_iow_nr!(KVM_IOEVENTFD, KVMIO, 0x79, kvm_ioeventfd);

/// The VM-level operations of KVM the listener uses. Errors are raw errnos.
pub(crate) trait VmOps: Send + Sync {
    /// `KVM_SET_USER_MEMORY_REGION`.
    ///
    /// # Safety
    ///
    /// While the slot exists in the VM, `userspace_addr..+memory_size` must
    /// stay mapped memory that the caller keeps alive (the guest reads and
    /// writes it).
    unsafe fn set_user_memory_region(&self, region: kvm_userspace_memory_region)
        -> Result<(), i32>;
    /// `KVM_GET_DIRTY_LOG`: one bit per page of the slot, which the kernel
    /// clears as it reports them.
    fn get_dirty_log(&self, slot: u32, memory_size: u64) -> Result<Vec<u64>, i32>;
    /// `KVM_IOEVENTFD` (assign, or deassign with the flag set).
    fn ioeventfd(&self, ioeventfd: &kvm_ioeventfd) -> Result<(), i32>;
}

impl VmOps for VmFd {
    unsafe fn set_user_memory_region(
        &self,
        region: kvm_userspace_memory_region,
    ) -> Result<(), i32> {
        // SAFETY: the caller keeps the host range mapped while the slot
        // exists (this function's own contract).
        unsafe { VmFd::set_user_memory_region(self, region) }.map_err(|e| e.errno())
    }

    fn get_dirty_log(&self, slot: u32, memory_size: u64) -> Result<Vec<u64>, i32> {
        let size = usize::try_from(memory_size).map_err(|_| libc::EINVAL)?;
        VmFd::get_dirty_log(self, slot, size).map_err(|e| e.errno())
    }

    fn ioeventfd(&self, ioeventfd: &kvm_ioeventfd) -> Result<(), i32> {
        // SAFETY: `self` is a VM fd and KVM_IOEVENTFD only reads a
        // `kvm_ioeventfd`, which `ioeventfd` is; KVM takes its own
        // reference on the eventfd, and a bad fd number is an EBADF, not
        // memory unsafety. The result is checked.
        let ret = unsafe { ioctl_with_ref(self, KVM_IOEVENTFD(), ioeventfd) };
        if ret == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO))
        }
    }
}

/// The host page size: the granule of KVM memory slots and dirty bitmaps.
pub(crate) fn host_page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the system and has no side
    // effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}
