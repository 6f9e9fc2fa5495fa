//! What a stage waits for: the plan's data flow, read from its endpoints, so that the threads
//! executor starts a task as soon as what it reads is written rather than at a stage barrier.
//!
//! Stage `j` depends on an earlier stage `i` when one writes what the other reads or writes
//! (the same Zarr array, pieces or references). When the only link is that `j` copies from the
//! intermediate pieces that `i` copies into, each task of `j` waits for exactly the tasks of
//! `i` that write its pieces; any other link (or a scan or compute stage, whose data this
//! crate does not read) makes `j` wait for the whole of `i`.

use std::collections::BTreeSet;

use chunkmill_grid::Region;
use chunkmill_plan::{Endpoint, Plan, Stage, StageKind};

/// Where a stage reads or writes, as far as ordering goes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Zarr { url: String, path: String },
    Pieces { url: String, prefix: String },
    References { url: String },
}

/// What one stage reads and writes.
struct Access {
    reads: BTreeSet<Place>,
    writes: BTreeSet<Place>,
}

fn places(endpoint: &Endpoint, out: &mut BTreeSet<Place>) {
    match endpoint {
        Endpoint::Zarr { url, path, .. } => {
            out.insert(Place::Zarr {
                url: url.clone(),
                path: path.clone(),
            });
        }
        Endpoint::Pieces { url, prefix, .. } => {
            out.insert(Place::Pieces {
                url: url.clone(),
                prefix: prefix.clone(),
            });
        }
        Endpoint::References { url, .. } => {
            out.insert(Place::References { url: url.clone() });
        }
        Endpoint::Window { source, .. } | Endpoint::Tiles { source, .. } => places(source, out),
        Endpoint::Shifted { inner, .. } => places(inner, out),
        Endpoint::Concat { parts, .. } => parts.iter().for_each(|p| places(p, out)),
    }
}

fn access(stage: &Stage) -> Option<Access> {
    let (mut reads, mut writes) = (BTreeSet::new(), BTreeSet::new());
    match &stage.kind {
        StageKind::Copy(copy) => {
            places(&copy.input, &mut reads);
            places(&copy.output, &mut writes);
        }
        // A compute kernel's reads and writes are data of chunkmill-compute, not checked
        // here; a scan's are its input list and results. Both keep a barrier either side.
        StageKind::Compute(_) | StageKind::Scan(_) => return None,
    }
    Some(Access { reads, writes })
}

/// What the tasks of one stage wait for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageWaits {
    /// Earlier stages that must be complete before any task of this one starts.
    pub stages: Vec<usize>,
    /// An earlier stage whose tasks write the pieces this one reads: task `t` waits only for
    /// the tasks [`StageWaits::producers`] names.
    pub pieces_from: Option<usize>,
}

/// For every stage of `plan`, what its tasks wait for.
#[must_use]
pub fn stage_waits(plan: &Plan) -> Vec<StageWaits> {
    let accesses: Vec<Option<Access>> = plan.stages.iter().map(access).collect();
    let mut waits = vec![StageWaits::default(); plan.stages.len()];
    for (j, wait) in waits.iter_mut().enumerate() {
        for i in 0..j {
            let (Some(a), Some(b)) = (&accesses[i], &accesses[j]) else {
                wait.stages.push(i);
                continue;
            };
            let read_after_write: Vec<&Place> = a.writes.intersection(&b.reads).collect();
            let other = a.reads.intersection(&b.writes).next().is_some()
                || a.writes.intersection(&b.writes).next().is_some();
            if read_after_write.is_empty() && !other {
                continue;
            }
            let by_task = !other
                && wait.pieces_from.is_none()
                && matches!(read_after_write.as_slice(), [Place::Pieces { .. }])
                && copies_pieces(&plan.stages[i], &plan.stages[j]);
            if by_task {
                wait.pieces_from = Some(i);
            } else {
                wait.stages.push(i);
            }
        }
    }
    waits
}

/// Whether `consumer` copies from exactly the pieces `producer` copies into (both copy
/// stages, the pieces their whole endpoint), so that their tasks map onto each other.
fn copies_pieces(producer: &Stage, consumer: &Stage) -> bool {
    match (&producer.kind, &consumer.kind) {
        (StageKind::Copy(p), StageKind::Copy(c)) => {
            matches!(&p.output, Endpoint::Pieces { .. }) && p.output == c.input
        }
        _ => false,
    }
}

/// The tasks of `producer` that write the pieces task `task` of `consumer` reads, in order.
/// Both are copy stages that [`stage_waits`] linked by their pieces.
#[must_use]
pub fn producers(producer: &Stage, consumer: &Stage, task: u64) -> Vec<u64> {
    let (StageKind::Copy(p), StageKind::Copy(c)) = (&producer.kind, &consumer.kind) else {
        return (0..producer.tasks()).collect();
    };
    let pieces = c.input.grid();
    let region = consumer.task_region(task);
    let spans = pieces.overlapping(&region);
    if spans.iter().any(|r| r.is_empty()) {
        return Vec::new();
    }
    // The pieces the task reads tile a box; every piece lies in one producer block, so the
    // blocks that meet the box are exactly the tasks that write them.
    let first: Vec<u64> = spans.iter().map(|r| r.start).collect();
    let last: Vec<u64> = spans.iter().map(|r| r.end - 1).collect();
    let (low, high) = (pieces.chunk_region(&first), pieces.chunk_region(&last));
    let span = Region::new(
        low.ranges()
            .iter()
            .zip(high.ranges())
            .map(|(a, b)| a.start..b.end)
            .collect(),
    );
    p.blocks
        .chunks_in(&span)
        .map(|c| p.blocks.ravel(&c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chunkmill_grid::Grid;
    use chunkmill_plan::CopyStage;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn zarr(url: &str, path: &str, grid: &Grid) -> Endpoint {
        Endpoint::Zarr {
            url: url.into(),
            path: path.into(),
            grid: grid.clone(),
        }
    }

    fn copy(name: &str, input: Endpoint, output: Endpoint, blocks: Grid) -> Stage {
        Stage {
            name: name.into(),
            label: name.into(),
            projected_mem: 1,
            bytes_read: 0,
            bytes_written: 0,
            kind: StageKind::Copy(CopyStage {
                input,
                output,
                blocks,
                item_size: 4,
            }),
        }
    }

    /// Two arrays, each copied through pieces: (100 × 100) chunks (10 × 100) → (100 × 10).
    fn two_arrays() -> Result<Plan, chunkmill_grid::GridError> {
        let source = Grid::regular(&[100, 100], &[10, 100])?;
        let pieces = Grid::regular(&[100, 100], &[50, 10])?;
        let target = Grid::regular(&[100, 100], &[100, 10])?;
        let mut stages = Vec::new();
        for array in ["a", "b"] {
            let scratch = Endpoint::Pieces {
                url: "memory://scratch".into(),
                prefix: array.into(),
                grid: pieces.clone(),
                codec: chunkmill_plan::PieceCodec::Raw,
            };
            stages.push(copy(
                &format!("{array}-0"),
                zarr("memory://src", array, &source),
                scratch.clone(),
                Grid::regular(&[100, 100], &[50, 100])?,
            ));
            stages.push(copy(
                &format!("{array}-1"),
                scratch,
                zarr("memory://dst", array, &target),
                target.clone(),
            ));
        }
        Ok(Plan::new("test", 1000, stages, vec![]))
    }

    #[test]
    fn arrays_are_independent_and_pieces_link_task_to_task() -> TestResult {
        let plan = two_arrays()?;
        let waits = stage_waits(&plan);
        let by_pieces = |from| StageWaits {
            stages: vec![],
            pieces_from: Some(from),
        };
        assert_eq!(
            waits,
            [
                StageWaits::default(),
                by_pieces(0),
                StageWaits::default(),
                by_pieces(2)
            ]
        );
        // Each target column reads one piece of each of the two producer blocks.
        assert_eq!(producers(&plan.stages[0], &plan.stages[1], 3), [0, 1]);
        Ok(())
    }

    #[test]
    fn a_producer_block_per_piece_row() -> TestResult {
        // Producer blocks of 50 rows; a consumer block of rows 0..50 waits for block 0 only.
        let source = Grid::regular(&[100, 20], &[10, 20])?;
        let pieces = Grid::regular(&[100, 20], &[25, 10])?;
        let scratch = Endpoint::Pieces {
            url: "memory://s".into(),
            prefix: "p".into(),
            grid: pieces,
            codec: chunkmill_plan::PieceCodec::Raw,
        };
        let producer = copy(
            "p",
            zarr("memory://src", "v", &source),
            scratch.clone(),
            Grid::regular(&[100, 20], &[50, 20])?,
        );
        let consumer = copy(
            "c",
            scratch,
            zarr("memory://dst", "v", &source),
            Grid::regular(&[100, 20], &[50, 10])?,
        );
        assert_eq!(producers(&producer, &consumer, 0), [0]);
        assert_eq!(producers(&producer, &consumer, 1), [0]);
        assert_eq!(producers(&producer, &consumer, 2), [1]);
        Ok(())
    }

    #[test]
    fn a_shared_target_or_reading_a_target_is_a_barrier() -> TestResult {
        let grid = Grid::regular(&[10], &[5])?;
        let one = copy(
            "one",
            zarr("memory://src", "a", &grid),
            zarr("memory://dst", "x", &grid),
            grid.clone(),
        );
        let two = copy(
            "two",
            zarr("memory://src", "b", &grid),
            zarr("memory://dst", "x", &grid),
            grid.clone(),
        );
        let reads_target = copy(
            "three",
            zarr("memory://dst", "x", &grid),
            zarr("memory://dst", "y", &grid),
            grid.clone(),
        );
        let plan = Plan::new("test", 1000, vec![one, two, reads_target], vec![]);
        let waits = stage_waits(&plan);
        assert_eq!(waits[1].stages, [0]);
        assert_eq!(waits[2].stages, [0, 1]);
        assert_eq!(waits[2].pieces_from, None);
        Ok(())
    }
}
