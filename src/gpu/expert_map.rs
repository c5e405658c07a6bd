//! An [`ExpertMap`] uploaded to the device, for one rank of an expert-parallel layer.

use super::Device;
use crate::error::Result;
use crate::expert_map::ExpertMap;
use cudarc::driver::CudaSlice;

/// An [`ExpertMap`] and its `[E]` global-to-local table on the device, for
/// [`permute_mapped`](super::permute_mapped) and expert-parallel layers.
#[derive(Debug)]
pub struct DeviceExpertMap {
    map: ExpertMap,
    device: CudaSlice<i32>,
}

impl DeviceExpertMap {
    /// Copy `map`'s table to `dev` (a pageable upload that waits for the host data: do it at load
    /// time). Errors: [`MoeError::Cuda`](crate::MoeError::Cuda).
    pub fn upload(dev: &Device, map: &ExpertMap) -> Result<Self> {
        Ok(DeviceExpertMap {
            map: map.clone(),
            device: dev.stream().clone_htod(map.global_to_local())?,
        })
    }

    /// The map.
    pub fn map(&self) -> &ExpertMap {
        &self.map
    }

    /// The `[E]` table on the device.
    pub fn device(&self) -> &CudaSlice<i32> {
        &self.device
    }
}
