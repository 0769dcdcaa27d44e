//! Host memory that backs RAM, ROM and ROM-device regions.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;

/// A block of host memory backing a RAM-like region.
///
/// It is an anonymous, private, lazily populated mapping owned by this
/// value and unmapped when the last [`std::sync::Arc`] to it drops. Guest
/// memory is shared with other threads (vCPUs, devices, KVM), so accesses
/// go through [`read`](Self::read) and [`write`](Self::write), which copy
/// bytes and never hand out references into the block.
///
/// The block is accessed only as aligned 64-bit words, with relaxed atomic
/// operations (a compare-and-swap loop for a word only partly written), so
/// threads that read and write the same bytes at once do not race in
/// Rust's memory model, and all accesses have the same size. What one
/// call writes into one aligned word appears at once; a longer access is
/// not atomic as a whole, as with DMA on real hardware. Ordering between
/// threads is the caller's business (e.g. a doorbell with
/// acquire/release semantics).
pub struct HostMemory {
    ptr: NonNull<u8>,
    /// Bytes the caller may access.
    len: usize,
    /// Bytes mapped: `len` rounded up to whole words.
    mapped: usize,
}

// SAFETY: the mapping is plain memory owned by this value; every access
// goes through atomic word accesses and never creates non-atomic Rust
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
        let mapped = size
            .checked_next_multiple_of(8)
            .ok_or(Error::BackingAllocation { size: len })?;
        // SAFETY: a fresh private anonymous mapping at a kernel-chosen
        // address; no existing memory is affected. The result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
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
            mapped,
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

    /// The mapping as atomic words.
    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is `mapped` bytes, a whole number of words,
        // page-aligned (so word-aligned), readable and writable; it lives
        // as long as `self` and Rust only ever accesses it through these
        // atomics (the guest's accesses are outside Rust).
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().cast::<AtomicU64>(), self.mapped / 8)
        }
    }

    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let start = self.check(offset, buf.len())?;
        let words = self.words();
        let (head, body, tail) = split(start, buf.len());
        let (w0, i) = (start / 8, start % 8);
        let (first, rest) = buf.split_at_mut(head);
        let (middle, last) = rest.split_at_mut(body);
        if head > 0 {
            first.copy_from_slice(&words[w0].load(Ordering::Relaxed).to_ne_bytes()[i..i + head]);
        }
        let w1 = w0 + (head > 0) as usize;
        for (word, chunk) in words[w1..].iter().zip(middle.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        if tail > 0 {
            let word = &words[w1 + body / 8];
            last.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes()[..tail]);
        }
        Ok(())
    }

    /// Copies `buf` into the block starting at `offset`.
    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<(), Error> {
        let start = self.check(offset, buf.len())?;
        let words = self.words();
        let (head, body, tail) = split(start, buf.len());
        let (w0, i) = (start / 8, start % 8);
        let (first, rest) = buf.split_at(head);
        let (middle, last) = rest.split_at(body);
        if head > 0 {
            merge(&words[w0], i, first);
        }
        let w1 = w0 + (head > 0) as usize;
        for (word, chunk) in words[w1..].iter().zip(middle.chunks_exact(8)) {
            let value = u64::from_ne_bytes(chunk.try_into().expect("eight bytes"));
            word.store(value, Ordering::Relaxed);
        }
        if tail > 0 {
            merge(&words[w1 + body / 8], 0, last);
        }
        Ok(())
    }
}

/// Splits an access of `len` bytes at `start` into the bytes before the
/// first word boundary, whole words, and the bytes after the last one.
fn split(start: usize, len: usize) -> (usize, usize, usize) {
    let head = ((8 - start % 8) % 8).min(len);
    let body = (len - head) / 8 * 8;
    (head, body, len - head - body)
}

/// Writes `bytes` into `word` from byte `at` on, keeping its other bytes
/// (which another thread may be changing: hence the compare-and-swap).
fn merge(word: &AtomicU64, at: usize, bytes: &[u8]) {
    let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        let mut b = old.to_ne_bytes();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        Some(u64::from_ne_bytes(b))
    });
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `anonymous`,
        // and no access can outlive `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.mapped);
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
                        // Parts of one word, side by side: neither is lost.
                        mem.write(16 + v as u64, &[v]).unwrap();
                        mem.read(17, &mut buf[..2]).unwrap();
                        assert!(buf[0] == 1 || buf[0] == 0, "{buf:?}");
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
        mem.read(16, &mut buf).unwrap();
        assert_eq!(buf, [0, 1, 2, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn every_placement_and_length_matches_a_byte_array() {
        let mem = HostMemory::anonymous(40).unwrap();
        let mut model = [0u8; 40];
        let mut stamp = 0u8;
        for start in 0..24 {
            for len in 0..=16 {
                stamp = stamp.wrapping_add(1);
                let data: Vec<u8> = (0..len).map(|k| stamp.wrapping_mul(31) ^ k as u8).collect();
                mem.write(start as u64, &data).unwrap();
                model[start..start + len].copy_from_slice(&data);
                let mut all = [0u8; 40];
                mem.read(0, &mut all).unwrap();
                assert_eq!(all, model, "after writing {len} bytes at {start}");
                let mut part = vec![0u8; len];
                mem.read(start as u64, &mut part).unwrap();
                assert_eq!(part, data);
            }
        }
    }

    #[test]
    fn unaligned_accesses_across_words_and_an_odd_length() {
        let mem = HostMemory::anonymous(13).unwrap();
        mem.write(3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
        let mut buf = [0xff; 13];
        mem.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert!(mem.write(12, &[0, 0]).is_err());
    }

    #[test]
    fn zero_length_is_refused() {
        assert_eq!(
            HostMemory::anonymous(0).unwrap_err(),
            Error::BackingAllocation { size: 0 }
        );
    }
}
