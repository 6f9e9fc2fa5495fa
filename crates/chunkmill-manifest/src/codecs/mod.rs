//! HDF5 filters → Zarr codecs, one file per filter.
//!
//! A chunk of an HDF5 dataset is its elements in C order, in the stored byte order, passed
//! through the filter pipeline in order (shuffle, then deflate, then fletcher32, …). The Zarr
//! codec list that reads it back is the `bytes` codec (which carries the byte order) followed by
//! one bytes-to-bytes codec per filter, in the same order:
//!
//! | HDF5 filter (id) | Zarr v3 codec | numcodecs id (Zarr v2 / kerchunk) | module |
//! |---|---|---|---|
//! | deflate (1) | `numcodecs.zlib` `{level}` | `zlib` | [`deflate`] |
//! | shuffle (2) | `numcodecs.shuffle` `{elementsize}` | `shuffle` | [`shuffle`] |
//! | fletcher32 (3) | `numcodecs.fletcher32` | `fletcher32` | [`fletcher32`] |
//! | zstd (32015) | `zstd` `{level, checksum: false}` | `zstd` | [`zstd`] |
//! | lzf (32000) | — error | — | [`lzf`] |
//! | szip (4), nbit (5), scaleoffset (6), others | — error | — | [`unsupported`] |
//!
//! A pipeline every codec maps can still be unreadable: fletcher32 before shuffle on 8-byte
//! elements ([`inexpressible_order`]). The scan decodes a variable without a codec chain and
//! inlines it, or leaves it out (see [`crate::scan()`]).
//!
//! Besides the mapping, deflate, shuffle and fletcher32 can be decoded and encoded here
//! (and szip, nbit, scaleoffset and LZF decoded, through chunkmill-hdf5):
//! small coordinates are loaded (decoded) to be concatenated or compared, and a chunk whose
//! filter mask skipped a filter is re-encoded through the whole pipeline before it is
//! inlined (see [`crate`]'s "Filter masks").

pub mod deflate;
pub mod fletcher32;
pub mod lzf;
pub mod native;
pub mod shuffle;
pub mod unsupported;
pub mod zstd;

use chunkmill_hdf5::{ByteOrder, DType, Filter};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One Zarr v3 codec: a name and its configuration, as written in `zarr.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Codec {
    /// The v3 name: `bytes`, `zstd`, or `numcodecs.<id>` for numcodecs codecs.
    pub name: String,
    /// The configuration object (empty when the codec has none).
    #[serde(default)]
    pub configuration: Map<String, Value>,
}

impl Codec {
    /// The array-to-bytes `bytes` codec; `endian` is `None` for one-byte types.
    pub fn bytes(endian: Option<ByteOrder>) -> Self {
        let mut configuration = Map::new();
        match endian {
            Some(ByteOrder::Big) => {
                configuration.insert("endian".into(), "big".into());
            }
            Some(ByteOrder::Little) => {
                configuration.insert("endian".into(), "little".into());
            }
            _ => {}
        }
        Self {
            name: "bytes".into(),
            configuration,
        }
    }

    /// A numcodecs codec `id` with its configuration (v3 name `numcodecs.<id>`).
    pub fn numcodecs(id: &str, configuration: Map<String, Value>) -> Self {
        Self {
            name: format!("numcodecs.{id}"),
            configuration,
        }
    }

    /// The array-to-bytes `vlen-utf8` codec of variable-length strings (numcodecs' `VLenUTF8`
    /// layout: a little-endian `u32` count, then each item as a `u32` length and its UTF-8).
    pub fn vlen_utf8() -> Self {
        Self {
            name: VLEN_UTF8.into(),
            configuration: Map::new(),
        }
    }

    /// Whether this is the array-to-bytes `bytes` codec (expressed by the dtype in Zarr v2).
    pub fn is_bytes(&self) -> bool {
        self.name == "bytes"
    }

    /// The codec as Zarr v3 JSON: `{"name": …, "configuration": {…}}`.
    pub fn to_v3(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), Value::String(self.name.clone()));
        // numcodecs' Zarr v3 wrappers (`numcodecs.fletcher32`) refuse a codec without a
        // `configuration` key, even an empty one.
        if !self.configuration.is_empty() || self.name.starts_with("numcodecs.") {
            m.insert(
                "configuration".into(),
                Value::Object(self.configuration.clone()),
            );
        }
        Value::Object(m)
    }

    /// The codec as a numcodecs configuration for Zarr v2 `filters`/`compressor`
    /// (`{"id": "zlib", "level": 4}`); `None` for the `bytes` codec.
    pub fn to_numcodecs(&self) -> Option<Value> {
        if self.is_bytes() {
            return None;
        }
        let id = self.name.strip_prefix("numcodecs.").unwrap_or(&self.name);
        let mut m = Map::new();
        m.insert("id".into(), Value::String(id.to_string()));
        for (k, v) in &self.configuration {
            // numcodecs' Zstd has no `checksum` argument before 0.13 and ignores it on decode.
            if id == "zstd" && k == "checksum" {
                continue;
            }
            m.insert(k.clone(), v.clone());
        }
        Some(Value::Object(m))
    }

    /// A numcodecs configuration (`{"id": …, …}`) as a codec: `zstd` keeps its v3 core name,
    /// everything else becomes `numcodecs.<id>`.
    pub fn from_numcodecs(value: &Value) -> Option<Self> {
        let m = value.as_object()?;
        let id = m.get("id")?.as_str()?;
        let mut configuration: Map<String, Value> = m
            .iter()
            .filter(|(k, _)| *k != "id")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if id == VLEN_UTF8 {
            return Some(Self::vlen_utf8());
        }
        if id == "zstd" {
            configuration
                .entry("checksum")
                .or_insert(Value::Bool(false));
            return Some(Self {
                name: "zstd".into(),
                configuration,
            });
        }
        Some(Self::numcodecs(id, configuration))
    }
}

/// The name (v3) and id (numcodecs) of the variable-length UTF-8 string codec.
pub const VLEN_UTF8: &str = "vlen-utf8";

/// `strings` in the layout of the `vlen-utf8` codec: a little-endian `u32` count, then each
/// item as a little-endian `u32` byte length and its UTF-8 bytes.
///
/// # Errors
/// More items, or an item longer, than a `u32` counts.
pub fn encode_vlen_utf8(strings: &[String]) -> Result<Vec<u8>, String> {
    let len = |n: usize| u32::try_from(n).map_err(|_| format!("vlen-utf8: {n} does not fit a u32"));
    let total: usize = strings.iter().map(|s| s.len() + 4).sum();
    let mut out = Vec::with_capacity(total + 4);
    out.extend_from_slice(&len(strings.len())?.to_le_bytes());
    for s in strings {
        out.extend_from_slice(&len(s.len())?.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    Ok(out)
}

/// Why a pipeline that every codec expresses still cannot be read by Zarr: numcodecs'
/// `Shuffle` refuses a buffer that is not a whole number of elements, while HDF5's shuffle
/// leaves the bytes past the last whole element in place. When fletcher32 comes before
/// shuffle in the pipeline (netCDF-C's order: fletcher32, shuffle, deflate), the shuffled
/// buffer is the chunk plus the 4-byte checksum, which is a whole number of elements only
/// for 1-, 2- and 4-byte elements; for 8-byte ones (doubles) no codec chain reads it.
/// `chunk_bytes` is a chunk's decoded size.
pub fn inexpressible_order(
    filters: &[Filter],
    element_size: usize,
    chunk_bytes: u64,
) -> Option<FilterError> {
    let mut extra = 0u64;
    for f in filters {
        match f.id {
            fletcher32::ID => extra += 4,
            shuffle::ID => {
                let size = shuffle::element_size(f, element_size) as u64;
                if size > 1 && !(chunk_bytes + extra).is_multiple_of(size) {
                    return Some(FilterError::new(
                        f,
                        format!(
                            "it comes after fletcher32 in the pipeline, so it shuffles {} bytes \
                             (the chunk and its checksum), not a whole number of {size}-byte \
                             elements: numcodecs' Shuffle refuses that buffer",
                            chunk_bytes + extra
                        ),
                    ));
                }
            }
            // Past a compressor the length is the compressed one: later filters are not
            // checked (no writer puts shuffle there).
            _ => break,
        }
    }
    None
}

/// Why a filter pipeline has no Zarr equivalent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// The filter's short name.
    pub filter: String,
    /// Its HDF5 id.
    pub id: u16,
    /// Why, in words.
    pub reason: String,
}

impl FilterError {
    pub(crate) fn new(filter: &Filter, reason: impl Into<String>) -> Self {
        Self {
            filter: filter.name.clone(),
            id: filter.id,
            reason: reason.into(),
        }
    }
}

/// The Zarr v3 codec list for data of type `dtype` written through `filters`: the `bytes`
/// codec, then one codec per filter in pipeline order.
///
/// # Errors
/// The first filter that has no Zarr codec, with the reason.
pub fn zarr_codecs(filters: &[Filter], dtype: &DType) -> Result<Vec<Codec>, FilterError> {
    zarr_codecs_with(filters, dtype, false)
}

/// As [`zarr_codecs`]; with `native`, filters hdf5-reader decodes but no Zarr codec expresses
/// (szip, nbit, scaleoffset) become [`native`] codecs instead of an error (for `convert`).
///
/// # Errors
/// As [`zarr_codecs`].
pub fn zarr_codecs_with(
    filters: &[Filter],
    dtype: &DType,
    native: bool,
) -> Result<Vec<Codec>, FilterError> {
    let endian = match dtype.byte_order {
        ByteOrder::NotApplicable => None,
        o => Some(o),
    };
    let mut out = vec![Codec::bytes(endian)];
    for f in filters {
        out.push(match f.id {
            deflate::ID => deflate::codec(f),
            shuffle::ID => shuffle::codec(f, dtype),
            fletcher32::ID => fletcher32::codec(f),
            zstd::ID => zstd::codec(f),
            lzf::ID => return Err(lzf::error(f)),
            id if native && native::handles(id) => native::codec(f),
            _ => return Err(unsupported::error(f)),
        });
    }
    Ok(out)
}

/// Undoes the filters of a stored chunk, last first, skipping those `mask` marks as not
/// applied. `element_size` is the dtype size (shuffle's default).
///
/// # Errors
/// A filter this crate cannot decode (zstd, lzf, …), or bytes that do not decode.
pub fn decode(
    filters: &[Filter],
    mask: u32,
    element_size: usize,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let mut bytes = bytes;
    for (i, f) in filters.iter().enumerate().rev() {
        if i < 32 && mask & (1 << i) != 0 {
            continue;
        }
        bytes = match f.id {
            deflate::ID => deflate::decode(&bytes, 0)?,
            shuffle::ID => shuffle::unshuffle(&bytes, shuffle::element_size(f, element_size)),
            fletcher32::ID => fletcher32::strip(&bytes)?,
            id if chunkmill_hdf5::DECODABLE_FILTERS.contains(&id) => {
                chunkmill_hdf5::decode_native_filter(id, &f.parameters, &bytes, MAX_DECODED)?
            }
            _ => {
                return Err(format!(
                    "cannot decode filter {} (HDF5 id {}) here",
                    f.name, f.id
                ))
            }
        };
    }
    Ok(bytes)
}

/// Largest chunk a native HDF5 filter may decode to (HDF5's own chunk size limit, 4 GiB).
const MAX_DECODED: usize = u32::MAX as usize;

/// Decodes `stored` bytes of a chunk with a Zarr v3 codec list (`bytes` plus the
/// bytes-to-bytes codecs this crate writes, and `numcodecs.gzip` that other reference tools
/// write), returning the elements little-endian; `decoded_len` is the chunk's decoded size
/// (0 when unknown), used to allocate the output once.
///
/// # Errors
/// A codec this crate cannot decode, named, or bytes that do not decode.
pub fn decode_zarr(
    codecs: &[Codec],
    element_size: usize,
    stored: Vec<u8>,
    decoded_len: usize,
) -> Result<Vec<u8>, String> {
    let mut bytes = stored;
    for codec in codecs.iter().rev().filter(|c| !c.is_bytes()) {
        bytes = decode_step(codec, element_size, bytes, decoded_len)?;
    }
    swap_if_big_endian(codecs, element_size, &mut bytes);
    Ok(bytes)
}

/// Largest scratch buffer a thread keeps between chunks.
const KEPT_SCRATCH: usize = 8 << 20;

thread_local! {
    /// The inflated bytes of the chunk this thread last unshuffled into a caller's buffer.
    static INFLATED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`decode_zarr`] into `out`, which must be exactly the chunk's decoded size: the last step
/// (unshuffle, inflate or the raw bytes) writes straight into it, so a reader that owns the
/// destination (the Python package's numpy buffers) skips a copy of every chunk.
///
/// # Errors
/// As [`decode_zarr`], and bytes that decode to another size than `out`'s.
pub fn decode_zarr_into(
    codecs: &[Codec],
    element_size: usize,
    stored: Vec<u8>,
    out: &mut [u8],
) -> Result<(), String> {
    let steps: Vec<&Codec> = codecs.iter().rev().filter(|c| !c.is_bytes()).collect();
    if let [inflate, unshuffle] = steps[..] {
        if inflate.name == "numcodecs.zlib" && unshuffle.name == "numcodecs.shuffle" {
            // HDF5's usual pair: inflated into this thread's scratch buffer, kept between
            // chunks (a fresh one per chunk cost a page clear of every byte), then unshuffled
            // straight into `out`.
            return INFLATED.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                scratch.resize(out.len(), 0);
                let inflated = deflate::decode_into(&stored, &mut scratch);
                if inflated.is_ok() {
                    shuffle::unshuffle_into(&scratch, shuffle_size(unshuffle, element_size), out);
                    swap_if_big_endian(codecs, element_size, out);
                }
                // Only a small one is kept: a task's memory counts a chunk while it reads, not
                // after.
                if scratch.capacity() > KEPT_SCRATCH {
                    *scratch = Vec::new();
                }
                inflated
            });
        }
    }
    let mut bytes = stored;
    let Some((last, before)) = steps.split_last() else {
        copy_exact(&bytes, out)?;
        swap_if_big_endian(codecs, element_size, out);
        return Ok(());
    };
    for codec in before {
        bytes = decode_step(codec, element_size, bytes, out.len())?;
    }
    match last.name.as_str() {
        "numcodecs.shuffle" => {
            let size = shuffle_size(last, element_size);
            if bytes.len() != out.len() {
                return Err(wrong_size(bytes.len(), out.len()));
            }
            shuffle::unshuffle_into(&bytes, size, out);
        }
        "numcodecs.zlib" => deflate::decode_into(&bytes, out)?,
        _ => copy_exact(&decode_step(last, element_size, bytes, out.len())?, out)?,
    }
    swap_if_big_endian(codecs, element_size, out);
    Ok(())
}

/// One bytes-to-bytes codec of [`decode_zarr`] undone.
fn decode_step(
    codec: &Codec,
    element_size: usize,
    bytes: Vec<u8>,
    decoded_len: usize,
) -> Result<Vec<u8>, String> {
    Ok(match codec.name.as_str() {
        "numcodecs.zlib" => deflate::decode(&bytes, decoded_len)?,
        "numcodecs.gzip" | "gzip" => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
                .map_err(|e| format!("gzip: {e}"))?;
            out
        }
        "numcodecs.shuffle" => shuffle::unshuffle(&bytes, shuffle_size(codec, element_size)),
        "numcodecs.fletcher32" => fletcher32::strip(&bytes)?,
        "zstd" | "numcodecs.zstd" => {
            ::zstd::stream::decode_all(&bytes[..]).map_err(|e| format!("zstd: {e}"))?
        }
        name if native::is(name) => native::decode(&codec.configuration, &bytes, MAX_DECODED)?,
        other => return Err(format!("codec '{other}' cannot be decoded by chunkmill")),
    })
}

fn shuffle_size(codec: &Codec, element_size: usize) -> usize {
    codec
        .configuration
        .get("elementsize")
        .and_then(Value::as_u64)
        .map_or(element_size, |s| s as usize)
        .max(1)
}

fn wrong_size(got: usize, expected: usize) -> String {
    format!("decoded to {got} bytes, expected {expected}")
}

fn copy_exact(bytes: &[u8], out: &mut [u8]) -> Result<(), String> {
    if bytes.len() != out.len() {
        return Err(wrong_size(bytes.len(), out.len()));
    }
    out.copy_from_slice(bytes);
    Ok(())
}

/// Elements stored big-endian (the `bytes` codec says so) turned little-endian in place.
fn swap_if_big_endian(codecs: &[Codec], element_size: usize, bytes: &mut [u8]) {
    let big = codecs.iter().any(|c| {
        c.is_bytes() && c.configuration.get("endian").and_then(Value::as_str) == Some("big")
    });
    if big && element_size > 1 {
        for element in bytes.chunks_exact_mut(element_size) {
            element.reverse();
        }
    }
}

/// Passes raw chunk bytes through the whole pipeline, as HDF5 does when no filter is
/// skipped.
///
/// # Errors
/// A filter this crate cannot encode.
pub fn encode(filters: &[Filter], element_size: usize, raw: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut bytes = raw;
    for f in filters {
        bytes = match f.id {
            deflate::ID => deflate::encode(&bytes, deflate::level(f))?,
            shuffle::ID => shuffle::shuffle(&bytes, shuffle::element_size(f, element_size)),
            fletcher32::ID => fletcher32::append(&bytes),
            _ => {
                return Err(format!(
                    "cannot encode filter {} (HDF5 id {}) here",
                    f.name, f.id
                ))
            }
        };
    }
    Ok(bytes)
}

/// Whether [`decode`] and [`encode`] handle every filter of the pipeline.
pub fn can_reencode(filters: &[Filter]) -> bool {
    filters
        .iter()
        .all(|f| matches!(f.id, deflate::ID | shuffle::ID | fletcher32::ID))
}

#[cfg(test)]
pub(crate) fn filter(id: u16, name: &str, parameters: Vec<u32>) -> Filter {
    Filter {
        id,
        name: name.into(),
        stored_name: None,
        parameters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f4(order: ByteOrder) -> DType {
        DType {
            numpy: if order == ByteOrder::Big {
                ">f4"
            } else {
                "<f4"
            }
            .into(),
            name: "float32".into(),
            byte_order: order,
            size: 4,
            class: "float",
        }
    }

    #[test]
    fn netcdf_zlib_shuffle_maps_in_pipeline_order() -> Result<(), FilterError> {
        let filters = [filter(2, "shuffle", vec![4]), filter(1, "deflate", vec![5])];
        let codecs = zarr_codecs(&filters, &f4(ByteOrder::Big))?;
        let v3: Vec<Value> = codecs.iter().map(Codec::to_v3).collect();
        assert_eq!(
            v3,
            vec![
                json!({"name": "bytes", "configuration": {"endian": "big"}}),
                json!({"name": "numcodecs.shuffle", "configuration": {"elementsize": 4}}),
                json!({"name": "numcodecs.zlib", "configuration": {"level": 5}}),
            ]
        );
        let v2: Vec<Value> = codecs.iter().filter_map(Codec::to_numcodecs).collect();
        assert_eq!(
            v2,
            vec![
                json!({"id": "shuffle", "elementsize": 4}),
                json!({"id": "zlib", "level": 5})
            ]
        );
        Ok(())
    }

    #[test]
    fn inexpressible_filters_are_named() {
        for (id, name) in [
            (4, "szip"),
            (5, "nbit"),
            (6, "scaleoffset"),
            (32000, "lzf"),
            (32013, "zfp"),
        ] {
            let err = zarr_codecs(&[filter(id, name, vec![])], &f4(ByteOrder::Little)).err();
            assert_eq!(
                err.as_ref().map(|e| (e.id, e.filter.as_str())),
                Some((id, name))
            );
        }
    }

    #[test]
    fn decode_undoes_encode_and_honours_the_mask() -> Result<(), String> {
        let filters = [
            filter(2, "shuffle", vec![4]),
            filter(1, "deflate", vec![4]),
            filter(3, "fletcher32", vec![]),
        ];
        let raw: Vec<u8> = (0..4000u32)
            .flat_map(|x| (x as f32).to_le_bytes())
            .collect();
        let stored = encode(&filters, 4, raw.clone())?;
        assert!(stored.len() < raw.len());
        assert_eq!(decode(&filters, 0, 4, stored)?, raw);
        // Deflate skipped (bit 1): the stored bytes are shuffled and checksummed only.
        let partial = fletcher32::append(&shuffle::shuffle(&raw, 4));
        assert_eq!(decode(&filters, 0b010, 4, partial)?, raw);
        Ok(())
    }

    #[test]
    fn fletcher32_before_shuffle_is_inexpressible_for_8_byte_elements_only() {
        // netCDF-C's order: fletcher32, shuffle, deflate.
        let pipeline = |size: u32| {
            [
                filter(3, "fletcher32", vec![]),
                filter(2, "shuffle", vec![size]),
                filter(1, "deflate", vec![4]),
            ]
        };
        for size in [1u32, 2, 4] {
            assert_eq!(
                inexpressible_order(&pipeline(size), size as usize, 400),
                None
            );
        }
        let e = inexpressible_order(&pipeline(8), 8, 800);
        assert_eq!(e.as_ref().map(|e| e.filter.as_str()), Some("shuffle"));
        assert!(e.is_some_and(|e| e.reason.contains("804 bytes")));
        // Shuffle first (the usual order), or fletcher32 last: the buffer is whole elements.
        let usual = [
            filter(2, "shuffle", vec![8]),
            filter(1, "deflate", vec![4]),
            filter(3, "fletcher32", vec![]),
        ];
        assert_eq!(inexpressible_order(&usual, 8, 800), None);
    }

    #[test]
    fn vlen_utf8_layout_is_numcodecs() -> Result<(), String> {
        let bytes = encode_vlen_utf8(&["ab".to_string(), String::new(), "é".to_string()])?;
        assert_eq!(
            bytes,
            [
                &3u32.to_le_bytes()[..],
                &2u32.to_le_bytes(),
                b"ab",
                &0u32.to_le_bytes(),
                &2u32.to_le_bytes(),
                "é".as_bytes()
            ]
            .concat()
        );
        let c = Codec::from_numcodecs(&json!({"id": "vlen-utf8"}));
        assert_eq!(
            c.as_ref().map(Codec::to_v3),
            Some(json!({"name": "vlen-utf8"}))
        );
        assert_eq!(
            c.and_then(|c| c.to_numcodecs()),
            Some(json!({"id": "vlen-utf8"}))
        );
        assert_eq!(
            Codec::numcodecs("fletcher32", Map::new()).to_v3(),
            json!({"name": "numcodecs.fletcher32", "configuration": {}})
        );
        Ok(())
    }

    #[test]
    fn lzf_chunks_are_decoded() -> Result<(), String> {
        // An LZF chunk of 0..8 as bytes: one literal run; h5py's client data holds the size.
        let lzf = [filter(32000, "lzf", vec![4, 261, 8])];
        let stored = [&[7u8][..], &[0, 1, 2, 3, 4, 5, 6, 7]].concat();
        assert_eq!(decode(&lzf, 0, 1, stored)?, (0..8).collect::<Vec<u8>>());
        Ok(())
    }

    #[test]
    fn numcodecs_round_trip() {
        let z = Codec::from_numcodecs(&json!({"id": "zstd", "level": 3}));
        assert_eq!(z.as_ref().map(|c| c.name.as_str()), Some("zstd"));
        assert_eq!(
            z.and_then(|c| c.to_numcodecs()),
            Some(json!({"id": "zstd", "level": 3}))
        );
        let s = Codec::from_numcodecs(&json!({"id": "shuffle", "elementsize": 2}));
        assert_eq!(s.map(|c| c.name), Some("numcodecs.shuffle".to_string()));
    }

    #[test]
    fn decoding_into_a_buffer_gives_the_elements_of_every_pipeline() -> Result<(), String> {
        let values: Vec<u32> = (0..250u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        let little: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let pipelines = [
            vec![],
            vec![filter(1, "deflate", vec![4])],
            vec![filter(2, "shuffle", vec![4])],
            vec![filter(2, "shuffle", vec![4]), filter(1, "deflate", vec![4])],
            vec![
                filter(3, "fletcher32", vec![]),
                filter(2, "shuffle", vec![4]),
                filter(1, "deflate", vec![4]),
            ],
        ];
        for order in [ByteOrder::Little, ByteOrder::Big] {
            let raw: Vec<u8> = match order {
                ByteOrder::Big => values.iter().flat_map(|v| v.to_be_bytes()).collect(),
                _ => little.clone(),
            };
            for filters in &pipelines {
                let codecs = zarr_codecs(filters, &f4(order)).map_err(|e| format!("{e:?}"))?;
                let stored = encode(filters, 4, raw.clone())?;
                let mut out = vec![0u8; little.len()];
                decode_zarr_into(&codecs, 4, stored.clone(), &mut out)?;
                assert_eq!(out, little, "{order:?} {filters:?}");
                let mut short = vec![0u8; little.len() - 4];
                assert!(decode_zarr_into(&codecs, 4, stored, &mut short).is_err());
            }
        }
        Ok(())
    }
}
