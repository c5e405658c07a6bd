//! A kernel ready to launch: its instructions, the resolved address of every symbol it names, and
//! its shared, local and parameter memory layout.

use super::memory::GlobalMemory;
use crate::ptx::ir::*;
use std::collections::HashMap;
use std::sync::Arc;

/// Shared-window offsets below this are the driver's reserved shared memory (1 KiB per block on
/// sm_80 and later): user variables start here, and an access below it is out of bounds.
pub(crate) const SHARED_RESERVED: u32 = 1024;

/// The address a symbol stands for, in its own state space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SymbolValue {
    Shared(u32),
    Local(u32),
    Param(u32),
    Global(u64),
    Const(u32),
    /// A function (only valid as a call target).
    Function,
}

impl SymbolValue {
    /// The value `mov r, symbol` produces: the address in the symbol's own state space.
    pub(crate) fn value(self) -> u64 {
        match self {
            SymbolValue::Shared(o)
            | SymbolValue::Local(o)
            | SymbolValue::Param(o)
            | SymbolValue::Const(o) => o as u64,
            SymbolValue::Global(a) => a,
            SymbolValue::Function => 0,
        }
    }
}

/// Data a module owns on the device: its `.global` variables (allocated) and its constant bank.
pub(crate) struct ModuleData {
    /// Address of each module variable in the global or const space (by variable index).
    pub var_addr: Vec<Option<SymbolValue>>,
    /// The `.const` bank.
    pub const_bank: Arc<Vec<u8>>,
    /// Global allocations made for `.global` variables (freed with the module).
    pub allocations: Vec<u64>,
}

impl ModuleData {
    /// Allocate and initialise the module's `.global` variables and build its constant bank.
    pub(crate) fn load(module: &Module, memory: &GlobalMemory) -> Result<Self, String> {
        let mut var_addr = Vec::with_capacity(module.variables.len());
        let mut bank = Vec::new();
        let mut allocations = Vec::new();
        for v in &module.variables {
            match v.space {
                Space::Global => {
                    if v.is_extern && v.size == 0 {
                        return Err(format!(
                            "extern .global variable `{}` is not supported",
                            v.name
                        ));
                    }
                    let addr = memory.alloc(v.size.max(1));
                    let init = v.init.clone().unwrap_or_else(|| vec![0; v.size as usize]);
                    memory.write(addr, &init)?;
                    allocations.push(addr);
                    var_addr.push(Some(SymbolValue::Global(addr)));
                }
                Space::Const => {
                    let off = bank.len().next_multiple_of(v.align.max(1) as usize);
                    bank.resize(off, 0);
                    let init = v.init.clone().unwrap_or_else(|| vec![0; v.size as usize]);
                    bank.extend_from_slice(&init);
                    var_addr.push(Some(SymbolValue::Const(off as u32)));
                }
                _ => var_addr.push(None),
            }
        }
        Ok(ModuleData {
            var_addr,
            const_bank: Arc::new(bank),
            allocations,
        })
    }
}

/// A prepared kernel.
pub struct Kernel {
    /// The kernel's name.
    pub name: String,
    pub(crate) instrs: Vec<Instr>,
    pub(crate) nregs: usize,
    pub(crate) symbols: Vec<SymbolValue>,
    pub(crate) params: Vec<Param>,
    /// Bytes of the packed parameter buffer.
    pub param_bytes: u32,
    /// Bytes of statically declared shared memory.
    pub static_smem: u32,
    /// Shared-window offset of the dynamic (`extern`) shared memory.
    pub(crate) dynamic_offset: u32,
    /// Bytes of local memory per thread.
    pub local_bytes: u32,
    /// `.maxntid` or `.reqntid` of the kernel.
    pub max_threads: Option<u32>,
    /// `.reqntid`, when given: the exact block shape.
    pub reqntid: Option<[u32; 3]>,
    /// `.minnctapersm`.
    pub min_blocks_per_sm: Option<u32>,
    /// `.maxnreg`.
    pub max_regs: Option<u32>,
    pub(crate) const_bank: Arc<Vec<u8>>,
    pub(crate) files: Arc<HashMap<u32, String>>,
}

impl Kernel {
    /// Prepare entry `name` of `module`.
    pub(crate) fn prepare(
        module: &Module,
        data: &ModuleData,
        name: &str,
        files: Arc<HashMap<u32, String>>,
    ) -> Result<Kernel, String> {
        let (_, f) = module
            .function(name)
            .ok_or_else(|| format!("no function named `{name}` in the module"))?;
        if !f.is_entry {
            return Err(format!("`{name}` is a device function, not a kernel"));
        }
        if let Some(call) = f.instrs.iter().find(|i| matches!(i.op, Op::Call { .. })) {
            return Err(format!(
                "kernel `{name}` calls a device function (PTX line {}); calls are not supported",
                call.line
            ));
        }
        // Shared layout: the kernel's own shared variables, then the module-scope ones it names,
        // then the dynamic (`extern`) shared memory, aligned as its declarations ask (16 at least).
        // Local memory: its `.local` and `.param` scratch variables, per thread.
        let mut shared_off = SHARED_RESERVED;
        let mut dyn_align = 16u32;
        let mut local_off = 0u32;
        let mut place_shared = |var: &Variable, dyn_align: &mut u32| -> Option<SymbolValue> {
            if var.is_extern {
                *dyn_align = (*dyn_align).max(var.align);
                return None;
            }
            let off = shared_off.next_multiple_of(var.align.max(1));
            shared_off = off + var.size as u32;
            Some(SymbolValue::Shared(off))
        };
        let mut local_value: Vec<Option<SymbolValue>> = vec![None; f.locals.len()];
        for (i, v) in f.locals.iter().enumerate() {
            match v.space {
                Space::Shared => local_value[i] = place_shared(v, &mut dyn_align),
                Space::Local | Space::Param => {
                    let off = local_off.next_multiple_of(v.align.max(1));
                    local_off = off + v.size as u32;
                    local_value[i] = Some(SymbolValue::Local(off));
                }
                _ => return Err(format!("unsupported function-scope variable `{}`", v.name)),
            }
        }
        let mut module_shared: HashMap<u32, u32> = HashMap::new();
        for t in &f.symbols {
            if let SymbolTarget::Module(i) = t {
                let v = &module.variables[*i as usize];
                if v.space == Space::Shared && !module_shared.contains_key(i) {
                    if let Some(SymbolValue::Shared(o)) = place_shared(v, &mut dyn_align) {
                        module_shared.insert(*i, o);
                    }
                }
            }
        }
        let dynamic_offset = shared_off.next_multiple_of(dyn_align);
        let symbols = f
            .symbols
            .iter()
            .map(|t| match t {
                SymbolTarget::Module(i) => {
                    let v = &module.variables[*i as usize];
                    match v.space {
                        Space::Shared if v.is_extern => Ok(SymbolValue::Shared(dynamic_offset)),
                        Space::Shared => Ok(SymbolValue::Shared(module_shared[i])),
                        _ => data.var_addr[*i as usize]
                            .ok_or_else(|| format!("variable `{}` has no address", v.name)),
                    }
                }
                SymbolTarget::Local(i) => match local_value[*i as usize] {
                    Some(v) => Ok(v),
                    None => Ok(SymbolValue::Shared(dynamic_offset)),
                },
                SymbolTarget::Param(i) => Ok(SymbolValue::Param(f.params[*i as usize].offset)),
                SymbolTarget::Ret(_) => {
                    Err("return parameters exist only in device functions".into())
                }
                SymbolTarget::Function(_) => Ok(SymbolValue::Function),
            })
            .collect::<Result<Vec<_>, String>>()?;
        let dims = f.reqntid.or(f.maxntid);
        Ok(Kernel {
            name: name.to_string(),
            instrs: f.instrs.clone(),
            nregs: f.regs.len(),
            symbols,
            params: f.params.clone(),
            param_bytes: f.param_bytes,
            static_smem: shared_off - SHARED_RESERVED,
            dynamic_offset,
            local_bytes: local_off,
            max_threads: dims.map(|d| d[0] * d[1] * d[2]),
            reqntid: f.reqntid,
            min_blocks_per_sm: f.minnctapersm,
            max_regs: f.maxnreg,
            const_bank: data.const_bank.clone(),
            files,
        })
    }

    /// `file:line` of an instruction's `.loc`, when it has one.
    pub(crate) fn source_of(&self, instr: &Instr) -> Option<String> {
        if instr.loc.file == 0 {
            return None;
        }
        let name = |f: u32| {
            self.files
                .get(&f)
                .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
                .unwrap_or_else(|| format!("file{f}"))
        };
        let mut s = format!("{}:{}", name(instr.loc.file), instr.loc.line);
        if instr.loc.inlined_file != 0 {
            s.push_str(&format!(
                ", inlined at {}:{}",
                name(instr.loc.inlined_file),
                instr.loc.inlined_line
            ));
        }
        Some(s)
    }

    /// Number of instructions.
    pub fn instruction_count(&self) -> usize {
        self.instrs.len()
    }
}
