//! The rule's grammar, `!` binding tighter than `&&`, and `&&` tighter than `||`:
//!
//! ```text
//! or      := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | primary
//! primary := "(" or ")" | NAME "(" [ STRING ( "," STRING )* [ "," ] ] ")"
//! ```

use super::eval::Expr;
use super::lexer::{Lexer, Tok, Token};
use super::matchers::{unknown_matcher, Kind};
use super::RuleError;

/// Deepest nesting of parentheses and `!` accepted, so that parsing,
/// evaluating and dropping a rule cannot overflow the stack.
const MAX_DEPTH: usize = 100;

/// Parses a whole rule into its expression tree.
pub(super) fn parse(text: &str) -> Result<Expr, RuleError> {
    let mut parser = Parser::new(text);
    if parser.peek()?.tok == Tok::End {
        return Err(RuleError::new(1, "empty rule"));
    }
    let expr = parser.parse_or()?;
    let next = parser.next()?;
    match next.tok {
        Tok::End => Ok(expr),
        Tok::RParen => Err(RuleError::new(next.col, "unmatched `)`")),
        other => Err(RuleError::new(
            next.col,
            format!(
                "unexpected {} after a complete expression; expected `&&`, `||` or the end of the rule",
                other.describe()
            ),
        )),
    }
}

/// A recursive-descent parser over the lexer's tokens, one token of look-ahead.
struct Parser {
    lexer: Lexer,
    peeked: Option<Token>,
    depth: usize,
}

impl Parser {
    fn new(text: &str) -> Parser {
        Parser {
            lexer: Lexer::new(text),
            peeked: None,
            depth: 0,
        }
    }

    fn peek(&mut self) -> Result<&Token, RuleError> {
        if self.peeked.is_none() {
            let t = self.lexer.next_token()?;
            self.peeked = Some(t);
        }
        Ok(self.peeked.as_ref().expect("just filled"))
    }

    fn next(&mut self) -> Result<Token, RuleError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next_token(),
        }
    }

    fn parse_or(&mut self) -> Result<Expr, RuleError> {
        let first = self.parse_and()?;
        let mut items = vec![first];
        while self.peek()?.tok == Tok::Or {
            self.next()?;
            items.push(self.parse_and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Expr::Or(items)
        })
    }

    fn parse_and(&mut self) -> Result<Expr, RuleError> {
        let first = self.parse_unary()?;
        let mut items = vec![first];
        while self.peek()?.tok == Tok::And {
            self.next()?;
            items.push(self.parse_unary()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Expr::And(items)
        })
    }

    fn enter(&mut self, col: usize) -> Result<(), RuleError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(RuleError::new(
                col,
                format!("rule is nested too deeply (more than {MAX_DEPTH} levels of `(` and `!`)"),
            ));
        }
        Ok(())
    }

    fn parse_unary(&mut self) -> Result<Expr, RuleError> {
        if self.peek()?.tok != Tok::Not {
            return self.parse_primary();
        }
        let not = self.next()?;
        self.enter(not.col)?;
        let inner = self.parse_unary()?;
        self.depth -= 1;
        Ok(Expr::Not(Box::new(inner)))
    }

    fn parse_primary(&mut self) -> Result<Expr, RuleError> {
        let t = self.next()?;
        match t.tok {
            Tok::LParen => {
                self.enter(t.col)?;
                let inner = self.parse_or()?;
                self.depth -= 1;
                let close = self.next()?;
                if close.tok != Tok::RParen {
                    return Err(RuleError::new(
                        close.col,
                        format!(
                            "expected `)` to close the `(` at column {}, found {}",
                            t.col,
                            close.tok.describe()
                        ),
                    ));
                }
                Ok(inner)
            }
            Tok::Ident(name) => self.parse_call(&name, t.col),
            Tok::End => Err(RuleError::new(
                t.col,
                "unexpected end of rule; expected a matcher, `!` or `(`",
            )),
            other => Err(RuleError::new(
                t.col,
                format!("expected a matcher, `!` or `(`, found {}", other.describe()),
            )),
        }
    }

    fn parse_call(&mut self, name: &str, col: usize) -> Result<Expr, RuleError> {
        let kind = Kind::lookup(name).ok_or_else(|| RuleError::new(col, unknown_matcher(name)))?;
        let open = self.next()?;
        if open.tok != Tok::LParen {
            return Err(RuleError::new(
                open.col,
                format!("expected `(` after `{name}`, found {}", open.tok.describe()),
            ));
        }
        let mut args: Vec<(String, usize)> = Vec::new();
        loop {
            let t = self.next()?;
            match t.tok {
                Tok::RParen => break,
                Tok::Str(s) => args.push((s, t.col)),
                other => {
                    return Err(RuleError::new(
                        t.col,
                        format!(
                            "expected a string argument or `)` in `{name}(...)`, found {}",
                            other.describe()
                        ),
                    ))
                }
            }
            let sep = self.next()?;
            match sep.tok {
                Tok::Comma => {}
                Tok::RParen => break,
                other => {
                    return Err(RuleError::new(
                        sep.col,
                        format!(
                            "expected `,` or `)` after an argument of `{name}`, found {}",
                            other.describe()
                        ),
                    ))
                }
            }
        }
        Ok(Expr::Matcher(kind.build(col, args)?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::MAX_DEPTH;

    #[test]
    fn nested_parentheses_and_whitespace() {
        let r = Req::new().host("a.com").path("/api/x").method("POST");
        assert!(
            r.matches("((Host(`a.com`) && (PathPrefix(`/api`) || Path(`/`))) && !(Method(`GET`)))")
        );
        assert!(!r.matches("((Host(`a.com`)) && ((Method(`GET`))))"));
        assert!(r.matches("  Host ( `a.com` )\n\t&&\r\n(\tMethod(`POST`)||Method(`PUT`) ) "));
        assert!(r.matches("Host(`a.com`,)"));
        assert!(r.matches("HOST(`a.com`) && pathprefix(`/api`) && Method(`post`)"));
    }

    #[test]
    fn error_end_of_rule() {
        assert_err("Host(`a`) &&", 13, "unexpected end of rule");
        assert_err("Host(`a`) || ", 14, "unexpected end of rule");
        assert_err("!", 2, "unexpected end of rule");
        assert_err("(Host(`a`)", 11, "expected `)`");
        assert_err("Host(`a`", 9, "expected `,` or `)`");
        assert_err("Host", 5, "expected `(` after `Host`");
    }

    #[test]
    fn error_unexpected_token() {
        assert_err("&& Host(`a`)", 1, "found `&&`");
        assert_err("Host(`a`) && || Path(`/`)", 14, "found `||`");
        assert_err("Host(`a`) & Path(`/`)", 11, "did you mean `&&`?");
        assert_err("Host(`a`) | Path(`/`)", 11, "did you mean `||`?");
        assert_err("Host('a')", 6, "backticks or double quotes");
        assert_err("Host(a)", 6, "expected a string argument");
        assert_err("Host(`a` `b`)", 10, "expected `,` or `)`");
        assert_err("Host `a`", 6, "expected `(` after `Host`");
        assert_err("()", 2, "found `)`");
        assert_err("Host(`a`) && ` `", 14, "found a string");
        assert_err("Host(`a`) # x", 11, "unexpected character `#`");
        assert_err(
            "(Host(`a`) Path(`/`))",
            12,
            "expected `)` to close the `(` at column 1",
        );
    }

    #[test]
    fn error_trailing_input() {
        assert_err("Host(`a`) Path(`/`)", 11, "after a complete expression");
        assert_err("Host(`a`))", 10, "unmatched `)`");
        assert_err("Host(`a`) !Path(`/`)", 11, "after a complete expression");
    }

    #[test]
    fn error_empty_rule() {
        assert_err("", 1, "empty rule");
        assert_err("  \n\t", 1, "empty rule");
    }

    #[test]
    fn error_nesting_limit() {
        let deep = format!("{}Host(`a`){}", "(".repeat(500), ")".repeat(500));
        assert_err(&deep, MAX_DEPTH + 1, "nested too deeply");
        let nots = format!("{}Host(`a`)", "!".repeat(500));
        assert_err(&nots, MAX_DEPTH + 1, "nested too deeply");
        let ok = format!("{}Host(`a`){}", "(".repeat(50), ")".repeat(50));
        assert!(Req::new().host("a").matches(&ok));
        // Long flat chains are fine.
        let chain = vec!["Host(`a`)"; 5000].join(" && ");
        assert!(Req::new().host("a").matches(&chain));
    }
}
