//! Random sequences of hot-plug, unplug (both modes), machine reset, RTAS
//! window calls and TCE hypercalls on a two-PHB pseries machine whose
//! simulated VFIO host runs in strict mode; every invariant is checked
//! after every step, and a final teardown must leave the host as it was.

use addrspace::pseries::{Action, DeviceSpec, HostGroup, Machine, MachineConfig, PAST_RAM};
use addrspace::Unregister;
use addrspace_spapr::PhbConfig;
use addrspace_vfio::IommuType;
use proptest::prelude::*;

/// Host groups 1 to 4 support dynamic windows; 5 does not (a v2
/// container refuses it).
fn config() -> MachineConfig {
    MachineConfig::new()
        .phbs(vec![PhbConfig::new(0), PhbConfig::new(1)])
        .group(HostGroup::new(5).ddw(false))
}

fn mode() -> impl Strategy<Value = Unregister> {
    prop_oneof![Just(Unregister::Replay), Just(Unregister::Detach)]
}

fn device() -> impl Strategy<Value = DeviceSpec> {
    let kind = prop_oneof![
        6 => Just(IommuType::SpaprV2),
        2 => Just(IommuType::SpaprV1),
        1 => Just(IommuType::Type1V2),
    ];
    (1u32..=5, 0u32..2, kind, any::<bool>()).prop_map(|(group, phb, kind, shared)| {
        let spec = match kind {
            IommuType::SpaprV2 => DeviceSpec::spapr(group, phb),
            IommuType::SpaprV1 => DeviceSpec::spapr_v1(group, phb),
            IommuType::Type1V2 => DeviceSpec::type1(group),
        };
        if shared {
            spec.shared()
        } else {
            spec
        }
    })
}

fn target() -> impl Strategy<Value = u64> {
    prop_oneof![12 => 0u64..4096, 1 => Just(PAST_RAM)]
}

fn action() -> impl Strategy<Value = Action> {
    let phb = 0u32..2;
    // Slot 0 holds the default window; slot 1 is enabled less often.
    let slot = prop_oneof![3 => Just(0usize), 1 => Just(1usize)];
    prop_oneof![
        4 => device().prop_map(Action::Plug),
        2 => (any::<usize>(), mode()).prop_map(|(nth, mode)| Action::Unplug { nth, mode }),
        1 => Just(Action::Reset),
        6 => (phb.clone(), slot.clone(), 0u64..64, target(), 0u8..4).prop_map(
            |(phb, slot, page, target, perm)| Action::PutTce { phb, slot, page, target, perm }
        ),
        3 => (phb.clone(), slot.clone(), 0u64..64, prop::collection::vec(target(), 1..12), 0u8..4)
            .prop_map(|(phb, slot, page, targets, perm)| Action::PutIndirect {
                phb, slot, page, targets, perm
            }),
        2 => (phb.clone(), slot.clone(), 0u64..64, target(), 0u8..4, 0u64..12).prop_map(
            |(phb, slot, page, target, perm, count)| Action::Stuff {
                phb, slot, page, target, perm, count
            }
        ),
        1 => phb.clone().prop_map(|phb| Action::Query { phb }),
        3 => (phb.clone(), prop::sample::select(vec![12u32, 13, 16, 21, 24]), 14u32..34)
            .prop_map(|(phb, page_shift, window_shift)| Action::CreateWindow {
                phb,
                page_shift,
                window_shift,
            }),
        2 => (phb.clone(), slot).prop_map(|(phb, slot)| Action::RemoveWindow { phb, slot }),
        1 => phb.prop_map(|phb| Action::ResetWindows { phb }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn every_invariant_holds_after_every_step(
        actions in prop::collection::vec(action(), 1..32),
        final_mode in mode(),
    ) {
        let mut m = Machine::new(config()).unwrap();
        let mut log = Vec::new();
        for action in &actions {
            let outcome = m.apply(action);
            let guest_call = !matches!(action, Action::Plug(_));
            if guest_call {
                // Only a plug may be refused; guest calls answer, and an
                // unplug always takes the device out.
                prop_assert!(outcome.is_ok(), "{action:?}: {outcome:?}\n{}", log.join("\n"));
            }
            log.push(format!("{action:?} -> {outcome:?}"));
            let report = m.check();
            prop_assert!(report.is_clean(), "{report}\nafter:\n{}", log.join("\n"));
        }
        let devices: Vec<_> = m.devices().map(|(id, _)| id).collect();
        for id in devices {
            m.unplug(id, final_mode).unwrap();
        }
        let report = m.check();
        prop_assert!(report.is_clean(), "{report}\nafter teardown of:\n{}", log.join("\n"));
        prop_assert_eq!(m.containers().count(), 0);
        for phb in m.spapr().phbs() {
            for liobn in phb.liobns() {
                let region = phb.iommu_region(liobn).unwrap();
                prop_assert_eq!(m.mem().iommu_usage(region).unwrap(), (0, false));
            }
        }
    }
}
