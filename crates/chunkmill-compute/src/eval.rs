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

/// A block of a region's values; constants stay scalars until they meet a block.
enum Val {
    Scalar(f64),
    Block(Vec<f64>),
}

impl Val {
    fn into_block(self, n: usize) -> Vec<f64> {
        match self {
            Val::Scalar(v) => vec![v; n],
            Val::Block(b) => b,
        }
    }
}

/// Evaluate `expr` over `region` of its domain, reading arrays with `read`.
///
/// # Errors
/// [`EvalError::Read`] with what `read` returns; [`EvalError::Data`] for an integer division
/// by a zero in the data.
pub fn eval(expr: &Expr, region: &Region, read: &mut Reader<'_>) -> Result<Vec<f64>, EvalError> {
    let n = region.num_elements() as usize;
    Ok(eval_val(expr, region, read)?.into_block(n))
}

fn binary_blocks(f: Fun2, a: Val, b: Val, dtype: DType) -> Result<Val, EvalError> {
    let int = dtype.is_int();
    if int && matches!(f, Fun2::FloorDiv | Fun2::Mod) {
        let zero = match &b {
            Val::Scalar(y) => *y == 0.0,
            Val::Block(y) => y.contains(&0.0),
        };
        if zero {
            return Err(DataError::DivisionByZero(f.symbol()).into());
        }
    }
    let out = match (a, b) {
        (Val::Scalar(x), Val::Scalar(y)) => {
            return Ok(Val::Scalar(dtype.round(fun2(f, x, y, int))))
        }
        // x ** 2 (quadratic means) without a call to powf per element.
        (Val::Block(mut x), Val::Scalar(y)) if f == Fun2::Pow && y == 2.0 => {
            for v in &mut x {
                *v *= *v;
            }
            x
        }
        (Val::Block(mut x), Val::Scalar(y)) => {
            for v in &mut x {
                *v = fun2(f, *v, y, int);
            }
            x
        }
        (Val::Scalar(x), Val::Block(mut y)) => {
            for v in &mut y {
                *v = fun2(f, x, *v, int);
            }
            y
        }
        (Val::Block(mut x), Val::Block(y)) => {
            // The common arithmetic with the operation chosen once per block, not per value.
            let each = |x: &mut [f64], g: fn(f64, f64) -> f64| {
                for (v, w) in x.iter_mut().zip(&y) {
                    *v = g(*v, *w);
                }
            };
            match f {
                Fun2::Add => each(&mut x, |a, b| a + b),
                Fun2::Sub => each(&mut x, |a, b| a - b),
                Fun2::Mul => each(&mut x, |a, b| a * b),
                Fun2::Div => each(&mut x, |a, b| a / b),
                _ => {
                    for (v, w) in x.iter_mut().zip(&y) {
                        *v = fun2(f, *v, *w, int);
                    }
                }
            }
            x
        }
    };
    Ok(Val::Block(rounded(out, dtype)))
}

fn pick(v: &Val, i: usize) -> f64 {
    match v {
        Val::Scalar(s) => *s,
        Val::Block(b) => b[i],
    }
}

fn eval_val(expr: &Expr, region: &Region, read: &mut Reader<'_>) -> Result<Val, EvalError> {
    Ok(match expr {
        Expr::Const(v) => Val::Scalar(*v),
        Expr::Read(r) => Val::Block(read(r, region).map_err(EvalError::Read)?),
        Expr::Unary { f, x, dtype } => match eval_val(x, region, read)? {
            Val::Scalar(v) => Val::Scalar(dtype.round(fun1(*f, v))),
            Val::Block(mut b) => {
                for v in &mut b {
                    *v = fun1(*f, *v);
                }
                Val::Block(rounded(b, *dtype))
            }
        },
        Expr::Cast { x, dtype } => match eval_val(x, region, read)? {
            Val::Scalar(v) => Val::Scalar(dtype.round(v)),
            Val::Block(b) => Val::Block(rounded(b, *dtype)),
        },
        Expr::Binary { f, a, b, dtype } => {
            let a = eval_val(a, region, read)?;
            let b = eval_val(b, region, read)?;
            binary_blocks(*f, a, b, *dtype)?
        }
        Expr::Where { c, a, b, dtype } => {
            let c = eval_val(c, region, read)?;
            let a = eval_val(a, region, read)?;
            let b = eval_val(b, region, read)?;
            match c {
                Val::Scalar(t) => {
                    if t != 0.0 {
                        a
                    } else {
                        b
                    }
                }
                Val::Block(cb) => {
                    let out: Vec<f64> = cb
                        .iter()
                        .enumerate()
                        .map(|(i, &t)| if t != 0.0 { pick(&a, i) } else { pick(&b, i) })
                        .collect();
                    Val::Block(rounded(out, *dtype))
                }
            }
        }
        Expr::Concat {
            axis,
            starts,
            parts,
            dtype,
        } => Val::Block(rounded(concat(*axis, starts, parts, region, read)?, *dtype)),
        Expr::Stack { x, at, axes, sizes } => Val::Block(stack(x, *at, axes, sizes, region, read)?),
    })
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
