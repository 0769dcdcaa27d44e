//! The guest DMA path on the pseries model: an `H_PUT_TCE` that maps a
//! page, through the TCE table's IOMMU notification, the VFIO listener's
//! notifier and a `MAP_DMA` into the simulated kernel — and the one that
//! unmaps it again. Also the hypercall alone with no device plugged (the
//! table stays in simulated KVM, so nothing is notified).
//!
//! Run: `cargo bench --bench pseries` (add `-- --quick` for a smoke run).

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

mod common;

use addrspace::pseries::{DeviceSpec, Machine, MachineConfig};
use addrspace_spapr::{Liobn, Tce};
use criterion::{criterion_group, criterion_main, Criterion};

const DEFAULT: Liobn = Liobn(0x8000_0000);
const READ_WRITE: u64 = 3;

fn put_tce(c: &mut Criterion) {
    let mut group = c.benchmark_group("pseries/h_put_tce");
    for plugged in [false, true] {
        let mut m = Machine::new(MachineConfig::default()).expect("machine");
        if plugged {
            m.plug(DeviceSpec::spapr(1, 0)).expect("plug");
        }
        let name = if plugged {
            "map_unmap_through_vfio"
        } else {
            "map_unmap_in_kvm"
        };
        let mut k = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                let ioba = (k % 256) << 12;
                k += 1;
                m.h_put_tce(DEFAULT, ioba, Tce(0x10_0000 | READ_WRITE))
                    .expect("map");
                m.h_put_tce(DEFAULT, ioba, Tce(0)).expect("unmap");
            })
        });
        assert!(
            m.check().violations.is_empty(),
            "{:?}",
            m.check().violations
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = put_tce
}
criterion_main!(benches);
