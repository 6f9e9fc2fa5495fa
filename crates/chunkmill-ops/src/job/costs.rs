//! The coefficients of convert's cost model: how fast this machine decodes each codec and
//! moves intermediate pieces, in MB/s (10^6 bytes of decoded data per second of one core).
//!
//! They come from, first to last: `CHUNKMILL_COSTS` (`KEY=MBPS,…`, or `defaults`), a cache
//! file written the first time they were measured (`$XDG_CACHE_HOME/chunkmill/`, else
//! `~/.cache/chunkmill/`; one file per filesystem of the intermediates, since their write and
//! read speeds are the disk's), a measurement (about half a second: each codec over 8 MiB of
//! a synthetic field, and 64 MiB of pieces written and read back the way intermediates are,
//! in a directory made for it beside the intermediates and removed after), or the defaults
//! below when nothing can be measured or cached (an S3 temp store, no writable cache
//! directory: a resumed run must plan the same job, which numbers measured again might not
//! give). Given values replace the others key by key.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chunkmill_grid::rechunk::MediumCost;
use chunkmill_plan::PieceCodec;
use chunkmill_store::{Store, StoreKind};
use serde::{Deserialize, Serialize};

use crate::OpsError;

/// Decoded MB/s of each step the model prices.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coefficients {
    /// zlib/gzip inflate (libdeflate), per decoded MB.
    pub zlib_decode: f64,
    /// Zstandard decode.
    pub zstd_decode: f64,
    /// LZ4 block decode.
    pub lz4_decode: f64,
    /// HDF5/numcodecs byte unshuffle.
    pub shuffle: f64,
    /// LZ4 block encode.
    pub lz4_encode: f64,
    /// Zstandard level 1 encode.
    pub zstd1_encode: f64,
    /// Intermediate pieces written (stored bytes per second).
    pub write: f64,
    /// Intermediate pieces read back (stored bytes per second).
    pub read: f64,
}

/// Where the coefficients came from, for the plan printout.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum Origin {
    /// Built-in defaults (`CHUNKMILL_COSTS=defaults`, or nothing measurable).
    Defaults,
    /// `CHUNKMILL_COSTS` (over the cached or measured ones it names no value for).
    Environment,
    /// Read from this cache file.
    Cached(PathBuf),
    /// Measured now, and cached at this path.
    Measured(PathBuf),
    /// Read back from the work dir of the run being resumed (at this URL): the numbers its
    /// plan was built from, whatever the cache or the environment says now.
    Recorded(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Defaults => f.write_str("built-in defaults"),
            Origin::Environment => f.write_str("CHUNKMILL_COSTS"),
            Origin::Cached(p) => write!(f, "cached in {}", p.display()),
            Origin::Measured(p) => write!(f, "measured now, cached in {}", p.display()),
            Origin::Recorded(url) => write!(f, "recorded by the run resumed, {url}"),
        }
    }
}

/// The environment variable that gives coefficients.
pub const COSTS_ENV: &str = "CHUNKMILL_COSTS";

const KEYS: [&str; 8] = [
    "zlib_decode",
    "zstd_decode",
    "lz4_decode",
    "shuffle",
    "lz4_encode",
    "zstd1_encode",
    "write",
    "read",
];

impl Coefficients {
    /// Sane without measuring: a 2020s x86 core and an SSD (this project's 2-core test
    /// machine, quiet, measured 2026-12).
    pub const DEFAULTS: Coefficients = Coefficients {
        zlib_decode: 700.0,
        zstd_decode: 1000.0,
        lz4_decode: 2500.0,
        shuffle: 3000.0,
        lz4_encode: 600.0,
        zstd1_encode: 400.0,
        write: 1000.0,
        read: 1500.0,
    };

    fn slot(&mut self, key: &str) -> Option<&mut f64> {
        Some(match key {
            "zlib_decode" => &mut self.zlib_decode,
            "zstd_decode" => &mut self.zstd_decode,
            "lz4_decode" => &mut self.lz4_decode,
            "shuffle" => &mut self.shuffle,
            "lz4_encode" => &mut self.lz4_encode,
            "zstd1_encode" => &mut self.zstd1_encode,
            "write" => &mut self.write,
            "read" => &mut self.read,
            _ => return None,
        })
    }

    /// `self` with the values `text` gives (`write=250,lz4_encode=900`).
    ///
    /// # Errors
    /// [`OpsError::Usage`] naming an unknown key or a value that is not a positive number.
    pub fn with_given(mut self, text: &str) -> Result<Coefficients, OpsError> {
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || {
                OpsError::Usage(format!(
                    "{COSTS_ENV}: '{item}' is not KEY=MBPS with a positive MB/s and KEY one of {}",
                    KEYS.join(", ")
                ))
            };
            let (key, value) = item.split_once('=').ok_or_else(bad)?;
            let value: f64 = value.trim().parse().map_err(|_| bad())?;
            if !(value.is_finite() && value > 0.0) {
                return Err(bad());
            }
            *self.slot(key.trim()).ok_or_else(bad)? = value;
        }
        Ok(self)
    }
}

/// Nanoseconds per byte at `mbps` MB/s.
fn ns(mbps: f64) -> f64 {
    1e3 / mbps
}

/// Decoded bytes one compressed byte of each piece codec holds, as sampled from the data.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Ratios {
    pub lz4: f64,
    pub zstd1: f64,
}

impl Ratios {
    /// What float fields of geoscience data usually give when nothing was sampled.
    pub const TYPICAL: Ratios = Ratios {
        lz4: 1.2,
        zstd1: 1.4,
    };
}

/// The price of each way to hold an intermediate: raw pieces, LZ4 pieces, Zstandard-1 pieces
/// (encode + write the stored bytes; read them + decode), per decoded byte.
#[must_use]
pub fn piece_media(
    c: &Coefficients,
    ratios: Ratios,
    kind: StoreKind,
) -> Vec<(PieceCodec, MediumCost)> {
    let per_object = if kind == StoreKind::S3 { 20e6 } else { 40e3 };
    PieceCodec::ALL
        .iter()
        .map(|&codec| {
            let (encode, decode, ratio) = match codec {
                PieceCodec::Raw => (0.0, 0.0, 1.0),
                PieceCodec::Lz4 => (ns(c.lz4_encode), ns(c.lz4_decode), ratios.lz4),
                PieceCodec::Zstd1 => (ns(c.zstd1_encode), ns(c.zstd_decode), ratios.zstd1),
            };
            let ratio = ratio.max(1.0);
            (
                codec,
                MediumCost {
                    read_ns_per_byte: ns(c.read) / ratio + decode,
                    write_ns_per_byte: ns(c.write) / ratio + encode,
                    ns_per_object: per_object,
                },
            )
        })
        .collect()
}

/// The price of decoding a source whose chunks go through `codecs` (Zarr v3 / numcodecs
/// names), per decoded byte; codecs the model does not know cost what a generic one does.
#[must_use]
pub fn source_cost(c: &Coefficients, codecs: &[String], kind: StoreKind) -> MediumCost {
    let mut read = 0.1;
    for name in codecs {
        let name = name.rsplit('.').next().unwrap_or(name);
        read += match name {
            "zlib" | "gzip" => ns(c.zlib_decode),
            "zstd" => ns(c.zstd_decode),
            "shuffle" => ns(c.shuffle),
            "lz4" => ns(c.lz4_decode),
            "bytes" | "fletcher32" | "crc32c" => 0.0,
            _ => 1.0,
        };
    }
    MediumCost {
        read_ns_per_byte: read,
        write_ns_per_byte: 5.0,
        ns_per_object: if kind == StoreKind::S3 { 20e6 } else { 40e3 },
    }
}

/// The work-dir key under which a job records the coefficients its plan was built from.
pub const RECORD_KEY: &str = crate::work_files::COSTS_KEY;

/// The coefficients a run recorded in its work dir `work` ([`RECORD_KEY`]), for its resume:
/// the plan id of a resumed run must match the recorded plan, which coefficients measured
/// again (a deleted cache, another `CHUNKMILL_COSTS`) might not give. `None` when there is no
/// record or it does not parse (then the plan id check still refuses a different plan).
///
/// # Errors
/// [`OpsError`] when the work dir cannot be read.
pub fn recorded(work: &Store) -> Result<Option<(Coefficients, Origin)>, OpsError> {
    let Some(bytes) = work.get(RECORD_KEY)? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<Coefficients>(&bytes)
        .ok()
        .map(|c| (c, Origin::Recorded(work.join(RECORD_KEY)))))
}

/// The record [`recorded`] reads back.
#[must_use]
pub fn record(c: &Coefficients) -> serde_json::Value {
    serde_json::to_value(c).unwrap_or_default()
}

/// The cache directory: `$XDG_CACHE_HOME/chunkmill`, else `$HOME/.cache/chunkmill`.
fn cache_dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    std::env::var_os("XDG_CACHE_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".cache"))
        })
        .map(|d| d.join("chunkmill"))
}

/// The nearest existing directory at or above `path`.
fn existing_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors().find(|p| p.is_dir()).map(Path::to_path_buf)
}

#[cfg(unix)]
fn device(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.dev())
}

#[cfg(not(unix))]
fn device(_: &Path) -> Option<u64> {
    Some(0)
}

/// The coefficients for a job whose intermediates go to `temp`, and where they came from.
///
/// # Errors
/// [`OpsError::Usage`] for a malformed `CHUNKMILL_COSTS`.
pub fn coefficients(temp: &Store) -> Result<(Coefficients, Origin), OpsError> {
    let given = std::env::var(COSTS_ENV).ok();
    // `defaults` (alone, or before given values) starts from the defaults, measuring nothing.
    let from_defaults = given
        .as_deref()
        .is_some_and(|t| t.split(',').any(|item| item.trim() == "defaults"));
    let (known, origin) = if from_defaults {
        (Coefficients::DEFAULTS, Origin::Defaults)
    } else {
        known_coefficients(temp)
    };
    let given = given.map(|t| {
        t.split(',')
            .filter(|item| item.trim() != "defaults")
            .collect::<Vec<_>>()
            .join(",")
    });
    let given = given.filter(|t| !t.trim().is_empty());
    match given {
        Some(text) => Ok((known.with_given(&text)?, Origin::Environment)),
        None => Ok((known, origin)),
    }
}

fn known_coefficients(temp: &Store) -> (Coefficients, Origin) {
    let Some(dir) = temp
        .local_path()
        .as_deref()
        .and_then(existing_ancestor)
        .filter(|_| temp.kind() != StoreKind::S3)
    else {
        return (Coefficients::DEFAULTS, Origin::Defaults);
    };
    let cache = cache_dir().zip(device(&dir)).map(|(d, dev)| {
        // An unoptimized build decodes several times slower: it keeps its own numbers.
        let build = if cfg!(debug_assertions) { "-debug" } else { "" };
        d.join(format!("costs-dev{dev}{build}.json"))
    });
    if let Some(path) = &cache {
        let cached = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Coefficients>(&t).ok());
        if let Some(c) = cached {
            return (c, Origin::Cached(path.clone()));
        }
    }
    // Only numbers that the next run reads back are used: a resumed run must plan the same
    // job (the plan id says so), which numbers measured again might not give.
    let Some(cache) = cache else {
        return (Coefficients::DEFAULTS, Origin::Defaults);
    };
    match measure(&dir) {
        Some(measured) if write_cache(&cache, &measured).is_ok() => {
            (measured, Origin::Measured(cache))
        }
        _ => (Coefficients::DEFAULTS, Origin::Defaults),
    }
}

fn write_cache(path: &Path, c: &Coefficients) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(c).map_err(std::io::Error::other)?;
    // Beside it, then renamed: a reader never sees half a file.
    let temp = path.with_extension(format!("json.{}.partial", std::process::id()));
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)
}

/// A float32 field like archived reanalysis data: smooth in space and time, some noise, rounded
/// to 1/100 as packed data is. Codec speeds depend on the data (LZ4 skips through noise it
/// cannot shrink several times faster than it compresses a field), so the field compresses
/// about as such data does: LZ4 and Zstandard-1 ≈ 1.5×, zlib ≈ 2.3×.
fn synthetic_field(bytes: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..bytes / 4)
        .flat_map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state % 1000) as f32 / 1000.0 - 0.5;
            let (x, t) = ((i % 360) as f32, (i / 64_800) as f32);
            let y = ((i / 360) % 180) as f32;
            let v = 280.0
                + 15.0 * (y * 0.017).cos()
                + 3.0 * (t * 0.26).sin() * (x * 0.017).cos()
                + noise;
            ((v * 100.0).round() / 100.0).to_le_bytes()
        })
        .collect()
}

/// MB/s of `f` over `bytes` decoded bytes: the best of three runs.
fn speed(bytes: usize, mut f: impl FnMut() -> Option<()>) -> Option<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Some(bytes as f64 / best.max(1e-6) / 1e6)
}

/// Measures every coefficient; the pieces are written in a directory made for it under
/// `dir` and removed after. `None` when something cannot be measured.
fn measure(dir: &Path) -> Option<Coefficients> {
    let field = synthetic_field(8 << 20);
    let n = field.len();
    let mut out = vec![0u8; n];
    let mut deflater = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(4).ok()?);
    let mut zlib = vec![0u8; deflater.zlib_compress_bound(n)];
    let zlib_len = deflater.zlib_compress(&field, &mut zlib).ok()?;
    let mut inflater = libdeflater::Decompressor::new();
    let zlib_decode = speed(n, || {
        inflater
            .zlib_decompress(&zlib[..zlib_len], &mut out)
            .ok()
            .map(drop)
    })?;
    let shuffle = speed(n, || {
        for (i, b) in field.iter().enumerate() {
            out[(i % 4) * (n / 4) + i / 4] = *b;
        }
        Some(())
    })?;
    let mut lz4 = Vec::new();
    let lz4_encode = speed(n, || {
        super::super::tasks::pieces::encode_piece(PieceCodec::Lz4, &field, &mut lz4).ok()
    })?;
    let lz4_decode = speed(n, || {
        super::super::tasks::pieces::decode_piece(PieceCodec::Lz4, &lz4, &mut out).ok()
    })?;
    let mut zstd = Vec::new();
    let zstd1_encode = speed(n, || {
        super::super::tasks::pieces::encode_piece(PieceCodec::Zstd1, &field, &mut zstd).ok()
    })?;
    let zstd_decode = speed(n, || {
        super::super::tasks::pieces::decode_piece(PieceCodec::Zstd1, &zstd, &mut out).ok()
    })?;
    let (write, read) = measure_pieces(dir, &field)?;
    Some(Coefficients {
        zlib_decode,
        zstd_decode,
        lz4_decode,
        shuffle,
        lz4_encode,
        zstd1_encode,
        write,
        read,
    })
}

/// Write and read MB/s of 64 MiB of 4 MiB pieces through a scratch store around the page
/// cache ([`chunkmill_store::ScratchIo::Direct`]): the device's speed, which is what pieces
/// cost when they do not fit in memory. Pieces that fit go through the page cache and cost
/// less than priced; the price cannot depend on the memory free when planning, since the
/// plan id must come out the same on resume (`tasks::intermediates`).
fn measure_pieces(dir: &Path, piece: &[u8]) -> Option<(f64, f64)> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scratch = dir.join(format!(
        ".chunkmill-costs-{}-{seq}.partial",
        std::process::id()
    ));
    // Made here, so it is ours to remove; an existing one is someone else's.
    std::fs::create_dir(&scratch).ok()?;
    let result = (|| {
        let store = Store::open_scratch(scratch.to_str()?).ok()?;
        let piece = &piece[..4 << 20];
        let count = 16;
        let start = Instant::now();
        for i in 0..count {
            store.put_slice(&i.to_string(), piece).ok()?;
        }
        let write = (count * piece.len()) as f64 / start.elapsed().as_secs_f64().max(1e-6) / 1e6;
        let mut back = vec![0u8; piece.len()];
        let start = Instant::now();
        for i in 0..count {
            store.read_exact_into(&i.to_string(), &mut back).ok()?;
        }
        let read = (count * piece.len()) as f64 / start.elapsed().as_secs_f64().max(1e-6) / 1e6;
        Some((write, read))
    })();
    // Only the directory made above, whose every file this function wrote.
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_coefficients_replace_known_ones_and_bad_ones_are_refused() -> Result<(), OpsError> {
        let c = Coefficients::DEFAULTS.with_given("write=250, lz4_encode=900")?;
        assert_eq!(c.write, 250.0);
        assert_eq!(c.lz4_encode, 900.0);
        assert_eq!(c.read, Coefficients::DEFAULTS.read);
        for bad in ["write", "write=0", "write=-3", "speed=100", "write=fast"] {
            let e = Coefficients::DEFAULTS.with_given(bad);
            assert!(
                matches!(e, Err(OpsError::Usage(m)) if m.contains(bad)),
                "{bad}"
            );
        }
        Ok(())
    }

    #[test]
    fn compressed_pieces_cost_their_codec_and_save_their_ratio() {
        let c = Coefficients::DEFAULTS;
        let media = piece_media(
            &c,
            Ratios {
                lz4: 2.0,
                zstd1: 4.0,
            },
            StoreKind::Local,
        );
        let raw = media[0].1;
        let lz4 = media[1].1;
        assert_eq!(media[1].0, PieceCodec::Lz4);
        assert!((raw.write_ns_per_byte - 1.0).abs() < 1e-9);
        assert!((lz4.write_ns_per_byte - (0.5 + 1e3 / 600.0)).abs() < 1e-9);
        assert!((lz4.read_ns_per_byte - (1e3 / 1500.0 / 2.0 + 0.4)).abs() < 1e-9);
        let zlib = source_cost(
            &c,
            &["numcodecs.shuffle".into(), "numcodecs.zlib".into()],
            StoreKind::Local,
        );
        assert!((zlib.read_ns_per_byte - (0.1 + 1e3 / 3000.0 + 1e3 / 700.0)).abs() < 1e-9);
    }

    use chunkmill_grid::rechunk::{RechunkPlan, RechunkProblem, Strategy};
    use chunkmill_grid::Grid;

    /// A float32 local-disk rechunk of `shape` from `source_chunks` to `target_chunks`, with
    /// `(budget, workers)` and the given source cost; the target and overheads as the model's
    /// tests assume them.
    fn local_problem(
        shape: &[u64],
        source_chunks: &[u64],
        target_chunks: Vec<u64>,
        (budget, workers): (u64, u64),
        source_cost: MediumCost,
    ) -> Result<RechunkProblem, Box<dyn std::error::Error>> {
        Ok(RechunkProblem {
            shape: shape.to_vec(),
            item_size: 4,
            source: Grid::regular(shape, source_chunks)?,
            target_chunks,
            budget,
            workers,
            source_cost,
            target_cost: MediumCost {
                read_ns_per_byte: 1.0,
                write_ns_per_byte: 2.5,
                ns_per_object: 40e3,
            },
            intermediate_cost: MediumCost::LOCAL_RAW,
            ns_per_task: 100e3,
            task_overhead: 1 << 20,
            max_stages: 3,
        })
    }

    /// How the model moves a (192, 72, 144) float32 array of zlib-compressed time slices to
    /// (192, 12, 16) chunks with 3 MiB per task (no plan decoding each chunk once fits), given
    /// coefficients and the ratios the data compresses at.
    fn chosen(
        c: &Coefficients,
        ratios: Ratios,
    ) -> Result<(Strategy, Option<PieceCodec>), Box<dyn std::error::Error>> {
        let shape = [192, 72, 144];
        let media = piece_media(c, ratios, StoreKind::Local);
        let problem = local_problem(
            &shape,
            &[1, 72, 144],
            vec![192, 12, 16],
            (3 << 20, 2),
            source_cost(c, &["numcodecs.zlib".into()], StoreKind::Local),
        )?;
        let costs: Vec<MediumCost> = media.iter().map(|(_, m)| *m).collect();
        let plan = problem.plan_among(&costs)?;
        assert!(!plan.alternatives.is_empty());
        assert!(plan
            .alternatives
            .iter()
            .all(|a| a.estimated_seconds >= plan.estimated_seconds * 0.999));
        Ok((
            plan.strategy,
            (plan.stages.len() > 1).then(|| media[plan.medium].0),
        ))
    }

    fn given(text: &str) -> Result<Coefficients, OpsError> {
        Coefficients::DEFAULTS.with_given(text)
    }

    #[test]
    fn the_choice_follows_the_coefficients() -> Result<(), Box<dyn std::error::Error>> {
        let squeezable = Ratios {
            lz4: 3.0,
            zstd1: 2.0,
        };
        let intermediate = |p: (Strategy, Option<PieceCodec>)| {
            matches!(p.0, Strategy::Intermediate | Strategy::Multistage)
                .then_some(p.1)
                .flatten()
        };
        // A fast disk: pieces as they are; compressing them only costs.
        let fast_disk = given("write=100000,read=100000")?;
        assert_eq!(
            intermediate(chosen(&fast_disk, squeezable)?),
            Some(PieceCodec::Raw)
        );
        // A slow disk: the codec that saves the most time per byte.
        let slow_disk = given("write=10,read=10,lz4_encode=2000,lz4_decode=4000,zlib_decode=10")?;
        assert_eq!(
            intermediate(chosen(&slow_disk, squeezable)?),
            Some(PieceCodec::Lz4)
        );
        let zstd_squeezes = Ratios {
            lz4: 1.5,
            zstd1: 6.0,
        };
        assert_eq!(
            intermediate(chosen(&slow_disk, zstd_squeezes)?),
            Some(PieceCodec::Zstd1)
        );
        // Data neither codec shrinks: raw, however slow the disk.
        let incompressible = Ratios {
            lz4: 1.0,
            zstd1: 1.0,
        };
        assert_eq!(
            intermediate(chosen(&slow_disk, incompressible)?),
            Some(PieceCodec::Raw)
        );
        // Sources that decode for free: read them again rather than write anything.
        let free_decode = given("write=10,read=10,zlib_decode=10000000")?;
        assert_eq!(
            chosen(&free_decode, squeezable)?,
            (Strategy::Multipass, None)
        );
        Ok(())
    }

    /// Ten days of the benchmark's `air` ((1, 180, 360) zlib time slices) to (240, 18, 36) with
    /// 62 MiB for tasks, up to 4 at once on 2 cores: re-reading the sources 5 times in 4
    /// small tasks at once, or decoding each chunk once in one large task.
    fn reread_or_direct(cores: Option<u64>) -> Result<RechunkPlan, Box<dyn std::error::Error>> {
        let c = Coefficients::DEFAULTS;
        let shape = [240, 180, 360];
        let media = piece_media(&c, Ratios::TYPICAL, StoreKind::Local);
        let zlib = ["numcodecs.shuffle".into(), "numcodecs.zlib".into()];
        let problem = local_problem(
            &shape,
            &[1, 180, 360],
            vec![240, 18, 36],
            (62 << 20, 4),
            source_cost(&c, &zlib, StoreKind::Local),
        )?;
        let costs: Vec<MediumCost> = media.iter().map(|(_, m)| *m).collect();
        Ok(match cores {
            Some(cores) => problem.plan_among_cores(&costs, cores)?,
            None => problem.plan_among(&costs)?,
        })
    }

    /// The estimate and concurrency of the `kind` of plan `plan` chose or priced.
    fn priced_kind(plan: &RechunkPlan, kind: Strategy) -> Option<(f64, u64)> {
        std::iter::once((plan.strategy, plan.estimated_seconds, plan.concurrency))
            .chain(
                plan.alternatives
                    .iter()
                    .map(|a| (a.strategy, a.estimated_seconds, a.concurrency)),
            )
            .find(|(s, _, _)| *s == kind)
            .map(|(_, secs, conc)| (secs, conc))
    }

    #[test]
    fn tasks_beyond_the_cores_do_not_make_rereading_cheaper(
    ) -> Result<(), Box<dyn std::error::Error>> {
        // Dividing the work by the 4 tasks at once made 5 passes look cheaper than one.
        let per_task = reread_or_direct(None)?;
        let (reread_alone, conc) =
            priced_kind(&per_task, Strategy::Multipass).ok_or("re-reading was not priced")?;
        assert_eq!(conc, 4);
        let (direct_alone, _) =
            priced_kind(&per_task, Strategy::Direct).ok_or("direct was not priced")?;
        assert!(reread_alone < direct_alone);
        // On 2 cores those 4 tasks decode at twice the speed of one, not four times.
        let on_two = reread_or_direct(Some(2))?;
        assert_ne!(on_two.strategy, Strategy::Multipass);
        let (reread, conc) =
            priced_kind(&on_two, Strategy::Multipass).ok_or("re-reading was not priced")?;
        assert_eq!(conc, 4);
        let ratio = reread / reread_alone;
        assert!((ratio - 2.0).abs() < 1e-9, "{ratio}");
        let (direct, direct_conc) =
            priced_kind(&on_two, Strategy::Direct).ok_or("direct was not priced")?;
        assert!(direct < reread);
        // One task at a time costs what it did: the cores never limit it.
        assert!(direct_conc <= 2);
        Ok(())
    }

    #[test]
    fn measured_coefficients_are_positive_and_leave_nothing_behind(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("chunkmill-costs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let c = measure(&dir).ok_or("not measured")?;
        for v in [
            c.zlib_decode,
            c.zstd_decode,
            c.lz4_decode,
            c.shuffle,
            c.lz4_encode,
            c.zstd1_encode,
            c.write,
            c.read,
        ] {
            assert!(v.is_finite() && v > 0.0, "{c:?}");
        }
        assert_eq!(std::fs::read_dir(&dir)?.count(), 0);
        std::fs::remove_dir(&dir)?;
        Ok(())
    }
}
