//! Name resolution and type checking: the parsed script becomes lazy arrays with xarray's
//! semantics (broadcasting and alignment by dimension name, numpy's type promotion), or an
//! error pointing at the line and column.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde_json::{Map, Value};

use crate::dtype::DType;
use crate::kernel::{Fun1, Fun2, Reduce, ReduceOp};
use crate::model::{part_len, select, Coord, Lazy, Node, Pick, Rechunk, Reduction, Source};
use crate::syntax::{Assignment, Ast, Callee, Pos, UnaryOp};

mod group;
use group::{coord_values, sel_by_date, time_axis};

/// An error in the script, at a place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct CheckError {
    pub pos: Pos,
    pub message: String,
}

/// The arrays a script can name: every input, with the coordinates of its dimensions.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub sources: Vec<Source>,
    /// Name → (source, coordinates by dimension).
    pub names: BTreeMap<String, (usize, BTreeMap<String, usize>)>,
}

/// A value while checking.
#[derive(Clone, Debug)]
enum Val {
    Array(Lazy),
    Str(String),
    Slice([Option<f64>; 3]),
    /// `slice("2001-01", "2001-06-15")`: dates, for `sel` on a time coordinate.
    DateSlice([Option<String>; 2]),
    /// `x.groupby("time.month")`, `x.resample(time="1MS")`: waits for a reduction or an
    /// operation with an array of the groups.
    Grouped(Lazy, Rc<crate::time::Grouping>),
    List(Vec<String>),
    /// `[a, b, …]` of arrays (what `concat` joins).
    Arrays(Vec<Lazy>),
    None,
}

pub(crate) type Reader<'a> = dyn Fn(&Source, &Pick) -> Result<Vec<f64>, String> + 'a;

struct Checker<'a> {
    inputs: &'a Inputs,
    vars: BTreeMap<String, Lazy>,
    read: &'a Reader<'a>,
}

fn err<T>(pos: Pos, message: impl Into<String>) -> Result<T, CheckError> {
    Err(CheckError {
        pos,
        message: message.into(),
    })
}

fn scalar(v: f64, dtype: DType) -> Lazy {
    Lazy {
        dims: vec![],
        shape: vec![],
        dtype,
        attrs: Map::new(),
        coords: BTreeMap::new(),
        node: Node::Const(v),
    }
}

/// Attributes that survive an operation that keeps the quantity (selection, reductions but
/// count/arg*, clip, fillna, abs, negation).
fn kept_attrs(attrs: &Map<String, Value>) -> Map<String, Value> {
    attrs
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "units" | "long_name" | "standard_name" | "cell_methods"
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Check `script` against `inputs`; `read` gives a coordinate's values (for `sel`).
///
/// # Errors
/// [`CheckError`] at the first unknown name, function or dimension, mismatched sizes, or
/// argument of the wrong kind.
pub fn check(
    script: &[Assignment],
    inputs: &Inputs,
    read: &Reader<'_>,
) -> Result<Vec<(String, Lazy)>, CheckError> {
    let mut checker = Checker {
        inputs,
        vars: BTreeMap::new(),
        read,
    };
    let mut out: Vec<(String, Lazy)> = Vec::new();
    for a in script {
        let value = match checker.eval(&a.expr)? {
            Val::Array(l) => l,
            _ => return err(a.expr.pos(), "an assignment needs an array or a number"),
        };
        if out.iter().any(|(n, _)| *n == a.name) {
            return err(a.pos, format!("'{}' is assigned twice", a.name));
        }
        checker.vars.insert(a.name.clone(), value.clone());
        out.push((a.name.clone(), value));
    }
    Ok(out)
}

impl Checker<'_> {
    fn name(&self, name: &str, pos: Pos) -> Result<Val, CheckError> {
        if let Some(l) = self.vars.get(name) {
            return Ok(Val::Array(l.clone()));
        }
        match name {
            "True" => return Ok(Val::Array(scalar(1.0, DType::Bool))),
            "False" => return Ok(Val::Array(scalar(0.0, DType::Bool))),
            "None" => return Ok(Val::None),
            "nan" => return Ok(Val::Array(scalar(f64::NAN, DType::Float64))),
            "inf" => return Ok(Val::Array(scalar(f64::INFINITY, DType::Float64))),
            "pi" => return Ok(Val::Array(scalar(std::f64::consts::PI, DType::Float64))),
            _ => {}
        }
        let Some((id, coords)) = self.inputs.names.get(name) else {
            let mut known: Vec<&str> = self.inputs.names.keys().map(String::as_str).collect();
            known.extend(self.vars.keys().map(String::as_str));
            return err(
                pos,
                format!("unknown variable '{name}'; known: {}", known.join(", ")),
            );
        };
        let s = &self.inputs.sources[*id];
        let picks = s
            .dims
            .iter()
            .zip(&s.shape)
            .map(|(d, &len)| Pick::Keep {
                dim: d.clone(),
                start: 0,
                step: 1,
                len,
            })
            .collect::<Vec<_>>();
        let coords = coords
            .iter()
            .map(|(d, &c)| {
                let len = s.dims.iter().position(|x| x == d).map_or(0, |i| s.shape[i]);
                (
                    d.clone(),
                    Coord {
                        source: c,
                        pick: Pick::Keep {
                            dim: d.clone(),
                            start: 0,
                            step: 1,
                            len,
                        },
                        labels: None,
                    },
                )
            })
            .collect();
        Ok(Val::Array(Lazy {
            dims: s.dims.clone(),
            shape: s.shape.clone(),
            dtype: s.dtype,
            attrs: s.attrs.clone(),
            coords,
            node: Node::Leaf { source: *id, picks },
        }))
    }

    fn eval(&mut self, ast: &Ast) -> Result<Val, CheckError> {
        match ast {
            Ast::Number { value, integer, .. } => Ok(Val::Array(scalar(
                *value,
                if *integer {
                    DType::Int64
                } else {
                    DType::Float64
                },
            ))),
            Ast::Str { value, .. } => Ok(Val::Str(value.clone())),
            Ast::Name { name, pos } => self.name(name, *pos),
            Ast::List { items, pos } => {
                let (mut names, mut arrays) = (Vec::new(), Vec::new());
                for i in items {
                    match self.eval(i)? {
                        Val::Str(s) if arrays.is_empty() => names.push(s),
                        Val::Array(a) if names.is_empty() => arrays.push(a),
                        _ => {
                            return err(
                                *pos,
                                "a list holds dimension names (strings) or arrays, not both",
                            )
                        }
                    }
                }
                Ok(if arrays.is_empty() {
                    Val::List(names)
                } else {
                    Val::Arrays(arrays)
                })
            }
            Ast::Attribute { name, pos, .. } => err(
                *pos,
                format!(
                    "'.{name}': attributes (group keys such as time.month) are not supported yet"
                ),
            ),
            Ast::Unary { op, operand, pos } => {
                let x = self.array(operand)?;
                let f = match op {
                    UnaryOp::Plus => return Ok(Val::Array(x)),
                    UnaryOp::Neg => Fun1::Neg,
                    UnaryOp::Invert if x.dtype == DType::Bool => Fun1::Not,
                    UnaryOp::Invert if x.dtype.is_int() => Fun1::Invert,
                    UnaryOp::Invert => {
                        return err(
                            *pos,
                            format!("'~' needs bool or integer values, not {}", x.dtype.name()),
                        )
                    }
                };
                let dtype = x.dtype;
                Ok(Val::Array(unary(f, x, dtype)))
            }
            Ast::Binary {
                op,
                left,
                right,
                pos,
            } => {
                let (a, b) = match (self.eval(left)?, self.eval(right)?) {
                    (Val::Grouped(x, g), Val::Array(b)) => {
                        let b = self.by_group(&x, &g, b, right.pos())?;
                        (x, b)
                    }
                    (Val::Array(a), Val::Grouped(x, g)) => {
                        let a = self.by_group(&x, &g, a, left.pos())?;
                        (a, x)
                    }
                    (Val::Array(a), Val::Array(b)) => (a, b),
                    (Val::Array(_), _) => {
                        return err(right.pos(), "expected an array or a number here")
                    }
                    _ => return err(left.pos(), "expected an array or a number here"),
                };
                Ok(Val::Array(binary_op(*op, a, b, *pos)?))
            }
            Ast::Call {
                callee,
                args,
                kwargs,
                pos,
            } => self.call(callee, args, kwargs, *pos),
        }
    }

    fn array(&mut self, ast: &Ast) -> Result<Lazy, CheckError> {
        match self.eval(ast)? {
            Val::Array(l) => Ok(l),
            _ => err(ast.pos(), "expected an array or a number here"),
        }
    }

    fn call(
        &mut self,
        callee: &Callee,
        args: &[Ast],
        kwargs: &[(String, Ast)],
        pos: Pos,
    ) -> Result<Val, CheckError> {
        // A method call is the function with the value as its first argument.
        let (name, mut vals) = match callee {
            Callee::Function(f) => (f.as_str(), Vec::new()),
            Callee::Method(v, m) => (m.as_str(), vec![self.eval(v)?]),
        };
        let method = matches!(callee, Callee::Method(..));
        for a in args {
            vals.push(self.eval(a)?);
        }
        let mut kw: BTreeMap<String, (Val, Pos)> = BTreeMap::new();
        for (k, a) in kwargs {
            kw.insert(k.clone(), (self.eval(a)?, a.pos()));
        }
        let call = Call {
            name,
            vals,
            kw,
            pos,
        };
        if name == "slice" {
            return call.slice();
        }
        if let (true, Some(Val::Grouped(x, g))) = (method, call.vals.first()) {
            let (x, g) = (x.clone(), g.clone());
            return Ok(Val::Array(call.grouped_reduction(x, &g)?));
        }
        if method && matches!(name, "groupby" | "resample") {
            return self.grouped(&call);
        }
        if let Some(op) = ReduceOp::from_name(name) {
            return Ok(Val::Array(call.reduction(op)?));
        }
        match (name, method) {
            ("isel", true) => Ok(Val::Array(call.isel()?)),
            ("sel", true) => Ok(Val::Array(call.sel(self.inputs, self.read)?)),
            ("concat", false) => Ok(Val::Array(call.concat()?)),
            ("stack", _) => Ok(Val::Array(call.stack()?)),
            ("broadcast_like", _) => Ok(Val::Array(call.broadcast_like()?)),
            ("rechunk" | "chunk", _) => Ok(Val::Array(call.rechunk()?)),
            _ => Ok(Val::Array(call.elementwise()?)),
        }
    }
}

fn unary(f: Fun1, x: Lazy, dtype: DType) -> Lazy {
    // Numbers fold here, so `-2` is a number wherever numbers are required (slice steps).
    if let Some(v) = x.is_const() {
        return scalar(dtype.round(crate::eval::fun1(f, v)), dtype);
    }
    let attrs = if matches!(f, Fun1::Neg | Fun1::Abs | Fun1::Floor | Fun1::Ceil) {
        kept_attrs(&x.attrs)
    } else {
        Map::new()
    };
    Lazy {
        dims: x.dims.clone(),
        shape: x.shape.clone(),
        dtype,
        attrs,
        coords: x.coords.clone(),
        node: Node::Unary(f, Box::new(x)),
    }
}

/// The type of an operation between `a` and `b`, Python numbers being weak (NEP 50).
fn result_type(a: &Lazy, b: &Lazy) -> DType {
    match (
        a.is_const().is_some() && a.dims.is_empty(),
        b.is_const().is_some() && b.dims.is_empty(),
    ) {
        (true, false) => weak(a.dtype, b.dtype),
        (false, true) => weak(b.dtype, a.dtype),
        _ => DType::promote(a.dtype, b.dtype),
    }
}

fn weak(scalar: DType, array: DType) -> DType {
    match (scalar.is_float(), array.is_float()) {
        (true, false) => DType::Float64,
        (false, _) if scalar == DType::Bool && array != DType::Bool => array,
        (false, _) if array == DType::Bool && scalar != DType::Bool => DType::Int64,
        _ => array,
    }
}

/// Dimensions, sizes and coordinates of a broadcast result.
type Broadcast = (Vec<String>, Vec<u64>, BTreeMap<String, Coord>);

fn describe_dims(x: &Lazy) -> String {
    x.dims
        .iter()
        .zip(&x.shape)
        .map(|(d, n)| format!("{d}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Broadcast by name: dims of `a`, then the new ones of `b`; sizes must agree.
fn broadcast(parts: &[&Lazy], pos: Pos) -> Result<Broadcast, CheckError> {
    broadcast_dims(parts, pos, None)
}

/// [`broadcast`], leaving dimension `except` out of the size and coordinate checks.
fn broadcast_dims(
    parts: &[&Lazy],
    pos: Pos,
    except: Option<&str>,
) -> Result<Broadcast, CheckError> {
    let (mut dims, mut shape, mut coords): (Vec<String>, Vec<u64>, BTreeMap<String, Coord>) =
        (Vec::new(), Vec::new(), BTreeMap::new());
    for p in parts {
        for (d, &n) in p.dims.iter().zip(&p.shape) {
            if except == Some(d.as_str()) {
                continue;
            }
            match dims.iter().position(|x| x == d) {
                Some(i) if shape[i] != n => {
                    return err(
                        pos,
                        format!("dimension '{d}' has size {} on one side and {n} on the other; sizes must match (alignment by label is not supported yet)", shape[i]),
                    )
                }
                Some(_) => {}
                None => {
                    dims.push(d.clone());
                    shape.push(n);
                }
            }
        }
        for (d, c) in &p.coords {
            if except == Some(c.dim(d)) {
                continue;
            }
            match coords.get(d) {
                Some(have) if have != c && have.source != c.source => {}
                Some(have) if have != c => {
                    return err(
                        pos,
                        format!("the '{d}' coordinates of the two sides differ (different selections); alignment by label is not supported yet"),
                    )
                }
                Some(_) => {}
                None => {
                    coords.insert(d.clone(), c.clone());
                }
            }
        }
    }
    Ok((dims, shape, coords))
}

fn binary_op(op: Fun2, a: Lazy, b: Lazy, pos: Pos) -> Result<Lazy, CheckError> {
    let t = result_type(&a, &b);
    let dtype = match op {
        _ if op.is_comparison() => DType::Bool,
        Fun2::Div => {
            if t.is_float() {
                t
            } else {
                DType::Float64
            }
        }
        Fun2::FloorDiv | Fun2::Mod => {
            if !t.is_float() && b.is_const() == Some(0.0) {
                return err(
                    pos,
                    format!("integer division by zero ('{}' 0)", op.symbol()),
                );
            }
            if t == DType::Bool {
                DType::Int8
            } else {
                t
            }
        }
        Fun2::Pow => {
            if t.is_int() && b.is_const().is_some_and(|v| v < 0.0) {
                return err(
                    pos,
                    "integers to negative integer powers are not allowed (as numpy)",
                );
            }
            t
        }
        Fun2::And | Fun2::Or => {
            if t.is_float() {
                return err(
                    pos,
                    format!(
                        "'{}' needs bool or integer values, not {}",
                        op.symbol(),
                        t.name()
                    ),
                );
            }
            t
        }
        _ => t,
    };
    binary(op, a, b, dtype, pos)
}

fn binary(f: Fun2, a: Lazy, b: Lazy, dtype: DType, pos: Pos) -> Result<Lazy, CheckError> {
    if let (Some(x), Some(y)) = (a.is_const(), b.is_const()) {
        return Ok(scalar(
            dtype.round(crate::eval::fun2(f, x, y, dtype.is_int())),
            dtype,
        ));
    }
    let (dims, shape, coords) = broadcast(&[&a, &b], pos)?;
    // Units survive + and - of one quantity, and operations with a plain number that keep it.
    let same_units = a.attrs.get("units") == b.attrs.get("units");
    let attrs = match f {
        Fun2::Add | Fun2::Sub | Fun2::Maximum | Fun2::Minimum | Fun2::Fillna
            if same_units || b.is_const().is_some() =>
        {
            units_only(&a.attrs)
        }
        Fun2::Add | Fun2::Sub if a.is_const().is_some() => units_only(&b.attrs),
        _ => Map::new(),
    };
    Ok(Lazy {
        dims,
        shape,
        dtype,
        attrs,
        coords,
        node: Node::Binary(f, Box::new(a), Box::new(b)),
    })
}

fn units_only(attrs: &Map<String, Value>) -> Map<String, Value> {
    attrs
        .iter()
        .filter(|(k, _)| k.as_str() == "units")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

struct Call<'a> {
    name: &'a str,
    vals: Vec<Val>,
    kw: BTreeMap<String, (Val, Pos)>,
    pos: Pos,
}

/// Python's `slice.indices(n)`: start, step and length.
fn slice_indices(n: u64, s: &[Option<f64>; 3]) -> Result<(u64, i64, u64), String> {
    let n = n as i64;
    let step = s[2].map_or(1, |v| v as i64);
    if step == 0 {
        return Err("slice step cannot be zero".into());
    }
    let clamp = |v: Option<f64>, default: i64| -> i64 {
        match v {
            None => default,
            Some(v) => {
                let v = v as i64;
                let v = if v < 0 { v + n } else { v };
                if step > 0 {
                    v.clamp(0, n)
                } else {
                    v.clamp(-1, n - 1)
                }
            }
        }
    };
    let (start, stop) = if step > 0 {
        (clamp(s[0], 0), clamp(s[1], n))
    } else {
        (clamp(s[0], n - 1), clamp(s[1], -1))
    };
    let len = if step > 0 {
        (stop - start + step - 1).div_euclid(step).max(0)
    } else {
        (start - stop + (-step) - 1).div_euclid(-step).max(0)
    };
    Ok((start.max(0) as u64, step, len as u64))
}

impl Call<'_> {
    fn arg(&self, i: usize, key: &str) -> Option<(Val, Pos)> {
        self.kw
            .get(key)
            .cloned()
            .or_else(|| self.vals.get(i).cloned().map(|v| (v, self.pos)))
    }

    fn array_arg(&self, i: usize, key: &str) -> Result<Lazy, CheckError> {
        match self.arg(i, key) {
            Some((Val::Array(l), _)) => Ok(l),
            Some((_, pos)) => err(
                pos,
                format!(
                    "{}: argument '{key}' must be an array or a number",
                    self.name
                ),
            ),
            None => err(self.pos, format!("{}: missing argument '{key}'", self.name)),
        }
    }

    /// The array a method taking dimension names as keywords (`sel`, `isel`, `stack`,
    /// `chunk`) is called on: only ever the first positional value, as a keyword `x` is the
    /// dimension named `x`, never the array.
    fn receiver(&self) -> Result<Lazy, CheckError> {
        match self.vals.first() {
            Some(Val::Array(l)) => Ok(l.clone()),
            Some(_) => err(
                self.pos,
                format!("{}: must be called on an array", self.name),
            ),
            None => err(self.pos, format!("{}: missing the array", self.name)),
        }
    }

    fn unknown_kwargs(&self, allowed: &[&str]) -> Result<(), CheckError> {
        if let Some((k, (_, pos))) = self.kw.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return err(
                *pos,
                format!("{}: unknown keyword argument '{k}'", self.name),
            );
        }
        Ok(())
    }

    fn slice(&self) -> Result<Val, CheckError> {
        let mut parts = [None, None, None];
        if self.vals.is_empty() || self.vals.len() > 3 || !self.kw.is_empty() {
            return err(self.pos, "slice takes 1 to 3 positional arguments");
        }
        let vals = if self.vals.len() == 1 {
            vec![Val::None, self.vals[0].clone()]
        } else {
            self.vals.clone()
        };
        for (i, v) in vals.iter().enumerate() {
            parts[i] = match v {
                Val::Str(_) => None,
                Val::None => None,
                Val::Array(l) if l.dims.is_empty() => l.is_const(),
                _ => return err(self.pos, "slice bounds are numbers or None"),
            };
        }
        let text = |v: &Val| match v {
            Val::Str(s) => Some(s.clone()),
            _ => None,
        };
        if vals.iter().any(|v| matches!(v, Val::Str(_))) {
            if vals.len() == 2 && vals.iter().all(|v| matches!(v, Val::Str(_) | Val::None)) {
                return Ok(Val::DateSlice([text(&vals[0]), text(&vals[1])]));
            }
            return err(self.pos, "a date slice takes two dates (or None)");
        }
        Ok(Val::Slice(parts))
    }

    fn dims_arg(&self, x: &Lazy) -> Result<Vec<String>, CheckError> {
        let dims = match self.arg(1, "dim") {
            None | Some((Val::None, _)) => x.dims.clone(),
            Some((Val::Str(s), _)) => vec![s],
            Some((Val::List(l), _)) => l,
            Some((_, pos)) => {
                return err(
                    pos,
                    format!("{}: dim is a name or a list of names", self.name),
                )
            }
        };
        for d in &dims {
            if x.size(d).is_none() {
                return err(
                    self.pos,
                    format!(
                        "{}: no dimension '{d}'; dimensions: {}",
                        self.name,
                        x.dims.join(", ")
                    ),
                );
            }
        }
        Ok(dims)
    }

    fn reduction(&self, op: ReduceOp) -> Result<Lazy, CheckError> {
        self.unknown_kwargs(&["dim", "skipna", "ddof"])?;
        let x = self.array_arg(0, "x")?;
        let dims = self.dims_arg(&x)?;
        if matches!(op, ReduceOp::Argmin | ReduceOp::Argmax) && dims.len() != 1 {
            return err(
                self.pos,
                format!("{}: give exactly one dimension", op.name()),
            );
        }
        let flag = |key: &str, default: bool| match self.kw.get(key) {
            Some((Val::Array(l), _)) => l.is_const().map_or(default, |v| v != 0.0),
            _ => default,
        };
        let ddof = match self.kw.get("ddof") {
            Some((Val::Array(l), _)) => l.is_const().unwrap_or(0.0),
            _ => 0.0,
        };
        let reduce = Reduce {
            op,
            skipna: flag("skipna", x.dtype.is_float()) && x.dtype.is_float(),
            ddof,
        };
        let dtype = match op {
            ReduceOp::Sum if x.dtype == DType::Bool => DType::Int64,
            ReduceOp::Sum if x.dtype.is_int() => {
                if matches!(
                    x.dtype,
                    DType::Uint8 | DType::Uint16 | DType::Uint32 | DType::Uint64
                ) {
                    DType::Uint64
                } else {
                    DType::Int64
                }
            }
            ReduceOp::Sum | ReduceOp::Min | ReduceOp::Max => x.dtype,
            ReduceOp::Mean | ReduceOp::Std | ReduceOp::Var => {
                if x.dtype == DType::Float32 {
                    DType::Float32
                } else {
                    DType::Float64
                }
            }
            ReduceOp::Count | ReduceOp::Argmin | ReduceOp::Argmax => DType::Int64,
        };
        let mut attrs = match op {
            ReduceOp::Count | ReduceOp::Argmin | ReduceOp::Argmax | ReduceOp::Var => Map::new(),
            _ => kept_attrs(&x.attrs),
        };
        let method = match op {
            ReduceOp::Sum => Some("sum"),
            ReduceOp::Mean => Some("mean"),
            ReduceOp::Min => Some("minimum"),
            ReduceOp::Max => Some("maximum"),
            ReduceOp::Std => Some("standard_deviation"),
            ReduceOp::Var => Some("variance"),
            _ => None,
        };
        if let Some(m) = method {
            let mine = format!("{}: {m}", dims.join(": "));
            let all = match x.attrs.get("cell_methods").and_then(Value::as_str) {
                Some(before) if !before.is_empty() => format!("{before} {mine}"),
                _ => mine,
            };
            attrs.insert("cell_methods".into(), Value::String(all));
        }
        let keep: Vec<usize> = (0..x.dims.len())
            .filter(|&i| !dims.contains(&x.dims[i]))
            .collect();
        Ok(Lazy {
            dims: keep.iter().map(|&i| x.dims[i].clone()).collect(),
            shape: keep.iter().map(|&i| x.shape[i]).collect(),
            dtype,
            attrs,
            coords: x.coords_off(&dims),
            node: Node::Reduce(Rc::new(Reduction {
                reduce,
                dtype,
                dims,
                input: x,
                group: None,
            })),
        })
    }

    fn isel(&self) -> Result<Lazy, CheckError> {
        let mut x = self.receiver()?;
        for (dim, (v, pos)) in &self.kw {
            refuse_stacked(&x, dim, *pos)?;
            let Some(n) = x.size(dim) else {
                return err(
                    *pos,
                    format!(
                        "isel: no dimension '{dim}'; dimensions: {}",
                        x.dims.join(", ")
                    ),
                );
            };
            x = match v {
                Val::Slice(s) => {
                    let (start, step, len) = slice_indices(n, s).map_err(|m| CheckError {
                        pos: *pos,
                        message: m,
                    })?;
                    select(&x, dim, start, step, Some(len))
                }
                Val::Array(l) if l.dims.is_empty() && l.dtype.is_int() => {
                    let i = l.is_const().unwrap_or(0.0) as i64;
                    let i = if i < 0 { i + n as i64 } else { i };
                    if i < 0 || i >= n as i64 {
                        return err(
                            *pos,
                            format!("isel: index {i} is out of range for '{dim}' of size {n}"),
                        );
                    }
                    select(&x, dim, i as u64, 1, None)
                }
                _ => {
                    return err(
                        *pos,
                        "isel takes an integer or slice(start, stop, step) per dimension",
                    )
                }
            };
        }
        Ok(x)
    }

    fn sel(&self, inputs: &Inputs, read: &Reader<'_>) -> Result<Lazy, CheckError> {
        let mut x = self.receiver()?;
        let (inexact, tolerance) = self.sel_method()?;
        for (dim, (v, pos)) in &self.kw {
            if dim == "method" || dim == "tolerance" {
                continue;
            }
            refuse_stacked(&x, dim, *pos)?;
            let Some(coord) = x.coords.get(dim).cloned() else {
                return err(
                    *pos,
                    format!(
                        "sel: '{dim}' has no coordinate to select by; dimensions: {}",
                        x.dims.join(", ")
                    ),
                );
            };
            let values = coord_values(&coord, inputs, read).map_err(|m| CheckError {
                pos: *pos,
                message: m,
            })?;
            if inexact.is_some() && !matches!(v, Val::Array(l) if l.dims.is_empty()) {
                return err(
                    *pos,
                    "sel: method= takes one number per dimension (no slice, no date)",
                );
            }
            if let Val::Str(_) | Val::DateSlice(_) = v {
                let axis = time_axis(&coord, inputs).map_err(|m| CheckError {
                    pos: *pos,
                    message: format!("sel: '{dim}' cannot be selected by date: {m}"),
                })?;
                x = sel_by_date(&x, dim, v, &axis, &values).map_err(|m| CheckError {
                    pos: *pos,
                    message: format!("sel: {m}"),
                })?;
                continue;
            }
            x = match v {
                Val::Slice(s) => {
                    let (start, len) = label_slice(&values, s[0], s[1]);
                    let step = s[2].map_or(1, |v| v as i64);
                    if step <= 0 {
                        return err(*pos, "sel: a slice step must be positive");
                    }
                    select(&x, dim, start, step, Some(len.div_ceil(step as u64)))
                }
                Val::Array(l) if l.dims.is_empty() => {
                    let want = l.is_const().unwrap_or(f64::NAN);
                    let found = match inexact {
                        None => values.iter().position(|&v| v == want),
                        Some(method) => inexact_position(&values, want, method, tolerance)
                            .map_err(|m| CheckError {
                                pos: *pos,
                                message: format!("sel: '{dim}': {m}"),
                            })?,
                    };
                    let Some(i) = found else {
                        let how = match (inexact, tolerance) {
                            (None, _) => "exact match".to_string(),
                            (Some(m), None) => format!("method='{}'", m.name()),
                            (Some(m), Some(t)) => {
                                format!("method='{}', tolerance={t}", m.name())
                            }
                        };
                        return err(*pos, format!("sel: no label {want} in '{dim}' ({how})"));
                    };
                    select(&x, dim, i as u64, 1, None)
                }
                _ => {
                    return err(
                        *pos,
                        "sel takes a label or slice(start, stop) per dimension",
                    )
                }
            };
        }
        Ok(x)
    }

    /// `sel`'s `method=` (pandas' names) and `tolerance=`.
    fn sel_method(&self) -> Result<(Option<Inexact>, Option<f64>), CheckError> {
        let method = match self.kw.get("method") {
            None | Some((Val::None, _)) => None,
            Some((Val::Str(m), pos)) => Some(match m.as_str() {
                "nearest" => Inexact::Nearest,
                "pad" | "ffill" => Inexact::Pad,
                "backfill" | "bfill" => Inexact::Backfill,
                other => {
                    return err(
                        *pos,
                        format!(
                        "sel: method '{other}' is not one of nearest, pad, ffill, backfill, bfill"
                    ),
                    )
                }
            }),
            Some((_, pos)) => return err(*pos, "sel: method is a name, like method=\"nearest\""),
        };
        let tolerance = match self.kw.get("tolerance") {
            None | Some((Val::None, _)) => None,
            Some((Val::Array(l), pos)) if l.dims.is_empty() => match l.is_const() {
                Some(t) if t >= 0.0 => Some(t),
                _ => return err(*pos, "sel: tolerance is a number ≥ 0"),
            },
            Some((_, pos)) => return err(*pos, "sel: tolerance is a number ≥ 0"),
        };
        if tolerance.is_some() && method.is_none() {
            if let Some((_, pos)) = self.kw.get("tolerance") {
                return err(
                    *pos,
                    "sel: tolerance needs a method, like method=\"nearest\"",
                );
            }
        }
        Ok((method, tolerance))
    }

    fn dim_name(&self, i: usize) -> Result<String, CheckError> {
        match self.arg(i, "dim") {
            Some((Val::Str(d), _)) => Ok(d),
            Some((_, pos)) => err(pos, format!("{}: dim is a dimension name", self.name)),
            None => err(self.pos, format!("{}: missing argument 'dim'", self.name)),
        }
    }

    /// `concat([a, b, …], dim="time")`: along an existing dimension (the parts' other
    /// dimensions must match) or a new one (first; the parts must match).
    fn concat(&self) -> Result<Lazy, CheckError> {
        self.unknown_kwargs(&["dim"])?;
        let parts = match self.arg(0, "objs") {
            Some((Val::Arrays(a), _)) => a,
            Some((_, pos)) => {
                return err(
                    pos,
                    "concat: give a list of arrays, like concat([a, b], dim=\"time\")",
                )
            }
            None => return err(self.pos, "concat: missing the list of arrays"),
        };
        let dim = self.dim_name(1)?;
        let first = &parts[0];
        let existing = first.size(&dim).is_some();
        let others = |p: &Lazy| -> Vec<(String, u64)> {
            p.dims
                .iter()
                .zip(&p.shape)
                .filter(|(d, _)| **d != dim)
                .map(|(d, n)| (d.clone(), *n))
                .collect()
        };
        for p in &parts {
            if p.dims.is_empty() {
                return err(self.pos, "concat: the parts must be arrays, not numbers");
            }
            if p.size(&dim).is_some() != existing || others(p) != others(first) {
                return err(
                    self.pos,
                    format!(
                        "concat: the parts must have the same dimensions and sizes but '{dim}': ({}) and ({})",
                        describe_dims(first),
                        describe_dims(p)
                    ),
                );
            }
        }
        let refs: Vec<&Lazy> = parts.iter().collect();
        let (_, _, mut coords) = broadcast_dims(&refs, self.pos, Some(&dim))?;
        let dtype = parts[1..]
            .iter()
            .fold(first.dtype, |t, p| DType::promote(t, p.dtype));
        let total: u64 = parts.iter().map(|p| part_len(p, &dim)).sum();
        let (dims, shape) = if existing {
            let i = first.dims.iter().position(|d| *d == dim).unwrap_or(0);
            let mut shape = first.shape.clone();
            shape[i] = total;
            if let Some(c) = joined_coord(&parts, &dim) {
                coords.insert(dim.clone(), c);
            }
            (first.dims.clone(), shape)
        } else {
            let mut dims = vec![dim.clone()];
            dims.extend(first.dims.iter().cloned());
            let mut shape = vec![total];
            shape.extend(&first.shape);
            (dims, shape)
        };
        Ok(Lazy {
            dims,
            shape,
            dtype,
            attrs: first.attrs.clone(),
            coords,
            node: Node::Concat { dim, parts },
        })
    }

    /// `x.stack(z=["lat", "lon"])`: the dimensions stacked into a new last one, the first
    /// varying slowest (xarray's order); their coordinates are not carried.
    fn stack(&self) -> Result<Lazy, CheckError> {
        let mut x = self.receiver()?;
        if self.kw.is_empty() {
            return err(
                self.pos,
                "stack: name the new dimension, like stack(z=[\"lat\", \"lon\"])",
            );
        }
        for (new, (v, pos)) in &self.kw {
            let Val::List(dims) = v else {
                return err(
                    *pos,
                    "stack: give the dimensions to stack as a list of names",
                );
            };
            if dims.is_empty() {
                return err(*pos, "stack: give at least one dimension");
            }
            for d in dims {
                if x.size(d).is_none() {
                    return err(
                        *pos,
                        format!(
                            "stack: no dimension '{d}'; dimensions: {}",
                            x.dims.join(", ")
                        ),
                    );
                }
            }
            if x.size(new).is_some() && !dims.contains(new) {
                return err(*pos, format!("stack: '{new}' is already a dimension"));
            }
            let keep: Vec<usize> = (0..x.dims.len())
                .filter(|&i| !dims.contains(&x.dims[i]))
                .collect();
            let mut out_dims: Vec<String> = keep.iter().map(|&i| x.dims[i].clone()).collect();
            let mut out_shape: Vec<u64> = keep.iter().map(|&i| x.shape[i]).collect();
            out_dims.push(new.clone());
            out_shape.push(dims.iter().filter_map(|d| x.size(d)).product());
            x = Lazy {
                dims: out_dims,
                shape: out_shape,
                dtype: x.dtype,
                attrs: x.attrs.clone(),
                coords: x.coords_off(dims),
                node: Node::Stack {
                    dims: dims.clone(),
                    x: Box::new(x),
                },
            };
        }
        Ok(x)
    }

    /// `x.broadcast_like(other)`: `x` over `other`'s dimensions too (xarray's order:
    /// `other`'s, then those only `x` has).
    fn broadcast_like(&self) -> Result<Lazy, CheckError> {
        self.unknown_kwargs(&["other"])?;
        let x = self.array_arg(0, "x")?;
        let other = self.array_arg(1, "other")?;
        let (dims, shape, coords) = broadcast(&[&other, &x], self.pos)?;
        Ok(Lazy {
            dims,
            shape,
            dtype: x.dtype,
            attrs: x.attrs.clone(),
            coords,
            node: Node::Like(Box::new(x), Box::new(other)),
        })
    }

    /// `x.rechunk(time=-1)` or `x.chunk(time=10)`: `x` with these chunks (`-1`: the whole
    /// dimension), made by the rechunk planner.
    fn rechunk(&self) -> Result<Lazy, CheckError> {
        let x = self.receiver()?;
        let mut chunks = BTreeMap::new();
        for (dim, (v, pos)) in &self.kw {
            let Some(n) = x.size(dim) else {
                return err(
                    *pos,
                    format!(
                        "{}: no dimension '{dim}'; dimensions: {}",
                        self.name,
                        x.dims.join(", ")
                    ),
                );
            };
            let size = match v {
                Val::Array(l) if l.dims.is_empty() && l.dtype.is_int() => {
                    l.is_const().unwrap_or(0.0)
                }
                _ => {
                    return err(
                        *pos,
                        format!(
                            "{}: a chunk size is a whole number (-1: the whole dimension)",
                            self.name
                        ),
                    )
                }
            };
            let size = if size == -1.0 {
                n.max(1)
            } else if size >= 1.0 {
                size as u64
            } else {
                return err(
                    *pos,
                    format!(
                        "{}: chunk size {size} for '{dim}'; give a positive size or -1",
                        self.name
                    ),
                );
            };
            chunks.insert(dim.clone(), size);
        }
        if chunks.is_empty() {
            return err(
                self.pos,
                format!(
                    "{}: give chunks by dimension, like {}(time=-1)",
                    self.name, self.name
                ),
            );
        }
        Ok(Lazy {
            node: Node::Rechunk(Rc::new(Rechunk {
                chunks,
                input: x.clone(),
            })),
            ..x
        })
    }

    fn elementwise(&self) -> Result<Lazy, CheckError> {
        let one = |f: Fun1, float: bool| -> Result<Lazy, CheckError> {
            self.unknown_kwargs(&[])?;
            let x = self.array_arg(0, "x")?;
            let dtype = if f == Fun1::IsNan {
                DType::Bool
            } else if float {
                x.dtype.float_of()
            } else {
                x.dtype
            };
            Ok(unary(f, x, dtype))
        };
        match self.name {
            "abs" => one(Fun1::Abs, false),
            "floor" => one(Fun1::Floor, true),
            "ceil" => one(Fun1::Ceil, true),
            "sqrt" => one(Fun1::Sqrt, true),
            "exp" => one(Fun1::Exp, true),
            "log" => one(Fun1::Log, true),
            "log10" => one(Fun1::Log10, true),
            "sin" => one(Fun1::Sin, true),
            "cos" => one(Fun1::Cos, true),
            "tan" => one(Fun1::Tan, true),
            "isnan" | "isnull" => one(Fun1::IsNan, false),
            "arctan2" => {
                let (a, b) = (self.array_arg(0, "y")?, self.array_arg(1, "x")?);
                let t = result_type(&a, &b).float_of();
                binary(Fun2::Arctan2, a, b, t, self.pos)
            }
            "fillna" => {
                let (a, b) = (self.array_arg(0, "x")?, self.array_arg(1, "value")?);
                let t = result_type(&a, &b);
                binary(Fun2::Fillna, a, b, t, self.pos)
            }
            "clip" => {
                self.unknown_kwargs(&["min", "max"])?;
                let mut x = self.array_arg(0, "x")?;
                for (i, key, f) in [(1, "min", Fun2::Maximum), (2, "max", Fun2::Minimum)] {
                    if let Some((Val::Array(bound), _)) = self.arg(i, key) {
                        let t = result_type(&x, &bound);
                        x = binary(f, x, bound, t, self.pos)?;
                    }
                }
                Ok(x)
            }
            "where" => {
                let c = self.array_arg(0, "cond")?;
                let a = self.array_arg(1, "x")?;
                let b = match self.arg(2, "y") {
                    Some((Val::Array(b), _)) => b,
                    // xarray's DataArray.where: NaN where the condition is false.
                    None => scalar(f64::NAN, DType::Float64),
                    Some((_, pos)) => return err(pos, "where: y must be an array or a number"),
                };
                let t = result_type(&a, &b);
                let (dims, shape, coords) = broadcast(&[&c, &a, &b], self.pos)?;
                Ok(Lazy {
                    dims,
                    shape,
                    dtype: t,
                    attrs: units_only(&a.attrs),
                    coords,
                    node: Node::Where(Box::new(c), Box::new(a), Box::new(b)),
                })
            }
            "astype" => {
                let x = self.array_arg(0, "x")?;
                let Some((Val::Str(name), pos)) = self.arg(1, "dtype") else {
                    return err(self.pos, "astype takes a data type name such as \"float32\"");
                };
                let Some(dtype) = DType::from_name(&name) else {
                    return err(pos, format!("astype: unknown data type '{name}'"));
                };
                Ok(Lazy {
                    dims: x.dims.clone(),
                    shape: x.shape.clone(),
                    dtype,
                    attrs: kept_attrs(&x.attrs),
                    coords: x.coords.clone(),
                    node: Node::Cast(Box::new(x)),
                })
            }
            other => err(
                self.pos,
                format!("unknown function '{other}'; functions: abs sqrt exp log log10 sin cos tan arctan2 floor ceil clip isnan fillna where astype sum mean min max std var count argmin argmax isel sel slice concat stack broadcast_like rechunk chunk"),
            ),
        }
    }
}

/// Selection along a stacked dimension is not supported (its index is a product of others).
fn refuse_stacked(x: &Lazy, dim: &str, pos: Pos) -> Result<(), CheckError> {
    fn stacked(x: &Lazy, dim: &str) -> bool {
        match &x.node {
            Node::Stack { x: inner, .. } => {
                x.dims.last().is_some_and(|d| d == dim) || stacked(inner, dim)
            }
            Node::Const(_) | Node::Leaf { .. } => false,
            Node::Unary(_, a) | Node::Cast(a) | Node::Gather { x: a, .. } => stacked(a, dim),
            Node::Binary(_, a, b) | Node::Like(a, b) => stacked(a, dim) || stacked(b, dim),
            Node::Where(c, a, b) => stacked(c, dim) || stacked(a, dim) || stacked(b, dim),
            Node::Concat { parts, .. } => parts.iter().any(|p| stacked(p, dim)),
            Node::Reduce(r) => stacked(&r.input, dim),
            Node::Rechunk(r) => stacked(&r.input, dim),
        }
    }
    if stacked(x, dim) {
        return err(
            pos,
            format!("selecting along the stacked dimension '{dim}' is not supported; select before stacking"),
        );
    }
    Ok(())
}

/// The coordinate along `dim` of parts joined along it: one stretch of one coordinate when
/// the parts' stretches follow each other; none otherwise.
fn joined_coord(parts: &[Lazy], dim: &str) -> Option<Coord> {
    let mut joined: Option<(usize, String, u64, i64, u64)> = None;
    for p in parts {
        let c = p.coords.get(dim)?;
        if c.labels.is_some() {
            return None;
        }
        let Pick::Keep {
            dim: d,
            start,
            step,
            len,
        } = &c.pick
        else {
            return None;
        };
        joined = match joined {
            None => Some((c.source, d.clone(), *start, *step, *len)),
            Some((source, d0, s0, st0, n0))
                if source == c.source
                    && *d == d0
                    && (*len == 0
                        || (*step == st0 || *len == 1)
                            && *start as i64 == s0 as i64 + st0 * n0 as i64) =>
            {
                Some((source, d0, s0, st0, n0 + len))
            }
            Some(_) => return None,
        };
    }
    joined.map(|(source, d, start, step, len)| Coord {
        labels: None,
        source,
        pick: Pick::Keep {
            dim: d,
            start,
            step,
            len,
        },
    })
}

/// How `sel` matches a label that is not in the coordinate: pandas' `get_indexer` methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inexact {
    Nearest,
    Pad,
    Backfill,
}

impl Inexact {
    fn name(self) -> &'static str {
        match self {
            Inexact::Nearest => "nearest",
            Inexact::Pad => "pad",
            Inexact::Backfill => "backfill",
        }
    }
}

/// The position `sel(…, method=…)` picks for `want` among `values`, as pandas does: `pad` the
/// last label at or before `want` in the coordinate's order (at most it when increasing, at
/// least it when decreasing), `backfill` the first at or after it, `nearest` the closer of
/// the two (a tie goes to the later position on an increasing coordinate, the earlier on a
/// decreasing one); `None` when there is none, or it is farther than `tolerance`.
///
/// # Errors
/// When `values` is not monotonic (or holds NaN), as pandas refuses.
fn inexact_position(
    values: &[f64],
    want: f64,
    method: Inexact,
    tolerance: Option<f64>,
) -> Result<Option<usize>, String> {
    let increasing = values.windows(2).all(|w| w[0] <= w[1]);
    if !increasing && !values.windows(2).all(|w| w[0] >= w[1]) {
        return Err("the coordinate must be monotonic increasing or decreasing".into());
    }
    // pandas matches no label of a coordinate holding one twice (monotonic: side by side).
    if let Some(w) = values.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!(
            "the coordinate holds the label {} more than once; a method= picks only among unique labels",
            w[0]
        ));
    }
    let before = |v: f64| if increasing { v <= want } else { v >= want };
    let after = |v: f64| if increasing { v >= want } else { v <= want };
    let pad = values.iter().rposition(|&v| before(v));
    let backfill = values.iter().position(|&v| after(v));
    let distance = |i: usize| (values[i] - want).abs();
    let picked = match method {
        Inexact::Pad => pad,
        Inexact::Backfill => backfill,
        Inexact::Nearest => match (pad, backfill) {
            (Some(l), Some(r)) => {
                let left = if increasing {
                    distance(l) < distance(r)
                } else {
                    distance(l) <= distance(r)
                };
                Some(if left { l } else { r })
            }
            (one, other) => one.or(other),
        },
    };
    Ok(picked.filter(|&i| tolerance.is_none_or(|t| distance(i) <= t)))
}

/// xarray's label slice on a monotonic coordinate: both ends included, in the coordinate's
/// order (a descending coordinate takes `slice(60, 30)`). Returns start and length.
fn label_slice(values: &[f64], from: Option<f64>, to: Option<f64>) -> (u64, u64) {
    let descending = values.len() > 1 && values[0] > values[values.len() - 1];
    let inside = |v: f64| -> bool {
        let lo_ok = from.is_none_or(|a| if descending { v <= a } else { v >= a });
        let hi_ok = to.is_none_or(|b| if descending { v >= b } else { v <= b });
        lo_ok && hi_ok
    };
    let first = values.iter().position(|&v| inside(v));
    match first {
        None => (0, 0),
        Some(s) => {
            let n = values[s..].iter().take_while(|&&v| inside(v)).count();
            (s as u64, n as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inexact_labels_are_pandas() -> Result<(), String> {
        // pandas: Index(values).get_indexer([want], method=…, tolerance=…)
        let up = [0.0, 1.0, 2.0, 3.0];
        let down = [3.0, 2.0, 1.0, 0.0];
        let pick = |values: &[f64], want, m| inexact_position(values, want, m, None);
        use Inexact::{Backfill, Nearest, Pad};
        for (want, nearest, pad, backfill) in [
            (1.5, Some(2), Some(1), Some(2)),
            (-5.0, Some(0), None, Some(0)),
            (10.0, Some(3), Some(3), None),
            (2.0, Some(2), Some(2), Some(2)),
            (0.4, Some(0), Some(0), Some(1)),
        ] {
            assert_eq!(pick(&up, want, Nearest)?, nearest, "{want}");
            assert_eq!(pick(&up, want, Pad)?, pad, "{want}");
            assert_eq!(pick(&up, want, Backfill)?, backfill, "{want}");
        }
        // Decreasing: the tie of 1.5 goes to the earlier position, the label 2.
        for (want, nearest, pad, backfill) in [
            (1.5, Some(1), Some(1), Some(2)),
            (-5.0, Some(3), Some(3), None),
            (10.0, Some(0), None, Some(0)),
            (0.4, Some(3), Some(2), Some(3)),
        ] {
            assert_eq!(pick(&down, want, Nearest)?, nearest, "{want}");
            assert_eq!(pick(&down, want, Pad)?, pad, "{want}");
            assert_eq!(pick(&down, want, Backfill)?, backfill, "{want}");
        }
        assert_eq!(inexact_position(&up, 1.5, Nearest, Some(0.3))?, None);
        assert_eq!(inexact_position(&up, 2.0, Nearest, Some(0.3))?, Some(2));
        assert_eq!(inexact_position(&up, 1.8, Nearest, Some(0.2))?, Some(2));
        assert!(inexact_position(&[0.0, 2.0, 1.0], 1.4, Nearest, None).is_err());
        assert!(inexact_position(&[0.0, f64::NAN, 1.0], 1.4, Nearest, None).is_err());
        Ok(())
    }

    #[test]
    fn slice_indices_are_pythons() -> Result<(), String> {
        // Python: slice(a, b, c).indices(10) and len(range(...)).
        assert_eq!(slice_indices(10, &[Some(0.0), Some(3.0), None])?, (0, 1, 3));
        assert_eq!(slice_indices(10, &[None, None, Some(-1.0)])?, (9, -1, 10));
        assert_eq!(slice_indices(10, &[Some(-3.0), None, None])?, (7, 1, 3));
        assert_eq!(
            slice_indices(10, &[Some(8.0), Some(2.0), Some(-3.0)])?,
            (8, -3, 2)
        );
        assert_eq!(
            slice_indices(10, &[Some(1.0), Some(9.0), Some(4.0)])?,
            (1, 4, 2)
        );
        assert_eq!(slice_indices(10, &[Some(5.0), Some(2.0), None])?.2, 0);
        Ok(())
    }

    fn checked(script: &str) -> Result<Vec<(String, Lazy)>, CheckError> {
        let mut inputs = Inputs::default();
        inputs.sources.push(Source {
            url: "/in.zarr".into(),
            path: "air".into(),
            dtype: DType::Int16,
            stored: DType::Int16,
            shape: vec![23, 7],
            chunks: vec![5, 3],
            dims: vec!["time".into(), "lat".into()],
            attrs: Map::new(),
            missing: vec![],
            unpack: None,
        });
        inputs.names.insert("air".into(), (0, BTreeMap::new()));
        let script = crate::syntax::parse(script).map_err(|e| CheckError {
            pos: e.pos,
            message: e.message,
        })?;
        check(&script, &inputs, &|_, _| Err("no coordinates".into()))
    }

    #[test]
    fn negative_slice_steps_are_numbers() -> Result<(), CheckError> {
        // Regression: `-2` was an expression, not a number, and the step was taken as 1.
        let out = checked("x = air.isel(time=slice(None, None, -2))")?;
        assert_eq!(out[0].1.shape, [12, 7]);
        Ok(())
    }

    #[test]
    fn types_and_shapes_follow_xarray() -> Result<(), CheckError> {
        let out = checked("a = air / 2\nb = air * 2.5\nc = air.mean('time')\nd = air // 3\ne = air.isel(lat=0).sum()")?;
        let types: Vec<&str> = out.iter().map(|(_, l)| l.dtype.name()).collect();
        assert_eq!(types, ["float64", "float64", "float64", "int16", "int64"]);
        assert_eq!(out[2].1.dims, ["lat"]);
        assert!(out[4].1.dims.is_empty());
        Ok(())
    }

    #[test]
    fn bad_names_and_shapes_point_at_the_place() {
        let e = checked("x = air + 1\ny = ai").err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.starts_with("2:5: unknown variable 'ai'")),
            "{e:?}"
        );
        let e = checked("x = air.mean('lon')").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("no dimension 'lon'; dimensions: time, lat")));
        let e = checked("x = air + air.isel(time=slice(0, 3))")
            .err()
            .map(|e| e.to_string());
        assert!(
            e.is_some_and(|e| e.starts_with("1:9: dimension 'time' has size 23 on one side and 3"))
        );
        let e = checked("x = air % 0").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("integer division by zero")));
        let e = checked("x = nanmean(air)").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("1:5: unknown function 'nanmean'")));
    }

    #[test]
    fn label_slices_follow_the_coordinate_order() {
        let lat = [75.0, 67.5, 60.0, 52.5, 45.0, 37.5, 30.0, 22.5];
        assert_eq!(label_slice(&lat, Some(60.0), Some(30.0)), (2, 5));
        assert_eq!(label_slice(&lat, Some(30.0), Some(60.0)), (0, 0));
        let lon = [200.0, 202.5, 205.0, 207.5];
        assert_eq!(label_slice(&lon, Some(201.0), None), (1, 3));
    }
}
