//! [`Machine::check`]: the invariants of VFIO on sPAPR (the spec's list),
//! checked against what the simulated kernel really holds.
//!
//! Each numbered invariant is checked once per container, per guest
//! window or per machine as it applies, and each check counts once in
//! [`InvariantReport::checks`] however many pages it compares. A
//! violation message starts with the invariant's number:
//!
//! 1. per container: at most 2 host windows, none overlapping, and the
//!    container's record of its windows equals the kernel's (a v1
//!    container's fixed window may still be pending in the kernel);
//! 2. each enabled guest window of a PHB has, in each sPAPR container
//!    plugged on that PHB, exactly one host window at its bus offset, of
//!    its size and with pages no larger than its own (v2), or lies in the
//!    fixed window (v1); no container
//!    follows a section no guest window has; a released container is gone
//!    from the kernel;
//! 3. host TCEs equal the guest TCEs of every window VFIO uses, host page
//!    for host page (each guest page expands to the host pages of the
//!    window), read always allowed, write as the guest allowed it; Type1
//!    mappings equal the RAM sections;
//! 4. the kernel refused no MAP/UNMAP (the strict simulator refuses any
//!    that leaves its window, is misaligned, or maps unregistered memory),
//!    and no container logged a kernel failure or a refused mapping;
//! 5. registered memory equals the current RAM sections (whole host
//!    pages), in the kernel and in the container's record; with no
//!    container left, locked memory is back at its starting value and
//!    nothing is registered;
//! 6. each window's usage count equals the IOMMU-user sections the
//!    containers hold, `vfio_start` is in force exactly when it is
//!    non-zero, the table lives in userspace while started (and at home
//!    when stopped, if it moves back), and its moves alternate;
//! 7. every table move preserved every entry;
//! 8. no host TCE and no Type1 mapping points outside guest RAM.

use std::collections::BTreeMap;
use std::fmt;

use addrspace_core::RegionKind;
use addrspace_spapr::{Phb, Placement};
use addrspace_vfio::{Ioctl, IommuType, MemoryRange};

use super::machine::Slot;
use super::{ContainerId, Machine, MachineConfig};

/// How many differences a violation message lists before eliding.
const SHOWN: usize = 3;

/// The outcome of [`Machine::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvariantReport {
    /// Checks made.
    pub checks: usize,
    /// One message per failed check, starting with the invariant's number.
    pub violations: Vec<String>,
}

impl InvariantReport {
    /// True if no check failed.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// Adds another report's checks and violations.
    pub fn merge(&mut self, other: InvariantReport) {
        self.checks += other.checks;
        self.violations.extend(other.violations);
    }

    fn expect(&mut self, ok: bool, violation: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            self.violations.push(violation());
        }
    }
}

impl fmt::Display for InvariantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} checks, {} violations",
            self.checks,
            self.violations.len()
        )?;
        for v in &self.violations {
            write!(f, "\n  {v}")?;
        }
        Ok(())
    }
}

/// A RAM section of guest memory.
#[derive(Debug, Clone, Copy)]
struct RamSection {
    gpa: u64,
    size: u64,
    host: u64,
    readonly: bool,
}

/// A window as `(start, size, page shift, levels)`.
type Win = (u64, u64, u32, u32);

/// The whole host pages of `[addr, addr + size)`.
fn whole_pages(addr: u64, size: u64, page: u64) -> Option<(u64, u64)> {
    let page = u128::from(page);
    let start = u128::from(addr).div_ceil(page) * page;
    let end = (u128::from(addr) + u128::from(size)) / page * page;
    (end > start).then(|| (start as u64, (end - start) as u64))
}

/// The first few keys where two maps differ, rendered.
fn differences<V: PartialEq + fmt::Debug>(
    expected: &BTreeMap<u64, V>,
    actual: &BTreeMap<u64, V>,
) -> (usize, String) {
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => diffs.push(format!("{k:#x}: missing {v:?}")),
            Some(a) if a != v => diffs.push(format!("{k:#x}: {a:?}, guest says {v:?}")),
            _ => {}
        }
    }
    for (k, a) in actual {
        if !expected.contains_key(k) {
            diffs.push(format!("{k:#x}: stale {a:?}"));
        }
    }
    let shown = diffs
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    (diffs.len(), shown)
}

impl Machine {
    /// Checks every invariant (see the [module docs](self)).
    pub fn check(&self) -> InvariantReport {
        let mut r = InvariantReport::default();
        let ram = self.ram_sections();
        for (&id, slot) in &self.containers {
            let phb = slot.phb.and_then(|buid| self.spapr.phb(buid));
            match (slot.container.iommu_type(), phb) {
                (IommuType::Type1V2, _) => self.check_type1(&mut r, id, slot, &ram),
                (_, Some(phb)) => {
                    self.check_windows(&mut r, id, slot);
                    self.check_guest_windows(&mut r, id, slot, phb);
                    self.check_mappings(&mut r, id, slot, phb);
                    self.check_registration(&mut r, id, slot, &ram);
                }
                (_, None) => r.expect(false, || format!("(2) {id}: sPAPR without a PHB")),
            }
            let stats = slot.container.stats();
            r.expect(stats.kernel_failures == 0 && stats.refused == 0, || {
                format!(
                    "(4) {id}: {} kernel failures, {} refused mappings",
                    stats.kernel_failures, stats.refused
                )
            });
        }
        for retired in &self.retired {
            r.expect(self.kernel.container(retired.fd).is_none(), || {
                format!(
                    "(2) {}: released, but the kernel still holds it",
                    retired.container
                )
            });
        }
        let stats = self.kernel.stats();
        let refused: u64 = [Ioctl::MapDma, Ioctl::UnmapDma]
            .iter()
            .map(|&i| stats.failures(i) + stats.positive(i))
            .sum();
        r.expect(refused == 0, || {
            format!("(4) the kernel refused {refused} MAP/UNMAP calls")
        });
        if self.containers.is_empty() {
            let locked = self.kernel.locked_memory();
            r.expect(locked == self.locked_at_start, || {
                format!(
                    "(5) no container left, yet {locked:#x} bytes locked (started at {:#x})",
                    self.locked_at_start
                )
            });
            let left = self.kernel.registrations();
            r.expect(left.is_empty(), || {
                format!("(5) no container left, yet {} registrations", left.len())
            });
        }
        for phb in self.spapr.phbs() {
            self.check_usage(&mut r, phb);
        }
        r
    }

    fn ram_sections(&self) -> Vec<RamSection> {
        let Ok(view) = self.mem.view(self.memory) else {
            return Vec::new();
        };
        view.ranges
            .iter()
            .filter_map(|fr| {
                let region = self.mem.region(fr.region).ok()?;
                match region.kind() {
                    RegionKind::Ram {
                        backing,
                        device: false,
                    } => Some(RamSection {
                        gpa: fr.start,
                        size: u64::try_from(fr.size()).ok()?,
                        host: backing.host_addr() + fr.offset_in_region,
                        readonly: fr.readonly,
                    }),
                    _ => None,
                }
            })
            .collect()
    }

    /// (1)
    fn check_windows(&self, r: &mut InvariantReport, id: ContainerId, slot: &Slot) {
        let fd = slot.container.fd();
        let mut kernel: Vec<Win> = (self.kernel.windows(fd).iter())
            .map(|w| (w.start, w.size, w.page_shift, w.levels))
            .collect();
        if self.kernel.default_window_pending(fd) {
            if let Some(info) = slot.container.spapr_info() {
                kernel.push((info.dma32_start, info.dma32_size, 12, 1));
            }
        }
        kernel.sort_unstable();
        r.expect(kernel.len() <= 2, || {
            format!("(1) {id}: {} host windows", kernel.len())
        });
        let overlap = kernel
            .windows(2)
            .any(|p| u128::from(p[0].0) + u128::from(p[0].1) > u128::from(p[1].0));
        r.expect(!overlap, || {
            format!("(1) {id}: host windows overlap: {kernel:x?}")
        });
        let mut consumer: Vec<Win> = (slot.container.windows().iter())
            .map(|w| (w.start, w.size, w.page_shift, w.levels))
            .collect();
        consumer.sort_unstable();
        r.expect(consumer == kernel, || {
            format!("(1) {id}: container records {consumer:x?}, kernel has {kernel:x?}")
        });
    }

    /// (2)
    fn check_guest_windows(
        &self,
        r: &mut InvariantReport,
        id: ContainerId,
        slot: &Slot,
        phb: &Phb,
    ) {
        let active = phb.active_windows();
        let kernel = self.kernel.windows(slot.container.fd());
        let fixed = (slot.container.iommu_type() == IommuType::SpaprV1)
            .then(|| slot.container.windows().first().copied())
            .flatten();
        for (liobn, g) in &active {
            let ok = match fixed {
                Some(w) => w.contains(g.bus_offset, g.size()),
                None => {
                    let at = kernel
                        .iter()
                        .filter(|w| {
                            w.start == g.bus_offset
                                && u128::from(w.size) == g.size()
                                && w.page_shift <= g.page_shift
                        })
                        .count();
                    at == 1
                }
            };
            r.expect(ok, || {
                format!(
                    "(2) {id}: guest window {liobn} at {:#x} (+{:#x}, 2^{} pages) has no \
                     host window of its place, size and at most its page size",
                    g.bus_offset,
                    g.size(),
                    g.page_shift
                )
            });
        }
        if fixed.is_none() {
            r.expect(kernel.len() == active.len(), || {
                format!(
                    "(2) {id}: {} host windows for {} guest windows",
                    kernel.len(),
                    active.len()
                )
            });
        }
        let sections = slot.container.iommu_sections();
        let stale: Vec<_> = (sections.iter())
            .filter(|&&(s, sz)| {
                !(active.iter()).any(|(_, g)| g.bus_offset == s && g.size() == u128::from(sz))
            })
            .collect();
        r.expect(stale.is_empty(), || {
            format!("(2) {id}: follows sections no guest window has: {stale:x?}")
        });
    }

    /// (3) and (8) for an sPAPR container.
    fn check_mappings(&self, r: &mut InvariantReport, id: ContainerId, slot: &Slot, phb: &Phb) {
        let windows = slot.container.windows();
        let mut expected = BTreeMap::new();
        for (liobn, g) in phb.active_windows() {
            let Some(table) = phb.table(liobn) else {
                continue;
            };
            let host = windows.iter().find(|w| w.contains(g.bus_offset, 1));
            let Some(shift) = host.map(|w| w.page_shift).filter(|&s| s <= g.page_shift) else {
                // (2) reports the missing window; its entries show below.
                continue;
            };
            for (index, tce) in table.valid_entries() {
                let gpa = tce.page_addr(g.page_shift);
                let bus = g.bus_offset + g.iova_of(index);
                for k in 0..(1u64 << (g.page_shift - shift)) {
                    let off = k << shift;
                    expected.insert(bus + off, (gpa + off, true, tce.perm().write));
                }
            }
        }
        let mut actual = BTreeMap::new();
        let mut outside = Vec::new();
        for (bus, tce) in self.kernel.host_tces(slot.container.fd()) {
            let gpa = tce.vaddr.wrapping_sub(self.ram_host);
            if tce.vaddr < self.ram_host || gpa >= self.ram_size {
                outside.push((bus, tce.vaddr));
            }
            actual.insert(bus, (gpa, tce.perms.read, tce.perms.write));
        }
        r.expect(outside.is_empty(), || {
            format!("(8) {id}: host TCEs outside guest RAM: {outside:x?}")
        });
        let (n, shown) = differences(&expected, &actual);
        r.expect(n == 0, || {
            format!("(3) {id}: {n} host TCEs differ from the guest's: {shown}")
        });
    }

    /// (5) for an sPAPR container.
    fn check_registration(
        &self,
        r: &mut InvariantReport,
        id: ContainerId,
        slot: &Slot,
        ram: &[RamSection],
    ) {
        let fd = slot.container.fd();
        let kernel = self.kernel.registered_memory(fd);
        if slot.container.iommu_type() != IommuType::SpaprV2 {
            r.expect(kernel.is_empty(), || {
                format!("(5) {id}: v1 container registered {kernel:x?}")
            });
            return;
        }
        let page = 1u64 << MachineConfig::HOST_PAGE_SHIFT;
        let mut expected: Vec<MemoryRange> = (ram.iter())
            .filter_map(|s| whole_pages(s.host, s.size, page))
            .map(|(vaddr, size)| MemoryRange { vaddr, size })
            .collect();
        expected.sort_unstable();
        expected.dedup();
        r.expect(kernel == expected, || {
            format!("(5) {id}: kernel has {kernel:x?} registered, RAM is {expected:x?}")
        });
        let recorded = slot.container.registered_memory();
        r.expect(recorded == kernel, || {
            format!("(5) {id}: container records {recorded:x?}, kernel has {kernel:x?}")
        });
    }

    /// (3), (5) and (8) for a Type1 container: RAM mapped at its guest
    /// address, whole host pages, nothing else.
    fn check_type1(
        &self,
        r: &mut InvariantReport,
        id: ContainerId,
        slot: &Slot,
        ram: &[RamSection],
    ) {
        let page = 1u64 << MachineConfig::HOST_PAGE_SHIFT;
        let expected: BTreeMap<u64, (u64, u64, bool)> = (ram.iter())
            .filter_map(|s| {
                let (iova, size) = whole_pages(s.gpa, s.size, page)?;
                Some((iova, (size, s.host + (iova - s.gpa), !s.readonly)))
            })
            .collect();
        let mappings = self.kernel.type1_mappings(slot.container.fd());
        let ram_end = u128::from(self.ram_host) + u128::from(self.ram_size);
        let outside: Vec<_> = (mappings.iter())
            .filter(|m| {
                m.vaddr < self.ram_host || u128::from(m.vaddr) + u128::from(m.size) > ram_end
            })
            .map(|m| (m.iova, m.vaddr))
            .collect();
        r.expect(outside.is_empty(), || {
            format!("(8) {id}: Type1 mappings outside guest RAM: {outside:x?}")
        });
        let actual: BTreeMap<u64, (u64, u64, bool)> = (mappings.iter())
            .map(|m| (m.iova, (m.size, m.vaddr, m.perms.write)))
            .collect();
        let (n, shown) = differences(&expected, &actual);
        r.expect(n == 0, || {
            format!("(3) {id}: {n} Type1 mappings differ from guest RAM: {shown}")
        });
    }

    /// (6) and (7) for every window slot of `phb`.
    fn check_usage(&self, r: &mut InvariantReport, phb: &Phb) {
        let users: Vec<&Slot> = (self.containers.values())
            .filter(|s| s.phb == Some(phb.buid()) && s.container.iommu_type().is_spapr())
            .collect();
        for liobn in phb.liobns() {
            let (Some(region), Some(table)) = (phb.iommu_region(liobn), phb.table(liobn)) else {
                continue;
            };
            let held = table.geometry().map_or(0, |g| {
                (users.iter())
                    .flat_map(|s| s.container.iommu_sections())
                    .filter(|&(s, sz)| s == g.bus_offset && u128::from(sz) == g.size())
                    .count()
            });
            match self.mem.iommu_usage(region) {
                Ok((count, started)) => {
                    r.expect(count as usize == held && started == (count > 0), || {
                        format!(
                            "(6) window {liobn}: usage {count} (started {started}), \
                             IOMMU-user sections held {held}"
                        )
                    });
                    let placement = table.placement();
                    let at_home = !phb.config().move_back_on_stop || placement == table.home();
                    let ok = if started {
                        placement == Placement::Userspace
                    } else {
                        at_home
                    };
                    r.expect(ok, || {
                        format!("(6) window {liobn}: started {started} but table in {placement:?}")
                    });
                }
                Err(e) => r.expect(false, || format!("(6) window {liobn}: {e}")),
            }
            let log = table.move_log();
            let alternate = log.first().is_none_or(|m| m.from == table.home())
                && log.iter().all(|m| m.from != m.to)
                && log.windows(2).all(|p| p[0].to == p[1].from);
            r.expect(alternate, || {
                format!("(6) window {liobn}: moves do not alternate: {log:?}")
            });
            let lost: Vec<_> = log.iter().filter(|m| !m.preserved()).collect();
            r.expect(lost.is_empty(), || {
                format!("(7) window {liobn}: moves lost entries: {lost:?}")
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use addrspace_core::Unregister;
    use addrspace_spapr::{Liobn, Tce};

    use super::*;
    use crate::pseries::DeviceSpec;

    #[test]
    fn whole_pages_trims_partial_pages() {
        assert_eq!(
            whole_pages(0x1_8000, 0x3_0000, 0x1_0000),
            Some((0x2_0000, 0x2_0000))
        );
        assert_eq!(whole_pages(0x1_8000, 0x8000, 0x1_0000), None);
    }

    #[test]
    fn differences_list_missing_wrong_and_stale_keys() {
        let expected = BTreeMap::from([(1, 'a'), (2, 'b')]);
        let actual = BTreeMap::from([(2, 'c'), (3, 'd')]);
        let (n, shown) = differences(&expected, &actual);
        assert_eq!(n, 3);
        assert!(
            shown.contains("0x1: missing") && shown.contains("0x3: stale"),
            "{shown}"
        );
    }

    #[test]
    fn a_fresh_machine_is_clean() {
        let m = Machine::new(MachineConfig::new()).unwrap();
        let report = m.check();
        assert!(report.is_clean(), "{report}");
        assert!(report.checks >= 5);
    }

    #[test]
    fn a_host_mapping_the_guest_never_made_is_reported() {
        let mut m = Machine::new(MachineConfig::new()).unwrap();
        let dev = m.plug(DeviceSpec::spapr(1, 0)).unwrap();
        m.h_put_tce(Liobn(0x8000_0000), 0, Tce(0x10_0000 | 3))
            .unwrap();
        assert!(m.check().is_clean(), "{}", m.check());
        // Change the guest table behind VFIO's back: move it to KVM, where
        // puts notify no one, and clear the entry there.
        let table = m.spapr().table(Liobn(0x8000_0000)).unwrap().clone();
        table.move_to(Placement::Kvm);
        m.h_put_tce(Liobn(0x8000_0000), 0, Tce(0)).unwrap();

        let report = m.check();

        assert!(
            report.violations.iter().any(|v| v.starts_with("(3)")),
            "{report}"
        );
        assert!(
            report.violations.iter().any(|v| v.starts_with("(6)")),
            "{report}"
        );
        table.move_to(Placement::Userspace);
        m.unplug(dev, Unregister::Replay).unwrap();
    }
}
