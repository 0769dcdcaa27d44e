//! The crate's errors: why a hypercall, an RTAS call or the building of a
//! PHB failed. Each maps to the code the guest sees.
//!
//! A failed call changes nothing, except where PAPR says otherwise: a
//! multi-entry hypercall stops at its first failure and keeps the entries
//! it wrote before it (the error names the entry it stopped at).

use addrspace_core::AccessError;

use crate::status::{HResult, RtasStatus};
use crate::tce::{Buid, Liobn, PageSizes, Tce, WindowGeometry};

/// Why a TCE hypercall failed. Sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HcallError {
    /// The TCE list of `H_PUT_TCE_INDIRECT` is not 4 KiB aligned.
    #[error("TCE list at {list:#x} is not 4 KiB aligned")]
    ListNotAligned {
        /// The list's guest address.
        list: u64,
    },
    /// `H_PUT_TCE_INDIRECT` was asked for more than 512 entries.
    #[error("TCE list of {count} entries is longer than {max}")]
    ListTooLong {
        /// Entries asked for.
        count: u64,
        /// The most PAPR allows.
        max: u64,
    },
    /// The TCE list could not be read from guest memory.
    #[error("TCE list of {count} entries at {list:#x} is not readable: {source}")]
    ListUnreadable {
        /// The list's guest address.
        list: u64,
        /// Entries asked for.
        count: u64,
        /// Why the read failed.
        source: AccessError,
    },
    /// The memory map refused something the call needed: the guest
    /// address space or an IOMMU region is gone (`H_HARDWARE`).
    #[error("memory map: {0}")]
    Memory(#[from] addrspace_core::Error),
    /// A valid TCE whose page does not lie inside guest RAM.
    #[error("TCE {tce} for {ioba:#x} on LIOBN {liobn} points outside {ram_size:#x} bytes of RAM")]
    OutsideRam {
        /// The table.
        liobn: Liobn,
        /// The bus address of the entry.
        ioba: u64,
        /// The refused TCE.
        tce: Tce,
        /// Guest RAM size.
        ram_size: u64,
    },
    /// The bus address is not inside the table's window (or the window is
    /// disabled).
    #[error("bus address {ioba:#x} is outside the window of LIOBN {liobn} ({window:?})")]
    OutsideWindow {
        /// The table.
        liobn: Liobn,
        /// The bus address.
        ioba: u64,
        /// The window, `None` while disabled.
        window: Option<WindowGeometry>,
    },
    /// `H_STUFF_TCE` was asked for more entries than the table has.
    #[error("stuffing {count} entries into LIOBN {liobn} of {entries} entries")]
    StuffTooLong {
        /// The table.
        liobn: Liobn,
        /// Entries asked for.
        count: u64,
        /// Entries in the table.
        entries: u64,
    },
    /// No table has this LIOBN.
    #[error("unknown LIOBN {liobn}")]
    UnknownLiobn {
        /// The LIOBN asked for.
        liobn: Liobn,
    },
}

impl HcallError {
    /// The code the guest sees.
    pub fn code(&self) -> HResult {
        match self {
            HcallError::Memory(_) => HResult::HARDWARE,
            _ => HResult::PARAMETER,
        }
    }
}

/// Why a dynamic-DMA-window RTAS call failed. Sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtasError {
    /// The PHB has dynamic DMA windows turned off.
    #[error("PHB {buid} has dynamic DMA windows disabled")]
    DdwDisabled {
        /// The PHB.
        buid: Buid,
    },
    /// The LIOBN names a window that is not enabled.
    #[error("DMA window {liobn} is not active")]
    InactiveWindow {
        /// The window.
        liobn: Liobn,
    },
    /// The memory map (or a listener or IOMMU hook on it) refused the new
    /// window; it was taken back (`RTAS_OUT_HW_ERROR`).
    #[error("memory map: {0}")]
    Memory(#[from] addrspace_core::Error),
    /// Every window of the PHB is in use.
    #[error("PHB {buid} has no free DMA window ({active} active)")]
    NoFreeWindow {
        /// The PHB.
        buid: Buid,
        /// Windows active.
        active: u32,
    },
    /// The new window would overlap an active one (possible only after the
    /// default window was removed while a 64-bit window stayed, or with a
    /// window at 0 that reaches the 64-bit window's address).
    #[error("new window at {start:#x} of {size:#x} bytes would overlap window {other}")]
    Overlap {
        /// Where the new window would start.
        start: u64,
        /// Its size.
        size: u128,
        /// The active window in the way.
        other: Liobn,
    },
    /// No PHB has this LIOBN.
    #[error("unknown LIOBN {liobn}")]
    UnknownLiobn {
        /// The LIOBN asked for.
        liobn: Liobn,
    },
    /// No PHB has this BUID.
    #[error("unknown PHB {buid}")]
    UnknownPhb {
        /// The BUID asked for.
        buid: Buid,
    },
    /// The PHB does not support pages of `1 << page_shift` bytes.
    #[error("PHB {buid} does not support page shift {page_shift} (sizes {supported:?})")]
    UnsupportedPageShift {
        /// The PHB.
        buid: Buid,
        /// The page shift asked for.
        page_shift: u32,
        /// What the PHB supports.
        supported: PageSizes,
    },
    /// The window would be smaller than one page.
    #[error("window shift {window_shift} is smaller than page shift {page_shift}")]
    WindowSmallerThanPage {
        /// log2 of the window size asked for.
        window_shift: u32,
        /// log2 of the page size asked for.
        page_shift: u32,
    },
    /// The window has more TCEs than the PHB offers, or does not fit below
    /// 2^64.
    #[error(
        "window of 2^{window_shift} bytes in 2^{page_shift}-byte pages at {start:#x} \
         exceeds {max_tces:#x} TCEs or the 64-bit bus"
    )]
    WindowTooLarge {
        /// Where it would start.
        start: u64,
        /// log2 of the window size asked for.
        window_shift: u32,
        /// log2 of the page size asked for.
        page_shift: u32,
        /// The most TCEs a window may have.
        max_tces: u64,
    },
}

impl RtasError {
    /// The status the guest sees: parameter errors for what the guest got
    /// wrong, hardware errors for what the platform cannot provide.
    pub fn status(&self) -> RtasStatus {
        match self {
            RtasError::DdwDisabled { .. }
            | RtasError::InactiveWindow { .. }
            | RtasError::UnknownLiobn { .. }
            | RtasError::UnknownPhb { .. }
            | RtasError::UnsupportedPageShift { .. }
            | RtasError::WindowSmallerThanPage { .. } => RtasStatus::PARAM_ERROR,
            RtasError::Memory(_)
            | RtasError::NoFreeWindow { .. }
            | RtasError::Overlap { .. }
            | RtasError::WindowTooLarge { .. } => RtasStatus::HW_ERROR,
        }
    }
}

/// Why a PHB could not be built. Sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The configuration is inconsistent.
    #[error("PHB {index}: {reason}")]
    BadConfig {
        /// The PHB index.
        index: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A PHB with this index exists already.
    #[error("PHB {index} exists already")]
    DuplicatePhb {
        /// The PHB index.
        index: u32,
    },
    /// The memory map refused a region or the address space.
    #[error("memory map: {0}")]
    Memory(#[from] addrspace_core::Error),
}
