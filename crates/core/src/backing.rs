//! Host memory that backs RAM, ROM and ROM-device regions.

use std::fmt;
use std::ptr::NonNull;

use crate::error::Error;

/// A block of host memory backing a RAM-like region.
///
/// It is an anonymous, private, lazily populated mapping owned by this
/// value and unmapped when the last [`std::sync::Arc`] to it drops. Guest
/// memory is shared with other threads (vCPUs, devices, KVM), so accesses
/// go through [`read`](Self::read) and [`write`](Self::write), which copy
/// bytes and never hand out references into the block.
pub struct HostMemory {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; every access
// copies bytes through raw pointers and never creates Rust references to
// the shared bytes, so moving or sharing the handle between threads is
// sound (the same contract as vm-memory's mmap regions).
unsafe impl Send for HostMemory {}
// SAFETY: see the `Send` impl: no `&`-access to the bytes is ever handed out.
unsafe impl Sync for HostMemory {}

impl HostMemory {
    /// Maps `len` bytes of zeroed anonymous memory.
    ///
    /// Pages are populated on first touch, so a large region costs nothing
    /// until it is used.
    pub fn anonymous(len: u128) -> Result<Self, Error> {
        let size = usize::try_from(len)
            .ok()
            .filter(|&n| n > 0 && n <= isize::MAX as usize)
            .ok_or(Error::BackingAllocation { size: len })?;
        // SAFETY: a fresh private anonymous mapping at a kernel-chosen
        // address; no existing memory is affected. The result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::BackingAllocation { size: len });
        }
        Ok(HostMemory {
            ptr: NonNull::new(ptr.cast()).ok_or(Error::BackingAllocation { size: len })?,
            len: size,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Always false: zero-length backings cannot be made.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The host virtual address of the first byte, for KVM memory slots and
    /// VFIO mappings.
    pub fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    fn check(&self, offset: u64, count: usize) -> Result<usize, Error> {
        let end = offset.checked_add(count as u64);
        match end {
            Some(end) if end <= self.len as u64 => Ok(offset as usize),
            _ => Err(Error::BackingOutOfRange {
                offset,
                size: count as u64,
                len: self.len as u64,
            }),
        }
    }

    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let start = self.check(offset, buf.len())?;
        // SAFETY: `check` proved start + len lies inside the mapping, which
        // lives as long as `self`; `buf` is a distinct Rust allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(start), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// Copies `buf` into the block starting at `offset`.
    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<(), Error> {
        let start = self.check(offset, buf.len())?;
        // SAFETY: as in `read`; the mapping is writable.
        unsafe {
            std::ptr::copy_nonoverlapping(buf.as_ptr(), self.ptr.as_ptr().add(start), buf.len())
        };
        Ok(())
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `anonymous`,
        // and no access can outlive `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl fmt::Debug for HostMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostMemory")
            .field("host_addr", &format_args!("{:#x}", self.host_addr()))
            .field("len", &format_args!("{:#x}", self.len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_memory_reads_zero_and_keeps_writes() {
        let mem = HostMemory::anonymous(8192).unwrap();
        let mut buf = [0xffu8; 4];
        mem.read(4096, &mut buf).unwrap();
        assert_eq!(buf, [0; 4]);
        mem.write(4094, &[1, 2, 3, 4]).unwrap();
        mem.read(4094, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
    }

    #[test]
    fn access_past_end_is_refused() {
        let mem = HostMemory::anonymous(4096).unwrap();
        let err = mem.write(4095, &[0, 0]).unwrap_err();
        assert_eq!(
            err,
            Error::BackingOutOfRange {
                offset: 4095,
                size: 2,
                len: 4096
            }
        );
    }

    #[test]
    fn zero_length_is_refused() {
        assert_eq!(
            HostMemory::anonymous(0).unwrap_err(),
            Error::BackingAllocation { size: 0 }
        );
    }
}
