//! Host memory that backs RAM, ROM and ROM-device regions.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::Error;

/// A block of host memory backing a RAM-like region.
///
/// It is an anonymous, private, lazily populated mapping owned by this
/// value and unmapped when the last [`std::sync::Arc`] to it drops. Guest
/// memory is shared with other threads (vCPUs, devices, KVM), so accesses
/// go through [`read`](Self::read) and [`write`](Self::write), which copy
/// bytes and never hand out references into the block.
///
/// Each byte is copied with a relaxed atomic access, so threads that read
/// and write the same bytes at once do not race in Rust's memory model:
/// every byte read is one some thread wrote. Wider values are not atomic
/// as a whole (two concurrent writes of the same 8 bytes may interleave),
/// as with DMA on real hardware; ordering between threads is the
/// caller's business (e.g. a doorbell with acquire/release semantics).
pub struct HostMemory {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; every access
// copies bytes with atomic byte accesses and never creates non-atomic Rust
// references to the shared bytes, so moving or sharing the handle between
// threads is sound.
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
        // Miri's mmap accepts only MAP_PRIVATE | MAP_ANONYMOUS; leaving out
        // NORESERVE changes only how the kernel accounts the pages.
        let noreserve = if cfg!(miri) { 0 } else { libc::MAP_NORESERVE };
        // SAFETY: a fresh private anonymous mapping at a kernel-chosen
        // address; no existing memory is affected. The result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | noreserve,
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

    /// The bytes `[start, start + len)` of the mapping, as atomics.
    fn bytes(&self, start: usize, len: usize) -> &[AtomicU8] {
        assert!(
            start <= self.len && len <= self.len - start,
            "[{start:#x}, +{len:#x}) outside the mapping"
        );
        // SAFETY: the range lies inside the mapping, which lives as long
        // as `self`, is readable and writable, and is only ever accessed
        // through atomics (or by the guest, outside Rust); AtomicU8 has the
        // size and alignment of u8.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start).cast::<AtomicU8>(), len) }
    }

    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let start = self.check(offset, buf.len())?;
        let len = buf.len();
        for (b, a) in buf.iter_mut().zip(self.bytes(start, len)) {
            *b = a.load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// Copies `buf` into the block starting at `offset`.
    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<(), Error> {
        let start = self.check(offset, buf.len())?;
        for (b, a) in buf.iter().zip(self.bytes(start, buf.len())) {
            a.store(*b, Ordering::Relaxed);
        }
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
    fn threads_writing_the_same_bytes_do_not_race() {
        // Under Miri this is the check that matters: plain copies here
        // would be a data race.
        let mem = std::sync::Arc::new(HostMemory::anonymous(4096).unwrap());
        let writers: Vec<_> = (1..=2u8)
            .map(|v| {
                let mem = mem.clone();
                std::thread::spawn(move || {
                    for _ in 0..8 {
                        mem.write(8, &[v; 8]).unwrap();
                        let mut buf = [0u8; 8];
                        mem.read(8, &mut buf).unwrap();
                        assert!(buf.iter().all(|&b| b == 1 || b == 2), "{buf:?}");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let mut buf = [0u8; 8];
        mem.read(8, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 1 || b == 2), "{buf:?}");
    }

    #[test]
    fn zero_length_is_refused() {
        assert_eq!(
            HostMemory::anonymous(0).unwrap_err(),
            Error::BackingAllocation { size: 0 }
        );
    }
}
