//! The bodies of the project's fuzz targets, in the library so that the
//! checked-in corpora replay as ordinary tests on the stable toolchain
//! (`tests/fuzz_corpus.rs`) and `fuzz/` stays a thin shell around them.
//!
//! - [`core_ops::run`]: random operation sequences on the core, run on
//!   both engines side by side;
//! - [`pseries_reset::run`]: plug, unplug, reset, dynamic-window and
//!   hypercall sequences on the pseries model, with its invariant checker;
//! - the `info mtree` parser's body is `addrspace_mtree::fuzz_one`.
//!
//! Each body decodes its input with [`Bytes`], which never fails: a short
//! input just means a short sequence. A body panics only when an invariant
//! breaks, which is what the fuzzer reports.
//!
//! See the book's reliability chapter for how to run the targets
//! (`scripts/fuzz.sh TARGET MINUTES`).

pub mod core_ops;
pub mod pseries_reset;

/// A cursor over fuzz input that hands out small numbers and flags.
/// Reads past the end give zeros, so every input decodes.
#[derive(Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Bytes<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Bytes<'a> {
        Bytes { data, at: 0 }
    }

    /// True once every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }

    /// The next byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    /// A number below `n` (`n` at most 256; 0 if `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n <= 256);
        if n == 0 {
            0
        } else {
            usize::from(self.byte()) % n
        }
    }

    /// A flag.
    pub fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// A little-endian `u64` from the next eight bytes.
    pub fn u64(&mut self) -> u64 {
        let mut v = 0u64;
        for k in 0..8 {
            v |= u64::from(self.byte()) << (8 * k);
        }
        v
    }

    /// One of `choices` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::Bytes;

    #[test]
    fn reads_past_the_end_are_zero() {
        let mut b = Bytes::new(&[7, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(b.below(5), 2);
        assert_eq!(b.u64(), 0x0807_0605_0403_0201);
        assert!(b.is_empty());
        assert_eq!(b.byte(), 0);
        assert!(!b.flag());
        assert_eq!(b.below(0), 0);
        assert_eq!(b.pick(&['a', 'b']), 'a');
    }
}
