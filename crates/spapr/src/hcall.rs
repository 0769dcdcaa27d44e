//! The TCE hypercalls: `H_PUT_TCE`, `H_PUT_TCE_INDIRECT`, `H_STUFF_TCE`
//! and `H_GET_TCE`.
//!
//! Validation follows QEMU's userspace handlers, whatever the table's
//! placement, so the guest sees the same results in both:
//!
//! - the bus address is rounded down to the table's page (QEMU masks it;
//!   KVM would refuse a misaligned one);
//! - an unknown LIOBN, or an entry outside the window (or a disabled
//!   window), is `H_PARAMETER`;
//! - a TCE with a permission bit set must name a page that ends inside
//!   guest RAM, else `H_PARAMETER` and the entry is untouched (the check
//!   KVM makes and QEMU leaves out);
//! - multi-entry calls stop at the first failure; entries written before
//!   it stay.
//!
//! A put on a table in userspace notifies the IOMMU region's notifiers:
//! MAP for a TCE with a permission bit, UNMAP for one without. A put on a
//! table in KVM notifies no one: the kernel handled it.

use addrspace_core::{IommuEvent, Memory, RegionId};

use crate::error::HcallError;
use crate::iommu::SpaprIommu;
use crate::table::{Placement, PutRefused, TceTable};
use crate::tce::{page_mask, Liobn, Tce, TCE_PAGE_SHIFT};

/// The most entries one `H_PUT_TCE_INDIRECT` may carry.
pub const MAX_INDIRECT_TCES: u64 = 512;

impl SpaprIommu {
    /// `H_PUT_TCE`: writes `tce` for bus address `ioba` of table `liobn`.
    pub fn h_put_tce(
        &self,
        mem: &Memory,
        liobn: Liobn,
        ioba: u64,
        tce: Tce,
    ) -> Result<(), HcallError> {
        let (table, iommu) = self.window(liobn)?;
        self.put_one(mem, table, iommu, ioba, tce)
    }

    /// `H_PUT_TCE_INDIRECT`: writes `count` TCEs read (big-endian) from the
    /// guest-memory list at `list`, for consecutive pages from `ioba`.
    ///
    /// The list is read whole before anything is written; it must be
    /// 4 KiB aligned and hold at most [`MAX_INDIRECT_TCES`] entries.
    pub fn h_put_tce_indirect(
        &self,
        mem: &Memory,
        liobn: Liobn,
        ioba: u64,
        list: u64,
        count: u64,
    ) -> Result<(), HcallError> {
        let (table, iommu) = self.window(liobn)?;
        if count > MAX_INDIRECT_TCES {
            return Err(HcallError::ListTooLong {
                count,
                max: MAX_INDIRECT_TCES,
            });
        }
        if list & page_mask(TCE_PAGE_SHIFT) != 0 {
            return Err(HcallError::ListNotAligned { list });
        }
        let mut bytes = vec![0u8; count as usize * 8];
        mem.view(self.guest().address_space)?
            .read(list, &mut bytes)
            .map_err(|source| HcallError::ListUnreadable {
                list,
                count,
                source,
            })?;
        let tces = bytes
            .chunks_exact(8)
            .map(|b| Tce(u64::from_be_bytes(b.try_into().expect("8-byte chunk"))));
        self.put_run(mem, table, iommu, ioba, tces)
    }

    /// `H_STUFF_TCE`: writes the same `tce` for `count` consecutive pages
    /// from `ioba`; `count` may not exceed the table's size.
    pub fn h_stuff_tce(
        &self,
        mem: &Memory,
        liobn: Liobn,
        ioba: u64,
        tce: Tce,
        count: u64,
    ) -> Result<(), HcallError> {
        let (table, iommu) = self.window(liobn)?;
        let entries = table.geometry().map_or(0, |g| g.entries);
        if count > entries {
            return Err(HcallError::StuffTooLong {
                liobn,
                count,
                entries,
            });
        }
        self.put_run(mem, table, iommu, ioba, (0..count).map(|_| tce))
    }

    /// `H_GET_TCE`: the TCE for bus address `ioba` of table `liobn`.
    pub fn h_get_tce(&self, liobn: Liobn, ioba: u64) -> Result<Tce, HcallError> {
        let (table, _) = self.window(liobn)?;
        let window = table.geometry();
        window
            .and_then(|g| g.index_of(ioba))
            .and_then(|index| table.get(index))
            .ok_or(HcallError::OutsideWindow {
                liobn,
                ioba,
                window,
            })
    }

    fn window(&self, liobn: Liobn) -> Result<(&TceTable, RegionId), HcallError> {
        let phb = self
            .phb_of(liobn)
            .ok_or(HcallError::UnknownLiobn { liobn })?;
        let slot = phb.slot_of(liobn).expect("phb_of found it");
        let w = &phb.windows[slot];
        Ok((&w.table, w.iommu))
    }

    /// Puts `tces` on consecutive pages from `ioba`, stopping at the first
    /// failure.
    fn put_run(
        &self,
        mem: &Memory,
        table: &TceTable,
        iommu: RegionId,
        ioba: u64,
        tces: impl Iterator<Item = Tce>,
    ) -> Result<(), HcallError> {
        let mut tces = tces.peekable();
        if tces.peek().is_none() {
            return Ok(());
        }
        let liobn = table.liobn();
        let window = table.geometry();
        let g = window.ok_or(HcallError::OutsideWindow {
            liobn,
            ioba,
            window,
        })?;
        let first = ioba & !page_mask(g.page_shift);
        for (i, tce) in tces.enumerate() {
            let at = first as u128 + ((i as u128) << g.page_shift);
            let at = u64::try_from(at).map_err(|_| HcallError::OutsideWindow {
                liobn,
                ioba: u64::MAX,
                window,
            })?;
            self.put_one(mem, table, iommu, at, tce)?;
        }
        Ok(())
    }

    fn put_one(
        &self,
        mem: &Memory,
        table: &TceTable,
        iommu: RegionId,
        ioba: u64,
        tce: Tce,
    ) -> Result<(), HcallError> {
        let liobn = table.liobn();
        let ram_size = self.guest().size;
        let put = table
            .put(ioba, tce, ram_size)
            .map_err(|refused| match refused {
                PutRefused::OutsideWindow(window) => HcallError::OutsideWindow {
                    liobn,
                    ioba,
                    window,
                },
                PutRefused::OutsideRam => HcallError::OutsideRam {
                    liobn,
                    ioba,
                    tce,
                    ram_size,
                },
            })?;
        if put.placement == Placement::Kvm {
            return Ok(());
        }
        let g = put.geometry;
        let event = if tce.is_valid() {
            IommuEvent::map(&table.entry(&g, put.index, tce))
        } else {
            IommuEvent::unmap(g.iova_of(put.index), g.page_size())
        };
        if let Err(e) = mem.iommu_notify(iommu, &event) {
            table.restore(put.index, put.old);
            return Err(e.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use addrspace_core::{AddressSpaceId, IommuEventKind, IommuNotify, NotifierFlags, SIZE_2_64};
    use parking_lot::Mutex;

    use super::*;
    use crate::phb::{GuestRam, PhbConfig};
    use crate::status::HResult;

    const RAM: u64 = 0x100_0000;
    const DEFAULT: Liobn = Liobn(0x8000_0000);

    struct Fixture {
        mem: Memory,
        iommu: SpaprIommu,
        guest: AddressSpaceId,
    }

    fn fixture(placement: Placement) -> Fixture {
        let mut mem = Memory::new();
        let root = mem.create_container("system", SIZE_2_64).unwrap();
        let ram = mem.create_ram("ram", RAM as u128).unwrap();
        mem.add_subregion(root, 0, ram).unwrap();
        let guest = mem.create_address_space("memory", root).unwrap();
        let mut iommu = SpaprIommu::new(GuestRam {
            address_space: guest,
            size: RAM,
        });
        let mut config = PhbConfig::new(0);
        config.placement = placement;
        iommu.add_phb(&mut mem, config).unwrap();
        Fixture { mem, iommu, guest }
    }

    #[derive(Default)]
    struct Heard(Mutex<Vec<(IommuEventKind, u64, u64)>>);
    impl IommuNotify for Heard {
        fn notify(&self, e: &addrspace_core::IommuEvent) {
            self.0.lock().push((e.kind, e.iova, e.translated_addr));
        }
    }

    fn listen(f: &mut Fixture) -> Arc<Heard> {
        let heard = Arc::new(Heard::default());
        let region = f.iommu.phbs()[0].iommu_region(DEFAULT).unwrap();
        f.mem
            .register_iommu_notifier(region, NotifierFlags::ALL, 0, 0x3fff_ffff, heard.clone())
            .unwrap();
        heard
    }

    fn write_list(f: &Fixture, at: u64, tces: &[u64]) {
        let bytes: Vec<u8> = tces.iter().flat_map(|t| t.to_be_bytes()).collect();
        f.mem.view(f.guest).unwrap().write(at, &bytes).unwrap();
    }

    #[test]
    fn put_then_get_round_trips() {
        let f = fixture(Placement::Kvm);

        let put = f.iommu.h_put_tce(&f.mem, DEFAULT, 0x5000, Tce(0x7000 | 3));
        let got = f.iommu.h_get_tce(DEFAULT, 0x5abc);

        assert_eq!(HResult::of(&put), HResult::SUCCESS);
        assert_eq!(got, Ok(Tce(0x7003)));
    }

    #[test]
    fn unknown_liobn_is_a_parameter_error_for_every_call() {
        let f = fixture(Placement::Kvm);
        let nobody = Liobn(0x1234);

        let results = [
            HResult::of(&f.iommu.h_put_tce(&f.mem, nobody, 0, Tce(3))),
            HResult::of(&f.iommu.h_put_tce_indirect(&f.mem, nobody, 0, 0, 1)),
            HResult::of(&f.iommu.h_stuff_tce(&f.mem, nobody, 0, Tce(0), 1)),
            HResult::of(&f.iommu.h_get_tce(nobody, 0)),
        ];

        assert_eq!(results, [HResult::PARAMETER; 4]);
        assert!(matches!(
            f.iommu.h_get_tce(nobody, 0),
            Err(HcallError::UnknownLiobn { liobn }) if liobn == nobody
        ));
    }

    #[test]
    fn index_past_the_table_is_a_parameter_error() {
        let f = fixture(Placement::Kvm);

        let put = f.iommu.h_put_tce(&f.mem, DEFAULT, 0x4000_0000, Tce(3));
        let get = f.iommu.h_get_tce(DEFAULT, 0x4000_0000);

        assert_eq!(HResult::of(&put), HResult::PARAMETER);
        assert!(matches!(
            get,
            Err(HcallError::OutsideWindow {
                ioba: 0x4000_0000,
                window: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn disabled_window_refuses_puts() {
        let f = fixture(Placement::Kvm);

        let put = f.iommu.h_put_tce(&f.mem, Liobn(0x8000_0001), 0, Tce(3));

        assert!(matches!(
            put,
            Err(HcallError::OutsideWindow { window: None, .. })
        ));
    }

    #[test]
    fn tce_outside_ram_is_refused_and_changes_nothing() {
        let f = fixture(Placement::Kvm);
        f.iommu
            .h_put_tce(&f.mem, DEFAULT, 0, Tce(0x1000 | 1))
            .unwrap();

        let last_page = f
            .iommu
            .h_put_tce(&f.mem, DEFAULT, 0, Tce((RAM - 0x1000) | 1));
        let beyond = f.iommu.h_put_tce(&f.mem, DEFAULT, 0, Tce(RAM | 1));

        assert_eq!(last_page, Ok(()));
        assert_eq!(
            beyond,
            Err(HcallError::OutsideRam {
                liobn: DEFAULT,
                ioba: 0,
                tce: Tce(RAM | 1),
                ram_size: RAM
            })
        );
        assert_eq!(f.iommu.h_get_tce(DEFAULT, 0), Ok(Tce((RAM - 0x1000) | 1)));
    }

    #[test]
    fn cleared_tce_may_name_an_address_outside_ram() {
        let f = fixture(Placement::Kvm);

        let put = f.iommu.h_put_tce(&f.mem, DEFAULT, 0, Tce(RAM * 4));

        assert_eq!(put, Ok(()));
    }

    #[test]
    fn indirect_reads_the_list_from_guest_memory() {
        let f = fixture(Placement::Kvm);
        write_list(&f, 0x8000, &[0x1000 | 1, 0x2000 | 2, 0x3000 | 3]);

        let r = f
            .iommu
            .h_put_tce_indirect(&f.mem, DEFAULT, 0x10_0000, 0x8000, 3);

        assert_eq!(r, Ok(()));
        assert_eq!(f.iommu.h_get_tce(DEFAULT, 0x10_1000), Ok(Tce(0x2002)));
        assert_eq!(f.iommu.h_get_tce(DEFAULT, 0x10_2000), Ok(Tce(0x3003)));
    }

    #[test]
    fn indirect_list_limits_are_parameter_errors() {
        let f = fixture(Placement::Kvm);

        let long = f.iommu.h_put_tce_indirect(&f.mem, DEFAULT, 0, 0x8000, 513);
        let misaligned = f.iommu.h_put_tce_indirect(&f.mem, DEFAULT, 0, 0x8008, 1);
        let unreadable = f.iommu.h_put_tce_indirect(&f.mem, DEFAULT, 0, RAM, 1);
        let most = f.iommu.h_put_tce_indirect(&f.mem, DEFAULT, 0, 0x8000, 512);

        assert_eq!(
            long,
            Err(HcallError::ListTooLong {
                count: 513,
                max: 512
            })
        );
        assert_eq!(misaligned, Err(HcallError::ListNotAligned { list: 0x8008 }));
        assert!(matches!(
            unreadable,
            Err(HcallError::ListUnreadable { list: RAM, .. })
        ));
        assert_eq!(most, Ok(()));
        for e in [long, misaligned, unreadable] {
            assert_eq!(HResult::of(&e), HResult::PARAMETER);
        }
    }

    #[test]
    fn indirect_stops_at_the_first_bad_entry_keeping_earlier_ones() {
        let f = fixture(Placement::Kvm);
        write_list(&f, 0x8000, &[0x1000 | 3, RAM | 3, 0x3000 | 3]);

        let r = f.iommu.h_put_tce_indirect(&f.mem, DEFAULT, 0, 0x8000, 3);

        assert!(matches!(
            r,
            Err(HcallError::OutsideRam { ioba: 0x1000, .. })
        ));
        assert_eq!(f.iommu.h_get_tce(DEFAULT, 0), Ok(Tce(0x1003)));
        assert_eq!(f.iommu.h_get_tce(DEFAULT, 0x1000), Ok(Tce(0)));
        assert_eq!(f.iommu.h_get_tce(DEFAULT, 0x2000), Ok(Tce(0)));
    }

    #[test]
    fn stuff_fills_consecutive_pages_and_is_bounded_by_the_table() {
        let f = fixture(Placement::Kvm);
        let entries = 0x4000_0000 >> 12;

        let ok = f
            .iommu
            .h_stuff_tce(&f.mem, DEFAULT, 0x2000, Tce(0x9000 | 1), 3);
        let too_many = f.iommu.h_stuff_tce(&f.mem, DEFAULT, 0, Tce(0), entries + 1);

        assert_eq!(ok, Ok(()));
        assert_eq!(
            f.iommu.phbs()[0]
                .table(DEFAULT)
                .unwrap()
                .valid_entries()
                .len(),
            3
        );
        assert_eq!(
            too_many,
            Err(HcallError::StuffTooLong {
                liobn: DEFAULT,
                count: entries + 1,
                entries
            })
        );
    }

    #[test]
    fn stuff_running_off_the_end_stops_there() {
        let f = fixture(Placement::Kvm);
        let last = 0x4000_0000 - 0x1000;

        let r = f
            .iommu
            .h_stuff_tce(&f.mem, DEFAULT, last, Tce(0x9000 | 1), 2);

        assert!(matches!(
            r,
            Err(HcallError::OutsideWindow {
                ioba: 0x4000_0000,
                ..
            })
        ));
        assert_eq!(f.iommu.h_get_tce(DEFAULT, last), Ok(Tce(0x9001)));
    }

    #[test]
    fn kvm_placement_notifies_no_one() {
        let mut f = fixture(Placement::Kvm);
        let heard = listen(&mut f);

        f.iommu
            .h_put_tce(&f.mem, DEFAULT, 0x1000, Tce(0x5000 | 3))
            .unwrap();
        f.iommu.h_stuff_tce(&f.mem, DEFAULT, 0, Tce(0), 4).unwrap();

        assert!(heard.0.lock().is_empty());
    }

    #[test]
    fn userspace_placement_notifies_map_and_unmap() {
        let mut f = fixture(Placement::Userspace);
        let heard = listen(&mut f);

        f.iommu
            .h_put_tce(&f.mem, DEFAULT, 0x1000, Tce(0x5000 | 3))
            .unwrap();
        f.iommu.h_put_tce(&f.mem, DEFAULT, 0x1000, Tce(0)).unwrap();
        let refused = f.iommu.h_put_tce(&f.mem, DEFAULT, 0x1000, Tce(RAM | 3));

        assert!(refused.is_err());
        assert_eq!(
            *heard.0.lock(),
            vec![
                (IommuEventKind::Map, 0x1000, 0x5000),
                (IommuEventKind::Unmap, 0x1000, 0)
            ]
        );
    }

    #[test]
    fn lost_guest_memory_is_a_hardware_error() {
        let mut f = fixture(Placement::Kvm);
        f.mem.destroy_address_space(f.guest).unwrap();

        let r = f.iommu.h_put_tce_indirect(&f.mem, DEFAULT, 0, 0x8000, 1);

        assert!(matches!(r, Err(HcallError::Memory(_))));
        assert_eq!(HResult::of(&r), HResult::HARDWARE);
    }
}
