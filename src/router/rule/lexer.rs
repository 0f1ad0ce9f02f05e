//! The rule's tokens: names, strings (backtick raw or double-quoted with Go escapes),
//! parentheses, commas and the `!`, `&&`, `||` operators, each with its column.

use super::RuleError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    Comma,
    And,
    Or,
    Not,
    End,
}

impl Tok {
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Str(_) => "a string".to_string(),
            Tok::LParen => "`(`".to_string(),
            Tok::RParen => "`)`".to_string(),
            Tok::Comma => "`,`".to_string(),
            Tok::And => "`&&`".to_string(),
            Tok::Or => "`||`".to_string(),
            Tok::Not => "`!`".to_string(),
            Tok::End => "end of rule".to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    /// 1-based character column of the token's first character.
    pub(super) col: usize,
}

const SINGLE_QUOTE: &str =
    "unexpected character `'`; strings are delimited by backticks or double quotes";

/// Turns the rule's characters into tokens, one at a time.
pub(super) struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

impl Lexer {
    pub(super) fn new(text: &str) -> Lexer {
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
        }
    }

    /// The next token; [`Tok::End`] (again and again) once the rule is used up.
    pub(super) fn next_token(&mut self) -> Result<Token, RuleError> {
        while self.pos < self.chars.len() && self.chars[self.pos].is_whitespace() {
            self.pos += 1;
        }
        let start = self.pos;
        let col = start + 1;
        let Some(&c) = self.chars.get(start) else {
            return Ok(Token { tok: Tok::End, col });
        };
        let second = self.chars.get(start + 1).copied();
        let tok = match c {
            '(' => {
                self.pos += 1;
                Tok::LParen
            }
            ')' => {
                self.pos += 1;
                Tok::RParen
            }
            ',' => {
                self.pos += 1;
                Tok::Comma
            }
            '!' => {
                self.pos += 1;
                Tok::Not
            }
            '&' if second == Some('&') => {
                self.pos += 2;
                Tok::And
            }
            '|' if second == Some('|') => {
                self.pos += 2;
                Tok::Or
            }
            '&' | '|' => {
                return Err(RuleError::new(
                    col,
                    format!("unexpected character `{c}`; did you mean `{c}{c}`?"),
                ))
            }
            '`' => Tok::Str(self.lex_raw_string()?),
            '"' => Tok::Str(self.lex_quoted_string()?),
            '\'' => return Err(RuleError::new(col, SINGLE_QUOTE)),
            c if c.is_alphabetic() || c == '_' => {
                while self.pos < self.chars.len()
                    && (self.chars[self.pos].is_alphanumeric() || self.chars[self.pos] == '_')
                {
                    self.pos += 1;
                }
                Tok::Ident(self.chars[start..self.pos].iter().collect())
            }
            c => {
                return Err(RuleError::new(
                    col,
                    format!("unexpected character `{}`", c.escape_debug()),
                ))
            }
        };
        Ok(Token { tok, col })
    }

    /// A backtick string: everything up to the next backtick, verbatim.
    fn lex_raw_string(&mut self) -> Result<String, RuleError> {
        let open = self.pos;
        let body = open + 1;
        match self.chars[body..].iter().position(|&c| c == '`') {
            Some(len) => {
                self.pos = body + len + 1;
                Ok(self.chars[body..body + len].iter().collect())
            }
            None => Err(RuleError::new(open + 1, "unterminated string")),
        }
    }

    /// A double-quoted string with Go escapes; it may not span lines.
    fn lex_quoted_string(&mut self) -> Result<String, RuleError> {
        let open = self.pos;
        let unterminated = || RuleError::new(open + 1, "unterminated string");
        let mut bytes: Vec<u8> = Vec::new();
        let mut i = open + 1;
        loop {
            let Some(&c) = self.chars.get(i) else {
                return Err(unterminated());
            };
            match c {
                '"' => break,
                '\n' => return Err(unterminated()),
                '\\' => {
                    i = self.lex_escape(open, i, &mut bytes)?;
                }
                c => {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    i += 1;
                }
            }
        }
        self.pos = i + 1;
        String::from_utf8(bytes).map_err(|_| {
            RuleError::new(
                open + 1,
                "string is not valid UTF-8 after processing its escapes",
            )
        })
    }

    /// Decodes the Go escape starting with the backslash at `at`, inside the
    /// string opened at `open`; returns the position after it.
    fn lex_escape(&self, open: usize, at: usize, out: &mut Vec<u8>) -> Result<usize, RuleError> {
        let col = at + 1;
        let invalid = |what: &str| RuleError::new(col, format!("invalid escape sequence: {what}"));
        let Some(&e) = self.chars.get(at + 1) else {
            return Err(RuleError::new(open + 1, "unterminated string"));
        };
        let simple = match e {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            return Ok(at + 2);
        }
        let (digits, radix) = match e {
            '0'..='7' => (3, 8),
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            _ => return Err(invalid(&format!("`\\{}`", e.escape_debug()))),
        };
        let first = if radix == 8 { at + 1 } else { at + 2 };
        let mut value: u32 = 0;
        for k in 0..digits {
            let d = self
                .chars
                .get(first + k)
                .and_then(|c| c.to_digit(radix))
                .ok_or_else(|| {
                    invalid(&format!(
                        "`\\{e}` needs {} {} digits",
                        if radix == 8 { digits - 1 } else { digits },
                        if radix == 8 { "more octal" } else { "hex" }
                    ))
                })?;
            value = value * radix + d;
        }
        match e {
            'u' | 'U' => {
                let ch = char::from_u32(value).ok_or_else(|| {
                    invalid(&format!(
                        "`\\{e}` value {value:#x} is not a Unicode scalar value"
                    ))
                })?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            _ => {
                let b = u8::try_from(value)
                    .map_err(|_| invalid(&format!("octal value {value:#o} is above 0377")))?;
                out.push(b);
            }
        }
        Ok(first + digits)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;

    #[test]
    fn double_quoted_arguments() {
        let r = Req::new().host("a.com").path("/p\"q").header("X", b"a\\b");
        assert!(r.matches("Host(\"a.com\")"));
        assert!(r.matches("Host(\"a.com\") && Path(`/p\"q`)"));
        assert!(r.matches(r#"Path("/p\"q")"#));
        assert!(r.matches(r#"Header("X", "a\\b")"#));
        assert!(r.matches(r#"Header("X", `a\b`)"#));
        assert!(r.matches(r#"Host("\x61.com")"#));
        assert!(r.matches(r#"Host("\u0061.c\U0000006Fm")"#));
        assert!(r.matches(r#"Host("\141.com")"#));
        assert!(r.matches(r#"PathRegexp("^/p\"q$")"#));
        assert!(Req::new()
            .path("/v1/x")
            .matches(r#"PathRegexp("^/v\\d+/")"#));
        assert!(Req::new()
            .header("X", "é".as_bytes())
            .matches(r#"Header("X", "\xc3\xa9")"#));
    }

    #[test]
    fn error_unterminated_string() {
        assert_err("Host(`a", 6, "unterminated string");
        assert_err("Path(`/`) && Host(\"abc", 19, "unterminated string");
        assert_err("Host(\"a\nb\")", 6, "unterminated string");
        assert_err("Host(\"a\\", 6, "unterminated string");
        assert_err("Host(\"a\\\"", 6, "unterminated string");
    }

    #[test]
    fn error_bad_escape() {
        assert_err(r#"Host("a\qb")"#, 8, "invalid escape sequence");
        assert_err(r#"Host("a\x4")"#, 8, "invalid escape sequence");
        assert_err(r#"Host("\'")"#, 7, "invalid escape sequence");
        assert_err(r#"Host("\uD800")"#, 7, "not a Unicode scalar value");
        assert_err(r#"Host("\xff")"#, 6, "not valid UTF-8");
    }

    #[test]
    fn error_columns_count_characters_not_bytes() {
        // `é` is two bytes but one column.
        assert_err("Path(`/é`) && Foo(`b`)", 15, "unknown matcher `Foo`");
    }
}
