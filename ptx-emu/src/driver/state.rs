//! The driver's state: the emulator, handles of contexts, streams, events, modules, functions and
//! graphs, stream capture, and the emulator clock that events read.
//!
//! Every stream operation executes when it is enqueued, on the calling thread (a legal schedule of
//! CUDA's asynchronous semantics: each stream keeps its order and everything is complete when a
//! synchronisation returns). While a stream captures, its operations are recorded into the graph
//! instead, and launching the instantiated graph replays them in order.

use super::errors::*;
use crate::emulator::{EmuError, Emulator, Function, LaunchDims, Module};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// A host callback (`CUhostFn`).
pub(crate) type HostFn = unsafe extern "C" fn(*mut std::ffi::c_void);

/// One operation of a stream, executed at once or recorded into a graph.
#[derive(Clone)]
pub(crate) enum Node {
    Kernel {
        func: Arc<Function>,
        dims: LaunchDims,
        params: Vec<u8>,
    },
    HtoD {
        dst: u64,
        src: usize,
        len: usize,
    },
    DtoH {
        dst: usize,
        src: u64,
        len: usize,
    },
    DtoD {
        dst: u64,
        src: u64,
        len: u64,
    },
    Memset {
        dst: u64,
        value: u64,
        elem: usize,
        count: u64,
    },
    Host {
        f: HostFn,
        data: usize,
    },
    EventRecord {
        event: usize,
    },
}

/// Capture state of a stream.
#[derive(Clone, Default)]
pub(crate) struct Capture {
    pub nodes: Vec<Node>,
    pub invalidated: bool,
}

#[derive(Default)]
pub(crate) struct Stream {
    pub capture: Option<Capture>,
}

#[derive(Clone, Copy, Default)]
pub(crate) struct Event {
    /// Emulator time (ms) of the last record, when recorded.
    pub time: Option<f64>,
    pub timing: bool,
}

/// Handle tables.
#[derive(Default)]
pub(crate) struct Handles {
    next: usize,
    pub streams: HashMap<usize, Stream>,
    pub events: HashMap<usize, Event>,
    pub modules: HashMap<usize, Arc<Module>>,
    pub functions: HashMap<usize, Arc<Function>>,
    /// (module handle, kernel name) to function handle: one handle, one set of attributes.
    pub function_names: HashMap<(usize, String), usize>,
    pub graphs: HashMap<usize, Vec<Node>>,
    pub execs: HashMap<usize, Vec<Node>>,
    pub contexts: HashMap<usize, ()>,
    pub host_allocs: HashMap<usize, std::alloc::Layout>,
}

impl Handles {
    /// A fresh handle value (non-null, 16-byte spaced, never reused).
    pub fn fresh(&mut self) -> usize {
        self.next += 1;
        0x1000_0000 + self.next * 16
    }
}

/// The primary context's handle.
pub(crate) const PRIMARY_CONTEXT: usize = 0x0c0f_fee0;
/// `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`.
pub(crate) const STREAM_LEGACY: usize = 1;
pub(crate) const STREAM_PER_THREAD: usize = 2;

pub(crate) struct Driver {
    pub emu: Emulator,
    pub handles: Mutex<Handles>,
    /// Emulator time in milliseconds: the host time spent executing device work so far.
    pub clock: Mutex<f64>,
}

static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();

thread_local! {
    /// The calling thread's current context.
    pub(crate) static CURRENT: RefCell<usize> = const { RefCell::new(0) };
    /// The last finding of a launch on this thread, for cuGetErrorString.
    pub(crate) static LAST_FINDING: RefCell<Option<(CuResult, &'static std::ffi::CStr)>> =
        const { RefCell::new(None) };
}

extern "C" fn write_profile_at_exit() {
    if let Some(Ok(d)) = DRIVER.get() {
        match d.emu.write_profile() {
            Ok(Some((json, md))) => eprintln!("ptx-emu: profile written to {json} and {md}"),
            Ok(None) => {}
            Err(e) => eprintln!("ptx-emu: {e}"),
        }
    }
}

extern "C" {
    fn atexit(f: extern "C" fn()) -> i32;
}

/// The driver, created on first use from the environment.
pub(crate) fn driver() -> Result<&'static Driver, CuResult> {
    let d = DRIVER.get_or_init(|| {
        let emu = Emulator::from_env()?;
        let profiling = std::env::var("PTX_EMU_PROFILE").is_ok_and(|p| !p.is_empty());
        if profiling {
            // SAFETY: registers a plain extern "C" function with the C runtime.
            unsafe { atexit(write_profile_at_exit) };
        }
        Ok(Driver {
            emu,
            handles: Mutex::new(Handles::default()),
            clock: Mutex::new(0.0),
        })
    });
    match d {
        Ok(d) => Ok(d),
        Err(e) => {
            eprintln!("ptx-emu: {e}");
            Err(INVALID_VALUE)
        }
    }
}

impl Driver {
    pub fn handles(&self) -> std::sync::MutexGuard<'_, Handles> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `stream` is a valid stream handle (0 and the legacy/per-thread handles included).
    pub fn stream_exists(&self, stream: usize) -> bool {
        stream == 0
            || stream == STREAM_LEGACY
            || stream == STREAM_PER_THREAD
            || self.handles().streams.contains_key(&stream)
    }

    /// Enqueue `node` on `stream`: record it when the stream captures, else run it now.
    pub fn enqueue(&self, stream: usize, node: Node) -> CuResult {
        {
            let mut h = self.handles();
            if stream > STREAM_PER_THREAD {
                match h.streams.get_mut(&stream) {
                    None => return INVALID_HANDLE,
                    Some(Stream {
                        capture: Some(c), ..
                    }) => {
                        if let Node::Kernel { func, dims, params } = &node {
                            if let Err(e) = self.emu.validate(func, dims, params.len()) {
                                return report(&e);
                            }
                        }
                        c.nodes.push(node);
                        return SUCCESS;
                    }
                    Some(_) => {}
                }
            }
        }
        self.run(&node)
    }

    /// Execute one operation now, advancing the emulator clock by the time it takes.
    pub fn run(&self, node: &Node) -> CuResult {
        let t = Instant::now();
        let r = match node {
            Node::Kernel { func, dims, params } => match self.emu.launch(func, dims, params) {
                Ok(_) => SUCCESS,
                Err(e) => report(&e),
            },
            Node::HtoD { dst, src, len } => {
                // SAFETY: the caller of the copy guaranteed `len` readable bytes at `src`.
                let bytes = unsafe { std::slice::from_raw_parts(*src as *const u8, *len) };
                copy_result(self.emu.memory().write(*dst, bytes))
            }
            Node::DtoH { dst, src, len } => {
                // SAFETY: the caller guaranteed `len` writable bytes at `dst`.
                let bytes = unsafe { std::slice::from_raw_parts_mut(*dst as *mut u8, *len) };
                copy_result(self.emu.memory().read(*src, bytes))
            }
            Node::DtoD { dst, src, len } => copy_result(self.emu.memory().copy(*dst, *src, *len)),
            Node::Memset {
                dst,
                value,
                elem,
                count,
            } => copy_result(self.emu.memory().fill(*dst, *value, *elem, *count)),
            Node::Host { f, data } => {
                // SAFETY: the callback and its data come from the caller.
                unsafe { f(*data as *mut std::ffi::c_void) };
                SUCCESS
            }
            Node::EventRecord { event } => {
                let now = *self.clock.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(e) = self.handles().events.get_mut(event) {
                    e.time = Some(now);
                }
                SUCCESS
            }
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        *self.clock.lock().unwrap_or_else(|e| e.into_inner()) += ms;
        r
    }
}

fn copy_result(r: Result<(), String>) -> CuResult {
    match r {
        Ok(()) => SUCCESS,
        Err(e) => {
            eprintln!("ptx-emu: copy failed: {e}");
            INVALID_VALUE
        }
    }
}

/// Print a failed launch and remember its text for cuGetErrorString; returns its code.
pub(crate) fn report(e: &EmuError) -> CuResult {
    eprintln!("ptx-emu: {}", e.message);
    if e.finding.is_some() {
        let standard = describe(e.code)
            .map(|(_, d)| d.trim_end_matches('\0'))
            .unwrap_or("error");
        let text = format!("{standard} [ptx-emu {}]", e.message);
        let c = CString::new(text.replace('\0', " ")).unwrap_or_default();
        // Leaked on purpose: cuGetErrorString hands out 'static strings; findings are rare.
        let leaked: &'static std::ffi::CStr = Box::leak(c.into_boxed_c_str());
        LAST_FINDING.with(|f| *f.borrow_mut() = Some((e.code, leaked)));
    }
    e.code
}
