//! addrspace-kvm: a KVM guest's memory map, kept by an addrspace listener.
//!
//! Register a [`KvmMemoryListener`] on an address space of an
//! [`addrspace_core::Memory`] and every commit of that memory map reaches
//! the VM through `kvm-ioctls`:
//!
//! - **Memory slots.** Each memory-backed section of the flat view — RAM,
//!   RAM-device memory, ROM, and ROM devices in ROMD mode
//!   ([`Section::is_memory`](addrspace_core::Section::is_memory)) — is one
//!   KVM user memory slot, shrunk inwards to whole host pages (KVM maps
//!   pages; the partial pages at the ends of an unaligned section are left
//!   to MMIO exits). ROMs and ROM devices get `KVM_MEM_READONLY` slots, so a
//!   guest write exits as MMIO. MMIO and reservations never get a slot.
//!   Slot numbers come lowest-free-first from a [`SlotPool`] bounded by
//!   `KVM_CAP_NR_MEMSLOTS` and shared by every listener on the VM; only
//!   slots that really change are touched. The table of slots the listener
//!   holds ([`MemSlots`]) always equals what KVM holds for it.
//! - **Dirty logging.** `log_start` / `log_stop` set and clear
//!   `KVM_MEM_LOG_DIRTY_PAGES` on the section's slot in place;
//!   [`Memory::log_sync`](addrspace_core::Memory::log_sync) reads
//!   `KVM_GET_DIRTY_LOG` into [`DirtyPages`], by region and page offset.
//! - **Ioeventfds.** `eventfd_add` / `eventfd_del` assign and deassign
//!   `KVM_IOEVENTFD` on the MMIO or PIO bus ([`IoSpace`]), with the exact
//!   access length and optional data match; the notifier must have a file
//!   descriptor ([`EventFdNotifier`] does).
//!
//! [`KvmVm`] opens `/dev/kvm` (failing with [`Error::NoKvm`], naming the
//! path, when it is missing or forbidden), creates the VM and hands the
//! VMM an `Arc<VmFd>` it shares with the listeners.
//!
//! ```no_run
//! use addrspace_core::Memory;
//! use addrspace_kvm::KvmVm;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let vm = KvmVm::open()?;
//! let mut mem = Memory::new();
//! let root = mem.create_container("system", 1 << 32)?;
//! let ram = mem.create_ram("ram", 1 << 20)?;
//! mem.add_subregion(root, 0, ram)?;
//! let system = mem.create_address_space("memory", root)?;
//! let listener = vm.memory_listener();
//! let slots = listener.mem_slots();
//! mem.register_listener(system, listener.config(), Box::new(listener))?;
//! assert_eq!(slots.slots()[0].memory_size, 1 << 20);
//! let _vcpu = vm.vm_fd().create_vcpu(0)?; // the VMM keeps using the VM
//! # Ok(())
//! # }
//! ```
//!
//! # The delete-then-add window
//!
//! KVM changes one slot per ioctl; a commit that moves, splits or
//! re-attributes memory is several ioctls, and a running vCPU may run
//! between them. The listener keeps the window as small as the API allows:
//! a deleted section's slot stays in KVM until either a new slot needs its
//! addresses (then it is deleted immediately before that slot is created)
//! or the commit ends; a section deleted and re-added with identical
//! pages and protection keeps its slot with no ioctl at all; the same
//! pages at a new address move in one atomic ioctl; dirty-logging changes
//! toggle the flag on the live slot. So addresses lose their slot
//! only for the span of two consecutive ioctls, and only when their
//! mapping really changes. A vCPU touching them in that span gets an MMIO
//! exit; the VMM serves it from the view it loads, which is already the
//! new one (the core publishes a commit's views before it dispatches the
//! changes to listeners), so the exit sees the memory where the new map
//! puts it. Conversely, memory that disappears stays reachable through
//! KVM until the listener's `commit` deletes the retired slot, shortly
//! after the new view is published. VMMs that cannot accept either pause
//! their vCPUs around topology changes, as with QEMU.
//!
//! # What this crate leaves out
//!
//! - vCPUs, interrupts and exit handling: the VMM's (the `tiny_vmm`
//!   example shows MMIO exits dispatched through a view snapshot).
//! - Coalesced MMIO (`KVM_REGISTER_COALESCED_MMIO` and its ring),
//!   `KVM_SET_USER_MEMORY_REGION2` / guest_memfd, the dirty ring, manual
//!   dirty-log protection, and SMM's second memslot address space.
//! - Sections larger than one slot can be are not split across slots.
//! - Dirty pages in the unaligned head or tail of a section (served by
//!   MMIO exits) are the VMM's to record.
//!
//! The crate builds only on Linux; elsewhere it is empty.

#![cfg(target_os = "linux")]
#![warn(missing_docs, missing_debug_implementations)]

mod dirty;
mod error;
mod eventfd;
#[cfg(test)]
mod fake_kernel;
mod kernel;
pub mod listener;
mod pool;
mod slot;
mod table;
mod vm;

pub use dirty::DirtyPages;
pub use error::Error;
pub use eventfd::{EventFdNotifier, IoSpace};
pub use listener::KvmMemoryListener;
pub use pool::SlotPool;
pub use slot::MemSlot;
pub use table::MemSlots;
pub use vm::KvmVm;

/// The `kvm-ioctls` crate this one is built on, for the VMM's vCPU code.
pub use kvm_ioctls;
