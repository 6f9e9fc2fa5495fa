//! Loading a small variable's decoded values (the concat coordinate, identical-dims
//! variables) and decoding single chunks.

use chunkmill_grid::{copy_region, Region};
use chunkmill_hdf5::{DataRefs, SourceFile, Variable};

use crate::codecs;
use crate::error::{Error, Result};

/// Largest variable loaded into memory (64 MiB): coordinates are far smaller.
pub const MAX_LOADED_BYTES: u64 = 64 * 1024 * 1024;

fn unsupported(file: &SourceFile, var: &Variable, reason: String) -> Error {
    Error::Unsupported {
        file: file.name().to_string(),
        variable: var.path.clone(),
        reason,
    }
}

/// The decoded bytes of one stored chunk: filters undone (those `mask` skipped excepted).
pub(crate) fn decode_chunk(
    file: &SourceFile,
    var: &Variable,
    indices: &[u64],
    offset: u64,
    length: u64,
    mask: u32,
) -> Result<Vec<u8>> {
    let stored = file.read_range(offset, length)?;
    codecs::decode(&var.filters, mask, var.dtype.size, stored.to_vec()).map_err(|reason| {
        Error::Decode {
            file: file.name().to_string(),
            variable: var.path.clone(),
            chunk: indices.to_vec(),
            reason,
        }
    })
}

/// All of `var`'s elements, decoded, in C order and the stored byte order; never-written
/// chunks hold the fill value.
///
/// # Errors
/// [`Error::Unsupported`] above [`MAX_LOADED_BYTES`] or for a filter this crate cannot
/// decode; [`Error::Decode`] for a corrupt chunk; read errors from the source.
pub(crate) fn load(file: &SourceFile, var: &Variable, refs: &DataRefs) -> Result<Vec<u8>> {
    let elem = var.dtype.size.max(1);
    let elements = var
        .shape
        .iter()
        .try_fold(1u64, |a, &s| a.checked_mul(s))
        .unwrap_or(u64::MAX);
    let total = elements.saturating_mul(elem as u64);
    if total > MAX_LOADED_BYTES {
        return Err(unsupported(
            file,
            var,
            format!("{total} bytes is too large to load (limit {MAX_LOADED_BYTES})"),
        ));
    }
    let total = total as usize;
    let fill: Vec<u8> = match &var.fill_value {
        Some(f) if f.bytes.len() == elem => f.bytes.clone(),
        _ => vec![0; elem],
    };
    let short = |what: &str, got: usize| {
        unsupported(
            file,
            var,
            format!("{what} holds {got} bytes, expected {total}"),
        )
    };
    match refs {
        DataRefs::Contiguous { range: None } => Ok(fill.repeat(total / elem)),
        DataRefs::Contiguous { range: Some(r) } => {
            let bytes = file.read_range(r.offset, r.length)?;
            bytes
                .get(..total)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| short("the contiguous data", bytes.len()))
        }
        DataRefs::Compact { bytes } => bytes
            .get(..total)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| short("the compact data", bytes.len())),
        DataRefs::Chunked {
            chunk_shape,
            chunks,
            ..
        } => {
            let mut out = fill.repeat(total / elem);
            let chunk_elements: u64 = chunk_shape.iter().product();
            let chunk_bytes = (chunk_elements as usize).saturating_mul(elem);
            for c in chunks {
                let decoded =
                    decode_chunk(file, var, &c.indices, c.offset, c.length, c.filter_mask)?;
                if decoded.len() < chunk_bytes {
                    return Err(Error::Decode {
                        file: file.name().to_string(),
                        variable: var.path.clone(),
                        chunk: c.indices.clone(),
                        reason: format!(
                            "decodes to {} bytes, expected {chunk_bytes}",
                            decoded.len()
                        ),
                    });
                }
                let origin: Vec<u64> = c
                    .indices
                    .iter()
                    .zip(chunk_shape)
                    .map(|(i, s)| i * s)
                    .collect();
                copy_block(&mut out, &var.shape, &decoded, chunk_shape, &origin, elem);
            }
            Ok(out)
        }
    }
}

/// Copies the part of a C-order block of `block_shape` (at `origin`) that lies inside a
/// C-order array of `shape` into it. A block or array buffer shorter than its shape says (a
/// corrupt chunk) copies nothing; the values then read as what `dst` held.
pub(crate) fn copy_block(
    dst: &mut [u8],
    shape: &[u64],
    block: &[u8],
    block_shape: &[u64],
    origin: &[u64],
    elem: usize,
) {
    let held = Region::new(
        origin
            .iter()
            .zip(block_shape)
            .map(|(&o, &b)| o..o + b)
            .collect(),
    );
    let whole = Region::whole(shape);
    if block.len() < held.num_elements() as usize * elem
        || dst.len() < whole.num_elements() as usize * elem
    {
        return;
    }
    if let Some(what) = whole.intersect(&held) {
        copy_region(block, &held, dst, &whole, &what, elem);
    }
}

/// Every element of C-order values of numpy `dtype` as f64 (`None` for other kinds).
pub(crate) fn values_as_f64(dtype: &str, bytes: &[u8]) -> Option<Vec<f64>> {
    let size = crate::array::dtype_size(dtype);
    if size == 0 {
        return None;
    }
    bytes
        .chunks_exact(size)
        .map(|b| first_as_f64(dtype, b))
        .collect()
}

/// The first element of C-order values of numpy `dtype` as f64.
pub(crate) fn first_as_f64(dtype: &str, bytes: &[u8]) -> Option<f64> {
    let size = crate::array::dtype_size(dtype);
    let b = bytes.get(..size)?;
    let mut le = b.to_vec();
    if dtype.starts_with('>') {
        le.reverse();
    }
    match chunkmill_store::DataType::from_typestr(dtype).ok()? {
        // Booleans are not coordinates to order by.
        chunkmill_store::DataType::Bool => None,
        t => t.read_f64(&le),
    }
}

/// `values` as C-order elements of the little-endian numpy `dtype` (`<f8`, `<i4`, ...):
/// `None` for a type that is not a number, or a value the type cannot hold exactly (a
/// fraction or an out-of-range number for an integer type, a float64 that float32 rounds).
pub(crate) fn f64_as_values(dtype: &str, values: &[f64]) -> Option<Vec<u8>> {
    use chunkmill_store::DataType;
    let t = DataType::from_typestr(dtype).ok()?;
    if !matches!(t, DataType::Int(_) | DataType::UInt(_) | DataType::Float(_)) {
        return None;
    }
    let size = t.size()?;
    let mut out = vec![0u8; values.len() * size];
    for (&v, slot) in values.iter().zip(out.chunks_exact_mut(size)) {
        t.write_f64(v, slot).ok()?;
        let back = t.read_f64(slot)?;
        if back != v && !(v.is_nan() && back.is_nan()) {
            return None;
        }
    }
    Some(out)
}

/// Joins C-order arrays along `axis`: `parts[i]` has shape `shapes[i]`; all agree off `axis`.
pub(crate) fn concat_values(
    parts: &[&[u8]],
    shapes: &[Vec<u64>],
    axis: usize,
    elem: usize,
) -> Vec<u8> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(total);
    let Some(first) = shapes.first() else {
        return out;
    };
    let outer: u64 = first[..axis].iter().product();
    let inner: u64 = first[axis + 1..].iter().product();
    for o in 0..outer {
        for (p, s) in parts.iter().zip(shapes) {
            let block = (s[axis] * inner) as usize * elem;
            let start = o as usize * block;
            if let Some(b) = p.get(start..start + block) {
                out.extend_from_slice(b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_blocks_are_clipped() {
        // A 3×3 array of u8 from 2×2 blocks.
        let mut dst = vec![0u8; 9];
        let shape = [3, 3];
        for (bi, bj, v) in [(0, 0, 1u8), (0, 1, 2), (1, 0, 3), (1, 1, 4)] {
            copy_block(&mut dst, &shape, &[v; 4], &[2, 2], &[bi * 2, bj * 2], 1);
        }
        assert_eq!(dst, vec![1, 1, 2, 1, 1, 2, 3, 3, 4]);
    }

    #[test]
    fn concat_along_inner_axis() {
        let a = [1u8, 2, 3, 4]; // 2×2
        let b = [5u8, 6]; // 2×1
        let out = concat_values(&[&a, &b], &[vec![2, 2], vec![2, 1]], 1, 1);
        assert_eq!(out, vec![1, 2, 5, 3, 4, 6]);
        let out = concat_values(&[&a, &[9, 9]], &[vec![2, 2], vec![1, 2]], 0, 1);
        assert_eq!(out, vec![1, 2, 3, 4, 9, 9]);
    }
}
