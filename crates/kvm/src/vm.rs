//! Opening KVM and sharing one VM between the VMM and its listeners.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kvm_ioctls::{Cap, Kvm, VmFd};

use crate::error::Error;
use crate::listener::KvmMemoryListener;
use crate::pool::SlotPool;

/// KVM's stable API version (`KVM_GET_API_VERSION`).
const KVM_API_VERSION: i32 = 12;

/// Slots assumed when the kernel does not report `KVM_CAP_NR_MEMSLOTS`
/// (the limit of kernels from before the capability existed).
const OLD_KERNEL_MEMSLOTS: u32 = 32;

/// A KVM virtual machine shared by the VMM (vCPUs, irqchip, ...) and the
/// listeners that keep its memory map.
///
/// The VM fd is an `Arc<VmFd>`: listeners hold clones, so the VMM keeps
/// full use of it. Every listener made by [`memory_listener`](Self::memory_listener)
/// draws slot numbers from this VM's one [`SlotPool`].
#[derive(Debug, Clone)]
pub struct KvmVm {
    vm: Arc<VmFd>,
    pool: SlotPool,
}

impl KvmVm {
    /// Where KVM usually lives.
    pub const DEFAULT_PATH: &'static str = "/dev/kvm";

    /// Opens [`DEFAULT_PATH`](Self::DEFAULT_PATH) and creates a VM.
    ///
    /// Fails with [`Error::NoKvm`] (naming the path) if the device is
    /// missing or may not be opened.
    pub fn open() -> Result<Self, Error> {
        Self::open_path(Self::DEFAULT_PATH)
    }

    /// Opens the KVM device at `path` and creates a VM.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let no_kvm = |source| Error::NoKvm {
            path: path.to_path_buf(),
            source,
        };
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            no_kvm(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "path contains a NUL byte",
            ))
        })?;
        let kvm = Kvm::new_with_path(c_path)
            .map_err(|e| no_kvm(std::io::Error::from_raw_os_error(e.errno())))?;
        let version = kvm.get_api_version();
        if version != KVM_API_VERSION {
            return Err(Error::ApiVersion {
                path: PathBuf::from(path),
                version,
            });
        }
        let vm = kvm.create_vm().map_err(|e| Error::Kvm {
            op: "KVM_CREATE_VM",
            errno: e.errno(),
        })?;
        Ok(Self::from_vm_fd(Arc::new(vm)))
    }

    /// Wraps a VM the VMM created itself. Its slot pool covers every slot
    /// KVM offers (`KVM_CAP_NR_MEMSLOTS`); no one else may put memory
    /// slots in this VM except through the pool.
    pub fn from_vm_fd(vm: Arc<VmFd>) -> Self {
        let reported = vm.check_extension_int(Cap::NrMemslots);
        let limit = u32::try_from(reported)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(OLD_KERNEL_MEMSLOTS);
        KvmVm {
            vm,
            pool: SlotPool::new(limit),
        }
    }

    /// Lowers the number of slots the listeners may use to `limit` (never
    /// above what KVM offers), e.g. to keep slots free for the VMM's own
    /// use. Takes effect for listeners made afterwards.
    pub fn with_slot_limit(mut self, limit: u32) -> Self {
        self.pool = SlotPool::new(limit.min(self.pool.limit()));
        self
    }

    /// The VM.
    pub fn vm_fd(&self) -> &Arc<VmFd> {
        &self.vm
    }

    /// The slot numbers listeners on this VM share.
    pub fn slot_pool(&self) -> &SlotPool {
        &self.pool
    }

    /// A memory listener for this VM (on the memory bus; see
    /// [`KvmMemoryListener::io_space`] for an I/O-port address space).
    pub fn memory_listener(&self) -> KvmMemoryListener {
        KvmMemoryListener::new(Arc::clone(&self.vm), self.pool.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_no_kvm_naming_the_path() {
        let err = KvmVm::open_path("/nonexistent/kvm").unwrap_err();
        match &err {
            Error::NoKvm { path, source } => {
                assert_eq!(path, Path::new("/nonexistent/kvm"));
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected NoKvm, got {other:?}"),
        }
        assert!(err.to_string().contains("/nonexistent/kvm"));
    }

    #[test]
    fn a_file_that_is_not_kvm_is_refused() {
        // /dev/null opens but answers no KVM ioctl.
        let err = KvmVm::open_path("/dev/null").unwrap_err();
        assert!(
            matches!(err, Error::NoKvm { .. } | Error::ApiVersion { .. }),
            "{err:?}"
        );
    }
}
