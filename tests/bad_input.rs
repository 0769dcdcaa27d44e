//! Every invalid request the pseries machine's owner can make (not the
//! guest: guest calls get answers, see addrspace-spapr) gets a typed
//! `MachineError` naming the bad value and changes nothing: not the
//! memory map, not the devices, containers or host state, and the
//! invariant checker stays clean.

use addrspace::pseries::{DeviceId, DeviceSpec, Machine, MachineConfig, MachineError};
use addrspace::Unregister;
use addrspace_spapr::PhbConfig;

/// One PHB, group 1 plugged (sPAPR v2).
fn machine() -> Machine {
    let mut m = Machine::new(MachineConfig::new()).expect("default machine");
    m.plug(DeviceSpec::spapr(1, 0)).expect("group 1 plugs");
    m
}

/// Everything observable: regions and views, devices, containers, the
/// simulated host's counters.
fn fingerprint(m: &Machine) -> String {
    let mut lines: Vec<String> = m
        .mem()
        .regions()
        .map(|(id, r)| format!("{id:?} {r:?}"))
        .collect();
    for as_id in m.mem().address_spaces() {
        lines.push(format!("{as_id:?} {:?}", m.mem().view(as_id)));
    }
    lines.push(format!("devices {:?}", m.devices().collect::<Vec<_>>()));
    lines.push(format!("containers {}", m.containers().count()));
    lines.push(format!("host {:?}", m.stats()));
    lines.join("\n")
}

/// Runs `op` on a fresh machine, checks its error with `expect` and that
/// its message names `names`, that nothing changed and that every
/// invariant holds.
fn refused(
    op: impl FnOnce(&mut Machine) -> MachineError,
    expect: impl FnOnce(&MachineError) -> bool,
    names: &str,
) {
    let mut m = machine();
    let before = fingerprint(&m);
    let err = op(&mut m);
    assert!(expect(&err), "unexpected error: {err:?}");
    assert!(
        err.to_string().contains(names),
        "{err} does not name {names}"
    );
    assert_eq!(before, fingerprint(&m), "state changed after {err}");
    let report = m.check();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn plugging_a_group_the_host_does_not_have() {
    refused(
        |m| m.plug(DeviceSpec::spapr(42, 0)).unwrap_err(),
        |e| matches!(e, MachineError::UnknownGroup { group: 42 }),
        "42",
    );
}

#[test]
fn plugging_a_group_already_passed_through() {
    refused(
        |m| m.plug(DeviceSpec::spapr(1, 0)).unwrap_err(),
        |e| matches!(e, MachineError::GroupInUse { group: 1, .. }),
        "1",
    );
}

#[test]
fn plugging_behind_a_phb_the_machine_lacks() {
    refused(
        |m| m.plug(DeviceSpec::spapr(2, 7)).unwrap_err(),
        |e| matches!(e, MachineError::UnknownPhb { index: 7 }),
        "7",
    );
}

#[test]
fn plugging_an_spapr_device_without_a_phb_or_type1_with_one() {
    refused(
        |m| {
            let mut spec = DeviceSpec::spapr(2, 0);
            spec.phb = None;
            m.plug(spec).unwrap_err()
        },
        |e| matches!(e, MachineError::BadDeviceSpec { .. }),
        "PHB",
    );
    refused(
        |m| {
            let mut spec = DeviceSpec::type1(2);
            spec.phb = Some(0);
            m.plug(spec).unwrap_err()
        },
        |e| matches!(e, MachineError::BadDeviceSpec { .. }),
        "PHB",
    );
}

#[test]
fn unplugging_a_device_that_is_not_plugged() {
    refused(
        |m| m.unplug(DeviceId(99), Unregister::Detach).unwrap_err(),
        |e| {
            matches!(
                e,
                MachineError::UnknownDevice {
                    device: DeviceId(99)
                }
            )
        },
        "99",
    );
}

#[test]
fn a_machine_config_that_cannot_make_a_machine() {
    // Nothing exists yet: the refusal is the whole outcome.
    let err = Machine::new(MachineConfig::new().phbs(vec![PhbConfig::new(0), PhbConfig::new(0)]))
        .map(drop)
        .unwrap_err();
    assert!(
        matches!(err, MachineError::BadConfig { .. } | MachineError::Setup(_)),
        "{err:?}"
    );
    assert!(!err.to_string().is_empty());
}
