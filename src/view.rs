//! Shape-checked, row-major views over host slices.
//!
//! The CPU stages take their tensors as views so that a wrong length is caught once, at construction,
//! with a [`MoeError::ShapeMismatch`] naming the tensor, instead of as an index panic deep inside a loop.

use crate::error::{MoeError, Result};

/// `a * b`, or a [`MoeError::SizeOverflow`] naming `what`.
pub(crate) fn checked_mul(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| MoeError::SizeOverflow(format!("{what} ({a} x {b})")))
}

/// Check that a buffer of `len` elements holds exactly the shape `dims`, naming `what` otherwise.
pub(crate) fn expect_len(what: &str, len: usize, dims: &[usize]) -> Result<()> {
    let mut want = 1usize;
    for &d in dims {
        want = checked_mul(want, d, what)?;
    }
    if len != want {
        let shape = dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(MoeError::shape(
            what,
            format!("[{shape}] = {want} elements"),
            format!("{len} elements"),
        ));
    }
    Ok(())
}

/// A read-only row-major matrix `[rows, cols]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// Wrap `data` as `[rows, cols]`; `what` names the tensor in the error when the length is wrong.
    pub fn new(what: &str, data: &'a [T], rows: usize, cols: usize) -> Result<Self> {
        expect_len(what, data.len(), &[rows, cols])?;
        Ok(MatRef { data, rows, cols })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (the contiguous dimension).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The whole buffer.
    pub fn data(&self) -> &'a [T] {
        self.data
    }

    /// Row `r` (panics only on an out-of-range `r`, which callers never pass after validation).
    #[inline]
    pub fn row(&self, r: usize) -> &'a [T] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Check that this matrix is `[rows, cols]`, naming `what` otherwise.
    pub fn expect_shape(&self, what: &str, rows: usize, cols: usize) -> Result<()> {
        if self.rows != rows || self.cols != cols {
            return Err(MoeError::shape(
                what,
                format!("[{rows}, {cols}]"),
                format!("[{}, {}]", self.rows, self.cols),
            ));
        }
        Ok(())
    }
}

/// A mutable row-major matrix `[rows, cols]`, the output of a stage.
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
}

impl<'a, T> MatMut<'a, T> {
    /// Wrap `data` as `[rows, cols]`; `what` names the tensor in the error when the length is wrong.
    pub fn new(what: &str, data: &'a mut [T], rows: usize, cols: usize) -> Result<Self> {
        expect_len(what, data.len(), &[rows, cols])?;
        Ok(MatMut { data, rows, cols })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The whole buffer, mutable.
    pub fn data_mut(&mut self) -> &mut [T] {
        self.data
    }

    /// Row `r`, mutable.
    #[inline]
    pub fn row_mut(&mut self, r: usize) -> &mut [T] {
        &mut self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Check that this matrix is `[rows, cols]`, naming `what` otherwise.
    pub fn expect_shape(&self, what: &str, rows: usize, cols: usize) -> Result<()> {
        if self.rows != rows || self.cols != cols {
            return Err(MoeError::shape(
                what,
                format!("[{rows}, {cols}]"),
                format!("[{}, {}]", self.rows, self.cols),
            ));
        }
        Ok(())
    }
}

/// Read-only expert weights `[experts, n, k]`: one `[n, k]` matrix per expert, `k` contiguous
/// (the layout of a Hugging Face `Linear` weight, stacked over experts).
#[derive(Clone, Copy, Debug)]
pub struct ExpertsRef<'a, T> {
    data: &'a [T],
    experts: usize,
    n: usize,
    k: usize,
}

impl<'a, T> ExpertsRef<'a, T> {
    /// Wrap `data` as `[experts, n, k]`; `what` names the tensor in the error when the length is wrong.
    pub fn new(what: &str, data: &'a [T], experts: usize, n: usize, k: usize) -> Result<Self> {
        expect_len(what, data.len(), &[experts, n, k])?;
        Ok(ExpertsRef {
            data,
            experts,
            n,
            k,
        })
    }

    /// Number of experts.
    pub fn experts(&self) -> usize {
        self.experts
    }

    /// Output features per expert (rows of each matrix).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features per expert (contiguous dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The whole buffer.
    pub fn data(&self) -> &'a [T] {
        self.data
    }

    /// Expert `e`'s `[n, k]` matrix.
    pub fn expert(&self, e: usize) -> MatRef<'a, T> {
        let len = self.n * self.k;
        MatRef {
            data: &self.data[e * len..(e + 1) * len],
            rows: self.n,
            cols: self.k,
        }
    }
}
