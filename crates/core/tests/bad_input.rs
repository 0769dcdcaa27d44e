//! Every invalid core operation gets a typed error naming the bad value and
//! changes nothing: not the tree, not the views, not what listeners heard.

use std::sync::Arc;

mod common;

use addrspace_core::recorder::{EventLog, Recorder};
use addrspace_core::{
    AddressSpaceId, Error, EventNotifier, Ioeventfd, IommuEvent, IommuNotify, ListenerConfig,
    ListenerId, Memory, NotifierFlags, NullOps, RegionId, UnmappedIommu, Unregister, SIZE_2_64,
};
use common::fingerprint;

struct Machine {
    mem: Memory,
    system: RegionId,
    ram: RegionId,
    bus: RegionId,
    dev: RegionId,
    alias: RegionId,
    as_id: AddressSpaceId,
    listener: ListenerId,
    log: EventLog,
}

/// A small machine: system { ram @0, bus @0x1000_0000 { dev @0x100 },
/// alias of ram @0x8000_0000 } with one recording listener.
fn machine() -> Machine {
    let mut mem = Memory::new();
    let system = mem.create_container("system", SIZE_2_64).unwrap();
    let ram = mem.create_ram("ram", 0x10000).unwrap();
    let bus = mem.create_container("bus", 0x1000).unwrap();
    let dev = mem.create_mmio("dev", 0x100, Arc::new(NullOps)).unwrap();
    let alias = mem.create_alias("ram-alias", ram, 0, 0x1000).unwrap();
    mem.add_subregion(system, 0, ram).unwrap();
    mem.add_subregion(bus, 0x100, dev).unwrap();
    mem.add_subregion(system, 0x1000_0000, bus).unwrap();
    mem.add_subregion(system, 0x8000_0000, alias).unwrap();
    let as_id = mem.create_address_space("memory", system).unwrap();
    let log = EventLog::new();
    let listener = mem
        .register_listener(
            as_id,
            ListenerConfig::new("rec"),
            Box::new(Recorder::new("rec", &log)),
        )
        .unwrap();
    log.take();
    Machine {
        mem,
        system,
        ram,
        bus,
        dev,
        alias,
        as_id,
        listener,
        log,
    }
}

/// Runs `op` on a fresh machine, checks its error with `expect`, and checks
/// that nothing changed; then the same inside an open transaction.
fn refused(
    op: impl Fn(&mut Machine) -> Result<(), Error>,
    expect: impl Fn(&Machine, &Error) -> bool,
) {
    for in_transaction in [false, true] {
        let mut m = machine();
        if in_transaction {
            m.mem.begin();
        }
        let before = fingerprint(&m.mem);
        let err = op(&mut m).expect_err("operation must fail");
        assert!(expect(&m, &err), "unexpected error: {err:?}");
        assert!(!err.to_string().is_empty());
        assert_eq!(before, fingerprint(&m.mem), "state changed after {err}");
        if in_transaction {
            m.mem.commit().unwrap();
        }
        assert!(
            m.log.entries().is_empty(),
            "listener heard {:?}",
            m.log.entries()
        );
    }
}

#[test]
fn region_with_a_parent_cannot_join_another() {
    refused(
        |m| m.mem.add_subregion(m.bus, 0, m.ram),
        |m, e| {
            *e == Error::AlreadyHasParent {
                child: m.ram,
                parent: m.system,
            }
        },
    );
}

#[test]
fn region_cannot_contain_itself() {
    refused(
        |m| {
            let c = m.mem.create_container("c", 0x100).unwrap();
            let err = m.mem.add_subregion(c, 0, c);
            m.mem.destroy_region(c).unwrap();
            err
        },
        |_, e| matches!(e, Error::Cycle { parent, child } if parent == child),
    );
}

#[test]
fn region_cannot_go_under_its_descendant() {
    refused(
        |m| {
            let outer = m.mem.create_container("outer", 0x1000).unwrap();
            let inner = m.mem.create_container("inner", 0x100).unwrap();
            m.mem.add_subregion(outer, 0, inner).unwrap();
            let err = m.mem.add_subregion(inner, 0, outer);
            m.mem.del_subregion(outer, inner).unwrap();
            m.mem.destroy_region(inner).unwrap();
            m.mem.destroy_region(outer).unwrap();
            err
        },
        |_, e| matches!(e, Error::Cycle { .. }),
    );
}

#[test]
fn alias_cannot_take_subregions() {
    refused(
        |m| {
            let r = m.mem.create_reservation("x", 0x10).unwrap();
            let err = m.mem.add_subregion(m.alias, 0, r);
            m.mem.destroy_region(r).unwrap();
            err
        },
        |m, e| *e == Error::SubregionOfAlias { alias: m.alias },
    );
}

#[test]
fn alias_cycle_is_refused() {
    refused(
        |m| {
            let loop_alias = m.mem.create_alias("loop", m.bus, 0, 0x100).unwrap();
            let err = m.mem.add_subregion(m.bus, 0x800, loop_alias);
            m.mem.destroy_region(loop_alias).unwrap();
            err
        },
        |m, e| matches!(e, Error::Cycle { parent, .. } if *parent == m.bus),
    );
}

#[test]
fn stale_region_handle_is_refused() {
    refused(
        |m| {
            let gone = m.mem.create_reservation("gone", 0x10).unwrap();
            m.mem.destroy_region(gone).unwrap();
            let _reused = m.mem.create_reservation("reused", 0x10).unwrap();
            let err = m.mem.set_enabled(gone, false);
            m.mem.destroy_region(_reused).unwrap();
            err
        },
        |_, e| matches!(e, Error::StaleRegion(_)),
    );
}

#[test]
fn foreign_region_handle_is_refused() {
    refused(
        |m| {
            let mut other = Memory::new();
            let foreign = other.create_reservation("elsewhere", 0x10).unwrap();
            m.mem.add_subregion(m.system, 0, foreign)
        },
        |_, e| matches!(e, Error::ForeignHandle { what: "region", .. }),
    );
}

#[test]
fn subregion_past_2_64_is_refused() {
    refused(
        |m| {
            let r = m.mem.create_reservation("edge", 0x2000).unwrap();
            let err = m.mem.add_subregion(m.system, u64::MAX - 0xfff, r);
            m.mem.destroy_region(r).unwrap();
            err
        },
        |_, e| {
            *e == Error::BeyondAddressSpace {
                what: "subregion",
                start: u64::MAX - 0xfff,
                size: 0x2000,
            }
        },
    );
}

#[test]
fn moving_past_2_64_is_refused() {
    refused(
        |m| m.mem.set_address(m.bus, u64::MAX),
        |_, e| {
            matches!(
                e,
                Error::BeyondAddressSpace {
                    start: u64::MAX,
                    size: 0x1000,
                    ..
                }
            )
        },
    );
}

#[test]
fn growing_past_2_64_is_refused() {
    refused(
        |m| m.mem.set_size(m.bus, SIZE_2_64),
        |_, e| {
            matches!(
                e,
                Error::BeyondAddressSpace {
                    start: 0x1000_0000,
                    ..
                }
            )
        },
    );
}

#[test]
fn alias_window_past_2_64_is_refused() {
    refused(
        |m| m.mem.set_alias_offset(m.alias, u64::MAX),
        |_, e| {
            matches!(
                e,
                Error::BeyondAddressSpace {
                    what: "alias window",
                    ..
                }
            )
        },
    );
}

#[test]
fn removing_a_non_child_is_refused() {
    refused(
        |m| m.mem.del_subregion(m.system, m.dev),
        |m, e| {
            *e == Error::NotASubregion {
                parent: m.system,
                region: m.dev,
            }
        },
    );
}

#[test]
fn zero_sized_ram_is_refused() {
    refused(
        |m| m.mem.create_ram("empty", 0).map(drop),
        |_, e| matches!(e, Error::ZeroSize { kind: "RAM", name } if name == "empty"),
    );
}

#[test]
fn zero_sized_iommu_is_refused() {
    refused(
        |m| {
            m.mem
                .create_iommu("tce", 0, Arc::new(UnmappedIommu { page_size: 4096 }))
                .map(drop)
        },
        |_, e| matches!(e, Error::ZeroSize { kind: "IOMMU", .. }),
    );
}

#[test]
fn shrinking_ram_to_zero_is_refused() {
    refused(
        |m| m.mem.set_size(m.ram, 0),
        |_, e| matches!(e, Error::ZeroSize { kind: "RAM", .. }),
    );
}

#[test]
fn growing_ram_past_its_backing_is_refused() {
    refused(
        |m| m.mem.set_size(m.ram, 0x20000),
        |m, e| {
            *e == Error::SizeExceedsBacking {
                region: m.ram,
                size: 0x20000,
                backing: 0x10000,
            }
        },
    );
}

#[test]
fn unknown_listener_is_refused() {
    refused(
        |m| {
            let log = EventLog::new();
            let id = m
                .mem
                .register_listener(
                    m.as_id,
                    ListenerConfig::new("tmp"),
                    Box::new(Recorder::new("tmp", &log)),
                )
                .unwrap();
            m.mem.unregister_listener(id, Unregister::Detach).unwrap();
            m.mem.unregister_listener(id, Unregister::Replay).map(drop)
        },
        |_, e| matches!(e, Error::StaleListener(_)),
    );
}

#[test]
fn commit_without_transaction_is_refused() {
    let mut m = machine();
    let before = fingerprint(&m.mem);
    assert_eq!(m.mem.commit(), Err(Error::CommitWithoutTransaction));
    assert_eq!(before, fingerprint(&m.mem));
    assert!(m.log.entries().is_empty());
}

#[test]
fn region_in_use_cannot_be_destroyed() {
    refused(
        |m| m.mem.destroy_region(m.dev),
        |_, e| matches!(e, Error::RegionInUse { reason, .. } if reason.contains("subregion")),
    );
    refused(
        |m| m.mem.destroy_region(m.system),
        |_, e| matches!(e, Error::RegionInUse { reason, .. } if reason.contains("root")),
    );
    refused(
        |m| {
            let target = m.mem.create_reservation("target", 0x10).unwrap();
            let view = m.mem.create_alias("view", target, 0, 0x10).unwrap();
            let err = m.mem.destroy_region(target);
            m.mem.destroy_region(view).unwrap();
            m.mem.destroy_region(target).unwrap();
            err
        },
        |_, e| matches!(e, Error::RegionInUse { reason, .. } if reason.contains("alias")),
    );
}

#[test]
fn romd_mode_needs_a_rom_device() {
    refused(
        |m| m.mem.set_romd_mode(m.ram, false),
        |m, e| {
            *e == Error::KindMismatch {
                region: m.ram,
                kind: "RAM",
                operation: "set_romd_mode",
            }
        },
    );
}

#[test]
fn alias_offset_needs_an_alias() {
    refused(
        |m| m.mem.set_alias_offset(m.dev, 0),
        |_, e| matches!(e, Error::KindMismatch { kind: "MMIO", .. }),
    );
}

struct Nop;
impl EventNotifier for Nop {
    fn notify(&self) {}
}

#[test]
fn ioeventfd_outside_its_region_is_refused() {
    refused(
        |m| {
            let fd = Ioeventfd {
                addr: 0xfe,
                size: 4,
                datamatch: None,
                notifier: Arc::new(Nop),
            };
            m.mem.add_ioeventfd(m.dev, fd)
        },
        |m, e| matches!(e, Error::OutsideRegion { region, start: 0xfe, size: 4, region_size: 0x100, .. } if *region == m.dev),
    );
}

#[test]
fn duplicate_and_unknown_ioeventfds_are_refused() {
    let notifier: Arc<dyn EventNotifier> = Arc::new(Nop);
    let fd = Ioeventfd {
        addr: 0,
        size: 4,
        datamatch: None,
        notifier,
    };
    let fd2 = fd.clone();
    refused(
        move |m| {
            m.mem.add_ioeventfd(m.dev, fd.clone()).unwrap();
            let err = m.mem.add_ioeventfd(m.dev, fd.clone());
            m.mem.del_ioeventfd(m.dev, &fd).unwrap();
            m.log.take();
            err
        },
        |_, e| {
            matches!(
                e,
                Error::AlreadyPresent {
                    what: "ioeventfd",
                    ..
                }
            )
        },
    );
    refused(
        move |m| m.mem.del_ioeventfd(m.dev, &fd2),
        |_, e| {
            matches!(
                e,
                Error::NotFound {
                    what: "ioeventfd",
                    ..
                }
            )
        },
    );
}

#[test]
fn empty_or_outside_coalesced_range_is_refused() {
    refused(
        |m| m.mem.add_coalescing(m.dev, 0, 0),
        |_, e| {
            matches!(
                e,
                Error::ZeroSize {
                    kind: "coalesced range",
                    ..
                }
            )
        },
    );
    refused(
        |m| m.mem.add_coalescing(m.dev, 0x80, 0x100),
        |_, e| {
            matches!(
                e,
                Error::OutsideRegion {
                    what: "coalesced range",
                    ..
                }
            )
        },
    );
}

#[test]
fn destroyed_address_space_is_stale() {
    refused(
        |m| {
            let root = m.mem.create_container("r", 0x1000).unwrap();
            let a = m.mem.create_address_space("tmp", root).unwrap();
            m.mem.destroy_address_space(a).unwrap();
            m.mem.destroy_region(root).unwrap();
            m.mem.view(a).map(drop)
        },
        |_, e| matches!(e, Error::StaleAddressSpace(_)),
    );
}

#[test]
fn ram_larger_than_the_host_can_map_is_refused() {
    refused(
        |m| m.mem.create_ram("huge", SIZE_2_64).map(drop),
        |_, e| *e == Error::BackingAllocation { size: SIZE_2_64 },
    );
}

#[test]
fn host_memory_access_past_its_end_is_refused() {
    // RAM's host memory, read and written past its 64 KiB: the error
    // names the access, and the bytes are as they were.
    refused(
        |m| {
            let backing = m
                .mem
                .region(m.ram)?
                .backing()
                .expect("RAM has host memory")
                .clone();
            backing.write(0xfff0, &[0xaa; 0x10])?;
            let mut before = [0u8; 0x10];
            backing.read(0xfff0, &mut before)?;
            let err = backing.write(0xfff8, &[0x55; 0x10]).unwrap_err();
            let mut after = [0u8; 0x10];
            backing.read(0xfff0, &mut after)?;
            assert_eq!(before, after, "a refused write changed host memory");
            assert!(backing.read(0x1_0000, &mut after[..1]).is_err());
            backing.write(0xfff0, &[0; 0x10])?;
            Err(err)
        },
        |_, e| {
            *e == Error::BackingOutOfRange {
                offset: 0xfff8,
                size: 0x10,
                len: 0x10000,
            }
        },
    );
}

#[test]
fn failed_operation_inside_transaction_keeps_earlier_changes_pending() {
    let mut m = machine();
    m.mem.begin();
    m.mem.set_enabled(m.bus, false).unwrap();
    let before = fingerprint(&m.mem);
    assert_eq!(
        m.mem.del_subregion(m.system, m.dev),
        Err(Error::NotASubregion {
            parent: m.system,
            region: m.dev,
        })
    );
    assert_eq!(
        before,
        fingerprint(&m.mem),
        "the failure changed nothing itself"
    );
    m.mem.commit().unwrap();
    let view = m.mem.view(m.as_id).unwrap();
    assert!(view.lookup(0x1000_0100).is_none());
    let _ = m.listener;
}

/// An IOMMU notifier that must never be told anything: every request
/// below is refused before it is registered or sent.
struct Deaf;

impl IommuNotify for Deaf {
    fn notify(&self, event: &IommuEvent) {
        panic!("a refused notifier request reached a notifier: {event:?}");
    }
}

/// Makes a detached IOMMU region of 0x10000 bytes, runs `op` on it,
/// checks that no notifier was left on it (its flags are empty and it can
/// be destroyed, which a registered notifier would forbid), and destroys it.
fn with_iommu(
    m: &mut Machine,
    op: impl FnOnce(&mut Memory, RegionId) -> Result<(), Error>,
) -> Result<(), Error> {
    let iommu = m
        .mem
        .create_iommu("tce", 0x10000, Arc::new(UnmappedIommu { page_size: 4096 }))
        .unwrap();
    let err = op(&mut m.mem, iommu);
    assert_eq!(
        m.mem.iommu_notifier_flags(iommu).unwrap(),
        NotifierFlags::NONE
    );
    m.mem.destroy_region(iommu).unwrap();
    err
}

#[test]
fn notifier_asking_for_no_events_is_refused() {
    refused(
        |m| {
            with_iommu(m, |mem, iommu| {
                let err = mem
                    .register_iommu_notifier(iommu, NotifierFlags::NONE, 0, 0xfff, Arc::new(Deaf))
                    .map(drop);
                assert_eq!(err, Err(Error::EmptyNotifierFlags { region: iommu }));
                err
            })
        },
        |_, e| matches!(e, Error::EmptyNotifierFlags { .. }),
    );
}

#[test]
fn notifier_with_an_inverted_range_is_refused() {
    refused(
        |m| {
            with_iommu(m, |mem, iommu| {
                let err = mem
                    .register_iommu_notifier(
                        iommu,
                        NotifierFlags::MAP,
                        0x2000,
                        0x1000,
                        Arc::new(Deaf),
                    )
                    .map(drop);
                assert!(
                    matches!(err, Err(Error::BadNotifierRange { region, start: 0x2000, last: 0x1000, .. }) if region == iommu),
                    "{err:?}"
                );
                err
            })
        },
        |_, e| matches!(e, Error::BadNotifierRange { .. }),
    );
}

#[test]
fn notifier_past_its_region_end_is_refused() {
    refused(
        |m| {
            with_iommu(m, |mem, iommu| {
                let err = mem
                    .register_iommu_notifier(iommu, NotifierFlags::MAP, 0, 0x10000, Arc::new(Deaf))
                    .map(drop);
                assert!(
                    matches!(err, Err(Error::BadNotifierRange { region, last: 0x10000, region_size: 0x10000, .. }) if region == iommu),
                    "{err:?}"
                );
                err
            })
        },
        |_, e| matches!(e, Error::BadNotifierRange { .. }),
    );
}

#[test]
fn notifier_on_a_region_that_is_not_an_iommu_is_refused() {
    refused(
        |m| {
            m.mem
                .register_iommu_notifier(m.ram, NotifierFlags::MAP, 0, 0xfff, Arc::new(Deaf))
                .map(drop)
        },
        |m, e| *e == Error::NotAnIommu { region: m.ram },
    );
}

#[test]
fn iommu_event_to_a_region_that_is_not_an_iommu_is_refused() {
    refused(
        |m| {
            m.mem
                .iommu_notify(m.dev, &IommuEvent::unmap(0, 0x1000))
                .map(drop)
        },
        |m, e| *e == Error::NotAnIommu { region: m.dev },
    );
}

#[test]
fn unregistered_notifier_is_stale() {
    refused(
        |m| {
            with_iommu(m, |mem, iommu| {
                let id = mem
                    .register_iommu_notifier(iommu, NotifierFlags::MAP, 0, 0xfff, Arc::new(Deaf))
                    .unwrap();
                mem.unregister_iommu_notifier(id).unwrap();
                assert_eq!(mem.replay_iommu_notifier(id), Err(Error::StaleNotifier(id)));
                let err = mem.unregister_iommu_notifier(id);
                assert_eq!(err, Err(Error::StaleNotifier(id)));
                err
            })
        },
        |_, e| matches!(e, Error::StaleNotifier(_)),
    );
}
