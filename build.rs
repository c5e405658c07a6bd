//! Build script: compiles the CUDA kernels in `kernels/` with nvcc and embeds them in the library.
//!
//! Every `kernels/*.cu` file (one kernel family) becomes one fatbin holding SASS for sm_80 and sm_90a
//! plus compute_80 PTX for newer GPUs to JIT, or the architectures its entry in `FAMILY_ARCHS` lists
//! (the FP8 x FP8 family needs sm_89). `$OUT_DIR/kernels.rs` lists them for `src/gpu` to
//! `include!`; without nvcc the list is empty, the crate still builds and the GPU API reports
//! `MoeError::KernelsNotBuilt` (set `MOE_KERNELS_REQUIRE_NVCC=1` to make a missing nvcc an error).
//!
//! Why one fatbin per `.cu` file rather than one merged fatbin: each file is a separate non-rdc
//! translation unit, and cubins of the same architecture from different translation units cannot be
//! merged into one loadable module without relocatable device code (`-rdc`), which costs performance
//! (no cross-unit inlining, extra link step) and breaks loading the embedded PTX by JIT. Separate
//! fatbins also compile in parallel and rebuild only the file that changed.
//!
//! ptxas's resource usage (`-Xptxas -v`) is parsed for every function and architecture and written to
//! `$OUT_DIR/ptxas-report.txt`; any stack frame or register spill fails the build unless the function
//! is listed, with a reason, in `kernels/ptxas-allow.txt`.
//!
//! Each fatbin is rebuilt only when its inputs change (source, headers, flags, nvcc), as recorded
//! beside it in `$OUT_DIR`. Every profile and feature set has its own `$OUT_DIR`, so setting
//! `MOE_KERNELS_NVCC_CACHE` to a folder shares the fatbins between them (and between target
//! folders): entries there are named by the hash of their inputs and never overwritten.

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

const KERNEL_DIR: &str = "kernels";
const ALLOW_FILE: &str = "kernels/ptxas-allow.txt";

/// nvcc flags shared by every kernel file (the architectures, output and input paths are added per
/// file).
const NVCC_FLAGS: &[&str] = &[
    "-fatbin",
    "-O3",
    "-std=c++17",
    "-lineinfo",
    "-Werror",
    "all-warnings",
    "-Xptxas",
    "-v",
];

/// The architectures of a family without an entry in [`FAMILY_ARCHS`]: SASS for sm_80 and sm_90a,
/// PTX for compute_80 (newer GPUs JIT it).
const DEFAULT_ARCHS: &[&str] = &[
    "-gencode",
    "arch=compute_80,code=[sm_80,compute_80]",
    "-gencode",
    "arch=compute_90a,code=sm_90a",
];

/// Families that need a newer architecture than sm_80, with their own `-gencode` lists.
/// `w8a8_gemm` (FP8 e4m3 mma.sync and cvt, sm_89+): SASS for sm_89 and sm_90a, PTX for compute_89,
/// which is also what the emulated GPU of ptx-emu (sm_90) runs.
const FAMILY_ARCHS: &[(&str, &[&str])] = &[(
    "w8a8_gemm",
    &[
        "-gencode",
        "arch=compute_89,code=[sm_89,compute_89]",
        "-gencode",
        "arch=compute_90a,code=sm_90a",
    ],
)];

/// The `-gencode` flags of family `name`.
fn family_archs(name: &str) -> &'static [&'static str] {
    FAMILY_ARCHS
        .iter()
        .find(|(family, _)| *family == name)
        .map_or(DEFAULT_ARCHS, |(_, archs)| archs)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={KERNEL_DIR}");
    println!("cargo:rerun-if-env-changed=MOE_KERNELS_REQUIRE_NVCC");
    println!("cargo:rerun-if-env-changed=MOE_KERNELS_NVCC_CACHE");

    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let kernel_dir = manifest_dir.join(KERNEL_DIR);
    let inputs = KernelInputs::scan(&kernel_dir);
    for path in inputs.sources.iter().chain(&inputs.headers) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-changed={ALLOW_FILE}");

    // The index math of the kernels, compiled for the host so tests can check it without a GPU.
    compile_host_math(&manifest_dir, &inputs);

    let Some(nvcc) = find_nvcc(&manifest_dir) else {
        no_nvcc();
        write_kernels_rs(&out_dir, &[]);
        return;
    };

    let cache = env::var_os("MOE_KERNELS_NVCC_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let fatbins = compile_all(&nvcc, &inputs, &out_dir.join("kernels"), cache.as_deref());
    let reports: Vec<FunctionReport> = fatbins
        .iter()
        .flat_map(|f| parse_ptxas(&f.ptxas_log))
        .collect();
    let allow = parse_allow_list(&manifest_dir.join(ALLOW_FILE));
    let report_path = out_dir.join("ptxas-report.txt");
    write_report(&report_path, &nvcc, &reports, &allow);
    check_resources(&reports, &allow, &report_path);
    write_kernels_rs(&out_dir, &fatbins);
}

/// Compile `kernels/host/*.cpp` with the host C++ compiler (the `cc` crate) into one static library
/// linked into the crate. Each file wraps `__host__ __device__` functions of the kernel headers in
/// `extern "C"` entry points; `src/host_math/` declares them and tests compare them against the CPU
/// reference, so the code that decides which GPU thread computes what is tested on every machine.
fn compile_host_math(manifest_dir: &Path, inputs: &KernelInputs) {
    let host_dir = manifest_dir.join(KERNEL_DIR).join("host");
    let mut sources: Vec<PathBuf> = fs::read_dir(&host_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
                .collect()
        })
        .unwrap_or_default();
    sources.sort();
    println!("cargo:rerun-if-changed={}", host_dir.display());
    for path in sources.iter().chain(&inputs.headers) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .include(manifest_dir.join(KERNEL_DIR))
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .files(&sources)
        .compile("moe_host_math");
}

/// The kernel sources (compiled) and headers (hashed, since a header change must recompile).
struct KernelInputs {
    sources: Vec<PathBuf>,
    headers: Vec<PathBuf>,
}

impl KernelInputs {
    fn scan(dir: &Path) -> Self {
        let mut sources = Vec::new();
        let mut headers = Vec::new();
        let entries = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read the kernel folder {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("kernel folder entry").path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("cu") => sources.push(path),
                Some("cuh" | "h") => headers.push(path),
                _ => {}
            }
        }
        sources.sort();
        headers.sort();
        KernelInputs { sources, headers }
    }
}

/// Look for nvcc: `$NVCC`, `$CUDA_HOME/bin`, `$CUDA_PATH/bin`, `PATH`, `/usr/local/cuda/bin`, then the
/// project-local toolchain that `scripts/install-cuda-toolchain.sh` installs under `.toolchain/`.
fn find_nvcc(manifest_dir: &Path) -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed=NVCC");
    if let Some(nvcc) = env::var_os("NVCC").filter(|v| !v.is_empty()) {
        let nvcc = PathBuf::from(nvcc);
        if !nvcc.is_file() {
            panic!("NVCC is set to {}, which is not a file", nvcc.display());
        }
        return Some(nvcc);
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
        if let Some(root) = env::var_os(var).filter(|v| !v.is_empty()) {
            let nvcc = Path::new(&root).join("bin/nvcc");
            if nvcc.is_file() {
                return Some(nvcc);
            }
        }
    }
    // PATH is not a rerun trigger (it changes too often); set NVCC to pin the compiler.
    if let Some(path) = env::var_os("PATH") {
        if let Some(nvcc) = env::split_paths(&path)
            .map(|dir| dir.join("nvcc"))
            .find(|p| p.is_file())
        {
            return Some(nvcc);
        }
    }
    let system = PathBuf::from("/usr/local/cuda/bin/nvcc");
    if system.is_file() {
        return Some(system);
    }
    find_in_toolchain(&manifest_dir.join(".toolchain"))
}

/// Find `nvidia/cu13/bin/nvcc` anywhere below `dir` (the python version in the path varies).
fn find_in_toolchain(dir: &Path) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.ends_with("nvidia/cu13/bin/nvcc") && path.is_file() {
            return Some(path);
        }
        let is_real_dir = fs::symlink_metadata(&path)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if is_real_dir {
            if let Some(found) = find_in_toolchain(&path) {
                return Some(found);
            }
        }
    }
    None
}

fn no_nvcc() {
    const HINT: &str = "run scripts/install-cuda-toolchain.sh, then build with NVCC=<the path it \
                        prints> (or put nvcc on PATH / set CUDA_HOME)";
    if env::var("MOE_KERNELS_REQUIRE_NVCC").is_ok_and(|v| v == "1") {
        panic!("MOE_KERNELS_REQUIRE_NVCC=1 but nvcc was not found: {HINT}");
    }
    println!("cargo:warning=nvcc not found: building moe-kernels without its CUDA kernels; {HINT}");
}

/// One compiled kernel family.
struct Fatbin {
    /// File stem of the `.cu` file, the family's name in `FATBINS`.
    name: String,
    path: PathBuf,
    /// nvcc's stderr, holding ptxas's `-v` report.
    ptxas_log: String,
}

/// Compile every source in parallel, one nvcc process (and thread) per file.
fn compile_all(
    nvcc: &Path,
    inputs: &KernelInputs,
    dir: &Path,
    cache: Option<&Path>,
) -> Vec<Fatbin> {
    for d in std::iter::once(dir).chain(cache) {
        fs::create_dir_all(d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
    }
    let headers_hash = hash_files(&inputs.headers);
    let nvcc_id = nvcc_identity(nvcc);
    thread::scope(|scope| {
        let handles: Vec<_> = inputs
            .sources
            .iter()
            .map(|src| scope.spawn(|| compile_one(nvcc, &nvcc_id, headers_hash, src, dir, cache)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<Result<Vec<_>, String>>()
            .unwrap_or_else(|msg| panic!("{msg}"))
    })
}

/// Compile `src` to `<dir>/<stem>.fatbin`, unless the fatbin beside it was built from identical
/// inputs (same source, headers, flags and nvcc), as recorded in `<stem>.key`, or `cache` holds one.
fn compile_one(
    nvcc: &Path,
    nvcc_id: &str,
    headers_hash: u64,
    src: &Path,
    dir: &Path,
    cache: Option<&Path>,
) -> Result<Fatbin, String> {
    let name = src
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("kernel file name is not UTF-8: {}", src.display()))?
        .to_string();
    let fatbin = dir.join(format!("{name}.fatbin"));
    let log_path = dir.join(format!("{name}.ptxas.log"));
    let key_path = dir.join(format!("{name}.key"));

    let mut hasher = DefaultHasher::new();
    (
        nvcc_id,
        headers_hash,
        NVCC_FLAGS,
        family_archs(&name),
        hash_files(&[src.to_path_buf()]),
    )
        .hash(&mut hasher);
    let key = format!("{:016x}", hasher.finish());
    if fs::read_to_string(&key_path).is_ok_and(|k| k == key) && fatbin.is_file() {
        if let Ok(ptxas_log) = fs::read_to_string(&log_path) {
            return Ok(Fatbin {
                name,
                path: fatbin,
                ptxas_log,
            });
        }
    }

    let write = |path: &Path, text: &str| {
        fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let cached = cache.map(|c| {
        (
            c.join(format!("{name}-{key}.fatbin")),
            c.join(format!("{name}-{key}.ptxas.log")),
        )
    });
    // A cache entry is whole once its fatbin is there: the log is renamed into place first.
    if let Some((cached_fatbin, cached_log)) = &cached {
        if let (Ok(ptxas_log), true) = (fs::read_to_string(cached_log), cached_fatbin.is_file()) {
            fs::copy(cached_fatbin, &fatbin)
                .map_err(|e| format!("cannot copy {}: {e}", cached_fatbin.display()))?;
            write(&log_path, &ptxas_log)?;
            write(&key_path, &key)?;
            return Ok(Fatbin {
                name,
                path: fatbin,
                ptxas_log,
            });
        }
    }

    let output = Command::new(nvcc)
        .args(NVCC_FLAGS)
        .args(family_archs(&name))
        .arg("-o")
        .arg(&fatbin)
        .arg(src)
        .output()
        .map_err(|e| format!("cannot run nvcc {}: {e}", nvcc.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(format!(
            "nvcc failed on {} ({}):\n{}{}",
            src.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            stderr
        ));
    }
    write(&log_path, &stderr)?;
    write(&key_path, &key)?;
    if let Some((cached_fatbin, cached_log)) = &cached {
        // Through temporary names and renames, so that a build reading the cache at the same time
        // sees a whole entry or none.
        let publish = |from: &Path, to: &Path| {
            let tmp = to.with_extension(format!("tmp{}", std::process::id()));
            fs::copy(from, &tmp)
                .and_then(|_| fs::rename(&tmp, to))
                .map_err(|e| format!("cannot write {}: {e}", to.display()))
        };
        publish(&log_path, cached_log)?;
        publish(&fatbin, cached_fatbin)?;
    }
    Ok(Fatbin {
        name,
        path: fatbin,
        ptxas_log: stderr,
    })
}

fn hash_files(paths: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for path in paths {
        let bytes =
            fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        (path, bytes).hash(&mut hasher);
    }
    hasher.finish()
}

/// What identifies the compiler for the cache: its path, size and modification time.
fn nvcc_identity(nvcc: &Path) -> String {
    let meta = fs::metadata(nvcc).ok();
    format!(
        "{} {:?} {:?}",
        nvcc.display(),
        meta.as_ref().map(|m| m.len()),
        meta.and_then(|m| m.modified().ok())
    )
}

/// ptxas's resource usage for one function on one architecture.
#[derive(Default)]
struct FunctionReport {
    function: String,
    arch: String,
    registers: u64,
    barriers: u64,
    stack: u64,
    spill_stores: u64,
    spill_loads: u64,
    smem: u64,
}

impl FunctionReport {
    fn spills_or_stack(&self) -> bool {
        self.stack > 0 || self.spill_stores > 0 || self.spill_loads > 0
    }
}

/// Parse ptxas `-v` output, whose blocks look like:
///
/// ```text
/// ptxas info    : Compiling entry function 'moe_route_f32' for 'sm_90a'
/// ptxas info    : Function properties for moe_route_f32
///     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 60 registers, used 0 barriers, 8 bytes smem, 432 bytes cmem[0]
/// ```
///
/// Non-entry functions that are not inlined get a "Function properties" block of their own.
fn parse_ptxas(log: &str) -> Vec<FunctionReport> {
    let mut reports: Vec<FunctionReport> = Vec::new();
    let mut arch = String::new();
    let mut properties_of: Option<String> = None;
    for line in log.lines() {
        let info = line.trim_start().strip_prefix("ptxas info    : ");
        if let Some(rest) = info.and_then(|l| l.strip_prefix("Compiling entry function '")) {
            let (function, rest) = rest.split_once('\'').unwrap_or((rest, ""));
            arch = rest
                .trim_start_matches(" for '")
                .trim_end_matches('\'')
                .to_string();
            reports.push(FunctionReport {
                function: function.to_string(),
                arch: arch.clone(),
                ..FunctionReport::default()
            });
        } else if let Some(function) = info.and_then(|l| l.strip_prefix("Function properties for "))
        {
            properties_of = Some(function.trim().to_string());
        } else if line.contains("bytes stack frame") {
            let function = properties_of.take().unwrap_or_default();
            let index = match reports
                .iter()
                .position(|r| r.function == function && r.arch == arch)
            {
                Some(i) => i,
                None => {
                    reports.push(FunctionReport {
                        function,
                        arch: arch.clone(),
                        ..FunctionReport::default()
                    });
                    reports.len() - 1
                }
            };
            let r = &mut reports[index];
            r.stack = number_before(line, "bytes stack frame");
            r.spill_stores = number_before(line, "bytes spill stores");
            r.spill_loads = number_before(line, "bytes spill loads");
        } else if let Some(usage) = info.and_then(|l| l.strip_prefix("Used ")) {
            if let Some(r) = reports.last_mut() {
                r.registers = number_before(usage, "registers");
                r.barriers = number_before(usage, "barriers");
                r.smem = number_before(usage, "bytes smem");
            }
        }
    }
    reports
}

/// The integer right before `unit` in a comma-separated ptxas list ("12 bytes smem"), or 0.
fn number_before(text: &str, unit: &str) -> u64 {
    text.split(',')
        .map(str::trim)
        .find_map(|item| {
            let item = item.strip_prefix("Used ").unwrap_or(item);
            let item = item.strip_prefix("used ").unwrap_or(item);
            let (number, rest) = item.split_once(' ')?;
            (rest == unit).then(|| number.parse().ok()).flatten()
        })
        .unwrap_or(0)
}

/// Parse `kernels/ptxas-allow.txt`: `<function> <reason...>` per line, `#` starts a comment. Returns
/// the functions that may use a stack frame or spill.
fn parse_allow_list(path: &Path) -> Vec<String> {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut allowed = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match line.split_once(char::is_whitespace) {
            Some((function, reason)) if !reason.trim().is_empty() => {
                allowed.push(function.to_string())
            }
            _ => panic!(
                "{}:{}: `{line}` gives no reason; entries are `<function name> <reason...>`",
                path.display(),
                number + 1
            ),
        }
    }
    allowed
}

fn is_allowed(allow: &[String], function: &str) -> bool {
    allow.iter().any(|a| a == function)
}

fn write_report(path: &Path, nvcc: &Path, reports: &[FunctionReport], allow: &[String]) {
    let mut text = String::new();
    writeln!(text, "# ptxas resource usage per function and architecture").unwrap();
    writeln!(text, "# nvcc: {}", nvcc.display()).unwrap();
    writeln!(
        text,
        "# {:<28} {:<8} {:>9} {:>8} {:>6} {:>12} {:>11} {:>6}  note",
        "function", "arch", "registers", "barriers", "stack", "spill_stores", "spill_loads", "smem"
    )
    .unwrap();
    for r in reports {
        let note = match (r.spills_or_stack(), is_allowed(allow, &r.function)) {
            (true, true) => "allowed by kernels/ptxas-allow.txt",
            (true, false) => "NOT ALLOWED",
            (false, _) => "",
        };
        writeln!(
            text,
            "  {:<28} {:<8} {:>9} {:>8} {:>6} {:>12} {:>11} {:>6}  {note}",
            r.function,
            r.arch,
            r.registers,
            r.barriers,
            r.stack,
            r.spill_stores,
            r.spill_loads,
            r.smem
        )
        .unwrap();
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Fail on any stack frame or spill not in the allow list, and on allow-list entries that name no
/// compiled function (a stale entry would silently allow a future function of that name).
fn check_resources(reports: &[FunctionReport], allow: &[String], report_path: &Path) {
    let mut problems = String::new();
    for r in reports {
        if r.spills_or_stack() && !is_allowed(allow, &r.function) {
            writeln!(
                problems,
                "  {} on {}: {} bytes stack frame, {} bytes spill stores, {} bytes spill loads",
                r.function, r.arch, r.stack, r.spill_stores, r.spill_loads
            )
            .unwrap();
        }
    }
    for a in allow {
        if !reports.iter().any(|r| &r.function == a) {
            writeln!(
                problems,
                "  {ALLOW_FILE} lists `{a}`, which is not a compiled function"
            )
            .unwrap();
        }
    }
    if !problems.is_empty() {
        panic!(
            "ptxas resource check failed (stack frames and spills are errors unless the function is \
             listed with a reason in {ALLOW_FILE}):\n{problems}full report: {}",
            report_path.display()
        );
    }
}

/// Write `$OUT_DIR/kernels.rs`: the embedded fatbins and whether the kernels were built.
fn write_kernels_rs(out_dir: &Path, fatbins: &[Fatbin]) {
    let mut text = String::from(
        "// Generated by build.rs: the compiled kernel families embedded in the library.\n\n\
         /// Each kernel family (a `kernels/*.cu` file) and its fatbin (sm_80 and sm_90a SASS, \
         compute_80 PTX; `w8a8_gemm`: sm_89 and sm_90a SASS, compute_89 PTX).\n\
         pub(crate) static FATBINS: &[(&str, &[u8])] = &[\n",
    );
    for f in fatbins {
        writeln!(
            text,
            "    ({:?}, include_bytes!({:?})),",
            f.name,
            f.path.display().to_string()
        )
        .unwrap();
    }
    text.push_str(
        "];\n\n/// Whether nvcc was found and the kernels were compiled into this build.\n",
    );
    writeln!(
        text,
        "pub(crate) const KERNELS_BUILT: bool = {};",
        !fatbins.is_empty()
    )
    .unwrap();
    let path = out_dir.join("kernels.rs");
    fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
