//! Ioeventfds on a real VM: a matching guest write signals the eventfd
//! without a VM exit; a non-matching one exits to the device.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::sync::Arc;

use addrspace_core::{Ioeventfd, MmioOps};
use addrspace_kvm::{EventFdNotifier, IoSpace};
use common::{vm_or_skip, Asm, Machine};
use parking_lot::Mutex;

const DEV_AT: u64 = 0xd0000;

#[derive(Default)]
struct Device(Mutex<Vec<(u64, u64)>>);

impl MmioOps for Device {
    fn read(&self, _offset: u64, _size: u8) -> u64 {
        0
    }
    fn write(&self, offset: u64, _size: u8, value: u64) {
        self.0.lock().push((offset, value));
    }
}

fn doorbell(offset: u64, datamatch: Option<u64>) -> (Ioeventfd, Arc<EventFdNotifier>) {
    let n = Arc::new(EventFdNotifier::new().unwrap());
    let fd = Ioeventfd {
        addr: offset,
        size: 4,
        datamatch,
        notifier: n.clone(),
    };
    (fd, n)
}

#[test]
fn guest_write_to_ioeventfd_signals_it_without_an_exit() {
    let Some(vm) = vm_or_skip("guest_write_to_ioeventfd_signals_it_without_an_exit") else {
        return;
    };
    let mut m = Machine::new(vm);
    let dev = Arc::new(Device::default());
    let region = m.mem.create_mmio("dev", 0x1000, dev.clone()).unwrap();
    m.mem.add_subregion(m.root, DEV_AT, region).unwrap();
    let (any, any_n) = doorbell(0x40, None);
    let (seven, seven_n) = doorbell(0x44, Some(7));
    m.mem.add_ioeventfd(region, any).unwrap();
    m.mem.add_ioeventfd(region, seven).unwrap();

    let mut code = Asm::default();
    code.write(DEV_AT + 0x40, 0xdead)
        .write(DEV_AT + 0x44, 5)
        .write(DEV_AT + 0x44, 7)
        .write(DEV_AT + 0x48, 9)
        .hlt();
    let exits = m.run(&code);

    assert_eq!(any_n.try_read().unwrap(), Some(1));
    assert_eq!(seven_n.try_read().unwrap(), Some(1));
    let exited: Vec<u64> = exits.mmio_writes.iter().map(|(a, _)| *a).collect();
    assert_eq!(exited, vec![DEV_AT + 0x44, DEV_AT + 0x48]);
    assert_eq!(*dev.0.lock(), vec![(0x44, 5), (0x48, 9)]);
}

#[test]
fn removed_ioeventfd_no_longer_fires() {
    let Some(vm) = vm_or_skip("removed_ioeventfd_no_longer_fires") else {
        return;
    };
    let mut m = Machine::new(vm);
    let dev = Arc::new(Device::default());
    let region = m.mem.create_mmio("dev", 0x1000, dev.clone()).unwrap();
    m.mem.add_subregion(m.root, DEV_AT, region).unwrap();
    let (fd, n) = doorbell(0x40, None);
    m.mem.add_ioeventfd(region, fd.clone()).unwrap();
    m.mem.del_ioeventfd(region, &fd).unwrap();

    let mut code = Asm::default();
    code.write(DEV_AT + 0x40, 1).hlt();
    let exits = m.run(&code);
    assert_eq!(n.try_read().unwrap(), None);
    assert_eq!(exits.mmio_writes.len(), 1);
    assert_eq!(*dev.0.lock(), vec![(0x40, 1)]);
}

#[test]
fn port_ioeventfd_fires_on_out() {
    let Some(vm) = vm_or_skip("port_ioeventfd_fires_on_out") else {
        return;
    };
    let io_listener = vm.memory_listener().io_space(IoSpace::Pio);
    let mut m = Machine::new(vm);
    let io_root = m.mem.create_container("io", 0x10000).unwrap();
    let port = m
        .mem
        .create_mmio("port", 4, Arc::new(Device::default()))
        .unwrap();
    m.mem.add_subregion(io_root, 0x300, port).unwrap();
    let io = m.mem.create_address_space("io", io_root).unwrap();
    let config = io_listener.config();
    assert_eq!(config.name, "kvm-io");
    m.mem
        .register_listener(io, config, Box::new(io_listener))
        .unwrap();
    let n = Arc::new(EventFdNotifier::new().unwrap());
    let fd = Ioeventfd {
        addr: 1,
        size: 1,
        datamatch: None,
        notifier: n.clone(),
    };
    m.mem.add_ioeventfd(port, fd).unwrap();

    let mut code = Asm::default();
    code.out8_dx(0x301, 0x5a).out8_dx(0x302, 0x5b).hlt();
    let exits = m.run(&code);
    assert_eq!(n.try_read().unwrap(), Some(1));
    assert_eq!(exits.port_writes, vec![(0x302, 0x5b)]);
}
