//! PAPR return codes: hypercall results ([`HResult`]) and RTAS statuses
//! ([`RtasStatus`]), as the guest reads them from its registers.

use std::fmt;

/// A hypercall return code (PAPR's `H_*`, returned in r3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HResult(pub i64);

impl HResult {
    /// `H_SUCCESS`.
    pub const SUCCESS: HResult = HResult(0);
    /// `H_BUSY`.
    pub const BUSY: HResult = HResult(1);
    /// `H_HARDWARE`: the platform failed.
    pub const HARDWARE: HResult = HResult(-1);
    /// `H_FUNCTION`: the hypercall is not supported.
    pub const FUNCTION: HResult = HResult(-2);
    /// `H_PRIVILEGE`.
    pub const PRIVILEGE: HResult = HResult(-3);
    /// `H_PARAMETER`: an argument is invalid.
    pub const PARAMETER: HResult = HResult(-4);
    /// `H_TOO_HARD`: KVM hands the call to userspace (never seen by a
    /// guest).
    pub const TOO_HARD: HResult = HResult(9999);

    /// The code of a hypercall's outcome.
    pub fn of<T>(result: &Result<T, crate::HcallError>) -> HResult {
        match result {
            Ok(_) => HResult::SUCCESS,
            Err(e) => e.code(),
        }
    }

    /// The PAPR name of the code.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "H_SUCCESS",
            1 => "H_BUSY",
            -1 => "H_HARDWARE",
            -2 => "H_FUNCTION",
            -3 => "H_PRIVILEGE",
            -4 => "H_PARAMETER",
            9999 => "H_TOO_HARD",
            _ => "H_?",
        }
    }
}

impl fmt::Display for HResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// An RTAS call's status (the first return word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RtasStatus(pub i32);

impl RtasStatus {
    /// `RTAS_OUT_SUCCESS`.
    pub const SUCCESS: RtasStatus = RtasStatus(0);
    /// `RTAS_OUT_HW_ERROR`: the platform cannot do it.
    pub const HW_ERROR: RtasStatus = RtasStatus(-1);
    /// `RTAS_OUT_BUSY`.
    pub const BUSY: RtasStatus = RtasStatus(-2);
    /// `RTAS_OUT_PARAM_ERROR`: an argument is invalid.
    pub const PARAM_ERROR: RtasStatus = RtasStatus(-3);

    /// The status of an RTAS call's outcome.
    pub fn of<T>(result: &Result<T, crate::RtasError>) -> RtasStatus {
        match result {
            Ok(_) => RtasStatus::SUCCESS,
            Err(e) => e.status(),
        }
    }

    /// The name of the status.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "RTAS_OUT_SUCCESS",
            -1 => "RTAS_OUT_HW_ERROR",
            -2 => "RTAS_OUT_BUSY",
            -3 => "RTAS_OUT_PARAM_ERROR",
            _ => "RTAS_OUT_?",
        }
    }
}

impl fmt::Display for RtasStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_papr_values() {
        assert_eq!(
            [HResult::SUCCESS, HResult::HARDWARE, HResult::PARAMETER].map(|c| c.0),
            [0, -1, -4]
        );
        assert_eq!(
            [
                RtasStatus::SUCCESS,
                RtasStatus::HW_ERROR,
                RtasStatus::PARAM_ERROR
            ]
            .map(|c| c.0),
            [0, -1, -3]
        );
    }

    #[test]
    fn codes_print_their_names() {
        assert_eq!(HResult::PARAMETER.to_string(), "H_PARAMETER (-4)");
        assert_eq!(RtasStatus::HW_ERROR.to_string(), "RTAS_OUT_HW_ERROR (-1)");
    }
}
