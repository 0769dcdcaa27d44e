//! Container and group life cycle: opening, attaching, detaching, device
//! fds, closing, and what the last group takes with it.

use super::*;
use crate::args::{GroupStatus, VFIO_GROUP_FLAGS_CONTAINER_SET, VFIO_GROUP_FLAGS_VIABLE};
use crate::handle::DeviceFd;
use crate::sim::observe::{IommuBackend, PeState};
use crate::sim::stats::Ioctl;

#[test]
fn opening_an_unknown_group_fails_with_enoent() {
    let sim = host(SimMode::Faithful).build();
    assert_eq!(sim.open_group(IommuGroupId(99)), Err(Errno::ENOENT));
}

#[test]
fn opening_a_group_twice_fails_with_ebusy() {
    let sim = host(SimMode::Faithful).build();
    let _g = sim.open_group(GA).unwrap();
    assert_eq!(sim.open_group(GA), Err(Errno::EBUSY));
}

#[test]
fn fd_numbers_are_never_reused() {
    let sim = host(SimMode::Faithful).build();
    let first = sim.open_container().unwrap();
    sim.close_container(first).unwrap();
    let second = sim.open_container().unwrap();
    assert_ne!(first, second);
}

#[test]
fn api_version_is_zero() {
    let sim = host(SimMode::Faithful).build();
    let c = sim.open_container().unwrap();
    assert_eq!(sim.get_api_version(c), Ok(0));
}

#[test]
fn calls_on_closed_fds_fail_with_ebadf() {
    let fx = Fx::v2(SimMode::Faithful);
    let other = fx.sim.open_container().unwrap();
    fx.sim.close_container(other).unwrap();
    assert_eq!(fx.sim.get_api_version(other), Err(Errno::EBADF));
    assert_eq!(fx.sim.close_container(other), Err(Errno::EBADF));
    assert_eq!(fx.sim.group_set_container(fx.g, other), Err(Errno::EBADF));
    assert_eq!(
        fx.sim.close_device(DeviceFd::from_raw(999)),
        Err(Errno::EBADF)
    );
    assert_eq!(
        fx.sim.group_unset_container(GroupFd::from_raw(fx.c.raw())),
        Err(Errno::EBADF),
        "a container fd is not a group fd"
    );
}

#[test]
fn set_container_on_a_group_with_a_container_fails_with_einval() {
    let fx = Fx::attached(host(SimMode::Faithful));
    let other = fx.sim.open_container().unwrap();
    assert_eq!(fx.sim.group_set_container(fx.g, fx.c), Err(Errno::EINVAL));
    assert_eq!(fx.sim.group_set_container(fx.g, other), Err(Errno::EINVAL));
}

#[test]
fn set_container_mixing_no_iommu_and_real_groups_fails_with_eperm() {
    let cfg = host(SimMode::Faithful).group(GroupConfig::new(9).no_iommu(true));
    let fx = Fx::attached(cfg);
    let noiommu = fx.sim.open_group(IommuGroupId(9)).unwrap();
    assert_eq!(fx.sim.group_set_container(noiommu, fx.c), Err(Errno::EPERM));

    let c2 = fx.sim.open_container().unwrap();
    fx.sim.group_set_container(noiommu, c2).unwrap();
    let gb = fx.sim.open_group(GB).unwrap();
    assert_eq!(fx.sim.group_set_container(gb, c2), Err(Errno::EPERM));
}

#[test]
fn set_container_of_a_group_a_host_driver_owns_fails_with_ebusy() {
    let fx = Fx::attached(host(SimMode::Faithful));
    assert_eq!(fx.join(G_OWNED).map(|_| ()), Err(Errno::EBUSY));
    assert_eq!(fx.sim.container(fx.c).unwrap().groups, vec![GA]);
}

#[test]
fn group_status_reports_viability_and_container() {
    let fx = Fx::attached(host(SimMode::Faithful));
    let free = fx.sim.open_group(GB).unwrap();
    let owned = fx.sim.open_group(G_OWNED).unwrap();
    let status = |g| {
        let mut s = GroupStatus::new();
        fx.sim.group_get_status(g, &mut s).map(|()| s.flags)
    };
    assert_eq!(
        status(fx.g),
        Ok(VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET)
    );
    assert_eq!(status(free), Ok(VFIO_GROUP_FLAGS_VIABLE));
    assert_eq!(status(owned), Ok(0));
}

#[test]
fn group_status_with_short_argsz_fails_with_einval() {
    let fx = Fx::attached(host(SimMode::Faithful));
    let mut status = GroupStatus { argsz: 4, flags: 0 };
    assert_eq!(
        fx.sim.group_get_status(fx.g, &mut status),
        Err(Errno::EINVAL)
    );
}

#[test]
fn unset_container_without_a_container_fails_with_einval() {
    let sim = host(SimMode::Faithful).build();
    let g = sim.open_group(GA).unwrap();
    assert_eq!(sim.group_unset_container(g), Err(Errno::EINVAL));
}

#[test]
fn unset_container_while_a_device_fd_is_open_fails_with_ebusy() {
    let fx = Fx::v2(SimMode::Faithful);
    let dev = fx.sim.group_get_device_fd(fx.g, DEV_A).unwrap();
    assert_eq!(fx.sim.group_unset_container(fx.g), Err(Errno::EBUSY));
    fx.sim.close_device(dev).unwrap();
    assert_eq!(fx.sim.group_unset_container(fx.g), Ok(()));
}

#[test]
fn device_fd_of_an_unknown_device_fails_with_enodev() {
    let fx = Fx::v2(SimMode::Faithful);
    assert_eq!(
        fx.sim.group_get_device_fd(fx.g, "0000:99:00.0"),
        Err(Errno::ENODEV)
    );
}

#[test]
fn device_fd_needs_a_container_with_a_backend() {
    let fx = Fx::attached(host(SimMode::Faithful));
    assert_eq!(fx.sim.group_get_device_fd(fx.g, DEV_A), Err(Errno::EINVAL));
    let gb = fx.sim.open_group(GB).unwrap();
    assert_eq!(
        fx.sim.group_get_device_fd(gb, "0000:02:00.0"),
        Err(Errno::EINVAL)
    );
}

#[test]
fn set_container_with_a_backend_attaches_at_once() {
    // Arrange: a window with a mapping exists before group B arrives.
    let fx = Fx::v2_window(SimMode::Faithful, 16, 1 << 30);
    fx.map(0x10_0000, PAGE_64K, RAM).unwrap();
    let before = fx.sim.host_tces(fx.c);
    // Act
    fx.join(GB).unwrap();
    // Assert: B's PE carries the window, whose entries are untouched.
    assert_eq!(
        fx.sim.pe_state(GB),
        Some(PeState::Vfio { windows: vec![0] })
    );
    assert_eq!(fx.sim.host_tces(fx.c), before);
    assert_eq!(fx.sim.container(fx.c).unwrap().groups, vec![GA, GB]);
}

#[test]
fn set_container_with_a_backend_fails_with_the_attach_error() {
    let fx = Fx::v2(SimMode::Faithful);
    assert_eq!(fx.join(G_NO_DDW).map(|_| ()), Err(Errno::EINVAL));
    assert_eq!(fx.sim.container(fx.c).unwrap().groups, vec![GA]);
    assert_eq!(fx.sim.pe_state(G_NO_DDW), Some(PeState::PlatformDefault));
}

#[test]
fn detaching_a_group_clears_every_tce_also_for_groups_that_stay() {
    // Arrange
    let fx = Fx::v2_window(SimMode::Faithful, 16, 1 << 30);
    let gb = fx.join(GB).unwrap();
    fx.map(0, 4 * PAGE_64K, RAM).unwrap();
    // Act
    fx.sim.group_unset_container(gb).unwrap();
    // Assert: the window stays for A, empty; B is back with the platform.
    assert!(fx.sim.host_tces(fx.c).is_empty());
    assert_eq!(fx.sim.windows(fx.c).len(), 1);
    assert_eq!(
        fx.sim.pe_state(GA),
        Some(PeState::Vfio { windows: vec![0] })
    );
    assert_eq!(fx.sim.pe_state(GB), Some(PeState::PlatformDefault));
    assert!(fx.sim.registrations().iter().all(|r| r.mapped == 0));
}

#[test]
fn last_group_leaving_releases_the_backend() {
    // Arrange: windows, mappings, registrations, locked memory.
    let fx = Fx::v2_window(SimMode::Faithful, 16, 1 << 30);
    fx.create(16, 1 << 32, 1).unwrap();
    fx.map(0, PAGE_64K, RAM).unwrap();
    assert!(fx.sim.locked_memory() > 0);
    // Act
    fx.sim.group_unset_container(fx.g).unwrap();
    // Assert
    let container = fx.sim.container(fx.c).unwrap();
    assert_eq!(container.backend, None);
    assert!(container.groups.is_empty());
    assert!(fx.sim.registrations().is_empty());
    assert_eq!(fx.sim.locked_memory(), 0);
    assert_eq!(fx.sim.pe_state(GA), Some(PeState::PlatformDefault));
}

#[test]
fn after_the_backend_is_released_a_new_set_iommu_is_needed() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.sim.group_unset_container(fx.g).unwrap();
    fx.sim.group_set_container(fx.g, fx.c).unwrap();
    assert_eq!(fx.map(0, PAGE_64K, RAM), Err(Errno::EINVAL));
    fx.sim.set_iommu(fx.c, VFIO_SPAPR_TCE_V2_IOMMU).unwrap();
    assert_eq!(
        fx.map(0, PAGE_64K, RAM),
        Err(Errno::EPERM),
        "registrations are gone"
    );
    assert!(fx.sim.default_window_pending(fx.c));
}

#[test]
fn closing_the_container_fd_while_groups_are_attached_changes_nothing() {
    // Arrange
    let fx = Fx::v2_window(SimMode::Faithful, 16, 1 << 30);
    fx.map(0, PAGE_64K, RAM).unwrap();
    let mut before = fx.sim.snapshot();
    // Act
    fx.sim.close_container(fx.c).unwrap();
    // Assert: only the fd is gone.
    let after = fx.sim.snapshot();
    before.containers.get_mut(&fx.c).unwrap().fd_open = false;
    assert_eq!(after, before);
    assert_eq!(fx.map(0, PAGE_64K, RAM), Err(Errno::EBADF));
}

#[test]
fn a_closed_container_goes_away_with_its_last_group() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.sim.close_container(fx.c).unwrap();
    fx.sim.group_unset_container(fx.g).unwrap();
    assert_eq!(fx.sim.container(fx.c), None);
    assert_eq!(fx.sim.locked_memory(), 0);
}

#[test]
fn closing_an_empty_container_removes_it() {
    let sim = host(SimMode::Faithful).build();
    let c = sim.open_container().unwrap();
    sim.close_container(c).unwrap();
    assert_eq!(sim.container(c), None);
}

#[test]
fn closing_the_group_fd_takes_the_group_out_of_its_container() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.sim.close_group(fx.g).unwrap();
    assert_eq!(fx.sim.iommu_backend(fx.c), None);
    assert!(fx.sim.container(fx.c).unwrap().groups.is_empty());
    assert!(
        fx.sim.open_group(GA).is_ok(),
        "the group can be opened again"
    );
}

#[test]
fn an_open_device_fd_keeps_a_closed_group_in_its_container() {
    // Arrange
    let fx = Fx::v2(SimMode::Faithful);
    let dev = fx.sim.group_get_device_fd(fx.g, DEV_A).unwrap();
    // Act
    fx.sim.close_group(fx.g).unwrap();
    // Assert: still attached and still open until the device closes.
    assert_eq!(fx.sim.iommu_backend(fx.c), Some(IommuBackend::SpaprV2));
    assert_eq!(fx.sim.open_group(GA), Err(Errno::EBUSY));
    fx.sim.close_device(dev).unwrap();
    assert_eq!(fx.sim.iommu_backend(fx.c), None);
    assert!(fx.sim.open_group(GA).is_ok());
}

#[test]
fn stats_count_calls_and_failures_per_ioctl() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.sim.reset_stats();
    let _ = fx.map(0, PAGE_64K, RAM);
    let _ = fx.map(SLOT1, PAGE_64K, RAM);
    let stats = fx.sim.stats();
    assert_eq!(stats.count(Ioctl::MapDma), 2);
    assert_eq!(stats.failures(Ioctl::MapDma), 1, "slot 1 has no window");
    assert_eq!(stats.count(Ioctl::UnmapDma), 0);
    assert_eq!(stats.total(), 2);
}

#[test]
fn the_simulator_can_be_shared_between_threads() {
    // Arrange
    let fx = Fx::v2_window(SimMode::Strict, 16, 1 << 30);
    let sim = std::sync::Arc::new(fx.sim);
    let c = fx.c;
    // Act: four threads map disjoint pages at once.
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let sim = std::sync::Arc::clone(&sim);
            std::thread::spawn(move || {
                for i in 0..8u64 {
                    let page = t * 8 + i;
                    let map = DmaMap::new(page * PAGE_64K, PAGE_64K, RAM + page * PAGE_64K, RW);
                    sim.iommu_map_dma(c, &map).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    // Assert
    assert_eq!(sim.host_tces(c).len(), 32);
    assert_eq!(sim.stats().count(Ioctl::MapDma), 32);
}
