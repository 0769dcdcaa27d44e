//! tiny_vmm: a real x86 guest on `/dev/kvm` whose memory map is kept by
//! addrspace.
//!
//! The VMM builds RAM, a ROM, an MMIO mailbox with a doorbell ioeventfd
//! and a RAM window (an alias into a memory bank), registers the KVM
//! listener, and runs one vCPU in real mode through three phases, each
//! ended by `out 0xf0, al`:
//!
//! 1. the guest writes RAM, reads the ROM, writes and reads the mailbox
//!    (MMIO exits dispatched through a view snapshot), rings the doorbell
//!    (an ioeventfd: no exit) and reads the window;
//! 2. after the VMM points the window at another part of the bank (one
//!    memory-slot change in one commit), the guest reads the new marker;
//! 3. after the VMM turns dirty logging on, the guest writes three pages
//!    and the VMM's `log_sync` must report exactly those.
//!
//! Run with `cargo run -p addrspace-kvm --example tiny_vmm`. It exits
//! non-zero if anything differs from what is expected, and prints a skip
//! reason (exit 0) where KVM is not available.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() -> std::process::ExitCode {
    vmm::main()
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    println!("skipped: tiny_vmm needs Linux KVM on x86_64");
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod vmm {
    use std::process::ExitCode;
    use std::sync::Arc;

    use addrspace_core::{AddressSpaceId, DirtyClient, FlatView, Ioeventfd, Memory, MmioOps};
    use addrspace_kvm::kvm_ioctls::{VcpuExit, VcpuFd};
    use addrspace_kvm::{EventFdNotifier, KvmVm, MemSlots};
    use parking_lot::Mutex;

    const CODE: u64 = 0x1000;
    const DATA: u64 = 0x20000;
    const WINDOW: u64 = 0x80000;
    const MAILBOX: u64 = 0xd0000;
    const DOORBELL: u64 = 0x40;
    const ROM: u64 = 0xf0000;
    const ROM_VALUE: u32 = 0x600d_f00d;
    const REPORT_PORT: u8 = 0x10;
    const PHASE_PORT: u8 = 0xf0;

    /// The mailbox device: remembers what the guest wrote; reading
    /// register 4 returns the last value plus one.
    #[derive(Default)]
    struct Mailbox {
        writes: Mutex<Vec<(u64, u64)>>,
    }

    impl MmioOps for Mailbox {
        fn read(&self, offset: u64, _size: u8) -> u64 {
            let last = self.writes.lock().last().map_or(0, |w| w.1);
            if offset == 4 {
                last + 1
            } else {
                0
            }
        }
        fn write(&self, offset: u64, _size: u8, value: u64) {
            self.writes.lock().push((offset, value));
        }
    }

    /// Hand-assembled 16-bit code (real mode, DS-relative data accesses).
    #[derive(Default)]
    struct Code(Vec<u8>);

    impl Code {
        /// mov ax, seg; mov ds, ax — then returns addr's offset in DS.
        fn ds_for(&mut self, addr: u64) -> [u8; 2] {
            let seg = (addr >> 16 << 12) as u16;
            self.0.push(0xb8);
            self.0.extend(seg.to_le_bytes());
            self.0.extend([0x8e, 0xd8]);
            ((addr & 0xffff) as u16).to_le_bytes()
        }
        /// mov dword [addr], value
        fn write(&mut self, addr: u64, value: u32) -> &mut Self {
            let off = self.ds_for(addr);
            self.0.extend([0x66, 0xc7, 0x06, off[0], off[1]]);
            self.0.extend(value.to_le_bytes());
            self
        }
        /// mov eax, [addr]; out REPORT_PORT, eax
        fn report(&mut self, addr: u64) -> &mut Self {
            let off = self.ds_for(addr);
            self.0.extend([0x66, 0xa1, off[0], off[1]]);
            self.0.extend([0x66, 0xe7, REPORT_PORT]);
            self
        }
        /// mov al, n; out PHASE_PORT, al
        fn phase(&mut self, n: u8) -> &mut Self {
            self.0.extend([0xb0, n, 0xe6, PHASE_PORT]);
            self
        }
        /// hlt
        fn hlt(&mut self) -> &mut Self {
            self.0.push(0xf4);
            self
        }
    }

    /// Why the vCPU came back to the VMM.
    #[derive(Debug, PartialEq)]
    enum Stop {
        Phase(u8),
        Halt,
    }

    struct Vmm {
        mem: Memory,
        system: AddressSpaceId,
        vcpu: VcpuFd,
        slots: MemSlots,
        failures: Vec<String>,
    }

    impl Vmm {
        fn check(&mut self, ok: bool, what: String) {
            println!("    [{}] {what}", if ok { "ok" } else { "FAIL" });
            if !ok {
                self.failures.push(what);
            }
        }

        fn print_slots(&self) {
            for s in self.slots.slots() {
                println!(
                    "    slot {}: guest {:#07x}..{:#07x} -> host {:#x} {}{}",
                    s.slot,
                    s.guest_phys_addr,
                    s.guest_phys_addr + s.memory_size,
                    s.userspace_addr,
                    if s.readonly {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    if s.log_dirty { ", dirty logging" } else { "" }
                );
            }
        }

        /// Runs the vCPU until it signals a phase or halts; returns that
        /// and the values it reported.
        fn run(&mut self) -> Result<(Stop, Vec<u32>), String> {
            let handle = self
                .mem
                .view_handle(self.system)
                .map_err(|e| e.to_string())?;
            let mut reports = Vec::new();
            loop {
                match self.vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))? {
                    VcpuExit::Hlt => return Ok((Stop::Halt, reports)),
                    VcpuExit::IoOut(port, data) if port == PHASE_PORT as u16 => {
                        return Ok((Stop::Phase(data[0]), reports))
                    }
                    VcpuExit::IoOut(port, data) if port == REPORT_PORT as u16 => {
                        let mut v = [0u8; 4];
                        v[..data.len()].copy_from_slice(data);
                        reports.push(u32::from_le_bytes(v));
                    }
                    VcpuExit::MmioRead(addr, data) => {
                        let value = mmio(&handle.load(), addr, data.len(), None);
                        data.copy_from_slice(&value.to_le_bytes()[..data.len()]);
                        println!("    mmio read  {addr:#x} -> {value:#x}");
                    }
                    VcpuExit::MmioWrite(addr, data) => {
                        let mut v = [0u8; 8];
                        v[..data.len()].copy_from_slice(data);
                        let value = u64::from_le_bytes(v);
                        mmio(&handle.load(), addr, data.len(), Some(value));
                        println!("    mmio write {addr:#x} <- {value:#x}");
                    }
                    other => return Err(format!("unexpected vCPU exit {other:?}")),
                }
            }
        }
    }

    /// Dispatches an MMIO exit through a snapshot of the view with core's
    /// access dispatch (the path any vCPU thread uses, no lock shared with
    /// the writer). Refused reads return all-ones and refused writes are
    /// dropped, as on a PC bus.
    fn mmio(view: &FlatView, addr: u64, size: usize, write: Option<u64>) -> u64 {
        match write {
            Some(value) => {
                let _ = view.write(addr, &value.to_le_bytes()[..size]);
                0
            }
            None => {
                let mut b = [0u8; 8];
                match view.read(addr, &mut b[..size]) {
                    Ok(()) => u64::from_le_bytes(b),
                    Err(_) => u64::MAX,
                }
            }
        }
    }

    fn run_vmm(vm: KvmVm) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        println!("== building the memory map");
        let mut mem = Memory::new();
        let root = mem.create_container("system", 1 << 20)?;
        let ram = mem.create_ram("ram", 0x80000)?;
        mem.add_subregion(root, 0, ram)?;
        let rom = mem.create_rom("bios", 0x10000)?;
        let rom_backing = Arc::clone(mem.region(rom)?.backing().expect("ROM has memory"));
        rom_backing.write(0x100, &ROM_VALUE.to_le_bytes())?;
        mem.add_subregion(root, ROM, rom)?;
        let mailbox = Arc::new(Mailbox::default());
        let dev = mem.create_mmio("mailbox", 0x1000, mailbox.clone())?;
        mem.add_subregion(root, MAILBOX, dev)?;
        let bank = mem.create_ram("bank", 0x20000)?;
        let bank_backing = Arc::clone(mem.region(bank)?.backing().expect("RAM has memory"));
        bank_backing.write(0, &0x1111_1111u32.to_le_bytes())?;
        bank_backing.write(0x10000, &0x2222_2222u32.to_le_bytes())?;
        let window = mem.create_alias("window", bank, 0, 0x10000)?;
        mem.add_subregion(root, WINDOW, window)?;
        let system = mem.create_address_space("memory", root)?;

        let listener = vm.memory_listener();
        let (slots, dirty) = (listener.mem_slots(), listener.dirty_pages());
        mem.register_listener(system, listener.config(), Box::new(listener))?;
        let doorbell = Arc::new(EventFdNotifier::new()?);
        mem.add_ioeventfd(
            dev,
            Ioeventfd {
                addr: DOORBELL,
                size: 4,
                datamatch: None,
                notifier: doorbell.clone(),
            },
        )?;
        println!("  ram 0x00000, window 0x80000 (bank+0), mailbox 0xd0000 (doorbell +0x40), bios 0xf0000");

        let mut code = Code::default();
        code.write(DATA, 0xcafe_babe)
            .report(ROM + 0x100)
            .write(MAILBOX, 0x1234_5678)
            .report(MAILBOX + 4)
            .write(MAILBOX + DOORBELL, 1)
            .report(WINDOW)
            .phase(1)
            .report(WINDOW)
            .phase(2)
            .write(DATA, 1)
            .write(DATA + 0x3000, 2)
            .write(DATA + 0x3004, 3)
            .write(0x4f000, 4)
            .phase(3)
            .hlt();
        let ram_backing = Arc::clone(mem.region(ram)?.backing().expect("RAM has memory"));
        ram_backing.write(CODE, &code.0)?;

        let vcpu = vm.vm_fd().create_vcpu(0)?;
        let mut sregs = vcpu.get_sregs()?;
        for seg in [&mut sregs.cs, &mut sregs.ds] {
            seg.base = 0;
            seg.selector = 0;
        }
        vcpu.set_sregs(&sregs)?;
        let mut regs = vcpu.get_regs()?;
        regs.rip = CODE;
        regs.rflags = 2;
        vcpu.set_regs(&regs)?;
        let mut vmm = Vmm {
            mem,
            system,
            vcpu,
            slots,
            failures: Vec::new(),
        };
        println!("  KVM memory slots:");
        vmm.print_slots();

        println!("== phase 1: RAM, ROM, MMIO, doorbell");
        let (stop, reports) = vmm.run()?;
        vmm.check(
            stop == Stop::Phase(1),
            format!("guest reached phase 1 ({stop:?})"),
        );
        let mut word = [0u8; 4];
        ram_backing.read(DATA, &mut word)?;
        let seen = u32::from_le_bytes(word);
        vmm.check(
            seen == 0xcafe_babe,
            format!("guest's RAM write seen by the VMM: {seen:#x}"),
        );
        let rom_read = reports.first().copied();
        vmm.check(
            rom_read == Some(ROM_VALUE),
            format!("guest read the ROM value: {rom_read:x?}"),
        );
        let writes = mailbox.writes.lock().clone();
        vmm.check(
            writes == [(0, 0x1234_5678)],
            format!("mailbox got exactly the data write, not the doorbell: {writes:x?}"),
        );
        let dev_read = reports.get(1).copied();
        vmm.check(
            dev_read == Some(0x1234_5679),
            format!("guest read the mailbox: {dev_read:x?}"),
        );
        let rung = doorbell.try_read()?;
        vmm.check(
            rung == Some(1),
            format!("doorbell eventfd fired without an exit: {rung:?}"),
        );
        let old = reports.get(2).copied();
        vmm.check(
            old == Some(0x1111_1111),
            format!("window shows bank+0: {old:x?}"),
        );

        println!("== remap: window -> bank+0x10000");
        let before = vmm.slots.find(WINDOW).map(|s| s.userspace_addr);
        vmm.mem.set_alias_offset(window, 0x10000)?;
        let after = vmm.slots.find(WINDOW).map(|s| s.userspace_addr);
        vmm.print_slots();
        vmm.check(
            after == Some(bank_backing.host_addr() + 0x10000) && before != after,
            format!("window's slot now maps host {after:x?} (was {before:x?})"),
        );
        let (stop, reports) = vmm.run()?;
        vmm.check(
            stop == Stop::Phase(2),
            format!("guest reached phase 2 ({stop:?})"),
        );
        vmm.check(
            reports == [0x2222_2222],
            format!("guest sees the new layout: {reports:x?}"),
        );

        println!("== dirty logging on RAM");
        vmm.mem.set_log(ram, DirtyClient::Migration, true)?;
        vmm.print_slots();
        let (stop, _) = vmm.run()?;
        vmm.check(
            stop == Stop::Phase(3),
            format!("guest reached phase 3 ({stop:?})"),
        );
        vmm.mem.log_sync(system)?;
        let pages = dirty.take(ram);
        vmm.check(
            pages == [DATA, DATA + 0x3000, 0x4f000],
            format!("dirty pages of ram are exactly the ones written: {pages:x?}"),
        );
        let (stop, _) = vmm.run()?;
        vmm.check(stop == Stop::Halt, format!("guest halted ({stop:?})"));
        Ok(vmm.failures)
    }

    pub fn main() -> ExitCode {
        let vm = match KvmVm::open() {
            Ok(vm) => vm,
            Err(e @ addrspace_kvm::Error::NoKvm { .. }) => {
                println!("skipped: {e}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("tiny_vmm: {e}");
                return ExitCode::FAILURE;
            }
        };
        match run_vmm(vm) {
            Ok(failures) if failures.is_empty() => {
                println!("== all checks passed");
                ExitCode::SUCCESS
            }
            Ok(failures) => {
                eprintln!("== {} check(s) failed", failures.len());
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("tiny_vmm: {e}");
                ExitCode::FAILURE
            }
        }
    }
}
