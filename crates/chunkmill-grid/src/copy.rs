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

    let strides = |shape: &[u64]| -> Vec<u64> {
        let mut s = vec![1u64; ndim];
        for axis in (0..ndim - 1).rev() {
            s[axis] = s[axis + 1] * shape[axis + 1];
        }
        s
    };
    let from_strides = strides(&from_shape);
    let to_strides = strides(&to_shape);

    // Iterate the outer axes [0, run_axis) of the box; each point is one run.
    let outer: Vec<u64> = box_shape[..run_axis].to_vec();
    let mut index = vec![0u64; run_axis];
    loop {
        let mut f = 0u64;
        let mut t = 0u64;
        for axis in 0..ndim {
            let i = if axis < run_axis { index[axis] } else { 0 };
            f += (from_start[axis] + i) * from_strides[axis];
            t += (to_start[axis] + i) * to_strides[axis];
        }
        let f = f as usize * item_size;
        let t = t as usize * item_size;
        to[t..t + run_bytes].copy_from_slice(&from[f..f + run_bytes]);

        // Advance the outer index in C order.
        let mut axis = run_axis;
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

#[cfg(test)]
mod tests {
    use super::*;

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
