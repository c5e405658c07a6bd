//! The kernels' index math compiled for the host (`kernels/host/*.cpp`, built by `build.rs` with the
//! `cc` crate), so that the code deciding which GPU thread computes what is tested against the CPU
//! reference on every machine, GPU or not. Not a stable API: it exists for the crate's tests.

mod combine;
mod gemm;
pub(crate) mod permute;
mod routing;

pub use combine::{combine_items, combine_owner};
pub use gemm::{
    activation, b_row, clamped_swiglu, e2m1_to_f32, e4m3_to_f32, e8m0_to_f32, max_row_tiles,
    n_tiles, out_col, schedule, smem_offset, Fragments, GemmTile,
};
pub use permute::{
    gather_token, permute, permute_max_chunks, permute_plan, permute_row_bound, HostPermutation,
    PermutePlan,
};
pub use routing::{group_score, ranks_before, route, top2_merge, HostRouting, RowSource};
