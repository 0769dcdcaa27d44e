//! Device DMA through a PHB's address space lands in guest RAM.

mod common;

use addrspace_core::AccessError;
use addrspace_spapr::{PhbConfig, Tce, MSI_WINDOW_ADDR};
use common::{Machine, BUID, DEFAULT, SECOND};

#[test]
fn dma_through_the_default_window_lands_in_guest_ram() {
    let m = Machine::new(PhbConfig::new(0));
    m.iommu
        .h_put_tce(
            &m.mem,
            DEFAULT,
            0x3000,
            Tce(0x20_0000 | Tce::READ | Tce::WRITE),
        )
        .unwrap();
    let dma = m.mem.view(m.dma_space()).unwrap();
    let ram = m.mem.view(m.guest).unwrap();

    dma.write(0x3010, b"from the device").unwrap();
    ram.write(0x20_0100, b"from the guest").unwrap();
    let mut in_ram = [0u8; 15];
    ram.read(0x20_0010, &mut in_ram).unwrap();
    let mut seen_by_device = [0u8; 14];
    dma.read(0x3100, &mut seen_by_device).unwrap();

    assert_eq!(&in_ram, b"from the device");
    assert_eq!(&seen_by_device, b"from the guest");
}

#[test]
fn dma_follows_each_page_of_a_run() {
    let m = Machine::new(PhbConfig::new(0));
    m.iommu
        .h_put_tce(&m.mem, DEFAULT, 0x0000, Tce(0x50_0000 | 3))
        .unwrap();
    m.iommu
        .h_put_tce(&m.mem, DEFAULT, 0x1000, Tce(0x30_0000 | 3))
        .unwrap();
    let dma = m.mem.view(m.dma_space()).unwrap();

    dma.write(0xffe, &[1, 2, 3, 4]).unwrap();

    let ram = m.mem.view(m.guest).unwrap();
    let (mut end_of_first, mut start_of_second) = ([0u8; 2], [0u8; 2]);
    ram.read(0x50_0ffe, &mut end_of_first).unwrap();
    ram.read(0x30_0000, &mut start_of_second).unwrap();
    assert_eq!((end_of_first, start_of_second), ([1, 2], [3, 4]));
}

#[test]
fn read_only_tce_refuses_device_writes() {
    let m = Machine::new(PhbConfig::new(0));
    m.iommu
        .h_put_tce(&m.mem, DEFAULT, 0x3000, Tce(0x20_0000 | Tce::READ))
        .unwrap();
    let dma = m.mem.view(m.dma_space()).unwrap();

    let write = dma.write(0x3000, &[0xff]);
    let read = dma.read(0x3000, &mut [0u8; 1]);

    assert!(matches!(
        write,
        Err(AccessError::IommuDenied {
            access: "write",
            ..
        })
    ));
    assert_eq!(read, Ok(()));
}

#[test]
fn cleared_tce_stops_dma() {
    let m = Machine::new(PhbConfig::new(0));
    m.iommu
        .h_put_tce(&m.mem, DEFAULT, 0x3000, Tce(0x20_0000 | 3))
        .unwrap();
    m.iommu.h_put_tce(&m.mem, DEFAULT, 0x3000, Tce(0)).unwrap();
    let dma = m.mem.view(m.dma_space()).unwrap();

    let read = dma.read(0x3000, &mut [0u8; 4]);

    assert!(matches!(
        read,
        Err(AccessError::IommuDenied { access: "read", .. })
    ));
}

#[test]
fn dma_through_a_dynamic_window_with_large_pages() {
    let mut m = Machine::new(PhbConfig::new(0));
    let w = m
        .iommu
        .rtas_create_pe_dma_window(&mut m.mem, BUID, 16, 40)
        .unwrap();
    m.iommu
        .h_put_tce(&m.mem, SECOND, w.start + 0x2_0000, Tce(0x40_0000 | 3))
        .unwrap();
    let dma = m.mem.view(m.dma_space()).unwrap();

    dma.write(w.start + 0x2_2345, &[0xab]).unwrap();

    let mut byte = [0u8];
    m.mem
        .view(m.guest)
        .unwrap()
        .read(0x40_2345, &mut byte)
        .unwrap();
    assert_eq!(byte, [0xab]);
}

#[test]
fn device_write_to_the_msi_window_is_queued() {
    let m = Machine::new(PhbConfig::new(0));
    let dma = m.mem.view(m.dma_space()).unwrap();

    dma.write(MSI_WINDOW_ADDR, &42u32.to_le_bytes()).unwrap();

    let msis = m.iommu.phbs()[0].msi_window().take();
    assert_eq!(msis.len(), 1);
    assert_eq!(msis[0].data, 42);
}
