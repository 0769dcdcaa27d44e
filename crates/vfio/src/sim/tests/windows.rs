//! The pending default window and dynamic windows: `TCE_CREATE` (checks
//! in the spec's order) and `TCE_REMOVE`.

use super::*;
use crate::sim::observe::{PeState, WindowInfo};

#[test]
fn first_attach_leaves_the_default_window_pending() {
    let fx = Fx::v2(SimMode::Faithful);
    assert!(fx.sim.default_window_pending(fx.c));
    assert!(fx.sim.windows(fx.c).is_empty());
    assert_eq!(fx.sim.pe_state(GA), Some(PeState::Vfio { windows: vec![] }));
}

#[test]
fn remove_of_address_zero_cancels_the_pending_default_and_touches_nothing() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    let locked = fx.sim.locked_memory();
    assert_eq!(fx.remove(0), Ok(()));
    assert!(!fx.sim.default_window_pending(fx.c));
    assert!(fx.sim.windows(fx.c).is_empty());
    assert_eq!(fx.sim.locked_memory(), locked);
    assert_eq!(fx.remove(0), Err(Errno::EINVAL), "nothing left to remove");
}

#[test]
fn remove_inside_the_pending_default_but_not_at_zero_fails_with_einval() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    assert_eq!(fx.remove(0x1000), Err(Errno::EINVAL));
    assert!(fx.sim.default_window_pending(fx.c));
}

#[test]
fn first_map_creates_the_pending_default_window() {
    // Arrange
    let fx = Fx::v2_registered(SimMode::Faithful);
    let locked = fx.sim.locked_memory();
    // Act
    fx.map(0, PAGE_64K, RAM).unwrap();
    // Assert: 4 KiB pages, the 32-bit window's size, one level, in slot 0.
    let expected = WindowInfo {
        start: 0,
        size: DMA32,
        page_shift: 12,
        levels: 1,
        locked_bytes: DEFAULT_WINDOW_CHARGE,
    };
    assert_eq!(fx.sim.windows(fx.c), vec![expected]);
    assert!(!fx.sim.default_window_pending(fx.c));
    assert_eq!(fx.sim.locked_memory(), locked + DEFAULT_WINDOW_CHARGE);
    assert_eq!(
        fx.sim.pe_state(GA),
        Some(PeState::Vfio { windows: vec![0] })
    );
}

#[test]
fn first_unmap_creates_the_pending_default_window() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.unmap(0, PAGE_64K).unwrap();
    assert_eq!(fx.sim.windows(fx.c).len(), 1);
}

#[test]
fn a_failing_map_still_creates_the_pending_default_window() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    assert_eq!(fx.map(SLOT1, PAGE_64K, RAM), Err(Errno::ENXIO));
    assert_eq!(fx.sim.windows(fx.c)[0].start, 0);
}

#[test]
fn create_first_creates_the_pending_default_then_takes_slot_one() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    assert_eq!(fx.create(16, 1 << 32, 1), Ok(SLOT1));
    let starts: Vec<u64> = fx.sim.windows(fx.c).iter().map(|w| w.start).collect();
    assert_eq!(starts, vec![0, SLOT1]);
}

#[test]
fn create_takes_the_first_free_slot_and_returns_its_start() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.remove(0).unwrap();
    assert_eq!(fx.create(16, 1 << 30, 1), Ok(0));
    assert_eq!(fx.create(12, 1 << 20, 1), Ok(SLOT1));
    fx.remove(0).unwrap();
    assert_eq!(fx.create(16, 1 << 31, 1), Ok(0), "slot 0 is free again");
}

#[test]
fn a_third_window_fails_with_enospc() {
    let fx = Fx::v2_window(SimMode::Faithful, 16, 1 << 30);
    fx.create(16, 1 << 30, 1).unwrap();
    assert_eq!(fx.create(16, 1 << 30, 1), Err(Errno::ENOSPC));
    // ENOSPC comes before the page-size and geometry checks.
    assert_eq!(fx.create(21, 3 << 30, 0), Err(Errno::ENOSPC));
}

#[test]
fn create_with_a_page_size_the_pe_lacks_fails_with_einval() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.remove(0).unwrap();
    assert_eq!(fx.create(21, 1 << 30, 1), Err(Errno::EINVAL), "2 MiB");
    assert_eq!(fx.create(64, 1 << 30, 1), Err(Errno::EINVAL));
    assert!(fx.sim.windows(fx.c).is_empty());

    let p9 = Fx::with_iommu(
        host(SimMode::Faithful).power8(false),
        VFIO_SPAPR_TCE_V2_IOMMU,
    );
    p9.register(RAM, RAM_SIZE).unwrap();
    p9.remove(0).unwrap();
    assert_eq!(
        p9.create(24, 1 << 30, 1),
        Err(Errno::EINVAL),
        "16 MiB after POWER8"
    );
    assert_eq!(p9.create(16, 1 << 30, 1), Ok(0));
}

#[test]
fn create_with_zero_or_more_than_five_levels_fails_with_einval() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.remove(0).unwrap();
    assert_eq!(fx.create(16, 1 << 30, 0), Err(Errno::EINVAL));
    assert_eq!(fx.create(16, 1 << 30, 6), Err(Errno::EINVAL));
}

#[test]
fn create_with_a_size_not_a_power_of_two_fails_with_einval() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.remove(0).unwrap();
    assert_eq!(fx.create(16, 3 << 30, 1), Err(Errno::EINVAL));
    assert_eq!(fx.create(16, 0, 1), Err(Errno::EINVAL));
}

#[test]
fn create_over_the_locked_memory_limit_fails_with_enomem() {
    // Arrange
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.remove(0).unwrap();
    let locked = fx.sim.locked_memory();
    fx.sim.set_locked_memory_limit(locked + (1 << 20));
    // Act: a 1 TiB window of 64 KiB pages needs a 128 MiB table.
    let err = fx.create(16, 1 << 40, 1);
    // Assert
    assert_eq!(err, Err(Errno::ENOMEM));
    assert_eq!(fx.sim.locked_memory(), locked);
    assert!(fx.sim.windows(fx.c).is_empty());
}

#[test]
fn bad_geometry_is_reported_before_the_locked_memory_limit() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.remove(0).unwrap();
    fx.sim.set_locked_memory_limit(0);
    assert_eq!(fx.create(16, 1 << 40, 0), Err(Errno::EINVAL));
    assert_eq!(fx.create(16, 1 << 40, 1), Err(Errno::ENOMEM));
}

#[test]
fn the_locked_memory_limit_is_checked_before_the_level_bits() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.remove(0).unwrap();
    fx.sim.set_locked_memory_limit(fx.sim.locked_memory());
    // Five levels of at least 13 bits each cannot fit 55 bits...
    assert_eq!(fx.create(12, 1 << 30, 5), Err(Errno::ENOMEM));
    // ...which shows once the charge fits.
    fx.sim.set_locked_memory_limit(u64::MAX);
    assert_eq!(fx.create(12, 1 << 30, 5), Err(Errno::EINVAL));
}

#[test]
fn create_with_too_many_level_bits_fails_with_einval_and_charges_nothing() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.remove(0).unwrap();
    let locked = fx.sim.locked_memory();
    assert_eq!(fx.create(24, 1 << 40, 3), Err(Errno::EINVAL));
    assert_eq!(fx.sim.locked_memory(), locked);
    assert_eq!(fx.create(24, 1 << 40, 2), Ok(0), "fewer levels fit");
}

#[test]
fn create_charges_twice_the_table_size() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.remove(0).unwrap();
    let locked = fx.sim.locked_memory();
    fx.create(16, 1 << 40, 1).unwrap();
    // 2^24 TCEs of 8 bytes: a 128 MiB table, charged twice.
    assert_eq!(fx.sim.locked_memory() - locked, 256 << 20);
    assert_eq!(fx.sim.windows(fx.c)[0].locked_bytes, 256 << 20);
}

#[test]
fn create_with_short_argsz_or_flags_fails_with_einval() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    let mut short = SpaprTceCreate::new(16, 1 << 30, 1);
    short.argsz = 32;
    assert_eq!(
        fx.sim.spapr_tce_create(fx.c, &mut short),
        Err(Errno::EINVAL)
    );
    let mut flagged = SpaprTceCreate::new(16, 1 << 30, 1);
    flagged.flags = 1;
    assert_eq!(
        fx.sim.spapr_tce_create(fx.c, &mut flagged),
        Err(Errno::EINVAL)
    );
    assert!(
        fx.sim.default_window_pending(fx.c),
        "rejected before the default"
    );
}

#[test]
fn a_failing_create_keeps_the_default_window_it_created() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    assert_eq!(fx.create(21, 1 << 30, 1), Err(Errno::EINVAL));
    assert_eq!(fx.sim.windows(fx.c).len(), 1);
    assert!(!fx.sim.default_window_pending(fx.c));
}

#[test]
fn a_new_window_is_programmed_into_every_group() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.join(GB).unwrap();
    fx.remove(0).unwrap();
    fx.create(16, 1 << 30, 1).unwrap();
    for group in [GA, GB] {
        assert_eq!(
            fx.sim.pe_state(group),
            Some(PeState::Vfio { windows: vec![0] })
        );
    }
}

#[test]
fn remove_names_a_window_by_any_address_inside_it() {
    let fx = Fx::v2_window(SimMode::Faithful, 16, 1 << 30);
    fx.create(16, 1 << 32, 1).unwrap();
    assert_eq!(fx.remove(SLOT1 + 0x1234_5678), Ok(()));
    let starts: Vec<u64> = fx.sim.windows(fx.c).iter().map(|w| w.start).collect();
    assert_eq!(starts, vec![0]);
}

#[test]
fn remove_of_an_address_in_no_window_fails_with_einval() {
    let fx = Fx::v2_window(SimMode::Faithful, 16, 1 << 30);
    assert_eq!(fx.remove(1 << 30), Err(Errno::EINVAL));
    assert_eq!(fx.remove(SLOT1), Err(Errno::EINVAL));
    assert_eq!(fx.sim.windows(fx.c).len(), 1);
}

#[test]
fn remove_clears_the_window_unsets_it_everywhere_and_returns_its_memory() {
    // Arrange
    let fx = Fx::v2_window(SimMode::Faithful, 16, 1 << 30);
    fx.join(GB).unwrap();
    let locked = fx.sim.locked_memory();
    let charge = fx.sim.windows(fx.c)[0].locked_bytes;
    fx.map(0, 8 * PAGE_64K, RAM).unwrap();
    // Act
    fx.remove(0).unwrap();
    // Assert
    assert!(fx.sim.windows(fx.c).is_empty());
    assert!(fx.sim.host_tces(fx.c).is_empty());
    assert_eq!(fx.sim.locked_memory(), locked - charge);
    assert!(fx.sim.registrations().iter().all(|r| r.mapped == 0));
    for group in [GA, GB] {
        assert_eq!(
            fx.sim.pe_state(group),
            Some(PeState::Vfio { windows: vec![] })
        );
    }
}

#[test]
fn remove_with_short_argsz_or_flags_fails_with_einval() {
    let fx = Fx::v2_window(SimMode::Faithful, 16, 1 << 30);
    let short = SpaprTceRemove {
        argsz: 8,
        ..SpaprTceRemove::new(0)
    };
    let flagged = SpaprTceRemove {
        flags: 2,
        ..SpaprTceRemove::new(0)
    };
    assert_eq!(fx.sim.spapr_tce_remove(fx.c, &short), Err(Errno::EINVAL));
    assert_eq!(fx.sim.spapr_tce_remove(fx.c, &flagged), Err(Errno::EINVAL));
    assert_eq!(fx.sim.windows(fx.c).len(), 1);
}
