//! Copying a box of elements between two C-ordered buffers of different shapes.

use crate::Region;

/// Copy the elements of `what` (a region of the array lying inside both `from_region` and
/// `to_region`) from the buffer `from` holding `from_region` into the buffer `to` holding
/// `to_region`. Runs of elements contiguous in both buffers are copied with one `memcpy`.
///
/// # Panics
/// When a buffer is shorter than its region says: that is a bug in the caller, not bad input.
pub fn copy_region(
    from: &[u8],
    from_region: &Region,
    to: &mut [u8],
    to_region: &Region,
    what: &Region,
    item_size: usize,
) {
    let ndim = what.ndim();
    if what.is_empty() {
        return;
    }
    if ndim == 0 {
        to[..item_size].copy_from_slice(&from[..item_size]);
        return;
    }
    let from_shape = from_region.shape();
    let to_shape = to_region.shape();
    let box_shape = what.shape();
    let from_start: Vec<u64> = what
        .ranges()
        .iter()
        .zip(from_region.ranges())
        .map(|(w, f)| w.start - f.start)
        .collect();
    let to_start: Vec<u64> = what
        .ranges()
        .iter()
        .zip(to_region.ranges())
        .map(|(w, t)| w.start - t.start)
        .collect();

    // Fold trailing axes that are whole in both buffers into one contiguous run.
    let mut run_axis = ndim - 1;
    let mut run_elems = box_shape[ndim - 1];
    while run_axis > 0
        && box_shape[run_axis] == from_shape[run_axis]
        && box_shape[run_axis] == to_shape[run_axis]
    {
        run_axis -= 1;
        run_elems *= box_shape[run_axis];
    }
    let run_bytes = run_elems as usize * item_size;
    if run_bytes == 0 {
        return;
    }

    let strides = |shape: &[u64]| -> Vec<u64> {
        let mut s = vec![1u64; ndim];
        for axis in (0..ndim - 1).rev() {
            s[axis] = s[axis + 1] * shape[axis + 1];
        }
        s
    };
    let from_strides = strides(&from_shape);
    let to_strides = strides(&to_shape);

    // Each point of the outer axes [0, run_axis) of the box is one run.
    if run_axis == 0 {
        let f = offset(&from_start, &from_strides, &[]) * item_size;
        let t = offset(&to_start, &to_strides, &[]) * item_size;
        to[t..t + run_bytes].copy_from_slice(&from[f..f + run_bytes]);
        return;
    }
    // The axis just outside the runs is walked with a running offset: a rechunk's runs are
    // short (a target chunk's last axis), and working each run's offset out over every axis
    // cost more than copying it.
    let rows_axis = run_axis - 1;
    let rows = box_shape[rows_axis] as usize;
    let from_step = from_strides[rows_axis] as usize * item_size;
    let to_step = to_strides[rows_axis] as usize * item_size;
    let outer: Vec<u64> = box_shape[..rows_axis].to_vec();
    let mut index = vec![0u64; rows_axis];
    loop {
        let f = offset(&from_start, &from_strides, &index) * item_size;
        let t = offset(&to_start, &to_strides, &index) * item_size;
        let from_rows = &from[f..f + (rows - 1) * from_step + run_bytes];
        let to_rows = &mut to[t..t + (rows - 1) * to_step + run_bytes];
        for (src, dst) in from_rows.chunks(from_step).zip(to_rows.chunks_mut(to_step)) {
            dst[..run_bytes].copy_from_slice(&src[..run_bytes]);
        }

        let mut axis = rows_axis;
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < outer[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

/// Elements from a buffer's start to the box's element at `index` on the leading axes (the
/// box's first element on the others), `start` being the box's corner in the buffer.
fn offset(start: &[u64], strides: &[u64], index: &[u64]) -> usize {
    let mut at = 0u64;
    for (axis, (&s, &stride)) in start.iter().zip(strides).enumerate() {
        at += (s + index.get(axis).copied().unwrap_or(0)) * stride;
    }
    at as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Element by element, each index worked out on its own: the oracle for the run copy.
    fn copy_each_element(
        from: &[u8],
        from_region: &Region,
        to: &mut [u8],
        to_region: &Region,
        what: &Region,
    ) {
        let flat = |region: &Region, point: &[u64]| {
            region
                .ranges()
                .iter()
                .zip(point)
                .fold(0, |acc, (r, &p)| acc * (r.end - r.start) + (p - r.start))
                as usize
        };
        let shape = what.shape();
        let count: u64 = shape.iter().product();
        for n in 0..count {
            let mut rest = n;
            let mut point = vec![0; shape.len()];
            for (axis, len) in shape.iter().enumerate().rev() {
                point[axis] = what.ranges()[axis].start + rest % len;
                rest /= len;
            }
            to[flat(to_region, &point)] = from[flat(from_region, &point)];
        }
    }

    #[test]
    fn boxes_of_every_run_shape_copy_as_element_by_element() {
        // 4-d buffers, boxes whose runs fold 0 to 3 trailing axes, with 1 to 3 outer axes.
        let from_region = Region::new(vec![0..3, 2..7, 0..4, 1..7]);
        let from: Vec<u8> = (0..from_region.num_elements()).map(|i| i as u8).collect();
        let cases = [
            (vec![0..3, 2..7, 0..4, 1..7], vec![0..3, 2..7, 0..4, 1..7]),
            (vec![0..3, 2..7, 0..4, 2..5], vec![0..3, 2..7, 0..4, 2..5]),
            (vec![1..3, 3..6, 0..4, 1..7], vec![0..3, 3..6, 0..4, 1..7]),
            (vec![0..2, 2..7, 1..3, 1..7], vec![0..3, 2..9, 1..3, 1..7]),
            (vec![2..3, 4..5, 0..4, 1..7], vec![2..3, 4..5, 0..4, 1..7]),
            (vec![0..3, 2..7, 1..2, 3..4], vec![0..3, 1..8, 0..2, 3..6]),
        ];
        for (what, to_region) in cases {
            let (what, to_region) = (Region::new(what), Region::new(to_region));
            let mut want = vec![0u8; to_region.num_elements() as usize];
            copy_each_element(&from, &from_region, &mut want, &to_region, &what);
            let mut got = vec![0u8; want.len()];
            copy_region(&from, &from_region, &mut got, &to_region, &what, 1);
            assert_eq!(got, want, "box {what:?} into {to_region:?}");
        }
    }

    #[test]
    fn copies_a_sub_box() {
        // 4x5 source holding 0..20, copy [1..3, 2..5] into a 3x3 target placed at [1..4, 2..5].
        let from: Vec<u8> = (0..20).collect();
        let from_region = Region::whole(&[4, 5]);
        let to_region = Region::new(vec![1..4, 2..5]);
        let mut to = vec![0u8; 9];
        let what = Region::new(vec![1..3, 2..5]);
        copy_region(&from, &from_region, &mut to, &to_region, &what, 1);
        assert_eq!(to, vec![7, 8, 9, 12, 13, 14, 0, 0, 0]);
    }
}
