//! [`Machine`]: construction, VFIO hot-plug and unplug, guest calls,
//! reset, and what observers may look at.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use addrspace_core::{AddressSpaceId, Memory, RegionId, Unregister, SIZE_2_64};
use addrspace_spapr::{Buid, GuestRam, Liobn, PageSizes, Phb, SpaprIommu, TableMove};
use addrspace_vfio::{
    Container, ContainerFd, DeviceFd, GroupConfig, IommuGroupId, SimKernel, SimStats, VfioError,
};

use super::MachineError;
use super::{ContainerChoice, ContainerId, DeviceId, DeviceSpec, HostGroup, MachineConfig};

/// A live container and where it is plugged.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) container: Container<SimKernel>,
    /// The PHB whose DMA address space it listens to (sPAPR).
    pub(super) phb: Option<Buid>,
    /// Host groups attached, by number.
    pub(super) groups: BTreeSet<u32>,
}

/// A plugged device.
#[derive(Debug, Clone, Copy)]
struct Device {
    spec: DeviceSpec,
    container: ContainerId,
    fd: DeviceFd,
}

/// A container the machine released (torn down, or given up after a
/// failed plug). Kept so that checks can see that the kernel dropped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retired {
    /// The machine's name for it.
    pub container: ContainerId,
    /// Its fd (the simulator never reuses fd numbers).
    pub fd: ContainerFd,
}

/// A pseries machine; see the [module docs](super).
#[derive(Debug)]
pub struct Machine {
    pub(super) mem: Memory,
    system: RegionId,
    ram_block: RegionId,
    ram: RegionId,
    pub(super) memory: AddressSpaceId,
    pub(super) ram_host: u64,
    pub(super) ram_size: u64,
    pub(super) spapr: SpaprIommu,
    pub(super) kernel: Arc<SimKernel>,
    host_groups: BTreeMap<u32, HostGroup>,
    pub(super) containers: BTreeMap<ContainerId, Slot>,
    devices: BTreeMap<DeviceId, Device>,
    pub(super) retired: Vec<Retired>,
    next_device: u32,
    next_container: u32,
    pub(super) locked_at_start: u64,
    moves_seen: BTreeMap<Liobn, usize>,
}

impl Machine {
    /// Builds the machine: guest RAM in `memory`, the PHBs (each with its
    /// default window enabled, as after a reset), and the simulated host.
    pub fn new(config: MachineConfig) -> Result<Machine, MachineError> {
        config
            .check()
            .map_err(|reason| MachineError::BadConfig { reason })?;
        let align = 1u64 << config.ram_page_shift;
        let ram_size = config.ram_size;
        let mut mem = Memory::new();
        let system = mem.create_container("system", SIZE_2_64)?;
        let ram_block = mem.create_ram(
            "ppc_spapr.ram-block",
            u128::from(ram_size) + u128::from(align),
        )?;
        let block_host = mem
            .region(ram_block)?
            .backing()
            .map(|b| b.host_addr())
            .ok_or(MachineError::BadConfig {
                reason: "RAM has no host memory",
            })?;
        let offset = block_host.next_multiple_of(align) - block_host;
        let ram = mem.create_alias("ppc_spapr.ram", ram_block, offset, u128::from(ram_size))?;
        mem.add_subregion(system, 0, ram)?;
        let memory = mem.create_address_space("memory", system)?;
        let mut spapr = SpaprIommu::new(GuestRam {
            address_space: memory,
            size: ram_size,
        });
        let fits_ram = (1u64 << config.ram_page_shift << 1) - 1;
        for phb in &config.phbs {
            let mut phb = phb.clone();
            phb.page_sizes = PageSizes(phb.page_sizes.0 & fits_ram);
            spapr.add_phb(&mut mem, phb)?;
        }
        let mut sim = SimKernel::builder().mode(config.sim_mode).type1(true);
        for g in &config.groups {
            sim = sim.group(
                GroupConfig::new(g.number)
                    .device(g.device.clone())
                    .ddw(g.ddw),
            );
        }
        let kernel = Arc::new(sim.build());
        let ram_host = block_host + offset;
        if config.ram_page_shift > MachineConfig::HOST_PAGE_SHIFT {
            kernel.back_with_huge_pages(ram_host, ram_size, config.ram_page_shift);
        }
        let locked_at_start = kernel.locked_memory();
        Ok(Machine {
            mem,
            system,
            ram_block,
            ram,
            memory,
            ram_host,
            ram_size,
            spapr,
            kernel,
            host_groups: config
                .groups
                .iter()
                .map(|g| (g.number, g.clone()))
                .collect(),
            containers: BTreeMap::new(),
            devices: BTreeMap::new(),
            retired: Vec::new(),
            next_device: 0,
            next_container: 0,
            locked_at_start,
            moves_seen: BTreeMap::new(),
        })
    }

    // ----- what observers see -----

    /// The memory map.
    pub fn mem(&self) -> &Memory {
        &self.mem
    }

    /// The memory map, mutably: for observers such as event recorders.
    /// Changing the topology behind the machine's back voids its
    /// invariants.
    pub fn mem_mut(&mut self) -> &mut Memory {
        &mut self.mem
    }

    /// The guest memory address space (`memory`).
    pub fn memory(&self) -> AddressSpaceId {
        self.memory
    }

    /// Root of `memory`.
    pub fn system(&self) -> RegionId {
        self.system
    }

    /// The RAM region holding guest RAM's host memory.
    pub fn ram_block(&self) -> RegionId {
        self.ram_block
    }

    /// The alias showing guest RAM at guest address 0.
    pub fn ram(&self) -> RegionId {
        self.ram
    }

    /// Guest RAM size.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// Host address of guest physical address 0.
    pub fn ram_host(&self) -> u64 {
        self.ram_host
    }

    /// The sPAPR IOMMU: PHBs, windows and TCE tables.
    pub fn spapr(&self) -> &SpaprIommu {
        &self.spapr
    }

    /// The PHB with index `index`.
    pub fn phb(&self, index: u32) -> Result<&Phb, MachineError> {
        (self.spapr.phbs().iter())
            .find(|p| p.index() == index)
            .ok_or(MachineError::UnknownPhb { index })
    }

    /// The simulated VFIO host.
    pub fn kernel(&self) -> &Arc<SimKernel> {
        &self.kernel
    }

    /// The simulated host's call counters.
    pub fn stats(&self) -> SimStats {
        self.kernel.stats()
    }

    /// Live containers, by id, with the PHB each listens to.
    pub fn containers(
        &self,
    ) -> impl Iterator<Item = (ContainerId, &Container<SimKernel>, Option<Buid>)> {
        (self.containers.iter()).map(|(&id, s)| (id, &s.container, s.phb))
    }

    /// A live container.
    pub fn container(&self, id: ContainerId) -> Option<&Container<SimKernel>> {
        self.containers.get(&id).map(|s| &s.container)
    }

    /// Containers released so far.
    pub fn retired(&self) -> &[Retired] {
        &self.retired
    }

    /// Plugged devices, ascending, with their spec.
    pub fn devices(&self) -> impl Iterator<Item = (DeviceId, DeviceSpec)> + '_ {
        self.devices.iter().map(|(&id, d)| (id, d.spec))
    }

    /// The container a plugged device's group is in.
    pub fn device_container(&self, device: DeviceId) -> Option<ContainerId> {
        self.devices.get(&device).map(|d| d.container)
    }

    /// The device fd of a plugged device.
    pub fn device_fd(&self, device: DeviceId) -> Option<DeviceFd> {
        self.devices.get(&device).map(|d| d.fd)
    }

    /// Table moves (between simulated KVM and userspace) made since the
    /// last call, over every table of every PHB, oldest first per table.
    /// A move to userspace is the work of `vfio_start`, a move back that
    /// of `vfio_stop`.
    pub fn take_table_moves(&mut self) -> Vec<TableMove> {
        let mut out = Vec::new();
        for phb in self.spapr.phbs() {
            for liobn in phb.liobns() {
                let Some(table) = phb.table(liobn) else {
                    continue;
                };
                let log = table.move_log();
                let seen = self.moves_seen.entry(liobn).or_insert(0);
                out.extend_from_slice(&log[(*seen).min(log.len())..]);
                *seen = log.len();
            }
        }
        out
    }

    // ----- VFIO hot-plug -----

    /// Passes host group `spec.group` through (see the [module
    /// docs](super)). A failure leaves the machine as it was: a container
    /// opened for the device is released again.
    pub fn plug(&mut self, spec: DeviceSpec) -> Result<DeviceId, MachineError> {
        let host = (self.host_groups.get(&spec.group))
            .ok_or(MachineError::UnknownGroup { group: spec.group })?
            .clone();
        if let Some((&device, _)) = self
            .devices
            .iter()
            .find(|(_, d)| d.spec.group == spec.group)
        {
            return Err(MachineError::GroupInUse {
                group: spec.group,
                device,
            });
        }
        let phb = match (spec.iommu_type.is_spapr(), spec.phb) {
            (true, Some(index)) => Some(self.phb(index)?.buid()),
            (true, None) => {
                return Err(MachineError::BadDeviceSpec {
                    reason: "an sPAPR device sits behind a PHB",
                })
            }
            (false, Some(_)) => {
                return Err(MachineError::BadDeviceSpec {
                    reason: "a Type1 device ignores the guest IOMMU and takes no PHB",
                })
            }
            (false, None) => None,
        };
        let group = IommuGroupId(spec.group);
        if spec.container == ContainerChoice::Shared {
            let candidates: Vec<ContainerId> = (self.containers.iter())
                .filter(|(_, s)| s.phb == phb && s.container.iommu_type() == spec.iommu_type)
                .map(|(&id, _)| id)
                .collect();
            for id in candidates {
                let slot = self.containers.get_mut(&id).expect("listed");
                if slot.container.attach_group(group).is_err() {
                    // The kernel refused (e.g. v1 takes one group): try the next.
                    continue;
                }
                match slot.container.open_device(group, &host.device) {
                    Ok(fd) => {
                        slot.groups.insert(spec.group);
                        return Ok(self.add_device(spec, id, fd));
                    }
                    Err(err) => {
                        let _ = slot.container.detach_group(&self.mem, group);
                        return Err(err.into());
                    }
                }
            }
        }
        let container = Container::open(self.kernel.clone(), spec.iommu_type)?;
        let dma = match phb {
            Some(buid) => Some(self.spapr.phb(buid).expect("found above").address_space()),
            None => None,
        };
        let id = ContainerId(self.next_container);
        self.next_container += 1;
        match set_up(
            &container,
            &mut self.mem,
            self.memory,
            dma,
            group,
            &host.device,
        ) {
            Ok(fd) => {
                let slot = Slot {
                    container,
                    phb,
                    groups: BTreeSet::from([spec.group]),
                };
                self.containers.insert(id, slot);
                Ok(self.add_device(spec, id, fd))
            }
            Err(err) => {
                let fd = container.fd();
                let _ = container.release();
                self.retired.push(Retired { container: id, fd });
                Err(err.into())
            }
        }
    }

    fn add_device(&mut self, spec: DeviceSpec, container: ContainerId, fd: DeviceFd) -> DeviceId {
        let id = DeviceId(self.next_device);
        self.next_device += 1;
        self.devices.insert(
            id,
            Device {
                spec,
                container,
                fd,
            },
        );
        id
    }

    /// Hot-unplugs a device. If its group shares the container with
    /// others, only the group is detached (the container stays plugged
    /// and puts back the mappings the kernel cleared); otherwise the
    /// container is torn down in `mode` and released.
    pub fn unplug(&mut self, device: DeviceId, mode: Unregister) -> Result<(), MachineError> {
        let dev = self
            .devices
            .remove(&device)
            .ok_or(MachineError::UnknownDevice { device })?;
        let slot = self
            .containers
            .get_mut(&dev.container)
            .expect("a device's container is live");
        if slot.groups.len() > 1 {
            let group = IommuGroupId(dev.spec.group);
            if let Err(err) = slot.container.detach_group(&self.mem, group) {
                self.devices.insert(device, dev);
                return Err(err.into());
            }
            slot.groups.remove(&dev.spec.group);
            return Ok(());
        }
        let slot = self.containers.remove(&dev.container).expect("live");
        self.retired.push(Retired {
            container: dev.container,
            fd: slot.container.fd(),
        });
        slot.container.teardown(&mut self.mem, mode)?;
        Ok(())
    }
}

/// Attaches `group`, opens its device and plugs a new container; the
/// caller releases the container on failure.
fn set_up(
    container: &Container<SimKernel>,
    mem: &mut Memory,
    memory: AddressSpaceId,
    dma: Option<AddressSpaceId>,
    group: IommuGroupId,
    device: &str,
) -> Result<DeviceFd, VfioError> {
    container.attach_group(group)?;
    let fd = container.open_device(group, device)?;
    container.plug(mem, memory, dma)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use addrspace_spapr::Placement;

    use super::*;

    const DEFAULT: Liobn = Liobn(0x8000_0000);

    #[test]
    fn guest_ram_host_memory_is_aligned_to_its_pages() {
        let m = Machine::new(MachineConfig::new()).unwrap();
        assert_eq!(m.ram_host() % (1 << 24), 0);
        let view = m.mem().view(m.memory()).unwrap();
        assert_eq!(view.ranges.len(), 1);
        assert_eq!(view.ranges[0].size(), u128::from(m.ram_size()));
    }

    #[test]
    fn phb_page_sizes_are_capped_by_the_ram_pages() {
        let m = Machine::new(MachineConfig::new().ram_page_shift(16)).unwrap();
        let sizes = m.phb(0).unwrap().config().page_sizes;
        assert!(sizes.has_shift(16) && sizes.has_shift(12));
        assert!(!sizes.has_shift(21) && !sizes.has_shift(24));
    }

    #[test]
    fn plugging_moves_the_table_and_unplugging_moves_it_back() {
        let mut m = Machine::new(MachineConfig::new()).unwrap();
        let dev = m.plug(DeviceSpec::spapr(1, 0)).unwrap();
        let table = m.spapr().table(DEFAULT).unwrap().clone();
        assert_eq!(table.placement(), Placement::Userspace);

        m.unplug(dev, Unregister::Replay).unwrap();

        assert_eq!(table.placement(), Placement::Kvm);
        let moves = m.take_table_moves();
        assert_eq!(moves.len(), 2);
        assert!(m.take_table_moves().is_empty());
        assert_eq!(m.retired().len(), 1);
    }

    #[test]
    fn a_group_cannot_be_passed_through_twice() {
        let mut m = Machine::new(MachineConfig::new()).unwrap();
        let dev = m.plug(DeviceSpec::spapr(1, 0)).unwrap();
        let err = m.plug(DeviceSpec::spapr(1, 0)).unwrap_err();
        assert!(matches!(err, MachineError::GroupInUse { group: 1, device } if device == dev));
        assert!(matches!(
            m.plug(DeviceSpec::spapr(9, 0)),
            Err(MachineError::UnknownGroup { group: 9 })
        ));
        assert!(matches!(
            m.plug(DeviceSpec::spapr(2, 5)),
            Err(MachineError::UnknownPhb { index: 5 })
        ));
    }

    #[test]
    fn a_type1_device_behind_a_phb_is_refused() {
        let mut m = Machine::new(MachineConfig::new()).unwrap();
        let mut spec = DeviceSpec::type1(2);
        spec.phb = Some(0);
        assert!(matches!(
            m.plug(spec),
            Err(MachineError::BadDeviceSpec { .. })
        ));
        assert_eq!(m.containers().count(), 0);
    }

    #[test]
    fn a_shared_device_joins_the_container_of_its_phb() {
        let mut m = Machine::new(MachineConfig::new()).unwrap();
        let a = m.plug(DeviceSpec::spapr(1, 0)).unwrap();
        let b = m.plug(DeviceSpec::spapr(2, 0).shared()).unwrap();
        assert_eq!(m.device_container(a), m.device_container(b));

        m.unplug(a, Unregister::Detach).unwrap();

        assert_eq!(m.containers().count(), 1);
        assert!(m.retired().is_empty());
    }
}
