//! The crate's [`gpu::Device`] for a candle CUDA device, made once per stream and kept.

use crate::error::Result;
use crate::gpu;
use std::sync::{Arc, Mutex, PoisonError};

/// Every device made so far, one per candle stream.
static DEVICES: Mutex<Vec<Arc<gpu::Device>>> = Mutex::new(Vec::new());

/// The crate's device on `cuda`'s stream ([`gpu::Device::from_stream`]): launches go to the stream
/// candle launches its own kernels on, so they are ordered with candle's work without any
/// synchronisation.
///
/// Made on first use for each stream and kept for the rest of the process, with the kernel modules it
/// loads; devices on streams of one CUDA context share their modules ([`gpu::Device::on_stream`]). A
/// kept device holds a reference to the stream and its context, so they live as long as the process
/// (which also keeps a stream's identity from being reused by another one).
///
/// Errors: those of [`gpu::Device::from_stream`] ([`MoeError::KernelsNotBuilt`] in a build without
/// nvcc, [`MoeError::Unsupported`] for a GPU older than sm_80, [`MoeError::Cuda`]).
///
/// [`MoeError::KernelsNotBuilt`]: crate::MoeError::KernelsNotBuilt
/// [`MoeError::Unsupported`]: crate::MoeError::Unsupported
/// [`MoeError::Cuda`]: crate::MoeError::Cuda
pub fn gpu_device(cuda: &candle_core::CudaDevice) -> Result<Arc<gpu::Device>> {
    let stream = cuda.cuda_stream();
    let mut devices = DEVICES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(dev) = devices.iter().find(|d| Arc::ptr_eq(d.stream(), &stream)) {
        return Ok(dev.clone());
    }
    let dev = match devices.iter().find(|d| d.context() == stream.context()) {
        Some(sibling) => sibling.on_stream(stream)?,
        None => gpu::Device::from_stream(stream)?,
    };
    let dev = Arc::new(dev);
    devices.push(dev.clone());
    Ok(dev)
}
