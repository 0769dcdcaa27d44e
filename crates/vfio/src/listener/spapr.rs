//! The IOMMU listener of an sPAPR container, on a PHB's DMA address
//! space: one host window per guest IOMMU section, kept in step with the
//! guest's mappings by a [`DmaNotifier`].
//!
//! `region_add` of an IOMMU section, in order: the section must be whole
//! host pages and overlap no recorded window; v2 then creates a host
//! window (page size: the largest host size not above the guest IOMMU's
//! minimum page; size: the section's; levels: the fewest that keep each
//! level at most 16 MiB, one more after each `ENOMEM`) and checks the
//! kernel put it at the section's bus address (asking once more if it
//! went to an earlier free slot), while v1 checks the section lies in the
//! fixed window. Then a MAP|UNMAP notifier is
//! registered over the section and replayed. A failure at any step undoes
//! the steps before it: no window, notifier or mapping is left behind.
//!
//! `region_del`: unregister the notifier, one `UNMAP_DMA` over the
//! section, `REMOVE` the window (v2), drop the record.
//!
//! Sections of other kinds in the DMA address space (MSI windows, RAM a
//! PHB maps without translation) are held but not mapped.

use std::sync::Arc;

use addrspace_core::{
    AddressSpaceId, KindTag, ListenerCx, ListenerResult, NotifierFlags, RegionKind, Section,
};

use crate::call::KernelExt;
use crate::container::Shared;
use crate::errno::Errno;
use crate::error::VfioError;
use crate::kernel::VfioKernel;
use crate::notifier::{DmaNotifier, SectionPlace};
use crate::window::{initial_levels, pick_page_shift, HostWindow, SectionRecord};

/// See the [module docs](self).
pub(crate) struct SpaprListener<K: VfioKernel> {
    shared: Arc<Shared<K>>,
    guest_memory: AddressSpaceId,
}

/// Maximum TCE table levels when `GET_INFO` does not say.
const DEFAULT_MAX_LEVELS: u32 = 1;

impl<K: VfioKernel + 'static> SpaprListener<K> {
    pub(crate) fn new(shared: Arc<Shared<K>>, guest_memory: AddressSpaceId) -> Self {
        Self {
            shared,
            guest_memory,
        }
    }

    /// The checks before any kernel call, and the window the section will
    /// use: `(window, owns_window)`; a window it owns is yet to be created.
    fn plan(&self, section: &Section, iommu_page: u64) -> Result<(HostWindow, bool), VfioError> {
        let (start, size) = (section.start(), section.size());
        let page = self.shared.config.host_page_size;
        if start % page != 0 || size % u128::from(page) != 0 {
            return Err(VfioError::SectionMisaligned {
                start,
                size,
                page_size: page,
            });
        }
        let st = self.shared.state.lock();
        for other in st.sections.values() {
            if other.owns_window && other.window.overlaps(start, size) {
                return Err(VfioError::WindowOverlap {
                    start,
                    size,
                    other_start: other.window.start,
                    other_size: other.window.size,
                });
            }
        }
        let backend = st.backend.ok_or(VfioError::NoBackend)?;
        if let Some(fixed) = backend.fixed_window {
            if !fixed.contains(start, size) {
                return Err(VfioError::OutsideFixedWindow {
                    start,
                    size,
                    window_start: fixed.start,
                    window_size: fixed.size,
                });
            }
            pick_page_shift(1 << fixed.page_shift, iommu_page).ok_or(VfioError::NoPageSize {
                iommu_page_size: iommu_page,
                host_page_sizes: 1 << fixed.page_shift,
            })?;
            return Ok((fixed, false));
        }
        let ddw = backend
            .spapr
            .and_then(|info| info.ddw)
            .ok_or(VfioError::NoDynamicWindows)?;
        let page_shift = pick_page_shift(ddw.pgsizes, iommu_page).ok_or(VfioError::NoPageSize {
            iommu_page_size: iommu_page,
            host_page_sizes: ddw.pgsizes,
        })?;
        let window_size = u64::try_from(size)
            .ok()
            .filter(|s| s.is_power_of_two())
            .ok_or(VfioError::WindowSize { start, size })?;
        let window = HostWindow {
            start,
            size: window_size,
            page_shift,
            levels: initial_levels(window_size, page_shift, ddw.levels),
        };
        Ok((window, true))
    }

    /// `TCE_CREATE`, with one more level after each `ENOMEM` up to the
    /// kernel's maximum. Returns the window as created (its start is the
    /// kernel's choice).
    fn create_once(&self, want: HostWindow) -> Result<HostWindow, VfioError> {
        let sh = &*self.shared;
        let max_levels = sh
            .state
            .lock()
            .backend
            .and_then(|b| b.spapr)
            .and_then(|info| info.ddw)
            .map_or(DEFAULT_MAX_LEVELS, |ddw| ddw.levels);
        let mut levels = want.levels;
        loop {
            match sh
                .kernel
                .create_typed(sh.fd, want.page_shift, want.size, levels)
            {
                Ok(start) => {
                    return Ok(HostWindow {
                        start,
                        levels,
                        ..want
                    })
                }
                Err(err) if err.errno() == Some(Errno::ENOMEM) && levels < max_levels => {
                    levels += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Creates the host window for `want`, which must land at
    /// `want.start`.
    ///
    /// The caller cannot choose where a window goes: the kernel takes the
    /// first free slot. A window meant for a later slot (the 64-bit one)
    /// while an earlier slot is free (the guest removed its default
    /// window) lands in the earlier one; that window is then held as a
    /// placeholder while the request is made again, and removed after.
    /// QEMU gives up at the first misplacement instead.
    fn create(&self, want: HostWindow) -> Result<HostWindow, VfioError> {
        let sh = &*self.shared;
        let first = self.create_once(want)?;
        if first.start == want.start {
            return Ok(first);
        }
        let second = self.create_once(want);
        sh.log_err(sh.kernel.remove_typed(sh.fd, first.start));
        match second {
            Ok(window) if window.start == want.start => Ok(window),
            Ok(window) => {
                sh.log_err(sh.kernel.remove_typed(sh.fd, window.start));
                Err(VfioError::WindowMisplaced {
                    expected: want.start,
                    actual: window.start,
                })
            }
            Err(_) => Err(VfioError::WindowMisplaced {
                expected: want.start,
                actual: first.start,
            }),
        }
    }

    /// Undoes a section's kernel side: one `UNMAP_DMA` over the section,
    /// then `REMOVE` of the window it owns (v2). Failures are logged.
    fn take_down(&self, record: &SectionRecord) {
        let sh = &*self.shared;
        sh.log_err(sh.kernel.unmap_typed(sh.fd, record.start, record.size));
        if record.owns_window {
            sh.log_err(sh.kernel.remove_typed(sh.fd, record.window.start));
        }
    }

    fn add(&mut self, cx: &mut ListenerCx<'_>, section: &Section) -> Result<(), VfioError> {
        let region = section.region();
        let iommu_page = match cx.region(region).map(|r| r.kind()) {
            Some(RegionKind::Iommu { ops }) => ops.min_page_size(),
            _ => return Err(addrspace_core::Error::NotAnIommu { region }.into()),
        };
        let (window, owns_window) = self.plan(section, iommu_page)?;
        let window = if owns_window {
            self.create(window)?
        } else {
            window
        };
        // `plan` checked the size fits a u64 on v2; on v1 it lies in the
        // fixed window, whose size is a u64.
        let size = section.size() as u64;
        let offset = section.offset_in_region();
        let notify = Arc::new(DmaNotifier::new(
            self.shared.clone(),
            SectionPlace {
                bus_start: section.start(),
                region_offset: offset,
                guest_memory: self.guest_memory,
            },
        ));
        let last = offset + (size - 1);
        let notifier =
            match cx.register_iommu_notifier(region, NotifierFlags::ALL, offset, last, notify) {
                Ok(id) => id,
                Err(err) => {
                    if owns_window {
                        let sh = &*self.shared;
                        sh.log_err(sh.kernel.remove_typed(sh.fd, window.start));
                    }
                    return Err(err.into());
                }
            };
        let record = SectionRecord {
            window,
            start: section.start(),
            size,
            notifier,
            owns_window,
        };
        let sh = &*self.shared;
        let failures_before = sh.stats().kernel_failures;
        let log_before = sh.log.lock().total();
        let replayed = cx.replay_iommu_notifier(record.notifier);
        let failures = sh.stats().kernel_failures - failures_before;
        if replayed.is_err() || failures > 0 {
            sh.log_err(
                cx.unregister_iommu_notifier(record.notifier)
                    .map_err(VfioError::from),
            );
            self.take_down(&record);
            return Err(match replayed {
                Err(err) => err.into(),
                Ok(_) => VfioError::ReplayFailed {
                    start: section.start(),
                    failures,
                    first: sh
                        .log
                        .lock()
                        .first_kernel_failure_since(log_before)
                        .unwrap_or_default(),
                },
            });
        }
        sh.state.lock().sections.insert(section.start(), record);
        Ok(())
    }

    fn del(&mut self, cx: &mut ListenerCx<'_>, section: &Section) {
        let sh = &*self.shared;
        let Some(record) = sh.state.lock().sections.remove(&section.start()) else {
            return;
        };
        sh.log_err(
            cx.unregister_iommu_notifier(record.notifier)
                .map_err(VfioError::from),
        );
        self.take_down(&record);
    }
}

impl<K: VfioKernel + 'static> addrspace_core::Listener for SpaprListener<K> {
    fn region_add(&mut self, cx: &mut ListenerCx<'_>, section: &Section) -> ListenerResult {
        if section.kind != KindTag::Iommu {
            return Ok(());
        }
        Ok(self.add(cx, section)?)
    }

    fn region_del(&mut self, cx: &mut ListenerCx<'_>, section: &Section) {
        if section.kind == KindTag::Iommu {
            self.del(cx, section);
        }
    }
}
