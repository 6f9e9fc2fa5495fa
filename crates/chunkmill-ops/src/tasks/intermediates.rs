//! How a run moves its intermediate pieces, and when it lets them go.
//!
//! Pieces are written once and read once, and never synced. Where the plan's pieces fit in
//! what the kernel lets a process keep dirty in memory before it starts throttling writers
//! ([`MachineMemory::free_run`]), they go through the page cache ([`ScratchIo::PageCache`]): a
//! write is a copy into memory, a read a copy out of it, and a piece removed before the
//! kernel's writeback reaches it never goes to the device at all. Larger ones, or on a machine
//! short of memory, go around it with O_DIRECT ([`ScratchIo::Direct`]): the device's speed,
//! without thrashing the cache or throttling the machine's other writers.
//!
//! A copy stage that is the only reader of its pieces removes each piece that lies wholly in
//! one of its blocks as soon as that block's task is complete for good (marker written, no
//! copy of it running; [`chunkmill_exec::TaskRunner::task_complete`]), so its dirty pages are
//! dropped instead of written back. A resumed run never needs them: their reader is marked
//! done, and [`super::forget_lost_pieces`] does not look for pieces only done readers read.

use std::collections::HashSet;

use chunkmill_grid::{Grid, Region};
use chunkmill_plan::{Endpoint, Plan, StageKind};
use chunkmill_store::ScratchIo;

/// What the kernel's dirty-page limits allow this process now, from `/proc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineMemory {
    /// `MemAvailable`: what the kernel can give without swapping (its dirty limits are
    /// fractions of about this much).
    pub available: u64,
    /// `Dirty` + `Writeback`: pages of every process already waiting for the device.
    pub dirty: u64,
    /// `vm.dirty_ratio` (percent) or, when set, `vm.dirty_bytes`.
    pub limit: DirtyLimit,
    /// `vm.dirty_background_ratio` (percent) or, when set, `vm.dirty_background_bytes`.
    pub background: DirtyLimit,
}

/// One of the kernel's dirty-page thresholds, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirtyLimit {
    /// Percent of the available memory.
    Ratio(u64),
    /// Bytes.
    Bytes(u64),
}

impl DirtyLimit {
    fn bytes(self, available: u64) -> u64 {
        match self {
            DirtyLimit::Ratio(percent) => available / 100 * percent,
            DirtyLimit::Bytes(bytes) => bytes,
        }
    }
}

impl MachineMemory {
    /// Read from `/proc/meminfo` and `/proc/sys/vm`; `None` where they cannot be read (not
    /// Linux, or a sandbox without them).
    #[must_use]
    pub fn read() -> Option<MachineMemory> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let field = |name: &str| {
            meminfo.lines().find_map(|line| {
                let kib = line.strip_prefix(name)?.strip_prefix(':')?;
                kib.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
            })
        };
        let vm = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        };
        // The kernel uses the `_bytes` setting when it is not zero, the ratio otherwise.
        let limit = |bytes: &str, ratio: &str| match vm(bytes) {
            Some(b) if b > 0 => Some(DirtyLimit::Bytes(b)),
            _ => vm(ratio).map(DirtyLimit::Ratio),
        };
        Some(MachineMemory {
            available: field("MemAvailable")? * 1024,
            dirty: (field("Dirty")? + field("Writeback").unwrap_or(0)) * 1024,
            limit: limit("dirty_bytes", "dirty_ratio")?,
            background: limit("dirty_background_bytes", "dirty_background_ratio")?,
        })
    }

    /// Dirty bytes the whole machine may hold before the kernel makes writers wait for the
    /// device: halfway between its background and its hard threshold (below it, the kernel's
    /// `balance_dirty_pages` lets writers run free). A background threshold at or above the
    /// hard one is taken as half of it, as the kernel does.
    #[must_use]
    pub fn free_run(&self) -> u64 {
        let limit = self.limit.bytes(self.available);
        let mut background = self.background.bytes(self.available);
        if background >= limit {
            background = limit / 2;
        }
        (limit + background) / 2
    }

    /// How intermediates of `bytes` in all should move: through the page cache when they fit
    /// in what the machine may still hold dirty ([`MachineMemory::free_run`] less what is
    /// already dirty), around it otherwise.
    #[must_use]
    pub fn scratch_io(&self, bytes: u64) -> ScratchIo {
        if bytes <= self.free_run().saturating_sub(self.dirty) {
            ScratchIo::PageCache
        } else {
            ScratchIo::Direct
        }
    }
}

/// Decoded bytes of every intermediate piece `plan` writes (an upper bound of what they take
/// when compressed). Without early removal all of them may exist at once.
#[must_use]
pub fn intermediate_bytes(plan: &Plan) -> u64 {
    plan.stages
        .iter()
        .filter(|stage| match &stage.kind {
            StageKind::Copy(copy) => matches!(copy.output, Endpoint::Pieces { .. }),
            StageKind::Compute(compute) => compute
                .outputs
                .iter()
                .any(|o| matches!(o, Endpoint::Pieces { .. })),
            StageKind::Scan(_) => false,
        })
        .map(|stage| stage.bytes_written)
        .sum()
}

/// How this process moves `plan`'s intermediates: as `CHUNKMILL_SCRATCH_IO` says (`direct`
/// or `page-cache`, to measure one against the other), else by [`MachineMemory::scratch_io`]
/// of what this machine has now, around the page cache when that cannot be read.
#[must_use]
pub fn scratch_io(plan: &Plan) -> ScratchIo {
    match std::env::var("CHUNKMILL_SCRATCH_IO").as_deref() {
        Ok("direct") => return ScratchIo::Direct,
        Ok("page-cache") => return ScratchIo::PageCache,
        Ok("") | Err(_) => {}
        Ok(other) => {
            match other
                .strip_prefix("split:")
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| *p <= 100)
            {
                Some(direct_percent) => return ScratchIo::Split { direct_percent },
                None => tracing::warn!(
                    value = other,
                    "CHUNKMILL_SCRATCH_IO is 'direct', 'page-cache' or 'split:PERCENT'; ignored"
                ),
            }
        }
    }
    let bytes = intermediate_bytes(plan);
    if bytes == 0 {
        return ScratchIo::Direct;
    }
    MachineMemory::read().map_or(ScratchIo::Direct, |m| m.scratch_io(bytes))
}

/// Names of the copy stages that read pieces straight (not through a window or another view)
/// that no other stage reads: each piece wholly inside one of their blocks is read by that
/// block's task alone, and can go once it is complete.
#[must_use]
pub fn sole_piece_readers(plan: &Plan) -> HashSet<String> {
    let mut readers = HashSet::new();
    for stage in &plan.stages {
        let StageKind::Copy(copy) = &stage.kind else {
            continue;
        };
        let Endpoint::Pieces { url, prefix, .. } = &copy.input else {
            continue;
        };
        let others = plan
            .stages
            .iter()
            .filter(|s| s.name != stage.name && reads_pieces(s, url, prefix))
            .count();
        if others == 0 {
            readers.insert(stage.name.clone());
        }
    }
    readers
}

fn reads_pieces(stage: &chunkmill_plan::Stage, url: &str, prefix: &str) -> bool {
    match &stage.kind {
        StageKind::Copy(copy) => super::copy::reads_pieces(&copy.input, url, prefix),
        StageKind::Compute(compute) => compute
            .inputs
            .iter()
            .any(|input| super::copy::reads_pieces(input, url, prefix)),
        StageKind::Scan(_) => false,
    }
}

/// The pieces (by C-order number in `grid`) at `url`/`prefix` that a task not done (not in
/// `done`, by stage name) still reads; `None` when that cannot be told piece by piece (a
/// reader sees them through another endpoint, or is not a copy): then every piece.
#[must_use]
pub fn needed_pieces<S: std::hash::BuildHasher>(
    plan: &Plan,
    done: &std::collections::HashMap<&str, HashSet<u64>, S>,
    url: &str,
    prefix: &str,
    grid: &Grid,
) -> Option<HashSet<u64>> {
    let mut needed = HashSet::new();
    for reader in plan.stages.iter().filter(|s| reads_pieces(s, url, prefix)) {
        let finished = done.get(reader.name.as_str());
        let open = (0..reader.tasks()).filter(|t| finished.is_none_or(|d| !d.contains(t)));
        let direct = matches!(&reader.kind, StageKind::Copy(c)
            if matches!(&c.input, Endpoint::Pieces { url: u, prefix: p, .. } if u == url && p == prefix));
        for task in open {
            if !direct {
                return None;
            }
            needed.extend(
                grid.chunks_in(&reader.task_region(task))
                    .map(|coords| grid.ravel(&coords)),
            );
        }
    }
    Some(needed)
}

/// The tasks of compute stage `stage` marked done (in `done`) whose intermediate pieces,
/// still needed by a task not done, are missing or short: each then runs again
/// ([`super::forget_lost_pieces`]). Pieces are read buffered, as a killed run may have left
/// them in the page cache.
///
/// # Errors
/// A piece's store cannot be opened or read, or the stage's kernel is not one this build
/// knows.
pub fn lost_compute_tasks<S: std::hash::BuildHasher>(
    plan: &Plan,
    done: &std::collections::HashMap<&str, HashSet<u64>, S>,
    stage: &chunkmill_plan::Stage,
    compute: &chunkmill_plan::ComputeStage,
) -> Result<Vec<u64>, String> {
    // Only pieces a task not done still reads are looked for: the others may be gone.
    // `None`: every piece of that intermediate.
    let mut needed = std::collections::HashMap::new();
    for output in &compute.outputs {
        if let Endpoint::Pieces {
            url, prefix, grid, ..
        } = output
        {
            let wanted = needed_pieces(plan, done, url, prefix, grid);
            if wanted.as_ref().is_none_or(|n| !n.is_empty()) {
                needed.insert((url.as_str(), prefix.as_str()), wanted);
            }
        }
    }
    if needed.is_empty() {
        return Ok(Vec::new());
    }
    let mut stores = std::collections::HashMap::new();
    let mut lost = Vec::new();
    let mut marked: Vec<u64> = done
        .get(stage.name.as_str())
        .into_iter()
        .flatten()
        .copied()
        .collect();
    marked.sort_unstable();
    for task in marked {
        for piece in chunkmill_compute::task::written_pieces(compute, &stage.task_region(task))? {
            let Some(wanted) = needed.get(&(piece.url.as_str(), piece.prefix.as_str())) else {
                continue;
            };
            if wanted.as_ref().is_some_and(|n| !n.contains(&piece.number)) {
                continue;
            }
            let store = match stores.entry(piece.url.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    chunkmill_store::Store::open_scratch_with(&piece.url, ScratchIo::PageCache)
                        .map_err(|e| e.to_string())?,
                ),
            };
            if store.size(&piece.key).map_err(|e| e.to_string())? != Some(piece.bytes) {
                lost.push(task);
                break;
            }
        }
    }
    Ok(lost)
}

/// The block of `blocks` that holds the whole of `piece`, if one does (its task is then the
/// piece's only reader in the stage).
#[must_use]
pub fn block_holding(blocks: &Grid, piece: &Region) -> Option<u64> {
    let ranges = blocks.overlapping(piece);
    if ranges.iter().any(|r| r.end - r.start != 1) {
        return None;
    }
    let coords: Vec<u64> = ranges.iter().map(|r| r.start).collect();
    Some(blocks.ravel(&coords))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn machine(available: u64, dirty: u64) -> MachineMemory {
        MachineMemory {
            available,
            dirty,
            limit: DirtyLimit::Ratio(20),
            background: DirtyLimit::Ratio(10),
        }
    }

    #[test]
    fn free_run_is_halfway_between_the_kernels_thresholds() {
        // 22 GiB available, 20 % and 10 %: 4.4 and 2.2 GiB, writers run free below 3.3 GiB.
        let m = machine(22 * GIB, 0);
        assert_eq!(
            m.free_run(),
            (22 * GIB / 100 * 20 + 22 * GIB / 100 * 10) / 2
        );
        let bytes = MachineMemory {
            limit: DirtyLimit::Bytes(GIB),
            background: DirtyLimit::Bytes(GIB / 2),
            ..m
        };
        assert_eq!(bytes.free_run(), 3 * GIB / 4);
        // A background threshold above the hard one counts as half of it.
        let inverted = MachineMemory {
            background: DirtyLimit::Ratio(40),
            ..m
        };
        assert_eq!(inverted.free_run(), (22 * GIB / 100 * 20) * 3 / 4);
    }

    #[test]
    fn intermediates_go_through_the_cache_only_when_they_fit_what_may_stay_dirty() {
        // The benchmark on this machine: 2.27 GB of pieces, 22 GiB available.
        let pieces = 2_270_000_000;
        assert_eq!(
            machine(22 * GIB, 0).scratch_io(pieces),
            ScratchIo::PageCache
        );
        // The same job on a machine with 8 GiB available (free run 1.2 GiB) streams them.
        assert_eq!(machine(8 * GIB, 0).scratch_io(pieces), ScratchIo::Direct);
        // Other writers' dirty pages count against the room left.
        assert_eq!(
            machine(22 * GIB, 2 * GIB).scratch_io(pieces),
            ScratchIo::Direct
        );
        let free_run = machine(16 * GIB, 0).free_run();
        assert_eq!(
            machine(16 * GIB, 0).scratch_io(free_run),
            ScratchIo::PageCache
        );
        assert_eq!(
            machine(16 * GIB, 0).scratch_io(free_run + 1),
            ScratchIo::Direct
        );
    }

    #[test]
    fn a_piece_has_a_sole_reader_only_inside_one_block() -> Result<(), chunkmill_grid::GridError> {
        let blocks = Grid::regular(&[100, 60], &[50, 30])?;
        let inside = Region::new(vec![50..60, 30..60]);
        assert_eq!(block_holding(&blocks, &inside), Some(3));
        let across = Region::new(vec![40..60, 0..30]);
        assert_eq!(block_holding(&blocks, &across), None);
        Ok(())
    }
}
