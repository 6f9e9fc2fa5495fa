//! What a compute task does, as plan data: a fused elementwise expression over the task's
//! block ([`Expr`]), and the steps of a tree reduction ([`Kernel::Partial`],
//! [`Kernel::Combine`]) whose intermediates are structured states ([`Reduce::fields`]).
//! Evaluation is here; reading and writing blocks is in `task`.

use serde::{Deserialize, Serialize};

use crate::dtype::DType;

/// One-argument functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fun1 {
    Neg,
    Abs,
    Sqrt,
    Exp,
    Log,
    Log10,
    Sin,
    Cos,
    Tan,
    Floor,
    Ceil,
    IsNan,
    /// `~` of a bool.
    Not,
    /// `~` of an integer (two's complement).
    Invert,
}

/// Two-argument functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fun2 {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
    Pow,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Arctan2,
    /// numpy's `maximum` (NaN propagates): the lower bound of `clip`.
    Maximum,
    /// numpy's `minimum`: the upper bound of `clip`.
    Minimum,
    /// The second value where the first is NaN.
    Fillna,
}

/// How one axis of a read array maps onto the task's domain: source index
/// `start + step × i` for domain index `i` along axis `to`, or the fixed index `start`.
/// With an `index`, domain index `i` stands for `index[i]` first (group-wise arithmetic: the
/// month of each time); [`NO_INDEX`] reads NaN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadAxis {
    pub to: Option<usize>,
    pub start: u64,
    pub step: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Vec<u64>>,
}

/// An index of [`ReadAxis::index`] that reads NaN.
pub const NO_INDEX: u64 = u64::MAX;

/// An array read into the domain, broadcast over the domain axes it lacks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Read {
    /// Index into the stage's inputs.
    pub input: usize,
    /// How its elements are stored.
    pub dtype: DType,
    /// Stored values that mean "missing" (NaN), as xarray masks `_FillValue`.
    pub missing: Vec<f64>,
    /// One per axis of the array.
    pub axes: Vec<ReadAxis>,
}

/// An elementwise expression over a task's block; every node's result is rounded to `dtype`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    Const(f64),
    Read(Read),
    Unary {
        f: Fun1,
        x: Box<Expr>,
        dtype: DType,
    },
    Binary {
        f: Fun2,
        a: Box<Expr>,
        b: Box<Expr>,
        dtype: DType,
    },
    Where {
        c: Box<Expr>,
        a: Box<Expr>,
        b: Box<Expr>,
        dtype: DType,
    },
    Cast {
        x: Box<Expr>,
        dtype: DType,
    },
}

impl Expr {
    /// Every read, in order.
    pub fn reads<'a>(&'a self, out: &mut Vec<&'a Read>) {
        match self {
            Expr::Const(_) => {}
            Expr::Read(r) => out.push(r),
            Expr::Unary { x, .. } | Expr::Cast { x, .. } => x.reads(out),
            Expr::Binary { a, b, .. } => {
                a.reads(out);
                b.reads(out);
            }
            Expr::Where { c, a, b, .. } => {
                c.reads(out);
                a.reads(out);
                b.reads(out);
            }
        }
    }

    /// Change every read in place.
    pub fn reads_mut(&mut self, f: &mut dyn FnMut(&mut Read)) {
        match self {
            Expr::Const(_) => {}
            Expr::Read(r) => f(r),
            Expr::Unary { x, .. } | Expr::Cast { x, .. } => x.reads_mut(f),
            Expr::Binary { a, b, .. } => {
                a.reads_mut(f);
                b.reads_mut(f);
            }
            Expr::Where { c, a, b, .. } => {
                c.reads_mut(f);
                a.reads_mut(f);
                b.reads_mut(f);
            }
        }
    }

    /// Nodes that hold a block while the expression is evaluated (all but constants).
    #[must_use]
    pub fn buffers(&self) -> u64 {
        match self {
            Expr::Const(_) => 0,
            Expr::Read(_) => 1,
            Expr::Unary { x, .. } | Expr::Cast { x, .. } => 1 + x.buffers(),
            Expr::Binary { a, b, .. } => 1 + a.buffers() + b.buffers(),
            Expr::Where { c, a, b, .. } => 1 + c.buffers() + a.buffers() + b.buffers(),
        }
    }
}

/// A reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceOp {
    Sum,
    Mean,
    Min,
    Max,
    Std,
    Var,
    Count,
    Argmin,
    Argmax,
}

impl ReduceOp {
    /// The function's name in the language.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Min => "min",
            ReduceOp::Max => "max",
            ReduceOp::Std => "std",
            ReduceOp::Var => "var",
            ReduceOp::Count => "count",
            ReduceOp::Argmin => "argmin",
            ReduceOp::Argmax => "argmax",
        }
    }

    /// By name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<ReduceOp> {
        [
            ReduceOp::Sum,
            ReduceOp::Mean,
            ReduceOp::Min,
            ReduceOp::Max,
            ReduceOp::Std,
            ReduceOp::Var,
            ReduceOp::Count,
            ReduceOp::Argmin,
            ReduceOp::Argmax,
        ]
        .into_iter()
        .find(|op| op.name() == name)
    }
}

/// A reduction with its options.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reduce {
    pub op: ReduceOp,
    /// Leave NaN out (xarray's default for floats).
    pub skipna: bool,
    /// Delta degrees of freedom of std/var.
    pub ddof: f64,
}

impl Reduce {
    /// Fields of the state one output element carries between reduction steps: sum and count
    /// for a mean; count, mean and M2 for var/std (merged with Chan et al.'s pairwise
    /// formula, stable for data with a large mean); value and index for argmin/argmax.
    #[must_use]
    pub fn fields(&self) -> usize {
        match self.op {
            ReduceOp::Sum | ReduceOp::Min | ReduceOp::Max | ReduceOp::Count => 1,
            ReduceOp::Mean | ReduceOp::Argmin | ReduceOp::Argmax => 2,
            ReduceOp::Std | ReduceOp::Var => 3,
        }
    }

    /// A state of `n` elements before any value.
    #[must_use]
    pub fn empty(&self, n: usize) -> Vec<f64> {
        let mut s = vec![0.0; n * self.fields()];
        match self.op {
            ReduceOp::Min if !self.skipna => s[..n].fill(f64::INFINITY),
            ReduceOp::Max if !self.skipna => s[..n].fill(f64::NEG_INFINITY),
            ReduceOp::Min | ReduceOp::Max | ReduceOp::Argmin | ReduceOp::Argmax => {
                s[..n].fill(f64::NAN);
            }
            _ => {}
        }
        if matches!(self.op, ReduceOp::Argmin | ReduceOp::Argmax) {
            s[n..].fill(-1.0);
        }
        s
    }

    /// Fold value `v` (at index `index` along the reduced dimension) into element `j` of a
    /// state of `n` elements.
    pub fn add(&self, state: &mut [f64], n: usize, j: usize, v: f64, index: u64) {
        if v.is_nan() && self.skipna {
            return;
        }
        match self.op {
            ReduceOp::Sum => state[j] += v,
            ReduceOp::Count => state[j] += 1.0,
            ReduceOp::Mean => {
                state[j] += v;
                state[n + j] += 1.0;
            }
            ReduceOp::Min | ReduceOp::Max => {
                let cur = state[j];
                let better = if self.op == ReduceOp::Min {
                    v < cur
                } else {
                    v > cur
                };
                // NaN in a state means "no value yet" when skipping; otherwise the state
                // starts at ±inf and NaN poisons it.
                if self.skipna {
                    if cur.is_nan() || better {
                        state[j] = v;
                    }
                } else if v.is_nan() || cur.is_nan() {
                    state[j] = f64::NAN;
                } else if better {
                    state[j] = v;
                }
            }
            ReduceOp::Argmin | ReduceOp::Argmax => {
                let cur = state[j];
                let better = if self.op == ReduceOp::Argmin {
                    v < cur
                } else {
                    v > cur
                };
                if cur.is_nan() || better {
                    state[j] = v;
                    state[n + j] = index as f64;
                }
            }
            ReduceOp::Var | ReduceOp::Std => {
                // Welford's update of (count, mean, M2).
                let count = state[j] + 1.0;
                let delta = v - state[n + j];
                let mean = state[n + j] + delta / count;
                state[j] = count;
                state[n + j] = mean;
                state[2 * n + j] += delta * (v - mean);
            }
        }
    }

    /// Merge state `b` into state `a`, both of `n` elements.
    pub fn merge(&self, a: &mut [f64], b: &[f64], n: usize) {
        for j in 0..n {
            match self.op {
                ReduceOp::Sum | ReduceOp::Count => a[j] += b[j],
                ReduceOp::Mean => {
                    a[j] += b[j];
                    a[n + j] += b[n + j];
                }
                ReduceOp::Min | ReduceOp::Max => {
                    let (x, y) = (a[j], b[j]);
                    a[j] = if self.skipna {
                        if x.is_nan()
                            || (self.op == ReduceOp::Min && y < x)
                            || (self.op == ReduceOp::Max && y > x)
                        {
                            if y.is_nan() {
                                x
                            } else {
                                y
                            }
                        } else {
                            x
                        }
                    } else if x.is_nan() || y.is_nan() {
                        f64::NAN
                    } else if self.op == ReduceOp::Min {
                        x.min(y)
                    } else {
                        x.max(y)
                    };
                }
                ReduceOp::Argmin | ReduceOp::Argmax => {
                    let (x, y) = (a[j], b[j]);
                    let better = if self.op == ReduceOp::Argmin {
                        y < x
                    } else {
                        y > x
                    };
                    let tie_earlier = y == x && b[n + j] < a[n + j];
                    if !y.is_nan() && (x.is_nan() || better || tie_earlier) {
                        a[j] = y;
                        a[n + j] = b[n + j];
                    }
                }
                ReduceOp::Var | ReduceOp::Std => {
                    // Chan, Golub and LeVeque's pairwise combination.
                    let (na, nb) = (a[j], b[j]);
                    if nb == 0.0 {
                        continue;
                    }
                    if na == 0.0 {
                        a[j] = nb;
                        a[n + j] = b[n + j];
                        a[2 * n + j] = b[2 * n + j];
                        continue;
                    }
                    let count = na + nb;
                    let delta = b[n + j] - a[n + j];
                    a[n + j] += delta * nb / count;
                    a[2 * n + j] += b[2 * n + j] + delta * delta * na * nb / count;
                    a[j] = count;
                }
            }
        }
    }

    /// The final value of element `j` of a state of `n` elements.
    #[must_use]
    pub fn finish(&self, state: &[f64], n: usize, j: usize) -> f64 {
        match self.op {
            ReduceOp::Sum | ReduceOp::Count | ReduceOp::Min | ReduceOp::Max => state[j],
            ReduceOp::Mean => {
                if state[n + j] == 0.0 {
                    f64::NAN
                } else {
                    state[j] / state[n + j]
                }
            }
            ReduceOp::Argmin | ReduceOp::Argmax => state[n + j],
            ReduceOp::Var | ReduceOp::Std => {
                let dof = state[j] - self.ddof;
                let var = if dof <= 0.0 {
                    f64::NAN
                } else {
                    state[2 * n + j] / dof
                };
                if self.op == ReduceOp::Std {
                    var.sqrt()
                } else {
                    var
                }
            }
        }
    }
}

/// What a compute stage's tasks do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kernel {
    /// Evaluate `expr` over the block and write it (as `dtype`) to the output, whose chunks
    /// the blocks are.
    Map { expr: Expr, dtype: DType },
    /// Evaluate `expr` over the block and reduce the domain axes `axes` into one state per
    /// kept element: written as state pieces (one per block), or, when `finish` is set (the
    /// block spans the whole reduced axes), as final values of that type.
    Partial {
        expr: Expr,
        reduce: Reduce,
        axes: Vec<usize>,
        finish: Option<DType>,
    },
    /// Merge `fan_in` states along each reduced axis into one (the output pieces are the
    /// blocks; the input is the previous state pieces).
    Combine {
        reduce: Reduce,
        axes: Vec<usize>,
        fan_in: Vec<u64>,
        finish: Option<DType>,
    },
    /// A step of a reduction per group (`groupby`, `resample`), or a computed coordinate.
    Group { step: GroupStep },
}

/// The steps of a reduction per group along domain axis `axis`, whose index `t` belongs to
/// group `groups[t]` (`u32::MAX`: none). Blocks span `block` indices of that axis; a state
/// piece holds the groups its indices meet, in group order, each with one state per kept
/// element (the other axes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum GroupStep {
    /// Evaluate `expr` over the block and fold each value into its group's state: one
    /// piece per block.
    Partial {
        expr: Expr,
        reduce: Reduce,
        axis: usize,
        groups: Vec<u32>,
        block: u64,
    },
    /// Merge `fan` consecutive pieces, each covering `span` blocks, into one.
    Combine {
        reduce: Reduce,
        axis: usize,
        groups: Vec<u32>,
        block: u64,
        span: u64,
        fan: u64,
    },
    /// The final values of the groups of the output block (along `axis`) from the pieces,
    /// each covering `span` blocks, that meet them; a group without members is NaN.
    Finish {
        reduce: Reduce,
        axis: usize,
        groups: Vec<u32>,
        block: u64,
        span: u64,
        dtype: DType,
    },
    /// Write computed coordinate labels.
    Labels { values: crate::time::LabelValues },
}

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

/// A block: `n` values of the domain; constants stay scalars until they meet a block.
enum Val {
    Scalar(f64),
    Block(Vec<f64>),
}

/// Evaluate `expr` over a block of `n` elements, reading arrays with `read`.
///
/// # Errors
/// What `read` returns.
pub fn eval<E>(
    expr: &Expr,
    n: usize,
    read: &mut dyn FnMut(&Read) -> Result<Vec<f64>, E>,
) -> Result<Vec<f64>, E> {
    Ok(match eval_val(expr, read)? {
        Val::Scalar(v) => vec![v; n],
        Val::Block(b) => b,
    })
}

fn eval_val<E>(expr: &Expr, read: &mut dyn FnMut(&Read) -> Result<Vec<f64>, E>) -> Result<Val, E> {
    Ok(match expr {
        Expr::Const(v) => Val::Scalar(*v),
        Expr::Read(r) => Val::Block(read(r)?),
        Expr::Unary { f, x, dtype } => match eval_val(x, read)? {
            Val::Scalar(v) => Val::Scalar(dtype.round(fun1(*f, v))),
            Val::Block(mut b) => {
                for v in &mut b {
                    *v = fun1(*f, *v);
                }
                Val::Block(rounded(b, *dtype))
            }
        },
        Expr::Cast { x, dtype } => match eval_val(x, read)? {
            Val::Scalar(v) => Val::Scalar(dtype.round(v)),
            Val::Block(b) => Val::Block(rounded(b, *dtype)),
        },
        Expr::Binary { f, a, b, dtype } => {
            let int = dtype.is_int();
            let (a, b) = (eval_val(a, read)?, eval_val(b, read)?);
            let out = match (a, b) {
                (Val::Scalar(x), Val::Scalar(y)) => {
                    return Ok(Val::Scalar(dtype.round(fun2(*f, x, y, int))))
                }
                (Val::Block(mut x), Val::Scalar(y)) => {
                    for v in &mut x {
                        *v = fun2(*f, *v, y, int);
                    }
                    x
                }
                (Val::Scalar(x), Val::Block(mut y)) => {
                    for v in &mut y {
                        *v = fun2(*f, x, *v, int);
                    }
                    y
                }
                (Val::Block(mut x), Val::Block(y)) => {
                    for (v, w) in x.iter_mut().zip(&y) {
                        *v = fun2(*f, *v, *w, int);
                    }
                    x
                }
            };
            Val::Block(rounded(out, *dtype))
        }
        Expr::Where { c, a, b, dtype } => {
            let (c, a, b) = (eval_val(c, read)?, eval_val(a, read)?, eval_val(b, read)?);
            let pick = |i: usize, v: &Val| match v {
                Val::Scalar(s) => *s,
                Val::Block(b) => b[i],
            };
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
                        .map(|(i, &t)| if t != 0.0 { pick(i, &a) } else { pick(i, &b) })
                        .collect();
                    Val::Block(rounded(out, *dtype))
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reduce(op: ReduceOp) -> Reduce {
        Reduce {
            op,
            skipna: true,
            ddof: 0.0,
        }
    }

    /// Values folded in pieces of `piece` and merged give numpy's answer.
    fn folded(r: Reduce, values: &[f64], piece: usize) -> f64 {
        let mut total = r.empty(1);
        for (k, part) in values.chunks(piece).enumerate() {
            let mut s = r.empty(1);
            for (i, v) in part.iter().enumerate() {
                r.add(&mut s, 1, 0, *v, (k * piece + i) as u64);
            }
            r.merge(&mut total, &s, 1);
        }
        r.finish(&total, 1, 0)
    }

    #[test]
    fn var_with_a_large_mean_is_stable_when_merged() {
        // numpy: np.var(1e9 + np.array([4, 7, 13, 16])) == 22.5
        let values: Vec<f64> = [4.0, 7.0, 13.0, 16.0].iter().map(|v| 1e9 + v).collect();
        for piece in 1..=4 {
            assert_eq!(folded(reduce(ReduceOp::Var), &values, piece), 22.5);
        }
        let std = folded(reduce(ReduceOp::Std), &values, 3);
        assert!((std - 22.5f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn nan_is_skipped_and_counts_follow_numpy() {
        let values = [3.0, f64::NAN, 1.0, 2.0, f64::NAN];
        // np.nanmean, np.nansum, np.nanmin, np.nanargmax, count of non-NaN
        assert_eq!(folded(reduce(ReduceOp::Mean), &values, 2), 2.0);
        assert_eq!(folded(reduce(ReduceOp::Sum), &values, 2), 6.0);
        assert_eq!(folded(reduce(ReduceOp::Min), &values, 2), 1.0);
        assert_eq!(folded(reduce(ReduceOp::Argmax), &values, 2), 0.0);
        assert_eq!(folded(reduce(ReduceOp::Argmin), &values, 2), 2.0);
        assert_eq!(folded(reduce(ReduceOp::Count), &values, 2), 3.0);
        assert!(folded(reduce(ReduceOp::Mean), &[f64::NAN], 1).is_nan());
        let no_skip = Reduce {
            skipna: false,
            ..reduce(ReduceOp::Sum)
        };
        assert!(folded(no_skip, &values, 2).is_nan());
        let no_skip = Reduce {
            skipna: false,
            ..reduce(ReduceOp::Max)
        };
        assert!(folded(no_skip, &values, 2).is_nan());
    }

    #[test]
    fn argmin_ties_take_the_first_index() {
        assert_eq!(
            folded(reduce(ReduceOp::Argmin), &[2.0, 1.0, 5.0, 1.0], 1),
            1.0
        );
        assert_eq!(
            folded(reduce(ReduceOp::Argmin), &[2.0, 1.0, 5.0, 1.0], 3),
            1.0
        );
    }

    #[test]
    fn floor_division_and_modulo_follow_numpy() {
        // np.floor_divide(-7, 2) == -4, np.remainder(-7, 2) == 1, np.remainder(7, -2) == -1
        assert_eq!(fun2(Fun2::FloorDiv, -7.0, 2.0, true), -4.0);
        assert_eq!(fun2(Fun2::Mod, -7.0, 2.0, true), 1.0);
        assert_eq!(fun2(Fun2::Mod, 7.0, -2.0, false), -1.0);
        assert_eq!(fun2(Fun2::FloorDiv, 7.0, 0.0, true), 0.0);
        assert!(fun2(Fun2::Maximum, f64::NAN, 1.0, false).is_nan());
    }
}
