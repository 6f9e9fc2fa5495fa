//! Buffers a worker thread reuses from one task to the next of the same stage: a block of
//! values, a chunk's stored bytes, an encoded output chunk. A buffer of tens of megabytes
//! allocated afresh per task is mapped afresh, faulted in page by page and unmapped again
//! (the system time of a run went there); reused, its pages stay in place.
//!
//! The executor keeps a thread's reservation from one task to the next of a stage and calls
//! [`release_idle`] (through the runner) before the thread waits or starts a task of another
//! stage, so what is kept here is always inside a reservation: at most the buffers one task
//! held at once, which its projection counts.

use std::cell::RefCell;

/// At most this many spare buffers of each kind per thread: a task holds a few blocks (its
/// reads, an output) at once; more would only be kept, never reused.
const MAX_SPARES: usize = 8;

thread_local! {
    static VALUES: RefCell<Vec<Vec<f64>>> = const { RefCell::new(Vec::new()) };
    static BYTES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take<T: Copy + Default>(spares: &RefCell<Vec<Vec<T>>>, n: usize) -> Vec<T> {
    let mut v = pick(spares, n);
    // Shrinking writes nothing; growing writes only the new tail.
    if v.len() >= n {
        v.truncate(n);
    } else {
        v.resize(n, T::default());
    }
    v
}

/// A spare of at least `n` elements' capacity as it was left (or a new empty one).
fn pick<T>(spares: &RefCell<Vec<Vec<T>>>, n: usize) -> Vec<T> {
    let mut spares = spares.borrow_mut();
    // The smallest spare that holds `n` and is less than twice its size: a block's buffer
    // never serves a tile while the next block is allocated beside it, so what is kept stays
    // within what a task holds at once (its projection), at most twice each buffer.
    let fits = spares
        .iter()
        .enumerate()
        .filter(|(_, v)| v.capacity() >= n && v.capacity() / 2 <= n)
        .min_by_key(|(_, v)| v.capacity())
        .map(|(i, _)| i);
    match fits {
        Some(i) => spares.swap_remove(i),
        None => Vec::with_capacity(n),
    }
}

fn give<T>(spares: &RefCell<Vec<Vec<T>>>, v: Vec<T>) {
    if v.capacity() == 0 {
        return;
    }
    let mut spares = spares.borrow_mut();
    spares.push(v);
    if spares.len() > MAX_SPARES {
        if let Some(i) = spares
            .iter()
            .enumerate()
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)
        {
            spares.swap_remove(i);
        }
    }
}

/// `n` values whose contents are whatever the buffer last held: the caller overwrites all.
pub(crate) fn values(n: usize) -> Vec<f64> {
    VALUES.with(|s| take(s, n))
}

/// `n` values, every one `fill`.
pub(crate) fn values_filled(n: usize, fill: f64) -> Vec<f64> {
    let mut v = values(n);
    v.fill(fill);
    v
}

/// A buffer of values back for reuse.
pub(crate) fn give_values(v: Vec<f64>) {
    VALUES.with(|s| give(s, v));
}

/// `n` bytes whose contents are whatever the buffer last held: the caller overwrites all.
pub(crate) fn bytes(n: usize) -> Vec<u8> {
    BYTES.with(|s| take(s, n))
}

/// A buffer with room for `n` bytes, its length and contents as it was left: for a caller
/// that sizes it to what it reads (nothing is written here).
pub(crate) fn bytes_as_left(n: usize) -> Vec<u8> {
    BYTES.with(|s| pick(s, n))
}

/// A buffer of bytes back for reuse.
pub(crate) fn give_bytes(v: Vec<u8>) {
    BYTES.with(|s| give(s, v));
}

/// Drop every buffer this thread keeps and give the heap's free pages back (the runner's
/// `release_idle`): a task's freed memory is kept for the next task of the stage on the same
/// thread, within the reservation the thread keeps until it calls this.
pub fn release_idle() {
    VALUES.with(|s| s.borrow_mut().clear());
    BYTES.with(|s| s.borrow_mut().clear());
    chunkmill_exec::memory::return_free_heap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_reused_and_released() {
        release_idle();
        let mut v = values(1000);
        v[999] = 7.0;
        let at = v.as_ptr();
        give_values(v);
        // A smaller request reuses the same allocation without writing it.
        let w = values(500);
        assert_eq!(w.as_ptr(), at);
        assert_eq!(w.len(), 500);
        give_values(w);
        let filled = values_filled(2000, f64::NAN);
        assert!(filled.iter().all(|x| x.is_nan()));
        give_values(filled);
        release_idle();
        assert!(VALUES.with(|s| s.borrow().is_empty()));
    }
}
