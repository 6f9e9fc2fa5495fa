//! The checker's side of CF-time grouping: `x.groupby("time.month")` and
//! `x.resample(time="1MS")` decode the time coordinate once, here, into the group of every
//! time index; a reduction of them is a grouped [`Reduction`]; an operation with an array of
//! the groups (`x.groupby("time.month") - clim`) reads that array by the group of each time
//! ([`Node::Gather`]); `sel` by date strings.

use std::rc::Rc;

use super::{err, Call, CheckError, Checker, Inputs, Reader, Val};
use crate::dtype::DType;
use crate::kernel::{ReduceOp, NO_INDEX};
use crate::model::{select, Coord, Lazy, Node, Reduction};
use crate::syntax::Pos;
use crate::time::{self, DateSel, Grouping, LabelValues, TimeAxis, NO_GROUP};

/// The values of a 1-d coordinate: computed labels, or read from its source.
pub(super) fn coord_values(
    coord: &Coord,
    inputs: &Inputs,
    read: &Reader<'_>,
) -> Result<Vec<f64>, String> {
    match coord.labels.as_deref() {
        Some(l) => match &l.values {
            LabelValues::Numbers { values, .. } => Ok(values.clone()),
            LabelValues::Text(_) => Err("its labels are text".into()),
        },
        None => {
            let source = inputs
                .sources
                .get(coord.source)
                .ok_or("a coordinate without a source")?;
            read(source, &coord.pick)
        }
    }
}

/// How a coordinate's values are dates.
pub(super) fn time_axis(coord: &Coord, inputs: &Inputs) -> Result<TimeAxis, String> {
    match coord.labels.as_deref() {
        Some(l) => TimeAxis::from_attrs(&l.attrs),
        None => {
            let source = inputs
                .sources
                .get(coord.source)
                .ok_or("a coordinate without a source")?;
            TimeAxis::from_attrs(&source.attrs)
        }
    }
}

/// `x.sel(dim="2001-03-01")` or `x.sel(dim=slice("2001-01", "2001-06-15"))`.
pub(super) fn sel_by_date(
    x: &Lazy,
    dim: &str,
    v: &Val,
    axis: &TimeAxis,
    values: &[f64],
) -> Result<Lazy, String> {
    Ok(match v {
        Val::Str(text) => match time::sel_date(text, axis, values)? {
            DateSel::Index(i) => select(x, dim, i, 1, None),
            DateSel::Range { start, len } => select(x, dim, start, 1, Some(len)),
        },
        Val::DateSlice([from, to]) => {
            let (start, len) = time::sel_date_slice(from.as_deref(), to.as_deref(), axis, values)?;
            select(x, dim, start, 1, Some(len))
        }
        _ => return Err("a date or slice of dates".into()),
    })
}

impl Checker<'_> {
    /// `x.groupby("time.month")` or `x.resample(time="1MS")`.
    pub(super) fn grouped(&self, call: &Call<'_>) -> Result<Val, CheckError> {
        let x = call.array_arg(0, "x")?;
        let (dim, what, pos) = if call.name == "groupby" {
            call.unknown_kwargs(&["group"])?;
            let Some((Val::Str(key), pos)) = call.arg(1, "group") else {
                return err(call.pos, "groupby takes a key such as \"time.month\"");
            };
            let Some((dim, key)) = key.split_once('.') else {
                return err(
                    pos,
                    format!("groupby: '{key}': give a key of a time coordinate such as \"time.month\" (grouping by an array is not supported)"),
                );
            };
            (dim.to_string(), Ok(key.to_string()), pos)
        } else {
            let mut kw = call.kw.iter();
            let (Some((dim, (v, pos))), None, 1) = (kw.next(), kw.next(), call.vals.len()) else {
                return err(
                    call.pos,
                    "resample takes one dimension and a frequency: resample(time=\"1MS\")",
                );
            };
            let Val::Str(freq) = v else {
                return err(*pos, "resample: the frequency is a string such as \"1MS\"");
            };
            (dim.clone(), Err(freq.clone()), *pos)
        };
        let fail = |m: String| CheckError {
            pos,
            message: format!("{}: {m}", call.name),
        };
        if x.size(&dim).is_none() {
            return Err(fail(format!(
                "no dimension '{dim}'; dimensions: {}",
                x.dims.join(", ")
            )));
        }
        let coord = x
            .coords
            .get(&dim)
            .ok_or_else(|| fail(format!("'{dim}' has no coordinate, so no CF time")))?;
        let axis = time_axis(coord, self.inputs)
            .map_err(|m| fail(format!("'{dim}' is not a CF time coordinate: {m}")))?;
        let values = coord_values(coord, self.inputs, self.read).map_err(fail)?;
        let grouping = match what {
            Ok(key) => time::group_by(&dim, &key, &axis, &values),
            Err(freq) => {
                let attrs = match coord.labels.as_deref() {
                    Some(l) => l.attrs.clone(),
                    None => self.inputs.sources[coord.source].attrs.clone(),
                };
                time::resample(&dim, &freq, &axis, &attrs, &values)
            }
        }
        .map_err(|m| CheckError { pos, message: m })?;
        if grouping.out_dim != dim && x.size(&grouping.out_dim).is_some() {
            return Err(fail(format!(
                "the array already has a dimension '{}'",
                grouping.out_dim
            )));
        }
        Ok(Val::Grouped(x, Rc::new(grouping)))
    }

    /// `other` (an array over the groups' dimension) read at the group of each time of `x`,
    /// as xarray's group-wise arithmetic does; NaN where `other` lacks a group. An array
    /// without the groups' dimension is left as it is (broadcast as usual).
    pub(super) fn by_group(
        &self,
        x: &Lazy,
        g: &Grouping,
        other: Lazy,
        pos: Pos,
    ) -> Result<Lazy, CheckError> {
        let Some(axis) = other.dims.iter().position(|d| *d == g.out_dim) else {
            return Ok(other);
        };
        let fail = |m: String| CheckError { pos, message: m };
        // Where each group's label sits along the other array's dimension.
        let position: Vec<u64> = match other.coords.get(&g.out_dim) {
            None if other.shape[axis] == g.len() as u64 => (0..g.len() as u64).collect(),
            None => {
                return Err(fail(format!(
                    "'{}' has {} groups but the other array {} values along it and no coordinate to match them by",
                    g.out_dim,
                    g.len(),
                    other.shape[axis]
                )))
            }
            Some(c) => match (&g.labels, c.labels.as_deref().map(|l| &l.values)) {
                (LabelValues::Text(mine), Some(LabelValues::Text(theirs))) => mine
                    .iter()
                    .map(|l| theirs.iter().position(|t| t == l).map_or(NO_INDEX, |i| i as u64))
                    .collect(),
                (LabelValues::Numbers { values: mine, .. }, _) => {
                    let theirs = coord_values(c, self.inputs, self.read).map_err(fail)?;
                    mine.iter()
                        .map(|l| theirs.iter().position(|t| t == l).map_or(NO_INDEX, |i| i as u64))
                        .collect()
                }
                _ => {
                    return Err(fail(format!(
                        "the '{}' labels of the two sides are not of one kind",
                        g.out_dim
                    )))
                }
            },
        };
        let index: Vec<u64> = g
            .groups
            .iter()
            .map(|&k| {
                if k == NO_GROUP {
                    NO_INDEX
                } else {
                    position[k as usize]
                }
            })
            .collect();
        let missing = index.contains(&NO_INDEX);
        let mut dims = other.dims.clone();
        dims[axis] = g.dim.clone();
        let mut shape = other.shape.clone();
        shape[axis] = g.groups.len() as u64;
        let mut coords = other.coords.clone();
        coords.remove(&g.out_dim);
        if let Some(c) = x.coords.get(&g.dim) {
            coords.insert(g.dim.clone(), c.clone());
        }
        // xarray keeps the group of each time as a non-dimension coordinate (`month` along
        // `time`).
        if g.out_dim != g.dim && !g.groups.contains(&NO_GROUP) {
            let index: Vec<u64> = g.groups.iter().map(|&k| u64::from(k)).collect();
            coords.insert(
                g.out_dim.clone(),
                Coord::computed(&g.dim, g.labels.pick(&index), g.label_attrs.clone()),
            );
        }
        Ok(Lazy {
            dims,
            shape,
            dtype: if missing && !other.dtype.is_float() {
                DType::Float64
            } else {
                other.dtype
            },
            attrs: other.attrs.clone(),
            coords,
            node: Node::Gather {
                x: Box::new(other),
                dim: g.out_dim.as_str().into(),
                into: Some(g.dim.as_str().into()),
                index: Rc::new(index),
            },
        })
    }
}

impl Call<'_> {
    /// `x.groupby(…).mean()`: the reduction over the grouped dimension, one result per group
    /// along the groups' dimension, which takes the grouped one's place.
    pub(super) fn grouped_reduction(&self, x: Lazy, g: &Rc<Grouping>) -> Result<Lazy, CheckError> {
        let Some(op) = ReduceOp::from_name(self.name) else {
            return err(
                self.pos,
                format!("'{}' of groups: groups take the reductions sum mean min max std var count, or an operation with an array of the groups", self.name),
            );
        };
        if matches!(op, ReduceOp::Argmin | ReduceOp::Argmax) {
            return err(
                self.pos,
                format!("{} of groups is not supported", op.name()),
            );
        }
        match self.arg(1, "dim") {
            None | Some((Val::None, _)) => {}
            Some((Val::Str(d), _)) if d == g.dim => {}
            Some((_, pos)) => {
                return err(
                    pos,
                    format!("{}: groups reduce over '{}' only", self.name, g.dim),
                )
            }
        }
        let mut kw = self.kw.clone();
        kw.insert("dim".into(), (Val::Str(g.dim.clone()), self.pos));
        let plain = Call {
            name: self.name,
            vals: vec![Val::Array(x.clone())],
            kw,
            pos: self.pos,
        }
        .reduction(op)?;
        let Node::Reduce(r) = &plain.node else {
            return err(self.pos, "a reduction of groups that is not a reduction");
        };
        let axis = x.dims.iter().position(|d| *d == g.dim).unwrap_or(0);
        let mut out = plain.clone();
        out.dims.insert(axis, g.out_dim.clone());
        out.shape.insert(axis, g.len() as u64);
        // xarray fills an empty bin with NaN, which an integer result cannot hold.
        if g.has_empty && !out.dtype.is_float() {
            out.dtype = DType::Float64;
        }
        out.coords.insert(
            g.out_dim.clone(),
            Coord::computed(&g.out_dim, g.labels.clone(), g.label_attrs.clone()),
        );
        out.node = Node::Reduce(Rc::new(Reduction {
            reduce: r.reduce,
            dtype: out.dtype,
            dims: r.dims.clone(),
            input: r.input.clone(),
            group: Some(g.clone()),
        }));
        Ok(out)
    }
}
