//! Rechunker's planning algorithm (pangeo-data/rechunker, `algorithm.py`), restated from its
//! documented behaviour so our plans can be compared with it.
//!
//! Its memory model is `item_size × elements of one block`, nothing else; our own planner in
//! [`crate::rechunk`] counts what a task really holds. We keep this one for `chunkmill plan`'s
//! comparison line and as a reference in tests.

use crate::GridError;

/// Read, intermediate and write block shapes of one Rechunker stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RechunkerStage {
    /// Blocks read from the stage's input.
    pub read: Vec<u64>,
    /// Chunks of the stage's intermediate store.
    pub intermediate: Vec<u64>,
    /// Blocks written to the stage's output.
    pub write: Vec<u64>,
}

/// Grow `chunks` axis by axis, last axis first, in whole multiples, while one block stays within
/// `max_mem` bytes. `limits[axis]`: `None` keeps the axis, `Some(0)` (Rechunker's -1) or a value
/// past the axis allows the whole axis.
///
/// # Errors
/// When one chunk alone exceeds `max_mem`, or a limit lies below its chunk.
pub fn consolidate_chunks(
    shape: &[u64],
    chunks: &[u64],
    item_size: u64,
    max_mem: u64,
    limits: Option<&[Option<u64>]>,
) -> Result<Vec<u64>, GridError> {
    let bytes = |c: &[u64]| item_size * c.iter().product::<u64>();
    if bytes(chunks) > max_mem {
        return Err(GridError::Rechunker(format!(
            "chunk of {} bytes exceeds max_mem {max_mem}",
            bytes(chunks)
        )));
    }
    let mut block = chunks.to_vec();
    let mut headroom = max_mem as f64 / bytes(&block).max(1) as f64;
    for axis in (0..shape.len()).rev() {
        let limit = match limits.map(|l| l[axis]) {
            Some(None) => continue,
            Some(Some(0)) | None => shape[axis],
            Some(Some(l)) if l > shape[axis] => shape[axis],
            Some(Some(l)) => {
                if l < chunks[axis] {
                    return Err(GridError::Rechunker(format!(
                        "limit {l} on axis {axis} is below the chunk {}",
                        chunks[axis]
                    )));
                }
                l
            }
        };
        let upper = shape[axis].min(limit);
        block[axis] = upper;
        if max_mem as f64 / bytes(&block).max(1) as f64 > 1.0 {
            continue;
        }
        block[axis] = upper.min(chunks[axis] * headroom.floor() as u64);
        headroom = max_mem as f64 / bytes(&block).max(1) as f64;
    }
    Ok(block)
}

/// Rechunker's single-stage plan: `(read, intermediate, write)`.
///
/// # Errors
/// As [`consolidate_chunks`].
pub fn rechunking_plan(
    shape: &[u64],
    source: &[u64],
    target: &[u64],
    item_size: u64,
    max_mem: u64,
) -> Result<RechunkerStage, GridError> {
    let write = consolidate_chunks(shape, target, item_size, max_mem, None)?;
    let limits: Vec<Option<u64>> = write
        .iter()
        .zip(source)
        .map(|(&w, &s)| if w > s { Some(w) } else { None })
        .collect();
    let read = consolidate_chunks(shape, source, item_size, max_mem, Some(&limits))?;
    let intermediate = read.iter().zip(&write).map(|(&r, &w)| r.min(w)).collect();
    Ok(RechunkerStage {
        read,
        intermediate,
        write,
    })
}

/// Chunk shapes between `read` and `write` for `stage_count` stages: per-axis geometric
/// spacing, rounded down, end points dropped.
#[must_use]
pub fn stage_chunks(read: &[u64], write: &[u64], stage_count: usize) -> Vec<Vec<u64>> {
    (1..stage_count)
        .map(|j| {
            let t = j as f64 / stage_count as f64;
            read.iter()
                .zip(write)
                .map(|(&r, &w)| {
                    let v = (r as f64).ln() * (1.0 - t) + (w as f64).ln() * t;
                    ((v.exp() + 1e-8).floor() as u64).max(1)
                })
                .collect()
        })
        .collect()
}

/// Pieces when an axis of length `len` cut in `a` is re-cut in `b`.
fn axis_splits(len: u64, a: u64, b: u64) -> u64 {
    let lcm = lcm(a, b);
    let full = len / lcm;
    let rest = len % lcm;
    let per = lcm / a + lcm / b - 1;
    let tail = if rest == 0 {
        0
    } else {
        rest.div_ceil(a) + rest.div_ceil(b) - 1
    };
    full * per + tail
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The least common multiple of two chunk sizes (not 0).
pub(crate) fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}

/// Rechunker's IO count of one stage: pieces when reading `read` blocks into `intermediate`
/// chunks and writing those into `write` blocks.
#[must_use]
pub fn stage_io_ops(shape: &[u64], stage: &RechunkerStage) -> u64 {
    let prod = |a: &[u64], b: &[u64]| -> u64 {
        shape
            .iter()
            .zip(a.iter().zip(b))
            .map(|(&len, (&x, &y))| axis_splits(len, x, y))
            .product()
    };
    prod(&stage.read, &stage.intermediate) + prod(&stage.intermediate, &stage.write)
}

/// Rechunker's multistage plan: add stages until the smallest intermediate chunk reaches
/// `min_mem` bytes, stopping early when the IO count starts to grow.
///
/// # Errors
/// As [`consolidate_chunks`], and when `max_mem < min_mem`.
pub fn multistage_rechunking_plan(
    shape: &[u64],
    source: &[u64],
    target: &[u64],
    item_size: u64,
    min_mem: u64,
    max_mem: u64,
) -> Result<Vec<RechunkerStage>, GridError> {
    if max_mem < min_mem {
        return Err(GridError::Rechunker(format!(
            "max_mem {max_mem} is below min_mem {min_mem}"
        )));
    }
    let first = rechunking_plan(shape, source, target, item_size, max_mem)?;
    let (read, write) = (first.read, first.write);
    let mut previous: Option<(u64, Vec<RechunkerStage>)> = None;
    for stage_count in 1..100 {
        let middle = stage_chunks(&read, &write, stage_count);
        let pre: Vec<Vec<u64>> = std::iter::once(read.clone())
            .chain(middle.clone())
            .collect();
        let post: Vec<Vec<u64>> = middle
            .into_iter()
            .chain(std::iter::once(write.clone()))
            .collect();
        let plan: Vec<RechunkerStage> = pre
            .into_iter()
            .zip(post)
            .map(|(r, w)| RechunkerStage {
                intermediate: r.iter().zip(&w).map(|(&a, &b)| a.min(b)).collect(),
                read: r,
                write: w,
            })
            .collect();
        let smallest = plan
            .iter()
            .map(|s| item_size * s.intermediate.iter().product::<u64>())
            .min()
            .unwrap_or(0);
        if smallest >= min_mem {
            return Ok(plan);
        }
        let io: u64 = plan.iter().map(|s| stage_io_ops(shape, s)).sum();
        if let Some((prev_io, prev_plan)) = &previous {
            if io > *prev_io {
                return Ok(prev_plan.clone());
            }
        }
        previous = Some((io, plan));
    }
    Err(GridError::Rechunker("no plan within 100 stages".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn eight_by_eight_examples() -> TestResult {
        let plan = rechunking_plan(&[8, 8], &[1, 8], &[8, 1], 4, 32)?;
        assert_eq!(
            (plan.read, plan.intermediate, plan.write),
            (vec![1, 8], vec![1, 1], vec![8, 1])
        );
        let plan = rechunking_plan(&[8, 8], &[1, 8], &[8, 1], 4, 64)?;
        assert_eq!(
            (plan.read, plan.intermediate, plan.write),
            (vec![2, 8], vec![2, 2], vec![8, 2])
        );
        let plan = rechunking_plan(&[8, 8], &[1, 8], &[8, 1], 4, 256)?;
        assert_eq!(
            (plan.read, plan.intermediate, plan.write),
            (vec![8, 8], vec![8, 8], vec![8, 8])
        );
        Ok(())
    }

    #[test]
    fn era5_single_stage() -> TestResult {
        let plan = rechunking_plan(
            &[350_640, 721, 1440],
            &[31, 721, 1440],
            &[350_640, 10, 10],
            4,
            1_000_000_000,
        )?;
        assert_eq!(plan.read, vec![217, 721, 1440]);
        assert_eq!(plan.intermediate, vec![217, 10, 70]);
        assert_eq!(plan.write, vec![350_640, 10, 70]);
        Ok(())
    }

    #[test]
    fn geometric_stages() {
        assert_eq!(
            stage_chunks(&[1_000_000, 1], &[1, 1_000_000], 2),
            vec![vec![1000, 1000]]
        );
        assert_eq!(
            stage_chunks(&[1_000_000, 1], &[1, 1_000_000], 3),
            vec![vec![10_000, 100], vec![100, 10_000]]
        );
    }

    #[test]
    fn axis_split_count() {
        assert_eq!(axis_splits(20, 5, 7), 6);
    }

    #[test]
    fn era5_multistage_picks_two_stages() -> TestResult {
        let plan = multistage_rechunking_plan(
            &[350_640, 721, 1440],
            &[31, 721, 1440],
            &[350_640, 10, 10],
            4,
            10_000_000,
            1_000_000_000,
        )?;
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].read, vec![217, 721, 1440]);
        assert_eq!(plan[1].write, vec![350_640, 10, 70]);
        Ok(())
    }
}
