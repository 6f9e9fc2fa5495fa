//! Running the steps of a reduction per group ([`GroupStep`]): a partial step folds a block
//! into the states of the groups it meets, combine steps merge consecutive pieces, the
//! finish step gathers the pieces that meet an output block's groups. Which indices belong
//! to which group is plan data, so every task knows its pieces' groups without reading them.

use chunkmill_grid::Region;
use chunkmill_plan::{ComputeStage, Endpoint};

use super::{
    kept_region as kept, piece_key, read_piece, sub_blocks, write, HeldReader, Io, SharedReads,
};
use crate::dtype::DType;
use crate::kernel::{Expr, GroupStep, Reduce};
use crate::time::{LabelValues, NO_GROUP};

/// The groups that indices `range` of the grouped axis meet, in group order.
fn groups_in(groups: &[u32], range: std::ops::Range<u64>) -> Vec<u32> {
    let end = (range.end as usize).min(groups.len());
    let start = (range.start as usize).min(end);
    let mut out: Vec<u32> = groups[start..end]
        .iter()
        .copied()
        .filter(|&g| g != NO_GROUP)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Indices of the grouped axis that piece `i` covers when each piece spans `span` blocks.
fn piece_range(i: u64, span: u64, block: u64, len: u64) -> std::ops::Range<u64> {
    let width = span * block;
    (i * width).min(len)..((i + 1) * width).min(len)
}

/// The piece coordinates of a task's region with `piece` along `axis`.
fn piece_coords(
    stage: &ComputeStage,
    region: &Region,
    axis: usize,
    piece: u64,
) -> Result<Vec<u64>, String> {
    let mut coords = stage
        .blocks
        .chunks_in(region)
        .next()
        .ok_or("an empty block")?;
    coords[axis] = piece;
    Ok(coords)
}

fn pieces(endpoint: &Endpoint) -> Result<(&str, &str, &chunkmill_grid::Grid), String> {
    match endpoint {
        Endpoint::Pieces {
            url, prefix, grid, ..
        } => Ok((url, prefix, grid)),
        other => Err(format!(
            "{}: a reduction per group keeps its states in intermediate pieces",
            other.describe()
        )),
    }
}

fn put_piece(io: &Io, endpoint: &Endpoint, coords: &[u64], state: &[f64]) -> Result<u64, String> {
    let (url, prefix, grid) = pieces(endpoint)?;
    let bytes = DType::Float64.encode(state);
    let n = bytes.len() as u64;
    io.pieces(url)?
        .put(&piece_key(prefix, grid, coords), bytes)
        .map_err(|e| e.to_string())?;
    Ok(n)
}

fn get_piece(
    io: &Io,
    endpoint: &Endpoint,
    coords: &[u64],
    out: &mut Vec<f64>,
) -> Result<(), String> {
    let bytes = read_piece(io, pieces(endpoint)?, coords)?;
    DType::Float64.decode(&bytes, out);
    Ok(())
}

/// The states of groups `wanted` (positions in its list of `n_from` groups) of the piece at
/// `coords`, each of `k` kept elements in `fields` fields, into `out` as a piece of those
/// groups alone: the whole piece when it holds no others, else one range per field — a
/// finish task of a few groups reads only theirs.
fn get_groups(
    io: &Io,
    endpoint: &Endpoint,
    coords: &[u64],
    (n_from, wanted): (usize, std::ops::Range<usize>),
    (fields, k): (usize, usize),
    out: &mut Vec<f64>,
) -> Result<(), String> {
    if wanted.len() == n_from {
        return get_piece(io, endpoint, coords, out);
    }
    let (url, prefix, grid) = pieces(endpoint)?;
    let store = io.pieces(url)?;
    let key = piece_key(prefix, grid, coords);
    let len = wanted.len() * k;
    out.clear();
    out.resize(fields * len, 0.0);
    for (f, values) in out.chunks_exact_mut(len.max(1)).enumerate() {
        let offset = ((f * n_from + wanted.start) * k * 8) as u64;
        let bytes = store
            .get_range(&key, offset, (len * 8) as u64)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{url}/{key}: intermediate piece missing"))?;
        DType::Float64.decode_into(&bytes, values);
    }
    Ok(())
}

/// Merge a piece whose groups are `from` (each with `k` kept elements) into a state whose
/// groups are `into`; groups of the piece that the state lacks are left out.
fn merge_groups(
    reduce: &Reduce,
    state: &mut [f64],
    into: &[u32],
    piece: &[f64],
    from: &[u32],
    k: usize,
) {
    let (n_into, n_from) = (into.len() * k, from.len() * k);
    let fields = reduce.fields();
    let mut one_a = vec![0.0; fields * k];
    let mut one_b = vec![0.0; fields * k];
    for (gi, g) in from.iter().enumerate() {
        let Ok(go) = into.binary_search(g) else {
            continue;
        };
        for f in 0..fields {
            one_a[f * k..(f + 1) * k]
                .copy_from_slice(&state[f * n_into + go * k..f * n_into + (go + 1) * k]);
            one_b[f * k..(f + 1) * k]
                .copy_from_slice(&piece[f * n_from + gi * k..f * n_from + (gi + 1) * k]);
        }
        reduce.merge(&mut one_a, &one_b, k);
        for f in 0..fields {
            state[f * n_into + go * k..f * n_into + (go + 1) * k]
                .copy_from_slice(&one_a[f * k..(f + 1) * k]);
        }
    }
}

/// The one array a group step writes.
fn stage_output(stage: &ComputeStage) -> Result<&Endpoint, String> {
    stage
        .outputs
        .first()
        .ok_or_else(|| "a group step writes one output".to_string())
}

/// Run one task of a group step.
pub(super) fn run(
    (stage, io): (&ComputeStage, &Io),
    region: &Region,
    step: &GroupStep,
    read: &mut HeldReader<'_>,
) -> Result<u64, String> {
    match step {
        GroupStep::Partial {
            expr,
            reduce,
            axis,
            groups,
            block,
            sub,
        } => partial(
            (stage, io),
            region,
            (expr, reduce),
            (*axis, groups, *block, *sub),
            read,
        ),
        GroupStep::Combine {
            reduce,
            axis,
            groups,
            block,
            span,
            fan,
        } => {
            let piece = region.ranges()[*axis].start;
            let len = groups.len() as u64;
            let into = groups_in(groups, piece_range(piece, span * fan, *block, len));
            let k = kept(region, &[*axis]).num_elements() as usize;
            let mut state = reduce.empty(into.len() * k);
            let mut part = Vec::new();
            let input = stage.inputs.first().ok_or("a combine without input")?;
            let first = piece * fan;
            let inputs_n = len.div_ceil(span * block);
            for i in first..(first + fan).min(inputs_n) {
                let from = groups_in(groups, piece_range(i, *span, *block, len));
                if from.is_empty() {
                    continue;
                }
                get_piece(
                    io,
                    input,
                    &piece_coords(stage, region, *axis, i)?,
                    &mut part,
                )?;
                merge_groups(reduce, &mut state, &into, &part, &from, k);
            }
            put_piece(
                io,
                stage_output(stage)?,
                &piece_coords(stage, region, *axis, piece)?,
                &state,
            )
        }
        GroupStep::Finish {
            reduce,
            axis,
            groups,
            block,
            span,
            dtype,
        } => finish(
            (stage, io),
            region,
            reduce,
            *axis,
            groups,
            (*block, *span),
            *dtype,
        ),
        GroupStep::Labels { values } => {
            let r = &region.ranges()[0];
            match values {
                LabelValues::Numbers { values, dtype } => {
                    let part = values
                        .get(r.start as usize..r.end as usize)
                        .ok_or("labels shorter than their array")?;
                    write(io, stage_output(stage)?, *dtype, region, part)
                }
                LabelValues::Text(text) => write_text((stage, io), region, text),
            }
        }
    }
}

/// The piece a task of a group step writes to its output, if that is pieces: its
/// coordinates and length (see [`super::written`]).
pub(super) fn written(
    stage: &ComputeStage,
    region: &Region,
    step: &GroupStep,
) -> Result<Option<super::written::PieceAt>, String> {
    let state = |reduce: &Reduce, axis: usize, groups: usize| {
        8 * reduce.fields() as u64 * groups as u64 * kept(region, &[axis]).num_elements()
    };
    Ok(Some(match step {
        GroupStep::Partial {
            reduce,
            axis,
            groups,
            block,
            ..
        } => {
            let along = region.ranges()[*axis].clone();
            let piece = along.start / block.max(&1);
            let bytes = state(reduce, *axis, groups_in(groups, along).len());
            (Some(piece_coords(stage, region, *axis, piece)?), bytes)
        }
        GroupStep::Combine {
            reduce,
            axis,
            groups,
            block,
            span,
            fan,
        } => {
            let piece = region.ranges()[*axis].start;
            let range = piece_range(piece, span * fan, *block, groups.len() as u64);
            let bytes = state(reduce, *axis, groups_in(groups, range).len());
            (Some(piece_coords(stage, region, *axis, piece)?), bytes)
        }
        GroupStep::Finish { dtype, .. } => (None, region.num_elements() * dtype.size() as u64),
        GroupStep::Labels { .. } => return Ok(None),
    }))
}

/// Evaluate a block tile by tile along the grouped axis, `sub` indices of it at a time
/// (their reads held until the next ones'), and fold each row of a tile (its values at one
/// index of the axis, `inner` apart from the next index's) into its group's state with the
/// reduction's loop per operation.
fn partial(
    (stage, io): (&ComputeStage, &Io),
    region: &Region,
    (expr, reduce): (&Expr, &Reduce),
    (axis, groups, block, sub): (usize, &[u32], u64, u64),
    read: &mut HeldReader<'_>,
) -> Result<u64, String> {
    let along = region.ranges()[axis].clone();
    let set = groups_in(groups, along.clone());
    let k = kept(region, &[axis]).num_elements() as usize;
    let n = set.len() * k;
    let mut state = reduce.empty(n);
    // Row-major over a tile: element e is (outer, t, inner); its kept element drops t.
    let shape = region.shape();
    let inner: usize = shape[axis + 1..].iter().product::<u64>() as usize;
    let outer: usize = shape[..axis].iter().product::<u64>() as usize;
    let local: Vec<Option<usize>> = (along.start..along.end)
        .map(|t| set.binary_search(&groups[t as usize]).ok())
        .collect();
    for part in sub_blocks(region, axis, sub) {
        let mut shared = SharedReads::new(std::iter::once(expr));
        shared.eval(0, expr, (&part, axis), read, &mut |tile, values| {
            let range = &tile.ranges()[axis];
            let len = (range.end - range.start) as usize;
            let first = (range.start - along.start) as usize;
            for o in 0..outer {
                for t in 0..len {
                    let Some(l) = local[first + t] else {
                        continue;
                    };
                    let at = (o * len + t) * inner;
                    if let Some(row) = values.get(at..at + inner) {
                        let index = along.start + (first + t) as u64;
                        reduce.add_run(&mut state, n, l * k + o * inner, row, index);
                    }
                }
            }
            Ok(())
        })?;
    }
    let piece = along.start / block.max(1);
    put_piece(
        io,
        stage_output(stage)?,
        &piece_coords(stage, region, axis, piece)?,
        &state,
    )
}

fn finish(
    (stage, io): (&ComputeStage, &Io),
    region: &Region,
    reduce: &Reduce,
    axis: usize,
    groups: &[u32],
    (block, span): (u64, u64),
    dtype: DType,
) -> Result<u64, String> {
    let along = region.ranges()[axis].clone();
    let into: Vec<u32> = (along.start as u32..along.end as u32).collect();
    let keep = kept(region, &[axis]);
    let k = keep.num_elements() as usize;
    let mut state = reduce.empty(into.len() * k);
    let mut part = Vec::new();
    let input = stage.inputs.first().ok_or("a finish step without input")?;
    let len = groups.len() as u64;
    let mut present = vec![false; into.len()];
    for i in 0..len.div_ceil(span * block) {
        let from = groups_in(groups, piece_range(i, span, block, len));
        if !from.iter().any(|g| into.binary_search(g).is_ok()) {
            continue;
        }
        for g in &from {
            if let Ok(p) = into.binary_search(g) {
                present[p] = true;
            }
        }
        // Both lists are in group order and `into` is a range of groups: the piece's groups
        // in it are one run of its list.
        let first = from.iter().position(|g| into.binary_search(g).is_ok());
        let last = from.iter().rposition(|g| into.binary_search(g).is_ok());
        let (Some(first), Some(last)) = (first, last) else {
            continue;
        };
        let coords = piece_coords(stage, region, axis, i)?;
        let wanted = (from.len(), first..last + 1);
        get_groups(io, input, &coords, wanted, (reduce.fields(), k), &mut part)?;
        merge_groups(reduce, &mut state, &into, &part, &from[first..=last], k);
    }
    let n = into.len() * k;
    let shape = region.shape();
    let inner: usize = shape[axis + 1..].iter().product::<u64>() as usize;
    let plane = shape[axis] as usize * inner;
    let values = (0..region.num_elements() as usize)
        .map(|e| -> Result<f64, String> {
            let (outer, rest) = (e / plane, e % plane);
            let (g, i) = (rest / inner, rest % inner);
            if !present[g] {
                return Ok(f64::NAN);
            }
            let v = reduce
                .finish(&state, n, g * k + outer * inner + i)
                .map_err(|e| e.to_string())?;
            Ok(dtype.round(v))
        })
        .collect::<Result<Vec<f64>, String>>()?;
    write(io, stage_output(stage)?, dtype, region, &values)
}

/// Text labels as fixed-length UTF-32 (numpy's `<U`), the width of the output array.
fn write_text(
    (stage, io): (&ComputeStage, &Io),
    region: &Region,
    text: &[String],
) -> Result<u64, String> {
    let Endpoint::Zarr { url, path, grid } = stage_output(stage)? else {
        return Err("labels go to an output array".into());
    };
    let width = text
        .iter()
        .map(|t| t.chars().count())
        .max()
        .unwrap_or(1)
        .max(1);
    let coords = grid.chunks_in(region).next().ok_or("an empty block")?;
    let nominal = grid.axes()[0].chunk(0).end.max(1) as usize;
    let r = &region.ranges()[0];
    let mut bytes = vec![0u8; nominal * width * 4];
    for (i, t) in text[r.start as usize..r.end as usize].iter().enumerate() {
        for (c, ch) in t.chars().enumerate() {
            let at = (i * width + c) * 4;
            bytes[at..at + 4].copy_from_slice(&u32::from(ch).to_le_bytes());
        }
    }
    let n = bytes.len() as u64;
    io.output(url, path)?
        .write_chunk(&coords, bytes)
        .map_err(|e| e.to_string())?;
    Ok(n)
}
