//! addrspace-kvm (work in progress).
