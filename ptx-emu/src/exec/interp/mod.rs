//! The interpreter: runs one launch, block by block (in a seeded shuffled order), each block warp by
//! warp. Within a warp every lane has its own PC; the lanes at the lowest PC step together. Warp
//! collectives gather every participant before any result is written; `bar.sync` waits for every
//! live thread of the block. The checks (memcheck, racecheck, initcheck, synccheck) run on every
//! access and collective, and the counters of every instruction are updated as it executes.

use super::finding::{codes, Check, Finding};
use super::kernel::{Kernel, SymbolValue, SHARED_RESERVED};
use super::memory::{
    decode_generic, Allocation, GlobalMemory, Window, CONST_WINDOW, LOCAL_WINDOW, PARAM_WINDOW,
    SHARED_WINDOW,
};
use super::stats::{self, InstrStats};
use crate::ptx::ir::*;
use std::sync::Arc;

/// Which checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checks {
    /// Out-of-bounds and misaligned accesses.
    pub memcheck: bool,
    /// Shared-memory hazards and early reads of `cp.async` destinations.
    pub racecheck: bool,
    /// Reads of never-written global and shared bytes.
    pub initcheck: bool,
    /// Partial barriers and collectives, invalid masks, deadlocks.
    pub synccheck: bool,
}

impl Checks {
    /// Every check on.
    pub const ALL: Checks = Checks {
        memcheck: true,
        racecheck: true,
        initcheck: true,
        synccheck: true,
    };
}

/// Launch-independent execution options.
#[derive(Clone, Copy, Debug)]
pub struct ExecOptions {
    /// The checks that run.
    pub checks: Checks,
    /// Seed of the block order.
    pub seed: u64,
    /// Warp instructions one launch may execute before it is stopped (a hang guard).
    pub max_instructions: u64,
    /// Streaming multiprocessors of the emulated device (`%nsmid`).
    pub sm_count: u32,
    /// Whether to count per-instruction statistics.
    pub count: bool,
}

/// One launch's shape and arguments.
pub struct LaunchShape<'a> {
    /// Grid dimensions.
    pub grid: [u32; 3],
    /// Block dimensions.
    pub block: [u32; 3],
    /// Dynamic shared memory bytes.
    pub dynamic_smem: u32,
    /// The packed parameter buffer.
    pub params: &'a [u8],
}

/// What a launch did.
#[derive(Clone, Copy, Debug, Default)]
pub struct LaunchSummary {
    /// Warp instructions executed.
    pub warp_instructions: u64,
    /// Thread instructions executed.
    pub thread_instructions: u64,
    /// `mma` warp instructions executed.
    pub mma: u64,
    /// Global-memory warp requests (counted when counters are on).
    pub global_requests: u64,
    /// 32-byte sectors they touched.
    pub global_sectors: u64,
    /// Shared-memory wavefronts of all requests (counted when counters are on).
    pub shared_wavefronts: u64,
    /// Wavefronts without bank conflicts.
    pub shared_ideal: u64,
}

const FULL: u32 = u32::MAX;

/// Iterate over the set bits of a lane mask.
fn lanes(mask: u32) -> impl Iterator<Item = usize> {
    let mut m = mask;
    std::iter::from_fn(move || {
        if m == 0 {
            None
        } else {
            let l = m.trailing_zeros();
            m &= m - 1;
            Some(l as usize)
        }
    })
}

/// A `cp.async` copy issued but not yet complete.
#[derive(Clone, Copy)]
struct AsyncCopy {
    dst: u32,
    len: u8,
    data: [u8; 16],
}

/// Per-lane `cp.async` state: committed groups (oldest first) and the open group.
#[derive(Clone, Default)]
struct AsyncLane {
    committed: std::collections::VecDeque<Vec<AsyncCopy>>,
    open: Vec<AsyncCopy>,
}

/// A warp collective waiting for its members.
#[derive(Clone, Copy)]
struct PendingCollective {
    pc: u32,
    mask: u32,
    arrived: u32,
    what: &'static str,
}

struct Warp {
    index: u32,
    exists: u32,
    exited: u32,
    /// Lanes waiting at a barrier or collective.
    waiting: u32,
    /// Lanes waiting at `bar.sync`.
    at_barrier: u32,
    /// When set, every runnable lane is at this PC (`pc` is then stale for them).
    upc: Option<u32>,
    pc: [u32; 32],
    regs: Vec<u64>,
    carry: u32,
    epoch: u32,
    collectives: Vec<PendingCollective>,
    asyncs: Vec<AsyncLane>,
}

impl Warp {
    fn runnable(&self) -> u32 {
        self.exists & !self.exited & !self.waiting
    }

    /// Write the implicit uniform PC into the lanes' own PCs.
    fn materialize(&mut self) {
        if let Some(p) = self.upc.take() {
            for l in lanes(self.runnable()) {
                self.pc[l] = p;
            }
        }
    }

    /// The lowest PC among runnable lanes and the lanes at it.
    fn next_group(&mut self) -> Option<(u32, u32)> {
        let runnable = self.runnable();
        if runnable == 0 {
            return None;
        }
        if let Some(p) = self.upc {
            return Some((p, runnable));
        }
        let mut best = u32::MAX;
        let mut group = 0u32;
        for l in lanes(runnable) {
            let p = self.pc[l];
            if p < best {
                best = p;
                group = 1 << l;
            } else if p == best {
                group |= 1 << l;
            }
        }
        if group == runnable {
            self.upc = Some(best);
        }
        Some((best, group))
    }

    /// Move the lanes of `group` (at `pc`) to the next instruction.
    fn advance(&mut self, group: u32, pc: u32) {
        match self.upc {
            Some(p) => {
                debug_assert_eq!(p, pc);
                self.upc = Some(pc + 1);
            }
            None => {
                for l in lanes(group) {
                    self.pc[l] = pc + 1;
                }
            }
        }
    }

    #[inline]
    fn reg(&self, r: Reg, lane: usize) -> u64 {
        self.regs[r as usize * 32 + lane]
    }

    #[inline]
    fn set_reg(&mut self, r: Reg, lane: usize, v: u64) {
        self.regs[r as usize * 32 + lane] = v;
    }
}

/// Racecheck and initcheck shadow of one shared-memory byte.
#[derive(Clone, Copy, Default)]
struct Shadow {
    /// Block generation in which the byte was last written (initcheck).
    init: u32,
    /// Last writer: thread + 1 (0: none), barrier epoch, warp epoch.
    w_tid: u32,
    w_ep: u32,
    w_wep: u32,
    /// Last reader and another distinct reader of the same epoch.
    r_tid: u32,
    r_ep: u32,
    r_wep: u32,
    r2_tid: u32,
    /// Thread + 1 whose `cp.async` to this byte is still pending (0: none), and the block
    /// generation it was issued in.
    pending: u32,
    pending_gen: u32,
    /// PTX line of the last write and read (for messages).
    w_line: u32,
    r_line: u32,
}

/// Launch-wide state.
struct Exec<'a> {
    k: &'a Kernel,
    opts: &'a ExecOptions,
    memory: &'a GlobalMemory,
    allocs: Vec<Arc<Allocation>>,
    last_alloc: usize,
    grid: [u32; 3],
    block: [u32; 3],
    dynamic_smem: u32,
    smem_end: u32,
    params: &'a [u8],
    stats: &'a mut Vec<InstrStats>,
    summary: LaunchSummary,
    /// Barrier epochs are unique across the launch's blocks, so a shadow entry from an earlier
    /// block never matches.
    epoch: u32,
    generation: u32,
    ctaid: [u32; 3],
    block_linear: u64,
    shared: Vec<u8>,
    shadow: Vec<Shadow>,
    local: Vec<u8>,
    sectors: Vec<u64>,
    global_ranges: Vec<(u64, u32)>,
    shared_accesses: Vec<(u32, u64, u32)>,
    clock: u64,
}

/// Buffers a launch needs, kept per host thread and reused by its next launch (allocating and
/// zeroing them per launch dominated small launches). Nothing needs clearing: shared-memory shadow
/// entries are tagged with block generations and barrier epochs, which only grow on a thread, so an
/// entry left by an earlier launch never matches; registers start undefined, as on a GPU.
#[derive(Default)]
struct Scratch {
    shared: Vec<u8>,
    shadow: Vec<Shadow>,
    local: Vec<u8>,
    regs: Vec<Vec<u64>>,
    generation: u32,
    epoch: u32,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Grow `v` to at least `n` elements.
fn at_least<T: Clone + Default>(mut v: Vec<T>, n: usize) -> Vec<T> {
    if v.len() < n {
        v.resize(n, T::default());
    }
    v
}

/// Run one launch. Counters are added to `stats` (one entry per instruction of the kernel).
pub(crate) fn run(
    k: &Kernel,
    shape: &LaunchShape,
    memory: &GlobalMemory,
    opts: &ExecOptions,
    stats: &mut Vec<InstrStats>,
) -> Result<LaunchSummary, Box<Finding>> {
    if stats.len() != k.instrs.len() {
        stats.resize(k.instrs.len(), InstrStats::default());
    }
    let scratch = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let nthreads = shape.block[0] * shape.block[1] * shape.block[2];
    let nwarps = nthreads.div_ceil(32) as usize;
    let smem_end = k.dynamic_offset + shape.dynamic_smem;
    let mut regs = scratch.regs;
    regs.resize_with(regs.len().max(nwarps), Vec::new);
    let mut ex = Exec {
        k,
        opts,
        memory,
        allocs: memory.snapshot(),
        last_alloc: 0,
        grid: shape.grid,
        block: shape.block,
        dynamic_smem: shape.dynamic_smem,
        smem_end,
        params: shape.params,
        stats,
        summary: LaunchSummary::default(),
        epoch: scratch.epoch.wrapping_add(1),
        generation: scratch.generation,
        ctaid: [0; 3],
        block_linear: 0,
        shared: at_least(scratch.shared, smem_end as usize),
        shadow: at_least(scratch.shadow, smem_end as usize),
        local: at_least(scratch.local, (k.local_bytes as usize) * nthreads as usize),
        sectors: Vec::with_capacity(64),
        global_ranges: Vec::with_capacity(32),
        shared_accesses: Vec::with_capacity(32),
        clock: 0,
    };
    let mut warps: Vec<Warp> = (0..nwarps as u32)
        .zip(regs.drain(..nwarps))
        .map(|(w, r)| {
            let first = w * 32;
            let count = (nthreads - first).min(32);
            Warp {
                index: w,
                exists: if count == 32 {
                    FULL
                } else {
                    (1u32 << count) - 1
                },
                exited: 0,
                waiting: 0,
                at_barrier: 0,
                upc: Some(0),
                pc: [0; 32],
                regs: at_least(r, k.nregs.max(1) * 32),
                carry: 0,
                epoch: 0,
                collectives: Vec::new(),
                asyncs: vec![AsyncLane::default(); 32],
            }
        })
        .collect();
    let result = run_blocks(&mut ex, &mut warps, shape, opts);
    // Hand the buffers back for the next launch on this thread.
    regs.extend(warps.into_iter().map(|w| w.regs));
    let summary = ex.summary;
    SCRATCH.with(|s| {
        *s.borrow_mut() = Scratch {
            shared: ex.shared,
            shadow: ex.shadow,
            local: ex.local,
            regs,
            generation: ex.generation,
            epoch: ex.epoch,
        }
    });
    result.map(|()| summary)
}

fn run_blocks(
    ex: &mut Exec,
    warps: &mut [Warp],
    shape: &LaunchShape,
    opts: &ExecOptions,
) -> Result<(), Box<Finding>> {
    let total_blocks = shape.grid[0] as u64 * shape.grid[1] as u64 * shape.grid[2] as u64;
    for linear in BlockOrder::new(total_blocks, opts.seed) {
        let gx = shape.grid[0] as u64;
        let gy = shape.grid[1] as u64;
        ex.ctaid = [
            (linear % gx) as u32,
            ((linear / gx) % gy) as u32,
            (linear / (gx * gy)) as u32,
        ];
        ex.block_linear = linear;
        ex.generation += 1;
        ex.epoch += 1;
        for w in warps.iter_mut() {
            w.exited = 0;
            w.waiting = 0;
            w.at_barrier = 0;
            w.upc = Some(0);
            w.carry = 0;
            w.collectives.clear();
            for a in w.asyncs.iter_mut() {
                a.committed.clear();
                a.open.clear();
            }
        }
        ex.run_block(warps)?;
    }
    Ok(())
}

/// A seeded permutation of the block indices 0..n, generated lazily (an affine map modulo a power
/// of two, with rejection), so that huge grids need no index array.
struct BlockOrder {
    n: u64,
    size: u64,
    a: u64,
    c: u64,
    i: u64,
    emitted: u64,
}

impl BlockOrder {
    fn new(n: u64, seed: u64) -> Self {
        let size = n.next_power_of_two().max(1);
        let mut s = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        // x -> a x + c mod 2^k is a bijection when a is odd.
        let a = (next() | 1) & (size - 1).max(1) | 1;
        let c = next() & (size - 1);
        BlockOrder {
            n,
            size,
            a,
            c,
            i: 0,
            emitted: 0,
        }
    }
}

impl Iterator for BlockOrder {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        while self.emitted < self.n {
            let x = self.i;
            self.i += 1;
            let v = (self.a.wrapping_mul(x).wrapping_add(self.c)) & (self.size - 1);
            if v < self.n {
                self.emitted += 1;
                return Some(v);
            }
        }
        None
    }
}

/// What the access functions need to know about the accessing thread.
#[derive(Clone, Copy)]
struct Who {
    pc: u32,
    warp: u32,
    lane: u32,
    wep: u32,
}

impl Who {
    fn tid(&self) -> u32 {
        self.warp * 32 + self.lane
    }
}

/// Where a resolved access goes.
enum Target {
    Global(usize, u64),
    Shared(u64),
    Local(u64),
    Param(u64),
    Const(u64),
}

impl<'a> Exec<'a> {
    fn thread_index(&self, tid: u32) -> [u32; 3] {
        let (bx, by) = (self.block[0], self.block[1]);
        [tid % bx, (tid / bx) % by, tid / (bx * by)]
    }

    #[allow(clippy::too_many_arguments)]
    fn finding(
        &self,
        check: Check,
        what: impl Into<String>,
        pc: u32,
        tid: u32,
        address: Option<u64>,
        message: impl Into<String>,
        error: u32,
    ) -> Box<Finding> {
        let instr = &self.k.instrs[pc.min(self.k.instrs.len().saturating_sub(1) as u32) as usize];
        Box::new(Finding {
            check,
            what: what.into(),
            kernel: self.k.name.clone(),
            ptx_line: instr.line,
            source: self.k.source_of(instr),
            block: self.ctaid,
            thread: self.thread_index(tid),
            address,
            message: message.into(),
            error,
        })
    }

    fn describe_pcs(&self, warps: &[Warp], filter: impl Fn(&Warp, usize) -> bool) -> String {
        let mut groups: Vec<(u32, Vec<u32>)> = Vec::new();
        for w in warps {
            for l in lanes(w.exists & !w.exited) {
                if !filter(w, l) {
                    continue;
                }
                let pc = w
                    .upc
                    .filter(|_| w.runnable() & (1 << l) != 0)
                    .unwrap_or(w.pc[l]);
                let tid = w.index * 32 + l as u32;
                match groups.iter_mut().find(|g| g.0 == pc) {
                    Some(g) => g.1.push(tid),
                    None => groups.push((pc, vec![tid])),
                }
            }
        }
        let mut parts = Vec::new();
        for (pc, tids) in groups.iter().take(8) {
            let line = self.k.instrs.get(*pc as usize).map(|i| i.line).unwrap_or(0);
            parts.push(format!(
                "threads {} at PTX line {line}",
                compress_ranges(tids)
            ));
        }
        parts.join("; ")
    }

    fn run_block(&mut self, warps: &mut [Warp]) -> Result<(), Box<Finding>> {
        let quantum = 1u64 << 16;
        loop {
            let mut progressed = false;
            for w in warps.iter_mut() {
                let mut steps = 0u64;
                while w.runnable() != 0 && steps < quantum {
                    self.step(w)?;
                    steps += 1;
                }
                if steps > 0 {
                    progressed = true;
                }
            }
            if warps.iter().all(|w| w.exists & !w.exited == 0) {
                break;
            }
            if self.try_release_barrier(warps)? {
                progressed = true;
            }
            if !progressed {
                return Err(self.deadlock(warps));
            }
        }
        // Threads that exit with copies in flight: the copies still land.
        for w in warps.iter_mut() {
            for l in 0..32 {
                let who = Who {
                    pc: 0,
                    warp: w.index,
                    lane: l as u32,
                    wep: w.epoch,
                };
                self.complete_async(&mut w.asyncs[l], 0, who);
            }
        }
        Ok(())
    }

    fn deadlock(&self, warps: &[Warp]) -> Box<Finding> {
        // A warp collective some of whose members can never arrive.
        for w in warps {
            if let Some(c) = w.collectives.first() {
                let missing = c.mask & !c.arrived;
                let exited = missing & w.exited;
                let lane = lanes(c.arrived).next().unwrap_or(0) as u32;
                let others = if exited == missing {
                    format!("lanes {} exited", mask_list(missing))
                } else {
                    format!(
                        "lanes {} are elsewhere: {}",
                        mask_list(missing),
                        self.describe_pcs(std::slice::from_ref(w), |_, l| missing & (1 << l) != 0)
                    )
                };
                return self.finding(
                    Check::Synccheck,
                    format!("partial {}", c.what),
                    c.pc,
                    w.index * 32 + lane,
                    None,
                    format!(
                        "lanes {} reached it with member mask {:#010x}, but {others}",
                        mask_list(c.arrived),
                        c.mask
                    ),
                    codes::ILLEGAL_INSTRUCTION,
                );
            }
        }
        let waiting = self.describe_pcs(warps, |w, l| w.waiting & (1 << l) != 0);
        let pc = warps
            .iter()
            .find_map(|w| lanes(w.waiting).next().map(|l| w.pc[l]))
            .unwrap_or(0);
        let tid = warps
            .iter()
            .find_map(|w| lanes(w.waiting).next().map(|l| w.index * 32 + l as u32))
            .unwrap_or(0);
        self.finding(
            Check::Synccheck,
            "deadlock at a barrier or warp collective",
            pc,
            tid,
            None,
            format!("no thread can make progress: {waiting}; the other threads have exited"),
            codes::LAUNCH_TIMEOUT,
        )
    }

    /// Release `bar.sync` when every live thread of the block waits at it.
    fn try_release_barrier(&mut self, warps: &mut [Warp]) -> Result<bool, Box<Finding>> {
        let live: u32 = warps
            .iter()
            .map(|w| (w.exists & !w.exited).count_ones())
            .sum();
        let arrived: u32 = warps.iter().map(|w| w.at_barrier.count_ones()).sum();
        if live == 0 || arrived != live {
            return Ok(false);
        }
        // Every thread must be at the same barrier instruction.
        let mut pcs = warps
            .iter()
            .flat_map(|w| lanes(w.at_barrier).map(move |l| w.pc[l]));
        let first = pcs.next().unwrap_or(0);
        if self.opts.checks.synccheck && pcs.any(|p| p != first) {
            let detail = self.describe_pcs(warps, |w, l| w.at_barrier & (1 << l) != 0);
            return Err(self.finding(
                Check::Synccheck,
                "divergent barrier",
                first,
                0,
                None,
                format!("the threads of the block wait at different barriers: {detail}"),
                codes::ILLEGAL_INSTRUCTION,
            ));
        }
        for w in warps.iter_mut() {
            for l in lanes(w.at_barrier) {
                w.pc[l] += 1;
            }
            w.waiting &= !w.at_barrier;
            w.at_barrier = 0;
            w.upc = None;
            w.epoch = w.epoch.wrapping_add(1);
        }
        self.epoch += 1;
        Ok(true)
    }

    // -------------------------------------------------------------------------------------------
    // Operands
    // -------------------------------------------------------------------------------------------

    #[inline(never)]
    fn special(&self, s: Special, w: &Warp, lane: usize) -> u64 {
        let tid = w.index * 32 + lane as u32;
        let t = self.thread_index(tid);
        let l = lane as u32;
        (match s {
            Special::Tid(d) => t[d as usize],
            Special::Ntid(d) => self.block[d as usize],
            Special::Ctaid(d) => self.ctaid[d as usize],
            Special::Nctaid(d) => self.grid[d as usize],
            Special::LaneId => l,
            Special::WarpId => w.index,
            Special::NWarpId => 64,
            Special::SmId => (self.block_linear % self.opts.sm_count as u64) as u32,
            Special::NSmId => self.opts.sm_count,
            Special::GridId => 0,
            Special::LaneMaskEq => 1 << l,
            Special::LaneMaskLt => (1u32 << l) - 1,
            Special::LaneMaskLe => ((1u64 << (l + 1)) - 1) as u32,
            Special::LaneMaskGt => !(((1u64 << (l + 1)) - 1) as u32),
            Special::LaneMaskGe => !((1u32 << l) - 1),
            Special::Clock => self.clock as u32,
            Special::Clock64 => return self.clock,
            Special::GlobalTimer => return self.clock.wrapping_mul(1000),
            Special::DynamicSmemSize => self.dynamic_smem,
            Special::TotalSmemSize => self.smem_end - SHARED_RESERVED,
        }) as u64
    }

    #[inline(always)]
    fn get(&self, op: &Operand, w: &Warp, lane: usize) -> u64 {
        match op {
            Operand::Reg(r) => w.reg(*r, lane),
            Operand::NotReg(r) => (w.reg(*r, lane) & 1) ^ 1,
            Operand::Imm(v) => *v,
            Operand::Special(s) => self.special(*s, w, lane),
            Operand::Symbol(i) => self.k.symbols[*i as usize].value(),
            Operand::Vector(_) | Operand::Sink => 0,
        }
    }

    #[inline]
    fn set(w: &mut Warp, op: &Operand, lane: usize, v: u64) {
        if let Operand::Reg(r) = op {
            w.set_reg(*r, lane, v);
        }
    }

    fn guard_mask(&self, guard: Option<(Reg, bool)>, w: &Warp, group: u32) -> u32 {
        match guard {
            None => group,
            Some((r, neg)) => {
                let mut m = 0;
                for l in lanes(group) {
                    if ((w.reg(r, l) & 1) != 0) != neg {
                        m |= 1 << l;
                    }
                }
                m
            }
        }
    }

    fn address(&self, a: &Address, w: &Warp, lane: usize) -> u64 {
        let base = match a.base {
            AddrBase::Reg(r) => w.reg(r, lane),
            AddrBase::Symbol(i) => self.k.symbols[i as usize].value(),
            AddrBase::Zero => 0,
        };
        base.wrapping_add(a.offset as u64)
    }

    /// For a symbol-based address in a generic instruction, the generic address.
    fn generic_address(&self, a: &Address, w: &Warp, lane: usize) -> u64 {
        let raw = self.address(a, w, lane);
        match a.base {
            AddrBase::Symbol(i) => match self.k.symbols[i as usize] {
                SymbolValue::Shared(_) => SHARED_WINDOW.wrapping_add(raw),
                SymbolValue::Local(_) => LOCAL_WINDOW.wrapping_add(raw),
                SymbolValue::Param(_) => PARAM_WINDOW.wrapping_add(raw),
                SymbolValue::Const(_) => CONST_WINDOW.wrapping_add(raw),
                _ => raw,
            },
            _ => raw,
        }
    }

    // -------------------------------------------------------------------------------------------
    // Memory
    // -------------------------------------------------------------------------------------------

    fn find_alloc(&mut self, addr: u64, len: u64) -> Option<usize> {
        if let Some(a) = self.allocs.get(self.last_alloc) {
            if a.contains(addr, len) {
                return Some(self.last_alloc);
            }
        }
        let i = self.allocs.partition_point(|a| a.base <= addr);
        if i == 0 {
            return None;
        }
        if self.allocs[i - 1].contains(addr, len) {
            self.last_alloc = i - 1;
            Some(i - 1)
        } else {
            None
        }
    }

    /// Resolve an access of `len` bytes in `space` at `addr` (checks bounds and alignment).
    #[allow(clippy::too_many_arguments)]
    fn resolve(
        &mut self,
        space: Space,
        addr: u64,
        len: u32,
        align: u32,
        write: bool,
        who: Who,
        what: &str,
    ) -> Result<Target, Box<Finding>> {
        let (space, off) = match space {
            Space::Generic => match decode_generic(addr) {
                Window::Global(a) => (Space::Global, a),
                Window::Shared(o) => (Space::Shared, o),
                Window::Local(o) => (Space::Local, o),
                Window::Param(o) => (Space::Param, o),
                Window::Const(o) => (Space::Const, o),
            },
            s => (s, addr),
        };
        let rw = if write { "store" } else { "load" };
        if self.opts.checks.memcheck && align > 1 && off % align as u64 != 0 {
            return Err(self.finding(
                Check::Memcheck,
                format!("misaligned {} {what}", space.name()),
                who.pc,
                who.tid(),
                Some(addr),
                format!("a {len}-byte {rw} needs {align}-byte alignment"),
                codes::MISALIGNED_ADDRESS,
            ));
        }
        let oob = |ex: &Self, detail: String| {
            ex.finding(
                Check::Memcheck,
                format!("out-of-bounds {} {what}", space.name()),
                who.pc,
                who.tid(),
                Some(addr),
                format!("{len}-byte {rw}: {detail}"),
                codes::ILLEGAL_ADDRESS,
            )
        };
        match space {
            Space::Global => match self.find_alloc(off, len as u64) {
                Some(i) => Ok(Target::Global(i, off - self.allocs[i].base)),
                None => Err(oob(self, self.memory.explain(off, len as u64))),
            },
            Space::Shared => {
                let end = off.checked_add(len as u64);
                if off < SHARED_RESERVED as u64 || end.is_none_or(|e| e > self.smem_end as u64) {
                    let detail = if off < SHARED_RESERVED as u64 {
                        format!("offset {off:#x} is in the reserved first {SHARED_RESERVED} bytes")
                    } else {
                        format!(
                            "offset {off:#x} is past the block's {} bytes of shared memory ({} static, {} dynamic)",
                            self.smem_end - SHARED_RESERVED,
                            self.k.static_smem,
                            self.dynamic_smem
                        )
                    };
                    return Err(oob(self, detail));
                }
                Ok(Target::Shared(off))
            }
            Space::Local => {
                let size = self.k.local_bytes as u64;
                if off.checked_add(len as u64).is_none_or(|e| e > size) {
                    return Err(oob(
                        self,
                        format!("the thread has {size} bytes of local memory"),
                    ));
                }
                Ok(Target::Local(who.tid() as u64 * size + off))
            }
            Space::Param => {
                if write {
                    return Err(oob(self, "kernel parameters are read-only".into()));
                }
                if off
                    .checked_add(len as u64)
                    .is_none_or(|e| e > self.params.len() as u64)
                {
                    return Err(oob(
                        self,
                        format!("the kernel has {} bytes of parameters", self.params.len()),
                    ));
                }
                Ok(Target::Param(off))
            }
            Space::Const => {
                if write {
                    return Err(oob(self, "constant memory is read-only".into()));
                }
                if off
                    .checked_add(len as u64)
                    .is_none_or(|e| e > self.k.const_bank.len() as u64)
                {
                    return Err(oob(
                        self,
                        format!(
                            "the module has {} bytes of constants",
                            self.k.const_bank.len()
                        ),
                    ));
                }
                Ok(Target::Const(off))
            }
            Space::Generic => unreachable!(),
        }
    }

    /// Racecheck and initcheck of a shared read of `[off, off + len)`; records the read.
    fn shared_read_check(
        &mut self,
        off: u64,
        len: u32,
        who: Who,
        addr: u64,
    ) -> Result<(), Box<Finding>> {
        let checks = self.opts.checks;
        if !checks.racecheck && !checks.initcheck {
            return Ok(());
        }
        let me = who.tid() + 1;
        let line = self.k.instrs[who.pc as usize].line;
        for i in off..off + len as u64 {
            let s = self.shadow[i as usize];
            if checks.racecheck && s.pending != 0 && s.pending_gen == self.generation {
                return Err(self.async_pending_finding(who, addr, s.pending - 1, "read"));
            }
            if checks.racecheck && self.unordered(s.w_tid, s.w_ep, s.w_wep, who) {
                return Err(self.race_finding(
                    "read-after-write",
                    who,
                    addr,
                    s.w_tid - 1,
                    s.w_line,
                ));
            }
            if checks.initcheck && s.init != self.generation {
                return Err(self.finding(
                    Check::Initcheck,
                    "uninitialized shared memory read",
                    who.pc,
                    who.tid(),
                    Some(addr),
                    format!("shared offset {:#x} was never written in this block", i),
                    codes::LAUNCH_FAILED,
                ));
            }
            if checks.racecheck {
                let sh = &mut self.shadow[i as usize];
                if sh.r_ep == self.epoch && sh.r_tid != 0 && sh.r_tid != me {
                    sh.r2_tid = sh.r_tid;
                } else if sh.r_ep != self.epoch {
                    sh.r2_tid = 0;
                }
                sh.r_tid = me;
                sh.r_ep = self.epoch;
                sh.r_wep = who.wep;
                sh.r_line = line;
            }
        }
        Ok(())
    }

    /// Whether an access by thread `other - 1` (0: none) in barrier epoch `ep` and warp epoch `wep`
    /// is unordered with the current access of `who`: another thread, no block barrier in
    /// between, and, within one warp, no `bar.warp.sync` in between.
    fn unordered(&self, other: u32, ep: u32, wep: u32, who: Who) -> bool {
        other != 0
            && other != who.tid() + 1
            && ep == self.epoch
            && ((other - 1) / 32 != who.warp || wep == who.wep)
    }

    /// Racecheck of a shared write; records the write (and initialises the bytes).
    fn shared_write_check(
        &mut self,
        off: u64,
        len: u32,
        who: Who,
        addr: u64,
    ) -> Result<(), Box<Finding>> {
        let checks = self.opts.checks;
        let me = who.tid() + 1;
        let line = self.k.instrs[who.pc as usize].line;
        for i in off..off + len as u64 {
            if checks.racecheck {
                let s = self.shadow[i as usize];
                if s.pending != 0 && s.pending_gen == self.generation {
                    return Err(self.async_pending_finding(who, addr, s.pending - 1, "write"));
                }
                if self.unordered(s.w_tid, s.w_ep, s.w_wep, who) {
                    let (other, line) = (s.w_tid - 1, s.w_line);
                    return Err(self.race_finding("write-after-write", who, addr, other, line));
                }
                for reader in [s.r_tid, s.r2_tid] {
                    if self.unordered(reader, s.r_ep, s.r_wep, who) {
                        let (other, line) = (reader - 1, s.r_line);
                        return Err(self.race_finding("write-after-read", who, addr, other, line));
                    }
                }
            }
            let sh = &mut self.shadow[i as usize];
            sh.init = self.generation;
            sh.w_tid = me;
            sh.w_ep = self.epoch;
            sh.w_wep = who.wep;
            sh.w_line = line;
        }
        Ok(())
    }

    fn race_finding(
        &self,
        kind: &str,
        who: Who,
        addr: u64,
        other: u32,
        other_line: u32,
    ) -> Box<Finding> {
        let t = self.thread_index(other);
        self.finding(
            Check::Racecheck,
            format!("shared-memory {kind} hazard"),
            who.pc,
            who.tid(),
            Some(addr),
            format!(
                "thread ({}, {}, {}) accessed the same byte at PTX line {other_line} with no barrier in between",
                t[0], t[1], t[2]
            ),
            codes::LAUNCH_FAILED,
        )
    }

    fn async_pending_finding(&self, who: Who, addr: u64, owner: u32, kind: &str) -> Box<Finding> {
        let t = self.thread_index(owner);
        self.finding(
            Check::Racecheck,
            format!("{kind} of a cp.async destination before its wait"),
            who.pc,
            who.tid(),
            Some(addr),
            format!(
                "thread ({}, {}, {}) has a cp.async to this byte that no cp.async.wait_group has completed",
                t[0], t[1], t[2]
            ),
            codes::LAUNCH_FAILED,
        )
    }

    /// Read `out.len()` bytes at a resolved target (with initcheck and racecheck).
    fn read_bytes(
        &mut self,
        t: &Target,
        out: &mut [u8],
        who: Who,
        addr: u64,
    ) -> Result<(), Box<Finding>> {
        match *t {
            Target::Global(i, off) => {
                let a = &self.allocs[i];
                if self.opts.checks.initcheck {
                    if let Some(b) = a.first_uninit(off, out.len() as u64) {
                        return Err(self.finding(
                            Check::Initcheck,
                            "uninitialized global memory read",
                            who.pc,
                            who.tid(),
                            Some(addr),
                            format!(
                                "byte {} of the {}-byte allocation at {:#x} was never written",
                                b, a.size, a.base
                            ),
                            codes::LAUNCH_FAILED,
                        ));
                    }
                }
                // SAFETY: resolve checked the bounds.
                out.copy_from_slice(unsafe { a.bytes(off, out.len()) });
            }
            Target::Shared(off) => {
                self.shared_read_check(off, out.len() as u32, who, addr)?;
                out.copy_from_slice(&self.shared[off as usize..off as usize + out.len()]);
            }
            Target::Local(off) => {
                out.copy_from_slice(&self.local[off as usize..off as usize + out.len()])
            }
            Target::Param(off) => {
                out.copy_from_slice(&self.params[off as usize..off as usize + out.len()])
            }
            Target::Const(off) => {
                out.copy_from_slice(&self.k.const_bank[off as usize..off as usize + out.len()])
            }
        }
        Ok(())
    }

    fn write_bytes(
        &mut self,
        t: &Target,
        data: &[u8],
        who: Who,
        addr: u64,
    ) -> Result<(), Box<Finding>> {
        match *t {
            Target::Global(i, off) => {
                let a = &self.allocs[i];
                // SAFETY: resolve checked the bounds.
                unsafe { a.bytes(off, data.len()) }.copy_from_slice(data);
                a.set_init(off, data.len() as u64);
            }
            Target::Shared(off) => {
                self.shared_write_check(off, data.len() as u32, who, addr)?;
                self.shared[off as usize..off as usize + data.len()].copy_from_slice(data);
            }
            Target::Local(off) => {
                self.local[off as usize..off as usize + data.len()].copy_from_slice(data)
            }
            Target::Param(_) | Target::Const(_) => unreachable!("resolve rejects writes"),
        }
        Ok(())
    }

    fn note_access(&mut self, t: &Target, addr: u64, len: u32, lane: usize) {
        if !self.opts.count {
            return;
        }
        match *t {
            Target::Global(..) => {
                let first = addr / 32;
                let last = (addr + len as u64 - 1) / 32;
                self.sectors.extend(first..=last);
                self.global_ranges.push((addr, len));
            }
            Target::Shared(off) => self.shared_accesses.push((lane as u32, off, len)),
            _ => {}
        }
    }

    fn flush_access_stats(&mut self, pc: u32) {
        if !self.opts.count {
            return;
        }
        let st = &mut self.stats[pc as usize];
        if !self.sectors.is_empty() {
            let n = stats::sectors(&mut self.sectors);
            st.global_requests += 1;
            st.global_bytes += stats::unique_bytes(&mut self.global_ranges);
            self.global_ranges.clear();
            st.global_sectors += n;
            self.summary.global_requests += 1;
            self.summary.global_sectors += n;
            self.sectors.clear();
        }
        if !self.shared_accesses.is_empty() {
            let (w, i) = stats::shared_wavefronts(&self.shared_accesses);
            st.shared_requests += 1;
            st.shared_wavefronts += w;
            st.shared_ideal += i;
            self.summary.shared_wavefronts += w;
            self.summary.shared_ideal += i;
            self.shared_accesses.clear();
        }
    }

    // -------------------------------------------------------------------------------------------
    // cp.async
    // -------------------------------------------------------------------------------------------

    /// Complete the oldest committed groups of one lane until at most `keep` remain pending.
    fn complete_async(&mut self, a: &mut AsyncLane, keep: usize, who: Who) {
        while a.committed.len() > keep {
            let group = a.committed.pop_front().unwrap_or_default();
            for c in group {
                let off = c.dst as usize;
                self.shared[off..off + c.len as usize].copy_from_slice(&c.data[..c.len as usize]);
                for i in off..off + c.len as usize {
                    let sh = &mut self.shadow[i];
                    sh.pending = 0;
                    sh.init = self.generation;
                    sh.w_tid = who.tid() + 1;
                    sh.w_ep = self.epoch;
                    sh.w_wep = who.wep;
                }
            }
        }
    }

    // -------------------------------------------------------------------------------------------
    // Collectives
    // -------------------------------------------------------------------------------------------

    /// Rendezvous of a warp collective with member mask `mask` reached by `active` at `pc`: returns
    /// the full member set when everyone has arrived (the caller executes it), or None when the
    /// arriving lanes must wait.
    fn rendezvous(
        &self,
        w: &mut Warp,
        pc: u32,
        active: u32,
        mask: u32,
        what: &'static str,
    ) -> Result<Option<u32>, Box<Finding>> {
        let first = lanes(active).next().unwrap_or(0) as u32;
        if self.opts.checks.synccheck && active & !mask != 0 {
            let lane = lanes(active & !mask).next().unwrap_or(0) as u32;
            return Err(self.finding(
                Check::Synccheck,
                format!("invalid member mask of {what}"),
                pc,
                w.index * 32 + lane,
                None,
                format!(
                    "thread (lane {lane}) executes it but is not in its member mask {mask:#010x}"
                ),
                codes::ILLEGAL_INSTRUCTION,
            ));
        }
        if mask & !w.exists != 0 && self.opts.checks.synccheck {
            return Err(self.finding(
                Check::Synccheck,
                format!("invalid member mask of {what}"),
                pc,
                w.index * 32 + first,
                None,
                format!(
                    "the member mask {mask:#010x} names lanes that do not exist (the warp has lanes {:#010x})",
                    w.exists
                ),
                codes::ILLEGAL_INSTRUCTION,
            ));
        }
        let mut arrived = active;
        if let Some(i) = w
            .collectives
            .iter()
            .position(|c| c.pc == pc && c.mask == mask)
        {
            arrived |= w.collectives[i].arrived;
            if arrived & mask == mask {
                w.collectives.swap_remove(i);
            } else {
                w.collectives[i].arrived = arrived;
            }
        }
        if arrived & mask == mask {
            // Release the lanes that waited here.
            let waited = arrived & !active;
            if waited != 0 {
                w.materialize();
                w.waiting &= !waited;
                w.upc = None;
            }
            return Ok(Some(mask));
        }
        if mask & w.exited != 0 && self.opts.checks.synccheck {
            let lane = lanes(mask & w.exited).next().unwrap_or(0) as u32;
            return Err(self.finding(
                Check::Synccheck,
                format!("partial {what}"),
                pc,
                w.index * 32 + first,
                None,
                format!(
                    "member lanes {} exited before reaching it (mask {mask:#010x}), e.g. lane {lane}",
                    mask_list(mask & w.exited)
                ),
                codes::ILLEGAL_INSTRUCTION,
            ));
        }
        // Wait for the others.
        w.materialize();
        w.waiting |= active;
        w.upc = None;
        match w
            .collectives
            .iter_mut()
            .find(|c| c.pc == pc && c.mask == mask)
        {
            Some(c) => c.arrived = arrived,
            None => w.collectives.push(PendingCollective {
                pc,
                mask,
                arrived,
                what,
            }),
        }
        Ok(None)
    }

    // -------------------------------------------------------------------------------------------
    // One warp instruction
    // -------------------------------------------------------------------------------------------

    fn step(&mut self, w: &mut Warp) -> Result<(), Box<Finding>> {
        let (pc, group) = match w.next_group() {
            Some(g) => g,
            None => return Ok(()),
        };
        let k = self.k;
        let Some(instr) = k.instrs.get(pc as usize) else {
            // Falling off the end of the kernel is an implicit exit.
            w.materialize();
            w.exited |= group;
            w.upc = None;
            return Ok(());
        };
        self.clock += 1;
        self.summary.warp_instructions += 1;
        if self.summary.warp_instructions > self.opts.max_instructions {
            return Err(self.finding(
                Check::Execution,
                "instruction limit exceeded",
                pc,
                w.index * 32 + group.trailing_zeros(),
                None,
                format!(
                    "the launch executed {} warp instructions (PTX_EMU_MAX_INSTRUCTIONS); is there an infinite loop?",
                    self.opts.max_instructions
                ),
                codes::LAUNCH_TIMEOUT,
            ));
        }
        let active = self.guard_mask(instr.guard, w, group);
        self.summary.thread_instructions += active.count_ones() as u64;
        if self.opts.count {
            let st = &mut self.stats[pc as usize];
            st.warp_execs += 1;
            st.thread_execs += active.count_ones() as u64;
            st.thread_slots += group.count_ones() as u64;
        }
        let op = &instr.op;
        match op {
            Op::Bra { target } => {
                let taken = active;
                let not_taken = group & !active;
                if not_taken == 0 || taken == 0 {
                    let dest = if taken != 0 { *target } else { pc + 1 };
                    match w.upc {
                        Some(_) => w.upc = Some(dest),
                        None => {
                            for l in lanes(group) {
                                w.pc[l] = dest;
                            }
                        }
                    }
                } else {
                    w.materialize();
                    for l in lanes(taken) {
                        w.pc[l] = *target;
                    }
                    for l in lanes(not_taken) {
                        w.pc[l] = pc + 1;
                    }
                }
                return Ok(());
            }
            Op::Exit | Op::Ret => {
                if active != 0 {
                    let stay = group & !active;
                    let was_uniform = w.upc.is_some();
                    if !was_uniform {
                        for l in lanes(stay) {
                            w.pc[l] = pc + 1;
                        }
                    }
                    w.exited |= active;
                    if was_uniform {
                        w.upc = Some(pc + 1);
                    }
                    // Lanes waiting at a barrier or collective for the exited ones are
                    // reported by the deadlock check if they can never continue.
                    return Ok(());
                }
                w.advance(group, pc);
                return Ok(());
            }
            Op::Trap => {
                if active != 0 {
                    return Err(self.finding(
                        Check::Execution,
                        "trap",
                        pc,
                        w.index * 32 + active.trailing_zeros(),
                        None,
                        "the kernel executed trap",
                        codes::LAUNCH_FAILED,
                    ));
                }
                w.advance(group, pc);
                return Ok(());
            }
            Op::Bar {
                kind: BarKind::Sync,
                id,
                count,
                ..
            } => {
                if active == 0 {
                    w.advance(group, pc);
                    return Ok(());
                }
                let lane0 = active.trailing_zeros() as usize;
                let idv = self.get(id, w, lane0);
                if idv != 0 || count.is_some() {
                    return Err(self.finding(
                        Check::Execution,
                        "unsupported barrier",
                        pc,
                        w.index * 32 + lane0 as u32,
                        None,
                        "only `bar.sync 0` (all threads of the block) is supported",
                        codes::NOT_SUPPORTED,
                    ));
                }
                // bar.sync is .aligned: the whole warp arrives together.
                let members = w.exists & !w.exited;
                if self.opts.checks.synccheck && active != members {
                    // Let the others catch up first (they may be at lower PCs).
                    match self.rendezvous(w, pc, active, members, "bar.sync")? {
                        Some(_) => {}
                        None => return Ok(()),
                    }
                }
                w.materialize();
                let arriving = members & !w.exited;
                for l in lanes(arriving) {
                    w.pc[l] = pc;
                }
                let skip = group & !active;
                for l in lanes(skip) {
                    w.pc[l] = pc + 1;
                }
                w.waiting |= arriving;
                w.at_barrier |= arriving;
                w.upc = None;
                return Ok(());
            }
            Op::Bar { kind, .. } => {
                return Err(self.finding(
                    Check::Execution,
                    "unsupported barrier",
                    pc,
                    w.index * 32 + group.trailing_zeros(),
                    None,
                    format!("{kind:?} barriers are not supported"),
                    codes::NOT_SUPPORTED,
                ));
            }
            _ => {}
        }
        if active == 0 {
            w.advance(group, pc);
            return Ok(());
        }
        let done = self.execute(w, pc, active, op)?;
        if done {
            // Non-collective instructions and completed collectives: the whole group moves on
            // (guard-false lanes included).
            w.advance_group(group, pc);
        }
        Ok(())
    }
}

impl Warp {
    /// After an instruction executed by `group` (possibly together with lanes released from a
    /// collective wait, whose PCs were materialised), move them to the next instruction.
    fn advance_group(&mut self, group: u32, pc: u32) {
        match self.upc {
            Some(p) if p == pc => self.upc = Some(pc + 1),
            _ => {
                for l in lanes(group) {
                    self.pc[l] = pc + 1;
                }
            }
        }
    }
}

fn mask_list(mask: u32) -> String {
    let v: Vec<u32> = lanes(mask).map(|l| l as u32).collect();
    compress_ranges(&v)
}

/// "0-31, 40, 64-95"
fn compress_ranges(v: &[u32]) -> String {
    let mut v = v.to_vec();
    v.sort_unstable();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(", ")
}

/// The elements of a vector operand (or the operand itself).
fn elements(o: &Operand) -> &[Operand] {
    match o {
        Operand::Vector(v) => v,
        other => std::slice::from_ref(other),
    }
}

/// Gather the bytes of a value of `n` bytes (little-endian).
fn to_bytes(v: u64, n: usize) -> [u8; 8] {
    let b = v.to_le_bytes();
    let mut out = [0u8; 8];
    out[..n].copy_from_slice(&b[..n]);
    out
}

fn from_bytes(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(a)
}

mod ops;
mod tensor;
mod vector;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_order_is_a_permutation() {
        for n in [1u64, 2, 3, 7, 64, 100, 1000] {
            let mut v: Vec<u64> = BlockOrder::new(n, 42).collect();
            v.sort_unstable();
            assert_eq!(v, (0..n).collect::<Vec<_>>());
        }
        let a: Vec<u64> = BlockOrder::new(100, 1).collect();
        let b: Vec<u64> = BlockOrder::new(100, 2).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn ranges_compress() {
        assert_eq!(compress_ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
    }

    #[test]
    fn little_endian_round_trip() {
        assert_eq!(from_bytes(&to_bytes(0x1234_5678, 2)[..2]), 0x5678);
    }
}
