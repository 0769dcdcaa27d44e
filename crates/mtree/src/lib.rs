//! addrspace-mtree (work in progress).
