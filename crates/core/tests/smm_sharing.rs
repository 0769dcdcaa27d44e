//! An SMM-style address space (SMRAM windows over a full alias of system
//! memory) shares the system view exactly while its windows render
//! nothing, and renders its own, right, view as soon as one opens: random
//! windows, nested or not, opened and closed in random order, checked
//! address by address against the structure, and against what a listener
//! on the SMM space heard.

use std::collections::BTreeSet;
use std::sync::Arc;

use addrspace_core::recorder::{Event, EventLog, Recorder};
use addrspace_core::{
    AddressSpaceId, Engine, ListenerConfig, Memory, NullOps, RegionId, SIZE_2_64,
};
use proptest::prelude::*;

/// One RAM window inside an SMRAM container: RAM offset `ram_at`, `size`,
/// placed at `at` in its container, one container down if `nested`.
#[derive(Debug, Clone)]
struct Window {
    at: u64,
    size: u64,
    ram_at: u64,
    nested: bool,
}

fn window() -> impl Strategy<Value = Window> {
    (0u64..0x40, 1u64..0x8, 0u64..0x40, any::<bool>()).prop_map(|(at, size, ram_at, nested)| {
        Window {
            at: at * 0x1000,
            size: size * 0x1000,
            ram_at: ram_at * 0x1000,
            nested,
        }
    })
}

struct Machine {
    mem: Memory,
    cpu: AddressSpaceId,
    smm: AddressSpaceId,
    system: RegionId,
    /// Per SMRAM container: its alias in the SMM root, and its windows.
    smrams: Vec<(RegionId, Vec<(RegionId, Window)>)>,
    log: EventLog,
}

const RAM: u128 = 0x10_0000;

fn machine(engine: Engine, smrams: &[Vec<Window>]) -> Machine {
    let mut mem = Memory::new();
    mem.set_engine(engine);
    mem.begin();
    let system = mem.create_container("system", SIZE_2_64).unwrap();
    let ram = mem.create_ram("ram", RAM).unwrap();
    let vga = mem.create_mmio("vga", 0x2_0000, Arc::new(NullOps)).unwrap();
    mem.add_subregion(system, 0, ram).unwrap();
    mem.add_subregion_overlap(system, 0xa_0000, vga, 1).unwrap();
    let root = mem.create_container("memory", SIZE_2_64).unwrap();
    let below = mem.create_alias("memory", system, 0, SIZE_2_64).unwrap();
    mem.add_subregion(root, 0, below).unwrap();
    let mut built = Vec::new();
    for (k, windows) in smrams.iter().enumerate() {
        let smram = mem.create_container(&format!("smram{k}"), RAM).unwrap();
        let inner = mem.create_container(&format!("inner{k}"), RAM).unwrap();
        mem.add_subregion(smram, 0, inner).unwrap();
        let mut ws = Vec::new();
        for (i, w) in windows.iter().enumerate() {
            let a = mem
                .create_alias(&format!("w{k}.{i}"), ram, w.ram_at, w.size as u128)
                .unwrap();
            mem.set_enabled(a, false).unwrap();
            let parent = if w.nested { inner } else { smram };
            mem.add_subregion(parent, w.at, a).unwrap();
            ws.push((a, w.clone()));
        }
        let alias = mem
            .create_alias(&format!("smram{k}"), smram, 0, RAM)
            .unwrap();
        mem.add_subregion_overlap(root, 0, alias, 1).unwrap();
        built.push((alias, ws));
    }
    let cpu = mem.create_address_space("memory", system).unwrap();
    let smm = mem.create_address_space("cpu-smm", root).unwrap();
    mem.commit().unwrap();
    let log = EventLog::new();
    mem.register_listener(
        smm,
        ListenerConfig::new("smm"),
        Box::new(Recorder::new("smm", &log)),
    )
    .unwrap();
    Machine {
        mem,
        cpu,
        smm,
        system,
        smrams: built,
        log,
    }
}

impl Machine {
    /// What the SMM space must show at `addr`: the RAM offset of the
    /// newest open window of the highest open SMRAM there, else whatever
    /// system memory shows.
    fn expected(&self, addr: u64) -> (String, u64) {
        for (alias, windows) in self.smrams.iter().rev() {
            if !self.mem.region(*alias).unwrap().enabled() {
                continue;
            }
            // Direct windows were linked after the nested container, so
            // they win over it; among each group the newest wins.
            let direct = windows.iter().rev().filter(|(_, w)| !w.nested);
            let nested = windows.iter().rev().filter(|(_, w)| w.nested);
            for (id, w) in direct.chain(nested) {
                let open = self.mem.region(*id).unwrap().enabled();
                if open && addr >= w.at && addr < w.at + w.size {
                    return ("ram".to_owned(), w.ram_at + (addr - w.at));
                }
            }
        }
        let view = self.mem.view(self.cpu).unwrap();
        let r = view.lookup(addr).unwrap();
        (
            self.mem.region(r.region).unwrap().name().to_owned(),
            r.offset_in_region + (addr - r.start),
        )
    }

    fn any_open(&self) -> bool {
        self.smrams.iter().any(|(alias, windows)| {
            self.mem.region(*alias).unwrap().enabled()
                && windows
                    .iter()
                    .any(|(id, _)| self.mem.region(*id).unwrap().enabled())
        })
    }

    fn check(&self, heard: &BTreeSet<(u64, u64, RegionId, u64)>) -> Result<(), TestCaseError> {
        let view = self.mem.view(self.smm).unwrap();
        let mut probes = vec![0u64, 0x9_ffff, 0xa_0000, 0xb_ffff, 0xc_0000];
        for (_, windows) in &self.smrams {
            for (_, w) in windows {
                probes.extend([w.at, w.at + w.size - 1, w.at + w.size]);
            }
        }
        for addr in probes {
            let r = view.lookup(addr).unwrap();
            let got = (
                self.mem.region(r.region).unwrap().name().to_owned(),
                r.offset_in_region + (addr - r.start),
            );
            prop_assert_eq!(got, self.expected(addr), "address {:#x}", addr);
        }
        let shared = Arc::ptr_eq(&view, &self.mem.view(self.cpu).unwrap());
        prop_assert_eq!(
            shared,
            !self.any_open(),
            "shared while a window is open, or not"
        );
        if shared {
            prop_assert_eq!(view.root, Some(self.system));
        }
        let held: BTreeSet<_> = view
            .ranges
            .iter()
            .map(|r| (r.start, r.last, r.region, r.offset_in_region))
            .collect();
        prop_assert_eq!(heard, &held, "the listener's map is the view");
        Ok(())
    }
}

/// What the listener holds after `events`.
fn replay(heard: &mut BTreeSet<(u64, u64, RegionId, u64)>, events: Vec<Event>) {
    for e in events {
        match e {
            Event::RegionAdd(r) => {
                heard.insert((r.start, r.last, r.region, r.offset_in_region));
            }
            Event::RegionDel(r) => {
                heard.remove(&(r.start, r.last, r.region, r.offset_in_region));
            }
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn smm_space_shares_exactly_while_its_windows_are_closed(
        smrams in prop::collection::vec(prop::collection::vec(window(), 1..5), 1..3),
        flips in prop::collection::vec((0usize..3, 0usize..6), 1..24),
        incremental in any::<bool>(),
    ) {
        let engine = if incremental { Engine::Incremental } else { Engine::Reference };
        let mut m = machine(engine, &smrams);
        let mut heard = BTreeSet::new();
        replay(&mut heard, m.log.events_of("smm"));
        m.log.take();
        m.check(&heard)?;
        for (k, i) in flips {
            let (alias, windows) = &m.smrams[k % m.smrams.len()];
            // One past the windows flips the SMRAM alias itself.
            let id = windows.get(i).map_or(*alias, |(id, _)| *id);
            let on = m.mem.region(id).unwrap().enabled();
            m.mem.set_enabled(id, !on).unwrap();
            replay(&mut heard, m.log.events_of("smm"));
            m.log.take();
            m.check(&heard)?;
        }
    }
}
