//! Errors across the candle boundary: [`MoeError`] into candle's error and back, and the slot that
//! carries a custom op's typed error past candle's.

use crate::error::MoeError;
use std::cell::Cell;

/// A [`MoeError`] as a candle error, for `?` in code that returns `candle_core::Result` (a
/// [`Module`](candle_core::Module), say): a wrapped candle error is unwrapped, any other error
/// becomes candle's `Error::Wrapped` with the same message.
impl From<MoeError> for candle_core::Error {
    fn from(e: MoeError) -> Self {
        match e {
            MoeError::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}

/// The typed error of a custom op's forward.
///
/// A custom op's `cpu_fwd`/`cuda_fwd` can only return a candle error, whose wrapped errors cannot
/// be downcast; the op keeps its [`MoeError`] here instead, and the caller takes it back when
/// candle returns the error.
#[derive(Default)]
pub(crate) struct ErrorSlot(Cell<Option<MoeError>>);

impl ErrorSlot {
    /// `result` for candle: an error is kept in the slot and handed to candle as its message.
    pub(crate) fn keep<T>(&self, result: crate::Result<T>) -> candle_core::Result<T> {
        result.map_err(|e| {
            let message = e.to_string();
            self.0.set(Some(e));
            candle_core::Error::Msg(message)
        })
    }

    /// The error to report for candle's `error`: the op's own when it failed, else candle's.
    pub(crate) fn take(&self, error: candle_core::Error) -> MoeError {
        self.0.take().unwrap_or(MoeError::Candle(error))
    }
}
