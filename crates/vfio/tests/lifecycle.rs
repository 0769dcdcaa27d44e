//! Containers and groups: opening, attaching with backend setup,
//! device fds, detaching, releasing, and failures that undo themselves.

mod support;

use addrspace_core::IommuPerm;
use addrspace_vfio::{
    Container, Errno, Ioctl, IommuBackend, IommuType, KernelCall, PeState, SimConfig, VfioError,
};
use support::*;

#[test]
fn attaching_the_first_group_sets_up_v2_and_cancels_the_default_window() {
    let sim = sim();
    let c = Container::open(sim.clone(), IommuType::SpaprV2).unwrap();

    c.attach_group(GA).unwrap();

    assert_eq!(sim.iommu_backend(c.fd()), Some(IommuBackend::SpaprV2));
    assert!(!sim.default_window_pending(c.fd()));
    assert!(sim.windows(c.fd()).is_empty(), "both slots free");
    let info = c.spapr_info().unwrap();
    assert_eq!((info.dma32_start, info.dma32_size), (0, 0x8000_0000));
    let ddw = info.ddw.unwrap();
    assert_eq!(ddw.pgsizes, (1 << 12) | (1 << 16) | (1 << 24) | (1 << 28));
    assert_eq!((ddw.max_dynamic_windows_supported, ddw.levels), (2, 5));
    let stats = sim.stats();
    assert_eq!(stats.count(Ioctl::SetIommu), 1);
    assert_eq!(stats.count(Ioctl::SpaprTceGetInfo), 1);
    assert_eq!(stats.count(Ioctl::SpaprTceRemove), 1);
    assert_eq!(c.groups(), vec![GA]);
}

#[test]
fn a_second_group_joins_without_a_second_setup() {
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);
    sim.reset_stats();

    c.attach_group(GB).unwrap();

    assert_eq!(sim.stats().count(Ioctl::SetIommu), 0);
    assert_eq!(c.groups(), vec![GA, GB]);
    assert_eq!(sim.container(c.fd()).unwrap().groups, vec![GA, GB]);
}

#[test]
fn attaching_a_group_twice_is_refused_before_the_kernel() {
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);
    sim.reset_stats();

    assert!(matches!(
        c.attach_group(GA),
        Err(VfioError::GroupAttached { group: GA })
    ));
    assert_eq!(sim.stats().total(), 0);
}

#[test]
fn a_group_the_host_lacks_fails_with_enoent() {
    let sim = sim();
    let c = Container::open(sim.clone(), IommuType::SpaprV2).unwrap();

    let err = c
        .attach_group(addrspace_vfio::IommuGroupId(99))
        .unwrap_err();

    assert_eq!(err.errno(), Some(Errno::ENOENT));
    assert_eq!(
        err.to_string(),
        "open(/dev/vfio/99) failed: ENOENT (2): no such file or directory"
    );
    assert!(c.groups().is_empty());
}

#[test]
fn a_non_viable_group_is_refused_and_closed_again() {
    let sim = sim();
    let c = Container::open(sim.clone(), IommuType::SpaprV2).unwrap();

    let err = c.attach_group(G_OWNED).unwrap_err();

    assert!(
        matches!(
            err,
            VfioError::GroupNotViable {
                group: G_OWNED,
                flags: 0
            }
        ),
        "{err}"
    );
    assert!(!sim.snapshot().groups[&G_OWNED].open);
    c.attach_group(GA).unwrap();
}

#[test]
fn v2_refuses_a_group_without_dynamic_windows_and_undoes_the_attach() {
    let sim = sim();
    let c = Container::open(sim.clone(), IommuType::SpaprV2).unwrap();

    let err = c.attach_group(G_NO_DDW).unwrap_err();

    assert!(
        matches!(
            err,
            VfioError::Kernel {
                call: KernelCall::SetIommu { iommu_type: 7 },
                errno: Errno::EINVAL
            }
        ),
        "{err}"
    );
    let group = &sim.snapshot().groups[&G_NO_DDW];
    assert!(!group.open);
    assert_eq!(group.container, None);
    assert_eq!(sim.iommu_backend(c.fd()), None);
    assert!(c.spapr_info().is_none());
    c.attach_group(GA).unwrap();
    assert_eq!(sim.iommu_backend(c.fd()), Some(IommuBackend::SpaprV2));
}

#[test]
fn opening_a_container_for_a_missing_iommu_type_closes_it_again() {
    let sim = std::sync::Arc::new(SimConfig::new().build());

    let err = Container::open(sim.clone(), IommuType::Type1V2).unwrap_err();

    assert!(matches!(
        err,
        VfioError::IommuTypeUnsupported {
            iommu_type: IommuType::Type1V2
        }
    ));
    assert!(sim.snapshot().containers.is_empty());
}

#[test]
fn a_device_fd_pins_its_group_until_release() {
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);
    let device = c.open_device(GA, DEV_A).unwrap();
    assert_eq!(sim.snapshot().groups[&GA].open_devices, 1);

    c.close_device(device).unwrap();
    c.open_device(GA, DEV_A).unwrap();
    c.release().unwrap();

    let group = &sim.snapshot().groups[&GA];
    assert_eq!(
        (group.open_devices, group.open, group.container),
        (0, false, None)
    );
    assert!(sim.snapshot().containers.is_empty());
}

#[test]
fn an_unknown_device_fails_with_enodev() {
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);

    let err = c.open_device(GA, "0000:09:00.0").unwrap_err();

    assert_eq!(err.errno(), Some(Errno::ENODEV));
    assert!(matches!(
        c.open_device(GB, DEV_A),
        Err(VfioError::GroupNotAttached { group: GB })
    ));
}

#[test]
fn the_last_group_cannot_leave_a_plugged_container() {
    let (m, sim, c) = plugged_v2();

    assert!(matches!(
        c.detach_group(&m.mem, GA),
        Err(VfioError::Plugged)
    ));
    assert_eq!(sim.container(c.fd()).unwrap().groups, vec![GA]);
}

#[test]
fn detaching_one_of_two_groups_keeps_the_others_mappings() {
    let (m, sim, c) = plugged_v2();
    c.attach_group(GB).unwrap();
    m.guest_map(0, PAGE, 0x10_0000, IommuPerm::RW);
    m.guest_map(0, 2 * PAGE, 0x20_0000, IommuPerm::RW);

    // The kernel clears every TCE of the container when a group leaves.
    c.detach_group(&m.mem, GA).unwrap();

    assert_eq!(c.groups(), vec![GB]);
    assert_eq!(sim.host_tces(c.fd()), m.expected_host_tces());
    assert_eq!(sim.host_tces(c.fd()).len(), 2);
    assert_eq!(sim.pe_state(GA), Some(PeState::PlatformDefault));
    assert_eq!(sim.pe_state(GB), Some(PeState::Vfio { windows: vec![0] }));
}

#[test]
fn detaching_the_last_group_of_an_unplugged_container_drops_the_backend() {
    let m = Machine::new();
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);

    c.detach_group(&m.mem, GA).unwrap();

    assert!(c.spapr_info().is_none());
    assert_eq!(sim.iommu_backend(c.fd()), None);
    c.attach_group(GB).unwrap();
    assert!(c.spapr_info().is_some());
}

#[test]
fn plugging_needs_a_backend_and_the_right_address_spaces() {
    let mut m = Machine::new();
    let sim = sim();
    let bare = Container::open(sim.clone(), IommuType::SpaprV2).unwrap();
    assert!(matches!(
        bare.plug(&mut m.mem, m.guest, Some(m.dma)),
        Err(VfioError::NoBackend)
    ));
    let c = container(&sim, IommuType::SpaprV2, GA);
    assert!(matches!(
        c.plug(&mut m.mem, m.guest, None),
        Err(VfioError::DmaSpace { needed: true, .. })
    ));
    assert!(m.mem.listeners_of(m.guest).unwrap().is_empty());
}

#[test]
fn dropping_a_container_releases_it() {
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);
    c.open_device(GA, DEV_A).unwrap();

    drop(c);

    assert!(sim.snapshot().containers.is_empty());
    assert!(!sim.snapshot().groups[&GA].open);
}
