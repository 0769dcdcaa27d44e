//! Benchmark workloads shared by the criterion benches and
//! `addrspace bench`: synthetic machines at VM scale, and the timed
//! "toggle one region" loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use addrspace_core::{
    AddressSpaceId, Error, Listener, ListenerConfig, ListenerCx, ListenerResult, Memory, NullOps,
    RegionId, Section, SIZE_2_64,
};

/// A listener that only counts what it hears.
#[derive(Debug, Clone, Default)]
pub struct Counter(pub Arc<AtomicU64>);

impl Counter {
    /// Events heard so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Listener for Counter {
    fn region_add(&mut self, _cx: &mut ListenerCx<'_>, _s: &Section) -> ListenerResult {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn region_del(&mut self, _cx: &mut ListenerCx<'_>, _s: &Section) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A synthetic machine: RAM, then `regions` device BARs spread over PCI
/// buses of 100 devices (as real machines nest them), and `spaces` address
/// spaces: `memory` plus bus-master spaces that each show system memory
/// through a full alias (as every PCI device's DMA space does).
#[derive(Debug)]
pub struct ScaleMachine {
    /// The memory map.
    pub mem: Memory,
    /// The CPU address space.
    pub memory: AddressSpaceId,
    /// All address spaces, `memory` first.
    pub spaces: Vec<AddressSpaceId>,
    /// The BARs, in address order.
    pub bars: Vec<RegionId>,
}

/// Where the synthetic BARs start.
pub const BAR_BASE: u64 = 0x1_0000_0000;
/// Size of each synthetic BAR; BARs sit 2 * BAR_SIZE apart.
pub const BAR_SIZE: u64 = 0x1000;

impl ScaleMachine {
    /// Builds the machine in one transaction.
    pub fn new(regions: usize, spaces: usize) -> Result<ScaleMachine, Error> {
        let mut mem = Memory::new();
        mem.begin();
        let system = mem.create_container("system", SIZE_2_64)?;
        let ram = mem.create_ram("ram", 0x4000_0000)?;
        mem.add_subregion(system, 0, ram)?;
        let mut bars = Vec::with_capacity(regions);
        let per_bus = 100;
        let span = per_bus as u64 * 2 * BAR_SIZE;
        for b in 0..regions.div_ceil(per_bus) {
            let bus = mem.create_container(&format!("bus{b}"), span as u128)?;
            mem.add_subregion(system, BAR_BASE + b as u64 * span, bus)?;
            for d in 0..per_bus.min(regions - b * per_bus) {
                let bar =
                    mem.create_mmio(&format!("bar{b}.{d}"), BAR_SIZE as u128, Arc::new(NullOps))?;
                mem.add_subregion(bus, d as u64 * 2 * BAR_SIZE, bar)?;
                bars.push(bar);
            }
        }
        let memory = mem.create_address_space("memory", system)?;
        let mut all = vec![memory];
        for i in 1..spaces {
            let root = mem.create_container(&format!("bus master container {i}"), SIZE_2_64)?;
            let alias = mem.create_alias(&format!("bus master {i}"), system, 0, SIZE_2_64)?;
            mem.add_subregion(root, 0, alias)?;
            all.push(mem.create_address_space(&format!("dev{i}"), root)?);
        }
        mem.commit()?;
        Ok(ScaleMachine {
            mem,
            memory,
            spaces: all,
            bars,
        })
    }
}

/// Registers a [`Counter`] on each of `spaces`.
pub fn count_events(mem: &mut Memory, spaces: &[AddressSpaceId]) -> Result<Counter, Error> {
    let counter = Counter::default();
    for (i, s) in spaces.iter().enumerate() {
        mem.register_listener(
            *s,
            ListenerConfig::new(format!("count{i}")),
            Box::new(counter.clone()),
        )?;
    }
    Ok(counter)
}

/// Alternately removes `region` from its parent and adds it back at the
/// same address and priority, one commit each, `count` times; returns the
/// duration of each commit.
pub fn toggle(mem: &mut Memory, region: RegionId, count: usize) -> Result<Vec<Duration>, Error> {
    let r = mem.region(region)?;
    let parent = r.parent().ok_or(Error::NotASubregion {
        parent: region,
        region,
    })?;
    let (addr, prio) = (r.addr(), r.priority());
    let mut times = Vec::with_capacity(count);
    // One clock reading per commit: each commit ends where the next one's
    // timing starts, so the timer's own cost is paid once, not twice.
    let mut t = Instant::now();
    for i in 0..count {
        if i % 2 == 0 {
            mem.del_subregion(parent, region)?;
        } else {
            mem.add_subregion_overlap(parent, addr, region, prio)?;
        }
        let now = Instant::now();
        times.push(now - t);
        t = now;
    }
    if count % 2 == 1 {
        mem.add_subregion_overlap(parent, addr, region, prio)?;
    }
    Ok(times)
}

/// Mean and median of `times`, in nanoseconds.
pub fn mean_median_ns(times: &[Duration]) -> (f64, f64) {
    if times.is_empty() {
        return (0.0, 0.0);
    }
    let mut ns: Vec<f64> = times.iter().map(|t| t.as_nanos() as f64).collect();
    let mean = ns.iter().sum::<f64>() / ns.len() as f64;
    (mean, median(&mut ns))
}

/// The median of `values` (the mean of the middle two for an even count;
/// 0 for none), which it sorts.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use addrspace_core::Engine;

    #[test]
    fn scale_machine_has_the_asked_for_ranges_and_spaces() {
        let m = ScaleMachine::new(250, 3).unwrap();
        let view = m.mem.view(m.memory).unwrap();
        assert_eq!(view.ranges.len(), 251);
        assert_eq!(m.spaces.len(), 3);
        assert_eq!(
            m.mem.view_count(),
            1,
            "bus-master spaces share the system view"
        );
    }

    #[test]
    fn toggle_leaves_the_machine_as_it_was_and_counts_events() {
        for engine in [Engine::Incremental, Engine::Reference] {
            let mut m = ScaleMachine::new(100, 2).unwrap();
            m.mem.set_engine(engine);
            let before = m.mem.view(m.memory).unwrap();
            let counter = count_events(&mut m.mem, &m.spaces.clone()).unwrap();
            let base = counter.get();
            let times = toggle(&mut m.mem, m.bars[10], 5).unwrap();
            assert_eq!(times.len(), 5);
            assert_eq!(*m.mem.view(m.memory).unwrap(), *before);
            // 5 toggles + the final re-add = 6 changes, each one event in
            // each of the 2 spaces.
            assert_eq!(counter.get() - base, 12);
        }
    }

    #[test]
    fn mean_and_median() {
        let t = [1, 2, 3, 10].map(Duration::from_nanos);
        assert_eq!(mean_median_ns(&t), (4.0, 2.5));
        assert_eq!(mean_median_ns(&[]), (0.0, 0.0));
        assert_eq!(median(&mut [57.5, 3.0, 60.25]), 57.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
