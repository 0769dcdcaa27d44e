//! Seeded random topology walks on a real VM: after every commit KVM holds
//! exactly the listener's slots, and a guest reading every half page of
//! the window sees exactly what the flat view says — from a slot where the
//! listener made one (no exit), through an MMIO exit everywhere else.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use addrspace_core::{DirtyClient, Error as CoreError, HostMemory, Memory, RegionId, RegionKind};
use common::{vm_or_skip, Asm, Machine, Rng, UNMAPPED};

const LO: u64 = 0x10000;
const HI: u64 = 0x30000;
const STEP: u64 = 0x800;
const SLOT_LIMIT: u32 = 12;

/// Fills `mem` with a marker per half page: `tag | offset`.
fn mark(mem: &HostMemory, tag: u32) {
    for off in (0..mem.len()).step_by(STEP as usize) {
        mem.write(off, &(tag | off as u32).to_le_bytes()).unwrap();
    }
}

/// What the view says a dword read at `addr` returns.
fn expected(mem: &Memory, view: &addrspace_core::FlatView, addr: u64) -> u32 {
    let Some(fr) = view.lookup(addr) else {
        return UNMAPPED;
    };
    let RegionKind::Ram { backing, .. } = mem.region(fr.region).unwrap().kind() else {
        return UNMAPPED;
    };
    let mut v = [0u8; 4];
    backing
        .read(fr.offset_in_region + (addr - fr.start), &mut v)
        .unwrap();
    u32::from_le_bytes(v)
}

struct Walk {
    m: Machine,
    parts: Vec<RegionId>,
    /// Where each part may go: page-aligned, or half-page shifted for the
    /// part whose window starts half-way into a page.
    shift: Vec<u64>,
    placed: Vec<bool>,
    /// The backed regions (RAM, ROM): dirty logging is theirs to turn on.
    targets: [RegionId; 2],
}

impl Walk {
    fn new(mut m: Machine) -> Walk {
        let ram = m.mem.create_ram("ram", 0x10000).unwrap();
        let rom = m.mem.create_rom("rom", 0x8000).unwrap();
        mark(m.mem.region(ram).unwrap().backing().unwrap(), 0xa000_0000);
        mark(m.mem.region(rom).unwrap().backing().unwrap(), 0xb000_0000);
        let (mut parts, mut shift) = (Vec::new(), Vec::new());
        for (name, target, offset, size, half) in [
            ("w0", ram, 0, 0x4000, 0),
            ("w1", ram, 0x8000, 0x6000, 0),
            ("w2", rom, 0, 0x3000, 0),
            ("w3", ram, 0x800, 0x2000, 0x800),
        ] {
            parts.push(m.mem.create_alias(name, target, offset, size).unwrap());
            shift.push(half);
        }
        parts.push(rom);
        shift.push(0);
        Walk {
            m,
            placed: vec![false; parts.len()],
            parts,
            shift,
            targets: [ram, rom],
        }
    }

    fn random_op(&mut self, rng: &mut Rng) {
        let i = rng.below(self.parts.len() as u64) as usize;
        let part = self.parts[i];
        let mem = &mut self.m.mem;
        match rng.below(6) {
            0 | 1 => {
                let addr = LO + rng.below((HI - LO) / 0x1000 - 8) * 0x1000 + self.shift[i];
                if self.placed[i] {
                    mem.set_address(part, addr).unwrap();
                } else {
                    mem.add_subregion_overlap(self.m.root, addr, part, i as i32)
                        .unwrap();
                    self.placed[i] = true;
                }
            }
            2 if self.placed[i] => {
                mem.del_subregion(self.m.root, part).unwrap();
                self.placed[i] = false;
            }
            3 => mem.set_enabled(part, rng.below(3) != 0).unwrap(),
            4 => mem.set_readonly(part, rng.below(2) == 0).unwrap(),
            5 => {
                let target = self.targets[rng.below(2) as usize];
                mem.set_log(target, DirtyClient::Vga, rng.below(2) == 0)
                    .unwrap()
            }
            _ => {}
        }
    }

    fn check(&mut self, seed: u64, step: usize) {
        self.m.assert_kvm_matches_table(SLOT_LIMIT, LO, HI);
        let addrs: Vec<u64> = (LO..HI).step_by(STEP as usize).collect();
        let mut code = Asm::default();
        for &a in &addrs {
            code.report(a);
        }
        code.hlt();
        let exits = self.m.run(&code);
        let view = self.m.mem.view(self.m.system).unwrap();
        assert_eq!(exits.reports.len(), addrs.len());
        for (&a, &got) in addrs.iter().zip(&exits.reports) {
            let want = expected(&self.m.mem, &view, a);
            assert_eq!(got, want, "seed {seed} step {step}: read at {a:#x}");
            let in_slot = self.m.slots.find(a).is_some();
            assert_eq!(
                !exits.mmio_reads.contains(&a),
                in_slot,
                "seed {seed} step {step}: {a:#x} exits iff no slot maps it"
            );
        }
    }
}

fn walk(seed: u64, steps: usize) {
    let Some(vm) = vm_or_skip("topology walk") else {
        return;
    };
    let mut w = Walk::new(Machine::new(vm.with_slot_limit(SLOT_LIMIT)));
    let mut rng = Rng(seed);
    let mut layouts = HashSet::new();
    for step in 0..steps {
        w.m.mem.begin();
        for _ in 0..1 + rng.below(4) {
            w.random_op(&mut rng);
        }
        match w.m.mem.commit() {
            Ok(()) => {}
            Err(e @ CoreError::ListenerRefused { .. }) => panic!("seed {seed} step {step}: {e}"),
            Err(e) => panic!("{e}"),
        }
        w.check(seed, step);
        layouts.insert(w.m.slots.slots());
    }
    // The walk really moved memory around.
    assert!(
        layouts.len() >= steps / 3,
        "seed {seed}: only {} layouts",
        layouts.len()
    );
}

#[test]
fn guest_sees_the_view_after_random_walk_seed_1() {
    walk(1, 24);
}

#[test]
fn guest_sees_the_view_after_random_walk_seed_2() {
    walk(2, 24);
}

#[test]
fn guest_sees_the_view_after_random_walk_seed_3() {
    walk(0x5eed, 24);
}

#[test]
fn guest_sees_new_backing_after_alias_window_moves() {
    let Some(vm) = vm_or_skip("guest_sees_new_backing_after_alias_window_moves") else {
        return;
    };
    let mut m = Machine::new(vm);
    let bank = m.mem.create_ram("bank", 0x4000).unwrap();
    let backing = Arc::clone(m.mem.region(bank).unwrap().backing().unwrap());
    backing.write(0, &0x1111_1111u32.to_le_bytes()).unwrap();
    backing
        .write(0x2000, &0x2222_2222u32.to_le_bytes())
        .unwrap();
    let window = m.mem.create_alias("window", bank, 0, 0x2000).unwrap();
    m.mem.add_subregion(m.root, 0x30000, window).unwrap();
    let mut code = Asm::default();
    code.report(0x30000).hlt();
    assert_eq!(m.run(&code).reports, vec![0x1111_1111]);

    m.mem.set_alias_offset(window, 0x2000).unwrap();
    let exits = m.run(&code);
    assert_eq!(exits.reports, vec![0x2222_2222]);
    assert!(exits.mmio_reads.is_empty());
    m.assert_kvm_matches_table(8, 0x20000, 0x40000);
}
