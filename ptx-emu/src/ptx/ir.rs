//! The decoded form of a PTX module: typed instructions over dense register indices, ready for the
//! interpreter. Produced by [`super::parser`]; every instruction keeps its PTX line and `.loc`.

use std::collections::HashMap;

/// A scalar PTX type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Ty {
    B8,
    B16,
    B32,
    B64,
    B128,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    F16x2,
    Bf16,
    Bf16x2,
    /// Two FP8 e4m3 values in 16 bits (`cvt` destinations only).
    E4m3x2,
    F32,
    F64,
    Pred,
}

/// How the bits of a type are interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TyKind {
    Bits,
    Unsigned,
    Signed,
    Float,
    Pred,
}

impl Ty {
    /// Parse a type modifier (without the dot).
    pub(crate) fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "b128" => Ty::B128,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "f16x2" => Ty::F16x2,
            "bf16" => Ty::Bf16,
            "bf16x2" => Ty::Bf16x2,
            "e4m3x2" => Ty::E4m3x2,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    /// Width in bits (a predicate counts as 1).
    #[inline]
    pub(crate) fn bits(self) -> u32 {
        match self {
            Ty::B8 | Ty::U8 | Ty::S8 => 8,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::Bf16 | Ty::E4m3x2 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::Bf16x2 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
            Ty::B128 => 128,
            Ty::Pred => 1,
        }
    }

    /// Width in bytes (at least one).
    #[inline]
    pub(crate) fn bytes(self) -> u32 {
        self.bits().div_ceil(8)
    }

    #[inline]
    pub(crate) fn kind(self) -> TyKind {
        match self {
            Ty::B8 | Ty::B16 | Ty::B32 | Ty::B64 | Ty::B128 => TyKind::Bits,
            Ty::U8 | Ty::U16 | Ty::U32 | Ty::U64 => TyKind::Unsigned,
            Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64 => TyKind::Signed,
            Ty::F16 | Ty::F16x2 | Ty::Bf16 | Ty::Bf16x2 | Ty::E4m3x2 | Ty::F32 | Ty::F64 => {
                TyKind::Float
            }
            Ty::Pred => TyKind::Pred,
        }
    }

    #[inline]
    pub(crate) fn is_signed(self) -> bool {
        self.kind() == TyKind::Signed
    }

    #[inline]
    pub(crate) fn is_float(self) -> bool {
        self.kind() == TyKind::Float
    }

    /// Mask of the type's bits within a u64 (all ones for 64 bits and wider).
    #[inline]
    pub(crate) fn mask(self) -> u64 {
        match self.bits() {
            b if b >= 64 => u64::MAX,
            b => (1u64 << b) - 1,
        }
    }
}

/// A PTX state space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Space {
    Generic,
    Global,
    Shared,
    Local,
    Param,
    Const,
}

impl Space {
    pub(crate) fn parse(s: &str) -> Option<Space> {
        Some(match s {
            "global" => Space::Global,
            "shared" | "shared::cta" => Space::Shared,
            "local" => Space::Local,
            "param" | "param::entry" | "param::func" => Space::Param,
            "const" => Space::Const,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Space::Generic => "generic",
            Space::Global => "global",
            Space::Shared => "shared",
            Space::Local => "local",
            Space::Param => "param",
            Space::Const => "const",
        }
    }
}

/// IEEE rounding of floating-point results and conversions (`.rn .rz .rm .rp`), and the integer
/// rounding of float-to-integral conversions (`.rni .rzi .rmi .rpi`) mapped to the same four.
pub(crate) use crate::exec::float::Rounding;

/// A special (read-only, per-thread or per-launch) register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
    NWarpId,
    SmId,
    NSmId,
    GridId,
    LaneMaskEq,
    LaneMaskLt,
    LaneMaskLe,
    LaneMaskGt,
    LaneMaskGe,
    Clock,
    Clock64,
    GlobalTimer,
    DynamicSmemSize,
    TotalSmemSize,
}

impl Special {
    pub(crate) fn parse(s: &str) -> Option<Special> {
        let dim = |c: &str| match c {
            "x" => Some(0u8),
            "y" => Some(1),
            "z" => Some(2),
            _ => None,
        };
        if let Some((base, c)) = s.split_once('.') {
            let d = dim(c)?;
            return Some(match base {
                "%tid" => Special::Tid(d),
                "%ntid" => Special::Ntid(d),
                "%ctaid" => Special::Ctaid(d),
                "%nctaid" => Special::Nctaid(d),
                _ => return None,
            });
        }
        Some(match s {
            "%laneid" => Special::LaneId,
            "%warpid" => Special::WarpId,
            "%nwarpid" => Special::NWarpId,
            "%smid" => Special::SmId,
            "%nsmid" => Special::NSmId,
            "%gridid" => Special::GridId,
            "%lanemask_eq" => Special::LaneMaskEq,
            "%lanemask_lt" => Special::LaneMaskLt,
            "%lanemask_le" => Special::LaneMaskLe,
            "%lanemask_gt" => Special::LaneMaskGt,
            "%lanemask_ge" => Special::LaneMaskGe,
            "%clock" => Special::Clock,
            "%clock64" => Special::Clock64,
            "%globaltimer" => Special::GlobalTimer,
            "%dynamic_smem_size" => Special::DynamicSmemSize,
            "%total_smem_size" => Special::TotalSmemSize,
            _ => return None,
        })
    }
}

/// A register index into a thread's register file.
pub(crate) type Reg = u32;

/// A source or destination operand.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Operand {
    Reg(Reg),
    /// The complement of a predicate register (`!%p`), as a source.
    NotReg(Reg),
    /// An immediate, already encoded as the bits of the instruction's operand type.
    Imm(u64),
    Special(Special),
    /// The address of a variable in its own state space (index into [`Function::symbols`]).
    Symbol(u32),
    /// A braced vector `{a, b, ...}` (pack and unpack moves, vector loads and stores, mma fragments).
    Vector(Vec<Operand>),
    /// `_`: a destination that is discarded.
    Sink,
}

/// The base of an address operand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AddrBase {
    Reg(Reg),
    Symbol(u32),
    Zero,
}

/// An address operand `[base + offset]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Address {
    pub base: AddrBase,
    pub offset: i64,
}

/// Integer result selection of multiplies (`.lo`, `.hi`, `.wide`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MulMode {
    Lo,
    Hi,
    Wide,
}

/// Modifiers of arithmetic instructions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mods {
    pub rnd: Option<Rounding>,
    pub ftz: bool,
    pub sat: bool,
    pub approx: bool,
    pub full: bool,
    pub relu: bool,
    pub nan: bool,
    pub mul: Option<MulMode>,
    /// `.cc`: writes the carry flag; `addc`/`subc`/`madc` read it.
    pub cc: bool,
    pub shiftamt: bool,
}

/// One-source operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UnOp {
    Abs,
    Neg,
    Not,
    Cnot,
    Popc,
    Clz,
    Brev,
    Bfind,
    Sqrt,
    Rsqrt,
    Rcp,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
}

/// Two-source operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Addc,
    Subc,
    Mul,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
    Copysign,
    Mul24,
}

/// Three-source operations that write one register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TernOp {
    Fma,
    Mad,
    Madc,
    Mad24,
    Sad,
    Bfe,
    /// `prmt` with its mode.
    Prmt(PrmtMode),
    /// `shf.l`/`shf.r` with `.wrap` (false) or `.clamp` (true).
    ShfL(bool),
    ShfR(bool),
    Dp4a(bool, bool),
    Dp2aLo(bool, bool),
    Dp2aHi(bool, bool),
}

/// `prmt` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrmtMode {
    Default,
    F4e,
    B4e,
    Rc8,
    Ecl,
    Ecr,
    Rc16,
}

/// Comparison operators of `setp`/`set`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

/// Boolean combiners of `setp`/`set`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BoolOp {
    And,
    Or,
    Xor,
}

/// Atomic operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AtomOp {
    Add,
    Min,
    Max,
    Inc,
    Dec,
    And,
    Or,
    Xor,
    Exch,
    Cas,
}

/// `shfl.sync` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

/// `vote.sync` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

/// `redux.sync` operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReduxOp {
    Add,
    Min,
    Max,
    And,
    Or,
    Xor,
}

/// Barrier flavours of `bar`/`barrier`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BarKind {
    Sync,
    Arrive,
    /// `bar.red.{popc,and,or}`: the reduction and its predicate source.
    Red(ReduxOp),
}

/// Element types of `mma.sync` operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MmaType {
    F16,
    Bf16,
    F32,
    Tf32,
    /// FP8 e4m3 (`m16n8k32`, sm_89+).
    E4m3,
}

/// The instruction set the interpreter runs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Mov {
        ty: Ty,
        d: Operand,
        a: Operand,
    },
    Un {
        op: UnOp,
        ty: Ty,
        m: Mods,
        d: Operand,
        a: Operand,
    },
    Bin {
        op: BinOp,
        ty: Ty,
        m: Mods,
        d: Operand,
        a: Operand,
        b: Operand,
    },
    Tern {
        op: TernOp,
        ty: Ty,
        m: Mods,
        d: Operand,
        a: Operand,
        b: Operand,
        c: Operand,
    },
    Bfi {
        ty: Ty,
        d: Operand,
        f: Operand,
        b: Operand,
        pos: Operand,
        len: Operand,
    },
    Lop3 {
        d: Operand,
        a: Operand,
        b: Operand,
        c: Operand,
        lut: u8,
    },
    Selp {
        ty: Ty,
        d: Operand,
        a: Operand,
        b: Operand,
        c: Operand,
    },
    Slct {
        ty: Ty,
        cty: Ty,
        ftz: bool,
        d: Operand,
        a: Operand,
        b: Operand,
        c: Operand,
    },
    Setp {
        cmp: Cmp,
        ty: Ty,
        ftz: bool,
        combine: Option<BoolOp>,
        p: Operand,
        q: Operand,
        a: Operand,
        b: Operand,
        c: Operand,
    },
    Set {
        cmp: Cmp,
        dty: Ty,
        ty: Ty,
        ftz: bool,
        combine: Option<BoolOp>,
        d: Operand,
        a: Operand,
        b: Operand,
        c: Operand,
    },
    Testp {
        class: TestClass,
        ty: Ty,
        d: Operand,
        a: Operand,
    },
    Cvt {
        dty: Ty,
        sty: Ty,
        m: Mods,
        /// Float-to-integral rounding (`.rni` etc.) rather than IEEE result rounding.
        int_round: bool,
        d: Operand,
        a: Operand,
        /// The second source of the packing conversions (`cvt.rn.f16x2.f32 d, a, b`).
        b: Option<Operand>,
    },
    Cvta {
        to: bool,
        space: Space,
        d: Operand,
        a: Operand,
    },
    Isspacep {
        space: Space,
        d: Operand,
        a: Operand,
    },
    Ld {
        space: Space,
        ty: Ty,
        d: Operand,
        addr: Address,
    },
    St {
        space: Space,
        ty: Ty,
        addr: Address,
        a: Operand,
    },
    Atom {
        space: Space,
        op: AtomOp,
        ty: Ty,
        /// `None` for `red` (no result).
        d: Option<Operand>,
        addr: Address,
        b: Operand,
        c: Option<Operand>,
    },
    CpAsync {
        /// Bytes copied (4, 8 or 16).
        size: u32,
        dst: Address,
        src: Address,
        /// Bytes read from the source (the rest is zero-filled); `None`: all.
        src_size: Option<Operand>,
        /// `ignore-src` predicate: when true nothing is read and the destination is zero-filled.
        ignore_src: Option<Operand>,
    },
    CpAsyncCommit,
    CpAsyncWait {
        n: u32,
    },
    Ldmatrix {
        num: u32,
        trans: bool,
        d: Operand,
        addr: Address,
    },
    Mma {
        /// M, N, K.
        shape: (u32, u32, u32),
        aty: MmaType,
        cty: MmaType,
        dty: MmaType,
        d: Operand,
        a: Operand,
        b: Operand,
        c: Operand,
    },
    Bra {
        target: u32,
    },
    Call {
        func: u32,
        ret: Vec<Operand>,
        args: Vec<Operand>,
    },
    Ret,
    Exit,
    Trap,
    Bar {
        kind: BarKind,
        id: Operand,
        count: Option<Operand>,
        /// `bar.red`: destination and predicate source.
        d: Option<Operand>,
        p: Option<Operand>,
    },
    BarWarp {
        mask: Operand,
    },
    Shfl {
        mode: ShflMode,
        d: Operand,
        p: Operand,
        a: Operand,
        b: Operand,
        c: Operand,
        mask: Operand,
    },
    Vote {
        mode: VoteMode,
        d: Operand,
        a: Operand,
        mask: Operand,
    },
    Match {
        all: bool,
        ty: Ty,
        d: Operand,
        p: Operand,
        a: Operand,
        mask: Operand,
    },
    Redux {
        op: ReduxOp,
        ty: Ty,
        d: Operand,
        a: Operand,
        mask: Operand,
    },
    Activemask {
        d: Operand,
    },
    /// Memory fences, prefetches, `nanosleep` and `pmevent`: no effect in a sequentially consistent
    /// emulator.
    Nop,
}

/// Classes of `testp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TestClass {
    Finite,
    Infinite,
    Number,
    NotANumber,
    Normal,
    Subnormal,
}

/// Where an instruction came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SourceLoc {
    /// `.file` index (0: none).
    pub file: u32,
    pub line: u32,
    /// Where the function holding this line was inlined (`inlined_at file line`), when it was.
    pub inlined_file: u32,
    pub inlined_line: u32,
}

/// One instruction with its guard predicate and origin.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Instr {
    /// Guard `@p` / `@!p`: (register, negated).
    pub guard: Option<(Reg, bool)>,
    pub op: Op,
    /// Line in the PTX text (1-based).
    pub line: u32,
    /// The last `.loc` before the instruction.
    pub loc: SourceLoc,
}

/// A variable declared in a state space.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Variable {
    pub name: String,
    pub space: Space,
    pub align: u32,
    /// Size in bytes (0 for an `.extern .shared` array of unknown size).
    pub size: u64,
    pub is_extern: bool,
    /// Initial bytes (`= {...}`), for global and const variables.
    pub init: Option<Vec<u8>>,
}

/// A kernel or device-function parameter.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Param {
    pub name: String,
    pub size: u32,
    pub align: u32,
    /// Offset in the packed parameter buffer.
    pub offset: u32,
}

/// What a symbol operand of a function refers to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SymbolTarget {
    /// A module-scope variable (index into [`Module::variables`]).
    Module(u32),
    /// A function-scope `.shared` or `.local` variable (index into [`Function::locals`]).
    Local(u32),
    /// A parameter of this function (index into [`Function::params`]).
    Param(u32),
    /// A return parameter of this function (index into [`Function::rets`]).
    Ret(u32),
    /// A function (for `call` targets taken as values; unused by kernels).
    Function(u32),
}

/// A kernel (`.entry`) or device function (`.func`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Function {
    pub name: String,
    pub is_entry: bool,
    pub params: Vec<Param>,
    pub rets: Vec<Param>,
    pub param_bytes: u32,
    /// Declared registers: name and type, indexed by [`Reg`].
    pub regs: Vec<(String, Ty)>,
    pub instrs: Vec<Instr>,
    /// Function-scope `.shared` and `.local` variables.
    pub locals: Vec<Variable>,
    /// Symbol operands used by the body.
    pub symbols: Vec<SymbolTarget>,
    pub maxntid: Option<[u32; 3]>,
    pub reqntid: Option<[u32; 3]>,
    pub minnctapersm: Option<u32>,
    pub maxnreg: Option<u32>,
    /// Line of the declaration.
    pub line: u32,
    /// Whether the body was given (false for prototypes and `.extern` declarations).
    pub defined: bool,
}

/// A parsed PTX module.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Module {
    pub version: (u32, u32),
    pub target: String,
    pub variables: Vec<Variable>,
    pub functions: Vec<Function>,
    /// `.file` index to path.
    pub files: HashMap<u32, String>,
}

impl Module {
    /// The function named `name`.
    pub(crate) fn function(&self, name: &str) -> Option<(u32, &Function)> {
        self.functions
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == name && f.defined)
            .map(|(i, f)| (i as u32, f))
    }
}
