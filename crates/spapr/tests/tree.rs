//! The PHB's DMA address space has the shape QEMU 7.2's pseries machine
//! gives it (conformance/qemu-7.2/ppc64-pseries-S.tree).

mod common;

use addrspace_core::{KindTag, Memory, RegionId};
use addrspace_spapr::PhbConfig;
use common::Machine;

/// The `pci@800000020000000` address space of the QEMU dump.
const QEMU: &str = "\
address-space: pci@800000020000000
  0000000000000000-ffffffffffffffff (prio 0, i/o): pci@800000020000000.iommu-root
    0000000000000000-ffffffffffffffff (prio 0, i/o): tce-root-80000001
    0000000000000000-ffffffffffffffff (prio 0, i/o): tce-root-80000000
      0000000000000000-000000003fffffff (prio 0, i/o): tce-iommu-80000000
    0000040000000000-0000040000000fff (prio 0, i/o): msi
";

/// Prints a region subtree as `info mtree` does for these kinds
/// (containers, MMIO and IOMMU regions all print as `i/o`).
fn render(mem: &Memory, id: RegionId, base: u64, depth: usize, out: &mut String) {
    let r = mem.region(id).unwrap();
    let start = base + r.addr();
    let last = start as u128 + r.size() - 1;
    let kind = match r.kind().tag() {
        KindTag::Container | KindTag::Mmio | KindTag::Iommu => "i/o",
        other => panic!("unexpected kind {other:?}"),
    };
    out.push_str(&format!(
        "{:indent$}{start:016x}-{last:016x} (prio {}, {kind}): {}\n",
        "",
        r.priority(),
        r.name(),
        indent = 2 * depth
    ));
    for sub in r.subregions() {
        render(mem, *sub, start, depth + 1, out);
    }
}

#[test]
fn dma_address_space_matches_qemu() {
    let m = Machine::new(PhbConfig::new(0));
    let space = m.dma_space();

    let mut out = format!(
        "address-space: {}\n",
        m.mem.address_space_name(space).unwrap()
    );
    let root = m.mem.address_space_root(space).unwrap();
    render(&m.mem, root, 0, 1, &mut out);

    assert_eq!(out, QEMU);
}

#[test]
fn second_phb_gets_the_next_buid_and_liobns() {
    let mut m = Machine::new(PhbConfig::new(0));

    let phb = m.iommu.add_phb(&mut m.mem, PhbConfig::new(1)).unwrap();

    assert_eq!(phb.name(), "pci@800000020000001");
    let names: Vec<String> = phb
        .liobns()
        .iter()
        .map(|l| {
            m.mem
                .region(phb.iommu_region(*l).unwrap())
                .unwrap()
                .name()
                .to_owned()
        })
        .collect();
    assert_eq!(names, vec!["tce-iommu-80000100", "tce-iommu-80000101"]);
}

#[test]
fn duplicate_phb_index_is_refused() {
    let mut m = Machine::new(PhbConfig::new(0));
    let regions = m.mem.regions().count();

    let err = m.iommu.add_phb(&mut m.mem, PhbConfig::new(0)).unwrap_err();

    assert_eq!(err, addrspace_spapr::SetupError::DuplicatePhb { index: 0 });
    assert_eq!(m.mem.regions().count(), regions);
}
