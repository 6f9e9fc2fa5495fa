//! The copy task: read one block of the input (decoding every input chunk it meets, whole, once),
//! assemble it in one buffer, then write every output chunk inside it.
//!
//! What it holds at its peak is exactly what [`chunkmill_grid::rechunk::copy_task_memory`]
//! counts: the block, plus one input chunk encoded and decoded while reading, or one output
//! chunk cut out and encoded while writing.
//!
//! Inputs are endpoints of the plan: a Zarr array, intermediate pieces, or what `convert`
//! composes over them — references read by byte range, windows (a range per axis, reversed,
//! values converted), tiles, and the concatenation and shifted output of an append. Each
//! endpoint's chunk is read whole and decoded once per task. [`StageRunner`] also runs the
//! scan tasks of `virtualize` on executors ([`crate::virtualize`]).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chunkmill_exec::{Cancel, TaskError, TaskRunner, TaskStats};
use chunkmill_grid::{copy_region, Grid, Region};
use chunkmill_manifest::reader::FilePool;
use chunkmill_manifest::ChunkReader;
use chunkmill_plan::{
    AxisWindow, CopyStage, Endpoint, PieceCodec, Plan, Stage, StageKind, ValueMap,
};
use chunkmill_store::markers::Markers;
use chunkmill_store::zarr::ZarrArray;
use chunkmill_store::{ReadInto, ScratchIo, Store};
use parking_lot::Mutex;

/// An endpoint opened once per process and shared by every task that uses it.
enum Opened {
    Zarr(Box<ZarrArray>),
    Pieces {
        store: Store,
        prefix: String,
        codec: PieceCodec,
    },
    References(Box<ChunkReader>),
    Window {
        source: Arc<Opened>,
        source_grid: Grid,
        axes: Vec<AxisWindow>,
        values: Option<ValueMap>,
        /// Bytes per element as the source stores them.
        source_item: usize,
    },
    Concat {
        axis: usize,
        /// Each part, its grid, and where it starts along the axis.
        parts: Vec<(Arc<Opened>, Grid, u64)>,
    },
    /// Only ever a stage's output (an append's target): chunks written `chunk_offset` further.
    Shifted {
        inner: Arc<Opened>,
        chunk_offset: Vec<u64>,
    },
    Tiles {
        source: Arc<Opened>,
        source_grid: Grid,
        sizes: Vec<Option<u64>>,
        slots: Vec<Option<usize>>,
        counts: Vec<u64>,
    },
}

impl Opened {
    /// Bytes per element of what [`StageRunner::read_chunk`] returns.
    fn item_size(&self) -> usize {
        match self {
            Opened::Zarr(array) => array.info().item_size,
            Opened::Pieces { .. } => 0,
            Opened::References(reader) => reader.array().metadata.element_size(),
            Opened::Window {
                values,
                source_item,
                ..
            } => values
                .as_ref()
                .and_then(|v| crate::values::numeric(&v.to).ok())
                .and_then(|t| t.size())
                .unwrap_or(*source_item),
            Opened::Concat { parts, .. } => parts.first().map_or(0, |(p, _, _)| p.item_size()),
            Opened::Shifted { inner, .. } => inner.item_size(),
            Opened::Tiles { source, .. } => source.item_size(),
        }
    }
}

/// Which end of a stage an endpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Side {
    Input,
    Output,
}

/// Runs the tasks of every stage kind (copies, scans); opens each endpoint once, and reads
/// each reference file once.
///
/// A runner serves the stages of one plan: endpoints are cached by stage name and side.
pub struct StageRunner {
    opened: Mutex<HashMap<(String, Side), Arc<Opened>>>,
    references: Mutex<HashMap<String, Arc<chunkmill_manifest::VirtualDataset>>>,
    /// The data files references point into, opened once for the readers of every array.
    files: Arc<FilePool>,
    /// How intermediate pieces are written and read ([`super::intermediates`]).
    scratch_io: ScratchIo,
    /// Stages whose complete tasks remove the pieces only they read.
    removes_read_pieces: std::collections::HashSet<String>,
    /// What compute stages read and write, opened once for all their tasks, their pieces
    /// moved as `scratch_io` says.
    compute_io: chunkmill_compute::Io,
}

impl Default for StageRunner {
    fn default() -> Self {
        Self {
            opened: Mutex::default(),
            references: Mutex::default(),
            files: Arc::default(),
            scratch_io: ScratchIo::Direct,
            removes_read_pieces: std::collections::HashSet::new(),
            compute_io: chunkmill_compute::Io::default(),
        }
    }
}

impl StageRunner {
    /// A runner with nothing opened yet; intermediates around the page cache, kept until the
    /// job removes them.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A runner for `plan`'s tasks in this process: its intermediates through the page cache
    /// when this machine's memory holds them ([`super::intermediates::scratch_io`]), and, when
    /// `remove_read_pieces` (an executor that reports complete tasks), each piece removed once
    /// its only reader is complete.
    #[must_use]
    pub fn for_plan(plan: &Plan, remove_read_pieces: bool) -> Self {
        let scratch_io = super::intermediates::scratch_io(plan);
        tracing::debug!(?scratch_io, "intermediates");
        Self {
            scratch_io,
            compute_io: chunkmill_compute::Io::new(scratch_io),
            removes_read_pieces: if remove_read_pieces {
                super::intermediates::sole_piece_readers(plan)
            } else {
                std::collections::HashSet::new()
            },
            ..Self::default()
        }
    }

    /// Removes the pieces that task `task` of `stage` alone read (see
    /// [`super::intermediates`]). One that cannot be removed is left for the job's cleanup.
    fn remove_read_pieces(&self, stage: &Stage, task: u64) {
        if !self.removes_read_pieces.contains(&stage.name) {
            return;
        }
        let StageKind::Copy(copy) = &stage.kind else {
            return;
        };
        let Endpoint::Pieces { prefix, grid, .. } = &copy.input else {
            return;
        };
        let opened = self
            .opened
            .lock()
            .get(&(stage.name.clone(), Side::Input))
            .cloned();
        let Some(Opened::Pieces { store, .. }) = opened.as_deref() else {
            return;
        };
        let region = stage.task_region(task);
        for coords in grid.chunks_in(&region) {
            let piece = grid.chunk_region(&coords);
            if super::intermediates::block_holding(&copy.blocks, &piece) != Some(task) {
                continue;
            }
            if let Err(e) = store.erase(&piece_key(prefix, grid, &coords)) {
                tracing::warn!(stage = %stage.name, task, error = %e, "a read piece stays until the job's cleanup");
            }
        }
    }

    /// The endpoint of `side` of stage `stage`, opened by its first task and shared by the
    /// others; `item` is the stage's bytes per element (see [`StageRunner::open`]).
    fn opened(
        &self,
        stage: &str,
        side: Side,
        endpoint: &Endpoint,
        item: usize,
    ) -> Result<Arc<Opened>, String> {
        let key = (stage.to_string(), side);
        if let Some(found) = self.opened.lock().get(&key) {
            return Ok(found.clone());
        }
        let opened = match side {
            Side::Input => self.open(endpoint, Some(item))?,
            Side::Output => match Self::open_output(endpoint, Some(item)) {
                Some(opened) => opened?,
                None => self.open(endpoint, Some(item))?,
            },
        };
        // Threads that opened it at the same time all use the first one kept.
        Ok(self.opened.lock().entry(key).or_insert(opened).clone())
    }

    /// A Zarr array a stage writes (an append's shifted one too), opened for chunks written
    /// once each ([`Store::open_output`]); `None` for every other endpoint.
    fn open_output(
        endpoint: &Endpoint,
        item: Option<usize>,
    ) -> Option<Result<Arc<Opened>, String>> {
        match endpoint {
            Endpoint::Zarr { url, path, .. } => Some((|| {
                let store = Store::open_output(url).map_err(|e| e.to_string())?;
                let array =
                    ZarrArray::open_with_width(&store, path, item).map_err(|e| e.to_string())?;
                Ok(Arc::new(Opened::Zarr(Box::new(array))))
            })()),
            Endpoint::Shifted {
                inner,
                chunk_offset,
                ..
            } => Some(Self::open_output(inner, item)?.map(|inner| {
                Arc::new(Opened::Shifted {
                    inner,
                    chunk_offset: chunk_offset.clone(),
                })
            })),
            _ => None,
        }
    }

    /// Opens `endpoint`. A variable-length Zarr array is read in records `item` bytes wide,
    /// the width the plan measured, rather than measured again by reading it whole in every
    /// process (only a cast changes the width through a window, and text is never cast).
    fn open(&self, endpoint: &Endpoint, item: Option<usize>) -> Result<Arc<Opened>, String> {
        let opened = match endpoint {
            Endpoint::Zarr { url, path, .. } => {
                let store = Store::open(url).map_err(|e| e.to_string())?;
                Opened::Zarr(Box::new(
                    ZarrArray::open_with_width(&store, path, item).map_err(|e| e.to_string())?,
                ))
            }
            Endpoint::Pieces {
                url, prefix, codec, ..
            } => Opened::Pieces {
                store: Store::open_scratch_with(url, self.scratch_io).map_err(|e| e.to_string())?,
                prefix: prefix.clone(),
                codec: *codec,
            },
            Endpoint::References { url, path, .. } => {
                // Read under the lock: threads opening the same references wait for one read
                // instead of each parsing the file.
                let dataset = {
                    let mut references = self.references.lock();
                    match references.get(url) {
                        Some(d) => d.clone(),
                        None => {
                            let d = Arc::new(super::references::read_references(url)?);
                            references.insert(url.clone(), d.clone());
                            d
                        }
                    }
                };
                Opened::References(Box::new(
                    ChunkReader::shared(dataset, path, self.files.clone())
                        .map_err(|e| e.to_string())?,
                ))
            }
            Endpoint::Window {
                source,
                axes,
                values,
                ..
            } => {
                let opened_source = self.open(source, item)?;
                let source_item = opened_source.item_size();
                Opened::Window {
                    source: opened_source,
                    source_grid: source.grid().clone(),
                    axes: axes.clone(),
                    values: values.clone(),
                    source_item,
                }
            }
            Endpoint::Concat { axis, parts, .. } => {
                let mut opened_parts = Vec::with_capacity(parts.len());
                let mut start = 0;
                for part in parts {
                    let len = part.grid().shape().get(*axis).copied().unwrap_or(0);
                    opened_parts.push((self.open(part, item)?, part.grid().clone(), start));
                    start += len;
                }
                Opened::Concat {
                    axis: *axis,
                    parts: opened_parts,
                }
            }
            Endpoint::Shifted {
                inner,
                chunk_offset,
                ..
            } => Opened::Shifted {
                inner: self.open(inner, item)?,
                chunk_offset: chunk_offset.clone(),
            },
            Endpoint::Tiles {
                source,
                sizes,
                slots,
                counts,
                ..
            } => Opened::Tiles {
                source: self.open(source, item)?,
                source_grid: source.grid().clone(),
                sizes: sizes.clone(),
                slots: slots.clone(),
                counts: counts.clone(),
            },
        };
        Ok(Arc::new(opened))
    }
}

/// The nominal region of Zarr chunk `coords`: full chunk shape even past the array's edge.
fn nominal_region(grid: &Grid, coords: &[u64]) -> Region {
    Region::new(
        grid.axes()
            .iter()
            .zip(coords)
            .map(|(axis, &c)| match axis.regular_size() {
                Some(size) => c * size..(c + 1) * size,
                None => axis.chunk(c),
            })
            .collect(),
    )
}

thread_local! {
    /// The block buffer of this thread's last task, kept for its next task: a fresh buffer
    /// costs the kernel a page fault and a page clear per page, which was a sixth of a
    /// rechunk's time. The executor has the thread give it back before it waits for memory.
    static SPARE_BLOCK: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

thread_local! {
    /// The buffer this thread last cut an output chunk or piece into, kept for its next one
    /// (for the same reason as [`SPARE_BLOCK`]); it is part of the task's projected memory.
    static SPARE_CUT: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// A buffer of `len` bytes for a task's block, whose every byte the task then overwrites:
/// the thread's spare if it is about that size, a new one otherwise.
fn block_buffer(len: usize) -> Vec<u8> {
    spare_or_zeroed(&SPARE_BLOCK, len)
}

fn spare_or_zeroed(
    spare: &'static std::thread::LocalKey<RefCell<Option<Vec<u8>>>>,
    len: usize,
) -> Vec<u8> {
    if let Some(mut spare) = spare.with(|s| s.borrow_mut().take()) {
        if spare.capacity() >= len {
            spare.resize(len, 0);
            spare.truncate(len);
            if spare.capacity() > len + len / 64 {
                // Given back beyond `len` (the task counts only `len`): the allocator shrinks
                // a large buffer in place (mremap), so the pages kept need no fault and no
                // clearing, where a fresh buffer of another stage's size needed both.
                spare.shrink_to(len);
            }
            return spare;
        }
        if spare.capacity() >= chunkmill_exec::memory::MMAP_THRESHOLD {
            // Grown in place likewise: only the pages added are faulted in and cleared.
            spare.reserve_exact(len - spare.len());
            spare.resize(len, 0);
            return spare;
        }
    }
    zeroed(len)
}

/// What the store's direct I/O needs of a buffer to move it without a bounce copy.
const PAGE: usize = chunkmill_store::DIRECT_IO_ALIGNMENT;

/// `len` bytes of `buffer` (at least a page longer) from its first page boundary: a piece
/// written from them or read into its place in them moves between the device and this memory
/// with direct I/O, with no copy through a bounce buffer (`chunkmill_store`'s local writes and
/// reads check the alignment).
fn page_aligned(buffer: &mut [u8], len: usize) -> &mut [u8] {
    let start = buffer
        .as_ptr()
        .align_offset(PAGE)
        .min(buffer.len().saturating_sub(len));
    &mut buffer[start..start + len]
}

/// Keeps this thread's spare buffers for tasks of another stage that count `bytes`: the
/// block alone, shrunk in place to `bytes` at most, when it is a mapping of its own (its pages
/// stay, and the next task reshapes it as [`spare_or_zeroed`] says); the cut and encode
/// buffers are given back, being sized for the last stage's chunks.
fn keep_spares_within(bytes: usize) {
    SPARE_CUT.with(|s| s.borrow_mut().take());
    SPARE_ENCODED.with(|s| *s.borrow_mut() = Vec::new());
    SPARE_BLOCK.with(|s| {
        let mut spare = s.borrow_mut();
        let Some(block) = spare.as_mut() else {
            return;
        };
        // A heap buffer would be moved (copied) to shrink, and its freed pages kept by the
        // allocator all the same: not worth keeping.
        if bytes < chunkmill_exec::memory::MMAP_THRESHOLD {
            *spare = None;
        } else if block.capacity() > bytes {
            block.truncate(bytes);
            block.shrink_to(bytes);
            if block.capacity() > bytes {
                *spare = None;
            }
        }
    });
}

/// The byte range that `inner` occupies in a C-ordered buffer holding `outer`, when its
/// elements are one run there (a piece of a block can then be read or written in place).
fn contiguous_span(outer: &Region, inner: &Region, item: usize) -> Option<std::ops::Range<usize>> {
    let (o, i) = (outer.ranges(), inner.ranges());
    if o.len() != i.len()
        || i.iter()
            .zip(o)
            .any(|(a, b)| a.start < b.start || a.end > b.end)
    {
        return None;
    }
    // C order: leading axes of length 1, then any one axis, then axes whole in `outer`.
    let first = i
        .iter()
        .position(|r| r.end - r.start != 1)
        .unwrap_or(i.len());
    if (first + 1..i.len()).any(|a| i[a] != o[a]) {
        return None;
    }
    let mut offset = 0u64;
    let mut stride = 1u64;
    for (a, b) in i.iter().zip(o).rev() {
        offset += (a.start - b.start) * stride;
        stride *= b.end - b.start;
    }
    let start = usize::try_from(offset).ok()? * item;
    Some(start..start + usize::try_from(inner.num_elements()).ok()? * item)
}

/// A zeroed buffer. Large ones ask the kernel for transparent huge pages first: a task's block
/// is touched page by page as chunks land in it, and one 2 MiB fault costs far less than 512
/// small ones (about a sixth of a rechunk's time went to page faults without this).
#[allow(unsafe_code)]
fn zeroed(len: usize) -> Vec<u8> {
    const HUGE: usize = 2 << 20;
    let mut buffer: Vec<u8> = Vec::with_capacity(len);
    if len >= 4 * HUGE {
        // The whole pages of the allocation, not only its 2 MiB-aligned middle: a hint on part
        // of a mapping splits it in three, and a mapping in pieces cannot be grown in place
        // (mremap fails with EFAULT), so the allocator moved a growing spare block by copying
        // it into fresh pages, every one faulted and cleared. The kernel puts huge pages only
        // where they fit whatever the hint covers.
        let start = (buffer.as_mut_ptr() as usize) / PAGE * PAGE;
        let end = (buffer.as_mut_ptr() as usize + len).next_multiple_of(PAGE);
        // SAFETY: the range is the pages of the allocation just made (an anonymous mapping
        // of its own at this size) and not yet touched; madvise only sets a paging hint and
        // never changes the memory's contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
    buffer.resize(len, 0);
    buffer
}

/// One chunk of an input, read.
struct ChunkRead {
    /// Its elements.
    bytes: chunkmill_store::Bytes,
    /// The region they cover (the nominal chunk for Zarr and references, which may run past
    /// the array's edge).
    held: Region,
    /// Bytes decoded from storage to produce it: more than `bytes` where a window or a tile
    /// keeps part of the source chunks it met.
    decoded: u64,
}

impl ChunkRead {
    fn stored(bytes: Vec<u8>, held: Region) -> Self {
        Self {
            decoded: bytes.len() as u64,
            bytes: bytes.into(),
            held,
        }
    }

    /// Copies what `region` (held in `out`) needs of this chunk.
    fn place(&self, out: &mut [u8], region: &Region, item: usize) {
        if let Some(what) = region.intersect(&self.held) {
            copy_region(&self.bytes, &self.held, out, region, &what, item);
        } else if region.ndim() == 0 {
            copy_region(&self.bytes, &self.held, out, region, region, item);
        }
    }
}

fn piece_key(prefix: &str, grid: &Grid, coords: &[u64]) -> String {
    format!("{prefix}/{}", grid.ravel(coords))
}

/// Reads intermediate piece `key` into `dest`, which is exactly as long as the piece must be
/// once decoded: a compressed piece is decoded only if its frame checks out.
fn read_piece_into(
    store: &Store,
    key: &str,
    codec: PieceCodec,
    dest: &mut [u8],
) -> Result<(), String> {
    if codec != PieceCodec::Raw {
        let stored = store
            .get(key)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{}: intermediate piece {key} is missing", store.url()))?;
        return super::pieces::decode_piece(codec, &stored, dest).map_err(|e| {
            format!(
                "{}: intermediate piece {key} ({codec}) is not trusted: {e}",
                store.url()
            )
        });
    }
    match store
        .read_exact_into(key, dest)
        .map_err(|e| e.to_string())?
    {
        ReadInto::Read => Ok(()),
        ReadInto::Missing => Err(format!(
            "{}: intermediate piece {key} is missing",
            store.url()
        )),
        ReadInto::Size(len) => Err(format!(
            "{}: intermediate piece {key} has {len} bytes, expected {}",
            store.url(),
            dest.len()
        )),
    }
}

/// Reads input chunk `coords` straight into its place in `block` (holding `region`) when it
/// is one run there: an intermediate piece, a referenced source chunk, or a Zarr chunk whose
/// codecs allow decoding in place ([`ZarrArray::read_chunk_into`]). Returns the bytes read, or `None` when the chunk
/// must be read into a buffer of its own and placed.
fn read_in_place(
    input: &Opened,
    grid: &Grid,
    coords: &[u64],
    region: &Region,
    item: usize,
    block: &mut [u8],
) -> Result<Option<u64>, String> {
    match input {
        Opened::Pieces {
            store,
            prefix,
            codec,
        } => {
            let Some(span) = contiguous_span(region, &grid.chunk_region(coords), item) else {
                return Ok(None);
            };
            let key = piece_key(prefix, grid, coords);
            read_piece_into(store, &key, *codec, &mut block[span.clone()])?;
            Ok(Some(span.len() as u64))
        }
        Opened::Zarr(array) => {
            let Some(span) = contiguous_span(region, &nominal_region(grid, coords), item) else {
                return Ok(None);
            };
            let len = span.len() as u64;
            let placed = array
                .read_chunk_into(coords, &mut block[span])
                .map_err(|e| e.to_string())?;
            Ok(placed.then_some(len))
        }
        Opened::References(reader) => {
            // A source chunk decoded where it belongs (the last codec writes into the block):
            // no buffer of its own to clear, fill and copy from.
            let Some(span) = contiguous_span(region, &nominal_region(grid, coords), item) else {
                return Ok(None);
            };
            if span.len() != reader.chunk_bytes() {
                return Ok(None);
            }
            let len = span.len() as u64;
            reader
                .read_chunk_into(coords, &mut block[span])
                .map_err(|e| e.to_string())?;
            Ok(Some(len))
        }
        _ => Ok(None),
    }
}

thread_local! {
    /// The buffer this thread last compressed a piece into, kept for its next one (a piece
    /// is written before the next is encoded; the task's projected memory counts one output
    /// chunk encoded).
    static SPARE_ENCODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes intermediate piece `key` from `raw`, compressed with `codec` unless it is raw.
fn put_piece(store: &Store, key: &str, codec: PieceCodec, raw: &[u8]) -> Result<(), String> {
    if codec == PieceCodec::Raw {
        return store.put_slice(key, raw).map_err(|e| e.to_string());
    }
    SPARE_ENCODED.with(|cell| {
        let mut encoded = cell.borrow_mut();
        super::pieces::encode_piece(codec, raw, &mut encoded)
            .map_err(|e| format!("{}: intermediate piece {key}: {e}", store.url()))?;
        store.put_slice(key, &encoded).map_err(|e| e.to_string())
    })
}

/// Output chunk `coords` (nominal region `target`) cut out of `block` (holding `region`), in
/// this thread's spare cut buffer: elements the block does not hold are the fill value.
fn cut_chunk(
    array: &ZarrArray,
    block: &[u8],
    region: &Region,
    target: &Region,
    out_grid: &Grid,
    coords: &[u64],
    item: usize,
) -> Vec<u8> {
    let len = target.num_elements() as usize * item;
    let what = region.intersect(target);
    let whole = what.as_ref() == Some(target) || (region.ndim() == 0 && target.ndim() == 0);
    let mut cut = if whole {
        // Every byte is overwritten below.
        spare_or_zeroed(&SPARE_CUT, len)
    } else if target.num_elements() == out_grid.chunk_region(coords).num_elements() {
        zeroed(len)
    } else {
        array
            .fill_element(item)
            .repeat(target.num_elements() as usize)
    };
    match what {
        Some(what) => copy_region(block, region, &mut cut, target, &what, item),
        None if region.ndim() == 0 => copy_region(block, region, &mut cut, target, region, item),
        None => {}
    }
    cut
}

impl StageRunner {
    /// Chunk `coords` of an opened input of grid `grid`.
    fn read_chunk(
        &self,
        input: &Opened,
        grid: &Grid,
        coords: &[u64],
        item_size: u64,
    ) -> Result<ChunkRead, String> {
        Ok(match input {
            Opened::Zarr(array) => ChunkRead::stored(
                array.read_chunk(coords).map_err(|e| e.to_string())?,
                nominal_region(grid, coords),
            ),
            Opened::Pieces {
                store,
                prefix,
                codec,
            } if *codec != PieceCodec::Raw => {
                let key = piece_key(prefix, grid, coords);
                let held = grid.chunk_region(coords);
                let mut bytes = vec![0u8; (held.num_elements() * item_size) as usize];
                read_piece_into(store, &key, *codec, &mut bytes)?;
                ChunkRead::stored(bytes, held)
            }
            Opened::Pieces { store, prefix, .. } => {
                let key = piece_key(prefix, grid, coords);
                let held = grid.chunk_region(coords);
                let bytes = store.get(&key).map_err(|e| e.to_string())?.ok_or_else(|| {
                    format!("{}: intermediate piece {key} is missing", store.url())
                })?;
                if bytes.len() as u64 != held.num_elements() * item_size {
                    return Err(format!(
                        "{}: intermediate piece {key} has {} bytes, expected {}",
                        store.url(),
                        bytes.len(),
                        held.num_elements() * item_size
                    ));
                }
                let decoded = bytes.len() as u64;
                ChunkRead {
                    bytes,
                    held,
                    decoded,
                }
            }
            Opened::References(reader) => ChunkRead::stored(
                reader.read_chunk(coords).map_err(|e| e.to_string())?,
                nominal_region(grid, coords),
            ),
            Opened::Window {
                source,
                source_grid,
                axes,
                values,
                source_item,
            } => {
                let held = grid.chunk_region(coords);
                let wanted = Region::new(
                    held.ranges()
                        .iter()
                        .zip(axes)
                        .map(|(r, w)| {
                            if w.reverse {
                                w.start + w.len - r.end..w.start + w.len - r.start
                            } else {
                                w.start + r.start..w.start + r.end
                            }
                        })
                        .collect(),
                );
                let (bytes, decoded) =
                    self.read_into(source, source_grid, &wanted, *source_item)?;
                let reversed: Vec<bool> = axes.iter().map(|w| w.reverse).collect();
                let bytes = crate::values::flip(bytes, &wanted.shape(), &reversed, *source_item);
                let bytes = match values {
                    Some(map) => crate::values::convert(map, &bytes)?,
                    None => bytes,
                };
                ChunkRead {
                    bytes: bytes.into(),
                    held,
                    decoded,
                }
            }
            Opened::Concat { axis, parts } => {
                let held = grid.chunk_region(coords);
                let at = held.ranges()[*axis].start;
                let (part, part_grid, start) = parts
                    .iter()
                    .rev()
                    .find(|(_, g, start)| *start <= at && g.shape()[*axis] > 0)
                    .ok_or_else(|| format!("no part of the concatenation holds index {at}"))?;
                let mut origin = vec![0; held.ndim()];
                origin[*axis] = *start;
                let local = held.relative_to(&origin);
                let (bytes, decoded) =
                    self.read_into(part, part_grid, &local, item_size as usize)?;
                ChunkRead {
                    bytes: bytes.into(),
                    held,
                    decoded,
                }
            }
            Opened::Shifted { .. } => {
                return Err("an append's shifted target is written, never read".to_string())
            }
            Opened::Tiles {
                source,
                source_grid,
                sizes,
                slots,
                counts,
            } => {
                let held = grid.chunk_region(coords);
                let tile = held.ranges()[0].start;
                // The tile's index along each tiled dimension, C order over `counts`.
                let mut index = vec![0u64; counts.len()];
                let mut rest = tile;
                for (k, &count) in counts.iter().enumerate().rev() {
                    index[k] = rest % count.max(1);
                    rest /= count.max(1);
                }
                let wanted = Region::new(
                    held.ranges()[1..]
                        .iter()
                        .zip(sizes.iter().zip(slots))
                        .map(|(r, (size, slot))| match (size, slot) {
                            (Some(size), Some(k)) => {
                                index[*k] * size + r.start..index[*k] * size + r.end
                            }
                            _ => r.clone(),
                        })
                        .collect(),
                );
                let (bytes, decoded) =
                    self.read_into(source, source_grid, &wanted, item_size as usize)?;
                ChunkRead {
                    bytes: bytes.into(),
                    held,
                    decoded,
                }
            }
        })
    }

    /// The elements of `region` of an opened input, assembled from every chunk it meets, and
    /// the bytes decoded to get them.
    fn read_into(
        &self,
        input: &Opened,
        grid: &Grid,
        region: &Region,
        item: usize,
    ) -> Result<(Vec<u8>, u64), String> {
        let mut out = vec![0u8; region.num_elements() as usize * item];
        let mut decoded = 0;
        for coords in grid.chunks_in(region) {
            let read = self.read_chunk(input, grid, &coords, item as u64)?;
            read.place(&mut out, region, item);
            decoded += read.decoded;
        }
        Ok((out, decoded))
    }

    /// Gives the runner a reference file's dataset already in memory, as if read from `url`.
    pub fn preload_references(&self, url: &str, dataset: Arc<chunkmill_manifest::VirtualDataset>) {
        self.references.lock().insert(url.to_string(), dataset);
    }

    /// The elements of `region` of `endpoint` (in its grid's coordinates), `item` bytes each:
    /// how a job reads a coordinate before it plans.
    ///
    /// # Errors
    /// The endpoint cannot be opened or read.
    pub fn read_region(
        &self,
        endpoint: &Endpoint,
        region: &Region,
        item: usize,
    ) -> Result<Vec<u8>, String> {
        let opened = self.open(endpoint, Some(item))?;
        Ok(self.read_into(&opened, endpoint.grid(), region, item)?.0)
    }

    fn copy(
        &self,
        name: &str,
        stage: &CopyStage,
        region: &Region,
        cancel: &Cancel,
    ) -> Result<TaskStats, TaskError> {
        // Checked before each chunk: a straggler whose backup finished stops at the next one.
        let superseded = || {
            if cancel.is_cancelled() {
                Err(TaskError::Superseded)
            } else {
                Ok(())
            }
        };
        let item = stage.item_size as usize;
        let input = self
            .opened(name, Side::Input, &stage.input, item)
            .map_err(TaskError::failed)?;
        let output = self
            .opened(name, Side::Output, &stage.output, item)
            .map_err(TaskError::failed)?;
        let in_grid = stage.input.grid();
        let out_grid = stage.output.grid();
        let mut stats = TaskStats::default();
        let block_len = region.num_elements() as usize * item;
        let mut buffer = block_buffer(block_len + PAGE);
        let block = page_aligned(&mut buffer, block_len);

        for coords in in_grid.chunks_in(region) {
            superseded()?;
            if let Some(read) = read_in_place(&input, in_grid, &coords, region, item, block)
                .map_err(TaskError::failed)?
            {
                stats.bytes_read += read;
                continue;
            }
            let read = self
                .read_chunk(&input, in_grid, &coords, stage.item_size)
                .map_err(TaskError::failed)?;
            read.place(block, region, item);
            stats.bytes_read += read.decoded;
        }

        // An append writes the end of an existing array: chunk coordinates move by the offset.
        let (output, out_offset) = match &*output {
            Opened::Shifted {
                inner,
                chunk_offset,
                ..
            } => (inner.clone(), chunk_offset.clone()),
            _ => (output.clone(), vec![0; out_grid.ndim()]),
        };
        for coords in out_grid.chunks_in(region) {
            superseded()?;
            match &*output {
                Opened::Zarr(array) => {
                    let target = nominal_region(out_grid, &coords);
                    let at: Vec<u64> = coords.iter().zip(&out_offset).map(|(c, o)| c + o).collect();
                    let written = if target == *region {
                        array.write_chunk_slice(&at, block)
                    } else {
                        let cut = cut_chunk(array, block, region, &target, out_grid, &coords, item);
                        let written = array.write_chunk_slice(&at, &cut);
                        SPARE_CUT.with(|s| *s.borrow_mut() = Some(cut));
                        written
                    };
                    written.map_err(TaskError::failed)?;
                    stats.bytes_written += target.num_elements() * item as u64;
                }
                Opened::References(_)
                | Opened::Window { .. }
                | Opened::Concat { .. }
                | Opened::Shifted { .. }
                | Opened::Tiles { .. } => {
                    return Err(TaskError::failed(format!(
                        "{}: a stage cannot write to a read-only endpoint",
                        stage.output.describe()
                    )));
                }
                Opened::Pieces {
                    store,
                    prefix,
                    codec,
                } => {
                    let target = out_grid.chunk_region(&coords);
                    let key = piece_key(prefix, out_grid, &coords);
                    let put = |raw: &[u8]| put_piece(store, &key, *codec, raw);
                    let written = match contiguous_span(region, &target, item) {
                        Some(span) => put(&block[span]),
                        None => {
                            let len = target.num_elements() as usize * item;
                            let mut cut = spare_or_zeroed(&SPARE_CUT, len + PAGE);
                            let piece = page_aligned(&mut cut, len);
                            copy_region(block, region, piece, &target, &target, item);
                            let written = put(piece);
                            SPARE_CUT.with(|s| *s.borrow_mut() = Some(cut));
                            written
                        }
                    };
                    written.map_err(TaskError::failed)?;
                    stats.bytes_written += target.num_elements() * item as u64;
                }
            }
        }
        SPARE_BLOCK.with(|s| *s.borrow_mut() = Some(buffer));
        Ok(stats)
    }
}

impl TaskRunner for StageRunner {
    fn run(&self, stage: &Stage, task: u64, cancel: &Cancel) -> Result<TaskStats, TaskError> {
        let region = stage.task_region(task);
        match &stage.kind {
            StageKind::Copy(copy) => self.copy(&stage.name, copy, &region, cancel),
            StageKind::Compute(compute) => {
                chunkmill_compute::run_task(compute, &region, cancel, &self.compute_io)
            }
            // A scan task's region is its range of inputs.
            StageKind::Scan(scan) => {
                let files = region.ranges().first().cloned().unwrap_or_default();
                super::scan::run_scan_task(scan, files, cancel)
            }
        }
    }

    fn release_idle(&self) {
        SPARE_BLOCK.with(|s| s.borrow_mut().take());
        SPARE_CUT.with(|s| s.borrow_mut().take());
        SPARE_ENCODED.with(|s| *s.borrow_mut() = Vec::new());
        chunkmill_compute::release_idle();
    }

    fn keep_idle_within(&self, bytes: u64) {
        keep_spares_within(usize::try_from(bytes).unwrap_or(usize::MAX));
        chunkmill_compute::release_idle();
    }

    fn task_complete(&self, stage: &Stage, task: u64) {
        self.remove_read_pieces(stage, task);
    }
}

/// True when `endpoint` reads the intermediate pieces at `url` under `prefix`.
pub(super) fn reads_pieces(endpoint: &Endpoint, url: &str, prefix: &str) -> bool {
    match endpoint {
        Endpoint::Pieces {
            url: u, prefix: p, ..
        } => u == url && p == prefix,
        Endpoint::Window { source, .. } | Endpoint::Tiles { source, .. } => {
            reads_pieces(source, url, prefix)
        }
        Endpoint::Shifted { inner, .. } => reads_pieces(inner, url, prefix),
        Endpoint::Concat { parts, .. } => parts.iter().any(|p| reads_pieces(p, url, prefix)),
        Endpoint::Zarr { .. } | Endpoint::References { .. } => false,
    }
}

/// On a resumed run: a task marked done whose intermediate pieces are missing or short loses
/// its marker, and runs again. The scratch store does not sync the pieces it writes
/// ([`Store::open_scratch`]), so a power loss may take some that a durable marker says were
/// written; found here, a lost piece costs its task again instead of a failed stage. Only the
/// pieces a task that is not done still reads are looked at: the others may already be
/// removed ([`super::intermediates`]). Later stages go first, so a task un-marked there has
/// the pieces it reads looked at too (and their producers run again when they are lost).
/// Returns how many tasks will run again.
///
/// # Errors
/// The scratch store or the work dir cannot be read, or a marker cannot be removed.
pub fn forget_lost_pieces(plan: &Plan, markers: &Markers) -> Result<u64, String> {
    let mut done = HashMap::new();
    for stage in &plan.stages {
        let marked = markers.marked(&stage.name).map_err(|e| e.to_string())?;
        done.insert(stage.name.as_str(), marked);
    }
    let mut forgotten = 0;
    // A task that runs again: its marker goes, and later looks at `done` see it pending.
    let mut forget = |done: &mut HashMap<&str, HashSet<u64>>,
                      stage: &Stage,
                      tasks: Vec<u64>|
     -> Result<(), String> {
        for task in tasks {
            markers
                .unmark(&stage.name, task)
                .map_err(|e| e.to_string())?;
            if let Some(marked) = done.get_mut(stage.name.as_str()) {
                marked.remove(&task);
            }
            forgotten += 1;
        }
        Ok(())
    };
    for stage in plan.stages.iter().rev() {
        let copy = match &stage.kind {
            StageKind::Copy(copy) => copy,
            StageKind::Compute(compute) => {
                let lost = super::intermediates::lost_compute_tasks(plan, &done, stage, compute)?;
                forget(&mut done, stage, lost)?;
                continue;
            }
            StageKind::Scan(_) => continue,
        };
        let Endpoint::Pieces {
            url,
            prefix,
            grid,
            codec,
        } = &copy.output
        else {
            continue;
        };
        let needed = super::intermediates::needed_pieces(plan, &done, url, prefix, grid);
        if needed.as_ref().is_some_and(HashSet::is_empty) {
            continue;
        }
        // Read buffered: a killed run's pieces may still be in the page cache, dirty.
        let store =
            Store::open_scratch_with(url, ScratchIo::PageCache).map_err(|e| e.to_string())?;
        let mut lost_tasks = Vec::new();
        for &task in done.get(stage.name.as_str()).into_iter().flatten() {
            for coords in grid.chunks_in(&stage.task_region(task)) {
                if needed
                    .as_ref()
                    .is_some_and(|n| !n.contains(&grid.ravel(&coords)))
                {
                    continue;
                }
                let expected = grid.chunk_region(&coords).num_elements() * copy.item_size;
                let key = piece_key(prefix, grid, &coords);
                let whole = if codec.is_raw() {
                    store.size(&key).map_err(|e| e.to_string())? == Some(expected)
                } else {
                    // Decoded lengths are checked in the frame: read it and its checksum.
                    store
                        .get(&key)
                        .map_err(|e| e.to_string())?
                        .is_some_and(|stored| {
                            super::pieces::piece_is_whole(*codec, &stored, expected as usize)
                        })
                };
                if !whole {
                    lost_tasks.push(task);
                    break;
                }
            }
        }
        forget(&mut done, stage, lost_tasks)?;
    }
    Ok(forgotten)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread's spare block serves the next task whatever its size, holding no more than
    /// that task counts (its length, within 1/64), and keeps its pages where it can.
    #[test]
    fn a_spare_block_is_resized_to_the_next_task_and_holds_no_more() {
        let big = 40 << 20;
        let mut block = block_buffer(big);
        block[big - 1] = 7;
        let kept = block.as_ptr();
        SPARE_BLOCK.with(|s| *s.borrow_mut() = Some(block));
        // A smaller task: the same buffer, given back beyond its length.
        let small = block_buffer(big / 3);
        assert_eq!(small.len(), big / 3);
        assert!(
            small.capacity() <= big / 3 + big / 3 / 64,
            "{}",
            small.capacity()
        );
        assert_eq!(small.as_ptr(), kept);
        SPARE_BLOCK.with(|s| *s.borrow_mut() = Some(small));
        // A larger one again: grown, its new bytes zero.
        let grown = block_buffer(big);
        assert_eq!(grown.len(), big);
        assert!(grown.capacity() <= big + big / 64);
        assert!(grown[big / 3..].iter().all(|&b| b == 0));
        // A small spare is not grown (it would be copied): a new buffer, zeroed.
        SPARE_BLOCK.with(|s| *s.borrow_mut() = Some(vec![1u8; 1 << 20]));
        let fresh = block_buffer(3 << 20);
        assert_eq!(fresh.len(), 3 << 20);
        assert!(fresh.iter().all(|&b| b == 0));
    }

    /// The mappings of this process that overlap `[start, end)`.
    fn mappings_over(start: usize, end: usize) -> usize {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        maps.lines()
            .filter_map(|line| {
                let (range, _) = line.split_once(' ')?;
                let (a, b) = range.split_once('-')?;
                Some((
                    usize::from_str_radix(a, 16).ok()?,
                    usize::from_str_radix(b, 16).ok()?,
                ))
            })
            .filter(|&(a, b)| a < end && b > start)
            .count()
    }

    /// A large block stays one mapping once hinted for huge pages, so it can grow in place
    /// (a mapping split by a hint on its middle made every growth a copy into fresh pages).
    #[test]
    #[cfg(target_os = "linux")]
    fn a_large_block_is_one_mapping_that_grows_in_place() {
        let len = (40 << 20) + 12_345;
        let mut block = zeroed(len);
        let start = block.as_ptr() as usize;
        assert_eq!(mappings_over(start, start + len), 1);
        // Shrunk, then grown again past its first size: the pages stay where they were
        // mapped (only moved, never copied), which is what a single mapping allows.
        block[100] = 9;
        block.truncate(len / 2);
        block.shrink_to(len / 2);
        block.reserve_exact(len);
        let grown = block.as_ptr() as usize;
        assert_eq!(mappings_over(grown, grown + block.capacity()), 1);
        assert_eq!(block[100], 9);
    }

    /// A view starts on a page and holds exactly the bytes asked, whatever the allocation's
    /// own alignment.
    #[test]
    fn page_aligned_views_start_on_a_page() {
        for skew in [0usize, 1, 16, 4095] {
            let mut buffer = vec![0u8; 10_000 + PAGE + skew];
            let view = page_aligned(&mut buffer[skew..], 10_000);
            assert_eq!(view.len(), 10_000);
            assert_eq!(view.as_ptr().align_offset(PAGE), 0);
        }
    }

    /// Going on to another stage, a thread keeps its mapped block only within what the next
    /// stage's task counts, and never its cut or encode buffers.
    #[test]
    fn spares_kept_for_another_stage_fit_its_projection() {
        let big = 64 << 20;
        let block = block_buffer(big);
        let kept = block.as_ptr();
        SPARE_BLOCK.with(|s| *s.borrow_mut() = Some(block));
        SPARE_CUT.with(|s| *s.borrow_mut() = Some(vec![1u8; 1 << 20]));
        keep_spares_within(40 << 20);
        let capacity = SPARE_BLOCK.with(|s| s.borrow().as_ref().map(Vec::capacity));
        assert!(capacity.is_some_and(|c| c <= 40 << 20), "{capacity:?}");
        assert!(SPARE_CUT.with(|s| s.borrow().is_none()));
        // The same mapping, shrunk in place: the next task finds its pages.
        let again = block_buffer(40 << 20);
        assert_eq!(again.as_ptr(), kept);
        SPARE_BLOCK.with(|s| *s.borrow_mut() = Some(again));
        // A stage whose tasks count less than a mapping of its own keeps nothing.
        keep_spares_within(chunkmill_exec::memory::MMAP_THRESHOLD - 1);
        assert!(SPARE_BLOCK.with(|s| s.borrow().is_none()));
    }
}
