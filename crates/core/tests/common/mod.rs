//! Helpers shared by the core's integration tests.

use addrspace_core::Memory;

/// Everything observable about a `Memory` through its public API.
pub fn fingerprint(mem: &Memory) -> String {
    let mut lines: Vec<String> = mem
        .regions()
        .map(|(id, r)| format!("{id:?} {r:?}"))
        .collect();
    lines.sort();
    for as_id in mem.address_spaces() {
        lines.push(format!(
            "{as_id:?} {} root {:?} listeners {:?} view {:?}",
            mem.address_space_name(as_id).unwrap(),
            mem.address_space_root(as_id).unwrap(),
            mem.listeners_of(as_id).unwrap(),
            mem.view(as_id).unwrap()
        ));
    }
    lines.push(format!("{mem:?} global_log {}", mem.global_dirty_log()));
    lines.join("\n")
}
