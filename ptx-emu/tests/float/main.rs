//! The PTX floating-point semantics (`ptx_emu::exec::float`) against an independent big-integer
//! rounding oracle and the definitions of the PTX ISA: exhaustive 16-bit conversions, every tie,
//! random arithmetic in all four rounding modes, and the approximate functions within their
//! documented error. Seeds are printed; `PTX_FLOAT_SEED` replays one.

mod approx;
mod arith_16;
mod arith_f32_f64;
mod common;
mod conversions;
mod int_minmax;
mod oracle_selfcheck;
