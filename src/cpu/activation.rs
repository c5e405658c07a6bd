//! Stage 3b, the expert activation: gated (`act(gate) * up`, SwiGLU / GeGLU) or plain (`act(x)`).
//!
//! A gated input row is the fused gate-up projection `[2I]`: the gate half first, then the up half.

use crate::config::Activation;
use crate::dtype::Element;
use crate::error::{MoeError, Result};
use crate::view::{MatMut, MatRef};

/// Apply `act` to the `f32` up-projection row `up` (length `2I` gated, `I` plain), writing `I` outputs,
/// rounded once. The single definition of the expert activation, shared by the stage and the fused layer.
#[inline]
pub(crate) fn activate_row<Y: Element>(act: Activation, up: &[f32], out: &mut [Y]) {
    let i = out.len();
    if act.gated {
        let (gate, up) = up.split_at(i);
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = Y::from_f32(act.kind.gated(g, u));
        }
    } else {
        for (o, &u) in out.iter_mut().zip(up) {
            *o = Y::from_f32(act.kind.apply(u));
        }
    }
}

/// Apply the expert activation to every row: `x` is `[rows, 2I]` when `act.gated` (gate half first),
/// `[rows, I]` otherwise; `out` is `[rows, I]`.
pub fn activation<A: Element, Y: Element>(
    act: Activation,
    x: MatRef<'_, A>,
    out: &mut MatMut<'_, Y>,
) -> Result<()> {
    let i = out.cols();
    if x.cols() != act.up_rows(i) {
        return Err(MoeError::shape(
            "activation input",
            format!("[{}, {}]", out.rows(), act.up_rows(i)),
            format!("[{}, {}]", x.rows(), x.cols()),
        ));
    }
    out.expect_shape("activation output", x.rows(), i)?;
    let mut row = vec![0f32; x.cols()];
    for r in 0..x.rows() {
        for (d, v) in row.iter_mut().zip(x.row(r)) {
            *d = v.to_f32();
        }
        activate_row(act, &row, out.row_mut(r));
    }
    Ok(())
}
