//! What a task leaves in intermediate pieces, and how long each is: a resumed run looks for
//! them before it trusts the markers of their tasks. Pieces go to scratch stores that are
//! never synced ([`super::Io`]), so a power loss may take pieces whose task marker survived;
//! such a task runs again instead of its readers failing or reading a short piece.

use chunkmill_grid::Region;
use chunkmill_plan::{ComputeStage, Endpoint};

use super::{group, kept_region, piece_key, state_coords};
use crate::kernel::Kernel;

/// Where a piece is in its intermediate's grid (`None`: the chunk of the grid that holds the
/// task's block, as values are written) and its length when whole.
pub(super) type PieceAt = (Option<Vec<u64>>, u64);

/// One intermediate piece a task writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenPiece {
    /// The store it is in (an intermediate's URL).
    pub url: String,
    /// The intermediate's prefix in that store.
    pub prefix: String,
    /// Its number (C order) in the intermediate's grid.
    pub number: u64,
    /// Its key in that store.
    pub key: String,
    /// Its length when whole.
    pub bytes: u64,
}

/// The intermediate pieces the task of `stage` whose block is `region` writes (its Zarr
/// outputs are synced before its marker, and not listed).
///
/// # Errors
/// When the stage's kernel is not one this build knows, or names an output it lacks.
pub fn written_pieces(stage: &ComputeStage, region: &Region) -> Result<Vec<WrittenPiece>, String> {
    let kernel: Kernel = serde_json::from_value(stage.kernel.clone())
        .map_err(|e| format!("not a compute kernel of this chunkmill: {e}"))?;
    let block = || {
        stage
            .blocks
            .chunks_in(region)
            .next()
            .ok_or_else(|| "an empty block".to_string())
    };
    // (output, coordinates of the piece in its grid — `None`: the chunk of the output's grid
    // that holds the block, as values are written — and its bytes).
    let mut found: Vec<(usize, Option<Vec<u64>>, u64)> = Vec::new();
    match &kernel {
        Kernel::Map { dtype, .. } => {
            found.push((0, None, region.num_elements() * dtype.size() as u64));
        }
        Kernel::Maps { parts } => {
            for p in parts {
                let bytes = region.num_elements() * p.dtype.size() as u64;
                found.push((p.output, None, bytes));
            }
        }
        Kernel::Partial { parts, axes, .. } => {
            let m = kept_region(region, axes).num_elements();
            for p in parts.iter().filter(|p| p.finish.is_none()) {
                let bytes = 8 * p.reduce.fields() as u64 * m;
                found.push((p.output, Some(state_coords(&block()?)), bytes));
            }
        }
        Kernel::Combine {
            reduce,
            axes,
            finish,
            ..
        } => {
            if finish.is_none() {
                let m = kept_region(region, axes).num_elements();
                let bytes = 8 * reduce.fields() as u64 * m;
                found.push((0, Some(state_coords(&block()?)), bytes));
            }
        }
        Kernel::Group { step } => {
            if let Some((coords, bytes)) = group::written(stage, region, step)? {
                found.push((0, coords, bytes));
            }
        }
    }
    let mut pieces = Vec::new();
    for (output, coords, bytes) in found {
        let out = stage
            .outputs
            .get(output)
            .ok_or_else(|| format!("the kernel writes output {output}, which the stage lacks"))?;
        if let Endpoint::Pieces {
            url, prefix, grid, ..
        } = out
        {
            let coords = match coords {
                Some(c) => c,
                None => grid.chunks_in(region).next().ok_or("an empty block")?,
            };
            pieces.push(WrittenPiece {
                url: url.clone(),
                prefix: prefix.clone(),
                number: grid.ravel(&coords),
                key: piece_key(prefix, grid, &coords),
                bytes,
            });
        }
    }
    Ok(pieces)
}
