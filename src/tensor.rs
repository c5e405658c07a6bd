//! A dynamically typed host tensor, for data whose element type is known only at run time (a checkpoint,
//! an input file). Typed access checks the dtype and returns [`MoeError::DTypeMismatch`] when it differs.

use crate::dtype::{DType, Element};
use crate::error::{MoeError, Result};
use crate::view::{expect_len, MatRef};
use half::{bf16, f16};

/// The elements of a [`HostTensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `f32` elements.
    F32(Vec<f32>),
    /// `bf16` elements.
    BF16(Vec<bf16>),
    /// `f16` elements.
    F16(Vec<f16>),
}

impl TensorData {
    fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::BF16(v) => v.len(),
            TensorData::F16(v) => v.len(),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::BF16(_) => DType::BF16,
            TensorData::F16(_) => DType::F16,
        }
    }
}

/// Row-major host tensor of runtime shape and dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// Implemented by the three element types to move them in and out of [`TensorData`].
pub trait TensorElement: Element {
    /// Borrow the elements when `data` holds this type.
    fn slice(data: &TensorData) -> Option<&[Self]>;
    /// Wrap a vector of this type.
    fn wrap(v: Vec<Self>) -> TensorData;
}

macro_rules! tensor_element {
    ($t:ty, $variant:ident) => {
        impl TensorElement for $t {
            fn slice(data: &TensorData) -> Option<&[Self]> {
                match data {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(v: Vec<Self>) -> TensorData {
                TensorData::$variant(v)
            }
        }
    };
}
tensor_element!(f32, F32);
tensor_element!(bf16, BF16);
tensor_element!(f16, F16);

impl HostTensor {
    /// A tensor of `shape` holding `data`; `what` names it in the error when the length is wrong.
    pub fn new(what: &str, shape: Vec<usize>, data: TensorData) -> Result<Self> {
        expect_len(what, data.len(), &shape)?;
        Ok(HostTensor { shape, data })
    }

    /// A tensor from a typed vector.
    pub fn from_vec<T: TensorElement>(what: &str, shape: Vec<usize>, v: Vec<T>) -> Result<Self> {
        Self::new(what, shape, T::wrap(v))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The elements.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Borrow the elements as `T`, or [`MoeError::DTypeMismatch`] naming `what`.
    pub fn as_slice<T: TensorElement>(&self, what: &str) -> Result<&[T]> {
        T::slice(&self.data).ok_or_else(|| MoeError::DTypeMismatch {
            what: what.to_string(),
            expected: T::DTYPE,
            found: self.dtype(),
        })
    }

    /// The elements converted to `T` (rounding once when narrowing).
    pub fn to_vec<T: Element>(&self) -> Vec<T> {
        fn conv<S: Element, T: Element>(v: &[S]) -> Vec<T> {
            v.iter().map(|x| T::from_f32(x.to_f32())).collect()
        }
        match &self.data {
            TensorData::F32(v) => conv(v),
            TensorData::BF16(v) => conv(v),
            TensorData::F16(v) => conv(v),
        }
    }

    /// View a 2-D tensor of element type `T` as a matrix; errors name `what` on a wrong rank or dtype.
    pub fn matrix<T: TensorElement>(&self, what: &str) -> Result<MatRef<'_, T>> {
        match *self.shape.as_slice() {
            [rows, cols] => MatRef::new(what, self.as_slice::<T>(what)?, rows, cols),
            _ => Err(MoeError::shape(
                what,
                "a 2-D tensor [rows, cols]",
                format!("{:?}", self.shape),
            )),
        }
    }
}
