//! A block cache in front of any [`RangeSource`].
//!
//! HDF5 metadata is read in many small pieces: an object header here, a B-tree node there,
//! 8 bytes of a heap. Over an object store each would be a request. [`BlockCache`] rounds every
//! small read out to aligned blocks (64 KiB by default), fetches the missing blocks of one read
//! in a single request per contiguous run, and keeps the most recently used blocks up to a byte
//! budget. Reads at least `bypass_len` long (chunk data, big index blocks) go straight to the
//! source and are not cached.
//!
//! It is safe to share between threads. The lock guards only the LRU map, never a source read;
//! two threads missing the same block at the same moment may both fetch it, which costs a
//! request but never a wrong answer.

use std::fmt;
use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use lru::LruCache;
use parking_lot::Mutex;

use crate::source::{check_range, RangeSource};

/// Default block size: 64 KiB.
pub const DEFAULT_BLOCK_SIZE: usize = 64 * 1024;
/// Default cache budget: 16 MiB (256 blocks of 64 KiB).
pub const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Counters of a [`BlockCache`], for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Blocks served from the cache.
    pub hits: u64,
    /// Blocks that had to be fetched.
    pub misses: u64,
    /// Requests sent to the wrapped source (coalesced block runs plus bypassed reads).
    pub source_reads: u64,
    /// Bytes fetched from the wrapped source.
    pub source_bytes: u64,
    /// Reads that bypassed the cache because they were large.
    pub bypassed_reads: u64,
}

/// An LRU cache of aligned blocks in front of another [`RangeSource`]; itself a `RangeSource`.
pub struct BlockCache {
    inner: Arc<dyn RangeSource>,
    block_size: u64,
    bypass_len: usize,
    blocks: Mutex<LruCache<u64, Bytes>>,
    hits: AtomicU64,
    misses: AtomicU64,
    source_reads: AtomicU64,
    source_bytes: AtomicU64,
    bypassed_reads: AtomicU64,
}

impl BlockCache {
    /// A cache of [`DEFAULT_BLOCK_SIZE`] blocks up to [`DEFAULT_CACHE_BYTES`].
    pub fn new(inner: Arc<dyn RangeSource>) -> Self {
        Self::with_capacity(inner, DEFAULT_BLOCK_SIZE, DEFAULT_CACHE_BYTES)
    }

    /// A cache of `block_size`-byte blocks holding at most `max_bytes` (at least one block).
    /// Reads of four blocks or more bypass the cache; see [`BlockCache::with_bypass_len`].
    pub fn with_capacity(inner: Arc<dyn RangeSource>, block_size: usize, max_bytes: usize) -> Self {
        let block_size = block_size.max(512);
        let max_blocks = NonZeroUsize::new(max_bytes / block_size).unwrap_or(NonZeroUsize::MIN);
        Self {
            inner,
            block_size: block_size as u64,
            bypass_len: block_size.saturating_mul(4),
            blocks: Mutex::new(LruCache::new(max_blocks)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            source_reads: AtomicU64::new(0),
            source_bytes: AtomicU64::new(0),
            bypassed_reads: AtomicU64::new(0),
        }
    }

    /// Reads of `bypass_len` bytes or more go straight to the source, uncached.
    #[must_use]
    pub fn with_bypass_len(mut self, bypass_len: usize) -> Self {
        self.bypass_len = bypass_len.max(1);
        self
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            source_reads: self.source_reads.load(Ordering::Relaxed),
            source_bytes: self.source_bytes.load(Ordering::Relaxed),
            bypassed_reads: self.bypassed_reads.load(Ordering::Relaxed),
        }
    }

    fn fetch(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        self.source_reads.fetch_add(1, Ordering::Relaxed);
        self.source_bytes.fetch_add(len as u64, Ordering::Relaxed);
        let bytes = self.inner.read_range(offset, len)?;
        if bytes.len() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("asked for {len} bytes at {offset}, got {}", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// Fetches blocks `first..=last` in one request and splits them into blocks.
    fn fetch_run(&self, first: u64, last: u64) -> io::Result<Vec<Bytes>> {
        let size = self.inner.size();
        let start = first * self.block_size;
        let end = ((last + 1) * self.block_size).min(size);
        let len = usize::try_from(end - start)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "block run too large"))?;
        let run = self.fetch(start, len)?;
        let bs = self.block_size as usize;
        Ok((0..=(last - first) as usize)
            .map(|i| run.slice(i * bs..((i + 1) * bs).min(run.len())))
            .collect())
    }
}

impl fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockCache")
            .field("inner", &self.inner)
            .field("block_size", &self.block_size)
            .field("stats", &self.stats())
            .finish()
    }
}

impl RangeSource for BlockCache {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_range(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        check_range(offset, len, self.size())?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        if len >= self.bypass_len {
            self.bypassed_reads.fetch_add(1, Ordering::Relaxed);
            return self.fetch(offset, len);
        }
        let bs = self.block_size;
        let end = offset + len as u64;
        let first = offset / bs;
        let last = (end - 1) / bs;

        let mut found: Vec<Option<Bytes>> = {
            let mut blocks = self.blocks.lock();
            (first..=last).map(|b| blocks.get(&b).cloned()).collect()
        };
        let missing = found.iter().filter(|b| b.is_none()).count() as u64;
        self.hits
            .fetch_add(found.len() as u64 - missing, Ordering::Relaxed);
        if missing > 0 {
            self.misses.fetch_add(missing, Ordering::Relaxed);
            let mut fetched = Vec::new();
            let mut i = 0;
            while i < found.len() {
                if found[i].is_some() {
                    i += 1;
                    continue;
                }
                let run_start = i;
                while i < found.len() && found[i].is_none() {
                    i += 1;
                }
                let blocks = self.fetch_run(first + run_start as u64, first + i as u64 - 1)?;
                for (k, block) in blocks.into_iter().enumerate() {
                    fetched.push((first + (run_start + k) as u64, block.clone()));
                    found[run_start + k] = Some(block);
                }
            }
            let mut blocks = self.blocks.lock();
            for (index, block) in fetched {
                blocks.put(index, block);
            }
        }

        let start_in_first = (offset - first * bs) as usize;
        if first == last {
            let block = found.swap_remove(0).unwrap_or_default();
            return slice_checked(&block, start_in_first, len);
        }
        let mut out = BytesMut::with_capacity(len);
        for (k, block) in found.into_iter().enumerate() {
            let block = block.unwrap_or_default();
            let from = if k == 0 { start_in_first } else { 0 };
            let want = (len - out.len()).min(block.len().saturating_sub(from));
            out.extend_from_slice(&block[from..from + want]);
        }
        if out.len() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "cached blocks cover {} of {len} bytes at {offset}",
                    out.len()
                ),
            ));
        }
        Ok(out.freeze())
    }
}

fn slice_checked(block: &Bytes, start: usize, len: usize) -> io::Result<Bytes> {
    if start + len > block.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "block holds {} bytes, need {}..{}",
                block.len(),
                start,
                start + len
            ),
        ));
    }
    Ok(block.slice(start..start + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemorySource;

    #[derive(Debug)]
    struct Counting {
        inner: MemorySource,
        reads: Mutex<Vec<(u64, usize)>>,
    }

    impl RangeSource for Counting {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn read_range(&self, offset: u64, len: usize) -> io::Result<Bytes> {
            self.reads.lock().push((offset, len));
            self.inner.read_range(offset, len)
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn small_reads_are_served_from_aligned_blocks_and_runs_are_coalesced() -> io::Result<()> {
        let bytes = data(10_000);
        let counting = Arc::new(Counting {
            inner: MemorySource::new("mem", bytes.clone()),
            reads: Mutex::new(Vec::new()),
        });
        let cache = BlockCache::with_capacity(counting.clone(), 1024, 4096).with_bypass_len(4000);
        assert_eq!(cache.read_range(10, 20)?.as_ref(), &bytes[10..30]);
        assert_eq!(cache.read_range(100, 8)?.as_ref(), &bytes[100..108]);
        // Spans blocks 0..=2: block 0 cached, blocks 1 and 2 fetched in one request.
        assert_eq!(cache.read_range(1000, 2000)?.as_ref(), &bytes[1000..3000]);
        // The tail block is short.
        assert_eq!(cache.read_range(9990, 10)?.as_ref(), &bytes[9990..10_000]);
        // A large read bypasses the cache.
        assert_eq!(cache.read_range(0, 5000)?.as_ref(), &bytes[0..5000]);
        assert_eq!(
            *counting.reads.lock(),
            vec![(0, 1024), (1024, 2048), (9216, 784), (0, 5000)]
        );
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.bypassed_reads), (2, 4, 1));
        assert!(cache.read_range(9999, 2).is_err());
        Ok(())
    }

    #[test]
    fn the_cache_is_bounded_and_shared_between_threads() -> io::Result<()> {
        let bytes = data(1 << 16);
        let source: Arc<dyn RangeSource> = Arc::new(MemorySource::new("mem", bytes.clone()));
        let cache = Arc::new(BlockCache::with_capacity(source, 512, 2048));
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let cache = cache.clone();
                let bytes = &bytes;
                scope.spawn(move || {
                    for i in 0..500u64 {
                        let offset = (i * 97 + t * 13) % 60_000;
                        let got = cache.read_range(offset, 100);
                        assert_eq!(
                            got.ok().as_deref(),
                            Some(&bytes[offset as usize..offset as usize + 100])
                        );
                    }
                });
            }
        });
        assert!(cache.blocks.lock().len() <= 4);
        Ok(())
    }
}
