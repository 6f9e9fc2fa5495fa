//! Plans of CF-time grouping. The group of every time index is known from the coordinate
//! before anything runs, so a reduction per group is a tree over time blocks: a partial
//! step folds each block (`fan` input chunks along time, grown from the budget) into the
//! states of the groups it meets; combine rounds merge consecutive pieces while an output
//! block would meet more than [`FINISH_FAN`] of them; a finish step gathers, per output
//! block of groups, the pieces that meet them. Group-wise arithmetic is a read through an
//! index ([`Node::Gather`]), fused like any other read.

use std::rc::Rc;

use chunkmill_plan::{ComputeStage, Endpoint, Stage, StageKind};
use chunkmill_store::zarr::{ArraySpec, Compressor, Encoding};
use chunkmill_store::DataType;
use serde_json::json;

use super::{grid, group_mem, read_bytes, safe, PlanError, Planner, Stored};
use crate::dtype::DType;
use crate::kernel::{Expr, GroupStep, Kernel, NO_INDEX};
use crate::model::{Labels, Lazy, Reduction};
use crate::time::{Grouping, LabelValues, NO_GROUP};

/// Pieces one finish task merges at most before combine rounds are added.
const FINISH_FAN: u64 = 32;

/// The smallest output block the finish step is cut into so that every worker has a task:
/// below it, a chunk's file and its per-task work cost more than the parallel finish saves.
/// Smaller blocks also let a group-wise operation (anomalies) read and decompress only the
/// groups each of its blocks meets, not every group for every block.
const FINISH_BLOCK_MIN_BYTES: u64 = 1 << 20;

/// The most groups that one span of `width` indices meets.
fn max_groups(groups: &[u32], width: u64) -> u64 {
    let width = width.max(1) as usize;
    groups
        .chunks(width)
        .map(|c| {
            let mut s: Vec<u32> = c.iter().copied().filter(|&g| g != NO_GROUP).collect();
            s.sort_unstable();
            s.dedup();
            s.len() as u64
        })
        .max()
        .unwrap_or(0)
}

/// The most pieces of `width` indices that meet one output block of `chunk` groups.
fn max_meets(groups: &[u32], width: u64, chunk: u64, n_groups: u64) -> u64 {
    let mut meets = vec![0u64; n_groups.div_ceil(chunk.max(1)) as usize];
    for c in groups.chunks(width.max(1) as usize) {
        let mut blocks: Vec<u64> = c
            .iter()
            .filter(|&&g| g != NO_GROUP)
            .map(|&g| u64::from(g) / chunk.max(1))
            .collect();
        blocks.sort_unstable();
        blocks.dedup();
        for b in blocks {
            meets[b as usize] += 1;
        }
    }
    meets.into_iter().max().unwrap_or(0)
}

/// What every stage of one reduction per group shares.
struct Tree<'a> {
    r: &'a Rc<Reduction>,
    g: &'a Grouping,
    label: &'a str,
    what: String,
    axis: usize,
    /// The input's chunks (blocks along the kept axes).
    base: Vec<u64>,
    kept_elems: u64,
    /// Indices of the grouped axis per partial block.
    block: u64,
    out_dtype: DType,
}

impl Tree<'_> {
    /// Bytes of the states of `n_groups` groups.
    fn state_bytes(&self, n_groups: u64) -> u64 {
        8 * self.r.reduce.fields() as u64 * n_groups * self.kept_elems
    }

    /// Bytes of the states of the most groups a piece of `span` blocks holds.
    fn piece_bytes(&self, span: u64) -> u64 {
        self.state_bytes(max_groups(&self.g.groups, span * self.block))
    }

    fn combine_mem(&self, span: u64, fan: u64) -> u64 {
        self.piece_bytes(span * fan) + 2 * self.piece_bytes(span)
    }

    fn finish_mem(&self, chunk: u64, span: u64) -> u64 {
        self.state_bytes(chunk)
            + self.piece_bytes(span)
            + chunk * self.kept_elems * (8 + self.out_dtype.size() as u64)
    }

    /// The fan-in of each combine round for output blocks of `chunk` groups: while an
    /// output block meets too many pieces, as many consecutive pieces per task as fit.
    fn rounds(&self, chunk: u64, budget: u64) -> Vec<u64> {
        let n_groups = self.g.len() as u64;
        let (mut span, mut fans) = (1u64, Vec::new());
        while max_meets(&self.g.groups, span * self.block, chunk, n_groups) > FINISH_FAN {
            let mut f = FINISH_FAN;
            while f > 2 && self.combine_mem(span, f) > budget {
                f -= 1;
            }
            fans.push(f);
            span *= f;
        }
        fans
    }

    /// Output blocks of groups: asked for, else every group (groupby) or as many bins as
    /// an input chunk has indices (resample), cut so that each of the `workers` has a finish
    /// task while a block stays over [`FINISH_BLOCK_MIN_BYTES`]; halved until a finish task
    /// fits. With the combine rounds they need.
    fn finish_blocks(&self, asked: Option<u64>, (budget, workers): (u64, u64)) -> (u64, Vec<u64>) {
        let g = self.g;
        let n_groups = g.len() as u64;
        let mut chunk = match asked {
            Some(c) => c,
            None if g.out_dim != g.dim => n_groups,
            None => self.base[self.axis],
        }
        .clamp(1, n_groups.max(1));
        if asked.is_none() {
            let shared = n_groups.div_ceil(workers.max(1)).max(1);
            let bytes = shared * self.kept_elems * self.out_dtype.size() as u64;
            if shared < chunk && bytes >= FINISH_BLOCK_MIN_BYTES {
                chunk = shared;
            }
        }
        let mut fans = self.rounds(chunk, budget);
        while chunk > 1 && self.finish_mem(chunk, fans.iter().product()) > budget {
            chunk = chunk.div_ceil(2);
            fans = self.rounds(chunk, budget);
        }
        (chunk, fans)
    }

    /// The grid of `n` pieces along the grouped axis (the input's blocks along the others).
    fn piece_grid(&self, n: u64) -> Result<chunkmill_grid::Grid, PlanError> {
        let mut shape = self.r.input.shape.clone();
        shape[self.axis] = n;
        let mut chunks = self.base.clone();
        chunks[self.axis] = 1;
        grid(&shape, &chunks)
    }

    fn name(&self) -> String {
        format!(
            "{}(by {}.{})",
            self.r.reduce.op.name(),
            self.g.dim,
            self.g.out_dim
        )
    }
}

impl Planner<'_> {
    /// The stages of reduction `r` per group of `g`.
    pub(super) fn group_reduction(
        &mut self,
        r: &Rc<Reduction>,
        g: &Grouping,
        out: Option<(Endpoint, DType)>,
        label: &str,
    ) -> Result<(), PlanError> {
        let input = &r.input;
        let axis = input
            .dims
            .iter()
            .position(|d| *d == g.dim)
            .ok_or_else(|| PlanError::Invalid(format!("no dimension '{}' to group", g.dim)))?;
        let base: Vec<u64> = input
            .dims
            .iter()
            .zip(&input.shape)
            .map(|(d, &n)| self.chunk(input, d, n))
            .collect();
        let mut inputs = Vec::new();
        let expr = self.lower(input, &input.dims, &mut inputs)?;
        let kept_elems: u64 = base
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != axis)
            .map(|(_, c)| c)
            .product();
        let mut tree = Tree {
            r,
            g,
            label,
            what: format!(
                "{label} = {}(…) by {}.{}",
                r.reduce.op.name(),
                g.dim,
                g.out_dim
            ),
            axis,
            block: base[axis],
            base,
            kept_elems,
            out_dtype: out.as_ref().map_or(r.dtype, |o| o.1),
        };
        // Partial step: blocks of `fan` chunks along the grouped axis, grown while they fit,
        // `per_task` of them folded one after another into the states of a task.
        let len = input.shape[axis];
        let partial_mem = |tree: &Tree<'_>, fan: u64, per_task: u64| {
            let mut shape = tree.base.clone();
            shape[axis] = (shape[axis] * fan).min(len.max(1));
            group_mem(std::slice::from_ref(&expr), &inputs, (&shape, axis), None)
                + 2 * tree.state_bytes(max_groups(&g.groups, tree.base[axis] * fan * per_task))
        };
        self.fits(&tree.what, partial_mem(&tree, 1, 1))?;
        // As a reduction's blocks (`grow_fan`): grown only while every worker's block fits
        // the budget together, each worker still has one, and a block is small enough that
        // a larger one would save per-task work.
        let workers = self.target.workers.max(1);
        let mut fan = 1;
        while fan < len.div_ceil(tree.base[axis]).min(64)
            && partial_mem(&tree, fan + 1, 1) <= self.target.task_budget / workers
            && len.div_ceil(tree.base[axis] * (fan + 1)) >= workers
            && 8 * kept_elems * tree.base[axis] * fan < super::GROWN_BLOCK_BYTES
        {
            fan += 1;
        }
        // As a reduction's partial tasks: each block folded into the task's states instead of
        // its own saves writing, reading and merging the states of the groups it meets. The
        // states of the groups a task meets grow with it: fewer blocks a task when they would
        // not fit beside the block each worker holds.
        let mut per_task =
            super::blocks_per_task(input, &tree.base, &[axis], &[fan], self.target.workers);
        while per_task > 1 && partial_mem(&tree, fan, per_task) > self.target.task_budget / workers
        {
            per_task -= 1;
        }
        let need = partial_mem(&tree, fan, per_task);
        let sub = tree.base[axis] * fan;
        tree.block = (sub * per_task).min(len.max(1));
        let sub = if per_task > 1 { sub } else { 0 };
        let folded = if per_task > 1 {
            format!(", {per_task} folded a task")
        } else {
            String::new()
        };
        let n = len.div_ceil(tree.block).max(1);
        let first = self.pieces(&tree, 0, n)?;
        let mut block_chunks = tree.base.clone();
        block_chunks[axis] = tree.block;
        let stage_n = self.stages.len();
        self.stages.push(Stage {
            name: format!("{stage_n:02}-{}-group-partial", safe(label)),
            label: format!(
                "{label}: {} {} in blocks of {fan} chunks{folded}",
                input.operations().join(" → "),
                tree.name()
            ),
            projected_mem: need,
            bytes_read: read_bytes(std::iter::once(input), self.inputs),
            bytes_written: n * tree.piece_bytes(1),
            kind: StageKind::Compute(ComputeStage {
                inputs,
                outputs: vec![first.clone()],
                blocks: grid(&input.shape, &block_chunks)?,
                kernel: kernel(GroupStep::Partial {
                    expr,
                    reduce: r.reduce,
                    axis,
                    groups: g.groups.clone(),
                    block: tree.block,
                    sub,
                })?,
            }),
        });
        self.group_finish(&tree, out.map(|o| o.0), first, n)
    }

    /// Intermediate pieces of step `step` of `tree`, `n` along the grouped axis.
    fn pieces(&mut self, tree: &Tree<'_>, step: usize, n: u64) -> Result<Endpoint, PlanError> {
        let prefix = format!("c{}-{}-g{step}", self.stages.len(), safe(tree.label));
        Ok(self.temp_pieces(prefix, tree.piece_grid(n)?))
    }

    /// The combine rounds and the finish step of `tree` after its partial step wrote `n`
    /// pieces to `current`; the result goes to `out` or intermediate pieces.
    fn group_finish(
        &mut self,
        tree: &Tree<'_>,
        out: Option<Endpoint>,
        mut current: Endpoint,
        mut n: u64,
    ) -> Result<(), PlanError> {
        let (r, g, label, axis, block) = (tree.r, tree.g, tree.label, tree.axis, tree.block);
        let asked = self.target.chunks.get(&g.out_dim).copied();
        let (group_chunk, fans) =
            tree.finish_blocks(asked, (self.target.task_budget, self.target.workers));
        let mut out_shape = r.input.shape.clone();
        out_shape[axis] = g.len() as u64;
        let mut out_chunks = tree.base.clone();
        out_chunks[axis] = group_chunk;
        let out_grid = grid(&out_shape, &out_chunks)?;
        let final_ep = match out {
            Some(e) => self.chunked_as(e, &out_grid),
            None => {
                let prefix = format!("c{}-{}", self.stages.len(), safe(label));
                self.temp_pieces(prefix, out_grid.clone())
            }
        };
        let mut span = 1u64;
        for (round, &fan) in fans.iter().enumerate() {
            let step = round + 1;
            let need = tree.combine_mem(span, fan);
            self.fits(&tree.what, need)?;
            let next = n.div_ceil(fan);
            let output = self.pieces(tree, step, next)?;
            let stage_n = self.stages.len();
            self.stages.push(Stage {
                name: format!("{stage_n:02}-{}-group-combine{step}", safe(label)),
                label: format!(
                    "{label}: merge {} states, {fan} pieces per task",
                    tree.name()
                ),
                projected_mem: need,
                bytes_read: n * tree.piece_bytes(span),
                bytes_written: next * tree.piece_bytes(span * fan),
                kind: StageKind::Compute(ComputeStage {
                    inputs: vec![current.clone()],
                    outputs: vec![output.clone()],
                    blocks: tree.piece_grid(next)?,
                    kernel: kernel(GroupStep::Combine {
                        reduce: r.reduce,
                        axis,
                        groups: g.groups.clone(),
                        block,
                        span,
                        fan,
                    })?,
                }),
            });
            current = output;
            span *= fan;
            n = next;
        }
        let need = tree.finish_mem(group_chunk, span);
        self.fits(&tree.what, need)?;
        let stage_n = self.stages.len();
        self.stages.push(Stage {
            name: format!("{stage_n:02}-{}-group-finish", safe(label)),
            label: format!(
                "{label}: finish {} in blocks of {group_chunk} groups",
                tree.name()
            ),
            projected_mem: need,
            bytes_read: n * tree.piece_bytes(span),
            bytes_written: out_shape.iter().product::<u64>() * tree.out_dtype.size() as u64,
            kind: StageKind::Compute(ComputeStage {
                inputs: vec![current],
                outputs: vec![final_ep.clone()],
                blocks: out_grid,
                kernel: kernel(GroupStep::Finish {
                    reduce: r.reduce,
                    axis,
                    groups: g.groups.clone(),
                    block,
                    span,
                    dtype: tree.out_dtype,
                })?,
            }),
        });
        self.done
            .push((Stored::Reduce(r.clone()), final_ep, tree.out_dtype));
        Ok(())
    }

    /// Output `e` in chunks of the finish step's blocks `blocks` (its metadata, and every
    /// later reader of it, too): a finish task writes one chunk, and its blocks are chosen
    /// here, after the output was named.
    fn chunked_as(&mut self, e: Endpoint, blocks: &chunkmill_grid::Grid) -> Endpoint {
        let Endpoint::Zarr { url, path, grid } = e else {
            return e;
        };
        if grid == *blocks {
            return Endpoint::Zarr { url, path, grid };
        }
        let chunks: Vec<u64> = blocks
            .axes()
            .iter()
            .map(|a| a.chunk(0).end.max(1))
            .collect();
        for spec in self.specs.iter_mut().filter(|s| s.path == path) {
            spec.chunks.clone_from(&chunks);
        }
        let chunked = Endpoint::Zarr {
            url,
            path: path.clone(),
            grid: blocks.clone(),
        };
        for named in &mut self.named {
            if matches!(&named.2, Endpoint::Zarr { path: p, .. } if *p == path) {
                named.2 = chunked.clone();
            }
        }
        chunked
    }

    /// A computed coordinate (group labels, resample bins) written as the array `name`.
    pub(super) fn labels_output(
        &mut self,
        name: &str,
        dim: &str,
        labels: &Labels,
    ) -> Result<(), PlanError> {
        let len = labels.values.len() as u64;
        let chunk = self
            .target
            .chunks
            .get(dim)
            .copied()
            .unwrap_or(len)
            .clamp(1, len.max(1));
        let (dtype, fill) = match &labels.values {
            LabelValues::Numbers { dtype, .. } => (dtype.data_type(), json!(0)),
            LabelValues::Text(t) => (
                DataType::Unicode(
                    t.iter()
                        .map(|s| s.chars().count())
                        .max()
                        .unwrap_or(1)
                        .max(1),
                ),
                json!(""),
            ),
        };
        let fill = match &labels.values {
            LabelValues::Numbers { dtype, .. } if dtype.is_float() => json!("NaN"),
            _ => fill,
        };
        self.specs.push(ArraySpec {
            path: name.to_string(),
            zarr_format: self.target.zarr_format,
            shape: vec![len],
            dtype,
            chunks: vec![chunk],
            inner_chunks: None,
            fill_value: fill,
            encoding: Encoding::Compressor(
                self.target.codec.clone().unwrap_or(Compressor::Zstd(1)),
            ),
            dimension_names: Some(vec![Some(dim.to_string())]),
            attributes: labels.attrs.clone(),
        });
        let blocks = grid(&[len], &[chunk])?;
        let stage_n = self.stages.len();
        self.stages.push(Stage {
            name: format!("{stage_n:02}-{}-labels", safe(name)),
            label: format!("{name}: {len} labels"),
            projected_mem: 16 * len,
            bytes_read: 0,
            bytes_written: 8 * len,
            kind: StageKind::Compute(ComputeStage {
                inputs: Vec::new(),
                outputs: vec![Endpoint::Zarr {
                    url: self.target.write_url.clone(),
                    path: name.to_string(),
                    grid: blocks.clone(),
                }],
                blocks,
                kernel: kernel(GroupStep::Labels {
                    values: labels.values.clone(),
                })?,
            }),
        });
        Ok(())
    }

    /// `x` read along its dimension `dim` through `index`, into domain dimension `into` (or
    /// fixed at `index[0]`): `x` is lowered against the domain with `dim` in place of `into`
    /// (or as an extra last axis), then every read along that axis goes through the index.
    pub(super) fn lower_gather(
        &self,
        x: &Lazy,
        dim: &str,
        into: Option<&str>,
        index: &[u64],
        domain: &[String],
        inputs: &mut Vec<Endpoint>,
    ) -> Result<Expr, PlanError> {
        let mut renamed: Vec<String> = domain.to_vec();
        let at = match into.and_then(|d| domain.iter().position(|x| x == d)) {
            Some(p) => {
                renamed[p] = dim.to_string();
                p
            }
            None => {
                renamed.push(dim.to_string());
                domain.len()
            }
        };
        let mut expr = self.lower(x, &renamed, inputs)?;
        let fixed = into.is_none();
        expr.reads_mut(&mut |read| {
            for a in &mut read.axes {
                if a.to != Some(at) {
                    continue;
                }
                let through: Vec<u64> = match &a.index {
                    Some(inner) => index
                        .iter()
                        .map(|&i| {
                            if i == NO_INDEX {
                                NO_INDEX
                            } else {
                                inner.get(i as usize).copied().unwrap_or(NO_INDEX)
                            }
                        })
                        .collect(),
                    None => index.to_vec(),
                };
                if fixed {
                    let i = through.first().copied().unwrap_or(0);
                    a.start = (a.start as i64 + a.step * i as i64) as u64;
                    a.to = None;
                    a.index = None;
                } else {
                    a.index = Some(through);
                }
            }
        });
        Ok(expr)
    }
}

fn kernel(step: GroupStep) -> Result<serde_json::Value, PlanError> {
    serde_json::to_value(Kernel::Group { step }).map_err(|e| PlanError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::*;
    use crate::check::Inputs;
    use crate::model::Source;
    use crate::planner::ComputePlan;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// `air(time 730, lat 4)` in chunks of (10, 4), daily in 360_day from 2001-01-01.
    fn inputs() -> Inputs {
        inputs_of(&[730, 4], &[10, 4], &["time", "lat"])
    }

    /// `air` of `shape` in `chunks`, time first, daily in 360_day from 2001-01-01.
    fn inputs_of(shape: &[u64], chunks: &[u64], dims: &[&str]) -> Inputs {
        let source =
            |path: &str, shape: Vec<u64>, chunks: Vec<u64>, dims: &[&str], attrs: Value| Source {
                url: "/data/in.zarr".into(),
                path: path.into(),
                dtype: DType::Float64,
                stored: DType::Float64,
                shape,
                chunks,
                dims: dims.iter().map(|d| (*d).to_string()).collect(),
                attrs: attrs.as_object().cloned().unwrap_or_default(),
                missing: vec![],
                unpack: None,
            };
        let mut inputs = Inputs::default();
        inputs.sources.push(source(
            "air",
            shape.to_vec(),
            chunks.to_vec(),
            dims,
            json!({}),
        ));
        inputs.sources.push(source(
            "time",
            vec![shape[0]],
            vec![shape[0]],
            &["time"],
            json!({"units": "days since 2001-01-01", "calendar": "360_day"}),
        ));
        inputs
            .names
            .insert("air".into(), (0, BTreeMap::from([("time".to_string(), 1)])));
        inputs
    }

    fn planned(script: &str, task_budget: u64) -> Result<ComputePlan, Box<dyn std::error::Error>> {
        let days = |_: &Source, _: &crate::model::Pick| Ok((0..730).map(f64::from).collect());
        crate::planner::tests::planned_over(&inputs(), script, task_budget, &days)
    }

    #[test]
    fn a_partial_task_folds_several_blocks_into_the_states_of_its_groups() -> TestResult {
        // Four 360-day years in chunks of 20 × 200 × 400 days (12.8 MB as f64): blocks stop
        // at 3 chunks (60 days, a little over 32 MB). One state piece per block was 24 pieces
        // of the 2 months each meets; folded 6 blocks a task, 4 tasks (two for each of the
        // two workers) write one piece of the 12 months each.
        let inputs = inputs_of(&[1440, 200, 400], &[20, 200, 400], &["time", "lat", "lon"]);
        let days = |_: &Source, _: &crate::model::Pick| Ok((0..1440).map(f64::from).collect());
        let budget = 1 << 30;
        let p = crate::planner::tests::planned_over(
            &inputs,
            "clim = air.groupby('time.month').mean()",
            budget,
            &days,
        )?;
        let partial = &p.stages[0];
        assert!(
            partial
                .label
                .contains("in blocks of 3 chunks, 6 folded a task"),
            "{}",
            partial.label
        );
        assert_eq!(partial.tasks(), 4);
        let month_state = 2 * 8 * 200 * 400;
        assert_eq!(partial.bytes_written, 4 * 12 * month_state);
        // Each task holds one block's reads and the states of its 12 months, twice.
        assert!(partial.projected_mem <= budget / 2);
        assert!(partial.projected_mem >= 2 * 12 * month_state);
        assert_eq!(steps(&p), ["partial", "finish", "labels"]);
        // The finish step has a task for each worker: blocks of 6 months (1.9 MB as float32).
        assert_eq!(p.stages[1].tasks(), 2);
        assert_eq!(p.specs[0].chunks, [6, 200, 400]);
        Ok(())
    }

    fn steps(p: &ComputePlan) -> Vec<String> {
        p.stages
            .iter()
            .filter_map(|s| match &s.kind {
                StageKind::Compute(c) => c
                    .kernel
                    .pointer("/step/step")
                    .and_then(Value::as_str)
                    .map(String::from),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn groups_met_by_spans_of_time() {
        // Two 30-day months per 60 days; a span of 45 days meets two of them.
        let groups: Vec<u32> = (0..120).map(|t| t / 30).collect();
        assert_eq!(max_groups(&groups, 45), 2);
        assert_eq!(max_groups(&groups, 30), 1);
        assert_eq!(max_groups(&[NO_GROUP, NO_GROUP], 2), 0);
        // Output blocks of two groups: each meets the pieces of its 60 days.
        assert_eq!(max_meets(&groups, 10, 2, 4), 6);
        assert_eq!(max_meets(&groups, 45, 2, 4), 2);
    }

    #[test]
    fn partial_blocks_leave_room_for_every_worker() {
        // Blocks of the whole budget ran a climatology's partial step one task at a time.
        for budget in (8..40).map(|k| 1u64 << (k / 2) << (k % 2)) {
            let Ok(p) = planned("clim = air.groupby('time.month').mean()", budget) else {
                continue;
            };
            let partial = &p.stages[0];
            assert!(
                partial.tasks() == 73 || 2 * partial.projected_mem <= budget,
                "budget {budget}: {} tasks of {} bytes",
                partial.tasks(),
                partial.projected_mem
            );
            assert!(
                partial.tasks() >= 2,
                "budget {budget}: one task leaves a worker idle"
            );
        }
    }

    #[test]
    fn a_climatology_is_a_partial_and_a_finish_step_and_labels() -> TestResult {
        let p = planned("clim = air.groupby('time.month').mean()", 1 << 30)?;
        assert_eq!(steps(&p), ["partial", "finish", "labels"]);
        // 73 chunks of 10 days, 64 per partial task: two pieces, one finish task of 12 months.
        assert_eq!(p.stages[0].tasks(), 2);
        assert_eq!(p.stages[1].tasks(), 1);
        assert_eq!(p.specs[0].shape, [12, 4]);
        assert_eq!(p.specs[1].path, "month");
        Ok(())
    }

    #[test]
    fn a_small_budget_means_small_blocks_and_combine_rounds() -> TestResult {
        // Room for one chunk of 40 values per partial block, and for the states of two
        // months beside it (6 blocks folded a task): 40 years of days leave 240 pieces, more
        // than a finish task merges, merged by combine rounds before the finish reads them.
        let inputs = inputs_of(&[14_400, 4], &[10, 4], &["time", "lat"]);
        let days = |_: &Source, _: &crate::model::Pick| Ok((0..14_400).map(f64::from).collect());
        let p = crate::planner::tests::planned_over(
            &inputs,
            "clim = air.groupby('time.month').std()",
            3_000,
            &days,
        )?;
        let s = steps(&p);
        assert_eq!(s.first().map(String::as_str), Some("partial"));
        assert!(s.iter().any(|k| k == "combine"), "{s:?}");
        assert!(p.stages.iter().all(|s| s.projected_mem <= 3_000));
        Ok(())
    }

    #[test]
    fn anomalies_read_the_climatology_through_the_month_of_each_day() -> TestResult {
        let p = planned(
            "anom = air.groupby('time.month') - air.groupby('time.month').mean()",
            1 << 30,
        )?;
        // The month of each day is written as the anomaly's non-dimension coordinate.
        assert_eq!(steps(&p), ["partial", "finish", "labels"]);
        let month = p
            .specs
            .iter()
            .find(|s| s.path == "month")
            .ok_or("no month")?;
        assert_eq!(month.dimension_names, Some(vec![Some("time".to_string())]));
        let anom = p.specs.iter().find(|s| s.path == "anom").ok_or("no anom")?;
        assert_eq!(anom.attributes.get("coordinates"), Some(&json!("month")));
        let StageKind::Compute(map) = &p.stages[2].kind else {
            return Err("no map stage".into());
        };
        let kernel: Kernel = serde_json::from_value(map.kernel.clone())?;
        let Kernel::Map { expr, .. } = kernel else {
            return Err("not a map".into());
        };
        let mut reads = Vec::new();
        expr.reads(&mut reads);
        let index = reads
            .iter()
            .find_map(|r| r.axes[0].index.clone())
            .ok_or("no read through an index")?;
        // Day 0 is January (group 0), day 30 February, day 359 December, day 360 January.
        assert_eq!([index[0], index[30], index[359], index[360]], [0, 1, 11, 0]);
        Ok(())
    }

    #[test]
    fn resample_bins_keep_the_time_dimension_and_its_units() -> TestResult {
        let p = planned("m = air.resample(time='QS-DEC').max()", 1 << 30)?;
        let time = p.specs.iter().find(|s| s.path == "time").ok_or("no time")?;
        // 2001-01-01 … 2002-12-30 in quarters from 2000-12-01: nine bins.
        assert_eq!(time.shape, [9]);
        assert_eq!(time.attributes.get("calendar"), Some(&json!("360_day")));
        let labels = p.stages.iter().find_map(|s| match &s.kind {
            StageKind::Compute(c) if s.name.ends_with("time-labels") => {
                serde_json::from_value::<Kernel>(c.kernel.clone()).ok()
            }
            _ => None,
        });
        let Some(Kernel::Group {
            step:
                GroupStep::Labels {
                    values: LabelValues::Numbers { values, .. },
                },
        }) = labels
        else {
            return Err("no labels".into());
        };
        assert_eq!(values[..3], [-30.0, 60.0, 150.0]);
        Ok(())
    }
}
