//! Every invalid container, group or plug operation gets a typed error
//! naming the bad value, and changes nothing: not the memory map, not the
//! container, not the simulated kernel (containers, groups, windows, TCEs,
//! registrations, locked memory).

mod support;

use std::sync::Arc;

use addrspace_core::{Error, IommuEvent, IommuPerm, IommuTlbEntry, Memory};
use addrspace_vfio::{
    BackendSnapshot, Container, Errno, GroupConfig, IommuGroupId, IommuType, KernelCall, SimConfig,
    SimKernel, SimMode, VfioError, VFIO_SPAPR_TCE_V2_IOMMU,
};
use support::*;

/// The memory map as its public API shows it.
fn memory_fingerprint(mem: &Memory) -> String {
    let mut lines: Vec<String> = mem
        .regions()
        .map(|(id, r)| {
            format!(
                "{id:?} {} {:?} size {:#x} at {:#x} on {} parent {:?} {:?} alias {:?}",
                r.name(),
                r.kind().tag(),
                r.size(),
                r.addr(),
                r.enabled(),
                r.parent(),
                r.subregions(),
                r.alias()
            )
        })
        .collect();
    lines.sort();
    for as_id in mem.address_spaces() {
        lines.push(format!(
            "{as_id:?} {} listeners {:?} view {:?}",
            mem.address_space_name(as_id).unwrap(),
            mem.listeners_of(as_id).unwrap(),
            mem.view(as_id).unwrap()
        ));
    }
    lines.join("\n")
}

/// Everything observable: the memory map, the container, the kernel —
/// except a v2 container's `enabled` bit, which mainline sets on the first
/// `REGISTER_MEMORY` and never clears (no ioctl can take it back).
fn fingerprint(m: &Machine, sim: &SimKernel, c: &Container<SimKernel>) -> String {
    let mut kernel = sim.snapshot();
    for container in kernel.containers.values_mut() {
        if let Some(BackendSnapshot::Spapr(spapr)) = &mut container.backend {
            spapr.enabled &= !spapr.v2;
        }
    }
    format!(
        "{}\ngroups {:?} released {} plugged {:?}\nwindows {:?}\nsections {:?}\n\
         registered {:?}\nguest ram {:?}\nkernel {:?}\nlocked {}\nusage {:?}",
        memory_fingerprint(&m.mem),
        c.groups(),
        c.is_released(),
        c.plugged(),
        c.windows(),
        c.iommu_sections(),
        c.registered_memory(),
        c.guest_ram(),
        kernel,
        sim.locked_memory(),
        m.windows
            .iter()
            .map(|w| m.mem.iommu_usage(w.region).unwrap())
            .collect::<Vec<_>>()
    )
}

/// A machine, the strict simulated host and a container on it.
struct Fixture {
    m: Machine,
    sim: Arc<SimKernel>,
    c: Container<SimKernel>,
}

/// A v2 container with group [`GA`] attached, not plugged.
fn attached() -> Fixture {
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);
    Fixture {
        m: Machine::new(),
        sim,
        c,
    }
}

/// The same, plugged into the machine.
fn plugged() -> Fixture {
    let (m, sim, c) = plugged_v2();
    Fixture { m, sim, c }
}

/// Runs `op`, checks its error with `expect` and that the message names
/// `names`, and that nothing changed.
fn refused(
    mut f: Fixture,
    op: impl FnOnce(&mut Fixture) -> Result<(), VfioError>,
    expect: impl FnOnce(&VfioError) -> bool,
    names: &str,
) {
    let before = fingerprint(&f.m, &f.sim, &f.c);
    let err = op(&mut f).expect_err("operation must fail");
    assert!(expect(&err), "unexpected error: {err:?}");
    let message = err.to_string();
    assert!(
        message.contains(names),
        "message {message:?} does not name {names:?}"
    );
    assert_eq!(
        before,
        fingerprint(&f.m, &f.sim, &f.c),
        "state changed after {err}"
    );
}

/// The message a listener refusal carries, for errors that reach the
/// caller through a commit.
fn refusal_message(err: &VfioError) -> Option<&str> {
    match err {
        VfioError::Memory(Error::ListenerRefused { failures }) => Some(&failures[0].message),
        _ => None,
    }
}

#[test]
fn attaching_a_group_twice() {
    refused(
        attached(),
        |f| f.c.attach_group(GA),
        |e| matches!(e, VfioError::GroupAttached { group: GA }),
        "group 1",
    );
}

#[test]
fn attaching_a_group_a_host_driver_owns() {
    refused(
        attached(),
        |f| f.c.attach_group(G_OWNED),
        |e| {
            matches!(
                e,
                VfioError::GroupNotViable {
                    group: G_OWNED,
                    flags: 0
                }
            )
        },
        "group 4 is not viable",
    );
}

#[test]
fn attaching_a_group_the_host_does_not_have() {
    let group = IommuGroupId(99);
    refused(
        attached(),
        |f| f.c.attach_group(group),
        |e| {
            matches!(
                e,
                VfioError::Kernel {
                    call: KernelCall::OpenGroup { group: g },
                    errno: Errno::ENOENT,
                } if *g == group
            )
        },
        "99",
    );
}

#[test]
fn attaching_a_group_without_dynamic_windows_to_a_v2_container() {
    let sim = sim();
    let c = Container::open(sim.clone(), IommuType::SpaprV2).unwrap();
    refused(
        Fixture {
            m: Machine::new(),
            sim,
            c,
        },
        |f| f.c.attach_group(G_NO_DDW),
        |e| {
            matches!(
                e,
                VfioError::Kernel {
                    call: KernelCall::SetIommu {
                        iommu_type: VFIO_SPAPR_TCE_V2_IOMMU
                    },
                    errno: Errno::EINVAL,
                }
            )
        },
        "VFIO_SET_IOMMU",
    );
}

#[test]
fn opening_a_container_for_an_iommu_the_host_lacks() {
    let sim = Arc::new(
        SimConfig::new()
            .mode(SimMode::Strict)
            .type1(false)
            .group(GroupConfig::new(GA.0))
            .build(),
    );
    let before = format!("{:?}", sim.snapshot());
    let err = Container::open(sim.clone(), IommuType::Type1V2).unwrap_err();
    assert!(matches!(
        err,
        VfioError::IommuTypeUnsupported {
            iommu_type: IommuType::Type1V2
        }
    ));
    assert!(err.to_string().contains("Type1V2"));
    assert_eq!(
        before,
        format!("{:?}", sim.snapshot()),
        "a container leaked"
    );
}

#[test]
fn detaching_a_group_that_is_not_attached() {
    refused(
        attached(),
        |f| f.c.detach_group(&f.m.mem, GB),
        |e| matches!(e, VfioError::GroupNotAttached { group: GB }),
        "group 2",
    );
}

#[test]
fn opening_a_device_of_a_group_that_is_not_attached() {
    refused(
        attached(),
        |f| f.c.open_device(GB, "0000:02:00.0").map(drop),
        |e| matches!(e, VfioError::GroupNotAttached { group: GB }),
        "group 2",
    );
}

#[test]
fn opening_a_device_the_group_does_not_have() {
    refused(
        attached(),
        |f| f.c.open_device(GA, "0000:09:00.0").map(drop),
        |e| {
            matches!(
                e,
                VfioError::Kernel {
                    call: KernelCall::GroupGetDeviceFd { group: GA, name },
                    errno: Errno::ENODEV,
                } if name == "0000:09:00.0"
            )
        },
        "0000:09:00.0",
    );
}

#[test]
fn plugging_a_container_without_groups() {
    let sim = sim();
    let c = Container::open(sim.clone(), IommuType::SpaprV2).unwrap();
    refused(
        Fixture {
            m: Machine::new(),
            sim,
            c,
        },
        |f| f.c.plug(&mut f.m.mem, f.m.guest, Some(f.m.dma)).map(drop),
        |e| matches!(e, VfioError::NoBackend),
        "attach a group first",
    );
}

#[test]
fn plugging_spapr_without_a_dma_space() {
    refused(
        attached(),
        |f| f.c.plug(&mut f.m.mem, f.m.guest, None).map(drop),
        |e| {
            matches!(
                e,
                VfioError::DmaSpace {
                    iommu_type: IommuType::SpaprV2,
                    needed: true
                }
            )
        },
        "needs a DMA address space",
    );
}

#[test]
fn plugging_type1_with_a_dma_space() {
    let sim = sim();
    let c = container(&sim, IommuType::Type1V2, GA);
    refused(
        Fixture {
            m: Machine::new(),
            sim,
            c,
        },
        |f| f.c.plug(&mut f.m.mem, f.m.guest, Some(f.m.dma)).map(drop),
        |e| {
            matches!(
                e,
                VfioError::DmaSpace {
                    iommu_type: IommuType::Type1V2,
                    needed: false
                }
            )
        },
        "takes no DMA address space",
    );
}

#[test]
fn plugging_twice() {
    refused(
        plugged(),
        |f| f.c.plug(&mut f.m.mem, f.m.guest, Some(f.m.dma)).map(drop),
        |e| matches!(e, VfioError::AlreadyPlugged),
        "already plugged",
    );
}

#[test]
fn plugging_into_a_destroyed_address_space() {
    let mut f = attached();
    let gone = f.m.mem.create_container("gone", 0x1000).unwrap();
    let space = f.m.mem.create_address_space("gone", gone).unwrap();
    f.m.mem.destroy_address_space(space).unwrap();
    refused(
        f,
        |f| f.c.plug(&mut f.m.mem, space, Some(f.m.dma)).map(drop),
        |e| matches!(e, VfioError::Memory(Error::StaleAddressSpace(s)) if *s == space),
        "does not exist",
    );
}

#[test]
fn unplugging_a_container_that_is_not_plugged() {
    refused(
        attached(),
        |f| f.c.unplug(&mut f.m.mem),
        |e| matches!(e, VfioError::NotPlugged),
        "not plugged",
    );
}

#[test]
fn releasing_or_detaching_the_last_group_while_plugged() {
    refused(
        plugged(),
        |f| f.c.release(),
        |e| matches!(e, VfioError::Plugged),
        "unplug it first",
    );
    refused(
        plugged(),
        |f| f.c.detach_group(&f.m.mem, GA),
        |e| matches!(e, VfioError::Plugged),
        "unplug it first",
    );
}

#[test]
fn using_a_released_container() {
    let f = attached();
    f.c.release().unwrap();
    refused(
        f,
        |f| f.c.attach_group(GB),
        |e| matches!(e, VfioError::Released),
        "released",
    );
}

#[test]
fn plugging_with_a_locked_memory_limit_too_low_for_guest_ram() {
    let f = attached();
    f.sim.set_locked_memory_limit(0);
    // Refused as VfioError::Memory(Error::ListenerRefused), carrying the
    // listener's VfioError::Kernel (REGISTER_MEMORY failing with ENOMEM).
    refused(
        f,
        |f| f.c.plug(&mut f.m.mem, f.m.guest, Some(f.m.dma)).map(drop),
        |e| {
            refusal_message(e).is_some_and(|m| {
                m.starts_with("VFIO_IOMMU_SPAPR_REGISTER_MEMORY") && m.contains("ENOMEM")
            })
        },
        "ENOMEM",
    );
}

/// A v2 container, attached, over a machine whose second guest window
/// (`bus`, `size`, `page`) is enabled too: plugging must refuse it.
fn plug_refused_by_window(bus: u64, size: u64, page: u64, expected: VfioError) {
    let mut f = attached();
    let w = f.m.new_window(bus, size, page);
    f.m.enable_window(w).unwrap();
    let expected = expected.to_string();
    refused(
        f,
        |f| f.c.plug(&mut f.m.mem, f.m.guest, Some(f.m.dma)).map(drop),
        |e| refusal_message(e) == Some(expected.as_str()),
        &expected,
    );
}

#[test]
fn plugging_over_a_window_off_host_page_boundaries() {
    plug_refused_by_window(
        SLOT1 + 0x1000,
        WINDOW,
        PAGE,
        VfioError::SectionMisaligned {
            start: SLOT1 + 0x1000,
            size: u128::from(WINDOW),
            page_size: PAGE,
        },
    );
}

#[test]
fn plugging_over_a_window_whose_size_is_not_a_power_of_two() {
    plug_refused_by_window(
        SLOT1,
        3 * PAGE,
        PAGE,
        VfioError::WindowSize {
            start: SLOT1,
            size: u128::from(3 * PAGE),
        },
    );
}

#[test]
fn plugging_over_a_window_with_pages_smaller_than_any_host_page() {
    // The smallest IOMMU page a host offers is 4 KiB; the guest window
    // has 2 KiB pages. Refused as VfioError::Memory(Error::ListenerRefused),
    // carrying the listener's VfioError::NoPageSize.
    let mut f = attached();
    let w = f.m.new_window(SLOT1, WINDOW, 0x800);
    f.m.enable_window(w).unwrap();
    refused(
        f,
        |f| f.c.plug(&mut f.m.mem, f.m.guest, Some(f.m.dma)).map(drop),
        |e| {
            refusal_message(e).is_some_and(|m| {
                m.starts_with("no host IOMMU page size")
                    && m.contains("guest IOMMU page size 0x800")
            })
        },
        "0x800",
    );
}

#[test]
fn plugging_v1_over_a_window_outside_the_fixed_window() {
    let mut f = attached();
    f.c = container(&f.sim, IommuType::SpaprV1, GB);
    // Only the window outside: the default window's first use would
    // make the kernel create its pending 32-bit window, which no ioctl
    // takes back. Refused as VfioError::Memory(Error::ListenerRefused),
    // carrying the listener's VfioError::OutsideFixedWindow.
    f.m.disable_window(0).unwrap();
    let w = f.m.new_window(SLOT1, WINDOW, PAGE);
    f.m.enable_window(w).unwrap();
    refused(
        f,
        |f| f.c.plug(&mut f.m.mem, f.m.guest, Some(f.m.dma)).map(drop),
        |e| {
            refusal_message(e).is_some_and(|m| {
                m.starts_with(&format!(
                    "IOMMU section [{SLOT1:#x}, +{WINDOW:#x}) lies outside the fixed window"
                ))
            })
        },
        "outside the fixed window",
    );
}

#[test]
fn guest_mapping_that_points_outside_guest_ram() {
    // Nobody calls the notifier but the guest's IOMMU model, so the
    // refusal is logged on the container; no host TCE changes.
    let f = plugged();
    let before = fingerprint(&f.m, &f.sim, &f.c);
    let gpa = RAM_SIZE + 0x100_0000;
    f.m.guest_map(0, PAGE, gpa, IommuPerm::RW);
    assert_eq!(before, fingerprint(&f.m, &f.sim, &f.c));
    let errors = f.c.take_errors();
    assert!(
        matches!(errors.as_slice(), [VfioError::NotGuestRam { iova: PAGE, gpa: g, size: PAGE }] if *g == gpa),
        "{errors:?}"
    );
    assert!(errors[0].to_string().contains("0x11000000"));
}

#[test]
fn guest_mapping_that_translates_into_another_address_space() {
    // An IOMMU whose translation leads into the DMA address space rather
    // than the guest memory the container follows: refused and logged on
    // the container, as for a gpa outside guest RAM; no host TCE changes.
    let f = plugged();
    let before = fingerprint(&f.m, &f.sim, &f.c);
    let win = &f.m.windows[0];
    let event = IommuEvent::map(&IommuTlbEntry {
        iova: PAGE,
        translated_addr: 0,
        addr_mask: PAGE - 1,
        perm: IommuPerm::RW,
        target: Some(f.m.dma),
    });
    f.m.mem.iommu_notify(win.region, &event).unwrap();
    assert_eq!(before, fingerprint(&f.m, &f.sim, &f.c));
    let errors = f.c.take_errors();
    assert!(
        matches!(errors.as_slice(), [VfioError::ForeignTarget { iova: PAGE, expected, found }]
            if *expected == f.m.guest && *found == f.m.dma),
        "{errors:?}"
    );
    assert!(!errors[0].to_string().is_empty());
}

#[cfg(target_os = "linux")]
mod linux {
    use addrspace_vfio::{LinuxKernel, VfioError};

    #[test]
    fn linux_backend_without_dev_vfio() {
        let dir = std::env::temp_dir().join(format!("no-vfio-{}", std::process::id()));
        let err = LinuxKernel::with_dev_dir(&dir).unwrap_err();
        assert!(matches!(&err, VfioError::DeviceMissing { path } if *path == dir.join("vfio")));
        assert!(err.to_string().contains(&dir.display().to_string()));
    }

    #[test]
    fn linux_backend_with_an_unopenable_container_node() {
        // A directory where the container device node should be: it
        // exists, and opening it read-write fails (EISDIR), even for root.
        let dir = std::env::temp_dir().join(format!("bad-vfio-{}", std::process::id()));
        let node = dir.join("vfio");
        std::fs::create_dir_all(&node).unwrap();
        let err = LinuxKernel::with_dev_dir(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            matches!(&err, VfioError::Open { path, .. } if *path == node),
            "{err:?}"
        );
        assert!(err.to_string().contains(&node.display().to_string()));
    }
}
