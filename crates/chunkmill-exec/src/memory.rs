//! Memory admission.
//!
//! The budget is what one worker process may hold (`--max-mem`) less what the process held
//! before any task started (its baseline: code, runtime, thread stacks), measured, not guessed.
//! Every task declares its projected peak (its plan stage's `projected_mem`: block, decoded and
//! encoded chunk buffers, codec overhead). A task starts only once its projection fits in what
//! the running tasks leave free:
//!
//! ```text
//!  max_mem ┌───────────────────────────────┐
//!          │ free                          │ ← a task waits until its projection fits here
//!          ├───────────────────────────────┤
//!          │ task 7 reservation            │
//!          ├───────────────────────────────┤
//!          │ task 6 reservation            │
//!          ├───────────────────────────────┤
//!          │ baseline (measured at start)  │
//!        0 └───────────────────────────────┘
//! ```
//!
//! Reservations are returned on drop, so a failing task gives its memory back too. The planner
//! has already refused any task that cannot fit alone, so waiting always ends.

use parking_lot::{Condvar, Mutex};

/// A pool of bytes tasks reserve before they run.
#[derive(Debug)]
pub struct MemoryPool {
    capacity: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

impl MemoryPool {
    /// A pool of `capacity` bytes.
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// The pool's size.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes reserved now.
    #[must_use]
    pub fn reserved(&self) -> u64 {
        *self.used.lock()
    }

    /// Reserve `bytes` if they fit now.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation<'_>> {
        let mut used = self.used.lock();
        if *used > 0 && *used + bytes > self.capacity {
            return None;
        }
        *used += bytes;
        Some(Reservation { pool: self, bytes })
    }

    /// Wait until `bytes` fit, then reserve them. A request larger than the whole pool waits
    /// only for the pool to be empty (the planner refuses such tasks before a run starts).
    pub fn reserve(&self, bytes: u64) -> Reservation<'_> {
        let mut used = self.used.lock();
        while *used > 0 && *used + bytes > self.capacity {
            self.freed.wait(&mut used);
        }
        *used += bytes;
        Reservation { pool: self, bytes }
    }
}

/// Bytes held for one running task; given back on drop.
#[derive(Debug)]
pub struct Reservation<'a> {
    pool: &'a MemoryPool,
    bytes: u64,
}

impl Reservation<'_> {
    /// Bytes this reservation holds.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Makes this reservation hold `bytes` instead, if they fit now: a smaller size always
    /// does; a larger one only when the pool has the difference free (as
    /// [`MemoryPool::try_reserve`], without waiting). False, and unchanged, otherwise.
    pub fn try_resize(&mut self, bytes: u64) -> bool {
        let mut used = self.pool.used.lock();
        if bytes > self.bytes && *used + (bytes - self.bytes) > self.pool.capacity {
            return false;
        }
        *used = *used - self.bytes + bytes;
        if bytes < self.bytes {
            self.pool.freed.notify_all();
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut used = self.pool.used.lock();
        *used -= self.bytes;
        self.pool.freed.notify_all();
    }
}

/// Resident memory of this process now, in bytes (Linux; 0 where it cannot be read).
#[must_use]
pub fn current_rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// What this process holds resident, in bytes, measured once the allocator has returned its
/// free heap pages to the system (without the trim, memory that reading the inputs used and
/// freed, a Parquet reference table, would stay resident under the allocator's high trim
/// threshold and count as held).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// Anonymous and shared pages: heap, stacks, what the process made.
    pub anonymous: u64,
    /// Pages mapped from files: the executable's code and the libraries'. How many are
    /// resident after the same work varies by a megabyte or more with the page cache (the
    /// kernel maps cached neighbours of a faulting page too).
    pub file: u64,
}

/// What this process holds now (Linux; the whole resident set as anonymous where the split
/// cannot be read).
#[must_use]
pub fn held_memory() -> Held {
    return_free_heap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    match (field("RssAnon:"), field("RssFile:"), field("RssShmem:")) {
        (Some(anon), Some(file), shmem) => Held {
            anonymous: anon + shmem.unwrap_or(0),
            file,
        },
        _ => Held {
            anonymous: current_rss(),
            file: 0,
        },
    }
}

/// Returns the heap's free pages to the system. The binary keeps up to 128 MiB of free heap
/// per arena so that a task's next chunk reuses the last one's pages; between stages, whose
/// tasks hold buffers of other sizes, that kept memory is nobody's and would count against
/// `--max-mem` beside the next stage's reservations.
pub fn return_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only releases free pages of the heap; it takes the allocator's locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocations of this many bytes or more are mappings of their own, which glibc resizes in
/// place (mremap) and returns to the system on free; smaller ones come from the heap. The
/// binary sets it (`mallopt(M_MMAP_THRESHOLD)`, glibc's largest) so that it holds whatever
/// glibc would otherwise have moved it to.
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Peak resident memory of this process so far, in bytes (Linux `VmHWM`; 0 where unknown).
#[must_use]
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The highest peak resident memory of any child process this process has waited for (the
/// `worker` processes of the `processes` executor), in bytes (0 where unknown).
#[must_use]
#[allow(unsafe_code)]
pub fn peak_rss_of_children() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we own and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) != 0 {
            return 0;
        }
        usage
    };
    // Linux reports kilobytes.
    u64::try_from(usage.ru_maxrss).map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn never_over_capacity() {
        let pool = Arc::new(MemoryPool::new(100));
        let peak = Arc::new(AtomicU64::new(0));
        std::thread::scope(|s| {
            for i in 0..8 {
                let pool = pool.clone();
                let peak = peak.clone();
                s.spawn(move || {
                    for _ in 0..50 {
                        let _r = pool.reserve(30 + i);
                        peak.fetch_max(pool.reserved(), Ordering::SeqCst);
                        std::thread::yield_now();
                    }
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 100);
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn a_reservation_shrinks_always_and_grows_only_into_free_memory() {
        let pool = MemoryPool::new(100);
        let mut a = pool.reserve(40);
        let b = pool.reserve(50);
        assert!(!a.try_resize(51), "only 10 free");
        assert_eq!((a.bytes(), pool.reserved()), (40, 90));
        assert!(a.try_resize(50));
        assert_eq!((a.bytes(), pool.reserved()), (50, 100));
        assert!(a.try_resize(20));
        assert_eq!((a.bytes(), pool.reserved()), (20, 70));
        // What the shrink freed is there for a waiting reservation.
        let c = pool.try_reserve(30);
        assert!(c.is_some());
        drop((a, b, c));
        assert_eq!(pool.reserved(), 0);
    }
}
