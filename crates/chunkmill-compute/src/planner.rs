//! From lazy arrays to stages: every chain of elementwise operations and selections is fused
//! into the task that consumes it (a map, or a reduction's first step); each reduction is a
//! tree of a partial step and combine rounds whose fan-in is chosen from the task budget, and
//! reductions of the same blocks share one partial step (one read of their inputs); `rechunk`
//! goes through the rechunk planner of `chunkmill-grid`; a fused task that does not fit is
//! split, a subexpression written as an intermediate first; a plan whose smallest task does
//! not fit is refused before anything runs.

use std::collections::BTreeMap;
use std::rc::Rc;

use chunkmill_grid::rechunk::{MediumCost, RechunkProblem};
use chunkmill_grid::{Grid, GridError};
use chunkmill_plan::{ComputeStage, CopyStage, Endpoint, Stage, StageKind};
use chunkmill_store::zarr::{ArraySpec, Compressor, Encoding};
use serde_json::{json, Map, Value};

use crate::check::Inputs;
use crate::dtype::DType;
use crate::kernel::{Expr, Kernel, MapPart, Part, Read, ReadAxis};
use crate::model::{part_len, Coord, Lazy, Node, Pick, Rechunk, Reduction};

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
    /// Tasks that may run at once (the rechunk planner sizes its stages by it).
    pub workers: u64,
}

/// A planned computation.
#[derive(Clone, Debug)]
pub struct ComputePlan {
    pub stages: Vec<Stage>,
    pub specs: Vec<ArraySpec>,
    pub cleanup: Vec<(String, String)>,
    /// Per output, the operations an unfused plan would run as stages.
    pub unfused: Vec<(String, Vec<String>)>,
    /// Stages that write an intermediate array for a fused task that would not fit, with the
    /// operation whose result they write (one the unfused plan writes too).
    pub splits: Vec<(String, String)>,
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

/// An array computed by its own stages before what reads it.
#[derive(Clone, Debug)]
enum Stored {
    Reduce(Rc<Reduction>),
    Rechunk(Rc<Rechunk>),
}

impl Stored {
    fn same(&self, other: &Stored) -> bool {
        match (self, other) {
            (Stored::Reduce(a), Stored::Reduce(b)) => same(a, b),
            (Stored::Rechunk(a), Stored::Rechunk(b)) => {
                Rc::ptr_eq(a, b) || format!("{a:?}") == format!("{b:?}")
            }
            _ => false,
        }
    }

    fn input(&self) -> &Lazy {
        match self {
            Stored::Reduce(r) => &r.input,
            Stored::Rechunk(r) => &r.input,
        }
    }
}

fn stored_of(lazy: &Lazy) -> Option<Stored> {
    match &lazy.node {
        Node::Reduce(r) => Some(Stored::Reduce(r.clone())),
        Node::Rechunk(r) => Some(Stored::Rechunk(r.clone())),
        _ => None,
    }
}

struct Planner<'a> {
    inputs: &'a Inputs,
    target: &'a Target,
    stages: Vec<Stage>,
    specs: Vec<ArraySpec>,
    cleanup: Vec<(String, String)>,
    splits: Vec<(String, String)>,
    /// Arrays already planned: where their values are, and their type.
    done: Vec<(Stored, Endpoint, DType)>,
    /// Outputs that are stored arrays themselves: they are planned into the output.
    named: Vec<(Stored, String, Endpoint)>,
}

/// An output: its name, its array, where it goes.
struct Output<'l> {
    name: String,
    lazy: &'l Lazy,
    endpoint: Endpoint,
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
        splits: Vec::new(),
        done: Vec::new(),
        named: Vec::new(),
    };
    let (coords, labels) = output_coords(outputs, inputs)?;
    let mut all: Vec<Output<'_>> = Vec::new();
    for (name, lazy) in outputs.iter().chain(&coords) {
        let endpoint = p.output_array(name, lazy)?;
        if let Some(s) = stored_of(lazy) {
            p.named.push((s, name.clone(), endpoint.clone()));
        }
        all.push(Output {
            name: name.clone(),
            lazy,
            endpoint,
        });
    }
    let mut pending: Vec<Stored> = Vec::new();
    for o in &all {
        collect_stored(o.lazy, &mut pending);
    }
    p.stored_arrays(pending)?;
    let maps: Vec<&Output<'_>> = all.iter().filter(|o| stored_of(o.lazy).is_none()).collect();
    for batch in p.map_batches(&maps)? {
        match batch.as_slice() {
            [one] => p.map_output(one)?,
            several => p.shared_maps(several)?,
        }
    }
    for (name, dim, l) in &labels {
        p.labels_output(name, dim, l)?;
    }
    // Non-dimension coordinates are named in their arrays' `coordinates` attribute, as
    // xarray writes them, so that they open as coordinates.
    for (name, lazy) in outputs {
        let aux: Vec<&str> = lazy
            .coords
            .iter()
            .filter(|(key, c)| c.dim(key) != key.as_str())
            .filter(|(key, _)| labels.iter().any(|(n, _, _)| n == *key))
            .map(|(key, _)| key.as_str())
            .collect();
        if let Some(spec) = p.specs.iter_mut().find(|s| s.path == *name) {
            if !aux.is_empty() {
                spec.attributes
                    .insert("coordinates".into(), Value::String(aux.join(" ")));
            }
        }
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
        splits: p.splits,
    })
}

/// Coordinates made of labels (`groupby` keys, `resample` bins, the group of each time): name,
/// dimension, labels.
type LabelCoords = Vec<(String, String, Rc<crate::model::Labels>)>;

/// The 1-d coordinates the outputs carry, as outputs of their own (one per name; two
/// outputs holding different ones are refused): those read from a source, and those made of
/// labels. A non-dimension coordinate named as another output's dimension (the `month` of
/// an anomaly beside a climatology over `month`) is left out: one dataset cannot hold both,
/// and xarray refuses to merge them.
fn output_coords(
    outputs: &[(String, Lazy)],
    inputs: &Inputs,
) -> Result<(Vec<(String, Lazy)>, LabelCoords), PlanError> {
    let mut coords: BTreeMap<String, Coord> = BTreeMap::new();
    let is_dim = |name: &str| {
        outputs
            .iter()
            .any(|(_, l)| l.dims.iter().any(|d| d == name))
    };
    for (_, lazy) in outputs {
        for (d, c) in &lazy.coords {
            if outputs.iter().any(|(n, _)| n == d) || (c.dim(d) != d && is_dim(d)) {
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
    let labels: LabelCoords = coords
        .iter()
        .filter_map(|(d, c)| {
            c.labels
                .as_ref()
                .map(|l| (d.clone(), c.dim(d).to_string(), l.clone()))
        })
        .collect();
    let read = coords
        .into_iter()
        .filter(|(_, c)| c.labels.is_none())
        .map(|(dim, c)| {
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
                    picks: vec![c.pick],
                },
            };
            (dim, lazy)
        })
        .collect();
    Ok((read, labels))
}

/// What a group of reductions computed together shares: the shape of their input and its
/// blocks, and the reduced dimensions.
fn group_key(r: &Reduction, base: &[u64]) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}",
        r.input.dims, r.input.shape, base, r.dims
    )
}

impl Planner<'_> {
    /// An intermediate of `grid` under `prefix` in the temp store, removed when the job ends.
    fn temp_pieces(&mut self, prefix: String, grid: Grid) -> Endpoint {
        self.cleanup
            .push((self.target.temp_url.clone(), format!("{prefix}/")));
        Endpoint::Pieces {
            url: self.target.temp_url.clone(),
            prefix,
            grid,
            codec: chunkmill_plan::PieceCodec::Raw,
        }
    }

    /// The chunk size along `dim`: asked for, else the first input's that has it.
    fn chunk(&self, lazy: &Lazy, dim: &str, len: u64) -> u64 {
        if let Some(&c) = self.target.chunks.get(dim) {
            return c.clamp(1, len.max(1));
        }
        let mut found = None;
        find_chunk(lazy, dim, self.inputs, &mut found);
        found.unwrap_or(len).clamp(1, len.max(1))
    }

    fn chunks_of(&self, lazy: &Lazy) -> Vec<u64> {
        lazy.dims
            .iter()
            .zip(&lazy.shape)
            .map(|(d, &n)| self.chunk(lazy, d, n))
            .collect()
    }

    /// The metadata of output `name` and where its values go.
    fn output_array(&mut self, name: &str, lazy: &Lazy) -> Result<Endpoint, PlanError> {
        let chunks = self.chunks_of(lazy);
        let grid = grid(&lazy.shape, &chunks)?;
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
            chunks: grid.axes().iter().map(|a| a.chunk(0).end.max(1)).collect(),
            inner_chunks: None,
            fill_value: fill,
            encoding: Encoding::Compressor(
                self.target.codec.clone().unwrap_or(Compressor::Zstd(1)),
            ),
            dimension_names: Some(lazy.dims.iter().map(|d| Some(d.clone())).collect()),
            attributes,
        });
        Ok(Endpoint::Zarr {
            url: self.target.write_url.clone(),
            path: name.to_string(),
            grid,
        })
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

    fn is_done(&self, s: &Stored) -> bool {
        self.done.iter().any(|(d, _, _)| d.same(s))
    }

    /// Where a stored array goes: the output it is, or intermediate pieces named `label`.
    fn destination(
        &mut self,
        s: &Stored,
        label: &str,
        shape: &[u64],
        chunks: &[u64],
    ) -> Result<Endpoint, PlanError> {
        if let Some((_, _, e)) = self.named.iter().find(|(n, _, _)| n.same(s)) {
            return Ok(e.clone());
        }
        let prefix = format!("c{}-{}", self.stages.len(), safe(label));
        Ok(self.temp_pieces(prefix, grid(shape, chunks)?))
    }

    /// Plan every stored array (reductions, rechunks), innermost first; reductions ready at
    /// the same time that reduce the same blocks share one partial step.
    fn stored_arrays(&mut self, mut pending: Vec<Stored>) -> Result<(), PlanError> {
        while !pending.is_empty() {
            let ready: Vec<Stored> = pending
                .iter()
                .filter(|s| {
                    let mut below = Vec::new();
                    collect_stored(s.input(), &mut below);
                    below.iter().all(|b| self.is_done(b))
                })
                .cloned()
                .collect();
            if ready.is_empty() {
                return Err(PlanError::Invalid(
                    "stored arrays that read each other".into(),
                ));
            }
            let mut groups: Vec<(String, Vec<Rc<Reduction>>)> = Vec::new();
            for s in &ready {
                match s {
                    Stored::Reduce(r) if r.group.is_some() => self.grouped(r)?,
                    Stored::Reduce(r) => {
                        let base = self.chunks_of(&r.input);
                        let key = group_key(r, &base);
                        match groups.iter_mut().find(|(k, _)| *k == key) {
                            Some((_, g)) => g.push(r.clone()),
                            None => groups.push((key, vec![r.clone()])),
                        }
                    }
                    Stored::Rechunk(r) => self.rechunk(r)?,
                }
            }
            for (_, group) in groups {
                self.reductions(&group)?;
            }
            pending.retain(|s| !self.is_done(s));
        }
        Ok(())
    }

    /// A reduction by groups (`groupby`, `resample`): planned by [`group`] into the output it
    /// is, or intermediate pieces.
    fn grouped(&mut self, r: &Rc<Reduction>) -> Result<(), PlanError> {
        let Some(g) = &r.group else {
            return Err(PlanError::Invalid("not a reduction by groups".into()));
        };
        let stored = Stored::Reduce(r.clone());
        let (out, label) = match self.named.iter().find(|(n, _, _)| n.same(&stored)) {
            Some((_, name, e)) => (Some((e.clone(), r.dtype)), name.clone()),
            None => (None, format!("r{}", self.done.len())),
        };
        self.group_reduction(r, g, out, &label)
    }

    /// The names of reductions in stage names and messages: the output each one is, or `rN`.
    fn labels(&self, group: &[Rc<Reduction>]) -> Vec<String> {
        group
            .iter()
            .enumerate()
            .map(|(k, r)| {
                self.named
                    .iter()
                    .find(|(n, _, _)| n.same(&Stored::Reduce(r.clone())))
                    .map_or_else(
                        || format!("r{}", self.done.len() + k),
                        |(_, s, _)| s.clone(),
                    )
            })
            .collect()
    }

    /// The stages of reductions of the same blocks: one partial step over blocks of `fan_in`
    /// input chunks along the reduced axes (each input block read once for all of them),
    /// then each one's combine rounds until one state per kept block remains.
    fn reductions(&mut self, group: &[Rc<Reduction>]) -> Result<(), PlanError> {
        let input = &group[0].input;
        let axes: Vec<usize> = (0..input.dims.len())
            .filter(|&i| group[0].dims.contains(&input.dims[i]))
            .collect();
        let base = self.chunks_of(input);
        let kept_elems: u64 = kept(&base, &axes).iter().product();
        let state_bytes: u64 = group
            .iter()
            .map(|r| 16 * kept_elems * r.reduce.fields() as u64)
            .sum();
        let mut inputs = Vec::new();
        let mut exprs = Vec::new();
        for r in group {
            exprs.push(self.lower(&r.input, &input.dims, &mut inputs)?);
        }
        let axis0 = axes.first().copied().unwrap_or(0);
        if group.len() > 1
            && group_mem(&exprs, &inputs, (&base, axis0), None) + state_bytes
                > self.target.task_budget
        {
            // Together they do not fit: each on its own.
            for r in group {
                self.reductions(std::slice::from_ref(r))?;
            }
            return Ok(());
        }
        let labels = self.labels(group);
        let what = format!(
            "{} = {}(…, {})",
            labels.join(", "),
            group[0].reduce.op.name(),
            group[0].dims.join(", ")
        );
        if group.len() == 1 {
            let state = state_bytes;
            let (e, i) = self.fit(exprs.remove(0), inputs, input, &base, &what, &|e, ins| {
                group_mem(std::slice::from_ref(e), ins, (&base, axis0), None) + state
            })?;
            exprs = vec![e];
            inputs = i;
        }
        let mem = |fan: &[u64]| -> u64 {
            let shape: Vec<u64> = base
                .iter()
                .enumerate()
                .map(|(i, c)| axes.iter().position(|&a| a == i).map_or(*c, |k| c * fan[k]))
                .collect();
            group_mem(&exprs, &inputs, (&shape, axis0), None) + state_bytes
        };
        self.fits(&what, mem(&vec![1; axes.len()]))?;
        let fan = grow_fan(
            input,
            &base,
            &axes,
            (self.target.task_budget, self.target.workers),
            &mem,
        );
        let partial_mem = mem(&fan);
        // A task folds `per_task` such blocks one after another (holding one block's reads
        // at a time) and writes one state for them: fewer states to write and combine.
        let per_task = blocks_per_task(input, &base, &axes, &fan, self.target.workers);
        let block_chunks: Vec<u64> = base
            .iter()
            .enumerate()
            .map(|(i, c)| {
                axes.iter().position(|&a| a == i).map_or(*c, |k| {
                    let along = if k == 0 { fan[k] * per_task } else { fan[k] };
                    (c * along).min(input.shape[i].max(1))
                })
            })
            .collect();
        let sub = if per_task > 1 {
            base[axis0] * fan[0]
        } else {
            0
        };
        let blocks = grid(&input.shape, &block_chunks)?;
        let n_r: Vec<u64> = axes.iter().map(|&a| blocks.counts()[a]).collect();
        let done = n_r.iter().all(|&n| n == 1);
        let kept_shape: Vec<u64> = kept(&input.shape, &axes);
        let kept_chunks: Vec<u64> = kept(&base, &axes);
        let stage_no = self.stages.len();
        let mut outputs = Vec::new();
        let mut parts = Vec::new();
        let mut rounds = Vec::new();
        let mut written = 0;
        for (k, (r, expr)) in group.iter().zip(exprs).enumerate() {
            let stored = Stored::Reduce(r.clone());
            let label = labels[k].clone();
            let final_ep = self.destination(&stored, &label, &kept_shape, &kept_chunks)?;
            let layout = Layout {
                shape: input.shape.clone(),
                base: base.clone(),
                axes: axes.clone(),
                fields: r.reduce.fields() as u64,
            };
            let first = if done {
                final_ep.clone()
            } else {
                let prefix = format!("c{stage_no}-{}-p0", safe(&label));
                self.temp_pieces(prefix, layout.grid(&n_r, true)?)
            };
            written += 8
                * layout.fields
                * kept_shape.iter().product::<u64>()
                * n_r.iter().product::<u64>();
            parts.push(Part {
                expr,
                reduce: r.reduce,
                finish: done.then_some(r.dtype),
                output: k,
            });
            outputs.push(first.clone());
            rounds.push((r.clone(), layout, label, first, final_ep));
        }
        let names: Vec<String> = rounds.iter().map(|x| safe(&x.2)).collect();
        self.stages.push(Stage {
            name: format!("{stage_no:02}-{}-partial", names.join("_")),
            label: partial_label(group, &labels, &fan, per_task),
            projected_mem: partial_mem,
            bytes_read: read_bytes(group.iter().map(|r| &r.input), self.inputs),
            bytes_written: written,
            kind: StageKind::Compute(ComputeStage {
                inputs,
                outputs,
                blocks,
                kernel: kernel_json(&Kernel::Partial {
                    parts,
                    axes: axes.clone(),
                    sub,
                })?,
            }),
        });
        for (r, layout, label, first, final_ep) in rounds {
            let what = format!("{label} = {}(…, {})", r.reduce.op.name(), r.dims.join(", "));
            let rounds = Rounds {
                label: &label,
                what: &what,
                dtype: r.dtype,
                kept_elems,
                final_ep: &final_ep,
            };
            self.combine_rounds(&r, &layout, &rounds, n_r.clone(), first)?;
            let dtype = rounds.dtype;
            self.done.push((Stored::Reduce(r), final_ep, dtype));
        }
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
    ) -> Result<(), PlanError> {
        let state_bytes = 8 * layout.fields * rounds.kept_elems;
        let per_round =
            ((self.target.task_budget / state_bytes.max(1)).saturating_sub(3)).clamp(2, 32);
        let mut step = 0;
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
                self.temp_pieces(prefix, layout.grid(&next, true)?)
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
                    outputs: vec![output.clone()],
                    blocks: layout.grid(&next, false)?,
                    kernel: kernel_json(&Kernel::Combine {
                        reduce: r.reduce,
                        axes: layout.axes.clone(),
                        fan_in,
                        finish: last.then_some(rounds.dtype),
                    })?,
                }),
            });
            current = output;
            n_r = next;
        }
        Ok(())
    }

    /// `x.rechunk(…)`: `x` (read from its source when it is one, else computed first into
    /// an intermediate at its own chunks) copied to the new chunks by the rechunk planner's
    /// stages; the last writes the output or intermediate pieces that later stages read.
    fn rechunk(&mut self, r: &Rc<Rechunk>) -> Result<(), PlanError> {
        let x = &r.input;
        let stored = Stored::Rechunk(r.clone());
        let label = self
            .named
            .iter()
            .find(|(n, _, _)| n.same(&stored))
            .map_or_else(|| format!("k{}", self.done.len()), |(_, s, _)| s.clone());
        let what = format!("{label} = rechunk(…)");
        let natural = self.chunks_of(x);
        let target_chunks: Vec<u64> = match self.named.iter().find(|(n, _, _)| n.same(&stored)) {
            Some((_, _, e)) => e
                .grid()
                .axes()
                .iter()
                .map(|a| a.chunk(0).end.max(1))
                .collect(),
            None => x
                .dims
                .iter()
                .zip(&x.shape)
                .zip(&natural)
                .map(|((d, n), c)| r.chunks.get(d).copied().unwrap_or(*c).clamp(1, (*n).max(1)))
                .collect(),
        };
        let source = match plain_source(x, self.inputs) {
            Some(e) => e,
            None => self.materialize_lazy(x, &natural, &label, &what)?,
        };
        let problem = RechunkProblem {
            shape: x.shape.clone(),
            item_size: x.dtype.size() as u64,
            source: source.grid().clone(),
            target_chunks: target_chunks.clone(),
            budget: self.target.task_budget,
            workers: self.target.workers.max(1),
            source_cost: MediumCost::LOCAL_RAW,
            target_cost: MediumCost::LOCAL_RAW,
            intermediate_cost: MediumCost::LOCAL_RAW,
            ns_per_task: 100e3,
            task_overhead: 0,
            max_stages: 4,
        };
        let planned = problem.plan().map_err(|e| match e {
            GridError::DoesNotFit { task_bytes, budget } => PlanError::TooLarge {
                what: what.clone(),
                need: task_bytes,
                budget,
            },
            other => PlanError::Invalid(format!("{what}: {other}")),
        })?;
        let final_ep = self.destination(&stored, &label, &x.shape, &target_chunks)?;
        let last = planned.stages.len() - 1;
        let mut input = source;
        for (j, s) in planned.stages.iter().enumerate() {
            let n = self.stages.len();
            let output = if j == last {
                final_ep.clone()
            } else {
                let prefix = format!("c{n}-{}-r{j}", safe(&label));
                self.temp_pieces(prefix, s.output.clone())
            };
            self.stages.push(Stage {
                name: format!("{n:02}-{}-rechunk{j}", safe(&label)),
                label: format!(
                    "{label}: rechunk ({}) to {target_chunks:?}, {} stage {}/{}",
                    planned.strategy,
                    x.dims.join(", "),
                    j + 1,
                    last + 1
                ),
                projected_mem: s.projected_mem,
                bytes_read: s.bytes_read,
                bytes_written: s.bytes_written,
                kind: StageKind::Copy(CopyStage {
                    input: input.clone(),
                    output: output.clone(),
                    blocks: s.blocks.clone(),
                    item_size: x.dtype.size() as u64,
                }),
            });
            input = output;
        }
        self.done.push((stored, final_ep, x.dtype));
        Ok(())
    }

    /// `lazy` computed by a map stage into intermediate pieces at `chunks`.
    fn materialize_lazy(
        &mut self,
        lazy: &Lazy,
        chunks: &[u64],
        label: &str,
        what: &str,
    ) -> Result<Endpoint, PlanError> {
        let mut inputs = Vec::new();
        let expr = self.lower(lazy, &lazy.dims, &mut inputs)?;
        let block = grid(&lazy.shape, chunks)?.max_chunk_shape();
        let dtype = lazy.dtype;
        let splits = self.splits.len();
        let (expr, inputs) = self.fit(expr, inputs, lazy, chunks, what, &|e, ins| {
            map_mem(e, ins, &block, dtype)
        })?;
        let bytes_read =
            (self.splits.len() == splits).then(|| read_bytes(std::iter::once(lazy), self.inputs));
        let n = self.stages.len();
        let prefix = format!("c{n}-{}-in", safe(label));
        let out = self.temp_pieces(prefix, grid(&lazy.shape, chunks)?);
        self.map_stage(
            format!("{n:02}-{}-in", safe(label)),
            format!(
                "{label}: {} (written for the rechunk)",
                lazy.operations().join(" → ")
            ),
            expr,
            inputs,
            out.clone(),
            &lazy.shape,
            dtype,
            bytes_read,
        )?;
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn map_stage(
        &mut self,
        name: String,
        label: String,
        expr: Expr,
        inputs: Vec<Endpoint>,
        output: Endpoint,
        shape: &[u64],
        dtype: DType,
        bytes_read: Option<u64>,
    ) -> Result<(), PlanError> {
        let block = output.grid().max_chunk_shape();
        let bytes_read = bytes_read.unwrap_or_else(|| expr_bytes(&expr, shape));
        self.stages.push(Stage {
            name,
            label,
            projected_mem: map_mem(&expr, &inputs, &block, dtype),
            bytes_read,
            bytes_written: shape.iter().product::<u64>() * dtype.size() as u64,
            kind: StageKind::Compute(ComputeStage {
                inputs,
                blocks: output.grid().clone(),
                outputs: vec![output],
                kernel: kernel_json(&Kernel::Map { expr, dtype })?,
            }),
        });
        Ok(())
    }

    /// An output that is not a stored array: one map stage over its chunks.
    fn map_output(&mut self, o: &Output<'_>) -> Result<(), PlanError> {
        let lazy = o.lazy;
        let mut inputs = Vec::new();
        let expr = self.lower(lazy, &lazy.dims, &mut inputs)?;
        let block = o.endpoint.grid().max_chunk_shape();
        let chunks: Vec<u64> = o
            .endpoint
            .grid()
            .axes()
            .iter()
            .map(|a| a.chunk(0).end.max(1))
            .collect();
        let what = format!("{} = …", o.name);
        let dtype = lazy.dtype;
        let splits = self.splits.len();
        let (expr, inputs) = self.fit(expr, inputs, lazy, &chunks, &what, &|e, ins| {
            map_mem(e, ins, &block, dtype)
        })?;
        // Split, it reads the intermediates rather than what the expression names.
        let bytes_read =
            (self.splits.len() == splits).then(|| read_bytes(std::iter::once(lazy), self.inputs));
        let n = self.stages.len();
        self.map_stage(
            format!("{n:02}-{}-map", safe(&o.name)),
            format!("{}: {}", o.name, lazy.operations().join(" → ")),
            expr,
            inputs,
            o.endpoint.clone(),
            &lazy.shape,
            dtype,
            bytes_read,
        )
    }

    /// Map outputs in batches that one stage computes together: outputs over the same
    /// dimensions and chunks that read a source in common (each on its own otherwise).
    fn map_batches<'o, 'l>(
        &self,
        maps: &[&'o Output<'l>],
    ) -> Result<Vec<Vec<&'o Output<'l>>>, PlanError> {
        let mut reads: Vec<Vec<Endpoint>> = Vec::new();
        for o in maps {
            let mut inputs = Vec::new();
            self.lower(o.lazy, &o.lazy.dims, &mut inputs)?;
            reads.push(inputs);
        }
        let mut batches: Vec<(Vec<usize>, Vec<Endpoint>)> = Vec::new();
        for (i, o) in maps.iter().enumerate() {
            let joins = batches.iter_mut().find(|(members, shared)| {
                let first = maps[members[0]];
                first.lazy.dims == o.lazy.dims
                    && first.endpoint.grid() == o.endpoint.grid()
                    && reads[i].iter().any(|e| shared.contains(e))
            });
            match joins {
                Some((members, shared)) => {
                    members.push(i);
                    shared.extend(reads[i].iter().cloned());
                }
                None => batches.push((vec![i], reads[i].clone())),
            }
        }
        Ok(batches
            .into_iter()
            .map(|(members, _)| members.into_iter().map(|i| maps[i]).collect())
            .collect())
    }

    /// Several map outputs over the same blocks in one stage: each task reads its block of
    /// every input once and writes every output's chunk. When they do not fit together, each
    /// is planned on its own.
    fn shared_maps(&mut self, batch: &[&Output<'_>]) -> Result<(), PlanError> {
        let mut inputs = Vec::new();
        let mut parts = Vec::new();
        for (k, o) in batch.iter().enumerate() {
            parts.push(MapPart {
                expr: self.lower(o.lazy, &o.lazy.dims, &mut inputs)?,
                dtype: o.lazy.dtype,
                output: k,
            });
        }
        let grid = batch[0].endpoint.grid().clone();
        let widest = batch
            .iter()
            .map(|o| o.lazy.dtype)
            .max_by_key(|t| t.size())
            .unwrap_or(DType::Float64);
        let exprs: Vec<Expr> = parts.iter().map(|p| p.expr.clone()).collect();
        let mem = group_mem(&exprs, &inputs, (&grid.max_chunk_shape(), 0), Some(widest));
        if mem > self.target.task_budget {
            for o in batch {
                self.map_output(o)?;
            }
            return Ok(());
        }
        let names: Vec<String> = batch.iter().map(|o| o.name.clone()).collect();
        let each: Vec<String> = batch
            .iter()
            .map(|o| o.lazy.operations().join(" → "))
            .collect();
        let n = self.stages.len();
        let safe_names: Vec<String> = names.iter().map(|x| safe(x)).collect();
        self.stages.push(Stage {
            name: format!("{n:02}-{}-map", safe_names.join("_")),
            label: format!(
                "{}: {}, one read shared",
                names.join(", "),
                each.join(" · ")
            ),
            projected_mem: mem,
            bytes_read: read_bytes(batch.iter().map(|o| o.lazy), self.inputs),
            bytes_written: batch
                .iter()
                .map(|o| o.lazy.shape.iter().product::<u64>() * o.lazy.dtype.size() as u64)
                .sum(),
            kind: StageKind::Compute(ComputeStage {
                inputs,
                blocks: grid,
                outputs: batch.iter().map(|o| o.endpoint.clone()).collect(),
                kernel: kernel_json(&Kernel::Maps { parts })?,
            }),
        });
        Ok(())
    }

    /// `expr` (over `lazy`'s domain) as it fits `need` under the task budget: while it does
    /// not, its largest operand that is an operation is written first by a map stage of its
    /// own into an intermediate at `chunks` (itself fitted the same way), and read back.
    fn fit(
        &mut self,
        mut expr: Expr,
        mut inputs: Vec<Endpoint>,
        lazy: &Lazy,
        chunks: &[u64],
        what: &str,
        need: &dyn Fn(&Expr, &[Endpoint]) -> u64,
    ) -> Result<(Expr, Vec<Endpoint>), PlanError> {
        loop {
            let mem = need(&expr, &inputs);
            if mem <= self.target.task_budget {
                return Ok((expr, inputs));
            }
            let Some(operand) = largest_operand(&mut expr) else {
                self.fits(what, mem)?;
                return Ok((expr, inputs));
            };
            let sub = std::mem::replace(operand, Expr::Const(f64::NAN));
            let dtype = sub.dtype();
            let (sub, sub_inputs) = reindexed(&sub, &inputs);
            let block = grid(&lazy.shape, chunks)?.max_chunk_shape();
            let (sub, sub_inputs) = self.fit(sub, sub_inputs, lazy, chunks, what, &|e, ins| {
                map_mem(e, ins, &block, dtype)
            })?;
            let n = self.stages.len();
            let prefix = format!("c{n}-split");
            let out = self.temp_pieces(prefix, grid(&lazy.shape, chunks)?);
            let op = expr_op(&sub);
            let name = format!("{n:02}-split-map");
            self.splits.push((name.clone(), op.clone()));
            self.map_stage(
                name,
                format!("{what}: {op} written as an intermediate (the fused task would not fit)"),
                sub,
                sub_inputs,
                out.clone(),
                &lazy.shape,
                dtype,
                None,
            )?;
            inputs.push(out);
            *operand = Expr::Read(Read {
                input: inputs.len() - 1,
                dtype,
                missing: Vec::new(),
                unpack: None,
                axes: (0..lazy.dims.len())
                    .map(|k| ReadAxis {
                        to: Some(k),
                        start: 0,
                        step: 1,
                        index: None,
                    })
                    .collect(),
            });
            let (e, i) = reindexed(&expr, &inputs);
            expr = e;
            inputs = i;
        }
    }

    fn lower(
        &self,
        lazy: &Lazy,
        domain: &[String],
        inputs: &mut Vec<Endpoint>,
    ) -> Result<Expr, PlanError> {
        Ok(match &lazy.node {
            Node::Const(v) => Expr::Const(*v),
            Node::Leaf { source, picks } => {
                let s = &self.inputs.sources[*source];
                let input = add_input(
                    inputs,
                    Endpoint::Zarr {
                        url: s.url.clone(),
                        path: s.path.clone(),
                        grid: grid(&s.shape, &s.chunks)?,
                    },
                );
                Expr::Read(Read {
                    input,
                    dtype: s.stored,
                    missing: s.missing.clone(),
                    unpack: s.unpack,
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
            Node::Like(x, _) => self.lower(x, domain, inputs)?,
            Node::Concat { dim, parts } => {
                let axis = domain.iter().position(|d| d == dim).ok_or_else(|| {
                    PlanError::Invalid(format!("concat along '{dim}' outside the domain"))
                })?;
                let mut starts = vec![0];
                let mut lowered = Vec::new();
                for p in parts {
                    starts.push(starts[starts.len() - 1] + part_len(p, dim));
                    lowered.push(self.lower(p, domain, inputs)?);
                }
                Expr::Concat {
                    axis,
                    starts,
                    parts: lowered,
                    dtype: lazy.dtype,
                }
            }
            Node::Stack { dims, x } => {
                let z = lazy.dims.last().cloned().unwrap_or_default();
                let at = domain.iter().position(|d| *d == z).ok_or_else(|| {
                    PlanError::Invalid(format!("stacked dimension '{z}' outside the domain"))
                })?;
                let mut inner: Vec<String> = domain.iter().filter(|d| **d != z).cloned().collect();
                let first = inner.len();
                inner.extend(dims.iter().cloned());
                Expr::Stack {
                    x: Box::new(self.lower(x, &inner, inputs)?),
                    at,
                    axes: (first..inner.len()).collect(),
                    sizes: dims.iter().map(|d| x.size(d).unwrap_or(1)).collect(),
                }
            }
            Node::Reduce(_) | Node::Rechunk(_) => {
                let key = stored_of(lazy).ok_or_else(|| PlanError::Invalid("not stored".into()))?;
                let (_, endpoint, dtype) = self
                    .done
                    .iter()
                    .find(|(d, _, _)| d.same(&key))
                    .ok_or_else(|| {
                        PlanError::Invalid("an array used before it is planned".into())
                    })?;
                let input = add_input(inputs, endpoint.clone());
                Expr::Read(Read {
                    input,
                    dtype: *dtype,
                    missing: Vec::new(),
                    unpack: None,
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
}

fn add_input(inputs: &mut Vec<Endpoint>, e: Endpoint) -> usize {
    if let Some(i) = inputs.iter().position(|x| *x == e) {
        i
    } else {
        inputs.push(e);
        inputs.len() - 1
    }
}

fn kernel_json(kernel: &Kernel) -> Result<Value, PlanError> {
    serde_json::to_value(kernel).map_err(|e| PlanError::Invalid(e.to_string()))
}

/// The source array itself when `lazy` is one, whole and as stored (a rechunk copies its
/// chunks' values as they are).
fn plain_source(lazy: &Lazy, inputs: &Inputs) -> Option<Endpoint> {
    let Node::Leaf { source, picks } = &lazy.node else {
        return None;
    };
    let s = &inputs.sources[*source];
    let whole = picks
        .iter()
        .zip(&s.shape)
        .all(|(p, n)| matches!(p, Pick::Keep { start: 0, step: 1, len, .. } if len == n));
    (whole
        && picks.len() == s.shape.len()
        && s.missing.is_empty()
        && s.unpack.is_none()
        && s.stored == lazy.dtype)
        .then(|| {
            Some(Endpoint::Zarr {
                url: s.url.clone(),
                path: s.path.clone(),
                grid: Grid::regular(&s.shape, &s.chunks).ok()?,
            })
        })
        .flatten()
}

/// The operand of the root (through elementwise nodes) that holds the most blocks and is an
/// operation (not a read or a number): what [`Planner::fit`] writes first.
fn largest_operand(expr: &mut Expr) -> Option<&mut Expr> {
    let operands: Vec<&mut Expr> = match expr {
        Expr::Unary { x, .. } | Expr::Cast { x, .. } => vec![x.as_mut()],
        Expr::Binary { a, b, .. } => vec![a.as_mut(), b.as_mut()],
        Expr::Where { c, a, b, .. } => vec![c.as_mut(), a.as_mut(), b.as_mut()],
        _ => Vec::new(),
    };
    operands
        .into_iter()
        .filter(|e| !matches!(e, Expr::Read(_) | Expr::Const(_)))
        .max_by_key(|e| e.buffers())
}

/// `expr` reading its own list of inputs (those of `inputs` it reads, in order).
fn reindexed(expr: &Expr, inputs: &[Endpoint]) -> (Expr, Vec<Endpoint>) {
    fn walk(e: &Expr, from: &[Endpoint], to: &mut Vec<Endpoint>) -> Expr {
        let mut e = e.clone();
        match &mut e {
            Expr::Const(_) => {}
            Expr::Read(r) => r.input = add_input(to, from[r.input].clone()),
            Expr::Unary { x, .. } | Expr::Cast { x, .. } | Expr::Stack { x, .. } => {
                **x = walk(x, from, to);
            }
            Expr::Binary { a, b, .. } => {
                **a = walk(a, from, to);
                **b = walk(b, from, to);
            }
            Expr::Where { c, a, b, .. } => {
                **c = walk(c, from, to);
                **a = walk(a, from, to);
                **b = walk(b, from, to);
            }
            Expr::Concat { parts, .. } => {
                for p in parts.iter_mut() {
                    *p = walk(p, from, to);
                }
            }
        }
        e
    }
    let mut to = Vec::new();
    let e = walk(expr, inputs, &mut to);
    (e, to)
}

/// The operation at the root of `expr`, named as [`Lazy::operations`] names it.
fn expr_op(expr: &Expr) -> String {
    match expr {
        Expr::Unary { f, .. } => format!("{f:?}").to_lowercase(),
        Expr::Binary { f, .. } => format!("{f:?}").to_lowercase(),
        Expr::Cast { dtype, .. } => format!("astype({})", dtype.name()),
        Expr::Where { .. } => "where".into(),
        Expr::Concat { .. } => "concat".into(),
        Expr::Stack { .. } => "stack".into(),
        Expr::Read(_) | Expr::Const(_) => "read".into(),
    }
}

/// The values of the axes not in `axes`.
fn kept(values: &[u64], axes: &[usize]) -> Vec<u64> {
    (0..values.len())
        .filter(|i| !axes.contains(i))
        .map(|i| values[i])
        .collect()
}

/// Blocks stop growing once their values (as f64) reach this: beyond it a task's fixed
/// work (opening, markers, a state piece) is already small beside its values, while a larger
/// block only adds pages each worker faults in afresh (its buffers are reused from one task
/// to the next) and leaves fewer tasks to balance the workers.
const GROWN_BLOCK_BYTES: u64 = 32 << 20;

/// Chunks of `base` along each axis of `input` (at least one).
fn chunk_counts(input: &Lazy, base: &[u64]) -> Vec<u64> {
    input
        .shape
        .iter()
        .zip(base)
        .map(|(n, c)| n.div_ceil(*c).max(1))
        .collect()
}

/// Fan-in along each reduced axis: grown axis by axis (at most 64 chunks) while a task of
/// `mem` fits the budget, the step still has a task for each of the `workers`, and a block
/// is under [`GROWN_BLOCK_BYTES`] of values.
fn grow_fan(
    input: &Lazy,
    base: &[u64],
    axes: &[usize],
    (budget, workers): (u64, u64),
    mem: &dyn Fn(&[u64]) -> u64,
) -> Vec<u64> {
    let counts = chunk_counts(input, base);
    let kept_blocks: u64 = kept(&counts, axes).iter().product();
    let tasks = |fan: &[u64]| -> u64 {
        kept_blocks
            * axes
                .iter()
                .zip(fan)
                .map(|(&a, f)| counts[a].div_ceil(*f))
                .product::<u64>()
    };
    // Blocks grow while `workers` of them still fit the budget together: a block of the
    // whole budget runs one task at a time, and the other cores wait.
    let per_worker = budget / workers.max(1);
    let mut fan: Vec<u64> = vec![1; axes.len()];
    let block_bytes = |fan: &[u64]| -> u64 {
        8 * base
            .iter()
            .enumerate()
            .map(|(i, c)| axes.iter().position(|&a| a == i).map_or(*c, |k| c * fan[k]))
            .product::<u64>()
    };
    for k in 0..axes.len() {
        while fan[k] < counts[axes[k]] && fan[k] < 64 && block_bytes(&fan) < GROWN_BLOCK_BYTES {
            fan[k] += 1;
            if mem(&fan) > per_worker || tasks(&fan) < workers {
                fan[k] -= 1;
                break;
            }
        }
    }
    fan
}

/// Tasks a partial step keeps at least, per worker: enough that the workers stay busy to the
/// end of the step when tasks differ in speed.
const PARTIAL_TASKS_PER_WORKER: u64 = 2;

/// How many blocks of `fan` chunks (along the first reduced axis) one partial task folds:
/// as many as leave [`PARTIAL_TASKS_PER_WORKER`] tasks for each worker. Each block folded
/// into the same state instead of its own saves writing, reading and merging a state (as
/// large as the kept part of the block) per block.
fn blocks_per_task(input: &Lazy, base: &[u64], axes: &[usize], fan: &[u64], workers: u64) -> u64 {
    let (Some(&axis), Some(&fan0)) = (axes.first(), fan.first()) else {
        return 1;
    };
    let counts = chunk_counts(input, base);
    let along = counts[axis].div_ceil(fan0.max(1));
    let others: u64 = (0..counts.len())
        .filter(|&i| i != axis)
        .map(|i| {
            axes.iter()
                .position(|&a| a == i)
                .map_or(counts[i], |k| counts[i].div_ceil(fan[k].max(1)))
        })
        .product();
    let wanted = PARTIAL_TASKS_PER_WORKER * workers.max(1);
    // The most blocks a task while the step still has `wanted` tasks (at least one).
    let tasks_along = wanted.div_ceil(others.max(1)).clamp(1, along.max(1));
    along.div_ceil(tasks_along).max(1)
}

/// What a partial step does, as `plan compute` shows it.
fn partial_label(group: &[Rc<Reduction>], labels: &[String], fan: &[u64], per_task: u64) -> String {
    let r = &group[0];
    let folded = if per_task > 1 {
        format!(", {per_task} folded a task")
    } else {
        String::new()
    };
    if group.len() == 1 {
        return format!(
            "{}: {} {}(over {}) in blocks of {fan:?} chunks{folded}",
            labels[0],
            r.input.operations().join(" → "),
            r.reduce.op.name(),
            r.dims.join(", "),
        );
    }
    let each: Vec<String> = group
        .iter()
        .map(|r| {
            format!(
                "{}({})",
                r.reduce.op.name(),
                r.input.operations().join(" → ")
            )
        })
        .collect();
    format!(
        "{}: {} over {} in blocks of {fan:?} chunks{folded}, one read shared",
        labels.join(", "),
        each.join(" · "),
        r.dims.join(", "),
    )
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

/// The same reduction: one object, or one written twice (`m = air.mean("time")` and
/// `air - air.mean("time")`), which is then computed once.
fn same(a: &Rc<Reduction>, b: &Rc<Reduction>) -> bool {
    Rc::ptr_eq(a, b) || format!("{a:?}") == format!("{b:?}")
}

/// Every stored array below `lazy` (not below another one), innermost first, each once.
fn collect_stored(lazy: &Lazy, out: &mut Vec<Stored>) {
    match &lazy.node {
        Node::Const(_) | Node::Leaf { .. } => {}
        Node::Unary(_, x) | Node::Cast(x) | Node::Like(x, _) => collect_stored(x, out),
        Node::Stack { x, .. } | Node::Gather { x, .. } => collect_stored(x, out),
        Node::Binary(_, a, b) => {
            collect_stored(a, out);
            collect_stored(b, out);
        }
        Node::Where(c, a, b) => {
            collect_stored(c, out);
            collect_stored(a, out);
            collect_stored(b, out);
        }
        Node::Concat { parts, .. } => {
            for p in parts {
                collect_stored(p, out);
            }
        }
        Node::Reduce(_) | Node::Rechunk(_) => {
            if let Some(s) = stored_of(lazy) {
                collect_stored(s.input(), out);
                if !out.iter().any(|x| x.same(&s)) {
                    out.push(s);
                }
            }
        }
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
        Node::Binary(_, a, b) | Node::Like(a, b) => {
            find_chunk(a, dim, inputs, found);
            find_chunk(b, dim, inputs, found);
        }
        Node::Where(c, a, b) => {
            find_chunk(c, dim, inputs, found);
            find_chunk(a, dim, inputs, found);
            find_chunk(b, dim, inputs, found);
        }
        Node::Concat { parts, .. } => {
            for p in parts {
                find_chunk(p, dim, inputs, found);
            }
        }
        Node::Stack { dims, x } if lazy.dims.last().is_some_and(|z| z == dim) => {
            // Whole rows of the stacked dimensions: a block never cuts a row.
            let mut first = None;
            find_chunk(x, &dims[0], inputs, &mut first);
            let row: u64 = dims[1..].iter().filter_map(|d| x.size(d)).product();
            *found = Some(first.unwrap_or_else(|| x.size(&dims[0]).unwrap_or(1)) * row);
        }
        Node::Stack { x, .. } => find_chunk(x, dim, inputs, found),
        Node::Reduce(r) => find_chunk(&r.input, dim, inputs, found),
        Node::Rechunk(r) => match r.chunks.get(dim) {
            Some(&c) => *found = Some(c),
            None => find_chunk(&r.input, dim, inputs, found),
        },
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

/// The stored bytes of one chunk of each distinct read (decoded straight into the read's
/// box from there).
fn chunk_bytes(reads: &[&Read], inputs: &[Endpoint]) -> u64 {
    reads
        .iter()
        .map(|r| {
            inputs
                .get(r.input)
                .map_or(0, |e| e.grid().max_chunk_elements() * r.dtype.size() as u64)
        })
        .sum()
}

/// What a task evaluating `expr` over a block of shape `block` holds at its peak
/// ([`group_mem`]), the output chunk encoded included.
fn map_mem(expr: &Expr, inputs: &[Endpoint], block: &[u64], out: DType) -> u64 {
    group_mem(std::slice::from_ref(expr), inputs, (block, 0), Some(out))
}

/// Elements of the box of source values a task holds for `read` over a block of shape
/// `block`: the block's extent along each axis the read maps onto the domain (times its step;
/// an indexed axis, the source's whole axis at most), one index along the others.
fn held_elems(read: &Read, inputs: &[Endpoint], block: &[u64]) -> u64 {
    let source = inputs.get(read.input).map(|e| e.grid().shape().to_vec());
    read.axes
        .iter()
        .enumerate()
        .map(|(k, a)| {
            let whole = source
                .as_ref()
                .and_then(|s| s.get(k).copied())
                .unwrap_or(u64::MAX);
            match (a.to, &a.index) {
                (None, _) => 1,
                (Some(_), Some(_)) => whole,
                (Some(d), None) => {
                    let n = block.get(d).copied().unwrap_or(1);
                    (n.saturating_sub(1) * a.step.unsigned_abs() + 1).min(whole)
                }
            }
        })
        .product()
}

/// What a task evaluating `exprs` one after the other over a block of shape `block` (cut
/// into tiles along `axis`) holds at its peak: every distinct read's box of source values
/// (kept for the whole task, counted all at once), one decoded chunk of each read, the
/// largest expression's intermediate values — a tile per node where it is evaluated tile by
/// tile, else a block per node and per read — and the output chunk encoded (a map); the
/// reduction states are the caller's.
fn group_mem(
    exprs: &[Expr],
    inputs: &[Endpoint],
    (block, axis): (&[u64], usize),
    out: Option<DType>,
) -> u64 {
    let elems: u64 = block.iter().product();
    let tile = crate::kernel::tile_elements(block, axis);
    let mut all = Vec::new();
    for e in exprs {
        e.reads(&mut all);
    }
    let mut distinct: Vec<&Read> = Vec::new();
    for r in &all {
        if !distinct.contains(r) {
            distinct.push(r);
        }
    }
    let held: u64 = distinct
        .iter()
        .map(|r| 8 * held_elems(r, inputs, block))
        .sum();
    let largest = exprs
        .iter()
        .map(|e| {
            if crate::kernel::tileable(e) {
                8 * tile * e.buffers()
            } else {
                let mut reads = Vec::new();
                e.reads(&mut reads);
                8 * elems * (e.buffers() + reads.len() as u64)
            }
        })
        .max()
        .unwrap_or(0);
    // A map's output chunk is encoded tile by tile into its stored bytes.
    held + largest + chunk_bytes(&distinct, inputs) + out.map_or(0, |t| elems * t.size() as u64)
}

/// Bytes a map of `expr` over a domain of `shape` reads: each distinct read over the domain
/// axes it spans (at most the whole domain).
fn expr_bytes(expr: &Expr, shape: &[u64]) -> u64 {
    let total: u64 = shape.iter().product();
    let mut reads = Vec::new();
    expr.reads(&mut reads);
    let mut distinct: Vec<&Read> = Vec::new();
    for r in reads {
        if !distinct.contains(&r) {
            distinct.push(r);
        }
    }
    distinct
        .iter()
        .map(|r| {
            let mut axes: Vec<usize> = r.axes.iter().filter_map(|a| a.to).collect();
            axes.sort_unstable();
            axes.dedup();
            let elems: u64 = axes
                .iter()
                .map(|&d| shape.get(d).copied().unwrap_or(1))
                .product();
            elems.min(total) * r.dtype.size() as u64
        })
        .sum()
}

/// Bytes the arrays below `lazies` hold, each source (as selected) and each stored array
/// counted once: what a stage evaluating them together reads.
fn read_bytes<'l>(lazies: impl Iterator<Item = &'l Lazy>, inputs: &Inputs) -> u64 {
    fn walk(lazy: &Lazy, inputs: &Inputs, seen: &mut Vec<String>) -> u64 {
        let mut once = |key: String, bytes: u64| -> u64 {
            if seen.contains(&key) {
                0
            } else {
                seen.push(key);
                bytes
            }
        };
        match &lazy.node {
            Node::Const(_) => 0,
            Node::Leaf { source, picks } => {
                let elems: u64 = picks
                    .iter()
                    .map(|p| match p {
                        Pick::Keep { len, .. } => *len,
                        Pick::Fixed(_) => 1,
                    })
                    .product();
                once(
                    format!("{source}{picks:?}"),
                    elems * inputs.sources[*source].stored.size() as u64,
                )
            }
            Node::Reduce(_) | Node::Rechunk(_) => once(
                format!("{:?}", lazy.node),
                lazy.shape.iter().product::<u64>() * lazy.dtype.size() as u64,
            ),
            Node::Unary(_, x) | Node::Cast(x) | Node::Like(x, _) => walk(x, inputs, seen),
            Node::Stack { x, .. } | Node::Gather { x, .. } => walk(x, inputs, seen),
            Node::Binary(_, a, b) => walk(a, inputs, seen) + walk(b, inputs, seen),
            Node::Where(c, a, b) => {
                walk(c, inputs, seen) + walk(a, inputs, seen) + walk(b, inputs, seen)
            }
            Node::Concat { parts, .. } => parts.iter().map(|p| walk(p, inputs, seen)).sum(),
        }
    }
    let mut seen = Vec::new();
    lazies.map(|l| walk(l, inputs, &mut seen)).sum()
}

#[cfg(test)]
pub(crate) mod tests {
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
            unpack: None,
        });
        inputs.names.insert("air".into(), (0, BTreeMap::new()));
        inputs
    }

    fn planned(script: &str, task_budget: u64) -> Result<ComputePlan, Box<dyn std::error::Error>> {
        planned_over(&inputs(), script, task_budget, &|_, _| {
            Err("no reads".into())
        })
    }

    /// The plan of `script` over `inputs` to a local target with two workers; `read` gives
    /// the values a check reads (coordinates).
    pub(crate) fn planned_over(
        inputs: &Inputs,
        script: &str,
        task_budget: u64,
        read: &crate::check::Reader<'_>,
    ) -> Result<ComputePlan, Box<dyn std::error::Error>> {
        let outputs = check(&parse(script)?, inputs, read)?;
        let target = Target {
            write_url: "/data/out.zarr".into(),
            temp_url: "/data/tmp".into(),
            zarr_format: 3,
            chunks: BTreeMap::new(),
            codec: None,
            task_budget,
            workers: 2,
        };
        Ok(plan(&outputs, inputs, &target)?)
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
    fn partial_blocks_leave_room_for_every_worker() -> TestResult {
        // Blocks that fill the whole budget run one task at a time: the other worker idles
        // (the quadratic-means benchmark ran on one core). Beyond one chunk per block, two
        // blocks (the planner's two workers) fit the budget together.
        let chunk = 10 * 5 * 20 * 8;
        for budget in (4..60).map(|k| k * chunk) {
            let p = planned("m = air.mean('time')", budget)?;
            let partial = &p.stages[0];
            assert_eq!(kernel(partial), Some("partial"));
            let one_chunk_blocks = partial.label.contains("in blocks of [1] chunks");
            assert!(
                one_chunk_blocks || 2 * partial.projected_mem <= budget,
                "budget {budget}: {} tasks of {} bytes",
                partial.tasks(),
                partial.projected_mem
            );
        }
        Ok(())
    }

    #[test]
    fn projections_count_a_tile_per_operation_not_a_block() -> TestResult {
        // One time chunk is 10 × 200 × 400 values (6.4 MB as f64). Tasks evaluate tile by
        // tile along time, so each of the nine nodes holds one time index (80 000 values)
        // at a time, not a block: the read's block dominates, and blocks can grow.
        let mut inputs = inputs();
        inputs.sources[0].shape = vec![100, 200, 400];
        inputs.sources[0].chunks = vec![10, 200, 400];
        let block = 8 * 10 * 200 * 400;
        let none = |_: &Source, _: &Pick| -> Result<Vec<f64>, String> { Err("no reads".into()) };
        let script = "m = (sqrt(abs(air * 2 - 1)) + air * air).mean('time')";
        let p = planned_over(&inputs, script, 16 * block, &none)?;
        let kinds: Vec<_> = p.stages.iter().map(kernel).collect();
        assert_eq!(kinds[0], Some("partial"), "{kinds:?}");
        assert!(!kinds.contains(&Some("map")), "split: {kinds:?}");
        let partial = &p.stages[0];
        assert!(
            partial.tasks() <= 5,
            "{} tasks of {} bytes",
            partial.tasks(),
            partial.projected_mem
        );
        let p = planned_over(
            &inputs,
            "a = sqrt(abs(air * 2 - 1)) + air * air",
            1 << 30,
            &none,
        )?;
        assert!(
            p.stages[0].projected_mem < 4 * block,
            "{} bytes for blocks of {block}",
            p.stages[0].projected_mem
        );
        Ok(())
    }

    /// `m = air.mean('time')` over `times` steps in time chunks of 10 × 200 × 400 (6.4 MB
    /// as f64), with a budget that never limits the blocks.
    fn time_mean_of_big_chunks(times: u64) -> Result<ComputePlan, Box<dyn std::error::Error>> {
        let mut inputs = inputs();
        inputs.sources[0].shape = vec![times, 200, 400];
        inputs.sources[0].chunks = vec![10, 200, 400];
        let none = |_: &Source, _: &Pick| -> Result<Vec<f64>, String> { Err("no reads".into()) };
        planned_over(&inputs, "m = air.mean('time')", 1 << 34, &none)
    }

    #[test]
    fn blocks_stop_growing_at_a_few_tens_of_megabytes() -> TestResult {
        // Chunks of 6.4 MB (as f64) and a budget with room for far more: blocks grow past
        // 32 MB only by their last chunk (6 chunks), not to half the time axis (20 chunks, a
        // task per worker), which would fault each block's pages in afresh. A task then folds
        // two such blocks into one state, which leaves the two workers four tasks.
        let p = time_mean_of_big_chunks(400)?;
        assert_eq!(kernel(&p.stages[0]), Some("partial"));
        let label = &p.stages[0].label;
        assert!(
            label.contains("in blocks of [6] chunks, 2 folded a task"),
            "{label}"
        );
        assert_eq!(p.stages[0].tasks(), 4, "{label}");
        Ok(())
    }

    #[test]
    fn folded_blocks_write_one_state_per_task() -> TestResult {
        // 100 time chunks of 6.4 MB: blocks stop at 6 chunks (17 of them); folded five a task
        // (two tasks for each of the two workers), the partial step writes 4 states instead
        // of 17, and so its combine reads 4.
        let p = time_mean_of_big_chunks(1000)?;
        let partial = &p.stages[0];
        assert!(
            partial.label.contains("5 folded a task"),
            "{}",
            partial.label
        );
        assert_eq!(partial.tasks(), 4);
        let state = 2 * 8 * 200 * 400;
        assert_eq!(partial.bytes_written, 4 * state);
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

    fn partials(p: &ComputePlan) -> Vec<&Stage> {
        p.stages
            .iter()
            .filter(|s| kernel(s) == Some("partial"))
            .collect()
    }

    #[test]
    fn reductions_of_one_input_share_one_read() -> TestResult {
        let one = planned("m = air.mean('time')", 1 << 30)?;
        let three = planned(
            "m = air.mean('time')\ns = air.std('time')\nx = air.max('time')",
            1 << 30,
        )?;
        let (one, three) = (partials(&one), partials(&three));
        assert_eq!(three.len(), 1, "one partial step for the three");
        // One pass over air (100 × 10 × 20 float32), as for one reduction alone.
        assert_eq!(three[0].bytes_read, 100 * 10 * 20 * 4);
        assert_eq!(three[0].bytes_read, one[0].bytes_read);
        let StageKind::Compute(c) = &three[0].kind else {
            return Err("not a compute stage".into());
        };
        assert_eq!(c.outputs.len(), 3);
        assert_eq!(c.inputs.len(), 1);
        // Quadratic means: air² and air·2 read air once.
        let p = planned(
            "a = (air ** 2).mean('time')\nb = (air * 2).mean('time')",
            1 << 30,
        )?;
        assert_eq!(partials(&p).len(), 1);
        assert_eq!(partials(&p)[0].bytes_read, 100 * 10 * 20 * 4);
        Ok(())
    }

    #[test]
    fn maps_of_one_input_share_one_read() -> TestResult {
        let p = planned("a = air * 2\nb = sqrt(abs(air)) + 1", 1 << 30)?;
        let maps: Vec<&Stage> = p
            .stages
            .iter()
            .filter(|s| s.name.ends_with("-map"))
            .collect();
        assert_eq!(maps.len(), 1, "one map stage for both");
        assert_eq!(kernel(maps[0]), Some("maps"));
        assert!(
            maps[0].label.contains("one read shared"),
            "{}",
            maps[0].label
        );
        // One pass over air (100 × 10 × 20 float32).
        assert_eq!(maps[0].bytes_read, 100 * 10 * 20 * 4);
        let StageKind::Compute(c) = &maps[0].kind else {
            return Err("not a compute stage".into());
        };
        assert_eq!((c.inputs.len(), c.outputs.len()), (1, 2));
        // Outputs of different chunks do not share a stage; nor do those that do not fit.
        let p = planned("a = air * 2\nb = air.isel(time=0) + 1", 1 << 30)?;
        assert_eq!(
            p.stages.iter().filter(|s| kernel(s) == Some("map")).count(),
            2
        );
        let chunk = 10 * 5 * 20 * 8;
        // Each alone holds its read's block, two tiles (here the block) and half a chunk
        // each of stored input and encoded output (float32): 4 chunks of f64; together
        // they hold both reads' blocks and stored chunks: 5.5.
        let script = "a = air * 2\nb = air.isel(time=slice(None, None, -1)) + 1";
        let p = planned(script, 6 * chunk)?;
        assert_eq!(
            p.stages
                .iter()
                .filter(|s| kernel(s) == Some("maps"))
                .count(),
            1
        );
        let p = planned(script, 5 * chunk)?;
        assert_eq!(
            p.stages.iter().filter(|s| kernel(s) == Some("map")).count(),
            2
        );
        Ok(())
    }

    #[test]
    fn a_chain_that_does_not_fit_is_split_into_stages() -> TestResult {
        let script = "a = ((air + 1) * (air - 1)) * ((air + 2) * (air - 2))";
        let fused = planned(script, 1 << 30)?;
        assert_eq!(fused.stages.len(), 1);
        assert!(fused.splits.is_empty() && fused.cleanup.is_empty());
        // 80 kB a task: the fused task (about 104 kB) does not fit, nor with one product
        // split off (84 kB); each product does (52-56 kB).
        let p = planned(script, 80_000)?;
        assert_eq!(p.splits.len(), 2, "{:?}", p.splits);
        assert!(p.stages.iter().all(|s| s.projected_mem <= 80_000));
        // Each stage reads one pass of what it names: air (float32) or an intermediate
        // (float32 too), twice for the last, which multiplies the two intermediates.
        let reads: Vec<u64> = p.stages.iter().map(|s| s.bytes_read).collect();
        assert_eq!(reads, [80_000, 80_000, 160_000]);
        // Each intermediate holds the result of an operation the unfused plan runs as a stage.
        for (_, op) in &p.splits {
            assert!(
                p.unfused[0].1.contains(op),
                "{op} not in {:?}",
                p.unfused[0].1
            );
        }
        assert_eq!(p.cleanup.len(), 2);
        // Not even one operation fits: refused, naming the assignment.
        let e = planned(script, 30_000).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("a = …: one task needs")));
        Ok(())
    }

    #[test]
    fn rechunk_goes_through_the_rechunk_planner() -> TestResult {
        let p = planned("r = air.rechunk(time=-1)", 1 << 30)?;
        let copies: Vec<_> = p
            .stages
            .iter()
            .filter(|s| matches!(s.kind, StageKind::Copy(_)))
            .collect();
        assert!(!copies.is_empty());
        assert_eq!(p.specs[0].chunks, [100, 5, 20]);
        // Inside an expression: the sum reads the rechunked intermediate, whole along time.
        let p = planned("m = (air.rechunk(time=-1) * 2).sum('time')", 1 << 30)?;
        let sum = partials(&p);
        let StageKind::Compute(c) = &sum[0].kind else {
            return Err("not a compute stage".into());
        };
        assert!(
            matches!(&c.inputs[0], Endpoint::Pieces { grid, .. } if grid.axes()[0].chunk(0) == (0..100))
        );
        Ok(())
    }

    #[test]
    fn concat_and_stack_shapes() -> TestResult {
        let p = planned(
            "c = concat([air.isel(time=slice(0, 40)), air.isel(time=slice(40, None))], dim='time')\nn = concat([air, air * 2], dim='run')\nz = air.stack(cell=['lat', 'lon'])",
            1 << 30,
        )?;
        let shapes: Vec<&[u64]> = p.specs.iter().map(|s| s.shape.as_slice()).collect();
        assert_eq!(
            shapes[..3],
            [&[100, 10, 20][..], &[2, 100, 10, 20], &[100, 200]]
        );
        // The stacked dimension is cut at whole rows of the last stacked one.
        assert_eq!(p.specs[2].chunks, [10, 100]);
        Ok(())
    }
}
