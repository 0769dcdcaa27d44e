//! addrspace-spapr (work in progress).
