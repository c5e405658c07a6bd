//! An engine's view of moe-kernels: it links next to candle-core's CUDA dependency and opens the
//! device on the engine's own stream. Built (not run) by `scripts/check-engine-builds.sh`.

use std::process::ExitCode;

fn main() -> ExitCode {
    // The engine owns the context and the stream; moe-kernels borrows them.
    let ctx = match cudarc::driver::CudaContext::new(0) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("no CUDA device: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stream = ctx.default_stream();
    match moe_kernels::gpu::Device::new(0) {
        Ok(dev) => println!(
            "moe-kernels on device 0 ({} SMs) next to candle {:?}, engine stream {:?}",
            dev.sm_count(),
            candle_core::Device::Cpu,
            stream.cu_stream()
        ),
        Err(e) => eprintln!("moe-kernels: {e}"),
    }
    ExitCode::SUCCESS
}
