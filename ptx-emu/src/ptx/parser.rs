//! PTX text to [`Module`]: directives, variables, functions, and every instruction the interpreter
//! runs, typed and with their modifiers checked. An instruction or modifier that is not understood is
//! an error naming its line: nothing is skipped silently.

use super::ir::*;
use super::lexer::{tokenize, Tok, Token};
use std::collections::HashMap;

/// A parse failure at a PTX line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub line: u32,
    pub message: String,
}

type PResult<T> = Result<T, ParseError>;

fn err<T>(line: u32, message: impl Into<String>) -> PResult<T> {
    Err(ParseError {
        line,
        message: message.into(),
    })
}

/// Parse a whole PTX module.
pub(crate) fn parse(text: &str) -> PResult<Module> {
    let tokens = tokenize(text).map_err(|(line, message)| ParseError { line, message })?;
    let mut p = Parser {
        toks: &tokens,
        pos: 0,
        module: Module {
            version: (0, 0),
            target: String::new(),
            variables: Vec::new(),
            functions: Vec::new(),
            files: HashMap::new(),
        },
        module_names: HashMap::new(),
    };
    p.parse_module()?;
    Ok(p.module)
}

/// A literal as written, before it is encoded for an operand type.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Literal {
    Int(u64),
    F32(u32),
    F64(u64),
}

/// An operand as written.
#[derive(Clone, Debug, PartialEq)]
enum Raw {
    Name(String),
    NotName(String),
    Lit(Literal),
    Vector(Vec<Raw>),
    Addr(RawAddr),
    /// `d|p`: a destination and a predicate destination.
    Pair(Box<Raw>, Box<Raw>),
    /// `(a, b)`: call argument lists.
    List(Vec<Raw>),
    Sink,
}

#[derive(Clone, Debug, PartialEq)]
struct RawAddr {
    base: Option<String>,
    offset: i64,
}

/// What a module-scope name refers to.
#[derive(Clone, Copy, Debug)]
enum ModuleName {
    Variable(u32),
    Function(u32),
}

struct Parser<'t> {
    toks: &'t [Token],
    pos: usize,
    module: Module,
    module_names: HashMap<String, ModuleName>,
}

/// Parse a number word: `0f` f32 bits, `0d` f64 bits, `0x` hex, decimal, decimal float; an
/// optional `U` suffix.
fn parse_literal(word: &str) -> Option<Literal> {
    let w = word.strip_suffix('U').unwrap_or(word);
    let lower = w.to_ascii_lowercase();
    if let Some(h) = lower.strip_prefix("0f") {
        if h.len() == 8 {
            return u32::from_str_radix(h, 16).ok().map(Literal::F32);
        }
    }
    if let Some(h) = lower.strip_prefix("0d") {
        if h.len() == 16 {
            return u64::from_str_radix(h, 16).ok().map(Literal::F64);
        }
    }
    if let Some(h) = lower.strip_prefix("0x") {
        return u64::from_str_radix(h, 16).ok().map(Literal::Int);
    }
    if lower.bytes().all(|b| b.is_ascii_digit()) && !lower.is_empty() {
        if lower.len() > 1 && lower.starts_with('0') {
            return u64::from_str_radix(&lower[1..], 8).ok().map(Literal::Int);
        }
        return lower.parse::<u64>().ok().map(Literal::Int);
    }
    if lower.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        return lower.parse::<f64>().ok().map(|v| Literal::F64(v.to_bits()));
    }
    None
}

fn negate(lit: Literal) -> Literal {
    match lit {
        Literal::Int(v) => Literal::Int(v.wrapping_neg()),
        Literal::F32(b) => Literal::F32(b ^ 0x8000_0000),
        Literal::F64(b) => Literal::F64(b ^ (1 << 63)),
    }
}

/// Encode a literal as an operand of type `ty`.
fn literal_bits(lit: Literal, ty: Ty) -> u64 {
    match (lit, ty) {
        (Literal::Int(v), Ty::F32) => (v as i64 as f32).to_bits() as u64,
        (Literal::Int(v), Ty::F64) => (v as i64 as f64).to_bits(),
        (Literal::Int(v), _) => v & ty.mask(),
        (Literal::F32(b), Ty::F64) => (f32::from_bits(b) as f64).to_bits(),
        (Literal::F32(b), _) => b as u64 & ty.mask(),
        (Literal::F64(b), Ty::F32) => (f64::from_bits(b) as f32).to_bits() as u64,
        (Literal::F64(b), _) => b & ty.mask(),
    }
}

/// The instruction modifiers after the opcode's first part, each to be consumed exactly once.
struct ModList<'a> {
    items: Vec<&'a str>,
    used: Vec<bool>,
    line: u32,
    opcode: &'a str,
}

impl<'a> ModList<'a> {
    fn new(opcode: &'a str, line: u32) -> (&'a str, Self) {
        let mut parts = opcode.split('.');
        let head = parts.next().unwrap_or("");
        let items: Vec<&str> = parts.collect();
        let used = vec![false; items.len()];
        (
            head,
            ModList {
                items,
                used,
                line,
                opcode,
            },
        )
    }

    fn has(&mut self, m: &str) -> bool {
        for (i, it) in self.items.iter().enumerate() {
            if !self.used[i] && *it == m {
                self.used[i] = true;
                return true;
            }
        }
        false
    }

    fn one_of(&mut self, options: &[&'static str]) -> Option<&'static str> {
        for (i, it) in self.items.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            if let Some(o) = options.iter().find(|o| **o == *it) {
                self.used[i] = true;
                return Some(o);
            }
        }
        None
    }

    /// Ignore any of these modifiers (hints without semantics in the emulator).
    fn ignore(&mut self, options: &[&str]) {
        for (i, it) in self.items.iter().enumerate() {
            if !self.used[i] && options.contains(it) {
                self.used[i] = true;
            }
        }
    }

    /// Ignore cache and memory-ordering qualifiers.
    fn ignore_hints(&mut self) {
        self.ignore(&[
            "ca",
            "cg",
            "cs",
            "lu",
            "cv",
            "wb",
            "wt",
            "nc",
            "volatile",
            "relaxed",
            "acquire",
            "release",
            "acq_rel",
            "weak",
            "mmio",
            "sys",
            "gpu",
            "cta",
            "cluster",
            "L1::evict_normal",
            "L1::evict_unchanged",
            "L1::evict_first",
            "L1::evict_last",
            "L1::no_allocate",
            "L2::evict_normal",
            "L2::evict_first",
            "L2::evict_last",
            "L2::64B",
            "L2::128B",
            "L2::256B",
        ]);
    }

    fn tys(&mut self) -> Vec<Ty> {
        let mut out = Vec::new();
        for (i, it) in self.items.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            if let Some(t) = Ty::parse(it) {
                self.used[i] = true;
                out.push(t);
            }
        }
        out
    }

    fn ty(&mut self) -> PResult<Ty> {
        let t = self.tys();
        match t.as_slice() {
            [t] => Ok(*t),
            [] => err(self.line, format!("`{}`: missing type", self.opcode)),
            _ => err(self.line, format!("`{}`: expected one type", self.opcode)),
        }
    }

    fn space(&mut self) -> Option<Space> {
        for (i, it) in self.items.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            if let Some(s) = Space::parse(it) {
                self.used[i] = true;
                return Some(s);
            }
        }
        None
    }

    fn rounding(&mut self) -> Option<Rounding> {
        self.one_of(&["rn", "rz", "rm", "rp"]).map(|r| match r {
            "rn" => Rounding::Nearest,
            "rz" => Rounding::Zero,
            "rm" => Rounding::Down,
            _ => Rounding::Up,
        })
    }

    fn int_rounding(&mut self) -> Option<Rounding> {
        self.one_of(&["rni", "rzi", "rmi", "rpi"]).map(|r| match r {
            "rni" => Rounding::Nearest,
            "rzi" => Rounding::Zero,
            "rmi" => Rounding::Down,
            _ => Rounding::Up,
        })
    }

    fn vector(&mut self) -> u32 {
        match self.one_of(&["v2", "v4", "v8"]) {
            Some("v2") => 2,
            Some("v4") => 4,
            Some("v8") => 8,
            _ => 1,
        }
    }

    /// The state space (generic when absent), vector width and type of a load or store, its
    /// cache and ordering hints ignored.
    fn memory(&mut self) -> PResult<(Space, u32, Ty)> {
        self.ignore_hints();
        self.ignore(&["L2::cache_hint"]);
        let space = self.space().unwrap_or(Space::Generic);
        let vector = self.vector();
        Ok((space, vector, self.ty()?))
    }

    fn finish(self) -> PResult<()> {
        let rest: Vec<&str> = self
            .items
            .iter()
            .zip(&self.used)
            .filter(|(_, u)| !**u)
            .map(|(i, _)| *i)
            .collect();
        if rest.is_empty() {
            Ok(())
        } else {
            err(
                self.line,
                format!(
                    "`{}`: unsupported modifier{} .{}",
                    self.opcode,
                    if rest.len() > 1 { "s" } else { "" },
                    rest.join(" .")
                ),
            )
        }
    }
}

/// Per-function state while its body is parsed.
struct FnBuilder {
    func: Function,
    scopes: Vec<HashMap<String, Reg>>,
    labels: HashMap<String, u32>,
    fixups: Vec<(usize, String, u32)>,
    local_names: HashMap<String, u32>,
    symbol_index: HashMap<String, u32>,
    loc: SourceLoc,
}

impl FnBuilder {
    fn lookup_reg(&self, name: &str) -> Option<Reg> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }

    fn declare_reg(&mut self, name: String, ty: Ty) {
        let r = self.func.regs.len() as Reg;
        self.func.regs.push((name.clone(), ty));
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name, r);
        }
    }
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<&'t Token> {
        self.toks.get(self.pos)
    }

    fn line(&self) -> u32 {
        self.peek()
            .map(|t| t.line)
            .unwrap_or_else(|| self.toks.last().map(|t| t.line).unwrap_or(1))
    }

    fn next(&mut self) -> PResult<&'t Token> {
        let line = self.line();
        let t = self.toks.get(self.pos).ok_or(ParseError {
            line,
            message: "unexpected end of PTX".into(),
        })?;
        self.pos += 1;
        Ok(t)
    }

    fn is_punct(&self, c: char) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Punct(p), .. }) if *p == c)
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> PResult<()> {
        let line = self.line();
        if self.eat_punct(c) {
            Ok(())
        } else {
            err(line, format!("expected `{c}`, found {}", self.describe()))
        }
    }

    fn describe(&self) -> String {
        match self.peek() {
            Some(Token {
                tok: Tok::Word(w), ..
            }) => format!("`{w}`"),
            Some(Token {
                tok: Tok::Punct(p), ..
            }) => format!("`{p}`"),
            Some(Token {
                tok: Tok::Str(s), ..
            }) => format!("\"{s}\""),
            None => "the end of the PTX".into(),
        }
    }

    fn word(&mut self) -> PResult<&'t str> {
        let line = self.line();
        match self.next()? {
            Token {
                tok: Tok::Word(w), ..
            } => Ok(w),
            _ => {
                self.pos -= 1;
                err(line, format!("expected a name, found {}", self.describe()))
            }
        }
    }

    fn peek_word(&self) -> Option<&'t str> {
        match self.peek() {
            Some(Token {
                tok: Tok::Word(w), ..
            }) => Some(w),
            _ => None,
        }
    }

    fn number(&mut self) -> PResult<u64> {
        let line = self.line();
        let w = self.word()?;
        match parse_literal(w) {
            Some(Literal::Int(v)) => Ok(v),
            _ => err(line, format!("expected an integer, found `{w}`")),
        }
    }

    /// Skip the rest of the current line (directives without a terminator: `.loc`, `.file`, ...).
    fn skip_line(&mut self, line: u32) {
        while self.peek().is_some_and(|t| t.line == line) {
            self.pos += 1;
        }
    }

    /// Skip a balanced `{ ... }` block (debug sections).
    fn skip_block(&mut self) -> PResult<()> {
        self.expect_punct('{')?;
        let mut depth = 1;
        while depth > 0 {
            match self.next()?.tok {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => depth -= 1,
                _ => {}
            }
        }
        Ok(())
    }

    fn parse_module(&mut self) -> PResult<()> {
        while let Some(tok) = self.peek() {
            let line = tok.line;
            let Tok::Word(w) = &tok.tok else {
                return err(
                    line,
                    format!("unexpected {} at module scope", self.describe()),
                );
            };
            match w.as_str() {
                ".version" => {
                    self.pos += 1;
                    let v = self.word()?;
                    let (a, b) = v.split_once('.').unwrap_or((v, "0"));
                    self.module.version = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
                }
                ".target" => {
                    self.pos += 1;
                    self.module.target = self.word()?.to_string();
                    self.skip_line(line);
                }
                ".address_size" => {
                    self.pos += 1;
                    let size = self.number()?;
                    if size != 64 {
                        return err(line, format!(".address_size {size}: only 64 is supported"));
                    }
                }
                ".file" => {
                    self.pos += 1;
                    let n = self.number()? as u32;
                    if let Some(Token {
                        tok: Tok::Str(path),
                        ..
                    }) = self.peek()
                    {
                        self.module.files.insert(n, path.clone());
                    }
                    self.skip_line(line);
                }
                ".section" => {
                    self.pos += 1;
                    self.word()?;
                    self.skip_block()?;
                }
                ".pragma" => {
                    self.pos += 1;
                    self.skip_to_semicolon()?;
                }
                ".visible" | ".extern" | ".weak" | ".common" | ".entry" | ".func" | ".global"
                | ".const" | ".shared" | ".local" => self.parse_declaration()?,
                _ => return err(line, format!("unsupported module-scope directive `{w}`")),
            }
        }
        Ok(())
    }

    fn skip_to_semicolon(&mut self) -> PResult<()> {
        while !self.eat_punct(';') {
            self.next()?;
        }
        Ok(())
    }

    fn parse_declaration(&mut self) -> PResult<()> {
        let line = self.line();
        let mut is_extern = false;
        loop {
            match self.peek_word() {
                Some(".visible") | Some(".weak") | Some(".common") => self.pos += 1,
                Some(".extern") => {
                    is_extern = true;
                    self.pos += 1;
                }
                _ => break,
            }
        }
        match self.peek_word() {
            Some(".entry") => {
                self.pos += 1;
                self.parse_function(true, line)
            }
            Some(".func") => {
                self.pos += 1;
                self.parse_function(false, line)
            }
            Some(_) => {
                let var = self.parse_variable(is_extern)?;
                let index = self.module.variables.len() as u32;
                self.module_names
                    .insert(var.name.clone(), ModuleName::Variable(index));
                self.module.variables.push(var);
                Ok(())
            }
            None => err(line, "expected a declaration"),
        }
    }

    /// `.space [.align N] [.vN] .type name[dims...] [= init];` (the linkage already consumed).
    fn parse_variable(&mut self, is_extern: bool) -> PResult<Variable> {
        let line = self.line();
        let space_word = self.word()?;
        let space = space_word
            .strip_prefix('.')
            .and_then(Space::parse)
            .ok_or_else(|| ParseError {
                line,
                message: format!("unsupported variable state space `{space_word}`"),
            })?;
        let mut align = 0u32;
        let mut vector = 1u32;
        let ty = loop {
            let w = self.word()?;
            match w {
                ".align" => align = self.number()? as u32,
                ".v2" => vector = 2,
                ".v4" => vector = 4,
                ".v8" => vector = 8,
                ".ptr" | ".global" | ".shared" | ".const" | ".local" => {}
                _ if w.starts_with('.') => {
                    break Ty::parse(&w[1..]).ok_or_else(|| ParseError {
                        line,
                        message: format!("unsupported variable type `{w}`"),
                    })?;
                }
                _ => return err(line, format!("expected a variable type, found `{w}`")),
            }
        };
        let name = self.word()?.to_string();
        let elem = ty.bytes() as u64 * vector as u64;
        let mut count = 1u64;
        let mut unsized_array = false;
        while self.eat_punct('[') {
            if self.eat_punct(']') {
                unsized_array = true;
            } else {
                count = count.saturating_mul(self.number()?);
                self.expect_punct(']')?;
            }
        }
        if align == 0 {
            align = elem as u32;
        }
        let mut init = None;
        if self.eat_punct('=') {
            let mut values = Vec::new();
            self.parse_initializer(&mut values)?;
            let mut bytes = Vec::new();
            for v in values {
                let bits = literal_bits(v, ty);
                bytes.extend_from_slice(&bits.to_le_bytes()[..ty.bytes() as usize]);
            }
            if unsized_array {
                count = (bytes.len() as u64) / elem.max(1);
                unsized_array = false;
            }
            bytes.resize((elem * count) as usize, 0);
            init = Some(bytes);
        }
        self.expect_punct(';')?;
        Ok(Variable {
            name,
            space,
            align: align.max(1),
            size: if unsized_array { 0 } else { elem * count },
            is_extern: is_extern || unsized_array,
            init,
        })
    }

    fn parse_initializer(&mut self, out: &mut Vec<Literal>) -> PResult<()> {
        if self.eat_punct('{') {
            loop {
                self.parse_initializer(out)?;
                if !self.eat_punct(',') {
                    break;
                }
            }
            self.expect_punct('}')
        } else {
            let line = self.line();
            let neg = self.eat_punct('-');
            let w = self.word()?;
            let lit = parse_literal(w).ok_or_else(|| ParseError {
                line,
                message: format!("unsupported initializer `{w}`"),
            })?;
            out.push(if neg { negate(lit) } else { lit });
            Ok(())
        }
    }

    /// `( .param [.align N] .type name[N], ... )`
    fn parse_params(&mut self) -> PResult<(Vec<Param>, u32)> {
        let mut params = Vec::new();
        let mut offset = 0u32;
        self.expect_punct('(')?;
        if self.eat_punct(')') {
            return Ok((params, 0));
        }
        loop {
            let line = self.line();
            let space = self.word()?;
            if space != ".param" && space != ".reg" {
                return err(line, format!("expected `.param`, found `{space}`"));
            }
            let mut align = 0u32;
            let ty;
            loop {
                let w = self.word()?;
                match w {
                    ".align" => align = self.number()? as u32,
                    ".ptr" | ".global" | ".shared" | ".const" | ".local" => {}
                    _ if w.starts_with('.') => {
                        ty = Some(Ty::parse(&w[1..]).ok_or_else(|| ParseError {
                            line,
                            message: format!("unsupported parameter type `{w}`"),
                        })?);
                        break;
                    }
                    _ => return err(line, format!("expected a parameter type, found `{w}`")),
                }
            }
            let ty = ty.unwrap();
            let name = self.word()?.to_string();
            let mut count = 1u32;
            while self.eat_punct('[') {
                count = count.saturating_mul(self.number()? as u32);
                self.expect_punct(']')?;
            }
            let size = ty.bytes() * count;
            let align = if align == 0 { ty.bytes() } else { align };
            offset = offset.next_multiple_of(align.max(1));
            params.push(Param {
                name,
                size,
                align,
                offset,
            });
            offset += size;
            if !self.eat_punct(',') {
                break;
            }
        }
        self.expect_punct(')')?;
        Ok((params, offset))
    }

    fn parse_function(&mut self, is_entry: bool, line: u32) -> PResult<()> {
        let mut rets = Vec::new();
        if !is_entry && self.is_punct('(') {
            rets = self.parse_params()?.0;
        }
        let name = self.word()?.to_string();
        let (params, param_bytes) = if self.is_punct('(') {
            self.parse_params()?
        } else {
            (Vec::new(), 0)
        };
        let mut func = Function {
            name: name.clone(),
            is_entry,
            params,
            rets,
            param_bytes,
            regs: Vec::new(),
            instrs: Vec::new(),
            locals: Vec::new(),
            symbols: Vec::new(),
            maxntid: None,
            reqntid: None,
            minnctapersm: None,
            maxnreg: None,
            line,
            defined: false,
        };
        // Performance directives.
        loop {
            let dline = self.line();
            match self.peek_word() {
                Some(".maxntid") | Some(".reqntid") => {
                    let which = self.word()?;
                    let mut dims = [1u32; 3];
                    for (i, d) in dims.iter_mut().enumerate() {
                        if i > 0 && !self.eat_punct(',') {
                            break;
                        }
                        *d = self.number()? as u32;
                    }
                    if which == ".maxntid" {
                        func.maxntid = Some(dims);
                    } else {
                        func.reqntid = Some(dims);
                    }
                }
                Some(".minnctapersm") => {
                    self.pos += 1;
                    func.minnctapersm = Some(self.number()? as u32);
                }
                Some(".maxnreg") => {
                    self.pos += 1;
                    func.maxnreg = Some(self.number()? as u32);
                }
                Some(".noreturn") => self.pos += 1,
                Some(".pragma") => {
                    self.pos += 1;
                    self.skip_to_semicolon()?;
                }
                Some(w) if w.starts_with('.') => {
                    return err(dline, format!("unsupported function directive `{w}`"))
                }
                _ => break,
            }
        }
        let index = self.module.functions.len() as u32;
        // A definition replaces an earlier prototype of the same name.
        let slot = match self.module_names.get(&name) {
            Some(ModuleName::Function(i)) if !self.module.functions[*i as usize].defined => *i,
            _ => {
                self.module_names
                    .insert(name.clone(), ModuleName::Function(index));
                self.module.functions.push(func.clone());
                index
            }
        };
        if self.eat_punct(';') {
            return Ok(());
        }
        let mut b = FnBuilder {
            func,
            scopes: Vec::new(),
            labels: HashMap::new(),
            fixups: Vec::new(),
            local_names: HashMap::new(),
            symbol_index: HashMap::new(),
            loc: SourceLoc::default(),
        };
        self.parse_body(&mut b)?;
        for (at, label, fline) in std::mem::take(&mut b.fixups) {
            let target = *b.labels.get(&label).ok_or(ParseError {
                line: fline,
                message: format!("branch to unknown label `{label}`"),
            })?;
            if let Op::Bra { target: t } = &mut b.func.instrs[at].op {
                *t = target;
            }
        }
        b.func.defined = true;
        self.module.functions[slot as usize] = b.func;
        Ok(())
    }

    fn parse_body(&mut self, b: &mut FnBuilder) -> PResult<()> {
        self.expect_punct('{')?;
        b.scopes.push(HashMap::new());
        while !b.scopes.is_empty() {
            let line = self.line();
            let tok = self.next()?;
            match &tok.tok {
                Tok::Punct('{') => b.scopes.push(HashMap::new()),
                Tok::Punct('}') => {
                    b.scopes.pop();
                }
                Tok::Punct('@') => {
                    let negated = self.eat_punct('!');
                    let pname = self.word()?;
                    let reg = b.lookup_reg(pname).ok_or_else(|| ParseError {
                        line,
                        message: format!("unknown guard predicate `{pname}`"),
                    })?;
                    let opcode = self.word()?;
                    self.parse_instruction(b, opcode, Some((reg, negated)), line)?;
                }
                Tok::Word(w) if w.starts_with('.') => self.parse_body_directive(b, w, line)?,
                Tok::Word(w) if self.is_punct(':') => {
                    self.pos += 1;
                    // A call prototype declaration: `name: .callprototype ...;`
                    if self.peek_word() == Some(".callprototype") {
                        self.skip_to_semicolon()?;
                    } else {
                        b.labels.insert(w.clone(), b.func.instrs.len() as u32);
                    }
                }
                Tok::Word(w) => self.parse_instruction(b, w, None, line)?,
                _ => {
                    return err(
                        line,
                        format!("unexpected `{:?}` in a function body", tok.tok),
                    )
                }
            }
        }
        Ok(())
    }

    fn parse_body_directive(&mut self, b: &mut FnBuilder, w: &str, line: u32) -> PResult<()> {
        match w {
            // The state space and the type may be one word, `.reg.b32` (inline asm in CUDA's fp16
            // headers writes them so).
            _ if w == ".reg" || w.starts_with(".reg.") => {
                let mut attached = w[".reg".len()..]
                    .split('.')
                    .filter(|p| !p.is_empty())
                    .map(|p| format!(".{p}"))
                    .collect::<Vec<_>>()
                    .into_iter();
                let ty;
                let mut vector = 1;
                loop {
                    let t = match attached.next() {
                        Some(t) => t,
                        None => self.word()?.to_string(),
                    };
                    match t.as_str() {
                        ".v2" => vector = 2,
                        ".v4" => vector = 4,
                        _ => {
                            ty = Ty::parse(t.trim_start_matches('.'));
                            break;
                        }
                    }
                }
                let ty = ty.ok_or_else(|| ParseError {
                    line,
                    message: "unsupported register type".into(),
                })?;
                if vector != 1 {
                    return err(line, "vector registers are not supported");
                }
                loop {
                    let name = self.word()?.to_string();
                    if self.eat_punct('<') {
                        let n = self.number()?;
                        self.expect_punct('>')?;
                        for i in 0..n {
                            b.declare_reg(format!("{name}{i}"), ty);
                        }
                    } else {
                        b.declare_reg(name, ty);
                    }
                    if !self.eat_punct(',') {
                        break;
                    }
                }
                self.expect_punct(';')
            }
            ".shared" | ".local" | ".param" | ".const" | ".global" => {
                self.pos -= 1;
                let var = self.parse_variable(false)?;
                if matches!(var.space, Space::Const | Space::Global) {
                    return err(
                        line,
                        "function-scope .const/.global variables are not supported",
                    );
                }
                let index = b.func.locals.len() as u32;
                b.local_names.insert(var.name.clone(), index);
                b.func.locals.push(var);
                Ok(())
            }
            ".loc" => {
                let file = self.number()? as u32;
                let l = self.number()? as u32;
                let mut loc = SourceLoc {
                    file,
                    line: l,
                    ..SourceLoc::default()
                };
                // `.loc f l c, function_name $L..., inlined_at f2 l2 c2`
                while self.peek().is_some_and(|t| t.line == line) {
                    if self.peek_word() == Some("inlined_at") {
                        self.pos += 1;
                        loc.inlined_file = self.number()? as u32;
                        loc.inlined_line = self.number()? as u32;
                    } else {
                        self.pos += 1;
                    }
                }
                b.loc = loc;
                Ok(())
            }
            ".pragma" => self.skip_to_semicolon(),
            _ => err(
                line,
                format!("unsupported directive `{w}` in a function body"),
            ),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Operands
    // ---------------------------------------------------------------------------------------

    fn parse_operands(&mut self) -> PResult<Vec<Raw>> {
        let mut out = Vec::new();
        if self.eat_punct(';') {
            return Ok(out);
        }
        loop {
            out.push(self.parse_operand()?);
            if self.eat_punct(';') {
                return Ok(out);
            }
            self.expect_punct(',')?;
        }
    }

    fn parse_operand(&mut self) -> PResult<Raw> {
        let line = self.line();
        if self.eat_punct('{') {
            let mut items = Vec::new();
            loop {
                items.push(self.parse_operand()?);
                if self.eat_punct('}') {
                    return Ok(Raw::Vector(items));
                }
                self.expect_punct(',')?;
            }
        }
        if self.eat_punct('(') {
            let mut items = Vec::new();
            if self.eat_punct(')') {
                return Ok(Raw::List(items));
            }
            loop {
                items.push(self.parse_operand()?);
                if self.eat_punct(')') {
                    return Ok(Raw::List(items));
                }
                self.expect_punct(',')?;
            }
        }
        if self.eat_punct('[') {
            let mut base = None;
            let mut offset = 0i64;
            let neg = self.eat_punct('-');
            let w = self.word()?;
            match parse_literal(w) {
                Some(Literal::Int(v)) => offset = if neg { -(v as i64) } else { v as i64 },
                _ if !neg => base = Some(w.to_string()),
                _ => return err(line, format!("bad address `-{w}`")),
            }
            while self.is_punct('+') || self.is_punct('-') {
                let mut negative = self.is_punct('-');
                self.pos += 1;
                if self.eat_punct('-') {
                    negative = !negative;
                }
                let v = self.number()? as i64;
                offset = offset.wrapping_add(if negative { -v } else { v });
            }
            self.expect_punct(']')?;
            return Ok(Raw::Addr(RawAddr { base, offset }));
        }
        if self.eat_punct('!') {
            return Ok(Raw::NotName(self.word()?.to_string()));
        }
        if self.eat_punct('-') {
            let w = self.word()?;
            let lit = parse_literal(w).ok_or_else(|| ParseError {
                line,
                message: format!("bad literal `-{w}`"),
            })?;
            return Ok(Raw::Lit(negate(lit)));
        }
        let w = self.word()?;
        if w == "_" {
            return Ok(Raw::Sink);
        }
        if let Some(lit) = parse_literal(w) {
            return Ok(Raw::Lit(lit));
        }
        let first = Raw::Name(w.to_string());
        if self.eat_punct('|') {
            let second = self.parse_operand()?;
            return Ok(Raw::Pair(Box::new(first), Box::new(second)));
        }
        Ok(first)
    }

    fn symbol(&mut self, b: &mut FnBuilder, name: &str) -> Option<u32> {
        if let Some(&i) = b.symbol_index.get(name) {
            return Some(i);
        }
        let target = if let Some(&i) = b.local_names.get(name) {
            SymbolTarget::Local(i)
        } else if let Some(i) = b.func.params.iter().position(|p| p.name == name) {
            SymbolTarget::Param(i as u32)
        } else if let Some(i) = b.func.rets.iter().position(|p| p.name == name) {
            SymbolTarget::Ret(i as u32)
        } else {
            match self.module_names.get(name)? {
                ModuleName::Variable(i) => SymbolTarget::Module(*i),
                ModuleName::Function(i) => SymbolTarget::Function(*i),
            }
        };
        let index = b.func.symbols.len() as u32;
        b.func.symbols.push(target);
        b.symbol_index.insert(name.to_string(), index);
        Some(index)
    }

    /// A source operand of type `ty`.
    fn src(&mut self, b: &mut FnBuilder, raw: &Raw, ty: Ty, line: u32) -> PResult<Operand> {
        match raw {
            Raw::Lit(l) => Ok(Operand::Imm(literal_bits(*l, ty))),
            Raw::Name(n) => {
                if let Some(r) = b.lookup_reg(n) {
                    return Ok(Operand::Reg(r));
                }
                if n.starts_with('%') {
                    if let Some(s) = Special::parse(n) {
                        return Ok(Operand::Special(s));
                    }
                }
                if let Some(s) = self.symbol(b, n) {
                    return Ok(Operand::Symbol(s));
                }
                err(line, format!("unknown operand `{n}`"))
            }
            Raw::NotName(n) => match b.lookup_reg(n) {
                Some(r) => Ok(Operand::NotReg(r)),
                None => err(line, format!("unknown predicate `{n}`")),
            },
            Raw::Vector(items) => {
                let n = items.len() as u32;
                let elem = match ty.bits() / n.max(1) {
                    8 => Ty::B8,
                    16 => Ty::B16,
                    32 => Ty::B32,
                    _ => ty,
                };
                let items = items
                    .iter()
                    .map(|i| self.src(b, i, elem, line))
                    .collect::<PResult<Vec<_>>>()?;
                Ok(Operand::Vector(items))
            }
            Raw::Sink => Ok(Operand::Sink),
            _ => err(line, "unexpected operand form"),
        }
    }

    /// A vector operand whose elements each have type `elem` (loads, stores, mma fragments).
    fn vec_src(&mut self, b: &mut FnBuilder, raw: &Raw, elem: Ty, line: u32) -> PResult<Operand> {
        match raw {
            Raw::Vector(items) => {
                let items = items
                    .iter()
                    .map(|i| self.src(b, i, elem, line))
                    .collect::<PResult<Vec<_>>>()?;
                Ok(Operand::Vector(items))
            }
            other => self.src(b, other, elem, line),
        }
    }

    /// A destination: a register, a vector of registers, or `_`.
    fn dst(&mut self, b: &mut FnBuilder, raw: &Raw, line: u32) -> PResult<Operand> {
        match raw {
            Raw::Name(n) => match b.lookup_reg(n) {
                Some(r) => Ok(Operand::Reg(r)),
                None => err(line, format!("`{n}` is not a register")),
            },
            Raw::Vector(items) => Ok(Operand::Vector(
                items
                    .iter()
                    .map(|i| self.dst(b, i, line))
                    .collect::<PResult<Vec<_>>>()?,
            )),
            Raw::Sink => Ok(Operand::Sink),
            _ => err(line, "a destination must be a register"),
        }
    }

    fn addr(&mut self, b: &mut FnBuilder, raw: &Raw, line: u32) -> PResult<Address> {
        let Raw::Addr(a) = raw else {
            return err(line, "expected an address `[...]`");
        };
        let base = match &a.base {
            None => AddrBase::Zero,
            Some(n) => {
                if let Some(r) = b.lookup_reg(n) {
                    AddrBase::Reg(r)
                } else if let Some(s) = self.symbol(b, n) {
                    AddrBase::Symbol(s)
                } else {
                    return err(line, format!("unknown address base `{n}`"));
                }
            }
        };
        Ok(Address {
            base,
            offset: a.offset,
        })
    }

    // ---------------------------------------------------------------------------------------
    // Instructions
    // ---------------------------------------------------------------------------------------

    fn parse_instruction(
        &mut self,
        b: &mut FnBuilder,
        opcode: &str,
        guard: Option<(Reg, bool)>,
        line: u32,
    ) -> PResult<()> {
        let ops = self.parse_operands()?;
        let (head, mut m) = ModList::new(opcode, line);
        let n = ops.len();
        let want = |count: usize| -> PResult<()> {
            if n == count {
                Ok(())
            } else {
                err(
                    line,
                    format!("`{opcode}` takes {count} operands, found {n}"),
                )
            }
        };
        let op = match head {
            "mov" => {
                want(2)?;
                let ty = m.ty()?;
                let d = self.dst(b, &ops[0], line)?;
                let a = self.src(b, &ops[1], ty, line)?;
                Op::Mov { ty, d, a }
            }
            "abs" | "neg" | "not" | "cnot" | "popc" | "clz" | "brev" | "bfind" | "sqrt"
            | "rsqrt" | "rcp" | "ex2" | "lg2" | "sin" | "cos" | "tanh" => {
                want(2)?;
                let op = match head {
                    "abs" => UnOp::Abs,
                    "neg" => UnOp::Neg,
                    "not" => UnOp::Not,
                    "cnot" => UnOp::Cnot,
                    "popc" => UnOp::Popc,
                    "clz" => UnOp::Clz,
                    "brev" => UnOp::Brev,
                    "bfind" => UnOp::Bfind,
                    "sqrt" => UnOp::Sqrt,
                    "rsqrt" => UnOp::Rsqrt,
                    "rcp" => UnOp::Rcp,
                    "ex2" => UnOp::Ex2,
                    "lg2" => UnOp::Lg2,
                    "sin" => UnOp::Sin,
                    "cos" => UnOp::Cos,
                    _ => UnOp::Tanh,
                };
                let mods = Mods {
                    rnd: m.rounding(),
                    ftz: m.has("ftz"),
                    approx: m.has("approx"),
                    shiftamt: m.has("shiftamt"),
                    ..Mods::default()
                };
                let ty = m.ty()?;
                let d = self.dst(b, &ops[0], line)?;
                let a = self.src(b, &ops[1], ty, line)?;
                if ty.is_float()
                    && matches!(
                        op,
                        UnOp::Ex2 | UnOp::Lg2 | UnOp::Sin | UnOp::Cos | UnOp::Tanh
                    )
                    && !mods.approx
                {
                    return err(line, format!("`{opcode}`: only the .approx form exists"));
                }
                Op::Un {
                    op,
                    ty,
                    m: mods,
                    d,
                    a,
                }
            }
            "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor"
            | "shl" | "shr" | "copysign" | "addc" | "subc" | "mul24" => {
                want(3)?;
                let op = match head {
                    "add" => BinOp::Add,
                    "sub" => BinOp::Sub,
                    "addc" => BinOp::Addc,
                    "subc" => BinOp::Subc,
                    "mul" => BinOp::Mul,
                    "div" => BinOp::Div,
                    "rem" => BinOp::Rem,
                    "min" => BinOp::Min,
                    "max" => BinOp::Max,
                    "and" => BinOp::And,
                    "or" => BinOp::Or,
                    "xor" => BinOp::Xor,
                    "shl" => BinOp::Shl,
                    "shr" => BinOp::Shr,
                    "copysign" => BinOp::Copysign,
                    _ => BinOp::Mul24,
                };
                let mods = Mods {
                    rnd: m.rounding(),
                    ftz: m.has("ftz"),
                    sat: m.has("sat"),
                    approx: m.has("approx"),
                    full: m.has("full"),
                    nan: m.has("NaN"),
                    relu: m.has("relu"),
                    cc: m.has("cc"),
                    mul: m.one_of(&["lo", "hi", "wide"]).map(|x| match x {
                        "lo" => MulMode::Lo,
                        "hi" => MulMode::Hi,
                        _ => MulMode::Wide,
                    }),
                    ..Mods::default()
                };
                let ty = m.ty()?;
                let d = self.dst(b, &ops[0], line)?;
                // Shift amounts are always 32-bit.
                let bty = if matches!(op, BinOp::Shl | BinOp::Shr) {
                    Ty::U32
                } else {
                    ty
                };
                let a = self.src(b, &ops[1], ty, line)?;
                let bb = self.src(b, &ops[2], bty, line)?;
                if op == BinOp::Div
                    && ty == Ty::F32
                    && mods.rnd.is_none()
                    && !mods.approx
                    && !mods.full
                {
                    return err(line, "`div.f32` needs .rn/.rz/.rm/.rp, .approx or .full");
                }
                Op::Bin {
                    op,
                    ty,
                    m: mods,
                    d,
                    a,
                    b: bb,
                }
            }
            "fma" | "mad" | "madc" | "mad24" | "sad" | "bfe" | "prmt" | "shf" | "dp4a" | "dp2a" => {
                want(4)?;
                let mods = Mods {
                    rnd: m.rounding(),
                    ftz: m.has("ftz"),
                    sat: m.has("sat"),
                    relu: m.has("relu"),
                    nan: m.has("NaN"),
                    cc: m.has("cc"),
                    mul: m.one_of(&["lo", "hi", "wide"]).map(|x| match x {
                        "lo" => MulMode::Lo,
                        "hi" => MulMode::Hi,
                        _ => MulMode::Wide,
                    }),
                    ..Mods::default()
                };
                let (op, tys): (TernOp, [Ty; 3]) = match head {
                    "fma" => {
                        let t = m.ty()?;
                        if !t.is_float() {
                            return err(line, "`fma` takes a floating-point type");
                        }
                        (TernOp::Fma, [t, t, t])
                    }
                    "mad" | "madc" | "mad24" => {
                        let t = m.ty()?;
                        let wide_t = match (mods.mul, t) {
                            (Some(MulMode::Wide), Ty::U16) => Ty::U32,
                            (Some(MulMode::Wide), Ty::S16) => Ty::S32,
                            (Some(MulMode::Wide), Ty::U32) => Ty::U64,
                            (Some(MulMode::Wide), Ty::S32) => Ty::S64,
                            _ => t,
                        };
                        let op = match head {
                            "mad" => TernOp::Mad,
                            "madc" => TernOp::Madc,
                            _ => TernOp::Mad24,
                        };
                        (op, [t, t, wide_t])
                    }
                    "sad" => {
                        let t = m.ty()?;
                        (TernOp::Sad, [t, t, t])
                    }
                    "bfe" => {
                        let t = m.ty()?;
                        (TernOp::Bfe, [t, Ty::U32, Ty::U32])
                    }
                    "prmt" => {
                        let mode = match m.one_of(&["f4e", "b4e", "rc8", "ecl", "ecr", "rc16"]) {
                            None => PrmtMode::Default,
                            Some("f4e") => PrmtMode::F4e,
                            Some("b4e") => PrmtMode::B4e,
                            Some("rc8") => PrmtMode::Rc8,
                            Some("ecl") => PrmtMode::Ecl,
                            Some("ecr") => PrmtMode::Ecr,
                            _ => PrmtMode::Rc16,
                        };
                        let t = m.ty()?;
                        (TernOp::Prmt(mode), [t, t, t])
                    }
                    "shf" => {
                        let left = match m.one_of(&["l", "r"]) {
                            Some("l") => true,
                            Some(_) => false,
                            None => return err(line, "`shf` needs .l or .r"),
                        };
                        let clamp = match m.one_of(&["wrap", "clamp"]) {
                            Some("clamp") => true,
                            Some(_) => false,
                            None => return err(line, "`shf` needs .wrap or .clamp"),
                        };
                        let t = m.ty()?;
                        let op = if left {
                            TernOp::ShfL(clamp)
                        } else {
                            TernOp::ShfR(clamp)
                        };
                        (op, [t, t, Ty::U32])
                    }
                    "dp4a" | "dp2a" => {
                        let half = if head == "dp2a" {
                            m.one_of(&["lo", "hi"])
                        } else {
                            None
                        };
                        let tys = m.tys();
                        if tys.len() != 2 {
                            return err(line, format!("`{opcode}`: expected two types"));
                        }
                        let (sa, sb) = (tys[0].is_signed(), tys[1].is_signed());
                        let op = match (head, half) {
                            ("dp4a", _) => TernOp::Dp4a(sa, sb),
                            (_, Some("hi")) => TernOp::Dp2aHi(sa, sb),
                            _ => TernOp::Dp2aLo(sa, sb),
                        };
                        let ct = if sa || sb { Ty::S32 } else { Ty::U32 };
                        (op, [Ty::B32, Ty::B32, ct])
                    }
                    _ => unreachable!(),
                };
                let d = self.dst(b, &ops[0], line)?;
                let a = self.src(b, &ops[1], tys[0], line)?;
                let bb = self.src(b, &ops[2], tys[1], line)?;
                let c = self.src(b, &ops[3], tys[2], line)?;
                let ty = match op {
                    TernOp::Dp4a(..) | TernOp::Dp2aLo(..) | TernOp::Dp2aHi(..) => tys[2],
                    _ => tys[0],
                };
                if op == TernOp::Fma
                    && mods.rnd.is_none()
                    && ty != Ty::F16
                    && ty != Ty::Bf16
                    && ty != Ty::F16x2
                    && ty != Ty::Bf16x2
                {
                    return err(line, "`fma` needs a rounding modifier");
                }
                Op::Tern {
                    op,
                    ty,
                    m: mods,
                    d,
                    a,
                    b: bb,
                    c,
                }
            }
            "bfi" => {
                want(5)?;
                let ty = m.ty()?;
                Op::Bfi {
                    ty,
                    d: self.dst(b, &ops[0], line)?,
                    f: self.src(b, &ops[1], ty, line)?,
                    b: self.src(b, &ops[2], ty, line)?,
                    pos: self.src(b, &ops[3], Ty::U32, line)?,
                    len: self.src(b, &ops[4], Ty::U32, line)?,
                }
            }
            "lop3" => {
                want(5)?;
                m.ty()?;
                let lut = match &ops[4] {
                    Raw::Lit(Literal::Int(v)) if *v <= 255 => *v as u8,
                    _ => return err(line, "`lop3`: the LUT must be an immediate 0..255"),
                };
                Op::Lop3 {
                    d: self.dst(b, &ops[0], line)?,
                    a: self.src(b, &ops[1], Ty::B32, line)?,
                    b: self.src(b, &ops[2], Ty::B32, line)?,
                    c: self.src(b, &ops[3], Ty::B32, line)?,
                    lut,
                }
            }
            "selp" => {
                want(4)?;
                let ty = m.ty()?;
                Op::Selp {
                    ty,
                    d: self.dst(b, &ops[0], line)?,
                    a: self.src(b, &ops[1], ty, line)?,
                    b: self.src(b, &ops[2], ty, line)?,
                    c: self.src(b, &ops[3], Ty::Pred, line)?,
                }
            }
            "slct" => {
                want(4)?;
                let ftz = m.has("ftz");
                let tys = m.tys();
                if tys.len() != 2 {
                    return err(line, "`slct` takes two types");
                }
                Op::Slct {
                    ty: tys[0],
                    cty: tys[1],
                    ftz,
                    d: self.dst(b, &ops[0], line)?,
                    a: self.src(b, &ops[1], tys[0], line)?,
                    b: self.src(b, &ops[2], tys[0], line)?,
                    c: self.src(b, &ops[3], tys[1], line)?,
                }
            }
            "setp" | "set" => {
                let cmp = parse_cmp(&mut m).ok_or(ParseError {
                    line,
                    message: format!("`{opcode}`: missing comparison"),
                })?;
                let combine = m.one_of(&["and", "or", "xor"]).map(|c| match c {
                    "and" => BoolOp::And,
                    "or" => BoolOp::Or,
                    _ => BoolOp::Xor,
                });
                let ftz = m.has("ftz");
                let expected = if combine.is_some() { 4 } else { 3 };
                want(expected)?;
                let tys = m.tys();
                let (dty, ty) = match (head, tys.as_slice()) {
                    ("setp", [t]) => (Ty::Pred, *t),
                    ("set", [d, t]) => (*d, *t),
                    _ => return err(line, format!("`{opcode}`: wrong types")),
                };
                let (first, second) = match &ops[0] {
                    Raw::Pair(p, q) => (self.dst(b, p, line)?, self.dst(b, q, line)?),
                    other => (self.dst(b, other, line)?, Operand::Sink),
                };
                let a = self.src(b, &ops[1], ty, line)?;
                let bb = self.src(b, &ops[2], ty, line)?;
                let c = if combine.is_some() {
                    self.src(b, &ops[3], Ty::Pred, line)?
                } else {
                    Operand::Imm(1)
                };
                if head == "setp" {
                    Op::Setp {
                        cmp,
                        ty,
                        ftz,
                        combine,
                        p: first,
                        q: second,
                        a,
                        b: bb,
                        c,
                    }
                } else {
                    Op::Set {
                        cmp,
                        dty,
                        ty,
                        ftz,
                        combine,
                        d: first,
                        a,
                        b: bb,
                        c,
                    }
                }
            }
            "testp" => {
                want(2)?;
                let class = match m.one_of(&[
                    "finite",
                    "infinite",
                    "number",
                    "notanumber",
                    "normal",
                    "subnormal",
                ]) {
                    Some("finite") => TestClass::Finite,
                    Some("infinite") => TestClass::Infinite,
                    Some("number") => TestClass::Number,
                    Some("notanumber") => TestClass::NotANumber,
                    Some("normal") => TestClass::Normal,
                    Some(_) => TestClass::Subnormal,
                    None => return err(line, "`testp`: missing class"),
                };
                let ty = m.ty()?;
                Op::Testp {
                    class,
                    ty,
                    d: self.dst(b, &ops[0], line)?,
                    a: self.src(b, &ops[1], ty, line)?,
                }
            }
            "cvt" => {
                let rnd = m.rounding();
                let irnd = m.int_rounding();
                let mods = Mods {
                    rnd: rnd.or(irnd),
                    ftz: m.has("ftz"),
                    sat: m.has("sat"),
                    relu: m.has("relu"),
                    ..Mods::default()
                };
                let tys = m.tys();
                let [dty, sty] = tys.as_slice() else {
                    return err(line, format!("`{opcode}`: expected two types"));
                };
                let (dty, sty) = (*dty, *sty);
                if dty == Ty::E4m3x2 {
                    // `cvt.rn.satfinite{.relu}.e4m3x2.f32 d, a, b` (sm_89+): the ISA's only form.
                    if sty != Ty::F32 || rnd != Some(Rounding::Nearest) || !m.has("satfinite") {
                        return err(
                            line,
                            format!("`{opcode}`: e4m3x2 needs .rn.satfinite and .f32"),
                        );
                    }
                } else if sty == Ty::E4m3x2 {
                    return err(line, format!("`{opcode}`: unsupported e4m3x2 conversion"));
                }
                let packed = matches!(dty, Ty::F16x2 | Ty::Bf16x2 | Ty::E4m3x2);
                want(if packed { 3 } else { 2 })?;
                let d = self.dst(b, &ops[0], line)?;
                let a = self.src(b, &ops[1], sty, line)?;
                let bb = if packed {
                    Some(self.src(b, &ops[2], sty, line)?)
                } else {
                    None
                };
                Op::Cvt {
                    dty,
                    sty,
                    m: mods,
                    int_round: irnd.is_some(),
                    d,
                    a,
                    b: bb,
                }
            }
            "cvta" => {
                want(2)?;
                let to = m.has("to");
                let space = m.space().ok_or(ParseError {
                    line,
                    message: "`cvta`: missing state space".into(),
                })?;
                let ty = m.ty()?;
                Op::Cvta {
                    to,
                    space,
                    d: self.dst(b, &ops[0], line)?,
                    a: self.src(b, &ops[1], ty, line)?,
                }
            }
            "isspacep" => {
                want(2)?;
                let space = m.space().ok_or(ParseError {
                    line,
                    message: "`isspacep`: missing state space".into(),
                })?;
                Op::Isspacep {
                    space,
                    d: self.dst(b, &ops[0], line)?,
                    a: self.src(b, &ops[1], Ty::U64, line)?,
                }
            }
            "ld" | "ldu" => {
                want(2)?;
                let (space, vector, ty) = m.memory()?;
                let d = self.dst(b, &ops[0], line)?;
                check_vector(&d, vector, line)?;
                Op::Ld {
                    space,
                    ty,
                    d,
                    addr: self.addr(b, &ops[1], line)?,
                }
            }
            "st" => {
                if n != 2 && n != 3 {
                    want(2)?;
                }
                let (space, vector, ty) = m.memory()?;
                let a = self.vec_src(b, &ops[1], ty, line)?;
                check_vector(&a, vector, line)?;
                Op::St {
                    space,
                    ty,
                    addr: self.addr(b, &ops[0], line)?,
                    a,
                }
            }
            "atom" | "red" => {
                m.ignore_hints();
                m.ignore(&["noftz"]);
                let space = m.space().unwrap_or(Space::Generic);
                let op = match m.one_of(&[
                    "add", "min", "max", "inc", "dec", "and", "or", "xor", "exch", "cas",
                ]) {
                    Some("add") => AtomOp::Add,
                    Some("min") => AtomOp::Min,
                    Some("max") => AtomOp::Max,
                    Some("inc") => AtomOp::Inc,
                    Some("dec") => AtomOp::Dec,
                    Some("and") => AtomOp::And,
                    Some("or") => AtomOp::Or,
                    Some("xor") => AtomOp::Xor,
                    Some("exch") => AtomOp::Exch,
                    Some("cas") => AtomOp::Cas,
                    _ => return err(line, format!("`{opcode}`: missing operation")),
                };
                let ty = m.ty()?;
                let has_d = head == "atom";
                let srcs = if op == AtomOp::Cas { 2 } else { 1 };
                want(srcs + 1 + usize::from(has_d))?;
                let mut i = 0;
                let d = if has_d {
                    i += 1;
                    Some(self.dst(b, &ops[0], line)?)
                } else {
                    None
                };
                let addr = self.addr(b, &ops[i], line)?;
                let bsrc = self.src(b, &ops[i + 1], ty, line)?;
                let c = if op == AtomOp::Cas {
                    Some(self.src(b, &ops[i + 2], ty, line)?)
                } else {
                    None
                };
                Op::Atom {
                    space,
                    op,
                    ty,
                    d,
                    addr,
                    b: bsrc,
                    c,
                }
            }
            "cp" => {
                if !m.has("async") {
                    return err(line, format!("unsupported instruction `{opcode}`"));
                }
                if m.has("commit_group") {
                    want(0)?;
                    Op::CpAsyncCommit
                } else if m.has("wait_group") {
                    want(1)?;
                    match &ops[0] {
                        Raw::Lit(Literal::Int(v)) => Op::CpAsyncWait { n: *v as u32 },
                        _ => return err(line, "`cp.async.wait_group` takes an immediate"),
                    }
                } else if m.has("wait_all") {
                    want(0)?;
                    Op::CpAsyncWait { n: 0 }
                } else {
                    let cg = m.one_of(&["ca", "cg"]).ok_or(ParseError {
                        line,
                        message: format!("`{opcode}`: needs .ca or .cg"),
                    })?;
                    let dst_space = m.space();
                    let src_space = m.space();
                    if dst_space != Some(Space::Shared) || src_space != Some(Space::Global) {
                        return err(line, format!("`{opcode}`: only .shared.global copies"));
                    }
                    let hint = m.has("L2::cache_hint");
                    m.ignore(&["L2::64B", "L2::128B", "L2::256B"]);
                    if !(3..=5).contains(&n) {
                        return err(line, format!("`{opcode}`: wrong operand count"));
                    }
                    let size = match &ops[2] {
                        Raw::Lit(Literal::Int(v)) if [4, 8, 16].contains(v) => *v as u32,
                        _ => return err(line, "cp.async size must be 4, 8 or 16"),
                    };
                    if cg == "cg" && size != 16 {
                        return err(line, "cp.async.cg copies 16 bytes");
                    }
                    let extra = n - 3 - usize::from(hint);
                    let mut src_size = None;
                    let mut ignore_src = None;
                    if extra == 1 {
                        let raw = &ops[3];
                        let is_pred = match raw {
                            Raw::Name(nm) | Raw::NotName(nm) => b
                                .lookup_reg(nm)
                                .is_some_and(|r| b.func.regs[r as usize].1 == Ty::Pred),
                            _ => false,
                        };
                        if is_pred {
                            ignore_src = Some(self.src(b, raw, Ty::Pred, line)?);
                        } else {
                            src_size = Some(self.src(b, raw, Ty::U32, line)?);
                        }
                    } else if extra != 0 {
                        return err(line, format!("`{opcode}`: wrong operand count"));
                    }
                    Op::CpAsync {
                        size,
                        dst: self.addr(b, &ops[0], line)?,
                        src: self.addr(b, &ops[1], line)?,
                        src_size,
                        ignore_src,
                    }
                }
            }
            "ldmatrix" => {
                want(2)?;
                m.has("sync");
                m.has("aligned");
                if !m.has("m8n8") {
                    return err(line, "`ldmatrix`: only .m8n8");
                }
                let num = match m.one_of(&["x1", "x2", "x4"]) {
                    Some("x1") => 1,
                    Some("x2") => 2,
                    Some("x4") => 4,
                    _ => return err(line, "`ldmatrix`: needs .x1, .x2 or .x4"),
                };
                let trans = m.has("trans");
                let space = m.space();
                if space != Some(Space::Shared) {
                    return err(line, "`ldmatrix`: only .shared");
                }
                if m.ty()? != Ty::B16 {
                    return err(line, "`ldmatrix`: only .b16");
                }
                let d = self.dst(b, &ops[0], line)?;
                check_vector(&d, num, line)?;
                Op::Ldmatrix {
                    num,
                    trans,
                    d,
                    addr: self.addr(b, &ops[1], line)?,
                }
            }
            "mma" => {
                want(4)?;
                if !m.has("sync") || !m.has("aligned") {
                    return err(line, "`mma`: only mma.sync.aligned");
                }
                let shape = match m.one_of(&["m16n8k32", "m16n8k16", "m16n8k8"]) {
                    Some("m16n8k32") => (16, 8, 32),
                    Some("m16n8k16") => (16, 8, 16),
                    Some(_) => (16, 8, 8),
                    None => return err(line, format!("`{opcode}`: unsupported shape")),
                };
                if !m.has("row") || !m.has("col") {
                    return err(line, "`mma`: only .row.col");
                }
                let mut tys = Vec::new();
                for _ in 0..4 {
                    let t =
                        m.one_of(&["f16", "bf16", "f32", "tf32", "e4m3"])
                            .ok_or(ParseError {
                                line,
                                message: format!("`{opcode}`: unsupported operand types"),
                            })?;
                    tys.push(match t {
                        "f16" => MmaType::F16,
                        "bf16" => MmaType::Bf16,
                        "f32" => MmaType::F32,
                        "e4m3" => MmaType::E4m3,
                        _ => MmaType::Tf32,
                    });
                }
                // The modifiers are parsed in order of first unused match, which is the written
                // order: dtype, atype, btype, ctype.
                let (dty, aty, bty, cty) = (tys[0], tys[1], tys[2], tys[3]);
                if aty != bty || aty == MmaType::F32 {
                    return err(line, format!("`{opcode}`: unsupported operand types"));
                }
                // The shapes each input type exists in (PTX ISA, mma.sync): k32 only for e4m3, which
                // accumulates in f32 only.
                let e4m3 = aty == MmaType::E4m3;
                if (shape.2 == 32) != e4m3 || (e4m3 && (dty != MmaType::F32 || cty != MmaType::F32))
                {
                    return err(line, format!("`{opcode}`: unsupported shape and type"));
                }
                let d = self.dst(b, &ops[0], line)?;
                let c_ty = if cty == MmaType::F32 {
                    Ty::F32
                } else {
                    Ty::B32
                };
                Op::Mma {
                    shape,
                    aty,
                    cty,
                    dty,
                    d,
                    a: self.vec_src(b, &ops[1], Ty::B32, line)?,
                    b: self.vec_src(b, &ops[2], Ty::B32, line)?,
                    c: self.vec_src(b, &ops[3], c_ty, line)?,
                }
            }
            "bra" => {
                want(1)?;
                m.has("uni");
                let Raw::Name(label) = &ops[0] else {
                    return err(line, "`bra` needs a label");
                };
                b.fixups.push((b.func.instrs.len(), label.clone(), line));
                Op::Bra { target: u32::MAX }
            }
            "call" => {
                m.has("uni");
                let mut it = ops.iter();
                let mut ret = Vec::new();
                let mut first = it.next();
                if let Some(Raw::List(items)) = first {
                    for i in items {
                        ret.push(self.src(b, i, Ty::B64, line)?);
                    }
                    first = it.next();
                }
                let Some(Raw::Name(fname)) = first else {
                    return err(line, "`call`: missing function name");
                };
                let func = match self.module_names.get(fname.as_str()) {
                    Some(ModuleName::Function(i)) => *i,
                    _ => return err(line, format!("`call` of unknown function `{fname}` (indirect calls are not supported)")),
                };
                let mut args = Vec::new();
                if let Some(Raw::List(items)) = it.next() {
                    for i in items {
                        args.push(self.src(b, i, Ty::B64, line)?);
                    }
                }
                Op::Call { func, ret, args }
            }
            "ret" => {
                m.has("uni");
                want(0)?;
                Op::Ret
            }
            "exit" => {
                want(0)?;
                Op::Exit
            }
            "trap" | "brkpt" => {
                want(0)?;
                Op::Trap
            }
            "bar" | "barrier" => {
                m.has("cta");
                m.has("aligned");
                let warp = m.has("warp");
                match m.one_of(&["sync", "arrive", "red"]) {
                    Some("sync") if warp => {
                        want(1)?;
                        Op::BarWarp {
                            mask: self.src(b, &ops[0], Ty::B32, line)?,
                        }
                    }
                    Some(kind @ ("sync" | "arrive")) if !warp => {
                        if !(1..=2).contains(&n) {
                            return err(line, format!("`{opcode}` takes 1 or 2 operands"));
                        }
                        Op::Bar {
                            kind: if kind == "arrive" {
                                BarKind::Arrive
                            } else {
                                BarKind::Sync
                            },
                            id: self.src(b, &ops[0], Ty::U32, line)?,
                            count: if n == 2 {
                                Some(self.src(b, &ops[1], Ty::U32, line)?)
                            } else {
                                None
                            },
                            d: None,
                            p: None,
                        }
                    }
                    Some("red") if !warp => {
                        let op = match m.one_of(&["popc", "and", "or"]) {
                            Some("popc") => ReduxOp::Add,
                            Some("and") => ReduxOp::And,
                            Some(_) => ReduxOp::Or,
                            None => return err(line, "`bar.red` needs .popc, .and or .or"),
                        };
                        m.ty()?;
                        if !(3..=4).contains(&n) {
                            return err(line, "`bar.red` takes 3 or 4 operands");
                        }
                        Op::Bar {
                            kind: BarKind::Red(op),
                            id: self.src(b, &ops[1], Ty::U32, line)?,
                            count: if n == 4 {
                                Some(self.src(b, &ops[2], Ty::U32, line)?)
                            } else {
                                None
                            },
                            d: Some(self.dst(b, &ops[0], line)?),
                            p: Some(self.src(b, &ops[n - 1], Ty::Pred, line)?),
                        }
                    }
                    _ => return err(line, format!("unsupported barrier `{opcode}`")),
                }
            }
            "shfl" => {
                want(5)?;
                if !m.has("sync") {
                    return err(line, "only `shfl.sync` is supported");
                }
                let mode = match m.one_of(&["up", "down", "bfly", "idx"]) {
                    Some("up") => ShflMode::Up,
                    Some("down") => ShflMode::Down,
                    Some("bfly") => ShflMode::Bfly,
                    Some(_) => ShflMode::Idx,
                    None => return err(line, "`shfl.sync` needs a mode"),
                };
                if m.ty()? != Ty::B32 {
                    return err(line, "`shfl.sync`: only .b32");
                }
                let (d, p) = match &ops[0] {
                    Raw::Pair(d, p) => (self.dst(b, d, line)?, self.dst(b, p, line)?),
                    other => (self.dst(b, other, line)?, Operand::Sink),
                };
                Op::Shfl {
                    mode,
                    d,
                    p,
                    a: self.src(b, &ops[1], Ty::B32, line)?,
                    b: self.src(b, &ops[2], Ty::B32, line)?,
                    c: self.src(b, &ops[3], Ty::B32, line)?,
                    mask: self.src(b, &ops[4], Ty::B32, line)?,
                }
            }
            "vote" => {
                want(3)?;
                if !m.has("sync") {
                    return err(line, "only `vote.sync` is supported");
                }
                let mode = match m.one_of(&["all", "any", "uni", "ballot"]) {
                    Some("all") => VoteMode::All,
                    Some("any") => VoteMode::Any,
                    Some("uni") => VoteMode::Uni,
                    Some(_) => VoteMode::Ballot,
                    None => return err(line, "`vote.sync` needs a mode"),
                };
                m.ty()?;
                Op::Vote {
                    mode,
                    d: self.dst(b, &ops[0], line)?,
                    a: self.src(b, &ops[1], Ty::Pred, line)?,
                    mask: self.src(b, &ops[2], Ty::B32, line)?,
                }
            }
            "match" => {
                want(3)?;
                let all = match m.one_of(&["any", "all"]) {
                    Some("all") => true,
                    Some(_) => false,
                    None => return err(line, "`match` needs .any or .all"),
                };
                if !m.has("sync") {
                    return err(line, "only `match.sync` is supported");
                }
                let ty = m.ty()?;
                let (d, p) = match &ops[0] {
                    Raw::Pair(d, p) => (self.dst(b, d, line)?, self.dst(b, p, line)?),
                    other => (self.dst(b, other, line)?, Operand::Sink),
                };
                Op::Match {
                    all,
                    ty,
                    d,
                    p,
                    a: self.src(b, &ops[1], ty, line)?,
                    mask: self.src(b, &ops[2], Ty::B32, line)?,
                }
            }
            "redux" => {
                want(3)?;
                if !m.has("sync") {
                    return err(line, "only `redux.sync` is supported");
                }
                let op = match m.one_of(&["add", "min", "max", "and", "or", "xor"]) {
                    Some("add") => ReduxOp::Add,
                    Some("min") => ReduxOp::Min,
                    Some("max") => ReduxOp::Max,
                    Some("and") => ReduxOp::And,
                    Some("or") => ReduxOp::Or,
                    Some(_) => ReduxOp::Xor,
                    None => return err(line, "`redux.sync` needs an operation"),
                };
                let ty = m.ty()?;
                Op::Redux {
                    op,
                    ty,
                    d: self.dst(b, &ops[0], line)?,
                    a: self.src(b, &ops[1], ty, line)?,
                    mask: self.src(b, &ops[2], Ty::B32, line)?,
                }
            }
            "activemask" => {
                want(1)?;
                m.ty()?;
                Op::Activemask {
                    d: self.dst(b, &ops[0], line)?,
                }
            }
            "membar" | "fence" => {
                m.ignore_hints();
                m.ignore(&["sc", "proxy", "async", "alias", "shared", "global"]);
                Op::Nop
            }
            "prefetch" | "prefetchu" => {
                m.ignore_hints();
                m.space();
                m.ignore(&["L1", "L2", "tensormap"]);
                Op::Nop
            }
            "nanosleep" | "pmevent" => {
                m.ignore(&["u32", "mask"]);
                Op::Nop
            }
            _ => return err(line, format!("unsupported instruction `{opcode}`")),
        };
        m.finish()?;
        b.func.instrs.push(Instr {
            guard,
            op,
            line,
            loc: b.loc,
        });
        Ok(())
    }
}

fn check_vector(o: &Operand, n: u32, line: u32) -> PResult<()> {
    let count = match o {
        Operand::Vector(v) => v.len() as u32,
        _ => 1,
    };
    if count == n {
        Ok(())
    } else {
        err(line, format!("expected {n} vector elements, found {count}"))
    }
}

fn parse_cmp(m: &mut ModList) -> Option<Cmp> {
    let c = m.one_of(&[
        "eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs", "equ", "neu", "ltu", "leu",
        "gtu", "geu", "num", "nan",
    ])?;
    Some(match c {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" => Cmp::Lt,
        "le" => Cmp::Le,
        "gt" => Cmp::Gt,
        "ge" => Cmp::Ge,
        "lo" => Cmp::Lo,
        "ls" => Cmp::Ls,
        "hi" => Cmp::Hi,
        "hs" => Cmp::Hs,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        _ => Cmp::Nan,
    })
}
