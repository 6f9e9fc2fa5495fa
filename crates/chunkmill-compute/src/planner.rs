//! From lazy arrays to stages: every chain of elementwise operations and selections is fused
//! into the task that consumes it (a map, or a reduction's first step); each reduction is a
//! tree of a partial step and combine rounds whose fan-in is chosen from the task budget; a
//! plan whose smallest task does not fit is refused before anything runs.

use std::collections::BTreeMap;
use std::rc::Rc;

use chunkmill_grid::Grid;
use chunkmill_plan::{ComputeStage, Endpoint, Stage, StageKind};
use chunkmill_store::zarr::{ArraySpec, Compressor, Encoding};
use serde_json::{json, Map, Value};

use crate::check::Inputs;
use crate::dtype::DType;
use crate::kernel::{Expr, Kernel, Read, ReadAxis};
use crate::model::{Lazy, Node, Pick, Reduction};

mod group;

/// Where and how a compute plan writes.
#[derive(Clone, Debug)]
pub struct Target {
    /// Where the output arrays go (the target or its staging store).
    pub write_url: String,
    /// Where intermediates go.
    pub temp_url: String,
    pub zarr_format: u8,
    /// Output chunks by dimension name (others: the inputs' chunks).
    pub chunks: BTreeMap<String, u64>,
    pub codec: Option<Compressor>,
    /// Bytes one task may hold.
    pub task_budget: u64,
}

/// A planned computation.
#[derive(Clone, Debug)]
pub struct ComputePlan {
    pub stages: Vec<Stage>,
    pub specs: Vec<ArraySpec>,
    pub cleanup: Vec<(String, String)>,
    /// Per output, the operations an unfused plan would run as stages.
    pub unfused: Vec<(String, Vec<String>)>,
}

/// Why a computation cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No task of `what` fits the budget.
    #[error("{what}: one task needs {need} bytes, more than the {budget} bytes a task may hold")]
    TooLarge {
        what: String,
        need: u64,
        budget: u64,
    },
    #[error("{0}")]
    Invalid(String),
}

struct Planner<'a> {
    inputs: &'a Inputs,
    target: &'a Target,
    stages: Vec<Stage>,
    specs: Vec<ArraySpec>,
    cleanup: Vec<(String, String)>,
    /// Reductions already computed: where their values are.
    done: Vec<(Rc<Reduction>, Endpoint, DType)>,
    /// Which reductions are outputs, by name.
    named: Vec<(Rc<Reduction>, String)>,
}

/// Plan `outputs` (name, array) against `target`.
///
/// # Errors
/// [`PlanError::TooLarge`] naming the operation whose smallest task exceeds the budget.
pub fn plan(
    outputs: &[(String, Lazy)],
    inputs: &Inputs,
    target: &Target,
) -> Result<ComputePlan, PlanError> {
    let mut p = Planner {
        inputs,
        target,
        stages: Vec::new(),
        specs: Vec::new(),
        cleanup: Vec::new(),
        done: Vec::new(),
        named: outputs
            .iter()
            .filter_map(|(n, l)| match &l.node {
                Node::Reduce(r) => Some((r.clone(), n.clone())),
                _ => None,
            })
            .collect(),
    };
    let mut coords: BTreeMap<String, crate::model::Coord> = BTreeMap::new();
    for (name, lazy) in outputs {
        p.output(name, lazy)?;
        for (d, c) in &lazy.coords {
            if outputs.iter().any(|(n, _)| n == d) {
                continue;
            }
            if let Some(have) = coords.get(d) {
                if have != c {
                    return Err(PlanError::Invalid(format!(
                        "the outputs hold different '{d}' coordinates (different selections); write them in separate runs"
                    )));
                }
            }
            coords.insert(d.clone(), c.clone());
        }
    }
    for (dim, c) in &coords {
        if let Some(labels) = &c.labels {
            p.labels_output(dim, labels)?;
            continue;
        }
        let s = &inputs.sources[c.source];
        let len = match &c.pick {
            Pick::Keep { len, .. } => *len,
            Pick::Fixed(_) => 1,
        };
        let lazy = Lazy {
            dims: vec![dim.clone()],
            shape: vec![len],
            dtype: s.dtype,
            attrs: s.attrs.clone(),
            coords: BTreeMap::new(),
            node: Node::Leaf {
                source: c.source,
                picks: vec![c.pick.clone()],
            },
        };
        p.output(dim, &lazy)?;
    }
    let unfused = outputs
        .iter()
        .map(|(n, l)| (n.clone(), l.operations()))
        .collect();
    Ok(ComputePlan {
        stages: p.stages,
        specs: p.specs,
        cleanup: p.cleanup,
        unfused,
    })
}

impl Planner<'_> {
    /// The chunk size along `dim`: asked for, else the first input's that has it.
    fn chunk(&self, lazy: &Lazy, dim: &str, len: u64) -> u64 {
        if let Some(&c) = self.target.chunks.get(dim) {
            return c.clamp(1, len.max(1));
        }
        let mut found = None;
        find_chunk(lazy, dim, self.inputs, &mut found);
        found.unwrap_or(len).clamp(1, len.max(1))
    }

    fn spec(&mut self, name: &str, lazy: &Lazy, chunks: &[u64]) {
        let float = lazy.dtype.is_float();
        let fill = if float {
            json!("NaN")
        } else if self.target.zarr_format == 2 {
            Value::Null
        } else if lazy.dtype == DType::Bool {
            json!(false)
        } else {
            json!(0)
        };
        // The values are decoded: NaN is missing, and no fill attribute remains to apply.
        let mut attributes: Map<String, Value> = lazy.attrs.clone();
        for key in ["_FillValue", "missing_value"] {
            attributes.remove(key);
        }
        self.specs.push(ArraySpec {
            path: name.to_string(),
            zarr_format: self.target.zarr_format,
            shape: lazy.shape.clone(),
            dtype: lazy.dtype.data_type(),
            chunks: chunks.to_vec(),
            inner_chunks: None,
            fill_value: fill,
            encoding: Encoding::Compressor(
                self.target.codec.clone().unwrap_or(Compressor::Zstd(1)),
            ),
            dimension_names: Some(lazy.dims.iter().map(|d| Some(d.clone())).collect()),
            attributes,
        });
    }

    fn output(&mut self, name: &str, lazy: &Lazy) -> Result<(), PlanError> {
        let chunks: Vec<u64> = lazy
            .dims
            .iter()
            .zip(&lazy.shape)
            .map(|(d, &n)| self.chunk(lazy, d, n))
            .collect();
        let grid = grid(&lazy.shape, &chunks)?;
        self.spec(name, lazy, &chunks);
        let endpoint = Endpoint::Zarr {
            url: self.target.write_url.clone(),
            path: name.to_string(),
            grid: grid.clone(),
        };
        if let Node::Reduce(r) = &lazy.node {
            return self.reduction(r, Some((endpoint, lazy.dtype)), name);
        }
        self.reductions_below(lazy)?;
        let mut inputs = Vec::new();
        let expr = self.lower(lazy, &lazy.dims, &mut inputs)?;
        let block = grid.max_chunk_elements();
        let need = map_mem(&expr, &inputs, block, lazy.dtype);
        self.fits(&format!("{name} = …"), need)?;
        let n = self.stages.len();
        self.stages.push(Stage {
            name: format!("{n:02}-{}-map", safe(name)),
            label: format!("{name}: {}", lazy.operations().join(" → ")),
            projected_mem: need,
            bytes_read: read_bytes(&expr, &inputs, lazy.shape.iter().product()),
            bytes_written: lazy.shape.iter().product::<u64>() * lazy.dtype.size() as u64,
            kind: StageKind::Compute(ComputeStage {
                inputs,
                output: endpoint,
                blocks: grid,
                kernel: serde_json::to_value(Kernel::Map {
                    expr,
                    dtype: lazy.dtype,
                })
                .map_err(|e| PlanError::Invalid(e.to_string()))?,
            }),
        });
        Ok(())
    }

    fn fits(&self, what: &str, need: u64) -> Result<(), PlanError> {
        if need > self.target.task_budget {
            return Err(PlanError::TooLarge {
                what: what.to_string(),
                need,
                budget: self.target.task_budget,
            });
        }
        Ok(())
    }

    /// Compute every reduction below `lazy` not computed yet, innermost first.
    fn reductions_below(&mut self, lazy: &Lazy) -> Result<(), PlanError> {
        let mut found = Vec::new();
        collect_reductions(lazy, &mut found);
        for r in found {
            if self.done.iter().any(|(d, _, _)| same(d, &r)) {
                continue;
            }
            let named = self
                .named
                .iter()
                .find(|(n, _)| same(n, &r))
                .map(|(_, s)| s.clone());
            let label = named
                .clone()
                .unwrap_or_else(|| format!("r{}", self.done.len()));
            self.reduction(&r, None, &label)?;
        }
        Ok(())
    }

    fn lower(
        &self,
        lazy: &Lazy,
        domain: &[String],
        inputs: &mut Vec<Endpoint>,
    ) -> Result<Expr, PlanError> {
        let mut add = |e: Endpoint| -> usize {
            if let Some(i) = inputs.iter().position(|x| *x == e) {
                i
            } else {
                inputs.push(e);
                inputs.len() - 1
            }
        };
        Ok(match &lazy.node {
            Node::Const(v) => Expr::Const(*v),
            Node::Leaf { source, picks } => {
                let s = &self.inputs.sources[*source];
                let input = add(Endpoint::Zarr {
                    url: s.url.clone(),
                    path: s.path.clone(),
                    grid: grid(&s.shape, &s.chunks)?,
                });
                Expr::Read(Read {
                    input,
                    dtype: s.stored,
                    missing: s.missing.clone(),
                    axes: picks
                        .iter()
                        .map(|p| match p {
                            Pick::Keep {
                                dim, start, step, ..
                            } => ReadAxis {
                                to: domain.iter().position(|d| d == dim),
                                start: *start,
                                step: *step,
                                index: None,
                            },
                            Pick::Fixed(i) => ReadAxis {
                                to: None,
                                start: *i,
                                step: 1,
                                index: None,
                            },
                        })
                        .collect(),
                })
            }
            Node::Unary(f, x) => Expr::Unary {
                f: *f,
                x: Box::new(self.lower(x, domain, inputs)?),
                dtype: lazy.dtype,
            },
            Node::Cast(x) => Expr::Cast {
                x: Box::new(self.lower(x, domain, inputs)?),
                dtype: lazy.dtype,
            },
            Node::Binary(f, a, b) => Expr::Binary {
                f: *f,
                a: Box::new(self.lower(a, domain, inputs)?),
                b: Box::new(self.lower(b, domain, inputs)?),
                dtype: lazy.dtype,
            },
            Node::Where(c, a, b) => Expr::Where {
                c: Box::new(self.lower(c, domain, inputs)?),
                a: Box::new(self.lower(a, domain, inputs)?),
                b: Box::new(self.lower(b, domain, inputs)?),
                dtype: lazy.dtype,
            },
            Node::Reduce(r) => {
                let (_, endpoint, dtype) = self
                    .done
                    .iter()
                    .find(|(d, _, _)| same(d, r))
                    .ok_or_else(|| {
                        PlanError::Invalid("a reduction used before it is planned".into())
                    })?;
                let input = add(endpoint.clone());
                Expr::Read(Read {
                    input,
                    dtype: *dtype,
                    missing: Vec::new(),
                    axes: lazy
                        .dims
                        .iter()
                        .map(|d| ReadAxis {
                            to: domain.iter().position(|x| x == d),
                            start: 0,
                            step: 1,
                            index: None,
                        })
                        .collect(),
                })
            }
            Node::Gather {
                x,
                dim,
                into,
                index,
            } => self.lower_gather(x, dim, into.as_deref(), index, domain, inputs)?,
        })
    }

    /// The stages of reduction `r`: a partial step over blocks of `fan_in` input chunks along
    /// the reduced axes, then combine rounds until one state per kept block remains; the
    /// last step writes `out` (an output) or intermediate pieces.
    fn reduction(
        &mut self,
        r: &Rc<Reduction>,
        out: Option<(Endpoint, DType)>,
        label: &str,
    ) -> Result<(), PlanError> {
        if let Some(g) = &r.group {
            return self.group_reduction(r, g, out, label);
        }
        self.reductions_below(&r.input)?;
        let input = &r.input;
        let axes: Vec<usize> = (0..input.dims.len())
            .filter(|&i| r.dims.contains(&input.dims[i]))
            .collect();
        let base: Vec<u64> = input
            .dims
            .iter()
            .zip(&input.shape)
            .map(|(d, &n)| self.chunk(input, d, n))
            .collect();
        let mut inputs = Vec::new();
        let expr = self.lower(input, &input.dims, &mut inputs)?;
        let fields = r.reduce.fields() as u64;
        let kept_elems: u64 = (0..base.len())
            .filter(|i| !axes.contains(i))
            .map(|i| base[i])
            .product();
        let what = format!("{label} = {}(…, {})", r.reduce.op.name(), r.dims.join(", "));
        // Fan-in along each reduced axis: grow while the task fits.
        let counts: Vec<u64> = input
            .shape
            .iter()
            .zip(&base)
            .map(|(n, c)| n.div_ceil(*c).max(1))
            .collect();
        let mut fan: Vec<u64> = vec![1; axes.len()];
        let mem = |fan: &[u64]| -> u64 {
            let elems: u64 = base
                .iter()
                .enumerate()
                .map(|(i, c)| axes.iter().position(|&a| a == i).map_or(*c, |k| c * fan[k]))
                .product();
            map_mem(&expr, &inputs, elems, DType::Float64) + 16 * kept_elems * fields
        };
        self.fits(&what, mem(&fan))?;
        for k in 0..axes.len() {
            while fan[k] < counts[axes[k]] && fan[k] < 64 {
                fan[k] += 1;
                if mem(&fan) > self.target.task_budget {
                    fan[k] -= 1;
                    break;
                }
            }
        }
        let dtype = out.as_ref().map_or_else(|| reduced_dtype(r), |o| o.1);
        let kept_shape: Vec<u64> = (0..base.len())
            .filter(|i| !axes.contains(i))
            .map(|i| input.shape[i])
            .collect();
        let kept_chunks: Vec<u64> = (0..base.len())
            .filter(|i| !axes.contains(i))
            .map(|i| base[i])
            .collect();
        let final_ep = match out {
            Some((e, _)) => e,
            None => {
                let prefix = format!("c{}-{}", self.stages.len(), safe(label));
                self.cleanup
                    .push((self.target.temp_url.clone(), format!("{prefix}/")));
                Endpoint::Pieces {
                    url: self.target.temp_url.clone(),
                    prefix,
                    grid: grid(&kept_shape, &kept_chunks)?,
                }
            }
        };
        let block_chunks: Vec<u64> = base
            .iter()
            .enumerate()
            .map(|(i, c)| {
                axes.iter()
                    .position(|&a| a == i)
                    .map_or(*c, |k| (c * fan[k]).min(input.shape[i].max(1)))
            })
            .collect();
        let blocks = grid(&input.shape, &block_chunks)?;
        let n_r: Vec<u64> = axes.iter().map(|&a| blocks.counts()[a]).collect();
        let partial_mem = mem(&fan);
        let in_bytes = read_bytes(&expr, &inputs, input.shape.iter().product());
        let step = 0;
        let layout = Layout {
            shape: input.shape.clone(),
            base: base.clone(),
            axes: axes.clone(),
            fields,
        };
        let piece_grid = |n_r: &[u64]| layout.grid(n_r, true);
        let done = n_r.iter().all(|&n| n == 1);
        let current = if done {
            final_ep.clone()
        } else {
            let prefix = format!("c{}-{}-p{step}", self.stages.len(), safe(label));
            self.cleanup
                .push((self.target.temp_url.clone(), format!("{prefix}/")));
            Endpoint::Pieces {
                url: self.target.temp_url.clone(),
                prefix,
                grid: piece_grid(&n_r)?,
            }
        };
        let n = self.stages.len();
        self.stages.push(Stage {
            name: format!("{n:02}-{}-partial", safe(label)),
            label: format!(
                "{label}: {} {}(over {}) in blocks of {:?} chunks",
                input.operations().join(" → "),
                r.reduce.op.name(),
                r.dims.join(", "),
                fan
            ),
            projected_mem: partial_mem,
            bytes_read: in_bytes,
            bytes_written: 8
                * fields
                * kept_shape.iter().product::<u64>()
                * n_r.iter().product::<u64>(),
            kind: StageKind::Compute(ComputeStage {
                inputs,
                output: current.clone(),
                blocks,
                kernel: serde_json::to_value(Kernel::Partial {
                    expr,
                    reduce: r.reduce,
                    axes: axes.clone(),
                    finish: done.then_some(dtype),
                })
                .map_err(|e| PlanError::Invalid(e.to_string()))?,
            }),
        });
        let rounds = Rounds {
            label,
            what: &what,
            dtype,
            kept_elems,
            final_ep: &final_ep,
        };
        self.combine_rounds(r, &layout, &rounds, n_r, current, step)?;
        self.done.push((r.clone(), final_ep, dtype));
        Ok(())
    }

    /// Combine rounds after a partial step left `n_r` states per kept block along the reduced
    /// axes in `current`: as many states per task as the budget holds (at most 32), until one
    /// is left, which the last round finishes into the reduction's endpoint.
    fn combine_rounds(
        &mut self,
        r: &Rc<Reduction>,
        layout: &Layout,
        rounds: &Rounds<'_>,
        mut n_r: Vec<u64>,
        mut current: Endpoint,
        mut step: usize,
    ) -> Result<(), PlanError> {
        // Combine rounds: as many states per task as the budget holds (at most 32).
        let state_bytes = 8 * layout.fields * rounds.kept_elems;
        let per_round =
            ((self.target.task_budget / state_bytes.max(1)).saturating_sub(3)).clamp(2, 32);
        while !n_r.iter().all(|&n| n == 1) {
            step += 1;
            let fan_in: Vec<u64> = n_r.iter().map(|&n| n.min(per_round)).collect();
            let next: Vec<u64> = n_r
                .iter()
                .zip(&fan_in)
                .map(|(n, f)| n.div_ceil(*f))
                .collect();
            let last = next.iter().all(|&n| n == 1);
            let output = if last {
                rounds.final_ep.clone()
            } else {
                let prefix = format!("c{}-{}-p{step}", self.stages.len(), safe(rounds.label));
                self.cleanup
                    .push((self.target.temp_url.clone(), format!("{prefix}/")));
                Endpoint::Pieces {
                    url: self.target.temp_url.clone(),
                    prefix,
                    grid: layout.grid(&next, true)?,
                }
            };
            let need = state_bytes * 3 + 16 * rounds.kept_elems;
            self.fits(rounds.what, need)?;
            let n = self.stages.len();
            self.stages.push(Stage {
                name: format!("{n:02}-{}-combine{step}", safe(rounds.label)),
                label: format!(
                    "{}: merge {}({}) states, {fan_in:?} per task",
                    rounds.label,
                    r.reduce.op.name(),
                    r.dims.join(", ")
                ),
                projected_mem: need,
                bytes_read: state_bytes * n_r.iter().product::<u64>(),
                bytes_written: state_bytes * next.iter().product::<u64>(),
                kind: StageKind::Compute(ComputeStage {
                    inputs: vec![current.clone()],
                    output: output.clone(),
                    blocks: layout.grid(&next, false)?,
                    kernel: serde_json::to_value(Kernel::Combine {
                        reduce: r.reduce,
                        axes: layout.axes.clone(),
                        fan_in,
                        finish: last.then_some(rounds.dtype),
                    })
                    .map_err(|e| PlanError::Invalid(e.to_string()))?,
                }),
            });
            current = output;
            n_r = next;
        }
        Ok(())
    }
}

/// The shape of a reduction's input and how its states are laid out.
struct Layout {
    shape: Vec<u64>,
    base: Vec<u64>,
    axes: Vec<usize>,
    fields: u64,
}

impl Layout {
    /// The grid of states, `n_r` along the reduced axes (one per piece), the input's chunks
    /// along the kept ones, and the fields as a last axis when `fields`.
    fn grid(&self, n_r: &[u64], fields: bool) -> Result<Grid, PlanError> {
        let mut shape = Vec::new();
        let mut chunks = Vec::new();
        for (i, &len) in self.shape.iter().enumerate() {
            match self.axes.iter().position(|&a| a == i) {
                Some(k) => {
                    shape.push(n_r[k]);
                    chunks.push(1);
                }
                None => {
                    shape.push(len);
                    chunks.push(self.base[i]);
                }
            }
        }
        if fields {
            shape.push(self.fields);
            chunks.push(self.fields);
        }
        grid(&shape, &chunks)
    }
}

/// What every combine round of one reduction shares.
struct Rounds<'a> {
    label: &'a str,
    what: &'a str,
    dtype: DType,
    kept_elems: u64,
    final_ep: &'a Endpoint,
}

/// An intermediate reduction keeps the result type xarray gives it, so that what reads it
/// computes with the same rounded values.
fn reduced_dtype(r: &Reduction) -> DType {
    r.dtype
}

/// The same reduction: one object, or one written twice (`m = air.mean("time")` and
/// `air - air.mean("time")`), which is then computed once.
fn same(a: &Rc<Reduction>, b: &Rc<Reduction>) -> bool {
    Rc::ptr_eq(a, b) || format!("{a:?}") == format!("{b:?}")
}

fn collect_reductions(lazy: &Lazy, out: &mut Vec<Rc<Reduction>>) {
    match &lazy.node {
        Node::Const(_) | Node::Leaf { .. } => {}
        Node::Unary(_, x) | Node::Cast(x) => collect_reductions(x, out),
        Node::Binary(_, a, b) => {
            collect_reductions(a, out);
            collect_reductions(b, out);
        }
        Node::Where(c, a, b) => {
            collect_reductions(c, out);
            collect_reductions(a, out);
            collect_reductions(b, out);
        }
        Node::Reduce(r) => {
            if !out.iter().any(|x| same(x, r)) {
                out.push(r.clone());
            }
        }
        Node::Gather { x, .. } => collect_reductions(x, out),
    }
}

fn find_chunk(lazy: &Lazy, dim: &str, inputs: &Inputs, found: &mut Option<u64>) {
    if found.is_some() {
        return;
    }
    match &lazy.node {
        Node::Const(_) => {}
        Node::Leaf { source, picks } => {
            let s = &inputs.sources[*source];
            for (i, p) in picks.iter().enumerate() {
                if matches!(p, Pick::Keep { dim: d, .. } if d == dim) {
                    *found = Some(s.chunks[i]);
                }
            }
        }
        Node::Unary(_, x) | Node::Cast(x) => find_chunk(x, dim, inputs, found),
        Node::Binary(_, a, b) => {
            find_chunk(a, dim, inputs, found);
            find_chunk(b, dim, inputs, found);
        }
        Node::Where(c, a, b) => {
            find_chunk(c, dim, inputs, found);
            find_chunk(a, dim, inputs, found);
            find_chunk(b, dim, inputs, found);
        }
        Node::Reduce(r) => find_chunk(&r.input, dim, inputs, found),
        Node::Gather { x, .. } => find_chunk(x, dim, inputs, found),
    }
}

fn grid(shape: &[u64], chunks: &[u64]) -> Result<Grid, PlanError> {
    let chunks: Vec<u64> = chunks
        .iter()
        .zip(shape)
        .map(|(c, n)| (*c).clamp(1, (*n).max(1)))
        .collect();
    Grid::regular(shape, &chunks).map_err(|e| PlanError::Invalid(e.to_string()))
}

fn safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// What a task evaluating `expr` over `block` elements holds at its peak: each read's
/// bounding block and one decoded chunk of it, every node's block of f64 (counted all at
/// once), and the output chunk encoded.
fn map_mem(expr: &Expr, inputs: &[Endpoint], block: u64, out: DType) -> u64 {
    let mut reads = Vec::new();
    expr.reads(&mut reads);
    let chunk_bytes: u64 = reads
        .iter()
        .map(|r| {
            inputs.get(r.input).map_or(0, |e| {
                e.grid().max_chunk_elements() * (8 + r.dtype.size() as u64)
            })
        })
        .sum();
    8 * block * (expr.buffers() + reads.len() as u64)
        + chunk_bytes
        + block * (8 + out.size() as u64)
}

fn read_bytes(expr: &Expr, _inputs: &[Endpoint], elems: u64) -> u64 {
    let mut reads = Vec::new();
    expr.reads(&mut reads);
    reads.iter().map(|r| elems * r.dtype.size() as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check;
    use crate::model::Source;
    use crate::syntax::parse;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// One input `air(time 100, lat 10, lon 20)` float32 in chunks of (10, 5, 20).
    fn inputs() -> Inputs {
        let mut inputs = Inputs::default();
        inputs.sources.push(Source {
            url: "/data/in.zarr".into(),
            path: "air".into(),
            dtype: DType::Float32,
            stored: DType::Float32,
            shape: vec![100, 10, 20],
            chunks: vec![10, 5, 20],
            dims: vec!["time".into(), "lat".into(), "lon".into()],
            attrs: Map::new(),
            missing: vec![],
        });
        inputs.names.insert("air".into(), (0, BTreeMap::new()));
        inputs
    }

    fn planned(script: &str, task_budget: u64) -> Result<ComputePlan, Box<dyn std::error::Error>> {
        let inputs = inputs();
        let outputs = check(&parse(script)?, &inputs, &|_, _| Err("no reads".into()))?;
        let target = Target {
            write_url: "/data/out.zarr".into(),
            temp_url: "/data/tmp".into(),
            zarr_format: 3,
            chunks: BTreeMap::new(),
            codec: None,
            task_budget,
        };
        Ok(plan(&outputs, &inputs, &target)?)
    }

    fn kernel(stage: &Stage) -> Option<&str> {
        match &stage.kind {
            StageKind::Compute(c) => c.kernel.get("kind").and_then(Value::as_str),
            _ => None,
        }
    }

    #[test]
    fn elementwise_chains_fuse_into_one_map_stage() -> TestResult {
        let p = planned("a = sqrt(abs(air * 2 - 1)) + 3", 1 << 30)?;
        assert_eq!(p.stages.len(), 1);
        assert_eq!(kernel(&p.stages[0]), Some("map"));
        assert_eq!(p.stages[0].tasks(), 10 * 2);
        assert_eq!(p.unfused[0].1.len(), 5);
        assert!(p.cleanup.is_empty(), "no intermediate");
        Ok(())
    }

    #[test]
    fn fan_in_follows_the_budget() -> TestResult {
        // A large budget reads all ten time chunks per task: no combine round.
        let p = planned("m = air.mean('time')", 1 << 30)?;
        let kinds: Vec<_> = p.stages.iter().map(kernel).collect();
        assert_eq!(kinds, [Some("partial")]);
        // A budget of about two chunks per task: a partial step and combine rounds.
        let chunk = 10 * 5 * 20 * 8;
        let p = planned("m = air.mean('time')", 9 * chunk)?;
        let kinds: Vec<_> = p.stages.iter().map(kernel).collect();
        assert_eq!(kinds[0], Some("partial"));
        assert!(
            kinds.len() >= 2 && kinds[1..].iter().all(|k| *k == Some("combine")),
            "{kinds:?}"
        );
        assert!(p.stages.iter().all(|s| s.projected_mem <= 9 * chunk));
        assert!(!p.cleanup.is_empty());
        Ok(())
    }

    #[test]
    fn a_reduction_read_by_an_expression_is_computed_first() -> TestResult {
        let p = planned("anom = air - air.mean('time')", 1 << 30)?;
        let kinds: Vec<_> = p.stages.iter().map(kernel).collect();
        assert_eq!(kinds, [Some("partial"), Some("map")]);
        Ok(())
    }

    #[test]
    fn a_reduction_written_twice_is_computed_once() -> TestResult {
        let p = planned(
            "m = air.mean('time')\nanom = air - air.mean('time')",
            1 << 30,
        )?;
        let kinds: Vec<_> = p.stages.iter().map(kernel).collect();
        assert_eq!(kinds, [Some("partial"), Some("map")]);
        // The expression reads the output array `m`.
        let StageKind::Compute(map) = &p.stages[1].kind else {
            return Err("not a compute stage".into());
        };
        assert!(map
            .inputs
            .iter()
            .any(|e| e.describe() == "/data/out.zarr/m"));
        Ok(())
    }

    #[test]
    fn a_task_that_cannot_fit_is_refused_naming_the_operation() {
        let e = planned("s = air.std('time')", 1000)
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.starts_with("s = std(…, time): one task needs")),
            "{e:?}"
        );
    }
}
