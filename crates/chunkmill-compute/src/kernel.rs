//! What a compute task does, as plan data: a fused elementwise expression over the task's
//! block ([`Expr`]), and the steps of a tree reduction ([`Kernel::Partial`],
//! [`Kernel::Combine`]) whose intermediates are structured states ([`Reduce::fields`]).
//! Evaluation is here; reading and writing blocks is in `task`.

use serde::{Deserialize, Serialize};

use crate::dtype::DType;

/// An `f64` in JSON, which has no NaN or infinities: those as the strings `"NaN"`,
/// `"Infinity"`, `"-Infinity"` (as Zarr writes fill values).
mod any_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_str("NaN")
        } else if v.is_infinite() {
            s.serialize_str(if *v > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            s.serialize_f64(*v)
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Plain(f64),
        Named(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Number::deserialize(d)? {
            Number::Plain(v) => Ok(v),
            Number::Named(name) => match name.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!("not a number: '{other}'"))),
            },
        }
    }
}

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

impl Fun2 {
    /// How it is written: the operator, or the function's name.
    #[must_use]
    pub fn symbol(self) -> &'static str {
        match self {
            Fun2::Add => "+",
            Fun2::Sub => "-",
            Fun2::Mul => "*",
            Fun2::Div => "/",
            Fun2::FloorDiv => "//",
            Fun2::Mod => "%",
            Fun2::Pow => "**",
            Fun2::Eq => "==",
            Fun2::Ne => "!=",
            Fun2::Lt => "<",
            Fun2::Le => "<=",
            Fun2::Gt => ">",
            Fun2::Ge => ">=",
            Fun2::And => "&",
            Fun2::Or => "|",
            Fun2::Arctan2 => "arctan2",
            Fun2::Maximum => "maximum",
            Fun2::Minimum => "minimum",
            Fun2::Fillna => "fillna",
        }
    }

    /// Whether it compares (its result is bool).
    #[must_use]
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            Fun2::Eq | Fun2::Ne | Fun2::Lt | Fun2::Le | Fun2::Gt | Fun2::Ge
        )
    }
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

/// CF packing: a stored value `v` that is not missing reads `v × scale + offset`, computed in
/// float64 as xarray unpacks a Zarr array (whose attributes are JSON, read as Python floats),
/// each step rounded on its own (no fused multiply-add).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unpack {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<f64>,
}

impl Unpack {
    /// Unpacks `values` (stored values as f64, missing ones already NaN) in place.
    pub fn apply(self, values: &mut [f64]) {
        match (self.scale, self.offset) {
            (Some(s), Some(o)) => values.iter_mut().for_each(|v| *v = *v * s + o),
            (Some(s), None) => values.iter_mut().for_each(|v| *v *= s),
            (None, Some(o)) => values.iter_mut().for_each(|v| *v += o),
            (None, None) => {}
        }
    }
}

/// An array read into the domain, broadcast over the domain axes it lacks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Read {
    /// Index into the stage's inputs.
    pub input: usize,
    /// How its elements are stored.
    pub dtype: DType,
    /// Stored values that mean "missing" (NaN), as xarray masks `_FillValue`.
    pub missing: Vec<f64>,
    /// How values that are not missing unpack (CF `scale_factor`/`add_offset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpack: Option<Unpack>,
    /// One per axis of the array.
    pub axes: Vec<ReadAxis>,
}

/// An elementwise expression over a task's block; every node's result is rounded to `dtype`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    Const(#[serde(with = "any_f64")] f64),
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
    /// Parts laid end to end along domain axis `axis`: part `k` covers `starts[k]..starts[k +
    /// 1]` and is evaluated over its own stretch, shifted to start at 0 (a part that lacks the
    /// axis — concatenation along a new dimension — covers one index of it).
    Concat {
        axis: usize,
        starts: Vec<u64>,
        parts: Vec<Expr>,
        dtype: DType,
    },
    /// The axes `axes` of `x`'s domain (of sizes `sizes`, the first varying slowest) stacked
    /// into the one domain axis `at`; the other axes of `x` are the other domain axes, in
    /// order.
    Stack {
        x: Box<Expr>,
        at: usize,
        axes: Vec<usize>,
        sizes: Vec<u64>,
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
            Expr::Concat { parts, .. } => {
                for p in parts {
                    p.reads(out);
                }
            }
            Expr::Stack { x, .. } => x.reads(out),
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
            Expr::Concat { parts, .. } => {
                for p in parts {
                    p.reads_mut(f);
                }
            }
            Expr::Stack { x, .. } => x.reads_mut(f),
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
            // One part at a time, each over a stretch of the block.
            Expr::Concat { parts, .. } => 1 + parts.iter().map(Expr::buffers).max().unwrap_or(0),
            // `x` over the rows that the block's stretch of the stacked axis touches: at most
            // twice the block when the stacked axis is cut at whole rows (the planner does).
            Expr::Stack { x, .. } => 1 + 2 * x.buffers(),
        }
    }

    /// The result type of the node (a read: the type its values are decoded to, `f64`).
    #[must_use]
    pub fn dtype(&self) -> DType {
        match self {
            Expr::Const(_) | Expr::Read(_) => DType::Float64,
            Expr::Unary { dtype, .. }
            | Expr::Binary { dtype, .. }
            | Expr::Where { dtype, .. }
            | Expr::Cast { dtype, .. }
            | Expr::Concat { dtype, .. } => *dtype,
            Expr::Stack { x, .. } => x.dtype(),
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

    /// Every reduction the language has.
    pub const ALL: [ReduceOp; 9] = [
        ReduceOp::Sum,
        ReduceOp::Mean,
        ReduceOp::Min,
        ReduceOp::Max,
        ReduceOp::Std,
        ReduceOp::Var,
        ReduceOp::Count,
        ReduceOp::Argmin,
        ReduceOp::Argmax,
    ];

    /// By name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<ReduceOp> {
        Self::ALL.into_iter().find(|op| op.name() == name)
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

    /// Fold a run of values into consecutive elements `j..j + values.len()` of a state of `n`
    /// elements (all at index `index` along the reduced dimension), as [`Reduce::add`] folds
    /// each value (a skipped NaN adds 0, as numpy's nansum counts it, so a sum of -0.0 may
    /// end +0.0). Each reduction has a loop of its own, compiled once skipping NaN and once
    /// not, with no branch per value: sums add 0 for a skipped value, the others select, so
    /// that the compiler vectorizes them (a select between a stored value and itself would
    /// become a conditional store, which it does not).
    pub fn add_run(&self, state: &mut [f64], n: usize, j: usize, values: &[f64], index: u64) {
        if self.skipna {
            self.fold_run::<true>(state, n, j, values, index);
        } else {
            self.fold_run::<false>(state, n, j, values, index);
        }
    }

    fn fold_run<const SKIPNA: bool>(
        &self,
        state: &mut [f64],
        n: usize,
        j: usize,
        values: &[f64],
        index: u64,
    ) {
        let len = values.len();
        // Whether `add` folds `v`: NaN is left out only when skipping.
        let takes = |v: f64| !SKIPNA || !v.is_nan();
        // The field `f` of the run's elements.
        fn field(state: &mut [f64], n: usize, f: usize, run: std::ops::Range<usize>) -> &mut [f64] {
            &mut state[f * n + run.start..f * n + run.end]
        }
        match self.op {
            ReduceOp::Sum => {
                for (s, &v) in field(state, n, 0, j..j + len).iter_mut().zip(values) {
                    *s += if takes(v) { v } else { 0.0 };
                }
            }
            ReduceOp::Count => {
                for (s, &v) in field(state, n, 0, j..j + len).iter_mut().zip(values) {
                    *s += if takes(v) { 1.0 } else { 0.0 };
                }
            }
            ReduceOp::Mean => {
                let (sums, counts) = state.split_at_mut(n);
                let sums = &mut sums[j..j + len];
                let counts = &mut counts[j..j + len];
                for ((s, c), &v) in sums.iter_mut().zip(counts.iter_mut()).zip(values) {
                    let take = takes(v);
                    *s += if take { v } else { 0.0 };
                    *c += if take { 1.0 } else { 0.0 };
                }
            }
            ReduceOp::Min | ReduceOp::Max => {
                let min = self.op == ReduceOp::Min;
                for (s, &v) in field(state, n, 0, j..j + len).iter_mut().zip(values) {
                    let cur = *s;
                    let better = if min { v < cur } else { v > cur };
                    // NaN in a state is "no value yet" when skipping; else it poisons.
                    *s = if SKIPNA {
                        if !v.is_nan() && (cur.is_nan() || better) {
                            v
                        } else {
                            cur
                        }
                    } else if v.is_nan() || better {
                        v
                    } else {
                        cur
                    };
                }
            }
            ReduceOp::Argmin | ReduceOp::Argmax => {
                let min = self.op == ReduceOp::Argmin;
                let at = index as f64;
                let (best, indices) = state.split_at_mut(n);
                let best = &mut best[j..j + len];
                let indices = &mut indices[j..j + len];
                for ((b, i), &v) in best.iter_mut().zip(indices.iter_mut()).zip(values) {
                    let cur = *b;
                    let better = if min { v < cur } else { v > cur };
                    let set = takes(v) & (cur.is_nan() | better);
                    *b = if set { v } else { cur };
                    *i = if set { at } else { *i };
                }
            }
            ReduceOp::Var | ReduceOp::Std => {
                let (counts, rest) = state.split_at_mut(n);
                let (means, m2s) = rest.split_at_mut(n);
                let counts = &mut counts[j..j + len];
                let means = &mut means[j..j + len];
                let m2s = &mut m2s[j..j + len];
                for (((c, m), q), &v) in counts
                    .iter_mut()
                    .zip(means.iter_mut())
                    .zip(m2s.iter_mut())
                    .zip(values)
                {
                    // Welford's update, as `add` does it; each field adds 0 where `add` skips.
                    let take = takes(v);
                    let count = *c + if take { 1.0 } else { 0.0 };
                    let delta = if take { v - *m } else { 0.0 };
                    let mean = *m + if take { delta / count } else { 0.0 };
                    *q += if take { delta * (v - mean) } else { 0.0 };
                    *c = count;
                    *m = mean;
                }
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
    ///
    /// # Errors
    /// `argmin`/`argmax` of a slice with no value (all NaN), which xarray refuses too.
    pub fn finish(&self, state: &[f64], n: usize, j: usize) -> Result<f64, DataError> {
        Ok(match self.op {
            ReduceOp::Sum | ReduceOp::Count | ReduceOp::Min | ReduceOp::Max => state[j],
            ReduceOp::Mean => {
                if state[n + j] == 0.0 {
                    f64::NAN
                } else {
                    state[j] / state[n + j]
                }
            }
            ReduceOp::Argmin | ReduceOp::Argmax => {
                if state[n + j] < 0.0 {
                    return Err(DataError::AllNan(self.op.name()));
                }
                state[n + j]
            }
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
        })
    }
}

/// A value in the data that the operation cannot take: the task fails with it, and so the
/// run (retrying cannot help).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("integer division by zero: a divisor of '{0}' in the data is 0 (numpy would give 0 with a warning; use float values or where(b != 0, a {0} b, …))")]
    DivisionByZero(&'static str),
    #[error("{0}: all-NaN slice encountered (as xarray raises); drop or fill the missing values first, e.g. x.fillna(…)")]
    AllNan(&'static str),
}

/// One reduction of a partial step: `expr` reduced over the stage's reduced axes, its states
/// (or, with `finish`, its final values) written to output `output` of the stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub expr: Expr,
    pub reduce: Reduce,
    pub finish: Option<DType>,
    pub output: usize,
}

/// One output of a [`Kernel::Maps`] stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapPart {
    pub expr: Expr,
    pub dtype: DType,
    pub output: usize,
}

/// What a compute stage's tasks do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kernel {
    /// Evaluate `expr` over the block and write it (as `dtype`) to the output, whose chunks
    /// the blocks are.
    Map { expr: Expr, dtype: DType },
    /// Several outputs over the same blocks: each part's expression evaluated over the block
    /// and written (as its `dtype`) to its output; a read that more than one part names is
    /// read once per block.
    Maps { parts: Vec<MapPart> },
    /// Evaluate each part's expression over the block and reduce the domain axes `axes` into
    /// one state per kept element: written as state pieces (one per block), or, when the
    /// part's `finish` is set (the block spans the whole reduced axes), as final values of
    /// that type. Parts reading the same array read each block of it once. A task's block
    /// is evaluated `sub` elements of the first reduced axis at a time (0: all at once), each
    /// folded into the same states: a task holds one sub-block's reads, and writes one state
    /// per block however many sub-blocks it folds.
    Partial {
        parts: Vec<Part>,
        axes: Vec<usize>,
        #[serde(default)]
        sub: u64,
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
    /// Evaluate `expr` over the block, tile by tile along `axis`, and fold the values at
    /// each index into its group's state: one piece per block. A block is read `sub`
    /// indices of `axis` at a time, each folded into the same states (0: all at once).
    Partial {
        expr: Expr,
        reduce: Reduce,
        axis: usize,
        groups: Vec<u32>,
        block: u64,
        #[serde(default)]
        sub: u64,
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

/// Elements of a tile: small enough that an expression's intermediate values stay in cache
/// and its buffers are reused from one tile to the next.
pub const TILE_ELEMENTS: u64 = 1 << 16;

/// Indices of `axis` per tile of a block of `shape` cut along it: about [`TILE_ELEMENTS`]
/// elements, at least one index.
#[must_use]
pub fn tile_step(shape: &[u64], axis: usize) -> u64 {
    let Some(&len) = shape.get(axis) else {
        return 1;
    };
    let per_index: u64 = shape.iter().product::<u64>() / len.max(1);
    (TILE_ELEMENTS / per_index.max(1)).clamp(1, len.max(1))
}

/// Elements of the largest tile of a block of `shape` cut along `axis`.
#[must_use]
pub fn tile_elements(shape: &[u64], axis: usize) -> u64 {
    let total: u64 = shape.iter().product();
    match shape.get(axis) {
        Some(&len) => (total / len.max(1)) * tile_step(shape, axis),
        None => total,
    }
}

/// Whether an expression reads only over its own domain region, so that a task evaluates it
/// tile by tile (a concatenation or a stack evaluates its parts over other regions, so it is
/// evaluated over the whole block).
#[must_use]
pub fn tileable(expr: &Expr) -> bool {
    match expr {
        Expr::Const(_) | Expr::Read(_) => true,
        Expr::Unary { x, .. } | Expr::Cast { x, .. } => tileable(x),
        Expr::Binary { a, b, .. } => tileable(a) && tileable(b),
        Expr::Where { c, a, b, .. } => tileable(c) && tileable(a) && tileable(b),
        Expr::Concat { .. } | Expr::Stack { .. } => false,
    }
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
        r.finish(&total, 1, 0).unwrap_or(f64::NAN)
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
    fn constants_that_json_lacks_survive_the_plan() -> Result<(), serde_json::Error> {
        // Regression: NaN was written as null and the task could not read its kernel back.
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 2.5] {
            let text = serde_json::to_string(&Expr::Const(v))?;
            let Expr::Const(back) = serde_json::from_str(&text)? else {
                panic!("{text}");
            };
            assert!(back == v || (back.is_nan() && v.is_nan()), "{text}");
        }
        Ok(())
    }

    #[test]
    fn argmin_of_an_all_nan_slice_is_an_error() {
        let r = reduce(ReduceOp::Argmax);
        let mut s = r.empty(1);
        r.add(&mut s, 1, 0, f64::NAN, 0);
        r.add(&mut s, 1, 0, f64::NAN, 1);
        assert_eq!(r.finish(&s, 1, 0), Err(DataError::AllNan("argmax")));
    }

    #[test]
    fn every_reduction_folds_a_run_as_value_by_value() {
        // The loops of `add_run` give what `add` gives one value at a time: NaN skipped (or
        // poisoning without skipna), ties, -0.0, a state starting empty or not, runs at
        // several indices of the reduced axis (argmin/argmax keep the first).
        let rows: [[f64; 4]; 4] = [
            [3.0, f64::NAN, -0.0, 1e9 + 4.0],
            [-1.0, 7.0, f64::NAN, 1e9 + 7.0],
            [f64::NAN, 7.0, 0.0, 1e9 + 13.0],
            [2.0, -3.5, f64::NAN, 1e9 + 16.0],
        ];
        for op in ReduceOp::ALL {
            for skipna in [true, false] {
                let r = Reduce {
                    op,
                    skipna,
                    ddof: 0.0,
                };
                let (mut by_run, mut by_value) = (r.empty(5), r.empty(5));
                for (t, row) in rows.iter().enumerate() {
                    r.add_run(&mut by_run, 5, 1, row, t as u64);
                    for (j, &v) in row.iter().enumerate() {
                        r.add(&mut by_value, 5, 1 + j, v, t as u64);
                    }
                }
                let same = by_run
                    .iter()
                    .zip(&by_value)
                    .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
                assert!(same, "{op:?} skipna={skipna}: {by_run:?} vs {by_value:?}");
            }
        }
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
}
