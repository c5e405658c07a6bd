//! `moe`: run one MoE layer of a Hugging Face checkpoint end to end.
//!
//! ```text
//! moe run   --model DIR --layer N --input IN.safetensors --output OUT.safetensors [--device auto|cpu|cuda] [--dtype f32|bf16|f16]
//! moe info  --model DIR
//! moe check --model DIR --layer N [--tokens T] [--seed S] [--device auto|cpu|cuda]
//! moe bench [--preset P,...] [--tokens T,...] [--out DIR] [--device auto|cpu|cuda]
//! ```
//!
//! Every failure prints one line, `error: ...`, on stderr and exits non-zero (2 for a bad command line,
//! 1 otherwise); `run` never leaves a partial output file behind.
//!
//! Each subcommand is a module of `src/bin/moe/` with an `Args` struct (clap) and a `main(Args)`; a new
//! subcommand is one more module and one more variant of [`Command`].

mod bench;
mod check;
mod common;
mod info;
mod run;
mod tensors;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Large buffers (the weights above all) on cache-line boundaries, as the CPU backend's AMX GEMMs
/// read them fastest.
#[global_allocator]
static ALLOC: moe_kernels::cpu::LineAligned = moe_kernels::cpu::LineAligned;

/// Run Mixture-of-Experts layers of Hugging Face checkpoints on the GPU (CUDA) or the CPU reference
/// path.
#[derive(Parser, Debug)]
#[command(name = "moe", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Run one layer's MoE block on hidden states from a safetensors file.
    ///
    /// Reads `hidden_states` [T, H] (f32, bf16 or f16) from IN and writes OUT with `hidden_states` [T, H]
    /// (f32), `topk_ids` [T, k] (i32) and `topk_weights` [T, k] (f32).
    Run(run::Args),
    /// Print the parsed MoE settings and which layers are MoE layers.
    Info(info::Args),
    /// Compare a layer on random input against the CPU f32 reference.
    ///
    /// Runs the layer on the GPU and on the CPU reference and prints the relative error and the routing
    /// agreement (without a GPU: CPU bf16 against CPU f32).
    Check(check::Args),
    /// Benchmark every stage and the whole layer on real model shapes, against PyTorch peers and
    /// measured hardware ceilings.
    ///
    /// Writes results.json, results.md and SVG plots to --out.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error (a bug in moe, please report it): {}{at}",
            common::one_line(&msg)
        );
    }));

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return common::clap_error(e),
    };
    let result = std::panic::catch_unwind(|| match cli.command {
        Command::Run(a) => run::main(a),
        Command::Info(a) => info::main(a),
        Command::Check(a) => check::main(a),
        Command::Bench(a) => bench::main(a),
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {}", common::one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
        // The panic hook has printed the message.
        Err(_) => ExitCode::FAILURE,
    }
}
