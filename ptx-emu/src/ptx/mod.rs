//! PTX text: the tokenizer, the parser and the decoded instruction set.

pub(crate) mod ir;
mod lexer;
mod parser;

pub(crate) use parser::parse;
