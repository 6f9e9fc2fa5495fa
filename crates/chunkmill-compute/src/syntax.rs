//! The expression language: a script of `NAME = EXPR` statements (one per line or separated
//! by `;`), with Python's operators and precedence, calls with keyword arguments and methods.
//! Every node keeps the line and column it starts at, for errors.

use std::fmt;

use crate::kernel::Fun2;

/// A place in the script: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A prefix operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Plus,
    Invert,
}

/// What is called: a function by name, or a method of a value.
#[derive(Clone, Debug, PartialEq)]
pub enum Callee {
    Function(String),
    Method(Box<Ast>, String),
}

/// An expression as written.
#[derive(Clone, Debug, PartialEq)]
pub enum Ast {
    /// A number; `integer` when written without a point or exponent.
    Number { value: f64, integer: bool, pos: Pos },
    /// A string in single or double quotes.
    Str { value: String, pos: Pos },
    /// A name: an input, an earlier assignment, `None`, `True`, `False`.
    Name { name: String, pos: Pos },
    Unary {
        op: UnaryOp,
        operand: Box<Ast>,
        pos: Pos,
    },
    Binary {
        op: Fun2,
        left: Box<Ast>,
        right: Box<Ast>,
        pos: Pos,
    },
    Call {
        callee: Callee,
        args: Vec<Ast>,
        kwargs: Vec<(String, Ast)>,
        pos: Pos,
    },
    /// `[a, b, …]`: a list of dimension names.
    List { items: Vec<Ast>, pos: Pos },
    /// `value.name` not followed by a call (`time.month`, reserved for group keys).
    Attribute {
        value: Box<Ast>,
        name: String,
        pos: Pos,
    },
}

impl Ast {
    /// Where the expression starts.
    #[must_use]
    pub fn pos(&self) -> Pos {
        match self {
            Ast::Number { pos, .. }
            | Ast::Str { pos, .. }
            | Ast::Name { pos, .. }
            | Ast::Unary { pos, .. }
            | Ast::Binary { pos, .. }
            | Ast::Call { pos, .. }
            | Ast::List { pos, .. }
            | Ast::Attribute { pos, .. } => *pos,
        }
    }
}

/// One `NAME = EXPR` line.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    pub name: String,
    pub expr: Ast,
    pub pos: Pos,
}

/// A syntax error, at a place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(f64, bool),
    Str(String),
    Ident(String),
    Op(&'static str),
    Newline,
    End,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(v, _) => format!("number {v}"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Op(o) => format!("'{o}'"),
        Tok::Newline => "end of line".into(),
        Tok::End => "end of input".into(),
    }
}

const OPERATORS: [&str; 24] = [
    "**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "<", ">", "&", "|", "~", "(", ")",
    ",", "=", ".", ";", "[", "]",
];

fn lex(text: &str) -> Result<Vec<(Tok, Pos)>, SyntaxError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    // Newlines inside brackets continue the statement, as in Python.
    let mut depth = 0i32;
    while i < chars.len() {
        let c = chars[i];
        let pos = Pos { line, col };
        let err = |message: String| SyntaxError { pos, message };
        if c == '\n' {
            if depth == 0 {
                out.push((Tok::Newline, pos));
            }
            i += 1;
            line += 1;
            col = 1;
            continue;
        }
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            col += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let mut integer = true;
            while i < chars.len()
                && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == '_')
            {
                integer &= chars[i] != '.';
                i += 1;
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                integer = false;
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let s: String = chars[start..i].iter().filter(|&&c| c != '_').collect();
            let value: f64 = s
                .parse()
                .map_err(|_| err(format!("'{s}' is not a number")))?;
            out.push((Tok::Num(value, integer), pos));
        } else if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), pos));
        } else if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c && chars[i] != '\n' {
                i += 1;
            }
            if i >= chars.len() || chars[i] != c {
                return Err(err("string not closed".into()));
            }
            out.push((Tok::Str(chars[start + 1..i].iter().collect()), pos));
            i += 1;
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op = OPERATORS
                .iter()
                .find(|o| rest.starts_with(**o))
                .ok_or_else(|| err(format!("unexpected character '{c}'")))?;
            match *op {
                "(" | "[" => depth += 1,
                ")" | "]" => depth -= 1,
                _ => {}
            }
            i += op.len();
            out.push((Tok::Op(op), pos));
        }
        col += (i - start) as u32;
    }
    out.push((Tok::End, Pos { line, col }));
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, Pos)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.at.min(self.toks.len() - 1)].0
    }

    fn pos(&self) -> Pos {
        self.toks[self.at.min(self.toks.len() - 1)].1
    }

    fn next(&mut self) -> (Tok, Pos) {
        let t = self.toks[self.at.min(self.toks.len() - 1)].clone();
        self.at += 1;
        t
    }

    fn eat(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Tok::Op(o) if *o == op) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn fail<T>(&self, expected: &str) -> Result<T, SyntaxError> {
        Err(SyntaxError {
            pos: self.pos(),
            message: format!("expected {expected}, found {}", describe(self.peek())),
        })
    }

    fn expect(&mut self, op: &str) -> Result<(), SyntaxError> {
        if self.eat(op) {
            Ok(())
        } else {
            self.fail(&format!("'{op}'"))
        }
    }

    fn script(&mut self) -> Result<Vec<Assignment>, SyntaxError> {
        let mut out = Vec::new();
        loop {
            while matches!(self.peek(), Tok::Newline) || self.eat(";") {
                if matches!(self.peek(), Tok::Newline) {
                    self.at += 1;
                }
            }
            if matches!(self.peek(), Tok::End) {
                return Ok(out);
            }
            let pos = self.pos();
            let name = match self.next() {
                (Tok::Ident(n), _) => n,
                _ => {
                    self.at -= 1;
                    return self.fail("a statement 'NAME = EXPRESSION'");
                }
            };
            self.expect("=")?;
            let expr = self.expression()?;
            if !matches!(self.peek(), Tok::Newline | Tok::End | Tok::Op(";")) {
                return self.fail("end of the statement");
            }
            out.push(Assignment { name, expr, pos });
        }
    }

    fn expression(&mut self) -> Result<Ast, SyntaxError> {
        let left = self.or()?;
        let op = match self.peek() {
            Tok::Op("==") => Fun2::Eq,
            Tok::Op("!=") => Fun2::Ne,
            Tok::Op("<") => Fun2::Lt,
            Tok::Op("<=") => Fun2::Le,
            Tok::Op(">") => Fun2::Gt,
            Tok::Op(">=") => Fun2::Ge,
            _ => return Ok(left),
        };
        let pos = self.pos();
        self.at += 1;
        let right = self.or()?;
        if matches!(self.peek(), Tok::Op("==" | "!=" | "<" | "<=" | ">" | ">=")) {
            return Err(SyntaxError {
                pos: self.pos(),
                message: "chained comparisons are not supported; combine with & and parentheses"
                    .into(),
            });
        }
        Ok(binary(op, left, right, pos))
    }

    fn or(&mut self) -> Result<Ast, SyntaxError> {
        self.left_assoc(&[("|", Fun2::Or)], Self::and)
    }

    fn and(&mut self) -> Result<Ast, SyntaxError> {
        self.left_assoc(&[("&", Fun2::And)], Self::sum)
    }

    fn sum(&mut self) -> Result<Ast, SyntaxError> {
        self.left_assoc(&[("+", Fun2::Add), ("-", Fun2::Sub)], Self::product)
    }

    fn product(&mut self) -> Result<Ast, SyntaxError> {
        self.left_assoc(
            &[
                ("*", Fun2::Mul),
                ("/", Fun2::Div),
                ("//", Fun2::FloorDiv),
                ("%", Fun2::Mod),
            ],
            Self::unary,
        )
    }

    fn left_assoc(
        &mut self,
        ops: &[(&str, Fun2)],
        next: fn(&mut Self) -> Result<Ast, SyntaxError>,
    ) -> Result<Ast, SyntaxError> {
        let mut left = next(self)?;
        loop {
            let found = ops
                .iter()
                .find(|(s, _)| matches!(self.peek(), Tok::Op(o) if o == s));
            let Some(&(_, op)) = found else {
                return Ok(left);
            };
            let pos = self.pos();
            self.at += 1;
            let right = next(self)?;
            left = binary(op, left, right, pos);
        }
    }

    fn unary(&mut self) -> Result<Ast, SyntaxError> {
        let pos = self.pos();
        let op = match self.peek() {
            Tok::Op("-") => UnaryOp::Neg,
            Tok::Op("+") => UnaryOp::Plus,
            Tok::Op("~") => UnaryOp::Invert,
            _ => return self.power(),
        };
        self.at += 1;
        let operand = Box::new(self.unary()?);
        Ok(Ast::Unary { op, operand, pos })
    }

    fn power(&mut self) -> Result<Ast, SyntaxError> {
        let base = self.postfix()?;
        if matches!(self.peek(), Tok::Op("**")) {
            let pos = self.pos();
            self.at += 1;
            // Right-associative, and binds tighter than a unary minus on its left only.
            let exponent = self.unary()?;
            return Ok(binary(Fun2::Pow, base, exponent, pos));
        }
        Ok(base)
    }

    fn postfix(&mut self) -> Result<Ast, SyntaxError> {
        let mut value = self.atom()?;
        while self.eat(".") {
            let pos = self.pos();
            let name = match self.next() {
                (Tok::Ident(n), _) => n,
                _ => {
                    self.at -= 1;
                    return self.fail("a method or attribute name after '.'");
                }
            };
            if matches!(self.peek(), Tok::Op("(")) {
                let callee = Callee::Method(Box::new(value), name);
                value = self.call(callee, pos)?;
            } else {
                value = Ast::Attribute {
                    value: Box::new(value),
                    name,
                    pos,
                };
            }
        }
        Ok(value)
    }

    fn call(&mut self, callee: Callee, pos: Pos) -> Result<Ast, SyntaxError> {
        self.expect("(")?;
        let (mut args, mut kwargs) = (Vec::new(), Vec::<(String, Ast)>::new());
        while !self.eat(")") {
            let keyword = match (self.peek().clone(), &self.toks.get(self.at + 1)) {
                (Tok::Ident(n), Some((Tok::Op("="), _))) => Some(n),
                _ => None,
            };
            if let Some(name) = keyword {
                let kpos = self.pos();
                self.at += 2;
                if kwargs.iter().any(|(k, _)| *k == name) {
                    return Err(SyntaxError {
                        pos: kpos,
                        message: format!("keyword argument '{name}' given twice"),
                    });
                }
                kwargs.push((name, self.expression()?));
            } else if kwargs.is_empty() {
                args.push(self.expression()?);
            } else {
                return Err(SyntaxError {
                    pos: self.pos(),
                    message: "positional argument after keyword arguments".into(),
                });
            }
            if !self.eat(",") && !matches!(self.peek(), Tok::Op(")")) {
                return self.fail("',' or ')'");
            }
        }
        Ok(Ast::Call {
            callee,
            args,
            kwargs,
            pos,
        })
    }

    fn atom(&mut self) -> Result<Ast, SyntaxError> {
        let (tok, pos) = self.next();
        match tok {
            Tok::Num(value, integer) => Ok(Ast::Number {
                value,
                integer,
                pos,
            }),
            Tok::Str(value) => Ok(Ast::Str { value, pos }),
            Tok::Ident(name) => {
                if matches!(self.peek(), Tok::Op("(")) {
                    self.call(Callee::Function(name), pos)
                } else {
                    Ok(Ast::Name { name, pos })
                }
            }
            Tok::Op("[") => {
                let mut items = Vec::new();
                while !self.eat("]") {
                    items.push(self.expression()?);
                    if !self.eat(",") && !matches!(self.peek(), Tok::Op("]")) {
                        return self.fail("',' or ']'");
                    }
                }
                Ok(Ast::List { items, pos })
            }
            Tok::Op("(") => {
                let inner = self.expression()?;
                self.expect(")")?;
                Ok(inner)
            }
            _ => {
                self.at -= 1;
                self.fail("a value (number, name, call or '(')")
            }
        }
    }
}

fn binary(op: Fun2, left: Ast, right: Ast, pos: Pos) -> Ast {
    Ast::Binary {
        op,
        left: Box::new(left),
        right: Box::new(right),
        pos,
    }
}

/// Parse a script of assignments.
///
/// # Errors
/// [`SyntaxError`] at the first place that is not the language.
pub fn parse(text: &str) -> Result<Vec<Assignment>, SyntaxError> {
    let toks = lex(text)?;
    Parser { toks, at: 0 }.script()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(a: &Ast) -> String {
        match a {
            Ast::Number { value, .. } => format!("{value}"),
            Ast::Str { value, .. } => format!("'{value}'"),
            Ast::Name { name, .. } => name.clone(),
            Ast::Unary { op, operand, .. } => format!("({op:?} {})", show(operand)),
            Ast::Binary {
                op, left, right, ..
            } => {
                format!("({} {} {})", show(left), op.symbol(), show(right))
            }
            Ast::Attribute { value, name, .. } => format!("{}.{name}", show(value)),
            Ast::List { items, .. } => {
                format!(
                    "<{}>",
                    items.iter().map(show).collect::<Vec<_>>().join(", ")
                )
            }
            Ast::Call {
                callee,
                args,
                kwargs,
                ..
            } => {
                let mut parts: Vec<String> = args.iter().map(show).collect();
                parts.extend(kwargs.iter().map(|(k, v)| format!("{k}={}", show(v))));
                match callee {
                    Callee::Function(f) => format!("{f}[{}]", parts.join(", ")),
                    Callee::Method(v, m) => format!("{}.{m}[{}]", show(v), parts.join(", ")),
                }
            }
        }
    }

    fn one(text: &str) -> String {
        let s = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        show(&s[0].expr)
    }

    #[test]
    fn precedence_is_pythons() {
        assert_eq!(one("x = 1 + 2 * 3 ** 2"), "(1 + (2 * (3 ** 2)))");
        assert_eq!(one("x = -a ** 2"), "(Neg (a ** 2))");
        assert_eq!(one("x = a ** b ** c"), "(a ** (b ** c))");
        assert_eq!(one("x = a - b - c"), "((a - b) - c)");
        assert_eq!(one("x = a // b % c"), "((a // b) % c)");
        assert_eq!(
            one("x = (a > 1) & ~(b <= 2) | c"),
            "(((a > 1) & (Invert (b <= 2))) | c)"
        );
        assert_eq!(one("x = a + 1 > b * 2"), "((a + 1) > (b * 2))");
    }

    #[test]
    fn calls_methods_and_keywords() {
        assert_eq!(one("m = mean(air, dim=\"time\")"), "mean[air, dim='time']");
        assert_eq!(
            one("m = air.isel(time=slice(0, 10)).mean('time')"),
            "air.isel[time=slice[0, 10]].mean['time']"
        );
        assert_eq!(
            one("m = air.sel(lat=slice(60, 30))"),
            "air.sel[lat=slice[60, 30]]"
        );
        assert_eq!(one("m = f()"), "f[]");
    }

    #[test]
    fn statements_by_line_and_semicolon() -> Result<(), SyntaxError> {
        let s = parse("a = x + 1\n# note\nb = a * 2; c = 3\n")?;
        let names: Vec<&str> = s.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(s[1].pos, Pos { line: 3, col: 1 });
        let s = parse("a = mean(\n  x,\n  dim='t')")?;
        assert_eq!(s.len(), 1);
        Ok(())
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let e = parse("a = x + 1\nb = (x * 2").err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("2:11: expected ')', found end of input")
        );
        let e = parse("a = x +* 2").err();
        assert_eq!(e.map(|e| e.pos), Some(Pos { line: 1, col: 8 }));
        let e = parse("a = x $ 2").err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("1:7: unexpected character '$'")
        );
        let e = parse("x + 1").err();
        assert!(e.is_some_and(|e| e.to_string().starts_with("1:3: expected '='")));
        let e = parse("a = 1 < x < 2").err();
        assert!(e.is_some_and(|e| e.message.contains("chained")));
        let e = parse("a = f(x=1, 2)").err();
        assert!(e.is_some_and(|e| e.message.contains("positional argument after")));
    }
}
