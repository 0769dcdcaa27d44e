//! Every invalid hypercall, RTAS call and PHB setup gets a typed error
//! naming the bad value, maps to the code the guest sees, and changes
//! nothing: not the memory map, not the tables, not what a notifier heard.
//!
//! The one exception PAPR mandates — a multi-entry hypercall keeps the
//! entries it wrote before its first failure — has its own case at the end.

use std::sync::Arc;

use addrspace_core::{
    IommuEvent, IommuNotify, KindTag, Listener, ListenerConfig, ListenerCx, ListenerResult, Memory,
    NotifierFlags, Section, SIZE_2_64,
};
use addrspace_spapr::{
    Buid, GuestRam, HResult, HcallError, Liobn, PageSizes, PhbConfig, Placement, RtasError,
    RtasStatus, SetupError, SpaprIommu, Tce, MAX_INDIRECT_TCES,
};
use parking_lot::Mutex;

const RAM: u64 = 0x100_0000;
const BUID: Buid = Buid(0x0800_0000_2000_0000);
const DEFAULT: Liobn = Liobn(0x8000_0000);
const SECOND: Liobn = Liobn(0x8000_0001);
/// A mapped entry the fixture starts with.
const MAPPED_IOBA: u64 = 0x3000;
const MAPPED_TCE: Tce = Tce(0x20_0000 | Tce::READ | Tce::WRITE);

/// Every IOMMU event a notifier heard.
#[derive(Default)]
struct Heard(Mutex<Vec<IommuEvent>>);

impl IommuNotify for Heard {
    fn notify(&self, e: &IommuEvent) {
        self.0.lock().push(*e);
    }
}

struct Fixture {
    mem: Memory,
    iommu: SpaprIommu,
    heard: Arc<Heard>,
}

/// Guest RAM of 16 MiB, PHB 0 with `config`'s tables in userspace (so a
/// put notifies), one mapped entry in the default window, and a notifier
/// on the default window.
fn fixture_with(mut config: PhbConfig) -> Fixture {
    config.placement = Placement::Userspace;
    let mut mem = Memory::new();
    let system = mem.create_container("system", SIZE_2_64).unwrap();
    let ram = mem.create_ram("ram", RAM as u128).unwrap();
    mem.add_subregion(system, 0, ram).unwrap();
    let guest = mem.create_address_space("memory", system).unwrap();
    let mut iommu = SpaprIommu::new(GuestRam {
        address_space: guest,
        size: RAM,
    });
    iommu.add_phb(&mut mem, config).unwrap();
    iommu
        .h_put_tce(&mem, DEFAULT, MAPPED_IOBA, MAPPED_TCE)
        .unwrap();
    let heard = Arc::new(Heard::default());
    let region = iommu.phbs()[0].iommu_region(DEFAULT).unwrap();
    mem.register_iommu_notifier(
        region,
        NotifierFlags::ALL,
        0,
        PhbConfig::DEFAULT_DMA_WINDOW_SIZE - 1,
        heard.clone(),
    )
    .unwrap();
    Fixture { mem, iommu, heard }
}

fn fixture() -> Fixture {
    fixture_with(PhbConfig::new(0))
}

/// The memory map (every region's public attributes, address spaces,
/// views) and every PHB's windows and tables.
fn fingerprint(f: &Fixture) -> String {
    let mem = &f.mem;
    let mut lines: Vec<String> = mem
        .regions()
        .map(|(id, r)| {
            format!(
                "{id:?} {} {:?} size {:#x} at {:#x} prio {} on {} ro {} parent {:?} {:?} \
                 log {:?} fds {} coalesced {:?} alias {:?}",
                r.name(),
                r.kind().tag(),
                r.size(),
                r.addr(),
                r.priority(),
                r.enabled(),
                r.readonly(),
                r.parent(),
                r.subregions(),
                r.dirty_log_mask(),
                r.ioeventfds().len(),
                r.coalesced(),
                r.alias()
            )
        })
        .collect();
    lines.sort();
    for as_id in mem.address_spaces() {
        lines.push(format!(
            "{as_id:?} {} root {:?} listeners {:?} view {:?}",
            mem.address_space_name(as_id).unwrap(),
            mem.address_space_root(as_id).unwrap(),
            mem.listeners_of(as_id).unwrap(),
            mem.view(as_id).unwrap()
        ));
    }
    for phb in f.iommu.phbs() {
        lines.push(format!("{} {:?}", phb.buid(), phb.active_windows()));
        for liobn in phb.liobns() {
            let t = phb.table(liobn).unwrap();
            lines.push(format!(
                "{liobn} default {} {:?} {:?} moves {} {:?}",
                phb.is_default_window(liobn),
                t.geometry(),
                t.placement(),
                t.moves(),
                t.entries()
            ));
        }
    }
    lines.join("\n")
}

/// Runs `op` on `f`, checks its error with `expect`, that its message is
/// not empty and contains `names`, and that nothing changed or was heard.
fn refused_on<E: std::fmt::Debug + std::fmt::Display>(
    mut f: Fixture,
    op: impl FnOnce(&mut Fixture) -> Result<(), E>,
    expect: impl FnOnce(&E) -> bool,
    names: &str,
) {
    let before = fingerprint(&f);
    let err = op(&mut f).expect_err("operation must fail");
    assert!(expect(&err), "unexpected error: {err:?}");
    let message = err.to_string();
    assert!(
        message.contains(names),
        "message {message:?} does not name {names:?}"
    );
    assert_eq!(before, fingerprint(&f), "state changed after {err}");
    assert!(
        f.heard.0.lock().is_empty(),
        "notifier heard {:?}",
        f.heard.0
    );
}

fn refused<E: std::fmt::Debug + std::fmt::Display>(
    op: impl FnOnce(&mut Fixture) -> Result<(), E>,
    expect: impl FnOnce(&E) -> bool,
    names: &str,
) {
    refused_on(fixture(), op, expect, names)
}

/// A hypercall refusal must be the exact error and `H_PARAMETER`.
fn parameter(expected: HcallError) -> impl FnOnce(&HcallError) -> bool {
    move |e| *e == expected && e.code() == HResult::PARAMETER
}

#[test]
fn put_tce_on_an_unknown_liobn() {
    let liobn = Liobn(0x1234);
    refused(
        |f| f.iommu.h_put_tce(&f.mem, liobn, 0, MAPPED_TCE),
        parameter(HcallError::UnknownLiobn { liobn }),
        "0x1234",
    );
}

#[test]
fn get_tce_on_an_unknown_liobn() {
    let liobn = Liobn(0x1234);
    refused(
        |f| f.iommu.h_get_tce(liobn, 0).map(drop),
        parameter(HcallError::UnknownLiobn { liobn }),
        "0x1234",
    );
}

#[test]
fn put_tce_past_the_window() {
    let ioba = PhbConfig::DEFAULT_DMA_WINDOW_SIZE;
    refused(
        |f| f.iommu.h_put_tce(&f.mem, DEFAULT, ioba, MAPPED_TCE),
        |e| {
            matches!(e, HcallError::OutsideWindow { liobn: DEFAULT, ioba: a, window: Some(_) } if *a == ioba)
                && e.code() == HResult::PARAMETER
        },
        "0x40000000",
    );
}

#[test]
fn put_tce_on_a_disabled_window() {
    refused(
        |f| f.iommu.h_put_tce(&f.mem, SECOND, 0, MAPPED_TCE),
        parameter(HcallError::OutsideWindow {
            liobn: SECOND,
            ioba: 0,
            window: None,
        }),
        "0x80000001",
    );
}

#[test]
fn get_tce_past_the_window() {
    refused(
        |f| f.iommu.h_get_tce(DEFAULT, u64::MAX).map(drop),
        |e| {
            matches!(
                e,
                HcallError::OutsideWindow {
                    liobn: DEFAULT,
                    ioba: u64::MAX,
                    ..
                }
            ) && e.code() == HResult::PARAMETER
        },
        "0xffffffffffffffff",
    );
}

#[test]
fn put_tce_naming_a_page_past_guest_ram() {
    let tce = Tce(RAM | Tce::READ);
    refused(
        |f| f.iommu.h_put_tce(&f.mem, DEFAULT, MAPPED_IOBA, tce),
        parameter(HcallError::OutsideRam {
            liobn: DEFAULT,
            ioba: MAPPED_IOBA,
            tce,
            ram_size: RAM,
        }),
        "0x1000001",
    );
}

#[test]
fn put_tce_indirect_with_too_many_entries() {
    refused(
        |f| {
            f.iommu
                .h_put_tce_indirect(&f.mem, DEFAULT, 0, 0x1000, MAX_INDIRECT_TCES + 1)
        },
        parameter(HcallError::ListTooLong {
            count: 513,
            max: 512,
        }),
        "513",
    );
}

#[test]
fn put_tce_indirect_with_a_misaligned_list() {
    refused(
        |f| f.iommu.h_put_tce_indirect(&f.mem, DEFAULT, 0, 0x1008, 2),
        parameter(HcallError::ListNotAligned { list: 0x1008 }),
        "0x1008",
    );
}

#[test]
fn put_tce_indirect_with_a_list_outside_guest_ram() {
    refused(
        |f| f.iommu.h_put_tce_indirect(&f.mem, DEFAULT, 0, RAM, 2),
        |e| {
            matches!(
                e,
                HcallError::ListUnreadable {
                    list: RAM,
                    count: 2,
                    ..
                }
            ) && e.code() == HResult::PARAMETER
        },
        "0x1000000",
    );
}

#[test]
fn put_tce_indirect_after_guest_memory_is_gone() {
    // The machine tore its guest address space down under the PHB: the
    // hypervisor cannot read the list, which is its failure, not the
    // guest's (H_HARDWARE).
    let mut f = fixture();
    let guest = f.iommu.guest().address_space;
    f.mem.destroy_address_space(guest).unwrap();
    refused_on(
        f,
        |f| f.iommu.h_put_tce_indirect(&f.mem, DEFAULT, 0, 0x1000, 1),
        |e| {
            matches!(e, HcallError::Memory(addrspace_core::Error::StaleAddressSpace(a)) if *a == guest)
                && e.code() == HResult::HARDWARE
        },
        "does not exist",
    );
}

#[test]
fn stuff_tce_with_more_entries_than_the_table() {
    let entries = PhbConfig::DEFAULT_DMA_WINDOW_SIZE >> 12;
    refused(
        |f| {
            f.iommu
                .h_stuff_tce(&f.mem, DEFAULT, 0, Tce::EMPTY, entries + 1)
        },
        parameter(HcallError::StuffTooLong {
            liobn: DEFAULT,
            count: entries + 1,
            entries,
        }),
        "262145",
    );
}

#[test]
fn rtas_calls_on_an_unknown_phb() {
    let buid = Buid(0x42);
    let expected = RtasError::UnknownPhb { buid };
    let param = |e: &RtasError| *e == expected && e.status() == RtasStatus::PARAM_ERROR;
    refused(
        |f| f.iommu.rtas_query_pe_dma_window(buid).map(drop),
        param,
        "0x42",
    );
    refused(
        |f| {
            f.iommu
                .rtas_create_pe_dma_window(&mut f.mem, buid, 16, 30)
                .map(drop)
        },
        param,
        "0x42",
    );
    refused(
        |f| f.iommu.rtas_reset_pe_dma_window(&mut f.mem, buid),
        param,
        "0x42",
    );
}

#[test]
fn rtas_remove_of_an_unknown_liobn() {
    let liobn = Liobn(0x77);
    refused(
        |f| f.iommu.rtas_remove_pe_dma_window(&mut f.mem, liobn),
        |e| *e == RtasError::UnknownLiobn { liobn } && e.status() == RtasStatus::PARAM_ERROR,
        "0x77",
    );
}

#[test]
fn rtas_remove_of_an_inactive_window() {
    refused(
        |f| f.iommu.rtas_remove_pe_dma_window(&mut f.mem, SECOND),
        |e| {
            *e == RtasError::InactiveWindow { liobn: SECOND }
                && e.status() == RtasStatus::PARAM_ERROR
        },
        "0x80000001",
    );
}

#[test]
fn rtas_calls_with_dynamic_windows_off() {
    let no_ddw = || {
        let mut config = PhbConfig::new(0);
        config.ddw = false;
        fixture_with(config)
    };
    let disabled = |e: &RtasError| {
        *e == RtasError::DdwDisabled { buid: BUID } && e.status() == RtasStatus::PARAM_ERROR
    };
    refused_on(
        no_ddw(),
        |f| f.iommu.rtas_query_pe_dma_window(BUID).map(drop),
        disabled,
        "0x800000020000000",
    );
    refused_on(
        no_ddw(),
        |f| {
            f.iommu
                .rtas_create_pe_dma_window(&mut f.mem, BUID, 16, 30)
                .map(drop)
        },
        disabled,
        "0x800000020000000",
    );
    refused_on(
        no_ddw(),
        |f| f.iommu.rtas_remove_pe_dma_window(&mut f.mem, DEFAULT),
        disabled,
        "0x800000020000000",
    );
    refused_on(
        no_ddw(),
        |f| f.iommu.rtas_reset_pe_dma_window(&mut f.mem, BUID),
        disabled,
        "0x800000020000000",
    );
}

#[test]
fn rtas_create_with_an_unsupported_page_size() {
    refused(
        |f| {
            f.iommu
                .rtas_create_pe_dma_window(&mut f.mem, BUID, 13, 30)
                .map(drop)
        },
        |e| {
            *e == RtasError::UnsupportedPageShift {
                buid: BUID,
                page_shift: 13,
                supported: PageSizes::PHB_DEFAULT,
            } && e.status() == RtasStatus::PARAM_ERROR
        },
        "page shift 13",
    );
}

#[test]
fn rtas_create_of_a_window_smaller_than_a_page() {
    refused(
        |f| {
            f.iommu
                .rtas_create_pe_dma_window(&mut f.mem, BUID, 16, 15)
                .map(drop)
        },
        |e| {
            *e == RtasError::WindowSmallerThanPage {
                window_shift: 15,
                page_shift: 16,
            } && e.status() == RtasStatus::PARAM_ERROR
        },
        "window shift 15",
    );
}

#[test]
fn rtas_create_with_no_free_slot() {
    let mut f = fixture();
    f.iommu
        .rtas_create_pe_dma_window(&mut f.mem, BUID, 16, 30)
        .unwrap();
    refused_on(
        f,
        |f| {
            f.iommu
                .rtas_create_pe_dma_window(&mut f.mem, BUID, 16, 30)
                .map(drop)
        },
        |e| {
            *e == RtasError::NoFreeWindow {
                buid: BUID,
                active: 2,
            } && e.status() == RtasStatus::HW_ERROR
        },
        "2 active",
    );
}

#[test]
fn rtas_create_of_a_window_with_too_many_tces() {
    // 2^48 pages of 4 KiB: more than the 2^31 TCEs a window may have; and
    // a window shift so large its page count does not fit 64 bits.
    for window_shift in [60, 80] {
        refused(
            |f| {
                f.iommu
                    .rtas_create_pe_dma_window(&mut f.mem, BUID, 12, window_shift)
                    .map(drop)
            },
            |e| {
                *e == RtasError::WindowTooLarge {
                    start: PhbConfig::DEFAULT_DMA64_WINDOW_ADDR,
                    window_shift,
                    page_shift: 12,
                    max_tces: PhbConfig::DEFAULT_MAX_TCES,
                } && e.status() == RtasStatus::HW_ERROR
            },
            &format!("2^{window_shift} bytes"),
        );
    }
}

#[test]
fn rtas_create_of_a_window_past_2_64() {
    // With no TCE limit, 2^64 bytes at 1 << 59 would end past 2^64.
    let mut config = PhbConfig::new(0);
    config.max_tces = u64::MAX;
    refused_on(
        fixture_with(config),
        |f| {
            f.iommu
                .rtas_create_pe_dma_window(&mut f.mem, BUID, 24, 64)
                .map(drop)
        },
        |e| {
            *e == RtasError::WindowTooLarge {
                start: PhbConfig::DEFAULT_DMA64_WINDOW_ADDR,
                window_shift: 64,
                page_shift: 24,
                max_tces: u64::MAX,
            } && e.status() == RtasStatus::HW_ERROR
        },
        "0x800000000000000",
    );
}

#[test]
fn rtas_create_overlapping_the_remaining_window() {
    // A 64-bit window at 1 << 40 stays after the default window goes; a
    // new 2^41-byte window fits neither at 1 << 40 nor at 0.
    let mut config = PhbConfig::new(0);
    config.dma64_window_addr = 1 << 40;
    let mut f = fixture_with(config);
    let second = f
        .iommu
        .rtas_create_pe_dma_window(&mut f.mem, BUID, 16, 30)
        .unwrap();
    assert_eq!((second.liobn, second.start), (SECOND, 1 << 40));
    f.iommu
        .rtas_remove_pe_dma_window(&mut f.mem, DEFAULT)
        .unwrap();
    f.heard.0.lock().clear();
    refused_on(
        f,
        |f| {
            f.iommu
                .rtas_create_pe_dma_window(&mut f.mem, BUID, 24, 41)
                .map(drop)
        },
        |e| {
            *e == RtasError::Overlap {
                start: 1 << 40,
                size: 1 << 41,
                other: SECOND,
            } && e.status() == RtasStatus::HW_ERROR
        },
        "0x80000001",
    );
}

/// Refuses every IOMMU section except the default window's (at 0).
struct RefuseNewWindows;

impl Listener for RefuseNewWindows {
    fn region_add(&mut self, _cx: &mut ListenerCx<'_>, s: &Section) -> ListenerResult {
        if s.kind == KindTag::Iommu && s.start() != 0 {
            return Err(format!("no IOMMU at {:#x}", s.start()).into());
        }
        Ok(())
    }
}

#[test]
fn rtas_create_refused_by_the_memory_map_is_taken_back() {
    let mut f = fixture();
    let dma = f.iommu.phbs()[0].address_space();
    f.mem
        .register_listener(
            dma,
            ListenerConfig::new("refuser"),
            Box::new(RefuseNewWindows),
        )
        .unwrap();
    refused_on(
        f,
        |f| {
            f.iommu
                .rtas_create_pe_dma_window(&mut f.mem, BUID, 16, 30)
                .map(drop)
        },
        |e| {
            matches!(e, RtasError::Memory(addrspace_core::Error::ListenerRefused { failures })
                if failures[0].name == "refuser" && failures[0].event == "region_add")
                && e.status() == RtasStatus::HW_ERROR
        },
        "no IOMMU at 0x800000000000000",
    );
}

/// A PHB setup refusal leaves the memory map and the PHB list as they were.
fn setup_refused(
    f: Fixture,
    config: PhbConfig,
    expect: impl FnOnce(&SetupError) -> bool,
    names: &str,
) {
    refused_on(
        f,
        |f| f.iommu.add_phb(&mut f.mem, config).map(drop),
        expect,
        names,
    );
}

#[test]
fn phb_with_an_index_in_use() {
    setup_refused(
        fixture(),
        PhbConfig::new(0),
        |e| *e == SetupError::DuplicatePhb { index: 0 },
        "PHB 0",
    );
}

#[test]
fn phb_with_an_inconsistent_config() {
    type Spoil = fn(&mut PhbConfig);
    let cases: [(&str, Spoil); 7] = [
        ("index too large", |c| c.index = PhbConfig::MAX_INDEX + 1),
        ("not a non-zero multiple of 4 KiB", |c| {
            c.dma_window_size = 0
        }),
        ("not a non-zero multiple of 4 KiB", |c| {
            c.dma_window_size = 0x1800
        }),
        ("not 4 KiB aligned", |c| c.dma_window_addr = 0x800),
        ("ends past 2^64", |c| c.dma_window_addr = u64::MAX - 0xfff),
        ("inside the default window", |c| {
            c.dma64_window_addr = 0x1000
        }),
        ("no page size", |c| c.page_sizes = PageSizes(0)),
    ];
    for (reason, spoil) in cases {
        let mut config = PhbConfig::new(1);
        spoil(&mut config);
        let index = config.index;
        setup_refused(
            fixture(),
            config,
            |e| matches!(e, SetupError::BadConfig { index: i, reason: r } if *i == index && r.contains(reason)),
            reason,
        );
    }
}

#[test]
fn phb_for_guest_memory_that_is_gone() {
    let mut f = fixture();
    let guest = f.iommu.guest().address_space;
    f.mem.destroy_address_space(guest).unwrap();
    setup_refused(
        f,
        PhbConfig::new(1),
        |e| *e == SetupError::Memory(addrspace_core::Error::StaleAddressSpace(guest)),
        "does not exist",
    );
}

#[test]
fn stuff_tce_running_off_the_window_keeps_the_entries_before() {
    // PAPR: a multi-entry call stops at its first failure and keeps what
    // it wrote before it. Four entries from the last two pages: two are
    // written, the third is refused and names its bus address.
    let f = fixture();
    let end = PhbConfig::DEFAULT_DMA_WINDOW_SIZE;
    let tce = Tce(0x40_0000 | Tce::READ);
    let err = f
        .iommu
        .h_stuff_tce(&f.mem, DEFAULT, end - 0x2000, tce, 4)
        .unwrap_err();
    assert!(matches!(
        err,
        HcallError::OutsideWindow { liobn: DEFAULT, ioba, .. } if ioba == end
    ));
    assert_eq!(err.code(), HResult::PARAMETER);
    let table = f.iommu.table(DEFAULT).unwrap();
    let last = (end >> 12) - 1;
    assert_eq!(
        table.entries(),
        vec![
            (MAPPED_IOBA >> 12, MAPPED_TCE),
            (last - 1, tce),
            (last, tce)
        ]
    );
    assert_eq!(f.heard.0.lock().len(), 2, "one MAP per entry written");
}
