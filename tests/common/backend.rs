//! Which GPU the GPU tests run on: a real one when its driver is installed, otherwise the emulated
//! GPU of `ptx-emu` (the workspace's drop-in `libcuda.so`, built by `cargo test` at the workspace
//! root). `MOE_KERNELS_EMULATOR=1` forces the emulator, `=0` forbids it.
//!
//! The emulator is chosen without touching the product code: its library is loaded by path before
//! cudarc's first `dlopen("libcuda.so")`, and since its soname is `libcuda.so`, the dynamic loader
//! hands cudarc the library that is already loaded. Child processes (`moe run --device cuda`) get
//! the same library through `LD_LIBRARY_PATH` and a folder holding a `libcuda.so` link to it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The GPU behind the tests of this process.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The system's CUDA driver.
    Real,
    /// The emulator, loaded from this library.
    Emulated(PathBuf),
    /// Neither: why.
    Unavailable(String),
}

/// Decide (once per process) and, for the emulator, load it.
pub fn backend() -> &'static Backend {
    static BACKEND: OnceLock<Backend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let mode = std::env::var("MOE_KERNELS_EMULATOR").unwrap_or_default();
        if mode == "0" {
            return Backend::Real;
        }
        if mode != "1" && moe_kernels::gpu::driver_library_present() {
            return Backend::Real;
        }
        match emulator_library() {
            Ok(path) => {
                // SAFETY: the emulator's initialisers are Rust statics; the library stays loaded
                // for the life of the process (leaked on purpose) so cudarc finds it by soname.
                match unsafe { libloading::Library::new(&path) } {
                    Ok(lib) => {
                        std::mem::forget(lib);
                        Backend::Emulated(path)
                    }
                    Err(e) => Backend::Unavailable(format!("cannot load {}: {e}", path.display())),
                }
            }
            Err(why) => Backend::Unavailable(why),
        }
    })
}

/// Whether the GPU tests of this process run on the emulator (scaled-down cases use it).
pub fn emulated() -> bool {
    matches!(backend(), Backend::Emulated(_))
}

/// A folder holding `libcuda.so` (a link to the emulator), for `LD_LIBRARY_PATH` of child
/// processes; None when the tests do not run on the emulator.
pub fn emulator_lib_dir() -> Option<PathBuf> {
    let Backend::Emulated(lib) = backend() else {
        return None;
    };
    let dir = lib.parent()?.join("emulated-gpu");
    std::fs::create_dir_all(&dir).ok()?;
    for name in ["libcuda.so", "libcuda.so.1"] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib, &link).ok()?;
    }
    Some(dir)
}

/// The emulator library next to the test executable (`cargo test` at the workspace root builds
/// it into `target/<profile>/deps`), else built once into `target/ptx-emu` with cargo.
fn emulator_library() -> Result<PathBuf, String> {
    const NAME: &str = "libptx_emu.so";
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let deps = exe.parent().ok_or("test executable has no folder")?;
    for dir in [deps, deps.parent().unwrap_or(deps)] {
        let p = dir.join(NAME);
        if p.is_file() {
            return Ok(p);
        }
    }
    // Not built by this cargo invocation (e.g. `cargo test -p moe-kernels`): build it apart, in
    // its own target folder so that no cargo lock is shared with the running build.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target").join("ptx-emu");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "ptx-emu", "--target-dir"])
        .arg(&target)
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run cargo to build the emulator: {e}"))?;
    let p = target.join("release").join(NAME);
    if status.success() && p.is_file() {
        Ok(p)
    } else {
        Err("the emulator (ptx-emu) is not built and `cargo build -p ptx-emu` failed".into())
    }
}

/// `cmd` set to run on the tests' GPU: the system driver, or the emulated GPU through
/// `LD_LIBRARY_PATH`. `None` when there is no GPU of either kind.
pub fn on_gpu(mut cmd: std::process::Command) -> Option<std::process::Command> {
    match backend() {
        Backend::Real => {}
        Backend::Emulated(_) => {
            let dir = emulator_lib_dir()?;
            let old = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
            cmd.env("LD_LIBRARY_PATH", format!("{}:{old}", dir.display()));
        }
        Backend::Unavailable(_) => return None,
    }
    Some(cmd)
}
