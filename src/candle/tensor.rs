//! From candle tensors to the crate's slices: element types, shape and layout checks, and the host
//! and device buffers behind a tensor's storage.

use crate::dtype::DType;
use crate::error::{MoeError, Result};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, WithDType};
use std::ops::Range;

/// The crate's element type of a candle dtype (`f32`, `bf16` or `f16`), or a
/// [`MoeError::CandleDType`] naming `what`.
pub(crate) fn element_dtype(what: &str, found: candle_core::DType) -> Result<DType> {
    match found {
        candle_core::DType::F32 => Ok(DType::F32),
        candle_core::DType::BF16 => Ok(DType::BF16),
        candle_core::DType::F16 => Ok(DType::F16),
        other => Err(dtype_error(what, "f32, bf16 or f16", other)),
    }
}

/// A [`MoeError::CandleDType`].
pub(crate) fn dtype_error(what: &str, expected: &str, found: candle_core::DType) -> MoeError {
    MoeError::CandleDType {
        what: what.into(),
        expected: expected.into(),
        found,
    }
}

/// Check that `found` is `expected`.
pub(crate) fn expect_dtype(
    what: &str,
    expected: candle_core::DType,
    found: candle_core::DType,
) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(dtype_error(what, expected.as_str(), found))
    }
}

/// Evaluate `$body` with the type alias `$T` set to the element type (`f32`, `bf16`, `f16`) of the
/// candle dtype `$dtype`; any other dtype returns a [`MoeError::CandleDType`] naming `$what`.
macro_rules! with_element {
    ($what:expr, $dtype:expr, $T:ident => $body:expr) => {
        match $crate::candle::tensor::element_dtype($what, $dtype)? {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            $crate::DType::F16 => {
                type $T = half::f16;
                $body
            }
        }
    };
}
pub(crate) use with_element;

/// The dimensions of a tensor of rank `N`, or a [`MoeError::ShapeMismatch`] naming `what`.
pub(crate) fn dims<const N: usize>(what: &str, layout: &Layout) -> Result<[usize; N]> {
    layout.dims().try_into().map_err(|_| {
        MoeError::shape(
            what,
            format!("a tensor of rank {N}"),
            format!("shape {:?}", layout.dims()),
        )
    })
}

/// The rows of a tensor `[..., cols]` taken as a matrix `[rows, cols]` (the product of the leading
/// dimensions; a rank-1 tensor is one row).
pub(crate) fn rows_of(what: &str, layout: &Layout, cols: usize) -> Result<usize> {
    match layout.dims().split_last() {
        Some((&last, _)) if last == cols => Ok(layout.shape().elem_count() / cols.max(1)),
        _ => Err(MoeError::shape(
            what,
            format!("[..., {cols}]"),
            format!("{:?}", layout.dims()),
        )),
    }
}

/// The elements of the storage that a contiguous tensor covers (any start offset); a
/// [`MoeError::NonContiguous`] for any other layout.
pub(crate) fn contiguous_range(what: &str, layout: &Layout) -> Result<Range<usize>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(start..end),
        None => Err(MoeError::NonContiguous {
            what: what.into(),
            shape: layout.dims().to_vec(),
            stride: layout.stride().to_vec(),
        }),
    }
}

/// The elements of a contiguous host tensor of element type `T`.
pub(crate) fn cpu_slice<'a, T: WithDType>(
    what: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> Result<&'a [T]> {
    expect_dtype(what, T::DTYPE, storage.dtype())?;
    let range = contiguous_range(what, layout)?;
    Ok(&T::cpu_storage_as_slice(storage)?[range])
}

/// The elements of a contiguous device tensor of element type `T`.
#[cfg(feature = "candle-cuda")]
pub(crate) fn cuda_view<'a, T: WithDType + candle_core::cuda_backend::CudaDType>(
    what: &str,
    storage: &'a candle_core::CudaStorage,
    layout: &Layout,
) -> Result<cudarc::driver::CudaView<'a, T>> {
    expect_dtype(what, T::DTYPE, storage.dtype())?;
    let range = contiguous_range(what, layout)?;
    Ok(storage.as_cuda_slice::<T>()?.slice(range))
}

/// A zeroed device buffer of `len` elements on `dev`'s stream, for an operation's output (one element
/// when `len` is 0: the driver allocates nothing smaller, and a storage may be longer than its shape).
#[cfg(feature = "candle-cuda")]
pub(crate) fn cuda_output<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    dev: &crate::gpu::Device,
    len: usize,
) -> Result<cudarc::driver::CudaSlice<T>> {
    Ok(dev.stream().alloc_zeros::<T>(len.max(1))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Shape;

    #[test]
    fn layouts_are_checked() {
        let l = Layout::contiguous_with_offset(Shape::from((2, 3)), 5);
        assert_eq!(contiguous_range("x", &l).unwrap(), 5..11);
        assert_eq!(dims::<2>("x", &l).unwrap(), [2, 3]);
        assert!(matches!(
            dims::<3>("x", &l),
            Err(MoeError::ShapeMismatch { .. })
        ));
        assert_eq!(rows_of("x", &l, 3).unwrap(), 2);
        assert!(matches!(
            rows_of("x", &l, 2),
            Err(MoeError::ShapeMismatch { .. })
        ));
        let t = l.transpose(0, 1).unwrap();
        assert!(matches!(
            contiguous_range("x", &t),
            Err(MoeError::NonContiguous { .. })
        ));
    }
}
