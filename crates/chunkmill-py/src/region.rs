//! Boxes of an n-dimensional array: the chunks a box touches and the copy of each chunk's part
//! of it.

/// The grid indices of every chunk of `chunk_shape` that the box `[start, stop)` touches, in
/// C order; none when the box is empty.
pub fn chunks_touching(start: &[u64], stop: &[u64], chunk_shape: &[u64]) -> Vec<Vec<u64>> {
    let ranges: Vec<(u64, u64)> = start
        .iter()
        .zip(stop)
        .zip(chunk_shape)
        .map(|((&a, &b), &c)| (a / c.max(1), b.div_ceil(c.max(1))))
        .collect();
    if ranges.iter().any(|(lo, hi)| lo >= hi) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut current: Vec<u64> = ranges.iter().map(|r| r.0).collect();
    loop {
        out.push(current.clone());
        // Odometer step, last axis fastest.
        let mut axis = ranges.len();
        loop {
            if axis == 0 {
                return out;
            }
            axis -= 1;
            current[axis] += 1;
            if current[axis] < ranges[axis].1 {
                break;
            }
            current[axis] = ranges[axis].0;
        }
    }
}

/// C-order strides, in elements, of an array of `shape`.
fn strides(shape: &[u64]) -> Vec<u64> {
    let mut s = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// `out`, the box `[start, stop)` (C order), cut into one piece per chunk of `chunks` when
/// every chunk lies wholly inside the box and fills one contiguous run of it (it spans the
/// box on every axis after its first that is not 1 element thick): each piece is then
/// exactly that chunk's decoded bytes. `None` otherwise.
pub fn whole_chunk_pieces<'a>(
    chunks: &[Vec<u64>],
    start: &[u64],
    stop: &[u64],
    chunk_shape: &[u64],
    out: &'a mut [u8],
) -> Option<Vec<(Vec<u64>, &'a mut [u8])>> {
    let box_shape: Vec<u64> = start.iter().zip(stop).map(|(a, b)| b - a).collect();
    let elements: u64 = box_shape.iter().product();
    if elements == 0 || !(out.len() as u64).is_multiple_of(elements) {
        return None;
    }
    let elem = out.len() as u64 / elements;
    let box_strides = strides(&box_shape);
    let chunk_len = chunk_shape.iter().product::<u64>() * elem;
    let first_thick = chunk_shape
        .iter()
        .position(|&c| c != 1)
        .unwrap_or(chunk_shape.len());
    let spans_rest = chunk_shape
        .iter()
        .zip(&box_shape)
        .skip(first_thick + 1)
        .all(|(c, b)| c == b);
    if !spans_rest {
        return None;
    }
    let mut placed: Vec<(u64, &Vec<u64>)> = Vec::with_capacity(chunks.len());
    for indices in chunks {
        let mut offset = 0;
        for i in 0..chunk_shape.len() {
            let origin = indices[i] * chunk_shape[i];
            if origin < start[i] || origin + chunk_shape[i] > stop[i] {
                return None;
            }
            offset += (origin - start[i]) * box_strides[i];
        }
        placed.push((offset * elem, indices));
    }
    placed.sort_unstable_by_key(|(offset, _)| *offset);
    // Whole chunks that touch the box tile it; checked anyway, as a gap or an overlap would
    // leave bytes unwritten or write them twice.
    let tiles = placed
        .iter()
        .enumerate()
        .all(|(i, (offset, _))| *offset == i as u64 * chunk_len)
        && placed.len() as u64 * chunk_len == out.len() as u64;
    if !tiles {
        return None;
    }
    let mut rest = out;
    let mut pieces = Vec::with_capacity(placed.len());
    for (_, indices) in placed {
        let (piece, tail) = std::mem::take(&mut rest).split_at_mut(chunk_len as usize);
        pieces.push((indices.clone(), piece));
        rest = tail;
    }
    Some(pieces)
}

/// Where one chunk is: its first element's position and its (nominal) extent.
pub struct Placed<'a> {
    /// The chunk's elements, C order, `elem` bytes each.
    pub bytes: &'a [u8],
    /// Position of its first element in the array.
    pub origin: &'a [u64],
    /// Its extent along each axis.
    pub shape: &'a [u64],
}

/// Copies the part of `chunk` inside the box `[start, stop)` into `out`, the box's elements
/// in C order (`elem` bytes each).
pub fn copy_into_box(out: &mut [u8], start: &[u64], stop: &[u64], chunk: &Placed<'_>, elem: usize) {
    let n = start.len();
    if n == 0 {
        out[..elem].copy_from_slice(&chunk.bytes[..elem]);
        return;
    }
    let lo: Vec<u64> = (0..n).map(|i| start[i].max(chunk.origin[i])).collect();
    let hi: Vec<u64> = (0..n)
        .map(|i| stop[i].min(chunk.origin[i] + chunk.shape[i]))
        .collect();
    if lo.iter().zip(&hi).any(|(l, h)| l >= h) {
        return;
    }
    let box_shape: Vec<u64> = start.iter().zip(stop).map(|(a, b)| b - a).collect();
    let (dst_strides, src_strides) = (strides(&box_shape), strides(chunk.shape));
    let row = (hi[n - 1] - lo[n - 1]) as usize * elem;
    let mut idx = lo.clone();
    loop {
        let (mut src, mut dst) = (0u64, 0u64);
        for i in 0..n {
            src += (idx[i] - chunk.origin[i]) * src_strides[i];
            dst += (idx[i] - start[i]) * dst_strides[i];
        }
        let (src, dst) = (src as usize * elem, dst as usize * elem);
        out[dst..dst + row].copy_from_slice(&chunk.bytes[src..src + row]);
        // Next row: odometer over every axis but the last.
        let mut axis = n - 1;
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            idx[axis] += 1;
            if idx[axis] < hi[axis] {
                break;
            }
            idx[axis] = lo[axis];
        }
    }
}
