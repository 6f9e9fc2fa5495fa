//! Rechunk planning: which sequence of copy stages moves an array from its source chunks to its
//! target chunks cheapest, with no task holding more than its share of the memory budget.
//!
//! Every strategy is a chain of *copy stages*. A copy stage reads an input array and writes an
//! output array; its tasks are the blocks of a regular *block grid*; task `i` reads block `i`
//! (decoding every input chunk it meets, whole) and writes every output chunk inside it. Output
//! grids always contain the block boundaries, so each task owns whole output chunks.
//!
//! * **direct** — one stage, blocks are whole target chunks that also line up with the source
//!   chunks: each source chunk is decoded once.
//! * **multipass** — one stage whose blocks cut through source chunks: the source is decoded
//!   several times (the plan says how many), but nothing is written twice.
//! * **intermediate** — two stages. Stage 1's blocks are groups of whole source chunks ("read
//!   blocks"), stage 2's are groups of whole target chunks ("write blocks"). The intermediate is
//!   cut at the union of both block grids (rectilinear when they do not nest), so stage 1 writes
//!   whole pieces and stage 2 reads each piece exactly once. This is Rechunker's push/pull with
//!   its race removed (Rechunker maps stage 1 over intermediate chunks for that reason and loses
//!   read consolidation).
//! * **multistage** — `k > 2` stages whose block shapes interpolate geometrically, axis by axis,
//!   from the read block to the write block (Rechunker's multistage idea), so the pieces between
//!   stages stay large when source and target are far apart.
//!
//! The cost model estimates every candidate's time from decoded bytes, encoded bytes, objects
//! and tasks, and the cheapest one wins.

use serde::{Deserialize, Serialize};

use crate::{AxisChunks, Grid, GridError};

/// What one byte and one object cost to move through a medium, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MediumCost {
    /// Per decoded byte read (fetch + decode).
    pub read_ns_per_byte: f64,
    /// Per decoded byte written (encode + store).
    pub write_ns_per_byte: f64,
    /// Per object (chunk or piece) read or written.
    pub ns_per_object: f64,
}

impl MediumCost {
    /// Raw pieces on a local disk: a memcpy and a page-cache write.
    pub const LOCAL_RAW: MediumCost = MediumCost {
        read_ns_per_byte: 0.3,
        write_ns_per_byte: 0.6,
        ns_per_object: 40_000.0,
    };
}

/// Everything the planner needs to know about one rechunk.
#[derive(Clone, Debug)]
pub struct RechunkProblem {
    /// The array's shape.
    pub shape: Vec<u64>,
    /// Bytes per element.
    pub item_size: u64,
    /// The source chunk grid.
    pub source: Grid,
    /// The target chunk (or shard) shape; each task writes whole ones.
    pub target_chunks: Vec<u64>,
    /// Memory available to the tasks of one stage running together, in bytes.
    pub budget: u64,
    /// How many tasks may run at once at most.
    pub workers: u64,
    /// Cost of reading the source.
    pub source_cost: MediumCost,
    /// Cost of writing the target.
    pub target_cost: MediumCost,
    /// Cost of writing and reading an intermediate.
    pub intermediate_cost: MediumCost,
    /// Fixed cost of one task, in nanoseconds.
    pub ns_per_task: f64,
    /// Bytes each task holds besides its buffers (codec contexts, bookkeeping).
    pub task_overhead: u64,
    /// Most stages to consider.
    pub max_stages: usize,
}

/// How a plan moves the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// One stage, each source chunk decoded once.
    Direct,
    /// One stage, the source decoded more than once.
    Multipass,
    /// Two stages through one intermediate.
    Intermediate,
    /// More than two stages.
    Multistage,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::Direct => "direct",
            Strategy::Multipass => "multipass",
            Strategy::Intermediate => "intermediate",
            Strategy::Multistage => "multistage",
        })
    }
}

/// One copy stage of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CopyStage {
    /// The input's chunk grid.
    pub input: Grid,
    /// The output's chunk grid.
    pub output: Grid,
    /// Task `i` is block `i` of this grid.
    pub blocks: Grid,
    /// Bytes one task holds at its peak.
    pub projected_mem: u64,
    /// Decoded bytes read by all tasks (more than the array when blocks cut input chunks).
    pub bytes_read: u64,
    /// Input chunks read by all tasks.
    pub objects_read: u64,
    /// Decoded bytes written.
    pub bytes_written: u64,
    /// Output chunks written.
    pub objects_written: u64,
}

impl CopyStage {
    /// Number of tasks.
    #[must_use]
    pub fn tasks(&self) -> u64 {
        self.blocks.num_chunks()
    }
}

/// A chosen plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RechunkPlan {
    /// How it moves the data.
    pub strategy: Strategy,
    /// The stages, in order; stage `i + 1` reads what stage `i` wrote.
    pub stages: Vec<CopyStage>,
    /// How many tasks the plan was sized to run at once.
    pub concurrency: u64,
    /// The cost model's estimate, in seconds.
    pub estimated_seconds: f64,
    /// Which of the intermediate media given to [`RechunkProblem::plan_among`] the pieces go
    /// through (0 for [`RechunkProblem::plan`], or when the plan writes none).
    #[serde(default)]
    pub medium: usize,
    /// The cheapest plan of every other kind that fits the budget (one per strategy and
    /// intermediate medium), priced by the same model: what the choice was made against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<PricedAlternative>,
}

/// A plan the cost model priced and did not choose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PricedAlternative {
    /// How it would move the data.
    pub strategy: Strategy,
    /// The intermediate medium its pieces would go through (an index into the media given to
    /// [`RechunkProblem::plan_among`]); `None` for one-stage plans.
    pub medium: Option<usize>,
    /// The model's estimate, seconds.
    pub estimated_seconds: f64,
    /// Tasks it was sized to run at once.
    pub concurrency: u64,
    /// Source bytes its first stage decodes per byte of the array (more than 1 when it
    /// re-reads source chunks).
    pub passes: f64,
}

/// Bytes one copy task holds at its peak: its block, plus, while reading, one input chunk
/// decoded and encoded, or, while writing, one output chunk cut out of the block and encoded.
/// Inputs are released before the writes start, so the two phases do not add up.
#[must_use]
pub fn copy_task_memory(
    block_elems: u64,
    max_input_chunk_elems: u64,
    max_output_chunk_elems: u64,
    item_size: u64,
    overhead: u64,
) -> u64 {
    let block = block_elems * item_size;
    let reading = 2 * max_input_chunk_elems * item_size;
    let writing = 2 * max_output_chunk_elems * item_size;
    block + reading.max(writing) + overhead
}

impl RechunkProblem {
    fn stage(&self, input: &Grid, output: &Grid, blocks: Grid) -> CopyStage {
        let block_elems: u64 = blocks.max_chunk_elements();
        let in_max = input.max_chunk_elements();
        let out_max = output.max_chunk_elements();
        let projected_mem = copy_task_memory(
            block_elems,
            in_max,
            out_max,
            self.item_size,
            self.task_overhead,
        );
        let read_elems: u64 = input
            .axes()
            .iter()
            .zip(blocks.axes())
            .map(|(i, b)| i.covered_length(b))
            .product();
        let objects_read: u64 = input
            .axes()
            .iter()
            .zip(blocks.axes())
            .map(|(i, b)| i.covered_count(b))
            .product();
        let total: u64 = self.shape.iter().product();
        CopyStage {
            input: input.clone(),
            output: output.clone(),
            blocks,
            projected_mem,
            bytes_read: read_elems * self.item_size,
            objects_read,
            bytes_written: total * self.item_size,
            objects_written: output.num_chunks(),
        }
    }

    fn stage_seconds(
        &self,
        stage: &CopyStage,
        read: MediumCost,
        write: MediumCost,
        conc: u64,
    ) -> f64 {
        let ns = stage.bytes_read as f64 * read.read_ns_per_byte
            + stage.bytes_written as f64 * write.write_ns_per_byte
            + stage.objects_read as f64 * read.ns_per_object
            + stage.objects_written as f64 * write.ns_per_object
            + stage.tasks() as f64 * self.ns_per_task;
        let parallel = conc.min(stage.tasks()).max(1) as f64;
        ns / parallel / 1e9
    }

    /// Grow `base` axis by axis (in `order`), in whole multiples of `base`, as far as `limit`
    /// allows and `fits` accepts.
    fn consolidate(
        &self,
        base: &[u64],
        limit: &[u64],
        order: &[usize],
        fits: &dyn Fn(&[u64]) -> bool,
    ) -> Vec<u64> {
        let mut block: Vec<u64> = base
            .iter()
            .zip(&self.shape)
            .map(|(&b, &len)| b.min(len.max(1)))
            .collect();
        for &axis in order {
            let unit = base[axis].max(1);
            // A block never reaches past the array: one clipped chunk is the whole axis.
            let cap = limit[axis].max(unit).min(self.shape[axis].max(1));
            // Largest multiple m with block[axis] = min(m * unit, cap) that still fits.
            let (mut lo, mut hi) = (1u64, cap.div_ceil(unit));
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                let mut trial = block.clone();
                trial[axis] = (mid * unit).min(cap);
                if fits(&trial) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            block[axis] = (lo * unit).min(cap);
        }
        block
    }

    fn clipped(&self, block: &[u64]) -> Vec<u64> {
        block
            .iter()
            .zip(&self.shape)
            .map(|(&b, &len)| b.min(len.max(1)))
            .collect()
    }

    fn regular(&self, block: &[u64]) -> Grid {
        Grid::new(
            block
                .iter()
                .zip(&self.shape)
                .map(|(&b, &len)| AxisChunks::Regular {
                    size: b.max(1),
                    len,
                })
                .collect(),
        )
    }

    fn target_grid(&self) -> Grid {
        self.regular(&self.target_chunks)
    }

    /// Plans with one stage: blocks of whole target chunks, grown to cut the fewest source
    /// chunks; and, where it fits, blocks grown from the smallest region that is whole source
    /// and whole target chunks at once (their least common multiple per axis), whose tasks
    /// never decode a source chunk another task decodes too.
    fn one_stage(&self, per_task: u64, orders: &[Vec<usize>], conc: u64) -> Vec<RechunkPlan> {
        let target = self.target_grid();
        let full = self.shape.clone();
        let fits = |b: &[u64]| {
            let blocks = self.regular(b);
            self.stage(&self.source, &target, blocks).projected_mem <= per_task
        };
        let aligned = self.aligned_unit();
        let mut bases = vec![self.target_chunks.clone()];
        if let Some(unit) = aligned.filter(|u| *u != self.target_chunks && fits(u)) {
            bases.push(unit);
        }
        let mut plans = Vec::new();
        for (order, base) in orders
            .iter()
            .flat_map(|o| bases.iter().map(move |b| (o, b)))
        {
            if !fits(&self.clipped(base)) {
                continue;
            }
            let block = self.consolidate(base, &full, order, &fits);
            let stage = self.stage(&self.source, &target, self.regular(&block));
            let total: u64 = self.shape.iter().product::<u64>() * self.item_size;
            let strategy = if stage.bytes_read <= total {
                Strategy::Direct
            } else {
                Strategy::Multipass
            };
            let secs = self.stage_seconds(&stage, self.source_cost, self.target_cost, conc);
            plans.push(RechunkPlan {
                strategy,
                stages: vec![stage],
                concurrency: conc,
                estimated_seconds: secs,
                medium: 0,
                alternatives: Vec::new(),
            });
        }
        plans
    }

    /// Plans with `k >= 2` stages: read blocks of whole source chunks, write blocks of whole
    /// target chunks, and geometric steps between them.
    fn staged(
        &self,
        per_task: u64,
        orders: &[Vec<usize>],
        conc: u64,
        media: &[MediumCost],
    ) -> Vec<RechunkPlan> {
        let target = self.target_grid();
        let source_chunks = self.source.max_chunk_shape();
        let Some(source_unit) = self
            .source
            .axes()
            .iter()
            .map(AxisChunks::regular_size)
            .collect::<Option<Vec<u64>>>()
        else {
            return Vec::new();
        };
        let mut plans = Vec::new();
        for order in orders {
            // Write blocks: whole target chunks, as large as a task may hold.
            let write_fits = |b: &[u64]| {
                let blocks = self.regular(b);
                let piece = self.regular(
                    &b.iter()
                        .zip(&source_chunks)
                        .map(|(&x, &y)| x.min(y))
                        .collect::<Vec<_>>(),
                );
                self.stage(&piece, &target, blocks).projected_mem <= per_task
            };
            if !write_fits(&self.clipped(&self.target_chunks)) {
                continue;
            }
            let write = self.consolidate(&self.target_chunks, &self.shape, order, &write_fits);
            // Read blocks: whole source chunks, grown only where the write blocks are longer.
            let limit: Vec<u64> = write
                .iter()
                .zip(&source_unit)
                .map(|(&w, &s)| if w > s { w } else { s })
                .collect();
            // The write stage reads the pieces a read block is cut into, so both stages must
            // fit: read blocks grown as far as the read stage alone allowed made pieces too
            // large for the write blocks, and a larger budget lost every staged plan.
            let read_fits = |b: &[u64]| {
                let blocks = self.regular(b);
                let pieces = blocks.union(&self.regular(&write));
                self.stage(&self.source, &pieces, blocks).projected_mem <= per_task
                    && self
                        .stage(&pieces, &target, self.regular(&write))
                        .projected_mem
                        <= per_task
            };
            if !read_fits(&self.clipped(&source_unit)) {
                continue;
            }
            let read = self.consolidate(&source_unit, &limit, order, &read_fits);
            for k in 2..=self.max_stages.max(2) {
                for (m, medium) in media.iter().enumerate() {
                    if let Some(mut plan) = self.chain(&read, &write, k, per_task, conc, *medium) {
                        plan.medium = m;
                        plans.push(plan);
                    }
                }
            }
        }
        plans
    }

    fn chain(
        &self,
        read: &[u64],
        write: &[u64],
        k: usize,
        per_task: u64,
        conc: u64,
        medium: MediumCost,
    ) -> Option<RechunkPlan> {
        let blocks: Vec<Vec<u64>> = (0..k)
            .map(|j| {
                let t = j as f64 / (k - 1) as f64;
                read.iter()
                    .zip(write)
                    .zip(&self.shape)
                    .map(|((&r, &w), &len)| {
                        let v = (r as f64).powf(1.0 - t) * (w as f64).powf(t);
                        (v.floor() as u64).clamp(1, len.max(1))
                    })
                    .collect()
            })
            .collect();
        let mut blocks = blocks;
        blocks[0] = read.to_vec();
        blocks[k - 1] = write.to_vec();
        if blocks.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
        let target = self.target_grid();
        let mut input = self.source.clone();
        let mut stages = Vec::with_capacity(k);
        let mut secs = 0.0;
        for j in 0..k {
            let block_grid = self.regular(&blocks[j]);
            let output = if j + 1 == k {
                target.clone()
            } else {
                block_grid.union(&self.regular(&blocks[j + 1]))
            };
            let stage = self.stage(&input, &output, block_grid);
            if stage.projected_mem > per_task {
                return None;
            }
            let read_cost = if j == 0 { self.source_cost } else { medium };
            let write_cost = if j + 1 == k { self.target_cost } else { medium };
            secs += self.stage_seconds(&stage, read_cost, write_cost, conc);
            input = output;
            stages.push(stage);
        }
        Some(RechunkPlan {
            strategy: if k == 2 {
                Strategy::Intermediate
            } else {
                Strategy::Multistage
            },
            stages,
            concurrency: conc,
            estimated_seconds: secs,
            medium: 0,
            alternatives: Vec::new(),
        })
    }

    fn axis_orders(&self) -> Vec<Vec<usize>> {
        let ndim = self.shape.len();
        let last_first: Vec<usize> = (0..ndim).rev().collect();
        if ndim > 4 {
            let mut first_last = last_first.clone();
            first_last.reverse();
            return vec![last_first, first_last];
        }
        let mut orders = Vec::new();
        permutations(&mut (0..ndim).collect(), 0, &mut orders);
        orders
    }

    /// The smallest memory one task of any strategy needs: a target chunk, or a source chunk.
    fn minimum_task_memory(&self) -> u64 {
        let source = self.source.max_chunk_shape();
        let piece: Vec<u64> = source
            .iter()
            .zip(&self.target_chunks)
            .map(|(&s, &t)| s.min(t))
            .collect();
        let target = self.target_grid();
        let direct = self.stage(&self.source, &target, self.regular(&self.target_chunks));
        let piece_grid = self.regular(&piece);
        let up = self.stage(&self.source, &piece_grid, self.regular(&source));
        let down = self.stage(&piece_grid, &target, self.regular(&self.target_chunks));
        direct
            .projected_mem
            .min(up.projected_mem.max(down.projected_mem))
    }

    /// The cheapest plan that fits the budget, its intermediates priced as
    /// [`RechunkProblem::intermediate_cost`].
    ///
    /// # Errors
    /// [`GridError::Rank`] when the shapes disagree, [`GridError::ZeroChunk`] for a 0 chunk,
    /// [`GridError::DoesNotFit`] when no task of any strategy fits the budget.
    pub fn plan(&self) -> Result<RechunkPlan, GridError> {
        self.plan_among(&[self.intermediate_cost])
    }

    /// The cheapest plan that fits the budget when an intermediate may go through any of
    /// `media` (raw pieces, compressed pieces, …, each priced per decoded byte): the plan
    /// says which ([`RechunkPlan::medium`]) and what else was priced
    /// ([`RechunkPlan::alternatives`]). No media (or one) prices as [`RechunkProblem::plan`].
    ///
    /// # Errors
    /// As [`RechunkProblem::plan`].
    pub fn plan_among(&self, media: &[MediumCost]) -> Result<RechunkPlan, GridError> {
        self.plan_on(media, None)
    }

    /// [`RechunkProblem::plan_among`] for tasks that share `cores` CPU cores: each kind of
    /// plan still runs at the concurrency that suits it best, but kinds are compared (and
    /// their estimates given) as if no more than `cores` tasks decode at once. Tasks beyond the
    /// cores overlap their waits, not their work; dividing by them made the kinds whose small
    /// tasks fit many at once (re-reading the sources, under a small budget) look up to
    /// `workers / cores` times cheaper than they run.
    ///
    /// # Errors
    /// As [`RechunkProblem::plan`].
    pub fn plan_among_cores(
        &self,
        media: &[MediumCost],
        cores: u64,
    ) -> Result<RechunkPlan, GridError> {
        self.plan_on(media, Some(cores))
    }

    fn plan_on(&self, media: &[MediumCost], cores: Option<u64>) -> Result<RechunkPlan, GridError> {
        let media: &[MediumCost] = if media.is_empty() {
            std::slice::from_ref(&self.intermediate_cost)
        } else {
            media
        };
        let ndim = self.shape.len();
        if self.source.ndim() != ndim || self.target_chunks.len() != ndim {
            return Err(GridError::Rank {
                got: self.target_chunks.len(),
                expected: ndim,
            });
        }
        if self.target_chunks.contains(&0) {
            return Err(GridError::ZeroChunk);
        }
        let total: u64 = self.shape.iter().product();
        let target = self.target_grid();
        if total == 0 {
            let stage = self.stage(&self.source, &target, self.regular(&self.target_chunks));
            return Ok(RechunkPlan {
                strategy: Strategy::Direct,
                stages: vec![stage],
                concurrency: 1,
                estimated_seconds: 0.0,
                medium: 0,
                alternatives: Vec::new(),
            });
        }
        let orders = self.axis_orders();
        let better = |plan: &RechunkPlan, than: &RechunkPlan| {
            plan.estimated_seconds < than.estimated_seconds * 0.999
                || (plan.estimated_seconds <= than.estimated_seconds * 1.001
                    && plan.stages.len() < than.stages.len())
        };
        // The cheapest plan of each kind (strategy, medium): the winner is the cheapest of them.
        let mut kinds: Vec<RechunkPlan> = Vec::new();
        for conc in 1..=self.workers.max(1) {
            let per_task = self.budget / conc;
            let mut candidates = self.one_stage(per_task, &orders, conc);
            candidates.extend(self.staged(per_task, &orders, conc, media));
            for plan in candidates {
                let same_kind = |k: &RechunkPlan| {
                    k.strategy == plan.strategy && (k.stages.len() == 1 || k.medium == plan.medium)
                };
                match kinds.iter_mut().find(|k| same_kind(k)) {
                    Some(kept) if better(&plan, kept) => *kept = plan,
                    Some(_) => {}
                    None => kinds.push(plan),
                }
            }
        }
        if let Some(cores) = cores {
            for kind in &mut kinds {
                kind.estimated_seconds = self.seconds_on(kind, media, cores);
            }
        }
        let Some(winner) =
            (0..kinds.len()).reduce(|a, b| if better(&kinds[b], &kinds[a]) { b } else { a })
        else {
            return Err(GridError::DoesNotFit {
                task_bytes: self.minimum_task_memory(),
                budget: self.budget,
            });
        };
        let mut best = kinds.swap_remove(winner);
        kinds.sort_by(|a, b| a.estimated_seconds.total_cmp(&b.estimated_seconds));
        best.alternatives = kinds.iter().map(|k| self.priced(k)).collect();
        Ok(best)
    }

    /// `plan`'s estimate when no more than `cores` of its tasks work at once.
    fn seconds_on(&self, plan: &RechunkPlan, media: &[MediumCost], cores: u64) -> f64 {
        let last = plan.stages.len().saturating_sub(1);
        let medium = media
            .get(plan.medium)
            .copied()
            .unwrap_or(self.intermediate_cost);
        let conc = plan.concurrency.min(cores.max(1));
        plan.stages
            .iter()
            .enumerate()
            .map(|(j, stage)| {
                let read = if j == 0 { self.source_cost } else { medium };
                let write = if j == last { self.target_cost } else { medium };
                self.stage_seconds(stage, read, write, conc)
            })
            .sum()
    }

    fn priced(&self, plan: &RechunkPlan) -> PricedAlternative {
        let total = self.shape.iter().product::<u64>() * self.item_size;
        PricedAlternative {
            strategy: plan.strategy,
            medium: (plan.stages.len() > 1).then_some(plan.medium),
            estimated_seconds: plan.estimated_seconds,
            concurrency: plan.concurrency,
            passes: plan
                .stages
                .first()
                .map_or(1.0, |s| s.bytes_read as f64 / total.max(1) as f64),
        }
    }

    /// Bytes one task needs to copy the array in one stage decoding every source chunk once:
    /// a block of the least common multiple of source and target chunks per axis; `None` for
    /// irregular source chunks. What a direct plan would need where none fits.
    #[must_use]
    pub fn direct_task_memory(&self) -> Option<u64> {
        let unit = self.aligned_unit()?;
        let target = self.target_grid();
        Some(
            self.stage(&self.source, &target, self.regular(&unit))
                .projected_mem,
        )
    }

    /// The smallest block that is whole source and whole target chunks at once: their least
    /// common multiple per axis, within the array; `None` for irregular source chunks.
    fn aligned_unit(&self) -> Option<Vec<u64>> {
        self.source
            .axes()
            .iter()
            .zip(&self.target_chunks)
            .zip(&self.shape)
            .map(|((axis, &t), &len)| {
                axis.regular_size()
                    .map(|s| lcm(s.max(1), t.max(1)).min(len.max(1)))
            })
            .collect()
    }
}

fn permutations(items: &mut Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
    if k == items.len() {
        out.push(items.clone());
        return;
    }
    for i in k..items.len() {
        items.swap(k, i);
        permutations(items, k + 1, out);
        items.swap(k, i);
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The least common multiple of two chunk sizes (not 0).
fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}
