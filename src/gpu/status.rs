//! Errors found by kernels, recorded on the device and read back after the forward pass.

use super::abi::{self, MoeStatus};
use super::Device;
use crate::error::{MoeError, Result};
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

// SAFETY: `MoeStatus` is a `#[repr(C)]` struct of two `u64` (plain old data, no pointers), generated
// from kernels/moe_abi.h with bindgen's compile-time size and offset assertions, so its bytes are
// exactly the C struct the kernels receive.
unsafe impl DeviceRepr for MoeStatus {}
// SAFETY: all-zero bytes are two `u64` zeros, a valid `MoeStatus` (and the "nothing recorded" state).
unsafe impl ValidAsZeroBits for MoeStatus {}

/// A device-side error record that kernels write instead of failing, because a kernel cannot return
/// an error without a host synchronisation.
///
/// Today it records non-finite router logits and correction-bias entries seen by
/// [`route`](super::route), and expert ids out of range seen by [`permute`](super::permute) (which
/// skips them). When permutations of different shapes both recorded a bad id, the lowest position is
/// decoded with the shape (`k`, `E`) of the last one that recorded. Kernels only ever write to it, asynchronously, when they find a problem;
/// it is sticky (it keeps the lowest offending position across launches) until [`DeviceStatus::reset`].
/// Read it with [`DeviceStatus::check`] outside the forward pass.
#[derive(Debug)]
pub struct DeviceStatus {
    record: CudaSlice<MoeStatus>,
}

impl DeviceStatus {
    /// Device memory of one record, in bytes.
    pub const BYTES: usize = std::mem::size_of::<MoeStatus>();

    /// Allocate a cleared record on `dev`'s stream.
    pub fn new(dev: &Device) -> Result<Self> {
        Ok(DeviceStatus {
            record: dev.stream().alloc_zeros::<MoeStatus>(1)?,
        })
    }

    /// Clear the record: an asynchronous memset on the stream it was allocated on, no host wait.
    pub fn reset(&mut self) -> Result<()> {
        let stream = self.record.stream().clone();
        stream.memset_zeros(&mut self.record)?;
        Ok(())
    }

    /// Wait for all work on the record's stream, read the record back, and turn it into an error.
    ///
    /// This synchronises the host with the device, so call it outside the forward pass (after a
    /// batch, or in tests). A non-finite correction-bias entry is reported before a non-finite
    /// logit, like the CPU reference, which checks the bias first; among logits the lowest
    /// (token, expert) is reported; then the lowest (token, slot) holding an out-of-range expert id.
    pub fn check(&self) -> Result<()> {
        let stream = self.record.stream();
        stream.synchronize()?;
        let record = stream.clone_dtoh(&self.record)?;
        record.first().map_or(Ok(()), decode)
    }

    /// The record, for passing to a kernel.
    pub(crate) fn record_mut(&mut self) -> &mut CudaSlice<MoeStatus> {
        &mut self.record
    }
}

/// The error a status record holds, in the order [`DeviceStatus::check`] documents.
pub(crate) fn decode(status: &MoeStatus) -> Result<()> {
    if let Some(e) = nonfinite_error("correction bias", status.nonfinite_bias) {
        return Err(e);
    }
    if let Some(e) = nonfinite_error("router logit", status.nonfinite_logit) {
        return Err(e);
    }
    if let Some(e) = expert_id_error(status.expert_id, status.expert_id_shape) {
        return Err(e);
    }
    Ok(())
}

/// Decode the out-of-range expert id slot (see `MoeStatus` in kernels/moe_abi.h): 0 is "nothing
/// recorded", otherwise the complement of `flat << 32 | id as u32`, with `shape = k << 32 | E`.
pub(crate) fn expert_id_error(slot: u64, shape: u64) -> Option<MoeError> {
    if slot == 0 {
        return None;
    }
    let key = !slot;
    let flat = (key >> 32) as usize;
    let top_k = ((shape >> 32) as usize).max(1);
    Some(MoeError::ExpertIdOutOfRange {
        token: flat / top_k,
        slot: flat % top_k,
        id: i64::from(key as u32 as i32),
        num_experts: (shape & u64::from(u32::MAX)) as usize,
    })
}

/// Decode one status slot (see `MoeStatus` in kernels/moe_abi.h): 0 is "nothing recorded",
/// otherwise the complement of `token << 32 | expert << 2 | kind`.
fn nonfinite_error(what: &'static str, slot: u64) -> Option<MoeError> {
    if slot == 0 {
        return None;
    }
    let key = !slot;
    let value = match (key & 3) as i32 {
        abi::MOE_NONFINITE_POS_INF => f32::INFINITY,
        abi::MOE_NONFINITE_NEG_INF => f32::NEG_INFINITY,
        kind => {
            debug_assert_eq!(kind, abi::MOE_NONFINITE_NAN, "status kinds are 1, 2 or 3");
            f32::NAN
        }
    };
    Some(MoeError::NonFinite {
        what,
        token: (key >> 32) as usize,
        expert: ((key >> 2) & ((1 << 30) - 1)) as usize,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(token: u64, expert: u64, kind: i32) -> u64 {
        !((token << 32) | (expert << 2) | kind as u64)
    }

    #[test]
    fn decodes_status_slots() {
        assert!(nonfinite_error("router logit", 0).is_none());
        let e = nonfinite_error("router logit", key(7, 1000, abi::MOE_NONFINITE_NEG_INF)).unwrap();
        assert!(matches!(
            e,
            MoeError::NonFinite { what: "router logit", token: 7, expert: 1000, value }
                if value == f32::NEG_INFINITY
        ));
        let e = nonfinite_error(
            "correction bias",
            key(0, (1 << 30) - 1, abi::MOE_NONFINITE_NAN),
        );
        assert!(matches!(
            e,
            Some(MoeError::NonFinite { token: 0, expert: 1073741823, value, .. }) if value.is_nan()
        ));
        let e = nonfinite_error(
            "router logit",
            key(u32::MAX as u64, 0, abi::MOE_NONFINITE_POS_INF),
        );
        assert!(matches!(
            e,
            Some(MoeError::NonFinite { token: 4294967295, value, .. }) if value == f32::INFINITY
        ));
    }

    #[test]
    fn decodes_expert_id_slots() {
        assert!(expert_id_error(0, 0).is_none());
        // flat 13 with k = 4 is token 3, slot 1; the id -5 survives the u32 round trip.
        let slot = !((13u64 << 32) | u64::from(-5i32 as u32));
        let e = expert_id_error(slot, (4u64 << 32) | 60).unwrap();
        assert!(matches!(
            e,
            MoeError::ExpertIdOutOfRange {
                token: 3,
                slot: 1,
                id: -5,
                num_experts: 60
            }
        ));
        // A lower position gives a larger complemented key, which atomicMax keeps.
        assert!(!((12u64 << 32) | 99) > slot);
    }

    #[test]
    fn lower_positions_win_atomic_max() {
        // The kernels keep the maximum stored value, which must be the lowest (token, expert).
        assert!(key(0, 5, 1) > key(0, 6, 1));
        assert!(key(1, 0, 3) < key(0, (1 << 30) - 1, 1));
    }
}
