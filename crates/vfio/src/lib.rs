//! addrspace-vfio (work in progress).
