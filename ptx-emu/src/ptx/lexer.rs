//! Tokens of PTX text, with their line numbers. Comments are dropped.

/// A token kind.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// Identifiers, directives (`.reg`), opcodes with modifiers (`ld.global.v4.u32`), registers
    /// (`%r1`), labels (`$L__BB0_2`) and numbers as written (`0f3F800000`, `-` is separate).
    Word(String),
    /// A double-quoted string, without the quotes.
    Str(String),
    /// One punctuation character: `, ; : [ ] { } ( ) + - | ! @ < > =`.
    Punct(char),
}

/// A token and the 1-based line it starts on.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: u32,
}

/// Split PTX text into tokens, or report the first character that cannot start one.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, (u32, String)> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::with_capacity(text.len() / 4);
    let mut i = 0;
    let mut line = 1u32;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    if bytes[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                let s = String::from_utf8_lossy(&bytes[start..i.min(bytes.len())]).into_owned();
                tokens.push(Token {
                    tok: Tok::Str(s),
                    line,
                });
                i += 1;
            }
            b',' | b';' | b'[' | b']' | b'{' | b'}' | b'(' | b')' | b'+' | b'-' | b'|' | b'!'
            | b'@' | b'<' | b'>' | b'=' => {
                tokens.push(Token {
                    tok: Tok::Punct(c as char),
                    line,
                });
                i += 1;
            }
            b':' => {
                tokens.push(Token {
                    tok: Tok::Punct(':'),
                    line,
                });
                i += 1;
            }
            _ if is_word_byte(c) => {
                let start = i;
                while i < bytes.len() {
                    let b = bytes[i];
                    if is_word_byte(b) {
                        i += 1;
                    } else if b == b':' && bytes.get(i + 1) == Some(&b':') {
                        // `shared::cta`, `L2::cache_hint`: part of the word.
                        i += 2;
                    } else {
                        break;
                    }
                }
                tokens.push(Token {
                    tok: Tok::Word(text[start..i].to_string()),
                    line,
                });
            }
            _ => {
                return Err((
                    line,
                    format!("unexpected character {:?}", char::from(c).escape_default()),
                ))
            }
        }
    }
    Ok(tokens)
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'%' | b'$')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Tok> {
        tokenize(text).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn splits_opcodes_operands_and_comments() {
        let toks = words("@!%p1 ld.global.v4.u32 {%r1, %r2}, [%rd1+-16]; // c\n/* x */ $L__BB0_2:");
        assert_eq!(toks[0], Tok::Punct('@'));
        assert_eq!(toks[1], Tok::Punct('!'));
        assert_eq!(toks[2], Tok::Word("%p1".into()));
        assert_eq!(toks[3], Tok::Word("ld.global.v4.u32".into()));
        assert!(toks.contains(&Tok::Word("$L__BB0_2".into())));
        assert_eq!(*toks.last().unwrap(), Tok::Punct(':'));
        assert!(toks.contains(&Tok::Punct('-')));
    }

    #[test]
    fn keeps_double_colons_inside_words() {
        let toks = words("cp.async.ca.shared::cta.global [%r1], [%rd1], 4;");
        assert_eq!(toks[0], Tok::Word("cp.async.ca.shared::cta.global".into()));
    }

    #[test]
    fn counts_lines() {
        let t = tokenize("a\n\n/*\n*/ b").unwrap();
        assert_eq!(t[0].line, 1);
        assert_eq!(t[1].line, 4);
    }
}
