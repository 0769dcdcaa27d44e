//! Scenario steps: operator actions (hot-plug, unplug, reset) and guest
//! calls (hypercalls, RTAS) described by small numbers, so that a
//! property test can generate them freely and a script can list them.
//!
//! [`Machine::apply`] resolves the numbers against the machine's current
//! state (the n-th plugged device, page n of a window modulo its size, a
//! guest page modulo RAM) and makes the call. Guest errors are answers,
//! not failures: `apply` describes them in its result. Only what the
//! machine itself refused (a plug the kernel or a listener turned down)
//! is an error.

use addrspace_core::Unregister;
use addrspace_spapr::{Buid, HResult, Liobn, RtasStatus, Tce, WindowGeometry, TCE_PAGE_SHIFT};

use super::{DeviceSpec, Machine, MachineError};

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Hot-plug a device.
    Plug(DeviceSpec),
    /// Unplug the `nth` plugged device (modulo how many there are).
    Unplug {
        /// Which device, modulo the number plugged.
        nth: usize,
        /// Replay or detach.
        mode: Unregister,
    },
    /// Machine reset.
    Reset,
    /// `H_PUT_TCE` on window `slot` of PHB `phb`: entry `page` (modulo the
    /// window) maps guest page `target` (modulo RAM pages; [`PAST_RAM`]
    /// names the first page past RAM) with permission bits `perm`.
    PutTce {
        /// PHB index.
        phb: u32,
        /// Window slot (modulo the PHB's slots).
        slot: usize,
        /// Entry (modulo the window's entries).
        page: u64,
        /// Guest page mapped.
        target: u64,
        /// Permission bits (READ 1, WRITE 2); 0 clears.
        perm: u8,
    },
    /// `H_PUT_TCE_INDIRECT`: consecutive entries from `page` map the
    /// guest pages `targets`; the list is written at the top of RAM.
    PutIndirect {
        /// PHB index.
        phb: u32,
        /// Window slot.
        slot: usize,
        /// First entry.
        page: u64,
        /// Guest pages mapped, in order (at most 512).
        targets: Vec<u64>,
        /// Permission bits for all of them.
        perm: u8,
    },
    /// `H_STUFF_TCE`: `count` entries from `page` all map guest page
    /// `target` (or clear, with `perm` 0).
    Stuff {
        /// PHB index.
        phb: u32,
        /// Window slot.
        slot: usize,
        /// First entry.
        page: u64,
        /// Guest page.
        target: u64,
        /// Permission bits.
        perm: u8,
        /// Entries written.
        count: u64,
    },
    /// `ibm,query-pe-dma-window`.
    Query {
        /// PHB index.
        phb: u32,
    },
    /// `ibm,create-pe-dma-window`.
    CreateWindow {
        /// PHB index.
        phb: u32,
        /// log2 of the page size.
        page_shift: u32,
        /// log2 of the window size.
        window_shift: u32,
    },
    /// `ibm,remove-pe-dma-window` of window `slot`.
    RemoveWindow {
        /// PHB index.
        phb: u32,
        /// Window slot.
        slot: usize,
    },
    /// `ibm,reset-pe-dma-window`.
    ResetWindows {
        /// PHB index.
        phb: u32,
    },
}

/// The `target` of a put that names the first page past guest RAM (the
/// guest is refused).
pub const PAST_RAM: u64 = u64::MAX;

/// Where the list of `H_PUT_TCE_INDIRECT` goes: the last 4 KiB page of
/// guest RAM.
fn list_addr(m: &Machine) -> u64 {
    m.ram_size() - (1 << TCE_PAGE_SHIFT)
}

impl Machine {
    /// The LIOBN of window slot `slot` (modulo the slots) of PHB `phb`.
    pub fn liobn(&self, phb: u32, slot: usize) -> Result<Liobn, MachineError> {
        let liobns = self.phb(phb)?.liobns();
        Ok(liobns[slot % liobns.len()])
    }

    /// The BUID of PHB `phb`.
    pub fn buid(&self, phb: u32) -> Result<Buid, MachineError> {
        Ok(self.phb(phb)?.buid())
    }

    /// A TCE for guest page `target` (modulo RAM pages, or [`PAST_RAM`])
    /// of a window cut as `g` (4 KiB pages while disabled).
    fn tce_for(&self, g: Option<WindowGeometry>, target: u64, perm: u8) -> Tce {
        let shift = g.map_or(TCE_PAGE_SHIFT, |g| g.page_shift);
        let pages = (self.ram_size() >> shift).max(1);
        let page = if target == PAST_RAM {
            pages
        } else {
            target % pages
        };
        Tce((page << shift) | u64::from(perm & 3))
    }

    /// The window of `liobn` and the bus address of its entry `page`
    /// (modulo its size); a disabled window gets an address the guest
    /// will be refused.
    fn target_of(&self, liobn: Liobn, page: u64) -> (Option<WindowGeometry>, u64) {
        let g = self.spapr().table(liobn).and_then(|t| t.geometry());
        let ioba = match g {
            Some(g) => g.bus_offset + g.iova_of(page % g.entries.max(1)),
            None => (page % 0x1000) << TCE_PAGE_SHIFT,
        };
        (g, ioba)
    }

    /// Runs one step; see the [module docs](self). The result describes
    /// what happened, guest status included.
    pub fn apply(&mut self, action: &Action) -> Result<String, MachineError> {
        match action {
            Action::Plug(spec) => {
                let id = self.plug(*spec)?;
                Ok(format!("plug {spec}: {id}"))
            }
            Action::Unplug { nth, mode } => {
                let devices: Vec<_> = self.devices().map(|(id, _)| id).collect();
                if devices.is_empty() {
                    return Ok("unplug: nothing plugged".into());
                }
                let id = devices[nth % devices.len()];
                self.unplug(id, *mode)?;
                Ok(format!("unplug {id} ({mode:?})"))
            }
            Action::Reset => {
                self.reset()?;
                Ok("machine reset".into())
            }
            Action::PutTce {
                phb,
                slot,
                page,
                target,
                perm,
            } => {
                let liobn = self.liobn(*phb, *slot)?;
                let (g, ioba) = self.target_of(liobn, *page);
                let tce = self.tce_for(g, *target, *perm);
                let status = HResult::of(&self.h_put_tce(liobn, ioba, tce));
                Ok(format!("H_PUT_TCE {liobn} {ioba:#x} {tce} -> {status}"))
            }
            Action::PutIndirect {
                phb,
                slot,
                page,
                targets,
                perm,
            } => {
                let liobn = self.liobn(*phb, *slot)?;
                let (g, ioba) = self.target_of(liobn, *page);
                let tces: Vec<Tce> = (targets.iter())
                    .map(|&t| self.tce_for(g, t, *perm))
                    .collect();
                let status =
                    HResult::of(&self.put_tce_list(liobn, ioba, list_addr(self), &tces)?);
                Ok(format!(
                    "H_PUT_TCE_INDIRECT {liobn} {ioba:#x} x{} -> {status}",
                    tces.len()
                ))
            }
            Action::Stuff {
                phb,
                slot,
                page,
                target,
                perm,
                count,
            } => {
                let liobn = self.liobn(*phb, *slot)?;
                let (g, ioba) = self.target_of(liobn, *page);
                let tce = self.tce_for(g, *target, *perm);
                let status = HResult::of(&self.h_stuff_tce(liobn, ioba, tce, *count));
                Ok(format!(
                    "H_STUFF_TCE {liobn} {ioba:#x} {tce} x{count} -> {status}"
                ))
            }
            Action::Query { phb } => {
                let result = self.rtas_query_pe_dma_window(self.buid(*phb)?);
                let status = RtasStatus::of(&result);
                let free = result.map_or(0, |q| q.windows_available);
                Ok(format!("ibm,query-pe-dma-window -> {status}, {free} free"))
            }
            Action::CreateWindow {
                phb,
                page_shift,
                window_shift,
            } => {
                let buid = self.buid(*phb)?;
                let result = self.rtas_create_pe_dma_window(buid, *page_shift, *window_shift);
                let status = RtasStatus::of(&result);
                let at =
                    result.map_or(String::new(), |w| format!(" {} at {:#x}", w.liobn, w.start));
                Ok(format!(
                    "ibm,create-pe-dma-window 2^{page_shift} pages, 2^{window_shift} bytes -> {status}{at}"
                ))
            }
            Action::RemoveWindow { phb, slot } => {
                let liobn = self.liobn(*phb, *slot)?;
                let status = RtasStatus::of(&self.rtas_remove_pe_dma_window(liobn));
                Ok(format!("ibm,remove-pe-dma-window {liobn} -> {status}"))
            }
            Action::ResetWindows { phb } => {
                let buid = self.buid(*phb)?;
                let status = RtasStatus::of(&self.rtas_reset_pe_dma_window(buid));
                Ok(format!("ibm,reset-pe-dma-window -> {status}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pseries::MachineConfig;

    #[test]
    fn a_target_past_ram_is_refused_and_one_inside_is_mapped() {
        let mut m = Machine::new(MachineConfig::new()).unwrap();
        let pages = m.ram_size() >> TCE_PAGE_SHIFT;
        let put = |target| Action::PutTce {
            phb: 0,
            slot: 0,
            page: 5,
            target,
            perm: 3,
        };

        let inside = m.apply(&put(pages - 1)).unwrap();
        let past = m.apply(&put(PAST_RAM)).unwrap();

        assert!(inside.ends_with("H_SUCCESS (0)"), "{inside}");
        assert!(past.ends_with("H_PARAMETER (-4)"), "{past}");
    }

    #[test]
    fn puts_on_a_disabled_window_are_refused() {
        let mut m = Machine::new(MachineConfig::new()).unwrap();
        let out = m
            .apply(&Action::Stuff {
                phb: 0,
                slot: 1,
                page: 0,
                target: 1,
                perm: 1,
                count: 4,
            })
            .unwrap();
        assert!(out.contains("H_PARAMETER"), "{out}");
    }

    #[test]
    fn unplug_with_nothing_plugged_does_nothing() {
        let mut m = Machine::new(MachineConfig::new()).unwrap();
        let out = m
            .apply(&Action::Unplug {
                nth: 3,
                mode: Unregister::Detach,
            })
            .unwrap();
        assert_eq!(out, "unplug: nothing plugged");
    }

    #[test]
    fn created_windows_are_described_with_their_place() {
        let mut m = Machine::new(MachineConfig::new()).unwrap();
        let out = m
            .apply(&Action::CreateWindow {
                phb: 0,
                page_shift: 16,
                window_shift: 30,
            })
            .unwrap();
        assert!(out.ends_with("0x80000001 at 0x800000000000000"), "{out}");
    }
}
