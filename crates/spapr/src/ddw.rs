//! Dynamic DMA windows: the RTAS calls `ibm,query-pe-dma-window`,
//! `ibm,create-pe-dma-window`, `ibm,remove-pe-dma-window` and
//! `ibm,reset-pe-dma-window`.
//!
//! A PHB with dynamic windows has two window slots. The guest may remove
//! the default window, create windows of its chosen page and window size
//! (the platform chooses where), and go back to the default window.
//!
//! # Placement of a new window
//!
//! As QEMU: at the default window's address (0) if no window is active,
//! else at the 64-bit address (1 << 59). QEMU would put a second window on
//! top of the remaining one when the default window was removed while a
//! 64-bit window stayed; here the other address is used instead, and a
//! window that still overlaps (a window at 0 reaching 1 << 59) is refused
//! with `RTAS_OUT_HW_ERROR`. So windows never overlap.
//!
//! # Checks, in order
//!
//! Unknown PHB or dynamic windows off, then unsupported page size or a
//! window smaller than a page (`RTAS_OUT_PARAM_ERROR`); no free slot, more
//! TCEs than the PHB offers or a window past 2^64, overlap, or a memory map
//! that refuses the window (`RTAS_OUT_HW_ERROR`).

use addrspace_core::Memory;

use crate::error::RtasError;
use crate::iommu::SpaprIommu;
use crate::phb::Phb;
use crate::tce::{Buid, Liobn, PageSizes, WindowGeometry};

/// What `ibm,query-pe-dma-window` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdwQuery {
    /// Windows that can still be created: the PHB's maximum minus the
    /// active ones.
    pub windows_available: u32,
    /// The most TCEs one window may have.
    pub max_tces: u64,
    /// The supported page sizes.
    pub page_sizes: PageSizes,
    /// The same in the LoPAPR encoding the guest reads.
    pub page_mask: u32,
}

/// What `ibm,create-pe-dma-window` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdwWindow {
    /// The new window's table.
    pub liobn: Liobn,
    /// Its first bus address.
    pub start: u64,
}

impl Phb {
    fn check_ddw(&self) -> Result<(), RtasError> {
        if self.config().ddw {
            Ok(())
        } else {
            Err(RtasError::DdwDisabled { buid: self.buid() })
        }
    }

    /// `ibm,query-pe-dma-window`.
    pub fn query_dma_windows(&self) -> Result<DdwQuery, RtasError> {
        self.check_ddw()?;
        let config = self.config();
        Ok(DdwQuery {
            windows_available: config.max_windows() - self.active_count(),
            max_tces: config.max_tces,
            page_sizes: config.page_sizes,
            page_mask: config.page_sizes.lopapr_mask(),
        })
    }

    /// `ibm,create-pe-dma-window`: a window of `1 << window_shift` bytes in
    /// pages of `1 << page_shift` bytes, in the first free slot, with an
    /// empty table. See the [module docs](self) for where it goes.
    pub fn create_dma_window(
        &mut self,
        mem: &mut Memory,
        page_shift: u32,
        window_shift: u32,
    ) -> Result<DdwWindow, RtasError> {
        self.check_ddw()?;
        let buid = self.buid();
        let config = self.config().clone();
        if !config.page_sizes.has_shift(page_shift) {
            return Err(RtasError::UnsupportedPageShift {
                buid,
                page_shift,
                supported: config.page_sizes,
            });
        }
        if window_shift < page_shift {
            return Err(RtasError::WindowSmallerThanPage {
                window_shift,
                page_shift,
            });
        }
        let active = self.active_windows();
        let slot = (self.windows.iter())
            .position(|w| w.table.geometry().is_none())
            .filter(|_| (active.len() as u32) < config.max_windows())
            .ok_or(RtasError::NoFreeWindow {
                buid,
                active: active.len() as u32,
            })?;
        let (preferred, other) = if active.is_empty() {
            (config.dma_window_addr, config.dma64_window_addr)
        } else {
            (config.dma64_window_addr, config.dma_window_addr)
        };
        let too_large = |start| RtasError::WindowTooLarge {
            start,
            window_shift,
            page_shift,
            max_tces: config.max_tces,
        };
        let entries_shift = window_shift - page_shift;
        if entries_shift >= 64 || (1u64 << entries_shift) > config.max_tces {
            return Err(too_large(preferred));
        }
        let at = |bus_offset| WindowGeometry {
            bus_offset,
            page_shift,
            entries: 1 << entries_shift,
        };
        let blocker =
            |g: &WindowGeometry| active.iter().find(|(_, a)| a.overlaps(g)).map(|(l, _)| *l);
        let mut geometry = at(preferred);
        if let Some(in_the_way) = blocker(&geometry) {
            geometry = at(other);
            if blocker(&geometry).is_some() {
                return Err(RtasError::Overlap {
                    start: preferred,
                    size: geometry.size(),
                    other: in_the_way,
                });
            }
        }
        if geometry.end() > addrspace_core::SIZE_2_64 {
            return Err(too_large(geometry.bus_offset));
        }
        self.enable_window(mem, slot, geometry, false)?;
        Ok(DdwWindow {
            liobn: self.windows[slot].table.liobn(),
            start: geometry.bus_offset,
        })
    }

    /// `ibm,remove-pe-dma-window`: disables window `liobn`. Removing the
    /// last active window when it is not the default window enables the
    /// default window again (LoPAPR), in the same transaction.
    ///
    /// The removal itself cannot be refused; a listener or hook refusing
    /// the restored default window is logged, and the call succeeds.
    pub fn remove_dma_window(&mut self, mem: &mut Memory, liobn: Liobn) -> Result<(), RtasError> {
        let slot = self
            .slot_of(liobn)
            .ok_or(RtasError::UnknownLiobn { liobn })?;
        self.check_ddw()?;
        if self.windows[slot].table.geometry().is_none() {
            return Err(RtasError::InactiveWindow { liobn });
        }
        let was_default = self.windows[slot].default;
        mem.begin();
        let mut result = self.disable_window(mem, slot);
        if result.is_ok() && self.active_count() == 0 && !was_default {
            let default = self.config().default_window();
            result = self.enable_window(mem, 0, default, true);
        }
        let committed = mem.commit();
        if let Err(e) = result.and(committed) {
            tracing::warn!(%liobn, %e, "removing a DMA window: a consumer refused");
        }
        Ok(())
    }
}

impl SpaprIommu {
    fn ddw_phb(&self, buid: Buid) -> Result<&Phb, RtasError> {
        self.phb(buid).ok_or(RtasError::UnknownPhb { buid })
    }

    /// `ibm,query-pe-dma-window` on PHB `buid`.
    pub fn rtas_query_pe_dma_window(&self, buid: Buid) -> Result<DdwQuery, RtasError> {
        self.ddw_phb(buid)?.query_dma_windows()
    }

    /// `ibm,create-pe-dma-window` on PHB `buid`.
    pub fn rtas_create_pe_dma_window(
        &mut self,
        mem: &mut Memory,
        buid: Buid,
        page_shift: u32,
        window_shift: u32,
    ) -> Result<DdwWindow, RtasError> {
        self.phb_mut(buid)
            .ok_or(RtasError::UnknownPhb { buid })?
            .create_dma_window(mem, page_shift, window_shift)
    }

    /// `ibm,remove-pe-dma-window` of window `liobn`, on whichever PHB owns
    /// it.
    pub fn rtas_remove_pe_dma_window(
        &mut self,
        mem: &mut Memory,
        liobn: Liobn,
    ) -> Result<(), RtasError> {
        let buid = self
            .phb_of(liobn)
            .ok_or(RtasError::UnknownLiobn { liobn })?
            .buid();
        self.phb_mut(buid)
            .expect("found by LIOBN")
            .remove_dma_window(mem, liobn)
    }

    /// `ibm,reset-pe-dma-window` on PHB `buid`: back to the default window
    /// only, with an empty table (see [`Phb::reset`]). A consumer refusing
    /// the default window is logged; the call succeeds.
    pub fn rtas_reset_pe_dma_window(
        &mut self,
        mem: &mut Memory,
        buid: Buid,
    ) -> Result<(), RtasError> {
        let phb = self.phb_mut(buid).ok_or(RtasError::UnknownPhb { buid })?;
        phb.check_ddw()?;
        if let Err(e) = phb.reset(mem) {
            tracing::warn!(%buid, %e, "resetting DMA windows: a consumer refused");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use addrspace_core::SIZE_2_64;

    use super::*;
    use crate::phb::{GuestRam, PhbConfig};
    use crate::status::RtasStatus;
    use crate::tce::Tce;

    const BUID: Buid = Buid(0x0800_0000_2000_0000);
    const DEFAULT: Liobn = Liobn(0x8000_0000);
    const SECOND: Liobn = Liobn(0x8000_0001);

    fn fixture(config: PhbConfig) -> (Memory, SpaprIommu) {
        let mut mem = Memory::new();
        let root = mem.create_container("system", SIZE_2_64).unwrap();
        let ram = mem.create_ram("ram", 0x100_0000).unwrap();
        mem.add_subregion(root, 0, ram).unwrap();
        let guest = mem.create_address_space("memory", root).unwrap();
        let mut iommu = SpaprIommu::new(GuestRam {
            address_space: guest,
            size: 0x100_0000,
        });
        iommu.add_phb(&mut mem, config).unwrap();
        (mem, iommu)
    }

    fn active(iommu: &SpaprIommu) -> Vec<(Liobn, u64, u32)> {
        iommu.phbs()[0]
            .active_windows()
            .iter()
            .map(|(l, g)| (*l, g.bus_offset, g.page_shift))
            .collect()
    }

    #[test]
    fn query_reports_free_windows_limit_and_page_sizes() {
        let (_mem, iommu) = fixture(PhbConfig::new(0));

        let q = iommu.rtas_query_pe_dma_window(BUID).unwrap();

        assert_eq!(
            q,
            DdwQuery {
                windows_available: 1,
                max_tces: 0x8000_0000,
                page_sizes: PageSizes::PHB_DEFAULT,
                page_mask: 0x107,
            }
        );
    }

    #[test]
    fn unknown_phb_and_disabled_ddw_are_parameter_errors() {
        let mut config = PhbConfig::new(0);
        config.ddw = false;
        let (mut mem, mut iommu) = fixture(config);
        let nobody = Buid(0x1234);

        let results = [
            RtasStatus::of(&iommu.rtas_query_pe_dma_window(nobody)),
            RtasStatus::of(&iommu.rtas_create_pe_dma_window(&mut mem, nobody, 12, 30)),
            RtasStatus::of(&iommu.rtas_reset_pe_dma_window(&mut mem, nobody)),
            RtasStatus::of(&iommu.rtas_query_pe_dma_window(BUID)),
            RtasStatus::of(&iommu.rtas_create_pe_dma_window(&mut mem, BUID, 12, 30)),
            RtasStatus::of(&iommu.rtas_remove_pe_dma_window(&mut mem, DEFAULT)),
            RtasStatus::of(&iommu.rtas_reset_pe_dma_window(&mut mem, BUID)),
        ];

        assert_eq!(results, [RtasStatus::PARAM_ERROR; 7]);
        assert_eq!(active(&iommu), vec![(DEFAULT, 0, 12)]);
    }

    #[test]
    fn create_checks_page_and_window_shifts() {
        let (mut mem, mut iommu) = fixture(PhbConfig::new(0));

        let odd_page = iommu.rtas_create_pe_dma_window(&mut mem, BUID, 13, 30);
        let tiny = iommu.rtas_create_pe_dma_window(&mut mem, BUID, 16, 15);

        assert!(matches!(
            odd_page,
            Err(RtasError::UnsupportedPageShift { page_shift: 13, .. })
        ));
        assert_eq!(
            tiny,
            Err(RtasError::WindowSmallerThanPage {
                window_shift: 15,
                page_shift: 16
            })
        );
        assert_eq!(RtasStatus::of(&odd_page), RtasStatus::PARAM_ERROR);
        assert_eq!(active(&iommu), vec![(DEFAULT, 0, 12)]);
    }

    #[test]
    fn second_window_goes_at_the_64_bit_address() {
        let (mut mem, mut iommu) = fixture(PhbConfig::new(0));

        let w = iommu
            .rtas_create_pe_dma_window(&mut mem, BUID, 16, 32)
            .unwrap();

        assert_eq!(
            w,
            DdwWindow {
                liobn: SECOND,
                start: 1 << 59
            }
        );
        assert_eq!(
            active(&iommu),
            vec![(DEFAULT, 0, 12), (SECOND, 1 << 59, 16)]
        );
        let q = iommu.rtas_query_pe_dma_window(BUID).unwrap();
        assert_eq!(q.windows_available, 0);
    }

    #[test]
    fn third_window_is_a_hardware_error() {
        let (mut mem, mut iommu) = fixture(PhbConfig::new(0));
        iommu
            .rtas_create_pe_dma_window(&mut mem, BUID, 16, 32)
            .unwrap();

        let r = iommu.rtas_create_pe_dma_window(&mut mem, BUID, 12, 20);

        assert_eq!(
            r,
            Err(RtasError::NoFreeWindow {
                buid: BUID,
                active: 2
            })
        );
        assert_eq!(RtasStatus::of(&r), RtasStatus::HW_ERROR);
    }

    #[test]
    fn window_alone_goes_at_the_default_address() {
        let (mut mem, mut iommu) = fixture(PhbConfig::new(0));
        iommu.rtas_remove_pe_dma_window(&mut mem, DEFAULT).unwrap();

        let w = iommu
            .rtas_create_pe_dma_window(&mut mem, BUID, 21, 40)
            .unwrap();

        assert_eq!(
            w,
            DdwWindow {
                liobn: DEFAULT,
                start: 0
            }
        );
        assert_eq!(active(&iommu), vec![(DEFAULT, 0, 21)]);
        assert!(!iommu.phbs()[0].is_default_window(DEFAULT));
    }

    #[test]
    fn too_many_tces_is_a_hardware_error() {
        let (mut mem, mut iommu) = fixture(PhbConfig::new(0));

        let r = iommu.rtas_create_pe_dma_window(&mut mem, BUID, 12, 12 + 32);

        assert!(matches!(r, Err(RtasError::WindowTooLarge { start, .. }) if start == 1 << 59));
        assert_eq!(RtasStatus::of(&r), RtasStatus::HW_ERROR);
    }

    #[test]
    fn window_at_zero_reaching_the_64_bit_address_blocks_a_second() {
        let mut config = PhbConfig::new(0);
        config.max_tces = 1 << 40;
        let (mut mem, mut iommu) = fixture(config);
        iommu.rtas_remove_pe_dma_window(&mut mem, DEFAULT).unwrap();
        iommu
            .rtas_create_pe_dma_window(&mut mem, BUID, 24, 60)
            .unwrap();

        let r = iommu.rtas_create_pe_dma_window(&mut mem, BUID, 12, 20);

        assert!(
            matches!(r, Err(RtasError::Overlap { other: DEFAULT, .. })),
            "{r:?}"
        );
        assert_eq!(RtasStatus::of(&r), RtasStatus::HW_ERROR);
        assert_eq!(active(&iommu).len(), 1);
    }

    #[test]
    fn new_window_avoids_a_remaining_64_bit_window() {
        let (mut mem, mut iommu) = fixture(PhbConfig::new(0));
        iommu
            .rtas_create_pe_dma_window(&mut mem, BUID, 16, 32)
            .unwrap();
        iommu.rtas_remove_pe_dma_window(&mut mem, DEFAULT).unwrap();

        let w = iommu
            .rtas_create_pe_dma_window(&mut mem, BUID, 12, 30)
            .unwrap();

        assert_eq!(
            w,
            DdwWindow {
                liobn: DEFAULT,
                start: 0
            }
        );
    }

    #[test]
    fn remove_checks_the_liobn() {
        let (mut mem, mut iommu) = fixture(PhbConfig::new(0));

        let unknown = iommu.rtas_remove_pe_dma_window(&mut mem, Liobn(7));
        let inactive = iommu.rtas_remove_pe_dma_window(&mut mem, SECOND);

        assert_eq!(unknown, Err(RtasError::UnknownLiobn { liobn: Liobn(7) }));
        assert_eq!(inactive, Err(RtasError::InactiveWindow { liobn: SECOND }));
        assert_eq!(RtasStatus::of(&inactive), RtasStatus::PARAM_ERROR);
    }

    #[test]
    fn removing_the_default_window_leaves_none() {
        let (mut mem, mut iommu) = fixture(PhbConfig::new(0));

        iommu.rtas_remove_pe_dma_window(&mut mem, DEFAULT).unwrap();

        assert!(active(&iommu).is_empty());
        assert_eq!(
            iommu
                .rtas_query_pe_dma_window(BUID)
                .unwrap()
                .windows_available,
            2
        );
    }

    #[test]
    fn removing_the_last_created_window_restores_the_default() {
        let (mut mem, mut iommu) = fixture(PhbConfig::new(0));
        iommu
            .rtas_create_pe_dma_window(&mut mem, BUID, 16, 32)
            .unwrap();
        iommu.rtas_remove_pe_dma_window(&mut mem, DEFAULT).unwrap();

        iommu.rtas_remove_pe_dma_window(&mut mem, SECOND).unwrap();

        assert_eq!(active(&iommu), vec![(DEFAULT, 0, 12)]);
        assert!(iommu.phbs()[0].is_default_window(DEFAULT));
    }

    #[test]
    fn reset_returns_to_the_default_window_with_an_empty_table() {
        let (mut mem, mut iommu) = fixture(PhbConfig::new(0));
        iommu
            .rtas_create_pe_dma_window(&mut mem, BUID, 16, 32)
            .unwrap();
        iommu.h_put_tce(&mem, DEFAULT, 0, Tce(0x1000 | 3)).unwrap();
        iommu
            .h_put_tce(&mem, SECOND, 1 << 59, Tce(0x1000 | 3))
            .unwrap();

        let r = iommu.rtas_reset_pe_dma_window(&mut mem, BUID);

        assert_eq!(RtasStatus::of(&r), RtasStatus::SUCCESS);
        assert_eq!(active(&iommu), vec![(DEFAULT, 0, 12)]);
        assert!(iommu.table(DEFAULT).unwrap().entries().is_empty());
        assert!(iommu.table(SECOND).unwrap().entries().is_empty());
    }
}
