//! The PHB's MSI window: the page of the DMA address space that devices
//! write to raise message-signalled interrupts.

use addrspace_core::MmioOps;
use parking_lot::Mutex;

/// Where the MSI window sits in every PHB's DMA address space (QEMU's
/// `SPAPR_PCI_MSI_WINDOW`).
pub const MSI_WINDOW_ADDR: u64 = 0x400_0000_0000;

/// The MSI window's size: one 4 KiB page, as QEMU maps it on a 4 KiB-page
/// host.
pub const MSI_WINDOW_SIZE: u64 = 0x1000;

/// One write to the MSI window. On sPAPR the data is the interrupt number
/// to raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiWrite {
    /// Offset in the window.
    pub offset: u64,
    /// Bytes written (1, 2, 4 or 8).
    pub size: u8,
    /// The value written.
    pub data: u64,
}

/// Simple MMIO ops for the MSI window: reads return 0, writes are queued
/// for the machine (which owns the interrupt controller) to collect with
/// [`take`](Self::take).
#[derive(Debug, Default)]
pub struct MsiWindow {
    writes: Mutex<Vec<MsiWrite>>,
}

impl MsiWindow {
    /// Removes and returns the writes so far, oldest first.
    pub fn take(&self) -> Vec<MsiWrite> {
        std::mem::take(&mut *self.writes.lock())
    }
}

impl MmioOps for MsiWindow {
    fn read(&self, _offset: u64, _size: u8) -> u64 {
        0
    }

    fn write(&self, offset: u64, size: u8, data: u64) {
        self.writes.lock().push(MsiWrite { offset, size, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_queue_until_taken_and_reads_are_zero() {
        let msi = MsiWindow::default();

        msi.write(0, 4, 17);
        msi.write(4, 4, 18);
        let read = msi.read(0, 4);

        assert_eq!(read, 0);
        assert_eq!(
            msi.take().iter().map(|w| w.data).collect::<Vec<_>>(),
            vec![17, 18]
        );
        assert!(msi.take().is_empty());
    }
}
