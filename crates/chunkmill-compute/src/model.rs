//! Lazy labelled arrays: inputs opened from Zarr stores, and the typed expression graph the
//! checker builds from them (dimension names, sizes, data type, attributes, coordinates).

use std::collections::BTreeMap;
use std::rc::Rc;

use serde_json::{Map, Value};

use crate::dtype::DType;
use crate::kernel::{Fun1, Fun2, Reduce, Unpack};
use crate::time::{Grouping, LabelValues};

/// One input array.
#[derive(Clone, Debug)]
pub struct Source {
    /// Store URL.
    pub url: String,
    /// Array path in the store.
    pub path: String,
    /// The type its values have once decoded (xarray reads an integer array with a fill
    /// value as floats, missing values as NaN).
    pub dtype: DType,
    /// The type its chunks store.
    pub stored: DType,
    pub shape: Vec<u64>,
    pub chunks: Vec<u64>,
    pub dims: Vec<String>,
    pub attrs: Map<String, Value>,
    /// Stored values read as NaN (`_FillValue`, `missing_value`, a v2 float fill value).
    pub missing: Vec<f64>,
    /// CF packing of the stored values (`scale_factor`, `add_offset`), undone on reading.
    pub unpack: Option<Unpack>,
}

/// How a source axis is seen: index `start + step × i` for `i < len`, named `dim`; or one
/// fixed index (the axis is gone).
#[derive(Clone, Debug, PartialEq)]
pub enum Pick {
    Keep {
        dim: String,
        start: u64,
        step: i64,
        len: u64,
    },
    Fixed(u64),
}

/// A 1-d coordinate: a source seen through a selection, or labels computed while checking
/// (the groups of a `groupby`, the bins of a `resample`), which then stand instead.
#[derive(Clone, Debug, PartialEq)]
pub struct Coord {
    pub source: usize,
    pub pick: Pick,
    pub labels: Option<Rc<Labels>>,
}

/// A computed coordinate with its attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct Labels {
    pub values: LabelValues,
    pub attrs: Map<String, Value>,
}

impl Coord {
    /// The dimension it runs along: its key in [`Lazy::coords`] for a dimension's own
    /// coordinate, another for a non-dimension one (the `month` of each time of an anomaly).
    #[must_use]
    pub fn dim<'a>(&'a self, key: &'a str) -> &'a str {
        match &self.pick {
            Pick::Keep { dim, .. } => dim,
            Pick::Fixed(_) => key,
        }
    }

    /// A computed coordinate along `dim`.
    #[must_use]
    pub fn computed(dim: &str, values: LabelValues, attrs: Map<String, Value>) -> Coord {
        Coord {
            source: usize::MAX,
            pick: Pick::Keep {
                dim: dim.to_string(),
                start: 0,
                step: 1,
                len: values.len() as u64,
            },
            labels: Some(Rc::new(Labels { values, attrs })),
        }
    }
}

/// A node of the expression graph.
#[derive(Clone, Debug)]
pub enum Node {
    Const(f64),
    Leaf {
        source: usize,
        picks: Vec<Pick>,
    },
    Unary(Fun1, Box<Lazy>),
    Binary(Fun2, Box<Lazy>, Box<Lazy>),
    Where(Box<Lazy>, Box<Lazy>, Box<Lazy>),
    Cast(Box<Lazy>),
    /// A reduction: computed by its own stages, then read as an array. Shared (`Rc`) so that
    /// an assignment used twice is computed once.
    Reduce(Rc<Reduction>),
    /// Parts laid end to end along `dim`; a part that lacks `dim` is one index of it (a
    /// concatenation along a new dimension).
    Concat {
        dim: String,
        parts: Vec<Lazy>,
    },
    /// The dimensions `dims` of `x` stacked into the lazy's last dimension, the first varying
    /// slowest (xarray's `stack`).
    Stack {
        dims: Vec<String>,
        x: Box<Lazy>,
    },
    /// The first's values broadcast over the lazy's dimensions (`broadcast_like`); the second
    /// only lends its chunks.
    Like(Box<Lazy>, Box<Lazy>),
    /// An array materialized with other chunks by the rechunk planner, then read as an array.
    Rechunk(Rc<Rechunk>),
    /// `x` indexed along its dimension `dim` by `index` (`groupby` arithmetic: the month of
    /// each time; a selection of a group dimension): along the dimension `into` of the
    /// result, or one fixed index when `into` is `None`. [`crate::time::NO_GROUP`] reads NaN.
    Gather {
        x: Box<Lazy>,
        dim: Rc<str>,
        into: Option<Rc<str>>,
        index: Rc<Vec<u64>>,
    },
}

/// `input` with chunks `chunks` along the named dimensions (the others keep theirs).
#[derive(Debug)]
pub struct Rechunk {
    pub chunks: BTreeMap<String, u64>,
    pub input: Lazy,
}

/// The length of one part of a concatenation along `dim` (1 for a part that lacks it).
#[must_use]
pub fn part_len(part: &Lazy, dim: &str) -> u64 {
    part.size(dim).unwrap_or(1)
}

/// The positions `start + step × i` (`i < len`) of pieces of lengths `lens` laid end to end,
/// in order, as runs within one piece: (piece, first local position, count).
#[must_use]
pub fn split_selection(lens: &[u64], start: u64, step: i64, len: u64) -> Vec<(usize, u64, u64)> {
    let mut offsets = vec![0u64];
    for l in lens {
        offsets.push(offsets[offsets.len() - 1] + l);
    }
    let mut runs: Vec<(usize, u64, u64)> = Vec::new();
    for i in 0..len {
        let p = (start as i64 + step * i as i64) as u64;
        let k = offsets.partition_point(|&o| o <= p).saturating_sub(1);
        match runs.last_mut() {
            Some(run) if run.0 == k => run.2 += 1,
            _ => runs.push((k, p - offsets[k], 1)),
        }
    }
    runs
}

/// A reduction of `input` over `dims`.
#[derive(Debug)]
pub struct Reduction {
    pub reduce: Reduce,
    /// The result's type (xarray's: a float32 mean is float32).
    pub dtype: DType,
    pub dims: Vec<String>,
    pub input: Lazy,
    /// A reduction per group (`groupby`, `resample`) over the single dimension in `dims`,
    /// which the groups' dimension replaces.
    pub group: Option<Rc<Grouping>>,
}

/// A lazy array (or scalar, with no dims).
#[derive(Clone, Debug)]
pub struct Lazy {
    pub dims: Vec<String>,
    pub shape: Vec<u64>,
    pub dtype: DType,
    pub attrs: Map<String, Value>,
    pub coords: BTreeMap<String, Coord>,
    pub node: Node,
}

impl Lazy {
    /// Its coordinates that lie along none of `dims`: what survives reducing or stacking them.
    #[must_use]
    pub fn coords_off(&self, dims: &[String]) -> BTreeMap<String, Coord> {
        self.coords
            .iter()
            .filter(|(d, c)| !dims.iter().any(|x| x == c.dim(d)))
            .map(|(d, c)| (d.clone(), c.clone()))
            .collect()
    }

    /// The size of dimension `dim`.
    #[must_use]
    pub fn size(&self, dim: &str) -> Option<u64> {
        self.dims
            .iter()
            .position(|d| d == dim)
            .map(|i| self.shape[i])
    }

    /// Whether it is a (weak) constant.
    #[must_use]
    pub fn is_const(&self) -> Option<f64> {
        match self.node {
            Node::Const(v) => Some(v),
            _ => None,
        }
    }

    /// Operations in the graph below, each counted once per appearance: what an unfused
    /// plan would run as stages.
    #[must_use]
    pub fn operations(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_ops(&mut out);
        out
    }

    fn collect_ops(&self, out: &mut Vec<String>) {
        match &self.node {
            Node::Const(_) => {}
            Node::Leaf { picks, .. } => {
                if picks.iter().any(|p| {
                    !matches!(
                        p,
                        Pick::Keep {
                            start: 0,
                            step: 1,
                            ..
                        }
                    )
                }) {
                    out.push("select".into());
                }
            }
            Node::Unary(f, x) => {
                x.collect_ops(out);
                out.push(format!("{f:?}").to_lowercase());
            }
            Node::Cast(x) => {
                x.collect_ops(out);
                out.push(format!("astype({})", self.dtype.name()));
            }
            Node::Binary(f, a, b) => {
                a.collect_ops(out);
                b.collect_ops(out);
                out.push(format!("{f:?}").to_lowercase());
            }
            Node::Where(c, a, b) => {
                c.collect_ops(out);
                a.collect_ops(out);
                b.collect_ops(out);
                out.push("where".into());
            }
            Node::Reduce(r) => {
                r.input.collect_ops(out);
                match &r.group {
                    Some(g) => out.push(format!(
                        "{}(by {}.{})",
                        r.reduce.op.name(),
                        g.dim,
                        g.out_dim
                    )),
                    None => out.push(format!("{}({})", r.reduce.op.name(), r.dims.join(", "))),
                }
            }
            Node::Gather { x, dim, .. } => {
                x.collect_ops(out);
                out.push(format!("gather({dim})"));
            }
            Node::Concat { dim, parts } => {
                for p in parts {
                    p.collect_ops(out);
                }
                out.push(format!("concat({dim})"));
            }
            Node::Stack { dims, x } => {
                x.collect_ops(out);
                out.push(format!("stack({})", dims.join(", ")));
            }
            Node::Like(x, _) => {
                x.collect_ops(out);
                out.push("broadcast_like".into());
            }
            Node::Rechunk(r) => {
                r.input.collect_ops(out);
                out.push("rechunk".into());
            }
        }
    }
}

/// A selection along the dimension of a concatenation: the parts it meets, each selected
/// (`Ok`), or the one part a single index falls in, the dimension gone (`Err`).
fn select_concat(
    parts: &[Lazy],
    dim: &str,
    start: u64,
    step: i64,
    len: Option<u64>,
) -> Result<Node, Box<Lazy>> {
    let lens: Vec<u64> = parts.iter().map(|p| part_len(p, dim)).collect();
    let take = |p: &Lazy, local: u64, count: Option<u64>| -> Lazy {
        if p.size(dim).is_some() {
            select(p, dim, local, step, count)
        } else {
            p.clone()
        }
    };
    match len {
        None => {
            let (k, local, _) = split_selection(&lens, start, 1, 1)[0];
            Err(Box::new(take(&parts[k], local, None)))
        }
        Some(n) => Ok(Node::Concat {
            dim: dim.to_string(),
            parts: split_selection(&lens, start, step, n)
                .into_iter()
                .map(|(k, local, count)| take(&parts[k], local, Some(count)))
                .collect(),
        }),
    }
}

/// Apply a selection along `dim` to every leaf, coordinate and reduction input below:
/// positions `start + step × i` (`i < len`) of the current view, or the one position `index`
/// when `len` is `None` (the dimension goes).
#[must_use]
pub fn select(lazy: &Lazy, dim: &str, start: u64, step: i64, len: Option<u64>) -> Lazy {
    let mut out = lazy.clone();
    if let Some(i) = out.dims.iter().position(|d| d == dim) {
        match len {
            Some(n) => out.shape[i] = n,
            None => {
                out.dims.remove(i);
                out.shape.remove(i);
            }
        }
    }
    let repick = |p: &Pick| -> Pick {
        match p {
            Pick::Keep {
                dim: d,
                start: s0,
                step: st0,
                ..
            } if d == dim => {
                let first = (*s0 as i64 + st0 * start as i64) as u64;
                match len {
                    Some(n) => Pick::Keep {
                        dim: d.clone(),
                        start: first,
                        step: st0 * step,
                        len: n,
                    },
                    None => Pick::Fixed(first),
                }
            }
            other => other.clone(),
        }
    };
    // The coordinates along `dim`: its own and non-dimension ones.
    if let Some(n) = len {
        for (key, c) in &mut out.coords {
            if c.dim(key) != dim {
                continue;
            }
            c.pick = repick(&c.pick);
            if let Some(l) = &c.labels {
                let index = positions(start, step, n);
                c.labels = Some(Rc::new(Labels {
                    values: l.values.pick(&index),
                    attrs: l.attrs.clone(),
                }));
            }
        }
    } else {
        out.coords.retain(|key, c| c.dim(key) != dim);
    }
    out.node = match &lazy.node {
        Node::Const(v) => Node::Const(*v),
        Node::Leaf { source, picks } => Node::Leaf {
            source: *source,
            picks: picks.iter().map(repick).collect(),
        },
        Node::Unary(f, x) => Node::Unary(*f, Box::new(select(x, dim, start, step, len))),
        Node::Cast(x) => Node::Cast(Box::new(select(x, dim, start, step, len))),
        Node::Binary(f, a, b) => Node::Binary(
            *f,
            Box::new(select(a, dim, start, step, len)),
            Box::new(select(b, dim, start, step, len)),
        ),
        Node::Where(c, a, b) => Node::Where(
            Box::new(select(c, dim, start, step, len)),
            Box::new(select(a, dim, start, step, len)),
            Box::new(select(b, dim, start, step, len)),
        ),
        Node::Concat { dim: along, parts } if along == dim => {
            match select_concat(parts, dim, start, step, len) {
                Ok(node) => node,
                Err(part) => {
                    return Lazy {
                        node: part.node,
                        ..out
                    }
                }
            }
        }
        Node::Concat { dim: along, parts } => Node::Concat {
            dim: along.clone(),
            parts: parts
                .iter()
                .map(|p| select(p, dim, start, step, len))
                .collect(),
        },
        // Selection along the stacked dimension is refused by the checker.
        Node::Stack { dims, x } => Node::Stack {
            dims: dims.clone(),
            x: Box::new(select(x, dim, start, step, len)),
        },
        Node::Like(x, like) => Node::Like(
            Box::new(select(x, dim, start, step, len)),
            Box::new(select(like, dim, start, step, len)),
        ),
        Node::Rechunk(r) if r.input.size(dim).is_some() => Node::Rechunk(Rc::new(Rechunk {
            chunks: r.chunks.clone(),
            input: select(&r.input, dim, start, step, len),
        })),
        Node::Rechunk(r) => Node::Rechunk(r.clone()),
        Node::Reduce(r) if r.group.as_ref().is_some_and(|g| g.out_dim == dim) => {
            // The groups are computed whole, then the selected ones read.
            Node::Gather {
                x: Box::new(lazy.clone()),
                dim: dim.into(),
                into: len.map(|_| dim.into()),
                index: Rc::new(positions(start, step, len.unwrap_or(1))),
            }
        }
        Node::Reduce(r) => {
            if r.input.size(dim).is_some() && !r.dims.iter().any(|d| d == dim) {
                Node::Reduce(Rc::new(Reduction {
                    reduce: r.reduce,
                    dtype: r.dtype,
                    dims: r.dims.clone(),
                    input: select(&r.input, dim, start, step, len),
                    group: r.group.clone(),
                }))
            } else {
                Node::Reduce(r.clone())
            }
        }
        Node::Gather {
            x,
            dim: from,
            into: Some(into),
            index,
        } if &**into == dim => {
            let picked = positions(start, step, len.unwrap_or(1));
            Node::Gather {
                x: x.clone(),
                dim: from.clone(),
                into: len.map(|_| dim.into()),
                index: Rc::new(picked.iter().map(|&i| index[i as usize]).collect()),
            }
        }
        Node::Gather {
            x,
            dim: from,
            into,
            index,
        } => Node::Gather {
            x: Box::new(select(x, dim, start, step, len)),
            dim: from.clone(),
            into: into.clone(),
            index: index.clone(),
        },
    };
    out
}

/// Positions `start + step × i` for `i < len`.
fn positions(start: u64, step: i64, len: u64) -> Vec<u64> {
    (0..len)
        .map(|i| (start as i64 + step * i as i64) as u64)
        .collect()
}
