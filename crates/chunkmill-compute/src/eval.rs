//! Evaluating a task's expression over its block: each node over the whole block at once
//! (reads gathered by `task`, constants kept scalar until they meet a block), every result
//! rounded to its node's type, and values the operation cannot take refused ([`DataError`]).

use chunkmill_grid::{CoordIter, Region};

use crate::dtype::DType;
use crate::kernel::{DataError, Expr, Fun1, Fun2, Read};

/// Why a block could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// An input could not be read.
    #[error("{0}")]
    Read(String),
    /// A value in the data the operation cannot take.
    #[error(transparent)]
    Data(#[from] DataError),
}

/// Reads `read`'s values over a region of the domain of the expression it is in.
pub type Reader<'a> = dyn FnMut(&Read, &Region) -> Result<Vec<f64>, String> + 'a;

/// Round every value to `dtype`.
fn rounded(mut v: Vec<f64>, dtype: DType) -> Vec<f64> {
    if dtype != DType::Float64 {
        for x in &mut v {
            *x = dtype.round(*x);
        }
    }
    v
}

pub(crate) fn fun1(f: Fun1, x: f64) -> f64 {
    match f {
        Fun1::Neg => -x,
        Fun1::Abs => x.abs(),
        Fun1::Sqrt => x.sqrt(),
        Fun1::Exp => x.exp(),
        Fun1::Log => x.ln(),
        Fun1::Log10 => x.log10(),
        Fun1::Sin => x.sin(),
        Fun1::Cos => x.cos(),
        Fun1::Tan => x.tan(),
        Fun1::Floor => x.floor(),
        Fun1::Ceil => x.ceil(),
        Fun1::IsNan => f64::from(u8::from(x.is_nan())),
        Fun1::Not => f64::from(u8::from(x == 0.0)),
        Fun1::Invert => -x - 1.0,
    }
}

pub(crate) fn fun2(f: Fun2, a: f64, b: f64, int: bool) -> f64 {
    let truth = |t: bool| f64::from(u8::from(t));
    match f {
        Fun2::Add => a + b,
        Fun2::Sub => a - b,
        Fun2::Mul => a * b,
        Fun2::Div => a / b,
        // numpy gives 0 for an integer division by zero (and warns).
        Fun2::FloorDiv if int && b == 0.0 => 0.0,
        Fun2::FloorDiv => (a / b).floor(),
        Fun2::Mod if int && b == 0.0 => 0.0,
        Fun2::Mod => {
            let r = a % b;
            if r != 0.0 && ((r < 0.0) != (b < 0.0)) {
                r + b
            } else {
                r
            }
        }
        Fun2::Pow => a.powf(b),
        Fun2::Eq => truth(a == b),
        Fun2::Ne => truth(a != b),
        Fun2::Lt => truth(a < b),
        Fun2::Le => truth(a <= b),
        Fun2::Gt => truth(a > b),
        Fun2::Ge => truth(a >= b),
        Fun2::And => ((a as i64) & (b as i64)) as f64,
        Fun2::Or => ((a as i64) | (b as i64)) as f64,
        Fun2::Arctan2 => a.atan2(b),
        Fun2::Maximum => {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.max(b)
            }
        }
        Fun2::Minimum => {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.min(b)
            }
        }
        Fun2::Fillna => {
            if a.is_nan() {
                b
            } else {
                a
            }
        }
    }
}

/// A block of a region's values; constants stay scalars until they meet a block, and a read
/// whose values lie in one run of a block the task holds is a view of it (not copied): of
/// f64 values, or of float32 values as stored, which float32 arithmetic takes as they are
/// and every other operation as f64 ([`Val::widened`]).
enum Val<'v> {
    Scalar(f64),
    Block(Vec<f64>),
    View(&'v [f64]),
    View32(&'v [f32]),
}

impl<'v> Val<'v> {
    fn into_block(self, n: usize) -> Vec<f64> {
        match self {
            Val::Scalar(v) => crate::scratch::values_filled(n, v),
            Val::Block(b) => b,
            Val::View(v) => {
                let mut b = crate::scratch::values(v.len());
                b.copy_from_slice(v);
                b
            }
            Val::View32(v) => {
                let mut b = crate::scratch::values(v.len());
                for (o, &x) in b.iter_mut().zip(v) {
                    *o = f64::from(x);
                }
                b
            }
        }
    }

    /// A float32 view as f64 values; the others as they are.
    fn widened(self) -> Val<'v> {
        match self {
            Val::View32(v) => Val::Block(Val::View32(v).into_block(v.len())),
            other => other,
        }
    }
}

/// Values a task holds, lent to an evaluation without a copy.
#[derive(Clone, Copy)]
pub(crate) enum Lent<'v> {
    F64(&'v [f64]),
    /// float32 values as stored.
    F32(&'v [f32]),
}

/// Finds the values of a read over the current region in a block the task holds, when they
/// are one run of it.
pub(crate) type Views<'v> = dyn Fn(&Read) -> Option<Lent<'v>> + 'v;

/// Evaluate `expr` over `region` of its domain, reading arrays with `read`.
///
/// # Errors
/// [`EvalError::Read`] with what `read` returns; [`EvalError::Data`] for an integer division
/// by a zero in the data.
pub fn eval(expr: &Expr, region: &Region, read: &mut Reader<'_>) -> Result<Vec<f64>, EvalError> {
    let n = region.num_elements() as usize;
    Ok(eval_val(expr, region, read)?.into_block(n))
}

/// The values of an expression over a tile: its own buffer, or a view of a held block when
/// the expression is one read (copied only by a caller that needs to own it).
pub(crate) enum Tile<'v> {
    Owned(Vec<f64>),
    View(&'v [f64]),
}

impl std::ops::Deref for Tile<'_> {
    type Target = [f64];

    fn deref(&self) -> &[f64] {
        match self {
            Tile::Owned(v) => v,
            Tile::View(v) => v,
        }
    }
}

impl Tile<'_> {
    /// Its buffer back for reuse.
    pub(crate) fn give_back(self) {
        if let Tile::Owned(v) = self {
            crate::scratch::give_values(v);
        }
    }
}

/// [`eval`], taking the reads that `views` finds from it instead of `read`.
pub(crate) fn eval_with_views<'v>(
    expr: &Expr,
    region: &Region,
    views: &Views<'v>,
    read: &mut Reader<'_>,
) -> Result<Tile<'v>, EvalError> {
    let n = region.num_elements() as usize;
    let mut env = Env { views, read };
    Ok(match env.eval_val(expr, region)? {
        Val::View(v) => Tile::View(v),
        other => Tile::Owned(other.into_block(n)),
    })
}

/// `x op y` of float32 operations whose operands are float32 views or scalars that float32
/// holds exactly, computed in float32 (no f64 copy of the views). numpy computes them so,
/// and so does the f64 path rounded to float32: a sum, difference, product or quotient of
/// two float32 values rounded once to f64 and then to float32 is the value rounded once to
/// float32 (f64 has more than twice float32's precision). `None` for anything else.
fn float32_arithmetic(f: Fun2, a: &Val<'_>, b: &Val<'_>, dtype: DType) -> Option<Vec<f64>> {
    #[derive(Clone, Copy)]
    enum Side<'a> {
        Values(&'a [f32]),
        Scalar(f32),
    }
    fn side<'a>(v: &Val<'a>) -> Option<Side<'a>> {
        match v {
            Val::View32(x) => Some(Side::Values(x)),
            Val::Scalar(s) if f64::from(*s as f32) == *s => Some(Side::Scalar(*s as f32)),
            _ => None,
        }
    }
    if dtype != DType::Float32 {
        return None;
    }
    let square = f == Fun2::Pow && matches!(b, Val::Scalar(y) if *y == 2.0);
    if !square && !matches!(f, Fun2::Add | Fun2::Sub | Fun2::Mul | Fun2::Div) {
        return None;
    }
    let (x, y) = (side(a)?, side(b)?);
    let n = match (x, y) {
        (Side::Values(x), Side::Values(y)) => x.len().min(y.len()),
        (Side::Values(v), Side::Scalar(_)) | (Side::Scalar(_), Side::Values(v)) => v.len(),
        (Side::Scalar(_), Side::Scalar(_)) => return None,
    };
    let mut out = crate::scratch::values(n);
    // One loop per operation and shape of operands, so that each vectorizes.
    fn each(out: &mut [f64], x: Side<'_>, y: Side<'_>, g: impl Fn(f32, f32) -> f32) {
        match (x, y) {
            (Side::Values(x), Side::Values(y)) => {
                for ((o, &p), &q) in out.iter_mut().zip(x).zip(y) {
                    *o = f64::from(g(p, q));
                }
            }
            (Side::Values(x), Side::Scalar(q)) => {
                for (o, &p) in out.iter_mut().zip(x) {
                    *o = f64::from(g(p, q));
                }
            }
            (Side::Scalar(p), Side::Values(y)) => {
                for (o, &q) in out.iter_mut().zip(y) {
                    *o = f64::from(g(p, q));
                }
            }
            (Side::Scalar(_), Side::Scalar(_)) => {}
        }
    }
    match f {
        _ if square => each(&mut out, x, y, |p, _| p * p),
        Fun2::Add => each(&mut out, x, y, |p, q| p + q),
        Fun2::Sub => each(&mut out, x, y, |p, q| p - q),
        Fun2::Mul => each(&mut out, x, y, |p, q| p * q),
        _ => each(&mut out, x, y, |p, q| p / q),
    }
    Some(out)
}

/// One operand of an elementwise operation: the output buffer itself, a scalar or values.
#[derive(Clone, Copy)]
enum Side<'a> {
    Out,
    Scalar(f64),
    Values(&'a [f64]),
}

/// `out[i] = g(a[i], b[i])`, each side the output, a scalar or values: one loop per shape of
/// operands, each specialised for `g` so the compiler vectorizes it.
fn apply(out: &mut [f64], a: Side<'_>, b: Side<'_>, g: impl Fn(f64, f64) -> f64) {
    match (a, b) {
        (Side::Out, Side::Values(y)) => {
            for (v, &w) in out.iter_mut().zip(y) {
                *v = g(*v, w);
            }
        }
        (Side::Out, Side::Scalar(y)) => {
            for v in out.iter_mut() {
                *v = g(*v, y);
            }
        }
        (Side::Values(x), Side::Out) => {
            for (v, &w) in out.iter_mut().zip(x) {
                *v = g(w, *v);
            }
        }
        (Side::Scalar(x), Side::Out) => {
            for v in out.iter_mut() {
                *v = g(x, *v);
            }
        }
        (Side::Values(x), Side::Values(y)) => {
            for ((v, &p), &q) in out.iter_mut().zip(x).zip(y) {
                *v = g(p, q);
            }
        }
        (Side::Values(x), Side::Scalar(y)) => {
            for (v, &p) in out.iter_mut().zip(x) {
                *v = g(p, y);
            }
        }
        (Side::Scalar(x), Side::Values(y)) => {
            for (v, &q) in out.iter_mut().zip(y) {
                *v = g(x, q);
            }
        }
        // Not produced: the output buffer stands for one side at most, and two scalars
        // are computed without a buffer.
        (Side::Out, Side::Out) | (Side::Scalar(_), Side::Scalar(_)) => {}
    }
}

fn binary_blocks(f: Fun2, a: Val<'_>, b: Val<'_>, dtype: DType) -> Result<Val<'static>, EvalError> {
    let int = dtype.is_int();
    if int && matches!(f, Fun2::FloorDiv | Fun2::Mod) {
        let zero = match &b {
            Val::Scalar(y) => *y == 0.0,
            Val::Block(y) => y.contains(&0.0),
            Val::View(y) => y.contains(&0.0),
            Val::View32(y) => y.contains(&0.0),
        };
        if zero {
            return Err(DataError::DivisionByZero(f.symbol()).into());
        }
    }
    if let (Val::Scalar(x), Val::Scalar(y)) = (&a, &b) {
        return Ok(Val::Scalar(dtype.round(fun2(f, *x, *y, int))));
    }
    if let Some(out) = float32_arithmetic(f, &a, &b, dtype) {
        return Ok(Val::Block(out));
    }
    let (a, b) = (a.widened(), b.widened());
    // The output reuses an owned operand's buffer; otherwise a spare one.
    let (mut out, spent, sides) = match (a, b) {
        (Val::Block(x), Val::Block(y)) => (x, Some(y), None),
        (Val::Block(x), Val::View(y)) => (x, None, Some((Side::Out, Side::Values(y)))),
        (Val::Block(x), Val::Scalar(y)) => (x, None, Some((Side::Out, Side::Scalar(y)))),
        (Val::View(x), Val::Block(y)) => (y, None, Some((Side::Values(x), Side::Out))),
        (Val::Scalar(x), Val::Block(y)) => (y, None, Some((Side::Scalar(x), Side::Out))),
        (Val::View(x), Val::View(y)) => (
            crate::scratch::values(x.len().min(y.len())),
            None,
            Some((Side::Values(x), Side::Values(y))),
        ),
        (Val::View(x), Val::Scalar(y)) => (
            crate::scratch::values(x.len()),
            None,
            Some((Side::Values(x), Side::Scalar(y))),
        ),
        (Val::Scalar(x), Val::View(y)) => (
            crate::scratch::values(y.len()),
            None,
            Some((Side::Scalar(x), Side::Values(y))),
        ),
        (Val::Scalar(_), Val::Scalar(_)) => unreachable!("two scalars are computed above"),
        (Val::View32(_), _) | (_, Val::View32(_)) => {
            unreachable!("float32 views are widened above")
        }
    };
    let (sa, sb) = match (&spent, sides) {
        (Some(y), _) => (Side::Out, Side::Values(y)),
        (None, Some(s)) => s,
        (None, None) => unreachable!("sides are set for every buffer but two blocks"),
    };
    let square = f == Fun2::Pow && matches!(sb, Side::Scalar(y) if y == 2.0);
    // float32 results are rounded in the same loop (the common case: no second pass).
    let f32_round = dtype == DType::Float32;
    // The common arithmetic with the operation chosen once per block, not per value.
    macro_rules! each {
        ($g:expr) => {
            if f32_round {
                apply(&mut out, sa, sb, |a, b| f64::from($g(a, b) as f32))
            } else {
                apply(&mut out, sa, sb, $g)
            }
        };
    }
    match f {
        // x ** 2 (quadratic means) without a call to powf per element.
        _ if square => each!(|a: f64, _: f64| a * a),
        Fun2::Add => each!(|a: f64, b: f64| a + b),
        Fun2::Sub => each!(|a: f64, b: f64| a - b),
        Fun2::Mul => each!(|a: f64, b: f64| a * b),
        Fun2::Div => each!(|a: f64, b: f64| a / b),
        _ => each!(|a: f64, b: f64| fun2(f, a, b, int)),
    }
    if let Some(y) = spent {
        crate::scratch::give_values(y);
    }
    if f32_round {
        return Ok(Val::Block(out));
    }
    Ok(Val::Block(rounded(out, dtype)))
}

fn pick(v: &Val<'_>, i: usize) -> f64 {
    match v {
        Val::Scalar(s) => *s,
        Val::Block(b) => b[i],
        Val::View(b) => b[i],
        Val::View32(b) => f64::from(b[i]),
    }
}

/// What an evaluation reads with: views of held blocks first, then the reader.
struct Env<'r, 'v, 'x> {
    views: &'r Views<'v>,
    read: &'r mut Reader<'x>,
}

impl<'v> Env<'_, 'v, '_> {
    fn eval_val(&mut self, expr: &Expr, region: &Region) -> Result<Val<'v>, EvalError> {
        Ok(match expr {
            Expr::Const(v) => Val::Scalar(*v),
            Expr::Read(r) => match (self.views)(r) {
                Some(Lent::F64(v)) => Val::View(v),
                Some(Lent::F32(v)) => Val::View32(v),
                None => Val::Block((self.read)(r, region).map_err(EvalError::Read)?),
            },
            Expr::Unary { f, x, dtype } => match self.eval_val(x, region)? {
                Val::Scalar(v) => Val::Scalar(dtype.round(fun1(*f, v))),
                Val::Block(mut b) => {
                    for v in &mut b {
                        *v = fun1(*f, *v);
                    }
                    Val::Block(rounded(b, *dtype))
                }
                Val::View(x) => {
                    let mut b = crate::scratch::values(x.len());
                    for (v, &w) in b.iter_mut().zip(x) {
                        *v = fun1(*f, w);
                    }
                    Val::Block(rounded(b, *dtype))
                }
                Val::View32(x) => {
                    let mut b = crate::scratch::values(x.len());
                    for (v, &w) in b.iter_mut().zip(x) {
                        *v = fun1(*f, f64::from(w));
                    }
                    Val::Block(rounded(b, *dtype))
                }
            },
            Expr::Cast { x, dtype } => match self.eval_val(x, region)? {
                Val::Scalar(v) => Val::Scalar(dtype.round(v)),
                Val::View(v) if *dtype == DType::Float64 => Val::View(v),
                other => {
                    let n = region.num_elements() as usize;
                    Val::Block(rounded(other.into_block(n), *dtype))
                }
            },
            Expr::Binary { f, a, b, dtype } => {
                let a = self.eval_val(a, region)?;
                let b = self.eval_val(b, region)?;
                binary_blocks(*f, a, b, *dtype)?
            }
            Expr::Where { c, a, b, dtype } => {
                let c = self.eval_val(c, region)?;
                let a = self.eval_val(a, region)?;
                let b = self.eval_val(b, region)?;
                match c {
                    Val::Scalar(t) => {
                        if t != 0.0 {
                            a
                        } else {
                            b
                        }
                    }
                    c => {
                        let n = region.num_elements() as usize;
                        let mut out = crate::scratch::values(n);
                        for (i, o) in out.iter_mut().enumerate() {
                            *o = if pick(&c, i) != 0.0 {
                                pick(&a, i)
                            } else {
                                pick(&b, i)
                            };
                        }
                        Val::Block(rounded(out, *dtype))
                    }
                }
            }
            Expr::Concat {
                axis,
                starts,
                parts,
                dtype,
            } => Val::Block(rounded(
                concat(*axis, starts, parts, region, self.read)?,
                *dtype,
            )),
            Expr::Stack { x, at, axes, sizes } => {
                Val::Block(stack(x, *at, axes, sizes, region, self.read)?)
            }
        })
    }
}

fn eval_val(
    expr: &Expr,
    region: &Region,
    read: &mut Reader<'_>,
) -> Result<Val<'static>, EvalError> {
    let mut env = Env {
        views: &|_| None,
        read,
    };
    env.eval_val(expr, region)
}

/// The block of a concatenation: each part that meets the block evaluated over its stretch,
/// copied in along `axis`.
fn concat(
    axis: usize,
    starts: &[u64],
    parts: &[Expr],
    region: &Region,
    read: &mut Reader<'_>,
) -> Result<Vec<f64>, EvalError> {
    let shape = region.shape();
    let mut out = vec![f64::NAN; region.num_elements() as usize];
    let outer: u64 = shape[..axis].iter().product();
    let inner: u64 = shape[axis + 1..].iter().product();
    let (len, range) = (shape[axis], region.ranges()[axis].clone());
    for (k, part) in parts.iter().enumerate() {
        let (s, e) = (starts[k], starts[k + 1]);
        let (lo, hi) = (range.start.max(s), range.end.min(e));
        if lo >= hi {
            continue;
        }
        let mut ranges = region.ranges().to_vec();
        ranges[axis] = lo - s..hi - s;
        let sub = Region::new(ranges);
        let values = eval_val(part, &sub, read)?;
        let (l, o) = (hi - lo, lo - range.start);
        for i in 0..outer {
            for t in 0..l {
                let dst = ((i * len + o + t) * inner) as usize;
                let src = ((i * l + t) * inner) as usize;
                for q in 0..inner as usize {
                    out[dst + q] = pick(&values, src + q);
                }
            }
        }
    }
    Ok(out)
}

/// The block of a stacked axis: `x` over the rows the block's stretch touches, gathered.
fn stack(
    x: &Expr,
    at: usize,
    axes: &[usize],
    sizes: &[u64],
    region: &Region,
    read: &mut Reader<'_>,
) -> Result<Vec<f64>, EvalError> {
    let ndim = region.ndim();
    let nx = ndim - 1 + axes.len();
    let others: Vec<usize> = (0..nx).filter(|a| !axes.contains(a)).collect();
    let out_others: Vec<usize> = (0..ndim).filter(|&d| d != at).collect();
    let divs: Vec<u64> = (0..sizes.len())
        .map(|k| sizes[k + 1..].iter().product())
        .collect();
    let z = region.ranges()[at].clone();
    let mut ranges = vec![0..0; nx];
    for (i, &a) in others.iter().enumerate() {
        ranges[a] = region.ranges()[out_others[i]].clone();
    }
    for (k, &a) in axes.iter().enumerate() {
        let mut lo = u64::MAX;
        let mut hi = 0;
        for v in z.clone() {
            let i = (v / divs[k]) % sizes[k];
            lo = lo.min(i);
            hi = hi.max(i + 1);
        }
        ranges[a] = if lo < hi { lo..hi } else { 0..0 };
    }
    let xregion = Region::new(ranges);
    let values = eval_val(x, &xregion, read)?;
    let xshape = xregion.shape();
    let mut xstr = vec![1u64; nx];
    for d in (0..nx.saturating_sub(1)).rev() {
        xstr[d] = xstr[d + 1] * xshape[d + 1];
    }
    let mut out = Vec::with_capacity(region.num_elements() as usize);
    for idx in CoordIter::new(region.shape().iter().map(|&n| 0..n).collect()) {
        let mut off = 0;
        for (i, &a) in others.iter().enumerate() {
            off += idx[out_others[i]] * xstr[a];
        }
        let v = z.start + idx[at];
        for (k, &a) in axes.iter().enumerate() {
            off += ((v / divs[k]) % sizes[k] - xregion.ranges()[a].start) * xstr[a];
        }
        out.push(pick(&values, off as usize));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_division_and_modulo_follow_numpy() {
        // np.floor_divide(-7, 2) == -4, np.remainder(-7, 2) == 1, np.remainder(7, -2) == -1
        assert_eq!(fun2(Fun2::FloorDiv, -7.0, 2.0, true), -4.0);
        assert_eq!(fun2(Fun2::Mod, -7.0, 2.0, true), 1.0);
        assert_eq!(fun2(Fun2::Mod, 7.0, -2.0, false), -1.0);
        assert!(fun2(Fun2::Maximum, f64::NAN, 1.0, false).is_nan());
    }

    fn read_const(block: Vec<f64>) -> impl FnMut(&Read, &Region) -> Result<Vec<f64>, String> {
        move |_, region| Ok(block[..region.num_elements() as usize].to_vec())
    }

    fn a_read() -> Expr {
        Expr::Read(Read {
            input: 0,
            dtype: DType::Int32,
            missing: vec![],
            unpack: None,
            axes: vec![],
        })
    }

    #[test]
    fn an_integer_division_by_a_zero_in_the_data_is_an_error() {
        let expr = Expr::Binary {
            f: Fun2::FloorDiv,
            a: Box::new(Expr::Const(7.0)),
            b: Box::new(a_read()),
            dtype: DType::Int32,
        };
        let region = Region::new(std::iter::once(0..3).collect());
        let mut reader = read_const(vec![1.0, 0.0, 2.0]);
        let e = eval(&expr, &region, &mut reader)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("integer division by zero")));
        // Float division by zero is numpy's inf, not an error.
        let float = Expr::Binary {
            f: Fun2::FloorDiv,
            a: Box::new(Expr::Const(7.0)),
            b: Box::new(a_read()),
            dtype: DType::Float64,
        };
        let mut reader = read_const(vec![1.0, 0.0, 2.0]);
        let v = eval(&float, &region, &mut reader).ok();
        assert_eq!(v, Some(vec![7.0, f64::INFINITY, 3.0]));
    }

    #[test]
    fn float32_views_give_what_the_f64_path_rounded_to_float32_gives() {
        // Products, sums, differences, quotients and squares of float32 views (and of
        // scalars float32 holds) in float32 equal the f64 evaluation rounded to float32, bit
        // for bit: NaN, infinities, overflow, subnormals and cancellation included.
        let x: Vec<f32> = vec![
            1.5,
            -2.25,
            f32::NAN,
            f32::INFINITY,
            3.0e38,
            1.0e-40,
            7.0,
            -0.0,
            1.0e-3,
            16_777_217.0,
        ];
        let y: Vec<f32> = vec![
            3.0,
            1.0e-8,
            2.0,
            -1.0,
            2.0,
            1.0e-3,
            0.0,
            5.0,
            1.0e30,
            -16_777_216.0,
        ];
        let region = Region::new(std::iter::once(0..x.len() as u64).collect());
        let read = |input: usize| {
            Expr::Read(Read {
                input,
                dtype: DType::Float32,
                missing: vec![],
                unpack: None,
                axes: vec![],
            })
        };
        let cases = [
            (Fun2::Mul, read(1)),
            (Fun2::Add, read(1)),
            (Fun2::Sub, read(1)),
            (Fun2::Div, read(1)),
            (Fun2::Mul, Expr::Const(0.5)),
            (Fun2::Sub, Expr::Const(273.15)),
            (Fun2::Pow, Expr::Const(2.0)),
        ];
        for (f, b) in cases {
            let expr = Expr::Binary {
                f,
                a: Box::new(read(0)),
                b: Box::new(b),
                dtype: DType::Float32,
            };
            let views = |r: &Read| Some(Lent::F32(if r.input == 0 { &x } else { &y }));
            let mut unread = |_: &Read, _: &Region| Err("unread".to_string());
            let fast = eval_with_views(&expr, &region, &views, &mut unread)
                .map(|t| t.to_vec())
                .ok();
            let mut widened = |r: &Read, _: &Region| -> Result<Vec<f64>, String> {
                let v = if r.input == 0 { &x } else { &y };
                Ok(v.iter().map(|&a| f64::from(a)).collect())
            };
            let slow = eval(&expr, &region, &mut widened).ok();
            let (Some(fast), Some(slow)) = (fast, slow) else {
                panic!("{f:?}: an evaluation failed");
            };
            let same = fast
                .iter()
                .zip(&slow)
                .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
            assert!(same, "{f:?}: {fast:?} vs {slow:?}");
        }
    }

    #[test]
    fn concat_and_stack_place_their_parts() {
        // Two parts along axis 1 of a (2, 5) domain: 2 and 3 columns; each part gives its own
        // column index, read over its stretch.
        let column = |k: f64| Expr::Binary {
            f: Fun2::Add,
            a: Box::new(a_read()),
            b: Box::new(Expr::Const(k)),
            dtype: DType::Float64,
        };
        let expr = Expr::Concat {
            axis: 1,
            starts: vec![0, 2, 5],
            parts: vec![column(0.0), column(10.0)],
            dtype: DType::Float64,
        };
        let mut reader = |_: &Read, region: &Region| -> Result<Vec<f64>, String> {
            Ok(CoordIter::new(region.ranges().to_vec())
                .map(|c| c[1] as f64)
                .collect())
        };
        let v = eval(&expr, &Region::new(vec![0..2, 1..4]), &mut reader).ok();
        assert_eq!(v, Some(vec![1.0, 10.0, 11.0, 1.0, 10.0, 11.0]));
        // x(a 2, b 3) stacked into z = 6 at axis 0: z = a * 3 + b, read back as 10a + b.
        let expr = Expr::Stack {
            x: Box::new(a_read()),
            at: 0,
            axes: vec![0, 1],
            sizes: vec![2, 3],
        };
        let mut reader = |_: &Read, region: &Region| -> Result<Vec<f64>, String> {
            Ok(CoordIter::new(region.ranges().to_vec())
                .map(|c| (10 * c[0] + c[1]) as f64)
                .collect())
        };
        let v = eval(
            &expr,
            &Region::new(std::iter::once(2..5).collect()),
            &mut reader,
        )
        .ok();
        assert_eq!(v, Some(vec![2.0, 10.0, 11.0]));
    }
}
