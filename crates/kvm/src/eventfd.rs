//! Ioeventfds in KVM: the notifier KVM can signal, and the
//! `KVM_IOEVENTFD` request an ioeventfd turns into.

use std::io;
use std::os::fd::AsRawFd;

use addrspace_core::{EventNotifier, FlatIoeventfd};
use kvm_bindings::{
    kvm_ioeventfd, kvm_ioeventfd_flag_nr_datamatch, kvm_ioeventfd_flag_nr_deassign,
    kvm_ioeventfd_flag_nr_pio,
};
use vmm_sys_util::eventfd::EventFd;

use crate::error::Error;

/// Which KVM bus a listener's ioeventfds go on: the address space it is
/// registered on is memory (MMIO) or x86 I/O ports (PIO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoSpace {
    /// Guest-physical memory: memory slots and MMIO ioeventfds.
    #[default]
    Mmio,
    /// x86 I/O ports: ioeventfds only (ports have no memory slots).
    Pio,
}

/// An [`EventNotifier`] backed by a Linux eventfd, so KVM can signal it
/// without a VM exit.
///
/// It is created non-blocking: [`try_read`](Self::try_read) returns
/// `None` when nothing was signalled.
#[derive(Debug)]
pub struct EventFdNotifier(EventFd);

impl EventFdNotifier {
    /// A fresh, non-blocking eventfd.
    pub fn new() -> io::Result<Self> {
        EventFd::new(libc::EFD_NONBLOCK).map(EventFdNotifier)
    }

    /// The eventfd, e.g. to poll it.
    pub fn eventfd(&self) -> &EventFd {
        &self.0
    }

    /// The number of signals since the last read, or `None` if there were
    /// none; the count is reset.
    pub fn try_read(&self) -> io::Result<Option<u64>> {
        match self.0.read() {
            Ok(count) => Ok(Some(count)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl EventNotifier for EventFdNotifier {
    fn notify(&self) {
        // Writing fails only when the counter would overflow; the event is
        // pending either way.
        let _ = self.0.write(1);
    }

    fn raw_fd(&self) -> Option<i32> {
        Some(self.0.as_raw_fd())
    }
}

/// The `KVM_IOEVENTFD` request that assigns (or deassigns) `fd` on `space`.
pub(crate) fn request(
    fd: &FlatIoeventfd,
    space: IoSpace,
    deassign: bool,
) -> Result<kvm_ioeventfd, Error> {
    let raw = fd
        .fd
        .notifier
        .raw_fd()
        .ok_or(Error::NoEventFd { addr: fd.addr })?;
    let len = match fd.fd.size {
        0 | 1 | 2 | 4 | 8 => fd.fd.size as u32,
        size => {
            return Err(Error::IoeventfdSize {
                addr: fd.addr,
                size,
            })
        }
    };
    let mut flags = 0;
    if fd.fd.datamatch.is_some() {
        flags |= 1 << kvm_ioeventfd_flag_nr_datamatch;
    }
    if space == IoSpace::Pio {
        flags |= 1 << kvm_ioeventfd_flag_nr_pio;
    }
    if deassign {
        flags |= 1 << kvm_ioeventfd_flag_nr_deassign;
    }
    Ok(kvm_ioeventfd {
        datamatch: fd.fd.datamatch.unwrap_or(0),
        addr: fd.addr,
        len,
        fd: raw,
        flags,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use addrspace_core::{Ioeventfd, Memory};

    use super::*;

    struct Counter;
    impl EventNotifier for Counter {
        fn notify(&self) {}
    }

    fn flat(notifier: Arc<dyn EventNotifier>, size: u64, datamatch: Option<u64>) -> FlatIoeventfd {
        FlatIoeventfd {
            addr: 0x1040,
            region: Memory::new().create_container("r", 1).unwrap(),
            fd: Ioeventfd {
                addr: 0x40,
                size,
                datamatch,
                notifier,
            },
        }
    }

    #[test]
    fn eventfd_notifier_counts_signals_and_reads_none_when_idle() {
        let n = EventFdNotifier::new().unwrap();
        assert_eq!(n.try_read().unwrap(), None);
        n.notify();
        n.notify();
        assert_eq!(n.try_read().unwrap(), Some(2));
        assert_eq!(n.try_read().unwrap(), None);
        assert_eq!(n.raw_fd(), Some(n.eventfd().as_raw_fd()));
    }

    #[test]
    fn request_carries_length_datamatch_and_bus() {
        let n = Arc::new(EventFdNotifier::new().unwrap());
        let raw = n.raw_fd().unwrap();
        let r = request(&flat(n.clone(), 4, Some(7)), IoSpace::Pio, false).unwrap();
        assert_eq!((r.addr, r.len, r.datamatch, r.fd), (0x1040, 4, 7, raw));
        assert_eq!(
            r.flags,
            (1 << kvm_ioeventfd_flag_nr_datamatch) | (1 << kvm_ioeventfd_flag_nr_pio)
        );
        let r = request(&flat(n, 0, None), IoSpace::Mmio, true).unwrap();
        assert_eq!((r.len, r.flags), (0, 1 << kvm_ioeventfd_flag_nr_deassign));
    }

    #[test]
    fn notifier_without_fd_is_refused() {
        let err = request(&flat(Arc::new(Counter), 4, None), IoSpace::Mmio, false).unwrap_err();
        assert!(matches!(err, Error::NoEventFd { addr: 0x1040 }));
    }

    #[test]
    fn odd_access_size_is_refused() {
        let n = Arc::new(EventFdNotifier::new().unwrap());
        let err = request(&flat(n, 3, None), IoSpace::Mmio, false).unwrap_err();
        assert!(matches!(err, Error::IoeventfdSize { size: 3, .. }));
    }
}
