//! Memory pre-registration (v2) and the locked memory it pins.

use super::*;
use crate::sim::memory::ProcessId;
use crate::sim::observe::MemoryRange;

#[test]
fn registration_pins_the_range_and_charges_it() {
    let fx = Fx::v2(SimMode::Strict);
    fx.register(RAM, RAM_SIZE).unwrap();
    assert_eq!(
        fx.sim.registered_memory(fx.c),
        vec![MemoryRange {
            vaddr: RAM,
            size: RAM_SIZE
        }]
    );
    assert_eq!(fx.sim.locked_memory(), RAM_SIZE);
    let reg = &fx.sim.registrations()[0];
    assert_eq!((reg.users, reg.mapped, reg.page_shift), (1, 0, 16));
}

#[test]
fn registration_misaligned_to_the_host_page_fails_with_einval() {
    let fx = Fx::v2(SimMode::Faithful);
    assert_eq!(fx.register(RAM + 0x1000, RAM_SIZE), Err(Errno::EINVAL));
    assert_eq!(fx.register(RAM, RAM_SIZE + 0x1000), Err(Errno::EINVAL));
    assert_eq!(fx.sim.locked_memory(), 0);
}

#[test]
fn registration_follows_the_configured_host_page_size() {
    let fx = Fx::with_iommu(
        host(SimMode::Faithful).host_page_shift(12),
        VFIO_SPAPR_TCE_V2_IOMMU,
    );
    assert_eq!(fx.register(RAM + 0x1000, 0x3000), Ok(()));
    assert_eq!(fx.sim.locked_memory(), 0x3000);
}

#[test]
fn registration_that_wraps_fails_with_einval() {
    let fx = Fx::v2(SimMode::Faithful);
    assert_eq!(
        fx.register(u64::MAX - 0xffff, 2 * PAGE_64K),
        Err(Errno::EINVAL)
    );
}

#[test]
fn registration_with_short_argsz_or_flags_fails_with_einval() {
    let fx = Fx::v2(SimMode::Faithful);
    let short = SpaprRegisterMemory {
        argsz: 16,
        ..SpaprRegisterMemory::new(RAM, RAM_SIZE)
    };
    let flagged = SpaprRegisterMemory {
        flags: 1,
        ..SpaprRegisterMemory::new(RAM, RAM_SIZE)
    };
    assert_eq!(
        fx.sim.spapr_register_memory(fx.c, &short),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        fx.sim.spapr_register_memory(fx.c, &flagged),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        fx.sim.spapr_unregister_memory(fx.c, &short),
        Err(Errno::EINVAL)
    );
}

#[test]
fn registering_the_identical_range_again_fails_with_ebusy() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    assert_eq!(fx.register(RAM, RAM_SIZE), Err(Errno::EBUSY));
    assert_eq!(fx.sim.locked_memory(), RAM_SIZE);
}

#[test]
fn registering_an_overlapping_range_fails_with_einval() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    assert_eq!(fx.register(RAM + PAGE_64K, RAM_SIZE), Err(Errno::EINVAL));
    assert_eq!(fx.register(RAM, PAGE_64K), Err(Errno::EINVAL));
    assert_eq!(fx.sim.registrations().len(), 1);
    assert_eq!(fx.sim.locked_memory(), RAM_SIZE);
}

#[test]
fn registration_over_the_locked_memory_limit_fails_with_enomem() {
    let fx = Fx::with_iommu(
        host(SimMode::Faithful).locked_memory_limit(RAM_SIZE - PAGE_64K),
        VFIO_SPAPR_TCE_V2_IOMMU,
    );
    assert_eq!(fx.register(RAM, RAM_SIZE), Err(Errno::ENOMEM));
    assert!(fx.sim.registrations().is_empty());
    assert_eq!(
        fx.map(0, PAGE_64K, RAM),
        Err(Errno::EPERM),
        "still not enabled"
    );
}

#[test]
fn registering_nothing_fails_with_enomem() {
    // The kernel's zero-sized allocation fails.
    let fx = Fx::v2(SimMode::Faithful);
    assert_eq!(fx.register(RAM, 0), Err(Errno::ENOMEM));
}

#[test]
fn containers_of_one_process_share_an_identical_registration() {
    // Arrange: a second container of the same process.
    let fx = Fx::v2_registered(SimMode::Strict);
    let c2 = fx.second_v2_container();
    let ram = SpaprRegisterMemory::new(RAM, RAM_SIZE);
    // Act
    fx.sim.spapr_register_memory(c2, &ram).unwrap();
    // Assert: one registration, two users, charged once.
    assert_eq!(fx.sim.registrations()[0].users, 2);
    assert_eq!(fx.sim.locked_memory(), RAM_SIZE);
    // Either container unregistering keeps it for the other.
    fx.unregister(RAM, RAM_SIZE).unwrap();
    assert_eq!(fx.sim.registrations()[0].users, 1);
    assert_eq!(fx.sim.locked_memory(), RAM_SIZE);
    fx.sim.spapr_unregister_memory(c2, &ram).unwrap();
    assert_eq!(fx.sim.locked_memory(), 0);
}

#[test]
fn registrations_of_different_processes_are_independent() {
    let fx = Fx::v2_registered(SimMode::Strict);
    let c2 = fx.second_v2_container();
    fx.sim.set_current_process(ProcessId(2));
    let overlapping = SpaprRegisterMemory::new(RAM + PAGE_64K, PAGE_64K);
    assert_eq!(fx.sim.spapr_register_memory(c2, &overlapping), Ok(()));
    assert_eq!(fx.sim.locked_memory_of(ProcessId(1)), RAM_SIZE);
    assert_eq!(fx.sim.locked_memory_of(ProcessId(2)), PAGE_64K);
}

#[test]
fn unregistering_a_range_never_registered_fails_with_enoent() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    assert_eq!(
        fx.unregister(RAM, PAGE_64K),
        Err(Errno::ENOENT),
        "a part of it"
    );
    assert_eq!(fx.unregister(RAM + RAM_SIZE, PAGE_64K), Err(Errno::ENOENT));
    assert_eq!(fx.sim.registrations().len(), 1);
}

#[test]
fn unregistering_a_range_only_another_container_registered_fails_with_enoent() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    let c2 = fx.second_v2_container();
    let ram = SpaprRegisterMemory::new(RAM, RAM_SIZE);
    assert_eq!(fx.sim.spapr_unregister_memory(c2, &ram), Err(Errno::ENOENT));
}

#[test]
fn unregistering_misaligned_fails_with_einval() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    assert_eq!(fx.unregister(RAM + 0x1000, RAM_SIZE), Err(Errno::EINVAL));
}

#[test]
fn unregistering_returns_the_locked_memory() {
    let fx = Fx::v2_registered(SimMode::Strict);
    fx.unregister(RAM, RAM_SIZE).unwrap();
    assert!(fx.sim.registered_memory(fx.c).is_empty());
    assert!(fx.sim.registrations().is_empty());
    assert_eq!(fx.sim.locked_memory(), 0);
}

#[test]
fn map_after_unregistering_everything_fails_with_einval_not_eperm() {
    let fx = Fx::v2_registered(SimMode::Strict);
    fx.unregister(RAM, RAM_SIZE).unwrap();
    assert_eq!(fx.map(0, PAGE_64K, RAM), Err(Errno::EINVAL));
}

#[test]
fn unregistering_mapped_memory_succeeds_and_leaves_it_pinned_in_faithful_mode() {
    // Arrange
    let fx = Fx::v2_window(SimMode::Faithful, 16, 1 << 30);
    fx.map(0, PAGE_64K, RAM).unwrap();
    let locked = fx.sim.locked_memory();
    // Act
    let result = fx.unregister(RAM, RAM_SIZE);
    // Assert: gone from the container, still pinned and charged.
    assert_eq!(result, Ok(()));
    assert!(fx.sim.registered_memory(fx.c).is_empty());
    let reg = &fx.sim.registrations()[0];
    assert_eq!((reg.users, reg.mapped), (1, 1));
    assert_eq!(fx.sim.locked_memory(), locked);
    // Unmapping does not unpin it either, for the life of the process.
    fx.unmap(0, PAGE_64K).unwrap();
    assert_eq!(fx.sim.registrations().len(), 1);
    assert_eq!(fx.sim.locked_memory(), locked);
}

#[test]
fn unregistering_mapped_memory_fails_with_ebusy_in_strict_mode() {
    let fx = Fx::v2_window(SimMode::Strict, 16, 1 << 30);
    fx.map(0, PAGE_64K, RAM).unwrap();
    let before = fx.sim.snapshot();
    assert_eq!(fx.unregister(RAM, RAM_SIZE), Err(Errno::EBUSY));
    assert_eq!(fx.sim.snapshot(), before);
    fx.unmap(0, PAGE_64K).unwrap();
    assert_eq!(fx.unregister(RAM, RAM_SIZE), Ok(()));
}

#[test]
fn the_backend_release_drops_registrations_and_returns_locked_memory() {
    let fx = Fx::v2_window(SimMode::Strict, 16, 1 << 30);
    fx.map(0, 4 * PAGE_64K, RAM).unwrap();
    fx.sim.group_unset_container(fx.g).unwrap();
    assert!(fx.sim.registrations().is_empty());
    assert_eq!(fx.sim.locked_memory(), 0);
}
