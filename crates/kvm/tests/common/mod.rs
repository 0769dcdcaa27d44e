//! A tiny x86 machine for the tests that run on `/dev/kvm`: one vCPU in
//! real mode, a memory map kept by the KVM listener, a 16-bit assembler
//! for the handful of instructions the guests use, MMIO exits served from
//! a view snapshot, and probes that read back which slots KVM holds.

#![allow(dead_code)]

use std::sync::Arc;

use addrspace_core::{AddressSpaceId, HostMemory, Memory, RegionId};
use addrspace_kvm::kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use addrspace_kvm::{DirtyPages, Error, KvmVm, MemSlots};
use kvm_bindings::kvm_userspace_memory_region;

/// Where the guest's code lives (its own RAM region, never remapped).
pub const CODE: u64 = 0x1000;
/// Size of the code region.
pub const CODE_SIZE: u64 = 0x4000;
/// Port the guests report values on (`out 0x10, eax`).
pub const REPORT: u16 = 0x10;
/// Guest-physical address no test maps, for slot probes.
const PROBE_GPA: u64 = 1 << 32;
/// What the exit handler returns for reads of unmapped addresses.
pub const UNMAPPED: u32 = 0xffff_ffff;

/// Overrides the KVM device path (e.g. to check the skip path).
pub const DEVICE_ENV: &str = "ADDRSPACE_KVM_DEVICE";

/// Opens a VM, or says why the test is skipped.
pub fn vm_or_skip(test: &str) -> Option<KvmVm> {
    let path = std::env::var(DEVICE_ENV).unwrap_or_else(|_| KvmVm::DEFAULT_PATH.to_owned());
    match KvmVm::open_path(path) {
        Ok(vm) => Some(vm),
        Err(e @ Error::NoKvm { .. }) => {
            eprintln!("skipped: {test}: {e}");
            None
        }
        Err(
            e @ Error::Kvm {
                op: "KVM_CREATE_VM",
                ..
            },
        ) => {
            eprintln!("skipped: {test}: KVM is present but unusable: {e}");
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// 16-bit real-mode machine code, built instruction by instruction.
#[derive(Default)]
pub struct Asm(pub Vec<u8>);

impl Asm {
    /// `mov ax, seg; mov ds, ax`: data accesses go to `seg * 16 + off`.
    pub fn ds(&mut self, seg: u16) -> &mut Self {
        self.0.push(0xb8);
        self.0.extend(seg.to_le_bytes());
        self.0.extend([0x8e, 0xd8]);
        self
    }
    /// Points DS at the 64 KiB segment holding `addr` (< 1 MiB) and
    /// returns the offset of `addr` in it.
    pub fn seg_for(&mut self, addr: u64) -> u16 {
        assert!(addr < 1 << 20, "real mode reaches 1 MiB");
        self.ds((addr >> 16 << 12) as u16);
        (addr & 0xffff) as u16
    }
    /// `mov eax, [off]`.
    pub fn load32(&mut self, off: u16) -> &mut Self {
        self.0.extend([0x66, 0xa1]);
        self.0.extend(off.to_le_bytes());
        self
    }
    /// `mov dword [off], imm`.
    pub fn store32(&mut self, off: u16, imm: u32) -> &mut Self {
        self.0.extend([0x66, 0xc7, 0x06]);
        self.0.extend(off.to_le_bytes());
        self.0.extend(imm.to_le_bytes());
        self
    }
    /// `out port, eax` (port < 256).
    pub fn out32(&mut self, port: u8) -> &mut Self {
        self.0.extend([0x66, 0xe7, port]);
        self
    }
    /// `mov al, v; mov dx, port; out dx, al`.
    pub fn out8_dx(&mut self, port: u16, v: u8) -> &mut Self {
        self.0.extend([0xb0, v, 0xba]);
        self.0.extend(port.to_le_bytes());
        self.0.push(0xee);
        self
    }
    /// Reads the dword at `addr` and reports it on [`REPORT`].
    pub fn report(&mut self, addr: u64) -> &mut Self {
        let off = self.seg_for(addr);
        self.load32(off).out32(REPORT as u8)
    }
    /// Writes `imm` to the dword at `addr`.
    pub fn write(&mut self, addr: u64, imm: u32) -> &mut Self {
        let off = self.seg_for(addr);
        self.store32(off, imm)
    }
    /// `hlt`.
    pub fn hlt(&mut self) -> &mut Self {
        self.0.push(0xf4);
        self
    }
}

/// What a run of the guest did, besides reading and writing memory.
#[derive(Debug, Default)]
pub struct Exits {
    /// Values reported on [`REPORT`].
    pub reports: Vec<u32>,
    /// Other port writes: (port, first byte).
    pub port_writes: Vec<(u16, u8)>,
    /// Guest-physical addresses of MMIO read exits.
    pub mmio_reads: Vec<u64>,
    /// MMIO write exits: (address, bytes).
    pub mmio_writes: Vec<(u64, Vec<u8>)>,
}

/// A VM with one memory address space, its KVM listener and a vCPU.
pub struct Machine {
    pub vm: KvmVm,
    pub mem: Memory,
    pub root: RegionId,
    pub system: AddressSpaceId,
    pub code: RegionId,
    pub slots: MemSlots,
    pub dirty: DirtyPages,
    vcpu: VcpuFd,
    probe_page: HostMemory,
}

impl Machine {
    /// A 1 MiB machine with the code region at [`CODE`] and the KVM
    /// listener registered.
    pub fn new(vm: KvmVm) -> Machine {
        let mut mem = Memory::new();
        let root = mem.create_container("system", 1 << 20).unwrap();
        let code = mem.create_ram("code", CODE_SIZE as u128).unwrap();
        mem.add_subregion(root, CODE, code).unwrap();
        let system = mem.create_address_space("memory", root).unwrap();
        let listener = vm.memory_listener();
        let (slots, dirty) = (listener.mem_slots(), listener.dirty_pages());
        mem.register_listener(system, listener.config(), Box::new(listener))
            .unwrap();
        let vcpu = vm.vm_fd().create_vcpu(0).unwrap();
        Machine {
            vm,
            mem,
            root,
            system,
            code,
            slots,
            dirty,
            vcpu,
            probe_page: HostMemory::anonymous(4096).unwrap(),
        }
    }

    /// Runs `code` from [`CODE`] in real mode until `hlt`.
    pub fn run(&mut self, code: &Asm) -> Exits {
        assert!((code.0.len() as u64) < CODE_SIZE, "guest code too long");
        let backing = Arc::clone(self.mem.region(self.code).unwrap().backing().unwrap());
        backing.write(0, &code.0).unwrap();
        let mut sregs = self.vcpu.get_sregs().unwrap();
        for seg in [&mut sregs.cs, &mut sregs.ds, &mut sregs.es, &mut sregs.ss] {
            seg.base = 0;
            seg.selector = 0;
        }
        self.vcpu.set_sregs(&sregs).unwrap();
        let mut regs = self.vcpu.get_regs().unwrap();
        regs.rip = CODE;
        regs.rflags = 2;
        self.vcpu.set_regs(&regs).unwrap();
        let view = self.mem.view_handle(self.system).unwrap();
        let mut exits = Exits::default();
        for _ in 0..100_000 {
            match self.vcpu.run().expect("KVM_RUN") {
                VcpuExit::Hlt => return exits,
                VcpuExit::IoOut(REPORT, data) => {
                    let mut v = [0u8; 4];
                    v[..data.len()].copy_from_slice(data);
                    exits.reports.push(u32::from_le_bytes(v));
                }
                VcpuExit::IoOut(port, data) => exits.port_writes.push((port, data[0])),
                VcpuExit::MmioRead(addr, data) => {
                    exits.mmio_reads.push(addr);
                    mmio_read(&view.load(), addr, data);
                }
                VcpuExit::MmioWrite(addr, data) => {
                    exits.mmio_writes.push((addr, data.to_vec()));
                    mmio_write(&view.load(), addr, data);
                }
                other => panic!("unexpected exit {other:?}"),
            }
        }
        panic!("guest did not halt");
    }

    /// True if KVM holds slot number `n` (in anyone's name).
    ///
    /// Asks KVM to make `n` a one-page slot far from everything: an
    /// existing slot cannot change its size, so KVM says EINVAL; a free
    /// number is created, and deleted again.
    pub fn kvm_has_slot(&self, n: u32) -> bool {
        let probe = kvm_userspace_memory_region {
            slot: n,
            flags: 0,
            guest_phys_addr: PROBE_GPA,
            memory_size: 4096,
            userspace_addr: self.probe_page.host_addr(),
        };
        match self.set(probe) {
            Err(libc::EINVAL) => true,
            Ok(()) => {
                self.set(kvm_userspace_memory_region {
                    memory_size: 0,
                    ..probe
                })
                .unwrap();
                false
            }
            Err(e) => panic!("probe of slot {n}: errno {e}"),
        }
    }

    /// True if some KVM slot covers the page at `gpa`: a one-page slot
    /// there, under the spare number `spare`, is refused with EEXIST.
    pub fn kvm_maps_page(&self, gpa: u64, spare: u32) -> bool {
        let probe = kvm_userspace_memory_region {
            slot: spare,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: 4096,
            userspace_addr: self.probe_page.host_addr(),
        };
        match self.set(probe) {
            Err(libc::EEXIST) => true,
            Ok(()) => {
                self.set(kvm_userspace_memory_region {
                    memory_size: 0,
                    ..probe
                })
                .unwrap();
                false
            }
            Err(e) => panic!("probe of page {gpa:#x}: errno {e}"),
        }
    }

    /// Asserts that KVM holds exactly the listener's slots: every slot
    /// number below `numbers` exists iff the table has it, and every page
    /// of `[lo, hi)` is covered iff a table slot covers it.
    pub fn assert_kvm_matches_table(&self, numbers: u32, lo: u64, hi: u64) {
        let table = self.slots.slots();
        for n in 0..numbers {
            assert_eq!(
                self.kvm_has_slot(n),
                table.iter().any(|s| s.slot == n),
                "slot {n}: KVM vs table {table:x?}"
            );
        }
        for page in (lo..hi).step_by(4096) {
            assert_eq!(
                self.kvm_maps_page(page, numbers),
                table.iter().any(|s| s.contains(page)),
                "page {page:#x}: KVM vs table {table:x?}"
            );
        }
    }

    fn set(&self, r: kvm_userspace_memory_region) -> Result<(), i32> {
        let vm: &VmFd = self.vm.vm_fd();
        // SAFETY: probes map one page of `probe_page`, which lives as long
        // as the machine, and are deleted before returning.
        unsafe { vm.set_user_memory_region(r) }.map_err(|e| e.errno())
    }
}

/// Serves an MMIO read exit through the view the vCPU saw (core's access
/// dispatch): memory the slots leave out (partial pages) from its backing,
/// devices through their ops, holes as all-ones.
pub fn mmio_read(view: &addrspace_core::FlatView, addr: u64, data: &mut [u8]) {
    if view.read(addr, data).is_err() {
        data.fill(0xff);
    }
}

/// Serves an MMIO write exit: RAM takes it, devices get it; writes to ROM
/// or holes are dropped (the access is refused and changes nothing).
pub fn mmio_write(view: &addrspace_core::FlatView, addr: u64, data: &[u8]) {
    let _ = view.write(addr, data);
}

/// A small deterministic generator for seeded random walks (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
